"""Explore page: 2-D projection of every post (PCA at once, UMAP in the background) with its
trustworthiness, coloured by any per-user value, a time window that can play, user search,
users' paths with their change points, the open user's nearest users, and one user's
timeline with each change point's words (terms and example posts)."""

from datetime import datetime, timedelta

import pandas as pd
import streamlit as st

from cvx_app import (cache, escape, explore, explore_panels, exports, figures, forecast_view, projection_jobs, session,
                     set_analysis_jobs, share, workspace)

PLAY_EVERY_S = 1.5  # seconds between two frames while playing
PLAY_FRAMES = 24  # frames for the window to cross the whole time span

name = session.bootstrap("Explore")
st.title("Explore")
ts = session.require_dataset(name)
user_ids = ts.user_ids

analysis = set_analysis_jobs.dataset_analysis(name, ts)  # streamed from the file (and kept on disk) for a large dataset
options = explore.colour_options(ts, analysis, explore.latest_scores(name, ts))

# a shared address (?method=&colour=&user=) opens the same view; later clicks win over it
share.restore("explore", {"method": ("explore_method", ["PCA", "UMAP"]), "user": ("explore_user", user_ids),
                          "colour": ("explore_colour", list(options))})

# a user clicked in the projection or a table on the previous run becomes the open user
pending = st.session_state.pop("explore_pending_user", None)
if pending in ts:
    st.session_state["explore_user"] = pending
if st.session_state.get("explore_user") not in ts:  # first visit, or another dataset: its strongest change
    st.session_state["explore_user"] = explore.opening_user(ts, analysis)


# Tables whose row click opens a user are keyed by the open user: once another user is open
# they start with no selection, so an old click never reopens its user.
def open_user(user_id: str) -> None:
    """Open ``user_id`` on the next run (widgets bound to explore_user are already drawn)."""
    if user_id in ts and user_id != st.session_state.get("explore_user"):
        st.session_state["explore_pending_user"] = user_id
        st.rerun()


changepoints = {u.user_id: u.changepoints.indices for u in analysis}

# ---- controls ---------------------------------------------------------------------------------
with st.container(border=True):
    c1, c2, c3, c4 = st.columns([1.1, 1.5, 1.5, 1.5])
    method = c1.radio(
        "Projection", ["PCA", "UMAP"], horizontal=True, key="explore_method",
        help="PCA is instant. UMAP is computed in the background (kept on disk for next time).",
    )
    zoom = c1.toggle("Zoom to paths", key="explore_zoom", help="Zoom the cloud to the drawn paths.")
    three_d = c1.toggle("3-D (PCA)", key="explore_3d",
                        help="The first three principal components, to turn with the mouse (no time window or selection).")
    if st.session_state.get("explore_colour") not in options:
        st.session_state["explore_colour"] = explore.LABEL
    colour_by = c2.selectbox(
        "Colour posts by", list(options), key="explore_colour",
        help="Label, time, per-user analytics, the latest run's prediction score, or any extra column of the upload.",
    )
    c3.selectbox("Open user", user_ids, key="explore_user",
                 help="Or click a post in the projection, or a row of a table below.")
    query = c4.text_input("Search users", key="explore_search", placeholder="part of a user id",
                          help="Matching users are ringed in the cloud and listed below.")
    traced = st.multiselect(
        "Also draw the paths of", [u for u in user_ids if u != st.session_state["explore_user"]],
        key="explore_traced", max_selections=8,
        help="Each path joins a user's posts in time order; change points are drawn as ✕.",
    )
selected = st.session_state["explore_user"]
share.publish({"dataset": name, "method": method, "colour": colour_by, "user": selected})
paths = [selected] + [u for u in traced if u != selected]
matches = explore.search_users(user_ids, query)

