"""Atomic file writes: a temporary file in the target's folder, then ``os.replace``.

A reader never sees half a file, and a failed or interrupted write leaves the previous
file exactly as it was. Every file the library saves (datasets, run folders, exports)
goes through :func:`atomic_replace`.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["atomic_replace", "atomic_write_bytes", "atomic_write_json", "atomic_torch_save", "jsonable"]


def atomic_replace(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(fh)`` on a temporary binary file beside ``path``, then rename it over
    ``path``. The file gets the permissions a plainly created file would (umask applied)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_replace(path, lambda fh: fh.write(data))


def jsonable(obj: Any) -> Any:
    """``obj`` with NumPy values, datetimes and non-finite floats made JSON-ready (NaN -> None)."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # JSON has no NaN / inf
    if isinstance(obj, (np.datetime64, datetime)):
        return str(obj)
    return obj


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int = 2) -> Path:
    """Write ``obj`` as indented JSON atomically (NumPy values converted, NaN -> null)."""
    text = json.dumps(jsonable(obj), indent=indent, sort_keys=False, allow_nan=False)
    return atomic_write_bytes(path, (text + "\n").encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save(obj)`` atomically (for state dicts: tensors, dicts, lists, numbers)."""
    import torch

    return atomic_replace(path, lambda fh: torch.save(obj, fh))
