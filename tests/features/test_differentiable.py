"""Tests of cvx_core.features.differentiable: agreement with the analytic path (float64 to 1e-10,
float32 within SPEC's norm-wise tolerance), padding invariance, finite gradients,
gradcheck of the fused backward, gradients into an upstream encoder, CUDA = CPU.

Float64 agreement measure (per entry): ``|a - b| <= 1e-10 * (|b| + floor)`` where the
floor is ``1e-3`` times the natural scale of the entry's block: ``max(1, max|E|)`` for
drift, norms and cosine features; that divided by the smallest step ``dt`` for the
velocity-mean and volatility blocks, and by the smallest step squared for the
acceleration-mean block. Entries that cancel to about zero (a mean of large velocities)
are so compared at ``1e-13`` of what their terms can reach, not at 1e-10 of zero.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cvx_core.features.analytic import AnalyticBackend, TemporalOps, feature_layout
from cvx_core.features.config import TemporalFeaturesConfig
from cvx_core.features.differentiable import TorchBackend

A, TB = AnalyticBackend, TorchBackend
HYP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CONFIGS = [
    TemporalFeaturesConfig(),
    TemporalFeaturesConfig(scales=(0.5, 2.0), temperature=0.2, cp_threshold=0.5),
    TemporalFeaturesConfig(burst_window=0.25, scales=(1.0, 3.0, 10.0)),
]


@st.composite
def trajectories(draw, *, min_gap: float = 0.0, max_T: int = 12):
    """(E [T, D] float64, t [T] days) with T in 1..max_T, irregular and equal stamps,
    random / constant / zero / partly-zero / very large or tiny embeddings."""
    T = draw(st.integers(1, max_T))
    D = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**31 - 1))
    kind = draw(st.sampled_from(["random", "random", "constant", "zeros", "some_zero_rows", "scaled", "tiny"]))
    gaps_kind = draw(st.sampled_from(["irregular", "equal_some", "all_equal", "regular"]))
    rng = np.random.default_rng(seed)
    E = rng.normal(size=(T, D))
    if kind == "constant":
        E = np.repeat(E[:1], T, axis=0)
    elif kind == "zeros":
        E = np.zeros((T, D))
    elif kind == "some_zero_rows":
        E[rng.random(T) < 0.4] = 0.0
    elif kind == "scaled":
        E *= 10.0 ** rng.uniform(-3, 3)
    elif kind == "tiny":  # |v|^2 |v'|^2 near and below the 1e-16 floor of the cosine
        E *= 10.0 ** rng.uniform(-6, -3)
    gaps = rng.exponential(3.0, size=max(T - 1, 0)) + min_gap
    if gaps_kind == "equal_some" and min_gap == 0.0:
        gaps[rng.random(gaps.shape[0]) < 0.4] = 0.0
    elif gaps_kind == "all_equal" and min_gap == 0.0:
        gaps[:] = 0.0
    elif gaps_kind == "regular":
        gaps[:] = 1.0 + min_gap
    t = np.concatenate([[0.0], np.cumsum(gaps)]) + rng.uniform(0, 100)
    return E, t


def block_scales(E: np.ndarray, t: np.ndarray, cfg: TemporalFeaturesConfig) -> np.ndarray:
    """The natural scale of each entry (see the module docstring)."""
    D = E.shape[1]
    lay = feature_layout(D, cfg)
    base = max(1.0, float(np.abs(E).max()))
    dt_min = float(A.time_steps(t, cfg).min()) if E.shape[0] > 1 else 1.0
    dt_min = min(dt_min, cfg.burst_window or math.inf)
    out = np.full(lay.size, base)
    out[lay.slice("mean_velocity")] = base / dt_min
    out[lay.slice("volatility")] = base / dt_min
    out[lay.slice("mean_acceleration")] = base / dt_min**2
    return out


def assert_agree_1e10(a: np.ndarray, b: np.ndarray, E: np.ndarray, t: np.ndarray, cfg) -> None:
    floor = 1e-3 * block_scales(E, t, cfg)
    bad = np.abs(a - b) > 1e-10 * (np.abs(b) + floor)
    assert not bad.any(), (
        f"entries {np.flatnonzero(bad)[:10]} differ: torch {a[bad][:5]}, analytic {b[bad][:5]}"
    )


def blockwise_float32_error(x32: np.ndarray, x64: np.ndarray, D: int, cfg) -> dict[str, float]:
    """SPEC's float32 measure per group: |x32 - x64| / (|x64| + 0.01 sqrt(n))."""
    out = {}
    for name, sl in feature_layout(D, cfg).groups.items():
        a, b = x32[sl], x64[sl]
        out[name] = float(np.linalg.norm(a - b) / (np.linalg.norm(b) + 0.01 * math.sqrt(b.size)))
    return out