# ---- the projection: PCA now, UMAP from its background job -----------------------------------------
job = projection_jobs.projection(ts, method.lower())
if job.running:

    @st.fragment(run_every=1.0)
    def umap_progress() -> None:
        if not job.running:
            st.rerun()  # the whole page, now with UMAP
        stage = "finding each post's neighbours" if job.fraction < 0.3 else "laying out the picture"
        st.progress(job.fraction, text=f"UMAP of {ts.n_posts:,} posts in the background ({stage}): "
                                       f"{job.fraction:.0%} after {job.elapsed_s:.0f} s. Showing PCA until it is ready.")

    umap_progress()
elif job.error:
    st.error("UMAP failed; showing PCA. " + escape.escape_markdown(job.error), icon=":material/error:")
proj = job.result if job.result is not None else projection_jobs.projection(ts, "pca").result
frame = projection_jobs.projection_frame(ts, proj)
shown_method = proj.method.upper()
option = options[colour_by]
colour = explore.colour_values(option, frame)

first, last = frame["datetime"].min().to_pydatetime(), frame["datetime"].max().to_pydatetime()
# st.slider holds datetimes as JS numbers of microseconds: only about 1684-07-29 .. 2255-06-04
SLIDER_MIN, SLIDER_MAX = datetime(1684, 7, 30), datetime(2255, 6, 3)
span = last - first
step = max(span / 200, timedelta(minutes=1)) if span > timedelta(0) else timedelta(days=1)

# ---- forecast: where the open user goes next (latent ODE) ---------------------------------------------
with st.expander("Forecast where the open user goes next (latent ODE)", expanded=False):
    fc1, fc2 = st.columns([1, 2])
    horizon = fc1.number_input("Horizon (days after the last post)", min_value=1.0, max_value=3650.0,
                               value=30.0, step=1.0, key="explore_horizon")
    trained = forecast_view.has_forecaster(ts)
    go_label = "Forecast" if trained else "Train the forecaster on this dataset, then forecast (about a minute)"
    if fc2.button(go_label, key="explore_forecast_go", icon=":material/timeline:"):
        with st.spinner("Training the latent-ODE forecaster (once per dataset, kept on disk)…" if not trained else "Forecasting…"):
            st.session_state["explore_forecast"] = forecast_view.forecast_user(ts, selected, float(horizon))
    fc = st.session_state.get("explore_forecast")
    if fc is not None and fc.user_id == selected:
        held = fc.held_out
        st.caption(
            f"Dashed red path in the cloud: the forecast at {len(fc.days)} times up to {fc.days[-1]:g} days after the "
            f"last post. On each user's held-out last post the forecaster's error is "
            f"{held['ratio_last_value']:.2f}× that of repeating the last post and {held['ratio_linear']:.2f}× that of "
            f"linear extrapolation (below 1 is better; {held['n_users']} users). "
            + ("Placed exactly by PCA's linear map." if shown_method == "PCA" else
               "UMAP has no map for new points here: each forecast is placed among its 10 nearest posts.")
        )
        forecast_xy = forecast_view.place_in_projection(ts, proj, fc.embeddings)
    else:
        forecast_xy = None

# ---- time window and play -------------------------------------------------------------------------
playing = st.toggle("Play the time window", key="explore_play", disabled=span <= timedelta(0),
                    help="Move the time window forward step by step; the paths grow with it. Set its width "
                         "with the slider below first (a quarter of the span when it covers everything).")


def _clamp(t: datetime) -> datetime:
    return min(max(t, first), last)


def cloud_3d() -> None:
    """The 3-D view: PCA of the posts, coloured by label, with the drawn paths."""
    frame3, explained = projection_jobs.pca3_frame(ts, frame)
    fig3 = figures.explore_figure_3d(frame3, paths=paths, changepoints=changepoints, explained=explained)
    st.plotly_chart(fig3, key="explore_proj_3d")
    st.caption("Drag to turn, scroll to zoom. Coloured by label; the time window, colour choice and selection "
               "apply to the 2-D view.")
    exports.image_buttons(fig3, file_stem=f"{name}-pca-3d", key="explore_dl_cloud3d", label="3-D view")


