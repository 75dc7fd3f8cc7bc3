"""Trainer, splits and baseline: stratified seeded splits, K-fold and given splits, length
buckets, fixed normalisation, the head chosen by validation, the model beating the baseline
on planted data with attention on the planted dimensions and never losing to it on data
whose signal is the mean embedding, metrics.json keys, callbacks and the stop signal."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from cvx_core.data.synthetic import PlantedConfig, make_planted_trajectory_set
from cvx_core.data.trajectory import Trajectory, TrajectorySet
from cvx_core.learn.baseline import mean_embedding_baseline
from cvx_core.learn.compare import spearman
from cvx_core.learn.config import TrainConfig, resolve_device
from cvx_core.learn.model import TrajectoryClassifier, predict_proba
from cvx_core.learn.splits import kfold_splits, length_buckets, read_split_column, split_from_assignments, stratified_split
from cvx_core.learn.trainer import Trainer, TrainProgress, cross_validate, train

FAST = dict(epochs=20, patience=20, batch_size=16, hidden=64, eval_batch_size=64)


@pytest.fixture(scope="module")
def planted():
    cfg = PlantedConfig(n_users=120, dim=48, n_planted=6, mean_posts=12, max_posts=30)
    return make_planted_trajectory_set(config=cfg, seed=3, name="planted")


@pytest.fixture(scope="module")
def trained(planted):
    ts, _ = planted
    return train(ts, TrainConfig(device="cpu", seed=0, **FAST))


# -- splits and batches ----------------------------------------------------------------------
def test_stratified_split_is_disjoint_complete_class_balanced_and_seeded():
    labels = np.array([0] * 70 + [1] * 30)
    s = stratified_split(labels, val_fraction=0.2, test_fraction=0.2, seed=5)
    allidx = np.concatenate([s.train, s.val, s.test])
    assert np.array_equal(np.sort(allidx), np.arange(100))
    assert (labels[s.test] == 1).sum() == 6 and (labels[s.test] == 0).sum() == 14
    assert (labels[s.val] == 1).sum() == 6 and (labels[s.val] == 0).sum() == 14
    again = stratified_split(labels, val_fraction=0.2, test_fraction=0.2, seed=5)
    other = stratified_split(labels, val_fraction=0.2, test_fraction=0.2, seed=6)
    assert np.array_equal(s.test, again.test) and not np.array_equal(s.test, other.test)


def test_stratified_split_rejects_missing_labels_and_tiny_classes():
    with pytest.raises(ValueError, match="no label"):
        stratified_split(np.array([0, 1, -1, 0, 1, 0]))
    with pytest.raises(ValueError, match="at least 3"):
        stratified_split(np.array([0, 0, 0, 0, 1, 1]))


def test_length_buckets_cover_every_index_once_and_group_similar_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 200, size=100)
    idx = np.arange(0, 100, 2)
    batches = length_buckets(lengths, idx, 8, rng=rng)
    assert np.array_equal(np.sort(np.concatenate(batches)), idx)
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < 0.3 * np.ptp(lengths[idx])


# -- config and device -----------------------------------------------------------------------
def test_train_config_round_trips_through_dict_and_rejects_bad_values():
    cfg = TrainConfig(epochs=3, device="cpu", max_len=50)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="device"):
        TrainConfig(device="tpu")
    with pytest.raises(ValueError, match="val_fraction"):
        TrainConfig(val_fraction=0.6, test_fraction=0.5)
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"epochz": 3})


def test_device_auto_is_cpu_without_cuda_and_cuda_request_fails_clearly():
    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda"
    else:
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(RuntimeError, match="cuda"):
            resolve_device("cuda")


# -- baseline --------------------------------------------------------------------------------
def _static_set(n=60, d=8, shift=1.0, seed=0):
    """Users whose *mean embedding* carries the label (dimension 0 shifted)."""
    rng = np.random.default_rng(seed)
    trajs = []
    for u in range(n):
        y = u % 2
        t = 5
        e = rng.normal(size=(t, d)).astype(np.float32) * 0.3
        e[:, 0] += shift * y
        dts = np.datetime64("2024-01-01", "us") + (np.arange(t) * 86_400e6).astype("timedelta64[us]")
        trajs.append(Trajectory(f"u{u}", e, dts, label=y))
    return TrajectorySet(trajs, name="static")


def test_baseline_finds_a_mean_embedding_signal_and_sees_none_in_planted_drift(planted):
    ts = _static_set()
    split = stratified_split(ts.labels, seed=0)
    assert mean_embedding_baseline(ts, split).test_auc > 0.9
    pts, _ = planted
    psplit = stratified_split(pts.labels, seed=0)
    assert mean_embedding_baseline(pts, psplit).test_auc < 0.8


# -- training --------------------------------------------------------------------------------
def test_model_beats_baseline_and_attention_ranks_planted_dims_first(planted, trained):
    ts, truth = planted
    res = trained
    assert res.test_auc >= 0.9
    assert res.test_auc > res.baseline_auc + 0.15
    planted_dims = truth["planted_dims"]
    alpha = res.model.extractor.attention.alpha().detach().numpy()
    top = set(np.argsort(-alpha)[: len(planted_dims)].tolist())
    assert len(top & set(planted_dims)) >= len(planted_dims) - 2
    # Spearman with the 0/1 planted mask, against its ceiling (planted dims all on top)
    mask = np.isin(np.arange(ts.dim), planted_dims).astype(float)
    ceiling = spearman(mask + np.arange(ts.dim) * 1e-9, mask)
    assert spearman(alpha, mask) > 0.8 * ceiling
    assert res.test.confusion.sum() == res.split.test.size
    assert res.history and res.best_epoch >= 1 and res.device == "cpu"


def test_normalisation_is_fixed_so_predictions_do_not_depend_on_the_batch(planted, trained):
    ts, _ = planted
    model = trained.model
    mean0 = model.feature_mean.clone()
    alone = predict_proba(model, ts, indices=[3], device="cpu")
    together = predict_proba(model, ts, indices=list(range(40)), device="cpu")
    np.testing.assert_allclose(alone[0], together[3], rtol=1e-5, atol=1e-6)
    assert torch.equal(model.feature_mean, mean0)
    assert not any(isinstance(m, (torch.nn.BatchNorm1d, torch.nn.LayerNorm)) for m in model.modules())


def test_callbacks_see_steps_and_epochs_and_should_stop_ends_training_early(planted):
    ts, _ = planted
    seen: dict[str, list[TrainProgress]] = {"step": [], "epoch": []}
    stop = threading.Event()

    def on_epoch(p: TrainProgress) -> None:
        seen["epoch"].append(p)
        if p.epoch == 2:
            stop.set()

    res = train(
        ts,
        TrainConfig(device="cpu", **{**FAST, "epochs": 10}),
        callbacks={"on_step_end": seen["step"].append, "on_epoch_end": on_epoch},
        should_stop=stop,
    )
    assert res.interrupted and res.epochs_run == 3 and len(res.history) == 2
    assert [p.epoch for p in seen["epoch"]] == [1, 2]
    assert all(np.isfinite(p.val_auc) for p in seen["epoch"])
    assert len(seen["step"]) == 2 * seen["step"][0].steps_per_epoch
    assert all(np.isfinite(p.loss) for p in seen["step"])


def test_stop_before_the_first_epoch_ends_still_returns_a_usable_model(planted):
    ts, _ = planted
    res = train(ts, TrainConfig(device="cpu", **FAST), should_stop=lambda: True)
    # the starting weights (epoch 0: the logistic-regression warm start) are the checkpoint
    assert res.interrupted and res.best_epoch == 0 and 0.0 <= res.test_auc <= 1.0


def test_frozen_feature_parameters_stay_at_their_initial_values(planted):
    ts, _ = planted
    cfg = TrainConfig(device="cpu", learn_attention=False, learn_scales=False, learn_temperatures=False,
                      **{**FAST, "epochs": 2})
    res = train(ts, cfg)
    alpha = res.model.extractor.attention.alpha().detach()
    assert torch.allclose(alpha, torch.ones_like(alpha))


def test_trainer_rejects_unlabelled_data_and_single_class(planted):
    ts, _ = planted
    one = TrajectorySet([Trajectory(tr.user_id, tr.embeddings, tr.datetimes, label=0) for tr in ts])
    with pytest.raises(ValueError, match="2 classes"):
        Trainer(one, TrainConfig(device="cpu"))
    none = TrajectorySet([Trajectory(tr.user_id, tr.embeddings, tr.datetimes) for tr in ts])
    with pytest.raises(ValueError, match="no label"):
        Trainer(none, TrainConfig(device="cpu"))
    with pytest.raises(ValueError, match="unknown callback"):
        Trainer(ts, TrainConfig(device="cpu")).add_callback("on_batch", print)


def test_imbalanced_training_finds_the_minority():
    cfg = PlantedConfig(n_users=120, dim=48, n_planted=6, mean_posts=12, max_posts=30, positive_fraction=0.15)
    ts, _ = make_planted_trajectory_set(config=cfg, seed=3)
    res = train(ts, TrainConfig(device="cpu", seed=0, **FAST))
    assert res.test.confusion[1].sum() >= 3  # minority users are in the test split
    assert res.test.f1 > 0.5 and res.test_auc > 0.9


@pytest.mark.cuda
def test_training_on_cuda_with_bf16_head_matches_quality(planted):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    ts, _ = planted
    res = train(ts, TrainConfig(device="cuda", seed=0, **FAST))
    assert res.device == "cuda" and res.mixed_precision and not res.model.autocast_head
    assert res.test_auc > res.baseline_auc + 0.15


def test_classifier_features_at_init_equal_the_analytic_path_in_float64(planted):
    from cvx_core.features.analytic import AnalyticBackend

    ts, _ = planted
    model = TrajectoryClassifier(ts.dim, 2, feature_dtype=torch.float64)
    batch = ts.padded([0, 1, 2])
    with torch.no_grad():
        feats = model.features(*batch.to_torch("cpu"))
    assert feats.dtype == torch.float64
    for row, i in enumerate([0, 1, 2]):
        tr = ts.at(i)
        np.testing.assert_allclose(feats[row].numpy(), AnalyticBackend.extract_all(tr.embeddings, tr.timestamps),
                                   rtol=1e-10, atol=1e-12)
    res = train(ts, TrainConfig(device="cpu", feature_dtype="float64", **{**FAST, "epochs": 1}))
    assert 0.0 <= res.test_auc <= 1.0


# -- given splits, cross-validation, the head -------------------------------------------------
# hidden=0: auto chooses among linear heads only (the MLP candidate's inner CV is the slow part)
SMALL = dict(epochs=4, patience=4, batch_size=16, hidden=0, eval_batch_size=64, device="cpu", bootstrap=200)
METRIC_KEYS = ("test_accuracy", "baseline_accuracy", "test_auc", "baseline_auc", "test_auc_ci", "n_train", "n_val",
               "n_test", "f1_per_class", "macro_auc", "confusion", "warnings", "head", "head_choice", "cv", "early")


def test_kfold_splits_are_stratified_disjoint_and_each_user_is_tested_once():
    labels = np.array([0] * 20 + [1] * 10)
    folds = kfold_splits(labels, 5, seed=2)
    tested = np.concatenate([f.test for f in folds])
    assert np.array_equal(np.sort(tested), np.arange(30))
    for f in folds:
        assert not (set(f.train) & set(f.val) or set(f.train) & set(f.test) or set(f.val) & set(f.test))
        assert (labels[f.test] == 1).sum() == 2 and (labels[f.val] == 1).any()
    assert [f.test.tolist() for f in kfold_splits(labels, 5, seed=2)] == [f.test.tolist() for f in folds]
    with pytest.raises(ValueError, match="at least 5 per class"):
        kfold_splits(np.array([0] * 10 + [1] * 4), 5)


def test_split_column_is_read_per_user_and_bad_cells_name_row_and_column(tmp_path):
    from cvx_core.data.trajectory import TrajectoryError

    ts = _static_set(n=12, d=3)
    rows = []
    for i, tr in enumerate(ts):
        part = "test" if i < 4 else ("Validation" if i < 6 else "train")
        for t, e in zip(tr.datetimes, tr.embeddings):
            rows.append({"user_id": tr.user_id, "timestamp": str(t), "label": tr.label, "embedding": e.tolist(),
                         "fold": part})
    import pandas as pd

    frame = pd.DataFrame(rows)
    path = tmp_path / "posts.parquet"
    frame.to_parquet(path)
    assignments = read_split_column(path, "fold")
    split = split_from_assignments(ts, assignments, val_fraction=0.2, seed=0)
    assert split.as_user_ids(ts)["test"] == ts.user_ids[:4] and split.as_user_ids(ts)["val"] == ts.user_ids[4:6]
    frame.loc[7, "fold"] = "holdout"
    frame.to_parquet(path)
    with pytest.raises(TrajectoryError, match="'fold'.*not a split") as err:
        read_split_column(path, "fold")
    assert err.value.row == 8 and err.value.column == "fold"
    with pytest.raises(TrajectoryError, match="no column 'split'"):
        read_split_column(path, "split")


def test_a_given_test_set_is_scored_and_validation_comes_from_the_training_data():
    ts = _static_set(n=40, d=6, seed=1)
    test = _static_set(n=20, d=6, seed=2)
    test = TrajectorySet([Trajectory("t" + tr.user_id, tr.embeddings, tr.datetimes, label=tr.label) for tr in test])
    res = train(ts, TrainConfig(**SMALL), test_data=test)
    ids = res.split.as_user_ids(Trainer(ts, TrainConfig(**SMALL), test_data=test).data)
    assert ids["test"] == test.user_ids and set(ids["train"]) | set(ids["val"]) == set(ts.user_ids)
    m = res.metrics_dict()
    assert all(k in m for k in METRIC_KEYS)
    assert m["n_test"] == 20 and m["n_train"] + m["n_val"] == 40
    assert m["confusion"] == {"classes": ["0", "1"], "matrix": res.test.confusion.tolist()}
    assert any("20 users" in w for w in m["warnings"])  # fewer than 30 test users
    lo, hi = m["test_auc_ci"]
    assert lo <= m["test_auc"] <= hi
    with pytest.raises(ValueError, match="both the training and the test"):
        Trainer(ts, TrainConfig(**SMALL), test_data=ts)


def test_auto_head_is_not_below_the_mean_embedding_baseline_when_the_signal_is_the_mean():
    ts = _static_set(n=80, d=8, shift=0.6, seed=3)
    for seed, hidden in ((0, 8), (1, 0)):  # seed 0 also weighs an MLP
        res = train(ts, TrainConfig(**{**SMALL, "seed": seed, "hidden": hidden}))
        assert res.head is not None and res.head.head in ("linear", "mlp") and "C=" in res.head.reason
        assert res.test.accuracy >= res.baseline.test.accuracy - 0.07, (res.test.accuracy, res.baseline.test.accuracy)


def test_linear_head_as_asked_keeps_feature_parts_trainable():
    ts, _ = make_planted_trajectory_set(config=PlantedConfig(n_users=40, dim=8, n_planted=2, mean_posts=8,
                                                             max_posts=12), seed=5)
    res = train(ts, TrainConfig(**{**SMALL, "head": "linear", "epochs": 3, "patience": 3, "mean_inputs": False}))
    assert res.head.head == "linear" and res.head.reason.startswith("linear as asked")
    assert res.model.extractor.attention.w.requires_grad
    assert isinstance(res.model.head[-1], torch.nn.Linear) and len(res.model.head) == 2


def test_cross_validation_reports_mean_and_sd_of_model_and_baseline():
    ts = _static_set(n=30, d=4, seed=4)
    cv = cross_validate(ts, TrainConfig(**{**SMALL, "epochs": 2, "head": "linear"}), k=3)
    d = cv.to_dict()
    assert d["k"] == 3 and len(d["folds"]) == 3 and sum(f["n_test"] for f in d["folds"]) == 30
    for key in ("test_auc", "baseline_auc", "test_accuracy", "baseline_accuracy"):
        vals = [f[key] for f in d["folds"]]
        assert d[f"{key}_mean"] == pytest.approx(np.mean(vals))
        assert d[f"{key}_sd"] == pytest.approx(np.std(vals, ddof=1))


def test_head_learning_rates_scale_as_one_over_fan_in_above_64_inputs():
    from torch import nn

    from cvx_core.learn.trainer import HEAD_LR_FAN_IN, head_param_groups

    wide, narrow, out = nn.Linear(6400, 64), nn.Linear(32, 2), nn.Linear(64, 2)
    groups = head_param_groups([wide.weight, wide.bias, narrow.weight, out.weight], lr=3e-3, weight_decay=0.1)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert lr_of[id(wide.weight)] == pytest.approx(3e-3 * HEAD_LR_FAN_IN / 6400)
    assert lr_of[id(wide.bias)] == lr_of[id(narrow.weight)] == lr_of[id(out.weight)] == 3e-3
    assert all(g["weight_decay"] == 0.1 for g in groups)
    assert sum(len(g["params"]) for g in groups) == 4
