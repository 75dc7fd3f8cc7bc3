"""Early detection: prefixes by posts and by days, ERDE and F_latency against hand-computed
values, and the curve of a trained model rising with the posts seen."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cvx_core.data.synthetic import PlantedConfig, make_planted_trajectory_set
from cvx_core.learn.config import TrainConfig
from cvx_core.learn.early import early_detection, erde, f_latency, latency_penalty, post_grid, prefix_set
from cvx_core.learn.trainer import train


def test_prefix_set_cuts_by_posts_and_by_days_and_keeps_the_first_post():
    ts, _ = make_planted_trajectory_set(config=PlantedConfig(n_users=6, dim=4, n_planted=1, mean_posts=10, max_posts=15), seed=1)
    three = prefix_set(ts, posts=3)
    assert all(b.n_posts == min(3, a.n_posts) for a, b in zip(ts, three))
    np.testing.assert_array_equal(three.at(0).embeddings, ts.at(0).embeddings[:3])
    day0 = prefix_set(ts, days=0.0)
    assert all(tr.n_posts >= 1 and (tr.timestamps <= 0.0).all() for tr in day0)
    with pytest.raises(ValueError):
        prefix_set(ts)


def test_erde_by_hand():
    # users: TP after 3 posts, FP, FN, TN; c_fp = share of positives = 0.5
    d = np.array([True, True, False, False])
    k = np.array([3, 1, 10, 10])
    y = np.array([True, False, True, False])
    lc5 = 1 - 1 / (1 + math.exp(3 - 5))
    assert erde(d, k, y, o=5) == pytest.approx((lc5 + 0.5 + 1.0 + 0.0) / 4)
    assert erde(d, k, y, o=50) == pytest.approx((1 - 1 / (1 + math.exp(3 - 50)) + 0.5 + 1.0) / 4)
    assert erde(d, k, y, o=5, c_fp=0.1) == pytest.approx((lc5 + 0.1 + 1.0) / 4)


def test_f_latency_is_f1_times_speed_and_penalty_is_half_at_the_calibration_point():
    p = math.log(3) / (20 - 1)
    assert latency_penalty(1, p) == pytest.approx(0.0)
    assert latency_penalty(20, p) == pytest.approx(0.5)
    d = np.array([True, True, False, True])
    y = np.array([True, True, True, False])
    k = np.array([1, 20, 30, 2])
    f1 = 2 * (2 / 3) * (2 / 3) / (4 / 3)
    assert f_latency(d, k, y, p=p) == pytest.approx(f1 * (1 - np.median([0.0, 0.5])))
    assert f_latency(np.zeros(3, bool), k[:3], y[:3], p=p) == 0.0


def test_post_grid_is_dense_then_geometric():
    assert post_grid(5) == [1, 2, 3, 4, 5]
    g = post_grid(400)
    assert g[:50] == list(range(1, 51)) and g[-1] == 400 and len(g) <= 70


def test_trained_model_detects_better_with_more_posts_and_reports_erde():
    cfg = PlantedConfig(n_users=60, dim=8, n_planted=3, mean_posts=14, max_posts=20)
    ts, _ = make_planted_trajectory_set(config=cfg, seed=2)
    res = train(ts, TrainConfig(device="cpu", epochs=6, patience=6, hidden=0, bootstrap=0))
    test = ts.subset([ts.user_ids[i] for i in res.split.test])
    e = early_detection(res.model, test, classes=res.classes)
    assert e.posts_seen[0] == 1.0 and len(e.auc) == len(e.cuts)
    assert np.nanmean(e.auc[-3:]) >= np.nanmean(e.auc[:2])
    assert 0.0 <= e.erde50 <= e.erde5 + 1e-12 <= 1.0 and 0.0 <= e.f_latency <= 1.0
    assert res.metrics_dict()["early"]["erde5"] == pytest.approx(e.erde5)
    days = early_detection(res.model, test, by="days", classes=res.classes, cuts=[1.0, 5.0, 50.0])
    assert days.by == "days" and list(days.cuts) == [1.0, 5.0, 50.0]
    assert days.posts_seen[0] <= days.posts_seen[-1]
