"""Run folders: atomic writes, checkpoint round trip (identical predictions), interrupted
runs keep their last good checkpoint, the run list, and safe (weights-only) loading."""

from __future__ import annotations

import fractions
import json
import os

import numpy as np
import pytest
import torch

from cvx_core.data.synthetic import PlantedConfig, make_planted_trajectory_set
from cvx_core.learn import runs
from cvx_core.learn.config import TrainConfig
from cvx_core.learn.model import predict_proba
from cvx_core.learn.runs import RunError, list_runs, load_run, new_run_dir
from cvx_core.learn.trainer import train

FAST = dict(epochs=3, patience=3, batch_size=16, hidden=8, eval_batch_size=64, device="cpu")


@pytest.fixture(scope="module")
def data():
    cfg = PlantedConfig(n_users=40, dim=12, n_planted=3, mean_posts=10, max_posts=25)
    return make_planted_trajectory_set(config=cfg, seed=11, name="runs")[0]


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ws") / "run-a"
    return run_dir, train(data, TrainConfig(**FAST), run_dir=run_dir)


def test_atomic_write_replaces_content_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "x.json"
    runs.atomic_write_json(path, {"a": 1})
    runs.atomic_write_json(path, {"a": np.float32(2.5), "b": np.arange(3), "c": float("nan")})
    assert json.loads(path.read_text()) == {"a": 2.5, "b": [0, 1, 2], "c": None}
    assert os.listdir(tmp_path) == ["x.json"]


def test_finished_run_folder_has_weights_config_data_and_metrics(finished, data):
    run_dir, res = finished
    for name in (runs.CONFIG_FILE, runs.DATA_FILE, runs.WEIGHTS_FILE, runs.CHECKPOINT_FILE,
                 runs.HISTORY_FILE, runs.METRICS_FILE):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / runs.METRICS_FILE).read_text())
    for key in ("test_auc", "baseline_auc", "test_f1", "epochs", "device"):
        assert key in metrics
    assert metrics["test_auc"] == pytest.approx(res.test_auc)
    data_doc = json.loads((run_dir / runs.DATA_FILE).read_text())
    assert sorted(sum(data_doc["split"].values(), [])) == sorted(data.user_ids)
    assert data_doc["digest"] == data.digest()
    assert len(data_doc["split"]["test"]) == res.split.test.size


def test_loaded_run_gives_identical_predictions(finished, data):
    run_dir, res = finished
    loaded = load_run(run_dir)
    assert loaded.complete and loaded.config == res.config
    before = predict_proba(res.model, data, device="cpu")
    after = predict_proba(loaded.model, data, device="cpu")
    np.testing.assert_array_equal(before, after)
    alpha_a = res.model.extractor.attention.alpha()
    alpha_b = loaded.model.extractor.attention.alpha()
    assert torch.equal(alpha_a, alpha_b)


def test_run_stopped_after_epoch_one_keeps_a_loadable_checkpoint(data, tmp_path):
    state = {"epochs": 0}

    def on_epoch(p):
        state["epochs"] = p.epoch

    res = train(data, TrainConfig(**{**FAST, "epochs": 5}), run_dir=tmp_path / "r",
                callbacks={"on_epoch_end": on_epoch}, should_stop=lambda: state["epochs"] >= 1)
    # epoch 0 (the starting weights, e.g. the logistic-regression warm start) is a checkpoint too
    assert res.interrupted and res.best_epoch in (0, 1)
    loaded = load_run(tmp_path / "r")
    assert loaded.checkpoint["epoch"] == res.best_epoch and loaded.metrics["interrupted"] is True
    np.testing.assert_array_equal(predict_proba(loaded.model, data, device="cpu"),
                                  predict_proba(res.model, data, device="cpu"))


