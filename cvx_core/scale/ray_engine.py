"""Extraction and embedding on a Ray cluster (Ray Data), with the same output as the local,
streamed path (:mod:`cvx_core.scale.stream`).

Workers read their own data (``extract`` and ``analyze`` of a Parquet file grouped by user,
the default): the driver only plans, reading the ``user_id`` column alone to cut the file
into user-aligned row ranges (:mod:`cvx_core.scale.partitions`); one Ray task per range
reads the overlapping row groups itself, parses them with the loader's parser (rows
numbered as in the whole file), computes and returns the range's results; the driver folds
the ranges' file-wide facts in file order and writes the results in file order. The path
must be readable on every node (shared storage). Other inputs (CSV, JSON Lines, ``.npz``,
a file not grouped by user, ``embed``, or ``workers_read=False``) take the path below.

Driver-read path: the driver reads the input with :func:`~cvx_core.scale.stream.iter_user_chunks`
(validated, user-grouped, bounded memory) and puts each chunk of ``chunk_users`` users into
Ray's object store as a compact frame (``user_id``, ``ticks`` epoch time in ``unit``, ``label``,
``emb`` raw float32 bytes or ``text``); the object store spills to disk, so the driver
never holds the file. A Ray Dataset over those blocks runs ``map_batches`` one block (one
chunk) at a time: feature extraction as CPU tasks (``workers`` at once), embedding in
encoder actors that load the model once (one per GPU when the cluster has GPUs, else
``workers`` CPU actors). Results come back in input order (``preserve_order``) and are
written incrementally by the driver. Each block is rebuilt into the same float32
embeddings and datetimes, so the features are the local path's exactly and the
embeddings equal to float32 rounding.

Cluster: without ``address`` a local Ray cluster of ``workers`` CPUs is started (and shut
down afterwards); with ``address`` (``"auto"`` or ``"ray://host:10001"``) the job goes to
that running cluster, and this package is shipped to it (``runtime_env.py_modules``).
If Ray is already initialised in this process, that connection is used as it is.

Limits: on the driver-read path the input is read by the driver (one machine's disk and
network); the embedding cache (SQLite) must sit on a disk local to the actors (single node).
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from cvx_core.data.atomic import check_output
from cvx_core.data.formats.base import detect_format
from cvx_core.data.parse import FileRules
from cvx_core.data.trajectory import Trajectory, TrajectoryError, TrajectorySet
from cvx_core.features.config import TemporalFeaturesConfig
from cvx_core.scale.chunks import NotGroupedError
from cvx_core.scale.partitions import PartResult, Plan, auto_target_rows, check_against, plan_or_none, run_partition
from cvx_core.scale.stream import (
    DEFAULT_CHUNK_USERS,
    StreamSummary,
    _CohortSums,
    analyze_chunk,
    ProgressCallback,
    StreamResult,
    UserChunk,
    _count_users,
    _progress_wrap,
    features_frame,
    iter_user_chunks,
    posts_table,
    run_grouped,
    write_frames,
)

__all__ = ["extract_ray", "analyze_ray", "embed_ray", "ray_session", "DEFAULT_OBJECT_STORE_BYTES"]

DEFAULT_OBJECT_STORE_BYTES = 1 << 30


def _require_ray() -> Any:
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("--engine ray needs Ray: pip install 'cvx-core[scale]' (ray[data,train])") from exc
    return ray


@contextmanager
def ray_session(*, workers: int | None = None, address: str | None = None,
                object_store_memory: int | None = None) -> Iterator[Any]:
    """Connect to Ray for the duration of the block: reuse an initialised connection,
    join ``address``, or start a local cluster of ``workers`` CPUs (shut down at exit)."""
    ray = _require_ray()
    if ray.is_initialized():
        yield ray
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                              "log_to_driver": False}
    if address:  # ship this package's source to the cluster (its dependencies must be installed there)
        kwargs.update(address=address, runtime_env={"py_modules": [str(Path(__file__).resolve().parents[1])]})
    else:  # a local cluster never gets more CPUs than this machine has (cvx_core.data.budgets.cap_workers)
        kwargs.update(num_cpus=_local_cpus(workers),
                      object_store_memory=object_store_memory or DEFAULT_OBJECT_STORE_BYTES)
    ray.init(**kwargs)
    try:
        yield ray
    finally:
        ray.shutdown()


def _machine_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _local_cpus(workers: int | None) -> int:
    """CPUs of a local cluster: ``workers`` capped at this machine's CPUs (a warning if cut)."""
    from cvx_core.data.budgets import cap_workers

    n, note = cap_workers(workers, _machine_cpus())
    if note:
        warnings.warn(note, stacklevel=4)
    return n


