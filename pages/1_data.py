"""Data page: upload posts as text (embedded here, with progress and a cache) or as
trajectories, or pick a dataset; see it validated and summarised."""

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from cvx_app import escape, exports, session, textdata, workspace
from cvx_core.data.atomic import describe_os_error
from cvx_core.data.trajectory import TrajectoryError

name = session.bootstrap("Data")
st.title("Data")

# ---- upload --------------------------------------------------------------------------------
limit_mb = int(st.get_option("server.maxUploadSize"))
with st.container(border=True):
    st.subheader("Add a dataset")
    uploaded = st.file_uploader(
        "Posts or trajectories (CSV, Parquet, JSON Lines or NumPy .npz)",
        type=workspace.UPLOAD_TYPES,
        key="data_upload",
        help=f"Files up to {limit_mb} MB (server.maxUploadSize in .streamlit/config.toml).",
    )
    st.caption(
        f"One row per post with `user_id`, `timestamp` (ISO-8601 or epoch seconds), optional "
        f"`label`, and either the post's `text` (it is embedded here with all-MiniLM-L6-v2; vectors "
        f"are cached in the workspace, so a second upload of the same posts is instant) or the "
        f"embedding as a list column `embedding` or columns `e0 … e{{D-1}}` (an optional `text` is "
        f"kept). Other columns are kept as per-user metadata. Files up to {limit_mb} MB; valid "
        "uploads are saved in the workspace as Parquet and stay available after a restart."
    )
    if uploaded is not None:
        file_key = f"{uploaded.file_id}:{uploaded.name}:{uploaded.size}"
        if st.session_state.get("data_upload_key") != file_key:
            st.session_state["data_upload_key"] = file_key
            data = uploaded.getvalue()
            try:
                if textdata.is_text_table(data, uploaded.name):
                    bar = st.progress(0.0, text="Embedding the posts' texts…")

                    def progress(done: int, total: int) -> None:
                        frac = 1.0 if total <= 0 else min(max(done / total, 0.0), 1.0)
                        bar.progress(frac, text=f"Embedding the posts' texts: {done:,} of {total:,} distinct texts")

                    new_name, new_ts = textdata.import_texts(data, uploaded.name, progress=progress,
                                                              stage=lambda text: bar.progress(0.0, text=text))
                    bar.empty()
                    what = f"embedded {new_ts.n_posts} posts with all-MiniLM-L6-v2"
                else:
                    new_name, new_ts = workspace.import_upload(data, uploaded.name)
                    what = f"{new_ts.n_posts} posts"
            except TrajectoryError as exc:
                st.session_state["data_upload_result"] = ("error", str(exc))
            except OSError as exc:  # full disk, read-only workspace: the saved datasets stay as they were
                st.session_state["data_upload_result"] = ("error", describe_os_error(exc))
            else:
                session.set_current_dataset(new_name)
                st.session_state["data_upload_result"] = (
                    "success",
                    f"Saved {new_name}: {len(new_ts)} users, {what}, D = {new_ts.dim}.",
                )
                st.rerun()  # redraw the sidebar with the new dataset selected
        kind, message = st.session_state.get("data_upload_result", ("", ""))
        if kind == "error":
            st.error(
                "This file was not imported; the datasets in the workspace are unchanged.\n\n"
                + escape.escape_markdown(message),
                icon=":material/error:",
            )
        elif kind == "success":
            st.success(escape.escape_markdown(message), icon=":material/check_circle:")
    else:
        st.session_state.pop("data_upload_key", None)
        st.session_state.pop("data_upload_result", None)

# ---- choose / delete -------------------------------------------------------------------------
entries = workspace.list_datasets()
if not entries:
    st.info("No dataset yet. Upload a file above.")
    st.stop()

by_name = {e.name: e for e in entries}
st.subheader("Datasets in the workspace")
chosen = session.dataset_picker("data_choice", label="Work with")

entry = by_name[chosen]
if not entry.is_sample:
    with st.expander("Delete this dataset"):
        st.write("This removes the file from the workspace; runs trained on it are kept.")
        if st.button("Delete permanently", key="data_delete", type="primary"):
            workspace.delete_dataset(chosen)
            session.set_current_dataset(None)
            st.toast("Dataset deleted.")
            st.rerun()

# ---- summary ---------------------------------------------------------------------------------
ts = session.require_dataset(chosen)
summary = ts.summary()
c1, c2, c3, c4, c5 = st.columns(5)
c1.metric("Users", f"{summary.n_users:,}")
c2.metric("Posts", f"{summary.n_posts:,}")
c3.metric("Dimension", summary.dim)
c4.metric("Median posts / user", f"{summary.posts_per_user_median:g}")
span_days = (summary.end - summary.start) / np.timedelta64(1, "D")
c5.metric("Time span (days)", f"{span_days:,.1f}")
st.caption(
    f"First post {str(summary.start)[:19]} · last post {str(summary.end)[:19]} · "
    f"posts per user {summary.posts_per_user_min}–{summary.posts_per_user_max} · "
    f"median span per user {summary.median_span_days:.1f} days · "
    + ("has post text" if summary.has_text else "no post text")
)

left, right = st.columns(2)
with left:
    fig = go.Figure(go.Histogram(x=ts.lengths, nbinsx=30, marker_color="#1f77b4"))
    fig.update_layout(
        title="Posts per user", xaxis_title="posts", yaxis_title="users",
        height=300, margin=dict(l=10, r=10, t=40, b=10), bargap=0.05,
    )
    st.plotly_chart(fig, key="data_hist")
    exports.image_buttons(fig, file_stem=f"{chosen}-posts-per-user", key="data_dl_hist", label="Chart")
with right:
    counts = summary.label_counts
    fig = go.Figure(go.Bar(x=[str(k) for k in counts], y=list(counts.values()), marker_color="#d62728"))
    fig.update_layout(
        title="Label balance (users per label)", xaxis_title="label", yaxis_title="users",
        xaxis_type="category", height=300, margin=dict(l=10, r=10, t=40, b=10),
    )
    st.plotly_chart(fig, key="data_labels")
    exports.image_buttons(fig, file_stem=f"{chosen}-labels", key="data_dl_labels", label="Chart")

st.subheader("Preview")
st.dataframe(session.preview_frame(ts), hide_index=True, height=280)

st.markdown("**Download this dataset**")
report = exports.validation_report(ts, dataset=chosen, source=entry.path.name)
for w in report["warnings"]:
    st.caption("⚠ " + escape.escape_markdown(w[0].upper() + w[1:]) + ".")
dl = st.columns(3)
dl[0].download_button("Posts (Parquet)", data=lambda: exports.posts_parquet(ts), file_name=f"{chosen}-posts.parquet",
                      mime="application/vnd.apache.parquet", key="data_dl_parquet", on_click="ignore",
                      icon=":material/download:", help="One row per post; the Data page reads it back.")
dl[1].download_button("Posts (CSV)", data=lambda: exports.posts_csv(ts), file_name=f"{chosen}-posts.csv",
                      mime="text/csv", key="data_dl_csv", on_click="ignore", icon=":material/download:",
                      help="One row per post, the embedding as columns e0 … e{D-1}.")
dl[2].download_button("Validation report (JSON)", data=exports.validation_report_json(report),
                      file_name=f"{chosen}-validation.json", mime="application/json", key="data_dl_report",
                      on_click="ignore", icon=":material/fact_check:")