def test_torch_backend_satisfies_the_protocol():
    assert isinstance(TorchBackend, TemporalOps)


# --- float64 agreement ---------------------------------------------------------------------
@HYP
@given(traj=trajectories(), cfg_index=st.integers(0, len(CONFIGS) - 1))
def test_float64_torch_equals_analytic_to_1e10_relative(traj, cfg_index):
    E, t = traj
    cfg = CONFIGS[cfg_index]
    b = A.extract_all(E, t, cfg)
    a = TB.extract_all(torch.tensor(E), torch.tensor(t), cfg).numpy()
    assert a.shape == b.shape == (cfg.feature_dim(E.shape[1]),)
    assert np.isfinite(a).all() and np.isfinite(b).all()
    assert_agree_1e10(a, b, E, t, cfg)


@HYP
@given(traj=trajectories())
def test_float64_single_ops_agree_with_analytic(traj):
    E, t = traj
    Et, tt = torch.tensor(E), torch.tensor(t)
    for name in ("velocity", "acceleration", "volatility", "ema"):
        np.testing.assert_allclose(
            getattr(TB, name)(Et, tt).numpy(), getattr(A, name)(E, t), rtol=1e-10, atol=1e-9
        )
    np.testing.assert_allclose(TB.cosine_distance(Et).numpy(), A.cosine_distance(E), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(TB.time_steps(tt).numpy(), A.time_steps(t))
    np.testing.assert_allclose(TB.drift(Et).numpy(), A.drift(E))
    np.testing.assert_allclose(TB.soft_changepoints(Et).numpy(), A.soft_changepoints(E), rtol=1e-10, atol=1e-14)
    for width in (0.5, 7.0):
        Er, tr = TB.resample(Et, tt, width)
        Ea, ta = A.resample(E, t, width)
        np.testing.assert_allclose(Er.numpy(), Ea, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(tr.numpy(), ta, rtol=1e-14)


# --- float32 ------------------------------------------------------------------------------
@HYP
@given(traj=trajectories(min_gap=0.05), cfg_index=st.integers(0, 1))
def test_float32_within_spec_normwise_tolerance_per_block(traj, cfg_index):
    E, t = traj
    cfg = CONFIGS[cfg_index]
    x64 = A.extract_all(E, t, cfg)
    x32 = TB.extract_all(torch.tensor(E, dtype=torch.float32), torch.tensor(t), cfg)
    assert x32.dtype == torch.float32
    errs = blockwise_float32_error(x32.double().numpy(), x64, E.shape[1], cfg)
    assert max(errs.values()) <= 1e-4, errs


def test_timestamps_stay_float64_for_float32_embeddings():
    # a gap of one minute at day 1e5: float32 timestamps could not even represent it
    t = torch.tensor([1e5, 1e5 + 1.0 / 1440.0, 1e5 + 2.0 / 1440.0], dtype=torch.float64)
    E = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float32)
    f = TB.extract_all(E, t)
    np.testing.assert_allclose(f[0].item(), 0.5 * (1440.0 + 2880.0), rtol=1e-6)


# --- batching and padding ---------------------------------------------------------------------
def pad_batch(items, D, fill=float("nan")):
    lengths = [e.shape[0] for e, _ in items]
    Tm = max(lengths) + 2
    Eb = np.full((len(items), Tm, D), fill)
    tb = np.full((len(items), Tm), 1e9)  # junk padding times, never to be read
    for i, (e, t) in enumerate(items):
        Eb[i, : len(e)] = e
        tb[i, : len(e)] = t
    return torch.tensor(Eb), torch.tensor(tb), torch.tensor(lengths)


@settings(max_examples=25, deadline=None)
@given(trajs=st.lists(trajectories(max_T=10), min_size=1, max_size=5).filter(
    lambda xs: len({e.shape[1] for e, _ in xs}) == 1), cfg_index=st.integers(0, len(CONFIGS) - 1))
def test_features_do_not_depend_on_batch_or_padding(trajs, cfg_index):
    cfg = CONFIGS[cfg_index]
    D = trajs[0][0].shape[1]
    Eb, tb, ln = pad_batch(trajs, D)
    batch = TB.extract_all(Eb, tb, cfg, lengths=ln).numpy()
    assert np.isfinite(batch).all()
    for i, (E, t) in enumerate(trajs):
        alone = TB.extract_all(torch.tensor(E), torch.tensor(t), cfg).numpy()
        np.testing.assert_allclose(batch[i], alone, rtol=1e-12, atol=1e-12 * block_scales(E, t, cfg).max())


def test_gradients_do_not_depend_on_batch_or_padding():
    rng = np.random.default_rng(5)
    items = [(rng.normal(size=(L, 4)), np.cumsum(rng.exponential(2.0, size=L))) for L in (3, 1, 9, 6)]
    Eb, tb, ln = pad_batch(items, 4, fill=0.0)
    Eb.requires_grad_(True)
    W = torch.tensor(rng.normal(size=(len(items), feature_layout(4).size)))
    (TB.extract_all(Eb, tb, lengths=ln) * W).sum().backward()
    for i, (E, t) in enumerate(items):
        Ei = torch.tensor(E, requires_grad=True)
        (TB.extract_all(Ei, torch.tensor(t)) * W[i]).sum().backward()
        np.testing.assert_allclose(Eb.grad[i, : len(E)].numpy(), Ei.grad.numpy(), rtol=1e-10, atol=1e-10)
        assert (Eb.grad[i, len(E):] == 0).all()


def test_resample_batch_of_ragged_rows_equals_per_row_analytic_resample():
    rng = np.random.default_rng(11)
    items = [(rng.normal(size=(L, 3)), np.sort(rng.uniform(0, 6, size=L))) for L in (7, 1, 12)]
    Eb, tb, ln = pad_batch(items, 3)
    E_r, t_r, n_r = TB.resample_batch(Eb, tb, ln, 1.5)
    for i, (E, t) in enumerate(items):
        Ea, ta = A.resample(E, t, 1.5)
        assert n_r[i].item() == len(ta)
        np.testing.assert_allclose(E_r[i, : len(ta)].numpy(), Ea, rtol=1e-13)
        np.testing.assert_allclose(t_r[i, : len(ta)].numpy(), ta, rtol=1e-14)
        assert (t_r[i, len(ta):] == t_r[i, len(ta) - 1]).all()


def test_mask_is_accepted_in_place_of_lengths():
    rng = np.random.default_rng(6)
    E = torch.tensor(rng.normal(size=(2, 5, 3)))
    t = torch.tensor(np.cumsum(rng.exponential(1.0, size=(2, 5)), axis=1))
    ln = torch.tensor([5, 2])
    mask = torch.arange(5)[None, :] < ln[:, None]
    torch.testing.assert_close(TB.extract_all(E, t, mask=mask), TB.extract_all(E, t, lengths=ln))
    with pytest.raises(ValueError, match="prefix|first posts"):
        TB.extract_all(E, t, mask=~mask)


def test_batch_input_errors_are_clear():
    E = torch.zeros(2, 4, 3)
    t = torch.zeros(2, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="lengths must lie"):
        TB.extract_all(E, t, lengths=torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="lengths must have 2"):
        TB.extract_all(E, t, lengths=torch.tensor([4]))
    with pytest.raises(ValueError, match="non-decreasing"):
        TB.extract_all(E, torch.tensor([[0.0, 1.0, 0.5, 2.0]] * 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="timestamps must have shape"):
        TB.extract_all(E, torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="temperature"):
        TB.extract_all(E, t, temperature=-1.0)
    with pytest.raises(TypeError, match="torch.Tensor"):
        TB.extract_all(np.zeros((4, 3)), np.zeros(4))


# --- gradients ---------------------------------------------------------------------------------
@HYP
@given(traj=trajectories(), cfg_index=st.integers(0, len(CONFIGS) - 1))
def test_gradients_are_finite_for_every_input(traj, cfg_index):
    E, t = traj
    cfg = CONFIGS[cfg_index]
    Et = torch.tensor(E, requires_grad=True)
    alpha = torch.ones(E.shape[1], dtype=torch.float64, requires_grad=True)
    beta = torch.ones(cfg.n_scales, dtype=torch.float64, requires_grad=True)
    temp = torch.tensor(cfg.temperature, dtype=torch.float64, requires_grad=True)
    f = TB.extract_all(Et, torch.tensor(t), cfg, alpha=alpha, beta=beta, temperature=temp)
    w = torch.tensor(np.random.default_rng(0).normal(size=f.shape[0]))
    (f * w).sum().backward()
    for g in (Et.grad, alpha.grad, beta.grad, temp.grad):
        assert g is not None and torch.isfinite(g).all()


def _gradcheck_case(T: int, D: int, seed: int, cfg: TemporalFeaturesConfig):
    rng = np.random.default_rng(seed)
    E = torch.tensor(rng.normal(size=(T, D)) + 0.5, requires_grad=True)
    t = torch.tensor(np.concatenate([[0.0], np.cumsum(rng.choice([0.0, 0.3, 1.5, 8.0], size=T - 1))]))
    return E, t


@pytest.mark.parametrize("T", [1, 2, 3, 6])
@pytest.mark.parametrize("cfg_index", [0, 1, 2])
def test_gradcheck_fused_backward_float64(T, cfg_index):
    cfg = TemporalFeaturesConfig(**{**CONFIGS[cfg_index].to_dict(), "temperature": 0.4})
    E, t = _gradcheck_case(T, 3, seed=T + 10 * cfg_index, cfg=cfg)
    alpha = torch.tensor([0.5, 1.0, 1.5], dtype=torch.float64, requires_grad=True)
    beta = torch.linspace(0.5, 1.5, cfg.n_scales, dtype=torch.float64).requires_grad_(True)
    temp = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)

    def fn(E_, a_, b_, tp_):
        return TB.extract_all(E_, t, cfg, alpha=a_, beta=b_, temperature=tp_)

    assert torch.autograd.gradcheck(fn, (E, alpha, beta, temp), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_gradcheck_padded_batch_float64():
    rng = np.random.default_rng(9)
    items = [(rng.normal(size=(L, 3)) + 0.5, np.cumsum(rng.choice([0.2, 1.0, 9.0], size=L))) for L in (4, 1, 2, 6)]
    Eb, tb, ln = pad_batch(items, 3, fill=0.0)
    Eb.requires_grad_(True)
    cfg = TemporalFeaturesConfig(temperature=0.5, scales=(0.5, 3.0))
    assert torch.autograd.gradcheck(lambda x: TB.extract_all(x, tb, cfg, lengths=ln), (Eb,), eps=1e-6, atol=1e-6)


def test_gradients_reach_an_upstream_linear_encoder():
    torch.manual_seed(0)
    encoder = torch.nn.Linear(6, 8)
    x = torch.randn(3, 7, 6)
    t = torch.tensor(np.cumsum(np.random.default_rng(0).exponential(1.0, size=(3, 7)), axis=1))
    feats = TorchBackend.extract_all(encoder(x), t, lengths=torch.tensor([7, 4, 2]))
    assert feats.shape == (3, feature_layout(8).size)
    feats.pow(2).mean().backward()
    assert encoder.weight.grad is not None
    assert torch.isfinite(encoder.weight.grad).all() and encoder.weight.grad.abs().sum() > 0
    assert encoder.bias.grad.abs().sum() > 0


def test_extract_all_accepts_numpy_timestamps_and_single_trajectories():
    rng = np.random.default_rng(2)
    E = rng.normal(size=(5, 4))
    t = np.cumsum(rng.exponential(1.0, size=5))
    f = TorchBackend.extract_all(torch.tensor(E), t)
    assert f.shape == (feature_layout(4).size,)
    np.testing.assert_allclose(f.numpy(), A.extract_all(E, t), rtol=1e-10, atol=1e-12)
    with pytest.raises(TypeError, match="numeric days"):
        TorchBackend.extract_all(torch.tensor(E), np.array(["2020-01-01"] * 5))


def test_soft_topk_converges_to_exact_topk_and_passes_gradients():
    scores = torch.tensor([0.1, 2.0, 0.5, 1.9, -1.0], dtype=torch.float64, requires_grad=True)
    soft = TB.soft_topk(scores, 2, 1e-3, hard=False)
    torch.testing.assert_close(soft, torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0], dtype=torch.float64), atol=1e-6, rtol=0)
    hard = TB.soft_topk(scores, 2, 0.5, hard=True)
    assert hard.detach().tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]
    (hard * torch.arange(5.0, dtype=torch.float64)).sum().backward()
    assert torch.isfinite(scores.grad).all() and scores.grad.abs().sum() > 0
    g = torch.Generator().manual_seed(0)
    noisy = TB.soft_topk(scores.detach(), 2, 0.5, hard=True, gumbel=True, generator=g)
    assert noisy.sum().item() == pytest.approx(2.0)


