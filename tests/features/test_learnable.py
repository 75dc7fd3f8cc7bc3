"""Tests of cvx_core.features.learnable: initial values (alpha = beta = 1, temperature from config),
equality with the analytic path at initialisation, gradcheck with the learnable parts, and
that learning actually moves the parameters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cvx_core.features.analytic import AnalyticBackend, feature_layout
from cvx_core.features.config import TemporalFeaturesConfig
from cvx_core.features.differentiable import TorchBackend
from cvx_core.features.learnable import (
    DimensionAttention,
    MultiScaleAggregator,
    SoftChangePointDetector,
    LearnableFeatures,
)


def padded(rng, lengths, D):
    Tm = max(lengths)
    E = np.zeros((len(lengths), Tm, D))
    t = np.zeros((len(lengths), Tm))
    items = []
    for i, L in enumerate(lengths):
        e = rng.normal(size=(L, D))
        tt = np.cumsum(rng.choice([0.0, 0.4, 2.0, 9.0], size=L))
        E[i, :L], t[i, :L], t[i, L:] = e, tt, tt[-1]
        items.append((e, tt))
    return torch.tensor(E), torch.tensor(t), torch.tensor(lengths, dtype=torch.int64), items


def test_dimension_attention_starts_at_ones_and_sums_to_d():
    att = DimensionAttention(7)
    assert torch.equal(att.w.detach(), torch.zeros(7))
    torch.testing.assert_close(att.alpha(), torch.ones(7))
    with torch.no_grad():
        att.w.normal_()
    assert att.alpha().sum().item() == pytest.approx(7.0, rel=1e-6)
    x = torch.randn(2, 7)
    torch.testing.assert_close(att(x), x * att.alpha())


def test_multiscale_aggregator_starts_at_ones_and_sums_to_s():
    agg = MultiScaleAggregator(3)
    torch.testing.assert_close(agg.beta(), torch.ones(3))
    with torch.no_grad():
        agg.b.copy_(torch.tensor([0.3, -1.0, 2.0]))
    assert agg.beta().sum().item() == pytest.approx(3.0, rel=1e-6)


def test_soft_changepoint_detector_temperature_is_learnable_and_starts_at_config():
    det = SoftChangePointDetector(TemporalFeaturesConfig(temperature=0.2))
    assert det.temperature.item() == pytest.approx(0.2, rel=1e-7)
    assert det.temperature_as(torch.float64).item() == 0.2  # exact at initialisation
    assert det.log_temperature.item() == pytest.approx(math.log(0.2), rel=1e-6)
    c = torch.tensor([0.0, 0.3, 0.9])
    torch.testing.assert_close(det(c), torch.sigmoid((c - 0.3) / 0.2))
    det(c).sum().backward()
    assert det.log_temperature.grad is not None and det.log_temperature.grad.abs() > 0
    with torch.no_grad():
        det.log_temperature.add_(1.0)
    assert det.temperature.item() == pytest.approx(0.2 * math.e, rel=1e-5)


def test_modules_reject_bad_sizes():
    with pytest.raises(ValueError, match="dim"):
        DimensionAttention(0)
    with pytest.raises(ValueError, match="n_scales"):
        MultiScaleAggregator(0)
    with pytest.raises(ValueError, match="temperature"):
        SoftChangePointDetector(TemporalFeaturesConfig(temperature=-1.0))
    ext = LearnableFeatures(4)
    with pytest.raises(ValueError, match="dimension 4"):
        ext(torch.zeros(1, 3, 5), torch.zeros(1, 3), torch.tensor([3]))


def test_extractor_exposes_parts_layout_and_out_dim():
    cfg = TemporalFeaturesConfig(scales=(1.0, 7.0))
    ext = LearnableFeatures(768, cfg)
    assert isinstance(ext.attention, DimensionAttention)
    assert isinstance(ext.aggregator, MultiScaleAggregator)
    assert isinstance(ext.cp_detector, SoftChangePointDetector)
    assert ext.out_dim == 4 * 768 + 5 + 4 == ext.layout.size
    assert LearnableFeatures(768).out_dim == 3083
    names = {n for n, _ in ext.named_parameters()}
    assert names == {"attention.w", "aggregator.b", "cp_detector.log_temperature"}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_extractor_at_initialisation_equals_the_analytic_path(dtype):
    rng = np.random.default_rng(0)
    cfg = TemporalFeaturesConfig(scales=(0.5, 3.0, 30.0))
    E, t, ln, items = padded(rng, [6, 1, 2, 11], 5)
    ext = LearnableFeatures(5, cfg)
    out = ext(E.to(dtype), t, ln).detach().double().numpy()
    assert out.shape == (4, ext.out_dim)
    for i, (e, tt) in enumerate(items):
        ref = AnalyticBackend.extract_all(e, tt, cfg)
        if dtype == torch.float64:
            np.testing.assert_allclose(out[i], ref, rtol=1e-10, atol=1e-9)
        else:
            # min_dt-floored gaps (equal stamps) are excluded from float32 claims in SPEC;
            # only check rows without them
            if (np.diff(tt) > 0).all():
                np.testing.assert_allclose(out[i], ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_gradcheck_through_learnable_parameters_float64():
    rng = np.random.default_rng(1)
    cfg = TemporalFeaturesConfig(temperature=0.4, scales=(0.5, 3.0))
    E, t, ln, _ = padded(rng, [5, 2, 4], 3)
    E = (E + 0.3).requires_grad_(True)
    ext = LearnableFeatures(3, cfg).double()
    with torch.no_grad():
        ext.attention.w.copy_(torch.tensor([0.2, -0.4, 0.1]))
        ext.aggregator.b.copy_(torch.tensor([0.5, -0.2]))
        ext.cp_detector.log_temperature.add_(0.3)
    params = {n: p.detach().clone().requires_grad_(True) for n, p in ext.named_parameters()}
    keys = list(params)

    def fn(E_, *ps):
        return torch.func.functional_call(ext, dict(zip(keys, ps)), (E_, t, ln))

    assert torch.autograd.gradcheck(fn, (E, *params.values()), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_a_few_optimiser_steps_move_every_parameter_and_reduce_the_loss():
    torch.manual_seed(0)
    rng = np.random.default_rng(2)
    E, t, ln, _ = padded(rng, [8, 5, 12, 3, 9, 6], 4)
    E = E.float()
    ext = LearnableFeatures(4, TemporalFeaturesConfig(temperature=0.3))
    head = torch.nn.Linear(ext.out_dim, 1)
    y = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    opt = torch.optim.Adam(list(ext.parameters()) + list(head.parameters()), lr=0.05)
    before = {n: p.detach().clone() for n, p in ext.named_parameters()}
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(ext(E, t, ln)).squeeze(1), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    for n, p in ext.named_parameters():
        assert not torch.equal(p.detach(), before[n]), n
        assert torch.isfinite(p).all()


def test_extractor_matches_torch_backend_with_the_same_weights():
    rng = np.random.default_rng(3)
    E, t, ln, _ = padded(rng, [4, 7], 3)
    ext = LearnableFeatures(3).double()
    with torch.no_grad():
        ext.attention.w.normal_()
        ext.aggregator.b.normal_()
    ref = TorchBackend.extract_all(
        E, t, ext.config, lengths=ln, alpha=ext.attention.alpha(), beta=ext.aggregator.beta(),
        temperature=ext.cp_detector.temperature,
    )
    torch.testing.assert_close(ext(E, t, ln), ref)
    lay = feature_layout(3)
    drift = (E[torch.arange(2), ln - 1] - E[:, 0]) * ext.attention.alpha()
    torch.testing.assert_close(ext(E, t, ln)[:, lay.slice("attended_drift")], drift)


@pytest.mark.cuda
def test_cuda_gradients_of_learnable_parts_match_cpu_in_float64():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    rng = np.random.default_rng(5)
    E, t, ln, _ = padded(rng, [7, 3, 12], 6)
    cfg = TemporalFeaturesConfig(scales=(0.5, 2.0))
    grads = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        ext = LearnableFeatures(6, cfg).double()
        with torch.no_grad():  # move the learnable parts away from their initial values
            ext.attention.w.copy_(torch.linspace(-0.5, 0.5, 6, dtype=torch.float64))
            ext.aggregator.b.copy_(torch.tensor([0.3, -0.2], dtype=torch.float64))
            ext.cp_detector.log_temperature.add_(0.4)
        ext = ext.to(device)
        x = E.to(device=device, dtype=torch.float64).requires_grad_(True)
        out = ext(x, t.to(device), ln.to(device))
        (out * torch.arange(out.shape[1], device=device, dtype=out.dtype).sin()).sum().backward()
        grads[device] = [p.grad.detach().cpu() for p in (ext.attention.w, ext.aggregator.b,
                                                          ext.cp_detector.log_temperature)] + [x.grad.cpu()]
    for g_cpu, g_cuda in zip(grads["cpu"], grads["cuda"]):
        torch.testing.assert_close(g_cuda, g_cpu, rtol=1e-9, atol=1e-12)
