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
    "Trajectory": "data.trajectory",
    "TrajectorySet": "data.trajectory",
    "PaddedBatch": "data.trajectory",
    "DatasetSummary": "data.trajectory",
    "TrajectoryError": "data.trajectory",
    "load_trajectories": "data.io",
    "save_trajectories": "data.io",
    "read_posts": "data.io",
    "PostTable": "data.io",
    "DecodedSizeError": "data.io",
    # text in: encoders, embedding cache, embedding posts
    "embed_posts": "data.text",
    "embed_texts": "data.text",
    "EmbeddingCache": "data.text",
    "load_encoder": "data.text",
    # temporal features
    "TemporalFeaturesConfig": "features.config",
    "TemporalOps": "features.analytic",
    "AnalyticBackend": "features.analytic",
    "FeatureLayout": "features.analytic",
    "feature_names": "features.analytic",
    "feature_layout": "features.analytic",
    "DiscreteSummary": "features.analytic",
    "TorchBackend": "features.differentiable",
    "temporal_features": "features.differentiable",
    "DimensionAttention": "features.learnable",
    "MultiScaleAggregator": "features.learnable",
    "SoftChangePointDetector": "features.learnable",
    "TemporalFeatureExtractor": "features.learnable",
    # analytic interpretation
    "ChangePointConfig": "analysis.changepoints",
    "ChangePointResult": "analysis.changepoints",
    "detect_changepoints": "analysis.changepoints",
    "BOCPDConfig": "analysis.changepoints",
    "BOCPDResult": "analysis.changepoints",
    "detect_bocpd": "analysis.changepoints",
    "match_changepoints": "analysis.changepoints",
    "bocpd": "analysis.changepoints",
    "DriftAttribution": "analysis.attribution",
    "CohortAttribution": "analysis.attribution",
    "attribute_drift": "analysis.attribution",
    "attribute_change": "analysis.attribution",
    "attribute_segments": "analysis.attribution",
    "cohort_attribution": "analysis.attribution",
    "pareto_dims": "analysis.attribution",
    "ChangePointNarrative": "analysis.narrative",
    "narrate_changepoints": "analysis.narrative",
    "explain_changepoints": "analysis.explain",
    "UserExplanation": "analysis.explain",
    "ChangePointExplanation": "analysis.explain",
    "cohort_terms": "analysis.explain",
    "Projection": "analysis.projection",
    "project_posts": "analysis.projection",
    "clear_projection_cache": "analysis.projection",
    "cached_projection": "analysis.projection",
    "projection_trustworthiness": "analysis.projection",
    "SetAnalysis": "analysis.batch",
    "UserAnalysis": "analysis.batch",
    "analyze_set": "analysis.batch",
    "UserTimeline": "analysis.batch",
    "user_timeline": "analysis.batch",
    # training, runs, comparison, text encoders
    "TrainConfig": "learn.config",
    "TrainResult": "learn.trainer",
    "Trainer": "learn.trainer",
    "train": "learn.trainer",
    "cross_validate": "learn.trainer",
    "early_detection": "learn.early",
    "TemporalFeatures": "sklearn",
    "TemporalClassifier": "sklearn",
    "TrajectoryClassifier": "learn.model",
    "predict_proba": "learn.model",
    "ClassificationMetrics": "learn.metrics",
    "list_runs": "learn.runs",
    "load_run": "learn.runs",
    "RunInfo": "learn.runs",
    "LoadedRun": "learn.runs",
    "RunError": "learn.runs",
    "compare_attention": "learn.compare",
    "AttentionComparison": "learn.compare",
    "HashingBagEncoder": "learn.encoders",
    "MiniLMEncoder": "learn.encoders",
    "TextTrajectoryClassifier": "learn.encoders",
    "estimate_finetune_memory": "learn.finetune",
    "finetune_memory_breakdown": "learn.finetune",
    # scale: streamed (bounded-memory) processing, Ray engine, data-parallel training
    "iter_user_chunks": "scale.stream",
    "extract_stream": "scale.stream",
    "analyze_stream": "scale.stream",
    "embed_stream": "scale.stream",
    "StreamAnalysis": "scale.stream",
    "extract_ray": "scale.ray_engine",
    "analyze_ray": "scale.ray_engine",
    "embed_ray": "scale.ray_engine",
    "train_distributed": "scale.ddp",
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