def test_relaxations_converge_on_the_torch_path_too():
    rng = np.random.default_rng(4)
    E = rng.normal(size=(20, 5))
    t = np.cumsum(rng.choice([0.5, 3.0, 12.0], size=20))
    cfg = TemporalFeaturesConfig(temperature=1e-4, silence_temperature=1e-3)
    exact = A.discrete_summary(E, t, cfg)
    f = TB.extract_all(torch.tensor(E), torch.tensor(t), cfg)
    lay = feature_layout(5, cfg)
    assert f[lay.slice("cp_count")].item() == pytest.approx(exact.n_change_points, abs=1e-6)
    assert f[lay.slice("max_severity")].item() == pytest.approx(exact.max_severity, abs=1e-3)
    assert f[lay.slice("silence_count")].item() == pytest.approx(exact.n_silences, abs=1e-6)


# --- CUDA ------------------------------------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu_in_float64_with_padding_and_gradients():
    rng = np.random.default_rng(8)
    items = [(rng.normal(size=(L, 16)), np.cumsum(rng.exponential(2.0, size=L))) for L in (30, 1, 2, 17)]
    Eb, tb, ln = pad_batch(items, 16, fill=0.0)
    cpu_E = Eb.clone().requires_grad_(True)
    gpu_E = Eb.cuda().requires_grad_(True)
    f_cpu = TB.extract_all(cpu_E, tb, lengths=ln)
    f_gpu = TB.extract_all(gpu_E, tb.cuda(), lengths=ln.cuda())
    torch.testing.assert_close(f_gpu.cpu(), f_cpu, rtol=1e-10, atol=1e-10)
    f_cpu.sum().backward()
    f_gpu.sum().backward()
    torch.testing.assert_close(gpu_E.grad.cpu(), cpu_E.grad, rtol=1e-9, atol=1e-9)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_float32_matches_cpu_float32():
    rng = np.random.default_rng(9)
    E = torch.tensor(rng.normal(size=(4, 50, 64)), dtype=torch.float32)
    t = torch.tensor(np.cumsum(rng.exponential(1.0, size=(4, 50)), axis=1))
    torch.testing.assert_close(TB.extract_all(E.cuda(), t.cuda()).cpu(), TB.extract_all(E, t), rtol=1e-4, atol=1e-4)


