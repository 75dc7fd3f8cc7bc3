"""Learnable nn.Modules of the differentiable path (SPEC.md, "Learnable components").

- :class:`DimensionAttention`: ``alpha = D * softmax(w)``, ``w`` initialised to 0 (all ones).
- :class:`MultiScaleAggregator`: ``beta = S * softmax(b)``, ``b`` initialised to 0 (all ones).
- :class:`SoftChangePointDetector`: learnable temperature ``exp(log_temperature)``,
  initialised from ``config.temperature``.
- :class:`LearnableFeatures`: the feature vector with the three above; at initialisation it
  equals the analytic path. (``TemporalFeatureExtractor`` is its old name, deprecated.)

Shapes: ``values [B, T, D]``, ``timestamps [B, T]`` float64 days, ``lengths [B]`` int64 ->
``[B, 4*D + 5 + 2*S]``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from cvx_core.data.deprecation import deprecated_names
from cvx_core.features.config import TemporalFeaturesConfig
from cvx_core.features.analytic import FeatureLayout, feature_layout, resolve_config
from cvx_core.features.differentiable import TorchBackend

__all__ = [
    "DimensionAttention",
    "MultiScaleAggregator",
    "SoftChangePointDetector",
    "LearnableFeatures",
]


class DimensionAttention(nn.Module):
    """Per-dimension weights ``alpha = D * softmax(w)`` (sum to ``D``; all ones at init)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"DimensionAttention needs dim >= 1, got {dim!r}")
        self.dim = dim
        self.w = nn.Parameter(torch.zeros(dim))

    def alpha(self, dtype: torch.dtype | None = None) -> Tensor:
        """``[D]`` attention weights (computed in ``dtype``, default the parameter's)."""
        w = self.w if dtype is None else self.w.to(dtype)
        return self.dim * torch.softmax(w, dim=0)

    def forward(self, drift: Tensor) -> Tensor:
        """``alpha * drift`` for ``drift [..., D]``."""
        return drift * self.alpha(drift.dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class MultiScaleAggregator(nn.Module):
    """Per-scale weights ``beta = S * softmax(b)`` (sum to ``S``; all ones at init)."""

    def __init__(self, n_scales: int) -> None:
        super().__init__()
        if not isinstance(n_scales, int) or n_scales < 1:
            raise ValueError(f"MultiScaleAggregator needs n_scales >= 1, got {n_scales!r}")
        self.n_scales = n_scales
        self.b = nn.Parameter(torch.zeros(n_scales))

    def beta(self, dtype: torch.dtype | None = None) -> Tensor:
        """``[S]`` scale weights (computed in ``dtype``, default the parameter's)."""
        b = self.b if dtype is None else self.b.to(dtype)
        return self.n_scales * torch.softmax(b, dim=0)

    def forward(self, scale_features: Tensor) -> Tensor:
        """Weight ``scale_features [..., S, 2]`` (step norm, cosine per scale) by ``beta``."""
        return scale_features * self.beta(scale_features.dtype)[:, None]

    def extra_repr(self) -> str:
        return f"n_scales={self.n_scales}"


class SoftChangePointDetector(nn.Module):
    """Learnable change-point temperature ``exp(log_temperature)`` (init ``config.temperature``).

    Computed as ``config.temperature * exp(log_temperature - log_temperature_init)``, which
    is ``exp(log_temperature)`` up to the rounding of the stored initial value and *exactly*
    ``config.temperature`` at initialisation in every dtype (so the torch path equals the
    analytic path to float64 precision at init). The gradient with respect to
    ``log_temperature`` is ``temperature``, as for ``exp``.
    """

    def __init__(self, config: TemporalFeaturesConfig | None = None) -> None:
        super().__init__()
        self.config = resolve_config(config)
        init = torch.tensor(math.log(self.config.temperature))
        self.log_temperature = nn.Parameter(init.clone())
        self.register_buffer("log_temperature_init", init.clone())

    def temperature_as(self, dtype: torch.dtype | None = None) -> Tensor:
        """0-d temperature tensor computed in ``dtype`` (default the parameter's)."""
        delta = self.log_temperature - self.log_temperature_init
        if dtype is not None:
            delta = delta.to(dtype)
        return self.config.temperature * torch.exp(delta)

    @property
    def temperature(self) -> Tensor:
        """0-d tensor, ``exp(log_temperature)`` (see the class docstring)."""
        return self.temperature_as()

    def forward(self, cosine_distances: Tensor) -> Tensor:
        """Per-step soft change indicator ``sigmoid((c - cp_threshold) / temperature)`` (same shape)."""
        temp = self.temperature_as(cosine_distances.dtype)
        return torch.sigmoid((cosine_distances - self.config.cp_threshold) / temp)

    def extra_repr(self) -> str:
        return f"cp_threshold={self.config.cp_threshold}, init_temperature={self.config.temperature}"


class LearnableFeatures(nn.Module):
    """The ``4*D + 5 + 2*S`` feature vector with learnable attention, scale weights and
    change-point temperature. At initialisation it equals :class:`AnalyticBackend`.

    Attributes:
        attention: :class:`DimensionAttention` (``alpha`` on the drift block).
        aggregator: :class:`MultiScaleAggregator` (``beta`` on the scale features).
        cp_detector: :class:`SoftChangePointDetector` (temperature of the soft count and
            smooth max).
        out_dim: ``F = 4*D + 5 + 2*S``.
        layout: the :class:`FeatureLayout` of the output.
    """

    def __init__(self, dim: int, config: TemporalFeaturesConfig | None = None) -> None:
        super().__init__()
        self.config = resolve_config(config)
        self.dim = int(dim)
        self.attention = DimensionAttention(self.dim)
        self.aggregator = MultiScaleAggregator(self.config.n_scales)
        self.cp_detector = SoftChangePointDetector(self.config)
        self.layout: FeatureLayout = feature_layout(self.dim, self.config)
        # the optional latent ODE block (SPEC "Optional learned blocks"): appended last
        self.ode = None
        if self.config.ode_latent_dim > 0:
            from cvx_core.features.ode import ODERNNEncoder, ode_config_from

            self.ode = ODERNNEncoder(self.dim, ode_config_from(self.config))
        self.out_dim = self.layout.size + int(self.config.ode_latent_dim)

    @property
    def names(self) -> list[str]:
        """One name per output entry: SPEC's names, then ``ode_0 …`` when the ODE block is on."""
        return list(self.layout.names) + [f"ode_{i}" for i in range(int(self.config.ode_latent_dim))]

    def forward(self, values: Tensor, timestamps: Any, lengths: Any = None) -> Tensor:
        """``values [B, T, D]`` (or ``[T, D]``), ``timestamps [B, T]`` float64 days,
        ``lengths [B]`` int64 -> ``[B, F]`` (or ``[F]``), in ``values``' dtype."""
        if values.shape[-1] != self.dim:
            raise ValueError(f"expected embeddings of dimension {self.dim}, got {values.shape[-1]}")
        feats = TorchBackend.extract_all(
            values,
            timestamps,
            self.config,
            lengths=lengths,
            alpha=self.attention.alpha(values.dtype),
            beta=self.aggregator.beta(values.dtype),
            temperature=self.cp_detector.temperature_as(values.dtype),
        )
        if self.ode is None:
            return feats
        stamps = torch.as_tensor(timestamps, dtype=torch.float64, device=values.device)
        state = self.ode(values, stamps, lengths).to(feats.dtype)
        return torch.cat([feats, state], dim=-1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, out_dim={self.out_dim}, scales={self.config.scales}"


# the old name of LearnableFeatures (a near-twin of TemporalFeaturesConfig and extract_features)
__getattr__ = deprecated_names(__name__, {"TemporalFeatureExtractor": ("LearnableFeatures", lambda: LearnableFeatures)})
