"""The Explore page's point cloud: the time window (which can play), the 2-D projection with
the users' paths, change points, search rings and the forecast path, its click and box/lasso
selection, and the 3-D PCA view. The page builds a :class:`CloudView` and calls :func:`draw`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import streamlit as st

from cvx_app import cache, escape, explore_panels, exports, figures, projection_jobs, session
from cvx_core.data.trajectory import TrajectorySet

PLAY_EVERY_S = 1.5  # seconds between two frames while playing
PLAY_FRAMES = 24  # frames for the window to cross the whole time span
# st.slider holds datetimes as JS numbers of microseconds: only about 1684-07-29 .. 2255-06-04
SLIDER_MIN, SLIDER_MAX = datetime(1684, 7, 30), datetime(2255, 6, 3)


@dataclass(frozen=True)
class CloudView:
    """Everything the cloud draws. ``frame``: one row per post (x, y, user_id, datetime, ...);
    ``paths``: users whose paths are drawn (the open user first); ``forecast``: ``(forecast,
    xy [H, 2])`` of the open user or ``None``; ``open_user``: opens a user on the next run."""

    name: str
    ts: TrajectorySet
    analysis: Any
    proj: Any
    frame: pd.DataFrame
    colour: pd.Series | None
    colour_by: str
    categorical: bool
    paths: list[str]
    changepoints: dict[str, Any]
    matches: list[str]
    zoom: bool
    selected: str
    forecast: tuple[Any, Any] | None
    open_user: Callable[[str], None]

    @property
    def first(self) -> datetime:
        return self.frame["datetime"].min().to_pydatetime()

    @property
    def last(self) -> datetime:
        return self.frame["datetime"].max().to_pydatetime()


def _clamp(t: datetime, first: datetime, last: datetime) -> datetime:
    return min(max(t, first), last)


def next_window(window: tuple[datetime, datetime], first: datetime, last: datetime) -> tuple[datetime, datetime]:
    """The window one play step later: a whole-span window plays a quarter of the span at a
    time, each step moves by 1/:data:`PLAY_FRAMES` of the span, and past the end it starts over."""
    span = last - first
    lo, hi = window
    width = hi - lo
    if width >= span:
        width = span / 4
        lo, hi = first - span / PLAY_FRAMES, first + width - span / PLAY_FRAMES
    advance = span / PLAY_FRAMES
    lo, hi = lo + advance, hi + advance
    if lo >= last or hi > last + advance * 0.999:
        lo, hi = first, first + width
    return _clamp(lo, first, last), _clamp(hi, first, last)


def _window(v: CloudView, playing: bool) -> tuple[datetime, datetime]:
    """Draw the time-window slider (datetimes, or days where st.slider cannot hold the dates)."""
    first, last = v.first, v.last
    span = last - first
    now = st.session_state.get("explore_window")
    if (not isinstance(now, tuple) or len(now) != 2 or now[0] >= now[1]
            or now[0] > last or now[1] < first):  # none yet, or another dataset's
        now = (first, last)
    if playing and span > timedelta(0):
        now = next_window(now, first, last)
    st.session_state["explore_window"] = (_clamp(now[0], first, last), _clamp(now[1], first, last))
    help_text = "Posts outside the window are greyed; paths are drawn up to its end."
    if span > timedelta(0) and SLIDER_MIN < first and last < SLIDER_MAX:
        step = max(span / 200, timedelta(minutes=1))
        return st.slider("Time window", min_value=first, max_value=last, step=step, key="explore_window",
                         format="YYYY-MM-DD", help=help_text)
    if span > timedelta(0):  # dates st.slider cannot hold (before 1684 or after 2255): days instead
        days = span / timedelta(days=1)
        lo_d, hi_d = st.slider(f"Time window (days since {first:%Y-%m-%d})", min_value=0.0, max_value=float(days),
                               value=(0.0, float(days)), key="explore_window_days", help=help_text)
        return first + timedelta(days=lo_d), first + timedelta(days=hi_d)
    return first, last


def _selection(v: CloudView, chosen: list[str]) -> None:
    """The users a box or lasso caught: a table (a row click opens the user) and the exports."""
    with st.container(border=True):
        st.markdown(f"**Selection: {len(chosen)} users**")
        st.caption("Click a row to open that user.")
        table = cache.users_frame(v.analysis)
        table = table[table["user_id"].isin(chosen)].reset_index(drop=True)
        picked = st.dataframe(table, hide_index=True, height=240, key=f"explore_sel_table:{v.selected}",
                              on_select="rerun", selection_mode="single-row")
        if picked is not None and picked.selection.rows:
            v.open_user(str(table["user_id"].iloc[picked.selection.rows[0]]))
        explore_panels.selection_panel(v.name, v.ts, v.analysis, chosen)


def _cloud_2d(v: CloudView, playing: bool) -> None:
    window = _window(v, playing)
    frame = v.frame
    days = tuple((pd.Timestamp(t) - frame["datetime"].min()) / pd.Timedelta(days=1) for t in window)
    whole = window[0] <= v.first and window[1] >= v.last
    method = v.proj.method.upper()
    fig = figures.explore_figure(
        frame, method=method, colour=v.colour, colour_title=v.colour_by, categorical=v.categorical,
        paths=v.paths, changepoints=v.changepoints, escape=escape.escape_hover,
        window=None if whole else days, highlight=v.matches, zoom=v.zoom, trust=v.proj.trustworthiness)
    if v.forecast is not None:
        fc, xy = v.forecast
        figures.add_forecast_path(fig, v.proj.path(v.selected)[-1], xy, fc.days,
                                  user_label=escape.escape_hover(v.selected))
    event = st.plotly_chart(fig, key="explore_proj", on_select="rerun", selection_mode=("points", "box", "lasso"),
                            config={"scrollZoom": True})
    exports.image_buttons(fig, file_stem=f"{v.name}-{method.lower()}", key="explore_dl_cloud", label="Projection")
    clicked = session.user_from_selection(event, frame)
    chosen = session.users_in_selection(event, frame)
    if clicked and clicked != v.selected and clicked != st.session_state.get("explore_last_click"):
        st.session_state["explore_last_click"] = clicked
        v.open_user(clicked)
    st.caption(
        f"Trustworthiness {v.proj.trustworthiness:.2f} (k = {v.proj.trust_neighbors}): the share of each post's "
        "2-D neighbours that are also near it in the embedding space, from 0.5 (random) to 1 (every 2-D "
        "neighbourhood is real). Trust neighbourhoods, not distances. Click a post to open its user, or draw a "
        "box or lasso (toolbar) to list the users it catches; ✕ marks PELT change points.")
    if len(chosen) > 1:
        _selection(v, chosen)


def _cloud_3d(v: CloudView) -> None:
    """The 3-D view: PCA of the posts, coloured by label, with the drawn paths."""
    frame3, explained = projection_jobs.pca3_frame(v.ts, v.frame)
    fig3 = figures.explore_figure_3d(frame3, paths=v.paths, changepoints=v.changepoints, explained=explained)
    st.plotly_chart(fig3, key="explore_proj_3d")
    st.caption("Drag to turn, scroll to zoom. Coloured by label; the time window, colour choice and selection "
               "apply to the 2-D view.")
    exports.image_buttons(fig3, file_stem=f"{v.name}-pca-3d", key="explore_dl_cloud3d", label="3-D view")


def draw(v: CloudView, *, three_d: bool) -> None:
    """The play switch and the 3-D view, or the 2-D cloud in a fragment that re-runs every
    :data:`PLAY_EVERY_S` seconds while playing."""
    playing = st.toggle("Play the time window", key="explore_play", disabled=v.first >= v.last,
                        help="Move the time window forward step by step; the paths grow with it. Set its width "
                             "with the slider below first (a quarter of the span when it covers everything).")
    if three_d:
        _cloud_3d(v)
        return
    st.fragment(run_every=PLAY_EVERY_S if playing else None)(_cloud_2d)(v, playing)