def _concurrency(ray: Any, workers: int | None) -> int:
    """Parallel tasks/actors: ``workers`` capped at the cluster's CPUs (all of them by default)."""
    from cvx_core.data.budgets import cap_workers

    n, note = cap_workers(workers, int(ray.cluster_resources().get("CPU", 1)))
    if note:
        warnings.warn(note, stacklevel=3)
    return n


# -------------------------------------------------------------------------------------------
# chunk <-> block
# -------------------------------------------------------------------------------------------
def _block(ts: TrajectorySet, *, embeddings: bool, texts: bool) -> pd.DataFrame:
    """A chunk as a compact frame, one row per post (users contiguous, posts in time order)."""
    lengths = ts.lengths
    frame = pd.DataFrame({
        "user_id": np.repeat(np.array(ts.user_ids, dtype=object), lengths),
        "ticks": np.concatenate([tr.datetimes.astype(np.int64) for tr in ts]),
        "unit": np.datetime_data(ts.at(0).datetimes.dtype)[0] if len(ts) else "us",
        "label": np.repeat(ts.labels.astype(np.int64), lengths),
    })
    if embeddings:
        E = np.concatenate([tr.embeddings for tr in ts])
        frame["emb"] = [row.tobytes() for row in E]
    if texts:
        frame["text"] = [t for tr in ts for t in (tr.texts or ())]
    return frame


def _unblock(frame: pd.DataFrame, *, embeddings: np.ndarray | None = None) -> TrajectorySet:
    """The inverse of :func:`_block` (``embeddings`` ``[N, D]`` overrides ``emb``)."""
    ids = frame["user_id"].to_numpy(dtype=object)
    ticks = frame["ticks"].to_numpy(dtype=np.int64)
    unit = str(frame["unit"].iloc[0]) if len(frame) else "us"
    labels = frame["label"].to_numpy(dtype=np.int64)
    if embeddings is None:
        raw = b"".join(frame["emb"].tolist())
        E = np.frombuffer(raw, dtype=np.float32).reshape(len(frame), -1)
    else:
        E = np.asarray(embeddings, dtype=np.float32)
    texts = frame["text"].tolist() if "text" in frame.columns else None
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    stops = np.r_[starts[1:], len(ids)]
    trajs = [
        Trajectory(str(ids[a]), E[a:b], ticks[a:b].astype(f"datetime64[{unit}]"),
                   label=None if labels[a] < 0 else int(labels[a]),
                   texts=None if texts is None else tuple(texts[a:b]))
        for a, b in zip(starts, stops)
    ]
    return TrajectorySet(trajs)


def _unwrap(exc: BaseException) -> BaseException:
    """A Ray task error -> the library error raised inside it (for a clean message)."""
    cause = getattr(exc, "cause", None)
    seen = 0
    while cause is not None and seen < 5:
        if isinstance(cause, (TrajectoryError, ValueError, ImportError, FileNotFoundError)):
            return cause
        cause = getattr(cause, "cause", None) or cause.__cause__
        seen += 1
    return exc


