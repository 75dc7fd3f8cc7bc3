"""Training jobs: one background thread per training run, its live progress and stop signal, and the CUDA probe.

A run's folder is claimed by the trainer (``cvx_core.learn.runs.claim_run_folder``: a lock
file with this process's id) and released as soon as the run ends, whether it finished,
failed or was stopped, so the folder can be retrained or written by the CLI without
waiting for the server to exit.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import streamlit as st

from cvx_app.workspace import runs_dir
from cvx_core.data.trajectory import TrajectorySet

MAX_FINISHED_JOBS = 16
# held while start_training checks for a running job and registers the new one (one process)
_START_LOCK = threading.Lock()


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
        # (step, name, norm): gradient norms the trainer reports, e.g. "encoder" (issue 15)
        self.grad_norms: list[tuple[int, str, float]] = []
        self.epochs: list[dict[str, float]] = []  # epoch, train_loss, val_loss, val_auc
        self.step = 0
        self.epoch = 0
        self.steps_per_epoch = 0
        self.status = "running"  # running | done | error
        self.error: str | None = None
        self.interrupted = False
        self.started = time.time()
        self.n_left_out = 0  # unlabelled users of the dataset left out of training
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
            for attr, label in (("grad_norm", "model"), ("encoder_grad_norm", "encoder")):
                value = getattr(p, attr, None)
                if isinstance(value, (int, float)) and value == value:
                    self.grad_norms.append((p.step, label, float(value)))

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
        from cvx_core.learn.trainer import train

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
            _release_run(self.run_dir)
            _remove_if_empty(self.run_dir)
        else:
            # the page reads results from the run folder: keep no model (it may sit on the GPU)
            interrupted = bool(result.interrupted)
            del result
            with self.lock:
                self.status, self.interrupted = "done", interrupted
        finally:
            self._ts = None  # type: ignore[assignment]
            _release_run(self.run_dir)
            _release_cuda_memory()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "status": self.status,
                "error": self.error,
                "step": self.step,
                "epoch": self.epoch,
                "steps": list(self.steps),
                "grad_norms": list(self.grad_norms),
                "epochs": list(self.epochs),
                "fraction": self.fraction,
                "elapsed": time.time() - self.started,
                "stopping": self.stop.is_set(),
            }


def _release_run(run_dir: Path) -> None:
    """Drop this process's lock on ``run_dir`` (nothing when it holds none)."""
    from cvx_core.learn.runs import release_run_folder

    release_run_folder(run_dir)


def _remove_if_empty(run_dir: Path) -> None:
    """Remove a run folder that failed before the trainer wrote anything (only the app's
    own record in it), so a refused run leaves no orphan folder."""
    import shutil

    from cvx_core.learn.runs import CONFIG_FILE

    if run_dir.is_dir() and not (run_dir / CONFIG_FILE).exists():
        shutil.rmtree(run_dir, ignore_errors=True)


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


def labelled_users(ts: TrajectorySet) -> tuple[TrajectorySet, int]:
    """``(the users of ts that have a label, how many users without one were left out)``;
    ``ts`` itself when every user has a label."""
    import numpy as np

    labels = np.asarray(ts.labels)
    missing = int((labels < 0).sum())
    if missing == 0:
        return ts, 0
    keep = [u for u, y in zip(ts.user_ids, labels) if y >= 0]
    return ts.subset(keep, name=getattr(ts, "name", None)), missing


def unlabelled_note(n_left_out: int, n_users: int) -> str | None:
    """The sentence that says how many unlabelled users training leaves out (``None``: none)."""
    if n_left_out <= 0:
        return None
    return (f"{n_left_out} of {n_users} users have no label and are left out of training "
            f"(it uses the {n_users - n_left_out} labelled users)")


def trainable_problem(ts: TrajectorySet) -> str | None:
    """Why ``ts`` cannot be trained on (``None`` when it can): no users, no labelled users, or
    fewer than two classes among the labelled users (unlabelled users are left out, see
    :func:`labelled_users`). Checked before any run folder is made, so a refused run leaves none."""
    import numpy as np

    if len(ts) == 0:
        return "the dataset has no users"
    labels = np.asarray(ts.labels)
    known = labels[labels >= 0]
    if known.size == 0:
        return f"none of its {len(ts)} users has a label; training needs labelled users of at least 2 classes"
    classes = sorted({int(v) for v in known})
    if len(classes) < 2:
        among = "every user has" if known.size == len(ts) else f"all {known.size} labelled users have"
        return f"training needs at least 2 classes, but {among} label {classes[0]}"
    return None


def start_training(dataset: str, ts: TrajectorySet, config: Any, *, name: str | None = None) -> TrainJob:
    """Check the data, create a run folder (named by ``name``, else dataset + head + time),
    record which dataset it uses, and start training in a thread on the labelled users of
    ``ts`` (the unlabelled ones are left out; ``job.n_left_out`` says how many).

    Raises ValueError (no folder is made) when the data cannot be trained on."""
    from cvx_core.learn.runs import new_run_dir

    from cvx_app import run_store

    problem = trainable_problem(ts)
    if problem is not None:
        raise ValueError(problem)
    with _START_LOCK:  # check-and-register is one step: simultaneous starts cannot both pass
        if running_job() is not None:
            raise RuntimeError("a training run is already in progress on this server")
        train_ts, left_out = labelled_users(ts)
        run_dir = new_run_dir(runs_dir(), run_store.folder_name(name, dataset, config))
        run_store.write_new_record(run_dir, dataset=dataset, digest=ts.digest(), config=config, title=name,
                                  left_out=left_out)
        job = TrainJob(dataset, train_ts, config, run_dir)
        job.n_left_out = left_out
        jobs = training_jobs()
        for old in [n for n, j in jobs.items() if j.status != "running"][:-MAX_FINISHED_JOBS]:
            jobs.pop(old, None)  # finished jobs hold only progress curves; keep a few
        jobs[job.run_name] = job
    job.thread.start()
    return job