def test_crash_mid_training_leaves_last_good_checkpoint_and_no_metrics(data, tmp_path):
    def crash(p):
        if p.epoch == 2:
            raise KeyboardInterrupt  # the process dies during epoch 2's bookkeeping

    with pytest.raises(KeyboardInterrupt):
        train(data, TrainConfig(**{**FAST, "epochs": 5}), run_dir=tmp_path / "r", callbacks={"on_epoch_end": crash})
    loaded = load_run(tmp_path / "r")
    assert not loaded.complete and loaded.checkpoint["epoch"] in (0, 1, 2)
    assert predict_proba(loaded.model, data, device="cpu").shape == (len(data), 2)
    info = list_runs(tmp_path)[0]
    assert info.has_weights and not info.complete and info.test_auc is None
    assert not [n for n in os.listdir(tmp_path / "r") if n.endswith(".tmp")]


def test_list_runs_newest_first_and_ignores_other_folders(finished, tmp_path):
    run_dir, res = finished
    ws = run_dir.parent
    (ws / "not-a-run").mkdir(exist_ok=True)
    infos = list_runs(ws)
    assert [i.name for i in infos] == ["run-a"]
    assert infos[0].complete and infos[0].test_auc == pytest.approx(res.test_auc) and infos[0].device == "cpu"
    assert list_runs(tmp_path / "missing") == []
    a = new_run_dir(tmp_path, "same")
    b = new_run_dir(tmp_path, "same")
    assert a != b and a.is_dir() and b.is_dir()


def test_loading_refuses_missing_weights_and_pickled_objects(finished, tmp_path):
    run_dir, _ = finished
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / runs.CONFIG_FILE).write_bytes((run_dir / runs.CONFIG_FILE).read_bytes())
    with pytest.raises(RunError, match="no weights"):
        load_run(bad)

    # an arbitrary (non-tensor) object: weights_only loading must refuse to unpickle it
    torch.save({"x": fractions.Fraction(1, 3)}, bad / runs.WEIGHTS_FILE)
    with pytest.raises(RunError, match="cannot load weights"):
        load_run(bad)
    with pytest.raises(RunError, match="not a run folder"):
        load_run(tmp_path / "nothing")


