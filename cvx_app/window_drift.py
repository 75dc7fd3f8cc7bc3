"""A reference window against a current window (Phoenix's reference vs primary, Evidently's
embedding drift): which dimensions moved (Welch's t-test per dimension, Benjamini-Hochberg
adjusted), which users moved (distance between their mean embeddings in the two windows),
and clusters of posts (scikit-learn's HDBSCAN) ranked by how much their share changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cvx_core.data.trajectory import TrajectorySet

MAX_CLUSTER_POSTS = 2000  # HDBSCAN on at most this many posts (a seeded sample beyond)
CLUSTER_DIMS = 20  # HDBSCAN runs on the posts' first principal components (unit vectors first)


@dataclass(frozen=True)
class WindowDrift:
    """What moved between the ``reference`` and the ``current`` window.

    Attributes:
        n_reference, n_current: posts in each window.
        mean_shift: ``|mean(current) - mean(reference)|`` of all posts' embeddings.
        dimensions: one row per dimension, most moved first: ``dimension``, ``shift``
            (current minus reference mean), ``t``, ``p_adjusted`` (Welch, BH-adjusted).
        users: users with posts in both windows, most moved first: ``user_id``, ``label``,
            ``posts_reference``, ``posts_current``, ``moved`` (distance of the two means).
        clusters: HDBSCAN clusters of the posts of both windows (on their first
            ``CLUSTER_DIMS`` principal components), most drifted first:
            ``cluster``, ``posts``, ``share_reference``, ``share_current``, ``change``.
    """

    n_reference: int
    n_current: int
    mean_shift: float
    dimensions: pd.DataFrame
    users: pd.DataFrame
    clusters: pd.DataFrame


def _posts_in(ts: TrajectorySet, lo: np.datetime64, hi: np.datetime64) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings ``[P, D]`` of the posts in ``[lo, hi)`` and each post's user row."""
    xs, owners = [], []
    for row, tr in enumerate(ts):
        inside = (tr.datetimes >= lo) & (tr.datetimes < hi)
        if inside.any():
            xs.append(np.asarray(tr.embeddings[inside], dtype=np.float64))
            owners.append(np.full(int(inside.sum()), row))
    if not xs:
        return np.zeros((0, ts.dim)), np.zeros(0, dtype=int)
    return np.concatenate(xs), np.concatenate(owners)


def _dimensions(ref: np.ndarray, cur: np.ndarray) -> pd.DataFrame:
    from scipy.stats import false_discovery_control, ttest_ind

    shift = cur.mean(axis=0) - ref.mean(axis=0)
    if len(ref) > 1 and len(cur) > 1:
        with np.errstate(invalid="ignore", divide="ignore"):
            t, p = ttest_ind(cur, ref, axis=0, equal_var=False)
        p = np.where(np.isfinite(p), p, 1.0)
        p_adj = false_discovery_control(p, method="bh")
    else:
        t, p_adj = np.full(shift.size, np.nan), np.full(shift.size, np.nan)
    frame = pd.DataFrame({"dimension": np.arange(shift.size), "shift": shift, "t": t, "p_adjusted": p_adj})
    return frame.reindex(frame["shift"].abs().sort_values(ascending=False).index).reset_index(drop=True)


def _users(ts: TrajectorySet, ref: np.ndarray, ref_own: np.ndarray, cur: np.ndarray, cur_own: np.ndarray) -> pd.DataFrame:
    rows = []
    for row in sorted(set(ref_own.tolist()) & set(cur_own.tolist())):
        a, b = ref[ref_own == row], cur[cur_own == row]
        tr = ts.at(row)
        rows.append({"user_id": tr.user_id, "label": tr.label, "posts_reference": len(a), "posts_current": len(b),
                     "moved": float(np.linalg.norm(b.mean(axis=0) - a.mean(axis=0)))})
    frame = pd.DataFrame(rows, columns=["user_id", "label", "posts_reference", "posts_current", "moved"])
    frame["label"] = pd.array([None if v is None else int(v) for v in frame["label"]], dtype="Int64")
    return frame.sort_values("moved", ascending=False, kind="stable").reset_index(drop=True)


def _clusters(ref: np.ndarray, cur: np.ndarray, *, seed: int) -> pd.DataFrame:
    from sklearn.cluster import HDBSCAN

    cols = ["cluster", "posts", "share_reference", "share_current", "change"]
    x = np.concatenate([ref, cur])
    side = np.r_[np.zeros(len(ref), dtype=int), np.ones(len(cur), dtype=int)]
    if len(x) > MAX_CLUSTER_POSTS:
        keep = np.random.default_rng(seed).choice(len(x), MAX_CLUSTER_POSTS, replace=False)
        x, side = x[keep], side[keep]
    if len(x) < 10 or side.min() == side.max():
        return pd.DataFrame(columns=cols)
    from sklearn.decomposition import PCA

    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = x / np.where(norms > 0, norms, 1.0)
    reduced = PCA(n_components=min(CLUSTER_DIMS, unit.shape[1], len(unit)), random_state=seed).fit_transform(unit)
    labels = HDBSCAN(min_cluster_size=max(5, len(x) // 50), copy=True).fit_predict(reduced)
    n_ref, n_cur = int((side == 0).sum()), int((side == 1).sum())
    rows = []
    for c in sorted(set(labels.tolist())):
        members = labels == c
        a = float((members & (side == 0)).sum() / n_ref)
        b = float((members & (side == 1)).sum() / n_cur)
        rows.append({"cluster": "noise" if c < 0 else str(c), "posts": int(members.sum()),
                     "share_reference": round(a, 4), "share_current": round(b, 4), "change": round(b - a, 4)})
    frame = pd.DataFrame(rows, columns=cols)
    return frame.reindex(frame["change"].abs().sort_values(ascending=False).index).reset_index(drop=True)


def window_drift(ts: TrajectorySet, reference: tuple[object, object], current: tuple[object, object], *,
                 seed: int = 0) -> WindowDrift:
    """Compare the posts of ``reference = (start, end)`` with those of ``current`` (each
    window includes its start, excludes its end; anything ``np.datetime64`` accepts).
    Raises ValueError when a window holds no post."""
    def bounds(w: tuple[object, object]) -> tuple[np.datetime64, np.datetime64]:
        return (np.datetime64(pd.Timestamp(w[0]).tz_localize(None), "us"),
                np.datetime64(pd.Timestamp(w[1]).tz_localize(None), "us"))

    ref, ref_own = _posts_in(ts, *bounds(reference))
    cur, cur_own = _posts_in(ts, *bounds(current))
    for name, x in (("reference", ref), ("current", cur)):
        if len(x) == 0:
            raise ValueError(f"the {name} window holds no post")
    return WindowDrift(
        n_reference=len(ref), n_current=len(cur),
        mean_shift=float(np.linalg.norm(cur.mean(axis=0) - ref.mean(axis=0))),
        dimensions=_dimensions(ref, cur),
        users=_users(ts, ref, ref_own, cur, cur_own),
        clusters=_clusters(ref, cur, seed=seed),
    )


def default_windows(ts: TrajectorySet) -> tuple[tuple[pd.Timestamp, pd.Timestamp], tuple[pd.Timestamp, pd.Timestamp]]:
    """The first and the second half of the dataset's time span (the second includes the
    last post)."""
    s = ts.summary()
    lo, hi = pd.Timestamp(s.start), pd.Timestamp(s.end)
    mid = lo + (hi - lo) / 2
    return (lo, mid), (mid, hi + pd.Timedelta(seconds=1))
