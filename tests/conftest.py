"""Shared fixtures: the shipped sample, small planted sets, and an isolated workspace."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

# CI (CI=true) replays the same examples every run, so a landing is never decided by a new
# random draw; local runs keep exploring new examples (and keep failures in .hypothesis/).
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data" / "sample.parquet"
TRUTH = ROOT / "sample_data" / "truth.json"


@pytest.fixture(scope="session")
def sample_set():
    from cvx_core.data.io import load_trajectories

    return load_trajectories(SAMPLE)


@pytest.fixture(scope="session")
def sample_truth() -> dict:
    return json.loads(TRUTH.read_text())


@pytest.fixture
def app_workspace(tmp_path, monkeypatch) -> Path:
    """An empty app workspace (``CVX_WORKSPACE``) with no preselected dataset (``CVX_DATASET``)
    and no UMAP warm-up thread (``CVX_WARM_UMAP=0``)."""
    ws = tmp_path / "ws"
    monkeypatch.setenv("CVX_WORKSPACE", str(ws))
    monkeypatch.delenv("CVX_DATASET", raising=False)
    monkeypatch.setenv("CVX_WARM_UMAP", "0")  # no numba compile thread inside the test process
    return ws


@pytest.fixture
def open_app():
    """``open_app(page=None, *, timeout=120)``: an AppTest of ``app.py`` after its first run,
    switched to ``page`` (e.g. ``"pages/2_explore.py"``) when one is given."""
    from streamlit.testing.v1 import AppTest

    def _open(page: str | None = None, *, timeout: float = 120):
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout).run()
        if page is not None:
            at.switch_page(page).run()
        return at

    return _open


@pytest.fixture(scope="session")
def small_planted():
    """A small planted set (40 users, D=32) and its truth, for fast tests."""
    from cvx_core.data.synthetic import PlantedConfig, make_planted_trajectory_set

    cfg = PlantedConfig(n_users=40, dim=32, n_planted=4, mean_posts=15, max_posts=40)
    return make_planted_trajectory_set(config=cfg, seed=7, name="small")


# ---- `slow`: every test that trains, or takes over ~5 s on an idle 2-core machine ----------
# Marked here, in one list, rather than by decorators spread over the test files of every
# room: ``-m "not slow"`` (``make test-fast``) leaves them out, ``make test`` runs them.
# ``tests/test_markers.py`` fails when a name below no longer exists; the guard further down
# fails a test-fast run on a test that trains without being listed. "*": the whole file.
SLOW_TESTS: dict[str, tuple[str, ...]] = {
    "tests/analysis/test_changepoints.py": (
        "test_shuffled_real_text_histories_get_a_change_point_at_about_the_stated_rate",
    ),
    "tests/app/test_set_analysis_jobs.py": (
        "test_a_file_that_is_not_a_finished_analysis_of_this_data_is_recomputed",
        "test_large_dataset_is_streamed_and_small_one_analysed_in_memory",
    ),
    "tests/app/test_app_compare.py": (
        "test_a_run_whose_attention_never_moved_shows_dashes_not_nan",
        "test_small_d_run_bounds_the_slider_and_reports_an_overlap_below_d",
        "test_the_page_and_the_cli_show_the_same_numbers_for_the_same_run",
    ),
    "tests/app/test_app_explore.py": (
        "test_colour_by_the_latest_runs_prediction_score",
    ),
    "tests/app/test_app_explore_streamed.py": (
        "test_explore_streams_a_large_dataset_shows_it_and_matches_the_in_memory_table",
    ),
    "tests/app/test_app_train.py": (
        "test_one_epoch_run_shows_progress_then_metrics_roc_and_confusion",
        "test_stop_button_ends_training_and_keeps_the_best_checkpoint",
        "test_training_twice_shows_the_second_run_and_links_compare_to_it",
    ),
    "tests/hostile/test_hostile_cli.py": (
        "test_bad_values_exit_2_without_a_traceback_in_a_real_process",
        "test_forecast_prints_valid_json_for_a_good_time",
        "test_train_on_a_full_disk_says_disk_full_in_one_line",
    ),
    "tests/hostile/test_hostile_training_overflow.py": (  # enters Trainer.run, which refuses before fitting
        "test_cli_train_refuses_in_one_line_naming_user_and_feature_and_writes_no_run",
    ),
    "tests/learn/test_early.py": (
        "test_trained_model_detects_better_with_more_posts_and_reports_erde",
    ),
    "tests/learn/test_encoders.py": (
        "test_gradients_reach_minilm_through_temporal_features_and_frozen_gets_none",
        "test_trainer_fine_tunes_the_encoder_end_to_end_unless_frozen",
    ),
    "tests/learn/test_finetune.py": (
        "test_cli_trains_from_a_text_only_table_and_prints_the_memory_estimate",
        "test_frozen_encoder_embeds_each_distinct_post_once_over_all_epochs",
        "test_gradient_cache_reaches_minilm_with_the_same_gradient_as_a_direct_pass",
        "test_step_progress_reports_gradient_norms",
    ),
    "tests/learn/test_forecast.py": (
        "test_cli_forecast_trains_saves_and_reloads_a_forecaster",
        "test_forecast_before_the_last_post_is_refused",
    ),
    "tests/learn/test_runs.py": (
        "test_crash_mid_training_leaves_last_good_checkpoint_and_no_metrics",
        "test_finished_run_folder_has_weights_config_data_and_metrics",
        "test_run_stopped_after_epoch_one_keeps_a_loadable_checkpoint",
        "test_training_again_in_the_same_folder_removes_stale_results",
    ),
    "tests/learn/test_sklearn.py": (
        "test_classifier_fit_does_only_the_fit_no_baseline_bootstrap_or_early_detection",
        "test_classifier_fits_sets_with_any_labels_and_predicts_them",
        "test_classifier_in_grid_search_over_the_head_strength",
        "test_classifier_passes_the_estimator_checks_that_apply",
    ),
    "tests/test_cli_train_backend.py": (
        "test_train_on_texts_embeds_them_with_the_chosen_backend_and_records_it",
    ),
    "tests/learn/test_splits.py": (
        "test_cli_train_group_column_keeps_groups_apart_and_names_a_missing_column",
    ),
    "tests/learn/test_trainer.py": (
        "test_a_given_test_set_is_scored_and_validation_comes_from_the_training_data",
        "test_auto_head_is_not_below_the_mean_embedding_baseline_when_the_signal_is_the_mean",
        "test_callbacks_see_steps_and_epochs_and_should_stop_ends_training_early",
        "test_classifier_features_at_init_equal_the_analytic_path_in_float64",
        "test_cross_validation_reports_mean_and_sd_of_model_and_baseline",
        "test_frozen_feature_parameters_stay_at_their_initial_values",
        "test_imbalanced_training_finds_the_minority",
        "test_linear_head_as_asked_keeps_feature_parts_trainable",
        "test_model_beats_baseline_and_attention_ranks_planted_dims_first",
        "test_stop_before_the_first_epoch_ends_still_returns_a_usable_model",
    ),
    "tests/scale/test_ray_engine.py": (
        "*",
    ),
    "tests/test_cli.py": (
        "test_train_with_a_test_set_cv_and_head_then_evaluate_early",
        "test_train_writes_a_loadable_run_with_metrics_and_comparison",
    ),
    "tests/test_cli_compare.py": (
        "test_json_format_prints_one_object_with_the_cores_numbers",
    ),
    "tests/test_markers.py": (
        "test_a_test_fast_run_fails_a_test_that_trains_without_being_marked_slow",
    ),
}
# tests that use one of these fixtures are slow too: the fixture trains (once per module)
SLOW_FIXTURES: dict[str, tuple[str, ...]] = {
    "tests/app/test_app_compare.py": ("trained_workspace",),
    "tests/app/test_workspace_faults.py": ("killed_run",),
    "tests/hostile/test_hostile_configs.py": ("trained",),
    "tests/hostile/test_hostile_sweep.py": ("env",),
    "tests/learn/test_finetune.py": ("finetuned_run", "frozen_run"),
    "tests/learn/test_forecast.py": ("fitted",),
    "tests/learn/test_runs.py": ("finished",),
    "tests/learn/test_trainer.py": ("trained",),
    "tests/test_cli_compare.py": ("trained",),
}


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    for item in items:
        file = Path(str(item.fspath)).resolve()
        if not file.is_relative_to(ROOT):
            continue
        path = file.relative_to(ROOT).as_posix()
        name = item.originalname or item.name
        listed = SLOW_TESTS.get(path, ())
        fixtures = set(SLOW_FIXTURES.get(path, ())) & set(getattr(item, "fixturenames", ()))
        if ("*" in listed or name in listed or fixtures) and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.slow)


# ---- `slow` covers every training ---------------------------------------------------------
# A run that leaves out the slow tests (``make test-fast``: ``-m "not e2e and not slow"``)
# must not train: there, a test that is not marked ``slow`` and starts a training loop
# (``Trainer.run``, which ``train``, ``cross_validate``, ``TemporalClassifier.fit`` and DDP
# go through, or ``fit_forecaster``) fails at once, naming itself. With
# ``CVX_RECORD_TRAINING=FILE`` such tests are listed in FILE instead (to find them).
_RUNNING: list[Any] = []  # the test item being set up, run or torn down


def _slow_left_out(config: Any) -> bool:
    return "not slow" in " ".join((config.getoption("markexpr") or "").split())


def _guarded(fn: Any, what: str) -> Any:
    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        item = _RUNNING[-1] if _RUNNING else None
        if item is not None and item.get_closest_marker("slow") is None:
            record = os.environ.get("CVX_RECORD_TRAINING")
            if record:
                with open(record, "a", encoding="utf-8") as fh:
                    fh.write(f"{item.nodeid}\t{what}\n")
            else:
                pytest.fail(f"{item.nodeid} trains ({what}) but is not marked @pytest.mark.slow; mark it "
                            "slow (make test-fast leaves out every training)", pytrace=False)
        return fn(*args, **kwargs)

    guarded.__cvx_guarded__ = True  # type: ignore[attr-defined]
    return guarded


def pytest_configure(config: Any) -> None:
    if not (_slow_left_out(config) or os.environ.get("CVX_RECORD_TRAINING")):
        return
    from cvx_core.learn import forecast, trainer

    if not getattr(trainer.Trainer.run, "__cvx_guarded__", False):
        trainer.Trainer.run = _guarded(trainer.Trainer.run, "Trainer.run")
        forecast.fit_forecaster = _guarded(forecast.fit_forecaster, "fit_forecaster")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: Any, nextitem: Any) -> Any:
    _RUNNING.append(item)
    try:
        yield
    finally:
        _RUNNING.pop()
