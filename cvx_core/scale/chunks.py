"""Reading a post table of any size as chunks of complete users, with the loader's rules.

Every batch goes through :func:`cvx_core.data.parse.parse_posts` with one
:class:`~cvx_core.data.parse.FileRules` for the whole file, so the file-wide rules hold
across batches (the number id ``1`` next to the text id ``"1"``, times with and without a
UTC offset, the embedding's layout and D, JSON Lines keys) and every message is the
loader's, naming the row (and line) of the whole file. Batches come from the loader's own
format readers: pyarrow's streaming CSV reader, JSON Lines record by record, Parquet record
batches through a small read buffer, ``.npz`` arrays row by row
(:func:`cvx_core.data.formats.npz.npz_batches`: memory-mapped when stored, decompressed as
taken when compressed; a compressed Fortran-order ``embeddings`` is decoded whole only
within ``CVX_MAX_NPZ_MB``).

Input not grouped by user. Rows of one user are expected to be contiguous (every file
``save_trajectories`` or ``embed`` writes is). If a user that was already closed appears
again, the pass is abandoned (outputs are atomic) and the input is grouped out of core by
hash partitioning: a second pass parses the file in order, exactly as above (so every
problem is found and named in file order), and writes the *validated* rows (ids, times,
labels, texts, embeddings and each row's original row and line numbers) to at most 256
Parquet partitions by a hash of the user id; users then come out partition by partition
(first appearance within a partition). Per-user metadata (constant extra columns) is not
carried through the partitions. A single write pass and a single read pass, no new
dependency.

Memory: one read batch, the pending rows of at most ``chunk_users`` users, and one output
chunk, plus the file-wide rules (about 100 bytes per user id). Never the file.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cvx_core.data.atomic import scratch_dir as _new_scratch_dir
from cvx_core.data.formats.base import detect_format, first_line
from cvx_core.data.formats.csv import csv_batches
from cvx_core.data.formats.dispatch import read_table
from cvx_core.data.formats.jsonl import jsonl_batches
from cvx_core.data.formats.npz import npz_batches, npz_rows
from cvx_core.data.parse import FileRules, PostTable, RowIndex, parse_posts
from cvx_core.data.trajectory import TrajectoryError, TrajectorySet

__all__ = [
    "UserChunk",
    "NotGroupedError",
    "iter_user_chunks",
    "iter_posts",
    "run_grouped",
    "count_rows",
    "chunks_of",
    "parquet_batches",
    "DEFAULT_CHUNK_USERS",
    "BATCH_ROWS",
]

DEFAULT_CHUNK_USERS = 512
BATCH_ROWS = 4096
_READ_BUFFER = 4 << 20
_PARTITION_BYTES = 64 << 20
_MAX_PARTITIONS = 256


@dataclass(frozen=True, eq=False)
class UserChunk:
    """``chunk_users`` (or fewer, at the end) complete users.

    Attributes:
        trajectories: the users, in file order (grouped input) or partition order.
        rows_done: input rows consumed so far (for progress); ``rows_total`` all input rows
            (counted lines for CSV/JSON Lines, so approximate when cells hold line breaks).
    """

    trajectories: TrajectorySet
    rows_done: int
    rows_total: int


class NotGroupedError(Exception):
    """Raised inside a grouped pass when a closed user reappears (the caller regroups)."""

    def __init__(self, user: str) -> None:
        super().__init__(f"user {user!r} appears again after other users' rows")
        self.user = user


def _check_file(path: Path, fmt: str) -> None:
    if not path.exists():
        raise TrajectoryError(f"{path}: no such file", file=str(path))
    if path.is_dir():
        raise TrajectoryError(f"{path}: is a folder, expected a file", file=str(path))
    if path.stat().st_size == 0:
        raise TrajectoryError(f"{path.name}: the file is empty (0 bytes); expected a {fmt} table of posts",
                              file=path.name)


def count_rows(path: str | os.PathLike, *, format: str | None = None) -> int:
    """Rows of a post table without reading it: Parquet metadata, or counted lines of a
    text file (header and blank lines excluded; approximate if cells hold line breaks)."""
    p = Path(path)
    fmt = detect_format(p.name, format)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            return int(pq.ParquetFile(p).metadata.num_rows)
        except Exception:  # noqa: BLE001 - the reader reports an unreadable file properly
            return 0
    if fmt == "npz":
        try:
            return npz_rows(p, p.name)
        except TrajectoryError:  # the reader reports it properly
            return 0
    n = blank = 0
    last = b"\n"
    with open(p, "rb") as fh:
        while block := fh.read(1 << 22):
            n += block.count(b"\n")
            blank += block.count(b"\n\n")
            last = block[-1:]
    n += last != b"\n"
    return max(n - blank - (1 if fmt == "csv" else 0), 0)


def parquet_batches(path: Path, batch_rows: int, *, row_groups: Sequence[int] | None = None,
                    first_row: int = 0) -> Iterator[tuple[Any, int]]:
    """``(record batch, rows of the file before it)``, of the whole file or of the row
    groups ``row_groups`` (consecutive; ``first_row``: the file row where the first of them
    starts). An unreadable file is refused by the loader's reader (its message), a damaged
    row group met later naming the file."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path, buffer_size=_READ_BUFFER, pre_buffer=False)
        batches = pf.iter_batches(batch_size=batch_rows, row_groups=None if row_groups is None else list(row_groups))
    except Exception as exc:  # noqa: BLE001 - the loader's reader names what is wrong with the file
        read_table(path, path.name, "parquet")
        raise TrajectoryError(f"{path.name}: not a readable Parquet file ({first_line(exc)})", file=path.name) from None
    offset = first_row
    while True:
        try:
            b = next(batches, None)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - a damaged page or row group
            raise TrajectoryError(
                f"{path.name}: not a readable Parquet file after row {offset} ({first_line(exc)})", file=path.name
            ) from None
        if b is None:
            return
        yield b, offset
        offset += b.num_rows


