"""AppTest smoke check: every page renders on the shipped sample without an exception,
with the shared sidebar navigation and dataset chooser."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("streamlit.testing.v1")

ROOT = Path(__file__).resolve().parents[2]
PAGES = ["app.py", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "pages").glob("*.py"))]


def test_pages_folder_holds_only_the_four_pages():
    assert PAGES == ["app.py", "pages/1_data.py", "pages/2_explore.py", "pages/3_train.py", "pages/4_compare.py"]


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_on_the_sample_with_navigation(page, app_workspace, open_app):
    at = open_app(None if page == "app.py" else page)
    assert not at.exception, at.exception
    assert not at.error
    labels = [link.label for link in at.sidebar.get("page_link")]
    assert labels == ["Home", "Data", "Explore", "Train", "Compare"]
    assert at.sidebar.selectbox[0].value == "sample"


def test_train_page_dataset_picker_sets_the_session_dataset(app_workspace, open_app, small_planted):
    from cvx_core.data.io import save_trajectories

    save_trajectories(small_planted[0], app_workspace / "datasets" / "small.parquet")
    at = open_app("pages/3_train.py")
    at.selectbox(key="train_dataset").set_value("small").run()
    assert not at.exception
    assert at.sidebar.selectbox[0].value == "small"
    assert any(c.value.startswith(f"{len(small_planted[0])} labelled users") for c in at.caption)
