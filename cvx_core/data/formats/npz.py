"""NumPy ``.npz``: arrays ``embeddings`` [N, D], ``timestamps``, ``user_ids`` (optional
``labels``, ``texts``), read with ``allow_pickle=False`` after checking every header's
declared size against the data and the budget.

:func:`read_npz` decodes a whole archive (the loader). :func:`npz_batches` streams one
from its path in batches of rows: a member stored without compression (``np.savez``) is
memory-mapped, a compressed one (``np.savez_compressed``) is decompressed row by row as the
batches are taken, so memory follows the batch, not the file. The one layout that cannot be
read in parts, a compressed 2-D ``embeddings`` in Fortran order, is decoded whole only
within :data:`NPZ_WHOLE_MB` (``CVX_MAX_NPZ_MB``) and refused above it, naming the file and
the budget.
"""

from __future__ import annotations

import io as _io
import math
import os
import zipfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from cvx_core.data.budgets import Budget
from cvx_core.data.columns import Column, RawTable, RowIndex
from cvx_core.data.formats.base import duplicate_name, first_line, mb, over_budget
from cvx_core.data.trajectory import TrajectoryError

__all__ = ["read_npz", "npz_batches", "npz_rows", "NPZ_WHOLE_MB"]

#: an ``.npz`` array that cannot be streamed (compressed, Fortran order) is decoded whole up to this
NPZ_WHOLE_MB = Budget("MiB of an .npz array decoded whole when streaming (compressed, Fortran order)", 1024,
                      "CVX_MAX_NPZ_MB")


_NPZ_KEYS = ("embeddings", "timestamps", "user_ids", "labels", "texts")


def _npz_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, fname: str,
                key: str) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """Shape, dtype, Fortran order and header length of an ``.npy`` member, without reading its data."""
    with zf.open(info) as fh:
        try:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            header_len = fh.tell()
        except Exception as exc:
            raise TrajectoryError(
                f"{fname}: array '{key}' has no valid .npy header ({first_line(exc)})", file=fname, column=key
            ) from None
    if dtype.hasobject:
        raise TrajectoryError(
            f"{fname}: array '{key}' is an object array, which is not loaded (allow_pickle=False); "
            "store it as numbers or fixed-width strings",
            file=fname,
            column=key,
        )
    declared = math.prod(shape) * dtype.itemsize
    if declared > info.file_size - header_len:
        raise TrajectoryError(
            f"{fname}: array '{key}' declares shape {shape} of {dtype} ({mb(declared)}) but holds only "
            f"{mb(max(0, info.file_size - header_len))} of data; the archive is damaged or forged",
            file=fname,
            column=key,
        )
    return tuple(int(x) for x in shape), dtype, bool(fortran), int(header_len)


def _open_zip(source: Any, fname: str) -> zipfile.ZipFile:
    """The archive (bytes or a path); a file that is not a readable zip is refused."""
    try:
        if isinstance(source, (bytes, bytearray)):
            head = bytes(source[:2])
            opened = _io.BytesIO(source)
        else:
            with open(source, "rb") as fh:
                head = fh.read(2)
            opened = source
        if head != b"PK":
            raise TrajectoryError(
                f"{fname}: not a NumPy .npz archive (not a zip file); is the extension right?", file=fname)
        zf = zipfile.ZipFile(opened)
        zf.infolist()
        return zf
    except TrajectoryError:
        raise
    except Exception as exc:
        raise TrajectoryError(f"{fname}: not a readable .npz archive ({first_line(exc)})", file=fname) from None


def _members(zf: zipfile.ZipFile, fname: str, budget: int | None) -> tuple[dict[str, zipfile.ZipInfo], dict[str, Any]]:
    """The archive's arrays by name and their checked headers (shape, dtype, Fortran, header length)."""
    infos = zf.infolist()
    members = [i.filename[:-4] if i.filename.endswith(".npy") else i.filename for i in infos]
    dup = duplicate_name(members)
    if dup is not None:
        raise TrajectoryError(f"{fname}: array {dup!r} appears twice in the archive", file=fname, column=dup)
    by_name = dict(zip(members, infos))
    missing = [k for k in ("embeddings", "timestamps", "user_ids") if k not in by_name]
    if missing:
        raise TrajectoryError(
            f"{fname}: missing array(s) {missing}; an .npz needs 'embeddings' [N, D], "
            f"'timestamps' [N], 'user_ids' [N] (optional 'labels', 'texts'); found {sorted(by_name)}",
            file=fname,
            column=missing[0],
        )
    headers = {k: _npz_header(zf, by_name[k], fname, k) for k in _NPZ_KEYS if k in by_name}
    decoded = sum(math.prod(h[0]) * h[1].itemsize for h in headers.values())
    if budget is not None and decoded > budget:
        raise over_budget(fname, decoded, budget, "the archive")
    shape = headers["embeddings"][0]
    if len(shape) != 2:
        raise TrajectoryError(
            f"{fname}: array 'embeddings' must be 2-D [N, D], got shape {shape}", file=fname, column="embeddings"
        )
    n = shape[0]
    if n == 0:
        raise TrajectoryError(f"{fname}: array 'embeddings' has no rows", file=fname, column="embeddings")
    for key in ("timestamps", "user_ids", "labels", "texts"):
        if key in headers and headers[key][0] != (n,):
            raise TrajectoryError(
                f"{fname}: array '{key}' must have shape ({n},) to match 'embeddings', got {headers[key][0]}",
                file=fname,
                column=key,
            )
    dtype = headers["embeddings"][1]
    if dtype.kind not in "iuf" or dtype == np.float16:
        raise TrajectoryError(
            f"{fname}: array 'embeddings' must be real numbers (integers, float32 or float64), got dtype {dtype}",
            file=fname,
            column="embeddings",
        )
    return by_name, headers


