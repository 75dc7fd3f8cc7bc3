"""Panels of the Explore page that read a few widgets and draw (the page composes them):
a user's change points in words, the export of a box/lasso selection, the dataset's drift
over time, and the reference-against-current window comparison.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from cvx_app import cache, cohort_drift, escape, excerpts, exports, window_drift, workspace
from cvx_core.data.trajectory import TrajectorySet


SHOWN_CHANGE_POINTS = 3  # the rest of a user's change points wait in one expander


def _in_groups(items: list[Any], draw: Any) -> None:
    """Draw the first :data:`SHOWN_CHANGE_POINTS` items on the page and the rest in one
    expander, so a user with many change points does not make a long page."""
    for k, item in enumerate(items[:SHOWN_CHANGE_POINTS]):
        draw(k, item)
    rest = items[SHOWN_CHANGE_POINTS:]
    if rest:
        with st.expander(f"{len(rest)} more change point(s)"):
            for k, item in enumerate(rest, start=SHOWN_CHANGE_POINTS):
                draw(k, item)


def _draw_words(k: int, cp: Any, n_posts: int) -> None:
    with st.container(border=True, key=f"explore_cp_{k}"):
        st.markdown(f"**Change point {k + 1}** · post {cp.index + 1} of {n_posts} · {cp.when:%Y-%m-%d} · "
                    f"severity {escape.escape_markdown(cp.severity)}")
        st.text(cp.narrative)
        sides = zip(st.columns(2), ("Before", "After"), (cp.terms_before, cp.terms_after),
                    (cp.posts_before, cp.posts_after))
        for col, side, terms, posts in sides:
            with col:
                st.caption(f"{side}: distinctive words (highlighted in the posts)")
                st.markdown(", ".join(f":orange-background[{escape.escape_markdown(t)}]" for t in terms) or "–")
                for post in posts:
                    st.markdown("“" + excerpts.highlight_markdown(excerpts.excerpt(post, terms), terms) + "”")
                    if len(post) > excerpts.EXCERPT_CHARS:
                        with st.expander(f"Full post ({len(post.split()):,} words)"):
                            st.text(post)


def _draw_narrative(k: int, text: str) -> None:
    with st.container(border=True):
        st.text(text)


def change_words_panel(ts: TrajectorySet, words: Any, tl: Any) -> None:
    """"What changed, in words": per change point its narrative, the distinctive terms on
    each side (highlighted) and example posts as short excerpts with the terms highlighted,
    each full post in an expander; the narratives alone when the data has no texts. The
    first three change points are shown, the rest in one expander."""
    st.markdown("**What changed, in words**")
    if words is None:
        if not tl.narratives:
            st.text("No change point was found for this user.")
        _in_groups(list(tl.narratives), _draw_narrative)
        if not ts.has_text:
            st.caption("This dataset has no post texts, so change points are described by dimensions only. "
                       "Upload posts as text on the Data page to read them in words.")
        return
    if not words:
        st.text("No change point was found for this user.")
    _in_groups(list(words), lambda k, cp: _draw_words(k, cp, tl.n_posts))


def selection_panel(name: str, ts: TrajectorySet, analysis: Any, chosen: list[str]) -> None:
    """Download the selected users (table) and their posts, or keep them as a new dataset."""
    n_posts = sum(ts[u].n_posts for u in chosen)
    st.caption(f"Export the selection: {len(chosen)} users, {n_posts:,} posts.")
    e = st.columns(4)
    users = cache.users_frame(analysis)
    users = users[users["user_id"].isin(chosen)]
    e[0].download_button("Users (CSV)", data=exports.features_csv(users), file_name=f"{name}-selection-users.csv",
                         mime="text/csv", key="explore_dl_sel_users", on_click="ignore", icon=":material/download:")
    e[1].download_button("Posts (CSV)", data=lambda: exports.posts_csv(ts, chosen),
                         file_name=f"{name}-selection-posts.csv", mime="text/csv", key="explore_dl_sel_csv",
                         on_click="ignore", icon=":material/download:")
    e[2].download_button("Posts (Parquet)", data=lambda: exports.posts_parquet(ts, chosen),
                         file_name=f"{name}-selection-posts.parquet", mime="application/vnd.apache.parquet",
                         key="explore_dl_sel_parquet", on_click="ignore", icon=":material/download:")
    if e[3].button("Save as a new dataset", key="explore_save_sel", icon=":material/save:",
                   help="The selected users' posts become a workspace dataset (the original is unchanged)."):
        saved = workspace.save_new_dataset(ts.subset(chosen), f"{name}-selection")
        st.success(f"Saved {escape.escape_markdown(saved)}: {len(chosen)} users. Pick it in the sidebar.",
                   icon=":material/check_circle:")


def cohort_drift_panel(name: str, ts: TrajectorySet, sensitivity: float) -> None:
    """The dataset's drift over time, in an expander, with its change points at ``sensitivity``
    (the Explore slider's value, as every other change point on the page)."""
    from cvx_app import sensitivity as sens

    with st.expander("Drift of the whole dataset over time (the cohort's mean embedding per period, "
                     "with its change points)"):
        if not st.toggle("Measure it", key="explore_cohort_on",
                         help="Bins every post by period and runs PELT on the means (a few seconds, then cached)."):
            return
        drift = cohort_drift.cached_cohort_drift(ts.digest(), float(sensitivity), ts)
        fig = cohort_drift.drift_figure(drift)
        st.plotly_chart(fig, key="explore_cohort_drift")
        st.caption(f"Posts binned by {drift.period}; the distance is between mean post embeddings (original "
                   f"space). Red dashed lines: PELT change points of the sequence of means at sensitivity "
                   f"{sens.rate_text(drift.sensitivity)} ({len(drift.change_points)} found).")
        exports.image_buttons(fig, file_stem=f"{name}-cohort-drift", key="explore_dl_cohort", label="Drift")


def window_drift_panel(name: str, ts: TrajectorySet) -> None:
    """A reference window against a current window, in an expander: two date ranges, a
    button, and the dimensions, users and clusters of posts that moved."""
    with st.expander("Reference window against current window: which dimensions, users and clusters of posts moved"):
        (r0, r1), (c0, c1) = window_drift.default_windows(ts)
        w1, w2 = st.columns(2)
        ref = w1.date_input("Reference window", value=(r0.date(), r1.date()), min_value=r0.date(),
                            max_value=c1.date(), key="explore_ref_window",
                            help="From its first day to its last day (inclusive).")
        cur = w2.date_input("Current window", value=(c0.date(), c1.date()), min_value=r0.date(),
                            max_value=c1.date(), key="explore_cur_window")
        if st.button("Compare the windows", key="explore_compare_windows", icon=":material/difference:"):
            if len(ref) != 2 or len(cur) != 2:
                st.warning("Choose a first and a last day for both windows.")
            else:
                day = pd.Timedelta(days=1)
                try:
                    with st.spinner("Comparing the windows (Welch's t per dimension, HDBSCAN clusters)…"):
                        st.session_state["explore_window_drift"] = (name, window_drift.window_drift(
                            ts, (pd.Timestamp(ref[0]), pd.Timestamp(ref[1]) + day),
                            (pd.Timestamp(cur[0]), pd.Timestamp(cur[1]) + day)))
                except ValueError as exc:
                    st.warning(escape.escape_markdown(exc))
        found = st.session_state.get("explore_window_drift")
        if found is None or found[0] != name:
            return
        wd = found[1]
        st.caption(f"{wd.n_reference:,} reference posts, {wd.n_current:,} current posts; the mean embedding moved "
                   f"{wd.mean_shift:.3f}. Dimensions: Welch's t-test, Benjamini-Hochberg adjusted p. Users: distance "
                   "between their mean embeddings in the two windows. Clusters: HDBSCAN on the posts' first 20 "
                   "principal components, ranked by the change in their share of posts.")
        t1, t2, t3 = st.columns(3)
        t1.dataframe(wd.dimensions.head(20).round(4), hide_index=True, height=300, key="explore_wd_dims")
        t2.dataframe(wd.users.head(20).round(4), hide_index=True, height=300, key="explore_wd_users")
        t3.dataframe(wd.clusters, hide_index=True, height=300, key="explore_wd_clusters")


def forecast_panel(ts: TrajectorySet, selected: str, proj: Any) -> tuple[Any, Any] | None:
    """The latent-ODE forecast of the open user, in an expander: ``(forecast, xy [H, 2])``
    placed in the projection ``proj`` once asked for, else ``None``."""
    from cvx_app import forecast_view

    with st.expander("Forecast where the open user goes next (latent ODE)", expanded=False):
        fc1, fc2 = st.columns([1, 2])
        horizon = fc1.number_input("Horizon (days after the last post)", min_value=1.0, max_value=3650.0,
                                   value=30.0, step=1.0, key="explore_horizon")
        trained = forecast_view.has_forecaster(ts)
        go_label = "Forecast" if trained else "Train the forecaster on this dataset, then forecast (about a minute)"
        if fc2.button(go_label, key="explore_forecast_go", icon=":material/timeline:"):
            with st.spinner("Forecasting…" if trained else
                            "Training the latent-ODE forecaster (once per dataset, kept on disk)…"):
                st.session_state["explore_forecast"] = forecast_view.forecast_user(ts, selected, float(horizon))
        fc = st.session_state.get("explore_forecast")
        if fc is None or fc.user_id != selected:
            return None
        held = fc.held_out
        st.caption(
            f"Dashed red path in the cloud: the forecast at {len(fc.days)} times up to {fc.days[-1]:g} days after the "
            f"last post. {forecast_view.held_out_sentence(held)} "
            + ("Placed exactly by PCA's linear map." if proj.method.upper() == "PCA" else
               "UMAP has no map for new points here: each forecast is placed among its 10 nearest posts."))
        return fc, forecast_view.place_in_projection(ts, proj, fc.embeddings)


def _pick(frame: pd.DataFrame, key: str, open_user: Any, height: int) -> None:
    """A table whose row click opens that row's user (keyed by the open user, so an old click
    never reopens its user once another is open)."""
    picked = st.dataframe(frame, hide_index=True, height=height, key=key, on_select="rerun",
                          selection_mode="single-row")
    if picked is not None and picked.selection.rows:
        open_user(str(frame["user_id"].iloc[picked.selection.rows[0]]))


def user_tables(ts: TrajectorySet, analysis: Any, selected: str, query: str, matches: list[str],
                open_user: Any, described: str) -> None:
    """Search results, every user's change points and drift, the open user's nearest users and
    the nearest posts to one of its posts; a row click opens that user."""
    from cvx_app import explore

    left, right = st.columns(2)
    with left:
        if query.strip():
            with st.container(border=True):
                st.markdown(f"**Search: {len(matches)} user(s) match** (ringed in the cloud; click a row to open)")
                if matches:
                    found = cache.users_frame(analysis).set_index("user_id").loc[matches].reset_index()
                    _pick(found, f"explore_search_table:{selected}", open_user, 200)
        how = "read back" if getattr(analysis, "reused", False) else "to analyse"
        with st.expander(f"All {len(ts)} users: change points and drift ({analysis.elapsed_s:.1f} s {how})"):
            st.caption(escape.escape_markdown(described))
            _pick(cache.users_frame(analysis), f"explore_all_table:{selected}", open_user, 300)
    with right:
        with st.container(border=True):
            st.markdown("**Nearest users** to the open user (cosine similarity of mean post embeddings; "
                        "click a row to open)")
            if len(ts) < 2:
                st.caption("This dataset has one user: there is no other user to compare with.")
            else:
                near = explore.nearest_users(ts, selected, analysis)
                _pick(near, f"explore_near_table:{selected}", open_user, min(320, 38 + 35 * len(near)))
        with st.expander("Nearest posts to one of this user's posts (original embedding space)"):
            n_own = ts[selected].n_posts
            which = st.number_input(f"Post (1–{n_own})", min_value=1, max_value=n_own, value=1, step=1,
                                    key=f"explore_post_{selected}")
            near_posts = explore.nearest_posts(ts, selected, int(which) - 1)
            st.caption("Cosine similarity of the posts' embeddings (not of the 2-D picture); click a row to open "
                       "its user.")
            _pick(near_posts, f"explore_near_posts:{selected}", open_user, 38 + 35 * len(near_posts))


def timeline_panel(name: str, ts: TrajectorySet, selected: str, sensitivity: float) -> None:
    """One user's timeline with its change points at ``sensitivity``, the change points in
    words, and their export (the same change points and words as on screen)."""
    from cvx_app import explore, figures, sensitivity as sens

    tl = cache.user_timeline(ts, selected, sensitivity=sensitivity)
    words = explore.change_words(ts, selected, sensitivity=sensitivity)
    st.subheader("Timeline of one user")
    st.code(f"user {selected}  ·  label {'none' if tl.label is None else tl.label}  ·  {tl.n_posts} posts  ·  "
            f"{len(tl.change_points)} change point(s)", language=None, wrap_lines=True)
    cp_terms = {w.index: w.terms_after for w in words} if words else None
    tfig = figures.words_timeline_figure(tl, explore.post_snippets(ts, selected), cp_terms)
    st.plotly_chart(tfig, key="explore_timeline")
    stem = f"{name}-{workspace.safe_dataset_name(selected)}"
    exports.image_buttons(tfig, file_stem=f"{stem}-timeline", key="explore_dl_timeline", label="Timeline")
    st.caption(
        "Red dashed lines: PELT change points at sensitivity " + sens.rate_text(sensitivity) + " (labelled with the "
        "words that become distinctive after them when the posts have text). "
        f"Grey bands: silences longer than {cache.features_config().silence_gap:g} days. Velocity uses the real "
        "gaps between posts. Hover a point to read the post's first words.")
    change_words_panel(ts, words, tl)
    if tl.change_points:
        def frame() -> pd.DataFrame:
            return cache.user_changepoints_frame(ts, selected, sensitivity=sensitivity)

        c1, c2 = st.columns(2)
        c1.download_button("This user's change points (CSV)", data=lambda: exports.changepoints_csv(frame()),
                           file_name=f"{stem}-changepoints.csv", mime="text/csv", key="explore_dl_user_cp_csv",
                           on_click="ignore", icon=":material/download:")
        c2.download_button("This user's change points (JSON)", data=lambda: exports.changepoints_json(frame()),
                           file_name=f"{stem}-changepoints.json", mime="application/json",
                           key="explore_dl_user_cp_json", on_click="ignore", icon=":material/download:")
