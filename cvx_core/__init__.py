"""CVX: temporal machine learning on embedding trajectories.

The library knows nothing of the UI. Public names are imported lazily (``import
cvx_core`` stays cheap: torch, ruptures and umap load only when a name that needs them is
used).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    # data model and I/O
    "Trajectory": "trajectory",
    "TrajectorySet": "trajectory",
    "PaddedBatch": "trajectory",
    "DatasetSummary": "trajectory",
    "TrajectoryError": "trajectory",
    "load_trajectories": "io",
    "save_trajectories": "io",
    # temporal features
    "TemporalFeaturesConfig": "config",
    "TemporalOps": "features",
    "AnalyticBackend": "features",
    "FeatureLayout": "features",
    "feature_names": "features",
    "feature_layout": "features",
    "DiscreteSummary": "features",
    "TorchBackend": "torch_backend",
    "temporal_features": "torch_backend",
    "DimensionAttention": "modules",
    "MultiScaleAggregator": "modules",
    "SoftChangePointDetector": "modules",
    "TemporalFeatureExtractor": "modules",
    # analytic interpretation
    "ChangePointConfig": "changepoints",
    "ChangePointResult": "changepoints",
    "detect_changepoints": "changepoints",
    "BOCPDConfig": "changepoints",
    "BOCPDResult": "changepoints",
    "detect_bocpd": "changepoints",
    "match_changepoints": "changepoints",
    "bocpd": "changepoints",
    "DriftAttribution": "attribution",
    "CohortAttribution": "attribution",
    "attribute_drift": "attribution",
    "attribute_change": "attribution",
    "attribute_segments": "attribution",
    "cohort_attribution": "attribution",
    "pareto_dims": "attribution",
    "ChangePointNarrative": "narrative",
    "narrate_changepoints": "narrative",
    "Projection": "projection",
    "project_posts": "projection",
    "clear_projection_cache": "projection",
    "SetAnalysis": "analysis",
    "UserAnalysis": "analysis",
    "analyze_set": "analysis",
    "UserTimeline": "analysis",
    "user_timeline": "analysis",
    # training, runs, comparison, text encoders
    "TrainConfig": "training",
    "TrainResult": "training",
    "Trainer": "training",
    "train": "training",
    "TrajectoryClassifier": "training",
    "predict_proba": "training",
    "ClassificationMetrics": "training",
    "list_runs": "runs",
    "load_run": "runs",
    "RunInfo": "runs",
    "LoadedRun": "runs",
    "RunError": "runs",
    "compare_attention": "compare",
    "AttentionComparison": "compare",
    "HashingBagEncoder": "encoders",
    "MiniLMEncoder": "encoders",
    "TextTrajectoryClassifier": "encoders",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cvx_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"cvx_core.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
