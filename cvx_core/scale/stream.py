"""Streamed, bounded-memory processing of post tables: user-grouped chunks in, results out
incrementally.

Reading. :func:`iter_user_chunks` reads Parquet (record batches of a few thousand rows,
through a small read buffer, so a file written as one huge row group is still streamed),
CSV (pandas ``chunksize``) or JSON Lines (line by line) and yields
:class:`UserChunk` s: ``chunk_users`` complete users each, as a :class:`TrajectorySet`.
Every batch goes through the loader's own validator (``cvx_core.data.io``), so values,
error messages and row numbers are those of :func:`cvx_core.load_trajectories`; within a
user posts are sorted stably by time exactly as there. ``.npz`` archives cannot be read in
parts (a zip of whole arrays) and are loaded whole, then chunked.

Input not grouped by user. Rows of one user are expected to be contiguous (every file
``save_trajectories`` or ``embed`` writes is). If a user that was already closed appears
again, the pass is abandoned (nothing half-written is kept: outputs are atomic) and the
input is grouped out of core by **hash partitioning** (a Grace-hash "external group-by"),
then read partition by partition. Why this and not DuckDB or pyarrow's dataset API: the
partitions keep each row's original cells (Parquet record batches as they are, CSV cells as
text, JSON lines verbatim), so the same validator parses them with the same type inference
as an in-memory load and errors still name the original row and line (kept in a side
file); it needs no new dependency; and grouping, unlike sorting, needs a single write pass
and a single read pass (no merge passes). DuckDB would sort out of core too, but it infers
CSV/JSON types its own way (``"007"`` becomes 7) and its ``ORDER BY`` is more work than a
grouping needs. Partitions are about ``partition_bytes`` of input each (at most 256 files);
users then come out partition by partition (first appearance within a partition), not in
file order: the only difference from the grouped path.

Memory: one read batch, the pending rows of at most ``chunk_users`` users, and one
output chunk, plus a set of the user ids seen (about 100 bytes per user). Never the file.

Consumers: :func:`extract_stream` (the analytic feature vector per user, the same Parquet
the in-memory ``extract`` wrote) and :func:`analyze_stream` (change points, drift
attribution and the cohort attribution, accumulated incrementally, with ``progress``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from cvx_core.analysis.attribution import CohortAttribution
from cvx_core.data.atomic import atomic_replace, check_output, scratch_dir as _new_scratch_dir
from cvx_core.data.io import FORMATS, PostTable, _looks_binary, load_trajectories, read_posts
from cvx_core.data.trajectory import TrajectoryError, TrajectorySet
from cvx_core.features.config import TemporalFeaturesConfig

__all__ = [
    "UserChunk",
    "StreamResult",
    "StreamAnalysis",
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
    "DEFAULT_CHUNK_USERS",
]

ProgressCallback = Callable[[int, int], None]
DEFAULT_CHUNK_USERS = 512
_BATCH_ROWS = 4096
_READ_BUFFER = 4 << 20
_PARTITION_BYTES = 64 << 20
_MAX_PARTITIONS = 256


# -------------------------------------------------------------------------------------------
# chunks
# -------------------------------------------------------------------------------------------
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


class _RowMap:
    """Where row ``i`` of a piece of the input sits in the whole file: original 0-based row
    ``rows[i]`` and, for text formats, file line ``lines[i]`` (used in messages)."""

    def __init__(self, rows: np.ndarray, lines: np.ndarray | None) -> None:
        self.rows = np.asarray(rows, dtype=np.int64)
        self.lines = None if lines is None else np.asarray(lines, dtype=np.int64)

    def where(self, i: int) -> str:
        base = f"row {int(self.rows[i]) + 1}"
        return base + ("" if self.lines is None else f" (line {int(self.lines[i])})")


def _format_of(path: Path, format: str | None) -> str:
    if format is not None:
        fmt = format.lower().lstrip(".")
        if fmt not in set(FORMATS.values()):
            raise TrajectoryError(f"{path.name}: unknown format {format!r}; expected one of csv, parquet, jsonl, npz",
                                  file=path.name)
        return fmt
    ext = path.suffix.lower()
    if ext not in FORMATS:
        raise TrajectoryError(
            f"{path.name}: cannot tell the format from the extension {ext or '(none)'!r}; expected "
            ".csv, .parquet, .jsonl or .npz", file=path.name)
    return FORMATS[ext]


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
    fmt = _format_of(p, format)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            return int(pq.ParquetFile(p).metadata.num_rows)
        except Exception:  # noqa: BLE001 - the reader reports an unreadable file properly
            return 0
    if fmt == "npz":
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


@dataclass(frozen=True)
class _Piece:
    """A self-contained piece of the input in its own format (``data``), to be parsed by
    :func:`cvx_core.data.io.read_posts`, or a Parquet record batch (``batch``) parsed by
    the same reader's column decoder; its row ``r`` (1-based, as messages count) is
    original row ``rows[r - 1]`` and its line ``l`` original line ``line_map(l)``."""

    data: bytes
    rows: np.ndarray
    lines: np.ndarray | None
    line_map: Callable[[int], int]
    batch: Any = None


def _has_fast_parquet() -> bool:
    """The loader's Parquet column decoder is usable on record batches (its private helpers
    exist with the expected shape); otherwise pieces go through ``read_posts`` as bytes."""
    from cvx_core.data import io as _io

    return all(hasattr(_io, n) for n in ("_arrow_column", "_Table", "_parse_posts", "_Col", "_is_number_list",
                                         "_arrow_list_matrix"))


_FAST_PARQUET = _has_fast_parquet()
_ROW_RE = re.compile(r"\brow (\d+)")
_LINE_RE = re.compile(r"\bline (\d+)")


def _remap(exc: TrajectoryError, piece: _Piece) -> TrajectoryError:
    """The reader's error on ``piece`` with rows and lines of the whole file."""

    def row(m: re.Match[str]) -> str:
        r = int(m.group(1))
        return f"row {int(piece.rows[r - 1]) + 1}" if 1 <= r <= len(piece.rows) else m.group(0)

    def line(m: re.Match[str]) -> str:
        return f"line {piece.line_map(int(m.group(1)))}"

    msg = _LINE_RE.sub(line, _ROW_RE.sub(row, str(exc)))
    new = TrajectoryError(msg, file=exc.file, column=exc.column, user=getattr(exc, "user", None),
                          row=None if exc.row is None or not 1 <= exc.row <= len(piece.rows)
                          else int(piece.rows[exc.row - 1]) + 1)
    return new


