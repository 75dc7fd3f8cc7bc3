"""Streamed, bounded-memory processing of post tables: user-grouped chunks in, results out
incrementally.

Reading is :mod:`cvx_core.scale.chunks` (re-exported here): :func:`iter_user_chunks`
yields :class:`UserChunk` s of ``chunk_users`` complete users, each batch parsed by the
loader's public parser under one set of file-wide rules, so values, refusals, messages and
row numbers are those of :func:`cvx_core.load_trajectories`; an input not grouped by user
is grouped out of core first (see that module).

Consumers: :func:`extract_stream` (the analytic feature vector per user, the same Parquet
the in-memory ``extract`` wrote), :func:`analyze_stream` (change points, drift
attribution and the cohort attribution, accumulated incrementally, with ``progress``) and
:func:`embed_stream`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from cvx_core.analysis.attribution import CohortAttribution
from cvx_core.data.atomic import atomic_replace, check_output
from cvx_core.data.deprecation import deprecated_names
from cvx_core.data.trajectory import TrajectorySet
from cvx_core.features.config import TemporalFeaturesConfig
from cvx_core.scale.chunks import (
    DEFAULT_CHUNK_USERS,
    NotGroupedError,
    UserChunk,
    count_rows,
    iter_posts,
    iter_user_chunks,
    run_grouped,
)

__all__ = [
    "UserChunk",
    "StreamResult",
    "StreamSummary",
    "ProgressCallback",
    "iter_user_chunks",
    "features_frame",
    "extract_stream",
    "analyze_stream",
    "analyze_chunk",
    "embed_stream",
    "posts_table",
    "write_frames",
    "count_rows",
    "iter_posts",
    "run_grouped",
    "NotGroupedError",
    "DEFAULT_CHUNK_USERS",
]

ProgressCallback = Callable[[int, int], None]


# -------------------------------------------------------------------------------------------
# writing
# -------------------------------------------------------------------------------------------
def write_frames(path: str | os.PathLike, frames: Iterator[Any]) -> tuple[Path, int]:
    """Write DataFrames (or Arrow tables) with one schema to one Parquet file, incrementally and atomically
    (a temporary file beside ``path``, renamed at the end); returns ``(path, rows)``.
    The file reads back (``pd.read_parquet``) as ``pd.concat(frames)`` would have written it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    count = {"rows": 0}

    def write(fh: IO[bytes]) -> None:
        writer: pq.ParquetWriter | None = None
        schema: pa.Schema | None = None
        try:
            for frame in frames:
                if isinstance(frame, pa.Table):
                    table = frame if schema is None else frame.cast(schema)
                else:
                    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
                if writer is None:
                    schema = table.schema
                    writer = pq.ParquetWriter(fh, schema, compression="snappy", use_dictionary=False,
                                              write_statistics=False)
                writer.write_table(table)
                count["rows"] += table.num_rows
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise ValueError("no rows to write")

    return atomic_replace(path, write), count["rows"]


def features_frame(trajectories: TrajectorySet, config: TemporalFeaturesConfig | None = None) -> pd.DataFrame:
    """One row per user: ``user_id``, ``label`` (nullable Int64), then the analytic feature
    vector ``[4D + 5 + 2S]`` (float64) under :func:`cvx_core.features.analytic.feature_names`."""
    from cvx_core.features.analytic import AnalyticBackend, feature_names
    from cvx_core.data.budgets import check_dim
    from cvx_core.features.finite import check_finite_features

    check_dim(trajectories.dim, source=trajectories.name)  # the D budget, before [N, 4D + ...] is built
    feats = np.stack([AnalyticBackend.extract_all(tr.embeddings, tr.timestamps, config) for tr in trajectories])
    names = feature_names(trajectories.dim, config)
    if len(names) != feats.shape[1]:
        raise RuntimeError(f"{len(names)} feature names for {feats.shape[1]} features")
    # finite posts (the loader's rule), so a time constant overflowed them: the one refusal training gives too
    check_finite_features(feats, trajectories.user_ids, names, config, source=str(trajectories.name))
    frame = pd.DataFrame(feats, columns=names)
    labels = pd.array([None if v < 0 else int(v) for v in trajectories.labels], dtype="Int64")
    frame.insert(0, "label", labels)
    frame.insert(0, "user_id", pd.Series(trajectories.user_ids, dtype=object))
    return frame


@dataclass(frozen=True)
class StreamResult:
    """What a streamed job did: ``out`` written with ``n_users`` rows from ``n_posts`` posts
    in ``n_chunks`` chunks; ``grouped`` False when the input had to be grouped first."""

    out: Path
    n_users: int
    n_posts: int
    n_chunks: int
    grouped: bool
    seconds: float


