"""Explore page: 2-D projection of every post, users' paths with their change points, and
one user's timeline (velocity, cosine distance, drift, BOCPD) with change-point narratives."""

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

import app_support as ui

name = ui.bootstrap("Explore")
st.title("Explore")
ts = ui.require_dataset(name)
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
    proj = ui.projection_frame(ts, method.lower())
    status.update(label=f"{method} projection of {ts.n_posts:,} posts", state="complete")
analysis = ui.set_analysis(ts)
changepoints = {u.user_id: u.changepoints.indices for u in analysis}

# ---- projection figure -------------------------------------------------------------------------
fig = go.Figure()
hover = "user %{customdata[0]}<br>post %{customdata[1]}<br>%{customdata[2]}<extra></extra>"
if colour_by == "label":
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    for k, lab in enumerate(sorted(proj["label"].unique())):
        part = proj[proj["label"] == lab]
        fig.add_trace(go.Scattergl(
            x=part["x"], y=part["y"], mode="markers", name=f"label {lab}",
            marker=dict(size=5, opacity=0.35, color=palette[k % len(palette)]),
            customdata=part[["user_id_safe", "post", "when"]].to_numpy(), hovertemplate=hover,
        ))
else:
    fig.add_trace(go.Scattergl(
        x=proj["x"], y=proj["y"], mode="markers", name="posts",
        marker=dict(size=5, opacity=0.6, color=proj["days_since_start"], colorscale="Viridis",
                    colorbar=dict(title="days since<br>first post")),
        customdata=proj[["user_id_safe", "post", "when"]].to_numpy(), hovertemplate=hover,
    ))
line_colours = ["#111111", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]
for k, uid in enumerate(paths):
    part = proj[proj["user_id"] == uid].sort_values("post")
    colour = line_colours[k % len(line_colours)]
    safe = ui.escape_hover(uid)
    # WebGL traces draw above SVG ones, so the paths are WebGL too (else the cloud hides them)
    fig.add_trace(go.Scattergl(
        x=part["x"], y=part["y"], mode="lines+markers", name=f"path {safe}",
        line=dict(color=colour, width=2), marker=dict(size=5, color=colour),
        hovertemplate=f"user {safe}<br>post %{{text}}<extra></extra>", text=part["post"],
    ))
    cps = [i for i in changepoints.get(uid, ()) if i < len(part)]
    if cps:
        at = part.iloc[cps]
        fig.add_trace(go.Scattergl(
            x=at["x"], y=at["y"], mode="markers", name=f"change points {safe}",
            marker=dict(symbol="x", size=16, color=colour, line=dict(width=1, color="white")),
            hovertemplate=f"change point of {safe}<br>post %{{text}}<extra></extra>", text=at["post"],
        ))
if zoom:
    drawn = proj[proj["user_id"].isin(paths)]
    pad_x = 0.15 * max(float(np.ptp(drawn["x"])), 1e-6)
    pad_y = 0.15 * max(float(np.ptp(drawn["y"])), 1e-6)
    fig.update_xaxes(range=[drawn["x"].min() - pad_x, drawn["x"].max() + pad_x])
    fig.update_yaxes(range=[drawn["y"].min() - pad_y, drawn["y"].max() + pad_y])
fig.update_layout(
    height=560, margin=dict(l=10, r=10, t=30, b=10), dragmode="zoom",
    legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0),
    xaxis_title=f"{method} 1", yaxis_title=f"{method} 2",
)
event = st.plotly_chart(
    fig, key="explore_proj", on_select="rerun", selection_mode=("points", "box", "lasso"),
    config={"scrollZoom": True},
)
clicked = ui.user_from_selection(event, proj)
chosen_users = ui.users_in_selection(event, proj)
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
        table = ui.users_frame(analysis)
        st.dataframe(table[table["user_id"].isin(chosen_users)], hide_index=True, height=240)

with st.expander(f"All {len(ts)} users: change points and drift ({analysis.elapsed_s:.1f} s to analyse)"):
    st.dataframe(ui.users_frame(analysis), hide_index=True, height=300)

# ---- one user's timeline -------------------------------------------------------------------------
tl = ui.user_timeline(ts, selected)
st.subheader("Timeline of one user")
st.code(f"user {selected}  ·  label {'none' if tl.label is None else tl.label}  ·  {tl.n_posts} posts  ·  "
        f"{len(tl.change_points)} change point(s)", language=None, wrap_lines=True)
left, right = st.columns([3, 2])
with left:
    tfig = make_subplots(
        rows=4, cols=1, shared_xaxes=True, vertical_spacing=0.04,
        subplot_titles=("velocity norm |u| (per day, log)", "cosine distance between posts",
                        "drift |v_i - v_1|", "BOCPD change probability"),
    )
    tfig.add_trace(go.Scatter(x=tl.steps["when"], y=tl.steps["velocity_norm"], mode="lines+markers",
                              name="velocity", marker=dict(size=4)), row=1, col=1)
    tfig.add_trace(go.Scatter(x=tl.steps["when"], y=tl.steps["cosine_distance"], mode="lines+markers",
                              name="cosine distance", marker=dict(size=4)), row=2, col=1)
    tfig.add_trace(go.Scatter(x=tl.posts["when"], y=tl.posts["drift"], mode="lines+markers",
                              name="drift", marker=dict(size=4)), row=3, col=1)
    tfig.add_trace(go.Scatter(x=tl.posts["when"], y=tl.posts["change_probability"], mode="lines+markers",
                              name="BOCPD", marker=dict(size=4)), row=4, col=1)
    tfig.update_yaxes(type="log", row=1, col=1)
    tfig.update_yaxes(range=[0, 1.02], row=4, col=1)
    for start, end in tl.silences:
        tfig.add_vrect(x0=start, x1=end, fillcolor="#999999", opacity=0.18, line_width=0,
                       row="all", col=1)
    for _index, when in tl.change_points:
        tfig.add_vline(x=when, line=dict(color="#d62728", width=2, dash="dash"), row="all", col=1)
    tfig.update_layout(height=640, showlegend=False, margin=dict(l=10, r=10, t=40, b=10))
    st.plotly_chart(tfig, key="explore_timeline")
    st.caption(
        "Red dashed lines: PELT change points. Grey bands: silences longer than "
        f"{ui.features_config().silence_gap:g} days. Velocity uses the real gaps between posts."
    )
with right:
    st.markdown("**What changed, in words**")
    if not tl.narratives:
        st.text("No change point was found for this user.")
    for text in tl.narratives:
        with st.container(border=True):
            st.text(text)
