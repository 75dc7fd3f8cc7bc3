"""AppTest checks of the Explore page: projection, colour by any per-user value, time window,
search, row clicks, nearest users, background UMAP, a user's timeline and its words."""

from __future__ import annotations

import json

import pandas as pd
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from cvx_app import cache, escape, projection_jobs, session  # noqa: E402
from cvx_app import explore as ex  # noqa: E402

TIMEOUT = 120


@pytest.fixture
def explore(app_workspace, open_app) -> AppTest:
    at = open_app("pages/2_explore.py", timeout=TIMEOUT)
    assert not at.exception, at.exception
    return at


def _figures(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def _pca_frame(ts) -> pd.DataFrame:
    return projection_jobs.projection_frame(ts, projection_jobs.projection(ts, "pca").result)


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
    assert user == ex.strongest_change(sample_set, cache.set_analysis(sample_set))[0]  # opens on the strongest change
    expected = detect_changepoints(sample_set[user]).indices
    cp_traces = [t for t in proj["data"] if t["name"].startswith("change points")]
    assert (len(cp_traces) == 1) == (len(expected) > 0)
    assert any(t["name"] == f"path {user}" for t in proj["data"])
    # the timeline: one dashed vertical line per PELT change point, one narrative each
    vlines = [s for s in timeline["layout"].get("shapes", []) if s.get("type") == "line"]
    assert len(vlines) == 4 * len(expected)  # drawn across the 4 stacked panels
    assert len(explore.text) >= max(len(expected), 1)


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
    proj = _pca_frame(sample_set)
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
    explore.selectbox(key="explore_colour").set_value(ex.TIME).run()
    assert not explore.exception
    proj = _figures(explore)[0]
    cloud = [t for t in proj["data"] if not t["name"].startswith(("path ", "halo ", "change points ", "start / end "))]
    assert len(cloud) == 1 and "colorbar" in cloud[0]["marker"]


def test_user_from_selection_maps_escaped_ids_back():
    frame = pd.DataFrame({"user_id": ["<b>x</b>", "y"], "user_id_safe": [escape.escape_hover("<b>x</b>"), "y"]})
    event = {"selection": {"points": [{"customdata": [escape.escape_hover("<b>x</b>"), 0, ""]}]}}
    assert session.user_from_selection(event, frame) == "<b>x</b>"
    assert session.user_from_selection({"selection": {"points": []}}, frame) is None
    assert session.user_from_selection(None, frame) is None


@pytest.mark.slow
def test_umap_runs_in_the_background_then_replaces_pca_and_is_kept_on_disk(app_workspace, open_app, monkeypatch, small_planted):
    import time

    from cvx_core.data.io import save_trajectories

    from cvx_core.analysis.projection import clear_projection_cache

    clear_projection_cache()  # an earlier test's in-memory UMAP of the same set must not answer for the disk
    monkeypatch.setenv("CVX_DATASET", "small")
    monkeypatch.setenv("CVX_WARM_UMAP", "0")
    save_trajectories(small_planted[0], app_workspace / "datasets" / "small.parquet")
    at = open_app("pages/2_explore.py", timeout=TIMEOUT)
    assert _figures(at)[0]["layout"]["xaxis"]["title"]["text"] == "PCA 1"  # PCA first, always
    at.radio(key="explore_method").set_value("UMAP").run()
    assert not at.exception, at.exception
    deadline = time.monotonic() + 240
    while _figures(at)[0]["layout"]["xaxis"]["title"]["text"] != "UMAP 1":
        # while it runs: PCA stays on screen under a progress bar
        assert _figures(at)[0]["layout"]["xaxis"]["title"]["text"] == "PCA 1"
        assert time.monotonic() < deadline, "UMAP did not finish"
        time.sleep(1.0)
        at.run()
        assert not at.exception, at.exception
    proj = _figures(at)[0]
    cloud = [t for t in proj["data"] if t["name"].startswith("label ")]
    assert sum(len(t["customdata"]) for t in cloud) == small_planted[0].n_posts
    assert "trustworthiness" in proj["layout"]["title"]["text"]
    assert list((app_workspace / "projections").glob("*-umap-*.npz"))  # survives a restart


def test_a_box_selection_over_several_users_lists_them(explore, sample_set):
    proj = _pca_frame(sample_set)
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


def _cloud_traces(fig: dict) -> list[dict]:
    return [t for t in fig["data"] if not t["name"].startswith(("path ", "halo ", "change points ", "now ", "search: ", "start / end "))]


def test_colour_by_change_point_count_uses_each_users_count(explore, sample_set):
    explore.selectbox(key="explore_colour").set_value(ex.CHANGE_POINTS).run()
    assert not explore.exception
    fig = _figures(explore)[0]
    (trace,) = [t for t in _cloud_traces(fig) if "colorbar" in t["marker"]]
    analysis = cache.set_analysis(sample_set)
    counts = {u.user_id: u.changepoints.n_changes for u in analysis}
    users = [escape.escape_hover(c[0]) for c in trace["customdata"]]
    expected = [counts[{escape.escape_hover(u): u for u in counts}[x]] for x in users]
    colours = trace["marker"]["color"]
    if isinstance(colours, dict):  # a typed array
        import base64

        import numpy as np

        colours = np.frombuffer(base64.b64decode(colours["bdata"]), dtype=colours["dtype"]).tolist()
    assert [float(c) for c in colours] == [float(e) for e in expected]


def test_colour_by_metadata_offers_each_extra_column(app_workspace, open_app, monkeypatch, small_planted):
    import numpy as np

    from cvx_core.data.io import save_trajectories
    from cvx_core.data.trajectory import TrajectorySet

    ts = small_planted[0]
    meta = pd.DataFrame({"country": ["fr" if i % 3 else "de" for i in range(len(ts))],
                         "age": np.arange(len(ts), dtype=float) + 20}, index=pd.Index(ts.user_ids, name="user_id"))
    try:
        with_meta = TrajectorySet(list(ts), name="meta", metadata=meta)
    except TypeError:
        pytest.skip("TrajectorySet has no metadata yet")
    monkeypatch.setenv("CVX_DATASET", "meta")
    save_trajectories(with_meta, app_workspace / "datasets" / "meta.parquet")
    at = open_app("pages/2_explore.py", timeout=TIMEOUT)
    assert not at.exception, at.exception
    menu = at.selectbox(key="explore_colour").options
    assert f"{ex.META_PREFIX}country" in menu and f"{ex.META_PREFIX}age" in menu
    at.selectbox(key="explore_colour").set_value(f"{ex.META_PREFIX}country").run()
    assert not at.exception, at.exception
    names = {t["name"] for t in _cloud_traces(_figures(at)[0])}
    assert names == {f"{ex.META_PREFIX}country de", f"{ex.META_PREFIX}country fr"}
    de = sum(len(t["customdata"]) for t in _cloud_traces(_figures(at)[0]) if t["name"].endswith(" de"))
    assert de == sum(tr.n_posts for i, tr in enumerate(ts) if i % 3 == 0)


def test_time_window_greys_the_posts_outside_it_and_cuts_the_paths(explore, sample_set):
    frame = _pca_frame(sample_set)
    first, last = frame["datetime"].min(), frame["datetime"].max()
    lo, hi = first + (last - first) * 0.25, first + (last - first) * 0.5
    explore.slider(key="explore_window").set_value((lo.to_pydatetime(), hi.to_pydatetime())).run()
    assert not explore.exception, explore.exception
    fig = _figures(explore)[0]
    lo, hi = (pd.Timestamp(t) for t in explore.slider(key="explore_window").value)  # snapped to the step
    (outside,) = [t for t in fig["data"] if t["name"] == "outside the time window"]
    inside = (frame["datetime"] >= lo) & (frame["datetime"] <= hi)
    assert len(outside["customdata"]) == int((~inside).sum())
    user = explore.selectbox(key="explore_user").value
    (path,) = [t for t in fig["data"] if t["name"] == f"path {user}"]
    assert len(path["customdata"]) == int(((frame["user_id"] == user) & (frame["datetime"] <= hi)).sum())


def test_play_moves_the_time_window_forward(explore):
    explore.toggle(key="explore_play").set_value(True).run()
    assert not explore.exception, explore.exception
    lo1, hi1 = explore.slider(key="explore_window").value
    explore.run()
    lo2, hi2 = explore.slider(key="explore_window").value
    assert lo2 > lo1 and hi2 > hi1 and (hi2 - lo2) == (hi1 - lo1)


def test_search_rings_the_matching_users_posts_and_lists_them(explore, sample_set):
    target = sample_set.at(11).user_id
    explore.text_input(key="explore_search").input(target).run()
    assert not explore.exception, explore.exception
    fig = _figures(explore)[0]
    (ring,) = [t for t in fig["data"] if t["name"].startswith("search: ")]
    ringed = {c[0] for c in ring["customdata"]}
    assert escape.escape_hover(target) in ringed
    assert len(ring["customdata"]) == sum(sample_set[u].n_posts for u in ex.search_users(sample_set.user_ids, target))
    assert any(m.value.startswith("**Search: ") for m in explore.markdown)


def test_a_row_click_in_the_users_table_opens_that_user(explore, sample_set):
    target = sample_set.at(9).user_id
    first = explore.selectbox(key="explore_user").value
    explore.session_state[f"explore_all_table:{first}"] = {"selection": {"rows": [9], "columns": [], "cells": []}}
    explore.run()
    assert not explore.exception, explore.exception
    assert explore.selectbox(key="explore_user").value == target
    assert _timeline_user(explore) == target
    # choosing another user afterwards is not undone by the old row click
    other = sample_set.at(3).user_id
    explore.selectbox(key="explore_user").set_value(other).run()
    explore.run()
    assert explore.selectbox(key="explore_user").value == other


def test_nearest_users_are_the_most_similar_mean_embeddings(explore, sample_set):
    import numpy as np

    user = explore.selectbox(key="explore_user").value
    near = next(df.value for df in explore.dataframe if "similarity" in df.value.columns)
    means = {tr.user_id: tr.embeddings.mean(axis=0) for tr in sample_set}
    unit = {u: m / np.linalg.norm(m) for u, m in means.items()}
    sims = sorted(((float(unit[u] @ unit[user]), u) for u in unit if u != user), reverse=True)
    assert list(near["user_id"]) == [u for _, u in sims[: len(near)]]
    assert user not in set(near["user_id"]) and len(near) == 8


def test_colour_by_the_latest_runs_prediction_score(app_workspace, open_app, monkeypatch, small_planted):
    import numpy as np

    from cvx_core.data.io import save_trajectories
    from cvx_core.learn.config import TrainConfig
    from cvx_core.learn.model import predict_proba
    from cvx_core.learn.runs import atomic_write_json, load_run
    from cvx_core.learn.trainer import train

    ts = small_planted[0]
    save_trajectories(ts, app_workspace / "datasets" / "small.parquet")
    run_dir = app_workspace / "runs" / "run-small"
    train(ts, TrainConfig(epochs=1, device="cpu", max_len=32), run_dir=run_dir)
    atomic_write_json(run_dir / "app.json", {"dataset": "small", "digest": ts.digest()})
    monkeypatch.setenv("CVX_DATASET", "small")
    at = open_app("pages/2_explore.py", timeout=TIMEOUT)
    assert not at.exception, at.exception
    option = f"{ex.SCORE_PREFIX} (run run-small)"
    assert option in at.selectbox(key="explore_colour").options
    at.selectbox(key="explore_colour").set_value(option).run()
    assert not at.exception, at.exception
    (trace,) = [t for t in _cloud_traces(_figures(at)[0]) if "colorbar" in t["marker"]]
    expected = dict(zip(ts.user_ids, predict_proba(load_run(run_dir).model, ts, device="cpu")[:, -1]))
    colours = trace["marker"]["color"]
    if isinstance(colours, dict):  # a typed array
        import base64

        colours = np.frombuffer(base64.b64decode(colours["bdata"]), dtype=colours["dtype"]).tolist()
    shown = [expected[c[0]] for c in trace["customdata"]]  # plain ids: no escaping needed here
    np.testing.assert_allclose(colours, shown, rtol=1e-6)


def test_user_text_reaches_the_cloud_only_escaped():
    import numpy as np

    from cvx_app import figures
    from cvx_core.data.trajectory import Trajectory, TrajectorySet

    dts = np.datetime64("2024-01-01", "ns") + np.arange(3).astype("timedelta64[D]").astype("timedelta64[ns]")
    rng = np.random.default_rng(0)
    ts = TrajectorySet([
        Trajectory("<b>u</b>", rng.normal(size=(3, 4)), dts, texts=("<script>x</script> hi", "a & b", "plain")),
        Trajectory("v", rng.normal(size=(3, 4)), dts, texts=("one", "two", "three")),
    ])
    from cvx_core.analysis.projection import project_posts

    frame = projection_jobs.projection_frame(ts, project_posts(ts, use_cache=False))
    assert escape.escape_hover("<script>x</script> hi") in set(frame["words"])
    fig = figures.explore_figure(
        frame, method="PCA", colour=pd.Series(["<i>it</i>"] * 3 + ["ok"] * 3), colour_title="metadata: <tag>",
        categorical=True, paths=["<b>u</b>"], changepoints={"<b>u</b>": [1]}, escape=escape.escape_hover,
        window=(0.0, 1.0), highlight=["v"],
    )
    text = fig.to_json()
    fig = json.loads(text)
    assert "<script>" not in text and "<b>u</b>" not in text and "<i>it</i>" not in text and "<tag>" not in text
    names = [t["name"] for t in fig["data"]]
    assert "path &lt;b&gt;u&lt;/b&gt;" in names and "outside the time window" in names
    (path,) = [t for t in fig["data"] if t["name"] == "path &lt;b&gt;u&lt;/b&gt;"]
    assert len(path["customdata"]) == 2  # drawn up to the window's end (day 1)


def test_a_selection_exports_its_posts_and_saves_as_a_new_dataset(explore, sample_set, app_workspace):
    from cvx_core.data.io import load_trajectories

    proj = _pca_frame(sample_set)
    picked = [sample_set.at(i).user_id for i in (2, 3, 4)]
    rows = [proj[proj["user_id"] == u].iloc[0] for u in picked]
    explore.session_state["explore_proj"] = {
        "selection": {
            "points": [{"customdata": [r["user_id_safe"], int(r["post"]), r["when"]]} for r in rows],
            "point_indices": [0, 1, 2], "box": [{"x": [0, 1], "y": [0, 1]}], "lasso": [],
        }
    }
    explore.run()
    n_posts = sum(sample_set[u].n_posts for u in picked)
    assert any(c.value == f"Export the selection: 3 users, {n_posts:,} posts." for c in explore.caption)
    explore.button(key="explore_save_sel").click().run()
    assert not explore.exception, explore.exception
    saved = app_workspace / "datasets" / "sample-selection.parquet"
    assert saved.is_file()
    back = load_trajectories(saved)
    assert back.user_ids == picked and back.n_posts == n_posts
    assert any(s.value.startswith("Saved sample\\-selection: 3 users") for s in explore.success)


def test_a_shared_address_opens_the_same_view_and_the_view_is_written_back(app_workspace):
    from pathlib import Path

    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "app.py"), default_timeout=TIMEOUT)
    at.switch_page("pages/2_explore.py")
    at.query_params.update({"dataset": "real_text", "user": "lincoln", "colour": ex.DRIFT,
                            "method": "nonsense"})  # not an option: ignored
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="explore_user").value == "lincoln"
    assert at.selectbox(key="explore_colour").value == ex.DRIFT
    assert at.radio(key="explore_method").value == "PCA"
    assert at.query_params["dataset"] in ("real_text", ["real_text"]) and at.query_params["user"] in ("lincoln", ["lincoln"])
    at.selectbox(key="explore_user").set_value("washington").run()
    assert at.query_params["user"] in ("washington", ["washington"])  # later choices win over the address


