"""Which users train, validate and test: seeded stratified splits (scikit-learn), stratified
K-fold cross-validation, splits given by the user (a test set of their own, or a per-user
split column), and length-bucketed batches of user indices.

Group-aware: with ``groups`` (one label per user, e.g. from a per-user column naming the
subject or author, :func:`user_groups`), every split keeps each group on one side: holdouts
and folds come from ``StratifiedGroupKFold`` (stratified by label as far as the groups
allow), and a given split in which a group crosses is an error (:func:`check_groups`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split

from cvx_core.data.columns import ascii_strip
from cvx_core.data.trajectory import TrajectoryError, TrajectorySet

#: the values a split column may hold (case-insensitive; "validation" means "val")
SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """Positions (into the TrajectorySet) of the train / validation / test users, each sorted."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def as_user_ids(self, ts: TrajectorySet) -> dict[str, list[str]]:
        ids = ts.user_ids
        return {name: [ids[i] for i in getattr(self, name)] for name in ("train", "val", "test")}


def _check_labels(labels: Sequence[int] | np.ndarray, *, min_per_class: int) -> np.ndarray:
    y = np.asarray(labels, dtype=np.int64)
    if y.ndim != 1 or y.size == 0:
        raise ValueError("labels must be a non-empty 1-D array")
    if (y < 0).any():
        raise ValueError(f"{int((y < 0).sum())} trajectories have no label; every user needs one to train")
    for c in np.unique(y):
        n = int((y == c).sum())
        if n < min_per_class:
            raise ValueError(
                f"class {int(c)} has {n} users; each class needs at least {min_per_class} "
                f"({'train, val, test' if min_per_class == 3 else 'train and val'})"
            )
    return y


def _holdout(idx: np.ndarray, y: np.ndarray, fraction: float, rng: np.random.Generator,
             groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stratified ``(rest, held)`` of the positions ``idx``: ``round(n * fraction)`` held out
    (at least one per class), by ``sklearn.model_selection.train_test_split``; every class
    keeps at least one member in ``rest``. With ``groups`` (one per position of the whole
    set): whole groups are held out (:func:`_group_holdout`)."""
    if groups is not None:
        return _group_holdout(idx, y, groups, fraction, rng)
    yy = y[idx]
    classes = np.unique(yy)
    n_held = min(max(classes.size, int(round(idx.size * fraction))), idx.size - classes.size)
    rest, held = train_test_split(
        idx, test_size=n_held, stratify=yy, random_state=int(rng.integers(0, 2**31 - 1))
    )
    rest, held = list(rest), list(held)
    # train_test_split rounds class shares; a rare class may get no held-out member: move one
    for c in classes:
        if not any(y[i] == c for i in held):
            members = [i for i in rest if y[i] == c]
            if len(members) >= 2:
                pick = members[int(rng.integers(0, len(members)))]
                rest.remove(pick)
                held.append(pick)
    return np.sort(np.asarray(rest, dtype=np.int64)), np.sort(np.asarray(held, dtype=np.int64))


def _group_holdout(idx: np.ndarray, y: np.ndarray, groups: np.ndarray, fraction: float,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(rest, held)`` of the positions ``idx`` holding out whole groups, about ``fraction``
    of the users: one fold of a shuffled ``StratifiedGroupKFold`` with ``round(1 / fraction)``
    folds, the first fold (over up to 20 shuffles) in which every class of ``idx`` is on
    both sides; failing that, one in which every class keeps a member in ``rest``."""
    yy, gg = y[idx], np.asarray(groups, dtype=object)[idx].astype(str)
    n_groups = np.unique(gg).size
    if n_groups < 2:
        raise ValueError(f"the group column has {n_groups} group among these {idx.size} users; "
                         "a grouped split needs at least 2 groups on each side")
    k = int(min(max(2, round(1.0 / max(fraction, 1e-9))), n_groups))
    classes = set(np.unique(yy).tolist())
    fallback = None
    for _ in range(20):
        folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=int(rng.integers(0, 2**31 - 1)))
        with warnings.catch_warnings():  # "the least populated class has fewer members than n_splits"
            warnings.simplefilter("ignore", UserWarning)
            for rest, held in folds.split(np.zeros(idx.size), yy, gg):
                in_rest, in_held = set(yy[rest].tolist()), set(yy[held].tolist())
                if in_rest == classes and in_held == classes:
                    return np.sort(idx[rest]), np.sort(idx[held])
                if fallback is None and in_rest == classes and held.size:
                    fallback = (np.sort(idx[rest]), np.sort(idx[held]))
    if fallback is None:
        raise ValueError("no grouped split keeps every class on the training side; "
                         "some class lives in a single group")
    return fallback


