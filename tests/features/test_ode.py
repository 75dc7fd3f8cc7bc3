"""The latent ODE block: adjoint gradients equal direct backprop (float64), the state does
not depend on padding or on the rest of the batch, T = 1 and equal timestamps are handled,
gaps are read in the configured time unit."""

from __future__ import annotations

import pytest
import torch

from cvx_core.features.ode import ODEConfig, ODERNNEncoder


def _batch(seed: int = 0, b: int = 3, t: int = 6, d: int = 5):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(b, t, d, generator=g, dtype=torch.float64)
    ts = torch.cumsum(torch.rand(b, t, generator=g, dtype=torch.float64) * 10, dim=1)
    ts = ts - ts[:, :1]
    return v, ts


def _pair(adjoint_first: bool, **kw):
    torch.manual_seed(0)
    a = ODERNNEncoder(5, ODEConfig(latent_dim=4, input_dim=3, adjoint=adjoint_first, steps=8, **kw)).double()
    b = ODERNNEncoder(5, ODEConfig(latent_dim=4, input_dim=3, adjoint=not adjoint_first, steps=8, **kw)).double()
    b.load_state_dict(a.state_dict())
    return a, b


def test_adjoint_gradients_equal_direct_backprop_in_float64():
    v, ts = _batch()
    lengths = torch.tensor([6, 3, 1])
    adj, direct = _pair(True)
    grads = []
    for enc in (adj, direct):
        vv = v.clone().requires_grad_(True)
        loss = (enc(vv, ts, lengths) ** 2).sum()
        grads.append(torch.autograd.grad(loss, [vv, *enc.parameters()]))
    for ga, gd in zip(*grads):
        scale = gd.abs().max().item() + 1e-12
        assert (ga - gd).abs().max().item() / scale < 1e-8  # fixed-step rk4 both ways: measured ~1e-10


def test_state_does_not_depend_on_padding_or_batch_neighbours():
    v, ts = _batch(1)
    enc = ODERNNEncoder(5, ODEConfig(latent_dim=4, input_dim=None)).double()
    lengths = torch.tensor([6, 4, 2])
    together = enc(v, ts, lengths)
    for i, n in enumerate(lengths.tolist()):
        alone = enc(v[i : i + 1, :n], ts[i : i + 1, :n], torch.tensor([n]))
        assert torch.allclose(together[i], alone[0], atol=1e-12, rtol=0)
    padded = torch.cat([v, torch.randn(3, 4, 5, dtype=torch.float64) * 100], dim=1)
    padded_ts = torch.cat([ts, ts[:, -1:] + torch.arange(1, 5, dtype=torch.float64)], dim=1)
    assert torch.allclose(enc(padded, padded_ts, lengths), together, atol=1e-12, rtol=0)


def test_single_post_and_equal_timestamps_give_finite_states_and_gradients():
    enc = ODERNNEncoder(4, ODEConfig(latent_dim=3, input_dim=2))
    one = torch.randn(1, 1, 4, requires_grad=True)
    h = enc(one, torch.zeros(1, 1, dtype=torch.float64), torch.tensor([1]))
    h.sum().backward()
    assert torch.isfinite(h).all() and torch.isfinite(one.grad).all()
    same = torch.randn(1, 5, 4, requires_grad=True)
    h2 = enc(same, torch.zeros(1, 5, dtype=torch.float64), torch.tensor([5]))
    h2.sum().backward()
    assert torch.isfinite(h2).all() and torch.isfinite(same.grad).all()


def test_gaps_are_read_in_the_configured_time_unit():
    """The same durations give the same state whatever unit they are stated in."""
    torch.manual_seed(3)
    days = ODERNNEncoder(4, ODEConfig(latent_dim=3, input_dim=None, time_unit="days", time_scale=1.0)).double()
    hours = ODERNNEncoder(4, ODEConfig(latent_dim=3, input_dim=None, time_unit="hours", time_scale=24.0)).double()
    hours.load_state_dict(days.state_dict())
    v = torch.randn(2, 4, 4, dtype=torch.float64)
    ts = torch.tensor([[0.0, 0.5, 2.0, 9.0], [0.0, 1.0, 1.0, 30.0]], dtype=torch.float64)
    assert torch.allclose(days(v, ts), hours(v, ts), atol=1e-12)
    seconds = ODERNNEncoder(4, ODEConfig(latent_dim=3, input_dim=None, time_unit="seconds", time_scale=1.0)).double()
    seconds.load_state_dict(days.state_dict())
    assert not torch.allclose(days(v, ts), seconds(v, ts), atol=1e-6)


def test_a_long_silence_moves_the_state_boundedly():
    """Bounded dynamics: a 10-year gap moves the state by at most |W2| * gap / time_scale."""
    enc = ODERNNEncoder(3, ODEConfig(latent_dim=4, input_dim=None, time_scale=7.0)).double()
    h0 = torch.randn(2, 4, dtype=torch.float64)
    gap = torch.tensor([3650.0, 0.0], dtype=torch.float64)
    h1 = enc.evolve(h0, gap)
    w2 = enc.func.net[2].weight
    bound = torch.linalg.matrix_norm(w2, ord=2).item() * (3650.0 / 7.0) * 2**0.5  # |tanh| <= 1 per unit
    assert torch.isfinite(h1).all()
    assert (h1[0] - h0[0]).norm().item() <= bound * 4**0.5
    assert torch.equal(h1[1], h0[1])  # no gap, no motion


@pytest.mark.parametrize("bad", [{"latent_dim": 0}, {"time_unit": "fortnights"}, {"method": "dopri5"}, {"time_scale": 0.0}])
def test_invalid_ode_settings_are_refused(bad):
    with pytest.raises(ValueError):
        ODEConfig(**bad)


def test_feature_extractor_appends_the_ode_block_after_the_spec_vector():
    """SPEC: 4D+5+2S features, then ode_latent_dim more; the first part still equals the
    analytic path, and the loss reaches the ODE's parameters."""
    import numpy as np

    from cvx_core.features.analytic import AnalyticBackend
    from cvx_core.features.config import TemporalFeaturesConfig
    from cvx_core.features.learnable import LearnableFeatures

    cfg = TemporalFeaturesConfig(ode_latent_dim=3, ode_input_dim=4)
    ext = LearnableFeatures(6, cfg).double()
    v, ts = _batch(2, b=2, t=7, d=6)
    lengths = torch.tensor([7, 4])
    out = ext(v, ts, lengths)
    base = cfg.feature_dim(6)
    assert out.shape == (2, base + 3) and ext.out_dim == base + 3
    assert ext.names[-3:] == ["ode_0", "ode_1", "ode_2"] and len(ext.names) == base + 3
    ref = AnalyticBackend.extract_all(v[1, :4].numpy(), ts[1, :4].numpy(), cfg)
    assert np.allclose(out[1, :base].detach().numpy(), ref, rtol=1e-10, atol=1e-12)
    out[:, base:].pow(2).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in ext.ode.parameters())
    assert LearnableFeatures(6, TemporalFeaturesConfig()).ode is None


@pytest.mark.slow
def test_classifier_with_the_ode_block_trains_saves_and_reloads_identically(tmp_path):
    import numpy as np

    from cvx_core.data.synthetic import rotating_trajectories
    from cvx_core.data.trajectory import Trajectory, TrajectorySet
    from cvx_core.features.config import TemporalFeaturesConfig
    from cvx_core.learn.config import TrainConfig
    from cvx_core.learn.model import predict_proba
    from cvx_core.learn.runs import load_run
    from cvx_core.learn.trainer import train

    rot = rotating_trajectories(40, dim=8, n_posts=(5, 8), seed=4)
    trajs = [Trajectory(user_id=t.user_id, embeddings=t.embeddings, datetimes=t.datetimes, label=i % 2)
             for i, t in enumerate(rot)]
    ts = TrajectorySet(trajs, name="rot")
    cfg = TrainConfig(epochs=2, head="mlp", features=TemporalFeaturesConfig(ode_latent_dim=4, ode_input_dim=4), seed=0)
    res = train(ts, cfg, run_dir=tmp_path / "run")
    run = load_run(tmp_path / "run")
    assert run.config.features.ode_latent_dim == 4
    a = predict_proba(res.model, ts)
    b = predict_proba(run.model, ts)
    assert np.allclose(a, b, atol=1e-6)
