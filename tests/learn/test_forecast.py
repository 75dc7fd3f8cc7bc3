"""The latent-ODE forecaster: on trajectories driven by a known ODE (a rotation in a 2-D
subspace of D = 64, irregular times) it beats linear extrapolation and the last value
clearly; forecasts are refused before the last post; save and load round-trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cvx_core.data.synthetic import rotating_trajectories
from cvx_core.learn.forecast import (
    ForecastConfig,
    evaluate_forecaster,
    fit_forecaster,
    forecast,
    load_forecaster,
    save_forecaster,
)
from cvx_core.features.ode import ODEConfig


@pytest.fixture(scope="module")
def rotation_split():
    ts = rotating_trajectories(160, dim=64, n_posts=(8, 16), seed=0)
    ids = ts.user_ids
    return ts.subset(ids[:120]), ts.subset(ids[120:])


@pytest.fixture(scope="module")
def fitted(rotation_split):
    torch.set_num_threads(1)
    cfg = ForecastConfig(ode=ODEConfig(latent_dim=8, input_dim=8, adjoint=False), epochs=25, seed=0)
    return fit_forecaster(rotation_split[0], config=cfg), cfg


@pytest.mark.slow
def test_forecaster_beats_linear_extrapolation_and_last_value_on_a_known_ode(fitted, rotation_split):
    model, _ = fitted
    ev = evaluate_forecaster(model, rotation_split[1])
    assert ev.n_users == 40
    assert ev.ratio_linear < 0.2, ev.as_dict()
    assert ev.ratio_last_value < 0.5, ev.as_dict()


def test_forecast_before_the_last_post_is_refused(fitted, rotation_split):
    model, _ = fitted
    tr = rotation_split[1].at(0)
    with pytest.raises(ValueError, match="before the last post"):
        forecast(model, tr, float(tr.timestamps[-1]) - 1.0)


def test_forecast_accepts_a_datetime_and_days_alike(fitted, rotation_split):
    model, _ = fitted
    tr = rotation_split[1].at(1)
    days = float(tr.timestamps[-1]) + 2.5
    at = tr.datetimes[0].astype("datetime64[us]") + np.timedelta64(int(days * 86_400e6), "us")
    a, b = forecast(model, tr, days), forecast(model, tr, at)
    assert a.shape == (64,) and np.allclose(a, b, atol=1e-5)


def test_saved_forecaster_reloads_with_identical_predictions(fitted, rotation_split, tmp_path):
    model, cfg = fitted
    save_forecaster(model, cfg, tmp_path / "fc")
    again, cfg2 = load_forecaster(tmp_path / "fc")
    tr = rotation_split[1].at(2)
    t = float(tr.timestamps[-1]) + 1.0
    assert cfg2 == cfg
    assert np.array_equal(forecast(model, tr, t), forecast(again, tr, t))


def test_cli_forecast_trains_saves_and_reloads_a_forecaster(tmp_path, capsys):
    import json

    from cvx_core.cli import main
    from cvx_core.data.io import save_trajectories

    ts = rotating_trajectories(30, dim=8, n_posts=(6, 9), seed=2)
    data = tmp_path / "rot.parquet"
    save_trajectories(ts, data)
    tr = ts.at(0)
    at = str(tr.datetimes[-1].astype("datetime64[s]") + np.timedelta64(2, "D"))
    args = [str(data), "--user", tr.user_id, "--at", at, "--epochs", "2", "--model", str(tmp_path / "fc")]
    assert main(["forecast", *args]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["user_id"] == tr.user_id and len(first["embedding"]) == 8
    assert abs(first["horizon_days"] - 2.0) < 2e-5  # --at was rounded to the second and first["held_out_last_posts"]["n_users"] == 30
    assert main(["forecast", *args]) == 0  # second call loads the saved forecaster
    second = json.loads(capsys.readouterr().out)
    assert second["embedding"] == first["embedding"] and second["held_out_last_posts"] is None
    early = str(tr.datetimes[0].astype("datetime64[s]"))
    assert main(["forecast", str(data), "--user", tr.user_id, "--at", early, "--model", str(tmp_path / "fc")]) == 2
    assert "before the last post" in capsys.readouterr().err
    # --format text: a short report, the same numbers, no wall of embedding values
    assert main(["forecast", *args, "--format", "text"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"user {tr.user_id}: forecast at ") and "2.0 days after the last post" in text
    assert f"{first['moved_from_last_post']:.4g} (Euclidean)" in text and "8 numbers (--format json" in text
    assert "held-out check: not run (a saved forecaster was loaded)" in text and "[" not in text


def test_forecast_text_report_states_the_held_out_ratios_and_says_what_below_one_means():
    from cvx_core.cli_support import forecast_lines

    doc = {"user_id": "u", "at": "2025-06-01T00:00:00.000000", "last_post": "2023-06-18T17:55:12.000000",
           "horizon_days": 713.25, "moved_from_last_post": 26.3, "embedding": [0.0] * 4,
           "held_out_last_posts": {"n_users": 240, "mse_model": 0.000865, "ratio_last_value": 1.007,
                                   "ratio_linear": None}}
    lines = forecast_lines(doc)
    assert lines[0] == "user u: forecast at 2025-06-01 00:00, 713.2 days after the last post (2023-06-18 17:55)"
    assert "(240 users): mean squared error 0.000865; 1.007x that of 'stays at the last post'" in lines[2]
    assert "undefined" in lines[2] and "below 1: the model is better" in lines[2]
