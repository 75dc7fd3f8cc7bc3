"""CSV: a header row, then one row per post; cells are text (UTF-8).

One reader for the loader and the stream: pyarrow's streaming CSV reader
(``pyarrow.csv.open_csv``), every column read as text, quoted cells may hold line breaks.
A quote inside an unquoted cell (``he said "hi``) is a literal character, as in pandas and
Python's ``csv`` module. The bytes pass through a strict UTF-8 check on their way in, so an
invalid byte is refused naming its line. Each record batch becomes a :class:`RawTable` whose
rows carry their row numbers in the file and their first lines (counted from the line
breaks inside cells; blank lines, which are skipped, are not counted).
"""

from __future__ import annotations

import codecs
import csv
import io as _io
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from cvx_core.data.columns import E_COL, Column, RawTable, RowIndex
from cvx_core.data.formats.base import duplicate_name, first_line, looks_binary
from cvx_core.data.trajectory import TrajectoryError

__all__ = ["read_csv", "csv_batches"]

_BLOCK = 1 << 20


class _Utf8Reader:
    """A binary file that checks strict UTF-8 as it is read and counts lines, so that an
    invalid byte is refused naming its line (the message :func:`decode_utf8` gives)."""

    def __init__(self, raw: IO[bytes], fname: str) -> None:
        self.raw, self.fname = raw, fname
        self.decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self.offset = 0
        self.newlines = 0
        self.closed = False

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        try:
            self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            # the decoder may hold back up to 3 bytes of an unfinished character
            start = max(exc.start - (len(exc.object) - len(data)), 0)
            line = self.newlines + data[:start].count(b"\n") + 1
            row = line - 1
            raise TrajectoryError(
                f"{self.fname}: line {line} is not valid UTF-8 (byte {data[start] if start < len(data) else 0:#04x} "
                f"at offset {self.offset + start}); save the file as UTF-8",
                file=self.fname,
                row=row if row >= 1 else None,
            ) from None
        self.offset += len(data)
        self.newlines += data.count(b"\n")
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True


def _header(raw: IO[bytes], fname: str) -> tuple[list[str], int]:
    """The header's names (read with Python's csv module) and its number of lines."""
    head = b""
    while True:
        ln = raw.readline()
        head += ln
        if not ln or head.count(b'"') % 2 == 0:
            break
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TrajectoryError(
            f"{fname}: line 1 is not valid UTF-8 (byte {head[exc.start]:#04x} at offset {exc.start}); "
            "save the file as UTF-8",
            file=fname,
        ) from None
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
    if any(not h.strip() for h in header):
        raise TrajectoryError(f"{fname}: the header has a blank column name; expected a name for every column", file=fname)
    return header, max(head.count(b"\n"), 1)


def _text_column(arr: Any) -> Column:
    values = np.empty(len(arr), dtype=object)
    values[:] = arr.to_pylist()
    return Column("text", values)


def _number_column(arr: Any) -> Column | None:
    """An e-column parsed to float64 in one vectorised pass (Arrow's parser is correctly
    rounded and, like the loader's rule, takes ASCII digits, an optional sign, fraction and
    exponent, ``inf``/``nan``; ASCII spaces around it are trimmed); ``None`` when a cell is
    not such a number (the text path then names it)."""
    import pyarrow.compute as pc

    try:
        values = pc.cast(pc.ascii_trim_whitespace(arr), "float64").to_numpy(zero_copy_only=False)
    except Exception:  # noqa: BLE001 - a cell Arrow does not parse: the text path decides
        return None
    return Column("array", np.asarray(values, dtype=np.float64))


def _to_raw(batch: Any, header: list[str], row_offset: int, first_line: int) -> tuple[RawTable, int]:
    """A record batch (or Arrow table) of text cells -> a :class:`RawTable` (rows ``row_offset + 1 …``, lines
    from ``first_line``); returns it and the line after its last row."""
    import pyarrow.compute as pc

    n = batch.num_rows
    extra_lines = np.zeros(n, dtype=np.int64)
    columns: dict[str, Column] = {}
    for name, arr in zip(header, batch.columns):
        extra_lines += pc.count_substring(arr, "\n").to_numpy(zero_copy_only=False).astype(np.int64)
        col = _number_column(arr) if E_COL.match(name) and name == f"e{int(name[1:])}" else None
        columns[name] = col if col is not None else _text_column(arr)
    spans = 1 + extra_lines
    lines = first_line + np.concatenate([[0], np.cumsum(spans)[:-1]]).astype(np.int64)
    next_line = int(first_line + spans.sum())
    return RawTable(columns, n, RowIndex(offset=row_offset, lines=lines)), next_line


