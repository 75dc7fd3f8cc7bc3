"""The Explore page's analysis of a whole dataset (PELT change points and drift attribution
of every user): in memory for an ordinary dataset, streamed from its file for a large one.

Which path runs. A dataset of at least :func:`stream_threshold` posts (default
:data:`STREAM_ANALYSIS_POSTS`, overridden by ``$CVX_STREAM_ANALYSIS_POSTS``) is analysed by
:func:`cvx_core.scale.stream.analyze_stream` reading the dataset's own file (the workspace
Parquet or the shipped sample) in chunks of :data:`STREAM_CHUNK_USERS` users, under a
progress bar fed by its ``progress(rows_done, rows_total)``. Smaller datasets go through
``cvx_app.cache.set_analysis`` (``analyze_set`` in memory), as before.

Where the result goes. The per-user rows are written to
``<workspace>/analysis/<dataset digest>.parquet`` by the stream writer (a temporary file
renamed at the end: an interrupted or failed run leaves no file under that name, and
orphan temporary files are swept by ``cvx_app.workspace.clean_orphan_temp_files``).

Re-use. A later visit (another session, or the app after a restart) reads that file
instead of recomputing, but only if it is a finished analysis of *this* dataset: it must
read as Parquet, have every column :data:`REQUIRED_COLUMNS` names, and list exactly the
dataset's users with their labels and post counts. Anything else (a truncated file, an
older layout, a file of other data) is recomputed and replaced. Within one process the
result is also kept in ``cvx_app.cache.result_store``.

What the page gets. :class:`StreamedSetAnalysis` answers what the page and
``cvx_app.cache.users_frame`` / ``cvx_app.explore`` ask of an in-memory ``SetAnalysis``
(iteration in the dataset's order, ``analysis[user_id]``, ``u.changepoints.indices`` /
``n_changes``, ``u.attribution.drift_norm`` / ``pareto_size`` / ``order``, ``elapsed_s``),
with values equal to the in-memory path's. It keeps only the top dimensions of each
user's drift (``order`` holds :data:`TOP_DIMS`, not all D) and no cohort attribution.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from cvx_app import cache
from cvx_app.sensitivity import DEFAULT_SENSITIVITY, cp_config
from cvx_app.workspace import dataset_entry, workspace_dir
from cvx_core.data.trajectory import TrajectorySet

__all__ = [
    "REQUIRED_COLUMNS",
    "STREAM_ANALYSIS_ENV",
    "STREAM_ANALYSIS_POSTS",
    "STREAM_CHUNK_USERS",
    "TOP_DIMS",
    "NotFinishedAnalysis",
    "StreamedAttribution",
    "StreamedChangePoints",
    "StreamedSetAnalysis",
    "StreamedUser",
    "analysis_path",
    "dataset_analysis",
    "describe",
    "read_streamed_analysis",
    "run_streamed_analysis",
    "stream_threshold",
]

STREAM_ANALYSIS_POSTS = 200_000
STREAM_ANALYSIS_ENV = "CVX_STREAM_ANALYSIS_POSTS"
STREAM_CHUNK_USERS = 512
TOP_DIMS = 10
REQUIRED_COLUMNS = ("user_id", "label", "n_posts", "changepoint_index", "changepoint_day", "top_dims",
                    "top_shares", "drift_norm", "pareto_size")
STREAM_LABEL = "Finding change points (PELT) for every user, streamed in chunks…"

_log = logging.getLogger("cvx_app.set_analysis_jobs")


# ---- what the page reads ------------------------------------------------------------------
@dataclass(frozen=True)
class StreamedChangePoints:
    """A user's PELT change points: post ``indices`` and their ``days`` since the first post."""

    indices: tuple[int, ...]
    days: tuple[float, ...]

    @property
    def n_changes(self) -> int:
        return len(self.indices)


@dataclass(frozen=True)
class StreamedAttribution:
    """A user's drift ``v_T - v_1``: its norm, how many dimensions reach the Pareto fraction
    of it, and the :data:`TOP_DIMS` dimensions with the largest share (``order``, ranked as
    ``DriftAttribution.order`` ranks them) with those shares (``top_shares``)."""

    drift_norm: float
    pareto_size: int
    order: tuple[int, ...]
    top_shares: tuple[float, ...]


@dataclass(frozen=True)
class StreamedUser:
    """One row of the streamed analysis, shaped like ``cvx_core.analysis.batch.UserAnalysis``."""

    user_id: str
    label: int | None
    n_posts: int
    changepoints: StreamedChangePoints
    attribution: StreamedAttribution


