"""Reading and writing trajectory tables, with strict validation.

Input is long format, one row per post: ``user_id``, ``timestamp``, optional ``label``,
optional ``text``, and the embedding either as one list column ``embedding`` or as columns
``e0 … e{D-1}``. Formats: CSV, Parquet, JSON Lines, NumPy ``.npz`` (arrays ``embeddings``,
``timestamps``, ``user_ids``, optional ``labels`` and ``texts``; read with
``allow_pickle=False``). Every problem raises :class:`TrajectoryError` naming the file, the
row (1-based, as a person counts data rows) or user, and the column. Nothing is guessed:

* **Timestamps** are ISO-8601 text with a full date (``2024-03-01``, ``2024-03-01T12:00:00Z``,
  ``2024-03-01 12:00:00.123456+02:00``), typed datetimes (Parquet, ``.npz`` ``datetime64``)
  or epoch seconds given as *numbers* (JSON numbers, numeric Parquet/``.npz`` columns).
  Digit-only text (``20240301``, ``2023``), words (``now``) and a file mixing times with and
  without a UTC offset are refused. Times without an offset are UTC. Any year 1-9999 loads
  exactly (held as ``datetime64[us]``); sub-microsecond parts are refused, never truncated.
* **User ids** are text kept verbatim, or integers (kept exactly, any size). Floats,
  booleans, lists and objects are refused, as is a file where the integer ``1`` and the
  text ``"1"`` would become one user. Invalid UTF-8 is refused naming the line.
* **Labels** are integer classes ``>= 0`` (empty = no label); fractions, booleans, negatives
  and values outside int64 are refused.
* **Columns** must be unambiguous: a duplicated column, both ``embedding`` and ``e0…``,
  or a name such as ``e01`` (next to or instead of ``e1``) is refused.
* **Other columns** are kept: those constant within every user become per-user
  :attr:`TrajectorySet.metadata` (one scalar type per column: text, integer, float, boolean
  or datetime); columns that vary within a user are per-post data the model does not use
  and stay out of the set (they remain in :attr:`PostTable.extra`).
* **Size**: ``max_decoded_bytes`` bounds the decoded size, checked from the declared
  shapes (NPZ headers, Parquet metadata) *before* anything is allocated; a decoded-size
  header larger than its data is refused whatever the budget; ``MemoryError`` becomes a
  :class:`TrajectoryError`.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io as _io
import json
import math
import os
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Union

import numpy as np
import pandas as pd

from cvx_core.data.atomic import atomic_replace
from cvx_core.data.trajectory import DATETIME_DTYPE, Trajectory, TrajectoryError, TrajectorySet

__all__ = [
    "load_trajectories",
    "read_posts",
    "PostTable",
    "save_trajectories",
    "FORMATS",
    "TrajectoryError",
    "DecodedSizeError",
]


class DecodedSizeError(TrajectoryError):
    """A file whose decoded data would exceed the ``max_decoded_bytes`` budget (checked
    from its declared sizes before decoding). ``decoded`` and ``budget`` are in bytes."""

    def __init__(self, message: str, *, file: str, decoded: int, budget: int) -> None:
        super().__init__(message, file=file)
        self.decoded = decoded
        self.budget = budget

Source = Union[str, os.PathLike, IO[bytes], bytes]

FORMATS: dict[str, str] = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".npz": "npz",
}

_E_COL = re.compile(r"^e(\d+)$")
_KNOWN_COLUMNS = ("user_id", "timestamp", "label", "text", "embedding")

# every datetime is held as microseconds since 1970 and must lie in years 1-9999
_US = 1_000_000
_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()
_MIN_US = (_dt.date(1, 1, 1).toordinal() - _EPOCH_ORDINAL) * 86_400 * _US
_MAX_US = (_dt.date(9999, 12, 31).toordinal() - _EPOCH_ORDINAL + 1) * 86_400 * _US - 1
_INT64_MAX = 2**63 - 1


# -------------------------------------------------------------------------------------------
# public API
# -------------------------------------------------------------------------------------------
def load_trajectories(
    source: Source,
    *,
    name: str | None = None,
    format: str | None = None,
    max_decoded_bytes: int | None = None,
) -> TrajectorySet:
    """Read a trajectory table into a :class:`TrajectorySet`.

    Args:
        source: a path, raw bytes, or an open binary buffer (e.g. Streamlit's uploaded file;
            its ``.name`` is used for the format and for messages).
        name: the name used in error messages and as the set's name (default: file name).
        format: ``"csv" | "parquet" | "jsonl" | "npz"``; default from the file extension.
        max_decoded_bytes: refuse a file whose decoded data would exceed this many bytes
            (checked from declared sizes before allocating); ``None`` for no budget.

    Posts are sorted stably by time within each user; users keep the order of their first
    row. Raises :class:`TrajectoryError` on any invalid input, including a table of texts
    with no embedding (embed those with :func:`cvx_core.embed_posts`).
    """
    return read_posts(
        source, name=name, format=format, need_embeddings=True, max_decoded_bytes=max_decoded_bytes
    ).to_set()


@dataclass(frozen=True, eq=False)
class PostTable:
    """A validated long table of posts, one row per post, in file order.

    ``user_ids`` ``[N]`` (str objects), ``datetimes`` ``[N]`` (``datetime64[us]``, UTC),
    ``labels`` ``[N]`` int64 (or ``None`` without a label column) with ``label_present``
    ``[N]`` bool (False = no label on that row), ``texts`` ``[N]`` (str objects, or
    ``None``), ``embeddings`` ``[N, D]`` float32 (or ``None`` for a table of texts),
    ``extra`` the remaining columns (candidates for per-user metadata). ``where(i)``
    describes 0-based row ``i`` for messages.
    """

    file: str
    user_ids: np.ndarray
    datetimes: np.ndarray
    labels: np.ndarray | None
    texts: np.ndarray | None
    embeddings: np.ndarray | None
    extra: pd.DataFrame
    _table: "_Table"
    label_present: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.user_ids.shape[0])

    def where(self, i: int) -> str:
        return self._table.where(i)

    def to_set(self, embeddings: np.ndarray | None = None) -> TrajectorySet:
        """Group the rows into trajectories (users in order of first row, posts stably by
        time). ``embeddings`` ``[N, D]`` (row order of this table) replaces the table's own,
        e.g. after embedding ``texts``."""
        matrix = self.embeddings if embeddings is None else np.asarray(embeddings, dtype=np.float32)
        if matrix is None:
            raise TrajectoryError(
                f"{self.file}: this table has no embedding; expected a list column 'embedding' or columns "
                "'e0', 'e1', …",
                file=self.file,
                column="embedding",
            )
        if matrix.ndim != 2 or matrix.shape[0] != len(self):
            raise ValueError(f"embeddings must be [N={len(self)}, D]; got {tuple(matrix.shape)}")
        return _group(self, matrix)


def read_posts(
    source: Source,
    *,
    name: str | None = None,
    format: str | None = None,
    need_embeddings: bool = True,
    max_decoded_bytes: int | None = None,
) -> PostTable:
    """Read and validate a long table of posts without grouping it (see :class:`PostTable`).

    With ``need_embeddings=False`` a table of texts with no embedding is accepted (its
    ``text`` column is then required and every cell must hold text)."""
    if isinstance(source, (str, os.PathLike)) and Path(source).is_file():
        fname = name or Path(source).name
        if _detect_format(fname, format) == "parquet" and Path(source).stat().st_size > 0:
            # read from the file column by column: the compressed bytes never sit in memory whole
            try:
                table = _read_parquet(Path(source), fname, max_decoded_bytes)
                return _parse_posts(table, fname, need_embeddings=need_embeddings)
            except MemoryError:
                raise _out_of_memory(fname) from None
    data, fname = _read_bytes(source, name)
    fmt = _detect_format(fname, format)
    if len(data) == 0:
        raise TrajectoryError(f"{fname}: the file is empty (0 bytes); expected a {fmt} table of posts", file=fname)
    try:
        if fmt == "npz":
            table = _read_npz(data, fname, max_decoded_bytes)
        elif fmt == "parquet":
            table = _read_parquet(data, fname, max_decoded_bytes)
        elif fmt == "csv":
            _check_text_budget(data, fname, max_decoded_bytes)
            table = _read_csv(data, fname)
        else:
            _check_text_budget(data, fname, max_decoded_bytes)
            table = _read_jsonl(data, fname)
        del data
        return _parse_posts(table, fname, need_embeddings=need_embeddings)
    except MemoryError:
        raise _out_of_memory(fname) from None


def _out_of_memory(fname: str) -> TrajectoryError:
    return TrajectoryError(
        f"{fname}: ran out of memory decoding this file; it is larger than this machine can load "
        "(split it, or load it on a machine with more memory)",
        file=fname,
    )


def save_trajectories(trajectories: TrajectorySet, path: str | os.PathLike) -> Path:
    """Write ``trajectories`` as Parquet (one row per post), atomically.

    Datetimes are stored as ``timestamp[us, UTC]`` (exact for years 1-9999); per-user
    metadata columns are repeated on each post, so loading the file gives them back. The
    file is written to a temporary name in the same folder and renamed over ``path``, so an
    existing file is never left half-written.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    d = trajectories.dim
    user_ids: list[str] = []
    stamps: list[np.ndarray] = []
    embs: list[np.ndarray] = []
    labels: list[int | None] = []
    texts: list[str] = []
    has_text = trajectories.has_text
    for tr in trajectories:
        user_ids.extend([tr.user_id] * tr.n_posts)
        stamps.append(tr.datetimes)
        embs.append(tr.embeddings)
        labels.extend([tr.label] * tr.n_posts)
        if has_text:
            texts.extend(tr.texts or ())
    flat = np.concatenate(embs).astype(np.float32, copy=False)
    emb_arr = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1), type=pa.float32()), d)
    columns: dict[str, Any] = {
        "user_id": pa.array(user_ids, type=pa.string()),
        "timestamp": pa.array(
            np.concatenate(stamps).astype(DATETIME_DTYPE).astype(np.int64), type=pa.int64()
        ).cast(pa.timestamp("us", tz="UTC")),
        "label": pa.array(labels, type=pa.int64()),
    }
    if has_text:
        columns["text"] = pa.array(texts, type=pa.string())
    meta = trajectories.metadata
    if len(meta.columns):
        repeated = meta.loc[user_ids].reset_index(drop=True)
        for col in meta.columns:
            columns[str(col)] = pa.Array.from_pandas(repeated[col])
    columns["embedding"] = emb_arr
    table = pa.table(columns)
    table = table.replace_schema_metadata({b"cvx": json.dumps({"name": trajectories.name, "dim": d}).encode()})
    return atomic_replace(
        path,
        lambda fh: pq.write_table(
            table,
            fh,
            compression="zstd",
            use_dictionary=[c for c in table.column_names if c != "embedding"],
            use_byte_stream_split=["embedding.list.element"],
        ),
    )


