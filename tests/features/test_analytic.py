"""Tests of cvx_core.features.analytic: the layout, the analytic path's hand-computed values, its
edge cases (T = 1, 2, 3), the discrete originals of the relaxations and config validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cvx_core.features.analytic import (
    COSINE_EPS,
    VOLATILITY_EPS,
    AnalyticBackend,
    DiscreteSummary,
    TemporalOps,
    feature_layout,
    feature_names,
)
from cvx_core.features.config import TemporalFeaturesConfig

A = AnalyticBackend


def sigmoid(x: float) -> float:
    if x < -700:
        return 0.0
    return 1.0 / (1.0 + math.exp(-x))


# three posts by hand: v1=(1,0), v2=(0,1), v3=(0,3) at days 0, 1, 3
E3 = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
T3 = np.array([0.0, 1.0, 3.0])
CFG3 = TemporalFeaturesConfig(scales=(1.0, 2.0, 7.0))


# --- layout ------------------------------------------------------------------------------
def test_layout_size_is_4d_plus_5_plus_2s_and_3083_for_768():
    assert feature_layout(768).size == 3083
    assert len(feature_names(768)) == 3083
    cfg = TemporalFeaturesConfig(scales=(1.0, 3.0))
    assert feature_layout(10, cfg).size == cfg.feature_dim(10) == 4 * 10 + 5 + 4


def test_layout_blocks_tile_the_vector_in_spec_order():
    lay = feature_layout(4)
    names = [b.name for b in lay.blocks]
    assert names[:9] == [
        "mean_velocity", "attended_drift", "volatility", "mean_acceleration",
        "cp_count", "max_severity", "silence_count", "mean_cosine", "drift_norm",
    ]
    assert names[9:] == [
        "scale_1d_step_norm", "scale_1d_cosine", "scale_7d_step_norm", "scale_7d_cosine",
        "scale_30d_step_norm", "scale_30d_cosine",
    ]
    stop = 0
    for b in lay.blocks:
        assert b.start == stop
        stop = b.stop
    assert stop == lay.size
    assert lay.slice("volatility") == slice(8, 12)
    assert lay.slice("scalars") == slice(16, 21)
    assert lay.slice("scales") == slice(21, 27)


def test_feature_names_label_each_entry_and_name_of_inverts_them():
    lay = feature_layout(3)
    names = feature_names(3)
    assert names[:3] == ["mean_velocity[0]", "mean_velocity[1]", "mean_velocity[2]"]
    assert names[12] == "cp_count" and names[16] == "drift_norm"
    assert all(lay.name_of(i) == n for i, n in enumerate(names))
    assert len(set(names)) == len(names)
    with pytest.raises(IndexError):
        lay.name_of(lay.size)
    with pytest.raises(KeyError):
        lay.block("nope")


def test_layout_rejects_bad_dimension():
    with pytest.raises(ValueError, match="dim"):
        feature_layout(0)


def test_analytic_backend_satisfies_the_protocol():
    assert isinstance(AnalyticBackend, TemporalOps)


# --- hand-made values ------------------------------------------------------------------------
def test_time_steps_floor_gaps_at_min_dt():
    dt = A.time_steps([0.0, 0.0, 2.0, 2.0 + 1e-9], TemporalFeaturesConfig())
    np.testing.assert_array_equal(dt, [1.0 / 1440.0, 2.0, 1.0 / 1440.0])


def test_velocity_acceleration_drift_cosine_by_hand():
    np.testing.assert_allclose(A.velocity(E3, T3), [[-1.0, 1.0], [0.0, 1.0]])
    # a = (u2 - u1) / (0.5 * (1 + 2))
    np.testing.assert_allclose(A.acceleration(E3, T3), [[2.0 / 3.0, 0.0]])
    np.testing.assert_allclose(A.drift(E3), [-1.0, 3.0])
    np.testing.assert_allclose(A.cosine_distance(E3), [1.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(A.volatility(E3, T3), [math.sqrt(0.25 + 1e-12), math.sqrt(1e-12)])


def test_cosine_distance_of_zero_vectors_uses_the_1e16_floor():
    E = np.array([[0.0, 0.0], [0.0, 0.0], [1e-9, 0.0]])
    c = A.cosine_distance(E)
    np.testing.assert_array_equal(c, [1.0, 1.0])
    assert COSINE_EPS == 1e-16 and VOLATILITY_EPS == 1e-12


def test_resample_by_hand_anchors_bins_at_first_point():
    t = np.array([10.0, 10.5, 11.2, 11.9, 15.0])
    E = np.arange(10, dtype=float).reshape(5, 2)
    E_r, t_r = A.resample(E, t, 1.0)
    # k = floor(t - 10) = 0, 0, 1, 1, 5
    np.testing.assert_allclose(E_r, [[1.0, 2.0], [5.0, 6.0], [8.0, 9.0]])
    np.testing.assert_allclose(t_r, [10.25, 11.55, 15.0])


def test_resample_rejects_bad_width():
    with pytest.raises(ValueError, match="width"):
        A.resample(E3, T3, 0.0)


def test_extract_all_three_posts_by_hand():
    f = A.extract_all(E3, T3, CFG3)
    lay = feature_layout(2, CFG3)
    np.testing.assert_allclose(f[lay.slice("mean_velocity")], [-0.5, 1.0])
    np.testing.assert_allclose(f[lay.slice("attended_drift")], [-1.0, 3.0])
    np.testing.assert_allclose(f[lay.slice("volatility")], [math.sqrt(0.25 + 1e-12), 1e-6])
    np.testing.assert_allclose(f[lay.slice("mean_acceleration")], [2.0 / 3.0, 0.0], atol=1e-15)
    # c = (1, 0); dt = (1, 2)
    np.testing.assert_allclose(f[lay.slice("cp_count")], sigmoid(0.7 / 0.05) + sigmoid(-0.3 / 0.05))
    np.testing.assert_allclose(f[lay.slice("max_severity")], 0.05 * math.log(math.exp(20.0) + 1.0))
    np.testing.assert_allclose(f[lay.slice("silence_count")], sigmoid(-6.0) + sigmoid(-5.0))
    np.testing.assert_allclose(f[lay.slice("mean_cosine")], 0.5)
    np.testing.assert_allclose(f[lay.slice("drift_norm")], math.sqrt(10.0))
    # scale 1 day: three singleton bins; scale 2 days: {v1, v2} -> (0.5, 0.5), {v3}; 7 days: one bin
    np.testing.assert_allclose(f[lay.slice("scale_1d_step_norm")], (math.sqrt(2.0) + 2.0) / 2)
    np.testing.assert_allclose(f[lay.slice("scale_1d_cosine")], 0.5)
    np.testing.assert_allclose(f[lay.slice("scale_2d_step_norm")], math.sqrt(6.5))
    np.testing.assert_allclose(f[lay.slice("scale_2d_cosine")], 1.0 - 1.5 / math.sqrt(4.5))
    np.testing.assert_array_equal(f[lay.slice("scale_7d_step_norm")], 0.0)
    np.testing.assert_array_equal(f[lay.slice("scale_7d_cosine")], 0.0)


def test_extract_all_agrees_with_the_single_ops():
    rng = np.random.default_rng(0)
    E = rng.normal(size=(9, 5))
    t = np.cumsum(rng.exponential(2.0, size=9))
    cfg = TemporalFeaturesConfig()
    f = A.extract_all(E, t, cfg)
    lay = feature_layout(5, cfg)
    np.testing.assert_allclose(f[lay.slice("mean_velocity")], A.velocity(E, t).mean(0), rtol=1e-12)
    np.testing.assert_allclose(f[lay.slice("volatility")], A.volatility(E, t), rtol=1e-12)
    np.testing.assert_allclose(f[lay.slice("mean_acceleration")], A.acceleration(E, t).mean(0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(f[lay.slice("attended_drift")], A.drift(E))
    np.testing.assert_allclose(f[lay.slice("cp_count")], A.soft_changepoints(E, cfg).sum())
    np.testing.assert_allclose(f[lay.slice("max_severity")], A.smooth_max_severity(E, cfg))
    np.testing.assert_allclose(f[lay.slice("silence_count")], A.soft_silences(t, cfg).sum())


def test_single_post_gives_zero_blocks_and_volatility_floor():
    f = A.extract_all(np.array([[1.0, 2.0, 3.0]]), np.array([5.0]))
    lay = feature_layout(3)
    np.testing.assert_array_equal(np.delete(f, np.r_[lay.slice("volatility")]), 0.0)
    np.testing.assert_array_equal(f[lay.slice("volatility")], math.sqrt(1e-12))


def test_two_posts_have_zero_acceleration_and_equal_timestamps_use_min_dt():
    E = np.array([[1.0, 0.0], [1.0, 1.0]])
    f = A.extract_all(E, np.array([3.0, 3.0]))
    lay = feature_layout(2)
    np.testing.assert_allclose(f[lay.slice("mean_velocity")], [0.0, 1440.0])
    np.testing.assert_array_equal(f[lay.slice("mean_acceleration")], 0.0)
    np.testing.assert_allclose(f[lay.slice("volatility")], 1e-6)
    np.testing.assert_allclose(f[lay.slice("max_severity")], 1.0 - 1.0 / math.sqrt(2.0))


def test_burst_window_equals_features_of_the_burst_aggregated_sequence():
    rng = np.random.default_rng(1)
    E = rng.normal(size=(12, 4))
    t = np.sort(rng.uniform(0, 5, size=12))
    cfg = TemporalFeaturesConfig(burst_window=0.5)
    E_b, t_b = A.resample(E, t, 0.5)
    np.testing.assert_allclose(A.extract_all(E, t, cfg), A.extract_all(E_b, t_b), rtol=1e-13, atol=1e-13)


def test_ema_follows_the_recurrence_by_hand():
    cfg = TemporalFeaturesConfig(ema_tau=2.0)
    E = np.array([[0.0], [1.0], [1.0]])
    t = np.array([0.0, 2.0, 4.0])
    g = math.exp(-1.0)
    m2 = (1 - g) * 1.0
    np.testing.assert_allclose(A.ema(E, t, cfg)[:, 0], [0.0, m2, g * m2 + (1 - g)])


def test_analytic_inputs_are_validated():
    with pytest.raises(ValueError, match="non-decreasing"):
        A.extract_all(E3, np.array([0.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match=r"\[T, D\]"):
        A.extract_all(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="timestamps"):
        A.extract_all(E3, np.zeros(2))
    with pytest.raises(TypeError, match="TemporalFeaturesConfig"):
        A.extract_all(E3, T3, {"temperature": 1.0})


# --- discrete originals ------------------------------------------------------------------------
def test_discrete_summary_counts_exactly():
    E = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])
    t = np.array([0.0, 1.0, 10.0, 10.5, 30.0])
    s = A.discrete_summary(E, t, TemporalFeaturesConfig(), k=1)
    assert isinstance(s, DiscreteSummary)
    # c = (~0.005, ~0.9, 0, 1): steps 1 and 3 exceed 0.3; gaps 9 and 19.5 exceed 7
    assert s.n_change_points == 2 and s.change_point_steps == (1, 3)
    assert s.max_severity == pytest.approx(1.0)
    assert s.n_silences == 2 and s.silence_steps == (1, 3)
    assert s.top_dims == (0,) and s.top_dims_drift == (2.0,)


def test_discrete_summary_of_one_post_is_empty():
    s = A.discrete_summary(np.ones((1, 3)), np.zeros(1))
    assert (s.n_change_points, s.max_severity, s.n_silences) == (0, 0.0, 0)
    assert len(s.top_dims) == 3


@pytest.mark.parametrize("temperature", [1e-2, 1e-3, 1e-4])
def test_soft_relaxations_converge_to_discrete_originals_as_temperature_shrinks(temperature):
    rng = np.random.default_rng(3)
    E = rng.normal(size=(30, 6))
    E[10:] += 3.0 * rng.normal(size=6)  # a change
    t = np.cumsum(rng.choice([0.5, 2.0, 9.0, 20.0], size=30))
    base = TemporalFeaturesConfig()
    c = A.cosine_distance(E)
    dt = A.time_steps(t, base)
    margin_c = np.min(np.abs(c - base.cp_threshold))
    margin_t = np.min(np.abs(dt - base.silence_gap))
    assert margin_c > 0.01 and margin_t > 0.4
    cfg = TemporalFeaturesConfig(temperature=temperature, silence_temperature=temperature)
    exact = A.discrete_summary(E, t, cfg)
    f = A.extract_all(E, t, cfg)
    lay = feature_layout(6, cfg)
    cp = float(f[lay.slice("cp_count")][0])
    sm = float(f[lay.slice("max_severity")][0])
    sil = float(f[lay.slice("silence_count")][0])
    # errors bounded by the logistic tail at the margin / the logsumexp slack
    assert abs(cp - exact.n_change_points) <= len(c) * sigmoid(-margin_c / temperature) + 1e-12
    assert exact.max_severity <= sm <= exact.max_severity + temperature * math.log(len(c)) + 1e-12
    assert abs(sil - exact.n_silences) <= len(dt) * sigmoid(-margin_t / temperature) + 1e-12
    if temperature <= 1e-3:
        assert round(cp) == exact.n_change_points and round(sil) == exact.n_silences


# --- config validation -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": 0.0}, "temperature"),
        ({"silence_temperature": -1.0}, "silence_temperature"),
        ({"scales": ()}, "scales"),
        ({"scales": (1.0, -7.0)}, "scales"),
        ({"min_dt": 0.0}, "min_dt"),
        ({"burst_window": -1.0}, "burst_window"),
    ],
)
def test_config_rejects_bad_constants_with_a_clear_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TemporalFeaturesConfig(**kwargs)


@pytest.mark.parametrize("n_posts", [5, 40])
def test_resample_matches_a_plain_loop_for_few_and_many_posts_per_bin(n_posts):
    rng = np.random.default_rng(n_posts)
    t = np.sort(rng.uniform(0.0, 3.0, size=n_posts))
    E = rng.normal(size=(n_posts, 3))
    E_r, t_r = A.resample(E, t, 1.0)
    k = np.floor((t - t[0]) / 1.0)
    want_E = [E[k == b].mean(0) for b in np.unique(k)]
    want_t = [t[k == b].mean() for b in np.unique(k)]
    np.testing.assert_allclose(E_r, want_E, rtol=1e-13)
    np.testing.assert_allclose(t_r, want_t, rtol=1e-13)
