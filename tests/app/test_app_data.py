"""AppTest checks of the landing page and the Data page (upload, validation, workspace)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

TIMEOUT = 90


@pytest.fixture
def workspace(app_workspace) -> Path:
    return app_workspace


@pytest.fixture
def data_page(workspace, open_app):
    """Opens the Data page in a new session (as a fresh browser tab or a restart would)."""

    def _open() -> AppTest:
        at = open_app(timeout=TIMEOUT)
        assert not at.exception, at.exception
        at.switch_page("pages/1_data.py").run()
        assert not at.exception, at.exception
        return at

    return _open


def _good_csv(n_users: int = 3, dim: int = 4) -> bytes:
    rng = np.random.default_rng(1)
    rows = []
    for u in range(n_users):
        for i in range(6):
            row = {"user_id": f"a{u}", "timestamp": f"2024-02-{i + 1:02d}T10:00:00Z", "label": u % 2}
            row.update({f"e{d}": float(x) for d, x in enumerate(rng.normal(size=dim))})
            rows.append(row)
    return pd.DataFrame(rows).to_csv(index=False).encode()


def _files(ws: Path) -> dict[str, bytes]:
    return {str(p.relative_to(ws)): p.read_bytes() for p in ws.rglob("*") if p.is_file()} if ws.exists() else {}


def test_home_page_explains_cvx_and_links_every_page(workspace, open_app):
    at = open_app(timeout=TIMEOUT)
    assert not at.exception
    assert "CVX" in at.title[0].value
    links = {link.label for link in at.get("page_link")}
    assert {"Home", "Data", "Explore", "Train", "Compare"} <= links
    # the shipped sample is preselected for a fresh session
    assert at.sidebar.selectbox[0].value == "sample"


def test_data_page_summarises_the_sample(workspace, sample_set, data_page):
    at = data_page()
    metrics = {m.label: m.value for m in at.metric}
    summary = sample_set.summary()
    assert metrics["Users"] == f"{summary.n_users:,}"
    assert metrics["Posts"] == f"{summary.n_posts:,}"
    assert metrics["Dimension"] == str(summary.dim)
    preview = at.dataframe[0].value
    assert list(preview.columns[:3]) == ["user_id", "timestamp", "label"]
    assert preview["user_id"].iloc[0] == sample_set.at(0).user_id
    charts = at.get("plotly_chart")
    assert len(charts) == 2  # posts-per-user histogram and label balance


def test_bad_upload_shows_row_and_column_and_leaves_workspace_untouched(workspace, data_page):
    at = data_page()
    at.file_uploader[0].set_value(("first.csv", _good_csv(), "text/csv")).run()
    assert not at.exception
    assert at.sidebar.selectbox[0].value == "first"
    before = _files(workspace)
    assert "datasets/first.parquet" in before

    bad = _good_csv().decode().splitlines()
    cells = bad[3].split(",")
    cells[4] = "oops"  # an embedding cell on data row 3
    bad[3] = ",".join(cells)
    at.file_uploader[0].set_value(("broken.csv", "\n".join(bad).encode(), "text/csv")).run()
    assert not at.exception
    assert len(at.error) == 1
    message = at.error[0].value
    assert "row 3" in message and "e1" in message and "unchanged" in message
    assert _files(workspace) == before  # nothing written, nothing removed
    assert at.sidebar.selectbox[0].value == "first"


def test_upload_is_saved_as_parquet_and_survives_a_new_session(workspace, data_page):
    from cvx_core.data.io import load_trajectories

    at = data_page()
    data = _good_csv(n_users=4, dim=5)
    at.file_uploader[0].set_value(("My data (v2).csv", data, "text/csv")).run()
    assert not at.exception
    assert "Saved My_data_v2" in at.success[0].value.replace("\\", "")
    saved = workspace / "datasets" / "My_data_v2.parquet"
    assert saved.is_file()
    assert load_trajectories(saved).digest() == load_trajectories(io.BytesIO(data), name="x.csv").digest()

    fresh = data_page()  # a new session (as after a restart) still lists it
    options = fresh.selectbox(key="data_choice").options
    assert "My_data_v2" in options and any("sample" in o for o in options)


def test_delete_removes_only_the_chosen_dataset(workspace, data_page):
    at = data_page()
    at.file_uploader[0].set_value(("one.csv", _good_csv(), "text/csv")).run()
    at.file_uploader[0].clear().run()
    at.file_uploader[0].set_value(("two.csv", _good_csv(n_users=2), "text/csv")).run()
    assert at.sidebar.selectbox[0].value == "two"
    at.button(key="data_delete").click().run()
    assert not at.exception
    assert not (workspace / "datasets" / "two.parquet").exists()
    assert (workspace / "datasets" / "one.parquet").exists()
    assert at.sidebar.selectbox[0].value == "sample"


def test_sidebar_choice_carries_across_pages(workspace, data_page):
    at = data_page()
    at.file_uploader[0].set_value(("carry.csv", _good_csv(), "text/csv")).run()
    at.sidebar.selectbox[0].set_value("sample").run()
    assert at.selectbox(key="data_choice").value == "sample"
    at.sidebar.selectbox[0].set_value("carry").run()
    assert at.selectbox(key="data_choice").value == "carry"
    at.switch_page("app.py").run()
    assert not at.exception
    assert at.sidebar.selectbox[0].value == "carry"


def test_dataset_names_from_uploads_are_safe_file_stems():
    from cvx_app import workspace  # noqa: E402

    assert workspace.safe_dataset_name("My data (v2).csv") == "My_data_v2"
    assert workspace.safe_dataset_name("../../etc/passwd.parquet") == "passwd"
    assert workspace.safe_dataset_name("<script>.jsonl") == "script"
    assert workspace.safe_dataset_name("....npz") == "dataset"


def test_escape_markdown_makes_user_text_literal():
    from cvx_app import escape  # noqa: E402

    raw = "user **x** [link](http://e.x) <b>y</b> `z`"
    escaped = escape.escape_markdown(raw)
    assert "**" not in escaped.replace("\\*", "")
    assert "<b>" not in escaped.replace("\\<", "")
    assert escaped.replace("\\", "") == raw


def test_a_hostile_user_id_is_shown_as_text(workspace, open_app):
    from cvx_core.data.io import save_trajectories
    from cvx_core.data.trajectory import Trajectory, TrajectorySet

    uid = "<img src=x onerror=alert(1)> **bold**"
    tr = Trajectory(uid, np.eye(3, 4), np.array(["2024-01-01", "2024-01-02", "2024-01-05"], dtype="datetime64[us]"), label=1)
    save_trajectories(TrajectorySet([tr]), workspace / "datasets" / "hostile.parquet")
    at = open_app(timeout=TIMEOUT)
    at.sidebar.selectbox[0].set_value("hostile").run()
    at.switch_page("pages/2_explore.py").run()
    assert not at.exception
    assert uid in at.code[0].value  # a code block shows it literally
    assert all(uid not in m.value for m in at.markdown)  # never as markdown/HTML


def _as_format(fmt: str, tmp_path: Path) -> bytes:
    """The same small dataset as CSV, JSON Lines, NumPy .npz or Parquet bytes."""
    frame = pd.read_csv(io.BytesIO(_good_csv(n_users=3, dim=3)))
    if fmt == "csv":
        return frame.to_csv(index=False).encode()
    if fmt == "jsonl":
        return frame.to_json(orient="records", lines=True).encode()
    if fmt == "parquet":
        path = tmp_path / "x.parquet"
        frame.to_parquet(path)
        return path.read_bytes()
    buf = io.BytesIO()
    np.savez(
        buf,
        embeddings=frame[["e0", "e1", "e2"]].to_numpy(),
        timestamps=frame["timestamp"].to_numpy().astype(str),
        user_ids=frame["user_id"].to_numpy().astype(str),
        labels=frame["label"].to_numpy(),
    )
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "npz", "parquet"])
def test_every_supported_format_uploads_to_the_same_dataset(fmt, workspace, tmp_path, data_page):
    from cvx_core.data.io import load_trajectories

    at = data_page()
    at.file_uploader[0].set_value((f"mixed.{fmt}", _as_format(fmt, tmp_path), "application/octet-stream")).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    saved = load_trajectories(workspace / "datasets" / "mixed.parquet")
    reference = load_trajectories(_as_format("csv", tmp_path), name="ref.csv")
    assert saved.digest() == reference.digest()


def test_data_page_offers_the_table_and_the_validation_report_for_real_text(app_workspace, open_app):
    at = open_app("pages/1_data.py")
    at.selectbox(key="data_choice").set_value("real_text").run()
    assert not at.exception, at.exception
    assert any("10 of 45 users have no label" in c.value for c in at.caption)
    keys = {b.proto.id for b in at.get("download_button")}
    assert len(keys) >= 3
    assert at.metric[0].value == "45"


def test_an_upload_on_a_full_disk_says_disk_full_and_keeps_the_datasets(workspace, data_page, monkeypatch):
    import errno

    from cvx_app import workspace as ws_mod

    at = data_page()
    before = _files(workspace)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(workspace / "datasets" / "full.parquet"))

    monkeypatch.setattr(ws_mod, "import_upload", full_disk)
    at.file_uploader[0].set_value(("full.csv", _good_csv(), "text/csv")).run()
    assert not at.exception  # an OSError is the analyst's message, not a traceback
    assert len(at.error) == 1 and "disk full" in at.error[0].value and "unchanged" in at.error[0].value
    assert _files(workspace) == before
