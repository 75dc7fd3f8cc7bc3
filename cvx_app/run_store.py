"""Run management for the app: run names (dataset + head + time, or the user's own), the
app's record of a run (``app.json``: dataset, title, notes), rename, notes, delete, and one
status per run (running, finished, stopped, interrupted, failed, damaged).

The run folder's name is its identity (used in URLs, caches and the CLI) and never changes;
a rename changes only the ``title`` kept in ``app.json``. Every write is atomic.
"""

from __future__ import annotations

import math
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cvx_app.workspace import APP_RUN_FILE, runs_dir

MAX_TITLE = 80
SELECTED_KEY = "cvx_run"  # session key: the run last shown on Train or Compare (not a widget key)
MAX_NOTES = 4000

# the run statuses the app shows
RUNNING, FINISHED, STOPPED, INTERRUPTED, FAILED, DAMAGED = (
    "running", "finished", "stopped", "interrupted", "failed", "damaged",
)


def head_name(config: Any) -> str:
    """``"linear"``, ``"mlp"`` or ``"auto"``: the head a TrainConfig asks for."""
    head = getattr(config, "head", None)
    if isinstance(head, str) and head:
        return head
    return "linear" if int(getattr(config, "hidden", 1) or 0) == 0 else "mlp"


def _slug(text: str, limit: int = 48) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", str(text)).strip("_-")[:limit]


def default_run_name(dataset: str, config: Any, *, now: datetime | None = None) -> str:
    """``<dataset>-<head>-<YYYYmmdd-HHMMSS>`` (UTC), reduced to letters, digits, ``-`` and ``_``."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")
    return f"{_slug(dataset, 40) or 'data'}-{head_name(config)}-{stamp}"


def folder_name(user_name: str | None, dataset: str, config: Any) -> str:
    """The folder name of a new run: the user's name (reduced to safe characters) when one
    is given, else :func:`default_run_name`."""
    slug = _slug(user_name or "")
    return slug or default_run_name(dataset, config)


def clean_title(title: object) -> str:
    """A run title as typed: one line, at most ``MAX_TITLE`` characters, spaces trimmed.
    Raises ValueError when nothing is left."""
    text = " ".join(str(title).split())[:MAX_TITLE]
    if not text:
        raise ValueError("a run name cannot be empty")
    return text


def read_record(run_dir: Path) -> dict[str, Any]:
    """The app's record of a run (``app.json``), ``{}`` when it is absent or unreadable."""
    from cvx_core.learn.runs import RunError, read_json

    try:
        doc = read_json(Path(run_dir) / APP_RUN_FILE)
    except (RunError, OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _write_record(run_dir: Path, record: dict[str, Any]) -> None:
    from cvx_core.data.atomic import atomic_write_json

    atomic_write_json(Path(run_dir) / APP_RUN_FILE, record)


def write_new_record(run_dir: Path, *, dataset: str, digest: str, config: Any, title: str | None = None,
                     left_out: int = 0) -> None:
    """The record of a run the app starts: dataset, digest, head, title, empty notes, and how
    many unlabelled users of the dataset training left out."""
    _write_record(run_dir, {
        "dataset": dataset,
        "digest": digest,
        "unlabelled_left_out": int(left_out),
        "head": head_name(config),
        "title": clean_title(title) if title and title.strip() else Path(run_dir).name,
        "notes": "",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })


def run_path(name: str) -> Path:
    """The folder of the run called ``name`` (a folder directly under the runs folder).
    Raises KeyError for a name that is not one (``..``, slashes, missing folder)."""
    base = runs_dir()
    path = (base / str(name)).resolve()
    if path.parent != base.resolve() or not path.is_dir():
        raise KeyError(f"no run named {name!r}")
    return path


def title_of(run_dir: Path) -> str:
    """What the app calls a run: its title, or its folder name."""
    title = read_record(run_dir).get("title")
    return title if isinstance(title, str) and title.strip() else Path(run_dir).name


def notes_of(run_dir: Path) -> str:
    notes = read_record(run_dir).get("notes")
    return notes if isinstance(notes, str) else ""


def rename_run(name: str, title: object) -> str:
    """Give run ``name`` a new title (its folder keeps its name). Returns the title."""
    path = run_path(name)
    record = read_record(path)
    record["title"] = clean_title(title)
    _write_record(path, record)
    return record["title"]


def set_notes(name: str, notes: object) -> None:
    """Keep ``notes`` (plain text, at most ``MAX_NOTES`` characters) with run ``name``."""
    path = run_path(name)
    record = read_record(path)
    record["notes"] = str(notes)[:MAX_NOTES]
    _write_record(path, record)


def delete_run(name: str, *, running: set[str] | frozenset[str] = frozenset()) -> None:
    """Remove run ``name``'s folder. Refuses (ValueError) while the run is training."""
    if name in running:
        raise ValueError(f"run {name!r} is training; stop it before deleting it")
    shutil.rmtree(run_path(name))


# ---- reading a run's documents and deciding its status -----------------------------------------
def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def metrics_problem(metrics: Any) -> str | None:
    """Why a parsed ``metrics.json`` cannot be shown (``None`` when it can)."""
    if not isinstance(metrics, dict):
        return f"metrics.json holds {type(metrics).__name__}, not a metrics document"
    for key in ("test_auc", "baseline_auc", "test_f1"):
        v = metrics.get(key)
        if v is None or not isinstance(v, (int, float)) or isinstance(v, bool):
            return f"metrics.json has no number under {key!r}"
    if metrics.get("confusion") is not None and confusion_of(metrics) is None:
        return "metrics.json has a confusion matrix that is not a table"
    return None


def confusion_of(metrics: dict[str, Any]) -> tuple[list[list[int]], list[str]] | None:
    """(matrix rows = true class, class names) from either form of ``metrics["confusion"]``:
    a list of rows (older runs; names from ``classes``) or ``{"classes", "matrix"}``."""
    conf = metrics.get("confusion")
    names = metrics.get("classes")
    if isinstance(conf, dict):
        names = conf.get("classes", names)
        conf = conf.get("matrix")
    if not (isinstance(conf, list) and conf and all(isinstance(r, list) and len(r) == len(conf) for r in conf)):
        return None
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for r in conf for x in r):
        return None
    if not (isinstance(names, list) and len(names) == len(conf)):
        names = list(range(len(conf)))
    return conf, [str(n) for n in names]


