"""Change points of one trajectory, analytic path: exact penalised segmentation (PELT via
ruptures, or an exact dynamic programme over moments). BOCPD (Adams & MacKay 2007) lives in
:mod:`cvx_core.analysis.bocpd` and is re-exported here.

Exact search: the penalised optimum ``min sum_k cost(segment_k) + pen * n_changes`` with the
l2 cost (sum of squared deviations from the segment mean, on the raw embeddings) or the
cosine cost (the same on unit-normalised embeddings, which is exactly ruptures' cosine
kernel). It runs on ruptures' C implementation ``KernelCPD(kernel="linear")`` with
``jump=1``; ``search="pelt"`` runs the pure-Python ``Pelt(model="l2", jump=1)`` instead
(same optimum, ~30-100x slower; kept as a reference).

Default penalty (``ChangePointConfig.penalty=None``): calibrated so that the share of users
without a change who get a change point is ``ChangePointConfig.sensitivity`` (default
0.05)::

    pen = penalty_scale * kappa(sensitivity, n, d_eff) * base
    base = S * max(log T, 1 + 2 sqrt(L / D) + 2 L / D),   L = 2 log T   (:func:`default_penalty`)
    S = sum_d sigma_d^2,  sigma_d^2 = (1.4826 * MAD_i(x_{i+1,d} - x_{i,d}))^2 / 2

``base`` is the BIC-like ``log(T) * D * sigma^2`` of ruptures' documentation with a robust
noise variance from first differences (the Laurent-Massart chi-square bound takes over at
small D); ``kappa`` was fitted by simulation on null histories of real text and noise at
D = 384 (:mod:`cvx_core.analysis.penalty`, docs/analytics.md).

Time-aware search (``ChangePointConfig.time_aware``). The search above works on post order;
real gaps count through ``time_scale`` x the user's *mean gap* ``g`` between distinct post
times (span / (distinct times - 1)):

- ``"bins"`` (default): posts closer than ``time_scale * g`` to the previous post form one
  time bin (a burst; posts with one timestamp always share a bin), and change points may
  only fall at the first post of a bin. The cost is still summed over posts, so a bin of
  many posts weighs as much as its posts. A burst of posts written days apart inside a
  history of yearly posts cannot be cut into segments. When the unconstrained optimum
  (ruptures) already cuts only at bin starts it is the answer; otherwise an exact O(T^2)
  dynamic programme over the allowed cuts finds the constrained optimum.
- ``"merge"``: resampling before the search: posts closer than ``time_scale * g`` to the
  previous post form one time bin, each bin is one observation (its posts' mean) and the
  penalty counts bins; change points are reported at the first post of a bin.
- ``"none"``: post order only.

Posts of one moment (one timestamp; one day for a date-only column) always share a bin and
are never split; each segment spans at least ``min_moments`` bins (:func:`moment_optimum`).
Without datetimes (a bare matrix) the search is on post order. docs/analytics.md compares
the options on the planted sample and on the real-text sample.

Indices are plain Python ints; a change point's index is the first post of the new segment.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from cvx_core.analysis.bocpd import (  # BOCPD lives in its own module; re-exported here
    BOCPDConfig,
    BOCPDResult,
    _as_matrix,
    bocpd,
    bocpd_statistic,
    detect_bocpd,
)
from cvx_core.analysis.penalty import DEFAULT_SENSITIVITY, MomentSums, calibrated_scale, moment_sums, noise_dimension
from cvx_core.data.budgets import changepoint_windows
from cvx_core.data.trajectory import Trajectory, as_datetimes, days_since_first

__all__ = [
    "ChangePointConfig",
    "ChangePointResult",
    "detect_changepoints",
    "time_bins",
    "mean_gap_days",
    "constrained_optimum",
    "moment_optimum",
    "estimate_noise_variance",
    "default_penalty",
    "segment_cost",
    "BOCPDConfig",
    "BOCPDResult",
    "bocpd",
    "bocpd_statistic",
    "detect_bocpd",
    "match_changepoints",
]

_MAD_TO_SD = 1.4826


# ---------------------------------------------------------------------------------------
# exact search (ruptures)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChangePointConfig:
    """Options of the exact (PELT) change-point search.

    Attributes:
        cost: ``"l2"`` (mean shift of the raw embeddings) or ``"cosine"`` (mean shift of the
            unit-normalised embeddings; ruptures' cosine kernel).
        penalty: the penalty per change point; ``None`` (default) is the calibrated
            penalty: the user's base penalty times the factor fitted by simulation on null
            histories for the user's length and noise dimension at ``sensitivity``
            (:func:`cvx_core.analysis.penalty.calibrated_scale`).
        sensitivity: the false-alarm rate per user on histories without a change that the
            calibrated penalty holds (0.05: at most 5% of such users get a change point).
            Larger -> more change points, on the same calibrated scale.
        penalty_scale: multiplies the calibrated penalty (ignored when ``penalty`` is set).
            Larger -> fewer change points; 1.0 keeps the stated false-alarm rate.
        min_size: the shortest segment in posts, >= 1.
        min_moments: the shortest segment in time: distinct moments (time bins), >= 1.
        n_permutations, seed: no effect (the per-user permutation penalty they drove was
            replaced by the calibrated table); accepted so that saved configs still load,
            and a value other than the default warns.
        search: ``"kernelcpd"`` (ruptures' C PELT, default) or ``"pelt"`` (pure Python
            ``ruptures.Pelt(model="l2", jump=1)``, same optimum, slow).
        time_aware: ``"bins"`` (default): change points only between time bins (bursts are
            never cut); ``"merge"``: search on bin means; ``"none"``: post order only (see
            the module doc).
        time_scale: a post whose gap to the previous post is below ``time_scale`` x the
            user's mean gap between distinct post times joins the previous post's bin.
    """

    cost: Literal["l2", "cosine"] = "l2"
    penalty: float | None = None
    sensitivity: float = DEFAULT_SENSITIVITY
    penalty_scale: float = 1.0
    min_size: int = 2
    min_moments: int = 2
    n_permutations: int = 199
    seed: int = 0
    search: Literal["kernelcpd", "pelt"] = "kernelcpd"
    time_aware: Literal["bins", "merge", "none"] = "bins"
    time_scale: float = 0.1

    def __post_init__(self) -> None:
        if self.cost not in ("l2", "cosine"):
            raise ValueError(f"ChangePointConfig.cost must be 'l2' or 'cosine', got {self.cost!r}")
        if self.search not in ("kernelcpd", "pelt"):
            raise ValueError(
                f"ChangePointConfig.search must be 'kernelcpd' or 'pelt', got {self.search!r}"
            )
        if self.time_aware not in ("bins", "merge", "none"):
            raise ValueError(
                f"ChangePointConfig.time_aware must be 'bins', 'merge' or 'none', got {self.time_aware!r}"
            )
        if not (isinstance(self.time_scale, (int, float)) and not isinstance(self.time_scale, bool)
                and math.isfinite(self.time_scale) and self.time_scale >= 0):
            raise ValueError(f"ChangePointConfig.time_scale must be a finite number >= 0, got {self.time_scale!r}")
        object.__setattr__(self, "time_scale", float(self.time_scale))
        if self.penalty is not None and not (
            isinstance(self.penalty, (int, float)) and math.isfinite(self.penalty) and self.penalty > 0
        ):
            raise ValueError(f"ChangePointConfig.penalty must be a finite number > 0 or None, got {self.penalty!r}")
        if not (isinstance(self.penalty_scale, (int, float)) and math.isfinite(self.penalty_scale)
                and self.penalty_scale > 0):
            raise ValueError(f"ChangePointConfig.penalty_scale must be > 0, got {self.penalty_scale!r}")
        if not (isinstance(self.sensitivity, (int, float)) and not isinstance(self.sensitivity, bool)
                and 0.0 < self.sensitivity < 1.0):
            raise ValueError(f"ChangePointConfig.sensitivity must be a false-alarm rate in (0, 1), got {self.sensitivity!r}")
        object.__setattr__(self, "sensitivity", float(self.sensitivity))
        for name, low in (("min_size", 1), ("min_moments", 1), ("n_permutations", 1), ("seed", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise ValueError(f"ChangePointConfig.{name} must be an integer >= {low}, got {v!r}")
            object.__setattr__(self, name, int(v))
        for name, default in (("n_permutations", 199), ("seed", 0)):
            if getattr(self, name) != default:
                warnings.warn(f"ChangePointConfig.{name} has no effect: the penalty is calibrated by simulation "
                              "(cvx_core.analysis.penalty), not by permuting each user", DeprecationWarning, stacklevel=3)
        if self.penalty is not None:
            object.__setattr__(self, "penalty", float(self.penalty))
        object.__setattr__(self, "penalty_scale", float(self.penalty_scale))

    def to_dict(self) -> dict[str, object]:
        return {
            "cost": self.cost,
            "penalty": self.penalty,
            "sensitivity": self.sensitivity,
            "penalty_scale": self.penalty_scale,
            "min_size": self.min_size,
            "min_moments": self.min_moments,
            "n_permutations": self.n_permutations,
            "seed": self.seed,
            "search": self.search,
            "time_aware": self.time_aware,
            "time_scale": self.time_scale,
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> "ChangePointConfig":
        from cvx_core.data.strict import strict_fields  # unknown keys, types: one line naming the field

        return cls(**strict_fields(cls, d))


@dataclass(frozen=True, eq=False)
class ChangePointResult:
    """The exact segmentation of one trajectory.

    Attributes:
        indices: change-point indices (first post of each new segment), sorted, Python ints.
        datetimes: ``[K]`` ``datetime64[us]`` of those posts; ``None`` without times.
        days: the same as days since the trajectory's first post; ``None`` without times.
        penalty: the penalty per change point that was used.
        cost: total segment cost of the segmentation (without the penalty).
        noise_variance: ``sum_d sigma_d^2`` estimated from the data (see module doc).
        n_posts: ``T``.
        config: the config used.
        n_bins: observations the search ran on (``T`` without time-aware merging).
        n_windows: windows the search ran in (1 unless the user has more moments than
            ``CVX_CHANGEPOINT_WINDOW``).
    """

    indices: tuple[int, ...]
    datetimes: np.ndarray | None
    days: tuple[float, ...] | None
    penalty: float
    cost: float
    noise_variance: float
    n_posts: int
    config: ChangePointConfig = field(repr=False)
    n_bins: int | None = None
    n_windows: int = 1

    @property
    def n_changes(self) -> int:
        return len(self.indices)

    @property
    def segments(self) -> tuple[tuple[int, int], ...]:
        """Half-open ``(start, end)`` post ranges of the segments, in order."""
        bounds = (0, *self.indices, self.n_posts)
        return tuple((bounds[k], bounds[k + 1]) for k in range(len(bounds) - 1))

    def __len__(self) -> int:
        return len(self.indices)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: plain ints/floats, ISO datetimes (or ``None``), the config."""
        return {
            "indices": list(self.indices),
            "datetimes": None
            if self.datetimes is None
            else [str(np.datetime_as_string(d, unit="s")) for d in self.datetimes],
            "days": None if self.days is None else list(self.days),
            "penalty": self.penalty,
            "cost": self.cost,
            "noise_variance": self.noise_variance,
            "n_posts": self.n_posts,
            "n_bins": self.n_bins if self.n_bins is not None else self.n_posts,
            "n_windows": self.n_windows,
            "config": self.config.to_dict(),
        }


def _normalise_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def estimate_noise_variance(x: np.ndarray) -> float:
    """Robust total noise variance ``sum_d sigma_d^2`` of ``x [T, D]`` (T >= 2).

    ``sigma_d`` is 1.4826 * MAD of the first differences of dimension d, divided by
    sqrt(2) (a difference of two independent noises has twice the variance). Where the MAD
    is zero for every dimension (piecewise-constant or discrete data), the mean squared
    difference / 2 is used; 0.0 only for a constant signal.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.shape[0] < 2:
        return 0.0
    diff = np.diff(x, axis=0)
    med = np.median(diff, axis=0)
    mad = np.median(np.abs(diff - med), axis=0)
    var = float(np.sum((_MAD_TO_SD * mad) ** 2) / 2.0)
    if var <= 0.0:
        var = float(np.mean(np.sum(diff**2, axis=1)) / 2.0)
    return var


def default_penalty(x: np.ndarray, *, cost: str = "l2", scale: float = 1.0) -> float:
    """The default penalty for ``x [T, D]`` under ``cost`` (0.0 if constant); see the
    module doc."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if cost == "cosine":
        x = _normalise_rows(x)
    return _penalty(estimate_noise_variance(x), x.shape[0], x.shape[1], scale)


def _penalty(noise: float, n: int, dim: int, scale: float) -> float:
    log_t = math.log(max(n, 2))
    x = 2.0 * log_t
    factor = max(log_t, 1.0 + 2.0 * math.sqrt(x / dim) + 2.0 * x / dim)
    return float(scale * factor * noise)


def segment_cost(x: np.ndarray, indices: tuple[int, ...] | list[int]) -> float:
    """Sum over segments of the squared deviations from the segment mean (l2 cost)."""
    x = np.asarray(x, dtype=np.float64)
    bounds = [0, *indices, x.shape[0]]
    total = 0.0
    for a, b in zip(bounds[:-1], bounds[1:]):
        seg = x[a:b]
        if seg.shape[0]:
            total += float(np.sum((seg - seg.mean(axis=0)) ** 2))
    return total


def match_changepoints(
    planted: Sequence[int], detected: Sequence[int], *, margin: int = 2
) -> tuple[int, int]:
    """Score detected change points against known ones: ``(found, false)``, where ``found``
    counts the planted points with a detection within ``margin`` posts and ``false`` the
    detections farther than ``margin`` from every planted point."""
    p = np.asarray(planted, dtype=np.int64).reshape(-1, 1)
    d = np.asarray(detected, dtype=np.int64).reshape(1, -1)
    near = np.abs(p - d) <= margin  # [planted, detected]
    return int(near.any(axis=1).sum()), int((~near.any(axis=0)).sum())


def detect_changepoints(
    data: Trajectory | np.ndarray,
    *,
    config: ChangePointConfig | None = None,
    datetimes: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ChangePointResult:
    """Exact penalised change points of one trajectory.

    Args:
        data: a :class:`Trajectory` or an embedding matrix ``[T, D]`` (``[T]`` is read as D=1).
        config: search options (defaults: l2 cost, default penalty, ``min_size=2``).
        datetimes: ``[T]`` post times for a bare matrix (a Trajectory brings its own).
        progress: ``progress(done, total)`` after each searched window (a user with more
            moments than ``CVX_CHANGEPOINT_WINDOW``, default 5,000, is searched in
            overlapping windows of that size: :func:`cvx_core.data.budgets.changepoint_windows`).

    Returns:
        a :class:`ChangePointResult`. Too-short input (``T < 4`` or ``T < 2 * min_size``) and
        constant input give no change points.
    """
    config = config or ChangePointConfig()
    x, traj = _as_matrix(data)
    n = int(x.shape[0])
    dts: np.ndarray | None
    if traj is not None:
        dts = traj.datetimes
    elif datetimes is not None:
        dts = as_datetimes(datetimes)
        if dts.shape != (n,):
            raise ValueError(f"datetimes must have shape ({n},), got {dts.shape}")
    else:
        dts = None

    signal = _normalise_rows(x) if config.cost == "cosine" else x
    observed, moments, merged = _observations(signal, dts, config)
    m = int(observed.shape[0])
    noise = estimate_noise_variance(observed) if m >= 2 else 0.0
    ms = moment_sums(observed, moments)
    min_moments = 1 if merged is not None else config.min_moments
    searchable = m >= max(4, 2 * config.min_size) and ms.n_moments >= 2 * min_moments
    if config.penalty is not None:
        pen = config.penalty
    elif searchable:
        base = _penalty(noise, m, observed.shape[1], 1.0)
        pen = config.penalty_scale * base * calibrated_scale(config.sensitivity, m, noise_dimension(observed))
    else:
        pen = 0.0

    indices: list[int] = []
    n_windows = 1
    if searchable and pen > 0.0:
        indices, n_windows = _windowed_cuts(observed, ms.starts, pen=pen, min_size=config.min_size,
                                            min_moments=min_moments, search=config.search, progress=progress)
        if merged is not None:
            indices = [int(merged[k]) for k in indices]
    elif progress is not None:
        progress(1, 1)
    total_cost = segment_cost(signal, indices) if n else 0.0
    res = _result(indices, dts, pen, total_cost, noise, n, config)
    object.__setattr__(res, "n_bins", m if merged is not None else ms.n_moments)
    object.__setattr__(res, "n_windows", n_windows)
    return res


def _exact_cuts(x: np.ndarray, starts: np.ndarray, *, pen: float, min_size: int, min_moments: int,
                search: str) -> list[int]:
    """The exact penalised optimum of ``x [T, D]`` (moments starting at ``starts [m]``):
    ruptures' unconstrained optimum when it cuts only between moments into segments of >=
    ``min_moments`` moments, else :func:`moment_optimum`. Post indices of the cuts."""
    ms = moment_sums(x, starts)
    if x.shape[0] < max(4, 2 * min_size) or ms.n_moments < 2 * min_moments:
        return []
    cuts = _search(x, pen=pen, min_size=min_size, search=search)
    if not _respects(cuts, ms, min_moments):
        cuts = [int(ms.starts[k]) for k in moment_optimum(ms, pen=pen, min_size=min_size, min_moments=min_moments)]
    return cuts


def _windowed_cuts(x: np.ndarray, starts: np.ndarray, *, pen: float, min_size: int, min_moments: int,
                   search: str, progress: Callable[[int, int], None] | None = None) -> tuple[list[int], int]:
    """``(cuts, windows)``: :func:`_exact_cuts` of ``x [T, D]`` (moments at ``starts [m]``),
    searched in the overlapping windows of :func:`cvx_core.data.budgets.changepoint_windows`
    over the moments when there are more than ``CVX_CHANGEPOINT_WINDOW`` of them (one window
    otherwise). Each window keeps the cuts in its own part (up to the middle of its overlaps
    with its neighbours), so a change near a window's edge is decided by the window that sees
    it with context; a cut closer than ``min_size`` posts / ``min_moments`` moments to the
    previous kept one is dropped. At most ``CVX_CHANGEPOINT_WINDOW`` moments per search, so the
    work grows linearly with ``m`` above the budget. ``progress(done, total)`` after each
    window."""
    n, m = int(x.shape[0]), int(starts.shape[0])
    wins = changepoint_windows(m)
    ends = np.append(starts, n)
    kept: list[tuple[int, int]] = []  # (moment, post)
    for k, (a, b) in enumerate(wins):
        lo = 0 if k == 0 else (a + wins[k - 1][1]) // 2  # middle of the overlap with the previous window
        hi = m if k == len(wins) - 1 else (wins[k + 1][0] + b) // 2
        p0 = int(ends[a])
        local = _exact_cuts(x[p0:int(ends[b])], starts[a:b] - p0, pen=pen, min_size=min_size,
                            min_moments=min_moments, search=search)
        for c in local:
            j = int(np.searchsorted(starts, p0 + c))
            if lo <= j < hi:
                kept.append((j, p0 + c))
        if progress is not None:
            progress(k + 1, len(wins))
    out: list[int] = []
    last_j, last_p = 0, 0
    for j, p in sorted(kept):
        if j - last_j >= min_moments and p - last_p >= min_size and m - j >= min_moments and n - p >= min_size:
            out.append(p)
            last_j, last_p = j, p
    return out, len(wins)


def _observations(signal: np.ndarray, dts: np.ndarray | None, config: ChangePointConfig
                  ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``(observations, moment starts or None (each observation a moment), merged bin
    starts or None)``: posts in ``"bins"`` mode, bin means in ``"merge"`` mode."""
    n = signal.shape[0]
    if dts is None or config.time_aware == "none" or n < 2:
        return signal, None, None
    starts = time_bins(dts, time_scale=config.time_scale)
    if config.time_aware == "bins":
        return signal, starts, None
    if starts.shape[0] < 4 or starts.shape[0] == n:
        return signal, None, None  # too few bins to search, or nothing to merge
    means = np.add.reduceat(signal, starts, axis=0) / np.diff(np.append(starts, n))[:, None]
    return means, None, starts


def _respects(indices: list[int], ms: MomentSums, min_moments: int) -> bool:
    """Every cut at a moment start and every segment at least ``min_moments`` moments."""
    pos = np.searchsorted(ms.starts, indices)
    if any(p >= ms.n_moments or ms.starts[p] != c for p, c in zip(pos, indices)):
        return False
    bounds = np.concatenate([[0], pos, [ms.n_moments]])
    return bool(np.all(np.diff(bounds) >= min_moments))


def moment_optimum(ms: MomentSums, *, pen: float, min_size: int, min_moments: int = 1) -> list[int]:
    """Exact ``min sum cost(segment) + pen * changes`` (l2 cost summed over posts) over the
    segmentations that cut only between moments, with >= ``min_size`` posts and >=
    ``min_moments`` moments per segment. Returns the moments that start a new segment.
    Optimal partitioning over moments, ``O(m^2 r)`` time: a segment's cost is its posts'
    squared distances to the overall mean minus ``|S|^2 / N`` (centred sum S, N posts), and
    the first part is the same for every segmentation."""
    m = ms.n_moments
    p = np.vstack([np.zeros((1, ms.coords.shape[1])), np.cumsum(ms.coords, axis=0)])  # [m+1, r]
    c = np.concatenate([[0], np.cumsum(ms.counts)])  # [m+1]
    best = np.full(m + 1, np.inf)
    best[0] = -pen
    prev = np.zeros(m + 1, dtype=np.int64)
    for end in range(min_moments, m + 1):
        t = np.arange(0, end - min_moments + 1)
        t = t[np.isfinite(best[t]) & (c[end] - c[t] >= min_size)]
        if t.size == 0:
            continue
        d = p[end] - p[t]
        total = best[t] - np.einsum("ij,ij->i", d, d) / (c[end] - c[t]) + pen
        k = int(np.argmin(total))
        best[end], prev[end] = float(total[k]), int(t[k])
    if not np.isfinite(best[m]):
        return []
    out: list[int] = []
    pos = m
    while pos > 0:
        pos = int(prev[pos])
        if pos > 0:
            out.append(pos)
    return sorted(out)


def mean_gap_days(datetimes: np.ndarray) -> float:
    """The mean gap in days between the distinct times of sorted ``datetimes [T]``: span /
    (distinct times - 1); 0.0 with fewer than two distinct times."""
    days = days_since_first(as_datetimes(datetimes))
    if days.size < 2:
        return 0.0
    distinct = int(np.count_nonzero(np.diff(days) > 0)) + 1
    return float(days[-1] / (distinct - 1)) if distinct >= 2 else 0.0


def time_bins(datetimes: np.ndarray, *, time_scale: float = 0.1) -> np.ndarray:
    """First post of each time bin, ``[B]`` int64 (starts with 0), for sorted ``datetimes
    [T]``: a post starts a new bin when its gap to the previous post is at least
    ``time_scale`` x :func:`mean_gap_days`. Posts at one timestamp always share a bin; a set
    with one distinct time is one bin."""
    days = days_since_first(as_datetimes(datetimes))
    if days.size == 0:
        return np.zeros(0, dtype=np.int64)
    gaps = np.diff(days)
    new = (gaps > 0) & (gaps >= time_scale * mean_gap_days(datetimes))
    return np.concatenate([[0], np.flatnonzero(new) + 1]).astype(np.int64)


def constrained_optimum(x: np.ndarray, allowed: np.ndarray, *, pen: float, min_size: int) -> list[int]:
    """Exact ``min sum cost(segment) + pen * changes`` (l2 cost) over the segmentations of
    ``x [T, D]`` with segments of >= ``min_size`` posts whose change points ``c`` all have
    ``allowed[c]`` (``allowed``: ``[T]`` or ``[T+1]`` bool). Optimal partitioning by dynamic
    programming, O(T^2 D) time, O(T) memory."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    s = np.vstack([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0)])  # [n+1, D]
    q = np.concatenate([[0.0], np.cumsum(np.sum(x * x, axis=1))])  # [n+1]
    s2 = np.sum(s * s, axis=1)
    can_start = np.zeros(n + 1, dtype=bool)
    can_start[: min(n, len(allowed))] = np.asarray(allowed, dtype=bool)[:n]
    can_start[0] = True
    best = np.full(n + 1, np.inf)
    best[0] = -pen
    prev = np.zeros(n + 1, dtype=np.int64)
    for end in range(min_size, n + 1):
        if end < n and not can_start[end]:
            continue  # no segment may end where no change may fall
        t = np.arange(0, end - min_size + 1)
        t = t[can_start[t] & np.isfinite(best[t])]
        if t.size == 0:
            continue
        sq = s2[end] + s2[t] - 2.0 * (s[t] @ s[end])
        cost = (q[end] - q[t]) - sq / (end - t)
        total = best[t] + cost + pen
        k = int(np.argmin(total))
        best[end], prev[end] = float(total[k]), int(t[k])
    out: list[int] = []
    pos = n
    while pos > 0:
        pos = int(prev[pos])
        if pos > 0:
            out.append(pos)
    return sorted(out)


def _search(signal: np.ndarray, *, pen: float, min_size: int, search: str) -> list[int]:
    import ruptures as rpt

    if search == "kernelcpd":
        algo = rpt.KernelCPD(kernel="linear", min_size=min_size, jump=1).fit(signal)
    else:
        algo = rpt.Pelt(model="l2", min_size=min_size, jump=1).fit(signal)
    try:
        bkps = algo.predict(pen=pen)
    except rpt.exceptions.BadSegmentationParameters:  # too short for min_size: no change
        return []
    n = signal.shape[0]
    return [int(b) for b in bkps if 0 < int(b) < n]


def _result(
    indices: list[int],
    dts: np.ndarray | None,
    pen: float,
    cost: float,
    noise: float,
    n: int,
    config: ChangePointConfig,
) -> ChangePointResult:
    idx = tuple(int(i) for i in indices)
    if dts is None:
        cp_dts, days = None, None
    else:
        cp_dts = dts[list(idx)] if idx else np.zeros(0, dtype="datetime64[us]")
        cp_dts = cp_dts.copy()
        cp_dts.setflags(write=False)
        base = dts[0] if n else None
        days = tuple(float((d - base) / np.timedelta64(1, "D")) for d in cp_dts)
    return ChangePointResult(
        indices=idx,
        datetimes=cp_dts,
        days=days,
        penalty=float(pen),
        cost=float(cost),
        noise_variance=float(noise),
        n_posts=n,
        config=config,
    )
