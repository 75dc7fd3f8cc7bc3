"""The Explore page's forecast: a button trains the latent-ODE forecaster once per dataset
(kept on disk), and the open user's continuation is drawn as a dashed path in the cloud,
placed exactly by PCA's affine map."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("streamlit")

from cvx_app import forecast_view  # noqa: E402


@pytest.mark.slow
def test_forecast_button_draws_a_dashed_continuation_and_keeps_the_forecaster(app_workspace, open_app, monkeypatch, small_planted):
    from cvx_core.data.io import save_trajectories

    ts = small_planted[0]
    monkeypatch.setattr(forecast_view, "FORECAST_EPOCHS", 2)
    monkeypatch.setenv("CVX_DATASET", "small")
    save_trajectories(ts, app_workspace / "datasets" / "small.parquet")
    at = open_app("pages/2_explore.py", timeout=300)
    assert not at.exception, at.exception
    at.number_input(key="explore_horizon").set_value(20.0)
    at.button(key="explore_forecast_go").click().run()
    assert not at.exception, at.exception
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    dashed = [t for t in fig["data"] if t.get("name", "").startswith("forecast")]
    assert len(dashed) == 1 and dashed[0]["line"]["dash"] == "dash"
    assert len(dashed[0]["x"]) == 1 + 8  # the last post, then 8 forecast times
    assert (app_workspace / "forecasters").is_dir()
    assert any("held-out last post" in c.value for c in at.caption)


def test_pca_placement_of_a_post_is_its_own_pca_position(small_planted):
    """PCA is affine: placing a post's own embedding returns its PCA coordinates."""
    from cvx_core.analysis.projection import project_posts

    ts = small_planted[0]
    proj = project_posts(ts, method="pca")
    tr = ts.at(3)
    xy = forecast_view.place_in_projection(ts, proj, tr.embeddings[-2:])
    assert np.allclose(xy, proj.path(tr.user_id)[-2:], atol=1e-3)


def test_held_out_sentence_says_undefined_instead_of_failing_on_a_reloaded_null_ratio():
    from cvx_app.forecast_view import held_out_sentence

    fresh = {"ratio_last_value": 1.007, "ratio_linear": 4.896e-07, "n_users": 240}
    assert held_out_sentence(fresh) == ("On each user's held-out last post the forecaster's error is 1.01× that of "
                                        "repeating the last post and 4.9e-07× that of linear extrapolation (below 1 "
                                        "is better; 240 users).")
    reloaded = {"ratio_last_value": 0.5, "ratio_linear": None, "n_users": 3}  # NaN saved as null
    assert "an undefined multiple that of linear extrapolation" in held_out_sentence(reloaded)
    assert "an undefined multiple that of repeating" in held_out_sentence({"ratio_last_value": float("nan"),
                                                                          "ratio_linear": 2.0, "n_users": 3})
