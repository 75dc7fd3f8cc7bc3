"""NumPy ``.npz``: arrays ``embeddings`` [N, D], ``timestamps``, ``user_ids`` (optional
``labels``, ``texts``), read with ``allow_pickle=False`` after checking every header's
declared size against the data and the budget."""

from __future__ import annotations

import io as _io
import math
import zipfile

import numpy as np

from cvx_core.data.columns import Column, RawTable
from cvx_core.data.formats.base import duplicate_name, first_line, mb, over_budget
from cvx_core.data.trajectory import TrajectoryError

__all__ = ["read_npz"]


_NPZ_KEYS = ("embeddings", "timestamps", "user_ids", "labels", "texts")


def _npz_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, fname: str, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from an ``.npy`` member's header, without reading its data."""
    with zf.open(info) as fh:
        try:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
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
    return tuple(int(x) for x in shape), dtype


def read_npz(data: bytes, fname: str, budget: int | None) -> RawTable:
    if not data.startswith(b"PK"):
        raise TrajectoryError(f"{fname}: not a NumPy .npz archive (not a zip file); is the extension right?", file=fname)
    try:
        zf = zipfile.ZipFile(_io.BytesIO(data))
        infos = zf.infolist()
    except Exception as exc:
        raise TrajectoryError(f"{fname}: not a readable .npz archive ({first_line(exc)})", file=fname) from None
    with zf:
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
        decoded = sum(math.prod(s) * dt.itemsize for s, dt in headers.values())
        if budget is not None and decoded > budget:
            raise over_budget(fname, decoded, budget, "the archive")
        shape, _ = headers["embeddings"]
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
    emb = arrays.pop("embeddings")
    if emb.dtype.kind not in "iuf" or emb.dtype == np.float16:
        raise TrajectoryError(
            f"{fname}: array 'embeddings' must be real numbers (integers, float32 or float64), got dtype {emb.dtype}",
            file=fname,
            column="embeddings",
        )
    columns = {"embeddings": Column("matrix", emb)}
    rename = {"user_ids": "user_id", "timestamps": "timestamp", "labels": "label", "texts": "text"}
    for key, arr in arrays.items():
        columns[rename[key]] = Column("array", arr)
    return RawTable(columns, n)
