"""A latent continuous-time state over irregular posts: an ODE-RNN encoder (Rubanova et al.
2019, "Latent ODEs for irregularly-sampled time series"), learnable and torch-only.

Between two posts the hidden state ``h`` evolves under a learned ODE ``dh/dt = f(h)`` over
the real gap (in the config's time unit, divided by ``time_scale``); at a post it is updated
by a GRU cell from the post's (optionally projected) embedding. The final state is a
feature block (``ode_latent_dim`` numbers appended after the SPEC vector) and the starting
point of the forecaster (:mod:`cvx_core.learn.forecast`).

Batching. Every trajectory of a padded batch integrates its own gap: the ODE is solved on a
shared unit interval ``s in [0, 1]`` with the dynamics multiplied by each row's gap,
``dh/ds = dt_b * f(h)``, using a fixed-step solver (``rk4`` by default, ``steps`` steps per
gap). With fixed steps, each row's arithmetic is independent of the other rows, so features
do not depend on the batch or on padding: padded positions have ``dt = 0`` (the ODE leaves
``h`` exactly unchanged) and their GRU update is masked out. An adaptive solver would share
its step sizes across the batch and break that invariance, which is why it is not the
default.

Gradients. ``adjoint=True`` uses ``torchdiffeq.odeint_adjoint`` (Chen et al. 2018): memory
independent of the number of solver steps, at the price of a second, backward-in-time
solve. ``adjoint=False`` backpropagates through the solver's operations directly. Both give
the same gradients up to the solver's discretisation (tested in float64).

The dynamics ``f(h) = W2 tanh(W1 h + b1)`` are bounded, so a long silence moves the state
by at most ``|W2| * gap / time_scale``: no blow-up on a corpus with yearly gaps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from cvx_core.features.config import TIME_UNITS, TemporalFeaturesConfig

__all__ = ["ODEConfig", "ODEFunc", "ODERNNEncoder", "ode_config_from"]

@dataclass(frozen=True)
class ODEConfig:
    """Settings of the latent ODE block.

    Attributes:
        latent_dim: size ``H`` of the hidden state (and of the appended feature block).
        input_dim: the embedding ``D`` is first projected to this size (``None``: no
            projection; keeps the block cheap at D = 768).
        hidden: width of the dynamics MLP.
        time_unit: the unit gaps are measured in (``seconds`` … ``weeks``).
        time_scale: gaps are divided by this (in ``time_unit``) before integration.
        steps: fixed solver steps per gap.
        method: a fixed-step torchdiffeq method (``rk4``, ``midpoint``, ``euler``).
        adjoint: adjoint-method gradients (``odeint_adjoint``) instead of direct backprop.
    """

    latent_dim: int = 16
    input_dim: int | None = 32
    hidden: int = 32
    time_unit: str = "days"
    time_scale: float = 7.0
    steps: int = 4
    method: str = "rk4"
    adjoint: bool = True

    def __post_init__(self) -> None:
        if int(self.latent_dim) < 1:
            raise ValueError(f"ODEConfig.latent_dim must be >= 1, got {self.latent_dim!r}")
        if self.input_dim is not None and int(self.input_dim) < 1:
            raise ValueError(f"ODEConfig.input_dim must be >= 1 or None, got {self.input_dim!r}")
        if self.time_unit not in TIME_UNITS:
            raise ValueError(f"ODEConfig.time_unit must be one of {sorted(TIME_UNITS)}, got {self.time_unit!r}")
        if not (math.isfinite(self.time_scale) and self.time_scale > 0):
            raise ValueError(f"ODEConfig.time_scale must be > 0, got {self.time_scale!r}")
        if int(self.steps) < 1:
            raise ValueError(f"ODEConfig.steps must be >= 1, got {self.steps!r}")
        if self.method not in ("rk4", "midpoint", "euler", "explicit_adams"):
            raise ValueError(f"ODEConfig.method must be a fixed-step method, got {self.method!r}")

    def days_to_units(self) -> float:
        """Factor turning a gap in days into a gap in ``time_scale`` units of ``time_unit``."""
        return 1.0 / TIME_UNITS[self.time_unit] / self.time_scale


def ode_config_from(features: TemporalFeaturesConfig) -> ODEConfig:
    """The ODE block's settings held by a :class:`TemporalFeaturesConfig` (``ode_*`` fields)."""
    return ODEConfig(
        latent_dim=max(int(features.ode_latent_dim), 1),
        input_dim=features.ode_input_dim,
        time_unit=features.time_unit,
        time_scale=float(features.ode_time_scale),
        steps=int(features.ode_steps),
        adjoint=bool(features.ode_adjoint),
    )


