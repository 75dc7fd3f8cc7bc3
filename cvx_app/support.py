"""Shared plumbing of the CVX Streamlit app: page bootstrap, workspace datasets and runs,
and the cached wrappers around ``cvx_core`` that the pages call.

Every page (``app.py`` and ``pages/*.py``) starts with :func:`bootstrap`, which is idempotent:
it sets the page config, initialises session state and draws the same sidebar navigation, so
a page opened by its URL as the very first request to a fresh server looks exactly like one
reached by clicking. Analysis lives in ``cvx_core``; this module only caches and adapts it.
Expensive results are keyed by ``TrajectorySet.digest()`` strings (never by hashing arrays:
Streamlit samples large arrays when hashing); the heavy objects travel as ``_``-prefixed
arguments, which the cache does not hash.
"""

from __future__ import annotations

import html
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from cvx_core.data.trajectory import TrajectoryError, TrajectorySet

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_NAME = "sample"
SAMPLE_PATH = ROOT / "sample_data" / "sample.parquet"
TRUTH_PATH = ROOT / "sample_data" / "truth.json"
UPLOAD_TYPES = ["csv", "parquet", "jsonl", "npz"]

# (script path relative to app.py, label, icon): the navigation drawn on every page
PAGES: list[tuple[str, str, str]] = [
    ("app.py", "Home", ":material/home:"),
    ("pages/1_data.py", "Data", ":material/dataset:"),
    ("pages/2_explore.py", "Explore", ":material/scatter_plot:"),
    ("pages/3_train.py", "Train", ":material/model_training:"),
    ("pages/4_compare.py", "Compare", ":material/compare_arrows:"),
]

DATASET_KEY = "cvx_dataset"  # the dataset chosen in this session (a name; see list_datasets)
_SIDEBAR_SELECT_KEY = "_cvx_sidebar_dataset"


# ------------------------------------------------------------------------------------------
# text safety
# ------------------------------------------------------------------------------------------
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&])")