# -------------------------------------------------------------------------------------------
# reading: each format -> a _Table of columns, with the source kind of each column
# -------------------------------------------------------------------------------------------
@dataclass
class _Col:
    """One column as read, before validation.

    ``kind``: ``"text"`` (CSV: str cells, '' for empty), ``"json"`` (Python objects from
    JSON, None for absent), ``"array"`` (a typed NumPy array from Parquet/.npz, with
    ``mask`` True on nulls), ``"datetime"`` (int64 microseconds, already exact),
    ``"matrix"`` (an embedding matrix ``[N, D]`` read whole).
    """

    kind: str
    values: Any
    mask: np.ndarray | None = None


class _Table:
    """A parsed table: columns by name, the row count, how rows are counted in messages."""

    def __init__(
        self,
        columns: dict[str, _Col],
        n: int,
        *,
        row_offset_note: Callable[[int], str] | None = None,
    ) -> None:
        self.columns = columns
        self.n = n
        self._note = row_offset_note

    def where(self, i: int) -> str:
        """Human description of 0-based row ``i``."""
        base = f"row {i + 1}"
        return base + (self._note(i) if self._note else "")


def _read_bytes(source: Source, name: str | None) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), name or "<bytes>"
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if not p.exists():
            raise TrajectoryError(f"{p}: no such file", file=str(p))
        if p.is_dir():
            raise TrajectoryError(f"{p}: is a folder, expected a file", file=str(p))
        return p.read_bytes(), name or p.name
    if hasattr(source, "read"):
        if hasattr(source, "seek"):
            try:
                source.seek(0)
            except Exception:  # pragma: no cover - unseekable streams
                pass
        data = source.read()
        if isinstance(data, str):
            data = data.encode("utf-8")
        return bytes(data), name or Path(str(getattr(source, "name", "") or "<upload>")).name
    raise TypeError(f"load_trajectories: unsupported source type {type(source).__name__}")


def _detect_format(fname: str, format: str | None) -> str:
    if format is not None:
        fmt = format.lower().lstrip(".")
        if fmt not in set(FORMATS.values()):
            raise TrajectoryError(
                f"{fname}: unknown format {format!r}; expected one of csv, parquet, jsonl, npz", file=fname
            )
        return fmt
    ext = Path(fname).suffix.lower()
    if ext not in FORMATS:
        raise TrajectoryError(
            f"{fname}: cannot tell the format from the extension {ext or '(none)'!r}; expected "
            ".csv, .parquet, .jsonl or .npz",
            file=fname,
        )
    return FORMATS[ext]


def _looks_binary(data: bytes) -> bool:
    """True for Parquet or zip (``.npz``) content, or any NUL byte early on: not a text table."""
    return data.startswith((b"PAR1", b"PK\x03\x04")) or b"\x00" in data[:4096]


def _mb(n: float) -> str:
    return f"{n / 2**20:,.1f} MB"


def _over_budget(fname: str, decoded: float, budget: int, what: str) -> DecodedSizeError:
    return DecodedSizeError(
        f"{fname}: {what} decodes to about {_mb(decoded)}, over the limit of {_mb(budget)} for one "
        "file; load a smaller file (or raise the limit)",
        file=fname,
        decoded=int(decoded),
        budget=int(budget),
    )


def _check_text_budget(data: bytes, fname: str, budget: int | None) -> None:
    if budget is not None and len(data) > budget:
        raise _over_budget(fname, len(data), budget, "the text")