def _parse_batch(batch: Any, fname: str, need_embeddings: bool) -> PostTable:
    """A Parquet record batch through the loader's own column decoder and validator (what
    ``read_posts`` does after reading a Parquet file's columns), without re-encoding it."""
    import pyarrow as pa

    from cvx_core.data import io as _io

    n = batch.num_rows
    columns = {}
    for i, fld in enumerate(batch.schema):
        arr = pa.chunked_array([batch.column(i)])
        if _io._is_number_list(fld.type):  # decoded straight into the [N, D] matrix, as the loader does
            columns[fld.name] = _io._Col("list", _ListColumn(arr))
        else:
            columns[fld.name] = _io._arrow_column(arr, fld.name, fname, n)
    return _io._parse_posts(_io._Table(columns, n), fname, need_embeddings=need_embeddings)


class _ListColumn:
    """An Arrow list-of-numbers column in the shape the loader's list decoder reads."""

    def __init__(self, arr: Any) -> None:
        self.arr = arr
        self.type = arr.type

    def __len__(self) -> int:
        return len(self.arr)

    def chunks(self, rows: int = 32_768) -> Iterator[Any]:
        yield from self.arr.chunks

    def to_pylist(self) -> list[Any]:
        return self.arr.to_pylist()


def _parse(piece: _Piece, fname: str, fmt: str, need_embeddings: bool) -> PostTable:
    try:
        if piece.batch is not None:
            posts = _parse_batch(piece.batch, fname, need_embeddings)
        else:
            posts = read_posts(piece.data, name=fname, format=fmt, need_embeddings=need_embeddings)
    except TrajectoryError as exc:
        raise _remap(exc, piece) from None
    if len(posts) != len(piece.rows):
        raise TrajectoryError(f"{fname}: a piece of {len(piece.rows)} rows read back as {len(posts)} rows; "
                              "is a CSV cell's quoting unbalanced?", file=fname)
    return dataclasses.replace(posts, _table=_RowMap(piece.rows, piece.lines))


