"""Atomic file writes: a temporary file in the target's folder, then ``os.replace``.

A reader never sees half a file, and a failed or interrupted write leaves the previous
file exactly as it was. Every file the library saves (datasets, run folders, exports)
goes through :func:`atomic_replace`.

Leftovers: a temporary file is named ``.NAME.PID.RANDOM.tmp`` (the writer's process id),
and the first write into a folder sweeps the temporary files of writers that are no longer
alive, so a killed run leaves nothing a later run does not remove. Scratch folders
(:func:`scratch_dir`) follow the same rule. :func:`check_output` refuses an output that
resolves to an input (symlinks and hard links followed); :func:`describe_os_error` turns
a full disk or a read-only folder into one line.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = [
    "atomic_replace",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_torch_save",
    "jsonable",
    "OutputPathError",
    "check_output",
    "same_file",
    "sweep_stale",
    "scratch_dir",
    "describe_os_error",
    "pid_alive",
]

#: ``.NAME.PID.RANDOM.tmp`` (atomic writes) and ``cvx-PREFIX-PID-RANDOM`` (scratch folders)
_TMP_RE = re.compile(r"^\..+\.(\d+)\.[A-Za-z0-9_]+\.tmp$")
_SCRATCH_RE = re.compile(r"^cvx-[a-z]+-(\d+)-[A-Za-z0-9_]+$")
_swept: set[str] = set()
_swept_lock = threading.Lock()


class OutputPathError(ValueError):
    """An output path that would destroy an input or cannot be a file; the message says why."""


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (``True`` when it is another user's)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def sweep_stale(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files (``.NAME.PID.X.tmp``) and scratch folders
    (``cvx-KIND-PID-X``) in ``folder`` whose writer process is no longer alive; returns what
    was removed. Files of live writers, and any name not of these forms, are left alone."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TMP_RE.match(entry.name) or _SCRATCH_RE.match(entry.name)
        if m is None or int(m.group(1)) == os.getpid() or pid_alive(int(m.group(1))):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


def _sweep_once(folder: Path) -> None:
    key = os.path.realpath(folder)
    with _swept_lock:
        if key in _swept:
            return
        _swept.add(key)
    sweep_stale(folder)


def scratch_dir(kind: str, *, dir: str | os.PathLike[str] | None = None) -> Path:
    """A new scratch folder ``cvx-KIND-PID-X`` under ``dir`` (default the system temp
    folder), after sweeping the scratch folders of dead processes there. The caller
    removes it when done; if the process is killed, the next call sweeps it."""
    if not kind.isalpha() or not kind.islower():
        raise ValueError(f"scratch kind must be lowercase letters, got {kind!r}")
    parent = Path(dir) if dir is not None else Path(tempfile.gettempdir())
    sweep_stale(parent)
    return Path(tempfile.mkdtemp(prefix=f"cvx-{kind}-{os.getpid()}-", dir=parent))


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name one file: same resolved path (symlinks followed), or, when
    both exist, the same device and inode (hard links)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def check_output(out: str | os.PathLike[str], inputs: Sequence[str | os.PathLike[str] | None] = (),
                 *, what: str = "--out", folder: bool = False) -> Path:
    """``out`` as a Path, after refusing (:class:`OutputPathError`) an output that resolves
    to one of ``inputs`` (symlinks and hard links followed), a file output that is an existing
    folder, a folder output that is an existing file, and a parent that is not a folder."""
    p = Path(out)
    for src in inputs:
        if src is not None and same_file(p, src):
            raise OutputPathError(f"{what} {out}: is the input file {src} (writing it would destroy the input); "
                                  "choose another output path")
    try:
        mode = os.stat(p).st_mode
    except OSError:
        mode = None
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        # renaming over it would replace a device node, FIFO or socket (e.g. /dev/full) with a file
        raise OutputPathError(f"{what} {out}: is a device, FIFO or socket, not a regular file; choose a file path")
    if folder:
        if p.exists() and not p.is_dir():
            raise OutputPathError(f"{what} {out}: is an existing file, expected a folder (or a path to create)")
    elif p.is_dir():
        raise OutputPathError(f"{what} {out}: is an existing folder, expected a file path")
    parent = p.resolve().parent
    for anc in (parent, *parent.parents):
        if anc.exists():
            if not anc.is_dir():
                raise OutputPathError(f"{what} {out}: {anc} is a file, not a folder")
            break
    return p


def describe_os_error(exc: OSError, *, path: str | os.PathLike[str] | None = None) -> str:
    """One line for an ``OSError``: "disk full" (ENOSPC, EDQUOT), "read-only file system"
    (EROFS), "permission denied" (EACCES, EPERM), else the system's words; names the file."""
    where = path if path is not None else (exc.filename or "")
    prefix = f"{where}: " if where else ""
    code = exc.errno
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return f"{prefix}disk full (no space left on the device); free space or write elsewhere"
    if code == errno.EROFS:
        return f"{prefix}read-only file system; write to another folder"
    if code in (errno.EACCES, errno.EPERM):
        return f"{prefix}permission denied (a read-only or another user's folder?)"
    if code == errno.ENOENT:
        return f"{prefix}no such file or folder"
    if code == errno.EISDIR:
        return f"{prefix}is a folder, expected a file"
    if code == errno.ENOTDIR:
        return f"{prefix}a part of the path is not a folder"
    return f"{prefix}{exc.strerror or exc}"


def _refuse_special(path: Path) -> None:
    """An existing device node, FIFO or socket at ``path`` is never replaced by a file
    (``OutputPathError``); a folder is never written as a file (``IsADirectoryError``)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "is a folder, expected a file", str(path))
    if not stat.S_ISREG(mode):
        raise OutputPathError(f"{path}: is a device, FIFO or socket, not a regular file; choose a file path")


def atomic_replace(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(fh)`` on a temporary binary file beside ``path``, then rename it over
    ``path``. The file gets the permissions a plainly created file would (umask applied)."""
    path = Path(path)
    _refuse_special(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep_once(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _naming(exc, path) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _naming(exc, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` with the output ``path`` as its file name when it names none (a write on a
    full disk says only "No space left on device")."""
    if exc.filename is None and exc.errno is not None and exc.strerror is not None:
        exc.filename = str(path)
    return exc


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