def user_groups(ts: TrajectorySet, column: str) -> np.ndarray:
    """``[N]`` group of each user (as text) from the per-user metadata column ``column``.

    Raises ValueError naming the set and column when the column is not a per-user column
    (a value that varies within a user's posts is not one) or a user has no value.
    """
    meta = ts.metadata
    if column not in meta.columns:
        have = ", ".join(map(str, meta.columns)) or "none"
        raise ValueError(f"{ts.name or 'dataset'}: no per-user column {column!r} for the groups "
                         f"(per-user columns, one value per user: {have})")
    out = np.empty(len(ts), dtype=object)
    for i, (uid, v) in enumerate(zip(ts.user_ids, meta[column].tolist())):
        if v is None or (isinstance(v, float) and np.isnan(v)) or str(v).strip() == "":
            raise ValueError(f"{ts.name or 'dataset'}: user {uid!r} has no value in the group column {column!r}; "
                             "expected one group per user")
        out[i] = str(v)
    return out


def check_groups(split: Split, groups: np.ndarray, *, source: str = "split") -> None:
    """Raise ValueError if a group has users in more than one of train / val / test."""
    g = np.asarray(groups, dtype=object)
    seen: dict[str, str] = {}
    for name in ("train", "val", "test"):
        for grp in set(g[getattr(split, name)].tolist()):
            if grp in seen and seen[grp] != name:
                raise ValueError(f"{source}: group {grp!r} has users in {seen[grp]} and in {name}; "
                                 "a group column keeps each group on one side")
            seen.setdefault(grp, name)


def stratified_split(
    labels: Sequence[int] | np.ndarray, *, val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0,
    groups: np.ndarray | None = None,
) -> Split:
    """Split positions ``0..N-1`` so each class keeps its share in train, val and test.

    ``round(N * test_fraction)`` test users, then ``round(N * val_fraction)`` validation
    users, each drawn stratified by scikit-learn's ``train_test_split`` (seeded) with at
    least one user of each class in each part. Raises ValueError if a class has fewer than
    3 members or a label is missing (-1). With ``groups`` whole groups are held out.
    """
    y = _check_labels(labels, min_per_class=3)
    rng = np.random.default_rng(seed)
    everyone = np.arange(y.size)
    rest, test = _holdout(everyone, y, test_fraction, rng, groups)
    train, val = _holdout(rest, y, val_fraction / max(1e-12, 1.0 - test_fraction), rng, groups)
    return Split(train=train, val=val, test=test)


def validation_split(
    labels: Sequence[int] | np.ndarray, train_pool: np.ndarray, test: np.ndarray, *, val_fraction: float, seed: int,
    groups: np.ndarray | None = None,
) -> Split:
    """A split whose test users are given: validation users are drawn stratified from
    ``train_pool`` (share ``val_fraction`` of it; whole groups with ``groups``), the rest train."""
    y = np.asarray(labels, dtype=np.int64)
    pool = np.sort(np.asarray(train_pool, dtype=np.int64))
    _check_labels(y[pool], min_per_class=2)
    train, val = _holdout(pool, y, val_fraction, np.random.default_rng(seed), groups)
    return Split(train=train, val=val, test=np.sort(np.asarray(test, dtype=np.int64)))


def kfold_splits(
    labels: Sequence[int] | np.ndarray, k: int, *, val_fraction: float = 0.2, seed: int = 0,
    groups: np.ndarray | None = None,
) -> list[Split]:
    """Stratified K-fold (``sklearn.model_selection.StratifiedKFold``, shuffled, seeded):
    fold ``i`` tests on the ``i``-th part; its validation users are drawn stratified from
    the other parts (share ``val_fraction`` of them), the rest train. With ``groups``:
    ``StratifiedGroupKFold``, and validation holds out whole groups too."""
    y = _check_labels(labels, min_per_class=2)
    if not (isinstance(k, (int, np.integer)) and k >= 2):
        raise ValueError(f"cross-validation needs k >= 2 folds, got {k!r}")
    smallest = int(min((y == c).sum() for c in np.unique(y)))
    if smallest < k:
        raise ValueError(
            f"--cv {k}: the smallest class has {smallest} users; stratified {k}-fold needs at least {k} per class"
        )
    if groups is not None:
        g = np.asarray(groups, dtype=object).astype(str)
        n_groups = np.unique(g).size
        if n_groups < k:
            raise ValueError(f"--cv {k} with groups: there are {n_groups} groups; grouped {k}-fold needs at least {k}")
        folds = StratifiedGroupKFold(n_splits=int(k), shuffle=True, random_state=int(seed))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            parts = list(folds.split(np.zeros(y.size), y, g))
    else:
        parts = list(StratifiedKFold(n_splits=int(k), shuffle=True, random_state=int(seed)).split(np.zeros(y.size), y))
    return [validation_split(y, pool, test, val_fraction=val_fraction, seed=seed * 1000 + i, groups=groups)
            for i, (pool, test) in enumerate(parts)]