def _split_rows(block: bytes, fmt: str) -> list[bytes]:
    """Physical lines -> records (CSV: a record ends where the quotes so far balance)."""
    lines = block.splitlines(keepends=True)
    if fmt != "csv":
        return lines
    out: list[bytes] = []
    cur: list[bytes] = []
    quotes = 0
    for ln in lines:
        cur.append(ln)
        quotes += ln.count(b'"')
        if quotes % 2 == 0:
            out.append(b"".join(cur))
            cur, quotes = [], 0
    if cur:
        out.append(b"".join(cur))
    return out


def _text_records(path: Path, fmt: str) -> Iterator[tuple[bytes, int]]:
    """``(record bytes, first line number)`` of a CSV (after the header) or JSON Lines file;
    blank records are skipped."""
    lineno = 1
    carry = b""
    with open(path, "rb") as fh:
        if fmt == "csv":
            header = _read_header(fh)
            lineno += header.count(b"\n")
        while True:
            block = fh.read(1 << 20)
            data = carry + block
            if not data:
                return
            records = _split_rows(data, fmt)
            # the last record may be cut by the block boundary: keep it for the next round
            if block and records and (not records[-1].endswith(b"\n") or
                                      (fmt == "csv" and records[-1].count(b'"') % 2)):
                carry = records.pop()
            else:
                carry = b""
            for rec in records:
                first = lineno
                lineno += rec.count(b"\n")
                if rec.strip():
                    yield rec if rec.endswith(b"\n") else rec + b"\n", first
            if not block:
                if carry:
                    yield carry + b"\n", lineno
                return


def _read_header(fh: IO[bytes]) -> bytes:
    header = b""
    while True:
        ln = fh.readline()
        header += ln
        if not ln or header.count(b'"') % 2 == 0:
            return header


def _pieces(path: Path, fmt: str, rows: int) -> Iterator[_Piece]:
    """The input as consecutive self-contained pieces of at most ``rows`` rows."""
    offset = 0
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path, buffer_size=_READ_BUFFER, pre_buffer=False)
            batches = pf.iter_batches(batch_size=rows)
        except Exception:  # noqa: BLE001 - let the reader name what is wrong with the file
            yield _Piece(path.read_bytes(), np.arange(count_rows(path)), None, lambda n: n)
            return
        names = [str(n) for n in pf.schema_arrow.names]
        fast = _FAST_PARQUET and len(set(names)) == len(names)
        for b in batches:
            if fast:
                yield _Piece(b"", np.arange(offset, offset + b.num_rows), None, lambda n: n, batch=b)
                offset += b.num_rows
                continue
            # the batch as a small Parquet file in memory, for the loader's own reader (plain
            # encoding, no statistics: a cheap round trip)
            sink = pa.BufferOutputStream()
            pq.write_table(pa.Table.from_batches([b]).replace_schema_metadata(pf.schema_arrow.metadata), sink,
                           compression="none", use_dictionary=False, write_statistics=False)
            yield _Piece(sink.getvalue().to_pybytes(), np.arange(offset, offset + b.num_rows), None, lambda n: n)
            offset += b.num_rows
        return
    with open(path, "rb") as fh:
        head = fh.read(4096)
        fh.seek(0)
        header = _read_header(fh) if fmt == "csv" else b""
    if _looks_binary(head) or not head.strip():
        yield _Piece(path.read_bytes(), np.arange(max(count_rows(path), 1)), None, lambda n: n)
        return
    recs: list[bytes] = []
    firsts: list[int] = []

    def piece() -> _Piece:
        n = len(recs)
        lines = np.array(firsts, dtype=np.int64)
        if fmt == "csv":  # the piece is header + records: its line 2 is the first record
            first_line, shift = int(lines[0]), 2
        else:
            first_line, shift = int(lines[0]), 1
        return _Piece(header + b"".join(recs), np.arange(offset, offset + n), lines,
                      lambda ln, a=first_line, s=shift: ln - s + a)

    for rec, first in _text_records(path, fmt):
        recs.append(rec)
        firsts.append(first)
        if len(recs) == rows:
            yield piece()
            offset += len(recs)
            recs, firsts = [], []
    if recs:
        yield piece()
    elif offset == 0:  # header only, or nothing: the reader says so
        yield _Piece(header, np.arange(1), None, lambda n: n)


