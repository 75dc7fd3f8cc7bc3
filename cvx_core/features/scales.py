"""Time scales, silence threshold and time unit chosen from the data's gaps (``scales="auto"``).

The SPEC's defaults (scales 1, 7, 30 days; a silence is a gap over 7 days) suit people who
post every few days. At one post per second every gap falls into one 1-day bin and nothing
is ever a silence. :func:`resolve_scales` looks at the pooled distribution of gaps between
consecutive posts and at the trajectories' spans instead:

- ``time_unit``: the largest of seconds, minutes, hours, days, weeks that twice the median
  gap reaches, so numbers stay readable.
- ``scales`` (up to 3): from twice the median gap (a bin merges a couple of posts) to a
  quarter of the median span (a trajectory still has about 4 bins), geometric in between;
  when a quarter of the span is below two gaps (short trajectories), from the median gap
  to half the span. Each is rounded to a 1-2-5 step of the unit; duplicates are dropped,
  so narrow ranges give fewer scales.
- ``silence_gap``: ``max(q95 gap, 3 x median gap)``, rounded up to a 1-2-5 step: a gap
  rare for this data (regularly sampled data has none); ``silence_temperature`` is a
  seventh of it (the SPEC's 1 day against 7 days).
- ``min_dt``: the SPEC's one minute, or a hundredth of the median gap (rounded down) when
  that is shorter, so sub-minute data keeps its real gaps; ``ema_tau`` and ``ode_time_scale`` are the middle
  scale (the SPEC's 7 days is the middle of 1, 7, 30).

:func:`resolve_features` applies the choice to a ``TemporalFeaturesConfig`` whose
``scales`` is ``"auto"``; fields given explicitly are kept. The result is recorded as a
frozen :class:`ScaleChoice` with a ``reason`` in words.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from cvx_core.features.config import TIME_UNITS, TemporalFeaturesConfig

__all__ = ["ScaleChoice", "pooled_gaps", "resolve_scales", "resolve_features", "readable"]

_UNIT_ABBREV = {"seconds": "s", "minutes": "min", "hours": "h", "days": "d", "weeks": "wk"}
_STEPS = (1.0, 2.0, 5.0)


@dataclass(frozen=True)
class ScaleChoice:
    """What ``scales="auto"`` chose, in ``time_unit``, and why.

    Attributes:
        time_unit: unit of every value below.
        scales: resampling bin widths (``S`` from 1 to 3).
        silence_gap, silence_temperature, min_dt, ema_tau: the other time constants.
        median_gap, q05_gap, q95_gap, median_span: the statistics they came from (unit).
        n_gaps: positive gaps pooled; n_users: trajectories with at least two posts.
        reason: the rule and the numbers in words (for the run's config and the Train page).
    """

    time_unit: str
    scales: tuple[float, ...]
    silence_gap: float
    silence_temperature: float
    min_dt: float
    ema_tau: float
    median_gap: float
    q05_gap: float
    q95_gap: float
    median_span: float
    n_gaps: int
    n_users: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["scales"] = list(self.scales)
        return d


def readable(x: float, *, direction: str = "nearest") -> float:
    """``x > 0`` -> the nearest (or next ``"up"`` / ``"down"``) value of the 1-2-5 series
    (..., 0.1, 0.2, 0.5, 1, 2, 5, 10, ...)."""
    if not (math.isfinite(x) and x > 0):
        raise ValueError(f"readable() needs a finite number > 0, got {x!r}")
    e = math.floor(math.log10(x))
    cands = sorted(m * 10.0 ** k for k in (e - 1, e, e + 1) for m in _STEPS)
    cands = [float(f"{c:.12g}") for c in cands]
    if direction == "up":
        return min(c for c in cands if c >= x * (1 - 1e-9))
    if direction == "down":
        return max(c for c in cands if c <= x * (1 + 1e-9))
    return min(cands, key=lambda c: (abs(math.log(c / x)), c))


def pooled_gaps(timestamps_days: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-trajectory float day timestamps -> (all gaps between consecutive posts ``[N]``,
    spans ``[U]`` of the trajectories with at least two posts), in days."""
    gaps, spans = [], []
    for t in timestamps_days:
        t = np.sort(np.asarray(t, dtype=np.float64))
        if t.size >= 2:
            gaps.append(np.diff(t))
            spans.append(t[-1] - t[0])
    if not gaps:
        return np.empty(0), np.empty(0)
    return np.concatenate(gaps), np.asarray(spans, dtype=np.float64)


def _choose_unit(median_gap_days: float) -> str:
    """The largest unit that twice the median gap reaches (seconds at least)."""
    unit = "seconds"
    for name in ("seconds", "minutes", "hours", "days", "weeks"):
        if 2.0 * median_gap_days >= TIME_UNITS[name] * (1 - 1e-9):
            unit = name
    return unit


def _scales(med: float, span: float) -> tuple[tuple[float, ...], str]:
    """Readable, strictly increasing scales (1 to 3 of them) and the rule used, in words."""
    lo, hi, rule = 2.0 * med, span / 4.0, "2 x median gap to a quarter of the median span"
    if hi < lo:  # short trajectories: a quarter of the span is below two gaps
        lo, hi = med, max(span / 2.0, med)
        rule = "the median gap to half the median span (short trajectories)"
    out: list[float] = []
    for x in (lo, math.sqrt(lo * hi), hi):
        r = readable(x)
        if not out or r > out[-1]:
            out.append(r)
    return tuple(out), rule


def resolve_scales(data: Any, *, time_unit: str | None = None) -> ScaleChoice:
    """Choose time unit, scales and silence threshold from ``data``'s gaps (module docstring).

    ``data``: a ``TrajectorySet`` (its float-day timestamps), a list of per-trajectory
    float-day timestamp arrays, or a 1-D array of pooled gaps in days (spans then taken as
    the gaps' total). ``time_unit``: keep this unit instead of choosing one. Raises
    ``ValueError`` when no trajectory has two posts with distinct times.
    """
    if time_unit is not None and time_unit not in TIME_UNITS:
        raise ValueError(f"time_unit must be one of {', '.join(TIME_UNITS)}, got {time_unit!r}")
    if hasattr(data, "user_ids"):  # a TrajectorySet: float-day timestamps per user
        gaps, spans = pooled_gaps(tr.timestamps for tr in data)
    elif isinstance(data, np.ndarray) and data.ndim == 1 and data.dtype.kind == "f":
        gaps = np.asarray(data, dtype=np.float64)
        spans = np.asarray([gaps.sum()])
    else:
        gaps, spans = pooled_gaps(data)
    if not np.all(np.isfinite(gaps)) or np.any(gaps < 0):
        raise ValueError("scales='auto': gaps between posts must be finite and >= 0")
    pos = gaps[gaps > 0]
    if pos.size == 0:
        raise ValueError(
            "scales='auto' needs at least one trajectory with two posts at different times to choose "
            "time scales from; give explicit scales (e.g. scales=(1, 7, 30) days) instead"
        )
    med_d = float(np.median(pos))
    unit = time_unit or _choose_unit(med_d)
    per = 1.0 / TIME_UNITS[unit]
    med, q05, q95 = med_d * per, float(np.quantile(pos, 0.05)) * per, float(np.quantile(pos, 0.95)) * per
    span = float(np.median(spans)) * per
    scales, rule = _scales(med, span)
    silence = readable(max(q95, 3.0 * med), direction="up")
    sil_temp = silence / 7.0
    minute = TIME_UNITS["minutes"] * per
    min_dt = minute if med / 100.0 >= minute else readable(med / 100.0, direction="down")
    ab = _UNIT_ABBREV[unit]
    fmt = lambda v: f"{v:.4g} {ab}"  # noqa: E731
    reason = (
        f"{pos.size} gaps between posts of {spans.size} trajectories: median {fmt(med)}, q05 {fmt(q05)}, "
        f"q95 {fmt(q95)}; median span {fmt(span)}. time_unit {unit}"
        f"{' (given)' if time_unit else ' (the largest unit twice the median gap reaches)'}; "
        f"scales {', '.join(fmt(s) for s in scales)} = {rule}, geometric, rounded to 1-2-5 steps "
        f"(duplicates dropped); silence_gap {fmt(silence)} = max(q95 gap, 3 x median gap) "
        f"rounded up (temperature {fmt(sil_temp)}); min_dt {fmt(min_dt)} = min(1 minute, median gap / 100)."
    )
    return ScaleChoice(
        time_unit=unit, scales=scales, silence_gap=silence, silence_temperature=sil_temp, min_dt=min_dt,
        ema_tau=scales[len(scales) // 2], median_gap=med, q05_gap=q05, q95_gap=q95, median_span=span,
        n_gaps=int(pos.size), n_users=int(spans.size), reason=reason,
    )


def resolve_features(
    config: TemporalFeaturesConfig, data: Any
) -> tuple[TemporalFeaturesConfig, ScaleChoice | None]:
    """A config with ``scales="auto"`` -> the concrete config for ``data`` and the choice;
    any other config comes back unchanged with ``None``.

    Time constants given explicitly in ``config`` are kept (in its ``time_unit`` when that is
    not ``"auto"``); the rest come from :func:`resolve_scales`.
    """
    if not config.is_auto:
        return config, None
    given_unit = None if config.time_unit == "auto" else config.time_unit
    choice = resolve_scales(data, time_unit=given_unit)
    chosen = {"scales": choice.scales, "silence_gap": choice.silence_gap,
              "silence_temperature": choice.silence_temperature, "min_dt": choice.min_dt,
              "ema_tau": choice.ema_tau, "ode_time_scale": choice.ema_tau}
    kw = {k: (v if getattr(config, k) is None or k == "scales" else getattr(config, k)) for k, v in chosen.items()}
    return replace(config, time_unit=choice.time_unit, **kw), choice