@dataclass(frozen=True)
class RunView:
    """One run as the app shows it.

    Attributes:
        name: folder name (the run's identity).
        title: what the app calls it (``app.json`` title, else the folder name).
        path: the run folder.
        status: running | finished | stopped | interrupted | failed | damaged.
        problem: what is wrong with a damaged run (``None`` otherwise).
        dataset: the app dataset it was trained on (``None`` if unknown or gone).
        metrics: the parsed metrics (``None`` unless finished or stopped).
        history: per-epoch curves (``[]`` if absent or unreadable).
        has_weights: a checkpoint exists.
        modified: last change (UTC).
        notes: the user's notes.
    """

    name: str
    title: str
    path: Path
    status: str
    problem: str | None
    dataset: str | None
    metrics: dict[str, Any] | None
    history: list[dict[str, Any]]
    has_weights: bool
    modified: datetime
    notes: str
    device: str | None = None
    epochs: int | None = None
    left_out: int = 0  # unlabelled users of the dataset that training left out


def _read(path: Path) -> tuple[Any, str | None]:
    """(parsed JSON, problem): ``(None, None)`` when the file is absent."""
    from cvx_core.learn.runs import RunError, read_json

    if not path.is_file():
        return None, None
    try:
        return read_json(path), None
    except (RunError, OSError, UnicodeDecodeError) as exc:
        return None, f"{path.name} cannot be read ({exc})"


