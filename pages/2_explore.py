"""Explore page: 2-D projection of every post (PCA at once, UMAP in the background) with its
trustworthiness, coloured by any per-user value, a time window that can play, user search,
users' paths with their change points at a chosen sensitivity (false-alarm rate), the open
user's nearest users, and one user's timeline with each change point's words (terms and
example posts). The panels live in cvx_app (explore_cloud, explore_panels); this page
reads the controls and composes them."""

import streamlit as st

from cvx_app import (escape, explore, explore_cloud, explore_panels, projection_jobs, sensitivity, session,
                     set_analysis_jobs, share)

name = session.bootstrap("Explore")
st.title("Explore")
ts = session.require_dataset(name)
user_ids = ts.user_ids
sensitivity.restore_from_address()  # a shared address (?sensitivity=) sets it once
rate = sensitivity.current()  # the slider below sets it; its value on the previous run until then
if st.session_state.get(sensitivity.WIDGET_KEY) in sensitivity.SENSITIVITIES:
    rate = float(st.session_state[sensitivity.WIDGET_KEY])

analysis = set_analysis_jobs.dataset_analysis(name, ts, sensitivity=rate)  # streamed (kept on disk) when large
options = explore.colour_options(ts, analysis, explore.latest_scores(name, ts))

# a shared address (?method=&colour=&user=) opens the same view; later clicks win over it
share.restore("explore", {"method": ("explore_method", ["PCA", "UMAP"]), "user": ("explore_user", user_ids),
                          "colour": ("explore_colour", list(options))})

# a user clicked in the projection or a table on the previous run becomes the open user
pending = st.session_state.pop("explore_pending_user", None)
if pending in ts:
    st.session_state["explore_user"] = pending
if st.session_state.get("explore_user") not in ts:  # first visit, or another dataset: its strongest change
    st.session_state["explore_user"] = explore.opening_user(ts, analysis, sensitivity=rate)


def open_user(user_id: str) -> None:
    """Open ``user_id`` on the next run (widgets bound to explore_user are already drawn)."""
    if user_id in ts and user_id != st.session_state.get("explore_user"):
        st.session_state["explore_pending_user"] = user_id
        st.rerun()


changepoints = {u.user_id: u.changepoints.indices for u in analysis}

# ---- controls ---------------------------------------------------------------------------------
with st.container(border=True):
    c1, c2, c3, c4 = st.columns([1.1, 1.5, 1.5, 1.5])
    method = c1.radio("Projection", ["PCA", "UMAP"], horizontal=True, key="explore_method",
                      help="PCA is instant. UMAP is computed in the background (kept on disk for next time).")
    zoom = c1.toggle("Zoom to paths", key="explore_zoom", help="Zoom the cloud to the drawn paths.")
    three_d = c1.toggle("3-D (PCA)", key="explore_3d",
                        help="The first three principal components, to turn with the mouse (no time window or selection).")
    if st.session_state.get("explore_colour") not in options:
        st.session_state["explore_colour"] = explore.LABEL
    colour_by = c2.selectbox("Colour posts by", list(options), key="explore_colour",
                             help="Label, time, per-user analytics, the latest run's prediction score, or any extra "
                                  "column of the upload.")
    c3.selectbox("Open user", user_ids, key="explore_user",
                 help="Or click a post in the projection, or a row of a table below.")
    query = c4.text_input("Search users", key="explore_search", placeholder="part of a user id",
                          help="Matching users are ringed in the cloud and listed below.")
    s1, s2 = st.columns([2, 3])
    traced = s1.multiselect("Also draw the paths of", [u for u in user_ids if u != st.session_state["explore_user"]],
                            key="explore_traced", max_selections=8,
                            help="Each path joins a user's posts in time order; change points are drawn as ✕.")
    rate = sensitivity.choose(s2)
    s2.caption(sensitivity.caption(rate))
selected = st.session_state["explore_user"]
share.publish({"dataset": name, "method": method, "colour": colour_by, "user": selected,
               sensitivity.PARAM: f"{rate:g}"})
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
option = options[colour_by]
forecast = explore_panels.forecast_panel(ts, selected, proj)
explore_cloud.draw(explore_cloud.CloudView(
    name=name, ts=ts, analysis=analysis, proj=proj, frame=frame, colour=explore.colour_values(option, frame),
    colour_by=colour_by, categorical=option.categorical, paths=[selected] + [u for u in traced if u != selected],
    changepoints=changepoints, matches=matches, zoom=zoom, selected=selected, forecast=forecast, open_user=open_user,
), three_d=three_d)

explore_panels.cohort_drift_panel(name, ts, rate)
explore_panels.window_drift_panel(name, ts)
explore_panels.user_tables(ts, analysis, selected, query, matches, open_user, set_analysis_jobs.describe(analysis))
explore_panels.timeline_panel(name, ts, selected, rate)
