"""Exports: every download builder gives bytes that load back into the same values, CSV
cells never run as formulas, and change points carry their narratives and words."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvx_app import exports
from cvx_app.escape import neutralise_csv


def test_features_parquet_and_csv_load_back_to_the_extract_table(small_planted):
    ts = small_planted[0]
    frame = exports.features_frame(ts)
    from cvx_core.features.analytic import AnalyticBackend, feature_names

    assert list(frame.columns[2:]) == feature_names(ts.dim)
    first = ts[ts.user_ids[0]]
    np.testing.assert_allclose(frame.iloc[0, 2:].to_numpy(float),
                               AnalyticBackend.extract_all(first.embeddings, first.timestamps))
    back = pd.read_parquet(io.BytesIO(exports.features_parquet(frame)))
    pd.testing.assert_frame_equal(back, frame)
    csv = pd.read_csv(io.BytesIO(exports.features_csv(frame)))
    np.testing.assert_allclose(csv.iloc[:, 2:].to_numpy(float), frame.iloc[:, 2:].to_numpy(float), rtol=1e-12)
    assert list(csv["user_id"].astype(str)) == list(frame["user_id"])


def test_changepoints_carry_narratives_and_the_words_that_rose_and_fell():
    from cvx_core.analysis.batch import analyze_set
    from cvx_core.data.trajectory import Trajectory, TrajectorySet

    rng = np.random.default_rng(0)
    emb = np.vstack([rng.normal(0, 0.05, (12, 4)), rng.normal(3, 0.05, (12, 4))])
    texts = ["quiet garden walk"] * 12 + ["=SUM(A1) angry storm storm"] * 12
    when = np.datetime64("2024-01-01") + np.arange(24) * np.timedelta64(1, "D")
    tr = Trajectory(user_id="=u1", datetimes=when, embeddings=emb, label=1, texts=texts)
    ts = TrajectorySet([tr])
    frame = exports.changepoints_frame(ts, analyze_set(ts))
    assert len(frame) >= 1
    row = frame.iloc[0]
    assert row["index"] == 12 and "the posts changed" in row["narrative"]
    assert row["text_before"] == "quiet garden walk" and row["text_at"].startswith("=SUM")
    assert row["words_rose"].split(", ")[0] == "storm" and "garden" in row["words_fell"].split(", ")  # explain_changepoints terms
    csv = pd.read_csv(io.BytesIO(exports.changepoints_csv(frame)))
    assert csv["user_id"].iloc[0] == "'=u1" and csv["text_at"].iloc[0].startswith("'=SUM")  # inert in a spreadsheet
    records = json.loads(exports.changepoints_json(frame))
    assert records[0]["user_id"] == "=u1" and records[0]["narrative"] == row["narrative"]  # JSON keeps the value


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=12), min_size=1, max_size=8))
def test_no_csv_text_cell_starts_with_a_formula_character(cells):
    out = neutralise_csv(pd.DataFrame({"c": cells}))
    for before, after in zip(cells, out["c"]):
        if before[:1] in ("=", "+", "-", "@", "\t", "\r"):
            assert after == "'" + before
        else:
            assert after == before


def test_metrics_csv_flattens_nested_metrics():
    metrics = {"test_auc": 0.75, "roc": {"fpr": [0, 1], "tpr": [0, 1]}, "warnings": ["-few users"]}
    rows = pd.read_csv(io.BytesIO(exports.metrics_csv(metrics, run="r1")))
    by = dict(zip(rows["metric"], rows["value"]))
    assert float(by["test_auc"]) == 0.75 and json.loads(by["roc.fpr"]) == [0, 1]
    assert json.loads(exports.metrics_json(metrics)) == metrics


def test_weights_safetensors_hold_the_checkpoint_and_the_config(tmp_path):
    import torch
    from safetensors.torch import load
    from safetensors import safe_open

    from cvx_core.learn.runs import atomic_write_json, save_weights

    state = {"a.weight": torch.randn(3, 2), "a.bias": torch.zeros(3), "n": torch.tensor(4)}
    save_weights(tmp_path, state)
    atomic_write_json(tmp_path / "config.json", {"train_config": {}, "model_spec": {"dim": 2}})
    blob = exports.weights_safetensors(tmp_path)
    back = load(blob)
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    path = tmp_path / "w.safetensors"
    path.write_bytes(blob)
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    assert json.loads(meta["cvx_config"])["model_spec"] == {"dim": 2}


def test_figure_png_is_a_png_when_kaleido_and_chromium_are_present():
    ok, why = exports.png_available()
    if not ok:
        pytest.skip(why)
    import plotly.graph_objects as go

    png = exports.figure_png(go.Figure(go.Bar(x=[1, 2], y=[3, 4])), width=300, height=200, scale=1)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
