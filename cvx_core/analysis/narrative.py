"""Plain-language narratives of a trajectory's change points, for analysts.

For each change point (first post of a new segment) a :class:`ChangePointNarrative` holds
the facts and a one-paragraph plain-text ``text``:

- when: the date of the first post of the new segment, and its day offset;
- how severe: the standardised shift (:func:`standardised_shift`): the distance between
  the means of the segments on each side, with its expected noise part removed, in units
  of the posts' root-mean-square spread around their own segment's mean. It does not grow
  with the number of posts (the noise part of a mean difference, ``tr W (1/n_a + 1/n_b)``,
  is subtracted), so a long history does not make a change look stronger;
- in which words (when the trajectory has texts): the distinctive terms of the segment
  before and of the segment after (c-TF-IDF, :mod:`cvx_core.analysis.terms`); the
  dimensions are then kept as facts but not named in the text, since with sentence
  embeddings hundreds of dimensions share any change and their numbers say nothing;
- which dimensions (only without texts): the top dimensions by share of the jump between
  segment means (``attribute_change``) and the size of the Pareto set;
- posting rhythm: median gap (days, SPEC's floored ``dt``) within the segment before and
  within the segment after.

The text never contains the user id or any markup: only numbers, dates, dimension names
chosen by the caller and terms, which are lower-case ASCII letters and spaces (see
:data:`cvx_core.analysis.terms.TOKEN_PATTERN`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cvx_core.analysis.attribution import attribute_change
from cvx_core.analysis.changepoints import ChangePointConfig, ChangePointResult, detect_changepoints
from cvx_core.analysis.terms import TermCounts, count_terms, distinctive_terms
from cvx_core.features.config import TemporalFeaturesConfig
from cvx_core.data.trajectory import Trajectory

__all__ = ["ChangePointNarrative", "narrate_changepoints", "severity_label", "standardised_shift"]

# severity (standardised shift) -> word; thresholds are upper bounds
_SEVERITY_WORDS: tuple[tuple[float, str], ...] = (
    (0.5, "subtle"),
    (1.0, "moderate"),
    (1.5, "strong"),
    (float("inf"), "very strong"),
)


def severity_label(severity: float) -> str:
    """Word for a standardised shift: subtle (< 0.5: what the best split of pure noise
    reaches), moderate (< 1), strong (< 1.5: the means are more than one within-segment
    spread apart), very strong (>= 1.5)."""
    for bound, word in _SEVERITY_WORDS:
        if severity < bound:
            return word
    return _SEVERITY_WORDS[-1][1]


def standardised_shift(before: np.ndarray, after: np.ndarray) -> tuple[float, float]:
    """``(shift, spread)`` of two segments ``[n_a, D]`` and ``[n_b, D]``:
    ``spread^2 = W`` = pooled within-segment variance (sum of squared distances of the
    posts to their own segment's mean / (n_a + n_b - 2)) and
    ``shift = sqrt(max(|mean_b - mean_a|^2 - W (1/n_a + 1/n_b), 0)) / spread`` (0 when
    the segments do not vary; ``inf`` when they differ but neither varies)."""
    a = np.asarray(before, dtype=np.float64)
    b = np.asarray(after, dtype=np.float64)
    na, nb = a.shape[0], b.shape[0]
    d2 = float(np.sum((b.mean(axis=0) - a.mean(axis=0)) ** 2))
    ss = float(np.sum((a - a.mean(axis=0)) ** 2) + np.sum((b - b.mean(axis=0)) ** 2))
    w = ss / max(na + nb - 2, 1)
    if w <= 0.0:
        return (float("inf") if d2 > 0.0 else 0.0), 0.0
    return float(np.sqrt(max(d2 - w * (1.0 / na + 1.0 / nb), 0.0) / w)), float(np.sqrt(w))


@dataclass(frozen=True)
class ChangePointNarrative:
    """One change point, explained.

    Attributes:
        user_id: the trajectory's id (not repeated in ``text``).
        index: first post of the new segment.
        datetime: ``datetime64[us]`` of that post.
        day: its offset in days since the trajectory's first post.
        n_before, n_after: posts in the segments compared (before / after the point).
        jump_norm: ``|mean(after) - mean(before)|``.
        median_step_norm: the user's median ``|v_{i+1} - v_i|`` over the whole trajectory.
        severity: the standardised shift (:func:`standardised_shift`) between the two
            segments.
        severity_label: word for ``severity`` (see :func:`severity_label`).
        top_dims: the dimensions with the largest share of the jump (rank order).
        top_shares: their shares (same order).
        pareto_size: how many dimensions reach the configured ``pareto_fraction``.
        gap_before_days, gap_after_days: median gap between posts within each segment
            (``None`` for a one-post segment).
        text: the plain-text narrative.
        terms_before, terms_after: distinctive terms of each side (empty without texts).
    """

    user_id: str
    index: int
    datetime: np.datetime64
    day: float
    n_before: int
    n_after: int
    jump_norm: float
    median_step_norm: float
    severity: float
    severity_label: str
    top_dims: tuple[int, ...]
    top_shares: tuple[float, ...]
    pareto_size: int
    gap_before_days: float | None
    gap_after_days: float | None
    text: str
    terms_before: tuple[str, ...] = ()
    terms_after: tuple[str, ...] = ()


def _fmt_days(days: float) -> str:
    if days < 1.0 / 24.0:
        return f"{days * 1440.0:.0f} min"
    if days < 1.0:
        return f"{days * 24.0:.1f} h"
    return f"{days:.1f} days"


def _rhythm(before: float | None, after: float | None) -> str:
    if before is None or after is None:
        return ""
    if after > 1.5 * before:
        trend = "posting slowed down"
    elif after < before / 1.5:
        trend = "posting sped up"
    else:
        trend = "posting rhythm about the same"
    return (
        f" Median gap between posts: {_fmt_days(before)} before, {_fmt_days(after)} after "
        f"({trend})."
    )


def _listing(words: Sequence[str]) -> str:
    if not words:
        return "nothing in particular"
    quoted = [f'"{w}"' for w in words]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _checked_indices(
    trajectory: Trajectory,
    changepoints: ChangePointResult | Sequence[int] | None,
    cp_config: ChangePointConfig | None,
    dim_names: Sequence[str] | None,
) -> tuple[int, ...]:
    """The sorted, distinct change points (detected with ``cp_config`` when ``None``), each
    checked to lie in ``[1, n-1]``; ``dim_names`` checked to have ``D`` names."""
    if changepoints is None:
        changepoints = detect_changepoints(trajectory, config=cp_config)
    indices = changepoints.indices if isinstance(changepoints, ChangePointResult) else tuple(changepoints)
    n = trajectory.n_posts
    indices = tuple(sorted({int(i) for i in indices}))
    for i in indices:
        if not 0 < i < n:
            raise ValueError(f"change point {i} is outside [1, {n - 1}] for user {trajectory.user_id!r}")
    if dim_names is not None and len(dim_names) != trajectory.dim:
        raise ValueError(f"dim_names has {len(dim_names)} names for D={trajectory.dim}")
    return indices


def _words_sentence(words_before: tuple[str, ...], words_after: tuple[str, ...]) -> str:
    """The sentence naming the distinctive words on each side (or saying there are none)."""
    if words_before or words_after:
        return (
            " In words: after this point the posts speak more of "
            f"{_listing(words_after)}; before it, of {_listing(words_before)}."
        )
    return " No word is more frequent on one side than on the other."


def _dims_sentence(
    names: Sequence[str], top: Sequence[tuple[int, float]], pareto_size: int, pareto_fraction: float
) -> str:
    """The sentence naming the dimensions that moved most and their shares of the change."""
    share = sum(s for _, s in top)
    listed = ", ".join(f"{nm} ({s:.0%})" for nm, (_, s) in zip(names, top))
    return (
        f" The dimensions that moved most: {listed}, together {share:.0%} of the change;"
        f" {pareto_size} dimensions carry {pareto_fraction:.0%} of it."
    )


def _narrate_one(
    trajectory: Trajectory,
    x: np.ndarray,
    indices: tuple[int, ...],
    k: int,
    gaps: np.ndarray,
    tc: TermCounts | None,
    med_step: float,
    fcfg: TemporalFeaturesConfig,
    *,
    top_k: int,
    dim_names: Sequence[str] | None,
    n_terms: int,
) -> ChangePointNarrative:
    """The narrative of change point ``indices[k]`` of ``trajectory`` (embeddings ``x [T, D]``,
    time steps ``gaps [T-1]``, term counts per segment ``tc`` or ``None`` without texts)."""
    n = trajectory.n_posts
    c = indices[k]
    bounds = (0, *indices, n)
    lo, hi = bounds[k], bounds[k + 2]
    att = attribute_change(x, c, changepoints=indices, config=fcfg)
    jump = att.drift_norm
    severity, _ = standardised_shift(x[lo:c], x[c:hi])
    top = att.top(top_k)
    g_before = float(np.median(gaps[lo : c - 1])) if c - 1 > lo else None
    g_after = float(np.median(gaps[c : hi - 1])) if hi - 1 > c else None
    when = np.datetime_as_string(trajectory.datetimes[c], unit="m").replace("T", " ")
    day = float(trajectory.timestamps[c])
    label = severity_label(severity)
    names = [dim_names[d] if dim_names is not None else f"dim {d}" for d, _ in top]
    text = (
        f"On {when} UTC (day {day:.1f}, post {c + 1} of {n}) the posts changed: the average "
        f"embedding after this point differs from the one before by {severity:.2f}x the "
        f"posts' typical spread around their own segment's mean ({label} change; "
        f"{c - lo} posts before, {hi - c} after)."
    )
    words_before: tuple[str, ...] = ()
    words_after: tuple[str, ...] = ()
    if tc is not None:
        words_before = tuple(t for t, _ in distinctive_terms(tc, k, k + 1, n_terms=n_terms))
        words_after = tuple(t for t, _ in distinctive_terms(tc, k + 1, k, n_terms=n_terms))
        text += _words_sentence(words_before, words_after)
    elif top:
        text += _dims_sentence(names, top, att.pareto_size, fcfg.pareto_fraction)
    text += _rhythm(g_before, g_after)
    return ChangePointNarrative(
        user_id=trajectory.user_id,
        index=c,
        datetime=trajectory.datetimes[c],
        day=day,
        n_before=c - lo,
        n_after=hi - c,
        jump_norm=jump,
        median_step_norm=med_step,
        severity=float(severity),
        severity_label=label,
        top_dims=tuple(d for d, _ in top),
        top_shares=tuple(s for _, s in top),
        pareto_size=att.pareto_size,
        gap_before_days=g_before,
        gap_after_days=g_after,
        text=text,
        terms_before=words_before,
        terms_after=words_after,
    )


def narrate_changepoints(
    trajectory: Trajectory,
    changepoints: ChangePointResult | Sequence[int] | None = None,
    *,
    cp_config: ChangePointConfig | None = None,
    features_config: TemporalFeaturesConfig | None = None,
    top_k: int = 3,
    dim_names: Sequence[str] | None = None,
    n_terms: int = 5,
) -> tuple[ChangePointNarrative, ...]:
    """Narratives for every change point of ``trajectory``, in time order.

    Args:
        trajectory: the user's trajectory.
        changepoints: a :class:`ChangePointResult` or change-point indices; ``None`` runs
            :func:`detect_changepoints` with ``cp_config``.
        features_config: gives ``pareto_fraction`` and ``min_dt``.
        top_k: how many top dimensions to name.
        dim_names: optional names of the ``D`` dimensions (default ``"dim 17"``). They are
            put into the text as given: pass trusted names only.
        n_terms: how many distinctive terms per side to name when the trajectory has texts.
    """
    indices = _checked_indices(trajectory, changepoints, cp_config, dim_names)
    n = trajectory.n_posts
    if not indices:
        return ()

    from cvx_core.features.analytic import AnalyticBackend

    fcfg = features_config or TemporalFeaturesConfig()
    x = np.asarray(trajectory.embeddings, dtype=np.float64)
    steps = np.linalg.norm(np.diff(x, axis=0), axis=1)
    med_step = float(np.median(steps)) if steps.size else 0.0
    gaps = AnalyticBackend.time_steps(trajectory.timestamps, fcfg)

    bounds = (0, *indices, n)
    tc = None
    if trajectory.texts is not None:
        tc = count_terms([trajectory.texts[a:b] for a, b in zip(bounds[:-1], bounds[1:])])
    return tuple(
        _narrate_one(trajectory, x, indices, k, gaps, tc, med_step, fcfg, top_k=top_k, dim_names=dim_names,
                     n_terms=n_terms)
        for k in range(len(indices))
    )
