"""The trajectory data model: one entity's time-stamped embeddings, a set of them, and
the padded-batch form the torch path consumes.

Shapes: a trajectory holds ``embeddings [T, D]`` (float32), ``datetimes [T]``
(``datetime64[us]``: exact for any year 1-9999, unlike nanoseconds which wrap outside
1677-2262) and ``timestamps [T]`` (float64 days since its first post); a padded batch holds
``values [B, T_max, D]``, ``timestamps [B, T_max]`` and ``lengths [B]``. A set may carry
per-user ``metadata`` (a DataFrame indexed by user id).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch

NS_PER_DAY = 86_400 * 1_000_000_000
US_PER_DAY = 86_400 * 1_000_000
DATETIME_DTYPE = np.dtype("datetime64[us]")

__all__ = [
    "Trajectory",
    "TrajectorySet",
    "PaddedBatch",
    "DatasetSummary",
    "TrajectoryError",
    "days_since_first",
    "as_datetimes",
    "DATETIME_DTYPE",
]


class TrajectoryError(ValueError):
    """Bad trajectory data. The message names the file, row or user, and column, and
    says what was expected; the same facts are kept as attributes for programs."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        column: str | None = None,
        user: str | None = None,
    ) -> None:
        super().__init__(message)
        self.file = file
        self.row = row
        self.column = column
        self.user = user


def as_datetimes(values: Any, *, what: str = "datetimes") -> np.ndarray:
    """Any datetime64 array (or ISO strings) -> ``datetime64[us]``, exactly.

    Raises :class:`TrajectoryError` instead of truncating a finer unit (sub-microsecond
    parts) or wrapping a date outside the microsecond range (about +-290,000 years).
    """
    arr = np.asarray(values)
    if arr.dtype.kind != "M":
        try:
            arr = np.asarray(values, dtype=DATETIME_DTYPE)
        except (TypeError, ValueError) as exc:
            raise TrajectoryError(f"{what}: not datetimes ({exc})") from None
    if arr.dtype == DATETIME_DTYPE:
        return arr
    out = arr.astype(DATETIME_DTYPE)
    back = out.astype(arr.dtype)
    ok = (back == arr) | (np.isnat(arr) & np.isnat(back))
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise TrajectoryError(
            f"{what}: element {i} ({arr[i]}) cannot be held exactly as datetime64[us] "
            "(a sub-microsecond part, or a date outside the representable range)"
        )
    return out


def days_since_first(datetimes: np.ndarray) -> np.ndarray:
    """Datetime array ``[T]`` -> float64 days since its first element ``[T]``."""
    dts = as_datetimes(datetimes)
    if dts.size == 0:
        return np.zeros(0, dtype=np.float64)
    us = (dts - dts[0]).astype(np.int64)
    return us.astype(np.float64) / US_PER_DAY


