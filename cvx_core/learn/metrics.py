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
from scipy.stats import binomtest, rankdata
from sklearn.metrics import confusion_matrix, f1_score, roc_auc_score
from sklearn.metrics import roc_curve as _sk_roc_curve

#: fewer test users than this and the test metrics get a warning
MIN_TEST_USERS = 30
#: fewer test users of one class than this and the test metrics get a warning
MIN_CLASS_USERS = 10
#: fewer users than this and a single split gets the advice to cross-validate
MIN_SPLIT_USERS = 100


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


def _resampled_macro_auc(y: np.ndarray, p: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """:func:`macro_auc` of every resample ``idx [R, n]`` at once ``[R]`` (NaN where a resample
    has fewer than two classes): the Mann-Whitney form of the AUC on average ranks
    (``scipy.stats.rankdata``; ties count 1/2, as ``roc_auc_score``)."""
    k = p.shape[1]
    yy = y[idx]  # [R, n]
    cols = [1] if k == 2 else range(k)
    per_class = []
    for c in cols:
        pos = yy == c
        n1 = pos.sum(axis=1).astype(np.float64)
        n0 = yy.shape[1] - n1
        ranks = rankdata(p[idx, c], axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = ((ranks * pos).sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)
        per_class.append(np.where((n1 > 0) & (n0 > 0), auc, np.nan))
    stacked = np.stack(per_class)  # [C, R]
    valid = ~np.isnan(stacked)
    two_classes = np.array([np.unique(row).size >= 2 for row in yy])
    with np.errstate(invalid="ignore"):
        out = np.where(valid.any(axis=0), np.nansum(stacked, axis=0) / np.maximum(valid.sum(axis=0), 1), np.nan)
    return np.where(two_classes, out, np.nan)


def _resampled_f1(y: np.ndarray, pred: np.ndarray, idx: np.ndarray, k: int) -> np.ndarray:
    """F1 as :func:`classification_metrics` reports it (binary: of class 1; else macro, a
    class with no true or predicted user counting 0) of every resample ``idx [R, n]`` ``[R]``."""
    yy, pp = y[idx], pred[idx]
    scores = []
    for c in ([1] if k == 2 else range(k)):
        tp = ((yy == c) & (pp == c)).sum(axis=1)
        denom = (yy == c).sum(axis=1) + (pp == c).sum(axis=1)
        scores.append(np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), 0.0))
    return np.mean(scores, axis=0)


def bootstrap_auc_ci(
    y_index: np.ndarray, proba: np.ndarray, *, n_resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval ``(lo, hi)`` of :func:`macro_auc` over the scored users.

    Users are resampled with replacement (seeded); a resample left with fewer than two
    classes has no AUC and is skipped (``scipy.stats.bootstrap`` cannot skip one, which is
    why the resamples are drawn here, all at once). ``(nan, nan)`` if fewer than 20
    resamples had an AUC.
    """
    return bootstrap_intervals(y_index, [proba], n_resamples=n_resamples, level=level, seed=seed)[0]["auc"]


def bootstrap_intervals(
    y_index: np.ndarray, probas: Sequence[np.ndarray], *, n_resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> list[dict[str, tuple[float, float]]]:
    """Paired percentile bootstrap intervals of the AUC and F1 of several models scored on the
    same users (``probas``: ``[n, K]`` each; every model sees the same resamples): one
    ``{"auc": (lo, hi), "f1": (lo, hi)}`` per model (NaNs if fewer than 20 resamples count)."""
    y = np.asarray(y_index, dtype=np.int64)
    nan = (float("nan"), float("nan"))
    if y.size < 2 or n_resamples < 1:
        return [{"auc": nan, "f1": nan} for _ in probas]
    idx = np.random.default_rng(seed).integers(0, y.size, size=(int(n_resamples), y.size))
    alpha = (1.0 - level) / 2.0

    def interval(stats: np.ndarray) -> tuple[float, float]:
        stats = stats[~np.isnan(stats)]
        if stats.size < 20:
            return nan
        lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
        return (float(lo), float(hi))

    out = []
    for proba in probas:
        p = np.asarray(proba, dtype=np.float64)
        out.append({"auc": interval(_resampled_macro_auc(y, p, idx)),
                    "f1": interval(_resampled_f1(y, p.argmax(axis=1), idx, p.shape[1]))})
    return out


def accuracy_interval(correct: int, n: int, *, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of an accuracy of ``correct`` out of ``n`` (``scipy.stats.binomtest``)."""
    if n < 1:
        return (float("nan"), float("nan"))
    ci = binomtest(int(correct), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return (float(ci.low), float(ci.high))


def metric_intervals(
    y_index: np.ndarray, proba: np.ndarray, baseline_proba: np.ndarray | None = None, *,
    n_resamples: int = 1000, seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """95% intervals of the test metrics of a model and (optionally) its baseline on the same
    users: ``test_auc``, ``test_f1`` (paired bootstrap, ``n_resamples``; none when 0),
    ``test_accuracy`` (Wilson), and the same with the ``baseline_`` prefix."""
    y = np.asarray(y_index, dtype=np.int64)
    models = {"test": np.asarray(proba)}
    if baseline_proba is not None:
        models["baseline"] = np.asarray(baseline_proba)
    out: dict[str, tuple[float, float]] = {}
    boots = bootstrap_intervals(y, list(models.values()), n_resamples=n_resamples, seed=seed) if n_resamples else None
    for i, (name, p) in enumerate(models.items()):
        if boots is not None:
            out[f"{name}_auc"] = boots[i]["auc"]
            out[f"{name}_f1"] = boots[i]["f1"]
        out[f"{name}_accuracy"] = accuracy_interval(int((p.argmax(axis=1) == y).sum()) if y.size else 0, y.size)
    return out


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
            "between splits; read the confidence interval, or use 5-fold cross-validation (K-fold in the app, --cv 5 on the command line)"
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


def split_size_warnings(n_users: int, *, cv: int, given: bool = False) -> list[str]:
    """The advice to cross-validate when one split of fewer than 100 users is all there is
    (``given``: the split or test set came from the user, who chose it)."""
    if n_users >= MIN_SPLIT_USERS or cv >= 2 or given:
        return []
    return [f"a single train/val/test split of {n_users} users (fewer than {MIN_SPLIT_USERS}): one split's "
            "figures depend on which users it drew; 5-fold cross-validation (K-fold in the app, --cv 5 on the command line) gives the mean and spread over folds"]


def planted_share(alpha: Sequence[float] | np.ndarray, planted_dims: Sequence[int]) -> float:
    """Share of the ``|planted_dims|`` largest attention weights ``alpha [D]`` that fall on a
    planted dimension (1: the attention's top set is exactly the planted set). Ties in
    ``alpha`` are broken by dimension index, so an untrained, uniform alpha scores the share
    of planted dimensions among the first ``|planted|``, not 1."""
    a = np.asarray(alpha, dtype=np.float64)
    planted = sorted({int(d) for d in planted_dims})
    if a.ndim != 1 or not planted or planted[0] < 0 or planted[-1] >= a.size:
        raise ValueError(f"planted_dims must be non-empty indices in [0, {a.size}) that index alpha [D]")
    top = np.argsort(-a, kind="stable")[: len(planted)]
    return float(np.isin(top, planted).mean())
