"""Trainer, splits, metrics and baseline: metrics against brute force, stratified seeded
splits, length buckets, fixed normalisation, the model beating the baseline on planted
data with attention on the planted dimensions, callbacks and the stop signal."""

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
from cvx_core.learn.metrics import (
    class_weights,
    classification_metrics,
    rankdata,
    roc_auc,
    roc_curve,
)
from cvx_core.learn.model import TrajectoryClassifier, predict_proba
from cvx_core.learn.splits import length_buckets, stratified_split
from cvx_core.learn.trainer import Trainer, TrainProgress, train

FAST = dict(epochs=20, patience=20, batch_size=16, hidden=64, eval_batch_size=64)


@pytest.fixture(scope="module")
def planted():
    cfg = PlantedConfig(n_users=120, dim=48, n_planted=6, mean_posts=12, max_posts=30)
    return make_planted_trajectory_set(config=cfg, seed=3, name="planted")


@pytest.fixture(scope="module")
def trained(planted):
    ts, _ = planted
    return train(ts, TrainConfig(device="cpu", seed=0, **FAST))


# -- metrics ---------------------------------------------------------------------------------
def _pairwise_auc(y, s):
    pos, neg = s[y == 1], s[y == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (pos.size * neg.size)


def test_roc_auc_equals_pairwise_win_rate_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, size=60)
        y[:2] = [0, 1]
        s = rng.integers(0, 6, size=60).astype(float)  # many ties
        assert roc_auc(y, s) == pytest.approx(_pairwise_auc(y, s), abs=1e-12)


def test_roc_auc_is_one_for_perfect_zero_for_reversed_and_nan_for_one_class():
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert roc_auc(y, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert roc_auc(y, np.full(4, 0.5)) == 0.5
    assert np.isnan(roc_auc(np.ones(4), np.arange(4.0)))


def test_roc_curve_area_equals_roc_auc_and_runs_from_origin_to_one():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=80)
    s = np.round(rng.normal(size=80) + y, 1)
    fpr, tpr, thr = roc_curve(y, s)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0) and np.isinf(thr[0])
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(y, s), abs=1e-12)


def test_rankdata_averages_tied_ranks():
    np.testing.assert_array_equal(rankdata(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1.0, 3.5, 2.0])


def test_classification_metrics_confusion_f1_and_accuracy_by_hand():
    y = np.array([0, 0, 1, 1, 1])
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4]])
    m = classification_metrics(y, proba, (0, 1))
    np.testing.assert_array_equal(m.confusion, [[1, 1], [1, 2]])
    assert m.accuracy == pytest.approx(3 / 5)
    assert m.f1 == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert m.auc == pytest.approx(_pairwise_auc(y, proba[:, 1]))
    assert m.fpr is not None and m.tpr is not None


def test_classification_metrics_three_classes_use_macro_averages():
    y = np.array([0, 1, 2, 0, 1, 2])
    proba = np.eye(3)[y] * 0.8 + 0.2 / 3
    m = classification_metrics(y, proba, (3, 5, 9))
    assert m.auc == 1.0 and m.f1 == 1.0 and m.accuracy == 1.0 and m.fpr is None


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
    assert res.interrupted and res.best_epoch == 1 and 0.0 <= res.test_auc <= 1.0


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


def test_class_weights_are_inverse_frequency_and_imbalanced_training_finds_the_minority():
    np.testing.assert_allclose(class_weights(np.array([0, 0, 0, 1]), 2), [4 / 6, 2.0])
    np.testing.assert_allclose(class_weights(np.array([0, 0]), 2), [0.5, 1.0])
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