def _slice(posts: PostTable, a: int, b: int) -> PostTable:
    n = len(posts)
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(posts):
        v = getattr(posts, f.name)
        if isinstance(v, np.ndarray) and v.shape[:1] == (n,):
            changes[f.name] = v[a:b]
        elif isinstance(v, pd.DataFrame):
            changes[f.name] = v.iloc[a:b]
        elif isinstance(v, _RowMap):
            changes[f.name] = _RowMap(v.rows[a:b], None if v.lines is None else v.lines[a:b])
    return dataclasses.replace(posts, **changes)


def _concat(pieces: Sequence[PostTable]) -> PostTable:
    if len(pieces) == 1:
        return pieces[0]
    first = pieces[0]
    n = len(first)
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(first):
        v = getattr(first, f.name)
        parts = [getattr(p, f.name) for p in pieces]
        if isinstance(v, np.ndarray) and v.shape[:1] == (n,):
            changes[f.name] = np.concatenate(parts)
        elif isinstance(v, pd.DataFrame):
            changes[f.name] = pd.concat(parts, ignore_index=True)
        elif isinstance(v, _RowMap):
            changes[f.name] = _RowMap(np.concatenate([p.rows for p in parts]),
                                      None if v.lines is None else np.concatenate([p.lines for p in parts]))
    return dataclasses.replace(first, **changes)


def _check_dim(posts: PostTable, dim: list[int]) -> None:
    if posts.embeddings is None:
        return
    d = int(posts.embeddings.shape[1])
    if not dim:
        dim.append(d)
    elif d != dim[0]:
        raise TrajectoryError(
            f"{posts.file}: {posts.where(0)}, column 'embedding': {d} values, but earlier rows have {dim[0]}; "
            "expected the same dimension on every row", file=posts.file,
            row=int(posts._table.rows[0]) + 1, column="embedding")  # type: ignore[attr-defined]


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
            file=posts.file, row=int(posts._table.rows[i]) + 1, column="text")  # type: ignore[attr-defined]
    # a table of texts (for ``embed``): placeholder one-dimensional embeddings
    return posts.to_set(np.zeros((len(posts), 1), dtype=np.float32))


def _grouped_chunks(path: Path, fmt: str, chunk_users: int, total: int, need_embeddings: bool,
                    batch_rows: int) -> Iterator[UserChunk]:
    closed: set[str] = set()
    pending: list[PostTable] = []
    n_complete = 0  # complete users in ``pending`` (the last user stays open)
    open_user: str | None = None
    done = 0
    dim: list[int] = []
    for piece in _pieces(path, fmt, batch_rows):
        posts = _parse(piece, path.name, fmt, need_embeddings)
        _check_dim(posts, dim)
        ids = posts.user_ids
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        for k, s in enumerate(starts):
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
            # user may continue in the next piece and stays pending
            joined = _concat(pending)
            ids = joined.user_ids
            starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
            a = 0
            while n_complete >= chunk_users:
                cut = int(starts[a + chunk_users])
                yield UserChunk(_to_set(_slice(joined, int(starts[a]), cut), need_embeddings), done, total)
                a += chunk_users
                n_complete -= chunk_users
            pending = [_slice(joined, int(starts[a]), len(joined))]
    if pending:
        yield UserChunk(_to_set(_concat(pending), need_embeddings), done, max(total, done))


def _bucket_of(ids: Sequence[str], n: int) -> np.ndarray:
    return (pd.util.hash_array(np.asarray(list(ids), dtype=object)) % np.uint64(n)).astype(np.int64)