def _open_reader(raw: IO[bytes], fname: str, header: list[str], block: int, skip: int, bad: list[Any]) -> Any:
    """pyarrow's streaming reader over ``raw`` (from its start), all columns text, the first
    ``skip`` data rows skipped; rows with the wrong number of fields are collected in ``bad``."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    def invalid(row: Any) -> str:
        bad.append(row)
        return "error"

    raw.seek(0)
    reader = pcsv.open_csv(
        _Utf8Reader(raw, fname),
        read_options=pcsv.ReadOptions(use_threads=False, block_size=block, skip_rows_after_names=skip),
        parse_options=pcsv.ParseOptions(newlines_in_values=True, invalid_row_handler=invalid),
        convert_options=pcsv.ConvertOptions(
            column_types={h: pa.string() for h in header},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    if [str(n) for n in reader.schema.names] != header:
        raise TrajectoryError(f"{fname}: the header row is not readable CSV", file=fname)
    return reader


def _parse_error(fname: str, exc: BaseException, bad: list[Any]) -> TrajectoryError:
    if bad:
        row = bad[0]
        where = f"row {row.number - 1}" if row.number else "a row"
        return TrajectoryError(
            f"{fname}: {where} has {row.actual_columns} fields, expected {row.expected_columns} like the "
            f"header; is a quote or a comma out of place? ({_show_text(row.text)})",
            file=fname,
            row=row.number - 1 if row.number else None,
        )
    return TrajectoryError(f"{fname}: not a readable CSV file ({first_line(exc)})", file=fname)


def _record_batches(source: bytes | Path, fname: str) -> Iterator[tuple[Any, list[str], int]]:
    """``(record batch of text cells, header, header lines)`` as pyarrow parses ``source``.

    Blocks start at 1 MB; a row longer than a block makes pyarrow stop, and the reader is
    opened again with blocks four times larger, after the rows already given."""
    if isinstance(source, Path):
        with open(source, "rb") as fh:
            head = fh.read(4096)
        size = source.stat().st_size
    else:
        head, size = source[:4096], len(source)
    if looks_binary(head):
        raise TrajectoryError(f"{fname}: not a CSV text file (binary content); is the extension right?", file=fname)
    raw: IO[bytes] = open(source, "rb") if isinstance(source, Path) else _io.BytesIO(source)
    with raw:
        header, header_lines = _header(raw, fname)
        block, done = _BLOCK, 0
        while True:
            bad: list[Any] = []
            try:
                for batch in _open_reader(raw, fname, header, block, done, bad):
                    done += batch.num_rows
                    yield batch, header, header_lines
                return
            except (TrajectoryError, MemoryError):
                raise
            except Exception as exc:  # noqa: BLE001 - pyarrow's parse errors
                if "straddl" in str(exc) and not bad and block <= size:
                    block *= 4  # one row is longer than a block: read on with larger blocks
                    continue
                raise _parse_error(fname, exc, bad) from None


def csv_batches(source: bytes | Path, fname: str, *, batch_rows: int) -> Iterator[RawTable]:
    """The CSV ``source`` (bytes or a file path) as :class:`RawTable` s of at most
    ``batch_rows`` rows, rows numbered in the file (the stream's reader)."""
    offset, line = 0, None
    for batch, header, header_lines in _record_batches(source, fname):
        line = header_lines + 1 if line is None else line
        for a in range(0, batch.num_rows, batch_rows):
            table, line = _to_raw(batch.slice(a, batch_rows), header, offset, line)
            offset += table.n
            yield table


def _show_text(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def read_csv(data: bytes, fname: str) -> RawTable:
    """The whole CSV file as one :class:`RawTable` (the loader's reader)."""
    import pyarrow as pa

    batches, header, header_lines = [], None, 1
    for batch, header, header_lines in _record_batches(data, fname):
        batches.append(batch)
    if header is None:
        header, header_lines = _header(_io.BytesIO(data), fname)
    if not batches:
        return RawTable({h: Column("text", np.empty(0, dtype=object)) for h in header}, 0)
    whole = pa.Table.from_batches(batches)  # columns stay chunked: nothing is copied
    del batches
    return _to_raw(whole, header, 0, header_lines + 1)[0]
