"""Learned attention vs analytic attribution: did the model learn what the analytics show?

Per dimension ``d`` we set the trained model's DimensionAttention ``alpha [D]`` beside the
analytic cohort attribution of the same data. With two classes that is the *magnitude* of
the difference of class-mean drift shares, ``|class_difference|`` (kind
``"abs_class_difference"``): attention scales a dimension's drift for whichever class
drifts more along it, so a dimension where only the negative class moves is as
discriminative as one where only the positive class moves; the signed correlation is
reported too (``signed_spearman``). With one or more than two classes it is the mean drift
shares (``"mean_shares"``). We report Spearman and Pearson correlations, the
top-k overlap (Jaccard of the two top-k sets) for k = 10 and 50, a seeded permutation
p-value of the Spearman correlation, and a one-sentence verdict. With known planted
dimensions (synthetic data) we also score alpha against the planted mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cvx_core.data.trajectory import TrajectorySet
from cvx_core.features.config import TemporalFeaturesConfig

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = [
    "AttentionComparison",
    "compare_attention",
    "learned_alpha",
    "spearman",
    "pearson",
    "topk_jaccard",
    "permutation_pvalue",
    "verdict",
]


def _rank(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), as scipy.stats.rankdata."""
    from scipy.stats import rankdata

    return rankdata(np.asarray(x, dtype=np.float64), method="average")


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two ``[D]`` vectors; NaN when either is constant."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"need two vectors of one length, got {x.shape} and {y.shape}")
    xc, yc = x - x.mean(), y - y.mean()
    denom = np.sqrt((xc**2).sum() * (yc**2).sum())
    return float((xc * yc).sum() / denom) if denom > 0 else float("nan")


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (Pearson of average ranks, so ties are handled)."""
    return pearson(_rank(x), _rank(y))


def topk_jaccard(x: np.ndarray, y: np.ndarray, k: int) -> float:
    """Jaccard index of the indices of the ``k`` largest entries of ``x`` and of ``y``.

    Ties at the cut are broken by the lower index (stable order).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    k = int(min(k, x.size))
    if k < 1:
        raise ValueError("k must be >= 1")
    a = set(np.argsort(-x, kind="stable")[:k].tolist())
    b = set(np.argsort(-y, kind="stable")[:k].tolist())
    return len(a & b) / len(a | b)


def permutation_pvalue(
    x: np.ndarray, y: np.ndarray, *, n_permutations: int = 1000, seed: int = 0
) -> float:
    """Two-sided permutation p-value of Spearman(x, y): ``(1 + #{|rho_perm| >= |rho|}) / (1 + n)``.

    ``y`` is permuted ``n_permutations`` times with a seeded generator.
    """
    if n_permutations < 1:
        raise ValueError("n_permutations must be >= 1")
    rx = _rank(x)
    ry = _rank(y)
    rx = rx - rx.mean()
    ry = ry - ry.mean()
    denom = np.sqrt((rx**2).sum() * (ry**2).sum())
    if denom == 0:
        return float("nan")
    observed = abs(float((rx * ry).sum() / denom))
    rng = np.random.default_rng(seed)
    hits = 0
    chunk = 250
    done = 0
    while done < n_permutations:
        m = min(chunk, n_permutations - done)
        perms = np.argsort(rng.random((m, ry.size)), axis=1)
        rho = np.abs(ry[perms] @ rx) / denom
        hits += int((rho >= observed - 1e-12).sum())
        done += m
    return (1.0 + hits) / (1.0 + n_permutations)


