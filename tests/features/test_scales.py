"""scales="auto": time unit, scales and silence threshold chosen from the data's gaps
(cvx_core.features.scales); fixed scales and the SPEC defaults stay as they were."""

from __future__ import annotations

import numpy as np
import pytest

from cvx_core.data.trajectory import Trajectory, TrajectorySet
from cvx_core.features.analytic import AnalyticBackend
from cvx_core.features.config import TIME_UNITS, TemporalFeaturesConfig
from cvx_core.features.scales import ScaleChoice, readable, resolve_features, resolve_scales


def _set(period_s: float, *, n_users: int = 12, n_posts: int = 60, dim: int = 4, seed: int = 0) -> TrajectorySet:
    """Users posting about every ``period_s`` seconds (exponential jitter), random walks."""
    rng = np.random.default_rng(seed)
    start = np.datetime64("2024-01-01T00:00:00", "us")
    trajs = []
    for u in range(n_users):
        gaps = rng.exponential(period_s, size=n_posts - 1)
        t_us = np.concatenate([[0.0], np.cumsum(gaps)]) * 1e6
        E = np.cumsum(rng.normal(size=(n_posts, dim)), axis=0)
        trajs.append(Trajectory(f"u{u}", E, start + t_us.astype("timedelta64[us]"), label=u % 2))
    return TrajectorySet(trajs, name=f"every {period_s} s")


def _points_per_scale(ts: TrajectorySet, cfg: TemporalFeaturesConfig) -> list[float]:
    """Median number of resampled points per trajectory at each scale of ``cfg``."""
    out = []
    for w in cfg.scales:
        n = [AnalyticBackend.resample(tr.embeddings, cfg.to_unit(tr.timestamps), w)[0].shape[0] for tr in ts]
        out.append(float(np.median(n)))
    return out


def test_second_rate_data_gets_seconds_and_bins_that_split_every_trajectory():
    ts = _set(1.0)
    cfg, choice = resolve_features(TemporalFeaturesConfig.auto(), ts)
    assert isinstance(choice, ScaleChoice) and cfg.time_unit == "seconds" == choice.time_unit
    assert cfg.scales == choice.scales and 1.0 <= cfg.scales[0] < cfg.scales[-1] <= 60.0
    pts = _points_per_scale(ts, cfg)
    # every scale leaves several bins and merges posts: the multi-scale features carry information
    assert all(2 < p < 60 for p in pts) and pts == sorted(pts, reverse=True)
    # the SPEC's day defaults put each of these minute-long trajectories into one bin
    assert _points_per_scale(ts, TemporalFeaturesConfig()) == [1.0, 1.0, 1.0]
    assert cfg.min_dt < 0.1 and cfg.silence_gap >= 3.0 and "median" in choice.reason


def test_day_rate_data_gets_days_and_different_scales_from_second_rate_data():
    sec, _ = resolve_features(TemporalFeaturesConfig.auto(), _set(1.0))
    day, choice = resolve_features(TemporalFeaturesConfig.auto(), _set(86400.0))
    assert day.time_unit == "days" and choice.median_gap == pytest.approx(0.7, rel=0.5)
    sec_days = np.array(sec.scales) * TIME_UNITS[sec.time_unit]
    day_days = np.array(day.scales) * TIME_UNITS[day.time_unit]
    assert day_days.min() > 1000 * sec_days.max()
    assert all(2 < p < 60 for p in _points_per_scale(_set(86400.0), day))
    assert day.min_dt == pytest.approx(1 / 1440)  # the SPEC's minute is kept at day rate
    assert 1.0 <= day.silence_gap <= 10.0


def test_features_from_an_auto_config_have_the_chosen_scales_and_nonzero_scale_features():
    ts = _set(1.0)
    cfg, _ = resolve_features(TemporalFeaturesConfig.auto(), ts)
    tr = ts.at(0)
    x = AnalyticBackend.extract_all(tr.embeddings, tr.timestamps, cfg)
    assert x.shape == (cfg.feature_dim(ts.dim),)
    scale_part = x[4 * ts.dim + 5:]
    assert np.all(scale_part > 0)
    x_day = AnalyticBackend.extract_all(tr.embeddings, tr.timestamps, TemporalFeaturesConfig())
    assert np.all(x_day[4 * ts.dim + 5:] == 0)  # one bin per scale: the day defaults see nothing