def escape_markdown(text: object) -> str:
    """``text`` made inert for ``st.markdown``/``st.error``: every markdown or HTML special
    character is backslash-escaped, so user data (ids, file names) is shown literally."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))


def escape_hover(text: object) -> str:
    """``text`` made inert for Plotly hover labels (which understand a few HTML tags)."""
    return html.escape(str(text), quote=True)


# ------------------------------------------------------------------------------------------
# workspace
# ------------------------------------------------------------------------------------------
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


@st.cache_resource(max_entries=8, show_spinner="Loading dataset…")
def _load_cached(path: str, mtime_ns: int, size: int) -> TrajectorySet:
    from cvx_core.data.io import load_trajectories

    return load_trajectories(path, name=Path(path).name)


def load_dataset(name: str) -> TrajectorySet:
    """The TrajectorySet of a listed dataset, cached per file version (immutable: shared)."""
    entry = dataset_entry(name)
    if entry is None:
        raise KeyError(f"no dataset named {name!r}")
    stat = entry.path.stat()
    return _load_cached(str(entry.path), stat.st_mtime_ns, stat.st_size)


def load_truth(name: str) -> dict[str, Any] | None:
    """Planted truth (``sample_data/truth.json``) for the shipped sample, else ``None``."""
    import json

    if name != SAMPLE_NAME or not TRUTH_PATH.is_file():
        return None
    try:
        return json.loads(TRUTH_PATH.read_text())
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------------------
# session and page bootstrap
# ------------------------------------------------------------------------------------------
def default_dataset() -> str | None:
    """``$CVX_DATASET`` if it names a dataset, else the sample, else the first listed one."""
    names = [e.name for e in list_datasets()]
    wanted = os.environ.get("CVX_DATASET", "").strip()
    if wanted in names:
        return wanted
    if SAMPLE_NAME in names:
        return SAMPLE_NAME
    return names[0] if names else None


def current_dataset() -> str | None:
    """The dataset chosen in this session, repaired if it vanished (deleted elsewhere)."""
    names = [e.name for e in list_datasets()]
    name = st.session_state.get(DATASET_KEY)
    if name not in names:
        name = default_dataset()
        st.session_state[DATASET_KEY] = name
    return name


def set_current_dataset(name: str | None) -> None:
    st.session_state[DATASET_KEY] = name


def _on_sidebar_dataset() -> None:
    st.session_state[DATASET_KEY] = st.session_state.get(_SIDEBAR_SELECT_KEY)


def bootstrap(title: str) -> str | None:
    """Idempotent start of every page: page config, session defaults, navigation sidebar
    and the dataset chooser. Returns the current dataset name (``None`` when there is none).
    """
    st.set_page_config(page_title=f"CVX · {title}", page_icon="〰️", layout="wide")
    name = current_dataset()
    with st.sidebar:
        st.markdown("## CVX")
        st.caption("Temporal ML on embedding trajectories")
        for path, label, icon in PAGES:
            st.page_link(path, label=label, icon=icon)
        st.divider()
        entries = list_datasets()
        if entries:
            names = [e.name for e in entries]
            labels = {e.name: e.label for e in entries}
            # the widget mirrors the session's choice (also after switching pages)
            st.session_state[_SIDEBAR_SELECT_KEY] = name
            st.selectbox(
                "Dataset",
                names,
                key=_SIDEBAR_SELECT_KEY,
                format_func=lambda n: labels.get(n, n),
                on_change=_on_sidebar_dataset,
                help="The dataset every page works on. Upload more on the Data page.",
            )
        else:
            st.info("No dataset yet: upload one on the Data page.")
        st.caption("Workspace: " + escape_markdown(workspace_dir()))
    return name


def dataset_picker(key: str, *, label: str = "Dataset") -> str | None:
    """A dataset chooser in the page body that mirrors (and sets) the session's dataset,
    like the sidebar one. Returns the chosen name (``None`` when there is no dataset)."""
    entries = list_datasets()
    if not entries:
        return None
    names = [e.name for e in entries]
    labels = {e.name: e.label for e in entries}
    current = current_dataset()
    st.session_state[key] = current if current in names else names[0]
    st.selectbox(
        label,
        names,
        key=key,
        format_func=lambda n: labels.get(n, n),
        on_change=lambda: set_current_dataset(st.session_state[key]),
    )
    chosen = st.session_state[key]
    set_current_dataset(chosen)
    return chosen


def require_dataset(name: str | None) -> TrajectorySet:
    """The current dataset, or stop the page with a pointer to the Data page."""
    if name is None:
        st.warning("No dataset is available yet. Upload one on the Data page.")
        st.page_link("pages/1_data.py", label="Go to Data", icon=":material/dataset:")
        st.stop()
    try:
        return load_dataset(name)
    except (TrajectoryError, OSError, KeyError) as exc:
        st.error(f"Could not open dataset {escape_markdown(name)}: {escape_markdown(exc)}")
        st.stop()
    raise AssertionError("unreachable")  # pragma: no cover


# ------------------------------------------------------------------------------------------
# dataset display helpers (formatting only)
# ------------------------------------------------------------------------------------------
def preview_frame(ts: TrajectorySet, *, n_rows: int = 50, n_dims: int = 6) -> pd.DataFrame:
    """The first ``n_rows`` posts in long format with the first ``n_dims`` embedding values."""
    rows: list[dict[str, Any]] = []
    for tr in ts:
        for i in range(tr.n_posts):
            row: dict[str, Any] = {
                "user_id": tr.user_id,
                "timestamp": pd.Timestamp(tr.datetimes[i]),
                "label": tr.label,
            }
            if tr.texts is not None:
                row["text"] = tr.texts[i]
            for d in range(min(n_dims, tr.dim)):
                row[f"e{d}"] = float(tr.embeddings[i, d])
            rows.append(row)
            if len(rows) >= n_rows:
                return pd.DataFrame(rows)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------
# a process-wide result store (for steps that report progress while they run)
# ------------------------------------------------------------------------------------------
class _ResultStore:
    """Bounded LRU of finished results, shared by all sessions (values are never mutated)."""

    def __init__(self, max_entries: int = 16) -> None:
        self._data: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_entries

    def get(self, key: tuple) -> Any:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        return None

    def put(self, key: tuple, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._max:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


@st.cache_resource
def result_store() -> _ResultStore:
    return _ResultStore()


def cached_with_progress(
    key: tuple, compute: Callable[[Callable[[int, int], None]], Any], *, label: str
) -> Any:
    """Return the stored result for ``key`` or compute it under a progress bar.

    ``compute(progress)`` receives a ``progress(done, total)`` callback. (``st.cache_data``
    cannot drive a progress bar created outside the cached function, hence this store.)
    """
    store = result_store()
    hit = store.get(key)
    if hit is not None:
        return hit
    bar = st.progress(0.0, text=label)

    def progress(done: int, total: int) -> None:
        frac = 0.0 if total <= 0 else min(max(done / total, 0.0), 1.0)
        bar.progress(frac, text=f"{label} {done}/{total}")

    value = compute(progress)
    bar.empty()
    store.put(key, value)
    return value


# ------------------------------------------------------------------------------------------
# Explore: projection, change points over the set, one user's timeline
# ------------------------------------------------------------------------------------------
def features_config():
    from cvx_core.features.config import TemporalFeaturesConfig

    return TemporalFeaturesConfig()


def set_analysis(ts: TrajectorySet) -> Any:
    """``cvx_core.analysis.batch.analyze_set`` of the whole dataset (PELT change points and drift
    attribution of every user, cohort attribution), computed once per dataset under a
    progress bar and kept in the process-wide store."""

    def compute(progress: Callable[[int, int], None]) -> Any:
        from cvx_core.analysis.batch import analyze_set

        return analyze_set(ts, progress=progress)

    return cached_with_progress(
        ("analyze_set", ts.digest()), compute, label="Finding change points (PELT) for every user…"
    )


def users_frame(analysis: Any) -> pd.DataFrame:
    """One row per user of a set analysis: posts, label, change points, drift and its
    top dimensions (for the Explore page's user table)."""
    rows = []
    for u in analysis:
        rows.append(
            {
                "user_id": u.user_id,
                "label": u.label,
                "posts": u.n_posts,
                "change points": u.changepoints.n_changes,
                "drift |v_T - v_1|": round(u.attribution.drift_norm, 4),
                "dims for 80% of drift": u.attribution.pareto_size,
                "top drift dims": ", ".join(str(int(d)) for d in u.attribution.order[:5]),
            }
        )
    return pd.DataFrame(rows)


@st.cache_data(max_entries=8, show_spinner=False)
def _projection_frame(digest: str, method: str, _ts: TrajectorySet) -> pd.DataFrame:
    from cvx_core.analysis.projection import project_posts

    proj = project_posts(_ts, method=method)
    coords = np.asarray(proj.coords)
    uids = np.asarray(proj.row_user_ids, dtype=object)
    posts = np.asarray(proj.post_index, dtype=np.int64)
    # rows follow the projection's own (user, post) indices, not an assumed order
    all_when = np.concatenate([tr.datetimes for tr in _ts]).astype("datetime64[ns]")
    starts = np.concatenate([[0], np.cumsum(_ts.lengths)[:-1]]).astype(np.int64)
    user_index = np.asarray(proj.user_index, dtype=np.int64)
    when = all_when[starts[user_index] + posts]
    labels = np.array(["none" if tr.label is None else str(tr.label) for tr in _ts], dtype=object)
    start = when.min()
    frame = pd.DataFrame(
        {
            "x": coords[:, 0],
            "y": coords[:, 1],
            "user_id": uids,
            "user_id_safe": [escape_hover(u) for u in uids],
            "post": posts,
            "label": labels[user_index],
            "when": pd.to_datetime(when).strftime("%Y-%m-%d %H:%M"),
            "days_since_start": (when - start) / np.timedelta64(1, "D"),
        }
    )
    return frame


def projection_frame(ts: TrajectorySet, method: str) -> pd.DataFrame:
    """One row per post: ``x, y`` (2-D projection), ``user_id``, ``post`` (index in the
    user's trajectory), ``label``, ``when`` and ``days_since_start``; cached per dataset."""
    return _projection_frame(ts.digest(), method, ts)


def users_in_selection(event: Any, frame: pd.DataFrame) -> list[str]:
    """The distinct user ids of the selected points of a projection chart event, in order
    of first appearance (empty when nothing is selected).

    Points carry ``customdata = [escaped user id, post, when]``; escaped ids are mapped back
    to the real ones through ``frame``. Works with Streamlit's selection state object and
    with the plain dict AppTest hands back.
    """
    if event is None:
        return []
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        return []
    real = dict(zip(frame["user_id_safe"], frame["user_id"]))
    out: list[str] = []
    for point in points or []:
        custom = point.get("customdata") if isinstance(point, dict) else None
        if not custom:
            continue  # a path or change-point marker, not a post of the cloud
        uid = real.get(str(custom[0]))
        if uid is not None and uid not in out:
            out.append(str(uid))
    return out


def user_from_selection(event: Any, frame: pd.DataFrame) -> str | None:
    """The user of the selection when it holds exactly one user's posts (a click), else ``None``."""
    users = users_in_selection(event, frame)
    return users[0] if len(users) == 1 else None


@dataclass(frozen=True)
class Timeline:
    """What the Explore page draws for one user.

    Attributes:
        posts: per post ``when`` (datetime), ``drift`` (``|v_i - v_1|``) and
            ``change_probability`` (BOCPD).
        steps: per step (at the later post) ``when``, ``velocity_norm``, ``cosine_distance``.
        change_points: ``(index, datetime)`` of the PELT change points.
        silences: ``(start, end)`` datetimes of gaps longer than ``silence_gap``.
        narratives: one plain-text paragraph per change point.
    """

    user_id: str
    label: int | None
    n_posts: int
    posts: pd.DataFrame
    steps: pd.DataFrame
    change_points: list[tuple[int, pd.Timestamp]]
    silences: list[tuple[pd.Timestamp, pd.Timestamp]]
    narratives: list[str]


@st.cache_data(max_entries=64, show_spinner="Analysing this user…")
def _user_timeline(digest: str, user_id: str, _ts: TrajectorySet) -> Timeline:
    from cvx_core.analysis.batch import user_timeline as compute_timeline

    tl = compute_timeline(_ts[user_id], features_config=features_config())
    when = pd.to_datetime(tl.datetimes)
    return Timeline(
        user_id=tl.user_id,
        label=tl.label,
        n_posts=tl.n_posts,
        posts=pd.DataFrame({"when": when, "drift": tl.drift, "change_probability": tl.change_probability}),
        steps=pd.DataFrame(
            {"when": when[1:], "velocity_norm": tl.velocity_norm, "cosine_distance": tl.cosine_distance}
        ),
        change_points=[(int(i), when[i]) for i in tl.changepoints.indices],
        silences=[(when[i], when[j]) for i, j in tl.silences],
        narratives=[n.text for n in tl.narratives],
    )


def user_timeline(ts: TrajectorySet, user_id: str) -> Timeline:
    return _user_timeline(ts.digest(), user_id, ts)


# ------------------------------------------------------------------------------------------
# Train: a background training job per run, progress read by the page
# ------------------------------------------------------------------------------------------
APP_RUN_FILE = "app.json"  # written by the app into each run folder: which dataset it used
MAX_FINISHED_JOBS = 16


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def cuda_name() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


class TrainJob:
    """One training run in a worker thread. The worker touches no Streamlit API; the page
    reads the fields below (under ``lock``) and sets ``stop`` to end training early."""

    def __init__(self, dataset: str, ts: TrajectorySet, config: Any, run_dir: Path) -> None:
        self.dataset = dataset
        self.run_dir = run_dir
        self.run_name = run_dir.name
        self.config = config
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.steps: list[tuple[int, float]] = []  # (step, loss)
        self.epochs: list[dict[str, float]] = []  # epoch, train_loss, val_loss, val_auc
        self.step = 0
        self.epoch = 0
        self.steps_per_epoch = 0
        self.status = "running"  # running | done | error
        self.error: str | None = None
        self.interrupted = False
        self.started = time.time()
        self._ts = ts
        self.thread = threading.Thread(target=self._work, name=f"cvx-train-{self.run_name}", daemon=True)

    # progress as a fraction of the planned steps
    @property
    def fraction(self) -> float:
        total = max(1, self.steps_per_epoch * int(self.config.epochs))
        return min(1.0, self.step / total)

    def _on_step(self, p: Any) -> None:
        with self.lock:
            self.step, self.epoch, self.steps_per_epoch = p.step, p.epoch, p.steps_per_epoch
            self.steps.append((p.step, float(p.loss)))

    def _on_epoch(self, p: Any) -> None:
        with self.lock:
            self.epoch = p.epoch
            self.epochs.append(
                {"epoch": p.epoch, "train_loss": p.train_loss, "val_loss": p.val_loss, "val_auc": p.val_auc}
            )

    def _on_start(self, p: Any) -> None:
        with self.lock:
            self.steps_per_epoch = p.steps_per_epoch

    def _work(self) -> None:
        from cvx_core.learn.training import train

        try:
            result = train(
                self._ts,
                self.config,
                run_dir=self.run_dir,
                callbacks={
                    "on_train_start": self._on_start,
                    "on_step_end": self._on_step,
                    "on_epoch_end": self._on_epoch,
                },
                should_stop=self.stop,
            )
        except Exception as exc:  # shown on the page; the run folder keeps what was saved
            with self.lock:
                self.status, self.error = "error", f"{type(exc).__name__}: {exc}"
        else:
            # the page reads results from the run folder: keep no model (it may sit on the GPU)
            interrupted = bool(result.interrupted)
            del result
            with self.lock:
                self.status, self.interrupted = "done", interrupted
        finally:
            self._ts = None  # type: ignore[assignment]
            _release_cuda_memory()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "status": self.status,
                "error": self.error,
                "step": self.step,
                "epoch": self.epoch,
                "steps": list(self.steps),
                "epochs": list(self.epochs),
                "fraction": self.fraction,
                "elapsed": time.time() - self.started,
                "stopping": self.stop.is_set(),
            }


