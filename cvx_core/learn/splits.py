"""Seeded stratified train/val/test splits and length-bucketed batches of user indices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cvx_core.data.trajectory import TrajectorySet


@dataclass(frozen=True)
class Split:
    """Positions (into the TrajectorySet) of the train / validation / test users, each sorted."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def as_user_ids(self, ts: TrajectorySet) -> dict[str, list[str]]:
        ids = ts.user_ids
        return {name: [ids[i] for i in getattr(self, name)] for name in ("train", "val", "test")}


def stratified_split(
    labels: Sequence[int] | np.ndarray, *, val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0
) -> Split:
    """Split positions ``0..N-1`` so each class keeps its share in train, val and test.

    Per class of size ``n``: ``round(n * test_fraction)`` test and ``round(n * val_fraction)``
    validation users (each at least 1), the rest train (at least 1). Deterministic in ``seed``.
    Raises ValueError if a class has fewer than 3 members or a label is missing (-1).
    """
    y = np.asarray(labels, dtype=np.int64)
    if y.ndim != 1 or y.size == 0:
        raise ValueError("labels must be a non-empty 1-D array")
    if (y < 0).any():
        raise ValueError(f"{int((y < 0).sum())} trajectories have no label; every user needs one to train")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if idx.size < 3:
            raise ValueError(f"class {int(c)} has {idx.size} users; each class needs at least 3 (train, val, test)")
        idx = rng.permutation(idx)
        n_test = min(max(1, int(round(idx.size * test_fraction))), idx.size - 2)
        n_val = min(max(1, int(round(idx.size * val_fraction))), idx.size - n_test - 1)
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test : n_test + n_val])
        parts["train"].append(idx[n_test + n_val :])
    return Split(**{k: np.sort(np.concatenate(v)) for k, v in parts.items()})


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
