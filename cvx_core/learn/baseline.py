"""Logistic regressions on fixed per-user vectors (scikit-learn), with the regularisation
chosen by validation: the mean-embedding baseline that every accuracy figure stands beside,
and the same fit on any other per-user matrix (e.g. CVX's analytic features).

Choosing a hyper-parameter (``choose_by_validation``): on small data (fewer than
``SMALL_DATA`` train + validation users) by stratified inner cross-validation over the
train and validation users together; otherwise by fitting on the train users and scoring
the validation users. The score is the log-loss (smooth where AUC saturates at 1 on a
handful of users); ties go to the first candidate (the strongest regularisation). The
chosen candidate's per-user out-of-fold log-losses are kept (``Selection.per_user``), so
two candidates scored on the same folds can be compared user by user (a paired test).

The baseline (``logreg_on_vectors``) is then refitted on every non-test user (train and
validation together, as a plain logistic regression on the same split would be): C was
chosen by inner CV over exactly those users, and holding the validation users out of the
final fit only made the reported baseline weaker than a plain regression. Its validation
AUC comes from a fit on the train users alone (so it is out of sample).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin, clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from cvx_core.data.trajectory import TrajectorySet
from cvx_core.learn.metrics import ClassificationMetrics, classification_metrics
from cvx_core.learn.splits import Split

#: inverse L2 strengths tried for a logistic regression
C_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)
#: below this many train + validation users, hyper-parameters are chosen by inner CV
SMALL_DATA = 1000


@dataclass(frozen=True)
class Selection:
    """A hyper-parameter chosen by validation.

    Attributes:
        value: the chosen candidate.
        scores: mean validation log-loss of every candidate (lower is better), by candidate.
        how: in words, e.g. "5-fold inner CV on 48 train+val users".
        per_user: ``[n]`` the chosen candidate's log-loss of each scored user (inner CV: the
            train+val users in ``train, val`` order, out of fold; else the validation users).
    """

    value: Any
    scores: dict[str, float]
    how: str
    per_user: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def best_score(self) -> float:
        return self.scores[str(self.value)]


def choose_by_validation(
    make: Callable[[Any], ClassifierMixin],
    candidates: Sequence[Any],
    x: np.ndarray,
    y: np.ndarray,
    split: Split,
    *,
    n_classes: int,
    inner_cv: int = 5,
    small_data: int = SMALL_DATA,
    seed: int = 0,
) -> Selection:
    """Pick the candidate whose estimator ``make(candidate)`` has the lowest validation log-loss.

    ``x [N, F]`` and ``y [N]`` (class indices) cover all users; only ``split.train`` and
    ``split.val`` are read. See the module docstring for inner CV versus validation users.
    """
    labels = np.arange(n_classes)
    pool = np.concatenate([split.train, split.val])
    counts = np.bincount(y[pool], minlength=n_classes)
    k = int(min(inner_cv, counts[counts > 0].min()))
    use_cv = pool.size < small_data and k >= 2
    scores: dict[str, float] = {}
    per_user: dict[str, np.ndarray] = {}
    with threadpool_limits(limits=1, user_api="blas"):  # small matrices: BLAS threads only spin
        for cand in candidates:
            scores[str(cand)], per_user[str(cand)] = _score(make(cand), x, y, split, pool, use_cv, k, labels,
                                                            n_classes, seed)
    best = min(candidates, key=lambda c: scores[str(c)])  # min keeps the first of equals
    how = f"{k}-fold inner CV on {pool.size} train+val users" if use_cv else f"{split.val.size} validation users"
    return Selection(value=best, scores=scores, how=how, per_user=per_user[str(best)])


def _score(est: ClassifierMixin, x: np.ndarray, y: np.ndarray, split: Split, pool: np.ndarray, use_cv: bool,
           k: int, labels: np.ndarray, n_classes: int, seed: int) -> tuple[float, np.ndarray]:
    """Validation log-loss of one candidate estimator (inner CV over ``pool`` or train -> val)
    and each scored user's log-loss ``[n]``."""
    if use_cv:
        folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        proba = cross_val_predict(est, x[pool], y[pool], cv=folds, method="predict_proba")
        proba = _full_columns(proba, np.unique(y[pool]), n_classes)
        scored = y[pool]
    else:
        est = clone(est).fit(x[split.train], y[split.train])
        proba = _full_columns(est.predict_proba(x[split.val]), est.classes_, n_classes)
        scored = y[split.val]
    score = log_loss(scored, proba, labels=labels)
    per_user = -np.log(np.clip(proba[np.arange(scored.size), scored], 1e-15, None))
    return (float(score) if math.isfinite(score) else float("inf")), per_user


