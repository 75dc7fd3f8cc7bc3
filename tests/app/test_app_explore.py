"""AppTest checks of the Explore page: projection, paths with change points, a user's timeline."""

from __future__ import annotations

import json

import pandas as pd
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from cvx_app import cache, escape, session  # noqa: E402

TIMEOUT = 120


@pytest.fixture
def explore(app_workspace, open_app) -> AppTest:
    at = open_app("pages/2_explore.py", timeout=TIMEOUT)
    assert not at.exception, at.exception
    return at


def _figures(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def _timeline_user(at: AppTest) -> str:
    return at.code[0].value.split("·")[0].replace("user", "", 1).strip()


def test_projection_shows_every_post_and_the_selected_path_with_change_points(explore, sample_set):
    from cvx_core.analysis.changepoints import detect_changepoints

    proj, timeline = _figures(explore)
    cloud = [t for t in proj["data"] if t["name"].startswith("label ")]
    assert {t["name"] for t in cloud} == {"label 0", "label 1"}
    assert all(t["type"] == "scattergl" for t in proj["data"])  # WebGL: paths draw above the cloud
    # (numeric arrays may travel as typed buffers; customdata rows are plain lists)
    assert sum(len(t["customdata"]) for t in cloud) == sample_set.n_posts
    user = explore.selectbox(key="explore_user").value
    assert user == sample_set.at(0).user_id
    expected = detect_changepoints(sample_set[user]).indices
    cp_traces = [t for t in proj["data"] if t["name"].startswith("change points")]
    assert (len(cp_traces) == 1) == (len(expected) > 0)
    assert any(t["name"] == f"path {user}" for t in proj["data"])
    # the timeline: one dashed vertical line per PELT change point, one narrative each
    vlines = [s for s in timeline["layout"].get("shapes", []) if s.get("type") == "line"]
    assert len(vlines) == 4 * len(expected)  # drawn across the 4 stacked panels
    assert len(explore.text) == max(len(expected), 1)


def test_choosing_a_user_opens_their_timeline(explore, sample_set):
    target = sample_set.at(5).user_id
    explore.selectbox(key="explore_user").set_value(target).run()
    assert not explore.exception
    assert _timeline_user(explore) == target
    timeline = _figures(explore)[1]
    n_steps = sample_set[target].n_posts - 1
    velocity = timeline["data"][0]
    assert velocity["name"] == "velocity"
    assert len(velocity["x"]) == n_steps


def test_clicking_a_post_selects_its_user(explore, sample_set):
    proj = cache.projection_frame(sample_set, "pca")
    row = proj[proj["user_id"] == sample_set.at(7).user_id].iloc[0]
    explore.session_state["explore_proj"] = {
        "selection": {
            "points": [{"customdata": [row["user_id_safe"], int(row["post"]), row["when"]], "x": row["x"], "y": row["y"]}],
            "point_indices": [0], "box": [], "lasso": [],
        }
    }
    explore.run()
    assert not explore.exception
    assert explore.selectbox(key="explore_user").value == sample_set.at(7).user_id
    assert _timeline_user(explore) == sample_set.at(7).user_id


def test_colour_by_time_uses_one_trace_with_a_colour_bar(explore):
    explore.radio(key="explore_colour").set_value("time").run()
    assert not explore.exception
    proj = _figures(explore)[0]
    cloud = [t for t in proj["data"] if not t["name"].startswith(("path ", "change points "))]
    assert len(cloud) == 1 and "colorbar" in cloud[0]["marker"]


def test_user_from_selection_maps_escaped_ids_back():
    frame = pd.DataFrame({"user_id": ["<b>x</b>", "y"], "user_id_safe": [escape.escape_hover("<b>x</b>"), "y"]})
    event = {"selection": {"points": [{"customdata": [escape.escape_hover("<b>x</b>"), 0, ""]}]}}
    assert session.user_from_selection(event, frame) == "<b>x</b>"
    assert session.user_from_selection({"selection": {"points": []}}, frame) is None
    assert session.user_from_selection(None, frame) is None


@pytest.mark.slow
def test_umap_projection_on_request(app_workspace, open_app, monkeypatch, small_planted):
    from cvx_core.data.io import save_trajectories

    monkeypatch.setenv("CVX_DATASET", "small")
    save_trajectories(small_planted[0], app_workspace / "datasets" / "small.parquet")
    at = open_app("pages/2_explore.py", timeout=TIMEOUT)
    assert _figures(at)[0]["layout"]["xaxis"]["title"]["text"] == "PCA 1"  # PCA first, always
    at.radio(key="explore_method").set_value("UMAP").run()
    assert not at.exception, at.exception
    proj = _figures(at)[0]
    assert proj["layout"]["xaxis"]["title"]["text"] == "UMAP 1"
    cloud = [t for t in proj["data"] if t["name"].startswith("label ")]
    assert sum(len(t["customdata"]) for t in cloud) == small_planted[0].n_posts
    assert "UMAP projection" in at.status[0].label


def test_a_box_selection_over_several_users_lists_them(explore, sample_set):
    proj = cache.projection_frame(sample_set, "pca")
    picked = [sample_set.at(i).user_id for i in (2, 3, 4)]
    rows = [proj[proj["user_id"] == u].iloc[0] for u in picked]
    explore.session_state["explore_proj"] = {
        "selection": {
            "points": [{"customdata": [r["user_id_safe"], int(r["post"]), r["when"]]} for r in rows],
            "point_indices": [0, 1, 2], "box": [{"x": [0, 1], "y": [0, 1]}], "lasso": [],
        }
    }
    before = explore.selectbox(key="explore_user").value
    explore.run()
    assert not explore.exception
    assert explore.selectbox(key="explore_user").value == before  # no single user was clicked
    assert any(m.value == "**Selection: 3 users**" for m in explore.markdown)
    listed = explore.dataframe[0].value  # drawn above the all-users table
    assert sorted(listed["user_id"]) == sorted(picked)
    assert session.users_in_selection(explore.session_state["explore_proj"], proj) == picked
