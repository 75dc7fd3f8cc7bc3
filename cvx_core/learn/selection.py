"""Model selection by a proper score (validation log-loss): which head the run trains, and
which epoch it keeps.

The head (:func:`choose_head`): before any gradient step, on the features at their initial
values, each candidate is a logistic regression on a set of the head's input columns,
scored by the same inner cross-validated log-loss (``choose_by_validation``, same folds):

- ``"baseline"``: the mean embedding only, i.e. the plain mean-embedding logistic
  regression itself (its scores are the baseline's own selection).
- ``"cvx"``: CVX's temporal features only.
- ``"cvx+mean"``: CVX's temporal features and the mean vector.

The baseline is the default; it is not one candidate among equals. A temporal candidate
replaces it only when its per-user out-of-fold log-losses are lower than the baseline's on
the same folds by a paired one-sided Wilcoxon signed-rank test (``scipy.stats.wilcoxon``)
at p < 0.05, Bonferroni-corrected over the temporal candidates weighed (two: each at
0.025), and its mean inner-CV log-loss is lower too. Among those that pass, the lowest
mean loss wins. On small or uninformative data no candidate passes, and the run says "the
temporal features add nothing on this data": a lower mean on 28 users is not evidence.

When the baseline wins, the model (features plus mean vector) *starts as* that regression
(zero weight on the features), and training keeps a later epoch only if its validation
log-loss is lower than the baseline's by more than ``min_delta`` and the per-user losses
are lower by a paired one-sided Wilcoxon test at p < 0.05 / ``epochs`` (Bonferroni over
the epochs that may be tested: ``EpochSelector(guard_start=True, guard_alpha=...)``). If
none is, the run is the baseline (refitted on train and validation users, as the reported
baseline is) and says so.

``head="linear"`` trains a linear head on the features (and the mean vector with
``mean_inputs``), ``head="mlp"`` an MLP on them, their L2 strength chosen the same way.

The epoch (:class:`EpochSelector`): the lowest validation log-loss (cross-entropy,
class-weighted like the training loss) is kept; patience counts epochs without a fall of
more than ``min_delta``, so early stopping fires once the loss only creeps.
Validation AUC is reported, never optimised: on a few validation users it saturates at 1
or swings on one user.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

from cvx_core.learn.baseline import C_GRID, Selection, choose_by_validation, paired_less_p
from cvx_core.learn.splits import Split

__all__ = ["AUTO_CANDIDATES", "EpochChoice", "EpochSelector", "HeadChoice", "HeadLayout", "MLP_C_GRID",
           "choose_head", "multiclass_weights", "sk_linear"]

#: inverse L2 strengths tried for the MLP head (a shorter grid: each is a network fit per fold)
MLP_C_GRID: tuple[float, ...] = (0.1, 1.0, 10.0)
#: what ``head="auto"`` chooses among, in tie-break order
AUTO_CANDIDATES: tuple[str, ...] = ("baseline", "cvx", "cvx+mean")
NOTHING_ADDED = "the temporal features add nothing on this data"
#: family-wise cut-off of the paired one-sided Wilcoxon tests that let a temporal candidate, or a
#: trained epoch, replace the baseline (Bonferroni: divided by the candidates / epochs tested)
GUARD_ALPHA = 0.05
_NAMES = {"baseline": "mean-embedding LR (the baseline)", "cvx": "temporal features",
          "cvx+mean": "temporal features + mean vector", "mlp": "mlp"}


@dataclass(frozen=True)
class HeadChoice:
    """Which head was used and why.

    Attributes:
        head: the model's head kind, "linear" or "mlp".
        c: inverse L2 strength of the head (scikit-learn's ``C``).
        reason: one sentence, e.g. "auto: temporal features + mean vector (inner-CV
            log-loss 0.010 at C=100) over ..., by 5-fold inner CV on 192 train+val users".
        scores: validation log-loss of every candidate and C, ``{"cvx": {"1.0": loss}, ...}``.
        candidate: "baseline", "cvx", "cvx+mean" or "mlp".
        candidate_scores: each candidate's best validation log-loss.
        verdict: "the temporal features add nothing on this data: ..." when the baseline
            won the choice and no trained epoch beat it, else None.
        uses_mean: the model reads the mean embedding (``mean_inputs``).
        columns: ``[n]`` the probe's head-input columns the candidate was fitted on.
        candidate_p: for each temporal candidate, the one-sided p-value of the paired
            Wilcoxon test that its per-user inner-CV log-loss is below the baseline's
            (absent without a baseline candidate).
        alpha: the cut-off each ``candidate_p`` was held to (0.05 / candidates tested).
    """

    head: str
    c: float
    reason: str
    scores: dict[str, dict[str, float]]
    candidate: str = "cvx+mean"
    candidate_scores: dict[str, float] = field(default_factory=dict)
    verdict: str | None = None
    uses_mean: bool = True
    columns: np.ndarray | None = field(default=None, repr=False, compare=False)
    candidate_p: dict[str, float] = field(default_factory=dict)
    alpha: float | None = None


@dataclass(frozen=True)
class HeadLayout:
    """Where the candidates' columns sit in the probe's head inputs ``h = [z, |z|]`` (or ``z``),
    ``z = [temporal features (n_spec), mean embedding (n_mean)]``."""

    n_spec: int
    n_mean: int
    magnitude: bool

    def columns(self, candidate: str) -> np.ndarray:
        n_feat = self.n_spec + self.n_mean
        spec = np.arange(self.n_spec)
        mean = np.arange(self.n_spec, n_feat)
        halves = (0, n_feat) if self.magnitude else (0,)
        if candidate == "baseline":
            return mean  # the standardised mean embedding, as the baseline's own regression reads it
        if candidate == "cvx":
            return np.concatenate([spec + o for o in halves])
        return np.arange(n_feat * len(halves))  # cvx+mean, mlp: everything


def sk_linear(c: float, class_weighting: bool) -> LogisticRegression:
    """The linear head's scikit-learn twin on head inputs (already standardised)."""
    return LogisticRegression(C=float(c), class_weight="balanced" if class_weighting else None, max_iter=2000)


