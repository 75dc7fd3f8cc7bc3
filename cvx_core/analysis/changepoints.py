"""Change points of one trajectory, analytic path: exact penalised segmentation (PELT via
ruptures) and Bayesian online change-point detection (BOCPD, Adams & MacKay 2007).

Exact search: the penalised optimum ``min sum_k cost(segment_k) + pen * n_changes`` with the
l2 cost (sum of squared deviations from the segment mean, on the raw embeddings) or the
cosine cost (the same on unit-normalised embeddings, which is exactly ruptures' cosine
kernel). It runs on ruptures' C implementation ``KernelCPD(kernel="linear")`` with
``jump=1``; ``search="pelt"`` runs the pure-Python ``Pelt(model="l2", jump=1)`` instead
(same optimum, ~30-100x slower; kept as a reference).

Default penalty (``ChangePointConfig.penalty=None``)::

    pen = penalty_scale * S * max(log T, 1 + 2 sqrt(L / D) + 2 L / D),   L = 2 log T
    S = sum_d sigma_d^2,  sigma_d^2 = (1.4826 * MAD_i(x_{i+1,d} - x_{i,d}))^2 / 2

For D >= ~12 this is the BIC-like ``log(T) * D * sigma^2`` of ruptures' documentation, with
the noise variance estimated robustly per dimension from first differences (a few change
points barely move a median of differences), so it scales with D, log T and the data's
noise without tuning (a fixed penalty finds dozens of false changes at D = 768). For small
D the second term, the Laurent-Massart chi-square tail bound ``D + 2 sqrt(D L) + 2 L`` (in
units of sigma^2), takes over: with few dimensions the best noise-only split gains more
than ``log(T) * D * sigma^2``, and the bound keeps false changes rare down to D = 1.

BOCPD: a vectorised NumPy recursion over run lengths in log space, truncated at
``max_run_length``, with a constant hazard and a conjugate Normal-Gamma model per channel
(Student-t predictive; channels independent) on a low-dimensional statistic of the
trajectory. The default statistic is the trajectory's top principal-component scores
(``"pca"``): a mean shift of the embeddings is a mean shift of these scores, which is the
change BOCPD's Gaussian model describes. Step statistics (``"step_norm"``,
``"cosine_distance"``) only spike once at a mean shift; they are offered for changes in
volatility. Priors are set from the statistic's scale (see :func:`bocpd`).

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

Without datetimes (a bare matrix) the search is on post order. docs/analytics.md compares
the options on the planted sample and on the real-text sample.

Indices are plain Python ints; a change point's index is the first post of the new segment.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from cvx_core.data.trajectory import Trajectory, as_datetimes, days_since_first

__all__ = [
    "ChangePointConfig",
    "ChangePointResult",
    "detect_changepoints",
    "time_bins",
    "mean_gap_days",
    "constrained_optimum",
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
        penalty: the penalty per change point; ``None`` uses :func:`default_penalty`.
        penalty_scale: multiplies the default penalty (ignored when ``penalty`` is set).
            Larger -> fewer change points.
        min_size: the shortest segment (posts), >= 1.
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
    penalty_scale: float = 1.0
    min_size: int = 2
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
        if isinstance(self.min_size, bool) or not isinstance(self.min_size, (int, np.integer)) or self.min_size < 1:
            raise ValueError(f"ChangePointConfig.min_size must be an integer >= 1, got {self.min_size!r}")
        object.__setattr__(self, "min_size", int(self.min_size))
        if self.penalty is not None:
            object.__setattr__(self, "penalty", float(self.penalty))
        object.__setattr__(self, "penalty_scale", float(self.penalty_scale))

    def to_dict(self) -> dict[str, object]:
        return {
            "cost": self.cost,
            "penalty": self.penalty,
            "penalty_scale": self.penalty_scale,
            "min_size": self.min_size,
            "search": self.search,
            "time_aware": self.time_aware,
            "time_scale": self.time_scale,
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> "ChangePointConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown ChangePointConfig fields: {sorted(unknown)}")
        return cls(**d)  # type: ignore[arg-type]


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
            "config": self.config.to_dict(),
        }


def _as_matrix(data: Trajectory | np.ndarray) -> tuple[np.ndarray, Trajectory | None]:
    if isinstance(data, Trajectory):
        return np.asarray(data.embeddings, dtype=np.float64), data
    arr = np.asarray(data, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"expected a Trajectory or a [T, D] array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("embeddings must be finite")
    return arr, None


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
) -> ChangePointResult:
    """Exact penalised change points of one trajectory.

    Args:
        data: a :class:`Trajectory` or an embedding matrix ``[T, D]`` (``[T]`` is read as D=1).
        config: search options (defaults: l2 cost, default penalty, ``min_size=2``).
        datetimes: ``[T]`` post times for a bare matrix (a Trajectory brings its own).

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
    starts = None
    if config.time_aware == "merge" and dts is not None and n >= 4:
        starts = time_bins(dts, time_scale=config.time_scale)
        if starts.shape[0] < 4 or starts.shape[0] == n:
            starts = None  # too few bins to search, or nothing to merge
    observed = signal if starts is None else np.add.reduceat(signal, starts, axis=0) / np.diff(
        np.append(starts, n)
    )[:, None]
    m = int(observed.shape[0])
    noise = estimate_noise_variance(observed) if m >= 2 else 0.0
    if config.penalty is not None:
        pen = config.penalty
    else:
        pen = _penalty(noise, m, x.shape[1], config.penalty_scale)

    indices: list[int] = []
    if m >= max(4, 2 * config.min_size) and pen > 0.0:
        indices = _search(observed, pen=pen, min_size=config.min_size, search=config.search)
        if starts is not None:
            indices = [int(starts[k]) for k in indices]
        elif config.time_aware == "bins" and dts is not None:
            allowed = np.zeros(n + 1, dtype=bool)
            allowed[time_bins(dts, time_scale=config.time_scale)] = True
            if not all(allowed[c] for c in indices):
                indices = constrained_optimum(signal, allowed, pen=pen, min_size=config.min_size)
    total_cost = segment_cost(signal, indices) if n else 0.0
    res = _result(indices, dts, pen, total_cost, noise, n, config)
    object.__setattr__(res, "n_bins", m)
    return res


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