def split_from_assignments(ts: TrajectorySet, assignments: Mapping[str, str], *, val_fraction: float, seed: int,
                           source: str = "split column", groups: np.ndarray | None = None) -> Split:
    """A split from ``{user_id: "train" | "val" | "test"}``. Users not named are an error;
    with no ``val`` user, validation users are drawn from the ``train`` users (whole groups
    with ``groups``; a group in more than one part is an error)."""
    parts: dict[str, list[int]] = {name: [] for name in SPLIT_NAMES}
    missing = []
    for i, uid in enumerate(ts.user_ids):
        name = assignments.get(uid)
        if name is None:
            missing.append(uid)
            continue
        parts[name].append(i)
    if missing:
        raise ValueError(f"{source}: {len(missing)} users have no split, e.g. {missing[0]!r}")
    if not parts["test"]:
        raise ValueError(f"{source}: no user is marked 'test'")
    if not parts["train"]:
        raise ValueError(f"{source}: no user is marked 'train'")
    if not parts["val"]:
        split = validation_split(ts.labels, np.asarray(parts["train"]), np.asarray(parts["test"]),
                                 val_fraction=val_fraction, seed=seed, groups=groups)
    else:
        split = Split(*(np.asarray(sorted(parts[n]), dtype=np.int64) for n in SPLIT_NAMES))
    if groups is not None:
        check_groups(split, groups, source=source)
    return split


def read_split_column(path: str | Path, column: str) -> dict[str, str]:
    """``{user_id: "train" | "val" | "test"}`` from a per-user column of a trajectory file.

    Raises :class:`TrajectoryError` naming the file, row and column when the column is
    missing, a cell is not one of train/val/test, or one user's rows disagree.
    """
    from cvx_core.data.io import read_posts

    posts = read_posts(path, need_embeddings=False)
    fname = posts.file
    if column not in posts.extra.columns:
        raise TrajectoryError(
            f"{fname}: no column {column!r} for the split; expected a per-user column holding "
            f"train, val or test (columns: {', '.join(map(str, posts.extra.columns)) or 'none'})",
            file=fname, column=column,
        )
    values = posts.extra[column].to_numpy(dtype=object)
    out: dict[str, str] = {}
    first_row: dict[str, int] = {}
    for i, (uid, raw) in enumerate(zip(posts.user_ids, values)):
        text = "" if raw is None or (isinstance(raw, float) and np.isnan(raw)) else ascii_strip(str(raw)).lower()
        name = "val" if text == "validation" else text
        if name not in SPLIT_NAMES:
            raise TrajectoryError(
                f"{fname}: {posts.where(i)}, column {column!r}: {str(raw)[:40]!r} is not a split; "
                "expected train, val or test",
                file=fname, row=i + 1, column=column, user=str(uid),
            )
        uid = str(uid)
        if uid in out and out[uid] != name:
            raise TrajectoryError(
                f"{fname}: {posts.where(i)}, column {column!r}: user {uid!r} is {name!r} here but "
                f"{out[uid]!r} at {posts.where(first_row[uid])}; expected one split per user",
                file=fname, row=i + 1, column=column, user=uid,
            )
        out.setdefault(uid, name)
        first_row.setdefault(uid, i)
    return out


def length_buckets(
    lengths: np.ndarray, indices: np.ndarray, batch_size: int, *, rng: np.random.Generator | None = None
) -> list[np.ndarray]:
    """Group ``indices`` into batches of similar length (less padding).

    Sorted by length (ties broken at random when ``rng`` is given), cut into chunks of
    ``batch_size``; the chunk order is shuffled when ``rng`` is given.
    """
    indices = np.asarray(indices, dtype=np.int64)
    lens = np.asarray(lengths)[indices]
    tie = rng.random(indices.size) if rng is not None else np.arange(indices.size)
    order = indices[np.lexsort((tie, lens))]
    batches = [order[i : i + batch_size] for i in range(0, order.size, batch_size)]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches
