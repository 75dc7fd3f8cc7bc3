"""Top-k overlap of two per-dimension rankings, with its chance level, for the Compare page.

A top-k Jaccard is only informative when ``k`` is well below ``D`` (at ``k = D`` both top
sets are every dimension and the overlap is 1 whatever the rankings). :func:`overlap_ks`
chooses such ``k``; :func:`chance_jaccard` is the expected Jaccard of two independent,
uniformly random ``k``-subsets of ``D`` dimensions (hypergeometric intersection).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def overlap_ks(dim: int) -> tuple[int, ...]:
    """The ``k`` to report for ``D = dim``: 10 and 50 where they are at most ``D / 4``, else
    ``max(1, D // 4)``; always ``k < D`` (empty for ``D < 2``)."""
    if dim < 2:
        return ()
    ks = tuple(k for k in (10, 50) if 4 * k <= dim)
    return ks or (max(1, dim // 4),)


def chance_jaccard(k: int, dim: int) -> float:
    """Expected Jaccard index of two independent uniformly random ``k``-subsets of ``dim``
    items: ``sum_i P(|A ∩ B| = i) * i / (2k - i)`` with ``|A ∩ B|`` hypergeometric."""
    from scipy.stats import hypergeom

    if not 1 <= k <= dim:
        raise ValueError(f"need 1 <= k <= D, got k={k}, D={dim}")
    i = np.arange(0, k + 1)
    p = hypergeom(dim, k, k).pmf(i)
    return float((p * i / (2 * k - i)).sum())


@dataclass(frozen=True)
class TopKOverlap:
    """Jaccard of the top-``k`` sets of two rankings, and what chance alone would give."""

    k: int
    jaccard: float
    chance: float

    @property
    def shared(self) -> int | None:
        """How many dimensions the two top-``k`` sets share (``None`` when a ranking is flat)."""
        if self.jaccard != self.jaccard:  # NaN: a constant vector ranks nothing
            return None
        return int(round(2 * self.k * self.jaccard / (1 + self.jaccard)))


def topk_overlaps(a: np.ndarray, b: np.ndarray) -> list[TopKOverlap]:
    """:class:`TopKOverlap` of ``a [D]`` and ``b [D]`` for every ``k`` of :func:`overlap_ks`."""
    from cvx_core.learn.compare import topk_jaccard

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need two vectors of one length, got {a.shape} and {b.shape}")
    flat = bool(np.ptp(a) == 0 or np.ptp(b) == 0)  # a constant vector ranks nothing: no overlap to report
    return [TopKOverlap(k, float("nan") if flat else topk_jaccard(a, b, k), chance_jaccard(k, a.size))
            for k in overlap_ks(a.size)]
