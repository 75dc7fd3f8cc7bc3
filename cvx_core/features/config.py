"""Every constant of the feature contract (SPEC.md), in one validated, frozen config.

Both feature paths (analytic NumPy and differentiable PyTorch) read their constants from
here and nowhere else.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["TemporalFeaturesConfig"]


@dataclass(frozen=True)
class TemporalFeaturesConfig:
    """Constants of the temporal features (SPEC.md). All times are in days.

    Attributes:
        min_dt: floor on a time step, ``dt_i = max(t_{i+1} - t_i, min_dt)`` (one minute).
        burst_window: if set, posts are first averaged in bins of this width (days).
        cp_threshold: cosine distance above which a step counts as a change point.
        temperature: temperature of the soft change-point count and the smooth max.
        silence_gap: a gap longer than this (days) is a silence.
        silence_temperature: temperature (days) of the soft silence count.
        scales: resampling bin widths (days) of the multi-scale features; ``S = len(scales)``.
        ema_tau: time constant (days) of the exponential moving average op.
        pareto_fraction: share of total drift the attribution set must reach.
    """

    min_dt: float = 1.0 / 1440.0
    burst_window: float | None = None
    cp_threshold: float = 0.3
    temperature: float = 0.05
    silence_gap: float = 7.0
    silence_temperature: float = 1.0
    scales: tuple[float, ...] = field(default=(1.0, 7.0, 30.0))
    ema_tau: float = 7.0
    pareto_fraction: float = 0.8

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))

        def positive(name: str, value: float) -> None:
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"TemporalFeaturesConfig.{name} must be a finite number > 0, got {value!r}")

        for name in ("min_dt", "temperature", "silence_gap", "silence_temperature", "ema_tau"):
            positive(name, getattr(self, name))
        if self.burst_window is not None:
            positive("burst_window", self.burst_window)
        if not (isinstance(self.cp_threshold, (int, float)) and math.isfinite(self.cp_threshold)):
            raise ValueError(f"TemporalFeaturesConfig.cp_threshold must be finite, got {self.cp_threshold!r}")
        if len(self.scales) == 0:
            raise ValueError("TemporalFeaturesConfig.scales must name at least one scale (days)")
        for s in self.scales:
            positive("scales[...]", s)
        if not (0.0 < self.pareto_fraction <= 1.0):
            raise ValueError(
                f"TemporalFeaturesConfig.pareto_fraction must be in (0, 1], got {self.pareto_fraction!r}"
            )

    @property
    def n_scales(self) -> int:
        return len(self.scales)

    def feature_dim(self, dim: int) -> int:
        """Length of the feature vector for embedding dimension ``dim``: ``4*D + 5 + 2*S``."""
        return 4 * dim + 5 + 2 * self.n_scales

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["scales"] = list(self.scales)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TemporalFeaturesConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TemporalFeaturesConfig fields: {sorted(unknown)}")
        return cls(**d)