def _decode_utf8(data: bytes, fname: str, *, first_row_line: int) -> str:
    """Whole-file strict UTF-8 (a leading BOM is dropped); an invalid byte names its line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        row = line - first_row_line + 1
        raise TrajectoryError(
            f"{fname}: line {line} is not valid UTF-8 (byte {data[exc.start]:#04x} at offset {exc.start}); "
            "save the file as UTF-8",
            file=fname,
            row=row if row >= 1 else None,
        ) from None


def _duplicate(names: list[str]) -> str | None:
    seen: set[str] = set()
    for c in names:
        if c in seen:
            return c
        seen.add(c)
    return None


def _read_csv(data: bytes, fname: str) -> _Table:
    if _looks_binary(data):
        raise TrajectoryError(f"{fname}: not a CSV text file (binary content); is the extension right?", file=fname)
    text = _decode_utf8(data, fname, first_row_line=2)
    try:
        header = next(csv.reader(_io.StringIO(text)), None)
    except csv.Error as exc:
        raise TrajectoryError(f"{fname}: the header row is not readable CSV ({exc})", file=fname) from None
    if not header or not any(h.strip() for h in header):
        raise TrajectoryError(f"{fname}: the file is empty; expected a header row and one row per post", file=fname)
    dup = _duplicate(header)
    if dup is not None:
        raise TrajectoryError(
            f"{fname}: column {dup!r} appears twice in the header; expected each column once", file=fname, column=dup
        )
    numeric = [c for c in header if _E_COL.match(c) and c == f"e{int(c[1:])}"]
    frame = None
    if numeric:
        # fast path: e-columns parsed straight to float64 (pandas' parser, correctly rounded:
        # the fuzzer checks the round trip bit for bit) without a Python string per cell;
        # any cell it refuses sends the file to the text path below, which names the row
        # and column
        try:
            dtypes: dict[str, Any] = {c: str for c in header}
            dtypes.update({c: np.float64 for c in numeric})
            frame = pd.read_csv(
                _io.StringIO(text), dtype=dtypes, na_filter=False, keep_default_na=False
            )
        except MemoryError:
            raise
        except Exception:  # noqa: BLE001 - refused cells are reported by the text path
            frame = None
    try:
        if frame is None:
            frame = pd.read_csv(_io.StringIO(text), dtype=str, na_filter=False, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise TrajectoryError(f"{fname}: the file is empty; expected a header row and one row per post", file=fname) from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise TrajectoryError(f"{fname}: not a readable CSV file ({_first_line(exc)})", file=fname) from None
    del text
    if list(frame.columns) != header:  # pandas renames blank or duplicate names; refuse that
        raise TrajectoryError(
            f"{fname}: the header has a blank column name; expected a name for every column", file=fname
        )
    columns = {
        c: _Col("array", frame[c].to_numpy()) if frame[c].dtype == np.float64 else _Col("text", frame[c].to_numpy(dtype=object))
        for c in header
    }
    return _Table(columns, len(frame), row_offset_note=lambda i: f" (line {i + 2})")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


class _DuplicateKey(Exception):
    pass


def _read_jsonl(data: bytes, fname: str) -> _Table:
    if _looks_binary(data):
        raise TrajectoryError(
            f"{fname}: not a JSON Lines text file (binary content); is the extension right?", file=fname
        )
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    records: list[dict[str, Any]] = []
    line_of: list[int] = []
    keys: dict[str, None] = {}
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        row = len(records) + 1
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TrajectoryError(
                f"{fname}: line {lineno} is not valid UTF-8 (byte {raw[exc.start]:#04x}); save the file as UTF-8",
                file=fname,
                row=row,
            ) from None
        try:
            rec = json.loads(line, object_pairs_hook=_no_duplicate_keys)
        except _DuplicateKey as dup:
            raise TrajectoryError(
                f"{fname}: line {lineno} has the key {dup.args[0]!r} twice; expected each key once",
                file=fname,
                row=row,
                column=str(dup.args[0]),
            ) from None
        except (json.JSONDecodeError, ValueError, RecursionError) as exc:
            msg = exc.msg if isinstance(exc, json.JSONDecodeError) else _first_line(exc)
            raise TrajectoryError(
                f"{fname}: line {lineno} is not valid JSON ({msg}); expected one JSON object per line",
                file=fname,
                row=row,
            ) from None
        if not isinstance(rec, dict):
            raise TrajectoryError(
                f"{fname}: line {lineno} is a JSON {type(rec).__name__}, expected an object with "
                "user_id, timestamp and embedding",
                file=fname,
                row=row,
            )
        records.append(rec)
        line_of.append(lineno)
        for k in rec:
            keys.setdefault(k, None)
    if not records:
        raise TrajectoryError(f"{fname}: the file has no records; expected one JSON object per post", file=fname)
    columns: dict[str, _Col] = {}
    for k in keys:
        col = np.empty(len(records), dtype=object)
        col[:] = [rec.get(k) for rec in records]
        columns[k] = _Col("json", col)
    return _Table(columns, len(records), row_offset_note=lambda i: f" (line {line_of[i]})")


# ---- Parquet --------------------------------------------------------------------------------
def _parquet_decoded_estimate(meta: Any) -> int:
    """Bytes the columns decode to, from the footer alone: leaf values times their width
    (byte arrays: their uncompressed size, at least 16 bytes each)."""
    widths = {"BOOLEAN": 1, "INT32": 4, "INT64": 8, "INT96": 12, "FLOAT": 4, "DOUBLE": 8}
    total = 0
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        for j in range(rg.num_columns):
            c = rg.column(j)
            phys = c.physical_type
            if phys in widths:
                total += int(c.num_values) * widths[phys]
            elif phys == "FIXED_LEN_BYTE_ARRAY":
                length = meta.schema.column(j).length or 1
                total += int(c.num_values) * int(length)
            else:
                total += max(int(c.total_uncompressed_size), 16 * int(c.num_values))
    return total


def _read_parquet(data: bytes | Path, fname: str, budget: int | None) -> _Table:
    """Parquet from bytes or from a file (then read column by column, never whole)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(data, Path):
        with open(data, "rb") as fh:
            magic = fh.read(4)
        source: Any = str(data)
    else:
        magic = data[:4]
        source = pa.BufferReader(data)
    if magic != b"PAR1":
        raise TrajectoryError(
            f"{fname}: not a Parquet file (it does not start with the Parquet magic bytes 'PAR1'); "
            "is the extension right?",
            file=fname,
        )
    try:
        pf = pq.ParquetFile(source)
        meta = pf.metadata
        names = [str(n) for n in pf.schema_arrow.names]
    except Exception as exc:
        raise TrajectoryError(f"{fname}: not a readable Parquet file ({_first_line(exc)})", file=fname) from None
    dup = _duplicate(names)
    if dup is not None:
        raise TrajectoryError(
            f"{fname}: column {dup!r} appears twice; expected each column once", file=fname, column=dup
        )
    decoded = _parquet_decoded_estimate(meta)
    if budget is not None and decoded > budget:
        raise _over_budget(fname, decoded, budget, "the table")
    n = int(meta.num_rows)
    string_cols = [
        f.name for f in pf.schema_arrow if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
    ]
    columns: dict[str, _Col] = {}
    # strings stay dictionary-encoded: repeated text cannot expand into copies
    try:
        pf = pq.ParquetFile(
            source if isinstance(data, Path) else pa.BufferReader(data),
            read_dictionary=string_cols or None,
            pre_buffer=False,  # stream each column chunk instead of holding it compressed and decoded
            buffer_size=1 << 22,
        )
    except Exception as exc:  # pragma: no cover - the footer was readable a moment ago
        raise TrajectoryError(f"{fname}: not a readable Parquet file ({_first_line(exc)})", file=fname) from None
    for name, field in zip(names, pf.schema_arrow):
        if _is_number_list(field.type):
            # read later, row group by row group, straight into the [N, D] matrix
            columns[name] = _Col("list", _ParquetListColumn(pf, name, n, fname))
            continue
        try:
            arr = pf.read(columns=[name]).column(0)
        except MemoryError:
            raise
        except Exception as exc:
            raise TrajectoryError(
                f"{fname}: column {name!r} is not readable ({_first_line(exc)})", file=fname, column=name
            ) from None
        columns[name] = _arrow_column(arr, name, fname, n)
        del arr
        pa.default_memory_pool().release_unused()
    return _Table(columns, n)


def _is_number_list(typ: Any) -> bool:
    import pyarrow as pa

    if not (pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ)):
        return False
    vt = typ.value_type
    return (pa.types.is_integer(vt) or pa.types.is_floating(vt)) and not pa.types.is_float16(vt)


