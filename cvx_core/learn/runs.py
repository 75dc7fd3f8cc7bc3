"""Run folders: where a training run keeps its weights, config, data summary and metrics.

Layout of a run folder (every file is written atomically: temp file in the same folder,
then ``os.replace``, so a reader never sees half a file and an interrupted run keeps its
last good checkpoint)::

    RUN_DIR/
      config.json      TrainConfig + the model spec needed to rebuild the model
      data.json        data summary and the split (user ids of train / val / test)
      model.pt         best-so-far weights, ``torch.save(state_dict)``
      encoder.safetensors  the fine-tuned text encoder's weights (``encoder.*`` keys), only
                       for runs that fine-tune one; a frozen encoder is rebuilt from the
                       source the model spec names. Written before model.pt, which holds
                       its token, so a mismatched pair is detected.
      checkpoint.json  epoch and validation AUC of the weights in model.pt
      history.json     per-epoch curves (loss, validation AUC)
      metrics.json     final test metrics (only once training has finished)
      comparison.json  learned attention vs analytic attribution (written by the CLI)
      evaluation.json  ``evaluate``'s scores, with the SHA-256 of the model.pt they scored
                       (:func:`read_evaluation` ignores them when the weights changed)
      .lock            the process id of the run that holds the folder (while it trains)

A run folder is claimed exclusively (:func:`claim_run_folder`): a live holder is refused,
a dead holder's lock is taken over with a note. Training into a folder that already holds
a run needs ``overwrite=True`` (CLI ``--overwrite``), which removes every file the old run
wrote (:data:`RUN_FILES`).

Weights are loaded with ``torch.load(..., weights_only=True)``; nothing is unpickled.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import socket
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cvx_core.data.atomic import (
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_json,
)
from cvx_core.data.deprecation import deprecated_names

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from cvx_core.learn.config import TrainConfig

__all__ = [
    "CONFIG_FILE",
    "COMPARISON_FILE",
    "DATA_FILE",
    "WEIGHTS_FILE",
    "ENCODER_WEIGHTS_FILE",
    "CHECKPOINT_FILE",
    "HISTORY_FILE",
    "METRICS_FILE",
    "EVALUATION_FILE",
    "LOCK_FILE",
    "RUN_FILES",
    "RunError",
    "RunClaim",
    "RunLockNote",
    "claim_run_folder",
    "release_run_folder",
    "run_weights_digest",
    "write_evaluation",
    "read_evaluation",
    "RunInfo",
    "LoadedRun",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_torch_save",
    "read_json",
    "new_run_dir",
    "clear_run_files",
    "save_weights",
    "load_weights",
    "load_run",
    "list_runs",
]

CONFIG_FILE = "config.json"
COMPARISON_FILE = "comparison.json"
DATA_FILE = "data.json"
WEIGHTS_FILE = "model.pt"
ENCODER_WEIGHTS_FILE = "encoder.safetensors"
_ENCODER_TOKEN_KEY = "__encoder_checkpoint__"
CHECKPOINT_FILE = "checkpoint.json"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
EVALUATION_FILE = "evaluation.json"
LOCK_FILE = ".lock"
#: every file a run writes into its folder (removed by ``--overwrite`` / :func:`clear_run_files`)
RUN_FILES = (METRICS_FILE, COMPARISON_FILE, CHECKPOINT_FILE, HISTORY_FILE, WEIGHTS_FILE, DATA_FILE, CONFIG_FILE,
             ENCODER_WEIGHTS_FILE, EVALUATION_FILE)


class RunError(RuntimeError):
    """A run folder is missing, incomplete or unreadable; the message says which file."""


# atomic writes live in cvx_core.data.atomic; they are re-exported here for run-folder users


def read_json(path: str | os.PathLike[str]) -> Any:
    """A JSON file's value; every failure (missing, unreadable, not UTF-8, not JSON) is a
    :class:`RunError` naming the file."""
    from cvx_core.data.budgets import read_json_file

    path = Path(path)
    try:
        return read_json_file(path, what="run document")
    except FileNotFoundError:
        raise RunError(f"{path}: file not found") from None
    except ValueError as exc:  # not a regular file, over the size budget, not UTF-8, not JSON
        raise RunError(str(exc)) from None
    except (OSError, RecursionError, MemoryError) as exc:
        raise RunError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from None


# -- document shapes: every document read from a run folder is checked before use ----------
def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_optional(doc: dict[str, Any], path: Path, key: str, ok: Any, expected: str) -> None:
    if key in doc and doc[key] is not None and not ok(doc[key]):
        raise RunError(f"{path}: '{key}' is {str(doc[key])[:40]!r}, expected {expected}")


def _check_metrics(doc: Any, path: Path) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise RunError(f"{path}: holds a JSON {type(doc).__name__}, expected an object of metrics")
    for key in ("test_auc", "baseline_auc", "test_f1", "test_accuracy", "val_auc"):
        _check_optional(doc, path, key, _is_number, "a number")
    _check_optional(doc, path, "epochs", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                    "a whole number of epochs")
    _check_optional(doc, path, "device", lambda v: isinstance(v, str), "a device name")
    return doc


def _check_checkpoint(doc: Any, path: Path) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise RunError(f"{path}: holds a JSON {type(doc).__name__}, expected an object (epoch, validation AUC)")
    _check_optional(doc, path, "epoch", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                    "a whole number")
    _check_optional(doc, path, "device", lambda v: isinstance(v, str), "a device name")
    return doc


def _check_history(doc: Any, path: Path) -> list[dict[str, Any]]:
    if not isinstance(doc, list) or not all(isinstance(h, dict) for h in doc):
        raise RunError(f"{path}: expected a list of per-epoch objects")
    return doc


def _check_object(doc: Any, path: Path, what: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise RunError(f"{path}: holds a JSON {type(doc).__name__}, expected an object ({what})")
    return doc


def _whole(lo: int, hi: int) -> Any:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _list_of(ok: Any) -> Any:
    return lambda v: isinstance(v, list) and all(ok(x) for x in v)


def _check_config(doc: Any, path: Path) -> dict[str, Any]:
    _check_object(doc, path, "train_config and model_spec")
    for key in ("train_config", "model_spec"):
        if not isinstance(doc.get(key), dict):
            raise RunError(f"{path}: not a CVX run config ('{key}' is missing or not an object)")
    spec = doc["model_spec"]  # typed as written by the trainer: never coerced ("4" is not a dimension)
    from cvx_core.data.budgets import MAX_DIM

    top = MAX_DIM.value()
    for key, ok, expected in (
        ("dim", _whole(1, top), f"a whole number of dimensions (1 to {top:,}; {MAX_DIM.env})"),
        ("classes", lambda v: _list_of(_whole(-(2**62), 2**62))(v) and 2 <= len(v) <= 100_000, "a list of class labels"),
        ("hidden", _whole(0, 1_000_000), "a whole number of hidden units"),
        ("dropout", lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
        ("features", lambda v: isinstance(v, dict), "an object of TemporalFeaturesConfig fields"),
        ("feature_dtype", lambda v: v in ("float32", "float64"), "'float32' or 'float64'"),
        ("magnitude_inputs", lambda v: isinstance(v, bool), "true or false"),
        ("mean_inputs", lambda v: isinstance(v, bool), "true or false"),
        ("head", lambda v: isinstance(v, (str, dict)), "a head name or object"),
        ("encoder", lambda v: isinstance(v, dict), "an object (the text encoder) or null"),
    ):
        _check_optional(spec, path, key, ok, expected)
    return doc


def _check_data(doc: Any, path: Path) -> dict[str, Any]:
    """data.json: the fields readers use have the types the trainer wrote."""
    _check_object(doc, path, "data summary")
    for key, ok, expected in (
        ("name", lambda v: isinstance(v, str), "a file name"),
        ("digest", lambda v: isinstance(v, str), "a digest"),
        ("summary", lambda v: isinstance(v, dict), "an object"),
        ("classes", _list_of(_whole(-(2**62), 2**62)), "a list of class labels"),
        ("split", lambda v: isinstance(v, dict) and all(_list_of(lambda u: isinstance(u, str))(x) for x in v.values()),
         "an object of lists of user ids (train / val / test)"),
        ("head", lambda v: isinstance(v, dict), "an object"),
        ("group_column", lambda v: isinstance(v, str), "a column name"),
        ("scales", lambda v: isinstance(v, dict), "an object"),
    ):
        _check_optional(doc, path, key, ok, expected)
    return doc


# -- folders ------------------------------------------------------------------------------
def new_run_dir(workspace: str | os.PathLike[str], name: str | None = None) -> Path:
    """Create and return a fresh run folder under ``workspace``.

    The default name is the UTC time (``run-YYYYmmdd-HHMMSS``); a numeric suffix keeps it
    unique.
    """
    ws = Path(workspace)
    ws.mkdir(parents=True, exist_ok=True)
    base = name or datetime.now(timezone.utc).strftime("run-%Y%m%d-%H%M%S")
    for i in range(10_000):
        candidate = ws / (base if i == 0 else f"{base}-{i}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise RunError(f"{ws}: could not create a unique run folder named {base!r}")


def clear_run_files(run_dir: str | os.PathLike[str]) -> None:
    """Remove the files a previous run left in ``run_dir`` (:data:`RUN_FILES`: weights,
    metrics, curves, evaluation, comparison), so a new run in the same folder never shows
    stale results. Other files are kept, among them an ``embeddings.sqlite`` cache (keyed by
    text, model and window, so it cannot mix runs)."""
    d = Path(run_dir)
    for name in RUN_FILES:
        try:
            (d / name).unlink()
        except FileNotFoundError:
            pass


# -- claiming a folder ----------------------------------------------------------------------
class RunLockNote(UserWarning):
    """A run folder's lock was left by a process that is no longer running and was taken over."""


