"""Tests of cvx_core.analysis.attribution: Pareto drift attribution for one trajectory, between
points or segments, and over a cohort."""

from __future__ import annotations

import numpy as np
import pytest

from cvx_core.analysis.attribution import (
    CohortAttribution,
    attribute_change,
    attribute_drift,
    attribute_segments,
    cohort_attribution,
    drift_shares,
    pareto_dims,
    rank_dimensions,
)
from cvx_core.data.trajectory import Trajectory, TrajectorySet
from cvx_core.features.config import TemporalFeaturesConfig


def traj(uid: str, emb, label=None) -> Trajectory:
    emb = np.asarray(emb, dtype=np.float32)
    dts = np.datetime64("2024-01-01", "ns") + np.arange(emb.shape[0]).astype("timedelta64[h]").astype(
        "timedelta64[ns]"
    )
    return Trajectory(uid, emb, dts, label=label)


def test_shares_match_direct_computation_on_a_random_drift():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(7, 12))
    att = attribute_drift(emb)
    delta = emb[-1] - emb[0]
    expected = np.abs(delta) / np.abs(delta).sum()
    np.testing.assert_allclose(att.shares, expected, rtol=1e-12)
    np.testing.assert_allclose(att.drift, delta)
    assert att.shares.sum() == pytest.approx(1.0)
    # pareto set from a direct greedy count
    order = np.argsort(-expected, kind="stable")
    k = int(np.argmax(np.cumsum(expected[order]) >= 0.8)) + 1
    assert att.pareto_dims == tuple(int(d) for d in order[:k])
    assert att.start == 0 and att.end == 6 and att.mode == "points"


def test_single_dominant_dimension_is_the_whole_pareto_set():
    emb = np.zeros((3, 5))
    emb[-1] = [0.01, 0.0, 9.0, -0.02, 0.0]
    att = attribute_drift(emb)
    assert att.pareto_dims == (2,)
    assert att.top(2) == [(2, pytest.approx(9.0 / 9.03)), (3, pytest.approx(0.02 / 9.03))]


def test_ties_are_ranked_by_dimension_index():
    shares = drift_shares(np.array([0.0, -2.0, 1.0, 2.0, 1.0]))
    assert rank_dimensions(shares).tolist() == [1, 3, 2, 4, 0]
    assert pareto_dims(shares, fraction=0.3) == (1,)
    assert pareto_dims(shares, fraction=0.5) == (1, 3)
    assert pareto_dims(shares, fraction=0.8) == (1, 3, 2)  # 2/6 + 2/6 + 1/6 = 0.833


def test_all_equal_shares_need_ceil_fraction_times_d_dimensions():
    shares = drift_shares(np.full(10, -0.3))
    np.testing.assert_allclose(shares, 0.1)
    assert pareto_dims(shares, fraction=0.8) == tuple(range(8))  # 0.8 reached despite float sums
    assert pareto_dims(shares, fraction=1.0) == tuple(range(10))
    assert pareto_dims(shares, fraction=0.05) == (0,)


def test_zero_drift_gives_zero_shares_and_empty_set_without_warnings():
    emb = np.tile(np.arange(4.0), (5, 1))
    emb[2] += 3.0  # moves in the middle, returns: v_T - v_1 = 0
    with np.errstate(all="raise"):
        att = attribute_drift(emb)
    assert np.all(att.shares == 0.0) and att.pareto_dims == () and att.top() == []
    assert att.drift_norm == 0.0
    one_post = attribute_drift(np.ones((1, 3)))
    assert one_post.pareto_dims == ()


def test_pareto_fraction_comes_from_the_config():
    delta = np.array([5.0, 3.0, 1.0, 1.0])
    emb = np.stack([np.zeros(4), delta])
    assert attribute_drift(emb).pareto_dims == (0, 1)  # 0.5, 0.8
    assert attribute_drift(emb, config=TemporalFeaturesConfig(pareto_fraction=0.5)).pareto_dims == (0,)
    assert attribute_drift(emb, config=TemporalFeaturesConfig(pareto_fraction=0.9)).pareto_size == 3