@st.fragment(run_every=PLAY_EVERY_S if playing else None)
def cloud() -> None:
    window_now = st.session_state.get("explore_window")
    if (not isinstance(window_now, tuple) or len(window_now) != 2 or window_now[0] >= window_now[1]
            or window_now[0] > last or window_now[1] < first):  # none yet, or another dataset's
        window_now = (first, last)
    if playing and span > timedelta(0):
        lo, hi = window_now
        width = hi - lo
        if width >= span:  # the whole span: play a quarter of it at a time
            width = span / 4
            lo, hi = first - span / PLAY_FRAMES, first + width - span / PLAY_FRAMES
        advance = span / PLAY_FRAMES
        lo, hi = lo + advance, hi + advance
        if lo >= last or hi > last + advance * 0.999:
            lo, hi = first, first + width  # start over
        window_now = (_clamp(lo), _clamp(hi))
    st.session_state["explore_window"] = (_clamp(window_now[0]), _clamp(window_now[1]))
    if span > timedelta(0) and SLIDER_MIN < first and last < SLIDER_MAX:
        window = st.slider(
            "Time window", min_value=first, max_value=last, step=step, key="explore_window",
            format="YYYY-MM-DD", help="Posts outside the window are greyed; paths are drawn up to its end.",
        )
    elif span > timedelta(0):  # dates st.slider cannot hold (before 1684 or after 2255): days instead
        span_days = span / timedelta(days=1)
        lo_d, hi_d = st.slider(
            f"Time window (days since {first:%Y-%m-%d})", min_value=0.0, max_value=float(span_days),
            value=(0.0, float(span_days)), key="explore_window_days",
            help="Posts outside the window are greyed; paths are drawn up to its end.",
        )
        window = (first + timedelta(days=lo_d), first + timedelta(days=hi_d))
    else:
        window = (first, last)
    days = tuple((pd.Timestamp(t) - frame["datetime"].min()) / pd.Timedelta(days=1) for t in window)
    whole = window[0] <= first and window[1] >= last
    fig = figures.explore_figure(
        frame, method=shown_method, colour=colour, colour_title=colour_by, categorical=option.categorical,
        paths=paths, changepoints=changepoints, escape=escape.escape_hover,
        window=None if whole else days, highlight=matches, zoom=zoom, trust=proj.trustworthiness,
    )
    if forecast_xy is not None:
        figures.add_forecast_path(fig, proj.path(selected)[-1], forecast_xy, fc.days,
                                  user_label=escape.escape_hover(selected))
    event = st.plotly_chart(
        fig, key="explore_proj", on_select="rerun", selection_mode=("points", "box", "lasso"),
        config={"scrollZoom": True},
    )
    exports.image_buttons(fig, file_stem=f"{name}-{shown_method.lower()}", key="explore_dl_cloud", label="Projection")
    clicked = session.user_from_selection(event, frame)
    chosen = session.users_in_selection(event, frame)
    if clicked and clicked != selected and clicked != st.session_state.get("explore_last_click"):
        st.session_state["explore_last_click"] = clicked
        open_user(clicked)
    st.caption(
        f"Trustworthiness {proj.trustworthiness:.2f} (k = {proj.trust_neighbors}): the share of each post's "
        "2-D neighbours that are also near it in the embedding space, from 0.5 (random) to 1 (every 2-D "
        "neighbourhood is real). Trust neighbourhoods, not distances. Click a post to open its user, or draw a "
        "box or lasso (toolbar) to list the users it catches; ✕ marks PELT change points."
    )
    if len(chosen) > 1:
        with st.container(border=True):
            st.markdown(f"**Selection: {len(chosen)} users**")
            st.caption("Click a row to open that user.")
            table = cache.users_frame(analysis)
            table = table[table["user_id"].isin(chosen)].reset_index(drop=True)
            picked = st.dataframe(table, hide_index=True, height=240, key=f"explore_sel_table:{selected}",
                                  on_select="rerun", selection_mode="single-row")
            rows = picked.selection.rows if picked is not None else []
            if rows:
                open_user(str(table["user_id"].iloc[rows[0]]))
            explore_panels.selection_panel(name, ts, analysis, chosen)


