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


def cohort_drift_panel(name: str, ts: TrajectorySet) -> None:
    """The dataset's drift over time, in an expander."""
    with st.expander("Drift of the whole dataset over time (the cohort's mean embedding per period, "
                     "with its change points)"):
        if not st.toggle("Measure it", key="explore_cohort_on",
                         help="Bins every post by period and runs PELT on the means (a few seconds, then cached)."):
            return
        drift = cohort_drift.cached_cohort_drift(ts.digest(), ts)
        fig = cohort_drift.drift_figure(drift)
        st.plotly_chart(fig, key="explore_cohort_drift")
        st.caption(f"Posts binned by {drift.period}; the distance is between mean post embeddings (original "
                   f"space). Red dashed lines: PELT change points of the sequence of means "
                   f"({len(drift.change_points)} found).")
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
