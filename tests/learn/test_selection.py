"""Model selection (cvx_core.learn.selection): the epoch kept by validation log-loss, early
stopping on saturated AUC, and the head choice that keeps the plain baseline when the
temporal features add nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cvx_core.data.trajectory import Trajectory, TrajectorySet
from cvx_core.learn.config import TrainConfig
from cvx_core.learn.model import predict_proba
from cvx_core.learn.selection import NOTHING_ADDED, EpochSelector, HeadLayout
from cvx_core.learn.trainer import train

SMALL = dict(epochs=4, patience=4, batch_size=16, hidden=0, eval_batch_size=64, device="cpu", bootstrap=200)


def _mean_signal_set(n: int = 80, d: int = 6, shift: float = 0.8, seed: int = 0) -> TrajectorySet:
    """The label is a shift of the mean embedding along dimension 0; the timing and the
    order of posts are noise (no temporal signal)."""
    rng = np.random.default_rng(seed)
    trajs = []
    for u in range(n):
        y = u % 2
        t = int(rng.integers(4, 9))
        e = rng.normal(size=(t, d)).astype(np.float32) * 0.5
        e[:, 0] += shift * y
        gaps = np.cumsum(rng.exponential(2.0, size=t)) * 86_400e6
        dts = np.datetime64("2024-01-01", "us") + gaps.astype("timedelta64[us]")
        trajs.append(Trajectory(f"u{u}", e, dts, label=y))
    return TrajectorySet(trajs, name="mean-signal")


# -- the kept epoch ---------------------------------------------------------------------------
def test_epoch_selector_keeps_the_lowest_loss_and_stops_when_the_loss_only_creeps():
    sel = EpochSelector(min_delta=1e-3, patience=3)
    # validation AUC saturated at 1.0 throughout; the loss creeps down by 1e-4 an epoch
    losses = [0.02, 0.005, 0.0049, 0.0048, 0.0047, 0.0046]
    kept = [sel.offer(e, loss, 1.0) for e, loss in enumerate(losses[:5])]
    assert kept == [True, True, True, True, True]  # the checkpoint follows every fall
    assert sel.should_stop and sel.bad_epochs == 3  # but none fell by more than min_delta after epoch 1
    choice = sel.choice()
    assert choice.epoch == 4 and choice.val_loss == pytest.approx(0.0047)
    assert choice.runner_up_epoch == 3 and choice.last_significant_epoch == 1 and choice.min_delta == 1e-3
    assert "stopped after epoch 4" in choice.reason and "min_delta" in choice.reason


def test_epoch_selector_ignores_validation_auc_and_a_nan_loss():
    sel = EpochSelector(min_delta=0.0, patience=5)
    sel.offer(0, 0.75, 0.50)
    sel.offer(1, 1.63, 0.585)  # the case: a higher AUC with a far worse loss
    sel.offer(2, float("nan"), 0.9)
    assert sel.best_epoch == 0 and sel.choice().runner_up_epoch == 1


def test_a_start_from_the_baseline_gives_way_only_to_a_fall_of_more_than_min_delta():
    sel = EpochSelector(min_delta=0.01, patience=5, guard_start=True)
    sel.offer(0, 0.300, 0.9)
    assert not sel.offer(1, 0.295, 0.9) and sel.best_epoch == 0  # lower, but within min_delta
    assert sel.offer(2, 0.280, 0.9) and sel.best_epoch == 2
    assert sel.offer(3, 0.279, 0.9) and sel.best_epoch == 3  # past the start: every fall counts again
    # with per-user losses the fall must also be significant (paired one-sided Wilcoxon, p < 0.05)
    start = np.full(16, 0.30)
    one_user = start.copy()
    one_user[0] = 0.0  # the mean falls by 0.019 > min_delta, but on one user of 16
    guarded = EpochSelector(min_delta=0.01, patience=5, guard_start=True)
    guarded.offer(0, start.mean(), 0.9, per_user=start)
    assert not guarded.offer(1, one_user.mean(), 0.9, per_user=one_user) and guarded.best_epoch == 0
    assert guarded.guard_p > 0.05
    everyone = start - 0.02
    assert guarded.offer(2, everyone.mean(), 0.9, per_user=everyone) and guarded.guard_p < 0.05
    plain = EpochSelector(min_delta=0.01, patience=5)
    plain.offer(0, 0.300, 0.9)
    assert plain.offer(1, 0.295, 0.9)


@pytest.mark.slow
def test_early_stopping_fires_when_validation_auc_saturates():
    ts = _mean_signal_set(n=60, shift=3.0, seed=1)  # separable: validation AUC is 1 from the start
    res = train(ts, TrainConfig(**{**SMALL, "epochs": 40, "patience": 3, "head": "linear"}))
    assert all(h.val_auc == 1.0 for h in res.history)
    assert res.stopped_early and res.epochs_run < 40
    m = res.metrics_dict()
    assert m["epoch_choice"]["epoch"] == res.best_epoch and m["epoch_choice"]["min_delta"] == 1e-3
    losses = [m["epoch_choice"]["val_loss"]] + [h.val_loss for h in res.history]
    assert m["epoch_choice"]["val_loss"] == pytest.approx(min(losses))


# -- the head -----------------------------------------------------------------------------------
def test_head_layout_columns_pick_features_mean_and_both():
    lay = HeadLayout(n_spec=5, n_mean=3, magnitude=True)  # h = [z_spec, z_mean, |z_spec|, |z_mean|]
    assert lay.columns("baseline").tolist() == [5, 6, 7]
    assert lay.columns("cvx").tolist() == [0, 1, 2, 3, 4, 8, 9, 10, 11, 12]
    assert lay.columns("cvx+mean").tolist() == list(range(16))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_auto_head_chooses_the_baseline_when_the_label_is_only_in_the_mean(tmp_path, seed):
    # with scales="auto" the noise features of seed 0 at 80 users tied the mean on inner CV
    # (0.090 vs 0.100) and won: a chance win the Wilcoxon guard is for; two other draws here
    ts = _mean_signal_set(n=120, seed=seed)
    res = train(ts, TrainConfig(**SMALL), run_dir=tmp_path)
    assert res.head.candidate == "baseline" and res.features_add_nothing
    assert res.head.verdict.startswith(NOTHING_ADDED)
    # trained from the baseline's weights, no epoch beat it by min_delta: the run is the regression itself
    assert res.best_epoch == 0 and res.history and "plain baseline" in res.epoch_choice.reason
    # the model predicts what the baseline predicts
    p = predict_proba(res.model, ts, indices=res.split.test, device="cpu")
    np.testing.assert_allclose(p, res.baseline.test_proba, atol=1e-5)
    assert res.test.auc == pytest.approx(res.baseline.test_auc)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["features_add_nothing"] is True and m["verdict"].startswith(NOTHING_ADDED)
    assert set(m["head_candidates"]) == {"baseline", "cvx", "cvx+mean"}
    assert m["head_candidates"]["baseline"] == min(m["head_candidates"].values())
    assert all(len(m["head_scores"][k]) == 5 for k in m["head_candidates"])  # every C of every candidate


@pytest.mark.slow
def test_auto_head_keeps_the_temporal_features_when_they_carry_the_label():
    from cvx_core.data.synthetic import PlantedConfig, make_planted_trajectory_set

    ts, _ = make_planted_trajectory_set(config=PlantedConfig(n_users=80, dim=16, n_planted=4, mean_posts=10,
                                                             max_posts=20), seed=2)
    res = train(ts, TrainConfig(**SMALL))
    assert res.head.candidate in ("cvx", "cvx+mean") and not res.features_add_nothing
    assert res.head.candidate_scores[res.head.candidate] < res.head.candidate_scores["baseline"]
    assert res.metrics_dict()["verdict"] is None


def _choose(h: np.ndarray, y: np.ndarray, n_mean: int, seed: int = 0):
    """choose_head(auto) on head inputs ``h = [spec | mean]`` with the baseline scored on the mean block."""
    from cvx_core.learn.baseline import logreg_on_vectors
    from cvx_core.learn.selection import choose_head
    from cvx_core.learn.splits import stratified_split

    split = stratified_split(y, val_fraction=0.2, test_fraction=0.2, seed=seed)
    lay = HeadLayout(n_spec=h.shape[1] - n_mean, n_mean=n_mean, magnitude=False)
    base = logreg_on_vectors(h[:, lay.columns("baseline")], y, split, (0, 1), seed=seed)
    return choose_head(h, y, split, layout=lay, head="auto", n_classes=2, baseline=base.selection, seed=seed)


def test_auto_head_keeps_the_baseline_on_shuffled_labels():
    # the label carries nothing: a temporal candidate passes only at the test's false-positive
    # rate (family-wise 0.05; measured 1 of 40 draws); the old rule (the lowest mean inner-CV
    # loss) had no such bound.
    rng = np.random.default_rng(0)
    picks = []
    for seed in range(40):
        y = rng.permutation(np.arange(60) % 2)
        h = rng.normal(size=(60, 12))
        choice = _choose(h, y, n_mean=4, seed=seed)
        picks.append(choice.candidate)
        assert set(choice.candidate_p) == {"cvx", "cvx+mean"} and choice.alpha == pytest.approx(0.025)
        if choice.candidate == "baseline":
            assert choice.verdict.startswith(NOTHING_ADDED)
    assert sum(p != "baseline" for p in picks) <= 4, picks


def test_auto_head_needs_a_significant_paired_win_not_a_lower_mean():
    from cvx_core.learn.baseline import Selection
    from cvx_core.learn.selection import _winner

    base = Selection(value=1.0, scores={"1.0": 0.70}, how="5-fold", per_user=np.full(28, 0.70))
    lucky = np.full(28, 0.70)
    lucky[:3] = 0.05  # a lower mean (0.63) from three users: not evidence
    broad = np.full(28, 0.60)  # every user lower
    sels = {"baseline": base,
            "cvx": Selection(value=1.0, scores={"1.0": float(lucky.mean())}, how="5-fold", per_user=lucky),
            "cvx+mean": Selection(value=1.0, scores={"1.0": 0.65}, how="5-fold", per_user=np.full(28, 0.75))}
    best, p, alpha = _winner(["baseline", "cvx", "cvx+mean"], sels)
    assert best == "baseline" and p["cvx"] > alpha and p["cvx+mean"] > alpha
    sels["cvx+mean"] = Selection(value=1.0, scores={"1.0": 0.60}, how="5-fold", per_user=broad)
    best, p, _ = _winner(["baseline", "cvx", "cvx+mean"], sels)
    assert best == "cvx+mean" and p["cvx+mean"] < 1e-5


def test_auto_head_chooses_features_that_carry_the_label_by_the_paired_test():
    rng = np.random.default_rng(1)
    y = np.arange(80) % 2
    h = rng.normal(size=(80, 12))
    h[:, 0] += 2.0 * y  # a temporal column carries the label; the mean block (last 4) does not
    choice = _choose(h, y, n_mean=4)
    assert choice.candidate in ("cvx", "cvx+mean") and choice.verdict is None
    assert choice.candidate_p[choice.candidate] < choice.alpha and "Wilcoxon" in choice.reason


def test_the_baseline_is_refitted_on_train_and_validation_like_a_plain_regression():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from cvx_core.learn.baseline import logreg_on_vectors
    from cvx_core.learn.splits import stratified_split

    rng = np.random.default_rng(2)
    y = np.arange(50) % 2
    x = rng.normal(size=(50, 5)) + 0.5 * y[:, None]
    split = stratified_split(y, val_fraction=0.2, test_fraction=0.2, seed=0)
    res = logreg_on_vectors(x, y, split, (0, 1), seed=0)
    fit = np.concatenate([split.train, split.val])
    plain = make_pipeline(StandardScaler(), LogisticRegression(C=res.c, class_weight="balanced", max_iter=2000))
    plain.fit(x[fit], y[fit])
    np.testing.assert_allclose(res.test_proba, plain.predict_proba(x[split.test]), atol=1e-8)
    assert res.selection.per_user.shape == (fit.size,)


def test_a_model_head_from_the_baseline_pipeline_gives_its_logits():
    from cvx_core.learn.baseline import make_logreg
    from cvx_core.learn.selection import pipeline_head

    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(40, 3)) * [1.0, 5.0, 0.1] + 2.0, np.arange(40) % 3
    est = make_logreg(1.0).fit(x, y)
    mean, std = x[:20].mean(0), x[:20].std(0)  # the model's own (other) statistics
    w, b = pipeline_head(est, columns=np.arange(2, 5), mean=mean, std=std, n_inputs=7, k=3)
    z = np.zeros((40, 7))
    z[:, 2:5] = (x - mean) / std
    logits = z @ w.T + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(p / p.sum(1, keepdims=True), est.predict_proba(x), atol=1e-10)


@pytest.mark.slow
def test_training_on_shuffled_labels_keeps_the_baseline_and_says_so():
    from cvx_core.data.synthetic import PlantedConfig, make_planted_trajectory_set

    ts, _ = make_planted_trajectory_set(config=PlantedConfig(n_users=80, dim=16, n_planted=4, mean_posts=10,
                                                             max_posts=20), seed=2)
    labels = np.random.default_rng(0).permutation(ts.labels)
    shuffled = TrajectorySet([Trajectory(t.user_id, t.embeddings, t.timestamps, label=int(v))
                              for t, v in zip(ts, labels)], name="shuffled")
    for seed in (0, 1):
        res = train(shuffled, TrainConfig(**{**SMALL, "seed": seed, "epochs": 10}))
        assert res.head.candidate == "baseline" and res.features_add_nothing, res.head.reason
        assert res.test.auc == pytest.approx(res.baseline.test_auc)


# -- attention that stays on the signal (issue 23.1) --------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_training_on_the_sample_keeps_attention_on_the_planted_dimensions(seed):
    from pathlib import Path

    from cvx_core.data.io import load_trajectories
    from cvx_core.learn.metrics import planted_share

    root = Path(__file__).resolve().parents[2] / "sample_data"
    ts = load_trajectories(root / "sample.parquet")
    planted = json.loads((root / "truth.json").read_text())["planted_dims"]
    res = train(ts, TrainConfig(device="cpu", seed=seed, bootstrap=0))
    alpha = res.model.extractor.attention.alpha().detach().numpy()
    assert res.head.candidate in ("cvx", "cvx+mean") and res.best_epoch >= 1  # the attention was trained
    assert planted_share(alpha, planted) >= 0.8
    assert res.test.auc >= 0.99  # at least where it was (1.000 for seeds 0 and 2, 0.903 for seed 1)
    assert res.stopped_early


def test_planted_share_counts_planted_dimensions_in_alphas_top_set():
    from cvx_core.learn.metrics import planted_share

    alpha = np.array([0.1, 3.0, 0.2, 2.0, 0.5, 0.1])
    assert planted_share(alpha, [1, 3]) == 1.0
    assert planted_share(alpha, [1, 5]) == 0.5
    assert planted_share(np.ones(6), [4, 5]) == 0.0  # a uniform alpha gets no credit
    with pytest.raises(ValueError, match="index alpha"):
        planted_share(alpha, [9])