def sk_mlp(c: float, hidden: int, seed: int) -> MLPClassifier:
    """The MLP candidate on head inputs: one hidden layer of ``hidden`` units, L2 ``alpha = 1/C``."""
    return MLPClassifier(hidden_layer_sizes=(int(hidden),), alpha=1.0 / float(c), max_iter=200, random_state=seed)


def multiclass_weights(lr: LogisticRegression, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Logit rows ``W [K, n_in]``, ``b [K]`` equal in softmax to a fitted logistic regression
    (binary: rows ``-w/2, w/2``; a class the fit never saw gets a very negative bias)."""
    return logit_rows(lr.coef_, lr.intercept_, lr.classes_, k)


def logit_rows(coef: np.ndarray, icpt: np.ndarray, classes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`multiclass_weights` from a regression's ``coef [K' or 1, n_in]``, ``icpt`` and ``classes``."""
    coef, icpt = np.asarray(coef, dtype=np.float64), np.asarray(icpt, dtype=np.float64)
    seen = np.asarray(classes).astype(np.int64)
    w = np.zeros((k, coef.shape[1]))
    b = np.full(k, -30.0)
    if coef.shape[0] == 1:  # binary
        w[seen[0]], w[seen[1]] = -coef[0] / 2, coef[0] / 2
        b[seen[0]], b[seen[1]] = -icpt[0] / 2, icpt[0] / 2
        return w, b
    w[seen], b[seen] = coef, icpt
    return w, b


def pipeline_head(estimator: Any, *, columns: np.ndarray, mean: np.ndarray, std: np.ndarray, n_inputs: int,
                  k: int) -> tuple[np.ndarray, np.ndarray]:
    """Linear-head rows ``W [K, n_inputs]``, ``b [K]`` whose logits on the model's standardised
    inputs ``z = (x - mean) / std`` equal a fitted ``StandardScaler -> LogisticRegression``
    pipeline's on the raw ``x[:, columns]`` (e.g. the mean-embedding baseline's, refitted on
    other users with other statistics): ``coef . (x - m) / s = (coef * std / s) . z + coef .
    (mean - m) / s``. ``mean``, ``std``: the model's statistics of those columns."""
    scaler, lr = estimator[0], estimator[-1]
    s = np.asarray(scaler.scale_, dtype=np.float64)
    coef = np.asarray(lr.coef_, dtype=np.float64)
    w_sub = coef * (np.asarray(std, dtype=np.float64) / s)[None, :]
    icpt = np.asarray(lr.intercept_, dtype=np.float64) + coef @ ((np.asarray(mean, dtype=np.float64)
                                                                  - scaler.mean_) / s)
    rows, b = logit_rows(w_sub, icpt, lr.classes_, k)
    w = np.zeros((k, n_inputs))
    w[:, columns] = rows
    return w, b


def beats_baseline(per_user: np.ndarray | None, baseline: np.ndarray | None) -> float:
    """One-sided p-value of the paired Wilcoxon signed-rank test that ``per_user [n]`` losses are
    below ``baseline [n]`` (the same users); 1.0 when every pair ties, NaN without losses."""
    return paired_less_p(per_user, baseline)


def candidates_for(head: str, *, has_mean: bool, baseline: bool) -> list[str]:
    """The candidates a ``head`` setting weighs (``has_mean``: the model may read the mean
    embedding; ``baseline``: the baseline's selection is at hand)."""
    if head == "mlp":
        return ["mlp"]
    if head == "linear":
        return ["cvx+mean" if has_mean else "cvx"]
    out = [c for c in AUTO_CANDIDATES if has_mean or c == "cvx"]
    return [c for c in out if baseline or c != "baseline"]


def choose_head(
    h: np.ndarray,
    y: np.ndarray,
    split: Split,
    *,
    layout: HeadLayout,
    head: str,
    n_classes: int,
    baseline: Selection | None = None,
    head_c: float | None = None,
    hidden: int = 64,
    class_weighting: bool = True,
    inner_cv: int = 5,
    seed: int = 0,
) -> HeadChoice:
    """Choose the head by validation log-loss on head inputs ``h [N, n_in]`` (rows indexed
    like the data; only train and val rows are read) with class indices ``y [N]``.

    ``baseline`` is the mean-embedding regression's own :class:`Selection` (same split,
    same folds): it is the ``"baseline"`` candidate's score. See the module docstring.
    """
    kinds = candidates_for(head, has_mean=layout.n_mean > 0, baseline=baseline is not None)
    sels: dict[str, Selection] = {}
    for kind in kinds:
        if kind == "baseline":
            assert baseline is not None
            sels[kind] = baseline
            continue
        if kind == "mlp":
            grid, make = (MLP_C_GRID if head_c is None else [head_c]), (lambda c: sk_mlp(c, hidden, seed))
        else:
            grid, make = (C_GRID if head_c is None else [head_c]), (lambda c: sk_linear(c, class_weighting))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            sels[kind] = choose_by_validation(make, list(grid), h[:, layout.columns(kind)], y, split,
                                              n_classes=n_classes, inner_cv=inner_cv, seed=seed)
    best, p_values, alpha = _winner(kinds, sels)
    sel = sels[best]
    reason, verdict = _reason(head, kinds, sels, best, p_values, alpha, head_c)
    return HeadChoice(
        head="mlp" if best == "mlp" else "linear", c=float(sel.value), reason=reason,
        scores={kd: dict(sv.scores) for kd, sv in sels.items()}, candidate=best,
        candidate_scores={kd: _score_of(kd, sv) for kd, sv in sels.items()},
        verdict=verdict,
        uses_mean=best != "cvx" and layout.n_mean > 0, columns=layout.columns(best), candidate_p=p_values,
        alpha=alpha,
    )


def _score_of(kind: str, sel: Selection) -> float:
    """A candidate's inner-CV log-loss as compared: the baseline's at its best-calibrated C."""
    return float(sel.min_score if kind == "baseline" else sel.best_score)


def _c_of(kind: str, sel: Selection) -> float:
    """The C at which :func:`_score_of` scored the candidate."""
    if kind != "baseline":
        return float(sel.value)
    return float(min(sel.scores, key=lambda c: sel.scores[c]))


def _reason(head: str, kinds: list[str], sels: dict[str, Selection], best: str, p_values: dict[str, float],
            alpha: float | None, head_c: float | None) -> tuple[str, str | None]:
    """The head choice in one sentence, and the "add nothing" verdict when the baseline won."""
    sel = sels[best]
    how = next(s.how for k, s in sels.items() if k != "baseline") if len(sels) > 1 else sel.how
    if len(kinds) > 1:
        others = ", ".join(f"{_NAMES[o]} ({_score_of(o, sels[o]):.3f} at C={_c_of(o, sels[o]):g})"
                           for o in kinds if o != best)
        reason = (f"{head}: {_NAMES[best]} (inner-CV log-loss {_score_of(best, sel):.3f} at C={_c_of(best, sel):g}) "
                  f"over {others}, by {how}")
    else:
        what = (f"auto: {_NAMES[best]}, the only candidate (the model reads no mean vector)" if head == "auto"
                else f"{best if best == 'mlp' else 'linear'} as asked")
        reason = f"{what}; C={sel.value:g}" + (" as given" if head_c is not None else f" by {sel.how}")
    if p_values:
        reason += "; " + _test_words(p_values, alpha)
    if best != "baseline":
        return reason, None
    if _c_of("baseline", sel) != sel.value:
        reason += f"; the baseline itself is fitted at C={sel.value:g} ({sel.how})"
    rest = ", ".join(f"{_NAMES[o]} {sels[o].best_score:.3f}" for o in kinds if o != best)
    verdict = (f"{NOTHING_ADDED}: no temporal candidate's inner-CV log-loss was below the plain "
               f"mean-embedding logistic regression's ({_score_of(best, sel):.3f}; {rest}) by the paired test "
               f"({_test_words(p_values, alpha)}), and no trained epoch beat it on validation by more "
               "than min_delta and significantly, so the run is that regression")
    return reason, verdict


def _winner(kinds: list[str], sels: dict[str, Selection]) -> tuple[str, dict[str, float], float | None]:
    """The chosen candidate, each temporal candidate's p against the baseline, and the cut-off.

    Without a baseline candidate: the lowest inner-CV log-loss (ties: the first). With one:
    the lowest among the temporal candidates whose loss is lower and significantly so by a
    paired one-sided Wilcoxon test at ``GUARD_ALPHA / m`` (``m`` temporal candidates), else
    the baseline."""
    if "baseline" not in sels:
        return min(kinds, key=lambda kd: sels[kd].best_score), {}, None  # min keeps the first of equals
    base = sels["baseline"]  # compared at its best-calibrated C (its lowest inner-CV loss), like the rivals
    rivals = [kd for kd in kinds if kd != "baseline"]
    alpha = GUARD_ALPHA / max(1, len(rivals))
    p_values = {kd: beats_baseline(sels[kd].per_user, base.min_per_user) for kd in rivals}
    passed = [kd for kd in rivals if sels[kd].best_score < base.min_score and p_values[kd] < alpha]
    return (min(passed, key=lambda kd: sels[kd].best_score) if passed else "baseline"), p_values, alpha


def _test_words(p_values: dict[str, float], alpha: float | None) -> str:
    ps = ", ".join(f"{_NAMES[kd]} p = {p:.2g}" for kd, p in p_values.items())
    return (f"paired one-sided Wilcoxon over the users' out-of-fold log-losses against the baseline, {ps}; "
            f"cut-off {alpha:.3g} (0.05 Bonferroni over {len(p_values)})")


@dataclass(frozen=True)
class EpochChoice:
    """Why the kept epoch won.

    Attributes:
        epoch: the kept epoch (0: the starting weights).
        val_loss, val_auc: its validation log-loss (the criterion) and AUC (reported only).
        runner_up_epoch, runner_up_val_loss: the next-lowest validation log-loss (None / NaN
            when only one epoch was scored).
        min_delta: the fall in validation log-loss that reset early stopping's patience.
        reason: the above in one sentence.
        last_significant_epoch: the last epoch whose loss fell by more than ``min_delta``.
    """

    epoch: int
    val_loss: float
    val_auc: float
    runner_up_epoch: int | None
    runner_up_val_loss: float
    min_delta: float
    reason: str
    criterion: str = "validation log-loss"
    last_significant_epoch: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "val_loss": self.val_loss, "val_auc": self.val_auc,
                "runner_up_epoch": self.runner_up_epoch, "runner_up_val_loss": self.runner_up_val_loss,
                "min_delta": self.min_delta, "criterion": self.criterion, "reason": self.reason,
                "last_significant_epoch": self.last_significant_epoch}