def iter_posts(
    path: str | os.PathLike,
    *,
    format: str | None = None,
    need_embeddings: bool = True,
    batch_rows: int = BATCH_ROWS,
) -> Iterator[PostTable]:
    """The post table at ``path`` as validated :class:`PostTable` batches of at most
    ``batch_rows`` rows, in file order, under the file-wide rules of the loader (the same
    refusals and messages as :func:`cvx_core.data.io.read_posts`, rows numbered in the file)."""
    p = Path(path)
    fmt = detect_format(p.name, format)
    _check_file(p, fmt)
    rules = FileRules()
    seen = 0
    if fmt == "parquet":
        for batch, offset in parquet_batches(p, batch_rows):
            posts = parse_posts(batch, source=p.name, row_offset=offset, rules=rules, need_embeddings=need_embeddings)
            seen += len(posts)
            yield posts
    elif fmt in ("csv", "jsonl"):
        reader = csv_batches if fmt == "csv" else jsonl_batches
        for table in reader(p, p.name, batch_rows=batch_rows):
            try:
                posts = parse_posts(table, source=p.name, rules=rules, need_embeddings=need_embeddings)
            except TrajectoryError as exc:
                if fmt != "jsonl" or exc.row is not None:
                    raise
                posts = _with_later_keys(p, table, rules, need_embeddings, exc)
            seen += len(posts)
            yield posts
    elif fmt == "npz":  # stored members memory-mapped, compressed ones decompressed as taken
        for table in npz_batches(p, p.name, batch_rows=batch_rows):
            posts = parse_posts(table, source=p.name, rules=rules, need_embeddings=need_embeddings)
            seen += len(posts)
            yield posts
    else:
        raise ValueError(f"unknown format {fmt}")
    if seen == 0:  # a header and no rows: the loader's own message
        parse_posts(read_table(p if fmt == "parquet" else p.read_bytes(), p.name, fmt), source=p.name,
                    need_embeddings=need_embeddings)


def _jsonl_keys(path: Path) -> list[str]:
    """Every top-level key of a JSON Lines file, in order of first appearance."""
    keys: dict[str, None] = {}
    for table in jsonl_batches(path, path.name, batch_rows=BATCH_ROWS):
        for k in table.columns:
            keys.setdefault(k, None)
    return list(keys)


def _with_later_keys(path: Path, table: Any, rules: FileRules, need_embeddings: bool,
                     exc: TrajectoryError) -> PostTable:
    """A file-wide refusal of a JSON Lines batch (a missing column, a layout) is checked
    against the keys of the whole file, as the loader sees them: a key that only later
    records have is absent (null) in this batch's records, not missing from the file."""
    keys = _jsonl_keys(path)
    if set(keys) <= set(rules.columns or ()) | set(table.columns):
        raise exc
    rules.columns = keys
    return parse_posts(table.with_columns(keys), source=path.name, rules=rules, need_embeddings=need_embeddings)


def _to_set(posts: PostTable, need_embeddings: bool) -> TrajectorySet:
    if need_embeddings or posts.embeddings is not None:
        return posts.to_set()
    if posts.texts is None:
        raise TrajectoryError(f"{posts.file}: missing column 'text'; expected the posts' texts to embed",
                              file=posts.file, column="text")
    empty = [i for i, t in enumerate(posts.texts) if not str(t).strip()]
    if empty:
        i = int(empty[0])
        raise TrajectoryError(
            f"{posts.file}: {posts.where(i)}, column 'text': empty or missing text; expected the post's text",
            file=posts.file, row=posts.rows.number(i), column="text")
    # a table of texts (for ``embed``): placeholder one-dimensional embeddings
    return posts.to_set(np.zeros((len(posts), 1), dtype=np.float32))


