"""Tests of cvx_core.features.kernels, the compiled (numba) CPU loops both paths now call.

The kernels replace the NumPy body of ``AnalyticBackend.extract_all`` and, on the CPU, the
vectorised ``_TemporalFeaturesFn``; both of those are kept (fallbacks without numba, and on
CUDA), and here they cross-check the kernels:

- forward, float64: kernel == the NumPy implementation to 1e-12 relative (floors as in
  test_differentiable), on hypothesis trajectories (T = 1, 2, equal stamps, zero vectors,
  bursts, non-default scales);
- forward, float32: within SPEC's 1e-4 norm-wise tolerance of the float64 result, and
  equal to the float64 computation on the float32-rounded embeddings, rounded once;
- backward: gradients for the embeddings, alpha, beta and the temperature == the
  vectorised fused backward, float64, padded batches;
- a batch is processed trajectory by trajectory: any batch (any chunking of it, any
  padding) gives the same bits as each trajectory alone;
- the analytic and torch paths give the same bits in float64 (same kernel).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cvx_core.features import kernels
from cvx_core.features.analytic import AnalyticBackend, _extract_all_numpy, _resample, feature_layout
from cvx_core.features.config import TemporalFeaturesConfig
from cvx_core.features.differentiable import TorchBackend, _KernelFeaturesFn, _TemporalFeaturesFn

pytestmark = pytest.mark.skipif(not kernels.available(), reason="numba kernels unavailable or disabled")

HYP = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CONFIGS = [
    TemporalFeaturesConfig(),
    TemporalFeaturesConfig(scales=(0.5, 2.0), temperature=0.2, cp_threshold=0.5),
    TemporalFeaturesConfig(burst_window=0.25, scales=(1.0, 3.0, 10.0)),
    TemporalFeaturesConfig(scales=(0.1,), temperature=1e-3, silence_gap=0.5, silence_temperature=0.01),
]


@st.composite
def trajectories(draw, *, min_gap: float = 0.0, max_T: int = 14, D: int | None = None):
    """(E [T, D] float64, t [T] days): T in 1..max_T; random, constant, zero and partly zero
    rows, large and tiny scales; irregular, repeated and all-equal timestamps."""
    T = draw(st.integers(1, max_T))
    D = draw(st.integers(1, 6)) if D is None else D
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    kind = draw(st.sampled_from(["random", "random", "constant", "zeros", "some_zero_rows", "scaled", "tiny"]))
    E = rng.normal(size=(T, D))
    if kind == "constant":
        E = np.repeat(E[:1], T, axis=0)
    elif kind == "zeros":
        E = np.zeros((T, D))
    elif kind == "some_zero_rows":
        E[rng.random(T) < 0.4] = 0.0
    elif kind == "scaled":
        E *= 10.0 ** rng.uniform(-3, 3)
    elif kind == "tiny":
        E *= 10.0 ** rng.uniform(-6, -3)
    gaps = rng.exponential(2.0, size=max(T - 1, 0)) + min_gap
    gk = draw(st.sampled_from(["irregular", "equal_some", "all_equal", "whole_days"]))
    if gk == "equal_some" and min_gap == 0.0:
        gaps[rng.random(gaps.shape[0]) < 0.4] = 0.0
    elif gk == "all_equal" and min_gap == 0.0:
        gaps[:] = 0.0
    elif gk == "whole_days":  # timestamps exactly on bin edges
        gaps = np.round(gaps) + min_gap
    t = np.concatenate([[0.0], np.cumsum(gaps)]) + rng.uniform(0, 50)
    return E, t


def _scales(E: np.ndarray, t: np.ndarray, cfg: TemporalFeaturesConfig) -> np.ndarray:
    """Natural size of each entry: max|E|, over the smallest step for velocities, over its
    square for accelerations (entries that cancel to ~0 are compared against this)."""
    lay = feature_layout(E.shape[1], cfg)
    base = max(1.0, float(np.abs(E).max()))
    dt = max(min(float(np.diff(t).min()) if len(t) > 1 else 1.0, cfg.burst_window or math.inf), cfg.min_dt)
    out = np.full(lay.size, base)
    out[lay.slice("mean_velocity")] = base / dt
    out[lay.slice("volatility")] = base / dt
    out[lay.slice("mean_acceleration")] = base / dt**2
    return out


def _numpy_features(E: np.ndarray, t: np.ndarray, cfg: TemporalFeaturesConfig) -> np.ndarray:
    X, tt = E, t
    if cfg.burst_window is not None:
        X, tt = _resample(X, tt, cfg.burst_window)
    return _extract_all_numpy(X, tt, cfg)


def _kernel_features(E: np.ndarray, t: np.ndarray, cfg: TemporalFeaturesConfig) -> np.ndarray:
    return AnalyticBackend.extract_all(E, t, cfg)  # the analytic path runs the kernel


@HYP
@given(traj=trajectories(), cfg_index=st.integers(0, len(CONFIGS) - 1))
def test_float64_kernel_equals_the_numpy_implementation(traj, cfg_index):
    E, t = traj
    cfg = CONFIGS[cfg_index]
    got, ref = _kernel_features(E, t, cfg), _numpy_features(E, t, cfg)
    assert got.shape == ref.shape and np.isfinite(got).all()
    tol = 1e-12 * (np.abs(ref) + 1e-3 * _scales(E, t, cfg))
    bad = np.flatnonzero(np.abs(got - ref) > tol)
    assert bad.size == 0, f"entries {bad[:8]}: kernel {got[bad[:4]]} numpy {ref[bad[:4]]}"


def _float32_block_errors(x32: np.ndarray, x64: np.ndarray, D: int, cfg) -> dict[str, float]:
    """SPEC's float32 measure per group: |x32 - x64| / (|x64| + 0.01 sqrt(n))."""
    return {
        name: float(np.linalg.norm(x32[sl] - x64[sl]) / (np.linalg.norm(x64[sl]) + 0.01 * math.sqrt(x64[sl].size)))
        for name, sl in feature_layout(D, cfg).groups.items()
    }


