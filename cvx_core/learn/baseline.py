"""The mean-embedding baseline: a class-weighted logistic regression on each user's mean embedding, on the same split as the model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from cvx_core.data.trajectory import TrajectorySet
from cvx_core.learn.metrics import (
    ClassificationMetrics,
    class_weights,
    classification_metrics,
)
from cvx_core.learn.splits import Split


@dataclass(frozen=True)
class BaselineResult:
    """Mean-embedding logistic regression on the same split.

    Attributes:
        val_auc, test_auc: ROC AUC on the validation and test users.
        c: inverse L2 strength chosen on validation AUC from ``(0.01, 0.1, 1, 10)``.
        test: full test metrics.
    """

    val_auc: float
    test_auc: float
    c: float
    test: ClassificationMetrics


def _fit_logreg(x: torch.Tensor, y: torch.Tensor, k: int, c: float, weights: torch.Tensor) -> torch.Tensor:
    """Multinomial logistic regression, L2 penalty ``|W|^2 / (2 C n)``; returns ``W [D+1, K]``."""
    n, d = x.shape
    xb = torch.cat([x, torch.ones(n, 1, dtype=x.dtype)], dim=1)
    w = torch.zeros(d + 1, k, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=200, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(xb @ w, y, weight=weights) + (w[:-1] ** 2).sum() / (2.0 * c * n)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def mean_embedding_baseline(
    ts: TrajectorySet, split: Split, *, classes: Sequence[int] | None = None, class_weighting: bool = True
) -> BaselineResult:
    """Logistic regression on each user's mean embedding (``[N, D]``), standardised on train.

    The regularisation ``C`` is picked on validation AUC; test metrics are for that ``C``.
    """
    classes = tuple(sorted(set(int(v) for v in ts.labels))) if classes is None else tuple(classes)
    cls_index = {c: i for i, c in enumerate(classes)}
    x_all = np.stack([tr.embeddings.astype(np.float64).mean(axis=0) for tr in ts])
    y_all = np.array([cls_index[int(v)] for v in ts.labels], dtype=np.int64)
    mu = x_all[split.train].mean(axis=0)
    sd = x_all[split.train].std(axis=0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    x = torch.as_tensor((x_all - mu) / sd)
    y = torch.as_tensor(y_all)
    k = len(classes)
    weights = torch.as_tensor(class_weights(y_all[split.train], k) if class_weighting else np.ones(k), dtype=torch.float64)
    tr_idx = torch.as_tensor(split.train)
    best: tuple[float, float, torch.Tensor] | None = None
    for c in (0.01, 0.1, 1.0, 10.0):
        w = _fit_logreg(x[tr_idx], y[tr_idx], k, c, weights)
        proba = _logreg_proba(x[split.val], w)
        auc = classification_metrics(y_all[split.val], proba, classes).auc
        score = -1.0 if math.isnan(auc) else auc
        if best is None or score > best[0]:
            best = (score, c, w)
    assert best is not None
    _, c, w = best
    val = classification_metrics(y_all[split.val], _logreg_proba(x[split.val], w), classes)
    test = classification_metrics(y_all[split.test], _logreg_proba(x[split.test], w), classes)
    return BaselineResult(val_auc=val.auc, test_auc=test.auc, c=c, test=test)


def _logreg_proba(x: torch.Tensor, w: torch.Tensor) -> np.ndarray:
    xb = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)
    return torch.softmax(xb @ w, dim=1).numpy()


# ==========================================================================================
# model
# ==========================================================================================
