"""Column rules: one validator per known column (ids, labels, texts, embeddings), on columns
as read by a format reader (:class:`Column` in a :class:`RawTable`).

Every refusal raises :class:`TrajectoryError` naming the file, the row as the whole file
counts it (:class:`RowIndex`: a table may be one batch of a larger file) and the column.
Numbers are ASCII only: a Unicode digit (``'١'``) is not a digit here, and only ASCII
whitespace (:data:`ASCII_SPACE`) around a cell is ignored: a non-breaking, ideographic or
other Unicode space, a zero-width character or a BOM is part of the cell (and so refused
where the cell must be a number, a label or a date).
"""

from __future__ import annotations

import json
import math
import re
import string
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cvx_core.data.trajectory import TrajectoryError

__all__ = [
    "Column",
    "RawTable",
    "RowIndex",
    "E_COL",
    "KNOWN_COLUMNS",
    "INT64_MAX",
    "ASCII_SPACE",
    "ascii_strip",
    "MAX_EMBEDDING_NORM",
    "FileRules",
    "CellErrors",
    "show",
    "kind_name",
    "number",
    "e_columns",
    "embedding_matrix",
    "finite_float32",
    "parse_user_ids",
    "parse_labels",
    "parse_texts",
    "check_user_label",
]

E_COL = re.compile(r"^e(\d+)$", re.ASCII)
KNOWN_COLUMNS = ("user_id", "timestamp", "label", "text", "embedding")
# the whitespace a cell may have around its value; str.strip() would also remove U+00A0,
# U+2000-U+200A, U+3000, U+2028, U+0085 ... and accept "2024-01-01\u00a0" as a date
ASCII_SPACE = string.whitespace  # " \t\n\r\x0b\x0c"
INT64_MAX = 2**63 - 1
# the longest embedding row whose features stay finite in float32 where training uses them:
# at the default one-minute min_dt an acceleration reaches 4 |v| / min_dt^2 = 8.3e6 |v|, and
# standardising squares features and sums them over users (1e6 users: 6.9e19 |v|^2 must stay
# under float32's 3.4e38, so |v| < 2.2e9); real embeddings have lengths of order 1-100
MAX_EMBEDDING_NORM = 1e9
FLOAT32_TINY = float(np.finfo(np.float32).tiny)  # the smallest normal float32, 1.1755e-38


@dataclass(frozen=True)
class RowIndex:
    """Where each row of a table sits in its file, for messages and ``TrajectoryError.row``.

    Row ``i`` (0-based in the table) is file row ``offset + i + 1`` (1-based, as a person
    counts data rows), or ``rows[i] + 1`` when ``rows`` (0-based file rows ``[n]``) is given
    (a regrouped piece); ``lines`` ``[n]`` are the rows' first lines in a text file.
    """

    offset: int = 0
    rows: np.ndarray | None = None
    lines: np.ndarray | None = None

    def number(self, i: int) -> int:
        """1-based file row of table row ``i``."""
        return int(self.rows[i]) + 1 if self.rows is not None else self.offset + int(i) + 1

    def where(self, i: int) -> str:
        """Human description of table row ``i``: ``row 7`` or ``row 7 (line 9)``."""
        base = f"row {self.number(i)}"
        return base if self.lines is None else f"{base} (line {int(self.lines[i])})"

    def take(self, index: np.ndarray) -> "RowIndex":
        """The rows at ``index`` (0-based table rows), in that order."""
        idx = np.asarray(index, dtype=np.int64)
        rows = self.rows[idx] if self.rows is not None else idx + self.offset
        return RowIndex(rows=rows, lines=None if self.lines is None else self.lines[idx])

    def slice(self, a: int, b: int) -> "RowIndex":
        """Table rows ``a:b``."""
        if self.rows is None:
            return RowIndex(offset=self.offset + a, lines=None if self.lines is None else self.lines[a:b])
        return RowIndex(rows=self.rows[a:b], lines=None if self.lines is None else self.lines[a:b])

    @staticmethod
    def concat(parts: list["RowIndex"], sizes: list[int]) -> "RowIndex":
        """Parts of ``sizes`` rows each, one after the other."""
        rows = np.concatenate([p.rows if p.rows is not None else np.arange(n) + p.offset for p, n in zip(parts, sizes)])
        lines = None
        if all(p.lines is not None for p in parts):
            lines = np.concatenate([p.lines for p in parts])
        return RowIndex(rows=rows.astype(np.int64), lines=lines)


