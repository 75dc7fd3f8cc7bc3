"""time_unit: unset time constants keep their default durations in the unit, timestamps are
converted once at the entry of both paths, and the two paths agree in any unit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cvx_core.features.analytic import AnalyticBackend
from cvx_core.features.config import TIME_UNITS, TemporalFeaturesConfig
from cvx_core.features.differentiable import TorchBackend


def test_defaults_mean_the_same_durations_in_every_unit():
    for unit, days in TIME_UNITS.items():
        cfg = TemporalFeaturesConfig(time_unit=unit)
        assert cfg.min_dt * days == pytest.approx(1 / 1440)
        assert cfg.silence_gap * days == pytest.approx(7.0)
        assert np.allclose(np.array(cfg.scales) * days, [1.0, 7.0, 30.0])
        assert TemporalFeaturesConfig.from_dict(cfg.to_dict()) == cfg
    assert TemporalFeaturesConfig(time_unit="seconds", min_dt=0.01).min_dt == 0.01
    with pytest.raises(ValueError, match="time_unit"):
        TemporalFeaturesConfig(time_unit="fortnights")


@settings(max_examples=25, deadline=None)
@given(unit=st.sampled_from(sorted(TIME_UNITS)), seed=st.integers(0, 10_000))
def test_features_in_a_unit_equal_days_features_on_rescaled_times_on_both_paths(unit, seed):
    rng = np.random.default_rng(seed)
    E = rng.normal(size=(12, 3))
    t = np.concatenate([[0.0], np.cumsum(rng.exponential(0.5, size=11))])
    cfg = TemporalFeaturesConfig(time_unit=unit)
    same_numbers_in_days = TemporalFeaturesConfig(**{**cfg.to_dict(), "time_unit": "days"})
    a = AnalyticBackend.extract_all(E, t, cfg)
    b = AnalyticBackend.extract_all(E, t / TIME_UNITS[unit], same_numbers_in_days)
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    torch_path = TorchBackend.extract_all(torch.tensor(E), t, cfg).numpy()
    np.testing.assert_allclose(torch_path, a, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(AnalyticBackend.time_steps(t, cfg), np.maximum(np.diff(t) / TIME_UNITS[unit], cfg.min_dt))


def test_sensor_rate_data_keeps_its_velocity_in_seconds():
    # 10 Hz samples: in days every step is below the one-minute floor; in seconds they are not
    E = np.cumsum(np.ones((20, 2)) * 0.1, axis=0)
    t_days = np.arange(20) * 0.1 / 86400.0
    days = AnalyticBackend.extract_all(E, t_days)
    secs = AnalyticBackend.extract_all(E, t_days, TemporalFeaturesConfig(time_unit="seconds", min_dt=0.01))
    np.testing.assert_allclose(secs[:2], [1.0, 1.0])  # 0.1 per 0.1 s
    assert days[0] == pytest.approx(0.1 * 1440)  # floored at one minute: the rate is lost