# ---------------------------------------------------------------------------------------
# BOCPD
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BOCPDConfig:
    """Options of Bayesian online change-point detection.

    Attributes:
        hazard: constant prior probability that a post starts a new segment (1/expected
            segment length in posts).
        max_run_length: run lengths are truncated at this many posts (the longest runs are
            merged), so memory is ``[T, max_run_length]``.
        statistic: what the model watches: ``"pca"`` (top principal-component scores of the
            embeddings, default), ``"step_norm"`` (``|v_{i+1} - v_i|``) or
            ``"cosine_distance"`` (SPEC's step cosine distance).
        n_components: number of principal components for ``"pca"``.
        lag: the reported change probability of post t is read ``lag`` posts later,
            ``P(r_{t+lag} = lag | x_{1..t+lag})`` (0 = the filtered, online readout).
        mean_prior_scale: the prior on a segment's mean has the statistic's overall spread
            times this factor.
    """

    hazard: float = 1.0 / 50.0
    max_run_length: int = 200
    statistic: Literal["pca", "step_norm", "cosine_distance"] = "pca"
    n_components: int = 3
    lag: int = 3
    mean_prior_scale: float = 1.0

    def __post_init__(self) -> None:
        if not (0.0 < self.hazard < 1.0):
            raise ValueError(f"BOCPDConfig.hazard must be in (0, 1), got {self.hazard!r}")
        if int(self.max_run_length) < 2:
            raise ValueError("BOCPDConfig.max_run_length must be >= 2")
        if self.statistic not in ("pca", "step_norm", "cosine_distance"):
            raise ValueError(
                "BOCPDConfig.statistic must be 'pca', 'step_norm' or 'cosine_distance', "
                f"got {self.statistic!r}"
            )
        if int(self.n_components) < 1:
            raise ValueError("BOCPDConfig.n_components must be >= 1")
        if int(self.lag) < 0:
            raise ValueError("BOCPDConfig.lag must be >= 0")
        if not (self.mean_prior_scale > 0 and math.isfinite(self.mean_prior_scale)):
            raise ValueError("BOCPDConfig.mean_prior_scale must be a finite number > 0")
        for name in ("max_run_length", "n_components", "lag"):
            object.__setattr__(self, name, int(getattr(self, name)))