def test_reference_and_current_windows_are_compared_on_the_real_text_sample(app_workspace):
    from pathlib import Path

    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "app.py"), default_timeout=TIMEOUT)
    at.switch_page("pages/2_explore.py")
    at.query_params["dataset"] = "real_text"
    at.run()
    at.button(key="explore_compare_windows").click().run()
    assert not at.exception, at.exception
    assert any(c.value.endswith("ranked by the change in their share of posts.") and "reference posts" in c.value
               for c in at.caption)
    dims = next(d.value for d in at.dataframe if "p_adjusted" in d.value.columns)
    assert len(dims) == 20 and dims["shift"].abs().is_monotonic_decreasing
    at.toggle(key="explore_cohort_on").set_value(True).run()  # the dataset's drift over time, on demand
    assert not at.exception, at.exception
    drift = next(f for f in _figures(at) if any(t.get("name") == "from the first bin" for t in f["data"]))
    assert "per year" in json.dumps(drift["layout"])


def test_the_3d_view_draws_every_post_and_the_open_users_path(explore, sample_set):
    explore.toggle(key="explore_3d").set_value(True).run()
    assert not explore.exception, explore.exception
    fig = _figures(explore)[0]
    assert fig["layout"]["title"]["text"].startswith(f"PCA 3-D of {sample_set.n_posts:,} posts")
    cloud = [t for t in fig["data"] if t["name"].startswith("label ")]
    assert all(t["type"] == "scatter3d" for t in fig["data"])
    assert sum(len(t["customdata"]) for t in cloud) == sample_set.n_posts
    user = explore.selectbox(key="explore_user").value
    assert any(t["name"] == f"path {user}" for t in fig["data"])


