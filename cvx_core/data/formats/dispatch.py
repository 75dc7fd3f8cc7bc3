"""One entry point over the four format readers: a whole file -> a :class:`RawTable`."""

from __future__ import annotations

from pathlib import Path

from cvx_core.data.columns import RawTable
from cvx_core.data.formats.base import check_text_budget
from cvx_core.data.formats.csv import read_csv
from cvx_core.data.formats.jsonl import read_jsonl
from cvx_core.data.formats.npz import read_npz
from cvx_core.data.formats.parquet import read_parquet
from cvx_core.data.trajectory import TrajectoryError

__all__ = ["read_table"]


def read_table(data: bytes | Path, fname: str, fmt: str, max_decoded_bytes: int | None = None) -> RawTable:
    """The file ``data`` (bytes, or a Parquet file's path, read column by column) in format
    ``fmt`` as one :class:`RawTable`, within the decoded-size budget."""
    if isinstance(data, Path):
        if fmt != "parquet":
            raise ValueError("only a Parquet file is read from its path")
        return read_parquet(data, fname, max_decoded_bytes)
    if len(data) == 0:
        raise TrajectoryError(f"{fname}: the file is empty (0 bytes); expected a {fmt} table of posts", file=fname)
    if fmt == "npz":
        return read_npz(data, fname, max_decoded_bytes)
    if fmt == "parquet":
        return read_parquet(data, fname, max_decoded_bytes)
    check_text_budget(data, fname, max_decoded_bytes)
    return read_csv(data, fname) if fmt == "csv" else read_jsonl(data, fname)
