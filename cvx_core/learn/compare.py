"""Learned attention vs analytic attribution: did the model learn what the analytics show?

Every statistic the CLI (``python -m cvx_core compare``) and the app's Compare page show is
computed here, once:

- ``alpha [D]``: the trained model's DimensionAttention weights.
- ``attribution [D]``: the analytic drift attribution of the run's **held-out** users (its
  test users): with two classes ``|mean drift share of the positive class - that of the
  other|`` (kind ``"abs_class_difference"``), with more classes the spread (standard
  deviation) of the class-mean drift shares (``"class_spread"``). Held-out users, because
  on the training users a model fitted to noise agrees with the noise of the same labels
  (measured on permuted labels: Spearman 0.31-0.36 with p = 0.003 on the training users,
  see docs/analytics.md).
- Spearman and Pearson of alpha and attribution (``scipy.stats``).
- A one-sided permutation p-value of Pearson r (``scipy.stats.permutation_test``; alpha is a
  weight, so Pearson asks whether its mass sits where the attribution is large, and it has
  more power than Spearman when few dimensions carry the signal): the
  held-out users' labels are permuted (``n_permutations`` times, seeded) and the attribution
  recomputed, so the null keeps whatever the dimensions share regardless of labels (some
  dimensions drift more than others). ``MIN_PERMUTATIONS <= n_permutations <= MAX_PERMUTATIONS``.
- Top-k overlap (Jaccard of the two top-k sets, one top-k rule: descending, ties by the lower
  index) for the k of :func:`overlap_ks` (k <= D/4), beside its chance level and a
  hypergeometric p-value of the shared count.
- With planted dimensions (synthetic data): the planted share (share of alpha's top
  ``|planted|`` that is planted) and the Spearman of alpha and of attribution against the
  planted indicator.
- A graded verdict (:func:`grade`): level ``strong`` / ``moderate`` / ``weak`` / ``none`` from
  the p-value at the cut-off ``CUTOFF = 0.05`` and the top-k overlap against chance; never
  above ``none`` without significance; the cut-off and the reason are part of the result.

Undefined numbers (a flat alpha ranks nothing) are ``None``, never NaN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cvx_core.data import budgets as _limits
from cvx_core.data.budgets import MIN_PERMUTATIONS, check_permutations
from cvx_core.data.trajectory import TrajectorySet
from cvx_core.features.config import TemporalFeaturesConfig
from cvx_core.learn.metrics import planted_share

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = [
    "CUTOFF",
    "DEFAULT_PERMUTATIONS",
    "MIN_PERMUTATIONS",
    "MAX_PERMUTATIONS",
    "AttentionComparison",
    "TopKOverlap",
    "Verdict",
    "compare_attention",
    "compare_run",
    "held_out_users",
    "learned_alpha",
    "spearman",
    "pearson",
    "overlap_ks",
    "chance_jaccard",
    "topk_indices",
    "topk_jaccard",
    "topk_overlaps",
    "planted_share",
    "label_permutation_pvalue",
    "grade",
]

#: significance cut-off of the one-sided permutation test (and of the top-k overlap test)
CUTOFF = 0.05
#: permutations by default: the smallest p-value possible is 1 / (999 + 1) = 0.001
DEFAULT_PERMUTATIONS = 999
#: more only cost time: a p-value resolution of 1e-5 is far below any cut-off (the budget
#: cvx_core.data.budgets.MAX_PERMUTATIONS, settable by CVX_MAX_PERMUTATIONS, is the one in force)
MAX_PERMUTATIONS = _limits.MAX_PERMUTATIONS.default
#: relative spread below which alpha (or the attribution) counts as flat: it ranks nothing
FLAT_TOLERANCE = 1e-9

LEVELS = ("none", "weak", "moderate", "strong")


# ---- correlations and the one top-k rule -----------------------------------------------------
def _vectors(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"need two vectors of one length, got {x.shape} and {y.shape}")
    return x, y


def is_flat(x: np.ndarray) -> bool:
    """True when ``x`` is (numerically) constant, so it ranks nothing."""
    x = np.asarray(x, dtype=np.float64)
    scale = max(float(np.max(np.abs(x))), 1e-300) if x.size else 1.0
    return x.size < 2 or float(np.ptp(x)) <= FLAT_TOLERANCE * scale


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two ``[D]`` vectors (``scipy.stats.pearsonr``); NaN when one is constant."""
    from scipy import stats

    x, y = _vectors(x, y)
    if is_flat(x) or is_flat(y):
        return float("nan")
    return float(stats.pearsonr(x, y).statistic)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (``scipy.stats.spearmanr``, ties share ranks); NaN when one is constant."""
    from scipy import stats

    x, y = _vectors(x, y)
    if is_flat(x) or is_flat(y):
        return float("nan")
    return float(stats.spearmanr(x, y).statistic)


def overlap_ks(dim: int) -> tuple[int, ...]:
    """The ``k`` to report for ``D = dim``: 10 and 50 where ``k <= D / 4``, else ``max(1, D // 4)``;
    always ``k < D`` (empty for ``D < 2``). At ``k`` near ``D`` any two rankings overlap."""
    if dim < 2:
        return ()
    ks = tuple(k for k in (10, 50) if 4 * k <= dim)
    return ks or (max(1, dim // 4),)


def chance_jaccard(k: int, dim: int) -> float:
    """Expected Jaccard of two independent uniformly random ``k``-subsets of ``dim`` items:
    ``sum_i P(|A ∩ B| = i) * i / (2k - i)``, ``|A ∩ B|`` hypergeometric (``scipy.stats.hypergeom``)."""
    from scipy.stats import hypergeom

    if not 1 <= k <= dim:
        raise ValueError(f"need 1 <= k <= D, got k={k}, D={dim}")
    i = np.arange(0, k + 1)
    return float((hypergeom(dim, k, k).pmf(i) * i / (2 * k - i)).sum())


def topk_indices(x: np.ndarray, k: int) -> np.ndarray:
    """The one top-k rule: indices of the ``k`` largest entries, descending, ties by the lower index."""
    x = np.asarray(x, dtype=np.float64)
    if not 1 <= k <= x.size:
        raise ValueError(f"need 1 <= k <= {x.size}, got k={k}")
    return np.argsort(-x, kind="stable")[:k]


def topk_jaccard(x: np.ndarray, y: np.ndarray, k: int) -> float:
    """Jaccard index of the top-``k`` sets of ``x`` and ``y`` (:func:`topk_indices`)."""
    x, y = _vectors(x, y)
    a, b = set(topk_indices(x, k).tolist()), set(topk_indices(y, k).tolist())
    return len(a & b) / len(a | b)


@dataclass(frozen=True)
class TopKOverlap:
    """Top-``k`` overlap of alpha and attribution beside chance.

    Attributes:
        k: size of the two top sets.
        jaccard: Jaccard of the sets (None when alpha or the attribution is flat).
        chance: expected Jaccard of two random rankings of D dimensions.
        shared: dimensions the two sets share (None when flat).
        p_value: ``P(shared >= observed)`` for two random sets (hypergeometric; None when flat).
    """

    k: int
    jaccard: float | None
    chance: float
    shared: int | None
    p_value: float | None

    @property
    def overlap(self) -> float | None:
        """The overlap shown: the Jaccard index."""
        return self.jaccard

    def above_chance(self, cutoff: float = CUTOFF) -> bool:
        return self.p_value is not None and self.p_value < cutoff

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "overlap": self.jaccard, "chance": self.chance, "shared": self.shared,
                "p_value": self.p_value}


def topk_overlaps(a: np.ndarray, b: np.ndarray) -> tuple[TopKOverlap, ...]:
    """:class:`TopKOverlap` of ``a [D]`` and ``b [D]`` for every ``k`` of :func:`overlap_ks`."""
    from scipy.stats import hypergeom

    a, b = _vectors(a, b)
    flat = is_flat(a) or is_flat(b)
    out = []
    for k in overlap_ks(a.size):
        chance = chance_jaccard(k, a.size)
        if flat:
            out.append(TopKOverlap(k, None, chance, None, None))
            continue
        shared = len(set(topk_indices(a, k).tolist()) & set(topk_indices(b, k).tolist()))
        p = float(hypergeom(a.size, k, k).sf(shared - 1))
        out.append(TopKOverlap(k, shared / (2 * k - shared), chance, shared, min(1.0, p)))
    return tuple(out)


def _planted(planted_dims: Sequence[int], dim: int) -> np.ndarray:
    planted = np.unique(np.asarray(list(planted_dims), dtype=np.int64))
    if planted.size == 0 or planted.min() < 0 or planted.max() >= dim:
        raise ValueError(f"planted_dims must be non-empty indices in [0, {dim})")
    return planted


# ---- the label-permutation test ----------------------------------------------------------------
def _class_attribution(shares: np.ndarray, labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Attribution ``[..., D]`` from per-user shares ``[N, D]`` and labels ``[..., N]``: two classes
    ``|mean(classes[1]) - mean(classes[0])|``, more the standard deviation of the class means."""
    means = []
    for c in classes:
        mask = (labels == c).astype(np.float64)  # [..., N]
        means.append((mask @ shares) / mask.sum(axis=-1, keepdims=True))
    if len(means) == 2:
        return np.abs(means[1] - means[0])
    return np.std(np.stack(means), axis=0)


def _corr_with(centred: np.ndarray, values: np.ndarray, *, ranks: bool) -> np.ndarray:
    """Pearson of a centred vector ``[D]`` with each row of ``values [..., D]`` (of their ranks when
    ``ranks``: Spearman, ``centred`` then holds centred ranks); 0 for a flat row."""
    from scipy.stats import rankdata

    r = rankdata(values, axis=-1) if ranks else values
    r = r - r.mean(axis=-1, keepdims=True)
    den = np.sqrt((r**2).sum(axis=-1) * (centred**2).sum())
    num = r @ centred
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def label_permutation_pvalue(
    alpha: np.ndarray, shares: np.ndarray, labels: np.ndarray, *,
    n_permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0, statistic: str = "pearson",
) -> float:
    """One-sided p-value of ``r(alpha, attribution(shares, labels)) > 0`` under label permutation.

    ``alpha [D]``, ``shares [N, D]`` (per-user drift shares), ``labels [N]`` (>= 2 classes);
    ``r`` is Pearson (``statistic="pearson"``, the default: alpha is a weight, so the question
    is whether its mass sits where the attribution is large) or Spearman. With
    ``scipy.stats.permutation_test`` (pairings: the labels are shuffled across the users),
    ``p = (1 + #{r_perm >= r}) / (1 + n_permutations)``.
    """
    from scipy import stats

    n = check_permutations(n_permutations)
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if classes.size < 2:
        raise ValueError("the label-permutation test needs at least two classes")
    if statistic not in ("pearson", "spearman"):
        raise ValueError(f"statistic must be 'pearson' or 'spearman', got {statistic!r}")
    ranks = statistic == "spearman"
    centred = np.asarray(alpha, dtype=np.float64)
    centred = stats.rankdata(centred) if ranks else centred
    centred = centred - centred.mean()
    shares = np.asarray(shares, dtype=np.float64)

    def corr(y: np.ndarray, axis: int = -1) -> np.ndarray:
        return _corr_with(centred, _class_attribution(shares, np.moveaxis(y, axis, -1), classes), ranks=ranks)

    res = stats.permutation_test((labels,), corr, permutation_type="pairings", vectorized=True,
                                 n_resamples=n, alternative="greater", random_state=seed, batch=250)
    return float(res.pvalue)


# ---- the verdict --------------------------------------------------------------------------------
def _two(x: float) -> str:
    """``x`` to two decimals, without a "-0.00"."""
    text = f"{x:.2f}"
    return "0.00" if text == "-0.00" else text


@dataclass(frozen=True)
class Verdict:
    """A graded verdict: ``level`` (none / weak / moderate / strong), whether the permutation test
    is significant at ``cutoff``, the ``reason`` for the level and a plain ``sentence``."""

    level: str
    significant: bool
    cutoff: float
    reason: str
    sentence: str


def grade(r: float | None, p_value: float | None, overlaps: Sequence[TopKOverlap], *,
          cutoff: float = CUTOFF, n_permutations: int = DEFAULT_PERMUTATIONS,
          what: str = "the class difference of drift shares", why_none: str | None = None,
          rho: float | None = None) -> Verdict:
    """The level from the one-sided permutation p-value of Pearson ``r`` at ``cutoff`` and the
    top-k overlap against chance (hypergeometric p < ``cutoff``); ``rho`` (Spearman) is quoted:

    - none: no test (``why_none``: flat alpha, no labels), or ``p >= cutoff``;
    - weak: ``p < cutoff`` but no top-k overlap above chance (they agree in bulk, not at the top);
    - moderate: ``p < cutoff`` and the overlap above chance at some but not every k;
    - strong: ``p < cutoff`` and the overlap above chance at every k.
    """
    test = f"one-sided label-permutation test of Pearson r, {n_permutations} permutations"
    if why_none is not None or r is None or p_value is None:
        reason = why_none or "no statistic to test"
        return Verdict("none", False, cutoff, reason, f"No comparison: {reason}.")
    above = [o for o in overlaps if o.above_chance(cutoff)]
    tops = "; ".join(f"top-{o.k} overlap {o.jaccard:.2f} vs chance {o.chance:.2f}" for o in overlaps
                     if o.jaccard is not None)
    numbers = (f"Pearson r {_two(r)}, p = {p_value:.3g}" + ("" if rho is None else f"; Spearman {_two(rho)}")
               + (f"; {tops}" if tops else ""))
    if p_value >= cutoff:
        reason = f"p = {p_value:.3g} is not below {cutoff:g} ({test})"
        return Verdict("none", False, cutoff, reason,
                       f"No evidence of agreement ({numbers}): alpha does not follow {what} "
                       "more than alpha and a shuffled labelling would.")
    if not above:
        level, part = "weak", "but no top-k overlap is above chance"
        sentence = f"Weak agreement ({numbers}): alpha follows {what} in bulk, but its top dimensions are not theirs."
    elif len(above) < len(overlaps):
        level, part = "moderate", "and the top-k overlap is above chance at k = " + ", ".join(str(o.k) for o in above)
        sentence = f"Moderate agreement ({numbers}): the model partly weights the dimensions that {what} single out."
    else:
        level, part = "strong", "and the top-k overlap is above chance at every k"
        sentence = (f"Strong agreement ({numbers}): the model weights the dimensions that {what} single out; "
                    "it learned what the analytics show.")
    reason = f"p = {p_value:.3g} < {cutoff:g} ({test}) {part} (hypergeometric p < {cutoff:g})"
    return Verdict(level, True, cutoff, reason, sentence)


# ---- the comparison ------------------------------------------------------------------------------
def _opt(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


@dataclass(frozen=True)
class AttentionComparison:
    """Learned alpha beside analytic attribution, per dimension, and how well they agree.

    Attributes:
        alpha: ``[D]`` learned DimensionAttention weights (sum to D; all ones = nothing learned).
        attribution: ``[D]`` analytic attribution of the compared (held-out) users.
        attribution_kind: "abs_class_difference", "class_spread" or "mean_shares" (no two classes).
        positive_class: the class whose shares come first in the class difference (two classes only).
        users: which users the attribution is computed on (words) and ``n_users`` how many.
        spearman, pearson: correlations of alpha with attribution (None when one is flat).
        signed_spearman: Spearman of alpha with the signed class difference (two classes only).
        p_value: one-sided label-permutation p-value of Pearson r (None without a test).
        n_permutations: label permutations of the test.
        top_k: :class:`TopKOverlap` for every k of :func:`overlap_ks`.
        verdict: the graded :class:`Verdict` (level, significant, cut-off, reason, sentence).
        planted_share: share of alpha's top ``|planted|`` that is planted (None without planted dims).
        planted_spearman: Spearman of alpha with the 0/1 planted indicator (None without).
        planted_spearman_max: the same for an alpha ranking every planted dim first: the ceiling
            for a continuous alpha (about 0.42 with 24 of 384 dims planted).
        attribution_planted_spearman: Spearman of the attribution with the planted indicator.
        n_planted: number of planted dimensions (None without).
    """

    alpha: np.ndarray
    attribution: np.ndarray
    attribution_kind: str
    positive_class: int | None
    users: str
    n_users: int
    spearman: float | None
    pearson: float | None
    signed_spearman: float | None
    p_value: float | None
    n_permutations: int
    top_k: tuple[TopKOverlap, ...]
    verdict: Verdict
    planted_share: float | None = None
    planted_spearman: float | None = None
    planted_spearman_max: float | None = None
    attribution_planted_spearman: float | None = None
    n_planted: int | None = None

    @property
    def level(self) -> str:
        return self.verdict.level

    @property
    def significant(self) -> bool:
        return self.verdict.significant

    def table(self) -> dict[str, np.ndarray]:
        """Per-dimension columns for display: dimension, alpha, attribution and their ranks (1 = top)."""
        from scipy.stats import rankdata

        d = self.alpha.size
        return {
            "dimension": np.arange(d),
            "alpha": self.alpha,
            "attribution": self.attribution,
            "alpha_rank": d + 1 - rankdata(self.alpha),
            "attribution_rank": d + 1 - rankdata(self.attribution),
        }

    def to_dict(self) -> dict[str, Any]:
        """The numbers as JSON-ready values (no NaN: undefined numbers are None)."""
        out: dict[str, Any] = {
            "spearman": self.spearman,
            "pearson": self.pearson,
            "signed_spearman": self.signed_spearman,
            "p_value": self.p_value,
            "permutations": self.n_permutations,
            "cutoff": self.verdict.cutoff,
            "test": "one-sided label permutation of Pearson r(alpha, attribution) on the compared users",
            "significant": self.verdict.significant,
            "level": self.verdict.level,
            "verdict": self.verdict.sentence,
            "reason": self.verdict.reason,
            "top_k": [o.to_dict() for o in self.top_k],
            "attribution_kind": self.attribution_kind,
            "positive_class": self.positive_class,
            "users": self.users,
            "n_users": self.n_users,
            "dimension": int(self.alpha.size),
        }
        if self.planted_share is not None:
            out.update(planted_share=self.planted_share, n_planted=self.n_planted,
                       planted_spearman=self.planted_spearman, planted_spearman_max=self.planted_spearman_max,
                       attribution_planted_spearman=self.attribution_planted_spearman)
        return out

    def to_text(self) -> str:
        """The numbers in a few plain lines (the CLI's text output)."""
        def num(x: float | None, spec: str = ".3f") -> str:
            return "–" if x is None else format(x, spec)

        tops = ", ".join(f"top-{o.k} {num(o.jaccard, '.2f')} (chance {o.chance:.2f})" for o in self.top_k)
        lines = [
            f"attention vs {self.attribution_kind} on {self.users} (D = {self.alpha.size}): Spearman "
            f"{num(self.spearman)}, Pearson {num(self.pearson)} (p = {num(self.p_value, '.3g')}, "
            f"{self.n_permutations} label permutations, one-sided); top-k overlap (Jaccard) {tops or '–'}",
        ]
        if self.planted_share is not None:
            lines.append(
                f"planted dims ({self.n_planted}): share of alpha's top {self.n_planted} planted "
                f"{self.planted_share:.2f}; Spearman with the planted indicator: alpha {num(self.planted_spearman)} "
                f"(max {num(self.planted_spearman_max)}), attribution {num(self.attribution_planted_spearman)}"
            )
        lines.append(f"verdict: {self.verdict.level} (cut-off p < {self.verdict.cutoff:g}; "
                     f"{'significant' if self.verdict.significant else 'not significant'}): {self.verdict.sentence}")
        lines.append(f"reason: {self.verdict.reason}")
        return "\n".join(lines)


def learned_alpha(model: "nn.Module") -> np.ndarray:
    """The DimensionAttention weights ``alpha [D]`` of a trained model (float64 NumPy)."""
    import torch

    clf = getattr(model, "classifier", model)
    extractor = getattr(clf, "extractor", None)
    if extractor is None or not hasattr(extractor, "attention"):
        raise TypeError(f"{type(model).__name__} has no extractor.attention (DimensionAttention)")
    with torch.no_grad():
        return extractor.attention.alpha().detach().double().cpu().numpy()


def _attribution(data: TrajectorySet, config: TemporalFeaturesConfig | None, positive_class: int | None
                 ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, str, int | None, np.ndarray | None]:
    """(attribution, shares [N, D], labels [N], kind, positive class, signed difference) of ``data``'s
    labelled users; ``mean_shares`` of all users (shares and labels None) with fewer than two classes."""
    from cvx_core.analysis.attribution import cohort_attribution

    labelled = [u for u, lab in zip(data.user_ids, data.labels) if lab >= 0]
    classes = sorted({int(lab) for lab in data.labels if lab >= 0})
    if len(classes) < 2:
        return np.asarray(cohort_attribution(data, config=config).mean_shares, np.float64), None, None, \
            "mean_shares", None, None
    sub = data if len(labelled) == len(data) else data.subset(labelled)
    shares = np.asarray(cohort_attribution(sub, config=config).per_user_shares, dtype=np.float64)
    labels = np.asarray(sub.labels, dtype=np.int64)
    if len(classes) > 2:
        return _class_attribution(shares, labels, np.asarray(classes)), shares, labels, "class_spread", None, None
    pos = classes[1] if positive_class is None else int(positive_class)
    if pos not in classes:
        raise ValueError(f"positive_class={positive_class} is not one of the classes {classes}")
    neg = classes[0] if pos == classes[1] else classes[1]
    signed = shares[labels == pos].mean(axis=0) - shares[labels == neg].mean(axis=0)
    attribution = _class_attribution(shares, labels, np.asarray(classes))  # = |signed|, as the test computes it
    return attribution, shares, labels, "abs_class_difference", pos, signed


def compare_attention(
    model: "nn.Module",
    data: TrajectorySet,
    *,
    config: TemporalFeaturesConfig | None = None,
    planted_dims: Sequence[int] | None = None,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
    positive_class: int | None = None,
    cutoff: float = CUTOFF,
    users: str = "the given users",
) -> AttentionComparison:
    """Compare a trained model's attention ``alpha [D]`` with the analytic attribution of ``data``.

    ``data`` should be users the model did not train on (:func:`compare_run` picks the run's
    held-out users): the permutation test shuffles their labels. ``users`` describes them.
    """
    n_permutations = check_permutations(n_permutations)
    if not 0 < cutoff < 1:
        raise ValueError(f"cutoff must be in (0, 1), got {cutoff!r}")
    alpha = learned_alpha(model)
    if alpha.size != data.dim:
        raise ValueError(f"the model attends over {alpha.size} dimensions but the data has D={data.dim}")
    attribution, shares, labels, kind, pos, signed = _attribution(data, config, positive_class)
    what = {"abs_class_difference": "the class difference of drift shares",
            "class_spread": "the spread of the class-mean drift shares"}.get(kind, "the mean drift shares")
    rho, overlaps = _opt(spearman(alpha, attribution)), topk_overlaps(alpha, attribution)
    p, why_none = None, None
    if is_flat(alpha):
        why_none = "alpha is flat (no attention learned, or it never moved from its start), so it ranks nothing"
    elif shares is None:
        why_none = "the compared users hold fewer than two classes, so there are no labels to test against"
    elif rho is None:
        why_none = "the attribution is flat, so it ranks nothing"
    else:
        p = label_permutation_pvalue(alpha, shares, labels, n_permutations=n_permutations, seed=seed)
    r = _opt(pearson(alpha, attribution))
    verdict = grade(r, p, overlaps, cutoff=cutoff, n_permutations=n_permutations, what=what, why_none=why_none,
                    rho=rho)
    planted: dict[str, Any] = {}
    if planted_dims is not None:
        idx = _planted(planted_dims, alpha.size)
        mask = np.zeros(alpha.size)
        mask[idx] = 1.0
        planted = dict(
            planted_share=planted_share(alpha, idx) if not is_flat(alpha) else None,
            planted_spearman=_opt(spearman(alpha, mask)),
            planted_spearman_max=_opt(spearman(mask + np.arange(alpha.size) * 1e-6, mask)),
            attribution_planted_spearman=_opt(spearman(attribution, mask)),
            n_planted=int(idx.size),
        )
    return AttentionComparison(
        alpha=alpha, attribution=attribution, attribution_kind=kind, positive_class=pos,
        users=users, n_users=len(data) if labels is None else int(labels.size),
        spearman=rho, pearson=r,
        signed_spearman=None if signed is None else _opt(spearman(alpha, signed)),
        p_value=p, n_permutations=n_permutations, top_k=overlaps, verdict=verdict, **planted,
    )


def held_out_users(data: TrajectorySet, split: Mapping[str, Sequence[str]] | None) -> tuple[list[str], str]:
    """The users of ``data`` a run did not train on, and words for them.

    Its test users where ``data`` holds them, else every user of ``data`` in neither its train
    nor its validation split (e.g. a run trained with ``--test-data``). A ValueError when the run
    records no split or ``data`` holds none of its held-out users.
    """
    if not split or not split.get("train"):
        raise ValueError("the run records no train/test split (data.json), so its held-out users are unknown")
    test = [u for u in split.get("test", []) if u in data]
    if test:
        return test, f"{len(test)} held-out test users"
    seen = set(split.get("train", [])) | set(split.get("val", []))
    rest = [u for u in data.user_ids if u not in seen]
    if not rest:
        raise ValueError(f"{data.name or 'the data'} holds none of the run's held-out users: "
                         "compare on the data the run was trained on (or its --test-data file)")
    return rest, f"{len(rest)} users the run did not train on"


def compare_run(
    model: "nn.Module",
    data: TrajectorySet,
    *,
    split: Mapping[str, Sequence[str]] | None,
    config: TemporalFeaturesConfig | None = None,
    planted_dims: Sequence[int] | None = None,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
) -> AttentionComparison:
    """:func:`compare_attention` on a run's held-out users (:func:`held_out_users`). ``split`` is the
    run's ``{"train": [user ids], "val": [...], "test": [...]}`` (``LoadedRun.data["split"]``)."""
    ids, words = held_out_users(data, split)
    sub = data if len(ids) == len(data) else data.subset(ids)
    return compare_attention(model, sub, config=config, planted_dims=planted_dims,
                             n_permutations=n_permutations, seed=seed, users=words)