def _release_cuda_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@st.cache_resource
def training_jobs() -> dict[str, TrainJob]:
    """Every training job of this server process, by run name (shared across sessions)."""
    return {}


def running_job() -> TrainJob | None:
    for job in training_jobs().values():
        if job.status == "running":
            return job
    return None


def start_training(dataset: str, ts: TrajectorySet, config: Any) -> TrainJob:
    """Create a run folder, record which dataset it uses, and start training in a thread."""
    from cvx_core.learn.runs import atomic_write_json, new_run_dir

    if running_job() is not None:
        raise RuntimeError("a training run is already in progress on this server")
    run_dir = new_run_dir(runs_dir())
    atomic_write_json(run_dir / APP_RUN_FILE, {"dataset": dataset, "digest": ts.digest()})
    job = TrainJob(dataset, ts, config, run_dir)
    jobs = training_jobs()
    for old in [n for n, j in jobs.items() if j.status != "running"][:-MAX_FINISHED_JOBS]:
        jobs.pop(old, None)  # finished jobs hold only progress curves; keep a few
    jobs[job.run_name] = job
    job.thread.start()
    return job


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


# ------------------------------------------------------------------------------------------
# Compare: a run's learned attention vs the analytic attribution
# ------------------------------------------------------------------------------------------
@st.cache_resource(max_entries=4, show_spinner="Loading the trained model…")
def _load_run(path: str, weights_mtime_ns: int) -> Any:
    from cvx_core.learn.runs import load_run

    return load_run(path, device="cpu")


