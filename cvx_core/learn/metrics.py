"""Classification metrics: ROC/AUC, F1, accuracy, class weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def rankdata(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x [N]``, ties get the average of their ranks (float64 ``[N]``)."""
    x = np.asarray(x)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    avg = ends - (counts - 1) / 2.0
    return avg[inverse.reshape(-1)].astype(np.float64)


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Binary ROC AUC by ranks (Mann-Whitney U; ties count 1/2). NaN if a class is absent.

    ``y_true [N]`` is truthy for positives; ``scores [N]`` higher = more positive.
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape:
        raise ValueError(f"y_true {y.shape} and scores {s.shape} differ in shape")
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def roc_curve(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points ``(fpr, tpr, thresholds)``, one per distinct score, from (0, 0) to (1, 1).

    ``thresholds[0]`` is +inf (nothing predicted positive); a point is "score >= threshold".
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        raise ValueError("roc_curve needs both classes")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]
    tps = np.cumsum(y)[last_of_group]
    fps = (last_of_group + 1) - tps
    fpr = np.r_[0.0, fps / n0]
    tpr = np.r_[0.0, tps / n1]
    thresholds = np.r_[np.inf, s[last_of_group]]
    return fpr, tpr, thresholds


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
    """

    auc: float
    f1: float
    accuracy: float
    confusion: np.ndarray
    classes: tuple[int, ...]
    fpr: np.ndarray | None
    tpr: np.ndarray | None
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "auc": self.auc,
            "f1": self.f1,
            "accuracy": self.accuracy,
            "confusion": self.confusion.tolist(),
            "classes": list(self.classes),
            "roc": None if self.fpr is None else {"fpr": self.fpr.tolist(), "tpr": self.tpr.tolist()},
            "n": self.n,
        }


def _f1(tp: float, fp: float, fn: float) -> float:
    denom = 2 * tp + fp + fn
    return float(2 * tp / denom) if denom > 0 else 0.0


def classification_metrics(
    y_index: np.ndarray, proba: np.ndarray, classes: Sequence[int]
) -> ClassificationMetrics:
    """Metrics from class indices ``y_index [N]`` (0..K-1) and probabilities ``proba [N, K]``."""
    y = np.asarray(y_index, dtype=np.int64)
    p = np.asarray(proba, dtype=np.float64)
    k = len(classes)
    if p.shape != (y.size, k):
        raise ValueError(f"proba must be [N, K] = [{y.size}, {k}], got {p.shape}")
    pred = p.argmax(axis=1)
    conf = np.zeros((k, k), dtype=np.int64)
    np.add.at(conf, (y, pred), 1)
    acc = float((pred == y).mean()) if y.size else float("nan")
    if k == 2:
        auc = roc_auc(y == 1, p[:, 1])
        f1 = _f1(conf[1, 1], conf[0, 1], conf[1, 0])
        if (y == 1).any() and (y == 0).any():
            fpr, tpr, _ = roc_curve(y == 1, p[:, 1])
        else:
            fpr = tpr = None
    else:
        aucs = [roc_auc(y == c, p[:, c]) for c in range(k)]
        aucs = [a for a in aucs if not math.isnan(a)]
        auc = float(np.mean(aucs)) if aucs else float("nan")
        f1 = float(np.mean([_f1(conf[c, c], conf[:, c].sum() - conf[c, c], conf[c, :].sum() - conf[c, c]) for c in range(k)]))
        fpr = tpr = None
    return ClassificationMetrics(auc, f1, acc, conf, tuple(int(c) for c in classes), fpr, tpr, int(y.size))


def class_weights(y_index: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse-frequency loss weights ``N / (K * n_k)`` ``[K]`` from class indices ``[N]``
    (a class absent from ``y_index`` gets the weight of a class seen once)."""
    counts = np.bincount(np.asarray(y_index, dtype=np.int64), minlength=n_classes).astype(np.float64)
    return counts.sum() / (n_classes * np.maximum(counts, 1.0))


# ==========================================================================================
# baseline
# ==========================================================================================