@pytest.mark.cuda
def test_cuda_run_round_trip_gives_identical_predictions_and_loads_on_cpu(data, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    res = train(data, TrainConfig(**{**FAST, "device": "cuda"}), run_dir=tmp_path / "r")
    assert json.loads((tmp_path / "r" / runs.METRICS_FILE).read_text())["device"] == "cuda"
    on_gpu = load_run(tmp_path / "r", device="cuda")
    # the weights are restored bit for bit ...
    trained = res.model.state_dict()
    for key, value in on_gpu.model.state_dict().items():
        assert torch.equal(value, trained[key].to(value.device)), key
    # ... while predictions agree to rounding only: CUDA's index_add_ adds in no fixed order
    np.testing.assert_allclose(predict_proba(res.model, data, device="cuda"),
                               predict_proba(on_gpu.model, data, device="cuda"), rtol=1e-5, atol=1e-7)
    on_cpu = load_run(tmp_path / "r", device="cpu")
    np.testing.assert_allclose(predict_proba(on_cpu.model, data, device="cpu"),
                               predict_proba(res.model, data, device="cuda"), rtol=1e-3, atol=1e-4)


def test_training_again_in_the_same_folder_removes_stale_results(data, tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    runs.atomic_write_json(run / runs.METRICS_FILE, {"test_auc": 0.123})
    (run / "notes.txt").write_text("mine")

    def check(p):
        assert not (run / runs.METRICS_FILE).exists()  # stale metrics are gone while training

    train(data, TrainConfig(**{**FAST, "epochs": 1}), run_dir=run, callbacks={"on_train_start": check})
    assert json.loads((run / runs.METRICS_FILE).read_text())["test_auc"] != 0.123
    assert (run / "notes.txt").read_text() == "mine"


# -- damaged run folders: each is listed as damaged, the others stay visible, loading it is a RunError --
import shutil  # noqa: E402

DAMAGE = {
    "metrics_null": (runs.METRICS_FILE, b"null"),
    "metrics_list": (runs.METRICS_FILE, b"[1, 2]"),
    "epochs_text": (runs.METRICS_FILE, b'{"test_auc": 0.7, "epochs": "five"}'),
    "auc_text": (runs.METRICS_FILE, b'{"test_auc": "high"}'),
    "metrics_truncated": (runs.METRICS_FILE, b'{"test_auc": 0.'),
    "metrics_not_utf8": (runs.METRICS_FILE, b'{"device": "\xff\xfe"}'),
    "metrics_deep": (runs.METRICS_FILE, b"[" * 100_000 + b"]" * 100_000),
    "config_list": (runs.CONFIG_FILE, b"[]"),
    "config_no_spec": (runs.CONFIG_FILE, b'{"train_config": {}}'),
    "config_empty": (runs.CONFIG_FILE, b""),
    "checkpoint_text": (runs.CHECKPOINT_FILE, b'"epoch 3"'),
    "checkpoint_epoch_bool": (runs.CHECKPOINT_FILE, b'{"epoch": true}'),
    "history_object": (runs.HISTORY_FILE, b'{"epoch": 1}'),
    "history_numbers": (runs.HISTORY_FILE, b"[1, 2, 3]"),
    "data_list": (runs.DATA_FILE, b"[]"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_document_lists_that_run_as_damaged_keeps_the_others_and_load_raises_run_error(finished, tmp_path, case):
    good_dir, _ = finished
    ws = tmp_path / "ws"
    shutil.copytree(good_dir, ws / "good")
    shutil.copytree(good_dir, ws / "bad")
    fname, content = DAMAGE[case]
    (ws / "bad" / fname).write_bytes(content)
    listed = {r.name: r for r in list_runs(ws)}
    assert set(listed) == {"good", "bad"}
    assert listed["good"].damaged is None and listed["good"].complete and listed["good"].test_auc is not None
    if fname != runs.DATA_FILE:  # data.json is only read when the run is loaded
        assert listed["bad"].damaged and fname in listed["bad"].damaged
        assert listed["bad"].problem == listed["bad"].damaged and not listed["bad"].complete
    with pytest.raises(RunError) as info:
        load_run(ws / "bad")
    assert fname in str(info.value)
    load_run(ws / "good")  # the good run is untouched


@pytest.mark.parametrize("content", [b"", b"not a zip", b"PK\x03\x04" + b"\0" * 64])
def test_corrupt_or_foreign_weights_are_a_run_error_and_the_run_still_lists(finished, tmp_path, content):
    good_dir, _ = finished
    shutil.copytree(good_dir, tmp_path / "ws" / "bad")
    (tmp_path / "ws" / "bad" / runs.WEIGHTS_FILE).write_bytes(content)
    (info,) = list_runs(tmp_path / "ws")
    assert info.damaged is None and info.has_weights  # the list reads no weights
    with pytest.raises(RunError, match="model.pt"):
        load_run(tmp_path / "ws" / "bad")


def test_weights_that_are_not_a_state_dict_or_do_not_fit_the_spec_are_a_run_error(finished, tmp_path):
    good_dir, _ = finished
    bad = tmp_path / "bad"
    shutil.copytree(good_dir, bad)
    torch.save([torch.zeros(2)], bad / runs.WEIGHTS_FILE)
    with pytest.raises(RunError, match="state dict"):
        load_run(bad)
    torch.save({"w": torch.zeros(2)}, bad / runs.WEIGHTS_FILE)
    with pytest.raises(RunError, match="do not match"):
        load_run(bad)
    doc = json.loads((bad / runs.CONFIG_FILE).read_text())
    doc["model_spec"]["dim"] = "twelve"
    (bad / runs.CONFIG_FILE).write_text(json.dumps(doc))
    with pytest.raises(RunError):
        load_run(bad)


def test_a_folder_where_a_document_is_a_directory_or_unreadable_is_listed_as_damaged(finished, tmp_path):
    good_dir, _ = finished
    bad = tmp_path / "ws" / "bad"
    shutil.copytree(good_dir, bad)
    (bad / runs.METRICS_FILE).unlink()
    (bad / runs.METRICS_FILE).mkdir()
    (info,) = list_runs(tmp_path / "ws")
    assert info.damaged and runs.METRICS_FILE in info.damaged