class _ParquetListColumn:
    """A Parquet list-of-numbers column not read yet: its row groups are read one at a time
    (so the whole column never sits in memory twice)."""

    def __init__(self, pf: Any, name: str, n: int, fname: str) -> None:
        self.pf, self.name, self.n, self.fname = pf, name, n, fname
        self.type = pf.schema_arrow.field(name).type

    def __len__(self) -> int:
        return self.n

    def _read(self, group: int | None) -> Any:
        try:
            if group is None:
                return self.pf.read(columns=[self.name]).column(0)
            return self.pf.read_row_group(group, columns=[self.name]).column(0)
        except MemoryError:
            raise
        except Exception as exc:
            raise TrajectoryError(
                f"{self.fname}: column {self.name!r} is not readable ({_first_line(exc)})",
                file=self.fname,
                column=self.name,
            ) from None

    def chunks(self, rows: int = 32_768):
        """Arrow arrays of at most ``rows`` rows, in row order (decoded a batch at a time, so
        the column is never held decoded twice)."""
        import pyarrow as pa

        try:
            for batch in self.pf.iter_batches(batch_size=rows, columns=[self.name], use_threads=False):
                yield batch.column(0)
                del batch
                pa.default_memory_pool().release_unused()  # give the batch's buffers back now
        except (MemoryError, TrajectoryError):
            raise
        except Exception as exc:
            raise TrajectoryError(
                f"{self.fname}: column {self.name!r} is not readable ({_first_line(exc)})",
                file=self.fname,
                column=self.name,
            ) from None

    def to_pylist(self) -> list[Any]:
        return self._read(None).to_pylist()


def _arrow_column(arr: Any, name: str, fname: str, n: int) -> _Col:
    """One Arrow column -> a :class:`_Col` without going through pandas' type guessing."""
    import pyarrow as pa
    import pyarrow.compute as pc

    typ = arr.type
    if pa.types.is_dictionary(typ):
        dictionary = np.empty(0, dtype=object)
        indices = np.zeros(n, dtype=np.int64)
        mask = np.zeros(n, dtype=bool)
        parts_idx, parts_mask, dicts = [], [], []
        offset = 0
        for chunk in arr.chunks:
            d = np.empty(len(chunk.dictionary), dtype=object)
            d[:] = chunk.dictionary.to_pylist()  # each distinct text once; rows share it
            idx = chunk.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64) + offset
            parts_idx.append(idx)
            parts_mask.append(chunk.is_null().to_numpy(zero_copy_only=False))
            dicts.append(d)
            offset += len(d)
        if dicts:
            dictionary = np.concatenate(dicts)
            indices = np.concatenate(parts_idx)
            mask = np.concatenate(parts_mask)
        values = dictionary[indices] if len(dictionary) else np.full(n, None, dtype=object)
        values[mask] = None
        return _Col("json", values)
    mask = arr.is_null().to_numpy(zero_copy_only=False) if arr.null_count else None
    if pa.types.is_timestamp(typ) or pa.types.is_date(typ):
        return _Col("datetime", _arrow_times_us(arr, name, fname), mask)
    if pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_boolean(typ):
        filled = arr
        if arr.null_count:
            zero = pa.scalar(False) if pa.types.is_boolean(typ) else pa.scalar(0, type=typ)
            filled = pc.fill_null(arr, zero)
        return _Col("array", np.asarray(filled.to_numpy()), mask)
    # anything else (strings that were not dictionary-read, nested, binary): Python objects
    values = np.empty(n, dtype=object)
    values[:] = arr.to_pylist()
    return _Col("json", values)


def _arrow_times_us(arr: Any, name: str, fname: str) -> np.ndarray:
    """Arrow timestamps/dates -> int64 microseconds (UTC), exactly, refusing what cannot be held."""
    import pyarrow as pa

    typ = arr.type
    if pa.types.is_date32(typ):
        raw, factor = arr.cast(pa.int32()).to_numpy(zero_copy_only=False).astype(np.int64), 86_400 * _US
    elif pa.types.is_date64(typ):
        raw, factor = arr.cast(pa.int64()).to_numpy(zero_copy_only=False), 1000
    else:
        raw = arr.cast(pa.int64()).to_numpy(zero_copy_only=False)
        factor = {"s": _US, "ms": 1000, "us": 1, "ns": -1000}[typ.unit]
    raw = np.where(np.isnan(raw.astype(float)), 0, raw).astype(np.int64) if raw.dtype.kind == "f" else raw
    return _to_us(raw, factor, fname, name)


def _to_us(raw: np.ndarray, factor: int, fname: str, column: str, where: Any = None) -> np.ndarray:
    """int64 counts of a time unit -> int64 microseconds, exactly: ``factor`` microseconds per
    count (negative: ``-factor`` counts per microsecond). A sub-microsecond part or a time
    outside years 1-9999 is refused; ``where(i)`` describes row ``i`` (default ``row i+1``)."""
    note = where if where is not None else (lambda i: f"row {i + 1}")
    if factor < 0:
        bad = raw % -factor != 0
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise TrajectoryError(
                f"{fname}: {note(i)}, column {column!r}: the time has a sub-microsecond part; expected "
                "at most microsecond precision",
                file=fname,
                row=i + 1,
                column=column,
            )
        return raw // -factor
    limit = max(abs(_MIN_US), abs(_MAX_US)) // factor
    bad = np.abs(raw) > limit
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _time_range_error(fname, column, i, note(i))
    return raw * factor


def _time_range_error(fname: str, column: str, i: int, note: str = "") -> TrajectoryError:
    return TrajectoryError(
        f"{fname}: {note or f'row {i + 1}'}, column {column!r}: the time is outside the years 1-9999 that "
        "can be held exactly; expected a time in years 1-9999",
        file=fname,
        row=i + 1,
        column=column,
    )


# ---- NPZ ------------------------------------------------------------------------------------
_NPZ_KEYS = ("embeddings", "timestamps", "user_ids", "labels", "texts")


def _npz_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, fname: str, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from an ``.npy`` member's header, without reading its data."""
    with zf.open(info) as fh:
        try:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            header_len = fh.tell()
        except Exception as exc:
            raise TrajectoryError(
                f"{fname}: array '{key}' has no valid .npy header ({_first_line(exc)})", file=fname, column=key
            ) from None
    if dtype.hasobject:
        raise TrajectoryError(
            f"{fname}: array '{key}' is an object array, which is not loaded (allow_pickle=False); "
            "store it as numbers or fixed-width strings",
            file=fname,
            column=key,
        )
    declared = math.prod(shape) * dtype.itemsize
    if declared > info.file_size - header_len:
        raise TrajectoryError(
            f"{fname}: array '{key}' declares shape {shape} of {dtype} ({_mb(declared)}) but holds only "
            f"{_mb(max(0, info.file_size - header_len))} of data; the archive is damaged or forged",
            file=fname,
            column=key,
        )
    return tuple(int(x) for x in shape), dtype


def _read_npz(data: bytes, fname: str, budget: int | None) -> _Table:
    if not data.startswith(b"PK"):
        raise TrajectoryError(f"{fname}: not a NumPy .npz archive (not a zip file); is the extension right?", file=fname)
    try:
        zf = zipfile.ZipFile(_io.BytesIO(data))
        infos = zf.infolist()
    except Exception as exc:
        raise TrajectoryError(f"{fname}: not a readable .npz archive ({_first_line(exc)})", file=fname) from None
    with zf:
        members = [i.filename[:-4] if i.filename.endswith(".npy") else i.filename for i in infos]
        dup = _duplicate(members)
        if dup is not None:
            raise TrajectoryError(f"{fname}: array {dup!r} appears twice in the archive", file=fname, column=dup)
        by_name = dict(zip(members, infos))
        missing = [k for k in ("embeddings", "timestamps", "user_ids") if k not in by_name]
        if missing:
            raise TrajectoryError(
                f"{fname}: missing array(s) {missing}; an .npz needs 'embeddings' [N, D], "
                f"'timestamps' [N], 'user_ids' [N] (optional 'labels', 'texts'); found {sorted(by_name)}",
                file=fname,
                column=missing[0],
            )
        headers = {k: _npz_header(zf, by_name[k], fname, k) for k in _NPZ_KEYS if k in by_name}
        decoded = sum(math.prod(s) * dt.itemsize for s, dt in headers.values())
        if budget is not None and decoded > budget:
            raise _over_budget(fname, decoded, budget, "the archive")
        shape, _ = headers["embeddings"]
        if len(shape) != 2:
            raise TrajectoryError(
                f"{fname}: array 'embeddings' must be 2-D [N, D], got shape {shape}", file=fname, column="embeddings"
            )
        n = shape[0]
        if n == 0:
            raise TrajectoryError(f"{fname}: array 'embeddings' has no rows", file=fname, column="embeddings")
        for key in ("timestamps", "user_ids", "labels", "texts"):
            if key in headers and headers[key][0] != (n,):
                raise TrajectoryError(
                    f"{fname}: array '{key}' must have shape ({n},) to match 'embeddings', got {headers[key][0]}",
                    file=fname,
                    column=key,
                )
        arrays: dict[str, np.ndarray] = {}
        for key in headers:
            try:
                with zf.open(by_name[key]) as fh:
                    arrays[key] = np.lib.format.read_array(fh, allow_pickle=False)
            except MemoryError:
                raise
            except Exception as exc:
                raise TrajectoryError(
                    f"{fname}: array '{key}' is not readable ({_first_line(exc)})", file=fname, column=key
                ) from None
    emb = arrays.pop("embeddings")
    if emb.dtype.kind not in "iuf" or emb.dtype == np.float16:
        raise TrajectoryError(
            f"{fname}: array 'embeddings' must be real numbers (integers, float32 or float64), got dtype {emb.dtype}",
            file=fname,
            column="embeddings",
        )
    columns = {"embeddings": _Col("matrix", emb)}
    rename = {"user_ids": "user_id", "timestamps": "timestamp", "labels": "label", "texts": "text"}
    for key, arr in arrays.items():
        columns[rename[key]] = _Col("array", arr)
    return _Table(columns, n)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