def _shown_changepoints(at: AppTest) -> int:
    """The open user's change-point count as the timeline header states it."""
    return int(at.code[0].value.split("·")[-1].split("change point")[0].strip())


def _table_changepoints(at: AppTest) -> int:
    """Every user's change points, summed over the page's all-users table."""
    table = next(d.value for d in at.dataframe if "change points" in d.value.columns and len(d.value) > 1)
    return int(table["change points"].sum())


def test_the_sensitivity_slider_moves_the_change_points_words_and_export(explore, sample_set):
    from cvx_app import sensitivity
    from cvx_core.analysis.batch import analyze_set
    from cvx_core.analysis.changepoints import ChangePointConfig, detect_changepoints
    from cvx_core.analysis.penalty import DEFAULT_SENSITIVITY, SENSITIVITIES

    slider = explore.select_slider(key=sensitivity.WIDGET_KEY)
    assert slider.value == DEFAULT_SENSITIVITY and list(slider.options) == [f"{s:.0%}" for s in SENSITIVITIES]
    assert any("At most 5% of histories with no change" in c.value and "29% of one speaker's" in c.value
               for c in explore.caption)
    user = explore.selectbox(key="explore_user").value
    by_rate = {}
    for rate in (min(SENSITIVITIES), max(SENSITIVITIES)):
        explore.select_slider(key=sensitivity.WIDGET_KEY).set_value(rate).run()
        assert not explore.exception, explore.exception
        assert explore.selectbox(key="explore_user").value == user  # the open user stays open
        want = analyze_set(sample_set, cp_config=ChangePointConfig(sensitivity=rate))
        shown = _shown_changepoints(explore)
        assert shown == len(detect_changepoints(sample_set[user], config=ChangePointConfig(sensitivity=rate)).indices)
        assert _table_changepoints(explore) == sum(len(u.changepoints.indices) for u in want)
        assert any(f"At most {rate:.0%} of histories with no change" in c.value for c in explore.caption)
        export = cache.user_changepoints_frame(sample_set, user, sensitivity=rate)  # what the download holds
        assert len(export) == shown and list(export["user_id"].unique()) in ([user], [])
        by_rate[rate] = _table_changepoints(explore)
    assert by_rate[max(SENSITIVITIES)] > by_rate[min(SENSITIVITIES)]  # more false alarms allowed: more found
    assert explore.session_state[sensitivity.CHOSEN_KEY] == max(SENSITIVITIES)  # kept for the Train page's export


