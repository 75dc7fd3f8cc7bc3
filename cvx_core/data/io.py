"""Reading and writing trajectory tables, with strict validation.

Input is long format, one row per post: ``user_id``, ``timestamp`` (ISO-8601 text, datetime,
or epoch seconds), optional ``label``, optional ``text``, and the embedding either as one
list column ``embedding`` or as columns ``e0 … e{D-1}``. Formats: CSV, Parquet, JSON Lines,
NumPy ``.npz`` (arrays ``embeddings``, ``timestamps``, ``user_ids``, optional ``labels`` and
``texts``; read with ``allow_pickle=False``). Every problem raises :class:`TrajectoryError`
naming the file, the row (1-based, as a person counts data rows) or user, and the column.
"""

from __future__ import annotations

import io as _io
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Union

import numpy as np
import pandas as pd

from cvx_core.data.atomic import atomic_replace
from cvx_core.data.trajectory import Trajectory, TrajectoryError, TrajectorySet

__all__ = ["load_trajectories", "read_posts", "PostTable", "save_trajectories", "FORMATS", "TrajectoryError"]

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


# -------------------------------------------------------------------------------------------
# public API
# -------------------------------------------------------------------------------------------
def load_trajectories(
    source: Source, *, name: str | None = None, format: str | None = None
) -> TrajectorySet:
    """Read a trajectory table into a :class:`TrajectorySet`.

    Args:
        source: a path, raw bytes, or an open binary buffer (e.g. Streamlit's uploaded file;
            its ``.name`` is used for the format and for messages).
        name: the name used in error messages and as the set's name (default: file name).
        format: ``"csv" | "parquet" | "jsonl" | "npz"``; default from the file extension.

    Posts are sorted stably by time within each user; users keep the order of their first
    row. Raises :class:`TrajectoryError` on any invalid input, including a table of texts
    with no embedding (embed those with :func:`cvx_core.embed_posts`).
    """
    return read_posts(source, name=name, format=format, need_embeddings=True).to_set()


@dataclass(frozen=True, eq=False)
class PostTable:
    """A validated long table of posts, one row per post, in file order.

    ``user_ids`` ``[N]`` (str objects), ``datetimes`` ``[N]`` (datetime64), ``labels`` ``[N]``
    float64 with NaN for "no label" (or ``None`` without a label column), ``texts`` ``[N]``
    (str objects, or ``None``), ``embeddings`` ``[N, D]`` float32 (or ``None`` for a table of
    texts), ``extra`` the remaining columns (for per-user metadata). ``where(i)`` describes
    0-based row ``i`` for messages.
    """

    file: str
    user_ids: np.ndarray
    datetimes: np.ndarray
    labels: np.ndarray | None
    texts: np.ndarray | None
    embeddings: np.ndarray | None
    extra: pd.DataFrame
    _table: "_Table"

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
    source: Source, *, name: str | None = None, format: str | None = None, need_embeddings: bool = True
) -> PostTable:
    """Read and validate a long table of posts without grouping it (see :class:`PostTable`).

    With ``need_embeddings=False`` a table of texts with no embedding is accepted (its
    ``text`` column is then required and every cell must hold text)."""
    data, fname = _read_bytes(source, name)
    fmt = _detect_format(fname, format)
    if len(data) == 0:
        raise TrajectoryError(f"{fname}: the file is empty (0 bytes); expected a {fmt} table of posts", file=fname)
    if fmt == "npz":
        table = _read_npz(data, fname)
    else:
        table = _read_frame(data, fname, fmt)
    return _parse_posts(table, fname, need_embeddings=need_embeddings)


