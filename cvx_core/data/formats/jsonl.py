"""JSON Lines: one JSON object per line (UTF-8); blank lines are skipped."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cvx_core.data.columns import Column, RawTable, RowIndex
from cvx_core.data.formats.base import first_line, looks_binary
from cvx_core.data.trajectory import TrajectoryError

__all__ = ["read_jsonl", "jsonl_batches"]


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


class _DuplicateKey(Exception):
    pass


def _lines(source: bytes | Path) -> Iterator[bytes]:
    if isinstance(source, Path):
        with open(source, "rb") as fh:
            yield from fh
    else:
        yield from source.split(b"\n")


def _record(raw: bytes, lineno: int, row: int, fname: str) -> dict[str, Any]:
    """One line -> its JSON object; ``row`` is its 1-based row in the file."""
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
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else first_line(exc)
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
    return rec


def _table(records: list[dict[str, Any]], lines: list[int], offset: int) -> RawTable:
    keys: dict[str, None] = {}
    for rec in records:
        for k in rec:
            keys.setdefault(k, None)
    columns: dict[str, Column] = {}
    for k in keys:
        col = np.empty(len(records), dtype=object)
        col[:] = [rec.get(k) for rec in records]
        columns[k] = Column("json", col)
    return RawTable(columns, len(records), RowIndex(offset=offset, lines=np.asarray(lines, dtype=np.int64)))


def jsonl_batches(source: bytes | Path, fname: str, *, batch_rows: int | None = None) -> Iterator[RawTable]:
    """The JSON Lines ``source`` (bytes or a file path) as :class:`RawTable` s of at most
    ``batch_rows`` records (``None``: all), rows numbered in the file; each batch has the keys
    of its own records (:func:`cvx_core.data.parse.parse_posts` makes batches agree)."""
    if isinstance(source, Path):
        with open(source, "rb") as fh:
            head = fh.read(4096)
    else:
        head = source[:4096]
    if looks_binary(head):
        raise TrajectoryError(
            f"{fname}: not a JSON Lines text file (binary content); is the extension right?", file=fname
        )
    records: list[dict[str, Any]] = []
    line_of: list[int] = []
    offset = 0
    for lineno, raw in enumerate(_lines(source), start=1):
        if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        if not raw.strip():
            continue
        records.append(_record(raw, lineno, offset + len(records) + 1, fname))
        line_of.append(lineno)
        if batch_rows is not None and len(records) == batch_rows:
            yield _table(records, line_of, offset)
            offset += len(records)
            records, line_of = [], []
    if records:
        yield _table(records, line_of, offset)
    elif offset == 0:
        raise TrajectoryError(f"{fname}: the file has no records; expected one JSON object per post", file=fname)


def read_jsonl(data: bytes, fname: str) -> RawTable:
    """The whole JSON Lines file as one :class:`RawTable` (the loader's reader)."""
    return next(iter(jsonl_batches(data, fname)))
