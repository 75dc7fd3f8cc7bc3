"""AppTest checks of the Train page: a one-epoch run, live progress, stop, and run results."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

TIMEOUT = 120
START = "FormSubmitter:train_form-Start training"


@pytest.fixture
def train_page(app_workspace, open_app, monkeypatch, small_planted) -> tuple[AppTest, Path]:
    from cvx_core.data.io import save_trajectories

    ws = app_workspace
    monkeypatch.setenv("CVX_DATASET", "small")
    save_trajectories(small_planted[0], ws / "datasets" / "small.parquet")
    at = open_app("pages/3_train.py", timeout=TIMEOUT)
    assert not at.exception, at.exception
    assert at.sidebar.selectbox[0].value == "small"
    _fast(at)
    return at, ws


def _fast(at: AppTest) -> None:
    """A linear head when the form offers the choice (the quickest to set up on CPU)."""
    try:
        at.selectbox(key="train_head").set_value("linear")
    except KeyError:
        pass


def _wait_until_finished(at: AppTest, limit_s: float = 90.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        time.sleep(0.3)
        at.run()
        assert not at.exception, at.exception
        if not any((p.text or "").startswith("Training ") for p in at.progress):
            return
    raise AssertionError("training did not finish in time")


def _array(value) -> list:
    """A Plotly JSON array: a plain list, or a typed buffer ``{dtype, bdata, shape}``."""
    import base64

    import numpy as np

    if isinstance(value, dict) and "bdata" in value:
        arr = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        if "shape" in value:
            arr = arr.reshape([int(x) for x in str(value["shape"]).split(",")])
        return arr.tolist()
    return list(value)


def _figure(at: AppTest, key_title: str) -> dict:
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        title = spec["layout"].get("title", {})
        if key_title in (title.get("text", "") if isinstance(title, dict) else str(title)):
            return spec
    raise AssertionError(f"no chart titled {key_title!r}")


def test_one_epoch_run_shows_progress_then_metrics_roc_and_confusion(train_page):
    at, ws = train_page
    at.number_input(key="train_epochs").set_value(1)
    at.selectbox(key="train_device").set_value("cpu")
    at.button(key=START).click().run()
    assert not at.exception
    bars = [p for p in at.progress if (p.text or "").startswith("Training ")]
    assert bars, "a progress bar appears while training"
    assert at.button(key="train_stop")  # the stop button is offered
    _wait_until_finished(at)

    run_dirs = list((ws / "runs").iterdir())
    assert len(run_dirs) == 1
    metrics = json.loads((run_dirs[0] / "metrics.json").read_text())
    assert json.loads((run_dirs[0] / "app.json").read_text())["dataset"] == "small"
    shown = {m.label.removesuffix(" ⚠"): m.value for m in at.metric}  # ⚠: a small test split
    assert shown["Test ROC AUC"] == f"{metrics['test_auc']:.3f}"
    assert shown["Baseline AUC (mean embedding)"] == f"{metrics['baseline_auc']:.3f}"
    assert metrics["epochs"] == 1 and metrics["device"] == "cpu"
    roc = _figure(at, "ROC (test")
    assert _array(roc["data"][0]["x"]) == pytest.approx(metrics["roc"]["fpr"])
    confusion = _figure(at, "Confusion matrix")
    conf = metrics["confusion"]
    assert _array(confusion["data"][0]["z"]) == (conf["matrix"] if isinstance(conf, dict) else conf)
    runs_table = at.dataframe[0].value
    assert list(runs_table["status"]) == ["finished"]
    assert run_dirs[0].name.startswith("small-")  # dataset + head + time
    assert list(runs_table["dataset"]) == ["small"]
    features = json.loads((run_dirs[0] / "config.json").read_text())["train_config"]["features"]
    scales = next(c.value for c in at.caption if c.value.startswith("Time scales of this run"))
    assert ", ".join(f"{s:g}" for s in features["scales"]) in scales.replace("\\", "")  # as resolved by auto
    assert "chosen from the training users" in scales


def test_stop_button_ends_training_and_keeps_the_best_checkpoint(train_page):
    from cvx_core.learn.runs import load_run

    at, ws = train_page
    at.number_input(key="train_epochs").set_value(300)
    at.number_input(key="train_patience").set_value(300)  # only the stop button can end it early
    at.selectbox(key="train_device").set_value("cpu")
    at.button(key=START).click().run()
    at.button(key="train_stop").click().run()
    _wait_until_finished(at)
    run_dir = next((ws / "runs").iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["interrupted"] is True and metrics["epochs"] < 300
    assert json.loads((run_dir / "config.json").read_text())["train_config"]["patience"] == 300
    loaded = load_run(run_dir)  # the kept checkpoint rebuilds the model
    assert loaded.checkpoint["epoch"] >= 0  # 0: the starting (warm-start) weights were the best
    assert any("stopped by the user" in c.value for c in at.caption)
    assert list(at.dataframe[0].value["status"]) == ["stopped"]  # not "finished"


def test_form_offers_the_documented_controls(train_page):
    at, _ = train_page
    for key in ("train_epochs", "train_lr", "train_batch", "train_temp", "train_seed", "train_patience"):
        assert at.number_input(key=key) is not None
    assert at.radio(key="train_scale_mode").value == "auto"  # the library's default
    assert "train_scales" not in {m.key for m in at.multiselect}  # explicit scales only when asked for
    assert any(c.value.startswith("On this dataset auto chooses time unit") for c in at.caption)
    assert not [n for n in at.number_input if n.key == "train_folds"]  # Folds (K) only under cross-validation
    at.radio(key="train_scale_mode").set_value("explicit").run()
    assert at.multiselect(key="train_scales").value == [1.0, 7.0, 30.0]
    assert at.number_input(key="train_silence_temp") is not None
    at.radio(key="train_eval").set_value("cv").run()
    assert at.number_input(key="train_folds").value == 5
    assert at.toggle(key="train_learn_temp").value is True
    assert at.selectbox(key="train_device").options[0] == "CPU"  # CUDA is listed only with a GPU
    assert at.info[0].value.startswith("No runs on ")


@pytest.mark.cuda
def test_cuda_is_offered_and_trains_when_a_gpu_is_present(train_page):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    at, ws = train_page
    device = at.selectbox(key="train_device")
    assert device.options[-1].startswith("CUDA")
    assert device.value == "cuda"  # preselected when present
    at.number_input(key="train_epochs").set_value(1)
    at.button(key=START).click().run()
    _wait_until_finished(at)
    metrics = json.loads((next((ws / "runs").iterdir()) / "metrics.json").read_text())
    assert metrics["device"] == "cuda"


# ---- runs: the right run after two trainings, names, status, damage, management ----------------
def _shown_run(at: AppTest) -> str:
    assert not at.error, [e.value for e in at.error]
    return at.selectbox(key="train_show").value


def test_training_twice_shows_the_second_run_and_links_compare_to_it(train_page):
    at, ws = train_page
    at.number_input(key="train_epochs").set_value(1)
    at.selectbox(key="train_device").set_value("cpu")
    at.button(key=START).click().run()
    _wait_until_finished(at)
    first = _shown_run(at)
    at.number_input(key="train_seed").set_value(1)
    at.text_input(key="train_name").set_value("second try")
    at.button(key=START).click().run()
    # while the second run has no files yet, the page already follows it (never the first)
    assert _shown_run(at) != first
    _wait_until_finished(at)
    second = _shown_run(at)
    assert second == "second_try" and second != first
    metrics = json.loads((ws / "runs" / second / "metrics.json").read_text())
    shown = {m.label.removesuffix(" ⚠"): m.value for m in at.metric}
    assert shown, ([e.value for e in at.error], [i.value for i in at.info], [c.value for c in at.caption])
    assert shown["Test ROC AUC"] == f"{metrics['test_auc']:.3f}"
    assert list(at.query_params["run"]) == [second] or at.query_params["run"] == second
    link = [p for p in at.get("page_link") if "Compare this run" in p.proto.label]
    assert len(link) == 1 and link[0].proto.query_string == f"run={second}"
    table = at.dataframe[0].value
    assert set(table["run"]) == {first, second}
    assert first.startswith("small-") and ("-linear-" in first or "-mlp-" in first)
    assert dict(zip(table["run"], table["name"]))[second] == "second try"


def test_one_class_dataset_cannot_start_training_and_leaves_no_folder(app_workspace, open_app, monkeypatch, small_planted):
    import numpy as np

    from cvx_app import jobs
    from cvx_core.data.io import save_trajectories
    from cvx_core.data.trajectory import TrajectorySet

    ts = small_planted[0]
    one = TrajectorySet([_relabel(t, 0) for t in ts], name="one")
    assert set(np.asarray(one.labels).tolist()) == {0}
    save_trajectories(one, app_workspace / "datasets" / "one.parquet")
    monkeypatch.setenv("CVX_DATASET", "one")
    at = open_app("pages/3_train.py", timeout=TIMEOUT)
    assert not at.exception, at.exception
    assert any("at least 2 classes" in w.value for w in at.warning)
    assert at.button(key=START).disabled
    with pytest.raises(ValueError, match="at least 2 classes"):
        jobs.start_training("one", one, object())
    runs = app_workspace / "runs"
    assert not runs.exists() or not any(runs.iterdir())


def _relabel(tr, label: int):
    from dataclasses import replace

    return replace(tr, label=label)


def _fake_finished_run(ws: Path, name: str, **extra) -> Path:
    """A run folder as the trainer leaves it (documents only, no weights): enough to show."""
    d = ws / "runs" / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"train_config": {}, "model_spec": {}}))
    metrics = {"test_auc": 0.75, "baseline_auc": 0.7, "test_f1": 0.6, "test_accuracy": 0.7, "epochs": 3,
               "best_epoch": 2, "device": "cpu", "n_train": 24, "n_val": 8, "n_test": 8,
               "confusion": [[3, 1], [1, 3]], "classes": [0, 1], **extra}
    (d / "metrics.json").write_text(json.dumps(metrics))
    (d / "app.json").write_text(json.dumps({"dataset": "small", "title": name, "notes": ""}))
    return d


def test_rename_notes_and_delete_with_confirmation_from_the_page(train_page):
    at, ws = train_page
    _fake_finished_run(ws, "older")
    _fake_finished_run(ws, "keep")
    at.run()
    at.selectbox(key="train_show").set_value("older").run()
    at.text_input(key="train_title_older").set_value("=my run").run()
    at.button(key="train_rename").click().run()
    assert not at.exception, at.exception
    assert json.loads((ws / "runs" / "older" / "app.json").read_text())["title"] == "=my run"
    assert "=my run" in list(at.dataframe[0].value["name"])
    at.text_area(key="train_notes_older").set_value("first try, lr too high").run()
    at.button(key="train_save_notes").click().run()
    assert json.loads((ws / "runs" / "older" / "app.json").read_text())["notes"] == "first try, lr too high"
    at.button(key="train_delete").click().run()
    assert (ws / "runs" / "older").is_dir()  # nothing is deleted before the confirmation
    at.button(key="train_delete_confirm").click().run()
    assert not at.exception, at.exception
    assert not (ws / "runs" / "older").exists() and (ws / "runs" / "keep").is_dir()
    assert list(at.dataframe[0].value["run"]) == ["keep"]


def test_a_small_test_split_warns_beside_the_metric_and_a_damaged_run_says_why(train_page):
    at, ws = train_page
    _fake_finished_run(ws, "tiny")
    broken = _fake_finished_run(ws, "broken")
    (broken / "metrics.json").write_text("null")
    at.run()
    at.selectbox(key="train_show").set_value("tiny").run()
    auc = next(m for m in at.metric if m.label.startswith("Test ROC AUC"))
    assert auc.label.endswith("⚠") and auc.value == "0.750"
    assert any("has 8 users" in w.value for w in at.warning)  # the library's small-data sentence
    assert any("fewer than 10" in w.value for w in at.warning)
    table = at.dataframe[0].value
    assert dict(zip(table["run"], table["status"])) == {"tiny": "finished", "broken": "damaged"}
    at.selectbox(key="train_show").set_value("broken").run()
    assert not at.exception
    assert any("damaged" in e.value for e in at.error)


def test_interval_cross_validation_and_early_detection_are_shown_when_the_run_has_them(train_page):
    at, ws = train_page
    cv = {"k": 3, "folds": [{"test_auc": 0.7}, {"test_auc": 0.8}, {"test_auc": 0.9}],
          "test_auc_mean": 0.8, "test_auc_sd": 0.1, "baseline_auc_mean": 0.6, "baseline_auc_sd": 0.05,
          "test_accuracy_mean": 0.7, "test_accuracy_sd": 0.02, "baseline_accuracy_mean": 0.6,
          "baseline_accuracy_sd": 0.03}
    early = {"by": "posts", "cuts": [1, 2, 4, 8], "auc": [0.5, None, 0.7, 0.75], "erde5": 0.31, "erde50": 0.22,
             "f_latency": 0.64}
    _fake_finished_run(ws, "rich", test_auc_ci=[0.61, 0.88], cv=cv, early=early,
                       warnings=["test set has 8 users (fewer than 30)"],
                       confusion={"classes": ["calm", "alarm"], "matrix": [[3, 1], [1, 3]]})
    at.run()
    assert not at.exception, at.exception
    auc = next(m for m in at.metric if m.label.startswith("Test ROC AUC"))
    assert auc.proto.delta == "95% CI 0.610–0.880"
    assert [w.value for w in at.warning] == ["Test set has 8 users \\(fewer than 30\\)"]
    table = at.dataframe[1].value  # the runs table comes first
    assert list(table["model"]) == ["0.800 ± 0.100", "0.700 ± 0.020"]
    assert list(table["baseline"]) == ["0.600 ± 0.050", "0.600 ± 0.030"]
    early_chart = _figure(at, "Early detection")
    assert _array(early_chart["data"][0]["x"]) == [1, 2, 4, 8]
    confusion = _figure(at, "Confusion matrix")
    assert list(confusion["data"][0]["y"]) == ["class calm", "class alarm"]
    shown = {m.label: m.value for m in at.metric}
    assert shown["ERDE (o = 5)"] == "0.310" and shown["Latency-weighted F1"] == "0.640"


def test_runs_of_the_chosen_dataset_are_listed_and_the_switch_shows_every_run(train_page):
    at, ws = train_page
    _fake_finished_run(ws, "mine")
    theirs = _fake_finished_run(ws, "theirs")
    (theirs / "app.json").write_text(json.dumps({"dataset": "elsewhere", "title": "theirs", "notes": ""}))
    at.run()
    assert not at.exception, at.exception
    assert list(at.dataframe[0].value["run"]) == ["mine"]  # only the chosen dataset's runs
    assert at.toggle(key="train_show_all_runs").value is False
    at.toggle(key="train_show_all_runs").set_value(True).run()
    assert list(at.dataframe[0].value["run"]) == ["mine", "theirs"]  # every run, the chosen dataset's first
    at.toggle(key="train_show_all_runs").set_value(False).run()
    assert list(at.dataframe[0].value["run"]) == ["mine"]
    assert at.selectbox(key="train_show").value == "mine"
