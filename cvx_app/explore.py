"""What the Explore page colours, searches and explains: per-user colour values (metadata
columns, change-point count, drift, the latest run's prediction score), user search,
nearest users, and each change point's words (``cvx_core.analysis.explain``), cached by the
dataset's digest. Streamlit only for caching; no widgets here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from cvx_app.escape import escape_hover
from cvx_app.sensitivity import DEFAULT_SENSITIVITY, cp_config
from cvx_app.workspace import list_runs, run_dataset, weights_stamp
from cvx_core.data.trajectory import TrajectorySet

LABEL, TIME = "label", "time (post date)"
CHANGE_POINTS, DRIFT = "number of change points (per user)", "drift |v_T - v_1| (per user)"
SCORE_PREFIX, META_PREFIX = "prediction score", "metadata: "


@dataclass(frozen=True)
class ColourOption:
    """One entry of "Colour posts by": ``per_user`` maps user id -> value (``None`` for
    label/time, which are per post); ``categorical`` picks discrete colours or a scale."""

    name: str
    per_user: pd.Series | None
    categorical: bool
    help: str = ""


def metadata_frame(ts: TrajectorySet) -> pd.DataFrame:
    """``ts.metadata`` (per-user columns kept from the upload, indexed by user id) when the
    data model offers it, else an empty frame."""
    meta = getattr(ts, "metadata", None)
    if isinstance(meta, pd.DataFrame):
        return meta
    return pd.DataFrame(index=pd.Index(ts.user_ids, name="user_id"))


def _is_categorical(col: pd.Series) -> bool:
    if pd.api.types.is_bool_dtype(col) or not pd.api.types.is_numeric_dtype(col):
        return True
    return col.nunique(dropna=True) <= 6 and pd.api.types.is_integer_dtype(col)


def colour_options(ts: TrajectorySet, analysis: Any, score: tuple[str, pd.Series] | None) -> dict[str, ColourOption]:
    """Every way the cloud can be coloured, in menu order: label, time, change-point count,
    drift, the prediction score of the latest run (when there is one), then each metadata
    column."""
    ids = [u.user_id for u in analysis]
    out: dict[str, ColourOption] = {
        LABEL: ColourOption(LABEL, None, True, "The user's label."),
        TIME: ColourOption(TIME, None, False, "Days since the dataset's first post."),
        CHANGE_POINTS: ColourOption(
            CHANGE_POINTS, pd.Series([u.changepoints.n_changes for u in analysis], index=ids), False,
            "PELT change points found in the user's trajectory."),
        DRIFT: ColourOption(
            DRIFT, pd.Series([u.attribution.drift_norm for u in analysis], index=ids), False,
            "Distance between the user's last and first post embeddings."),
    }
    if score is not None:
        run_name, values = score
        name = f"{SCORE_PREFIX} (run {run_name})"
        out[name] = ColourOption(name, values, False, "The latest run on this dataset: probability of the positive class.")
    meta = metadata_frame(ts)
    for col in meta.columns:
        name = f"{META_PREFIX}{col}"
        out[name] = ColourOption(name, meta[col], _is_categorical(meta[col]), "A column of the upload, kept per user.")
    return out


def colour_values(option: ColourOption, frame: pd.DataFrame) -> pd.Series | None:
    """One colour value per row of a projection frame (``None``: colour by label)."""
    if option.name == LABEL:
        return None
    if option.name == TIME:
        return frame["days_since_start"]
    return frame["user_id"].map(option.per_user)


def search_users(user_ids: list[str], query: str, *, limit: int = 50) -> list[str]:
    """Users whose id contains ``query`` (case-insensitive; exact matches first)."""
    q = query.strip().casefold()
    if not q:
        return []
    hits = [u for u in user_ids if q in u.casefold()]
    hits.sort(key=lambda u: (u.casefold() != q, not u.casefold().startswith(q), u))
    return hits[:limit]


# ---- nearest users ------------------------------------------------------------------------
@st.cache_data(max_entries=8, show_spinner=False)
def _unit_means(digest: str, _ts: TrajectorySet) -> np.ndarray:
    means = np.stack([tr.embeddings.mean(axis=0, dtype=np.float64) for tr in _ts])
    norms = np.linalg.norm(means, axis=1, keepdims=True)
    return means / np.where(norms > 0, norms, 1.0)


def nearest_users(ts: TrajectorySet, user_id: str, analysis: Any, *, k: int = 8) -> pd.DataFrame:
    """The ``k`` users whose mean post embedding is closest in cosine similarity to
    ``user_id``'s, most similar first, with label, posts, change points and drift."""
    unit = _unit_means(ts.digest(), ts)
    i = ts.user_ids.index(user_id)
    sims = unit @ unit[i]
    sims[i] = -np.inf
    order = np.argsort(-sims, kind="stable")[: max(0, min(k, len(ts) - 1))]
    rows = []
    for j in order:
        tr = ts.at(int(j))
        u = analysis[tr.user_id]
        rows.append({
            "user_id": tr.user_id,
            "similarity": round(float(sims[j]), 4),
            "label": tr.label,
            "posts": tr.n_posts,
            "change points": u.changepoints.n_changes,
            "drift": round(u.attribution.drift_norm, 4),
        })
    out = pd.DataFrame(rows, columns=["user_id", "similarity", "label", "posts", "change points", "drift"])
    out["label"] = nullable_labels(out["label"])  # one Arrow type: no 'none' text among numbers
    return out