# -------------------------------------------------------------------------------------------
# validation and assembly
# -------------------------------------------------------------------------------------------
def _parse_posts(table: _Table, fname: str, *, need_embeddings: bool) -> PostTable:
    if table.n == 0:
        raise TrajectoryError(f"{fname}: the table has a header but no rows; expected one row per post", file=fname)
    cols = list(table.columns)
    for required in ("user_id", "timestamp"):
        if required not in cols:
            raise TrajectoryError(
                f"{fname}: missing required column '{required}'; found columns {cols[:12]}"
                + (" …" if len(cols) > 12 else ""),
                file=fname,
                column=required,
            )
    ecols = _e_columns(cols, fname)
    has_matrix = "embeddings" in table.columns and table.columns["embeddings"].kind == "matrix"
    if "embedding" in cols and ecols:
        raise TrajectoryError(
            f"{fname}: both a list column 'embedding' and columns {ecols[0]!r}, … are present; expected the "
            "embedding once (one or the other)",
            file=fname,
            column="embedding",
        )
    matrix: np.ndarray | None
    if has_matrix:
        matrix, emb_desc = table.columns["embeddings"].values, "embeddings"
    elif "embedding" in cols or ecols:
        matrix, emb_desc = _embedding_matrix(table, ecols, fname)
    elif need_embeddings and "text" in cols:
        raise TrajectoryError(
            f"{fname}: the table has texts but no embedding (no 'embedding' or 'e0', 'e1', … columns); "
            "embed the posts first: `python -m cvx_core embed "
            f"{fname} --out TRAJ.parquet` or `cvx_core.embed_posts(...)` (the app's Data page embeds "
            "text uploads itself)",
            file=fname,
            column="embedding",
        )
    elif need_embeddings:
        raise TrajectoryError(
            f"{fname}: missing the embedding: expected a list column 'embedding' or numeric columns "
            f"'e0', 'e1', … 'e{{D-1}}'; found columns {cols[:12]}",
            file=fname,
            column="embedding",
        )
    else:
        matrix, emb_desc = None, ""
    matrix32 = None if matrix is None else _finite_float32(matrix, table, fname, emb_desc)
    del matrix

    user_ids = _user_ids(table.columns["user_id"], table, fname)
    times = _timestamps(table.columns["timestamp"], table, fname)
    labels = present = None
    if "label" in cols:
        labels, present = _labels(table.columns["label"], table, fname)
    texts = None
    if "text" in cols:
        texts = _texts(table.columns["text"], table, fname)
    elif matrix32 is None:
        raise TrajectoryError(
            f"{fname}: missing column 'text'; a table without an embedding needs the posts' texts",
            file=fname,
            column="text",
        )
    extra_cols = [c for c in cols if c not in _KNOWN_COLUMNS and c not in ecols and c != "embeddings"]
    extra = pd.DataFrame({c: _extra_values(table.columns[c]) for c in extra_cols}, index=pd.RangeIndex(table.n))
    return PostTable(
        file=fname,
        user_ids=user_ids,
        datetimes=times,
        labels=labels,
        texts=texts,
        embeddings=matrix32,
        extra=extra,
        _table=table,
        label_present=present,
    )


def _e_columns(cols: list[str], fname: str) -> list[str]:
    """The ``e0 … e{D-1}`` columns in index order; refuses gaps and names such as ``e01``."""
    found: list[tuple[int, str]] = []
    for c in cols:
        m = _E_COL.match(c)
        if not m:
            continue
        if m.group(1) != str(int(m.group(1))):
            raise TrajectoryError(
                f"{fname}: column {c!r} is ambiguous (a leading zero); expected embedding columns named "
                f"e0, e1, … without leading zeros",
                file=fname,
                column=c,
            )
        found.append((int(m.group(1)), c))
    found.sort()
    idx = [i for i, _ in found]
    if idx and idx != list(range(len(idx))):
        missing = sorted(set(range(max(idx) + 1)) - set(idx))
        raise TrajectoryError(
            f"{fname}: embedding columns must be e0 … e{max(idx)} without gaps; missing column 'e{missing[0]}'",
            file=fname,
            column=f"e{missing[0]}",
        )
    return [c for _, c in found]


def _group(posts: PostTable, matrix32: np.ndarray) -> TrajectorySet:
    """Rows -> trajectories: users in order of first row, posts sorted stably by time."""
    table, fname = posts._table, posts.file
    user_ids, times = posts.user_ids, posts.datetimes
    codes, uniques = pd.factorize(pd.Series(user_ids, dtype=object), sort=False)
    order = np.lexsort((np.arange(len(codes)), times.astype(np.int64), codes))
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    # one gather, then each user's rows are a contiguous view; none when the file is already
    # grouped by user and in time order (as save_trajectories writes it)
    sorted_emb = matrix32 if np.array_equal(order, np.arange(len(order))) else matrix32[order]
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(order)]])
    trajs: list[Trajectory] = []
    for a, b in zip(starts.tolist(), ends.tolist()):
        rows = order[a:b]
        uid = str(uniques[codes[rows[0]]])
        label = None
        if posts.labels is not None:
            label = _user_label(posts.labels, posts.label_present, rows, uid, table, fname)
        trajs.append(
            Trajectory(
                user_id=uid,
                embeddings=sorted_emb[a:b],
                datetimes=times[rows],
                label=label,
                texts=None if posts.texts is None else tuple(posts.texts[rows]),
            )
        )
    metadata = _metadata(posts.extra, codes, [str(u) for u in uniques])
    return TrajectorySet(trajs, name=fname, metadata=metadata)


def _metadata(extra: pd.DataFrame, codes: np.ndarray, uniques: list[str]) -> pd.DataFrame | None:
    """Extra columns constant within every user (one scalar type each) -> ``[users, columns]``."""
    if extra.shape[1] == 0:
        return None
    first_row = np.zeros(len(uniques), dtype=np.int64)
    first_row[codes[::-1]] = np.arange(len(codes))[::-1]
    keep: dict[str, pd.Series] = {}
    for c in extra.columns:
        col = extra[c]
        if col.dtype == object:
            kinds = {type(v) for v in col.tolist() if v is not None}
            if len(kinds) > 1 or kinds & {list, dict, tuple, bytes}:
                continue  # no single scalar type: not metadata
        try:
            per_user = col.groupby(codes, sort=False).nunique(dropna=False)
        except TypeError:  # unhashable values
            continue
        if (per_user > 1).any():
            continue  # varies within a user: per-post data, not metadata
        keep[str(c)] = col.iloc[first_row].reset_index(drop=True)
    if not keep:
        return None
    return pd.DataFrame(keep).set_axis(pd.Index(uniques, name="user_id", dtype=object), axis=0)