def test_on_real_text_the_words_and_the_export_follow_the_sensitivity():
    from pathlib import Path

    from cvx_core.analysis.penalty import SENSITIVITIES
    from cvx_core.data.io import load_trajectories

    ts = load_trajectories(Path(__file__).resolve().parents[2] / "sample_data" / "real_text.parquet")
    counts = {}
    for rate in (min(SENSITIVITIES), max(SENSITIVITIES)):
        total = 0
        for user in ts.user_ids:
            tl = cache.user_timeline(ts, user, sensitivity=rate)
            words = ex.change_words(ts, user, sensitivity=rate)
            assert [w.index for w in words] == [i for i, _ in tl.change_points]
            if tl.change_points:
                export = cache.user_changepoints_frame(ts, user, sensitivity=rate)
                assert list(export["index"]) == [w.index for w in words]
                assert list(export["words_rose"]) == [", ".join(w.terms_after) for w in words]  # as on screen
            total += len(tl.change_points)
        counts[rate] = total
    assert counts[max(SENSITIVITIES)] > counts[min(SENSITIVITIES)]


def test_the_screen_the_export_and_the_cli_take_the_same_top_terms_and_posts(capsys):
    from pathlib import Path

    from cvx_core import cli
    from cvx_core.analysis.explain import N_POSTS, N_TERMS
    from cvx_core.data.io import load_trajectories

    path = Path(__file__).resolve().parents[2] / "sample_data" / "real_text.parquet"
    ts = load_trajectories(path)
    args = cli.build_parser().parse_args(["explain", str(path), "--user", "truman"])
    assert (args.terms, args.posts) == (N_TERMS, N_POSTS)  # one rule, in cvx_core.analysis.explain
    assert cli.main(["explain", str(path), "--user", "truman", "--format", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)["change_points"]
    screen = ex.change_words(ts, "truman")
    export = cache.user_changepoints_frame(ts, "truman")
    assert len(printed) == len(screen) == len(export) >= 1
    for cp, words, (_, row) in zip(printed, screen, export.iterrows()):
        assert [t["term"] for t in cp["terms_after"]] == list(words.terms_after) == row["words_rose"].split(", ")
        assert [t["term"] for t in cp["terms_before"]] == list(words.terms_before) == row["words_fell"].split(", ")
        assert len(cp["posts_after"]) == len(words.posts_after) == N_POSTS


def test_the_sensitivity_is_kept_in_a_shared_address(app_workspace):
    from pathlib import Path

    from cvx_app import sensitivity

    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "app.py"), default_timeout=TIMEOUT)
    at.switch_page("pages/2_explore.py")
    at.query_params.update({"dataset": "real_text", "sensitivity": "0.2"})
    at.run()
    assert not at.exception, at.exception
    assert at.select_slider(key=sensitivity.WIDGET_KEY).value == 0.2
    at.select_slider(key=sensitivity.WIDGET_KEY).set_value(0.01).run()
    assert at.query_params["sensitivity"] in ("0.01", ["0.01"])  # written back as it moves
    other = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "app.py"), default_timeout=TIMEOUT)
    other.switch_page("pages/2_explore.py")
    other.query_params.update({"dataset": "real_text", "sensitivity": "0.07"})  # not on the scale: ignored
    other.run()
    assert other.select_slider(key=sensitivity.WIDGET_KEY).value == sensitivity.DEFAULT_SENSITIVITY