@dataclass(frozen=True)
class RunClaim:
    """This process's claim on a run folder (``with claim_run_folder(...)`` releases it).

    Attributes:
        path: the run folder.
        note: what happened to a previous holder (a dead process's lock taken over), or None.
    """

    path: Path
    note: str | None = None

    def release(self) -> None:
        """Remove the lock file if this process holds it."""
        release_run_folder(self.path)

    def __enter__(self) -> "RunClaim":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


_held: dict[str, Path] = {}
_held_lock = threading.Lock()


def _lock_owner(lock: Path) -> tuple[int | None, str, bool]:
    """(pid, host, delegated) written in a lock file; pid None when unreadable."""
    try:
        fields = lock.read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return None, "", False
    pid = int(fields[0]) if fields and fields[0].isascii() and fields[0].isdigit() else None
    return pid, fields[1] if len(fields) > 1 else "", len(fields) > 2 and fields[2] == "delegate"


def _try_lock(lock: Path, delegate: bool) -> bool:
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(f"{os.getpid()} {socket.gethostname()}{' delegate' if delegate else ''}\n")
    return True


def _has_run(d: Path) -> list[str]:
    return [name for name in RUN_FILES if (d / name).exists()]


def claim_run_folder(run_dir: str | os.PathLike[str], *, overwrite: bool = True, delegate: bool = False) -> RunClaim:
    """Claim ``run_dir`` for a training run of this process (created if missing).

    The claim is a lock file (:data:`LOCK_FILE`) holding the process id, created
    exclusively: a folder held by another live process is refused (:class:`RunError`); a
    lock left by a dead process is taken over, with a :class:`RunLockNote` warning. Claiming
    a folder this process already holds is a no-op. A folder that already holds a run is
    refused unless ``overwrite`` (the library default; the CLI asks for ``--overwrite``), in
    which case every file the old run wrote is removed. The lock is released by
    :meth:`RunClaim.release`, by leaving a ``with`` block, or when the process exits.
    ``delegate=True`` lets the holder's own workers (data-parallel training in other
    processes) write the run: their claims on a delegated folder of a live holder pass
    without clearing anything."""
    d = Path(run_dir)
    if d.exists() and not d.is_dir():
        raise RunError(f"{d}: is a file, expected a run folder")
    d.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(d)
    with _held_lock:
        if key in _held:
            return RunClaim(d)
        lock = d / LOCK_FILE
        note = None
        for _ in range(3):
            if _try_lock(lock, delegate):
                break
            pid, host, delegated = _lock_owner(lock)
            from cvx_core.data.atomic import pid_alive

            alive = pid is not None and (host not in ("", socket.gethostname()) or pid_alive(pid))
            if alive and delegated:
                return RunClaim(d)  # a worker of the holder: the holder cleared the folder
            if alive:
                where = f" on {host}" if host and host != socket.gethostname() else ""
                raise RunError(f"{d}: in use by another training run (process {pid}{where}); wait for it to "
                               f"finish or choose another folder")
            note = (f"{d}: took over the lock of process {pid if pid is not None else '?'}, which is no longer "
                    f"running (an interrupted run)")
            lock.unlink(missing_ok=True)
        else:
            raise RunError(f"{d}: could not claim the run folder (its lock keeps changing)")
        present = _has_run(d)
        if present and not overwrite:
            lock.unlink(missing_ok=True)
            raise RunError(f"{d}: already holds a run ({', '.join(present[:4])}); pass --overwrite to replace it "
                           f"(every file of the old run is removed) or choose another folder")
        _held[key] = lock
    if note:
        warnings.warn(note, RunLockNote, stacklevel=2)
    clear_run_files(d)
    return RunClaim(d, note)