def _run(ray: Any, chunks: Iterator[UserChunk], encode: Callable[[TrajectorySet], pd.DataFrame],
         build: Callable[[Any, Any], Any], report: Callable[[UserChunk | None], None]) -> Iterator[Any]:
    """Put every chunk in the object store, run ``build(dataset)`` and yield its output
    batches in input order (progress follows the chunks as their results arrive)."""
    import ray.data

    refs: list[Any] = []
    marks: list[Any] = []
    report(None)
    for chunk in chunks:
        refs.append(ray.put(encode(chunk.trajectories)))
        marks.append(SimpleNamespace(rows_done=chunk.rows_done, rows_total=chunk.rows_total))
    if not refs:
        return
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    ds = build(ray.data.from_pandas_refs(refs), len(refs))
    try:
        for k, out in enumerate(ds.iter_batches(batch_size=None, batch_format="pandas")):
            yield out
            report(marks[min(k, len(marks) - 1)])
    except Exception as exc:  # Ray wraps worker errors; raise the library's own
        inner = _unwrap(exc)
        if inner is exc:
            raise
        raise inner from None




# -------------------------------------------------------------------------------------------
# workers that read their own partition
# -------------------------------------------------------------------------------------------
def _part_task(path: str, part: Any, kind: str, options: Any, chunk_users: int) -> PartResult:
    """One Ray task: read partition ``part`` of ``path`` and extract (or analyse) its users."""
    if kind == "extract":  # Arrow tables: the conversion, half the cost of writing, runs here, not on the driver
        import pyarrow as pa

        cfg = None if options is None else TemporalFeaturesConfig.from_dict(options)
        return run_partition(path, part, lambda ts: pa.Table.from_pandas(features_frame(ts, cfg), preserve_index=False),
                             chunk_users=chunk_users)
    opts = dict(options)
    fcfg = TemporalFeaturesConfig.from_dict(opts.pop("features_config"))
    return run_partition(path, part, lambda ts: analyze_chunk(ts, features_config=fcfg, **opts),
                         chunk_users=chunk_users)


def _plan(path: str | os.PathLike, format: str | None, workers_read: bool, concurrency: int,
          partition_rows: int | None) -> Plan | None:
    """The partitions workers read, or ``None`` for the driver-read path (raises
    :class:`NotGroupedError` for an input not grouped by user)."""
    if not workers_read:
        return None
    from cvx_core.scale.chunks import count_rows

    fmt = detect_format(Path(path).name, format)
    if fmt != "parquet":
        return None
    target = partition_rows or auto_target_rows(count_rows(path, format=fmt), concurrency)
    return plan_or_none(os.path.abspath(path), fmt, target)


def _run_parts(ray: Any, plan: Plan, kind: str, options: Any, *, concurrency: int, chunk_users: int,
               report: Callable[[Any], None]) -> Iterator[PartResult]:
    """One task per partition, at most ``concurrency`` running; results folded and yielded
    in file order (a data error raises the message one reader of the whole file gives)."""
    task = ray.remote(num_cpus=1, max_retries=0)(_part_task)
    todo = list(plan.partitions)[::-1]
    running: dict[Any, Any] = {}
    done: dict[int, PartResult] = {}
    rules = FileRules()
    report(None)
    try:
        for part in plan.partitions:
            while part.index not in done:
                while todo and len(running) < concurrency:
                    nxt = todo.pop()
                    running[task.remote(plan.path, nxt, kind, options, chunk_users)] = nxt
                ready, _ = ray.wait(list(running), num_returns=1)
                for ref in ready:
                    got = running.pop(ref)
                    try:
                        done[got.index] = ray.get(ref)
                    except Exception as exc:  # Ray wraps worker errors; raise the library's own
                        inner = _unwrap(exc)
                        if inner is exc:
                            raise
                        raise inner from None
            res = done.pop(part.index)
            if res.not_grouped:
                raise NotGroupedError(f"a user of rows {part.start + 1}-{part.stop}")
            check_against(plan.path, part, res, rules)
            report(SimpleNamespace(rows_done=part.stop, rows_total=plan.n_rows))
            yield res
    finally:
        for ref in running:
            ray.cancel(ref)


