"""The Explore page's forecast: a latent-ODE forecaster per dataset (trained on request,
kept on disk under the workspace by the data's digest), a user's predicted continuation, and
its placement in the 2-D projection.

Placement: PCA is an affine map, so a forecast embedding gets its exact PCA coordinates from
the affine least-squares fit of the posts' embeddings to their coordinates. UMAP has no such
map here (the layout is cached as coordinates), so a forecast is placed at the
distance-weighted mean of its 10 nearest posts' positions, and the page says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import streamlit as st

from cvx_app.workspace import workspace_dir
from cvx_core.data.trajectory import TrajectorySet

MAX_TRAIN_USERS = 400
FORECAST_EPOCHS = 40


@dataclass(frozen=True)
class Forecast:
    """A user's forecast continuation: ``days`` after the last post ``[S]`` and the predicted
    embeddings ``[S, D]``; ``held_out`` the forecaster's errors on held-out last posts."""

    user_id: str
    days: np.ndarray
    embeddings: np.ndarray
    held_out: dict


def held_out_sentence(held: dict) -> str:
    """The forecaster's held-out errors in a sentence; a ratio that is undefined (``None`` as
    saved JSON has it, or NaN: a zero reference error) is said to be, not formatted."""
    def ratio(key: str) -> str:
        v = held.get(key)
        if v is None or not np.isfinite(v):
            return "an undefined multiple"
        return f"{v:.3g}×"

    return (f"On each user's held-out last post the forecaster's error is {ratio('ratio_last_value')} that of "
            f"repeating the last post and {ratio('ratio_linear')} that of linear extrapolation (below 1 is better; "
            f"{held.get('n_users', 0)} users).")


def _folder(digest: str):
    return workspace_dir() / "forecasters" / digest[:32]


@st.cache_resource(max_entries=4, show_spinner=False)
def _forecaster(digest: str, _ts: TrajectorySet):
    from cvx_core.learn.forecast import (
        ForecastConfig,
        evaluate_forecaster,
        fit_forecaster,
        load_forecaster,
        save_forecaster,
    )

    folder = _folder(digest)
    if (folder / "forecaster.json").is_file():
        try:
            model, _ = load_forecaster(folder)
            import json

            held = json.loads((folder / "held_out.json").read_text())
            return model, held
        except Exception:  # a damaged folder is retrained below and overwritten atomically
            pass
    ts = _ts
    if len(ts) > MAX_TRAIN_USERS:
        rng = np.random.default_rng(0)
        ts = ts.subset([ts.user_ids[i] for i in sorted(rng.choice(len(ts), MAX_TRAIN_USERS, replace=False))])
    cfg = ForecastConfig(epochs=FORECAST_EPOCHS, max_len=32)
    model = fit_forecaster(ts, config=cfg, exclude_last=1)
    held = evaluate_forecaster(model, ts, max_len=32).as_dict()
    save_forecaster(model, cfg, folder)
    from cvx_core.data.atomic import atomic_write_json

    atomic_write_json(folder / "held_out.json", held)
    return model, held


def has_forecaster(ts: TrajectorySet) -> bool:
    """True when this dataset's forecaster is trained (in memory or on disk)."""
    return (_folder(ts.digest()) / "forecaster.json").is_file()


def forecast_user(ts: TrajectorySet, user_id: str, horizon_days: float, *, steps: int = 8) -> Forecast:
    """Train (once per dataset) and apply the forecaster: ``steps`` points evenly spaced over
    the ``horizon_days`` after ``user_id``'s last post."""
    from cvx_core.learn.forecast import forecast

    model, held = _forecaster(ts.digest(), ts)
    tr = ts[user_id]
    last = float(tr.timestamps[-1])
    days = np.linspace(horizon_days / steps, horizon_days, steps)
    emb = np.stack([forecast(model, tr, last + d, max_len=32) for d in days])
    return Forecast(user_id=user_id, days=days, embeddings=emb, held_out=held)


def place_in_projection(ts: TrajectorySet, proj, embeddings: np.ndarray) -> np.ndarray:
    """``[S, D]`` embeddings -> ``[S, 2]`` positions in ``proj`` (see the module doc)."""
    x = np.concatenate([tr.embeddings for tr in ts], axis=0).astype(np.float64)
    xy = np.asarray(proj.coords, dtype=np.float64)
    q = np.asarray(embeddings, dtype=np.float64)
    if proj.method == "pca":
        a = np.hstack([x, np.ones((x.shape[0], 1))])
        coef, *_ = np.linalg.lstsq(a, xy, rcond=None)
        return np.hstack([q, np.ones((q.shape[0], 1))]) @ coef
    d = np.sqrt(((q[:, None, :] - x[None, :, :]) ** 2).sum(-1))  # [S, N]
    k = min(10, x.shape[0])
    idx = np.argpartition(d, k - 1, axis=1)[:, :k]
    w = 1.0 / (np.take_along_axis(d, idx, axis=1) + 1e-9)
    return (w[..., None] * xy[idx]).sum(1) / w.sum(1, keepdims=True)
