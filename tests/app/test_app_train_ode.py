"""The Train page offers the latent ODE block (issue 18): its size reaches the run's
features config, and 0 (the default) leaves it off."""

from __future__ import annotations

import pytest

pytest.importorskip("streamlit")

START = "FormSubmitter:train_form-Start training"


@pytest.mark.parametrize("size", [0, 8])
def test_ode_block_size_reaches_the_training_config(app_workspace, open_app, monkeypatch, small_planted, size):
    from cvx_app import jobs
    from cvx_core.data.io import save_trajectories

    seen = []

    def capture(dataset, ts, config, **kw):
        seen.append(config)
        raise RuntimeError("captured: no training in this test")

    monkeypatch.setattr(jobs, "start_training", capture)
    monkeypatch.setenv("CVX_DATASET", "small")
    save_trajectories(small_planted[0], app_workspace / "datasets" / "small.parquet")
    at = open_app("pages/3_train.py", timeout=120)
    assert not at.exception, at.exception
    at.number_input(key="train_ode").set_value(size)
    at.button(key=START).click().run()
    assert len(seen) == 1 and seen[0].features.ode_latent_dim == size
    assert any("captured" in e.value for e in at.error)
