"""Planning a Parquet post table into user-aligned row ranges, and reading one range with
the loader's rules: what lets Ray workers read their own data while the driver only plans.

Planning (:func:`plan_parquet`, on the driver) reads the ``user_id`` column alone, batch by
batch, finds where each user's rows start and cuts the file into row ranges of about
``target_rows`` rows at user starts, so no user spans two ranges. The same pass checks that
the input is grouped by user (a user id that starts twice raises
:class:`~cvx_core.scale.chunks.NotGroupedError`: the caller falls back to the driver-read,
out-of-core grouped path). Anything the cheap pass cannot judge (no ``user_id`` column, an
id column of an unusual type, no rows) raises :class:`Unplannable`: the caller reads on the
driver, whose parser gives the loader's message.

Reading (:func:`run_partition`, on a worker) reads only the row groups that overlap its
range, parses each batch with :func:`cvx_core.data.parse.parse_posts` (``row_offset``: the
batch's rows are numbered as in the whole file, so a message names the file, row and
column exactly as the loader does) under one :class:`FileRules` for the range, cuts chunks
of ``chunk_users`` users and runs ``job`` on each. It returns the outputs and the range's
file-wide facts (UTC offset or none, list embedding width), which the driver folds in
file order (:func:`check_against`): a range that disagrees with the ranges before it, or
that raised, is parsed again on the driver under the earlier ranges' rules, which raises
the message a single reader gives.

Memory on a worker: one read batch, the pending rows of at most ``chunk_users`` users and
the range's outputs. On the driver: the planning pass's batch of ids and one id per user.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cvx_core.data.parse import FileRules, PostTable, parse_posts
from cvx_core.data.trajectory import TrajectoryError, TrajectorySet
from cvx_core.scale.chunks import BATCH_ROWS, NotGroupedError, chunks_of, parquet_batches

__all__ = ["Partition", "Plan", "PartResult", "Unplannable", "plan_parquet", "run_partition", "read_partition",
           "check_against", "auto_target_rows", "plan_or_none"]

_ID_BATCH = 1 << 16


class Unplannable(Exception):
    """The cheap planning pass cannot cut this file; read it on the driver instead."""


@dataclass(frozen=True)
class Partition:
    """File rows ``start:stop`` (0-based), all of them users that start and end inside;
    ``row_groups``: the Parquet row groups that overlap it, the first starting at file row
    ``group_start``."""

    index: int
    start: int
    stop: int
    n_users: int
    row_groups: tuple[int, ...]
    group_start: int


@dataclass(frozen=True)
class Plan:
    """The partitions of one file, its rows and users, and what planning cost (seconds)."""

    path: str
    partitions: tuple[Partition, ...]
    n_rows: int
    n_users: int
    seconds: float


@dataclass(frozen=True, eq=False)
class PartResult:
    """What a worker sends back for one partition.

    ``outputs``: ``job``'s return value per chunk, in file order; ``offset_kind`` / ``width``:
    the range's file-wide facts (``FileRules``); ``error``: ``(message, file, row, column,
    user)`` of a :class:`TrajectoryError` raised while reading or parsing, else ``None``;
    ``not_grouped``: a user's rows were not contiguous after all (ids equal only once parsed);
    ``seconds`` / ``cpu_seconds``: the worker's wall and CPU time for the partition.
    """

    index: int
    outputs: tuple[Any, ...]
    n_posts: int
    n_users: int
    n_chunks: int
    offset_kind: tuple[bool, str] | None
    width: int | None
    error: tuple[str, str | None, int | None, str | None, str | None] | None = None
    not_grouped: bool = False
    seconds: float = 0.0
    cpu_seconds: float = 0.0


def auto_target_rows(n_rows: int, workers: int) -> int:
    """About four ranges per worker (load balance), each between 4,096 and 262,144 rows."""
    return int(min(262_144, max(4_096, -(-n_rows // max(1, 4 * workers)))))


def _id_array(batch: Any) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = batch.column(0)
    if pa.types.is_dictionary(arr.type):
        arr = pc.cast(arr, arr.type.value_type)
    ok = (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type) or pa.types.is_integer(arr.type)
          or pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type))
    if not ok:
        raise Unplannable(f"user_id column of type {arr.type}")
    return arr


def _user_starts(arr: Any, prev: Any) -> np.ndarray:
    """0-based rows of ``arr`` where a user starts (``prev``: the last id of the batch before)."""
    import pyarrow.compute as pc

    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    same = pc.fill_null(pc.equal(arr[1:], arr[:-1]), False).to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, ~same])
    first = arr[0].as_py()
    if prev is not None and first is not None and first == prev:
        starts = starts[1:]
    return starts


def _row_group_starts(pf: Any) -> np.ndarray:
    md = pf.metadata
    return np.r_[0, np.cumsum([md.row_group(g).num_rows for g in range(md.num_row_groups)])].astype(np.int64)


def plan_parquet(path: str | os.PathLike, *, target_rows: int) -> Plan:
    """Cut the Parquet post table at ``path`` into user-aligned ranges of about
    ``target_rows`` rows from its ``user_id`` column alone.

    Raises :class:`NotGroupedError` (a user's rows are not contiguous) or
    :class:`Unplannable` (read it on the driver)."""
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    p = Path(path)
    try:
        pf = pq.ParquetFile(p, pre_buffer=False)
        if "user_id" not in pf.schema_arrow.names:
            raise Unplannable("no user_id column")
        batches = pf.iter_batches(batch_size=_ID_BATCH, columns=["user_id"])
        groups = _row_group_starts(pf)
        seen: set[Any] = set()
        cuts, users = [0], [0]
        prev, row = None, 0
        for batch in batches:
            arr = _id_array(batch)
            starts = _user_starts(arr, prev)
            for uid in arr.take(starts).to_pylist():
                if uid in seen:
                    raise NotGroupedError(str(uid))
                seen.add(uid)
            for s in (starts + row).tolist():
                if s - cuts[-1] >= target_rows:
                    cuts.append(s)
                    users.append(0)
                users[-1] += 1
            if len(arr):
                prev = arr[len(arr) - 1].as_py()
            row += len(arr)
    except (NotGroupedError, Unplannable):
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file: the driver's reader names what is wrong
        raise Unplannable(str(exc)) from None
    if row == 0:
        raise Unplannable("no rows")
    cuts.append(row)
    parts = []
    for k, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])):
        g0 = int(np.searchsorted(groups, a, side="right") - 1)
        g1 = int(np.searchsorted(groups, b, side="left"))
        parts.append(Partition(k, int(a), int(b), users[k], tuple(range(g0, g1)), int(groups[g0])))
    return Plan(str(p), tuple(parts), row, len(seen), time.perf_counter() - t0)


def read_partition(path: str | os.PathLike, part: Partition, *, rules: FileRules,
                   need_embeddings: bool = True, batch_rows: int = BATCH_ROWS) -> Iterator[PostTable]:
    """Validated :class:`~cvx_core.data.parse.PostTable` batches of rows ``part.start:part.stop`` (read from the
    overlapping row groups only), numbered as in the whole file, under ``rules``."""
    p = Path(path)
    for batch, row in parquet_batches(p, batch_rows, row_groups=part.row_groups, first_row=part.group_start):
        lo, hi = max(part.start, row), min(part.stop, row + batch.num_rows)
        if hi > lo:
            yield parse_posts(batch.slice(lo - row, hi - lo), source=p.name, row_offset=lo, rules=rules,
                              need_embeddings=need_embeddings)
        if row + batch.num_rows >= part.stop:
            return


def run_partition(path: str | os.PathLike, part: Partition, job: Callable[[TrajectorySet], Any], *,
                  chunk_users: int, need_embeddings: bool = True, batch_rows: int = BATCH_ROWS) -> PartResult:
    """Read partition ``part`` of ``path`` and run ``job`` on each chunk of ``chunk_users``
    users (what a Ray worker does). Errors in the data come back in :attr:`PartResult.error`."""
    t0, c0 = time.perf_counter(), time.process_time()
    rules = FileRules()
    outputs: list[Any] = []
    posts = users = 0
    try:
        batches = read_partition(path, part, rules=rules, need_embeddings=need_embeddings, batch_rows=batch_rows)
        for chunk in chunks_of(batches, chunk_users=chunk_users, rows_total=part.stop - part.start,
                               need_embeddings=need_embeddings):
            outputs.append(job(chunk.trajectories))
            posts += chunk.trajectories.n_posts
            users += len(chunk.trajectories)
    except NotGroupedError:
        return PartResult(part.index, (), 0, 0, 0, rules.offset_kind, rules.width, not_grouped=True)
    except TrajectoryError as exc:
        err = (str(exc), exc.file, exc.row, exc.column, exc.user)
        return PartResult(part.index, (), 0, 0, 0, rules.offset_kind, rules.width, error=err)
    return PartResult(part.index, tuple(outputs), posts, users, len(outputs), rules.offset_kind, rules.width,
                      seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - c0)


def check_against(path: str | os.PathLike, part: Partition, res: PartResult, rules: FileRules, *,
                  need_embeddings: bool = True) -> None:
    """Fold partition ``part``'s facts into ``rules`` (the file's so far, in file order).

    A partition that raised, or whose UTC offset kind or embedding width disagrees with the
    partitions before it, is parsed again here under ``rules``: that raises the message one
    reader of the whole file gives (the worker's own if the re-read passes)."""
    clash = (rules.offset_kind is not None and res.offset_kind is not None
             and res.offset_kind[0] != rules.offset_kind[0]) or \
            (rules.width is not None and res.width is not None and res.width != rules.width)
    if res.error is not None or clash:
        seeded = FileRules(offset_kind=rules.offset_kind, width=rules.width)
        for _ in read_partition(path, part, rules=seeded, need_embeddings=need_embeddings):
            pass
    if res.error is not None:
        message, file, row, column, user = res.error
        raise TrajectoryError(message, file=file, row=row, column=column, user=user)
    if rules.offset_kind is None:
        rules.offset_kind = res.offset_kind
    if rules.width is None:
        rules.width = res.width


def plan_or_none(path: str | os.PathLike, fmt: str, target_rows: int) -> Plan | None:
    """The plan of a Parquet file, or ``None`` when it must be read on the driver (another
    format, or a file the planning pass cannot cut). Raises :class:`NotGroupedError`."""
    if fmt != "parquet":
        return None
    try:
        return plan_parquet(path, target_rows=target_rows)
    except Unplannable:
        return None