@dataclass(frozen=True)
class AttentionComparison:
    """Learned alpha beside analytic attribution, per dimension, and how well they agree.

    Attributes:
        alpha: ``[D]`` learned DimensionAttention weights (sum to D; ones = nothing learned).
        attribution: ``[D]`` analytic cohort attribution used for the comparison.
        attribution_kind: "abs_class_difference" (two classes: ``|share of the positive
            class - share of the other|``) or "mean_shares" (mean drift share over all users).
        positive_class: the class whose shares come first in the class difference (None otherwise).
        spearman, pearson: correlations of alpha with attribution.
        signed_spearman: Spearman of alpha with the signed class difference (None unless
            two classes); negative when the model also attends to where the other class drifts.
        p_value: permutation p-value of the Spearman correlation.
        n_permutations: permutations used.
        topk_jaccard: ``{k: Jaccard of top-k sets}`` for k = 10 and 50 (k capped at D).
        planted_spearman: Spearman of alpha with the 0/1 planted mask (None without planted dims).
        planted_spearman_max: planted_spearman of an alpha with distinct values that ranks
            every planted dim above every other one: the ceiling for a continuous alpha
            (only a two-valued alpha equal to the mask reaches 1). The mask is a two-valued
            ranking, so with 24 of 384 dims planted this ceiling is about 0.42.
        planted_topk_overlap: ``{k: share of alpha's top-k that is planted}`` for
            k = number of planted dims, 10 and 50 (None without planted dims).
        attribution_planted_spearman: the same Spearman for the analytic attribution (None without).
        verdict: one plain sentence.
    """

    alpha: np.ndarray
    attribution: np.ndarray
    attribution_kind: str
    positive_class: int | None
    spearman: float
    pearson: float
    signed_spearman: float | None
    p_value: float
    n_permutations: int
    topk_jaccard: dict[int, float]
    planted_spearman: float | None
    planted_spearman_max: float | None
    planted_topk_overlap: dict[int, float] | None
    attribution_planted_spearman: float | None
    verdict: str

    def table(self) -> dict[str, np.ndarray]:
        """Per-dimension columns for display: dimension, alpha, attribution and their ranks."""
        d = self.alpha.size
        return {
            "dimension": np.arange(d),
            "alpha": self.alpha,
            "attribution": self.attribution,
            "alpha_rank": (d + 1 - _rank(self.alpha)),
            "attribution_rank": (d + 1 - _rank(self.attribution)),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "attribution_kind": self.attribution_kind,
            "positive_class": self.positive_class,
            "spearman": self.spearman,
            "pearson": self.pearson,
            "signed_spearman": self.signed_spearman,
            "p_value": self.p_value,
            "n_permutations": self.n_permutations,
            "topk_jaccard": {str(k): v for k, v in self.topk_jaccard.items()},
            "planted_spearman": self.planted_spearman,
            "planted_spearman_max": self.planted_spearman_max,
            "planted_topk_overlap": None
            if self.planted_topk_overlap is None
            else {str(k): v for k, v in self.planted_topk_overlap.items()},
            "attribution_planted_spearman": self.attribution_planted_spearman,
            "verdict": self.verdict,
        }


def learned_alpha(model: "nn.Module") -> np.ndarray:
    """The DimensionAttention weights ``alpha [D]`` of a trained model (float64 NumPy)."""
    import torch

    clf = getattr(model, "classifier", model)
    extractor = getattr(clf, "extractor", None)
    if extractor is None or not hasattr(extractor, "attention"):
        raise TypeError(f"{type(model).__name__} has no extractor.attention (DimensionAttention)")
    with torch.no_grad():
        return extractor.attention.alpha().detach().double().cpu().numpy()


def verdict(rho: float, p_value: float, *, kind: str) -> str:
    """A plain sentence on what the correlation between alpha and attribution means."""
    what = "the class difference of drift shares" if kind == "abs_class_difference" else "the mean drift shares"
    if np.isnan(rho):
        return "The learned attention is flat (or the attribution constant): nothing to compare."
    strength = "high" if rho >= 0.5 else "moderate" if rho >= 0.3 else "low"
    sig = "significant" if p_value < 0.01 else "not significant"
    if strength == "high":
        return (
            f"High agreement (Spearman {rho:.2f}, p={p_value:.3g}, {sig}): the model learned to weight "
            f"the dimensions that {what} single out; it learned what the analytics show."
        )
    if strength == "moderate":
        return (
            f"Moderate agreement (Spearman {rho:.2f}, p={p_value:.3g}, {sig}): the model partly follows "
            f"{what} and partly weights other dimensions."
        )
    return (
        f"Low agreement (Spearman {rho:.2f}, p={p_value:.3g}, {sig}): the model found signals that "
        f"{what} miss (or learned little attention); look at its top dimensions."
    )