def _user_starts(ids: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.zeros(0, dtype=np.int64)


def _grouped_chunks(path: Path, fmt: str, chunk_users: int, total: int, need_embeddings: bool,
                    batch_rows: int) -> Iterator[UserChunk]:
    posts = iter_posts(path, format=fmt, need_embeddings=need_embeddings, batch_rows=batch_rows)
    yield from chunks_of(posts, chunk_users=chunk_users, rows_total=total, need_embeddings=need_embeddings)


def chunks_of(batches: Iterator[PostTable], *, chunk_users: int, rows_total: int,
              need_embeddings: bool = True) -> Iterator[UserChunk]:
    """Validated batches of one file (or of one user-aligned part of it), in file order ->
    chunks of ``chunk_users`` complete users. Raises :class:`NotGroupedError` when a user's
    rows are not contiguous."""
    closed: set[str] = set()
    pending: list[PostTable] = []
    n_complete = 0  # complete users in ``pending`` (the last user stays open)
    open_user: str | None = None
    done = 0
    total = rows_total
    for posts in batches:
        ids = posts.user_ids
        for k, s in enumerate(_user_starts(ids)):
            uid = ids[s]
            if k == 0 and uid == open_user:
                continue
            if uid in closed:
                raise NotGroupedError(uid)
            if open_user is not None:
                closed.add(open_user)
                n_complete += 1
            open_user = uid
        pending.append(posts)
        done += len(posts)
        if n_complete >= chunk_users:
            # cut at user boundaries, every ``chunk_users`` complete users; the last (open)
            # user may continue in the next batch and stays pending
            joined = PostTable.concat(pending)
            starts = _user_starts(joined.user_ids)
            a = 0
            while n_complete >= chunk_users:
                cut = int(starts[a + chunk_users])
                yield UserChunk(_to_set(joined.slice(int(starts[a]), cut), need_embeddings), done, total)
                a += chunk_users
                n_complete -= chunk_users
            pending = [joined.slice(int(starts[a]), len(joined))]
    if pending:
        yield UserChunk(_to_set(PostTable.concat(pending), need_embeddings), done, max(total, done))


# -------------------------------------------------------------------------------------------
# out-of-core grouping
# -------------------------------------------------------------------------------------------
def _bucket_of(ids: Sequence[str], n: int) -> np.ndarray:
    return (pd.util.hash_array(np.asarray(list(ids), dtype=object)) % np.uint64(n)).astype(np.int64)


def _validated_table(posts: PostTable, sel: np.ndarray) -> Any:
    """Rows ``sel`` of validated posts as an Arrow table (the partition files' layout)."""
    import pyarrow as pa

    rows = posts.rows.take(sel)
    cols: dict[str, Any] = {
        "user_id": pa.array(posts.user_ids[sel].tolist(), type=pa.string()),
        "us": pa.array(posts.datetimes[sel].astype(np.int64), type=pa.int64()),
        "label": pa.array(np.zeros(len(sel), np.int64) if posts.labels is None else posts.labels[sel], type=pa.int64(),
                          mask=np.ones(len(sel), bool) if posts.labels is None else ~posts.label_present[sel]),
        "text": pa.nulls(len(sel), pa.string()) if posts.texts is None
        else pa.array(posts.texts[sel].tolist(), type=pa.string()),
        "row": pa.array(rows.rows, type=pa.int64()),
        "line": pa.array(np.zeros(len(sel), np.int64) if rows.lines is None else rows.lines, type=pa.int64()),
    }
    if posts.embeddings is not None:
        emb = np.ascontiguousarray(posts.embeddings[sel], dtype=np.float32)
        cols["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), type=pa.float32()),
                                                              emb.shape[1])
    return pa.table(cols)


def _partition(posts_iter: Iterator[PostTable], scratch: Path, n_parts: int,
               report: Callable[[int], None]) -> tuple[list[Path], dict[str, bool]]:
    """Hash-partition validated rows by user id into ``n_parts`` Parquet files; returns the
    non-empty ones in order and what the file had (labels, texts, line numbers)."""
    import pyarrow.parquet as pq

    parts = [scratch / f"part{b:04d}.parquet" for b in range(n_parts)]
    writers: dict[int, Any] = {}
    had = {"labels": False, "texts": False, "lines": False}
    done = 0
    try:
        for posts in posts_iter:
            had["labels"] |= posts.labels is not None
            had["texts"] |= posts.texts is not None
            had["lines"] |= posts.rows.lines is not None
            buckets = _bucket_of(posts.user_ids, n_parts)
            for b in np.unique(buckets):
                table = _validated_table(posts, np.flatnonzero(buckets == b))
                if b not in writers:
                    writers[b] = pq.ParquetWriter(parts[b], table.schema, compression="none")
                writers[b].write_table(table)
            done += len(posts)
            report(done)
    finally:
        for w in writers.values():
            w.close()
    return [parts[b] for b in sorted(writers)], had


def _read_partition(path: Path, fname: str, had: dict[str, bool]) -> PostTable:
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    n = t.num_rows
    label = t.column("label")
    texts = None
    if had["texts"]:
        texts = np.empty(n, dtype=object)
        texts[:] = [v if v is not None else "" for v in t.column("text").to_pylist()]
    emb = None
    if "embedding" in t.column_names:
        emb = t.column("embedding").combine_chunks().flatten().to_numpy().reshape(n, -1)
    ids = np.empty(n, dtype=object)
    ids[:] = t.column("user_id").to_pylist()
    return PostTable(
        file=fname,
        user_ids=ids,
        datetimes=t.column("us").to_numpy().astype(np.int64).view("datetime64[us]"),
        labels=label.fill_null(0).to_numpy().astype(np.int64) if had["labels"] else None,
        texts=texts,
        embeddings=emb,
        extra=pd.DataFrame(index=pd.RangeIndex(n)),
        rows=RowIndex(rows=t.column("row").to_numpy(), lines=t.column("line").to_numpy() if had["lines"] else None),
        label_present=label.is_valid().to_numpy(zero_copy_only=False) if had["labels"] else None,
    )


def _partition_chunks(path: Path, fmt: str, chunk_users: int, total: int, need_embeddings: bool,
                      batch_rows: int, scratch_dir: str | os.PathLike | None,
                      partition_bytes: int) -> Iterator[UserChunk]:
    size = path.stat().st_size
    n_parts = int(min(_MAX_PARTITIONS, max(1, math.ceil(size / partition_bytes))))
    scratch = _new_scratch_dir("groupby", dir=scratch_dir)  # named by pid: a killed run's copy is swept later
    progress_total = 2 * total
    try:
        posts_iter = iter_posts(path, format=fmt, need_embeddings=need_embeddings, batch_rows=batch_rows)
        files, had = _partition(posts_iter, scratch, n_parts, lambda n: None)
        done = total
        for data_file in files:
            posts = _read_partition(data_file, path.name, had)
            ts = _to_set(posts, need_embeddings)
            users = ts.user_ids
            for a in range(0, len(users), chunk_users):
                part = users[a:a + chunk_users]
                share = int(len(posts) * min(a + chunk_users, len(users)) / len(users))
                yield UserChunk(ts.subset(part, name=path.name) if len(part) < len(users) else ts,
                                done + share, progress_total)
            done += len(posts)
            del ts, posts
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def iter_user_chunks(
    path: str | os.PathLike,
    *,
    chunk_users: int = DEFAULT_CHUNK_USERS,
    format: str | None = None,
    grouped: bool = True,
    need_embeddings: bool = True,
    scratch_dir: str | os.PathLike | None = None,
    batch_rows: int = BATCH_ROWS,
    partition_bytes: int = _PARTITION_BYTES,
) -> Iterator[UserChunk]:
    """Yield the users of the post table at ``path`` in chunks of ``chunk_users``.

    ``grouped=True`` reads in file order and raises :class:`NotGroupedError` when a user's
    rows are not contiguous (use :func:`run_grouped` to fall back automatically);
    ``grouped=False`` groups out of core first (hash partitions under ``scratch_dir``,
    default the system temp folder). ``need_embeddings=False`` accepts a table of texts
    (its trajectories then carry placeholder ``[T, 1]`` zero embeddings). ``batch_rows``:
    rows parsed at a time.
    """
    from cvx_core.data.strict import whole_number

    chunk_users = whole_number("chunk_users", chunk_users, at_least=1)
    batch_rows = whole_number("batch_rows", batch_rows, at_least=1)
    partition_bytes = whole_number("partition_bytes", partition_bytes, at_least=1)
    p = Path(path)
    fmt = detect_format(p.name, format)
    _check_file(p, fmt)
    total = count_rows(p, format=fmt)
    if grouped:
        yield from _grouped_chunks(p, fmt, chunk_users, total, need_embeddings, batch_rows)
    else:
        yield from _partition_chunks(p, fmt, chunk_users, total, need_embeddings, batch_rows, scratch_dir,
                                     partition_bytes)


def run_grouped(job: Callable[[bool], Any]) -> Any:
    """Run ``job(grouped=True)``; if the input turns out not to be grouped by user, run
    ``job(grouped=False)`` (out-of-core grouping). ``job`` must start from scratch."""
    try:
        return job(True)
    except NotGroupedError:
        return job(False)
