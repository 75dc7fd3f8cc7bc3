"""Run management (cvx_app.run_store) and the Compare page's top-k overlap (cvx_app.overlap):
names, rename, notes, delete, one status per run, and an overlap figure that is not
trivially 1 with its chance level."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from itertools import combinations
from math import comb

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvx_app import overlap
from cvx_app import run_store


def _fake_run(ws, name: str, metrics=None, *, config=True):
    d = ws / "runs" / name
    d.mkdir(parents=True)
    if config:
        (d / "config.json").write_text(json.dumps({"train_config": {}, "model_spec": {}}))
    if metrics is not None:
        (d / "metrics.json").write_text(json.dumps(metrics))
    return d


GOOD = {"test_auc": 0.8, "baseline_auc": 0.7, "test_f1": 0.6, "confusion": [[3, 1], [1, 3]], "epochs": 2}


def test_default_name_is_dataset_head_and_utc_time():
    from cvx_core.learn.config import TrainConfig

    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    name = run_store.default_run_name("my data!", TrainConfig(hidden=0, head="linear") if "head" in
                                     TrainConfig.__dataclass_fields__ else TrainConfig(hidden=0), now=when)
    assert name == "my_data-linear-20260102-030405"
    assert run_store.folder_name("  ../evil name ", "d", TrainConfig()) == "evil_name"


def test_rename_notes_and_delete(app_workspace):
    _fake_run(app_workspace, "r1", GOOD)
    (app_workspace / "runs" / "r1" / "app.json").write_text(json.dumps({"dataset": "sample"}))
    assert run_store.rename_run("r1", "  my   best run ") == "my best run"
    run_store.set_notes("r1", "=1+1 plain text")
    rec = json.loads((app_workspace / "runs" / "r1" / "app.json").read_text())
    assert rec == {"dataset": "sample", "title": "my best run", "notes": "=1+1 plain text"}
    with pytest.raises(ValueError):
        run_store.rename_run("r1", "   ")
    with pytest.raises(KeyError):
        run_store.rename_run("../r1", "x")
    with pytest.raises(ValueError, match="training"):
        run_store.delete_run("r1", running={"r1"})
    run_store.delete_run("r1")
    assert not (app_workspace / "runs" / "r1").exists()


def test_each_run_gets_one_honest_status(app_workspace):
    _fake_run(app_workspace, "done", GOOD)
    _fake_run(app_workspace, "stopped", {**GOOD, "interrupted": True})
    _fake_run(app_workspace, "null", None)
    (app_workspace / "runs" / "null" / "metrics.json").write_text("null")
    _fake_run(app_workspace, "text", None)
    (app_workspace / "runs" / "text" / "metrics.json").write_text('{"test_auc": "high"}')
    _fake_run(app_workspace, "cut", None)
    _fake_run(app_workspace, "crashed", None)
    (app_workspace / "runs" / "pending").mkdir()  # the app's folder before the trainer writes
    views = {v.name: v for v in run_store.list_run_views(running={"pending"}, failed={"crashed": "boom"})}
    assert {k: v.status for k, v in views.items()} == {
        "done": "finished", "stopped": "stopped", "null": "damaged", "text": "damaged",
        "cut": "interrupted", "crashed": "failed", "pending": "running",
    }
    assert views["null"].metrics is None and "metrics.json" in views["null"].problem
    assert views["done"].metrics["test_auc"] == 0.8
    assert next(iter(views)) == "pending"  # a running run is listed first


def test_confusion_of_reads_both_forms():
    assert run_store.confusion_of({"confusion": [[1, 2], [3, 4]], "classes": [0, 1]}) == ([[1, 2], [3, 4]], ["0", "1"])
    assert run_store.confusion_of({"confusion": {"classes": ["no", "yes"], "matrix": [[1, 0], [0, 1]]}}) == (
        [[1, 0], [0, 1]], ["no", "yes"])
    assert run_store.confusion_of({"confusion": [[1, 2]]}) is None


# ---- top-k overlap ----------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [2, 5, 16, 32, 39, 40, 200, 384])
def test_overlap_ks_stay_well_below_d(dim):
    ks = overlap.overlap_ks(dim)
    assert ks and all(1 <= k <= max(1, dim // 4) < dim for k in ks)


def test_a_top_k_overlap_at_d_16_is_not_trivially_one():
    rng = np.random.default_rng(0)
    a, b = rng.random(16), rng.random(16)
    (ov,) = overlap.topk_overlaps(a, b)
    assert ov.k == 4 and ov.jaccard < 1.0
    (same,) = overlap.topk_overlaps(a, a)
    assert same.jaccard == 1.0 and same.shared == 4


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 9), st.data())
def test_chance_jaccard_equals_the_average_over_all_pairs_of_subsets(dim, data):
    k = data.draw(st.integers(1, dim))
    subsets = [set(c) for c in combinations(range(dim), k)]
    exact = np.mean([len(a & b) / len(a | b) for a in subsets for b in subsets])
    assert overlap.chance_jaccard(k, dim) == pytest.approx(exact, rel=1e-9)
    assert len(subsets) == comb(dim, k)


def test_a_flat_ranking_has_no_top_k_overlap():
    (ov,) = overlap.topk_overlaps(np.ones(16), np.arange(16.0))
    assert ov.jaccard is None and ov.shared is None and ov.chance > 0  # None, never NaN (cvx_core.learn.compare)