def test_the_cohort_drift_change_points_follow_the_sensitivity_slider(explore, sample_set):
    from cvx_app import cohort_drift as cd
    from cvx_app import sensitivity
    from cvx_core.analysis.penalty import DEFAULT_SENSITIVITY, SENSITIVITIES

    explore.toggle(key="explore_cohort_on").set_value(True).run()
    found = {}
    for rate in (DEFAULT_SENSITIVITY, max(SENSITIVITIES), min(SENSITIVITIES)):
        if rate != DEFAULT_SENSITIVITY:
            explore.select_slider(key=sensitivity.WIDGET_KEY).set_value(rate).run()
        assert not explore.exception, explore.exception
        want = cd.cohort_drift(sample_set, sensitivity=rate).change_points
        caption = next(c.value for c in explore.caption if "sequence of means" in c.value)
        assert f"at sensitivity {rate:.0%} ({len(want)} found)" in caption
        drift = next(f for f in _figures(explore) if any(t.get("name") == "from the first bin" for t in f["data"]))
        lines = {s["x0"] for s in drift["layout"].get("shapes", []) if s.get("line", {}).get("dash") == "dash"}
        assert len(lines) == len(want)  # one dashed line per change point (drawn in both panels)
        found[rate] = len(want)
    assert found[max(SENSITIVITIES)] > found[min(SENSITIVITIES)]

