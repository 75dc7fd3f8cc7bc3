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
  Only ASCII spaces and tabs may surround a date: a non-breaking or other Unicode space, a
  zero-width character or a BOM in the cell is refused, naming the character.
* **User ids** are text kept verbatim, or integers (kept exactly, any size). Floats,
  booleans, lists and objects are refused, as is a file where the integer ``1`` and the
  text ``"1"`` would become one user. Invalid UTF-8 is refused naming the line.
* **Labels** are integer classes ``>= 0`` *written as integers* (a JSON integer, ASCII digits,
  an integer-typed Parquet/``.npz`` column); no label = an empty cell, null or NaN. A float
  is refused even when whole (``1.0``, ``"1.0"``, a float64 column of 0.0/1.0 as pandas
  writes a label column with gaps: ``.astype("Int64")`` keeps the gaps as nulls), as are
  fractions, booleans, negatives and values outside int64. Never rounded.
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

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from cvx_core.data.atomic import atomic_replace
from cvx_core.data.formats.base import FORMATS, DecodedSizeError, Source, detect_format, read_source
from cvx_core.data.formats.dispatch import read_table
from cvx_core.data.parse import FileRules, PostTable, RowIndex, parse_posts
from cvx_core.data.trajectory import DATETIME_DTYPE, TrajectorySet, TrajectoryError

__all__ = [
    "load_trajectories",
    "read_posts",
    "parse_posts",
    "FileRules",
    "RowIndex",
    "PostTable",
    "save_trajectories",
    "FORMATS",
    "TrajectoryError",
    "DecodedSizeError",
]


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
        if detect_format(fname, format) == "parquet" and Path(source).stat().st_size > 0:
            # read from the file column by column: the compressed bytes never sit in memory whole
            return _parse(Path(source), fname, "parquet", need_embeddings, max_decoded_bytes)
    data, fname = read_source(source, name)
    return _parse(data, fname, detect_format(fname, format), need_embeddings, max_decoded_bytes)


def _parse(data: bytes | Path, fname: str, fmt: str, need_embeddings: bool, budget: int | None) -> PostTable:
    try:
        table = read_table(data, fname, fmt, budget)
    except MemoryError:
        raise TrajectoryError(
            f"{fname}: ran out of memory decoding this file; it is larger than this machine can load "
            "(split it, or load it on a machine with more memory)",
            file=fname,
        ) from None
    del data
    return parse_posts(table, source=fname, need_embeddings=need_embeddings)


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
