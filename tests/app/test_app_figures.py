"""The app's figure builders: right traces, aligned axes, and no raw user text in markup."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("plotly")
from pathlib import Path  # noqa: E402

from cvx_app import figures, run_results  # noqa: E402


def _proj(uids: list[str]) -> pd.DataFrame:
    rows = []
    for k, u in enumerate(uids):
        for p in range(4):
            rows.append({"x": k + 0.1 * p, "y": p, "user_id": u, "user_id_safe": html.escape(u), "post": p,
                         "label": str(k % 2), "when": f"2024-01-0{p + 1}", "days_since_start": float(p)})
    return pd.DataFrame(rows)


def test_projection_draws_one_cloud_trace_per_label_then_paths_and_change_points():
    proj = _proj(["a", "b"])
    fig = figures.projection_figure(proj, method="PCA", colour_by="label", paths=["a"],
                                    changepoints={"a": [2]}, escape=html.escape)
    names = [t.name for t in fig.data]
    assert names == ["label 0", "label 1", "path a", "change points a"]
    assert all(t.type == "scattergl" for t in fig.data)
    cp = fig.data[-1]
    assert list(cp.x) == [0.2] and cp.marker.symbol == "x"


def test_projection_never_puts_a_raw_hostile_user_id_into_trace_names_or_hover():
    evil = "<img src=x onerror=alert(1)>"
    fig = figures.projection_figure(_proj([evil]), method="PCA", colour_by="time", paths=[evil],
                                    changepoints={evil: [1]}, escape=html.escape)
    text = fig.to_json()
    assert "<img" not in text and "&lt;img" in text


def test_timeline_marks_change_points_and_silences_on_every_panel():
    when = pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-20", "2024-01-21"])
    tl = type("TL", (), {})()
    tl.steps = pd.DataFrame({"when": when[1:], "velocity_norm": [1.0, 0.1, 2.0], "cosine_distance": [0.1, 0.2, 0.3]})
    tl.posts = pd.DataFrame({"when": when, "drift": [0, 1, 2, 3.0], "change_probability": [0, 0.1, 0.9, 0.2]})
    tl.silences = [(when[1], when[2])]
    tl.change_points = [(2, when[2])]
    fig = figures.timeline_figure(tl)
    assert len(fig.data) == 4
    shapes = fig.layout.shapes
    assert sum(s.type == "rect" for s in shapes) == 4 and sum(s.type == "line" for s in shapes) == 4


def test_confusion_and_roc_figures_follow_the_metrics():
    metrics = {"test_auc": 0.75, "confusion": [[3, 1], [0, 4]], "classes": [0, 1],
               "roc": {"fpr": [0, 0.25, 1], "tpr": [0, 1, 1]}}
    conf = figures.confusion_figure(metrics)
    np.testing.assert_array_equal(np.array(conf.data[0].z), [[3, 1], [0, 4]])
    curves = run_results.roc_curves(metrics, Path("."), None, stamp=0)  # the binary curve of metrics.json
    roc = figures.roc_figure(metrics, curves)
    assert [t.name for t in roc.data] == ["model", "chance"] and "0.750" in roc.layout.title.text
    assert list(conf.data[0].x) == ["class 0", "class 1"] and conf.layout.xaxis.title.text == "predicted"


def test_multiclass_roc_draws_one_curve_per_class_with_its_auc_in_the_legend():
    metrics = {"test_auc": 0.8, "classes": [0, 1, 2], "roc": None}
    curves = [run_results.RocCurve(f"class {c} vs rest", (0.0, 0.5, 1.0), (0.0, 0.9, 1.0), 0.7 + c / 10)
              for c in range(3)]
    roc = figures.roc_figure(metrics, curves)
    assert [t.name for t in roc.data] == ["class 0 vs rest (AUC 0.700)", "class 1 vs rest (AUC 0.800)",
                                          "class 2 vs rest (AUC 0.900)", "chance"]
    assert "macro AUC 0.800" in roc.layout.title.text
    assert len({t.line.color for t in roc.data[:3]}) == 3


def test_roc_without_curves_says_why_in_its_title():
    roc = figures.roc_figure({"test_auc": 0.8, "classes": [0, 1, 2], "roc": None}, ())
    assert [t.name for t in roc.data] == ["chance"] and "no curve" in roc.layout.title.text


def test_attention_bars_share_one_category_axis_in_the_given_order():
    top = pd.DataFrame({"dimension": [7, 3, 9], "alpha": [1.3, 1.2, 0.9], "attribution": [0.1, 0.0, 0.2],
                        "planted": [True, False, True]})
    fig = figures.attention_bars(top, order_by="learned alpha")
    assert list(fig.layout.xaxis.categoryarray) == list(fig.layout.xaxis2.categoryarray) == ["7★", "3", "9★"]
    by_panel: dict[str, dict[str, str]] = {"x": {}, "x2": {}}
    alpha = {}
    for trace in fig.data:
        for x, y in zip(trace.x, trace.y):
            by_panel[trace.xaxis][x] = trace.marker.color
            if trace.xaxis == "x":
                alpha[x] = y + 1.0
    assert by_panel["x"] == by_panel["x2"]  # a dimension has one colour in both panels
    assert by_panel["x"]["7★"] == figures.PLANTED_COLOUR and by_panel["x"]["3"] == figures.DIM_COLOUR
    np.testing.assert_allclose([alpha[k] for k in ["7★", "3", "9★"]], [1.3, 1.2, 0.9])
    assert [t.name for t in fig.data if t.showlegend is not False] == ["dimension", "planted dimension"]