# -------------------------------------------------------------------------------------------
# extraction
# -------------------------------------------------------------------------------------------
def _extract_block(config: dict[str, Any] | None) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def fn(frame: pd.DataFrame) -> pd.DataFrame:
        cfg = None if config is None else TemporalFeaturesConfig.from_dict(config)
        return features_frame(_unblock(frame), cfg)

    return fn


def _local_dtypes(frame: pd.DataFrame) -> pd.DataFrame:
    """Ray hands frames back through Arrow (Arrow-backed strings and nullable integers):
    restore the dtypes :func:`features_frame` gives, so the file is byte-for-byte the same schema."""
    out = pd.DataFrame(frame.iloc[:, 2:].to_numpy(dtype=np.float64), columns=list(frame.columns[2:]))
    out.insert(0, "label", pd.array([None if pd.isna(v) else int(v) for v in frame["label"].tolist()], dtype="Int64"))
    out.insert(0, "user_id", pd.Series(frame["user_id"].astype(object).to_numpy(), dtype=object))
    return out


def extract_ray(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    config: TemporalFeaturesConfig | None = None,
    workers: int | None = None,
    address: str | None = None,
    chunk_users: int = DEFAULT_CHUNK_USERS,
    format: str | None = None,
    progress: ProgressCallback | None = None,
    object_store_memory: int | None = None,
    scratch_dir: str | os.PathLike | None = None,
    workers_read: bool = True,
    partition_rows: int | None = None,
) -> StreamResult:
    """:func:`cvx_core.scale.stream.extract_stream` on Ray: the same Parquet ``out``
    (row order and values), computed by ``workers`` parallel tasks on the cluster.

    ``workers_read`` (default): for a Parquet file grouped by user, each task reads its own
    user-aligned row range of about ``partition_rows`` rows (default: about four ranges per
    worker) and the driver only plans; ``False`` reads on the driver (the path every other
    input takes)."""
    check_output(out, [path], what="output")  # never overwrite the input
    t0 = time.perf_counter()
    report = _progress_wrap(progress)
    cfg = None if config is None else config.to_dict()
    with ray_session(workers=workers, address=address, object_store_memory=object_store_memory) as ray:
        concurrency = _concurrency(ray, workers)

        def job(grouped: bool) -> StreamResult:
            plan = _plan(path, format, workers_read, concurrency, partition_rows) if grouped else None
            if plan is not None:
                stats = {"posts": 0, "chunks": 0}

                def parts() -> Iterator[pd.DataFrame]:
                    for res in _run_parts(ray, plan, "extract", cfg, concurrency=concurrency,
                                          chunk_users=chunk_users, report=report):
                        stats["posts"] += res.n_posts
                        stats["chunks"] += res.n_chunks
                        yield from res.outputs

                written, n = write_frames(out, parts())
                return StreamResult(written, n, stats["posts"], stats["chunks"], True, time.perf_counter() - t0)
            stats = {"posts": 0, "chunks": 0}

            def chunks() -> Iterator[UserChunk]:
                for c in iter_user_chunks(path, chunk_users=chunk_users, format=format, grouped=grouped,
                                          scratch_dir=scratch_dir):
                    stats["posts"] += c.trajectories.n_posts
                    stats["chunks"] += 1
                    yield c

            def build(ds: Any, n: int) -> Any:
                return ds.map_batches(_extract_block(cfg), batch_size=None, batch_format="pandas",
                                      concurrency=concurrency, num_cpus=1)

            frames = _run(ray, chunks(), lambda ts: _block(ts, embeddings=True, texts=False), build, report)
            written, n = write_frames(out, (_local_dtypes(f) for f in frames))
            return StreamResult(written, n, stats["posts"], stats["chunks"], grouped, time.perf_counter() - t0)

        return run_grouped(job)