def _progress_wrap(progress: ProgressCallback | None) -> Callable[[UserChunk | None], None]:
    last = {"t": 0.0}

    def report(chunk: UserChunk | None) -> None:
        if progress is None:
            return
        if chunk is None:
            progress(0, 1)
            return
        now = time.perf_counter()
        if now - last["t"] >= 0.1 or chunk.rows_done >= chunk.rows_total:
            last["t"] = now
            progress(min(chunk.rows_done, chunk.rows_total), chunk.rows_total)

    return report


def extract_stream(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    config: TemporalFeaturesConfig | None = None,
    chunk_users: int = DEFAULT_CHUNK_USERS,
    format: str | None = None,
    progress: ProgressCallback | None = None,
    scratch_dir: str | os.PathLike | None = None,
) -> StreamResult:
    """The analytic feature vector of every user of ``path`` -> Parquet ``out`` (columns as
    :func:`features_frame`), streamed: peak memory follows ``chunk_users``, not the file.
    ``progress(rows_done, rows_total)`` is called at most ~10 times a second."""
    check_output(out, [path], what="output")  # never overwrite the input (symlinks, hard links)
    t0 = time.perf_counter()
    report = _progress_wrap(progress)

    def job(grouped: bool) -> StreamResult:
        stats = {"posts": 0, "chunks": 0}

        def frames() -> Iterator[pd.DataFrame]:
            report(None)
            for chunk in iter_user_chunks(path, chunk_users=chunk_users, format=format, grouped=grouped,
                                          scratch_dir=scratch_dir):
                stats["posts"] += chunk.trajectories.n_posts
                stats["chunks"] += 1
                yield features_frame(chunk.trajectories, config)
                report(chunk)

        written, n = write_frames(out, frames())
        return StreamResult(written, n, stats["posts"], stats["chunks"], grouped, time.perf_counter() - t0)

    return run_grouped(job)


# -------------------------------------------------------------------------------------------
# analysis
# -------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class StreamSummary:
    """The summary of a streamed analysis job (:func:`analyze_stream`): cohort, counts and
    where the per-user rows went. Read those rows back as the streamed source of the one
    set-analysis interface with
    ``cvx_core.scale.streamed_analysis.StreamedSetAnalysis.from_summary``. (Old name:
    ``StreamAnalysis``, kept with a DeprecationWarning.)

    Attributes:
        cohort: cohort drift attribution over every user (``per_user_shares`` is ``None``:
            per-user shares are in ``users_file``).
        n_users, n_posts: what was analysed.
        n_changepoints: ``[N]`` change points per user, in output order.
        users_file: Parquet, one row per user (``user_id``, ``label``, ``n_posts``,
            ``n_changepoints``, ``changepoint_index`` / ``changepoint_day`` lists,
            ``top_dims`` / ``top_shares``: the 10 dimensions with the largest drift share,
            ``drift_norm``, ``pareto_size``: how many dimensions reach the Pareto fraction of
            the drift, ``max_change_probability`` when BOCPD ran, ``narratives`` when
            requested), or ``None`` if no ``out`` was given.
        grouped: False when the input had to be grouped by user first.
        elapsed_s: wall time.
    """

    cohort: CohortAttribution
    n_users: int
    n_posts: int
    n_changepoints: np.ndarray
    users_file: Path | None
    grouped: bool
    elapsed_s: float
    user_ids: tuple[str, ...] = field(default=(), repr=False)


def _user_rows(sa: Any, top_k: int) -> pd.DataFrame:
    rows = []
    for u in sa.users:
        cp = u.changepoints
        order = u.attribution.order[:top_k]
        row = {
            "user_id": u.user_id,
            "label": u.label,
            "n_posts": u.n_posts,
            "n_changepoints": cp.n_changes,
            "changepoint_index": [int(i) for i in cp.indices],
            "changepoint_day": [float(d) for d in (cp.days or ())],
            "top_dims": [int(d) for d in order],
            "top_shares": [float(u.attribution.shares[d]) for d in order],
            "drift_norm": float(np.linalg.norm(u.attribution.drift)),
            "pareto_size": int(u.attribution.pareto_size),
        }
        if u.bocpd is not None:
            probs = np.asarray(u.bocpd.change_probability, dtype=np.float64)
            row["max_change_probability"] = float(probs.max()) if probs.size else 0.0
        if u.narratives is not None:
            row["narratives"] = [n.text if hasattr(n, "text") else str(n) for n in u.narratives]
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame["label"] = pd.array(frame["label"].tolist(), dtype="Int64")
    return frame


