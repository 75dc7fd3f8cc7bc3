"""The steps a training run is made of, as plain functions that the trainer, the CLI, the
app, data-parallel training and the scikit-learn estimator compose.

- :func:`inputs_to`: a batch's tensors moved to a device;
- :func:`evaluation_step`: the model's test metrics and probabilities ``[n_test, K]``;
- :func:`baseline_step`: the mean-embedding logistic regression on the same split (reusing
  the head choice's inner-CV selection of ``C`` when there is one);
- :func:`interval_step`: 95% intervals of every test metric of model and baseline (paired
  bootstrap, Wilson);
- :func:`warning_step`: small-data sentences about the test set and the split;
- :func:`early_step`: the early-detection curve on the test users;
- :func:`run_files_step`: ``config.json`` and ``data.json`` of a run folder;
- :func:`features_step`: every user's starting features finite, before any fitting (the
  refusal ``extract`` gives, naming the user and the feature).

Cross-validation (:func:`cvx_core.learn.trainer.cross_validate`) builds one trainer per fold.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cvx_core.data.trajectory import TrajectorySet
from cvx_core.learn.baseline import BaselineResult, Selection, mean_embedding_baseline
from cvx_core.learn.config import TrainConfig
from cvx_core.learn.metrics import (
    ClassificationMetrics,
    classification_metrics,
    metric_intervals,
    small_data_warnings,
    split_size_warnings,
)
from cvx_core.learn.model import predict_proba
from cvx_core.learn.selection import HeadChoice
from cvx_core.learn.splits import Split

__all__ = ["EARLY_DENSE_CUTS", "EARLY_EXTRA_CUTS", "baseline_step", "early_step", "inputs_to", "interval_step",
           "run_files_step", "evaluation_step", "warning_step"]

#: the run's own early-detection curve: every cut up to this many posts, then ``EARLY_EXTRA_CUTS`` geometric steps
EARLY_DENSE_CUTS, EARLY_EXTRA_CUTS = 20, 10


def inputs_to(inputs: Sequence[Any], device: torch.device | str) -> tuple[Any, ...]:
    """The tensors of a model-input tuple moved to ``device`` (texts and other values as they are)."""
    return tuple(x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs)


def class_indices(data: TrajectorySet, indices: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """``[n]`` class index (0..K-1, in ``classes`` order) of the users at ``indices``."""
    pos = {int(c): i for i, c in enumerate(classes)}
    return np.array([pos[int(v)] for v in data.labels[np.asarray(indices, dtype=np.int64)]], dtype=np.int64)


def evaluation_step(model: nn.Module, data: TrajectorySet, split: Split, classes: Sequence[int], *,
              config: TrainConfig, device: str) -> tuple[ClassificationMetrics, np.ndarray]:
    """The model's metrics on the test users and their class probabilities ``[n_test, K]``."""
    proba = predict_proba(model, data, indices=split.test, max_len=config.max_len,
                          batch_size=config.eval_batch_size, device=device)
    return classification_metrics(class_indices(data, split.test, classes), proba, classes), proba


def baseline_step(data: TrajectorySet, split: Split, classes: Sequence[int], *, config: TrainConfig,
                  selection: Selection | None = None) -> BaselineResult:
    """The mean-embedding logistic regression on ``split`` (``selection``: its ``C`` already chosen)."""
    return mean_embedding_baseline(data, split, classes=classes, class_weighting=config.class_weighting,
                                   seed=config.seed, inner_cv=config.inner_cv, selection=selection)


def interval_step(data: TrajectorySet, split: Split, classes: Sequence[int], proba: np.ndarray,
                  baseline: BaselineResult, *, config: TrainConfig) -> dict[str, tuple[float, float]]:
    """95% intervals of the model's and the baseline's test metrics (``config.bootstrap`` resamples)."""
    return metric_intervals(class_indices(data, split.test, classes), proba, baseline.test_proba,
                            n_resamples=config.bootstrap, seed=config.seed)


def warning_step(test: ClassificationMetrics, classes: Sequence[int], *, n_users: int, cv: int,
                 given: bool) -> tuple[str, ...]:
    """Small-data sentences: the test set's size and classes, and a single small split."""
    notes = small_data_warnings(test.class_counts, [str(c) for c in classes])
    notes += split_size_warnings(n_users, cv=cv, given=given)
    return tuple(notes)


def early_step(model: nn.Module, data: TrajectorySet, split: Split, classes: Sequence[int], *,
               config: TrainConfig, device: str) -> dict[str, Any] | None:
    """The early-detection block on the test users (every cut to 20 posts, then 10 geometric
    steps; ``evaluate --early`` draws the full grid). None for text-encoder runs or no test users."""
    if config.text_encoder is not None or not split.test.size:
        return None
    from cvx_core.learn.early import early_detection, post_grid

    test_ts = data.subset([data.user_ids[i] for i in split.test])
    cuts = post_grid(int(test_ts.lengths.max()), dense=EARLY_DENSE_CUTS, extra=EARLY_EXTRA_CUTS)
    return early_detection(model, test_ts, classes=classes, cuts=cuts, max_len=config.max_len,
                           device=device).to_dict()


def run_files_step(run_dir: Path, *, config: TrainConfig, spec: dict[str, Any], data: TrajectorySet,
                   train_data: TrajectorySet, classes: Sequence[int], split: Split, head: HeadChoice,
                   scale_choice: Any) -> None:
    """Claim the run folder (an exclusive lock; clears an old run's files) and write its
    ``config.json`` (train config, model spec) and ``data.json`` (data, split, head, scales)."""
    from cvx_core.learn import runs

    runs.claim_run_folder(run_dir)
    runs.atomic_write_json(run_dir / runs.CONFIG_FILE, {"train_config": config.to_dict(), "model_spec": spec})
    runs.atomic_write_json(run_dir / runs.DATA_FILE, {
        "name": data.name,
        "digest": train_data.digest(),
        "summary": train_data.summary().as_dict(),
        "classes": list(classes),
        "split": split.as_user_ids(data),
        "head": {"head": head.head, "c": head.c, "reason": head.reason, "candidate": head.candidate,
                 "candidates": head.candidate_scores, "candidates_p": head.candidate_p, "alpha": head.alpha},
        "group_column": config.group_column,
        "scales": None if scale_choice is None else scale_choice.to_dict(),
    })


def features_step(feats: np.ndarray, indices: np.ndarray, data: TrajectorySet, config: TrainConfig, *,
                  n_spec: int, dim: int) -> None:
    """Refuse the first user of ``data`` (in its order) whose starting features ``[N, F]``
    (rows: the users at ``indices`` ``[N]``; columns: the SPEC vector ``[n_spec]``, then the
    mean embedding ``[dim]`` when the model reads it) are not finite, naming the user and
    the feature as ``extract`` does (an extreme ``min_dt`` overflows them; scikit-learn would
    otherwise end the run in "Input contains NaN")."""
    from cvx_core.features.analytic import feature_names
    from cvx_core.features.finite import check_finite_features

    names = feature_names(dim, config.features)
    if len(names) != n_spec:  # a learnable extractor with another layout: name positions
        names = [f"feature {j}" for j in range(n_spec)]
    names = [*names, *(f"mean_embedding[{j}]" for j in range(dim))]
    order = np.argsort(np.asarray(indices), kind="stable")
    check_finite_features(np.asarray(feats)[order], [data.user_ids[int(indices[k])] for k in order], names,
                          config.features, source=data.name or "data", dtype=config.feature_dtype)
