"""Arrow columns (from Parquet, record batches or Arrow tables) -> :class:`Column` s, keeping
types exact (no pandas type guessing)."""

from __future__ import annotations

from typing import Any

import numpy as np

from cvx_core.data.columns import Column, RawTable, RowIndex
from cvx_core.data.formats.base import duplicate_name
from cvx_core.data.times import arrow_times_us
from cvx_core.data.trajectory import TrajectoryError

__all__ = ["arrow_column", "arrow_table", "is_number_list", "ArrowListColumn"]


def is_number_list(typ: Any) -> bool:
    """True for an Arrow list (any kind) of integers or float32/float64."""
    import pyarrow as pa

    if not (pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ)):
        return False
    vt = typ.value_type
    return (pa.types.is_integer(vt) or pa.types.is_floating(vt)) and not pa.types.is_float16(vt)


def arrow_column(arr: Any, name: str, fname: str, n: int, rows: RowIndex | None = None) -> Column:
    """One Arrow column -> a :class:`Column` without going through pandas' type guessing."""
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
        return Column("json", values)
    mask = arr.is_null().to_numpy(zero_copy_only=False) if arr.null_count else None
    if pa.types.is_timestamp(typ) or pa.types.is_date(typ):
        return Column("datetime", arrow_times_us(arr, name, fname, rows), mask)
    if pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_boolean(typ):
        filled = arr
        if arr.null_count:
            zero = pa.scalar(False) if pa.types.is_boolean(typ) else pa.scalar(0, type=typ)
            filled = pc.fill_null(arr, zero)
        return Column("array", np.asarray(filled.to_numpy()), mask)
    # anything else (strings that were not dictionary-read, nested, binary): Python objects
    values = np.empty(n, dtype=object)
    values[:] = arr.to_pylist()
    return Column("json", values)


class ArrowListColumn:
    """An Arrow list-of-numbers column held in memory, in the shape the list decoder reads
    (``chunks()`` in row order, ``type``, ``len``, ``to_pylist()``)."""

    def __init__(self, arr: Any) -> None:
        import pyarrow as pa

        self.arr = arr if isinstance(arr, pa.ChunkedArray) else pa.chunked_array([arr])
        self.type = self.arr.type

    def __len__(self) -> int:
        return len(self.arr)

    def chunks(self, rows: int = 32_768) -> Any:
        yield from self.arr.chunks

    def to_pylist(self) -> list[Any]:
        return self.arr.to_pylist()


def arrow_table(data: Any, fname: str, rows: RowIndex) -> RawTable:
    """A ``pyarrow.Table`` or ``RecordBatch`` -> a :class:`RawTable` (lists of numbers stay
    Arrow and are decoded straight into ``[N, D]``; other columns as :func:`arrow_column`)."""
    import pyarrow as pa

    names = [str(n) for n in data.schema.names]
    dup = duplicate_name(names)
    if dup is not None:
        raise TrajectoryError(f"{fname}: column {dup!r} appears twice; expected each column once", file=fname, column=dup)
    n = data.num_rows
    columns: dict[str, Column] = {}
    for name, fld, arr in zip(names, data.schema, data.columns):
        chunked = arr if isinstance(arr, pa.ChunkedArray) else pa.chunked_array([arr], type=fld.type)
        if is_number_list(fld.type):
            columns[name] = Column("list", ArrowListColumn(chunked))
        else:
            columns[name] = arrow_column(chunked, name, fname, n, rows)
    return RawTable(columns, n, rows)
