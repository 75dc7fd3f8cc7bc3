"""The workspace on disk: the datasets folder (uploads saved as Parquet), the shipped sample and its planted truth, and the run folders with the app's record of which dataset each run used.

Uploads claim their dataset name exclusively (a hard link that fails if the name exists),
so two uploads of the same name at once get two names; a decoded-size budget
(``CVX_MAX_DECODED_MB``) refuses decode bombs before they are decoded; temporary files an
interrupted write left behind are removed when the workspace is first opened.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvx_core.data.columns import ascii_strip
from cvx_core.data.trajectory import TrajectorySet

ROOT = Path(__file__).resolve().parents[1]


SAMPLE_NAME = "sample"


SAMPLE_PATH = ROOT / "sample_data" / "sample.parquet"

REAL_TEXT_NAME = "real_text"

# every dataset shipped in sample_data/, listed (in this order) from the first start
SHIPPED: dict[str, Path] = {
    SAMPLE_NAME: SAMPLE_PATH,
    REAL_TEXT_NAME: ROOT / "sample_data" / "real_text.parquet",
}


TRUTH_PATH = ROOT / "sample_data" / "truth.json"


UPLOAD_TYPES = ["csv", "parquet", "jsonl", "npz"]

MAX_DECODED_ENV = "CVX_MAX_DECODED_MB"
DEFAULT_MAX_DECODED_MB = 1024.0
ORPHAN_MIN_AGE_S = 300.0  # a temporary file this old is no write in progress

_log = logging.getLogger("cvx_app.workspace")
_cleaned: set[Path] = set()


def workspace_dir() -> Path:
    """The workspace folder: ``$CVX_WORKSPACE`` or ``./workspace`` next to ``app.py``.

    The first call for a folder in this process removes orphan temporary files there."""
    env = os.environ.get("CVX_WORKSPACE", "").strip()
    path = Path(env).expanduser() if env else ROOT / "workspace"
    path.mkdir(parents=True, exist_ok=True)
    path = path.resolve()
    if path not in _cleaned:
        _cleaned.add(path)
        clean_orphan_temp_files(path)
    return path


def clean_orphan_temp_files(root: Path, *, min_age_s: float = ORPHAN_MIN_AGE_S) -> list[Path]:
    """Remove ``*.tmp`` files (left by an interrupted atomic write or upload) older than
    ``min_age_s`` from ``root/datasets``, ``root/runs``, each run folder and ``root/analysis``
    (streamed analyses). Returns them."""
    removed: list[Path] = []
    now = time.time()
    folders = [root / "datasets", root / "runs", root / "analysis"]
    runs = root / "runs"
    if runs.is_dir():
        folders += [d for d in runs.iterdir() if d.is_dir()]
    for folder in folders:
        if not folder.is_dir():
            continue
        for tmp in folder.glob("*.tmp"):
            try:
                if tmp.is_file() and now - tmp.stat().st_mtime >= min_age_s:
                    tmp.unlink()
                    removed.append(tmp)
            except OSError:  # gone already, or not ours to remove
                continue
    if removed:
        _log.info("removed %d orphan temporary file(s) under %s", len(removed), root)
    return removed


def max_decoded_bytes() -> int:
    """The decoded-size budget of one upload, from ``$CVX_MAX_DECODED_MB`` (default 1024)."""
    raw = ascii_strip(os.environ.get(MAX_DECODED_ENV, ""))
    if not raw:
        return int(DEFAULT_MAX_DECODED_MB * 2**20)
    try:
        if not raw.isascii():  # float() would read Unicode digits ('١٠٠') and spaces
            raise ValueError
        mb = float(raw)
        if not (0 < mb < float("inf")):
            raise ValueError
    except ValueError:
        raise ValueError(f"{MAX_DECODED_ENV}={raw!r} is not a positive number of megabytes") from None
    return int(mb * 2**20)


def datasets_dir() -> Path:
    path = workspace_dir() / "datasets"
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir() -> Path:
    path = workspace_dir() / "runs"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class DatasetEntry:
    """A dataset the app can open: the shipped sample or a Parquet file in the workspace."""

    name: str
    path: Path
    is_sample: bool

    @property
    def label(self) -> str:
        return f"{self.name} (shipped sample)" if self.is_sample else self.name


def list_datasets() -> list[DatasetEntry]:
    """The shipped samples (those present: ``sample``, then ``real_text``) first, then
    workspace datasets by name (a workspace file named like a shipped sample is hidden)."""
    out: list[DatasetEntry] = [DatasetEntry(n, p, True) for n, p in SHIPPED.items() if p.is_file()]
    for p in sorted(datasets_dir().glob("*.parquet")):
        if p.stem not in SHIPPED:
            out.append(DatasetEntry(p.stem, p, False))
    return out


def dataset_entry(name: str | None) -> DatasetEntry | None:
    for entry in list_datasets():
        if entry.name == name:
            return entry
    return None


def safe_dataset_name(filename: str) -> str:
    """A file name -> a workspace dataset name: letters, digits, ``-`` and ``_`` only."""
    stem = Path(str(filename)).name
    for ext in (".parquet", ".csv", ".jsonl", ".ndjson", ".npz", ".pq"):
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_-")[:60]
    return slug or "dataset"


def _candidates(base: str):
    yield base
    k = 2
    while True:
        yield f"{base}-{k}"
        k += 1


def _publish(tmp: Path, base: str) -> str:
    """Give the written file ``tmp`` the first free name ``base``, ``base-2``, … exclusively:
    ``os.link`` fails if the name exists, so two uploads can never take the same name."""
    folder = tmp.parent
    for name in _candidates(base):
        if name in SHIPPED:
            continue
        try:
            os.link(tmp, folder / f"{name}.parquet")
            return name
        except FileExistsError:
            continue


def import_upload(data: bytes, filename: str) -> tuple[str, TrajectorySet]:
    """Validate an uploaded file and save it in the workspace as Parquet.

    Returns ``(dataset name, TrajectorySet)``. Raises :class:`TrajectoryError` (the loader's
    message, naming file, row and column) without touching the workspace on bad input; a
    file that would decode to more than ``$CVX_MAX_DECODED_MB`` is refused before decoding.
    The file is written whole under a temporary name, then claimed under the first free
    dataset name in one exclusive step.
    """
    from cvx_core.data.io import DecodedSizeError, load_trajectories
    from cvx_core.data.trajectory import TrajectoryError

    fname = Path(str(filename)).name
    try:
        ts = load_trajectories(data, name=fname, max_decoded_bytes=max_decoded_bytes())
    except DecodedSizeError as exc:
        raise TrajectoryError(
            f"{exc} The app's limit is {exc.budget / 2**20:,.0f} MB of decoded data per upload; the server's "
            f"operator can change it with the environment variable {MAX_DECODED_ENV}.",
            file=exc.file,
        ) from None
    return save_new_dataset(ts, filename), ts


def save_new_dataset(ts: TrajectorySet, filename: str) -> str:
    """Save ``ts`` as a new workspace dataset named after ``filename`` and return the name.

    Written whole under a temporary name, then claimed under the first free name in one
    exclusive step; concurrent saves of the same name get ``name``, ``name-2``, …"""
    from cvx_core.data.io import save_trajectories

    folder = datasets_dir()
    tmp = folder / f".upload-{uuid.uuid4().hex}.parquet.tmp"
    try:
        save_trajectories(ts, tmp)
        return _publish(tmp, safe_dataset_name(filename))
    finally:
        tmp.unlink(missing_ok=True)


def _unused_name(base: str) -> str:
    """The first name ``base``, ``base-2``, … no dataset has now (advisory only: use
    :func:`save_new_dataset` to claim a name without a race)."""
    taken = {e.name for e in list_datasets()}
    return next(n for n in _candidates(base) if n not in taken and n not in SHIPPED)


def delete_dataset(name: str) -> None:
    """Remove a workspace dataset (the shipped samples cannot be deleted)."""
    entry = dataset_entry(name)
    if entry is None:
        raise KeyError(f"no dataset named {name!r}")
    if entry.is_sample:
        raise ValueError(f"the shipped sample {name!r} cannot be deleted")
    entry.path.unlink(missing_ok=True)


def load_truth(name: str) -> dict[str, Any] | None:
    """Planted truth (``sample_data/truth.json``) for the shipped sample, else ``None``."""
    import json

    if name != SAMPLE_NAME or not TRUTH_PATH.is_file():
        return None
    try:
        return json.loads(TRUTH_PATH.read_text())
    except (OSError, ValueError):
        return None


APP_RUN_FILE = "app.json"  # written by the app into each run folder: which dataset it used


def list_runs() -> list[Any]:
    from cvx_core.learn.runs import list_runs as _list

    return _list(runs_dir())


def run_dataset(run_dir: Path) -> str | None:
    """The app dataset name a run was trained on (``None`` if unknown or gone)."""
    from cvx_core.learn.runs import RunError, read_json

    try:
        doc = read_json(Path(run_dir) / APP_RUN_FILE)
    except (RunError, OSError):
        return None
    name = doc.get("dataset") if isinstance(doc, dict) else None
    return name if dataset_entry(name) is not None else None


def run_documents(run_dir: Path) -> dict[str, Any]:
    """metrics / history / checkpoint / config of a run folder, each ``None`` when absent."""
    from cvx_core.learn import runs

    out: dict[str, Any] = {}
    for key, fname in (
        ("metrics", runs.METRICS_FILE),
        ("history", runs.HISTORY_FILE),
        ("checkpoint", runs.CHECKPOINT_FILE),
        ("config", runs.CONFIG_FILE),
        ("data", runs.DATA_FILE),
    ):
        path = Path(run_dir) / fname
        try:
            out[key] = runs.read_json(path) if path.is_file() else None
        except runs.RunError:
            out[key] = None
    return out


def weights_stamp(run_dir: Path) -> int:
    """Modification time (ns) of a run's weights, 0 if absent: part of every cache key, so a
    newer checkpoint in the same folder is never served from the cache."""
    from cvx_core.learn.runs import WEIGHTS_FILE

    weights = Path(run_dir) / WEIGHTS_FILE
    return weights.stat().st_mtime_ns if weights.is_file() else 0