class _CohortSums:
    """Running sums of per-user drift shares (overall and per class) -> CohortAttribution."""

    def __init__(self) -> None:
        self.total: np.ndarray | None = None
        self.n = 0
        self.posts = 0
        self.class_sum: dict[int, np.ndarray] = {}
        self.class_n: dict[int, int] = {}
        self.ncp: list[int] = []
        self.ids: list[str] = []

    def add(self, frame: pd.DataFrame, shares: np.ndarray) -> None:
        """``frame``: :func:`_user_rows` of a chunk; ``shares`` ``[n, D]`` float64 its users' shares."""
        self.total = shares.sum(axis=0) if self.total is None else self.total + shares.sum(axis=0)
        self.n += len(frame)
        self.posts += int(frame["n_posts"].sum())
        for lab, s in zip(frame["label"].tolist(), shares):
            if not pd.isna(lab):
                k = int(lab)
                self.class_sum[k] = self.class_sum.get(k, 0.0) + s
                self.class_n[k] = self.class_n.get(k, 0) + 1
        self.ncp.extend(int(v) for v in frame["n_changepoints"].tolist())
        self.ids.extend(str(v) for v in frame["user_id"].tolist())

    def result(self, fcfg: TemporalFeaturesConfig, out: Path | None, grouped: bool, t0: float) -> "StreamSummary":
        if self.total is None:
            raise ValueError("no users were analysed")
        class_shares = {k: self.class_sum[k] / self.class_n[k] for k in sorted(self.class_sum)}
        diff = None
        if len(class_shares) >= 2:
            diff = class_shares[max(class_shares)] - class_shares[min(class_shares)]
        mean = self.total / self.n
        for arr in (mean, *class_shares.values(), *(() if diff is None else (diff,))):
            arr.setflags(write=False)
        cohort = CohortAttribution(
            mean_shares=mean, class_shares=class_shares, class_difference=diff, n_users=self.n,
            class_counts={k: self.class_n[k] for k in sorted(self.class_n)}, per_user_shares=None,
            pareto_fraction=fcfg.pareto_fraction,
        )
        return StreamSummary(cohort=cohort, n_users=self.n, n_posts=self.posts,
                              n_changepoints=np.asarray(self.ncp, dtype=np.int64), users_file=out,
                              grouped=grouped, elapsed_s=time.perf_counter() - t0, user_ids=tuple(self.ids))


def analyze_chunk(trajectories: TrajectorySet, *, cp_config: Any = None,
                  features_config: TemporalFeaturesConfig | None = None, bocpd: Any = False,
                  narratives: bool = False, top_k: int = 10) -> tuple[pd.DataFrame, np.ndarray]:
    """:func:`cvx_core.analysis.batch.analyze_set` of one chunk -> (per-user rows, ``[n, D]``
    float64 drift shares for the cohort sums)."""
    from cvx_core.analysis.batch import analyze_set
    from cvx_core.data.budgets import check_dim

    check_dim(trajectories.dim, source=trajectories.name)
    sa = analyze_set(trajectories, cp_config=cp_config, features_config=features_config, bocpd=bocpd,
                     narratives=narratives)
    return _user_rows(sa, top_k), np.stack([u.attribution.shares for u in sa.users])


def analyze_stream(
    path: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    cp_config: Any = None,
    features_config: TemporalFeaturesConfig | None = None,
    bocpd: Any = False,
    narratives: bool = False,
    chunk_users: int = DEFAULT_CHUNK_USERS,
    format: str | None = None,
    progress: ProgressCallback | None = None,
    scratch_dir: str | os.PathLike | None = None,
    top_k: int = 10,
) -> StreamSummary:
    """:func:`cvx_core.analysis.batch.analyze_set` over a file of any size, chunk by chunk.

    Per-user results go to ``out`` (Parquet, see :class:`StreamSummary`) as they are
    computed; the cohort attribution is accumulated (sums of per-user shares per class),
    so it equals ``analyze_set(...).cohort`` to float64 rounding. ``progress(rows_done,
    rows_total)`` drives a progress bar (at most ~10 calls a second, the last at the end).
    """
    if out is not None:
        check_output(out, [path], what="output")
    t0 = time.perf_counter()
    fcfg = features_config or TemporalFeaturesConfig()
    report = _progress_wrap(progress)

    def job(grouped: bool) -> StreamSummary:
        sums = _CohortSums()

        def frames() -> Iterator[pd.DataFrame]:
            report(None)
            for chunk in iter_user_chunks(path, chunk_users=chunk_users, format=format, grouped=grouped,
                                          scratch_dir=scratch_dir):
                rows, shares = analyze_chunk(chunk.trajectories, cp_config=cp_config, features_config=fcfg,
                                             bocpd=bocpd, narratives=narratives, top_k=top_k)
                sums.add(rows, shares)
                yield rows
                report(chunk)

        written: Path | None = None
        if out is not None:
            written, _ = write_frames(out, frames())
        else:
            for _ in frames():
                pass
        return sums.result(fcfg, written, grouped, t0)

    return run_grouped(job)


