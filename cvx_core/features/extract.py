"""The analytic features of a whole set in one call: :func:`extract_features`.

``extract_features(ts)`` is the library's "extract" (``python -m cvx_core extract`` does the
same per chunk of a file): the SPEC feature vector of every user, analytic path (float64),
named by :func:`cvx_core.features.analytic.feature_names`. A config with ``scales="auto"``
is resolved against the data first (:func:`cvx_core.features.scales.resolve_features`).
"""

from __future__ import annotations

import numpy as np

from cvx_core.data.trajectory import Trajectory, TrajectorySet
from cvx_core.features.analytic import AnalyticBackend
from cvx_core.features.config import TemporalFeaturesConfig
from cvx_core.features.scales import resolve_features

__all__ = ["extract_features"]


def extract_features(
    data: TrajectorySet | Trajectory, *, config: TemporalFeaturesConfig | None = None
) -> np.ndarray:
    """Analytic SPEC features: a :class:`TrajectorySet` -> ``[N, 4*D + 5 + 2*S]`` (rows in the
    set's order), one :class:`Trajectory` -> ``[4*D + 5 + 2*S]``; float64.

    ``config``: a :class:`TemporalFeaturesConfig` (``None``: the defaults); ``scales="auto"``
    is resolved against ``data`` (use :func:`cvx_core.features.scales.resolve_features` to
    see the chosen scales and :func:`cvx_core.features.analytic.feature_names` for names).
    """
    single = isinstance(data, Trajectory)
    ts = TrajectorySet([data]) if single else data
    if not isinstance(ts, TrajectorySet):
        raise TypeError(f"extract_features needs a TrajectorySet or a Trajectory, got {type(data).__name__}")
    cfg = TemporalFeaturesConfig() if config is None else config
    if not isinstance(cfg, TemporalFeaturesConfig):
        raise TypeError(f"config must be a TemporalFeaturesConfig or None, got {type(config).__name__}")
    cfg, _ = resolve_features(cfg, ts)
    feats = np.stack([AnalyticBackend.extract_all(tr.embeddings, tr.timestamps, cfg) for tr in ts])
    return feats[0] if single else feats
