"""AppTest checks of the Compare page: learned attention vs analytic attribution of a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

TIMEOUT = 120


@pytest.fixture(scope="module")
def trained_workspace(tmp_path_factory, sample_set) -> Path:
    """A workspace holding one short run trained on the shipped sample (as the app records it)."""
    from cvx_core.learn.config import TrainConfig
    from cvx_core.learn.runs import atomic_write_json
    from cvx_core.learn.trainer import train

    ws = tmp_path_factory.mktemp("compare") / "ws"
    run_dir = ws / "runs" / "run-sample"
    train(sample_set, TrainConfig(epochs=1, device="cpu", max_len=64), run_dir=run_dir)
    atomic_write_json(run_dir / "app.json", {"dataset": "sample", "digest": sample_set.digest()})
    return ws


def _compare(monkeypatch, open_app, ws: Path) -> AppTest:
    monkeypatch.setenv("CVX_WORKSPACE", str(ws))
    monkeypatch.delenv("CVX_DATASET", raising=False)
    at = open_app("pages/4_compare.py", timeout=TIMEOUT)
    assert not at.exception, at.exception
    return at


def _specs(at: AppTest) -> dict[str, dict]:
    out = {}
    for chart in at.get("plotly_chart"):
        out[chart.proto.id or str(len(out))] = json.loads(chart.proto.spec)
    return out


def test_compare_shows_aligned_bars_scatter_statistics_and_verdict(monkeypatch, open_app, trained_workspace, sample_set, sample_truth):
    from cvx_core.learn.compare import compare_attention
    from cvx_core.learn.runs import load_run

    at = _compare(monkeypatch, open_app, trained_workspace)
    run = load_run(trained_workspace / "runs" / "run-sample")
    expected = compare_attention(run.model, sample_set, config=run.config.features,
                                 planted_dims=sample_truth["planted_dims"])
    shown = {m.label: m.value for m in at.metric}
    assert shown["Spearman ρ"] == f"{expected.spearman:.3f}"
    assert shown["Pearson r"] == f"{expected.pearson:.3f}"
    assert shown["Top-10 overlap (Jaccard)"] == f"{expected.topk_jaccard[10]:.2f}"
    assert shown["Planted dims"] == str(len(sample_truth["planted_dims"]))
    assert at.info[0].value == expected.verdict

    bars, scatter = list(_specs(at).values())
    alpha_bars, attribution_bars = bars["data"]
    assert alpha_bars["x"] == attribution_bars["x"]  # the same dimensions, in the same order
    assert len(alpha_bars["x"]) == 30
    planted_marked = {x.rstrip("★") for x in alpha_bars["x"] if x.endswith("★")}
    top30 = {str(d) for d in expected.alpha.argsort()[::-1][:30]}
    assert planted_marked == top30 & {str(d) for d in sample_truth["planted_dims"]}
    names = [t["name"] for t in scatter["data"]]
    assert names == ["dimension", "planted dimension"]


def test_top_dimension_slider_and_ordering_change_the_bars(monkeypatch, open_app, trained_workspace):
    at = _compare(monkeypatch, open_app, trained_workspace)
    at.slider(key="compare_top").set_value(10)
    at.radio(key="compare_order").set_value("attribution").run()
    assert not at.exception
    bars = list(_specs(at).values())[0]
    assert len(bars["data"][0]["x"]) == 10
    table = at.dataframe[0].value
    assert list(table["attribution"]) == sorted(table["attribution"], reverse=True)


def test_compare_without_runs_points_to_train(monkeypatch, open_app, tmp_path):
    at = _compare(monkeypatch, open_app, tmp_path / "empty")
    assert "No trained run yet" in at.info[0].value