def _partition(path: Path, fmt: str, scratch: Path, n_parts: int, batch_rows: int,
               report: Callable[[int], None]) -> list[tuple[Path, Path]]:
    """Hash-partition the rows by user id into ``n_parts`` files that keep every row's
    cells as they are (Parquet record batches; CSV and JSON Lines records verbatim, CSV
    under the header), plus side files of original ``(row, line)`` pairs; returns the
    non-empty ones in order."""
    import io as _io

    parts = [(scratch / f"part{b:04d}.{fmt}", scratch / f"part{b:04d}.rows") for b in range(n_parts)]
    data_fh: dict[int, Any] = {}
    rows_fh: dict[int, IO[bytes]] = {}

    def side(b: int, rows: np.ndarray, lines: np.ndarray) -> None:
        if b not in rows_fh:
            rows_fh[b] = open(parts[b][1], "wb")
        np.stack([rows, lines], axis=1).astype(np.int64).tofile(rows_fh[b])

    offset = 0
    try:
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(path, buffer_size=_READ_BUFFER, pre_buffer=False)
            names = pf.schema_arrow.names
            for batch in pf.iter_batches(batch_size=batch_rows):
                ids = [str(x) for x in batch.column(names.index("user_id")).to_pylist()] \
                    if "user_id" in names else [""] * batch.num_rows
                buckets = _bucket_of(ids, n_parts)
                rows = np.arange(offset, offset + batch.num_rows)
                for b in np.unique(buckets):
                    sel = np.flatnonzero(buckets == b)
                    if b not in data_fh:
                        data_fh[b] = pq.ParquetWriter(parts[b][0], batch.schema.with_metadata(pf.schema_arrow.metadata))
                    data_fh[b].write_batch(batch.take(pa.array(sel)))
                    side(int(b), rows[sel], np.full(sel.size, -1))
                offset += batch.num_rows
                report(offset)
        else:
            header = b""
            if fmt == "csv":
                with open(path, "rb") as fh:
                    header = _read_header(fh)
            recs: list[bytes] = []
            firsts: list[int] = []

            def flush() -> None:
                nonlocal offset, recs, firsts
                if not recs:
                    return
                if fmt == "csv":
                    try:
                        frame = pd.read_csv(_io.BytesIO(header + b"".join(recs)), usecols=["user_id"], dtype=str,
                                            na_filter=False, skip_blank_lines=False)
                        ids = frame["user_id"].tolist()
                    except (ValueError, pd.errors.ParserError):
                        ids = []
                    if len(ids) != len(recs):  # unreadable: one partition, the reader reports it
                        ids = [""] * len(recs)
                else:
                    ids = []
                    for rec in recs:
                        try:
                            obj = json.loads(rec)
                            ids.append(str(obj.get("user_id")) if isinstance(obj, dict) else "")
                        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
                            ids.append("")
                buckets = _bucket_of(ids, n_parts)
                rows = np.arange(offset, offset + len(recs))
                lines = np.asarray(firsts, dtype=np.int64)
                for b in np.unique(buckets):
                    sel = np.flatnonzero(buckets == b)
                    if b not in data_fh:
                        data_fh[b] = open(parts[b][0], "wb")
                        data_fh[b].write(header)
                    data_fh[b].write(b"".join(recs[k] for k in sel))
                    side(int(b), rows[sel], lines[sel])
                offset += len(recs)
                recs, firsts = [], []
                report(offset)

            for rec, first in _text_records(path, fmt):
                recs.append(rec)
                firsts.append(first)
                if len(recs) == batch_rows:
                    flush()
            flush()
    finally:
        for w in data_fh.values():
            w.close()
        for f in rows_fh.values():
            f.close()
    return [parts[b] for b in sorted(data_fh)]