class ODEFunc(nn.Module):
    """The learned dynamics ``f(h) = W2 tanh(W1 h + b1)`` (autonomous, bounded)."""

    def __init__(self, latent_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.Tanh(), nn.Linear(hidden, latent_dim, bias=False))
        nn.init.normal_(self.net[2].weight, std=0.1 / math.sqrt(hidden))

    def forward(self, s: Tensor, h: Tensor) -> Tensor:  # noqa: ARG002 (autonomous ODE)
        return self.net(h)


class _OverGaps(nn.Module):
    """``dh/ds = gap_b * f(h)`` on ``s in [0, 1]``: one solve integrates every row over its own
    gap ``[B, 1]`` (a constant of this solve, kept for the adjoint's backward pass)."""

    def __init__(self, func: ODEFunc, gap: Tensor) -> None:
        super().__init__()
        self.func = func
        self.gap = gap

    def forward(self, s: Tensor, h: Tensor) -> Tensor:
        return self.gap * self.func(s, h)


class ODERNNEncoder(nn.Module):
    """ODE-RNN over padded, irregular trajectories.

    ``forward(values [B, T, D], timestamps [B, T] float64 days, lengths [B]) -> h [B, H]``,
    the state after each row's last real post. ``states(...)`` also returns the state after
    every post ``[B, T, H]``.
    """

    def __init__(self, dim: int, config: ODEConfig | None = None) -> None:
        super().__init__()
        self.config = config or ODEConfig()
        c = self.config
        self.dim = int(dim)
        self.proj = nn.Linear(self.dim, int(c.input_dim)) if c.input_dim is not None else None
        gru_in = (int(c.input_dim) if c.input_dim is not None else self.dim) + 1  # + log1p(gap)
        self.cell = nn.GRUCell(gru_in, int(c.latent_dim))
        self.func = ODEFunc(int(c.latent_dim), int(c.hidden))
        self.out_dim = int(c.latent_dim)

    def evolve(self, h: Tensor, gap_days: Tensor) -> Tensor:
        """Integrate ``h [B, H]`` over each row's gap ``[B]`` (days; 0 leaves the row unchanged)."""
        from torchdiffeq import odeint, odeint_adjoint

        c = self.config
        if not bool((gap_days != 0).any()):
            return h
        rhs = _OverGaps(self.func, (gap_days * c.days_to_units()).to(h.dtype).unsqueeze(1))
        grid = torch.linspace(0.0, 1.0, 2, dtype=h.dtype, device=h.device)
        opts = {"step_size": 1.0 / int(c.steps)}
        if c.adjoint and torch.is_grad_enabled():
            out = odeint_adjoint(
                rhs, h, grid, method=c.method, options=opts,
                adjoint_params=tuple(self.func.parameters()), adjoint_options=opts, adjoint_method=c.method,
            )
        else:
            out = odeint(rhs, h, grid, method=c.method, options=opts)
        return out[-1]

    def _inputs(self, values: Tensor) -> Tensor:
        return self.proj(values) if self.proj is not None else values

    def states(self, values: Tensor, timestamps: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``[B, T, H]``: the state right after each post (padding rows repeat the last state)."""
        squeeze = values.dim() == 2
        if squeeze:
            values, timestamps = values.unsqueeze(0), torch.as_tensor(timestamps).unsqueeze(0)
        b, t, _ = values.shape
        if values.shape[-1] != self.dim:
            raise ValueError(f"expected embeddings of dimension {self.dim}, got {values.shape[-1]}")
        dev, dt = values.device, values.dtype
        stamps = torch.as_tensor(timestamps, device=dev, dtype=torch.float64)
        n = torch.full((b,), t, dtype=torch.long, device=dev) if lengths is None else torch.as_tensor(lengths, device=dev).long()
        x = self._inputs(values)
        h = values.new_zeros((b, self.out_dim))
        out = []
        for i in range(t):
            live = (i < n)
            if i > 0:
                gap = (stamps[:, i] - stamps[:, i - 1]).clamp_min(0.0)
                gap = torch.where(live, gap, torch.zeros_like(gap))
                h = self.evolve(h, gap)
                log_gap = torch.log1p(gap * self.config.days_to_units()).to(dt)
            else:
                log_gap = values.new_zeros((b,))
            step_in = torch.cat([x[:, i], log_gap.unsqueeze(1)], dim=1)
            h_new = self.cell(step_in, h)
            h = torch.where(live.unsqueeze(1), h_new, h)
            out.append(h)
        res = torch.stack(out, dim=1)
        return res[0] if squeeze else res

    def forward(self, values: Tensor, timestamps: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``[B, H]`` (or ``[H]`` for one ``[T, D]`` trajectory): the state after the last post."""
        st = self.states(values, timestamps, lengths)
        return st[-1] if st.dim() == 2 else st[:, -1]

    def extra_repr(self) -> str:
        c = self.config
        return (f"dim={self.dim}, latent={c.latent_dim}, input={c.input_dim}, method={c.method}x{c.steps}, "
                f"adjoint={c.adjoint}, time_unit={c.time_unit}, time_scale={c.time_scale}")