class EpochSelector:
    """The kept epoch is the one with the lowest validation log-loss (the checkpoint follows
    every fall); early stopping counts ``bad_epochs`` since the last fall of more than
    ``min_delta`` below the reference loss (the loss at that fall), as Keras' EarlyStopping
    does, and fires at ``patience``. So a run whose loss creeps down by less than
    ``min_delta`` an epoch stops, and keeps its lowest epoch. With ``guard_start`` the
    starting weights (epoch 0, e.g. the plain baseline) stay kept unless a later epoch is
    lower by more than ``min_delta`` and significantly (paired one-sided Wilcoxon over the
    validation users at ``guard_alpha``)."""

    def __init__(self, *, min_delta: float, patience: int, guard_start: bool = False,
                 guard_alpha: float = GUARD_ALPHA) -> None:
        self.guard_start = bool(guard_start)
        self.guard_alpha = float(guard_alpha)
        self._start_losses: np.ndarray | None = None  # [n_val] per-user log-loss of the starting weights
        self.guard_p = math.nan  # the last guard test's p-value
        self.min_delta = float(min_delta)
        self.patience = int(patience)
        self.scored: list[tuple[int, float, float]] = []  # (epoch, val_loss, val_auc)
        self.best: tuple[int, float, float] | None = None
        self.reference: tuple[int, float] | None = None  # (epoch, loss) of the last fall by more than min_delta
        self.bad_epochs = 0

    def offer(self, epoch: int, val_loss: float, val_auc: float, *, per_user: np.ndarray | None = None) -> bool:
        """Score ``epoch`` (``per_user [n_val]``: each validation user's log-loss, for the
        guard's paired test); True if it becomes the kept epoch (the lowest loss so far)."""
        loss = float(val_loss) if math.isfinite(val_loss) else math.inf
        self.scored.append((int(epoch), loss, float(val_auc)))
        if epoch == 0 and per_user is not None:
            self._start_losses = np.asarray(per_user, dtype=np.float64).copy()
        if self.reference is None or loss < self.reference[1] - self.min_delta:
            self.reference = (int(epoch), loss)
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        if self.best is None:
            self.best = self.scored[-1]
            return True
        if self.guard_start and self.best[0] == 0:
            # the starting weights (the baseline) give way only to a fall of more than min_delta
            # that is also significant over the validation users (paired one-sided Wilcoxon)
            if not (loss < self.best[1] - self.min_delta and self._beats_start(per_user)):
                return False
        elif not loss < self.best[1]:
            return False
        self.best = self.scored[-1]
        return True

    def _beats_start(self, per_user: np.ndarray | None) -> bool:
        start = self._start_losses
        if per_user is None or start is None or len(start) != len(per_user):
            return True  # no per-user losses: the min_delta rule alone
        self.guard_p = beats_baseline(per_user, start)
        return bool(self.guard_p < self.guard_alpha)

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    @property
    def best_epoch(self) -> int:
        return 0 if self.best is None else self.best[0]

    @property
    def best_loss(self) -> float:
        return math.nan if self.best is None else self.best[1]

    @property
    def best_auc(self) -> float:
        return math.nan if self.best is None else self.best[2]

    def choice(self) -> EpochChoice:
        assert self.best is not None and self.reference is not None, "no epoch was scored"
        epoch, loss, auc = self.best
        others = sorted((s for s in self.scored if s[0] != epoch), key=lambda s: s[1])
        runner = others[0] if others else None
        what = "the starting weights" if epoch == 0 else f"epoch {epoch}"
        reason = f"{what}: lowest validation log-loss {loss:.4g} (AUC {auc:.3f}, reported only)"
        reason += "; no other epoch was scored" if runner is None else f"; runner-up epoch {runner[0]} ({runner[1]:.4g})"
        if self.guard_start:
            reason += (f"; the starting weights were the plain baseline, which a trained epoch had to beat by "
                       f"more than min_delta {self.min_delta:g} and significantly over the validation users "
                       f"(paired one-sided Wilcoxon signed-rank on per-user log-loss, p < {self.guard_alpha:.3g})")
        last = self.scored[-1][0]
        if self.bad_epochs >= self.patience:
            reason += (f"; stopped after epoch {last}: in the {self.bad_epochs} epochs after epoch {self.reference[0]} "
                       f"({self.reference[1]:.4g}) none lowered the validation log-loss by more than min_delta "
                       f"{self.min_delta:g} (smaller falls still count when the lowest is kept)")
        else:
            reason += f"; the last fall of more than min_delta {self.min_delta:g} was at epoch {self.reference[0]}"
        return EpochChoice(epoch=epoch, val_loss=loss, val_auc=auc, runner_up_epoch=None if runner is None else runner[0],
                           runner_up_val_loss=math.nan if runner is None else runner[1], min_delta=self.min_delta,
                           reason=reason, last_significant_epoch=self.reference[0])