@dataclass
class Column:
    """One column as read, before validation.

    ``kind``: ``"text"`` (CSV: str cells, '' for empty), ``"json"`` (Python objects from
    JSON, None for absent), ``"array"`` (a typed NumPy array from Parquet/.npz, with
    ``mask`` True on nulls), ``"datetime"`` (int64 microseconds, already exact),
    ``"matrix"`` (an embedding matrix ``[N, D]`` read whole), ``"list"`` (an Arrow list
    column of numbers, decoded straight into ``[N, D]``).
    """

    kind: str
    values: Any
    mask: np.ndarray | None = None


@dataclass
class FileRules:
    """What the batches of one file must agree on, carried from batch to batch (one object
    per file, updated as batches are parsed; the whole-file loader uses one batch).

    ``id_kinds``: each text id's Python type (``int`` or ``str``) so that the number ``1``
    and the text ``"1"`` are never one user; ``offset_kind``: whether the first time had a
    UTC offset, and where it was; ``width``: the list embedding's D; ``columns``: the
    columns seen so far (JSON Lines records may differ in keys); ``first``: the file's first
    row, re-checked when a later batch brings a new column; ``rows``: rows parsed so far.
    """

    id_kinds: dict[str, type] = field(default_factory=dict)
    offset_kind: tuple[bool, str] | None = None
    width: int | None = None
    columns: list[str] | None = None
    first: "RawTable | None" = None
    rows: int = 0


@dataclass
class RawTable:
    """A table as a format reader returns it: columns by name, the row count ``n``, where
    its rows sit in the file (``rows``) and the file-wide rules it is checked against."""

    columns: dict[str, Column]
    n: int
    rows: RowIndex = field(default_factory=RowIndex)
    rules: FileRules = field(default_factory=FileRules)

    def take(self, index: np.ndarray) -> "RawTable":
        """Rows ``index`` (0-based) of a table read whole (not for Arrow ``list`` columns)."""
        idx = np.asarray(index, dtype=np.int64)
        cols = {
            k: Column(c.kind, c.values[idx], None if c.mask is None else c.mask[idx]) for k, c in self.columns.items()
        }
        return RawTable(cols, len(idx), self.rows.take(idx), self.rules)

    def with_columns(self, names: list[str]) -> "RawTable":
        """The table with columns ``names`` in that order; a name it lacks becomes a column of
        absent cells (``None``, as a JSON Lines record without that key)."""
        cols = {}
        for k in names:
            if k in self.columns:
                cols[k] = self.columns[k]
            else:
                cols[k] = Column("json", np.full(self.n, None, dtype=object))
        return RawTable(cols, self.n, self.rows, self.rules)

    def where(self, i: int) -> str:
        """Human description of 0-based row ``i``."""
        return self.rows.where(i)

    def row(self, i: int) -> int:
        """1-based file row of 0-based row ``i``."""
        return self.rows.number(i)


@dataclass(frozen=True)
class CellErrors:
    """The one builder of a refused cell's message, for every column rule:
    ``"{fname}: row N, column 'c': {what}; expected {expected}"`` as a :class:`TrajectoryError`
    with the file, the 1-based file row (through ``rows``) and the column.

    ``fail = CellErrors(fname, table.rows, "label", "an integer label >= 0")`` then
    ``raise fail(i, "is empty")`` or ``raise fail.value(i, v, "is negative")`` (the value first).
    """

    fname: str
    rows: RowIndex
    column: str
    expected: str | None = None

    def __call__(self, i: int, what: str, *, position: int | None = None) -> TrajectoryError:
        """The refusal of 0-based table row ``i`` (``position``: the place in a list cell)."""
        where = f"{self.rows.where(i)}, column {self.column!r}"
        if position is not None:
            where += f" (position {position})"
        tail = "" if self.expected is None else f"; expected {self.expected}"
        return TrajectoryError(f"{self.fname}: {where}: {what}{tail}", file=self.fname, row=self.rows.number(i),
                               column=self.column)

    def value(self, i: int, value: Any, what: str) -> TrajectoryError:
        """The refusal ``"{show(value)} {what}"`` of row ``i``."""
        return self(i, f"{show(value)} {what}")


