"""Fused compiled loops (numba) for the SPEC feature vector on the CPU: forward and backward.

Both feature paths call these kernels on the CPU: the analytic path
(:meth:`~cvx_core.features.analytic.AnalyticBackend.extract_all`, a batch of one, float64)
and the torch path's fused ``autograd.Function`` (float32 or float64, padded batches).
Because both run the same compiled code on the same float64 inputs, they give the same bits.

How the work is laid out (see docs/performance.md for the measurements):

- **One trajectory at a time.** A batch ``[B, T, D]`` is processed trajectory by trajectory;
  everything a trajectory needs besides its own rows (per-step scalars, ``[D]``
  accumulators, one reused ``[T, D]`` float64 scratch for the forward's bin means) is
  allocated once per call or kept per thread, so the working set is one trajectory (about
  0.3 MB of float32 rows for 100 x 768) and stays in the core's L2 cache whatever ``B`` is.
  Padding rows are never read.
- **Forward:** one pass over the steps for the velocity mean, the acceleration mean, the
  norms and dot products of the cosine distances; a second pass (from cache) for the
  volatility deviations (the population variance needs the mean first; a one-pass formula
  would cancel catastrophically on near-constant velocities); per scale one pass that adds
  posts into bin means and one over the bins. Outputs are written straight into the
  preallocated ``[B, F]`` output; the small values the backward needs go to side arrays
  (:class:`KernelSaved`: per post ``|v_i|^2`` and ``<v_i, v_{i+1}>``, per trajectory the
  velocity mean, volatility and log-sum-exp, per scale and bin the bin mean's squared norm,
  its dot product with the next one and the step length between them).
- **Backward:** one pass over the posts writes ``gE`` once. Every term is a short stencil
  in the post index; the multi-scale term is a three-point stencil over the bins, whose bin
  means are recomputed on the fly into a ring of three rows per scale as the pass moves
  along the posts (no saved bin means, no ``[T, D]`` scratch).
- Arithmetic is float64 throughout (float32 embeddings are widened as they are read and the
  results rounded once when written), so the float32 path is the float64 computation on the
  float32 embeddings. Only the dot-product reductions over ``D`` may be reordered
  (``fastmath={"reassoc"}``, for SIMD); every other operation is evaluated as written.

Entry points: :func:`forward` and :func:`backward` (NumPy arrays in, preallocated arrays
out) and :func:`available`. The feature modules import this module (and numba) on first use
only. ``cache=True``: compiled code is cached next to this module (``__pycache__``), so only
the first process after an install pays the compile time (docs/performance.md).
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["available", "forward", "backward", "KernelSaved", "compile_all"]

#: floor under ``|v_i|^2 |v_{i+1}|^2`` (SPEC); same value as analytic.COSINE_EPS
_COSINE_EPS = 1e-16
#: added to the population variance (SPEC); same value as analytic.VOLATILITY_EPS
_VOLATILITY_EPS = 1e-12

try:  # numba is a requirement; without it the callers keep their NumPy / PyTorch code
    import numba

    _UNAVAILABLE: str | None = None
except ImportError as exc:  # pragma: no cover - numba is in requirements.txt
    numba = None
    _UNAVAILABLE = str(exc)


def available() -> bool:
    """Whether the compiled kernels can be used (numba importable and not disabled).

    Setting the environment variable ``CVX_DISABLE_KERNELS=1`` turns them off: both paths
    then use their NumPy / PyTorch implementations (the CUDA path always does).
    """
    if os.environ.get("CVX_DISABLE_KERNELS", "") not in ("", "0"):
        return False
    return _UNAVAILABLE is None


def _njit(**kw: Any) -> Any:
    if numba is None:  # pragma: no cover
        return lambda f: f
    return numba.njit(cache=True, nogil=True, **kw)


#: reductions over D only: SIMD-friendly reordering of a sum; nothing else is reordered
_FM = {"reassoc"}


@_njit()
def _f64(x):  # pragma: no cover - compiled
    """Widen an embedding entry to float64 before any arithmetic (float32 - float32 would
    round in float32 under NumPy's typing rules)."""
    return np.float64(x)



@_njit(fastmath=_FM)
def _dot(a, b):  # pragma: no cover - compiled
    s = 0.0
    for k in range(a.shape[0]):
        s += _f64(a[k]) * _f64(b[k])
    return s

@_njit(fastmath=_FM)
def _sqdist(a, b):  # pragma: no cover - compiled
    s = 0.0
    for k in range(a.shape[0]):
        x = _f64(b[k]) - _f64(a[k])
        s += x * x
    return s

@_njit()
def _axpy3(dst, c0, a, cm, b, cp, c):  # pragma: no cover - compiled
    """``dst += c0 a + cm b + cp c`` (rows of length D)."""
    for k in range(dst.shape[0]):
        dst[k] += c0 * a[k] + cm * b[k] + cp * c[k]


@_njit()
def _sigmoid(z):  # pragma: no cover - compiled
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    ez = math.exp(z)
    return ez / (1.0 + ez)

@_njit()
def _count_bins(tb, L, width):  # pragma: no cover - compiled
    """Number of non-empty bins of width ``width`` among the first ``L`` times."""
    t0 = tb[0]
    K = 1
    prev = 0.0
    for i in range(1, L):
        kk = np.floor((tb[i] - t0) / width)
        if kk != prev:
            K += 1
            prev = kk
    return K


@_njit()
def _bin_means(X, tb, L, width, V, starts):  # pragma: no cover - compiled
    """Bin means of ``X[:L]`` at ``width`` into ``V[:K]`` (float64); bin ``j`` holds posts
    ``starts[j]:starts[j+1]``. Returns ``K``."""
    D = X.shape[1]
    t0 = tb[0]
    K = 0
    prev = 0.0
    for i in range(L):
        kk = np.floor((tb[i] - t0) / width)
        if i == 0 or kk != prev:
            if i > 0:
                inv_n = i - starts[K - 1]
                row = V[K - 1]
                for k in range(D):
                    row[k] = row[k] / inv_n
            starts[K] = i
            row = V[K]
            xi = X[i]
            for k in range(D):
                row[k] = xi[k]
            K += 1
            prev = kk
        else:
            row = V[K - 1]
            xi = X[i]
            for k in range(D):
                row[k] += xi[k]
    cnt = L - starts[K - 1]
    if cnt > 1:
        row = V[K - 1]
        for k in range(D):
            row[k] = row[k] / cnt
    starts[K] = L
    return K

@_njit()
def _fwd(E, t, lengths, alpha, beta, temp, min_dt, cp_thr, sil_gap, sil_temp, scales,
        out, aN, ap, amu, avol, alse, araw, bN, bp, brho, V):  # pragma: no cover - compiled
    B, T, D = E.shape
    S = scales.shape[0]
    base = 4 * D
    sq_eps = math.sqrt(_VOLATILITY_EPS)
    dt = np.empty(max(T - 1, 1))
    inv = np.empty(max(T - 1, 1))
    wacc = np.empty(max(T - 1, 1))
    cvec = np.empty(max(T - 1, 1))
    mu = np.empty(D)
    acc = np.empty(D)
    var = np.empty(D)
    starts = np.empty(T + 1, dtype=np.int64)
    for b in range(B):
        L = lengths[b]
        X = E[b]
        tb = t[b]
        o = out[b]
        r2 = 0.0
        for k in range(D):
            d = _f64(X[L - 1, k]) - _f64(X[0, k])
            o[D + k] = alpha[k] * d
            r2 += d * d
        o[base + 4] = math.sqrt(r2)
        aN[b, 0] = _dot(X[0], X[0])
        alse[b] = 0.0
        if L < 2:
            for k in range(D):
                o[k] = 0.0
                o[2 * D + k] = sq_eps
                o[3 * D + k] = 0.0
                amu[b, k] = 0.0
                avol[b, k] = sq_eps
            for j in range(4):
                o[base + j] = 0.0
            for s in range(S):
                o[base + 5 + 2 * s] = 0.0
                o[base + 6 + 2 * s] = 0.0
                araw[b, s, 0] = 0.0
                araw[b, s, 1] = 0.0
            continue
        n = L - 1
        for i in range(n):
            g = tb[i + 1] - tb[i]
            dt[i] = g if g > min_dt else min_dt
            inv[i] = 1.0 / dt[i]
        # acceleration mean = sum_j w_j u_j, w_j = ih_{j-1} - ih_j, ih_i = 2 / (dt_i + dt_{i+1})
        for j in range(n):
            wacc[j] = 0.0
        if L >= 3:
            sc = 1.0 / (L - 2)
            for i in range(n - 1):
                ih = 2.0 / (dt[i] + dt[i + 1]) * sc
                wacc[i + 1] += ih
                wacc[i] -= ih
        for k in range(D):
            mu[k] = 0.0
            acc[k] = 0.0
            var[k] = 0.0
        # pass 1: steps, velocity and acceleration sums, cosine parts
        for i in range(n):
            x0 = X[i]
            x1 = X[i + 1]
            aN[b, i + 1] = _dot(x1, x1)
            ap[b, i] = _dot(x0, x1)
            iv = inv[i]
            wi = wacc[i]
            for k in range(D):
                u = (_f64(x1[k]) - _f64(x0[k])) * iv
                mu[k] += u
                acc[k] += wi * u
        for k in range(D):
            mu[k] = mu[k] / n
        # pass 2 (the rows are in cache): population variance of the velocities
        for i in range(n):
            x0 = X[i]
            x1 = X[i + 1]
            iv = inv[i]
            for k in range(D):
                dv = (_f64(x1[k]) - _f64(x0[k])) * iv - mu[k]
                var[k] += dv * dv
        for k in range(D):
            vk = math.sqrt(var[k] / n + _VOLATILITY_EPS)
            o[k] = mu[k]
            o[2 * D + k] = vk
            o[3 * D + k] = acc[k] if L >= 3 else 0.0
            amu[b, k] = mu[k]
            avol[b, k] = vk
        # cosine distances and the soft scalars
        cpc = 0.0
        csum = 0.0
        cmax = -np.inf
        for i in range(n):
            q2 = aN[b, i] * aN[b, i + 1]
            q = math.sqrt(q2 if q2 > _COSINE_EPS else _COSINE_EPS)
            c = 1.0 - ap[b, i] / q
            cvec[i] = c
            cpc += _sigmoid((c - cp_thr) / temp)
            csum += c
            if c / temp > cmax:
                cmax = c / temp
        se = 0.0
        for i in range(n):
            se += math.exp(cvec[i] / temp - cmax)
        lse = cmax + math.log(se)
        alse[b] = lse
        sil = 0.0
        for i in range(n):
            sil += _sigmoid((dt[i] - sil_gap) / sil_temp)
        o[base + 0] = cpc
        o[base + 1] = temp * lse
        o[base + 2] = sil
        o[base + 3] = csum / n
        # multi-scale block: bin means, then steps between consecutive bins
        for s in range(S):
            st = 0.0
            cs = 0.0
            if _count_bins(tb, L, scales[s]) >= 2:
                K = _bin_means(X, tb, L, scales[s], V, starts)
                Nprev = _dot(V[0], V[0])
                bN[b, s, 0] = Nprev
                for j in range(K - 1):
                    Nnext = _dot(V[j + 1], V[j + 1])
                    rho = math.sqrt(_sqdist(V[j], V[j + 1]))
                    pk = _dot(V[j], V[j + 1])
                    bN[b, s, j + 1] = Nnext
                    bp[b, s, j] = pk
                    brho[b, s, j] = rho
                    st += rho
                    q2 = Nprev * Nnext
                    q = math.sqrt(q2 if q2 > _COSINE_EPS else _COSINE_EPS)
                    cs += 1.0 - pk / q
                    Nprev = Nnext
                st = st / (K - 1)
                cs = cs / (K - 1)
            araw[b, s, 0] = st
            araw[b, s, 1] = cs
            o[base + 5 + 2 * s] = beta[s] * st
            o[base + 6 + 2 * s] = beta[s] * cs

@_njit()
def _bin_starts(tb, L, width, starts):  # pragma: no cover - compiled
    """Bin ``j`` of width ``width`` holds posts ``starts[j]:starts[j+1]``; returns ``K``."""
    t0 = tb[0]
    K = 1
    starts[0] = 0
    prev = 0.0
    for i in range(1, L):
        kk = np.floor((tb[i] - t0) / width)
        if kk != prev:
            starts[K] = i
            K += 1
            prev = kk
    starts[K] = L
    return K


@_njit()
def _mean_rows(X, i0, i1, dst):  # pragma: no cover - compiled
    """``dst = mean(X[i0:i1])`` in float64, summed in order then divided (as the forward)."""
    D = dst.shape[0]
    x = X[i0]
    for k in range(D):
        dst[k] = x[k]
    for i in range(i0 + 1, i1):
        x = X[i]
        for k in range(D):
            dst[k] += x[k]
    n = i1 - i0
    if n > 1:
        for k in range(D):
            dst[k] = dst[k] / n


@_njit()
def _bwd(E, t, lengths, alpha, beta, temp, min_dt, cp_thr, scales, G,
         aN, ap, amu, avol, alse, bN, bp, brho, gE, dtemp):  # pragma: no cover - compiled
    B, T, D = E.shape
    S = scales.shape[0]
    base = 4 * D
    inv = np.empty(T + 1)  # inv[i + 1] = 1 / dt_i; inv[0] = inv[n + 1] = 0 (boundaries)
    iw = np.empty(T + 1)  # same layout for inv_dt_i * w_i
    am = np.empty(T + 1)  # same layout for a_i = Gc_i / q_i
    bb = np.empty(T + 1)  # same layout for b_i = a_i p_i / q_i^2 (0 where the floor holds)
    dt = np.empty(max(T - 1, 1))
    wacc = np.empty(max(T - 1, 1))
    A = np.empty(D)
    gm = np.empty(D)
    ga = np.empty(D)
    gd = np.empty(D)
    mu = np.empty(D)
    sc = np.empty(D)
    # per scale: bin starts, stencil coefficients per bin, and a ring of three bin means
    # (V_{j-1}, V_j, V_{j+1} of the current bin j) streamed along the posts
    starts = np.empty((S, T + 1), dtype=np.int64)
    C0 = np.empty((S, T))
    CM = np.empty((S, T))
    CP = np.empty((S, T))
    ring = np.zeros((S, 3, D))
    Ks = np.empty(S, dtype=np.int64)
    cur = np.empty(S, dtype=np.int64)
    ek = np.empty(T)
    ak = np.empty(T)
    bk = np.empty(T)
    for b in range(B):
        L = lengths[b]
        X = E[b]
        tb = t[b]
        g = G[b]
        gEb = gE[b]
        for i in range(L, T):
            for k in range(D):
                gEb[i, k] = 0.0
        dtemp[b, 0] = 0.0
        dtemp[b, 1] = 0.0
        if L < 2:
            for k in range(D):
                gEb[0, k] = 0.0  # v_T - v_1 = v_1 - v_1: no gradient
            continue
        n = L - 1
        for i in range(n):
            d0 = tb[i + 1] - tb[i]
            dt[i] = d0 if d0 > min_dt else min_dt
            wacc[i] = 0.0
        if L >= 3:
            scl = 1.0 / (L - 2)
            for i in range(n - 1):
                ih = 2.0 / (dt[i] + dt[i + 1]) * scl
                wacc[i + 1] += ih
                wacc[i] -= ih
        inv[0] = 0.0
        iw[0] = 0.0
        am[0] = 0.0
        bb[0] = 0.0
        inv[n + 1] = 0.0
        iw[n + 1] = 0.0
        am[n + 1] = 0.0
        bb[n + 1] = 0.0
        g_cp = g[base + 0]
        g_sm = g[base + 1]
        g_mc = g[base + 3] / n
        lse = alse[b]
        dcp = 0.0
        dsm_c = 0.0
        for i in range(n):
            inv[i + 1] = 1.0 / dt[i]
            iw[i + 1] = inv[i + 1] * wacc[i]
            q2 = aN[b, i] * aN[b, i + 1]
            q = math.sqrt(q2 if q2 > _COSINE_EPS else _COSINE_EPS)
            p = ap[b, i]
            c = 1.0 - p / q
            z = (c - cp_thr) / temp
            sg = _sigmoid(z)
            s1 = sg * (1.0 - sg)
            soft = math.exp(c / temp - lse)
            Gc = g_cp * s1 / temp + g_sm * soft + g_mc
            a = Gc / q
            am[i + 1] = a
            bb[i + 1] = a * p / (q * q) if q2 > _COSINE_EPS else 0.0
            dcp += s1 * z
            dsm_c += soft * c
        dtemp[b, 0] = dcp / (-temp)
        dtemp[b, 1] = lse - dsm_c / temp
        r2 = 0.0
        for k in range(D):
            d = _f64(X[L - 1, k]) - _f64(X[0, k])
            r2 += d * d
        r = math.sqrt(r2)
        gr = g[base + 4] / r if r > 0.0 else 0.0
        for k in range(D):
            d = _f64(X[L - 1, k]) - _f64(X[0, k])
            gd[k] = g[D + k] * alpha[k] + gr * d
            vk = avol[b, k]
            A[k] = g[2 * D + k] / (vk * n)
            gm[k] = g[k] / n
            ga[k] = g[3 * D + k]
            mu[k] = amu[b, k]
        # multi-scale block: the gradient of bin mean j is the three-point stencil
        # GV_j = cm_j V_{j-1} + c0_j V_j + cp_j V_{j+1} (coefficients from the scalars the
        # forward saved); each post of bin j gets GV_j / count_j
        any_scale = False
        for s in range(S):
            K = _bin_starts(tb, L, scales[s], starts[s])
            Ks[s] = K
            if K < 2:
                continue
            any_scale = True
            g1 = g[base + 5 + 2 * s] * beta[s] / (K - 1)
            g2 = g[base + 6 + 2 * s] * beta[s] / (K - 1)
            for j in range(K - 1):
                rho = brho[b, s, j]
                ek[j] = g1 / rho if rho > 0.0 else 0.0
                q2 = bN[b, s, j] * bN[b, s, j + 1]
                q = math.sqrt(q2 if q2 > _COSINE_EPS else _COSINE_EPS)
                a = g2 / q
                ak[j] = a
                bk[j] = a * bp[b, s, j] / (q * q) if q2 > _COSINE_EPS else 0.0
            for j in range(K):
                c0 = 0.0
                cm = 0.0
                cp = 0.0
                if j >= 1:
                    c0 += ek[j - 1] + bk[j - 1] * bN[b, s, j - 1]
                    cm = -ek[j - 1] - ak[j - 1]
                if j <= K - 2:
                    c0 += ek[j] + bk[j] * bN[b, s, j + 1]
                    cp = -ek[j] - ak[j]
                w = 1.0 / (starts[s, j + 1] - starts[s, j])
                C0[s, j] = c0 * w
                CM[s, j] = cm * w
                CP[s, j] = cp * w
            cur[s] = 0
            _mean_rows(X, starts[s, 0], starts[s, 1], ring[s, 0])
            _mean_rows(X, starts[s, 1], starts[s, 2], ring[s, 1])
        # one pass over the posts: every term, gE written once
        for j in range(L):
            if any_scale:
                for k in range(D):
                    sc[k] = 0.0
                for s in range(S):
                    K = Ks[s]
                    if K < 2:
                        continue
                    jb = cur[s]
                    if j == starts[s, jb + 1]:  # the post opens the next bin
                        jb += 1
                        cur[s] = jb
                        if jb + 1 < K:
                            _mean_rows(X, starts[s, jb + 1], starts[s, jb + 2], ring[s, (jb + 1) % 3])
                    _axpy3(sc, C0[s, jb], ring[s, jb % 3], CM[s, jb], ring[s, (jb + 2) % 3],
                           CP[s, jb], ring[s, (jb + 1) % 3])
            xj = X[j]
            xm = X[j - 1] if j >= 1 else X[j]
            xp = X[j + 1] if j <= n - 1 else X[j]
            ipm = inv[j]  # 1 / dt_{j-1} (0 at the first post)
            ipp = inv[j + 1]  # 1 / dt_j (0 at the last post)
            ldt = ipm - ipp
            lw = iw[j] - iw[j + 1]
            coef = bb[j + 1] * aN[b, j + 1] if j <= n - 1 else 0.0
            if j >= 1:
                coef += bb[j] * aN[b, j - 1]
            a_m = am[j]
            a_p = am[j + 1]
            sgn = (1.0 if j == L - 1 else 0.0) - (1.0 if j == 0 else 0.0)
            ge = gEb[j]
            if any_scale:
                for k in range(D):
                    x = _f64(xj[k])
                    x_m = _f64(xm[k])
                    x_p = _f64(xp[k])
                    val = ldt * gm[k] + lw * ga[k] + coef * x - a_m * x_m - a_p * x_p + sgn * gd[k] + sc[k]
                    val += A[k] * (((x - x_m) * ipm - mu[k]) * ipm - ((x_p - x) * ipp - mu[k]) * ipp)
                    ge[k] = val
            else:
                for k in range(D):
                    x = _f64(xj[k])
                    x_m = _f64(xm[k])
                    x_p = _f64(xp[k])
                    val = ldt * gm[k] + lw * ga[k] + coef * x - a_m * x_m - a_p * x_p + sgn * gd[k]
                    val += A[k] * (((x - x_m) * ipm - mu[k]) * ipm - ((x_p - x) * ipp - mu[k]) * ipp)
                    ge[k] = val


_LOCAL = threading.local()
#: scratch buffers up to this many bytes are kept between calls (per thread)
_KEEP_SCRATCH_BYTES = 64 << 20


def _scratch(T: int, D: int) -> np.ndarray:
    """The forward's ``[T, D]`` float64 scratch for bin means, kept per thread and reused.

    Allocating it afresh on every call would cost more than the kernel: a ``[T, D]`` block
    above glibc's mmap threshold is a new mapping whose pages fault on first touch
    (measured with the backward's former scratch: 0.6-0.7 ms instead of 0.16-0.18 ms for
    100 x 768, see docs/performance.md). Buffers larger than 64 MB are not kept.
    """
    buf = getattr(_LOCAL, "buf", None)
    need = T * D
    if buf is None or buf.size < need:
        buf = np.empty(need)
        if need * 8 <= _KEEP_SCRATCH_BYTES:
            _LOCAL.buf = buf
    return buf[:need].reshape(T, D)


@dataclass(frozen=True)
class KernelSaved:
    """What :func:`forward` leaves for :func:`backward` (small: ``O(B (S T + D))`` values).

    ``N [B, T]`` squared norms ``|v_i|^2``, ``p [B, max(T-1, 1)]`` dot products
    ``<v_i, v_{i+1}>``, ``mu [B, D]`` velocity mean, ``vol [B, D]`` volatility, ``lse [B]``
    log-sum-exp of ``c / temperature``, ``raw [B, S, 2]`` scale features before ``beta``;
    per scale and bin ``j``: ``bN [B, S, T]`` squared norm of the bin mean ``|V_j|^2``,
    ``bp [B, S, T]`` ``<V_j, V_{j+1}>`` and ``brho [B, S, T]`` ``|V_{j+1} - V_j|``; all
    float64.
    """

    N: np.ndarray
    p: np.ndarray
    mu: np.ndarray
    vol: np.ndarray
    lse: np.ndarray
    raw: np.ndarray
    bN: np.ndarray
    bp: np.ndarray
    brho: np.ndarray


def _consts(cfg: Any) -> tuple[float, float, float, float, np.ndarray]:
    return (float(cfg.min_dt), float(cfg.cp_threshold), float(cfg.silence_gap),
            float(cfg.silence_temperature), np.asarray(cfg.scales, dtype=np.float64))


def forward(
    E: np.ndarray,
    t: np.ndarray,
    lengths: np.ndarray,
    cfg: Any,
    *,
    alpha: np.ndarray | None = None,
    beta: np.ndarray | None = None,
    temperature: float | None = None,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, KernelSaved]:
    """The feature vector of every trajectory of a padded batch.

    Args:
        E: ``[B, T, D]`` float32 or float64, C-contiguous (rows past ``lengths[b]`` are
            never read).
        t: ``[B, T]`` float64 days, non-decreasing on each row's first ``lengths[b]`` posts
            (not checked here: the callers validate).
        lengths: ``[B]`` int64 in ``[1, T]``.
        cfg: a :class:`~cvx_core.features.config.TemporalFeaturesConfig` (burst aggregation,
            if any, is the caller's job).
        alpha: ``[D]`` drift weights (default ones); beta: ``[S]`` scale weights (default
            ones); temperature: change-point temperature (default ``cfg.temperature``).
        out: ``[B, 4*D + 5 + 2*S]`` in ``E``'s dtype to write into (allocated if ``None``).

    Returns:
        ``(out, saved)``; ``saved`` is what :func:`backward` needs.
    """
    if _UNAVAILABLE is not None:  # pragma: no cover - numba is a requirement
        raise RuntimeError(f"compiled kernels unavailable: {_UNAVAILABLE}")
    B, T, D = E.shape
    S = len(cfg.scales)
    min_dt, cp_thr, sil_gap, sil_temp, scales = _consts(cfg)
    alpha = np.ones(D) if alpha is None else np.ascontiguousarray(alpha, dtype=np.float64)
    beta = np.ones(S) if beta is None else np.ascontiguousarray(beta, dtype=np.float64)
    temp = float(cfg.temperature if temperature is None else temperature)
    if out is None:
        out = np.empty((B, 4 * D + 5 + 2 * S), dtype=E.dtype)
    saved = KernelSaved(
        N=np.empty((B, T)), p=np.empty((B, max(T - 1, 1))), mu=np.empty((B, D)), vol=np.empty((B, D)),
        lse=np.empty(B), raw=np.empty((B, S, 2)), bN=np.empty((B, S, T)), bp=np.empty((B, S, T)),
        brho=np.empty((B, S, T)),
    )
    _fwd(E, t, lengths, alpha, beta, temp, min_dt, cp_thr, sil_gap, sil_temp, scales, out,
             saved.N, saved.p, saved.mu, saved.vol, saved.lse, saved.raw, saved.bN, saved.bp, saved.brho,
             _scratch(T, D))
    return out, saved


def backward(
    E: np.ndarray,
    t: np.ndarray,
    lengths: np.ndarray,
    cfg: Any,
    G: np.ndarray,
    saved: KernelSaved,
    *,
    alpha: np.ndarray | None = None,
    beta: np.ndarray | None = None,
    temperature: float | None = None,
    gE: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Gradient of ``sum(G * features)`` with respect to ``E``, and the per-row derivatives
    of the change-point count and the smooth max with respect to the temperature.

    Same ``E, t, lengths, cfg, alpha, beta, temperature`` as the :func:`forward` call that
    produced ``saved``; ``G [B, F]`` float64 C-contiguous. Returns ``(gE [B, T, D]`` in
    ``E``'s dtype, zero on padding rows``, dtemp [B, 2])`` (``d cp_count / d temperature``,
    ``d max_severity / d temperature`` with ``max_severity = temperature * lse`` at fixed
    ``lse``'s softmax weights, i.e. ``lse - sum_i softmax_i c_i / temperature``).
    """
    if _UNAVAILABLE is not None:  # pragma: no cover - numba is a requirement
        raise RuntimeError(f"compiled kernels unavailable: {_UNAVAILABLE}")
    B, _, D = E.shape
    S = len(cfg.scales)
    min_dt, cp_thr, _, _, scales = _consts(cfg)
    alpha = np.ones(D) if alpha is None else np.ascontiguousarray(alpha, dtype=np.float64)
    beta = np.ones(S) if beta is None else np.ascontiguousarray(beta, dtype=np.float64)
    temp = float(cfg.temperature if temperature is None else temperature)
    if gE is None:
        gE = np.empty_like(E)
    dtemp = np.empty((B, 2))
    _bwd(E, t, lengths, alpha, beta, temp, min_dt, cp_thr, scales, G,
             saved.N, saved.p, saved.mu, saved.vol, saved.lse, saved.bN, saved.bp, saved.brho, gE, dtemp)
    return gE, dtemp


def compile_all() -> float:
    """Compile (or load from the cache) every specialisation the library uses; returns the
    seconds it took. Used by the benchmark to report the one-off cost."""
    import time

    from cvx_core.features.config import TemporalFeaturesConfig

    t0 = time.perf_counter()
    cfg = TemporalFeaturesConfig()
    for dtype in (np.float32, np.float64):
        E = np.zeros((1, 3, 2), dtype=dtype)
        t = np.array([[0.0, 1.0, 2.0]])
        ln = np.array([3], dtype=np.int64)
        out, saved = forward(E, t, ln, cfg)
        backward(E, t, ln, cfg, np.zeros((1, out.shape[1])), saved)
    return time.perf_counter() - t0