@dataclass(frozen=True)
class StreamedSetAnalysis:
    """The streamed analysis of a dataset, read back from its Parquet file, in the dataset's
    user order.

    Attributes:
        users: one :class:`StreamedUser` per user.
        path: the analysis file.
        chunk_users: users per chunk of the streamed run.
        elapsed_s: seconds the streamed run took, or, when ``reused``, seconds to read the
            saved file back.
        reused: the file was already there (a finished analysis of this dataset).
    """

    users: tuple[StreamedUser, ...]
    path: Path
    chunk_users: int
    elapsed_s: float
    reused: bool
    _index: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self._index:
            self._index.update({u.user_id: i for i, u in enumerate(self.users)})

    def __len__(self) -> int:
        return len(self.users)

    def __iter__(self) -> Iterator[StreamedUser]:
        return iter(self.users)

    def __getitem__(self, user_id: str) -> StreamedUser:
        try:
            return self.users[self._index[str(user_id)]]
        except KeyError:
            raise KeyError(f"no user {user_id!r} in this analysis") from None

    @property
    def n_changepoints(self) -> Any:
        """``[N]`` number of change points per user."""
        import numpy as np

        return np.array([u.changepoints.n_changes for u in self.users], dtype=np.int64)


# ---- which path -------------------------------------------------------------------------------
def stream_threshold() -> int:
    """Posts from which the analysis is streamed: ``$CVX_STREAM_ANALYSIS_POSTS`` (a whole
    number >= 0; 0 streams every dataset) or :data:`STREAM_ANALYSIS_POSTS`. A value that is
    not such a number is logged and ignored."""
    raw = os.environ.get(STREAM_ANALYSIS_ENV, "").strip().replace("_", "")
    if not raw:
        return STREAM_ANALYSIS_POSTS
    try:
        value = int(raw)
        if value < 0:
            raise ValueError
    except ValueError:
        _log.warning("%s=%r is not a whole number >= 0; using %d", STREAM_ANALYSIS_ENV, raw, STREAM_ANALYSIS_POSTS)
        return STREAM_ANALYSIS_POSTS
    return value


def analysis_path(ts: TrajectorySet, sensitivity: float = DEFAULT_SENSITIVITY) -> Path:
    """``<workspace>/analysis/<digest>.parquet``: where the streamed analysis of ``ts`` goes
    (``<digest>-s<sensitivity>.parquet`` for a sensitivity other than the default)."""
    tail = "" if float(sensitivity) == DEFAULT_SENSITIVITY else f"-s{float(sensitivity):g}"
    return workspace_dir() / "analysis" / f"{ts.digest()}{tail}.parquet"


# ---- reading and checking a saved analysis -----------------------------------------------------
class NotFinishedAnalysis(Exception):
    """The file is not a finished streamed analysis of the dataset (why: the message)."""


def read_streamed_analysis(path: Path, ts: TrajectorySet, *, chunk_users: int = STREAM_CHUNK_USERS,
                           elapsed_s: float | None = None) -> StreamedSetAnalysis:
    """The analysis in ``path``, checked against ``ts`` and put in ``ts``' user order.

    Raises :class:`NotFinishedAnalysis` if the file cannot be read as Parquet, lacks a
    column of :data:`REQUIRED_COLUMNS`, or does not list exactly ``ts``' users with their
    labels and post counts. ``elapsed_s`` None: the file was there already (``reused``)."""
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    try:
        names = pq.ParquetFile(path).schema_arrow.names
        missing = [c for c in REQUIRED_COLUMNS if c not in names]
        if missing:
            raise NotFinishedAnalysis(f"{path.name}: no column(s) {', '.join(missing)}")
        table = pq.read_table(path, columns=list(REQUIRED_COLUMNS))
    except NotFinishedAnalysis:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable file is simply not a finished analysis
        raise NotFinishedAnalysis(f"{path.name}: unreadable ({type(exc).__name__}: {exc})") from None
    cols = {c: table.column(c).to_pylist() for c in REQUIRED_COLUMNS}
    n = table.num_rows
    if n != len(ts):
        raise NotFinishedAnalysis(f"{path.name}: {n} users, the dataset has {len(ts)}")
    by_id: dict[str, StreamedUser] = {}
    for i in range(n):
        uid = str(cols["user_id"][i])
        label = cols["label"][i]
        by_id[uid] = StreamedUser(
            user_id=uid,
            label=None if label is None else int(label),
            n_posts=int(cols["n_posts"][i]),
            changepoints=StreamedChangePoints(tuple(int(v) for v in cols["changepoint_index"][i]),
                                              tuple(float(v) for v in cols["changepoint_day"][i])),
            attribution=StreamedAttribution(
                drift_norm=float(cols["drift_norm"][i]), pareto_size=int(cols["pareto_size"][i]),
                order=tuple(int(v) for v in cols["top_dims"][i]),
                top_shares=tuple(float(v) for v in cols["top_shares"][i])),
        )
    users = []
    for tr in ts:
        u = by_id.get(tr.user_id)
        if u is None:
            raise NotFinishedAnalysis(f"{path.name}: a user of the dataset is missing")
        if u.n_posts != tr.n_posts or u.label != tr.label:
            raise NotFinishedAnalysis(f"{path.name}: a user's posts or label differ from the dataset's")
        users.append(u)
    reused = elapsed_s is None
    return StreamedSetAnalysis(users=tuple(users), path=path, chunk_users=int(chunk_users),
                               elapsed_s=time.perf_counter() - t0 if reused else float(elapsed_s), reused=reused)