@HYP
@given(traj=trajectories(min_gap=0.05), cfg_index=st.integers(0, 1))
def test_float32_kernel_within_spec_tolerance_and_rounded_once(traj, cfg_index):
    E, t = traj
    cfg = CONFIGS[cfg_index]
    x64 = _numpy_features(E, t, cfg)
    E32 = torch.tensor(E, dtype=torch.float32)
    tt = torch.tensor(t)[None]
    k32 = _KernelFeaturesFn.apply(E32[None], tt, None, None, None, cfg.temperature, cfg)[0]
    assert k32.dtype == torch.float32
    err = _float32_block_errors(k32.double().numpy(), x64, E.shape[1], cfg)
    assert max(err.values()) <= 1e-4, err
    # the kernel widens float32 rows to float64 and rounds each result once: it is the
    # float64 computation on the float32-rounded embeddings, rounded to float32
    on_rounded = _kernel_features(E32.double().numpy(), t, cfg)
    np.testing.assert_allclose(k32.double().numpy(), on_rounded, rtol=2.0**-23, atol=1e-30)


def _padded(items, D, fill=float("nan")):
    Tm = max(len(e) for e, _ in items) + 2
    Eb = np.full((len(items), Tm, D), fill)
    tb = np.full((len(items), Tm), 1e9)  # junk padding times: never read
    for i, (e, t) in enumerate(items):
        Eb[i, : len(e)] = e
        tb[i, : len(e)] = t
    return Eb, tb, np.array([len(e) for e, _ in items], dtype=np.int64)


def _both_fns(E, t, ln, cfg, alpha, beta, temp, W):
    """Outputs and (gE, g_alpha, g_beta, g_temp) of the kernel Function and of the
    vectorised fused Function on the same padded float64 batch."""
    res = []
    for fn in (_KernelFeaturesFn, _TemporalFeaturesFn):
        Et = torch.tensor(E, requires_grad=True)
        a = torch.tensor(alpha, requires_grad=True)
        b = torch.tensor(beta, requires_grad=True)
        tp = torch.tensor(temp, dtype=torch.float64, requires_grad=True)
        out = fn.apply(Et, torch.tensor(t), torch.tensor(ln), a, b, tp, cfg)
        (out * W).sum().backward()
        res.append((out.detach().numpy(), Et.grad.numpy(), a.grad.numpy(), b.grad.numpy(), tp.grad.item()))
    return res


