"""The dataset's drift over time (what Phoenix shows as its drift time series): every post
binned by calendar period, the cohort's mean embedding per bin, how far it moved since the
previous bin and since the first, and PELT change points of that sequence of means at the
sensitivity chosen on Explore (:mod:`cvx_app.sensitivity`). Streamlit only for caching
(per dataset and sensitivity); the figure is built in :func:`drift_figure`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from cvx_app.sensitivity import DEFAULT_SENSITIVITY, cp_config
from cvx_core.data.trajectory import TrajectorySet

# pandas period codes, finest first, and how the page names them
PERIODS = (("D", "day"), ("W", "week"), ("M", "month"), ("Q", "quarter"), ("Y", "year"))
MAX_BINS = 200


@dataclass(frozen=True)
class CohortDrift:
    """The cohort's mean movement per ``period``.

    Attributes:
        period: ``"day"``, ``"week"``, ``"month"``, ``"quarter"`` or ``"year"``.
        frame: one row per non-empty bin: ``start`` (the period's first day), ``posts``,
            ``users``, ``step`` (|mean - previous bin's mean|, NaN for the first) and
            ``from_start`` (|mean - first bin's mean|).
        change_points: the ``start`` of each bin where PELT found the mean to change.
        sensitivity: the false-alarm rate the change points were found at.
    """

    period: str
    frame: pd.DataFrame
    change_points: tuple[pd.Timestamp, ...]
    sensitivity: float = DEFAULT_SENSITIVITY


def choose_period(first: pd.Timestamp, last: pd.Timestamp, *, max_bins: int = MAX_BINS) -> tuple[str, str]:
    """The finest calendar period that splits ``first .. last`` into at most ``max_bins`` bins."""
    for code, name in PERIODS:
        n = len(pd.period_range(first.to_period(code), last.to_period(code), freq=code))
        if n <= max_bins:
            return code, name
    return PERIODS[-1]


def cohort_drift(ts: TrajectorySet, *, period: str | None = None,
                 sensitivity: float = DEFAULT_SENSITIVITY) -> CohortDrift:
    """Bin every post of ``ts`` by ``period`` (a pandas code; ``None`` chooses with
    :func:`choose_period`), average the embeddings of each bin, and measure how far the
    mean moves; change points come from ``cvx_core.analysis.changepoints`` on the bins'
    means ``[k, D]`` (at least 4 bins) at ``sensitivity`` (the Explore slider's value)."""
    from cvx_core.analysis.changepoints import detect_changepoints

    when = pd.to_datetime(np.concatenate([tr.datetimes for tr in ts]))
    users = np.repeat(np.arange(len(ts)), ts.lengths)
    x = np.concatenate([tr.embeddings for tr in ts]).astype(np.float64)
    code = period or choose_period(when.min(), when.max())[0]
    name = dict(PERIODS).get(code, code)
    bins = when.to_period(code)
    codes, uniques = pd.factorize(bins, sort=True)
    k = len(uniques)
    sums = np.zeros((k, x.shape[1]))
    np.add.at(sums, codes, x)
    counts = np.bincount(codes, minlength=k)
    means = sums / counts[:, None]
    step = np.r_[np.nan, np.linalg.norm(np.diff(means, axis=0), axis=1)]
    frame = pd.DataFrame({
        "start": uniques.start_time,
        "posts": counts,
        "users": [len(set(users[codes == i])) for i in range(k)],
        "step": step,
        "from_start": np.linalg.norm(means - means[0], axis=1),
    })
    cps: tuple[pd.Timestamp, ...] = ()
    if k >= 4:
        found = detect_changepoints(means, datetimes=frame["start"].to_numpy(dtype="datetime64[us]"),
                                    config=cp_config(sensitivity))
        cps = tuple(frame["start"].iloc[i] for i in found.indices)
    return CohortDrift(period=name, frame=frame, change_points=cps, sensitivity=float(sensitivity))


@st.cache_data(max_entries=8, show_spinner="Measuring the dataset's drift over time…")
def cached_cohort_drift(digest: str, sensitivity: float, _ts: TrajectorySet) -> CohortDrift:
    """:func:`cohort_drift` kept per dataset (``digest``) and ``sensitivity`` (both in the key)."""
    return cohort_drift(_ts, sensitivity=sensitivity)


def drift_figure(drift: CohortDrift) -> go.Figure:
    """Two stacked panels over time: the cohort mean's distance from the first bin and its
    step from the previous bin (lines), over posts per bin (bars); change points dashed red."""
    f = drift.frame
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12, row_heights=[0.65, 0.35],
                        subplot_titles=(f"cohort mean: distance from the first {drift.period} and step per {drift.period}",
                                        f"posts per {drift.period}"))
    fig.add_trace(go.Scatter(x=f["start"], y=f["from_start"], mode="lines+markers", name="from the first bin",
                             line=dict(color="#1f77b4", width=2), marker=dict(size=4)), row=1, col=1)
    fig.add_trace(go.Scatter(x=f["start"], y=f["step"], mode="lines", name="step from the previous bin",
                             line=dict(color="#ff7f0e", width=1.5, dash="dot")), row=1, col=1)
    fig.add_trace(go.Bar(x=f["start"], y=f["posts"], name="posts", marker_color="#9e9e9e",
                         customdata=f["users"], hovertemplate="%{x}<br>%{y} posts · %{customdata} users<extra></extra>"),
                  row=2, col=1)
    for when in drift.change_points:
        fig.add_vline(x=when, line=dict(color="#d62728", width=2, dash="dash"), row="all", col=1)
    fig.update_yaxes(title_text="distance", row=1, col=1)
    fig.update_yaxes(title_text="posts", row=2, col=1)
    fig.update_layout(height=420, margin=dict(l=10, r=10, t=50, b=10), bargap=0.1,
                      legend=dict(orientation="h", yanchor="bottom", y=1.06, x=0))
    return fig