# ---- running it ----------------------------------------------------------------------------------
def run_streamed_analysis(ts: TrajectorySet, source: Path, *, chunk_users: int = STREAM_CHUNK_USERS,
                          progress: Callable[[int, int], None] | None = None,
                          sensitivity: float = DEFAULT_SENSITIVITY) -> StreamedSetAnalysis:
    """``analyze_stream`` of ``source`` (the file ``ts`` was loaded from), change points at
    ``sensitivity``, to :func:`analysis_path` of ``ts``, read back and checked. If the file
    turns out to hold other data than ``ts`` (replaced since it was loaded), the result is
    removed and :class:`NotFinishedAnalysis` raised."""
    from cvx_core.scale import stream

    out = analysis_path(ts, sensitivity)
    result = stream.analyze_stream(source, out=out, chunk_users=chunk_users, progress=progress,
                                   cp_config=cp_config(sensitivity))
    try:
        return read_streamed_analysis(out, ts, chunk_users=chunk_users, elapsed_s=result.elapsed_s)
    except NotFinishedAnalysis:
        out.unlink(missing_ok=True)
        raise


def _streamed(ts: TrajectorySet, source: Path, sensitivity: float) -> StreamedSetAnalysis | None:
    """The streamed analysis at ``sensitivity``: from the process store, the saved file, or a
    fresh streamed run under a progress bar. ``None`` if the source file no longer holds ``ts``."""
    out = analysis_path(ts, sensitivity)
    key = ("analyze_stream", ts.digest(), str(out))
    store = cache.result_store()
    hit = store.get(key)
    if hit is not None:
        return hit
    if out.exists():
        try:
            value = read_streamed_analysis(out, ts)
        except NotFinishedAnalysis as exc:
            _log.warning("recomputing the streamed analysis: %s", exc)
        else:
            store.put(key, value)
            return value
    try:
        with cache.progress_bar(STREAM_LABEL, unit="posts") as progress:
            value = run_streamed_analysis(ts, source, progress=progress, sensitivity=sensitivity)
    except NotFinishedAnalysis as exc:
        _log.warning("the dataset file changed since it was loaded (%s); analysing in memory", exc)
        return None
    store.put(key, value)
    return value


def dataset_analysis(name: str, ts: TrajectorySet, *, sensitivity: float = DEFAULT_SENSITIVITY) -> Any:
    """The analysis of dataset ``name`` (loaded as ``ts``), change points at ``sensitivity``:
    :class:`StreamedSetAnalysis` when ``ts`` has at least :func:`stream_threshold` posts and
    its file is known, otherwise the in-memory ``SetAnalysis`` of ``cvx_app.cache.set_analysis``."""
    entry = dataset_entry(name)
    if entry is not None and ts.n_posts >= stream_threshold():
        streamed = _streamed(ts, entry.path, float(sensitivity))
        if streamed is not None:
            return streamed
    return cache.set_analysis(ts, sensitivity=sensitivity)


def describe(analysis: Any) -> str:
    """Plain words on which path produced ``analysis`` (for a caption; no user text)."""
    if isinstance(analysis, StreamedSetAnalysis):
        where = f"analysis/{analysis.path.name} in the workspace"
        if analysis.reused:
            return (f"Streamed analysis re-used: read back from {where} in {analysis.elapsed_s:.1f} s "
                    f"(datasets of {stream_threshold():,} posts or more are streamed from their file in "
                    f"chunks of {analysis.chunk_users} users and the result is kept on disk).")
        return (f"Analysed by streaming the dataset file in chunks of {analysis.chunk_users} users "
                f"(bounded memory; datasets of {stream_threshold():,} posts or more) in {analysis.elapsed_s:.1f} s; "
                f"saved as {where} and re-used on later visits.")
    return (f"Analysed in memory in {analysis.elapsed_s:.1f} s (datasets of {stream_threshold():,} posts or more "
            "are streamed from their file in chunks instead).")
