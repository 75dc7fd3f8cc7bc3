"""Library results -> the figure builders' inputs, so a notebook draws what the app draws.

- :func:`timeline_frames`: a :class:`cvx_core.analysis.batch.UserTimeline` -> the
  :class:`TimelineFrames` that :func:`~cvx_core.show.plots.timeline_figure` and
  :func:`~cvx_core.show.plots.words_timeline_figure` read (they also accept the
  ``UserTimeline`` itself and convert it here).
- :class:`RocCurve` and :func:`roc_curves`: the curves :func:`~cvx_core.show.plots.roc_figure`
  draws, from true labels and class probabilities ``[N, K]`` (one curve for two classes,
  one-vs-rest per class otherwise).
- :func:`comparison_table`: an :class:`~cvx_core.learn.compare.AttentionComparison` -> the
  per-dimension table (``dimension``, ``alpha``, ``attribution``, ranks, ``planted``) of
  :func:`~cvx_core.show.plots.attention_bars` and :func:`~cvx_core.show.plots.attention_scatter`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["TimelineFrames", "timeline_frames", "RocCurve", "roc_curves", "comparison_table"]


@dataclass(frozen=True)
class TimelineFrames:
    """One user's timeline as the timeline figures read it.

    Attributes:
        posts: per post ``when``, ``drift`` (``|v_i - v_1|``), ``change_probability`` (BOCPD).
        steps: per step (at the later post) ``when``, ``velocity_norm``, ``cosine_distance``.
        change_points: ``(index, time)`` of the PELT change points (index: first post after).
        silences: ``(start, end)`` times of gaps longer than ``silence_gap``.
        narratives: one plain-text paragraph per change point.
    """

    user_id: str
    label: int | None
    n_posts: int
    posts: pd.DataFrame
    steps: pd.DataFrame
    change_points: list[tuple[int, pd.Timestamp]]
    silences: list[tuple[pd.Timestamp, pd.Timestamp]]
    narratives: list[str]


def timeline_frames(tl: Any) -> TimelineFrames:
    """``tl``: a :class:`cvx_core.analysis.batch.UserTimeline` (``user_timeline(traj)``)."""
    when = pd.to_datetime(tl.datetimes)
    return TimelineFrames(
        user_id=tl.user_id,
        label=tl.label,
        n_posts=int(tl.n_posts),
        posts=pd.DataFrame({"when": when, "drift": tl.drift, "change_probability": tl.change_probability}),
        steps=pd.DataFrame({"when": when[1:], "velocity_norm": tl.velocity_norm,
                            "cosine_distance": tl.cosine_distance}),
        change_points=[(int(i), when[i]) for i in tl.changepoints.indices],
        silences=[(when[i], when[j]) for i, j in tl.silences],
        narratives=[n.text for n in tl.narratives],
    )


@dataclass(frozen=True)
class RocCurve:
    """One ROC curve: ``name`` ("model", or "class c vs rest"), false/true positive rates, AUC."""

    name: str
    fpr: tuple[float, ...]
    tpr: tuple[float, ...]
    auc: float


def roc_curves(y_true: Sequence[Any] | np.ndarray, proba: np.ndarray, classes: Sequence[Any]) -> tuple[RocCurve, ...]:
    """ROC curves of class probabilities ``proba [N, K]`` (columns in ``classes`` order)
    against ``y_true [N]``: the positive class's curve for ``K = 2``, else one per class
    (one-vs-rest; a class absent from ``y_true`` has none)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y = np.asarray(y_true)
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape != (y.shape[0], len(classes)):
        raise ValueError(f"proba must be [N, K] = [{y.shape[0]}, {len(classes)}], got {p.shape}")
    pairs = [(1, "model")] if len(classes) == 2 else [(k, f"class {c} vs rest") for k, c in enumerate(classes)]
    out = []
    for k, name in pairs:
        truth = y == classes[k]
        if truth.all() or not truth.any():
            continue
        fpr, tpr, _ = roc_curve(truth, p[:, k])
        out.append(RocCurve(name, tuple(map(float, fpr)), tuple(map(float, tpr)), float(roc_auc_score(truth, p[:, k]))))
    return tuple(out)


def comparison_table(cmp: Any, planted_dims: Sequence[int] | None = None) -> pd.DataFrame:
    """``cmp.table()`` (one row per dimension) with a boolean ``planted`` column."""
    table = pd.DataFrame(cmp.table())
    table["planted"] = table["dimension"].isin(list(planted_dims or []))
    return table
