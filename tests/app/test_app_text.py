"""AppTest checks of posts uploaded as text: embedded on the Data page through the workspace's
embedding cache, then shown as text (words on hover, the preview) on Data and Explore."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("streamlit")

from cvx_app import escape, textdata  # noqa: E402

TIMEOUT = 120
CALLS: list[int] = []


def bag_of_words(texts: list[str]) -> np.ndarray:
    """A deterministic 32-d hashed bag of words (fast stand-in for the sentence encoder)."""
    CALLS.append(len(texts))
    out = np.zeros((len(texts), 32), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in text.lower().split():
            out[i, int(hashlib.md5(word.encode()).hexdigest(), 16) % 32] += 1.0
    return out + 1e-3


def posts_csv() -> bytes:
    rows = []
    for u in range(4):
        for i in range(8):
            topic = "garden roses tomatoes" if i < 4 else "bitcoin markets trading"
            text = f"<b>post {i}</b> of user {u} about {topic} #{i}"
            rows.append({"user_id": f"writer{u}", "timestamp": f"2024-03-{i + 1:02d}T09:00:00Z",
                         "text": text, "label": u % 2, "city": "Lyon" if u < 2 else "Oslo"})
    return pd.DataFrame(rows).to_csv(index=False).encode()


@pytest.fixture
def text_upload(app_workspace, open_app, monkeypatch):
    monkeypatch.setattr(textdata, "encoder_spec", lambda: bag_of_words)
    monkeypatch.setenv("CVX_WARM_UMAP", "0")
    CALLS.clear()
    at = open_app("pages/1_data.py", timeout=TIMEOUT)
    at.file_uploader[0].set_value(("posts.csv", posts_csv(), "text/csv")).run()
    assert not at.exception, at.exception
    return at


def test_a_text_only_upload_is_embedded_saved_with_its_texts_and_cached(text_upload, app_workspace, open_app):
    at = text_upload
    assert at.sidebar.selectbox[0].value == "posts"
    assert any("embedded 32 posts" in s.value for s in at.success)
    assert sum(CALLS) == 32  # every distinct text encoded once
    assert (app_workspace / "embeddings.sqlite").is_file()
    from cvx_core.data.io import load_trajectories

    saved = load_trajectories(app_workspace / "datasets" / "posts.parquet")
    assert saved.has_text and saved.dim == 32 and len(saved) == 4
    assert saved["writer1"].texts[0] == "<b>post 0</b> of user 1 about garden roses tomatoes #0"
    preview = at.dataframe[0].value
    assert "<b>post 0</b>" in preview["text"].iloc[0]  # shown as text, not markup
    # the same posts again (a new session, another file name): all from the cache
    again = open_app("pages/1_data.py", timeout=TIMEOUT)
    again.file_uploader[0].set_value(("posts again.csv", posts_csv(), "text/csv")).run()
    assert not again.exception
    assert sum(CALLS) == 32


def test_an_empty_text_cell_is_refused_naming_the_row(app_workspace, open_app, monkeypatch):
    monkeypatch.setattr(textdata, "encoder_spec", lambda: bag_of_words)
    bad = posts_csv().decode().splitlines()
    cells = bad[3].split(",")
    cells[2] = ""
    bad[3] = ",".join(cells)
    at = open_app("pages/1_data.py", timeout=TIMEOUT)
    at.file_uploader[0].set_value(("bad.csv", "\n".join(bad).encode(), "text/csv")).run()
    assert not at.exception
    message = at.error[0].value
    assert "row 3" in message and "text" in message
    assert not list((app_workspace / "datasets").glob("*.parquet"))


def test_explore_shows_the_posts_words_on_hover_escaped(text_upload):
    at = text_upload
    at.switch_page("pages/2_explore.py").run()
    assert not at.exception, at.exception
    at.selectbox(key="explore_user").set_value("writer0").run()
    proj = json.loads(at.get("plotly_chart")[0].proto.spec)
    words = [c[3] for t in proj["data"] if t["name"].startswith("label ") for c in t["customdata"]]
    assert escape.escape_hover("<b>post 0</b> of user 0 about garden roses tomatoes #0") in words
    assert not any("<b>" in w for w in words)
    timeline = json.loads(at.get("plotly_chart")[1].proto.spec)
    drift = next(t for t in timeline["data"] if t["name"] == "drift")
    assert escape.escape_hover("<b>post 7</b> of user 0 about bitcoin markets trading #7") in drift["customdata"]
    menu = at.selectbox(key="explore_colour").options
    assert "metadata: city" in menu