def ascii_strip(text: str) -> str:
    """``text`` without the ASCII whitespace around it (nothing else is removed)."""
    return text.strip(ASCII_SPACE)


def show(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def e_columns(cols: list[str], fname: str) -> list[str]:
    """The ``e0 … e{D-1}`` columns in index order; refuses gaps and names such as ``e01``."""
    found: list[tuple[int, str]] = []
    for c in cols:
        m = E_COL.match(c)
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


# ---- embeddings -----------------------------------------------------------------------------
# ASCII only: a Unicode digit ('٣') or space is not part of a number here
_NUMBER = re.compile(
    r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*|\s*[+-]?(?:nan|inf|infinity)\s*", re.I | re.ASCII
)


def number(v: Any) -> float | None:
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


def check_dim_budget(width: int, fname: str, column: str, *, table: RawTable | None = None, i: int = 0) -> None:
    """Refuse an embedding of more than :data:`~cvx_core.data.budgets.MAX_DIM` dimensions
    (every format, before the matrix is built), naming the file, row and column."""
    from cvx_core.data.budgets import MAX_DIM

    limit = MAX_DIM.value()
    if width > limit:
        where = f"{table.where(i)}, " if table is not None else ""
        raise TrajectoryError(
            f"{fname}: {where}column '{column}': the embedding has D={width:,} dimensions, above the limit of "
            f"{limit:,} ({MAX_DIM.name}; set {MAX_DIM.env} to change it)",
            file=fname,
            row=table.row(i) if table is not None else None,
            column=column,
        )


def embedding_matrix(table: RawTable, ecols: list[str], fname: str) -> tuple[np.ndarray, str]:
    if "embedding" in table.columns:
        return _list_column(table.columns["embedding"], table, fname), "embedding"
    check_dim_budget(len(ecols), fname, ecols[-1])
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
                f"{fname}: column {c!r} holds {kind_name(col)}; expected numbers", file=fname, column=c
            )
        for i, v in enumerate(col.values.tolist()):
            if v is None or (col.kind == "text" and ascii_strip(v) == ""):
                out[i, j] = np.nan  # refused as "not finite" with its row and column
                continue
            x = number(v)
            if x is None:
                raise CellErrors(fname, table.rows, c, "a finite embedding value").value(i, v, "is not a number")
            out[i, j] = x
    return out, f"e0 … e{len(ecols) - 1}"


def kind_name(col: Column) -> str:
    if col.kind == "array":
        return f"values of type {col.values.dtype}"
    return {"datetime": "datetimes", "list": "lists", "matrix": "a matrix"}.get(col.kind, col.kind)


def _list_column(col: Column, table: RawTable, fname: str) -> np.ndarray:
    if col.kind == "list":
        return _arrow_list_matrix(col.values, table, fname)
    if col.kind not in ("text", "json"):
        raise TrajectoryError(
            f"{fname}: column 'embedding' holds {kind_name(col)}; expected a list of numbers per row",
            file=fname,
            column="embedding",
        )
    values = col.values.tolist()
    width = table.rules.width
    out = None if width is None else np.empty((len(values), width), dtype=np.float64)
    for i, cell in enumerate(values):
        vec = _parse_vector(cell, table, fname, i)
        if width is None:
            width = table.rules.width = vec.shape[0]
            check_dim_budget(width, fname, "embedding", table=table, i=i)
            if width == 0:
                raise CellErrors(fname, table.rows, "embedding", "D >= 1 numbers")(i, "the embedding is empty")
            out = np.empty((len(values), width), dtype=np.float64)
        elif vec.shape[0] != width:
            if i > 0:  # an earlier row's bad value is the file's first problem (as a stream of 1-row batches sees it)
                finite_float32(out[:i], table, fname, "embedding")  # type: ignore[index]
            raise CellErrors(fname, table.rows, "embedding")(
                i, f"has {vec.shape[0]} values, expected {width} like the rows before it")
        out[i] = vec  # type: ignore[index]
    assert out is not None
    return out


_LIST_OF_NUMBERS = "a list of numbers like [0.1, -0.2, …]"