def release_run_folder(run_dir: str | os.PathLike[str]) -> None:
    """Release this process's claim on ``run_dir`` (nothing if it holds none)."""
    with _held_lock:
        lock = _held.pop(os.path.realpath(run_dir), None)
    if lock is not None:
        pid, _, _ = _lock_owner(lock)
        if pid == os.getpid():
            lock.unlink(missing_ok=True)


@atexit.register
def _release_all() -> None:
    for key in list(_held):
        release_run_folder(key)


# -- evaluation files -------------------------------------------------------------------------
def run_weights_digest(run_dir: str | os.PathLike[str]) -> str | None:
    """SHA-256 (hex) of the run's ``model.pt``, or None when it has none."""
    path = Path(run_dir) / WEIGHTS_FILE
    if not path.is_file():  # absent, or a FIFO / device that open() would block on or read forever
        return None
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def write_evaluation(run_dir: str | os.PathLike[str], doc: Mapping[str, Any], *, digest: str | None = None) -> Path:
    """Write ``evaluation.json`` with ``weights_sha256``: the digest of the weights that were
    scored (``digest``, taken when the run was loaded; default the current model.pt)."""
    return atomic_write_json(Path(run_dir) / EVALUATION_FILE,
                             {**doc, "weights_sha256": digest or run_weights_digest(run_dir)})