@pytest.mark.parametrize("cfg_index", [0, 1, 3])
def test_kernel_gradients_equal_the_vectorised_fused_backward(cfg_index):
    cfg = CONFIGS[cfg_index]
    rng = np.random.default_rng(40 + cfg_index)
    D = 5
    items = []
    for L in (1, 2, 3, 9, 17):
        t = np.cumsum(rng.choice([0.0, 0.05, 0.4, 1.0, 3.0, 9.0], size=L))
        E = rng.normal(size=(L, D)) + 0.3
        if L == 9:
            E[4] = 0.0  # a zero vector: the cosine floor
        items.append((E, t))
    Eb, tb, ln = _padded(items, D, fill=0.0)
    alpha = rng.uniform(0.5, 1.5, size=D)
    beta = rng.uniform(0.5, 1.5, size=cfg.n_scales)
    W = torch.tensor(rng.normal(size=(len(items), cfg.feature_dim(D))))
    (ko, kg, ka, kb, kt), (vo, vg, va, vb, vt) = _both_fns(Eb, tb, ln, cfg, alpha, beta, 0.3, W)
    np.testing.assert_allclose(ko, vo, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(kg, vg, rtol=1e-9, atol=1e-9 * np.abs(vg).max())
    np.testing.assert_allclose(ka, va, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(kb, vb, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(kt, vt, rtol=1e-9)
    for i, L in enumerate(ln):
        assert (kg[i, L:] == 0).all()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trajs=st.integers(1, 6).flatmap(lambda D: st.lists(trajectories(max_T=10, D=D), min_size=2, max_size=6)),
       split=st.integers(1, 5), cfg_index=st.integers(0, 3))
def test_any_chunking_of_a_batch_gives_the_same_bits_as_each_trajectory_alone(trajs, split, cfg_index):
    """The kernel processes a batch one trajectory at a time (the cache-sized chunk): the
    whole batch, any split of it into chunks, and each trajectory alone (no padding) give
    identical features and identical gradients."""
    cfg = CONFIGS[cfg_index]
    D = trajs[0][0].shape[1]
    Eb, tb, ln = _padded(trajs, D)
    G = np.random.default_rng(split).normal(size=(len(trajs), cfg.feature_dim(D)))
    if cfg.burst_window is not None:
        cfg = TemporalFeaturesConfig(**{**cfg.to_dict(), "burst_window": None})
    whole, saved = kernels.forward(Eb, tb, ln, cfg)
    gwhole, dtw = kernels.backward(Eb, tb, ln, cfg, G, saved)
    k = min(split, len(trajs) - 1)
    parts = [kernels.forward(np.ascontiguousarray(Eb[s]), np.ascontiguousarray(tb[s]), ln[s], cfg)
             for s in (slice(0, k), slice(k, None))]
    assert np.array_equal(np.concatenate([p[0] for p in parts]), whole)
    for i, (E, t) in enumerate(trajs):
        alone, sv = kernels.forward(E[None].copy(), t[None].copy(), np.array([len(E)]), cfg)
        galone, dta = kernels.backward(E[None].copy(), t[None].copy(), np.array([len(E)]), cfg, G[i : i + 1].copy(), sv)
        assert np.array_equal(alone[0], whole[i])
        assert np.array_equal(galone[0], gwhole[i, : len(E)])
        assert np.array_equal(dta[0], dtw[i])
        assert (gwhole[i, len(E):] == 0).all()  # padding (NaN here) gets no gradient and is never read


@HYP
@given(traj=trajectories(), cfg_index=st.integers(0, len(CONFIGS) - 1))
def test_analytic_and_torch_float64_give_the_same_bits(traj, cfg_index):
    E, t = traj
    cfg = CONFIGS[cfg_index]
    if cfg.burst_window is not None:  # bursts are averaged by NumPy on one path, torch on the other
        cfg = TemporalFeaturesConfig(**{**cfg.to_dict(), "burst_window": None})
    a = AnalyticBackend.extract_all(E, t, cfg)
    b = TorchBackend.extract_all(torch.tensor(E), torch.tensor(t), cfg).numpy()
    assert np.array_equal(a, b)


def test_disabling_the_kernels_falls_back_to_the_numpy_and_vectorised_paths(monkeypatch):
    rng = np.random.default_rng(3)
    E, t = rng.normal(size=(20, 7)), np.cumsum(rng.exponential(1.0, size=20))
    with_kernel = AnalyticBackend.extract_all(E, t)
    monkeypatch.setenv("CVX_DISABLE_KERNELS", "1")
    assert not kernels.available()
    without = AnalyticBackend.extract_all(E, t)
    assert np.array_equal(without, _numpy_features(E, t, TemporalFeaturesConfig()))
    np.testing.assert_allclose(with_kernel, without, rtol=1e-12, atol=1e-13)
    tor = TorchBackend.extract_all(torch.tensor(E, requires_grad=True), torch.tensor(t))
    fused = tor.grad_fn.next_functions[0][0]  # extract_all selects row 0 of the [1, F] batch
    assert type(fused).__name__ == "_TemporalFeaturesFnBackward"