@dataclass(frozen=True, eq=False)
class Trajectory:
    """One entity's posts in time order.

    Attributes:
        user_id: the entity's id (text).
        embeddings: ``[T, D]`` float32, one row per post.
        datetimes: ``[T]`` ``datetime64[us]`` (UTC, timezone-naive), non-decreasing; any
            finer unit given is converted exactly or refused.
        label: optional integer class ``>= 0`` of the whole trajectory (negative numbers are
            refused: ``-1`` marks "no label" in :attr:`TrajectorySet.labels`).
        texts: optional per-post text, ``T`` strings.
        timestamps: ``[T]`` float64 days since the first post (derived from ``datetimes``).
    """

    user_id: str
    embeddings: np.ndarray
    datetimes: np.ndarray
    label: int | None = None
    texts: tuple[str, ...] | None = None
    timestamps: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        emb = np.ascontiguousarray(self.embeddings, dtype=np.float32)
        dts = as_datetimes(self.datetimes, what=f"user {self.user_id!r}")
        if emb.ndim != 2:
            raise TrajectoryError(
                f"user {self.user_id!r}: embeddings must be a [T, D] matrix, got shape {emb.shape}",
                user=self.user_id,
            )
        if emb.shape[0] < 1 or emb.shape[1] < 1:
            raise TrajectoryError(
                f"user {self.user_id!r}: a trajectory needs at least one post and D >= 1, "
                f"got shape {emb.shape}",
                user=self.user_id,
            )
        if dts.shape != (emb.shape[0],):
            raise TrajectoryError(
                f"user {self.user_id!r}: {emb.shape[0]} embeddings but {dts.shape} datetimes",
                user=self.user_id,
            )
        if np.isnat(dts).any():
            raise TrajectoryError(f"user {self.user_id!r}: missing datetime", user=self.user_id)
        if dts.size > 1 and (np.diff(dts.astype(np.int64)) < 0).any():
            raise TrajectoryError(
                f"user {self.user_id!r}: datetimes must be sorted (use TrajectorySet loaders, "
                "which sort posts stably by time)",
                user=self.user_id,
            )
        if not np.isfinite(emb).all():
            raise TrajectoryError(
                f"user {self.user_id!r}: embeddings must be finite", user=self.user_id
            )
        if self.texts is not None and len(self.texts) != emb.shape[0]:
            raise TrajectoryError(
                f"user {self.user_id!r}: {emb.shape[0]} posts but {len(self.texts)} texts",
                user=self.user_id,
            )
        emb.setflags(write=False)
        dts = dts.copy()
        dts.setflags(write=False)
        ts = days_since_first(dts)
        ts.setflags(write=False)
        object.__setattr__(self, "user_id", str(self.user_id))
        object.__setattr__(self, "embeddings", emb)
        object.__setattr__(self, "datetimes", dts)
        object.__setattr__(self, "timestamps", ts)
        if self.label is not None:
            if not isinstance(self.label, (int, np.integer)) or isinstance(self.label, (bool, np.bool_)) or self.label < 0:
                raise TrajectoryError(
                    f"user {self.user_id!r}: label {self.label!r} is not a class index; expected an "
                    "integer >= 0 (None for no label; a float such as 1.0 is refused, never rounded)",
                    user=self.user_id,
                    column="label",
                )
            object.__setattr__(self, "label", int(self.label))
        if self.texts is not None:
            object.__setattr__(self, "texts", tuple(str(x) for x in self.texts))

    @property
    def n_posts(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def span_days(self) -> float:
        return float(self.timestamps[-1])

    def __len__(self) -> int:
        return self.n_posts

    def __repr__(self) -> str:
        return (
            f"Trajectory(user_id={self.user_id!r}, T={self.n_posts}, D={self.dim}, "
            f"label={self.label}, span_days={self.span_days:.2f})"
        )


@dataclass(frozen=True)
class DatasetSummary:
    """What an analyst wants to see first about a dataset."""

    n_users: int
    n_posts: int
    dim: int
    posts_per_user_min: int
    posts_per_user_median: float
    posts_per_user_max: int
    start: np.datetime64
    end: np.datetime64
    median_span_days: float
    label_counts: dict[str, int]
    has_text: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "users": self.n_users,
            "posts": self.n_posts,
            "dimension": self.dim,
            "posts per user (min / median / max)": (
                f"{self.posts_per_user_min} / {self.posts_per_user_median:g} / "
                f"{self.posts_per_user_max}"
            ),
            "first post": str(self.start)[:19],
            "last post": str(self.end)[:19],
            "median span (days)": round(self.median_span_days, 2),
            "labels": dict(self.label_counts),
            "has text": self.has_text,
        }


@dataclass(frozen=True, eq=False)
class PaddedBatch:
    """Trajectories padded to a common length for the torch path.

    Attributes:
        values: ``[B, T_max, D]`` embeddings, zeros after each trajectory's end.
        timestamps: ``[B, T_max]`` float64 days since each trajectory's first post; padding
            repeats the last real timestamp.
        lengths: ``[B]`` int64 number of real posts per row.
        labels: ``[B]`` int64, ``-1`` where a trajectory has no label.
        user_ids: the ``B`` user ids in row order.
    """

    values: np.ndarray
    timestamps: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray
    user_ids: tuple[str, ...]

    @property
    def mask(self) -> np.ndarray:
        """``[B, T_max]`` bool, True on real posts."""
        t_max = self.values.shape[1]
        return np.arange(t_max)[None, :] < self.lengths[:, None]

    def to_torch(
        self, device: "str | torch.device" = "cpu", dtype: "torch.dtype | None" = None
    ) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
        """``(values [B,T,D], timestamps [B,T] float64, lengths [B] int64)`` as tensors."""
        import torch

        dtype = dtype or torch.float32
        return (
            torch.as_tensor(self.values, dtype=dtype, device=device),
            torch.as_tensor(self.timestamps, dtype=torch.float64, device=device),
            torch.as_tensor(self.lengths, dtype=torch.int64, device=device),
        )


