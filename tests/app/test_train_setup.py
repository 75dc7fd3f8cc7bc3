"""The Train page's set-up and run summaries without a browser: the form's values make the
TrainConfig the page trains with (scales auto by default, explicit on request), the split
advice and small-data warnings come from cvx_core.learn.metrics, and a run's own time scales
are read back from its folder."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("streamlit")

from cvx_app import run_results, train_setup  # noqa: E402
from cvx_core.learn.metrics import MIN_SPLIT_USERS, MIN_TEST_USERS  # noqa: E402

VALUES = {"evaluation": "split", "folds": 0, "scale_mode": "auto", "scales": [], "silence_temp": 1.0, "temp": 0.1,
          "seed": 3, "epochs": 2, "lr": 0.01, "batch": 8, "device": "cpu", "learn_temp": True,
          "learn_attention": True, "learn_scales": False, "patience": 4, "head": "linear", "ode": 0}


def test_auto_scales_give_the_library_default_and_explicit_scales_are_sorted():
    auto = train_setup.build_config(VALUES)
    assert auto.features.scales == "auto" and auto.features.time_unit == "auto" and auto.cv == 0
    assert (auto.seed, auto.head, auto.learn_scales) == (3, "linear", False)
    explicit = train_setup.build_config({**VALUES, "scale_mode": "explicit", "scales": [30.0, 1.0],
                                         "evaluation": "cv", "folds": 4, "group": "author"})
    assert explicit.features.scales == (1.0, 30.0) and explicit.cv == 4 and explicit.group_column == "author"
    with pytest.raises(ValueError, match="at least one scale"):
        train_setup.build_config({**VALUES, "scale_mode": "explicit", "scales": []})


def test_split_advice_uses_the_librarys_threshold():
    assert "fewer than" in train_setup.planned_split_text(MIN_SPLIT_USERS - 1, "split")
    assert train_setup.planned_split_text(MIN_SPLIT_USERS, "split") is None
    assert train_setup.planned_split_text(10, "cv") is None


def test_old_metrics_without_warnings_get_the_librarys_small_data_sentences():
    conf = {"confusion": [[3, 1], [1, 3]], "classes": [0, 1]}
    got = run_results.run_warnings(conf)
    assert any("has 8 users" in w for w in got) and any("fewer than 10" in w for w in got)
    only_count = run_results.run_warnings({"n_test": MIN_TEST_USERS - 1})  # no classes known: the count only
    assert len(only_count) == 1 and f"has {MIN_TEST_USERS - 1} users" in only_count[0]
    assert run_results.run_warnings({"n_test": MIN_TEST_USERS}) == []
    assert run_results.run_warnings({"warnings": ["kept as written"]}) == ["kept as written"]


def test_a_runs_time_scales_are_read_from_its_folder(tmp_path):
    features = {"scales": [0.5, 2.0], "time_unit": "hours", "silence_gap": 10.0}
    (tmp_path / "config.json").write_text(json.dumps({"train_config": {"features": features}, "model_spec": {}}))
    assert run_results.run_scales_text(tmp_path) == ("Time scales of this run: 0.5, 2 hours, silence gap 10 hours "
                                                     "(given explicitly).", None)
    (tmp_path / "data.json").write_text(json.dumps({"scales": {"reason": "median gap 1 hours"}}))
    text, reason = run_results.run_scales_text(tmp_path)
    assert text.endswith("chosen from the training users' gaps between posts.") and reason == "median gap 1 hours"
    (tmp_path / "config.json").write_text(json.dumps({"train_config": {}, "model_spec": {}}))
    assert run_results.run_scales_text(tmp_path) is None