@dataclass(frozen=True, eq=False)
class BOCPDResult:
    """BOCPD output for a series of ``n`` observations (posts or steps mapped to posts).

    Attributes:
        run_length_posterior: ``[n, R]`` float32, row t = ``P(r_t = r | x_{1..t})``; run
            length r = number of earlier observations in the current segment (r = 0: post t
            starts a new segment).
        filtered_probability: ``[n]`` ``P(r_t = 0 | x_{1..t})``.
        change_probability: ``[n]`` the lagged readout ``P(r_{t+L} = L | x_{1..t+L})`` with
            ``L = min(lag, n-1-t)``: the probability that post t started the segment, seen
            ``L`` posts later. Index 0 is always 0 (the first post starts nothing).
        log_evidence: ``log p(x_{1..n})`` under the model.
        statistic: ``[n, k]`` the observations the model watched.
        config: the config used.
    """

    run_length_posterior: np.ndarray
    filtered_probability: np.ndarray
    change_probability: np.ndarray
    log_evidence: float
    statistic: np.ndarray
    config: BOCPDConfig = field(repr=False)

    def peaks(self, *, threshold: float = 0.5, min_distance: int = 2) -> tuple[int, ...]:
        """Indices where ``change_probability`` is a local maximum above ``threshold``
        (greedy, highest first, at least ``min_distance`` apart), sorted."""
        p = self.change_probability
        order = np.argsort(-p, kind="stable")
        chosen: list[int] = []
        for i in order:
            if p[i] < threshold:
                break
            if all(abs(int(i) - c) >= min_distance for c in chosen):
                chosen.append(int(i))
        return tuple(sorted(chosen))


