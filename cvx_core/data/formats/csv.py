"""CSV: a header row, then one row per post; cells are text (UTF-8)."""

from __future__ import annotations

import csv
import io as _io
from typing import Any

import numpy as np
import pandas as pd

from cvx_core.data.columns import E_COL, Column, RawTable, RowIndex
from cvx_core.data.formats.base import decode_utf8, duplicate_name, first_line, looks_binary
from cvx_core.data.trajectory import TrajectoryError

__all__ = ["read_csv"]


def read_csv(data: bytes, fname: str) -> RawTable:
    if looks_binary(data):
        raise TrajectoryError(f"{fname}: not a CSV text file (binary content); is the extension right?", file=fname)
    text = decode_utf8(data, fname, first_row_line=2)
    try:
        header = next(csv.reader(_io.StringIO(text)), None)
    except csv.Error as exc:
        raise TrajectoryError(f"{fname}: the header row is not readable CSV ({exc})", file=fname) from None
    if not header or not any(h.strip() for h in header):
        raise TrajectoryError(f"{fname}: the file is empty; expected a header row and one row per post", file=fname)
    dup = duplicate_name(header)
    if dup is not None:
        raise TrajectoryError(
            f"{fname}: column {dup!r} appears twice in the header; expected each column once", file=fname, column=dup
        )
    numeric = [c for c in header if E_COL.match(c) and c == f"e{int(c[1:])}"]
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
        raise TrajectoryError(f"{fname}: not a readable CSV file ({first_line(exc)})", file=fname) from None
    del text
    if list(frame.columns) != header:  # pandas renames blank or duplicate names; refuse that
        raise TrajectoryError(
            f"{fname}: the header has a blank column name; expected a name for every column", file=fname
        )
    columns = {
        c: Column("array", frame[c].to_numpy()) if frame[c].dtype == np.float64 else Column("text", frame[c].to_numpy(dtype=object))
        for c in header
    }
    return RawTable(columns, len(frame), RowIndex(lines=np.arange(len(frame), dtype=np.int64) + 2))
