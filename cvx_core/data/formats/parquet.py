"""Parquet: read column by column (strings dictionary-encoded, list columns row group by
row group), with the decoded size estimated from the footer before anything is read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cvx_core.data.columns import Column, RawTable
from cvx_core.data.formats.arrow import arrow_column, is_number_list
from cvx_core.data.formats.base import duplicate_name, first_line, over_budget
from cvx_core.data.trajectory import TrajectoryError

__all__ = ["read_parquet"]


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


def read_parquet(data: bytes | Path, fname: str, budget: int | None) -> RawTable:
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
        raise TrajectoryError(f"{fname}: not a readable Parquet file ({first_line(exc)})", file=fname) from None
    dup = duplicate_name(names)
    if dup is not None:
        raise TrajectoryError(
            f"{fname}: column {dup!r} appears twice; expected each column once", file=fname, column=dup
        )
    decoded = _parquet_decoded_estimate(meta)
    if budget is not None and decoded > budget:
        raise over_budget(fname, decoded, budget, "the table")
    n = int(meta.num_rows)
    string_cols = [
        f.name for f in pf.schema_arrow if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
    ]
    columns: dict[str, Column] = {}
    # strings stay dictionary-encoded: repeated text cannot expand into copies
    try:
        pf = pq.ParquetFile(
            source if isinstance(data, Path) else pa.BufferReader(data),
            read_dictionary=string_cols or None,
            pre_buffer=False,  # stream each column chunk instead of holding it compressed and decoded
            buffer_size=1 << 22,
        )
    except Exception as exc:  # pragma: no cover - the footer was readable a moment ago
        raise TrajectoryError(f"{fname}: not a readable Parquet file ({first_line(exc)})", file=fname) from None
    for name, field in zip(names, pf.schema_arrow):
        if is_number_list(field.type):
            # read later, row group by row group, straight into the [N, D] matrix
            columns[name] = Column("list", _ParquetListColumn(pf, name, n, fname))
            continue
        try:
            arr = pf.read(columns=[name]).column(0)
        except MemoryError:
            raise
        except Exception as exc:
            raise TrajectoryError(
                f"{fname}: column {name!r} is not readable ({first_line(exc)})", file=fname, column=name
            ) from None
        columns[name] = arrow_column(arr, name, fname, n)
        del arr
        pa.default_memory_pool().release_unused()
    return RawTable(columns, n)


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
                f"{self.fname}: column {self.name!r} is not readable ({first_line(exc)})",
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
                f"{self.fname}: column {self.name!r} is not readable ({first_line(exc)})",
                file=self.fname,
                column=self.name,
            ) from None

    def to_pylist(self) -> list[Any]:
        return self._read(None).to_pylist()