def save_trajectories(trajectories: TrajectorySet, path: str | os.PathLike) -> Path:
    """Write ``trajectories`` as Parquet (one row per post), atomically.

    The file is written to a temporary name in the same folder and renamed over ``path``,
    so an existing file is never left half-written.
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
        "timestamp": pa.array(np.concatenate(stamps).astype("datetime64[ns]"), type=pa.timestamp("ns", tz="UTC")),
        "label": pa.array(labels, type=pa.int64()),
    }
    if has_text:
        columns["text"] = pa.array(texts, type=pa.string())
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
# reading
# -------------------------------------------------------------------------------------------
class _Table:
    """A parsed table: a DataFrame, how rows are counted for messages, and (NPZ only) the
    embedding matrix ``[N, D]`` read from its own array instead of from columns."""

    def __init__(
        self,
        frame: pd.DataFrame,
        *,
        row_offset_note: Callable[[int], str] | None = None,
        matrix: np.ndarray | None = None,
    ) -> None:
        self.frame = frame.reset_index(drop=True)
        self._note = row_offset_note
        self.matrix = matrix

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


def _read_frame(data: bytes, fname: str, fmt: str) -> _Table:
    buf = _io.BytesIO(data)
    if fmt == "parquet":
        if not data.startswith(b"PAR1"):
            raise TrajectoryError(
                f"{fname}: not a Parquet file (it does not start with the Parquet magic bytes 'PAR1'); "
                "is the extension right?",
                file=fname,
            )
        try:
            frame = pd.read_parquet(buf)
        except Exception as exc:
            raise TrajectoryError(f"{fname}: not a readable Parquet file ({exc})", file=fname) from None
        return _Table(frame)
    if fmt == "csv":
        if _looks_binary(data):
            raise TrajectoryError(
                f"{fname}: not a CSV text file (binary content); is the extension right?", file=fname
            )
        try:
            frame = pd.read_csv(buf, dtype={"user_id": str, "text": str}, keep_default_na=True)
        except pd.errors.EmptyDataError:
            raise TrajectoryError(f"{fname}: the file is empty; expected a header row and one row per post", file=fname) from None
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise TrajectoryError(f"{fname}: not a readable CSV file ({_first_line(exc)})", file=fname) from None
        return _Table(frame, row_offset_note=lambda i: f" (line {i + 2})")
    if fmt == "jsonl":
        if _looks_binary(data):
            raise TrajectoryError(
                f"{fname}: not a JSON Lines text file (binary content); is the extension right?", file=fname
            )
        records: list[dict[str, Any]] = []
        lines = [] if not data.strip() else data.decode("utf-8", errors="replace").splitlines()
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TrajectoryError(
                    f"{fname}: line {lineno} is not valid JSON ({exc.msg}); expected one JSON object per line",
                    file=fname,
                    row=len(records) + 1,
                ) from None
            if not isinstance(rec, dict):
                raise TrajectoryError(
                    f"{fname}: line {lineno} is a JSON {type(rec).__name__}, expected an object with "
                    "user_id, timestamp and embedding",
                    file=fname,
                    row=len(records) + 1,
                )
            records.append(rec)
        if not records:
            raise TrajectoryError(f"{fname}: the file has no records; expected one JSON object per post", file=fname)
        line_of = [i for i, line in enumerate(lines, start=1) if line.strip()]
        return _Table(pd.DataFrame.from_records(records), row_offset_note=lambda i: f" (line {line_of[i]})")
    raise AssertionError(fmt)  # pragma: no cover


def _read_npz(data: bytes, fname: str) -> _Table:
    if not data.startswith(b"PK"):
        raise TrajectoryError(f"{fname}: not a NumPy .npz archive (not a zip file); is the extension right?", file=fname)
    try:
        archive = np.load(_io.BytesIO(data), allow_pickle=False)
    except Exception as exc:
        raise TrajectoryError(f"{fname}: not a readable .npz archive ({exc})", file=fname) from None
    with archive:
        names = set(archive.files)
        missing = [k for k in ("embeddings", "timestamps", "user_ids") if k not in names]
        if missing:
            raise TrajectoryError(
                f"{fname}: missing array(s) {missing}; an .npz needs 'embeddings' [N, D], "
                f"'timestamps' [N], 'user_ids' [N] (optional 'labels', 'texts'); found {sorted(names)}",
                file=fname,
                column=missing[0],
            )
        arrays: dict[str, np.ndarray] = {}
        for key in ("embeddings", "timestamps", "user_ids", "labels", "texts"):
            if key not in names:
                continue
            try:
                arrays[key] = archive[key]
            except ValueError as exc:
                raise TrajectoryError(
                    f"{fname}: array '{key}' is an object array, which is not loaded (allow_pickle=False); "
                    f"store it as numbers or fixed-width strings ({exc})",
                    file=fname,
                    column=key,
                ) from None
    emb = arrays["embeddings"]
    if emb.ndim != 2:
        raise TrajectoryError(
            f"{fname}: array 'embeddings' must be 2-D [N, D], got shape {emb.shape}", file=fname, column="embeddings"
        )
    n = emb.shape[0]
    if n == 0:
        raise TrajectoryError(f"{fname}: array 'embeddings' has no rows", file=fname, column="embeddings")
    for key in ("timestamps", "user_ids", "labels", "texts"):
        if key in arrays and arrays[key].shape != (n,):
            raise TrajectoryError(
                f"{fname}: array '{key}' must have shape ({n},) to match 'embeddings', got {arrays[key].shape}",
                file=fname,
                column=key,
            )
    if not np.issubdtype(emb.dtype, np.number) or np.issubdtype(emb.dtype, np.complexfloating):
        raise TrajectoryError(
            f"{fname}: array 'embeddings' must be real numbers, got dtype {emb.dtype}", file=fname, column="embeddings"
        )
    frame = pd.DataFrame({"user_id": arrays["user_ids"].astype(str), "timestamp": _npz_times(arrays["timestamps"])})
    if "labels" in arrays:
        frame["label"] = arrays["labels"]
    if "texts" in arrays:
        frame["text"] = arrays["texts"].astype(str)
    return _Table(frame, matrix=emb.astype(np.float64))


def _npz_times(ts: np.ndarray) -> Any:
    if np.issubdtype(ts.dtype, np.datetime64):
        return pd.Series(ts.astype("datetime64[ns]"))
    if ts.dtype.kind in "US":
        return pd.Series(ts.astype(str))
    return pd.Series(ts)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


# -------------------------------------------------------------------------------------------
# validation and assembly
# -------------------------------------------------------------------------------------------
_KNOWN_COLUMNS = {"user_id", "timestamp", "label", "text", "embedding"}


def _has_embedding(cols: list[str]) -> bool:
    return "embedding" in cols or any(_E_COL.match(c) for c in cols)


def _parse_posts(table: _Table, fname: str, *, need_embeddings: bool) -> PostTable:
    frame = table.frame
    if len(frame) == 0:
        raise TrajectoryError(f"{fname}: the table has a header but no rows; expected one row per post", file=fname)
    cols = [str(c) for c in frame.columns]
    frame.columns = cols
    for required in ("user_id", "timestamp"):
        if required not in cols:
            raise TrajectoryError(
                f"{fname}: missing required column '{required}'; found columns {cols[:12]}"
                + (" …" if len(cols) > 12 else ""),
                file=fname,
                column=required,
            )
    matrix: np.ndarray | None
    if table.matrix is not None:
        matrix, emb_desc = table.matrix, "embeddings"
    elif _has_embedding(cols):
        matrix, emb_desc = _embedding_matrix(frame, table, fname)
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
        matrix, emb_desc = _embedding_matrix(frame, table, fname)  # raises: names what is missing
    else:
        matrix, emb_desc = None, ""
    if matrix is not None:
        _check_finite(matrix, table, fname, emb_desc)
        matrix32 = matrix.astype(np.float32)
        if not np.isfinite(matrix32).all():
            bad = int(np.argwhere(~np.isfinite(matrix32))[0][0])
            raise TrajectoryError(
                f"{fname}: {table.where(bad)}, column '{emb_desc}': value too large for float32; expected "
                "finite embedding values",
                file=fname,
                row=bad + 1,
                column=emb_desc,
            )
    else:
        matrix32 = None

    user_ids = _user_ids(frame["user_id"], table, fname)
    times = _parse_timestamps(frame["timestamp"], table, fname)
    labels = _labels(frame["label"], table, fname) if "label" in cols else None
    texts = None
    if "text" in cols:
        texts = frame["text"].astype(object).where(frame["text"].notna(), "").astype(str).to_numpy()
    elif matrix32 is None:
        raise TrajectoryError(
            f"{fname}: missing column 'text'; a table without an embedding needs the posts' texts",
            file=fname,
            column="text",
        )
    extra_cols = [c for c in cols if c not in _KNOWN_COLUMNS and not _E_COL.match(c)]
    return PostTable(
        file=fname,
        user_ids=user_ids,
        datetimes=times,
        labels=labels,
        texts=texts,
        embeddings=matrix32,
        extra=frame[extra_cols].copy(),
        _table=table,
    )


def _group(posts: PostTable, matrix32: np.ndarray) -> TrajectorySet:
    """Rows -> trajectories: users in order of first row, posts sorted stably by time."""
    table, fname = posts._table, posts.file
    user_ids, times, labels, texts = posts.user_ids, posts.datetimes, posts.labels, posts.texts
    codes, uniques = pd.factorize(pd.Series(user_ids), sort=False)
    order = np.lexsort((np.arange(len(codes)), times.astype(np.int64), codes))
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    groups = np.split(order, bounds)
    trajs: list[Trajectory] = []
    for rows in groups:
        uid = str(uniques[codes[rows[0]]])
        label = None
        if labels is not None:
            label = _user_label(labels, rows, uid, table, fname)
        trajs.append(
            Trajectory(
                user_id=uid,
                embeddings=matrix32[rows],
                datetimes=times[rows],
                label=label,
                texts=None if texts is None else tuple(texts[rows]),
            )
        )
    return TrajectorySet(trajs, name=fname)


def _embedding_matrix(frame: pd.DataFrame, table: _Table, fname: str) -> tuple[np.ndarray, str]:
    cols = list(frame.columns)
    ecols = sorted(((int(m.group(1)), c) for c in cols if (m := _E_COL.match(c))), key=lambda x: x[0])
    if "embedding" in cols:
        return _list_column(frame["embedding"], table, fname), "embedding"
    if not ecols:
        raise TrajectoryError(
            f"{fname}: missing the embedding: expected a list column 'embedding' or numeric columns "
            f"'e0', 'e1', … 'e{{D-1}}'; found columns {cols[:12]}",
            file=fname,
            column="embedding",
        )
    idx = [i for i, _ in ecols]
    if idx != list(range(len(idx))):
        missing = sorted(set(range(max(idx) + 1)) - set(idx))
        raise TrajectoryError(
            f"{fname}: embedding columns must be e0 … e{max(idx)} without gaps; missing column 'e{missing[0]}'",
            file=fname,
            column=f"e{missing[0]}",
        )
    out = np.empty((len(frame), len(ecols)), dtype=np.float64)
    for j, (_, c) in enumerate(ecols):
        col = frame[c]
        num = pd.to_numeric(col, errors="coerce")
        bad = num.isna() & col.notna()  # text that is not a number; NaN cells fail the finiteness check
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise TrajectoryError(
                f"{fname}: {table.where(i)}, column '{c}': {_show(col.iloc[i])} is not a number; "
                "expected a finite embedding value",
                file=fname,
                row=i + 1,
                column=c,
            )
        out[:, j] = num.to_numpy(dtype=np.float64)
    return out, f"e0 … e{len(ecols) - 1}"


def _list_column(col: pd.Series, table: _Table, fname: str) -> np.ndarray:
    rows: list[np.ndarray] = []
    width: int | None = None
    for i, cell in enumerate(col.tolist()):
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
        elif vec.shape[0] != width:
            raise TrajectoryError(
                f"{fname}: {table.where(i)}, column 'embedding': has {vec.shape[0]} values, expected {width} "
                "like the rows before it",
                file=fname,
                row=i + 1,
                column="embedding",
            )
        rows.append(vec)
    return np.stack(rows)


def _parse_vector(cell: Any, table: _Table, fname: str, i: int) -> np.ndarray:
    def bad(what: str) -> TrajectoryError:
        return TrajectoryError(
            f"{fname}: {table.where(i)}, column 'embedding': {what}; expected a list of numbers like [0.1, -0.2, …]",
            file=fname,
            row=i + 1,
            column="embedding",
        )

    if cell is None or (isinstance(cell, float) and np.isnan(cell)):
        raise bad("the embedding is missing")
    if isinstance(cell, str):
        text = cell.strip()
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            # whitespace- or comma-separated numbers without brackets
            parts = [p for p in re.split(r"[,\s]+", text.strip("[]() ")) if p]
            try:
                parsed = [float(p) for p in parts]
            except ValueError:
                raise bad(f"{_show(cell)} is not a list of numbers") from None
        cell = parsed
    try:
        arr = np.asarray(cell, dtype=np.float64)
    except (TypeError, ValueError):
        raise bad(f"{_show(cell)} holds a value that is not a number") from None
    if arr.ndim != 1:
        raise bad(f"expected a flat list, got nesting of shape {arr.shape}")
    return arr


def _check_finite(matrix: np.ndarray, table: _Table, fname: str, emb_desc: str) -> None:
    if np.isfinite(matrix).all():
        return
    i, j = (int(x) for x in np.argwhere(~np.isfinite(matrix))[0])
    column = emb_desc if emb_desc in ("embedding", "embeddings") else f"e{j}"
    where = f"{table.where(i)}, column '{column}'" + (f" (position {j})" if column in ("embedding", "embeddings") else "")
    raise TrajectoryError(
        f"{fname}: {where}: value {matrix[i, j]} is not finite; expected finite embedding values (no NaN or inf)",
        file=fname,
        row=i + 1,
        column=column,
    )


def _user_ids(col: pd.Series, table: _Table, fname: str) -> np.ndarray:
    missing = col.isna().to_numpy() | (col.astype(str).str.strip() == "").to_numpy()
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        raise TrajectoryError(
            f"{fname}: {table.where(i)}, column 'user_id': empty user id; expected a non-empty id",
            file=fname,
            row=i + 1,
            column="user_id",
        )
    def norm(x: Any) -> str:
        if isinstance(x, (float, np.floating)) and float(x).is_integer():
            return str(int(x))
        return str(x)
    return np.array([norm(x) for x in col.tolist()], dtype=object)


_EPOCH_LIMIT_S = 9.2e9  # |epoch seconds| that still fit datetime64[ns] (about 1678-2261)


def _parse_timestamps(col: pd.Series, table: _Table, fname: str) -> np.ndarray:
    """Any accepted timestamp column -> ``datetime64[ns]`` (UTC, naive)."""

    def fail(i: int, what: str = "") -> TrajectoryError:
        return TrajectoryError(
            f"{fname}: {table.where(i)}, column 'timestamp': {_show(col.iloc[i])} {what or 'is not a timestamp'}; "
            "expected ISO-8601 text (e.g. 2024-03-01T12:00:00Z), a datetime, or epoch seconds",
            file=fname,
            row=i + 1,
            column="timestamp",
        )

    if col.isna().any():
        raise fail(int(np.flatnonzero(col.isna().to_numpy())[0]), "is missing")
    if pd.api.types.is_datetime64_any_dtype(col):
        s = col
        if getattr(s.dt, "tz", None) is not None:
            s = s.dt.tz_convert("UTC").dt.tz_localize(None)
        return s.to_numpy(dtype="datetime64[ns]")
    if pd.api.types.is_bool_dtype(col):
        raise fail(0, "is a boolean")
    def from_epoch(secs: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Epoch seconds -> ``datetime64[ns]``; ``rows`` are their row indices, for errors."""
        bad = ~np.isfinite(secs) | (np.abs(secs) > _EPOCH_LIMIT_S)
        if bad.any():
            raise fail(int(rows[np.flatnonzero(bad)[0]]), "is out of range for epoch seconds")
        return np.round(secs * 1e9).astype(np.int64).astype("datetime64[ns]")

    if pd.api.types.is_numeric_dtype(col):
        return from_epoch(col.to_numpy(dtype=np.float64), np.arange(len(col)))
    # text (or mixed objects): numbers-as-text are epoch seconds, the rest ISO-8601
    values = col.tolist()
    out = np.empty(len(values), dtype="datetime64[ns]")
    texts: list[str] = []
    text_idx: list[int] = []
    for i, v in enumerate(values):
        is_number = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
        if is_number or (isinstance(v, str) and re.fullmatch(r"\s*-?\d+(\.\d*)?\s*", v)):
            out[i] = from_epoch(np.array([float(v)]), np.array([i]))[0]
        elif isinstance(v, (pd.Timestamp, np.datetime64)) or hasattr(v, "isoformat"):
            ts = pd.Timestamp(v)
            if ts.tzinfo is not None:
                ts = ts.tz_convert("UTC").tz_localize(None)
            out[i] = ts.to_datetime64()
        elif isinstance(v, str):
            texts.append(v.strip())
            text_idx.append(i)
        else:
            raise fail(i)
    if texts:
        parsed = pd.to_datetime(pd.Series(texts), utc=True, errors="coerce", format="ISO8601")
        if parsed.isna().any():
            k = int(np.flatnonzero(parsed.isna().to_numpy())[0])
            raise fail(text_idx[k])
        out[np.array(text_idx)] = parsed.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    return out


def _labels(col: pd.Series, table: _Table, fname: str) -> np.ndarray:
    """Label column -> float array (NaN = missing), checked to be integers."""
    num = pd.to_numeric(col, errors="coerce")
    bad = (num.isna() & col.notna()) | (num.notna() & ~np.isclose(num.fillna(0) % 1, 0))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise TrajectoryError(
            f"{fname}: {table.where(i)}, column 'label': {_show(col.iloc[i])} is not an integer class; "
            "expected an integer label (or leave it empty for no label)",
            file=fname,
            row=i + 1,
            column="label",
        )
    return num.to_numpy(dtype=np.float64)


def _user_label(labels: np.ndarray, rows: np.ndarray, uid: str, table: _Table, fname: str) -> int | None:
    vals = labels[rows]
    present = ~np.isnan(vals)
    if not present.any():
        return None
    first = vals[present][0]
    if not present.all() or (vals[present] != first).any():
        k = rows[np.flatnonzero(~present | (vals != first))[0]]
        j = rows[np.flatnonzero(present)[0]]
        other = "no label" if np.isnan(labels[k]) else f"label {int(labels[k])}"
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