def _robust_scale(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (noise variance, total variance) of ``x [n, k]``, both > 0."""
    total = x.var(axis=0)
    if x.shape[0] >= 3:
        diff = np.diff(x, axis=0)
        mad = np.median(np.abs(diff - np.median(diff, axis=0)), axis=0)
        noise = (_MAD_TO_SD * mad) ** 2 / 2.0
        fallback = np.mean(diff**2, axis=0) / 2.0
        noise = np.where(noise > 0, noise, fallback)
    else:
        noise = total.copy()
    scale = max(float(np.max(np.abs(x))) if x.size else 1.0, 1.0)
    floor = 1e-12 * scale**2
    noise = np.maximum(noise, floor)
    total = np.maximum(total, noise)
    return noise, total


def bocpd(x: np.ndarray, *, config: BOCPDConfig | None = None) -> BOCPDResult:
    """BOCPD on observations ``x [n]`` or ``[n, k]`` (channels independent).

    Priors (per channel, from the data): Normal-Gamma with ``mu0 = median(x)``,
    ``alpha0 = 1``, ``beta0 = sigma^2`` (robust noise variance from first differences, so the
    prior mean precision is ``1/sigma^2``) and ``kappa0 = sigma^2 / (mean_prior_scale^2 *
    var(x))`` (a segment mean is a priori spread like the whole series).
    """
    config = config or BOCPDConfig()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"bocpd expects [n] or [n, k] observations, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("bocpd observations must be finite")
    n, k = x.shape
    R = config.max_run_length
    post = np.zeros((n, R), dtype=np.float32)
    filt = np.zeros(n, dtype=np.float64)
    if n == 0:
        return BOCPDResult(post, filt, filt.copy(), 0.0, x, config)

    noise, total = _robust_scale(x)
    mu0 = np.median(x, axis=0)
    alpha0 = 1.0
    beta0 = noise
    kappa0 = noise / (config.mean_prior_scale**2 * total)

    # slot j holds the run with j+1 observations: kappa and alpha depend only on j
    counts = np.arange(1, R + 1, dtype=np.float64)
    kappa = kappa0[None, :] + counts[:, None]  # [R, k]
    alpha = alpha0 + counts / 2.0  # [R]
    nu = 2.0 * alpha
    from scipy.special import gammaln

    lg_const = gammaln((nu + 1) / 2) - gammaln(nu / 2) - 0.5 * np.log(nu * np.pi)  # [R]
    scale_fac = (kappa + 1.0) / (alpha[:, None] * kappa)  # s^2 = beta * scale_fac  [R, k]
    # prior predictive constants
    nu0 = 2.0 * alpha0
    lg0 = float(gammaln((nu0 + 1) / 2) - gammaln(nu0 / 2) - 0.5 * np.log(nu0 * np.pi))
    s0 = beta0 * (kappa0 + 1.0) / (alpha0 * kappa0)  # [k]

    mu = np.tile(mu0, (R, 1))
    beta = np.tile(beta0, (R, 1))
    log_r = np.full(R, -np.inf)
    log_h, log_1mh = math.log(config.hazard), math.log1p(-config.hazard)
    log_ev = 0.0

    for t in range(n):
        xt = x[t]
        # prior predictive: post t starts a new segment
        z0 = (xt - mu0) ** 2 / s0
        lp0 = float(np.sum(lg0 - 0.5 * np.log(s0) - (nu0 + 1) / 2 * np.log1p(z0 / nu0)))
        if t == 0:
            new = np.full(R, -np.inf)
            new[0] = lp0
        else:
            s2 = beta * scale_fac
            z = (xt[None, :] - mu) ** 2 / s2
            lp = np.sum(-0.5 * np.log(s2) - ((nu + 1) / 2)[:, None] * np.log1p(z / nu[:, None]), axis=1)
            lp += k * lg_const
            growth = log_r + lp + log_1mh
            new = np.empty(R)
            new[0] = lp0 + log_h  # log_r is normalised
            new[1:] = growth[:-1]
            new[R - 1] = np.logaddexp(growth[R - 2], growth[R - 1])
        m = np.max(new)
        lse = m + math.log(float(np.sum(np.exp(new - m))))
        log_ev += lse
        log_r = new - lse
        p = np.exp(log_r)
        post[t] = p
        filt[t] = p[0]
        # update sufficient statistics: slot j <- slot j-1 plus x_t; slot 0 <- prior plus x_t
        k_prev = np.empty_like(kappa)
        k_prev[0] = kappa0
        k_prev[1:] = kappa[:-1]
        mu_prev = np.empty_like(mu)
        mu_prev[0] = mu0
        mu_prev[1:] = mu[:-1]
        beta_prev = np.empty_like(beta)
        beta_prev[0] = beta0
        beta_prev[1:] = beta[:-1]
        d = xt[None, :] - mu_prev
        beta = beta_prev + k_prev * d**2 / (2.0 * (k_prev + 1.0))
        mu = mu_prev + d / (k_prev + 1.0)

    change = _lagged(post, filt, config.lag)
    return BOCPDResult(post, filt, change, float(log_ev), x, config)


def _lagged(post: np.ndarray, filt: np.ndarray, lag: int) -> np.ndarray:
    n, R = post.shape
    out = np.zeros(n, dtype=np.float64)
    for t in range(1, n):
        L = min(lag, n - 1 - t, R - 1)
        out[t] = float(post[t + L, L]) if L > 0 else float(filt[t])
    return out


def _top_pc_scores(centred: np.ndarray, n_components: int) -> np.ndarray:
    """``[T, k]`` scores on the top principal components of centred ``[T, D]`` data, from
    the smaller of the Gram (``T x T``) and covariance (``D x D``) eigenproblems."""
    t, d = centred.shape
    if t <= d:
        w, v = np.linalg.eigh(centred @ centred.T)
        order = np.argsort(-w, kind="stable")
        w, v = np.clip(w[order], 0.0, None), v[:, order]
        scores = v * np.sqrt(w)[None, :]
    else:
        w, v = np.linalg.eigh(centred.T @ centred)
        order = np.argsort(-w, kind="stable")
        w, v = np.clip(w[order], 0.0, None), v[:, order]
        scores = centred @ v
    keep = max(1, min(n_components, int(np.sum(w > 1e-12 * max(float(w[0]), 1e-300)))))
    return scores[:, :keep]


def bocpd_statistic(
    data: Trajectory | np.ndarray, *, config: BOCPDConfig | None = None
) -> tuple[np.ndarray, int]:
    """The series BOCPD watches and its offset: ``(x [n, k], offset)`` where observation j
    belongs to post ``j + offset`` (1 for step statistics: step i -> post i+1)."""
    config = config or BOCPDConfig()
    emb, traj = _as_matrix(data)
    if config.statistic == "pca":
        if emb.shape[0] < 2:
            return np.zeros((emb.shape[0], 1)), 0
        centred = emb - emb.mean(axis=0)
        scores = _top_pc_scores(centred, config.n_components)
        return scores, 0
    if emb.shape[0] < 2:
        return np.zeros((0, 1)), 1
    if config.statistic == "step_norm":
        return np.linalg.norm(np.diff(emb, axis=0), axis=1)[:, None], 1
    from cvx_core.features.analytic import AnalyticBackend

    return np.asarray(AnalyticBackend.cosine_distance(emb), dtype=np.float64)[:, None], 1


def detect_bocpd(data: Trajectory | np.ndarray, *, config: BOCPDConfig | None = None) -> BOCPDResult:
    """BOCPD on a trajectory's statistic (``config.statistic``), with every per-post array
    of the result aligned to the posts ``[T]`` (step statistics are shifted by one post;
    post 0 gets probability 0 and a point mass at run length 0; so does post 1 for a step
    statistic, whose first step has nothing before it to compare with)."""
    config = config or BOCPDConfig()
    emb, _ = _as_matrix(data)
    n_posts = emb.shape[0]
    stat, offset = bocpd_statistic(data, config=config)
    res = bocpd(stat, config=config)
    if offset == 0:
        return res
    R = config.max_run_length
    post = np.zeros((n_posts, R), dtype=np.float32)
    post[0, 0] = 1.0
    post[offset:] = res.run_length_posterior
    filt = np.zeros(n_posts)
    filt[offset:] = res.filtered_probability
    change = np.zeros(n_posts)
    change[offset:] = res.change_probability
    return BOCPDResult(post, filt, change, res.log_evidence, res.statistic, config)
