"""Batch analytic interpretation of a whole :class:`TrajectorySet`, with progress reports.

For every user: exact change points (:func:`detect_changepoints`), whole-trajectory drift
attribution (:func:`attribute_drift`), and optionally BOCPD and change-point narratives;
for the set: cohort attribution. ``progress(done, total)`` is called with increasing
``done`` (starting at 0, at most ~200 calls, the last one with ``done == total``) so a UI
can show a progress bar.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from threadpoolctl import threadpool_limits

from cvx_core.analysis.attribution import CohortAttribution, DriftAttribution, attribute_drift, cohort_attribution
from cvx_core.analysis.changepoints import (
    BOCPDConfig,
    BOCPDResult,
    ChangePointConfig,
    ChangePointResult,
    detect_bocpd,
    detect_changepoints,
)
from cvx_core.features.config import TemporalFeaturesConfig
from cvx_core.analysis.narrative import ChangePointNarrative, narrate_changepoints
from cvx_core.features.analytic import AnalyticBackend
from cvx_core.data.trajectory import Trajectory, TrajectorySet

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "UserAnalysis", "SetAnalysis", "SetAnalysisBase", "analyze_set", "UserTimeline", "user_timeline", "ProgressCallback",
    "MomentSeries", "moment_series", "timestamp_resolution_days",
]

ProgressCallback = Callable[[int, int], None]
_MAX_PROGRESS_CALLS = 200
#: BLAS threads while a set is analysed, user by user (``None``: the library's default, one per
#: core). Each user's matrices are small, so more threads only spin and contend: 200 users x
#: 100 posts x D = 384 took 1.14 s of CPU with one thread against 2.28 s with the default, for
#: about the same wall time (1.05 s vs 1.15 s), on the 2-core VM at load 2 (``benchmarks/bench_analysis.py --blas``);
#: under load 16-25 the default was 4x slower. A 10,000-post user is the same either way.
BLAS_THREADS: int | None = 1


@dataclass(frozen=True, eq=False)
class UserAnalysis:
    """Everything the analytic path says about one user.

    Attributes:
        user_id, label, n_posts: the trajectory's facts.
        changepoints: exact change points.
        attribution: drift attribution of ``v_T - v_1``.
        bocpd: BOCPD result aligned to posts, or ``None`` if not requested.
        narratives: one per change point, or ``None`` if not requested.
    """

    user_id: str
    label: int | None
    n_posts: int
    changepoints: ChangePointResult
    attribution: DriftAttribution
    bocpd: BOCPDResult | None = None
    narratives: tuple[ChangePointNarrative, ...] | None = None


class SetAnalysisBase:
    """The one set-analysis interface, with two sources: :class:`SetAnalysis` (computed in
    memory by :func:`analyze_set`) and ``cvx_core.scale.streamed_analysis.StreamedSetAnalysis``
    (the streamed run's Parquet file read back). Both hold ``users`` in the set's order and
    answer ``len``, iteration, ``analysis[user_id]`` and ``n_changepoints`` the same way.

    A subclass is a dataclass with the fields ``users`` (tuple of per-user results with
    ``user_id`` and ``changepoints.n_changes``) and ``_index`` (``dict``, filled here)."""

    users: tuple
    _index: dict[str, int]

    def __post_init__(self) -> None:
        if not self._index:
            self._index.update({u.user_id: i for i, u in enumerate(self.users)})

    def __len__(self) -> int:
        return len(self.users)

    def __iter__(self) -> Iterator:
        return iter(self.users)

    def __getitem__(self, user_id: str):
        try:
            return self.users[self._index[str(user_id)]]
        except KeyError:
            raise KeyError(f"no user {user_id!r} in this analysis") from None

    @property
    def n_changepoints(self) -> np.ndarray:
        """``[N]`` number of change points per user."""
        return np.array([u.changepoints.n_changes for u in self.users], dtype=np.int64)


@dataclass(frozen=True, eq=False)
class SetAnalysis(SetAnalysisBase):
    """The in-memory source of :class:`SetAnalysisBase`: per-user results (set order) plus
    cohort attribution.

    Attributes:
        users: one :class:`UserAnalysis` per trajectory, in the set's order.
        cohort: cohort drift attribution.
        cp_config, features_config, bocpd_config: the configs used (``bocpd_config`` is
            ``None`` when BOCPD was not run).
        elapsed_s: wall time of the analysis.
    """

    users: tuple[UserAnalysis, ...]
    cohort: CohortAttribution
    cp_config: ChangePointConfig
    features_config: TemporalFeaturesConfig
    bocpd_config: BOCPDConfig | None = None
    elapsed_s: float = 0.0
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __iter__(self) -> Iterator[UserAnalysis]:
        return iter(self.users)

    def __getitem__(self, user_id: str) -> UserAnalysis:
        return super().__getitem__(user_id)

    def changepoint_frame(self) -> "pd.DataFrame":
        """One row per change point: user_id, label, index, datetime, day, n_posts."""
        import pandas as pd

        rows = []
        for u in self.users:
            cp = u.changepoints
            for k, idx in enumerate(cp.indices):
                rows.append(
                    {
                        "user_id": u.user_id,
                        "label": u.label,
                        "index": idx,
                        "datetime": None if cp.datetimes is None else pd.Timestamp(cp.datetimes[k]),
                        "day": None if cp.days is None else cp.days[k],
                        "n_posts": u.n_posts,
                    }
                )
        return pd.DataFrame(rows, columns=["user_id", "label", "index", "datetime", "day", "n_posts"])


def analyze_set(
    trajectories: TrajectorySet,
    *,
    cp_config: ChangePointConfig | None = None,
    features_config: TemporalFeaturesConfig | None = None,
    bocpd: bool | BOCPDConfig = False,
    narratives: bool = False,
    progress: ProgressCallback | None = None,
) -> SetAnalysis:
    """Analyse every user of ``trajectories``.

    Args:
        cp_config: exact change-point options (default :class:`ChangePointConfig`).
        features_config: gives ``pareto_fraction`` and ``min_dt``.
        bocpd: ``True`` (default :class:`BOCPDConfig`) or a config to also run BOCPD.
        narratives: also write change-point narratives.
        progress: ``progress(done, total)`` (see module doc).
    """
    t0 = time.perf_counter()
    cp_config = cp_config or ChangePointConfig()
    fcfg = features_config or TemporalFeaturesConfig()
    bcfg: BOCPDConfig | None
    if isinstance(bocpd, BOCPDConfig):
        bcfg = bocpd
    elif bocpd:
        bcfg = BOCPDConfig()
    else:
        bcfg = None

    total = len(trajectories)
    step = max(1, -(-total // _MAX_PROGRESS_CALLS))
    if progress is not None:
        progress(0, total)
    users: list[UserAnalysis] = []
    import scipy.linalg  # noqa: F401  (loads scipy's own BLAS now, so that the limit below reaches it too)

    with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
        for done, tr in enumerate(trajectories, start=1):
            cps = detect_changepoints(tr, config=cp_config)
            users.append(
                UserAnalysis(
                    user_id=tr.user_id,
                    label=tr.label,
                    n_posts=tr.n_posts,
                    changepoints=cps,
                    attribution=attribute_drift(tr, config=fcfg),
                    bocpd=None if bcfg is None else detect_bocpd(tr, config=bcfg),
                    narratives=narrate_changepoints(tr, cps, features_config=fcfg) if narratives else None,
                )
            )
            if progress is not None and (done % step == 0 or done == total):
                progress(done, total)
        cohort = cohort_attribution(trajectories, config=fcfg)
    return SetAnalysis(
        users=tuple(users),
        cohort=cohort,
        cp_config=cp_config,
        features_config=fcfg,
        bocpd_config=bcfg,
        elapsed_s=time.perf_counter() - t0,
    )


def timestamp_resolution_days(datetimes: np.ndarray) -> float:
    """The resolution of the timestamps ``[T]``, in days: 1.0 when every timestamp is at
    midnight (a date-only column), 1/24 at whole hours, 1/1440 at whole minutes, else one
    second."""
    us = np.asarray(datetimes).astype("datetime64[us]").astype(np.int64)
    for unit_us, days in ((86_400_000_000, 1.0), (3_600_000_000, 1 / 24), (60_000_000, 1 / 1440)):
        if us.size and np.all(us % unit_us == 0):
            return days
    return 1.0 / 86_400


@dataclass(frozen=True, eq=False)
class MomentSeries:
    """A user's posts pooled by moment (one distinct timestamp), for plots that must not
    show same-moment posts as near-zero gaps (the SPEC's ``min_dt`` floor).

    Attributes:
        starts: ``[m]`` first post of each moment; ``counts``: ``[m]`` posts per moment.
        datetimes: ``[m]`` the moments' times.
        resolution_days: the timestamps' resolution (:func:`timestamp_resolution_days`).
        drift: ``[m]`` ``|mean_k - mean_0|`` of the moments' mean embeddings.
        velocity_norm: ``[m-1]`` ``|mean_{k+1} - mean_k| / max(gap_days, resolution_days)``
            (per day), at the later moment.
    """

    starts: np.ndarray
    counts: np.ndarray
    datetimes: np.ndarray
    resolution_days: float
    drift: np.ndarray
    velocity_norm: np.ndarray


def moment_series(trajectory: Trajectory) -> MomentSeries:
    """Pool ``trajectory``'s posts by distinct timestamp (:class:`MomentSeries`)."""
    x = np.asarray(trajectory.embeddings, dtype=np.float64)
    dts = trajectory.datetimes
    n = x.shape[0]
    if n == 0:
        z = np.zeros(0)
        return MomentSeries(z.astype(np.int64), z.astype(np.int64), dts, 1.0, z, z)
    starts = np.concatenate([[0], np.flatnonzero(dts[1:] != dts[:-1]) + 1]).astype(np.int64)
    counts = np.diff(np.append(starts, n))
    means = np.add.reduceat(x, starts, axis=0) / counts[:, None]
    res = timestamp_resolution_days(dts)
    days = (dts[starts] - dts[0]) / np.timedelta64(1, "D")
    gaps = np.maximum(np.diff(days), res)
    return MomentSeries(
        starts=starts, counts=counts, datetimes=dts[starts], resolution_days=res,
        drift=np.linalg.norm(means - means[0], axis=1),
        velocity_norm=np.linalg.norm(np.diff(means, axis=0), axis=1) / gaps,
    )


@dataclass(frozen=True, eq=False)
class UserTimeline:
    """One user's analytic timeline over real time, as an analyst reads it.

    Attributes:
        user_id, label: the trajectory's facts.
        datetimes: ``[T]`` post times (``datetime64[us]``).
        drift: ``[T]`` distance ``|v_i - v_1|`` of each post from the first.
        change_probability: ``[T]`` BOCPD change probability per post.
        velocity_norm: ``[T-1]`` ``|u_i|`` (per day, real gaps), at the later post of each step.
        cosine_distance: ``[T-1]`` ``c_i``, at the later post of each step.
        changepoints: exact (PELT) change points.
        silences: ``(i, i + 1)`` post index pairs whose gap exceeds ``silence_gap`` days.
        narratives: one plain-text narrative per change point.
        moments: the posts pooled by moment (:func:`moment_series`): plot velocity from
            here, so that posts sharing a date are not drawn as 1,440x spikes.
    """

    user_id: str
    label: int | None
    datetimes: np.ndarray
    drift: np.ndarray
    change_probability: np.ndarray
    velocity_norm: np.ndarray
    cosine_distance: np.ndarray
    changepoints: ChangePointResult
    silences: tuple[tuple[int, int], ...]
    narratives: tuple[ChangePointNarrative, ...]
    moments: MomentSeries | None = None

    @property
    def n_posts(self) -> int:
        return int(self.datetimes.shape[0])


def user_timeline(
    trajectory: Trajectory,
    *,
    cp_config: ChangePointConfig | None = None,
    bocpd_config: BOCPDConfig | None = None,
    features_config: TemporalFeaturesConfig | None = None,
) -> UserTimeline:
    """The per-post and per-step quantities, change points, silences and narratives of one
    trajectory (what the app's timeline draws). Works for any ``T >= 1``."""
    cfg = features_config or TemporalFeaturesConfig()
    E = np.asarray(trajectory.embeddings, dtype=np.float64)
    t = trajectory.timestamps
    cps = detect_changepoints(trajectory, config=cp_config)
    bocpd = detect_bocpd(trajectory, config=bocpd_config)
    if trajectory.n_posts >= 2:
        velocity = np.linalg.norm(AnalyticBackend.velocity(E, t, cfg), axis=1)
        cosine = AnalyticBackend.cosine_distance(E)
    else:
        velocity = cosine = np.zeros(0)
    # silences between *posts* (discrete_summary would count them on the burst-aggregated
    # sequence when burst_window is set, whose indices are not post indices)
    gaps = np.flatnonzero(AnalyticBackend.time_steps(t, cfg) > cfg.silence_gap)
    return UserTimeline(
        user_id=trajectory.user_id,
        label=trajectory.label,
        datetimes=trajectory.datetimes,
        drift=np.linalg.norm(E - E[0], axis=1),
        change_probability=np.asarray(bocpd.change_probability, dtype=np.float64),
        velocity_norm=velocity,
        cosine_distance=cosine,
        changepoints=cps,
        silences=tuple((int(i), int(i) + 1) for i in gaps),
        narratives=narrate_changepoints(
            trajectory, changepoints=cps, cp_config=cp_config, features_config=cfg
        ),
        moments=moment_series(trajectory),
    )
