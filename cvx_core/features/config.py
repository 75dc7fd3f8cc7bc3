"""Every constant of the feature contract (SPEC.md), in one validated, frozen config.

Both feature paths (analytic NumPy and differentiable PyTorch) read their constants from
here and nowhere else.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["TemporalFeaturesConfig", "TIME_UNITS"]

#: length of one time unit in days (``time_unit`` -> days)
TIME_UNITS: dict[str, float] = {
    "seconds": 1.0 / 86400.0,
    "minutes": 1.0 / 1440.0,
    "hours": 1.0 / 24.0,
    "days": 1.0,
    "weeks": 7.0,
}
#: the defaults of the time constants, in days; with another ``time_unit`` a constant left
#: unset gets the same duration expressed in that unit
_DAY_DEFAULTS: dict[str, Any] = {
    "min_dt": 1.0 / 1440.0,
    "silence_gap": 7.0,
    "silence_temperature": 1.0,
    "scales": (1.0, 7.0, 30.0),
    "ema_tau": 7.0,
    "ode_time_scale": 7.0,
}


#: upper bounds of the config's sizes (a config file can ask for anything)
_MAX_SCALES = 256
_MAX_ODE_SIZE = 65_536
_MAX_ODE_STEPS = 10_000


@dataclass(frozen=True)
class TemporalFeaturesConfig:
    """Constants of the temporal features (SPEC.md). All times are in ``time_unit`` (days by default).

    Attributes:
        min_dt: floor on a time step, ``dt_i = max(t_{i+1} - t_i, min_dt)`` (one minute).
        burst_window: if set, posts are first averaged in bins of this width (days).
        cp_threshold: cosine distance above which a step counts as a change point.
        temperature: temperature of the soft change-point count and the smooth max.
        silence_gap: a gap longer than this (days) is a silence.
        silence_temperature: temperature (days) of the soft silence count.
        scales: resampling bin widths (days) of the multi-scale features; ``S = len(scales)``.
            ``"auto"``: chosen from the data's gaps between posts, with the silence threshold,
            ``min_dt``, ``ema_tau`` and (with ``time_unit="auto"``) the unit, by
            :func:`cvx_core.features.scales.resolve_features` before any feature is computed
            (the training default; see :meth:`auto`). Fixed scales behave as before.
        ema_tau: time constant (days) of the exponential moving average op.
        pareto_fraction: share of total drift the attribution set must reach.
        time_unit: "seconds", "minutes", "hours", "days" (default) or "weeks" ("auto" only
            with ``scales="auto"``): the unit of
            every timestamp difference (velocities are per unit) and of every time constant
            above. Time constants not given mean their default durations (one minute, 7 days,
            ...) expressed in this unit, so ``time_unit="seconds"`` alone changes the units,
            not the features; sensor-rate data sets ``min_dt`` and ``scales`` in seconds too.
            Timestamps reach the feature ops as days (the data layer's convention) and are
            converted by :meth:`to_unit`, the one conversion both paths use.
        ode_latent_dim: size of the optional latent ODE state appended after the scale
            features on the torch path (0, the default, leaves it out; SPEC "Optional learned
            blocks"). It is learned only: the analytic path never has it.
        ode_input_dim: the embedding is projected to this size before the ODE-RNN's GRU
            (``None``: no projection).
        ode_time_scale: gaps are divided by this (in ``time_unit``; default 7 days) before
            the ODE integrates over them.
        ode_steps: fixed RK4 steps per gap.
        ode_adjoint: adjoint-method gradients (memory flat in the solver steps).
    """

    min_dt: float = None  # type: ignore[assignment]  # default: one minute in time_unit
    burst_window: float | None = None
    cp_threshold: float = 0.3
    temperature: float = 0.05
    silence_gap: float = None  # type: ignore[assignment]  # default: 7 days in time_unit
    silence_temperature: float = None  # type: ignore[assignment]  # default: 1 day in time_unit
    scales: tuple[float, ...] | str = None  # type: ignore[assignment]  # default: 1, 7, 30 days in time_unit
    ema_tau: float = None  # type: ignore[assignment]  # default: 7 days in time_unit
    pareto_fraction: float = 0.8
    time_unit: str = "days"
    ode_latent_dim: int = 0
    ode_input_dim: int | None = 32
    ode_time_scale: float = None  # type: ignore[assignment]  # default: 7 days in time_unit
    ode_steps: int = 4
    ode_adjoint: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.scales, str) and self.scales == "auto":
            self._check_auto()
            return
        if self.time_unit not in TIME_UNITS:
            raise ValueError(
                f"TemporalFeaturesConfig.time_unit must be one of {', '.join(TIME_UNITS)}, got {self.time_unit!r}"
                + (" ('auto' goes with scales='auto')" if self.time_unit == "auto" else "")
            )
        if isinstance(self.scales, str):
            raise ValueError(f"TemporalFeaturesConfig.scales must be numbers or 'auto', got {self.scales!r}")
        per_day = 1.0 / TIME_UNITS[self.time_unit]
        for name, days in _DAY_DEFAULTS.items():
            if getattr(self, name) is None:
                value = tuple(v * per_day for v in days) if isinstance(days, tuple) else days * per_day
                object.__setattr__(self, name, value)
        if not isinstance(self.scales, Iterable) or isinstance(self.scales, Mapping) or any(
            isinstance(s, bool) or not isinstance(s, numbers.Real) for s in self.scales
        ):
            raise ValueError(f"TemporalFeaturesConfig.scales must be a list of numbers (days) or 'auto', got {self.scales!r}")
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))

        def positive(name: str, value: float) -> None:
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"TemporalFeaturesConfig.{name} must be a finite number > 0, got {value!r}")

        for name in ("min_dt", "temperature", "silence_gap", "silence_temperature", "ema_tau"):
            positive(name, getattr(self, name))
        if self.burst_window is not None:
            positive("burst_window", self.burst_window)
        if isinstance(self.cp_threshold, bool) or not (
            isinstance(self.cp_threshold, (int, float)) and math.isfinite(self.cp_threshold)
        ):
            raise ValueError(f"TemporalFeaturesConfig.cp_threshold must be finite, got {self.cp_threshold!r}")
        if not 1 <= len(self.scales) <= _MAX_SCALES:
            raise ValueError(f"TemporalFeaturesConfig.scales must name 1 to {_MAX_SCALES} scales (days), got {len(self.scales)}")
        for s in self.scales:
            positive("scales[...]", s)
        positive("ode_time_scale", self.ode_time_scale)
        if not isinstance(self.ode_adjoint, bool):
            raise ValueError(f"TemporalFeaturesConfig.ode_adjoint must be true or false, got {self.ode_adjoint!r}")
        def whole(name: str, lo: int, hi: int) -> None:  # sizes bounded: 10**9 ODE steps never finish
            v = getattr(self, name)
            if isinstance(v, bool) or not (isinstance(v, int) and lo <= v <= hi):
                raise ValueError(f"TemporalFeaturesConfig.{name} must be an integer in [{lo}, {hi:,}], got {v!r}")

        whole("ode_latent_dim", 0, _MAX_ODE_SIZE)
        if self.ode_input_dim is not None:
            whole("ode_input_dim", 1, _MAX_ODE_SIZE)
        whole("ode_steps", 1, _MAX_ODE_STEPS)
        if isinstance(self.pareto_fraction, bool) or not (
            isinstance(self.pareto_fraction, (int, float)) and 0.0 < self.pareto_fraction <= 1.0
        ):
            raise ValueError(
                f"TemporalFeaturesConfig.pareto_fraction must be in (0, 1], got {self.pareto_fraction!r}"
            )

    @classmethod
    def auto(cls, **overrides: Any) -> "TemporalFeaturesConfig":
        """``scales="auto"``, ``time_unit="auto"``: the time constants are chosen from the
        data's gaps by :func:`cvx_core.features.scales.resolve_features` (the training default)."""
        return cls(**{"scales": "auto", "time_unit": "auto", **overrides})

    @property
    def is_auto(self) -> bool:
        """True while ``scales`` is ``"auto"`` (not yet resolved against data)."""
        return isinstance(self.scales, str)

    def _check_auto(self) -> None:
        """Validation of an unresolved ``scales="auto"`` config: the unit is a known one or
        ``"auto"``; time constants given are positive; the rest waits for the data."""
        if self.time_unit != "auto" and self.time_unit not in TIME_UNITS:
            raise ValueError(
                f"TemporalFeaturesConfig.time_unit must be 'auto' or one of {', '.join(TIME_UNITS)}, "
                f"got {self.time_unit!r}"
            )
        if self.time_unit == "auto":
            given = [n for n in _DAY_DEFAULTS if n != "scales" and getattr(self, n) is not None]
            if given:
                raise ValueError(
                    f"TemporalFeaturesConfig: {', '.join(given)} given with time_unit='auto'; a time constant needs "
                    "a stated unit (set time_unit too)"
                )
        for name in _DAY_DEFAULTS:
            v = getattr(self, name)
            if name != "scales" and v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"TemporalFeaturesConfig.{name} must be a finite number > 0, got {v!r}")

    def _resolved(self) -> None:
        if self.is_auto:
            raise ValueError(
                "TemporalFeaturesConfig has scales='auto': resolve it against the data first "
                "(cvx_core.features.scales.resolve_features(config, data))"
            )

    def to_unit(self, t_days: Any) -> Any:
        """Timestamps in days (NumPy array or tensor) -> the same in ``time_unit``; the very
        object when the unit is days (no copy, bit-identical)."""
        self._resolved()
        if self.time_unit == "days":
            return t_days
        return t_days * (1.0 / TIME_UNITS[self.time_unit])

    @property
    def n_scales(self) -> int:
        self._resolved()
        return len(self.scales)

    def feature_dim(self, dim: int) -> int:
        """Length of the feature vector for embedding dimension ``dim``: ``4*D + 5 + 2*S``."""
        return 4 * dim + 5 + 2 * self.n_scales

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["scales"] = self.scales if self.is_auto else list(self.scales)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TemporalFeaturesConfig":
        """A config from a JSON object: unknown keys and wrongly typed values (a bool for a
        number, a string for a float, NaN, floats for an integer) are refused in one line
        naming the field (:func:`cvx_core.data.strict.strict_fields`)."""
        from cvx_core.data.strict import strict_fields

        return cls(**strict_fields(cls, d))