# -------------------------------------------------------------------------------------------
# embedding
# -------------------------------------------------------------------------------------------
def posts_table(trajectories: TrajectorySet, embeddings: np.ndarray | None = None) -> Any:
    """The posts of ``trajectories`` as the Arrow table :func:`cvx_core.save_trajectories`
    writes (``user_id``, ``timestamp`` UTC, ``label``, ``text`` if any, ``embedding``
    fixed-size float32 list); ``embeddings`` ``[N, D]`` (posts in set order) replaces theirs."""
    import pyarrow as pa

    from cvx_core.data.budgets import check_dim

    lengths = trajectories.lengths
    if embeddings is None:
        embeddings = np.concatenate([tr.embeddings for tr in trajectories])
    flat = np.ascontiguousarray(embeddings, dtype=np.float32)
    d = check_dim(int(flat.shape[1]), source=trajectories.name)
    labels = [None if v < 0 else int(v) for v in trajectories.labels]
    columns: dict[str, Any] = {
        "user_id": pa.array(np.repeat(np.array(trajectories.user_ids, dtype=object), lengths).tolist(), type=pa.string()),
        "timestamp": pa.array(np.concatenate([tr.datetimes for tr in trajectories]).astype("datetime64[us]"),
                              type=pa.timestamp("us", tz="UTC")),
        "label": pa.array([labels[i] for i in np.repeat(np.arange(len(labels)), lengths)], type=pa.int64()),
    }
    if trajectories.has_text:
        columns["text"] = pa.array([t for tr in trajectories for t in (tr.texts or ())], type=pa.string())
    columns["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1), type=pa.float32()), d)
    return pa.table(columns)


def _chunk_texts(ts: TrajectorySet) -> list[str]:
    return [t for tr in ts for t in (tr.texts or ())]


def embed_stream(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    encoder: Any = None,
    cache: Any = None,
    batch_size: int = 64,
    chunk_users: int = DEFAULT_CHUNK_USERS,
    format: str | None = None,
    progress: ProgressCallback | None = None,
    scratch_dir: str | os.PathLike | None = None,
) -> StreamResult:
    """Embed the ``text`` of every post of ``path`` and write the trajectories (texts kept)
    to Parquet ``out`` in :func:`cvx_core.save_trajectories`' layout, chunk by chunk: the
    streamed :func:`cvx_core.data.text.embed_posts`. The encoder (``None``: the packaged
    MiniLM) is loaded once; ``cache`` as in :func:`cvx_core.data.text.embed_texts`."""
    from cvx_core.data.embedding_cache import open_cache
    from cvx_core.data.text import embed_texts, load_encoder

    check_output(out, [path, cache if isinstance(cache, (str, os.PathLike)) else None], what="output")
    t0 = time.perf_counter()
    report = _progress_wrap(progress)
    enc = load_encoder(encoder)
    store, owned = open_cache(cache)

    def job(grouped: bool) -> StreamResult:
        stats = {"posts": 0, "chunks": 0}

        def tables() -> Iterator[Any]:
            report(None)
            for chunk in iter_user_chunks(path, chunk_users=chunk_users, format=format, grouped=grouped,
                                          need_embeddings=False, scratch_dir=scratch_dir):
                ts = chunk.trajectories
                matrix = embed_texts(_chunk_texts(ts), encoder=enc, cache=store, batch_size=batch_size)
                stats["posts"] += ts.n_posts
                stats["chunks"] += 1
                yield posts_table(ts, matrix)
                report(chunk)

        written, _ = write_frames(out, tables())
        n_users = _count_users(written)
        return StreamResult(written, n_users, stats["posts"], stats["chunks"], grouped, time.perf_counter() - t0)

    try:
        return run_grouped(job)
    finally:
        if owned and store is not None:
            store.close()


def _count_users(path: Path) -> int:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    n, last = 0, None
    for b in pf.iter_batches(columns=["user_id"], batch_size=65536):
        ids = b.column(0).to_numpy(zero_copy_only=False)
        if ids.size:
            n += int((ids[1:] != ids[:-1]).sum()) + int(ids[0] != last)
            last = ids[-1]
    return n


# the old name of StreamSummary
__getattr__ = deprecated_names(__name__, {"StreamAnalysis": ("StreamSummary", lambda: StreamSummary)})