def _partition_chunks(path: Path, fmt: str, chunk_users: int, total: int, need_embeddings: bool,
                      batch_rows: int, scratch_dir: str | os.PathLike | None,
                      partition_bytes: int) -> Iterator[UserChunk]:
    size = path.stat().st_size
    n_parts = int(min(_MAX_PARTITIONS, max(1, math.ceil(size / partition_bytes))))
    scratch = _new_scratch_dir("groupby", dir=scratch_dir)  # named by pid: a killed run's copy is swept later
    progress_total = 2 * total
    try:
        state = {"done": 0}

        def report(n: int) -> None:
            state["done"] = n

        files = _partition(path, fmt, scratch, n_parts, batch_rows, report)
        done = total
        dim: list[int] = []
        for data_file, rows_file in files:
            side = np.fromfile(rows_file, dtype=np.int64).reshape(-1, 2)
            orig_lines = side[:, 1]
            shift = 2 if fmt == "csv" else 1  # partition line of its k-th record (0-based k)
            piece = _Piece(data_file.read_bytes(), side[:, 0], None if fmt == "parquet" else orig_lines,
                           lambda ln, L=orig_lines, s=shift: int(L[ln - s]) if 0 <= ln - s < len(L) else ln)
            posts = _parse(piece, path.name, fmt, need_embeddings)
            _check_dim(posts, dim)
            ts = _to_set(posts, need_embeddings)
            users = ts.user_ids
            for a in range(0, len(users), chunk_users):
                part = users[a:a + chunk_users]
                share = int(len(posts) * min(a + chunk_users, len(users)) / len(users))
                yield UserChunk(ts.subset(part, name=path.name) if len(part) < len(users) else ts,
                                done + share, progress_total)
            done += len(posts)
            del ts, posts, piece
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
    batch_rows: int = _BATCH_ROWS,
    partition_bytes: int = _PARTITION_BYTES,
) -> Iterator[UserChunk]:
    """Yield the users of the post table at ``path`` in chunks of ``chunk_users``.

    ``grouped=True`` reads in file order and raises :class:`NotGroupedError` when a user's
    rows are not contiguous (use :func:`run_grouped` to fall back automatically);
    ``grouped=False`` groups out of core first (hash partitions under ``scratch_dir``,
    default the system temp folder). ``need_embeddings=False`` accepts a table of texts
    (its trajectories then carry placeholder ``[T, 1]`` zero embeddings).
    """
    if chunk_users < 1:
        raise ValueError(f"chunk_users must be >= 1, got {chunk_users}")
    p = Path(path)
    fmt = _format_of(p, format)
    _check_file(p, fmt)
    if fmt == "npz":
        ts = load_trajectories(p, format="npz")
        users = ts.user_ids
        done = 0
        for a in range(0, len(users), chunk_users):
            part = ts.subset(users[a:a + chunk_users], name=ts.name)
            done += part.n_posts
            yield UserChunk(part, done, ts.n_posts)
        return
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

    check_dim(trajectories.dim, source=trajectories.name)  # the D budget, before [N, 4D + ...] is built
    feats = np.stack([AnalyticBackend.extract_all(tr.embeddings, tr.timestamps, config) for tr in trajectories])
    names = feature_names(trajectories.dim, config)
    if len(names) != feats.shape[1]:
        raise RuntimeError(f"{len(names)} feature names for {feats.shape[1]} features")
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
class StreamAnalysis:
    """The streamed counterpart of :class:`cvx_core.analysis.batch.SetAnalysis`.

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

    def result(self, fcfg: TemporalFeaturesConfig, out: Path | None, grouped: bool, t0: float) -> "StreamAnalysis":
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
        return StreamAnalysis(cohort=cohort, n_users=self.n, n_posts=self.posts,
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
) -> StreamAnalysis:
    """:func:`cvx_core.analysis.batch.analyze_set` over a file of any size, chunk by chunk.

    Per-user results go to ``out`` (Parquet, see :class:`StreamAnalysis`) as they are
    computed; the cohort attribution is accumulated (sums of per-user shares per class),
    so it equals ``analyze_set(...).cohort`` to float64 rounding. ``progress(rows_done,
    rows_total)`` drives a progress bar (at most ~10 calls a second, the last at the end).
    """
    if out is not None:
        check_output(out, [path], what="output")
    t0 = time.perf_counter()
    fcfg = features_config or TemporalFeaturesConfig()
    report = _progress_wrap(progress)

    def job(grouped: bool) -> StreamAnalysis:
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
