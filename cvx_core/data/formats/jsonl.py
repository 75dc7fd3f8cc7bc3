"""JSON Lines: one JSON object per line (UTF-8); blank lines are skipped."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from cvx_core.data.columns import Column, RawTable, RowIndex
from cvx_core.data.formats.base import first_line, looks_binary
from cvx_core.data.trajectory import TrajectoryError

__all__ = ["read_jsonl"]


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


class _DuplicateKey(Exception):
    pass


def read_jsonl(data: bytes, fname: str) -> RawTable:
    if looks_binary(data):
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
        records.append(rec)
        line_of.append(lineno)
        for k in rec:
            keys.setdefault(k, None)
    if not records:
        raise TrajectoryError(f"{fname}: the file has no records; expected one JSON object per post", file=fname)
    columns: dict[str, Column] = {}
    for k in keys:
        col = np.empty(len(records), dtype=object)
        col[:] = [rec.get(k) for rec in records]
        columns[k] = Column("json", col)
    return RawTable(columns, len(records), RowIndex(lines=np.asarray(line_of, dtype=np.int64)))