# -------------------------------------------------------------------------------------------
# analysis
# -------------------------------------------------------------------------------------------
def _analyze_block(options: dict[str, Any]) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def fn(frame: pd.DataFrame) -> pd.DataFrame:
        opts = dict(options)
        fc = opts.pop("features_config")
        rows, shares = analyze_chunk(_unblock(frame), features_config=TemporalFeaturesConfig.from_dict(fc), **opts)
        rows["_shares"] = [s.tobytes() for s in np.ascontiguousarray(shares, dtype=np.float64)]
        return rows

    return fn


def analyze_ray(
    path: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    cp_config: Any = None,
    features_config: TemporalFeaturesConfig | None = None,
    bocpd: Any = False,
    narratives: bool = False,
    workers: int | None = None,
    address: str | None = None,
    chunk_users: int = DEFAULT_CHUNK_USERS,
    format: str | None = None,
    progress: ProgressCallback | None = None,
    object_store_memory: int | None = None,
    scratch_dir: str | os.PathLike | None = None,
    top_k: int = 10,
    workers_read: bool = True,
    partition_rows: int | None = None,
) -> StreamSummary:
    """:func:`cvx_core.scale.stream.analyze_stream` on Ray: chunks analysed by ``workers``
    parallel tasks, per-user rows written and cohort sums accumulated by the driver in order.
    ``workers_read`` / ``partition_rows`` as in :func:`extract_ray`."""
    if out is not None:
        check_output(out, [path], what="output")
    t0 = time.perf_counter()
    report = _progress_wrap(progress)
    fcfg = features_config or TemporalFeaturesConfig()
    options = {"cp_config": cp_config, "features_config": fcfg.to_dict(), "bocpd": bocpd,
               "narratives": narratives, "top_k": top_k}
    with ray_session(workers=workers, address=address, object_store_memory=object_store_memory) as ray:
        concurrency = _concurrency(ray, workers)

        def job(grouped: bool) -> StreamSummary:
            sums = _CohortSums()
            plan = _plan(path, format, workers_read, concurrency, partition_rows) if grouped else None

            def build(ds: Any, n: int) -> Any:
                return ds.map_batches(_analyze_block(options), batch_size=None, batch_format="pandas",
                                      concurrency=concurrency, num_cpus=1)

            def driver_read() -> Iterator[pd.DataFrame]:
                chunks = iter_user_chunks(path, chunk_users=chunk_users, format=format, grouped=grouped,
                                          scratch_dir=scratch_dir)
                for frame in _run(ray, chunks, lambda ts: _block(ts, embeddings=True, texts=False), build, report):
                    shares = np.stack([np.frombuffer(b, dtype=np.float64) for b in frame["_shares"].tolist()])
                    rows = _local_rows(frame.drop(columns=["_shares"]))
                    sums.add(rows, shares)
                    yield rows

            def workers_read_() -> Iterator[pd.DataFrame]:
                for res in _run_parts(ray, plan, "analyze", options, concurrency=concurrency,
                                      chunk_users=chunk_users, report=report):
                    for rows, shares in res.outputs:
                        sums.add(rows, shares)
                        yield rows

            frames = driver_read if plan is None else workers_read_

            written = None
            if out is not None:
                written, _ = write_frames(out, frames())
            else:
                for _ in frames():
                    pass
            return sums.result(fcfg, written, grouped, t0)

        return run_grouped(job)


