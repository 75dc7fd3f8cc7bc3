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

from cvx_core.attribution import CohortAttribution, DriftAttribution, attribute_drift, cohort_attribution
from cvx_core.changepoints import (
    BOCPDConfig,
    BOCPDResult,
    ChangePointConfig,
    ChangePointResult,
    detect_bocpd,
    detect_changepoints,
)
from cvx_core.config import TemporalFeaturesConfig
from cvx_core.narrative import ChangePointNarrative, narrate_changepoints
from cvx_core.trajectory import TrajectorySet

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["UserAnalysis", "SetAnalysis", "analyze_set", "ProgressCallback"]

ProgressCallback = Callable[[int, int], None]
_MAX_PROGRESS_CALLS = 200


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


@dataclass(frozen=True, eq=False)
class SetAnalysis:
    """Per-user results (set order) plus cohort attribution.

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

    def __post_init__(self) -> None:
        if not self._index:
            self._index.update({u.user_id: i for i, u in enumerate(self.users)})

    def __len__(self) -> int:
        return len(self.users)

    def __iter__(self) -> Iterator[UserAnalysis]:
        return iter(self.users)

    def __getitem__(self, user_id: str) -> UserAnalysis:
        try:
            return self.users[self._index[str(user_id)]]
        except KeyError:
            raise KeyError(f"no user {user_id!r} in this analysis") from None

    @property
    def n_changepoints(self) -> np.ndarray:
        """``[N]`` number of change points per user."""
        return np.array([u.changepoints.n_changes for u in self.users], dtype=np.int64)

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