def view_run(info: Any, *, running: set[str], failed: dict[str, str] | None = None) -> RunView:
    """A :class:`RunView` of one entry of ``cvx_core.learn.runs.list_runs`` (or any object
    with ``name`` and ``path``). Never raises on a damaged folder: it says what is wrong."""
    from cvx_core.learn import runs as lr
    from cvx_app.workspace import run_dataset

    path = Path(info.path)
    problem = getattr(info, "problem", None) or getattr(info, "error", None)
    if getattr(info, "damaged", False) and not problem:
        problem = "the run folder is damaged"
    metrics, p1 = _read(path / lr.METRICS_FILE)
    history, p2 = _read(path / lr.HISTORY_FILE)
    config, p3 = _read(path / lr.CONFIG_FILE)
    problem = problem or p1 or p3
    if problem is None and (path / lr.METRICS_FILE).is_file():
        problem = metrics_problem(metrics)
    if problem is None and config is not None and not (isinstance(config, dict) and "train_config" in config):
        problem = "config.json is not a CVX run config"
    if not isinstance(history, list) or p2 or not all(isinstance(h, dict) for h in history):
        history = []
    if info.name in running:
        status = RUNNING
    elif problem is not None:
        status = DAMAGED
    elif metrics is not None:
        status = STOPPED if metrics.get("interrupted") else FINISHED
    elif failed and info.name in failed:
        status = FAILED
    else:
        status = INTERRUPTED
    modified = getattr(info, "modified", None) or datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)
    ok_metrics = metrics if status in (FINISHED, STOPPED) else None
    epochs = ok_metrics.get("epochs") if ok_metrics else getattr(info, "epochs", None)
    device = ok_metrics.get("device") if ok_metrics else getattr(info, "device", None)
    return RunView(
        name=info.name,
        title=title_of(path),
        path=path,
        status=status,
        problem=problem if status == DAMAGED else None,
        dataset=run_dataset(path),
        metrics=ok_metrics,
        history=history,
        has_weights=(path / lr.WEIGHTS_FILE).is_file(),
        modified=modified,
        notes=notes_of(path),
        device=device if isinstance(device, str) else None,
        epochs=int(epochs) if _finite(epochs) else None,
        left_out=_left_out(path),
    )


def _left_out(run_dir: Path) -> int:
    value = read_record(run_dir).get("unlabelled_left_out", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def other_dataset_run(views: list[RunView], dataset: str | None, run: str | None) -> bool:
    """True when ``run`` is a listed run trained on another dataset than ``dataset``."""
    return any(v.name == run and v.dataset != dataset for v in views)


def runs_of_dataset(views: list[RunView], dataset: str | None, *, show_all: bool = False) -> list[RunView]:
    """The runs to list for ``dataset``: only its own runs (newest first), or with
    ``show_all`` every run, the dataset's own first (each group keeps its order)."""
    own = [v for v in views if v.dataset == dataset]
    if not show_all:
        return own
    return own + [v for v in views if v.dataset != dataset]


@dataclass(frozen=True)
class _Pending:
    name: str
    path: Path
    modified: datetime


def list_run_views(*, running: set[str], failed: dict[str, str] | None = None) -> list[RunView]:
    """Every run of the workspace, newest first, as :class:`RunView`. Runs that are training
    but have not written their config yet are listed too (so a new run is never missing)."""
    from cvx_app.workspace import list_runs

    try:
        infos = list(list_runs())
    except Exception:  # noqa: BLE001 - a library that still raises on a damaged folder
        infos = [_Pending(p.name, p, datetime.fromtimestamp(p.stat().st_mtime, tz=timezone.utc))
                 for p in runs_dir().iterdir() if p.is_dir() and (p / "config.json").is_file()]
    listed = {i.name for i in infos}
    for name in sorted(running - listed):
        p = runs_dir() / name
        if p.is_dir():
            infos.append(_Pending(name, p, datetime.now(timezone.utc)))
    views = [view_run(i, running=running, failed=failed) for i in infos]
    views.sort(key=lambda v: (v.status == RUNNING, v.modified, v.name), reverse=True)
    return views