def nullable_labels(values: Any) -> pd.Series:
    """Labels as a nullable integer column (``<NA>`` for unlabelled users: ``None`` or a
    negative label), so a table with unlabelled users converts to Arrow cleanly."""
    return pd.Series([None if v is None or (isinstance(v, (int, np.integer)) and v < 0) or v != v else int(v)
                      for v in values], dtype="Int64")


# ---- prediction score of the latest run -----------------------------------------------------
@st.cache_data(max_entries=8, show_spinner="Scoring users with the latest run…")
def _scores(run_key: str, digest: str, run_dir: str, _ts: TrajectorySet) -> pd.Series | None:
    from cvx_app.cache import load_run
    from cvx_core.learn.model import predict_proba

    try:
        run = load_run(Path(run_dir))
        proba = predict_proba(run.model, _ts, device="cpu")
    except Exception:  # a run that no longer fits the data (other D, damaged weights)
        return None
    return pd.Series(proba[:, -1], index=_ts.user_ids, name="score")


def latest_scores(dataset: str, ts: TrajectorySet) -> tuple[str, pd.Series] | None:
    """``(run name, score per user)`` from the newest run trained on ``dataset`` that has
    weights (the last class's probability), or ``None`` when there is no usable run."""
    for run in list_runs():
        if not run.has_weights or run_dataset(run.path) != dataset:
            continue
        key = f"{run.path}:{weights_stamp(run.path)}"
        values = _scores(key, ts.digest(), str(run.path), ts)
        if values is not None:
            return run.name, values
    return None


# ---- change points in words ------------------------------------------------------------------
@dataclass(frozen=True)
class ChangeWords:
    """One change point of the open user, with its words (all raw text: show with st.text)."""

    index: int
    when: pd.Timestamp
    severity: str
    narrative: str
    terms_before: tuple[str, ...]
    terms_after: tuple[str, ...]
    posts_before: tuple[str, ...]
    posts_after: tuple[str, ...]


def _severity(value: Any) -> str:
    if isinstance(value, (int, float, np.floating)):
        return f"{float(value):.2f}"
    return str(value)


def _texts(items: Any) -> tuple[str, ...]:
    out = []
    for item in items or ():
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            out.append(str(item.get("text", item)))
        elif isinstance(item, (tuple, list)) and item:
            out.append(str(item[-1] if isinstance(item[-1], str) else item[0]))
        else:
            out.append(str(getattr(item, "text", item)))
    return tuple(out)


def _terms(items: Any) -> tuple[str, ...]:
    out = []
    for item in items or ():
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, (tuple, list)) and item:
            out.append(str(item[0]))
        else:
            out.append(str(getattr(item, "term", item)))
    return tuple(out)


def explain_available() -> bool:
    try:
        from cvx_core.analysis.explain import explain_changepoints  # noqa: F401
    except ImportError:
        return False
    return True


@st.cache_data(max_entries=64, show_spinner="Finding the words of each change point…")
def _explain(digest: str, user_id: str, sensitivity: float, _ts: TrajectorySet) -> tuple[ChangeWords, ...]:
    from cvx_core.analysis.changepoints import detect_changepoints
    from cvx_core.analysis.explain import explain_changepoints

    traj = _ts[user_id]
    # the library's N_TERMS / N_POSTS, as the CLI's `explain` and the change-point exports
    result = explain_changepoints(traj, changepoints=detect_changepoints(traj, config=cp_config(sensitivity)))
    out = []
    for cp in result.change_points:
        out.append(ChangeWords(
            index=int(cp.index),
            when=pd.Timestamp(cp.datetime),
            severity=_severity(cp.severity),
            narrative=str(cp.narrative),
            terms_before=_terms(cp.terms_before),
            terms_after=_terms(cp.terms_after),
            posts_before=_texts(cp.posts_before),
            posts_after=_texts(cp.posts_after),
        ))
    return tuple(out)