def _extra_values(col: _Col) -> Any:
    if col.kind in ("text", "json"):
        return pd.Series(col.values, dtype=object)
    if col.kind == "datetime":
        s = pd.Series(col.values.view(DATETIME_DTYPE))
        return s.where(~col.mask) if col.mask is not None else s
    if col.kind == "list":
        values = np.empty(len(col.values), dtype=object)
        values[:] = col.values.to_pylist()
        return pd.Series(values, dtype=object)
    arr = col.values
    if arr.dtype.kind in "US":
        return pd.Series(arr.astype(object), dtype=object)
    if col.mask is not None:
        if arr.dtype.kind in "iub":
            objs = np.where(col.mask, None, arr.astype(object)).tolist()
            return pd.Series(pd.array(objs, dtype="boolean" if arr.dtype.kind == "b" else "Int64"))
        return pd.Series(np.where(col.mask, np.nan, arr))
    return pd.Series(arr)


# ---- embeddings -----------------------------------------------------------------------------
_NUMBER = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*|\s*[+-]?(?:nan|inf|infinity)\s*", re.I)


def _number(v: Any) -> float | None:
    """A JSON/CSV cell -> float, or None when it is not a number (bool is not a number)."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        try:
            return float(v)
        except OverflowError:
            return math.inf
    if isinstance(v, str) and _NUMBER.fullmatch(v):
        return float(v)
    return None


def _embedding_matrix(table: _Table, ecols: list[str], fname: str) -> tuple[np.ndarray, str]:
    if "embedding" in table.columns:
        return _list_column(table.columns["embedding"], table, fname), "embedding"
    out = np.empty((table.n, len(ecols)), dtype=np.float64)
    for j, c in enumerate(ecols):
        col = table.columns[c]
        if col.kind == "array" and col.values.dtype.kind in "iuf" and col.values.dtype != np.float16:
            vals = col.values.astype(np.float64)
            if col.mask is not None:
                vals[col.mask] = np.nan
            out[:, j] = vals
            continue
        if col.kind not in ("text", "json"):
            raise TrajectoryError(
                f"{fname}: column {c!r} holds {_kind_name(col)}; expected numbers", file=fname, column=c
            )
        for i, v in enumerate(col.values.tolist()):
            if v is None or (col.kind == "text" and v.strip() == ""):
                out[i, j] = np.nan  # refused as "not finite" with its row and column
                continue
            x = _number(v)
            if x is None:
                raise TrajectoryError(
                    f"{fname}: {table.where(i)}, column '{c}': {_show(v)} is not a number; "
                    "expected a finite embedding value",
                    file=fname,
                    row=i + 1,
                    column=c,
                )
            out[i, j] = x
    return out, f"e0 … e{len(ecols) - 1}"


def _kind_name(col: _Col) -> str:
    if col.kind == "array":
        return f"values of type {col.values.dtype}"
    return {"datetime": "datetimes", "list": "lists", "matrix": "a matrix"}.get(col.kind, col.kind)


def _list_column(col: _Col, table: _Table, fname: str) -> np.ndarray:
    if col.kind == "list":
        return _arrow_list_matrix(col.values, table, fname)
    if col.kind not in ("text", "json"):
        raise TrajectoryError(
            f"{fname}: column 'embedding' holds {_kind_name(col)}; expected a list of numbers per row",
            file=fname,
            column="embedding",
        )
    values = col.values.tolist()
    width: int | None = None
    out: np.ndarray | None = None
    for i, cell in enumerate(values):
        vec = _parse_vector(cell, table, fname, i)
        if width is None:
            width = vec.shape[0]
            if width == 0:
                raise TrajectoryError(
                    f"{fname}: {table.where(i)}, column 'embedding': the embedding is empty; expected D >= 1 numbers",
                    file=fname,
                    row=i + 1,
                    column="embedding",
                )
            out = np.empty((len(values), width), dtype=np.float64)
        elif vec.shape[0] != width:
            raise TrajectoryError(
                f"{fname}: {table.where(i)}, column 'embedding': has {vec.shape[0]} values, expected {width} "
                "like the rows before it",
                file=fname,
                row=i + 1,
                column="embedding",
            )
        out[i] = vec  # type: ignore[index]
    assert out is not None
    return out


def _arrow_list_matrix(arr: Any, table: _Table, fname: str) -> np.ndarray:
    """An Arrow list column of numbers -> ``[N, D]`` without per-row Python objects (the
    values buffer is used in place when it is already float32/float64)."""
    import pyarrow as pa

    def err(i: int, what: str) -> TrajectoryError:
        return TrajectoryError(
            f"{fname}: {table.where(i)}, column 'embedding': {what}; expected a list of numbers like [0.1, -0.2, …]",
            file=fname,
            row=i + 1,
            column="embedding",
        )

    n = len(arr)
    vt = arr.type.value_type
    out_dtype = np.float32 if pa.types.is_float32(vt) else np.float64
    out: np.ndarray | None = None
    width = -1
    pos = 0
    for c in arr.chunks():
        if c.null_count:
            i = int(np.flatnonzero(c.is_null().to_numpy(zero_copy_only=False))[0])
            raise err(pos + i, "the embedding is missing")
        if pa.types.is_fixed_size_list(c.type):
            lengths = np.full(len(c), c.type.list_size)
        else:
            lengths = c.value_lengths().to_numpy(zero_copy_only=False)
        if width < 0 and len(c):
            width = int(lengths[0])
            if width == 0:
                raise err(pos, "the embedding is empty")
        if (lengths != width).any():
            i = int(np.flatnonzero(lengths != width)[0])
            raise err(pos + i, f"has {int(lengths[i])} values, expected {width} like the rows before it")
        flat = c.flatten()
        if flat.null_count:
            j = int(np.flatnonzero(flat.is_null().to_numpy(zero_copy_only=False))[0])
            raise err(pos + j // width, f"position {j % width} is missing (not finite)")
        vals = flat.to_numpy(zero_copy_only=False).reshape(len(c), width)
        if out is None:
            out = np.empty((n, width), dtype=out_dtype)
        out[pos : pos + len(c)] = vals
        pos += len(c)
        del flat, vals, c
    if out is None:
        raise err(0, "the embedding is empty")
    return out


def _parse_vector(cell: Any, table: _Table, fname: str, i: int) -> np.ndarray:
    def bad(what: str) -> TrajectoryError:
        return TrajectoryError(
            f"{fname}: {table.where(i)}, column 'embedding': {what}; expected a list of numbers like [0.1, -0.2, …]",
            file=fname,
            row=i + 1,
            column="embedding",
        )

    if cell is None or (isinstance(cell, str) and not cell.strip()):
        raise bad("the embedding is missing")
    if isinstance(cell, str):
        text = cell.strip()
        try:
            parsed = json.loads(text)
        except (json.JSONDecodeError, ValueError, RecursionError):
            # whitespace- or comma-separated numbers without brackets
            parsed = [p for p in re.split(r"[,\s]+", text.strip("[]() ")) if p]
        cell = parsed
    if not isinstance(cell, (list, tuple, np.ndarray)):
        raise bad(f"{_show(cell)} is not a list of numbers")
    out = np.empty(len(cell), dtype=np.float64)
    for k, v in enumerate(cell):
        if isinstance(v, bool):
            raise bad(f"position {k} is the boolean {v!r}, not a number")
        if isinstance(v, (list, tuple, dict)):
            raise bad(f"position {k} is nested ({_show(v)}); expected a flat list")
        x = _number(v)
        if x is None:
            raise bad(f"{_show(v)} at position {k} is not a number")
        out[k] = x
    return out


def _finite_float32(matrix: np.ndarray, table: _Table, fname: str, emb_desc: str) -> np.ndarray:
    """``matrix`` as finite float32 ``[N, D]``; names the first non-finite or too-large value."""
    if matrix.dtype == np.float32:
        m32 = matrix
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            m32 = matrix.astype(np.float32)
    finite = np.isfinite(m32)
    if finite.all():
        return m32
    i, j = (int(x) for x in np.argwhere(~finite)[0])
    column = emb_desc if emb_desc in ("embedding", "embeddings") else f"e{j}"
    where = f"{table.where(i)}, column '{column}'" + (f" (position {j})" if column in ("embedding", "embeddings") else "")
    value = matrix[i, j]
    what = "is too large for float32" if np.isfinite(value) else "is not finite"
    raise TrajectoryError(
        f"{fname}: {where}: value {value} {what}; expected finite embedding values (no NaN or inf)",
        file=fname,
        row=i + 1,
        column=column,
    )


# ---- user ids -------------------------------------------------------------------------------
def _user_ids(col: _Col, table: _Table, fname: str) -> np.ndarray:
    def fail(i: int, what: str) -> TrajectoryError:
        return TrajectoryError(
            f"{fname}: {table.where(i)}, column 'user_id': {what}; expected a non-empty text or integer id",
            file=fname,
            row=i + 1,
            column="user_id",
        )

    if col.kind == "array":
        arr = col.values
        if col.mask is not None and col.mask.any():
            raise fail(int(np.flatnonzero(col.mask)[0]), "empty user id")
        if arr.dtype.kind in "iu":
            return np.array([str(v) for v in arr.tolist()], dtype=object)
        if arr.dtype.kind == "U":
            values = arr.tolist()
        elif arr.dtype.kind == "S":
            values = []
            for i, raw in enumerate(arr.tolist()):
                try:
                    values.append(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    raise fail(i, f"{_show(raw)} is not valid UTF-8") from None
        else:
            kind = "floats" if arr.dtype.kind == "f" else f"values of type {arr.dtype}"
            raise fail(0, f"ids are {kind} ({_show(arr[0])}); floats lose digits and 1.0 vs 1 is ambiguous")
        out = np.empty(len(values), dtype=object)
        out[:] = values
        for i, v in enumerate(values):
            if not v.strip():
                raise fail(i, "empty user id")
        return out
    if col.kind != "text" and col.kind != "json":
        raise fail(0, f"ids are {_kind_name(col)}")
    values = col.values.tolist()
    out = np.empty(len(values), dtype=object)
    seen: dict[str, type] = {}
    for i, v in enumerate(values):
        if isinstance(v, str):
            if not v.strip():
                raise fail(i, "empty user id")
            text = v
        elif isinstance(v, int) and not isinstance(v, bool):
            text = str(v)
        elif v is None:
            raise fail(i, "empty user id")
        elif isinstance(v, float):
            raise fail(i, f"{_show(v)} is a float; floats lose digits and 1.0 vs 1 is ambiguous (write the id as text or an integer)")
        else:
            raise fail(i, f"{_show(v)} is a {type(v).__name__}")
        kind = type(v)
        prev = seen.setdefault(text, kind)
        if prev is not kind:
            raise fail(
                i,
                f"{_show(v)} ({kind.__name__}) and an earlier {prev.__name__} id would be the same user "
                f"{text!r}",
            )
        out[i] = text
    return out


# ---- timestamps -----------------------------------------------------------------------------
_ISO = re.compile(
    r"(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})"
    r"(?:[Tt ](?P<h>\d{2}):(?P<mi>\d{2})(?::(?P<s>\d{2})(?:[.,](?P<f>\d{1,9}))?)?)?"
    r"\s*(?P<tz>[Zz]|[+-]\d{2}(?::?\d{2})?)?"
)


def _iso_us(text: str) -> tuple[int, bool] | str:
    """ISO-8601 text -> (microseconds since 1970 UTC, has an offset), or why it is refused."""
    m = _ISO.fullmatch(text.strip())
    if not m:
        return "is not an ISO-8601 date or time"
    try:
        day = _dt.date(int(m["y"]), int(m["mo"]), int(m["d"]))
        h, mi, s = int(m["h"] or 0), int(m["mi"] or 0), int(m["s"] or 0)
        _dt.time(h, mi, s)
    except ValueError as exc:
        return f"is not a valid date or time ({exc})"
    frac = (m["f"] or "").ljust(9, "0")
    if frac[6:] != "000":
        return "has a sub-microsecond part, which cannot be held exactly"
    us = ((day.toordinal() - _EPOCH_ORDINAL) * 86_400 + h * 3600 + mi * 60 + s) * _US + int(frac[:6])
    tz = m["tz"]
    if tz and tz not in "Zz":
        sign = -1 if tz[0] == "-" else 1
        digits = tz[1:].replace(":", "")
        oh, om = int(digits[:2]), int(digits[2:] or 0)
        if oh > 23 or om > 59:
            return "has an invalid UTC offset"
        us -= sign * (oh * 3600 + om * 60) * _US
    return us, bool(tz)


def _timestamps(col: _Col, table: _Table, fname: str) -> np.ndarray:
    """Any accepted timestamp column -> ``datetime64[us]`` (UTC, naive), exactly."""

    def fail(i: int, value: Any, what: str) -> TrajectoryError:
        return TrajectoryError(
            f"{fname}: {table.where(i)}, column 'timestamp': {_show(value)} {what}; expected ISO-8601 text "
            "with a full date (e.g. 2024-03-01T12:00:00Z), a datetime, or epoch seconds as a number",
            file=fname,
            row=i + 1,
            column="timestamp",
        )

    n = table.n
    if col.kind == "datetime":
        if col.mask is not None and col.mask.any():
            i = int(np.flatnonzero(col.mask)[0])
            raise fail(i, None, "is missing")
        us = col.values
    elif col.kind == "array":
        arr = col.values
        if col.mask is not None and col.mask.any():
            raise fail(int(np.flatnonzero(col.mask)[0]), None, "is missing")
        if arr.dtype.kind == "M":
            us = _datetime64_us(arr, fname, table)
        elif arr.dtype.kind in "iu":
            us = _epoch_ints_us(arr, fname, table)
        elif arr.dtype.kind == "f":
            us = _epoch_floats_us(arr, fname, table)
        elif arr.dtype.kind in "US":
            texts = np.empty(n, dtype=object)
            if arr.dtype.kind == "S":
                for i, raw in enumerate(arr.tolist()):
                    try:
                        texts[i] = raw.decode("utf-8")
                    except UnicodeDecodeError:
                        raise fail(i, raw, "is not valid UTF-8") from None
            else:
                texts[:] = arr.tolist()
            return _timestamps(_Col("text", texts), table, fname)
        else:
            raise fail(0, arr[0], f"is of type {arr.dtype}, not a time")
    elif col.kind in ("text", "json"):
        us = np.empty(n, dtype=np.int64)
        cache: dict[str, tuple[int, bool] | str] = {}
        aware_first: tuple[bool, int] | None = None
        for i, v in enumerate(col.values.tolist()):
            if v is None or (isinstance(v, str) and not v.strip()):
                raise fail(i, v, "is missing")
            if isinstance(v, str):
                stripped = v.strip()
                if re.fullmatch(r"[+-]?\d+(\.\d*)?", stripped):
                    raise fail(
                        i,
                        v,
                        "is digits only, which is ambiguous (a year? YYYYMMDD? epoch seconds?); write "
                        "ISO-8601 text, or epoch seconds as a JSON/Parquet number",
                    )
                got = cache.get(v)
                if got is None:
                    got = cache[v] = _iso_us(v)
                if isinstance(got, str):
                    raise fail(i, v, got)
                value, aware = got
                if aware_first is None:
                    aware_first = (aware, i)
                elif aware != aware_first[0]:
                    a, b = ("has", "has no") if aware else ("has no", "has")
                    raise fail(
                        i,
                        v,
                        f"{a} UTC offset but {table.where(aware_first[1])} {b}; a file must give every "
                        "time with an offset or none",
                    )
            elif isinstance(v, bool):
                raise fail(i, v, "is a boolean")
            elif isinstance(v, int):
                value = v * _US
            elif isinstance(v, float):
                if not math.isfinite(v):
                    raise fail(i, v, "is not finite")
                value = int(v) * _US if v.is_integer() else round(v * _US)
            else:
                raise fail(i, v, f"is a {type(v).__name__}")
            if not _MIN_US <= value <= _MAX_US:
                raise fail(i, v, "is outside the years 1-9999 that can be held exactly")
            us[i] = value
    else:
        raise fail(0, None, f"holds {_kind_name(col)}")
    bad = (us < _MIN_US) | (us > _MAX_US)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _time_range_error(fname, "timestamp", i, table.where(i))
    return np.asarray(us, dtype=np.int64).view(DATETIME_DTYPE)


def _datetime64_us(arr: np.ndarray, fname: str, table: _Table) -> np.ndarray:
    unit, _ = np.datetime_data(arr.dtype)
    if np.isnat(arr).any():
        i = int(np.flatnonzero(np.isnat(arr))[0])
        raise TrajectoryError(
            f"{fname}: {table.where(i)}, column 'timestamp': the time is missing (NaT)",
            file=fname,
            row=i + 1,
            column="timestamp",
        )
    raw = arr.view(np.int64)
    per_us = {"ns": -1000, "ps": -(10**6), "fs": -(10**9), "as": -(10**12), "us": 1, "ms": 1000, "s": _US,
              "m": 60 * _US, "h": 3600 * _US, "D": 86_400 * _US, "W": 7 * 86_400 * _US}
    if unit in ("Y", "M"):  # calendar units: convert through days (exact, years are small)
        days = arr.astype("datetime64[D]").view(np.int64)
        raw, unit = days, "D"
    step = per_us.get(unit)
    if step is None:  # pragma: no cover - generic units
        raise TrajectoryError(f"{fname}: column 'timestamp': unsupported datetime unit {unit!r}", file=fname, column="timestamp")
    return _to_us(raw, step, fname, "timestamp", table.where)


def _epoch_ints_us(arr: np.ndarray, fname: str, table: _Table) -> np.ndarray:
    limit = max(abs(_MIN_US), abs(_MAX_US)) // _US
    if arr.dtype.kind == "u":
        bad = arr > np.uint64(limit)
    else:
        bad = np.abs(arr.astype(np.int64)) > limit
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _time_range_error(fname, "timestamp", i, table.where(i))
    return arr.astype(np.int64) * _US


def _epoch_floats_us(arr: np.ndarray, fname: str, table: _Table) -> np.ndarray:
    x = arr.astype(np.float64)
    limit = max(abs(_MIN_US), abs(_MAX_US)) / _US
    bad = ~np.isfinite(x) | (np.abs(x) > limit)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _time_range_error(fname, "timestamp", i, table.where(i))
    whole = np.floor(x) == x
    out = np.where(whole, 0, np.round(x * _US)).astype(np.int64)
    out[whole] = x[whole].astype(np.int64) * _US
    return out


# ---- labels and texts -----------------------------------------------------------------------
_INT_TEXT = re.compile(r"\s*[+-]?\d+(?:\.0*)?\s*")


def _labels(col: _Col, table: _Table, fname: str) -> tuple[np.ndarray, np.ndarray]:
    """Label column -> (int64 values, present mask); refuses fractions, booleans,
    negatives and anything outside int64."""

    def fail(i: int, v: Any, what: str = "is not an integer class") -> TrajectoryError:
        return TrajectoryError(
            f"{fname}: {table.where(i)}, column 'label': {_show(v)} {what}; expected an integer label >= 0 "
            "(or leave it empty for no label)",
            file=fname,
            row=i + 1,
            column="label",
        )

    n = table.n
    out = np.zeros(n, dtype=np.int64)
    present = np.ones(n, dtype=bool)
    if col.kind == "array":
        arr = col.values
        mask = col.mask if col.mask is not None else np.zeros(n, dtype=bool)
        if arr.dtype.kind == "f":
            mask = mask | np.isnan(arr)
            x = np.where(mask, 0.0, arr)
            bad = (np.floor(x) != x) | (x < 0) | (x >= 2.0**63) | ~np.isfinite(x)
        elif arr.dtype.kind == "i":
            x = arr
            bad = (arr < 0) & ~mask
        elif arr.dtype.kind == "u":
            x = arr
            bad = (arr > np.uint64(_INT64_MAX)) & ~mask
        else:
            if arr.dtype.kind in "US":
                texts = np.empty(n, dtype=object)
                texts[:] = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in arr.tolist()]
                return _labels(_Col("text", texts), table, fname)
            raise fail(0, arr[0], f"is of type {arr.dtype}")
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise fail(i, arr[i], "is negative, fractional or too large" if arr.dtype.kind != "b" else "")
        out[:] = np.where(mask, 0, x).astype(np.int64)
        present &= ~mask
        return out, present
    if col.kind not in ("text", "json"):
        raise fail(0, None, f"holds {_kind_name(col)}")
    for i, v in enumerate(col.values.tolist()):
        if v is None or (isinstance(v, str) and not v.strip()) or (isinstance(v, float) and math.isnan(v)):
            present[i] = False  # empty, null, or NaN (how pandas writes a missing number)
            continue
        if isinstance(v, bool):
            raise fail(i, v, "is a boolean, not a class")
        if isinstance(v, int):
            value = v
        elif isinstance(v, float):
            if not math.isfinite(v) or not v.is_integer():
                raise fail(i, v)
            value = int(v)
        elif isinstance(v, str):
            if not _INT_TEXT.fullmatch(v):
                raise fail(i, v)
            value = int(v.strip().split(".")[0])
        else:
            raise fail(i, v)
        if value < 0:
            raise fail(i, v, "is negative (labels are class indices; -1 is not a way to say 'no label')")
        if value > _INT64_MAX:
            raise fail(i, v, "is too large for a 64-bit integer")
        out[i] = value
    return out, present


def _texts(col: _Col, table: _Table, fname: str) -> np.ndarray:
    out = np.empty(table.n, dtype=object)
    if col.kind == "array" and col.values.dtype.kind in "US":
        arr = col.values
        for i, v in enumerate(arr.tolist()):
            if isinstance(v, bytes):
                try:
                    v = v.decode("utf-8")
                except UnicodeDecodeError:
                    raise TrajectoryError(
                        f"{fname}: {table.where(i)}, column 'text': not valid UTF-8", file=fname, row=i + 1, column="text"
                    ) from None
            out[i] = v
        return out
    if col.kind not in ("text", "json"):
        raise TrajectoryError(
            f"{fname}: column 'text' holds {_kind_name(col)}; expected text", file=fname, column="text"
        )
    for i, v in enumerate(col.values.tolist()):
        if v is None:
            out[i] = ""  # no text for this post
        elif isinstance(v, str):
            out[i] = v
        else:
            raise TrajectoryError(
                f"{fname}: {table.where(i)}, column 'text': {_show(v)} is a {type(v).__name__}; expected text",
                file=fname,
                row=i + 1,
                column="text",
            )
    return out


def _user_label(
    labels: np.ndarray, present: np.ndarray | None, rows: np.ndarray, uid: str, table: _Table, fname: str
) -> int | None:
    vals = labels[rows]
    here = np.ones(len(rows), dtype=bool) if present is None else present[rows]
    if not here.any():
        return None
    first = vals[here][0]
    differs = ~here | (vals != first)
    if differs.any():
        k = rows[np.flatnonzero(differs)[0]]
        j = rows[np.flatnonzero(here)[0]]
        other = "no label" if present is not None and not present[k] else f"label {int(labels[k])}"
        raise TrajectoryError(
            f"{fname}: {table.where(int(k))}, column 'label': user {uid!r} has {other} here but label "
            f"{int(first)} at {table.where(int(j))}; expected one label per user",
            file=fname,
            row=int(k) + 1,
            column="label",
            user=uid,
        )
    return int(first)


def _show(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
