"""Cached wrappers around ``cvx_core`` keyed by ``TrajectorySet.digest()`` strings (never by hashing arrays; heavy objects travel as ``_``-prefixed arguments the cache does not hash), and a process-wide result store for steps that report progress.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from cvx_app.sensitivity import DEFAULT_SENSITIVITY, cp_config
from cvx_app.workspace import dataset_entry, weights_stamp
from cvx_core.data.trajectory import TrajectorySet
from cvx_core.show.inputs import TimelineFrames, timeline_frames


@st.cache_resource(max_entries=8, show_spinner="Loading dataset…")
def _load_cached(path: str, mtime_ns: int, size: int) -> TrajectorySet:
    from cvx_core.data.io import load_trajectories

    return load_trajectories(path, name=Path(path).name)


def load_dataset(name: str) -> TrajectorySet:
    """The TrajectorySet of a listed dataset, cached per file version (immutable: shared)."""
    entry = dataset_entry(name)
    if entry is None:
        raise KeyError(f"no dataset named {name!r}")
    stat = entry.path.stat()
    return _load_cached(str(entry.path), stat.st_mtime_ns, stat.st_size)


class _ResultStore:
    """Bounded LRU of finished results, shared by all sessions (values are never mutated)."""

    def __init__(self, max_entries: int = 16) -> None:
        self._data: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_entries

    def get(self, key: tuple) -> Any:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        return None

    def put(self, key: tuple, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._max:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


@st.cache_resource
def result_store() -> _ResultStore:
    return _ResultStore()


def cached_with_progress(
    key: tuple, compute: Callable[[Callable[[int, int], None]], Any], *, label: str
) -> Any:
    """Return the stored result for ``key`` or compute it under a progress bar.

    ``compute(progress)`` receives a ``progress(done, total)`` callback. (``st.cache_data``
    cannot drive a progress bar created outside the cached function, hence this store.)
    """
    store = result_store()
    hit = store.get(key)
    if hit is not None:
        return hit
    with progress_bar(label) as progress:
        value = compute(progress)
    store.put(key, value)
    return value


@contextmanager
def progress_bar(label: str, *, unit: str | None = None) -> Iterator[Callable[[int, int], None]]:
    """An ``st.progress`` bar for the duration of the block, removed when it ends (also on an
    error). Yields ``progress(done, total)``, which shows ``label done/total``, or with
    ``unit`` ``label done of total unit`` (thousands separated)."""
    bar = st.progress(0.0, text=label)

    def progress(done: int, total: int) -> None:
        frac = 0.0 if total <= 0 else min(max(done / total, 0.0), 1.0)
        count = f"{done}/{total}" if unit is None else f"{done:,} of {total:,} {unit}"
        bar.progress(frac, text=f"{label} {count}")

    try:
        yield progress
    finally:
        bar.empty()


def set_analysis(ts: TrajectorySet, *, sensitivity: float = DEFAULT_SENSITIVITY) -> Any:
    """``cvx_core.analysis.batch.analyze_set`` of the whole dataset (PELT change points at
    ``sensitivity``, drift attribution of every user, cohort attribution), computed once per
    dataset and sensitivity under a progress bar and kept in the process-wide store."""

    def compute(progress: Callable[[int, int], None]) -> Any:
        from cvx_core.analysis.batch import analyze_set

        return analyze_set(ts, cp_config=cp_config(sensitivity), progress=progress)

    return cached_with_progress(
        ("analyze_set", ts.digest(), float(sensitivity)), compute, label="Finding change points (PELT) for every user…"
    )


def users_frame(analysis: Any) -> pd.DataFrame:
    """One row per user of a set analysis: posts, label, change points, drift and its
    top dimensions (for the Explore page's user table)."""
    rows = []
    for u in analysis:
        rows.append(
            {
                "user_id": u.user_id,
                "label": u.label,
                "posts": u.n_posts,
                "change points": u.changepoints.n_changes,
                "drift |v_T - v_1|": round(u.attribution.drift_norm, 4),
                "dims for 80% of drift": u.attribution.pareto_size,
                "top drift dims": ", ".join(str(int(d)) for d in u.attribution.order[:5]),
            }
        )
    frame = pd.DataFrame(rows)
    if len(frame):
        from cvx_app.explore import nullable_labels

        frame["label"] = nullable_labels(frame["label"]).to_numpy()
    return frame


@st.cache_data(max_entries=64, show_spinner="Analysing this user…")
def _user_timeline(digest: str, user_id: str, sensitivity: float, _ts: TrajectorySet) -> TimelineFrames:
    from cvx_core.analysis.batch import user_timeline as compute_timeline

    return timeline_frames(compute_timeline(_ts[user_id], cp_config=cp_config(sensitivity),
                                            features_config=features_config()))


def user_timeline(ts: TrajectorySet, user_id: str, *, sensitivity: float = DEFAULT_SENSITIVITY) -> TimelineFrames:
    """What the Explore page draws for one user (:class:`cvx_core.show.inputs.TimelineFrames`, the
    notebook's figures' input too), change points at ``sensitivity`` (cached per user and value)."""
    return _user_timeline(ts.digest(), user_id, float(sensitivity), ts)


@st.cache_resource(max_entries=4, show_spinner="Loading the trained model…")
def _load_run(path: str, weights_mtime_ns: int) -> Any:
    from cvx_core.learn.runs import load_run

    return load_run(path, device="cpu")


def load_run(run_dir: Path) -> Any:
    """The run's rebuilt model and documents (``cvx_core.learn.runs.LoadedRun``), cached per checkpoint."""
    return _load_run(str(run_dir), weights_stamp(run_dir))


def attribution_description(kind: str, positive_class: int | None) -> str:
    """Plain words for ``AttentionComparison.attribution_kind``."""
    if kind == "abs_class_difference":
        return f"|mean drift share of label {positive_class} − that of the other label|"
    if kind == "class_difference":
        return f"mean drift share of label {positive_class} − that of the other label"
    if kind == "mean_shares":
        return "mean drift share over all users"
    return kind.replace("_", " ")


def features_config():
    from cvx_core.features.config import TemporalFeaturesConfig

    return TemporalFeaturesConfig()


def features_frame(ts: TrajectorySet) -> pd.DataFrame:
    """``cvx_app.exports.features_frame`` of ``ts``, kept in the result store per dataset."""
    from cvx_app import exports

    store = result_store()
    key = ("features_frame", ts.digest())
    frame = store.get(key)
    if frame is None:
        frame = exports.features_frame(ts)
        store.put(key, frame)
    return frame


def changepoints_frame(ts: TrajectorySet, *, sensitivity: float = DEFAULT_SENSITIVITY) -> pd.DataFrame:
    """``cvx_app.exports.changepoints_frame`` of ``ts`` at ``sensitivity`` (its set analysis
    computed once and kept too), in the result store per dataset and sensitivity."""
    from cvx_app import exports

    store = result_store()
    digest, s = ts.digest(), float(sensitivity)
    frame = store.get(("changepoints_frame", digest, s))
    if frame is None:
        analysis = store.get(("analyze_set", digest, s))
        if analysis is None:
            from cvx_core.analysis.batch import analyze_set

            analysis = analyze_set(ts, cp_config=cp_config(s))
            store.put(("analyze_set", digest, s), analysis)
        frame = exports.changepoints_frame(ts, analysis)
        store.put(("changepoints_frame", digest, s), frame)
    return frame


def user_changepoints_frame(ts: TrajectorySet, user_id: str, *, sensitivity: float = DEFAULT_SENSITIVITY) -> pd.DataFrame:
    """The change-point export rows of one user at ``sensitivity`` (the same change points as
    :func:`user_timeline` and the same words as the screen): ``exports.changepoints_frame`` of
    the user's own analysis."""
    from cvx_app import exports
    from cvx_core.analysis.batch import analyze_set

    one = ts.subset([user_id])
    return exports.changepoints_frame(one, analyze_set(one, cp_config=cp_config(sensitivity)))
