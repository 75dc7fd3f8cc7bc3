"""Time rules: every accepted timestamp form -> ``datetime64[us]`` (UTC), exactly.

ISO-8601 text with a full date (ASCII digits only), typed datetimes, or epoch seconds as
numbers; years 1-9999; sub-microsecond parts refused, never truncated. Only ASCII whitespace
around a date is ignored: a non-breaking or other Unicode space, a zero-width character or a
BOM next to a date is refused, naming it (``str.strip`` removed some of them silently).
Whether a file gives its times with or without a UTC offset is a file-wide rule:
:class:`TimeRules` carries the first row's kind across the batches of one file.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import unicodedata
from typing import Any

import numpy as np

from cvx_core.data.columns import CellErrors, Column, RawTable, RowIndex, ascii_strip, kind_name
from cvx_core.data.trajectory import DATETIME_DTYPE, TrajectoryError

__all__ = ["US", "MIN_US", "MAX_US", "parse_timestamps", "arrow_times_us", "to_us", "time_range_error"]

# every datetime is held as microseconds since 1970 and must lie in years 1-9999
US = 1_000_000
EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()
MIN_US = (_dt.date(1, 1, 1).toordinal() - EPOCH_ORDINAL) * 86_400 * US
MAX_US = (_dt.date(9999, 12, 31).toordinal() - EPOCH_ORDINAL + 1) * 86_400 * US - 1


# ---- timestamps -----------------------------------------------------------------------------
_ISO = re.compile(
    r"(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})"
    r"(?:[Tt ](?P<h>\d{2}):(?P<mi>\d{2})(?::(?P<s>\d{2})(?:[.,](?P<f>\d{1,9}))?)?)?"
    r"\s*(?P<tz>[Zz]|[+-]\d{2}(?::?\d{2})?)?",
    re.ASCII,  # a Unicode digit ('٣') is not a digit of a date
)


def _iso_us(text: str) -> tuple[int, bool] | str:
    """ISO-8601 text -> (microseconds since 1970 UTC, has an offset), or why it is refused."""
    m = _ISO.fullmatch(ascii_strip(text))
    if not m:
        odd = sorted({c for c in text if not c.isascii() and (c.isspace() or unicodedata.category(c) == "Cf")})
        if odd:
            names = ", ".join(f"U+{ord(c):04X} {unicodedata.name(c, 'format character')}" for c in odd)
            return f"is not an ISO-8601 date or time: it holds {names} (only ASCII spaces may surround a date)"
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
    us = ((day.toordinal() - EPOCH_ORDINAL) * 86_400 + h * 3600 + mi * 60 + s) * US + int(frac[:6])
    tz = m["tz"]
    if tz and tz not in "Zz":
        sign = -1 if tz[0] == "-" else 1
        digits = tz[1:].replace(":", "")
        oh, om = int(digits[:2]), int(digits[2:] or 0)
        if oh > 23 or om > 59:
            return "has an invalid UTC offset"
        us -= sign * (oh * 3600 + om * 60) * US
    return us, bool(tz)


def parse_timestamps(col: Column, table: RawTable, fname: str) -> np.ndarray:
    """Any accepted timestamp column -> ``datetime64[us]`` (UTC, naive), exactly."""

    fail = CellErrors(fname, table.rows, "timestamp", "ISO-8601 text with a full date (e.g. "
                      "2024-03-01T12:00:00Z), a datetime, or epoch seconds as a number").value

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
            return parse_timestamps(Column("text", texts), table, fname)
        else:
            raise fail(0, arr[0], f"is of type {arr.dtype}, not a time")
    elif col.kind in ("text", "json"):
        us = _text_times(col, table, fail)
    else:
        raise fail(0, None, f"holds {kind_name(col)}")
    bad = (us < MIN_US) | (us > MAX_US)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise time_range_error(fname, "timestamp", i, table.rows)
    return np.asarray(us, dtype=np.int64).view(DATETIME_DTYPE)


_DIGITS_ONLY = re.compile(r"[+-]?\d+(\.\d*)?", re.ASCII)


def _text_times(col: Column, table: RawTable, fail: Any) -> np.ndarray:
    """Text or JSON cells -> int64 microseconds: ISO-8601 text (ASCII digits), or epoch
    seconds as JSON numbers; the file-wide offset rule is kept in ``table.rules``."""
    n = table.n
    us = np.empty(n, dtype=np.int64)
    cache: dict[str, tuple[int, bool] | str] = {}
    aware_first = table.rules.offset_kind  # file-wide: set by the file's first time
    for i, v in enumerate(col.values.tolist()):
        if v is None or (isinstance(v, str) and not ascii_strip(v)):
            raise fail(i, v, "is missing")
        if isinstance(v, str):
            stripped = ascii_strip(v)
            if _DIGITS_ONLY.fullmatch(stripped):
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
                aware_first = table.rules.offset_kind = (aware, table.where(i))
            elif aware != aware_first[0]:
                a, b = ("has", "has no") if aware else ("has no", "has")
                raise fail(
                    i,
                    v,
                    f"{a} UTC offset but {aware_first[1]} {b}; a file must give every "
                    "time with an offset or none",
                )
        elif isinstance(v, bool):
            raise fail(i, v, "is a boolean")
        elif isinstance(v, int):
            value = v * US
        elif isinstance(v, float):
            if not math.isfinite(v):
                raise fail(i, v, "is not finite")
            value = int(v) * US if v.is_integer() else round(v * US)
        else:
            raise fail(i, v, f"is a {type(v).__name__}")
        if not MIN_US <= value <= MAX_US:
            raise fail(i, v, "is outside the years 1-9999 that can be held exactly")
        us[i] = value
    return us


def _datetime64_us(arr: np.ndarray, fname: str, table: RawTable) -> np.ndarray:
    unit, _ = np.datetime_data(arr.dtype)
    if np.isnat(arr).any():
        i = int(np.flatnonzero(np.isnat(arr))[0])
        raise CellErrors(fname, table.rows, "timestamp")(i, "the time is missing (NaT)")
    raw = arr.view(np.int64)
    per_us = {"ns": -1000, "ps": -(10**6), "fs": -(10**9), "as": -(10**12), "us": 1, "ms": 1000, "s": US,
              "m": 60 * US, "h": 3600 * US, "D": 86_400 * US, "W": 7 * 86_400 * US}
    if unit in ("Y", "M"):  # calendar units: convert through days (exact, years are small)
        days = arr.astype("datetime64[D]").view(np.int64)
        raw, unit = days, "D"
    step = per_us.get(unit)
    if step is None:  # pragma: no cover - generic units
        raise TrajectoryError(f"{fname}: column 'timestamp': unsupported datetime unit {unit!r}", file=fname, column="timestamp")
    return to_us(raw, step, fname, "timestamp", table.rows)


def _epoch_ints_us(arr: np.ndarray, fname: str, table: RawTable) -> np.ndarray:
    limit = max(abs(MIN_US), abs(MAX_US)) // US
    if arr.dtype.kind == "u":
        bad = arr > np.uint64(limit)
    else:
        bad = np.abs(arr.astype(np.int64)) > limit
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise time_range_error(fname, "timestamp", i, table.rows)
    return arr.astype(np.int64) * US


def _epoch_floats_us(arr: np.ndarray, fname: str, table: RawTable) -> np.ndarray:
    x = arr.astype(np.float64)
    limit = max(abs(MIN_US), abs(MAX_US)) / US
    bad = ~np.isfinite(x) | (np.abs(x) > limit)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise time_range_error(fname, "timestamp", i, table.rows)
    whole = np.floor(x) == x
    out = np.where(whole, 0, np.round(x * US)).astype(np.int64)
    out[whole] = x[whole].astype(np.int64) * US
    return out


def arrow_times_us(arr: Any, name: str, fname: str, rows: RowIndex | None = None) -> np.ndarray:
    """Arrow timestamps/dates -> int64 microseconds (UTC), exactly, refusing what cannot be held."""
    import pyarrow as pa

    typ = arr.type
    if pa.types.is_date32(typ):
        raw, factor = arr.cast(pa.int32()).to_numpy(zero_copy_only=False).astype(np.int64), 86_400 * US
    elif pa.types.is_date64(typ):
        raw, factor = arr.cast(pa.int64()).to_numpy(zero_copy_only=False), 1000
    else:
        raw = arr.cast(pa.int64()).to_numpy(zero_copy_only=False)
        factor = {"s": US, "ms": 1000, "us": 1, "ns": -1000}[typ.unit]
    raw = np.where(np.isnan(raw.astype(float)), 0, raw).astype(np.int64) if raw.dtype.kind == "f" else raw
    return to_us(raw, factor, fname, name, rows)


def to_us(raw: np.ndarray, factor: int, fname: str, column: str, rows: RowIndex | None = None) -> np.ndarray:
    """int64 counts of a time unit -> int64 microseconds, exactly: ``factor`` microseconds per
    count (negative: ``-factor`` counts per microsecond). A sub-microsecond part or a time
    outside years 1-9999 is refused, naming the file row through ``rows``."""
    rows = rows or RowIndex()
    if factor < 0:
        bad = raw % -factor != 0
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise CellErrors(fname, rows, column, "at most microsecond precision")(
                i, "the time has a sub-microsecond part")
        return raw // -factor
    limit = max(abs(MIN_US), abs(MAX_US)) // factor
    bad = np.abs(raw) > limit
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise time_range_error(fname, column, i, rows)
    return raw * factor


def time_range_error(fname: str, column: str, i: int, rows: RowIndex | None = None) -> TrajectoryError:
    return CellErrors(fname, rows or RowIndex(), column, "a time in years 1-9999")(
        i, "the time is outside the years 1-9999 that can be held exactly")