def compare_attention(
    model: "nn.Module",
    data: TrajectorySet,
    *,
    config: TemporalFeaturesConfig | None = None,
    planted_dims: Sequence[int] | None = None,
    ks: Sequence[int] = (10, 50),
    n_permutations: int = 1000,
    seed: int = 0,
    positive_class: int | None = None,
) -> AttentionComparison:
    """Compare a trained model's attention (``alpha [D]``) with the analytic cohort attribution.

    ``model`` is a trained classifier (``TrainResult.model`` or ``LoadedRun.model``) and
    ``data`` the trajectories to attribute on (usually its training users; labels are
    needed for the class difference). With two classes the attribution is
    ``|class_shares[pos] - class_shares[neg]|`` (``pos`` = ``positive_class`` or the larger
    label), else ``mean_shares``.
    """
    from cvx_core.analysis.attribution import cohort_attribution

    alpha = learned_alpha(model)
    if alpha.size != data.dim:
        raise ValueError(f"the model attends over {alpha.size} dimensions but the data has D={data.dim}")
    cohort = cohort_attribution(data, config=config)
    classes = sorted(int(c) for c in getattr(cohort, "class_shares", {}) or {})
    kind, pos, signed = "mean_shares", None, None
    attribution = np.asarray(cohort.mean_shares, dtype=np.float64)
    if len(classes) == 2:
        pos = classes[1] if positive_class is None else int(positive_class)
        if pos not in classes:
            raise ValueError(f"positive_class={positive_class} is not one of the classes {classes}")
        neg = classes[0] if pos == classes[1] else classes[1]
        shares = cohort.class_shares
        signed = np.asarray(shares[pos], dtype=np.float64) - np.asarray(shares[neg], dtype=np.float64)
        attribution = np.abs(signed)
        kind = "abs_class_difference"
    rho = spearman(alpha, attribution)
    p = permutation_pvalue(alpha, attribution, n_permutations=n_permutations, seed=seed)
    jac = {int(min(k, alpha.size)): topk_jaccard(alpha, attribution, k) for k in ks}

    planted_rho = planted_max = planted_overlap = attr_planted = None
    if planted_dims is not None:
        planted = np.unique(np.asarray(list(planted_dims), dtype=np.int64))
        if planted.size == 0 or planted.min() < 0 or planted.max() >= alpha.size:
            raise ValueError(f"planted_dims must be non-empty indices in [0, {alpha.size})")
        mask = np.zeros(alpha.size)
        mask[planted] = 1.0
        planted_rho = spearman(alpha, mask)
        planted_max = spearman(mask + np.arange(alpha.size) * 1e-9, mask)
        attr_planted = spearman(attribution, mask)
        order = np.argsort(-alpha, kind="stable")
        planted_set = set(planted.tolist())
        planted_overlap = {}
        for k in (planted.size, *ks):
            k = int(min(k, alpha.size))
            planted_overlap[k] = len(planted_set & set(order[:k].tolist())) / k
    return AttentionComparison(
        alpha=alpha,
        attribution=attribution,
        attribution_kind=kind,
        positive_class=pos,
        spearman=rho,
        pearson=pearson(alpha, attribution),
        signed_spearman=None if signed is None else spearman(alpha, signed),
        p_value=p,
        n_permutations=int(n_permutations),
        topk_jaccard=jac,
        planted_spearman=planted_rho,
        planted_spearman_max=planted_max,
        planted_topk_overlap=planted_overlap,
        attribution_planted_spearman=attr_planted,
        verdict=verdict(rho, p, kind=kind),
    )