def _arrow_list_matrix(arr: Any, table: RawTable, fname: str) -> np.ndarray:
    """An Arrow list column of numbers -> ``[N, D]`` without per-row Python objects (the
    values buffer is used in place when it is already float32/float64)."""
    import pyarrow as pa

    err = CellErrors(fname, table.rows, "embedding", _LIST_OF_NUMBERS)

    n = len(arr)
    vt = arr.type.value_type
    out_dtype = np.float32 if pa.types.is_float32(vt) else np.float64
    out: np.ndarray | None = None
    width = -1 if table.rules.width is None else table.rules.width
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
            width = table.rules.width = int(lengths[0])
            check_dim_budget(width, fname, "embedding", table=table, i=pos)
            if width == 0:
                raise err(pos, "the embedding is empty")
        if (lengths != width).any():
            i = int(np.flatnonzero(lengths != width)[0])
            if pos + i > 0 and out is not None or i > 0:  # earlier rows' bad values come first (file order)
                before = [] if out is None else [out[:pos]]
                if i > 0:
                    before.append(c.slice(0, i).flatten().to_numpy(zero_copy_only=False).reshape(i, width))
                finite_float32(np.concatenate(before).astype(out_dtype, copy=False), table, fname, "embedding")
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


def _parse_vector(cell: Any, table: RawTable, fname: str, i: int) -> np.ndarray:
    fail = CellErrors(fname, table.rows, "embedding", _LIST_OF_NUMBERS)

    if cell is None or (isinstance(cell, str) and not ascii_strip(cell)):
        raise fail(i, "the embedding is missing")
    if isinstance(cell, str):
        text = ascii_strip(cell)
        try:
            parsed = json.loads(text)
        except (json.JSONDecodeError, ValueError, RecursionError):
            # whitespace- or comma-separated numbers without brackets
            parsed = [p for p in re.split(r"[,\s]+", text.strip("[]() "), flags=re.ASCII) if p]
        cell = parsed
    if not isinstance(cell, (list, tuple, np.ndarray)):
        raise fail(i, f"{show(cell)} is not a list of numbers")
    out = np.empty(len(cell), dtype=np.float64)
    for k, v in enumerate(cell):
        if isinstance(v, bool):
            raise fail(i, f"position {k} is the boolean {v!r}, not a number")
        if isinstance(v, (list, tuple, dict)):
            raise fail(i, f"position {k} is nested ({show(v)}); expected a flat list")
        x = number(v)
        if x is None:
            raise fail(i, f"{show(v)} at position {k} is not a number")
        out[k] = x
    return out


def finite_float32(matrix: np.ndarray, table: RawTable, fname: str, emb_desc: str) -> np.ndarray:
    """``matrix`` as finite float32 ``[N, D]`` whose features stay finite: names the first
    value that is not finite, too large for float32, or too small for it (subnormal, or a
    float64 that would become 0), and the first row whose length is over
    :data:`MAX_EMBEDDING_NORM`."""
    if matrix.dtype == np.float32:
        m32 = matrix
    else:
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            m32 = matrix.astype(np.float32)
    finite = np.isfinite(m32)
    if not finite.all():
        i, j = (int(x) for x in np.argwhere(~finite)[0])
        value = matrix[i, j]
        what = "is too large for float32" if np.isfinite(value) else "is not finite"
        raise _value_error(table, fname, emb_desc, i, j, f"value {value} {what}; expected finite embedding values (no NaN or inf)")
    _check_magnitudes(matrix, table, fname, emb_desc)
    return m32


def _value_error(table: RawTable, fname: str, emb_desc: str, i: int, j: int, what: str) -> TrajectoryError:
    listed = emb_desc in ("embedding", "embeddings")
    return CellErrors(fname, table.rows, emb_desc if listed else f"e{j}")(i, what, position=j if listed else None)