def read_evaluation(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The run's ``evaluation.json`` if it scored the weights now in ``model.pt``; None when
    absent, unreadable, without a digest or for other weights (a stale evaluation)."""
    path = Path(run_dir) / EVALUATION_FILE
    if not path.is_file():
        return None
    try:
        doc = read_json(path)
    except RunError:
        return None
    if not isinstance(doc, dict) or doc.get("weights_sha256") is None:
        return None
    return doc if doc["weights_sha256"] == run_weights_digest(run_dir) else None


def save_weights(
    run_dir: str | os.PathLike[str], state_dict: Mapping[str, "torch.Tensor"], *, encoder_weights: bool = True
) -> None:
    """Save a state dict (moved to CPU) as ``RUN_DIR/model.pt``, atomically.

    A text encoder's ``encoder.*`` weights go to ``encoder.safetensors`` instead (written
    first; ``model.pt`` records its token), or are left out with ``encoder_weights=False``
    (a frozen encoder, rebuilt from its source when the run is loaded).
    """
    import torch

    cpu = {k: v.detach().to("cpu").clone() for k, v in state_dict.items() if not k.startswith("encoder.")}
    enc = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items() if k.startswith("encoder.")}
    if enc and encoder_weights:
        from safetensors.torch import save as st_save

        token = os.urandom(8).hex()
        atomic_write_bytes(Path(run_dir) / ENCODER_WEIGHTS_FILE, st_save(enc, metadata={"checkpoint": token}))
        cpu[_ENCODER_TOKEN_KEY] = torch.frombuffer(bytearray(token.encode("ascii")), dtype=torch.uint8)
    atomic_torch_save(cpu, Path(run_dir) / WEIGHTS_FILE)


def load_weights(run_dir: str | os.PathLike[str], *, device: str = "cpu") -> dict[str, "torch.Tensor"]:
    """Load ``RUN_DIR/model.pt`` with ``weights_only=True`` (tensors only, nothing unpickled)."""
    import torch

    path = Path(run_dir) / WEIGHTS_FILE
    if not path.is_file():
        raise RunError(f"{path}: no weights in this run folder (training never reached a checkpoint)")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # corrupt or foreign file
        raise RunError(f"{path}: cannot load weights ({type(exc).__name__}: {exc})") from None
    token = state.pop(_ENCODER_TOKEN_KEY, None) if isinstance(state, dict) else None
    if token is not None:
        state.update(_load_encoder_weights(Path(run_dir), bytes(token.tolist()).decode("ascii"), device))
    return state


def _load_encoder_weights(run_dir: Path, token: str, device: str) -> dict[str, "torch.Tensor"]:
    """The ``encoder.*`` weights of ``encoder.safetensors``, checked against model.pt's token."""
    from safetensors import safe_open

    path = run_dir / ENCODER_WEIGHTS_FILE
    if not path.is_file():
        raise RunError(f"{path}: missing; {WEIGHTS_FILE} was saved with a fine-tuned text encoder's weights in it")
    try:
        with safe_open(str(path), framework="pt", device=device) as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # corrupt or foreign file
        raise RunError(f"{path}: cannot load the encoder's weights ({type(exc).__name__}: {exc})") from None
    if meta.get("checkpoint") != token:
        raise RunError(f"{path}: belongs to another checkpoint than {WEIGHTS_FILE} (an interrupted save?)")
    if any(not k.startswith("encoder.") for k in tensors):
        raise RunError(f"{path}: holds weights other than the encoder's")
    return tensors