def test_low_precision_timestamps_are_used_as_float64_with_a_warning():
    import warnings as _w

    E = torch.randn(5, 3, dtype=torch.float64)
    t64 = torch.tensor([0.0, 0.5, 1.25, 3.0, 10.0], dtype=torch.float64)
    with pytest.warns(UserWarning, match="float64"):
        x32 = TorchBackend.extract_all(E, t64.to(torch.float32))
    with _w.catch_warnings():
        _w.simplefilter("error")  # float64 timestamps: no warning
        x64 = TorchBackend.extract_all(E, t64)
    torch.testing.assert_close(x32, x64)  # these times are exact in float32


def test_gumbel_top_k_is_reproducible_with_a_generator_and_keeps_k_dimensions():
    scores = torch.tensor([3.0, 0.1, 2.0, 0.2, 1.0], dtype=torch.float64, requires_grad=True)
    masks = [
        TB.soft_topk(scores, 2, 0.5, gumbel=True, generator=torch.Generator().manual_seed(3))
        for _ in range(2)
    ]
    torch.testing.assert_close(masks[0], masks[1])
    assert masks[0].detach().sum().item() == pytest.approx(2.0)  # hard: exactly k ones
    masks[0].sum().backward()
    assert torch.isfinite(scores.grad).all()