def change_words(ts: TrajectorySet, user_id: str, *,
                 sensitivity: float = DEFAULT_SENSITIVITY) -> tuple[ChangeWords, ...] | None:
    """The open user's change points (at ``sensitivity``) in words, or ``None`` when the data
    has no texts or the explanation module is not available."""
    if not ts.has_text or not explain_available():
        return None
    return _explain(ts.digest(), user_id, float(sensitivity), ts)


def post_snippets(ts: TrajectorySet, user_id: str, words: int = 14) -> list[str]:
    """Each post's first words, escaped for hover labels (empty strings without texts)."""
    from cvx_app.projection_jobs import snippet

    tr = ts[user_id]
    if tr.texts is None:
        return [""] * tr.n_posts
    return [escape_hover(snippet(t, words)) for t in tr.texts]


# ---- where Explore opens --------------------------------------------------------------------
def strongest_change(ts: TrajectorySet, analysis: Any) -> tuple[str, float] | None:
    """``(user, size)`` of the strongest change point of the dataset: the largest distance
    between the mean embeddings of the segments on either side of a PELT change point
    (each side up to the neighbouring change point), in units of the user's typical
    post-to-post distance, so long and short trajectories compare. ``None`` when no user
    has a change point."""
    best: tuple[str, float] | None = None
    for u in analysis:
        idx = list(u.changepoints.indices)
        if not idx:
            continue
        x = ts[u.user_id].embeddings.astype(np.float64, copy=False)
        step = float(np.median(np.linalg.norm(np.diff(x, axis=0), axis=1))) if len(x) > 1 else 0.0
        bounds = [0, *idx, len(x)]
        for k in range(1, len(bounds) - 1):
            before, after = x[bounds[k - 1]:bounds[k]], x[bounds[k]:bounds[k + 1]]
            if len(before) == 0 or len(after) == 0:
                continue
            size = float(np.linalg.norm(after.mean(axis=0) - before.mean(axis=0))) / (step if step > 0 else 1.0)
            if best is None or size > best[1]:
                best = (u.user_id, size)
    return best


def opening_user(ts: TrajectorySet, analysis: Any, *, sensitivity: float = DEFAULT_SENSITIVITY) -> str:
    """The user Explore opens on: the one with the strongest change point of ``analysis``
    (made at ``sensitivity``; :func:`strongest_change`), else the first user."""
    best = _strongest_cached(ts.digest(), float(sensitivity), ts, analysis)
    return best if best is not None and best in ts else ts.user_ids[0]


@st.cache_data(max_entries=8, show_spinner=False)
def _strongest_cached(digest: str, sensitivity: float, _ts: TrajectorySet, _analysis: Any) -> str | None:
    found = strongest_change(_ts, _analysis)
    return None if found is None else found[0]


# ---- nearest posts (Embedding Projector's "nearest points") ----------------------------------
@st.cache_data(max_entries=4, show_spinner=False)
def _unit_posts(digest: str, _ts: TrajectorySet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every post's unit embedding ``[P, D]`` (float32), its user's row and its post index."""
    x = np.concatenate([tr.embeddings for tr in _ts]).astype(np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x /= np.where(norms > 0, norms, 1.0)
    owner = np.repeat(np.arange(len(_ts)), _ts.lengths)
    post = np.concatenate([np.arange(n) for n in _ts.lengths])
    return x, owner, post


def nearest_posts(ts: TrajectorySet, user_id: str, post: int, *, k: int = 10, words: int = 30) -> pd.DataFrame:
    """The ``k`` posts of the dataset nearest to post ``post`` of ``user_id`` in the original
    embedding space (cosine similarity, the post itself left out), most similar first:
    user, post number (1-based), date, similarity, label and the post's first ``words``
    words (raw text: show in a table, never as markup)."""
    from cvx_app.projection_jobs import snippet

    x, owner, index = _unit_posts(ts.digest(), ts)
    row = ts.user_ids.index(user_id)
    start = int(np.asarray(ts.lengths)[:row].sum())
    sims = x @ x[start + post]
    sims[start + post] = -np.inf
    order = np.argsort(-sims, kind="stable")[: max(0, min(k, sims.size - 1))]
    out = []
    for j in order:
        tr = ts.at(int(owner[j]))
        i = int(index[j])
        out.append({
            "user_id": tr.user_id,
            "post": i + 1,
            "when": pd.Timestamp(tr.datetimes[i]).strftime("%Y-%m-%d"),
            "similarity": round(float(sims[j]), 4),
            "label": tr.label,
            "text": snippet(tr.texts[i], words) if tr.texts is not None else "",
        })
    frame = pd.DataFrame(out, columns=["user_id", "post", "when", "similarity", "label", "text"])
    frame["label"] = nullable_labels(frame["label"])
    if not ts.has_text:
        frame = frame.drop(columns="text")
    return frame
