"""Change points in the posts' own words.

For every change point of a trajectory that has texts, :func:`explain_changepoints` gives:

- the distinctive terms of the segment before and of the segment after (class-based TF-IDF
  over the trajectory's segments, stop words removed, unigrams and bigrams; a term is only
  reported for a side where it is relatively more frequent than on the other side; see
  :mod:`cvx_core.analysis.terms`);
- 2-3 example posts per side, verbatim: the posts nearest (Euclidean) to the mean embedding
  of their segment;
- the severity and top dimensions of :func:`narrate_changepoints`, and its narrative,
  which now names the words.

The segments compared are the ones adjacent to the change point (from the previous change
point, or the first post, to this one; from this one to the next, or the last post).

One source of words: the app's screen, the CLI (``cvx explain``) and every export
(``cvx_app.exports.changepoints_frame``: ``words_rose`` = ``terms_after``, ``words_fell`` =
``terms_before``) take the terms and example posts of a change point from
:func:`explain_changepoints` (stop words removed, c-TF-IDF ranking).

Post numbers: ``index`` fields (in the objects and in JSON) count posts from 0, as the
trajectory's arrays do; prose (narratives, :meth:`UserExplanation.to_text`, the app)
counts from 1 ("post 56 of 208" is ``index`` 55).

:func:`cohort_terms` is the cohort view: for each label, how the words of its users moved
across their change points (after vs before), and which of those moves distinguish it from
the other label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cvx_core.analysis.changepoints import ChangePointConfig, ChangePointResult, detect_changepoints
from cvx_core.analysis.narrative import narrate_changepoints
from cvx_core.analysis.terms import count_terms, distinctive_terms
from cvx_core.data.trajectory import Trajectory, TrajectoryError, TrajectorySet

#: the one top-k rule for a change point's words: terms per side and example posts per side,
#: used by the app's screen, its exports and ``python -m cvx_core explain`` alike
N_TERMS = 8
N_POSTS = 3

__all__ = [
    "ExamplePost",
    "ChangePointExplanation",
    "UserExplanation",
    "explain_changepoints",
    "N_TERMS",
    "N_POSTS",
    "CohortTerms",
    "cohort_terms",
]


def _iso(dt: np.datetime64) -> str:
    return str(np.datetime_as_string(np.datetime64(dt, "s"), unit="s"))


@dataclass(frozen=True)
class ExamplePost:
    """One post shown as an example: its position, time and verbatim text."""

    index: int
    datetime: np.datetime64
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "datetime": _iso(self.datetime), "text": self.text}


@dataclass(frozen=True)
class ChangePointExplanation:
    """One change point in words.

    Attributes:
        index: the first post after the change.
        datetime: that post's time.
        severity: the standardised shift between the two segments
            (:func:`cvx_core.analysis.narrative.standardised_shift`).
        severity_label: subtle / moderate / strong / very strong.
        dimensions: ``(dim, share)`` of the dimensions that moved most.
        terms_before, terms_after: ``(term, c-TF-IDF score)``, most distinctive first.
        posts_before, posts_after: example posts nearest to each segment's centroid.
        segment_before, segment_after: half-open post ranges compared.
        narrative: plain-text sentence(s) with the words (no markup).
    """

    index: int
    datetime: np.datetime64
    severity: float
    severity_label: str
    dimensions: tuple[tuple[int, float], ...]
    terms_before: tuple[tuple[str, float], ...]
    terms_after: tuple[tuple[str, float], ...]
    posts_before: tuple[ExamplePost, ...]
    posts_after: tuple[ExamplePost, ...]
    segment_before: tuple[int, int]
    segment_after: tuple[int, int]
    narrative: str

    def to_dict(self) -> dict[str, Any]:
        sev = self.severity if np.isfinite(self.severity) else None
        return {
            "index": self.index,
            "datetime": _iso(self.datetime),
            "severity": sev,
            "dimensions": [{"dim": d, "share": s} for d, s in self.dimensions],
            "terms_before": [{"term": t, "score": s} for t, s in self.terms_before],
            "terms_after": [{"term": t, "score": s} for t, s in self.terms_after],
            "posts_before": [p.to_dict() for p in self.posts_before],
            "posts_after": [p.to_dict() for p in self.posts_after],
            "narrative": self.narrative,
        }


@dataclass(frozen=True)
class UserExplanation:
    """All change points of one user, explained (time order)."""

    user_id: str
    change_points: tuple[ChangePointExplanation, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "change_points": [c.to_dict() for c in self.change_points]}

    def to_text(self) -> str:
        """A plain-text report (for the CLI); posts are numbered from 1."""
        lines = [f"user {self.user_id}: {len(self.change_points)} change point(s)"]
        for c in self.change_points:
            lines.append("")
            lines.append(f"change point at post {c.index + 1} ({_iso(c.datetime)[:10]}), "
                         f"severity {c.severity:.2f} ({c.severity_label})")
            lines.append("  " + c.narrative)
            lines.append("  terms before: " + (", ".join(t for t, _ in c.terms_before) or "(none)"))
            lines.append("  terms after:  " + (", ".join(t for t, _ in c.terms_after) or "(none)"))
            for side, posts in (("before", c.posts_before), ("after", c.posts_after)):
                for p in posts:
                    lines.append(f"  example {side} (post {p.index + 1}, {_iso(p.datetime)[:10]}): {_excerpt(p.text)}")
        return "\n".join(lines)


def _excerpt(text: str, limit: int = 160) -> str:
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 1] + "…"


def _indices(traj: Trajectory, changepoints: ChangePointResult | Sequence[int] | None,
             config: ChangePointConfig | None) -> tuple[int, ...]:
    if changepoints is None:
        changepoints = detect_changepoints(traj, config=config)
    raw = changepoints.indices if isinstance(changepoints, ChangePointResult) else changepoints
    idx = tuple(sorted({int(i) for i in raw}))
    for i in idx:
        if not 0 < i < traj.n_posts:
            raise ValueError(f"change point {i} is outside [1, {traj.n_posts - 1}] for user {traj.user_id!r}")
    return idx


def _examples(traj: Trajectory, lo: int, hi: int, n: int) -> tuple[ExamplePost, ...]:
    x = np.asarray(traj.embeddings[lo:hi], dtype=np.float64)
    dist = np.linalg.norm(x - x.mean(axis=0), axis=1)
    order = np.argsort(dist, kind="stable")[:n]
    texts = traj.texts or ()
    return tuple(ExamplePost(lo + int(k), traj.datetimes[lo + int(k)], texts[lo + int(k)]) for k in sorted(order))


def explain_changepoints(
    traj: Trajectory,
    *,
    changepoints: ChangePointResult | Sequence[int] | None = None,
    config: ChangePointConfig | None = None,
    n_terms: int = N_TERMS,
    n_posts: int = N_POSTS,
) -> UserExplanation:
    """Explain every change point of ``traj`` in its posts' words (see the module doc).

    ``changepoints``: a result or indices; ``None`` runs :func:`detect_changepoints` with
    ``config``. Raises :class:`TrajectoryError` when the trajectory has no texts.
    """
    if traj.texts is None:
        raise TrajectoryError(
            f"user {traj.user_id!r}: no texts to explain; load a table with a 'text' column "
            "(or embed posts with cvx_core.embed_posts, which keeps them)",
            user=traj.user_id,
            column="text",
        )
    if n_terms < 1 or n_posts < 1:
        raise ValueError("n_terms and n_posts must be >= 1")
    idx = _indices(traj, changepoints, config)
    if not idx:
        return UserExplanation(traj.user_id, ())
    narratives = narrate_changepoints(traj, idx, n_terms=min(n_terms, 5))
    bounds = (0, *idx, traj.n_posts)
    segments = [traj.texts[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    tc = count_terms(segments)
    out = []
    for k, (c, nar) in enumerate(zip(idx, narratives)):
        lo, hi = bounds[k], bounds[k + 2]
        out.append(
            ChangePointExplanation(
                index=c,
                datetime=traj.datetimes[c],
                severity=float(nar.severity),
                severity_label=nar.severity_label,
                dimensions=tuple(zip(nar.top_dims, nar.top_shares)),
                terms_before=distinctive_terms(tc, k, k + 1, n_terms=n_terms),
                terms_after=distinctive_terms(tc, k + 1, k, n_terms=n_terms),
                posts_before=_examples(traj, lo, c, n_posts),
                posts_after=_examples(traj, c, hi, n_posts),
                segment_before=(lo, c),
                segment_after=(c, hi),
                narrative=nar.text,
            )
        )
    return UserExplanation(traj.user_id, tuple(out))


@dataclass(frozen=True)
class CohortTerms:
    """How each label's words moved across its users' change points.

    Attributes:
        labels: the two labels compared (``label_a``, ``label_b``).
        n_users: users of each label that contributed (they have texts and a split).
        rising: per label, ``(term, score)``: terms whose relative frequency rose (after vs
            before) more for this label than for the other; score = the difference of the
            two rises, in occurrences per 1,000 words.
        falling: per label, the same for terms that fell more.
    """

    labels: tuple[int, int]
    n_users: dict[int, int]
    rising: dict[int, tuple[tuple[str, float], ...]]
    falling: dict[int, tuple[tuple[str, float], ...]]

    def to_dict(self) -> dict[str, Any]:
        def terms(d: dict[int, tuple[tuple[str, float], ...]]) -> dict[str, Any]:
            return {str(k): [{"term": t, "score": s} for t, s in v] for k, v in d.items()}

        return {
            "labels": list(self.labels),
            "n_users": {str(k): v for k, v in self.n_users.items()},
            "rising": terms(self.rising),
            "falling": terms(self.falling),
        }


def _split(traj: Trajectory, config: ChangePointConfig | None) -> int | None:
    """The post where ``traj`` changed most: its most severe change point, or the middle of
    its posts when it has none (drift over the whole history). ``None`` below 2 posts."""
    if traj.n_posts < 2:
        return None
    idx = detect_changepoints(traj, config=config).indices
    if not idx:
        return traj.n_posts // 2
    if len(idx) == 1:
        return idx[0]
    x = np.asarray(traj.embeddings, dtype=np.float64)
    bounds = (0, *idx, traj.n_posts)
    jumps = [np.linalg.norm(x[c:bounds[k + 2]].mean(axis=0) - x[bounds[k]:c].mean(axis=0)) for k, c in enumerate(idx)]
    return idx[int(np.argmax(jumps))]


def cohort_terms(
    ts: TrajectorySet,
    *,
    config: ChangePointConfig | None = None,
    labels: tuple[int, int] | None = None,
    n_terms: int = 10,
    min_count: int = 3,
) -> CohortTerms:
    """The terms that distinguish one label's drift from the other's.

    Every labelled user with texts is split at its most severe change point (the middle of
    its posts when it has none). Per label, the texts before and after the split are pooled;
    a term's *rise* is its relative frequency after minus before. Terms are ranked by the
    difference of the two labels' rises (``rising``) and its opposite (``falling``); only
    terms seen at least ``min_count`` times in the label's pooled texts are kept.
    """
    if not ts.has_text:
        raise TrajectoryError(f"{ts.name or 'dataset'}: cohort terms need texts on every trajectory", column="text")
    present = sorted({int(tr.label) for tr in ts if tr.label is not None})
    if labels is None:
        if len(present) != 2:
            raise ValueError(f"cohort_terms compares two labels; the data has {present}")
        labels = (present[0], present[1])
    pools: dict[int, tuple[list[str], list[str]]] = {lab: ([], []) for lab in labels}
    n_users = {lab: 0 for lab in labels}
    for tr in ts:
        if tr.label not in pools or tr.texts is None:
            continue
        c = _split(tr, config)
        if c is None:
            continue
        pools[tr.label][0].extend(tr.texts[:c])
        pools[tr.label][1].extend(tr.texts[c:])
        n_users[tr.label] += 1
    a, b = labels
    tc = count_terms([pools[a][0], pools[a][1], pools[b][0], pools[b][1]])
    rising: dict[int, tuple[tuple[str, float], ...]] = {}
    falling: dict[int, tuple[tuple[str, float], ...]] = {}
    if not tc.vocabulary:
        return CohortTerms(labels, n_users, {a: (), b: ()}, {a: (), b: ()})
    rise = {a: tc.rate(1) - tc.rate(0), b: tc.rate(3) - tc.rate(2)}
    seen = {a: tc.counts[0] + tc.counts[1], b: tc.counts[2] + tc.counts[3]}
    for lab, other in ((a, b), (b, a)):
        diff = 1000.0 * (rise[lab] - rise[other])
        ok = seen[lab] >= min_count
        up = [i for i in np.argsort(-diff, kind="stable") if ok[i] and diff[i] > 0 and rise[lab][i] > 0][:n_terms]
        down = [i for i in np.argsort(diff, kind="stable") if ok[i] and diff[i] < 0 and rise[lab][i] < 0][:n_terms]
        rising[lab] = tuple((tc.vocabulary[i], float(diff[i])) for i in up)
        falling[lab] = tuple((tc.vocabulary[i], float(diff[i])) for i in down)
    return CohortTerms(labels, n_users, rising, falling)