# -- reading runs -------------------------------------------------------------------------
@dataclass(frozen=True)
class RunInfo:
    """One line of the run list.

    Attributes:
        name: folder name.
        path: folder path.
        modified: last modification time (UTC) of the folder's newest file.
        complete: True when ``metrics.json`` exists (training finished).
        has_weights: True when a checkpoint ``model.pt`` exists (the run can be loaded).
        test_auc, baseline_auc, test_f1: from ``metrics.json`` (None while incomplete).
        epochs: epochs run (from ``metrics.json``, else the checkpoint's epoch).
        device: device the run trained on.
        damaged: ``None`` for a readable run, else why it is damaged (which file, what is
            wrong); a damaged run is still listed, with the fields above left empty.
    """

    name: str
    path: Path
    modified: datetime
    complete: bool
    has_weights: bool
    test_auc: float | None
    baseline_auc: float | None
    test_f1: float | None
    epochs: int | None
    device: str | None
    damaged: str | None = None

    @property
    def problem(self) -> str | None:
        """Alias of :attr:`damaged` (what the app shows for a damaged run)."""
        return self.damaged


def _run_info(d: Path) -> RunInfo:
    """One run folder -> :class:`RunInfo`; raises :class:`RunError` (or ``OSError``)."""
    files = [p for p in d.iterdir() if p.is_file()]
    mtime = max((p.stat().st_mtime for p in files), default=d.stat().st_mtime)
    _check_config(read_json(d / CONFIG_FILE), d / CONFIG_FILE)
    for name in (METRICS_FILE, CHECKPOINT_FILE, HISTORY_FILE, WEIGHTS_FILE):
        if (d / name).exists() and not (d / name).is_file():
            raise RunError(f"{d / name}: is not a file")
    metrics: dict[str, Any] = {}
    ckpt: dict[str, Any] = {}
    if (d / METRICS_FILE).is_file():
        metrics = _check_metrics(read_json(d / METRICS_FILE), d / METRICS_FILE)
    if (d / CHECKPOINT_FILE).is_file():
        ckpt = _check_checkpoint(read_json(d / CHECKPOINT_FILE), d / CHECKPOINT_FILE)
    if (d / HISTORY_FILE).is_file():
        _check_history(read_json(d / HISTORY_FILE), d / HISTORY_FILE)
    epochs = metrics.get("epochs", ckpt.get("epoch"))
    return RunInfo(
        name=d.name,
        path=d,
        modified=datetime.fromtimestamp(mtime, tz=timezone.utc),
        complete=bool(metrics),
        has_weights=(d / WEIGHTS_FILE).is_file(),
        test_auc=metrics.get("test_auc"),
        baseline_auc=metrics.get("baseline_auc"),
        test_f1=metrics.get("test_f1"),
        epochs=None if epochs is None else int(epochs),
        device=metrics.get("device", ckpt.get("device")),
    )


def list_runs(workspace: str | os.PathLike[str]) -> list[RunInfo]:
    """Run folders directly under ``workspace`` (those holding a ``config.json``), newest first.

    Never raises on one bad folder: a run whose documents cannot be read or have the wrong
    shape is listed with ``damaged`` saying why, so the other runs stay visible."""
    ws = Path(workspace)
    if not ws.is_dir():
        return []
    runs: list[RunInfo] = []
    try:
        entries = sorted(ws.iterdir())
    except OSError:
        return []
    for d in entries:
        try:
            if not d.is_dir() or not (d / CONFIG_FILE).is_file():
                continue
            runs.append(_run_info(d))
        except (RunError, OSError) as exc:
            try:
                mtime = d.stat().st_mtime
            except OSError:
                mtime = 0.0
            reason = str(exc) if isinstance(exc, RunError) else f"{d}: cannot be read ({exc})"
            runs.append(
                RunInfo(
                    name=d.name,
                    path=d,
                    modified=datetime.fromtimestamp(mtime, tz=timezone.utc),
                    complete=False,
                    has_weights=False,
                    test_auc=None,
                    baseline_auc=None,
                    test_f1=None,
                    epochs=None,
                    device=None,
                    damaged=reason,
                )
            )
    runs.sort(key=lambda r: (r.modified, r.name), reverse=True)
    return runs


