"""Projections for the app: PCA at once, UMAP in a background thread with progress; both
kept in a disk cache under the workspace (``workspace_dir()/projections``) so a restart
does not recompute them, and umap-learn's numba functions warmed at start in a child process
(numba's disk cache carries them here; a thread would hold this process's compiler lock).

Worker threads never call Streamlit; pages poll :func:`umap_job` (e.g. from a fragment with
``run_every``) and draw its ``fraction``.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from cvx_app.escape import escape_hover
from cvx_app.workspace import workspace_dir
from cvx_core.data.trajectory import TrajectorySet

SNIPPET_WORDS = 14  # words of a post shown when hovering it


def projection_dir() -> Path:
    path = workspace_dir() / "projections"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class ProjectionJob:
    """One projection being computed in a background thread (mutable, guarded by ``lock``)."""

    digest: str
    method: str
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    total: int = 1000
    result: Any = None  # cvx_core.analysis.projection.Projection
    error: str | None = None
    finished: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def fraction(self) -> float:
        with self.lock:
            return 0.0 if self.total <= 0 else min(max(self.done / self.total, 0.0), 1.0)

    @property
    def running(self) -> bool:
        return self.result is None and self.error is None

    @property
    def elapsed_s(self) -> float:
        return (self.finished or time.monotonic()) - self.started


class _Jobs:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.jobs: dict[tuple[str, str], ProjectionJob] = {}


@st.cache_resource
def _jobs() -> _Jobs:
    return _Jobs()


def _run(job: ProjectionJob, ts: TrajectorySet) -> None:
    from cvx_core.analysis.projection import project_posts

    def progress(done: int, total: int) -> None:
        with job.lock:
            job.done, job.total = int(done), int(total)

    try:
        result = project_posts(ts, method=job.method, cache_dir=projection_dir(), progress=progress)
    except Exception as exc:  # shown on the page; the thread must not die silently
        job.error = f"{type(exc).__name__}: {exc}"
    else:
        job.result = result
    job.finished = time.monotonic()


def projection(ts: TrajectorySet, method: str) -> ProjectionJob:
    """The job computing ``method`` ("pca" or "umap") for ``ts``: PCA (and anything in the
    disk cache) is finished on return; UMAP otherwise runs in a background thread, started
    once per dataset and process (a failed job is retried on the next request)."""
    from cvx_core.analysis.projection import cached_projection, project_posts

    key = (ts.digest(), method)
    jobs = _jobs()
    with jobs.lock:
        job = jobs.jobs.get(key)
        if job is not None and job.error is None:
            return job
        job = ProjectionJob(digest=key[0], method=method)
        jobs.jobs[key] = job
    hit = cached_projection(ts, method=method, cache_dir=projection_dir())
    if hit is not None:
        job.result, job.done, job.finished = hit, job.total, time.monotonic()
    elif method == "pca":
        job.result = project_posts(ts, method="pca", cache_dir=projection_dir())
        job.done, job.finished = job.total, time.monotonic()
    else:
        threading.Thread(target=_run, args=(job, ts), name=f"cvx-umap-{key[0][:8]}", daemon=True).start()
    return job


@dataclass
class WarmUp:
    """The UMAP warm-up of this server: a child process (see :func:`warm_umap_in_background`)."""

    started: float = field(default_factory=time.monotonic)
    pid: int | None = None  # the child's process id
    seconds: float | None = None  # the child's own figure, once it is done
    returncode: int | None = None
    error: str = ""
    persisted: bool = False  # numba's disk cache holds UMAP's functions (the child checked)
    loaded_s: float | None = None  # then loading them into this process took this long


@st.cache_resource
def _warm_up() -> WarmUp | None:
    if os.environ.get("CVX_WARM_UMAP", "1").strip() == "0":
        return None
    from cvx_core.analysis.projection import warm_umap_process

    state = WarmUp()
    try:
        proc = warm_umap_process()
    except OSError as exc:  # pragma: no cover - no process could start: UMAP compiles on first use
        state.returncode, state.error = -1, str(exc)
        return state
    state.pid = proc.pid

    def wait() -> None:
        out, err = proc.communicate()
        try:
            seconds, persisted = out.strip().splitlines()[-1].split()
            state.seconds, state.persisted = float(seconds), persisted == "1"
        except (ValueError, IndexError):
            state.error = err.strip()[-500:]
        if state.persisted:  # only loads from the disk cache now (no compile holds the lock long)
            from cvx_core.analysis.projection import warm_umap

            try:
                state.loaded_s = warm_umap()
            except Exception as exc:  # pragma: no cover - an optimisation only
                state.error = f"{type(exc).__name__}: {exc}"
        state.returncode = proc.returncode

    threading.Thread(target=wait, name="cvx-umap-warm", daemon=True).start()
    atexit.register(lambda: proc.poll() is None and proc.terminate())  # no orphan after the server
    return state


def warm_umap_in_background() -> WarmUp | None:
    """Compile umap-learn's numba functions into numba's disk cache in a child process at
    lowered priority, once per server (``CVX_WARM_UMAP=0`` turns it off). It is a process,
    not a thread, so it never holds this server's numba compiler lock while compiling: a
    training run started meanwhile does not wait for it. After ``make install-run`` the cache
    is already there and the child only checks it. When the child finds the cache complete,
    this process then loads UMAP from it (a few seconds; each function holds the compiler
    lock only while it loads), so the first UMAP on Explore is the fit alone. Returns its
    state (None when turned off)."""
    return _warm_up()


def snippet(text: str | None, words: int = SNIPPET_WORDS) -> str:
    """The first ``words`` words of a post (``…`` when cut), whitespace collapsed."""
    if not text:
        return ""
    parts = str(text).split()
    return " ".join(parts[:words]) + (" …" if len(parts) > words else "")


@st.cache_data(max_entries=8, show_spinner=False)
def _frame(digest: str, method: str, _proj: Any, _ts: TrajectorySet) -> pd.DataFrame:
    coords = np.asarray(_proj.coords)
    user_index = np.asarray(_proj.user_index, dtype=np.int64)
    posts = np.asarray(_proj.post_index, dtype=np.int64)
    uids = np.asarray(_proj.row_user_ids, dtype=object)
    all_when = np.concatenate([tr.datetimes for tr in _ts]).astype("datetime64[us]")
    starts = np.concatenate([[0], np.cumsum(_ts.lengths)[:-1]]).astype(np.int64)
    when = all_when[starts[user_index] + posts]
    labels = np.array(["none" if tr.label is None else str(tr.label) for tr in _ts], dtype=object)
    if _ts.has_text:
        texts = [escape_hover(snippet(_ts.at(int(u)).texts[int(p)])) for u, p in zip(user_index, posts)]
    else:
        texts = [""] * len(posts)
    start = when.min()
    return pd.DataFrame(
        {
            "x": coords[:, 0],
            "y": coords[:, 1],
            "user_id": uids,
            "user_id_safe": [escape_hover(u) for u in uids],
            "post": posts,
            "label": labels[user_index],
            "when": pd.to_datetime(when).strftime("%Y-%m-%d %H:%M"),
            "datetime": pd.to_datetime(when),
            "days_since_start": (when - start) / np.timedelta64(1, "D"),
            "words": texts,
        }
    )


def projection_frame(ts: TrajectorySet, proj: Any) -> pd.DataFrame:
    """One row per post of a finished projection: ``x, y``, ``user_id`` (and its
    hover-escaped form ``user_id_safe``), ``post``, ``label``, ``when`` (text),
    ``datetime``, ``days_since_start`` and ``words`` (the post's first words, escaped for
    hover labels; empty without texts)."""
    return _frame(ts.digest(), proj.method, proj, ts)


@st.cache_data(max_entries=4, show_spinner="Projecting the posts to 3-D (PCA)…")
def _pca3(digest: str, _ts: TrajectorySet) -> tuple[np.ndarray, float]:
    from sklearn.decomposition import PCA

    x = np.concatenate([tr.embeddings for tr in _ts]).astype(np.float64)
    pca = PCA(n_components=min(3, x.shape[1], x.shape[0]), random_state=0)
    xyz = pca.fit_transform(x)
    if xyz.shape[1] < 3:
        xyz = np.pad(xyz, ((0, 0), (0, 3 - xyz.shape[1])))
    return xyz, float(pca.explained_variance_ratio_.sum())


def pca3_frame(ts: TrajectorySet, frame: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """``frame`` (a projection frame) with ``x, y, z`` replaced by each post's first three
    principal components of the embeddings (scikit-learn PCA), and the share of variance
    they explain."""
    xyz, explained = _pca3(ts.digest(), ts)
    starts = np.concatenate([[0], np.cumsum(ts.lengths)[:-1]]).astype(np.int64)
    rows = starts[[ts.user_ids.index(u) for u in frame["user_id"]]] + frame["post"].to_numpy(dtype=np.int64)
    out = frame.copy()
    out["x"], out["y"], out["z"] = xyz[rows, 0], xyz[rows, 1], xyz[rows, 2]
    return out, explained
