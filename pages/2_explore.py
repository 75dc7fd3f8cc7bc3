"""Explore page: 2-D projection of every post, users' paths with their change points, and
one user's timeline (velocity, cosine distance, drift, BOCPD) with change-point narratives."""

import streamlit as st

from cvx_app import cache, escape, figures, session

name = session.bootstrap("Explore")
st.title("Explore")
ts = session.require_dataset(name)
user_ids = ts.user_ids

# a user clicked in the projection on the previous run becomes the selected user
pending = st.session_state.pop("explore_pending_user", None)
if pending in ts:
    st.session_state["explore_user"] = pending
if st.session_state.get("explore_user") not in ts:
    st.session_state["explore_user"] = user_ids[0]

with st.container(border=True):
    c1, c2, c3 = st.columns([1, 1, 2])
    method = c1.radio(
        "Projection", ["PCA", "UMAP"], horizontal=True, key="explore_method",
        help="PCA is instant. UMAP is computed on request (the first run in a server takes a while).",
    )
    colour_by = c2.radio("Colour posts by", ["label", "time"], horizontal=True, key="explore_colour")
    c3.selectbox(
        "User", user_ids, key="explore_user",
        help="Or click a post in the projection to select its user.",
    )
    zoom = c1.toggle("Zoom to the drawn paths", key="explore_zoom")
    traced = st.multiselect(
        "Also draw the paths of", [u for u in user_ids if u != st.session_state["explore_user"]],
        key="explore_traced", max_selections=8,
        help="Each path joins a user's posts in time order; change points are drawn as ✕.",
    )
selected = st.session_state["explore_user"]
paths = [selected] + [u for u in traced if u != selected]

# ---- long steps, each behind a progress indicator and cached by the dataset's digest --------
with st.status(f"Projecting {ts.n_posts:,} posts with {method}…", expanded=False) as status:
    proj = cache.projection_frame(ts, method.lower())
    status.update(label=f"{method} projection of {ts.n_posts:,} posts", state="complete")
analysis = cache.set_analysis(ts)
changepoints = {u.user_id: u.changepoints.indices for u in analysis}

# ---- projection figure -------------------------------------------------------------------------
fig = figures.projection_figure(
    proj, method=method, colour_by=colour_by, paths=paths, changepoints=changepoints,
    escape=escape.escape_hover, zoom=zoom,
)
event = st.plotly_chart(
    fig, key="explore_proj", on_select="rerun", selection_mode=("points", "box", "lasso"),
    config={"scrollZoom": True},
)
clicked = session.user_from_selection(event, proj)
chosen_users = session.users_in_selection(event, proj)
if clicked and clicked != selected and clicked != st.session_state.get("explore_last_click"):
    st.session_state["explore_last_click"] = clicked
    st.session_state["explore_pending_user"] = clicked
    st.rerun()
st.caption(
    "Click a post to open its user's timeline, or draw a box or lasso (toolbar) to list the users "
    "it catches. ✕ marks change points found by PELT. 2-D distances are only a guide; "
    "neighbourhoods matter, not exact distances."
)
if len(chosen_users) > 1:
    with st.container(border=True):
        st.markdown(f"**Selection: {len(chosen_users)} users**")
        table = cache.users_frame(analysis)
        st.dataframe(table[table["user_id"].isin(chosen_users)], hide_index=True, height=240)

with st.expander(f"All {len(ts)} users: change points and drift ({analysis.elapsed_s:.1f} s to analyse)"):
    st.dataframe(cache.users_frame(analysis), hide_index=True, height=300)

# ---- one user's timeline -------------------------------------------------------------------------
tl = cache.user_timeline(ts, selected)
st.subheader("Timeline of one user")
st.code(f"user {selected}  ·  label {'none' if tl.label is None else tl.label}  ·  {tl.n_posts} posts  ·  "
        f"{len(tl.change_points)} change point(s)", language=None, wrap_lines=True)
left, right = st.columns([3, 2])
with left:
    tfig = figures.timeline_figure(tl)
    st.plotly_chart(tfig, key="explore_timeline")
    st.caption(
        "Red dashed lines: PELT change points. Grey bands: silences longer than "
        f"{cache.features_config().silence_gap:g} days. Velocity uses the real gaps between posts."
    )
with right:
    st.markdown("**What changed, in words**")
    if not tl.narratives:
        st.text("No change point was found for this user.")
    for text in tl.narratives:
        with st.container(border=True):
            st.text(text)