def _check_magnitudes(matrix: np.ndarray, table: RawTable, fname: str, emb_desc: str) -> None:
    """Finite values whose features would not be: a non-zero value below float32's smallest
    normal number, or a row longer than :data:`MAX_EMBEDDING_NORM` (checked by row blocks
    of about 1M values, so the float64 copy stays small)."""
    block = max(1, 1_000_000 // max(matrix.shape[1], 1))
    for a in range(0, matrix.shape[0], block):
        part = np.abs(matrix[a : a + block].astype(np.float64, copy=False))
        tiny = (part > 0) & (part < FLOAT32_TINY)
        if tiny.any():
            i, j = (int(x) for x in np.argwhere(tiny)[0])
            raise _value_error(
                table, fname, emb_desc, a + i, j,
                f"value {matrix[a + i, j]} is too small for float32 (below {FLOAT32_TINY:.4g}, it would lose its "
                "precision or become 0); expected 0 or a value of magnitude >= 1.2e-38",
            )
        norms = np.sqrt(np.einsum("ij,ij->i", part, part))
        over = norms > MAX_EMBEDDING_NORM
        if over.any():
            i = int(np.flatnonzero(over)[0])
            raise _value_error(
                table, fname, emb_desc, a + i, int(np.argmax(part[i])),
                f"the embedding's length (Euclidean norm) is {norms[i]:.3g}, over {MAX_EMBEDDING_NORM:.0e}: its "
                "features would overflow float32 (accelerations reach 8.3e6 times the length, and training "
                "squares them); expected embeddings of ordinary size (rescale them)",
            )


# ---- user ids -------------------------------------------------------------------------------
def _blank_id(v: str) -> str:
    """Why a blank id is refused: empty, or only spaces some of which are not ASCII (invisible)."""
    if not ascii_strip(v):
        return "empty user id"
    return f"{show(v)} holds only spaces (some not ASCII): an invisible user id"


def parse_user_ids(col: Column, table: RawTable, fname: str) -> np.ndarray:
    fail = CellErrors(fname, table.rows, "user_id", "a non-empty text or integer id")

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
                    raise fail(i, f"{show(raw)} is not valid UTF-8") from None
        else:
            kind = "floats" if arr.dtype.kind == "f" else f"values of type {arr.dtype}"
            raise fail(0, f"ids are {kind} ({show(arr[0])}); floats lose digits and 1.0 vs 1 is ambiguous")
        out = np.empty(len(values), dtype=object)
        out[:] = values
        for i, v in enumerate(values):
            if not v.strip():
                raise fail(i, _blank_id(v))
        return out
    if col.kind != "text" and col.kind != "json":
        raise fail(0, f"ids are {kind_name(col)}")
    values = col.values.tolist()
    out = np.empty(len(values), dtype=object)
    seen = table.rules.id_kinds  # file-wide: earlier batches' ids count too
    for i, v in enumerate(values):
        if isinstance(v, str):
            if not v.strip():
                raise fail(i, _blank_id(v))
            text = v
        elif isinstance(v, int) and not isinstance(v, bool):
            text = str(v)
        elif v is None:
            raise fail(i, "empty user id")
        elif isinstance(v, float):
            raise fail(i, f"{show(v)} is a float; floats lose digits and 1.0 vs 1 is ambiguous (write the id as text or an integer)")
        else:
            raise fail(i, f"{show(v)} is a {type(v).__name__}")
        kind = type(v)
        prev = seen.setdefault(text, kind)
        if prev is not kind:
            raise fail(
                i,
                f"{show(v)} ({kind.__name__}) and an earlier {prev.__name__} id would be the same user "
                f"{text!r}",
            )
        out[i] = text
    return out


# ---- labels and texts -----------------------------------------------------------------------
# a label is written as an integer: ASCII digits (an optional sign) with only ASCII spaces around
_INT_TEXT = re.compile(r"[+-]?\d+", re.ASCII)
LABEL_RULE = "an integer label >= 0 (or leave it empty for no label)"
FLOAT_LABEL = (
    "is a float; a label is a class index written as an integer (1.0 is refused, never rounded; pandas "
    "makes a label column with gaps float: .astype('Int64') keeps the gaps)"
)


def parse_labels(col: Column, table: RawTable, fname: str) -> tuple[np.ndarray, np.ndarray]:
    """Label column -> (int64 values ``[N]``, present mask ``[N]``).

    One rule in every format: a label is an integer >= 0 within int64, *written as an
    integer* (a JSON integer, ASCII digits in a text cell, an integer-typed Parquet/NPZ
    column). A float is refused even when whole (``1.0``, ``"1.0"``, a float64 column of
    0.0/1.0); so are booleans, negatives and anything outside int64. No label: an empty
    cell (ASCII spaces only), null, or NaN (how JSON and float columns spell a missing number).
    """

    cell = CellErrors(fname, table.rows, "label", LABEL_RULE)

    def fail(i: int, v: Any, what: str = "is not an integer class") -> TrajectoryError:
        return cell.value(i, v, what)

    n = table.n
    if col.kind == "array":
        return _label_array(col, table, fname, fail)
    if col.kind not in ("text", "json"):
        raise fail(0, None, f"holds {kind_name(col)}")
    out = np.zeros(n, dtype=np.int64)
    present = np.ones(n, dtype=bool)
    for i, v in enumerate(col.values.tolist()):
        if v is None or (isinstance(v, str) and not ascii_strip(v)) or (isinstance(v, float) and math.isnan(v)):
            present[i] = False  # empty, null, or NaN (how a float column spells a missing value)
            continue
        if isinstance(v, bool):
            raise fail(i, v, "is a boolean, not a class")
        if isinstance(v, int):
            value = v
        elif isinstance(v, float):
            raise fail(i, v, FLOAT_LABEL)
        elif isinstance(v, str):
            text = ascii_strip(v)
            if not _INT_TEXT.fullmatch(text):
                float_text = number(text) is not None and math.isfinite(float(text))
                raise fail(i, v, FLOAT_LABEL if float_text else "is not an integer class")
            value = int(text)
        else:
            raise fail(i, v)
        if value < 0:
            raise fail(i, v, "is negative (labels are class indices; -1 is not a way to say 'no label')")
        if value > INT64_MAX:
            raise fail(i, v, "is too large for a 64-bit integer")
        out[i] = value
    return out, present


def _label_array(col: Column, table: RawTable, fname: str, fail: Any) -> tuple[np.ndarray, np.ndarray]:
    """A typed label column (Parquet/NPZ/DataFrame): integers, or text read as text cells; a
    float column may hold only missing values (null or NaN), as every other format."""
    n = table.n
    arr = col.values
    mask = col.mask if col.mask is not None else np.zeros(n, dtype=bool)
    if arr.dtype.kind == "f":
        mask = mask | np.isnan(arr)
        if not mask.all():
            i = int(np.flatnonzero(~mask)[0])
            raise fail(i, float(arr[i]), FLOAT_LABEL.replace("is a float", f"is a float (column type {arr.dtype})", 1))
        return np.zeros(n, dtype=np.int64), ~mask
    if arr.dtype.kind in "US":
        texts = np.empty(n, dtype=object)
        texts[:] = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in arr.tolist()]
        if col.mask is not None:
            texts[col.mask] = None
        return parse_labels(Column("text", texts), table, fname)
    if arr.dtype.kind == "i":
        bad = (arr < 0) & ~mask
    elif arr.dtype.kind == "u":
        bad = (arr > np.uint64(INT64_MAX)) & ~mask
    else:
        raise fail(0, arr[0], f"is of type {arr.dtype}")
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise fail(i, arr[i], "is negative or too large for a 64-bit integer")
    return np.where(mask, 0, arr).astype(np.int64), ~mask


