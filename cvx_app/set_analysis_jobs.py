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

What the page gets. Either source of the one set-analysis interface,
``cvx_core.analysis.batch.SetAnalysisBase``: the in-memory ``SetAnalysis``, or
``cvx_core.scale.streamed_analysis.StreamedSetAnalysis`` (the streamed file read back; it
keeps only the top ``TOP_DIMS`` dimensions of each user's drift and no cohort attribution).
The app defines no set-analysis type of its own; the streamed names are re-exported here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from cvx_app import cache
from cvx_app.sensitivity import DEFAULT_SENSITIVITY, cp_config
from cvx_app.workspace import dataset_entry, workspace_dir
from cvx_core.analysis.batch import SetAnalysisBase
from cvx_core.data.columns import ascii_strip
from cvx_core.data.trajectory import TrajectorySet
from cvx_core.scale import streamed_analysis
from cvx_core.scale.streamed_analysis import (  # the one set-analysis type's streamed source, re-exported
    REQUIRED_COLUMNS,
    TOP_DIMS,
    NotFinishedAnalysis,
    StreamedAttribution,
    StreamedChangePoints,
    StreamedSetAnalysis,
    StreamedUser,
)

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
STREAM_LABEL = "Finding change points (PELT) for every user, streamed in chunks…"

_log = logging.getLogger("cvx_app.set_analysis_jobs")


# ---- which path -------------------------------------------------------------------------------
def stream_threshold() -> int:
    """Posts from which the analysis is streamed: ``$CVX_STREAM_ANALYSIS_POSTS`` (a whole
    number >= 0; 0 streams every dataset) or :data:`STREAM_ANALYSIS_POSTS`. A value that is
    not such a number is logged and ignored."""
    raw = ascii_strip(os.environ.get(STREAM_ANALYSIS_ENV, "")).replace("_", "")
    if not raw:
        return STREAM_ANALYSIS_POSTS
    if not (raw.isascii() and raw.isdigit()):  # ASCII digits only: int() would also take '١٠٠', '-5', ' 5'
        _log.warning("%s=%r is not a whole number >= 0; using %d", STREAM_ANALYSIS_ENV, raw, STREAM_ANALYSIS_POSTS)
        return STREAM_ANALYSIS_POSTS
    return int(raw)


def analysis_path(ts: TrajectorySet, sensitivity: float = DEFAULT_SENSITIVITY) -> Path:
    """``<workspace>/analysis/<digest>.parquet``: where the streamed analysis of ``ts`` goes
    (``<digest>-s<sensitivity>.parquet`` for a sensitivity other than the default)."""
    tail = "" if float(sensitivity) == DEFAULT_SENSITIVITY else f"-s{float(sensitivity):g}"
    return workspace_dir() / "analysis" / f"{ts.digest()}{tail}.parquet"


# ---- reading a saved analysis -------------------------------------------------------------------
def read_streamed_analysis(path: Path, ts: TrajectorySet, *, chunk_users: int = STREAM_CHUNK_USERS,
                           elapsed_s: float | None = None) -> StreamedSetAnalysis:
    """:func:`cvx_core.scale.streamed_analysis.read_streamed_analysis` with the app's chunk size."""
    return streamed_analysis.read_streamed_analysis(path, ts, chunk_users=chunk_users, elapsed_s=elapsed_s)


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
        return StreamedSetAnalysis.from_summary(result, ts, chunk_users=chunk_users)
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


def dataset_analysis(name: str, ts: TrajectorySet, *, sensitivity: float = DEFAULT_SENSITIVITY) -> SetAnalysisBase:
    """The analysis of dataset ``name`` (loaded as ``ts``), change points at ``sensitivity``:
    :class:`StreamedSetAnalysis` when ``ts`` has at least :func:`stream_threshold` posts and
    its file is known, otherwise the in-memory ``SetAnalysis`` of ``cvx_app.cache.set_analysis``."""
    entry = dataset_entry(name)
    if entry is not None and ts.n_posts >= stream_threshold():
        streamed = _streamed(ts, entry.path, float(sensitivity))
        if streamed is not None:
            return streamed
    return cache.set_analysis(ts, sensitivity=sensitivity)


def describe(analysis: SetAnalysisBase) -> str:
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