cloud_3d() if three_d else cloud()

explore_panels.cohort_drift_panel(name, ts)
explore_panels.window_drift_panel(name, ts)

# ---- search results and nearest users ---------------------------------------------------------------
left, right = st.columns(2)
with left:
    if query.strip():
        with st.container(border=True):
            st.markdown(f"**Search: {len(matches)} user(s) match** (ringed in the cloud; click a row to open)")
            if matches:
                found = cache.users_frame(analysis).set_index("user_id").loc[matches].reset_index()
                picked = st.dataframe(found, hide_index=True, height=200, key=f"explore_search_table:{selected}",
                                      on_select="rerun", selection_mode="single-row")
                if picked is not None and picked.selection.rows:
                    open_user(str(found["user_id"].iloc[picked.selection.rows[0]]))
    how = "read back" if getattr(analysis, "reused", False) else "to analyse"
    with st.expander(f"All {len(ts)} users: change points and drift ({analysis.elapsed_s:.1f} s {how})"):
        st.caption(escape.escape_markdown(set_analysis_jobs.describe(analysis)))
        everyone = cache.users_frame(analysis)
        picked = st.dataframe(everyone, hide_index=True, height=300, key=f"explore_all_table:{selected}",
                              on_select="rerun", selection_mode="single-row")
        if picked is not None and picked.selection.rows:
            open_user(str(everyone["user_id"].iloc[picked.selection.rows[0]]))
with right:
    with st.container(border=True):
        st.markdown("**Nearest users** to the open user (cosine similarity of mean post embeddings; click a row to open)")
        if len(ts) < 2:
            st.caption("This dataset has one user: there is no other user to compare with.")
        else:
            near = explore.nearest_users(ts, selected, analysis)
            picked = st.dataframe(near, hide_index=True, height=min(320, 38 + 35 * len(near)),
                                  key=f"explore_near_table:{selected}", on_select="rerun", selection_mode="single-row")
            if picked is not None and picked.selection.rows:
                open_user(str(near["user_id"].iloc[picked.selection.rows[0]]))
    with st.expander("Nearest posts to one of this user's posts (original embedding space)"):
        n_own = ts[selected].n_posts
        which = st.number_input(f"Post (1–{n_own})", min_value=1, max_value=n_own, value=1, step=1,
                                key=f"explore_post_{selected}")
        near_posts = explore.nearest_posts(ts, selected, int(which) - 1)
        st.caption("Cosine similarity of the posts' embeddings (not of the 2-D picture); click a row to open its user.")
        picked = st.dataframe(near_posts, hide_index=True, height=38 + 35 * len(near_posts),
                              key=f"explore_near_posts:{selected}", on_select="rerun", selection_mode="single-row")
        if picked is not None and picked.selection.rows:
            open_user(str(near_posts["user_id"].iloc[picked.selection.rows[0]]))

# ---- one user's timeline, with its change points in words ------------------------------------------
tl = cache.user_timeline(ts, selected)
words = explore.change_words(ts, selected)
st.subheader("Timeline of one user")
st.code(f"user {selected}  ·  label {'none' if tl.label is None else tl.label}  ·  {tl.n_posts} posts  ·  "
        f"{len(tl.change_points)} change point(s)", language=None, wrap_lines=True)
cp_terms = {w.index: w.terms_after for w in words} if words else None
tfig = figures.words_timeline_figure(tl, explore.post_snippets(ts, selected), cp_terms)
st.plotly_chart(tfig, key="explore_timeline")
exports.image_buttons(tfig, file_stem=f"{name}-{workspace.safe_dataset_name(selected)}-timeline", key="explore_dl_timeline", label="Timeline")
st.caption(
    "Red dashed lines: PELT change points (labelled with the words that become distinctive after them "
    "when the posts have text). "
    f"Grey bands: silences longer than {cache.features_config().silence_gap:g} days. Velocity uses the real "
    "gaps between posts. Hover a point to read the post's first words."
)
explore_panels.change_words_panel(ts, words, tl)
