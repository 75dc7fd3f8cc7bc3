"""Drift attribution (Pareto): which embedding dimensions carry a trajectory's movement.

Per SPEC: for a drift vector ``delta [D]`` (by default ``v_T - v_1``) the share of
dimension d is ``p_d = |delta_d| / sum_e |delta_e|``; dimensions are ranked by share
(descending; ties by dimension index, ascending) and the attribution set is the fewest
top-ranked dimensions whose cumulative share reaches ``pareto_fraction`` (config, default
0.8). A zero drift has all shares zero and an empty attribution set (no division by zero).

Also: drift between two chosen posts, between the means of two post ranges (e.g. the
segments on each side of a change point), and cohort attribution (mean per-user shares,
per-class means and the difference of the extreme classes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cvx_core.features.config import TemporalFeaturesConfig
from cvx_core.data.trajectory import Trajectory, TrajectorySet

__all__ = [
    "DriftAttribution",
    "CohortAttribution",
    "drift_shares",
    "rank_dimensions",
    "pareto_dims",
    "attribute_drift",
    "attribute_segments",
    "attribute_change",
    "cohort_attribution",
]

# a cumulative share within this of the target counts as reaching it (float sums)
_REACH_TOL = 1e-12


def drift_shares(delta: np.ndarray) -> np.ndarray:
    """``[..., D]`` drift -> ``[..., D]`` float64 shares ``|delta| / sum|delta|`` (zeros
    where the drift is zero)."""
    a = np.abs(np.asarray(delta, dtype=np.float64))
    total = a.sum(axis=-1, keepdims=True)
    return np.divide(a, total, out=np.zeros_like(a), where=total > 0)


def rank_dimensions(shares: np.ndarray) -> np.ndarray:
    """``[D]`` dimension indices by share, descending; equal shares in index order."""
    s = np.asarray(shares, dtype=np.float64)
    return np.argsort(-s, kind="stable")


def pareto_dims(shares: np.ndarray, *, fraction: float = 0.8) -> tuple[int, ...]:
    """The fewest top-ranked dimensions whose cumulative share reaches ``fraction``
    (``shares [D]`` summing to 1, or all zero -> ``()``), in rank order, Python ints."""
    if not (0.0 < fraction <= 1.0):
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    s = np.asarray(shares, dtype=np.float64)
    total = float(s.sum())
    if total <= 0.0:
        return ()
    order = rank_dimensions(s)
    cum = np.cumsum(s[order]) / total
    k = int(np.searchsorted(cum, fraction - _REACH_TOL, side="left")) + 1
    k = min(k, s.size)
    return tuple(int(d) for d in order[:k])


@dataclass(frozen=True, eq=False)
class DriftAttribution:
    """Attribution of one drift vector.

    Attributes:
        drift: ``[D]`` the signed drift vector attributed.
        shares: ``[D]`` ``|drift| / sum|drift|`` (all zero for zero drift).
        order: ``[D]`` dimensions ranked by share (descending, ties by index).
        pareto_dims: the attribution set, in rank order.
        pareto_fraction: the fraction the set reaches.
        start, end: what was compared: post indices (``mode="points"``) or the first posts
            of the two ranges (``mode="segments"``).
        mode: ``"points"`` or ``"segments"``.
    """

    drift: np.ndarray
    shares: np.ndarray
    order: np.ndarray
    pareto_dims: tuple[int, ...]
    pareto_fraction: float
    start: int
    end: int
    mode: str = "points"

    @property
    def drift_norm(self) -> float:
        return float(np.linalg.norm(self.drift))

    @property
    def pareto_size(self) -> int:
        return len(self.pareto_dims)

    def top(self, k: int = 5) -> list[tuple[int, float]]:
        """The ``k`` largest ``(dimension, share)`` pairs (zero shares left out)."""
        out = []
        for d in self.order[: max(int(k), 0)]:
            if self.shares[d] <= 0.0:
                break
            out.append((int(d), float(self.shares[d])))
        return out


def _emb(data: Trajectory | np.ndarray) -> np.ndarray:
    if isinstance(data, Trajectory):
        return data.embeddings
    arr = np.asarray(data)
    if arr.ndim != 2 or arr.shape[0] < 1:
        raise ValueError(f"expected a Trajectory or a [T, D] array with T >= 1, got shape {arr.shape}")
    return arr


def _fraction(config: TemporalFeaturesConfig | None) -> float:
    return (config or TemporalFeaturesConfig()).pareto_fraction


def _make(delta: np.ndarray, fraction: float, start: int, end: int, mode: str) -> DriftAttribution:
    delta = np.asarray(delta, dtype=np.float64)
    shares = drift_shares(delta)
    for arr in (delta, shares):
        arr.setflags(write=False)
    order = rank_dimensions(shares)
    order.setflags(write=False)
    return DriftAttribution(
        drift=delta,
        shares=shares,
        order=order,
        pareto_dims=pareto_dims(shares, fraction=fraction),
        pareto_fraction=fraction,
        start=int(start),
        end=int(end),
        mode=mode,
    )


def _index(i: int, n: int, name: str) -> int:
    j = int(i)
    if j < 0:
        j += n
    if not 0 <= j < n:
        raise IndexError(f"{name}={i} is out of range for a trajectory of {n} posts")
    return j


def attribute_drift(
    data: Trajectory | np.ndarray,
    *,
    start: int | None = None,
    end: int | None = None,
    config: TemporalFeaturesConfig | None = None,
) -> DriftAttribution:
    """Attribution of ``v_end - v_start`` for ``data [T, D]``.

    Defaults: the whole trajectory (``v_T - v_1``, SPEC's drift, via
    ``AnalyticBackend.drift``). ``start``/``end`` are post indices (negative counts from
    the end); ``start`` must not come after ``end``.
    """
    emb = _emb(data)
    n = emb.shape[0]
    fraction = _fraction(config)
    if start is None and end is None:
        from cvx_core.features.analytic import AnalyticBackend

        return _make(AnalyticBackend.drift(np.asarray(emb, dtype=np.float64)), fraction, 0, n - 1, "points")
    i = _index(0 if start is None else start, n, "start")
    j = _index(n - 1 if end is None else end, n, "end")
    if i > j:
        raise ValueError(f"start ({i}) must not come after end ({j})")
    delta = np.asarray(emb[j], dtype=np.float64) - np.asarray(emb[i], dtype=np.float64)
    return _make(delta, fraction, i, j, "points")


def attribute_segments(
    data: Trajectory | np.ndarray,
    *,
    before: tuple[int, int],
    after: tuple[int, int],
    config: TemporalFeaturesConfig | None = None,
) -> DriftAttribution:
    """Attribution of ``mean(v[after]) - mean(v[before])`` for half-open post ranges
    ``before = (a, b)``, ``after = (c, d)`` (non-empty, within the trajectory)."""
    emb = _emb(data)
    n = emb.shape[0]
    for name, (a, b) in (("before", before), ("after", after)):
        if not (0 <= int(a) < int(b) <= n):
            raise ValueError(f"{name}={(a, b)} must be a non-empty range within [0, {n}]")
    x = np.asarray(emb, dtype=np.float64)
    delta = x[int(after[0]) : int(after[1])].mean(axis=0) - x[int(before[0]) : int(before[1])].mean(axis=0)
    return _make(delta, _fraction(config), int(before[0]), int(after[0]), "segments")


def attribute_change(
    data: Trajectory | np.ndarray,
    index: int,
    *,
    changepoints: tuple[int, ...] | list[int] | None = None,
    window: int | None = None,
    config: TemporalFeaturesConfig | None = None,
) -> DriftAttribution:
    """Attribution of the change across change point ``index`` (first post of the new
    segment): the mean of the segment after it minus the mean of the segment before it.

    The segments end at the neighbouring change points (``changepoints``, e.g.
    ``ChangePointResult.indices``) or the trajectory's ends, and are cut to at most
    ``window`` posts on each side when ``window`` is given.
    """
    emb = _emb(data)
    n = emb.shape[0]
    c = int(index)
    if not 0 < c < n:
        raise ValueError(f"change point index {index} must be in [1, {n - 1}]")
    others = sorted(int(i) for i in (changepoints or ()) if 0 < int(i) < n and int(i) != c)
    lo = max([i for i in others if i < c], default=0)
    hi = min([i for i in others if i > c], default=n)
    if window is not None:
        if int(window) < 1:
            raise ValueError("window must be >= 1")
        lo = max(lo, c - int(window))
        hi = min(hi, c + int(window))
    return attribute_segments(emb, before=(lo, c), after=(c, hi), config=config)


@dataclass(frozen=True, eq=False)
class CohortAttribution:
    """Drift attribution over many users (whole-trajectory drift ``v_T - v_1`` each).

    Attributes:
        mean_shares: ``[D]`` mean over users of their shares (users with zero drift
            contribute zeros, so the sum is the fraction of users that moved).
        class_shares: label -> ``[D]`` mean shares of that class's users (unlabelled users
            are left out here).
        class_difference: ``[D]`` mean shares of the highest label minus those of the lowest
            label; ``None`` with fewer than two classes.
        n_users: number of users averaged.
        class_counts: label -> number of users.
        per_user_shares: ``[N, D]`` float32, each user's shares, in the set's order.
        pareto_fraction: the configured fraction (for :meth:`pareto_dims`).
    """

    mean_shares: np.ndarray
    class_shares: dict[int, np.ndarray]
    class_difference: np.ndarray | None
    n_users: int
    class_counts: dict[int, int] = field(default_factory=dict)
    per_user_shares: np.ndarray | None = field(default=None, repr=False)
    pareto_fraction: float = 0.8

    def pareto_dims(self, label: int | None = None, *, fraction: float | None = None) -> tuple[int, ...]:
        """Attribution set of the cohort's mean shares (or of one class's)."""
        shares = self.mean_shares if label is None else self.class_shares[int(label)]
        return pareto_dims(shares, fraction=self.pareto_fraction if fraction is None else fraction)

    def top_difference(self, k: int = 10) -> list[tuple[int, float]]:
        """The ``k`` dimensions with the largest ``|class_difference|`` as (dim, difference)."""
        if self.class_difference is None:
            return []
        order = np.argsort(-np.abs(self.class_difference), kind="stable")[: max(int(k), 0)]
        return [(int(d), float(self.class_difference[d])) for d in order]


def cohort_attribution(
    trajectories: TrajectorySet,
    *,
    config: TemporalFeaturesConfig | None = None,
) -> CohortAttribution:
    """Mean per-user drift shares over ``trajectories``, per class and their difference.

    Each user's drift is ``v_T - v_1`` (a one-post user has zero drift, zero shares).
    """
    from cvx_core.features.analytic import AnalyticBackend

    fraction = _fraction(config)
    n, d = len(trajectories), trajectories.dim
    deltas = np.empty((n, d), dtype=np.float64)
    for i, tr in enumerate(trajectories):
        deltas[i] = AnalyticBackend.drift(np.asarray(tr.embeddings, dtype=np.float64))
    shares = drift_shares(deltas)
    mean = shares.mean(axis=0)
    labelled = np.array([tr.label is not None for tr in trajectories], dtype=bool)
    labels = np.array([0 if tr.label is None else tr.label for tr in trajectories], dtype=np.int64)
    class_shares: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    for lab in sorted(int(v) for v in np.unique(labels[labelled])):
        rows = labelled & (labels == lab)
        class_shares[lab] = shares[rows].mean(axis=0)
        counts[lab] = int(rows.sum())
    difference = None
    if len(class_shares) >= 2:
        lo, hi = min(class_shares), max(class_shares)
        difference = class_shares[hi] - class_shares[lo]
    per_user = shares.astype(np.float32)
    for arr in (mean, per_user, *class_shares.values(), *(() if difference is None else (difference,))):
        arr.setflags(write=False)
    return CohortAttribution(
        mean_shares=mean,
        class_shares=class_shares,
        class_difference=difference,
        n_users=n,
        class_counts=counts,
        per_user_shares=per_user,
        pareto_fraction=fraction,
    )
