"""Classification metrics, thin over scikit-learn: ROC AUC (binary and macro one-vs-rest),
F1 (per class and averaged), accuracy, confusion, a bootstrap interval for the AUC, class
weights, and the small-data warnings that go beside every metric.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, roc_auc_score
from sklearn.metrics import roc_curve as _sk_roc_curve

#: fewer test users than this and the test metrics get a warning
MIN_TEST_USERS = 30
#: fewer test users of one class than this and the test metrics get a warning
MIN_CLASS_USERS = 10


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Binary ROC AUC (``sklearn.metrics.roc_auc_score``; ties count 1/2). NaN if a class is absent.

    ``y_true [N]`` is truthy for positives; ``scores [N]`` higher = more positive.
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape:
        raise ValueError(f"y_true {y.shape} and scores {s.shape} differ in shape")
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, s))


def roc_curve(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points ``(fpr, tpr, thresholds)`` from (0, 0) to (1, 1) (``sklearn.metrics.roc_curve``,
    every distinct score kept); ``thresholds[0]`` is +inf (nothing predicted positive)."""
    y = np.asarray(y_true).astype(bool)
    if y.all() or not y.any():
        raise ValueError("roc_curve needs both classes")
    fpr, tpr, thr = _sk_roc_curve(y, np.asarray(scores, dtype=np.float64), drop_intermediate=False)
    return fpr, tpr, thr


def macro_auc(y_index: np.ndarray, proba: np.ndarray) -> float:
    """Binary: AUC of column 1. More classes: mean of the one-vs-rest AUCs of the classes
    present in ``y_index`` (a class absent from the test users has no AUC). NaN if fewer
    than two classes are present."""
    y = np.asarray(y_index, dtype=np.int64)
    p = np.asarray(proba, dtype=np.float64)
    k = p.shape[1]
    if k == 2:
        return roc_auc(y == 1, p[:, 1])
    aucs = [roc_auc(y == c, p[:, c]) for c in range(k)]
    aucs = [a for a in aucs if not math.isnan(a)]
    return float(np.mean(aucs)) if aucs else float("nan")


@dataclass(frozen=True)
class ClassificationMetrics:
    """Metrics of predicted class probabilities against true labels.

    Attributes:
        auc: ROC AUC (binary: of the positive class, the larger label; more classes:
            macro average of one-vs-rest AUCs).
        f1: F1 of the positive class (binary) or macro F1, predictions by argmax.
        accuracy: share of argmax predictions that are right.
        confusion: ``[K, K]`` counts, rows = true class, columns = predicted, in ``classes`` order.
        classes: the class labels.
        fpr, tpr: ROC curve points (binary only, else None).
        n: number of trajectories scored.
        f1_per_class: ``[K]`` F1 of each class (one-vs-rest), in ``classes`` order.
        class_counts: ``[K]`` true users of each class.
    """

    auc: float
    f1: float
    accuracy: float
    confusion: np.ndarray
    classes: tuple[int, ...]
    fpr: np.ndarray | None
    tpr: np.ndarray | None
    n: int
    f1_per_class: np.ndarray | None = None
    class_counts: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "auc": self.auc,
            "f1": self.f1,
            "accuracy": self.accuracy,
            "confusion": self.confusion.tolist(),
            "classes": list(self.classes),
            "roc": None if self.fpr is None else {"fpr": self.fpr.tolist(), "tpr": self.tpr.tolist()},
            "n": self.n,
            "f1_per_class": None if self.f1_per_class is None else self.f1_per_class.tolist(),
        }


def classification_metrics(
    y_index: np.ndarray, proba: np.ndarray, classes: Sequence[int]
) -> ClassificationMetrics:
    """Metrics from class indices ``y_index [N]`` (0..K-1) and probabilities ``proba [N, K]``."""
    y = np.asarray(y_index, dtype=np.int64)
    p = np.asarray(proba, dtype=np.float64)
    k = len(classes)
    if p.shape != (y.size, k):
        raise ValueError(f"proba must be [N, K] = [{y.size}, {k}], got {p.shape}")
    labels = np.arange(k)
    pred = p.argmax(axis=1)
    conf = confusion_matrix(y, pred, labels=labels) if y.size else np.zeros((k, k), dtype=np.int64)
    acc = float((pred == y).mean()) if y.size else float("nan")
    per_class = (
        f1_score(y, pred, labels=labels, average=None, zero_division=0.0) if y.size else np.zeros(k)
    ).astype(np.float64)
    auc = macro_auc(y, p) if y.size else float("nan")
    fpr = tpr = None
    if k == 2:
        f1 = float(per_class[1])
        if (y == 1).any() and (y == 0).any():
            fpr, tpr, _ = roc_curve(y == 1, p[:, 1])
    else:
        f1 = float(per_class.mean())
    counts = np.bincount(y, minlength=k) if y.size else np.zeros(k, dtype=np.int64)
    return ClassificationMetrics(
        auc, f1, acc, conf.astype(np.int64), tuple(int(c) for c in classes), fpr, tpr, int(y.size),
        per_class, counts.astype(np.int64),
    )


def bootstrap_auc_ci(
    y_index: np.ndarray, proba: np.ndarray, *, n_resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval ``(lo, hi)`` of :func:`macro_auc` over the scored users.

    Users are resampled with replacement (seeded); a resample left with fewer than two
    classes has no AUC and is skipped (``scipy.stats.bootstrap`` cannot skip one, which is
    why this is a plain loop). ``(nan, nan)`` if fewer than 20 resamples had an AUC.
    """
    y = np.asarray(y_index, dtype=np.int64)
    p = np.asarray(proba, dtype=np.float64)
    if y.size < 2 or n_resamples < 1:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(int(n_resamples)):
        idx = rng.integers(0, y.size, size=y.size)
        yy = y[idx]
        if np.unique(yy).size < 2:
            continue
        a = macro_auc(yy, p[idx])
        if not math.isnan(a):
            stats.append(a)
    if len(stats) < 20:
        return (float("nan"), float("nan"))
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(np.asarray(stats), [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


def small_data_warnings(
    class_counts: Sequence[int], class_names: Sequence[str], *, what: str = "test set"
) -> list[str]:
    """Plain sentences when ``what`` has fewer than 30 users or a class fewer than 10."""
    counts = [int(c) for c in class_counts]
    out = []
    n = sum(counts)
    if n < MIN_TEST_USERS:
        out.append(
            f"the {what} has {n} users (fewer than {MIN_TEST_USERS}): its AUC and accuracy swing widely "
            "between splits; read the confidence interval, or use cross-validation (--cv 5)"
        )
    small = [f"{name} ({c})" for name, c in zip(class_names, counts) if c < MIN_CLASS_USERS]
    if small:
        out.append(
            f"in the {what}, {'class' if len(small) == 1 else 'classes'} {', '.join(small)} "
            f"{'has' if len(small) == 1 else 'have'} fewer than {MIN_CLASS_USERS} users: "
            "per-class F1 there rests on a handful of users"
        )
    return out


def class_weights(y_index: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse-frequency loss weights ``N / (K * n_k)`` ``[K]`` from class indices ``[N]``
    (scikit-learn's "balanced" weights; a class absent from ``y_index`` gets the weight of
    a class seen once)."""
    counts = np.bincount(np.asarray(y_index, dtype=np.int64), minlength=n_classes).astype(np.float64)
    return counts.sum() / (n_classes * np.maximum(counts, 1.0))