def read_npz(data: bytes, fname: str, budget: int | None) -> RawTable:
    """A whole archive (its bytes) as one :class:`RawTable`, within ``budget`` decoded bytes."""
    zf = _open_zip(data, fname)
    with zf:
        by_name, headers = _members(zf, fname, budget)
        arrays: dict[str, np.ndarray] = {}
        for key in headers:
            try:
                with zf.open(by_name[key]) as fh:
                    arrays[key] = np.lib.format.read_array(fh, allow_pickle=False)
            except MemoryError:
                raise
            except Exception as exc:
                raise TrajectoryError(
                    f"{fname}: array '{key}' is not readable ({first_line(exc)})", file=fname, column=key
                ) from None
    return _raw(arrays, headers["embeddings"][0][0])


_RENAME = {"user_ids": "user_id", "timestamps": "timestamp", "labels": "label", "texts": "text"}


def _raw(arrays: dict[str, np.ndarray], n: int, offset: int = 0) -> RawTable:
    columns = {"embeddings": Column("matrix", arrays["embeddings"])}
    for key, arr in arrays.items():
        if key != "embeddings":
            columns[_RENAME[key]] = Column("array", arr)
    return RawTable(columns, n, RowIndex(offset=offset))


# ---- streaming ----------------------------------------------------------------------------
class _Rows:
    """The rows of one ``.npy`` member, taken in order without decoding the whole array:
    memory-mapped when stored, decompressed as taken when compressed."""

    def __init__(self, path: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo, header: tuple, fname: str,
                 key: str) -> None:
        shape, dtype, fortran, header_len = header
        self.shape, self.dtype, self.row_items = shape, dtype, math.prod(shape[1:])
        self.mm: np.ndarray | None = None
        self.fh: Any = None
        self.done = 0
        if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1:
            with open(path, "rb") as fh:
                fh.seek(info.header_offset)
                local = fh.read(30)
            start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") + \
                int.from_bytes(local[28:30], "little")
            self.mm = np.memmap(path, dtype=dtype, mode="r", offset=start + header_len, shape=shape,
                                order="F" if fortran else "C") if math.prod(shape) else np.zeros(shape, dtype)
        elif fortran and len(shape) > 1:  # columns one after the other: only whole
            need = math.prod(shape) * dtype.itemsize
            limit = NPZ_WHOLE_MB.value() << 20
            if need > limit:
                raise TrajectoryError(
                    f"{fname}: array '{key}' is compressed in Fortran (column) order, so it cannot be read in "
                    f"parts; decoding it whole needs {mb(need)}, over the budget of {mb(limit)} "
                    f"({NPZ_WHOLE_MB.env}); save it with np.savez (uncompressed) or in C order, or raise "
                    f"{NPZ_WHOLE_MB.env}", file=fname, column=key)
            with zf.open(info) as fh:
                self.mm = np.lib.format.read_array(fh, allow_pickle=False)
        else:
            self.fh = zf.open(info)
            self.fh.read(header_len)

    def take(self, n: int) -> np.ndarray:
        a, self.done = self.done, self.done + n
        if self.mm is not None:
            return np.array(self.mm[a:a + n])
        nbytes = n * self.row_items * self.dtype.itemsize
        buf = self.fh.read(nbytes)
        if len(buf) != nbytes:
            raise EOFError(f"{len(buf)} of {nbytes} bytes")
        return np.frombuffer(buf, dtype=self.dtype).reshape((n, *self.shape[1:])).copy()

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


def npz_rows(path: str | os.PathLike, fname: str) -> int:
    """The archive's number of posts (``embeddings`` rows), from its header."""
    with _open_zip(os.fspath(path), fname) as zf:
        _, headers = _members(zf, fname, None)
    return headers["embeddings"][0][0]


def npz_batches(path: str | os.PathLike, fname: str, *, batch_rows: int) -> Iterator[RawTable]:
    """The archive at ``path`` as :class:`RawTable` batches of at most ``batch_rows`` rows,
    numbered as in the whole archive, after the same checks as :func:`read_npz`."""
    p = os.fspath(path)
    zf = _open_zip(p, fname)
    readers: dict[str, _Rows] = {}
    with zf:
        by_name, headers = _members(zf, fname, None)
        try:
            for key, header in headers.items():
                try:
                    readers[key] = _Rows(p, zf, by_name[key], header, fname, key)
                except (TrajectoryError, MemoryError):
                    raise
                except Exception as exc:  # a truncated or damaged member
                    raise TrajectoryError(f"{fname}: array '{key}' is not readable ({first_line(exc)})",
                                          file=fname, column=key) from None
            n = headers["embeddings"][0][0]
            for a in range(0, n, batch_rows):
                k = min(batch_rows, n - a)
                arrays = {}
                for key, reader in readers.items():
                    try:
                        arrays[key] = reader.take(k)
                    except MemoryError:
                        raise
                    except Exception as exc:
                        raise TrajectoryError(f"{fname}: array '{key}' is not readable after row {a} "
                                              f"({first_line(exc)})", file=fname, column=key) from None
                yield _raw(arrays, k, a)
        finally:
            for reader in readers.values():
                reader.close()
