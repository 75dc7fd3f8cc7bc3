"""Session state and page bootstrap: the navigation drawn on every page, the current dataset and its pickers, selection helpers and small display tables.
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd
import streamlit as st

from cvx_app.cache import load_dataset
from cvx_app.escape import escape_markdown
from cvx_app.projection_jobs import warm_umap_in_background
from cvx_app.workspace import SAMPLE_NAME, list_datasets, workspace_dir
from cvx_core.data.trajectory import TrajectoryError, TrajectorySet

# (script path relative to app.py, label, icon): the navigation drawn on every page
PAGES: list[tuple[str, str, str]] = [
    ("app.py", "Home", ":material/home:"),
    ("pages/1_data.py", "Data", ":material/dataset:"),
    ("pages/2_explore.py", "Explore", ":material/scatter_plot:"),
    ("pages/3_train.py", "Train", ":material/model_training:"),
    ("pages/4_compare.py", "Compare", ":material/compare_arrows:"),
]


DATASET_KEY = "cvx_dataset"  # the dataset chosen in this session (a name; see list_datasets)


_SIDEBAR_SELECT_KEY = "_cvx_sidebar_dataset"


def default_dataset() -> str | None:
    """``$CVX_DATASET`` if it names a dataset, else the sample, else the first listed one."""
    names = [e.name for e in list_datasets()]
    wanted = os.environ.get("CVX_DATASET", "").strip()
    if wanted in names:
        return wanted
    if SAMPLE_NAME in names:
        return SAMPLE_NAME
    return names[0] if names else None


def current_dataset() -> str | None:
    """The dataset chosen in this session, repaired if it vanished (deleted elsewhere)."""
    names = [e.name for e in list_datasets()]
    name = st.session_state.get(DATASET_KEY)
    if name not in names:
        name = default_dataset()
        st.session_state[DATASET_KEY] = name
    return name


def set_current_dataset(name: str | None) -> None:
    st.session_state[DATASET_KEY] = name


def _on_sidebar_dataset() -> None:
    st.session_state[DATASET_KEY] = st.session_state.get(_SIDEBAR_SELECT_KEY)


def bootstrap(title: str) -> str | None:
    """Idempotent start of every page: page config, session defaults, navigation sidebar
    and the dataset chooser. Returns the current dataset name (``None`` when there is none).
    """
    st.set_page_config(page_title=f"CVX · {title}", page_icon="〰️", layout="wide")
    warm_umap_in_background()  # once per process: UMAP's first use on Explore is not a compile
    from cvx_app import share

    # a shared address names its dataset (?dataset=): applied on the session's first visit of the page
    share.restore(f"dataset:{title}", {"dataset": (DATASET_KEY, [e.name for e in list_datasets()])})
    name = current_dataset()
    with st.sidebar:
        st.markdown("## CVX")
        st.caption("Temporal ML on embedding trajectories")
        for path, label, icon in PAGES:
            st.page_link(path, label=label, icon=icon)
        st.divider()
        entries = list_datasets()
        if entries:
            names = [e.name for e in entries]
            labels = {e.name: e.label for e in entries}
            # the widget mirrors the session's choice (also after switching pages)
            st.session_state[_SIDEBAR_SELECT_KEY] = name
            st.selectbox(
                "Dataset",
                names,
                key=_SIDEBAR_SELECT_KEY,
                format_func=lambda n: labels.get(n, n),
                on_change=_on_sidebar_dataset,
                help="The dataset every page works on. Upload more on the Data page.",
            )
        else:
            st.info("No dataset yet: upload one on the Data page.")
        st.caption("Workspace: " + escape_markdown(workspace_dir()))
    return name


def dataset_picker(key: str, *, label: str = "Dataset") -> str | None:
    """A dataset chooser in the page body that mirrors (and sets) the session's dataset,
    like the sidebar one. Returns the chosen name (``None`` when there is no dataset)."""
    entries = list_datasets()
    if not entries:
        return None
    names = [e.name for e in entries]
    labels = {e.name: e.label for e in entries}
    current = current_dataset()
    st.session_state[key] = current if current in names else names[0]
    st.selectbox(
        label,
        names,
        key=key,
        format_func=lambda n: labels.get(n, n),
        on_change=lambda: set_current_dataset(st.session_state[key]),
    )
    chosen = st.session_state[key]
    set_current_dataset(chosen)
    return chosen


def require_dataset(name: str | None) -> TrajectorySet:
    """The current dataset, or stop the page with a pointer to the Data page."""
    if name is None:
        st.warning("No dataset is available yet. Upload one on the Data page.")
        st.page_link("pages/1_data.py", label="Go to Data", icon=":material/dataset:")
        st.stop()
    try:
        return load_dataset(name)
    except (TrajectoryError, OSError, KeyError) as exc:
        st.error(f"Could not open dataset {escape_markdown(name)}: {escape_markdown(exc)}")
        st.stop()
    raise AssertionError("unreachable")  # pragma: no cover


def preview_frame(ts: TrajectorySet, *, n_rows: int = 50, n_dims: int = 6) -> pd.DataFrame:
    """The first ``n_rows`` posts in long format: user, time, label, text (when there is
    text), the per-user metadata columns, and the first ``n_dims`` embedding values."""
    rows: list[dict[str, Any]] = []
    meta = getattr(ts, "metadata", None)
    meta = meta if isinstance(meta, pd.DataFrame) and len(meta.columns) else None
    for tr in ts:
        for i in range(tr.n_posts):
            row: dict[str, Any] = {
                "user_id": tr.user_id,
                "timestamp": pd.Timestamp(tr.datetimes[i]),
                "label": tr.label,
            }
            if tr.texts is not None:
                row["text"] = tr.texts[i]
            if meta is not None:
                for col in meta.columns:
                    row[str(col)] = meta.at[tr.user_id, col]
            for d in range(min(n_dims, tr.dim)):
                row[f"e{d}"] = float(tr.embeddings[i, d])
            rows.append(row)
            if len(rows) >= n_rows:
                return pd.DataFrame(rows)
    return pd.DataFrame(rows)




def users_in_selection(event: Any, frame: pd.DataFrame) -> list[str]:
    """The distinct user ids of the selected points of a projection chart event, in order
    of first appearance (empty when nothing is selected).

    Points carry ``customdata = [escaped user id, post, when]``; escaped ids are mapped back
    to the real ones through ``frame``. Works with Streamlit's selection state object and
    with the plain dict AppTest hands back.
    """
    if event is None:
        return []
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        return []
    real = dict(zip(frame["user_id_safe"], frame["user_id"]))
    out: list[str] = []
    for point in points or []:
        custom = point.get("customdata") if isinstance(point, dict) else None
        if not custom:
            continue  # a path or change-point marker, not a post of the cloud
        uid = real.get(str(custom[0]))
        if uid is not None and uid not in out:
            out.append(str(uid))
    return out


def user_from_selection(event: Any, frame: pd.DataFrame) -> str | None:
    """The user of the selection when it holds exactly one user's posts (a click), else ``None``."""
    users = users_in_selection(event, frame)
    return users[0] if len(users) == 1 else None
