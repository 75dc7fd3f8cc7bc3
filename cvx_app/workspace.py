"""The workspace on disk: the datasets folder (uploads saved as Parquet), the shipped sample and its planted truth, and the run folders with the app's record of which dataset each run used.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvx_core.data.trajectory import TrajectorySet

ROOT = Path(__file__).resolve().parents[1]


SAMPLE_NAME = "sample"


SAMPLE_PATH = ROOT / "sample_data" / "sample.parquet"


TRUTH_PATH = ROOT / "sample_data" / "truth.json"


UPLOAD_TYPES = ["csv", "parquet", "jsonl", "npz"]


def workspace_dir() -> Path:
    """The workspace folder: ``$CVX_WORKSPACE`` or ``./workspace`` next to ``app.py``."""
    env = os.environ.get("CVX_WORKSPACE", "").strip()
    path = Path(env).expanduser() if env else ROOT / "workspace"
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


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
    """The shipped sample (when present) first, then workspace datasets by name."""
    out: list[DatasetEntry] = []
    if SAMPLE_PATH.is_file():
        out.append(DatasetEntry(SAMPLE_NAME, SAMPLE_PATH, True))
    for p in sorted(datasets_dir().glob("*.parquet")):
        if p.stem != SAMPLE_NAME:
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


def _unused_name(base: str) -> str:
    taken = {e.name for e in list_datasets()}
    if base not in taken:
        return base
    k = 2
    while f"{base}-{k}" in taken:
        k += 1
    return f"{base}-{k}"


def import_upload(data: bytes, filename: str) -> tuple[str, TrajectorySet]:
    """Validate an uploaded file and save it in the workspace as Parquet (atomically).

    Returns ``(dataset name, TrajectorySet)``. Raises :class:`TrajectoryError` (the loader's
    message, naming file, row and column) without touching the workspace on bad input.
    """
    from cvx_core.data.io import load_trajectories, save_trajectories

    ts = load_trajectories(data, name=Path(str(filename)).name)
    name = _unused_name(safe_dataset_name(filename))
    save_trajectories(ts, datasets_dir() / f"{name}.parquet")
    return name, ts


def delete_dataset(name: str) -> None:
    """Remove a workspace dataset (the shipped sample cannot be deleted)."""
    entry = dataset_entry(name)
    if entry is None:
        raise KeyError(f"no dataset named {name!r}")
    if entry.is_sample:
        raise ValueError("the shipped sample cannot be deleted")
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