def _local_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Per-user analysis rows back from Arrow: plain Python lists and the local dtypes."""
    out = pd.DataFrame({c: [v.tolist() if hasattr(v, "tolist") and not np.isscalar(v) else v
                            for v in frame[c].tolist()] for c in frame.columns})
    out["user_id"] = pd.Series(out["user_id"].astype(object).to_numpy(), dtype=object)
    out["label"] = pd.array([None if pd.isna(v) else int(v) for v in frame["label"].tolist()], dtype="Int64")
    for c in ("n_posts", "n_changepoints"):
        out[c] = out[c].astype(np.int64)
    for c in ("drift_norm", "max_change_probability"):
        if c in out:
            out[c] = out[c].astype(np.float64)
    return out


# -------------------------------------------------------------------------------------------
# embedding
# -------------------------------------------------------------------------------------------
class _EncoderActor:
    """Holds one encoder (loaded once per actor, on its GPU if it was given one)."""

    def __init__(self, encoder: Any, cache: Any, batch_size: int, device: str, backend: str | None = None) -> None:
        from cvx_core.data.text import load_encoder

        self.encoder = load_encoder(encoder, device=device, backend=backend) \
            if isinstance(encoder, (str, os.PathLike)) or encoder is None else load_encoder(encoder)
        self.cache = cache
        self.batch_size = batch_size

    def __call__(self, frame: pd.DataFrame) -> pd.DataFrame:
        from cvx_core.data.text import embed_texts

        texts = frame["text"].tolist()
        matrix = embed_texts(texts, encoder=self.encoder, cache=self.cache, batch_size=self.batch_size)
        out = frame.drop(columns=["text"]).copy()
        out["emb"] = [row.tobytes() for row in np.ascontiguousarray(matrix, dtype=np.float32)]
        out["text"] = texts
        return out


def embed_ray(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    encoder: Any = None,
    cache: Any = None,
    batch_size: int = 64,
    workers: int | None = None,
    address: str | None = None,
    chunk_users: int = DEFAULT_CHUNK_USERS,
    format: str | None = None,
    progress: ProgressCallback | None = None,
    object_store_memory: int | None = None,
    scratch_dir: str | os.PathLike | None = None,
    encoder_backend: str | None = None,
) -> StreamResult:
    """:func:`cvx_core.scale.stream.embed_stream` on Ray: encoder actors (one per GPU when
    the cluster has GPUs, else ``workers`` CPU actors) embed the chunks; the driver writes
    the trajectories in :func:`cvx_core.save_trajectories`' layout. ``encoder``: ``None``
    / ``"minilm"`` / a model folder visible to every node / a picklable callable;
    ``encoder_backend`` as ``backend`` in :func:`cvx_core.data.text.load_encoder`."""
    check_output(out, [path], what="output")
    t0 = time.perf_counter()
    report = _progress_wrap(progress)
    with ray_session(workers=workers, address=address, object_store_memory=object_store_memory) as ray:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if gpus:
            concurrency, resources, device = gpus, {"num_gpus": 1}, "cuda"
        else:
            concurrency = _concurrency(ray, workers)
            resources, device = {"num_cpus": 1}, "cpu"
        cache_arg = None if cache is None else str(cache) if isinstance(cache, (str, os.PathLike)) else cache

        def job(grouped: bool) -> StreamResult:
            stats = {"posts": 0, "chunks": 0}

            def chunks() -> Iterator[UserChunk]:
                for c in iter_user_chunks(path, chunk_users=chunk_users, format=format, grouped=grouped,
                                          need_embeddings=False, scratch_dir=scratch_dir):
                    stats["posts"] += c.trajectories.n_posts
                    stats["chunks"] += 1
                    yield c

            def build(ds: Any, n: int) -> Any:
                return ds.map_batches(_EncoderActor, fn_constructor_args=(encoder, cache_arg, batch_size, device,
                                                                          encoder_backend),
                                      batch_size=None, batch_format="pandas", concurrency=min(concurrency, n),
                                      **resources)

            def tables() -> Iterator[Any]:
                for frame in _run(ray, chunks(), lambda ts: _block(ts, embeddings=False, texts=True), build, report):
                    ts = _unblock(frame)
                    yield posts_table(ts)

            written, _ = write_frames(out, tables())
            return StreamResult(written, _count_users(written), stats["posts"], stats["chunks"], grouped,
                                time.perf_counter() - t0)

        return run_grouped(job)