def _weights_stamp(run_dir: Path) -> int:
    """Modification time (ns) of a run's weights, 0 if absent: part of every cache key, so a
    newer checkpoint in the same folder is never served from the cache."""
    from cvx_core.learn.runs import WEIGHTS_FILE

    weights = Path(run_dir) / WEIGHTS_FILE
    return weights.stat().st_mtime_ns if weights.is_file() else 0


def load_run(run_dir: Path) -> Any:
    """The run's rebuilt model and documents (``cvx_core.learn.runs.LoadedRun``), cached per checkpoint."""
    return _load_run(str(run_dir), _weights_stamp(run_dir))


@st.cache_data(max_entries=8, show_spinner=False)
def _comparison(run_key: str, digest: str, planted: tuple[int, ...] | None, _run: Any, _ts: TrajectorySet) -> Any:
    from cvx_core.learn.compare import compare_attention

    return compare_attention(
        _run.model, _ts, config=_run.config.features, planted_dims=list(planted) if planted else None
    )


def comparison(run_dir: Path, ts: TrajectorySet, planted_dims: list[int] | None) -> Any:
    """``cvx_core.learn.compare.AttentionComparison`` of a run on ``ts``, cached per checkpoint and data."""
    run = load_run(run_dir)
    key = f"{run_dir}:{_weights_stamp(run_dir)}"
    planted = tuple(int(d) for d in planted_dims) if planted_dims else None
    return _comparison(key, ts.digest(), planted, run, ts)


def attribution_description(kind: str, positive_class: int | None) -> str:
    """Plain words for ``AttentionComparison.attribution_kind``."""
    if kind == "abs_class_difference":
        return f"|mean drift share of label {positive_class} − that of the other label|"
    if kind == "class_difference":
        return f"mean drift share of label {positive_class} − that of the other label"
    if kind == "mean_shares":
        return "mean drift share over all users"
    return kind.replace("_", " ")
