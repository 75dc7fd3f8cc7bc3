"""A deliberately naive, loop-by-loop reference of SPEC.md's ``extract_all`` (float64).

Written from /work/shared/SPEC.md alone, without reading cvx_core's feature code, so that
tests/test_spec_reference.py can hold both feature paths to an independent reading of the
contract. Plain Python floats and explicit loops; NumPy only to hold arrays. Not a test
module (pytest does not collect it: the name does not start with ``test_``).
"""

from __future__ import annotations

import math

import numpy as np


def _floor_bin(t_i: float, t_1: float, w: float) -> int:
    """SPEC: ``k = floor((t - t_1) / w)``, evaluated literally in float64."""
    return int(math.floor((t_i - t_1) / w))


def ref_resample(E, t, w: float):
    """Bins of width ``w`` anchored at ``t[0]``; each non-empty bin -> (mean embedding, mean time)."""
    E = [list(map(float, row)) for row in np.asarray(E, dtype=np.float64)]
    t = [float(x) for x in np.asarray(t, dtype=np.float64)]
    T = len(t)
    D = len(E[0])
    t1 = t[0]
    bins: dict[int, list[int]] = {}
    for i in range(T):
        k = _floor_bin(t[i], t1, w)
        bins.setdefault(k, []).append(i)
    out_E = []
    out_t = []
    for k in sorted(bins):
        members = bins[k]
        n = len(members)
        row = []
        for d in range(D):
            s = 0.0
            for i in members:
                s += E[i][d]
            row.append(s / n)
        st = 0.0
        for i in members:
            st += t[i]
        out_E.append(row)
        out_t.append(st / n)
    return np.array(out_E, dtype=np.float64), np.array(out_t, dtype=np.float64)


def ref_bin_ids(t, w: float) -> list[int]:
    t = [float(x) for x in np.asarray(t, dtype=np.float64)]
    return [_floor_bin(x, t[0], w) for x in t]


def _cos_dist(a: list[float], b: list[float]) -> float:
    dot = 0.0
    na = 0.0
    nb = 0.0
    for x, y in zip(a, b):
        dot += x * y
        na += x * x
        nb += y * y
    return 1.0 - dot / math.sqrt(max(na * nb, 1e-16))


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _logsumexp(xs: list[float]) -> float:
    m = max(xs)
    s = 0.0
    for x in xs:
        s += math.exp(x - m)
    return m + math.log(s)


def ref_time_steps(t, min_dt: float) -> list[float]:
    t = [float(x) for x in t]
    return [max(t[i + 1] - t[i], min_dt) for i in range(len(t) - 1)]


def ref_extract_all(E, t, *, min_dt=1.0 / 1440.0, burst_window=None, cp_threshold=0.3,
                    temperature=0.05, silence_gap=7.0, silence_temperature=1.0,
                    scales=(1.0, 7.0, 30.0)) -> np.ndarray:
    """SPEC's fixed-size vector, length ``4*D + 5 + 2*S``, alpha = beta = 1."""
    E = np.asarray(E, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if burst_window is not None:
        E, t = ref_resample(E, t, burst_window)
    V = [list(map(float, row)) for row in E]
    tt = [float(x) for x in t]
    T = len(V)
    D = len(V[0])
    S = len(scales)

    dt = ref_time_steps(tt, min_dt)
    # velocity
    U = []
    for i in range(T - 1):
        U.append([(V[i + 1][d] - V[i][d]) / dt[i] for d in range(D)])
    # acceleration
    A = []
    for i in range(T - 2):
        h = 0.5 * (dt[i] + dt[i + 1])
        A.append([(U[i + 1][d] - U[i][d]) / h for d in range(D)])

    out: list[float] = []
    # [0, D) mean velocity
    mean_u = [0.0] * D
    if T >= 2:
        for d in range(D):
            s = 0.0
            for i in range(T - 1):
                s += U[i][d]
            mean_u[d] = s / (T - 1)
    out += mean_u
    # [D, 2D) drift (alpha = 1)
    drift = [V[T - 1][d] - V[0][d] for d in range(D)]
    out += drift
    # [2D, 3D) volatility
    vol = [math.sqrt(1e-12)] * D
    if T >= 2:
        for d in range(D):
            s = 0.0
            for i in range(T - 1):
                s += (U[i][d] - mean_u[d]) ** 2
            vol[d] = math.sqrt(s / (T - 1) + 1e-12)
    out += vol
    # [3D, 4D) mean acceleration
    mean_a = [0.0] * D
    if T >= 3:
        for d in range(D):
            s = 0.0
            for i in range(T - 2):
                s += A[i][d]
            mean_a[d] = s / (T - 2)
    out += mean_a
    # scalars
    c = [_cos_dist(V[i], V[i + 1]) for i in range(T - 1)]
    cp = 0.0
    for ci in c:
        cp += _sigmoid((ci - cp_threshold) / temperature)
    smax = 0.0 if T < 2 else temperature * _logsumexp([ci / temperature for ci in c])
    sil = 0.0
    for g in dt:
        sil += _sigmoid((g - silence_gap) / silence_temperature)
    mcos = 0.0
    if T >= 2:
        mcos = sum(c) / len(c)
    dnorm = math.sqrt(sum(x * x for x in drift))
    out += [cp, smax, sil, mcos, dnorm]
    # scales, on the (possibly burst-aggregated) sequence
    for w in scales:
        Ek, _tk = ref_resample(np.array(V), np.array(tt), w)
        Vk = [list(map(float, row)) for row in Ek]
        n = len(Vk)
        if n < 2:
            out += [0.0, 0.0]
            continue
        sn = 0.0
        sc = 0.0
        for j in range(n - 1):
            sn += math.sqrt(sum((Vk[j + 1][d] - Vk[j][d]) ** 2 for d in range(D)))
            sc += _cos_dist(Vk[j], Vk[j + 1])
        out += [sn / (n - 1), sc / (n - 1)]
    assert len(out) == 4 * D + 5 + 2 * S
    return np.array(out, dtype=np.float64)


def ref_block_scales(E, t, **cfg) -> np.ndarray:
    """Per-feature magnitude of the terms each feature sums (for an absolute tolerance floor).

    Mean velocity / acceleration can cancel to ~0 while their terms are large (at the
    ``min_dt`` floor the terms reach 1e3..1e6 x the step); a relative 1e-10 criterion on the
    cancelled sum is meaningless, so the tolerance floor is 1e-12 x the largest term.
    """
    E = np.asarray(E, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if cfg.get("burst_window") is not None:
        E, t = ref_resample(E, t, cfg["burst_window"])
    T, D = E.shape
    S = len(cfg.get("scales", (1.0, 7.0, 30.0)))
    dt = np.array(ref_time_steps(t, cfg.get("min_dt", 1.0 / 1440.0)))
    scale = np.ones(4 * D + 5 + 2 * S)
    if T >= 2:
        U = np.diff(E, axis=0) / dt[:, None]
        m = max(1.0, float(np.abs(U).max()))
        scale[0:D] = m
        scale[2 * D:3 * D] = m
        if T >= 3:
            A = np.diff(U, axis=0) / (0.5 * (dt[:-1] + dt[1:]))[:, None]
            scale[3 * D:4 * D] = max(1.0, float(np.abs(A).max()))
    scale[D:2 * D] = max(1.0, float(np.abs(E).max()))
    return scale
