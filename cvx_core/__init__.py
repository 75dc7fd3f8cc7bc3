"""CVX: temporal machine learning on embedding trajectories.

The library knows nothing of the UI. The top tier below is what an analyst needs from
``import cvx_core`` (load -> extract -> detect/explain -> train -> compare -> forecast);
everything else is reached through its subpackage (``cvx_core.data``, ``.features``,
``.analysis``, ``.learn``, ``.scale``, ``.show``, ``.sklearn``), e.g.
``from cvx_core.features.analytic import AnalyticBackend`` or
``from cvx_core.features.ode import ODEConfig``. The flat names of earlier versions still
work through ``__getattr__``, with a DeprecationWarning naming the new place.

Names are imported lazily (``import cvx_core`` stays cheap: torch, ruptures and umap load
only when a name that needs them is used).
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from cvx_core.data.deprecation import deprecated_names

__version__ = "0.1.0"

# the top tier: public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    # load, save and embed posts
    "load_trajectories": "data.io",
    "save_trajectories": "data.io",
    "Trajectory": "data.trajectory",
    "TrajectorySet": "data.trajectory",
    "TrajectoryError": "data.trajectory",
    "embed_posts": "data.text",
    # extract temporal features (SPEC.md)
    "TemporalFeaturesConfig": "features.config",
    "extract_features": "features.extract",
    "feature_names": "features.analytic",
    # detect and explain change points, attribute drift, analyse a set
    "ChangePointConfig": "analysis.changepoints",
    "detect_changepoints": "analysis.changepoints",
    "explain_changepoints": "analysis.explain",
    "attribute_drift": "analysis.attribution",
    "analyze_set": "analysis.batch",
    # train, reload a run, compare learned attention with the analytic attribution
    "TrainConfig": "learn.config",
    "train": "learn.trainer",
    "load_run": "learn.runs",
    "compare_run": "learn.compare",
    "compare_attention": "learn.compare",
    # forecast a user's next embeddings (latent ODE)
    "fit_forecaster": "learn.forecast",
    "forecast": "learn.forecast",
}

# flat names of earlier versions, now reached through their subpackage (DeprecationWarning)
_MOVED: dict[str, str] = {
    "CohortAttribution": "analysis.attribution",
    "DriftAttribution": "analysis.attribution",
    "attribute_change": "analysis.attribution",
    "attribute_segments": "analysis.attribution",
    "cohort_attribution": "analysis.attribution",
    "pareto_dims": "analysis.attribution",
    "SetAnalysis": "analysis.batch",
    "UserAnalysis": "analysis.batch",
    "UserTimeline": "analysis.batch",
    "user_timeline": "analysis.batch",
    "BOCPDConfig": "analysis.changepoints",
    "BOCPDResult": "analysis.changepoints",
    "ChangePointResult": "analysis.changepoints",
    "bocpd": "analysis.changepoints",
    "detect_bocpd": "analysis.changepoints",
    "match_changepoints": "analysis.changepoints",
    "ChangePointExplanation": "analysis.explain",
    "UserExplanation": "analysis.explain",
    "cohort_terms": "analysis.explain",
    "ChangePointNarrative": "analysis.narrative",
    "narrate_changepoints": "analysis.narrative",
    "Projection": "analysis.projection",
    "cached_projection": "analysis.projection",
    "clear_projection_cache": "analysis.projection",
    "project_posts": "analysis.projection",
    "projection_trustworthiness": "analysis.projection",
    "DecodedSizeError": "data.io",
    "PostTable": "data.io",
    "read_posts": "data.io",
    "EmbeddingCache": "data.text",
    "embed_texts": "data.text",
    "load_encoder": "data.text",
    "DatasetSummary": "data.trajectory",
    "PaddedBatch": "data.trajectory",
    "AnalyticBackend": "features.analytic",
    "DiscreteSummary": "features.analytic",
    "FeatureLayout": "features.analytic",
    "TemporalOps": "features.analytic",
    "feature_layout": "features.analytic",
    "TorchBackend": "features.differentiable",
    "DimensionAttention": "features.learnable",
    "MultiScaleAggregator": "features.learnable",
    "SoftChangePointDetector": "features.learnable",
    "AttentionComparison": "learn.compare",
    "early_detection": "learn.early",
    "HashingBagEncoder": "learn.encoders",
    "MiniLMEncoder": "learn.encoders",
    "TextTrajectoryClassifier": "learn.encoders",
    "estimate_finetune_memory": "learn.finetune",
    "finetune_memory_breakdown": "learn.finetune",
    "ClassificationMetrics": "learn.metrics",
    "TrajectoryClassifier": "learn.model",
    "predict_proba": "learn.model",
    "LoadedRun": "learn.runs",
    "RunError": "learn.runs",
    "RunInfo": "learn.runs",
    "list_runs": "learn.runs",
    "TrainResult": "learn.trainer",
    "Trainer": "learn.trainer",
    "cross_validate": "learn.trainer",
    "train_distributed": "scale.ddp",
    "analyze_ray": "scale.ray_engine",
    "embed_ray": "scale.ray_engine",
    "extract_ray": "scale.ray_engine",
    "StreamSummary": "scale.stream",
    "analyze_stream": "scale.stream",
    "embed_stream": "scale.stream",
    "extract_stream": "scale.stream",
    "iter_user_chunks": "scale.stream",
    "TemporalClassifier": "sklearn",
}
# flat names whose concept has one other name now: old -> (submodule, the name to use)
_RENAMED: dict[str, tuple[str, str]] = {
    "TemporalFeatureExtractor": ("features.learnable", "LearnableFeatures"),
    "temporal_features": ("features.differentiable", "TorchBackend.extract_all"),
    "TemporalFeatures": ("sklearn", "FeatureTransformer"),
    "StreamAnalysis": ("scale.stream", "StreamSummary"),
}
_SUBPACKAGES = ("data", "features", "analysis", "learn", "scale", "show", "sklearn")

__all__ = sorted(_EXPORTS)


def _resolve(module: str, path: str) -> Any:
    value: Any = importlib.import_module(f"cvx_core.{module}")
    for part in path.split("."):
        value = getattr(value, part)
    return value


# the moved and renamed flat names: the one deprecated-name helper every module uses
_deprecated = deprecated_names("cvx_core", {
    old: (f"cvx_core.{module}.{new}", functools.partial(_resolve, module, new))
    for old, (module, new) in {**{n: (m, n) for n, m in _MOVED.items()}, **_RENAMED}.items()
}, stacklevel=3)  # called from __getattr__ below: the warning names the caller's line


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = _resolve(_EXPORTS[name], name)
        globals()[name] = value
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f"cvx_core.{name}")
    return _deprecated(name)  # a deprecated name (warns), else AttributeError


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBPACKAGES))
