"""AppTest checks of the Compare page: learned attention vs analytic attribution of a run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

TIMEOUT = 120
ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_data" / "sample.parquet"
TRUTH = ROOT / "sample_data" / "truth.json"


@pytest.fixture(scope="module")
def trained_workspace(tmp_path_factory, sample_set) -> Path:
    """A workspace holding one short run trained on the shipped sample (as the app records it)."""
    from cvx_core.learn.config import TrainConfig
    from cvx_core.learn.runs import atomic_write_json
    from cvx_core.learn.trainer import train

    ws = tmp_path_factory.mktemp("compare") / "ws"
    run_dir = ws / "runs" / "run-sample"
    extra = {"head": "linear", "bootstrap": 0} if "head" in TrainConfig.__dataclass_fields__ else {}
    train(sample_set, TrainConfig(epochs=3, device="cpu", max_len=64, **extra), run_dir=run_dir)
    atomic_write_json(run_dir / "app.json", {"dataset": "sample", "digest": sample_set.digest()})
    return ws


def _compare(monkeypatch, open_app, ws: Path) -> AppTest:
    monkeypatch.setenv("CVX_WORKSPACE", str(ws))
    monkeypatch.delenv("CVX_DATASET", raising=False)
    at = open_app("pages/4_compare.py", timeout=TIMEOUT)
    assert not at.exception, [e.stack_trace for e in at.exception]
    return at


def _specs(at: AppTest) -> dict[str, dict]:
    out = {}
    for chart in at.get("plotly_chart"):
        out[chart.proto.id or str(len(out))] = json.loads(chart.proto.spec)
    return out


def _cli_json(run_dir: Path, data: Path, truth: Path | None, capsys) -> dict:
    from cvx_core.cli import main

    capsys.readouterr()
    args = ["compare", str(run_dir), str(data), "--format", "json"] + (["--truth", str(truth)] if truth else [])
    assert main(args) == 0
    return json.loads(capsys.readouterr().out)


def test_the_page_and_the_cli_show_the_same_numbers_for_the_same_run(monkeypatch, open_app, trained_workspace, capsys):
    from cvx_app import escape
    from cvx_core.learn.compare import DEFAULT_PERMUTATIONS

    doc = _cli_json(trained_workspace / "runs" / "run-sample", SAMPLE, TRUTH, capsys)
    assert doc["permutations"] == DEFAULT_PERMUTATIONS
    at = _compare(monkeypatch, open_app, trained_workspace)
    shown = {m.label: m.value for m in at.metric}
    notes = {m.label: m.proto.delta for m in at.metric}

    def num(x, spec):
        return "–" if x is None else format(x, spec)

    assert shown["Spearman ρ"] == num(doc["spearman"], ".3f")
    assert shown["Pearson r"] == num(doc["pearson"], ".3f")
    assert shown["Permutation p-value"] == num(doc["p_value"], ".3g")
    assert notes["Permutation p-value"] == f"{doc['permutations']} permutations"
    assert shown["Verdict"] == doc["level"]
    assert notes["Verdict"] == ("significant" if doc["significant"] else "not significant")
    assert [m.label for m in at.metric if "overlap" in m.label] == [f"Top-{t['k']} overlap (Jaccard)" for t in doc["top_k"]]
    for t in doc["top_k"]:
        assert shown[f"Top-{t['k']} overlap (Jaccard)"] == num(t["overlap"], ".2f")
        assert notes[f"Top-{t['k']} overlap (Jaccard)"] == f"chance {t['chance']:.2f}"
    n = doc["n_planted"]
    assert shown["Planted dims"] == str(n)
    assert shown[f"Planted share of alpha's top {n}"] == num(doc["planted_share"], ".2f")
    assert shown["Spearman(alpha, planted)"] == num(doc["planted_spearman"], ".3f")
    assert shown["Spearman(attribution, planted)"] == num(doc["attribution_planted_spearman"], ".3f")
    assert at.info[0].value == escape.escape_markdown(doc["verdict"])
    caption = " ".join(c.value for c in at.caption)
    assert escape.escape_markdown(doc["reason"]) in caption and "p < 0.05" in caption.replace("\\", "")
    assert "nan" not in " ".join(shown.values()).lower()


def test_compare_shows_aligned_bars_scatter_and_planted_marks(monkeypatch, open_app, trained_workspace, sample_set, sample_truth):
    from cvx_core.learn.compare import learned_alpha
    from cvx_core.learn.runs import load_run

    at = _compare(monkeypatch, open_app, trained_workspace)
    alpha = learned_alpha(load_run(trained_workspace / "runs" / "run-sample").model)
    assert "planted" in at.dataframe[0].value.columns
    bars, scatter = list(_specs(at).values())
    panels: dict[str, list] = {"x": [], "x2": []}
    colours: dict[str, dict[str, str]] = {"x": {}, "x2": {}}
    for trace in bars["data"]:
        axis = trace.get("xaxis", "x")
        panels[axis] += list(trace["x"])
        colours[axis].update({x: trace["marker"]["color"] for x in trace["x"]})
    order = bars["layout"]["xaxis"]["categoryarray"]
    assert order == bars["layout"]["xaxis2"]["categoryarray"] and len(order) == 30  # same dims, same order
    assert sorted(panels["x"]) == sorted(panels["x2"]) == sorted(order)
    assert colours["x"] == colours["x2"]  # one colour per dimension in both panels
    planted_marked = {x.rstrip("★") for x in order if x.endswith("★")}
    top30 = {str(d) for d in sorted(range(alpha.size), key=lambda d: (-alpha[d], d))[:30]}
    assert planted_marked == top30 & {str(d) for d in sample_truth["planted_dims"]}
    assert [t["name"] for t in bars["data"] if t.get("showlegend", True)] == ["dimension", "planted dimension"]
    names = [t["name"] for t in scatter["data"]]
    assert names == ["dimension", "planted dimension"]
    assert at.slider(key="compare_top").max == 80


def test_top_dimension_slider_and_ordering_change_the_bars(monkeypatch, open_app, trained_workspace):
    at = _compare(monkeypatch, open_app, trained_workspace)
    at.slider(key="compare_top").set_value(10)
    at.radio(key="compare_order").set_value("attribution").run()
    assert not at.exception
    bars = list(_specs(at).values())[0]
    assert len(bars["layout"]["xaxis"]["categoryarray"]) == 10
    table = at.dataframe[0].value
    assert list(table["attribution"]) == sorted(table["attribution"], reverse=True)


def test_compare_without_runs_points_to_train(monkeypatch, open_app, tmp_path):
    at = _compare(monkeypatch, open_app, tmp_path / "empty")
    assert "No trained run yet" in at.info[0].value


def test_small_d_run_bounds_the_slider_and_reports_an_overlap_below_d(monkeypatch, open_app, tmp_path, small_planted):
    from cvx_core.data.io import save_trajectories
    from cvx_core.learn.config import TrainConfig
    from cvx_core.learn.runs import atomic_write_json
    from cvx_core.learn.trainer import train

    ts = small_planted[0]  # D = 32
    ws = tmp_path / "ws"
    save_trajectories(ts, ws / "datasets" / "small.parquet")
    extra = {"head": "linear", "bootstrap": 0} if "head" in TrainConfig.__dataclass_fields__ else {}
    run_dir = ws / "runs" / "small-run"
    train(ts, TrainConfig(epochs=1, device="cpu", **extra), run_dir=run_dir)
    atomic_write_json(run_dir / "app.json", {"dataset": "small", "digest": ts.digest()})
    at = _compare(monkeypatch, open_app, ws)
    slider = at.slider(key="compare_top")
    assert slider.max == 32 and slider.value <= 32
    labels = [m.label for m in at.metric if "overlap" in m.label]
    assert labels == ["Top-8 overlap (Jaccard)"]  # k = D/4, not k = D (which is always 1)
    # no truth file for this dataset: no planted metrics, no planted column
    assert not [m.label for m in at.metric if "lanted" in m.label]
    assert "planted" not in at.dataframe[0].value.columns


def test_a_run_whose_attention_never_moved_shows_dashes_not_nan(monkeypatch, open_app, tmp_path, sample_set):
    from cvx_core.learn.config import TrainConfig
    from cvx_core.learn.runs import atomic_write_json
    from cvx_core.learn.trainer import train

    ws = tmp_path / "ws"
    run_dir = ws / "runs" / "run-flat"
    train(sample_set, TrainConfig(epochs=1, device="cpu", max_len=32, head="linear", bootstrap=0,
                                  learn_attention=False), run_dir=run_dir)
    atomic_write_json(run_dir / "app.json", {"dataset": "sample", "digest": sample_set.digest()})
    at = _compare(monkeypatch, open_app, ws)
    assert "flat" in at.info[0].value
    shown = {m.label: m.value for m in at.metric}
    assert shown["Verdict"] == "none"
    for label in ("Spearman ρ", "Pearson r", "Permutation p-value", "Top-10 overlap (Jaccard)"):
        assert shown[label] == "–", (label, shown[label])
    _, scatter = list(_specs(at).values())
    assert "nan" not in scatter["layout"]["title"]["text"]


def test_runs_of_the_current_dataset_are_listed_first_with_a_switch_for_all(monkeypatch, open_app, trained_workspace, tmp_path,
                                                                             small_planted):
    import shutil

    from cvx_core.learn.runs import atomic_write_json

    ws = tmp_path / "ws"
    shutil.copytree(trained_workspace, ws)
    other = ws / "runs" / "run-other"
    shutil.copytree(ws / "runs" / "run-sample", other)
    atomic_write_json(other / "app.json", {"dataset": "elsewhere", "digest": "0"})
    at = _compare(monkeypatch, open_app, ws)
    assert at.selectbox(key="compare_run").options == ["run-sample"]
    at.toggle(key="compare_all_runs").set_value(True).run()
    assert not at.exception
    options = at.selectbox(key="compare_run").options
    assert options[0] == "run-sample" and len(options) == 2 and options[1].startswith("run-other · on ")