def _full_columns(proba: np.ndarray, present: np.ndarray, n_classes: int) -> np.ndarray:
    """``[N, K']`` probabilities of the classes an estimator saw -> ``[N, K]`` (others 0)."""
    if proba.shape[1] == n_classes:
        return proba
    out = np.zeros((proba.shape[0], n_classes))
    out[:, np.asarray(present, dtype=np.int64)] = proba
    return out


def make_logreg(c: float, *, class_weighting: bool = True, standardise: bool = True) -> ClassifierMixin:
    """``StandardScaler`` then an L2 ``LogisticRegression(C=c)`` (lbfgs, multinomial)."""
    lr = LogisticRegression(C=float(c), class_weight="balanced" if class_weighting else None, max_iter=2000)
    return make_pipeline(StandardScaler(), lr) if standardise else lr


@dataclass(frozen=True)
class BaselineResult:
    """A logistic regression on fixed per-user vectors, on the model's split.

    Attributes:
        val_auc, test_auc: ROC AUC on the validation and test users.
        c: inverse L2 strength chosen by validation from ``C_GRID``.
        test: full test metrics.
        selection: how ``c`` was chosen and every candidate's score.
        test_proba: ``[n_test, K]`` class probabilities of the test users.
        estimator: the fitted pipeline (``StandardScaler`` then ``LogisticRegression``, on
            every non-test user), e.g. for a model head that must predict what it predicts.
    """

    val_auc: float
    test_auc: float
    c: float
    test: ClassificationMetrics
    selection: Selection | None = None
    test_proba: np.ndarray | None = field(default=None, repr=False)
    estimator: Any = field(default=None, repr=False, compare=False)


def logreg_on_vectors(
    x_all: np.ndarray,
    y_all: np.ndarray,
    split: Split,
    classes: Sequence[int],
    *,
    class_weighting: bool = True,
    seed: int = 0,
    inner_cv: int = 5,
    small_data: int = SMALL_DATA,
) -> BaselineResult:
    """Standardised logistic regression on ``x_all [N, F]`` with class indices ``y_all [N]``:
    ``C`` chosen by :func:`choose_by_validation`, then fitted on every non-test user (train and
    validation) and scored on test; the validation AUC is a train-only fit's (out of sample)."""
    k = len(classes)
    sel = choose_by_validation(
        lambda c: make_logreg(c, class_weighting=class_weighting), C_GRID, x_all, y_all, split,
        n_classes=k, inner_cv=inner_cv, small_data=small_data, seed=seed,
    )
    fit = np.concatenate([split.train, split.val])
    with threadpool_limits(limits=1, user_api="blas"):
        on_train = make_logreg(sel.value, class_weighting=class_weighting).fit(x_all[split.train], y_all[split.train])
        est = make_logreg(sel.value, class_weighting=class_weighting).fit(x_all[fit], y_all[fit])
    val = classification_metrics(y_all[split.val], _full_columns(on_train.predict_proba(x_all[split.val]),
                                                                 on_train.classes_, k), classes)
    p_test = _full_columns(est.predict_proba(x_all[split.test]), est.classes_, k)
    test = classification_metrics(y_all[split.test], p_test, classes)
    return BaselineResult(val_auc=val.auc, test_auc=test.auc, c=float(sel.value), test=test, selection=sel,
                          test_proba=p_test, estimator=est)


def mean_embeddings(ts: TrajectorySet) -> np.ndarray:
    """Each user's mean embedding ``[N, D]`` float64."""
    return np.stack([tr.embeddings.astype(np.float64).mean(axis=0) for tr in ts])


def mean_embedding_baseline(
    ts: TrajectorySet,
    split: Split,
    *,
    classes: Sequence[int] | None = None,
    class_weighting: bool = True,
    seed: int = 0,
    inner_cv: int = 5,
) -> BaselineResult:
    """Logistic regression on each user's mean embedding (``[N, D]``), standardised on train,
    ``C`` chosen by validation (inner CV on small data), on the same split as the model."""
    classes = tuple(sorted(set(int(v) for v in ts.labels))) if classes is None else tuple(classes)
    cls_index = {c: i for i, c in enumerate(classes)}
    y_all = np.array([cls_index[int(v)] for v in ts.labels], dtype=np.int64)
    return logreg_on_vectors(mean_embeddings(ts), y_all, split, classes, class_weighting=class_weighting,
                             seed=seed, inner_cv=inner_cv)
