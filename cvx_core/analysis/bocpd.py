"""Bayesian online change-point detection (BOCPD, Adams & MacKay 2007), analytic path.

A vectorised NumPy recursion over run lengths in log space, truncated at
``max_run_length``, with a constant hazard and a conjugate Normal-Gamma model per channel
(Student-t predictive; channels independent) on a low-dimensional statistic of the
trajectory. The default statistic is the trajectory's top principal-component scores
(``"pca"``): a mean shift of the embeddings is a mean shift of these scores, which is the
change BOCPD's Gaussian model describes. Step statistics (``"step_norm"``,
``"cosine_distance"``) only spike once at a mean shift; they are offered for changes in
volatility. Priors are set from the statistic's scale (see :func:`bocpd`). Also importable
from :mod:`cvx_core.analysis.changepoints`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from cvx_core.data.trajectory import Trajectory

__all__ = ["BOCPDConfig", "BOCPDResult", "bocpd", "bocpd_statistic", "detect_bocpd"]

_MAD_TO_SD = 1.4826


def _as_matrix(data: Trajectory | np.ndarray) -> tuple[np.ndarray, Trajectory | None]:
    if isinstance(data, Trajectory):
        return np.asarray(data.embeddings, dtype=np.float64), data
    arr = np.asarray(data, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"expected a Trajectory or a [T, D] array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("embeddings must be finite")
    return arr, None


@dataclass(frozen=True)
class BOCPDConfig:
    """Options of Bayesian online change-point detection.

    Attributes:
        hazard: constant prior probability that a post starts a new segment (1/expected
            segment length in posts).
        max_run_length: run lengths are truncated at this many posts (the longest runs are
            merged), so memory is ``[T, max_run_length]``.
        statistic: what the model watches: ``"pca"`` (top principal-component scores of the
            embeddings, default), ``"step_norm"`` (``|v_{i+1} - v_i|``) or
            ``"cosine_distance"`` (SPEC's step cosine distance).
        n_components: number of principal components for ``"pca"``.
        lag: the reported change probability of post t is read ``lag`` posts later,
            ``P(r_{t+lag} = lag | x_{1..t+lag})`` (0 = the filtered, online readout).
        mean_prior_scale: the prior on a segment's mean has the statistic's overall spread
            times this factor.
    """

    hazard: float = 1.0 / 50.0
    max_run_length: int = 200
    statistic: Literal["pca", "step_norm", "cosine_distance"] = "pca"
    n_components: int = 3
    lag: int = 3
    mean_prior_scale: float = 1.0

    def __post_init__(self) -> None:
        if not (0.0 < self.hazard < 1.0):
            raise ValueError(f"BOCPDConfig.hazard must be in (0, 1), got {self.hazard!r}")
        if int(self.max_run_length) < 2:
            raise ValueError("BOCPDConfig.max_run_length must be >= 2")
        if self.statistic not in ("pca", "step_norm", "cosine_distance"):
            raise ValueError(
                "BOCPDConfig.statistic must be 'pca', 'step_norm' or 'cosine_distance', "
                f"got {self.statistic!r}"
            )
        if int(self.n_components) < 1:
            raise ValueError("BOCPDConfig.n_components must be >= 1")
        if int(self.lag) < 0:
            raise ValueError("BOCPDConfig.lag must be >= 0")
        if not (self.mean_prior_scale > 0 and math.isfinite(self.mean_prior_scale)):
            raise ValueError("BOCPDConfig.mean_prior_scale must be a finite number > 0")
        for name in ("max_run_length", "n_components", "lag"):
            object.__setattr__(self, name, int(getattr(self, name)))


@dataclass(frozen=True, eq=False)
class BOCPDResult:
    """BOCPD output for a series of ``n`` observations (posts or steps mapped to posts).

    Attributes:
        run_length_posterior: ``[n, R]`` float32, row t = ``P(r_t = r | x_{1..t})``; run
            length r = number of earlier observations in the current segment (r = 0: post t
            starts a new segment).
        filtered_probability: ``[n]`` ``P(r_t = 0 | x_{1..t})``.
        change_probability: ``[n]`` the lagged readout ``P(r_{t+L} = L | x_{1..t+L})`` with
            ``L = min(lag, n-1-t)``: the probability that post t started the segment, seen
            ``L`` posts later. Index 0 is always 0 (the first post starts nothing).
        log_evidence: ``log p(x_{1..n})`` under the model.
        statistic: ``[n, k]`` the observations the model watched.
        config: the config used.
    """

    run_length_posterior: np.ndarray
    filtered_probability: np.ndarray
    change_probability: np.ndarray
    log_evidence: float
    statistic: np.ndarray
    config: BOCPDConfig = field(repr=False)

    def peaks(self, *, threshold: float = 0.5, min_distance: int = 2) -> tuple[int, ...]:
        """Indices where ``change_probability`` is a local maximum above ``threshold``
        (greedy, highest first, at least ``min_distance`` apart), sorted."""
        p = self.change_probability
        order = np.argsort(-p, kind="stable")
        chosen: list[int] = []
        for i in order:
            if p[i] < threshold:
                break
            if all(abs(int(i) - c) >= min_distance for c in chosen):
                chosen.append(int(i))
        return tuple(sorted(chosen))


def _robust_scale(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (noise variance, total variance) of ``x [n, k]``, both > 0."""
    total = x.var(axis=0)
    if x.shape[0] >= 3:
        diff = np.diff(x, axis=0)
        mad = np.median(np.abs(diff - np.median(diff, axis=0)), axis=0)
        noise = (_MAD_TO_SD * mad) ** 2 / 2.0
        fallback = np.mean(diff**2, axis=0) / 2.0
        noise = np.where(noise > 0, noise, fallback)
    else:
        noise = total.copy()
    scale = max(float(np.max(np.abs(x))) if x.size else 1.0, 1.0)
    floor = 1e-12 * scale**2
    noise = np.maximum(noise, floor)
    total = np.maximum(total, noise)
    return noise, total


def bocpd(x: np.ndarray, *, config: BOCPDConfig | None = None) -> BOCPDResult:
    """BOCPD on observations ``x [n]`` or ``[n, k]`` (channels independent).

    Priors (per channel, from the data): Normal-Gamma with ``mu0 = median(x)``,
    ``alpha0 = 1``, ``beta0 = sigma^2`` (robust noise variance from first differences, so the
    prior mean precision is ``1/sigma^2``) and ``kappa0 = sigma^2 / (mean_prior_scale^2 *
    var(x))`` (a segment mean is a priori spread like the whole series).
    """
    config = config or BOCPDConfig()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"bocpd expects [n] or [n, k] observations, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("bocpd observations must be finite")
    n, k = x.shape
    R = config.max_run_length
    post = np.zeros((n, R), dtype=np.float32)
    filt = np.zeros(n, dtype=np.float64)
    if n == 0:
        return BOCPDResult(post, filt, filt.copy(), 0.0, x, config)

    noise, total = _robust_scale(x)
    mu0 = np.median(x, axis=0)
    alpha0 = 1.0
    beta0 = noise
    kappa0 = noise / (config.mean_prior_scale**2 * total)

    # slot j holds the run with j+1 observations: kappa and alpha depend only on j
    counts = np.arange(1, R + 1, dtype=np.float64)
    kappa = kappa0[None, :] + counts[:, None]  # [R, k]
    alpha = alpha0 + counts / 2.0  # [R]
    nu = 2.0 * alpha
    from scipy.special import gammaln

    lg_const = gammaln((nu + 1) / 2) - gammaln(nu / 2) - 0.5 * np.log(nu * np.pi)  # [R]
    scale_fac = (kappa + 1.0) / (alpha[:, None] * kappa)  # s^2 = beta * scale_fac  [R, k]
    # prior predictive constants
    nu0 = 2.0 * alpha0
    lg0 = float(gammaln((nu0 + 1) / 2) - gammaln(nu0 / 2) - 0.5 * np.log(nu0 * np.pi))
    s0 = beta0 * (kappa0 + 1.0) / (alpha0 * kappa0)  # [k]

    mu = np.tile(mu0, (R, 1))
    beta = np.tile(beta0, (R, 1))
    log_r = np.full(R, -np.inf)
    log_h, log_1mh = math.log(config.hazard), math.log1p(-config.hazard)
    log_ev = 0.0

    for t in range(n):
        xt = x[t]
        # prior predictive: post t starts a new segment
        z0 = (xt - mu0) ** 2 / s0
        lp0 = float(np.sum(lg0 - 0.5 * np.log(s0) - (nu0 + 1) / 2 * np.log1p(z0 / nu0)))
        if t == 0:
            new = np.full(R, -np.inf)
            new[0] = lp0
        else:
            s2 = beta * scale_fac
            z = (xt[None, :] - mu) ** 2 / s2
            lp = np.sum(-0.5 * np.log(s2) - ((nu + 1) / 2)[:, None] * np.log1p(z / nu[:, None]), axis=1)
            lp += k * lg_const
            growth = log_r + lp + log_1mh
            new = np.empty(R)
            new[0] = lp0 + log_h  # log_r is normalised
            new[1:] = growth[:-1]
            new[R - 1] = np.logaddexp(growth[R - 2], growth[R - 1])
        m = np.max(new)
        lse = m + math.log(float(np.sum(np.exp(new - m))))
        log_ev += lse
        log_r = new - lse
        p = np.exp(log_r)
        post[t] = p
        filt[t] = p[0]
        mu, beta = _shift_update(xt, mu, beta, kappa, mu0, beta0, kappa0)

    change = _lagged(post, filt, config.lag)
    return BOCPDResult(post, filt, change, float(log_ev), x, config)


def _shift_update(
    xt: np.ndarray, mu: np.ndarray, beta: np.ndarray, kappa: np.ndarray,
    mu0: np.ndarray, beta0: np.ndarray, kappa0: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Update the Normal-Gamma sufficient statistics ``mu, beta [R, k]`` with ``x_t [k]``:
    slot j <- slot j-1 plus x_t; slot 0 <- prior plus x_t (``kappa [R, k]`` is fixed per
    slot). Returns the new ``(mu, beta)``."""
    k_prev = np.empty_like(kappa)
    k_prev[0] = kappa0
    k_prev[1:] = kappa[:-1]
    mu_prev = np.empty_like(mu)
    mu_prev[0] = mu0
    mu_prev[1:] = mu[:-1]
    beta_prev = np.empty_like(beta)
    beta_prev[0] = beta0
    beta_prev[1:] = beta[:-1]
    d = xt[None, :] - mu_prev
    beta = beta_prev + k_prev * d**2 / (2.0 * (k_prev + 1.0))
    mu = mu_prev + d / (k_prev + 1.0)
    return mu, beta


def _lagged(post: np.ndarray, filt: np.ndarray, lag: int) -> np.ndarray:
    n, R = post.shape
    out = np.zeros(n, dtype=np.float64)
    for t in range(1, n):
        L = min(lag, n - 1 - t, R - 1)
        out[t] = float(post[t + L, L]) if L > 0 else float(filt[t])
    return out


def _top_pc_scores(centred: np.ndarray, n_components: int) -> np.ndarray:
    """``[T, k]`` scores on the top principal components of centred ``[T, D]`` data, from
    the smaller of the Gram (``T x T``) and covariance (``D x D``) eigenproblems."""
    t, d = centred.shape
    if t <= d:
        w, v = np.linalg.eigh(centred @ centred.T)
        order = np.argsort(-w, kind="stable")
        w, v = np.clip(w[order], 0.0, None), v[:, order]
        scores = v * np.sqrt(w)[None, :]
    else:
        w, v = np.linalg.eigh(centred.T @ centred)
        order = np.argsort(-w, kind="stable")
        w, v = np.clip(w[order], 0.0, None), v[:, order]
        scores = centred @ v
    keep = max(1, min(n_components, int(np.sum(w > 1e-12 * max(float(w[0]), 1e-300)))))
    return scores[:, :keep]


def bocpd_statistic(
    data: Trajectory | np.ndarray, *, config: BOCPDConfig | None = None
) -> tuple[np.ndarray, int]:
    """The series BOCPD watches and its offset: ``(x [n, k], offset)`` where observation j
    belongs to post ``j + offset`` (1 for step statistics: step i -> post i+1)."""
    config = config or BOCPDConfig()
    emb, traj = _as_matrix(data)
    if config.statistic == "pca":
        if emb.shape[0] < 2:
            return np.zeros((emb.shape[0], 1)), 0
        centred = emb - emb.mean(axis=0)
        scores = _top_pc_scores(centred, config.n_components)
        return scores, 0
    if emb.shape[0] < 2:
        return np.zeros((0, 1)), 1
    if config.statistic == "step_norm":
        return np.linalg.norm(np.diff(emb, axis=0), axis=1)[:, None], 1
    from cvx_core.features.analytic import AnalyticBackend

    return np.asarray(AnalyticBackend.cosine_distance(emb), dtype=np.float64)[:, None], 1


def detect_bocpd(data: Trajectory | np.ndarray, *, config: BOCPDConfig | None = None) -> BOCPDResult:
    """BOCPD on a trajectory's statistic (``config.statistic``), with every per-post array
    of the result aligned to the posts ``[T]`` (step statistics are shifted by one post;
    post 0 gets probability 0 and a point mass at run length 0; so does post 1 for a step
    statistic, whose first step has nothing before it to compare with)."""
    config = config or BOCPDConfig()
    emb, _ = _as_matrix(data)
    n_posts = emb.shape[0]
    stat, offset = bocpd_statistic(data, config=config)
    res = bocpd(stat, config=config)
    if offset == 0:
        return res
    R = config.max_run_length
    post = np.zeros((n_posts, R), dtype=np.float32)
    post[0, 0] = 1.0
    post[offset:] = res.run_length_posterior
    filt = np.zeros(n_posts)
    filt[offset:] = res.filtered_probability
    change = np.zeros(n_posts)
    change[offset:] = res.change_probability
    return BOCPDResult(post, filt, change, res.log_evidence, res.statistic, config)