def test_fixed_scales_and_the_spec_defaults_are_unchanged():
    cfg = TemporalFeaturesConfig()
    assert cfg.scales == (1.0, 7.0, 30.0) and cfg.time_unit == "days" and cfg.silence_gap == 7.0
    assert not cfg.is_auto
    explicit = TemporalFeaturesConfig(scales=(1, 7, 30))
    assert explicit == cfg
    assert resolve_features(explicit, _set(1.0)) == (explicit, None)
    rng = np.random.default_rng(3)
    E, t = rng.normal(size=(20, 5)), np.sort(rng.uniform(0, 90, size=20))
    np.testing.assert_array_equal(AnalyticBackend.extract_all(E, t, explicit), AnalyticBackend.extract_all(E, t))


def test_an_unresolved_auto_config_refuses_to_compute_features():
    cfg = TemporalFeaturesConfig.auto()
    assert cfg.is_auto and cfg.to_dict()["scales"] == "auto"
    assert TemporalFeaturesConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="resolve_features"):
        AnalyticBackend.extract_all(np.zeros((3, 2)), np.arange(3.0), cfg)
    with pytest.raises(ValueError, match="resolve_features"):
        cfg.feature_dim(2)


def test_explicit_time_constants_and_unit_survive_auto_resolution():
    cfg, choice = resolve_features(TemporalFeaturesConfig(scales="auto", time_unit="minutes", silence_gap=0.5), _set(1.0))
    assert cfg.time_unit == "minutes" == choice.time_unit and cfg.silence_gap == 0.5
    assert cfg.scales == choice.scales and cfg.min_dt == choice.min_dt
    with pytest.raises(ValueError, match="stated unit"):
        TemporalFeaturesConfig.auto(silence_gap=3.0)  # time_unit "auto" and a number without a unit
    with pytest.raises(ValueError, match="'auto' goes with scales='auto'"):
        TemporalFeaturesConfig(time_unit="auto")
    with pytest.raises(ValueError, match="numbers or 'auto'"):
        TemporalFeaturesConfig(scales="daily")


def test_short_trajectories_get_fewer_distinct_scales_between_gap_and_span():
    # four yearly posts per user: a quarter of the span is below two gaps
    choice = resolve_scales([np.array([0.0, 365.0, 730.0, 1095.0])] * 5)
    assert choice.time_unit == "weeks" and 1 <= len(choice.scales) <= 3
    assert all(40 <= s <= 160 for s in choice.scales) and "short trajectories" in choice.reason


def test_data_without_two_distinct_times_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="explicit scales"):
        resolve_scales([np.array([0.0]), np.array([2.0, 2.0])])
    with pytest.raises(ValueError, match="finite"):
        resolve_scales(np.array([1.0, np.nan]))


def test_readable_rounds_to_the_one_two_five_series():
    assert [readable(x) for x in (0.07, 0.14, 0.3, 0.75, 3.3, 7.5, 1e-5)] == [0.05, 0.1, 0.2, 1.0, 5.0, 10.0, 1e-5]
    assert readable(3.3, direction="up") == 5.0 and readable(3.3, direction="down") == 2.0
    with pytest.raises(ValueError):
        readable(0.0)


def test_a_train_config_carries_an_auto_feature_config_through_its_json_round_trip():
    from cvx_core.learn.config import TrainConfig

    cfg = TrainConfig(features=TemporalFeaturesConfig.auto())
    d = cfg.to_dict()
    assert d["features"]["scales"] == "auto" and d["features"]["time_unit"] == "auto"
    assert TrainConfig.from_dict(d) == cfg
    resolved, choice = resolve_features(cfg.features, _set(1.0))
    assert resolved.to_dict()["scales"] == list(choice.scales)
    assert choice.to_dict()["reason"] == choice.reason


def test_scales_given_as_an_array_or_list_are_still_fixed_scales():
    assert TemporalFeaturesConfig(scales=np.array([1.0, 7.0, 30.0])) == TemporalFeaturesConfig()
    assert TemporalFeaturesConfig(scales=[2, 3]).scales == (2.0, 3.0)