class TrajectorySet:
    """Many trajectories of one embedding dimension ``D``, in a fixed order.

    Supports ``len``, iteration, ``ts[user_id]`` (by id) and ``ts.at(i)`` (by position).
    """

    def __init__(
        self, trajectories: Sequence[Trajectory], *, name: str = "", metadata: "pd.DataFrame | None" = None
    ) -> None:
        trajs = list(trajectories)
        if not trajs:
            raise TrajectoryError(f"{name or 'dataset'}: no trajectories")
        dims = {tr.dim for tr in trajs}
        if len(dims) != 1:
            raise TrajectoryError(
                f"{name or 'dataset'}: all trajectories must have one dimension, got {sorted(dims)}"
            )
        index: dict[str, int] = {}
        for i, tr in enumerate(trajs):
            if tr.user_id in index:
                raise TrajectoryError(
                    f"{name or 'dataset'}: user id {tr.user_id!r} appears twice", user=tr.user_id
                )
            index[tr.user_id] = i
        self._trajs = tuple(trajs)
        self._index = index
        self.name = name
        self._metadata = _check_metadata(metadata, [tr.user_id for tr in trajs], name)
        self._digest: str | None = None

    # -- container protocol -------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._trajs)

    def __iter__(self) -> Iterator[Trajectory]:
        return iter(self._trajs)

    def __getitem__(self, user_id: str) -> Trajectory:
        try:
            return self._trajs[self._index[str(user_id)]]
        except KeyError:
            raise KeyError(f"no user {user_id!r} in {self.name or 'dataset'}") from None

    def __contains__(self, user_id: object) -> bool:
        return str(user_id) in self._index

    def at(self, i: int) -> Trajectory:
        return self._trajs[i]

    def __repr__(self) -> str:
        return f"TrajectorySet(name={self.name!r}, users={len(self)}, D={self.dim})"

    # -- properties -----------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self._trajs[0].dim

    @property
    def metadata(self) -> "pd.DataFrame":
        """Per-user metadata: index = user id (in set order), one column per attribute that
        is constant within each user (e.g. ``country`` of an upload); an empty frame (no
        columns) when there is none. A copy: changing it does not change the set."""
        return self._metadata.copy()

    @property
    def user_ids(self) -> list[str]:
        return [tr.user_id for tr in self._trajs]

    @property
    def labels(self) -> np.ndarray:
        """``[N]`` int64 labels, ``-1`` where a trajectory has none."""
        return np.array([-1 if tr.label is None else tr.label for tr in self._trajs], dtype=np.int64)

    @property
    def has_labels(self) -> bool:
        return all(tr.label is not None for tr in self._trajs)

    @property
    def has_text(self) -> bool:
        return all(tr.texts is not None for tr in self._trajs)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([tr.n_posts for tr in self._trajs], dtype=np.int64)

    @property
    def n_posts(self) -> int:
        return int(self.lengths.sum())

    # -- derived forms --------------------------------------------------------------------
    def subset(self, user_ids: Sequence[str], *, name: str | None = None) -> "TrajectorySet":
        ids = [str(u) for u in user_ids]
        return TrajectorySet(
            [self[u] for u in ids],
            name=self.name if name is None else name,
            metadata=self._metadata.loc[ids] if len(self._metadata.columns) else None,
        )

    def summary(self) -> DatasetSummary:
        lengths = self.lengths
        starts = np.array([tr.datetimes[0] for tr in self._trajs], dtype=DATETIME_DTYPE)
        ends = np.array([tr.datetimes[-1] for tr in self._trajs], dtype=DATETIME_DTYPE)
        counts: dict[str, int] = {}
        for tr in self._trajs:
            key = "unlabelled" if tr.label is None else str(tr.label)
            counts[key] = counts.get(key, 0) + 1
        return DatasetSummary(
            n_users=len(self),
            n_posts=int(lengths.sum()),
            dim=self.dim,
            posts_per_user_min=int(lengths.min()),
            posts_per_user_median=float(np.median(lengths)),
            posts_per_user_max=int(lengths.max()),
            start=starts.min(),
            end=ends.max(),
            median_span_days=float(np.median([tr.span_days for tr in self._trajs])),
            label_counts=dict(sorted(counts.items())),
            has_text=self.has_text,
        )

    def padded(
        self, indices: Sequence[int] | None = None, *, max_len: int | None = None
    ) -> PaddedBatch:
        """Pad the trajectories at ``indices`` (all by default) into a :class:`PaddedBatch`.

        ``max_len`` keeps each trajectory's *last* ``max_len`` posts (the most recent ones);
        their timestamps are re-based to the first kept post.
        """
        idx = list(range(len(self))) if indices is None else [int(i) for i in indices]
        trajs = [self._trajs[i] for i in idx]
        if max_len is not None and max_len < 1:
            raise ValueError("max_len must be >= 1")
        lengths = np.array(
            [tr.n_posts if max_len is None else min(tr.n_posts, max_len) for tr in trajs],
            dtype=np.int64,
        )
        b, t_max, d = len(trajs), int(lengths.max(initial=1)), self.dim
        values = np.zeros((b, t_max, d), dtype=np.float32)
        stamps = np.zeros((b, t_max), dtype=np.float64)
        for row, (tr, n) in enumerate(zip(trajs, lengths)):
            values[row, :n] = tr.embeddings[tr.n_posts - n :]
            ts = tr.timestamps[tr.n_posts - n :]
            ts = ts - ts[0]
            stamps[row, :n] = ts
            stamps[row, n:] = ts[-1]
        labels = np.array([-1 if tr.label is None else tr.label for tr in trajs], dtype=np.int64)
        return PaddedBatch(values, stamps, lengths, labels, tuple(tr.user_id for tr in trajs))

    def digest(self) -> str:
        """A content hash (sha256 hex) of every value: a safe cache key."""
        if self._digest is None:
            h = hashlib.sha256()
            for tr in self._trajs:
                h.update(tr.user_id.encode("utf-8", "surrogatepass") + b"\0")
                h.update(str(tr.label).encode() + b"\0")
                h.update(tr.embeddings.tobytes())
                h.update(tr.datetimes.astype(np.int64).tobytes())
                if tr.texts is not None:
                    for text in tr.texts:
                        h.update(text.encode("utf-8", "surrogatepass") + b"\0")
            meta = self._metadata
            for col in meta.columns:
                h.update(b"\1" + str(col).encode("utf-8", "surrogatepass") + b"\0" + str(meta[col].dtype).encode())
                for value in meta[col].tolist():
                    h.update(repr(value).encode("utf-8", "surrogatepass") + b"\0")
            self._digest = h.hexdigest()
        return self._digest


def _check_metadata(metadata: "pd.DataFrame | None", user_ids: list[str], name: str) -> "pd.DataFrame":
    """``metadata`` reindexed to ``user_ids`` (every user must have a row, no duplicates)."""
    import pandas as pd

    if metadata is None or len(metadata.columns) == 0:
        return pd.DataFrame(index=pd.Index(user_ids, name="user_id", dtype=object))
    if not isinstance(metadata, pd.DataFrame):
        raise TypeError(f"metadata must be a pandas DataFrame, got {type(metadata).__name__}")
    index = [str(u) for u in metadata.index]
    if len(set(index)) != len(index):
        raise TrajectoryError(f"{name or 'dataset'}: metadata has a user id twice")
    missing = [u for u in user_ids if u not in set(index)]
    if missing:
        raise TrajectoryError(f"{name or 'dataset'}: metadata has no row for user {missing[0]!r}", user=missing[0])
    meta = metadata.copy()
    meta.index = pd.Index(index, name="user_id", dtype=object)
    return meta.loc[user_ids]