def parse_texts(col: Column, table: RawTable, fname: str) -> np.ndarray:
    out = np.empty(table.n, dtype=object)
    if col.kind == "array" and col.values.dtype.kind in "US":
        arr = col.values
        for i, v in enumerate(arr.tolist()):
            if isinstance(v, bytes):
                try:
                    v = v.decode("utf-8")
                except UnicodeDecodeError:
                    raise CellErrors(fname, table.rows, "text")(i, "not valid UTF-8") from None
            out[i] = v
        return out
    if col.kind not in ("text", "json"):
        raise TrajectoryError(
            f"{fname}: column 'text' holds {kind_name(col)}; expected text", file=fname, column="text"
        )
    for i, v in enumerate(col.values.tolist()):
        if v is None:
            out[i] = ""  # no text for this post
        elif isinstance(v, str):
            out[i] = v
        else:
            raise CellErrors(fname, table.rows, "text", "text").value(i, v, f"is a {type(v).__name__}")
    return out


def check_user_label(
    labels: np.ndarray, present: np.ndarray | None, rows: np.ndarray, uid: str, table: RowIndex, fname: str
) -> int | None:
    """The one label of user ``uid`` (its rows ``rows``, in time order), or ``None``; a row
    with another label or none, next to a labelled row, is refused naming both rows."""
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
            row=table.number(int(k)),
            column="label",
            user=uid,
        )
    return int(first)