@dataclass(frozen=True, eq=False)
class LoadedRun:
    """A run read back from its folder.

    Attributes:
        path: the run folder.
        model: the rebuilt model with the saved weights, in eval mode.
        config: the run's TrainConfig.
        spec: the model spec (dimension, classes, head sizes, text encoder) from config.json.
        data: the data summary and split from data.json ({} if absent).
        checkpoint: epoch / validation AUC of the saved weights.
        metrics: final metrics, or None if the run did not finish (interrupted).
        history: per-epoch curves ([] if absent).
        weights_sha256: SHA-256 of the model.pt that was loaded (for :func:`write_evaluation`).
    """

    path: Path
    model: "torch.nn.Module"
    config: "TrainConfig"
    spec: dict[str, Any]
    data: dict[str, Any]
    checkpoint: dict[str, Any]
    metrics: dict[str, Any] | None
    history: list[dict[str, Any]]
    weights_sha256: str | None = None

    @property
    def complete(self) -> bool:
        return self.metrics is not None


def load_run(run_dir: str | os.PathLike[str], *, device: str = "cpu") -> LoadedRun:
    """Rebuild the model of a run folder with its best saved weights.

    Works on finished runs and on interrupted ones that wrote at least one checkpoint.
    Raises :class:`RunError` naming the missing or bad file otherwise (every failure to
    read, check or rebuild the run is a :class:`RunError`).
    """
    try:
        return _load_run(run_dir, device=device)
    except RunError:
        raise
    except MemoryError:
        raise RunError(f"{run_dir}: out of memory loading this run") from None
    except Exception as exc:  # a document of the right shape with values the model refuses
        raise RunError(f"{run_dir}: cannot rebuild this run ({type(exc).__name__}: {exc})") from None


def _load_run(run_dir: str | os.PathLike[str], *, device: str) -> LoadedRun:
    from cvx_core.learn.config import TrainConfig
    from cvx_core.learn.model import build_model_from_spec

    path = Path(run_dir)
    if not path.is_dir():
        raise RunError(f"{path}: not a run folder")
    cfg_doc = _check_config(read_json(path / CONFIG_FILE), path / CONFIG_FILE)
    try:
        config = TrainConfig.from_dict(cfg_doc["train_config"])
        spec = dict(cfg_doc["model_spec"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RunError(f"{path / CONFIG_FILE}: not a CVX run config ({exc})") from None
    digest = run_weights_digest(path)
    state = load_weights(path, device="cpu")
    if not isinstance(state, dict):
        raise RunError(f"{path / WEIGHTS_FILE}: holds a {type(state).__name__}, expected a state dict of tensors")
    try:
        model = build_model_from_spec(spec)
    except (KeyError, TypeError, ValueError) as exc:
        raise RunError(f"{path / CONFIG_FILE}: the model spec cannot be built ({type(exc).__name__}: {exc})") from None
    frozen_encoder = bool(spec.get("encoder")) and not any(k.startswith("encoder.") for k in state)
    try:
        if frozen_encoder:  # the encoder keeps the starting weights its spec names
            state = {**{f"encoder.{k}": v for k, v in model.encoder.state_dict().items()}, **state}
        model.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        raise RunError(f"{path / WEIGHTS_FILE}: weights do not match the model in config.json ({exc})") from None
    model.to(device)
    model.eval()
    data = _check_data(read_json(path / DATA_FILE), path / DATA_FILE) if (path / DATA_FILE).is_file() else {}
    ckpt = _check_checkpoint(read_json(path / CHECKPOINT_FILE), path / CHECKPOINT_FILE) if (path / CHECKPOINT_FILE).is_file() else {}
    metrics = _check_metrics(read_json(path / METRICS_FILE), path / METRICS_FILE) if (path / METRICS_FILE).is_file() else None
    history = _check_history(read_json(path / HISTORY_FILE), path / HISTORY_FILE) if (path / HISTORY_FILE).is_file() else []
    return LoadedRun(path, model, config, spec, data, ckpt, metrics, history, digest)


# the old name of run_weights_digest (it clashed with cvx_core.data.text.weights_digest, a model folder's digest)
__getattr__ = deprecated_names(__name__, {"weights_digest": ("run_weights_digest", lambda: run_weights_digest)})