def test_drift_between_two_chosen_points():
    emb = np.arange(20.0).reshape(5, 4) ** 2
    att = attribute_drift(emb, start=1, end=-2)
    np.testing.assert_allclose(att.drift, emb[3] - emb[1])
    assert (att.start, att.end) == (1, 3)
    with pytest.raises(ValueError, match="start"):
        attribute_drift(emb, start=3, end=1)
    with pytest.raises(IndexError):
        attribute_drift(emb, start=0, end=9)


def test_segment_means_across_a_change_point():
    emb = np.zeros((10, 3))
    emb[4:, 1] = 2.0
    emb[4:, 2] = -1.0
    emb[7:, 0] = 50.0  # a second change point at 7
    att = attribute_change(emb, 4, changepoints=(4, 7))
    np.testing.assert_allclose(att.drift, [0.0, 2.0, -1.0])  # segment [4, 7) vs [0, 4)
    assert att.pareto_dims == (1, 2) and att.mode == "segments"
    whole = attribute_change(emb, 4)  # the after segment runs to the end
    np.testing.assert_allclose(whole.drift, [150.0 / 6.0, 2.0, -1.0])
    windowed = attribute_change(emb, 4, window=2)
    np.testing.assert_allclose(windowed.drift, [0.0, 2.0, -1.0])
    seg = attribute_segments(emb, before=(0, 2), after=(8, 10))
    np.testing.assert_allclose(seg.drift, [50.0, 2.0, -1.0])
    with pytest.raises(ValueError, match="change point"):
        attribute_change(emb, 0)


def test_cohort_mean_class_shares_and_class_difference_on_a_tiny_set():
    ts = TrajectorySet(
        [
            traj("a", [[0, 0, 0], [1, 0, 0]], label=0),  # shares (1, 0, 0)
            traj("b", [[0, 0, 0], [1, 1, 0]], label=0),  # (0.5, 0.5, 0)
            traj("c", [[0, 0, 0], [0, 0, -4]], label=1),  # (0, 0, 1)
            traj("d", [[1, 1, 1], [1, 1, 1]], label=1),  # zero drift: (0, 0, 0)
        ]
    )
    co = cohort_attribution(ts)
    assert isinstance(co, CohortAttribution) and co.n_users == 4
    np.testing.assert_allclose(co.mean_shares, [1.5 / 4, 0.5 / 4, 1.0 / 4])
    assert sorted(co.class_shares) == [0, 1]
    np.testing.assert_allclose(co.class_shares[0], [0.75, 0.25, 0.0])
    np.testing.assert_allclose(co.class_shares[1], [0.0, 0.0, 0.5])
    np.testing.assert_allclose(co.class_difference, [-0.75, -0.25, 0.5])
    assert co.class_counts == {0: 2, 1: 2}
    assert co.per_user_shares.shape == (4, 3)
    assert co.top_difference(1) == [(0, pytest.approx(-0.75))]
    assert co.pareto_dims(label=0) == (0, 1)


def test_cohort_without_two_classes_has_no_difference():
    ts = TrajectorySet([traj("a", [[0, 0], [1, 0]], label=1), traj("b", [[0, 0], [0, 1]])])
    co = cohort_attribution(ts)
    assert co.class_difference is None and list(co.class_shares) == [1]
    np.testing.assert_allclose(co.mean_shares, [0.5, 0.5])


def test_cohort_class_difference_finds_the_planted_dimensions(small_planted):
    ts, truth = small_planted
    co = cohort_attribution(ts)
    top = {d for d, _ in co.top_difference(len(truth["planted_dims"]))}
    assert len(top & set(truth["planted_dims"])) >= len(truth["planted_dims"]) - 1
    assert all(co.class_difference[d] > 0 for d in truth["planted_dims"])
