"""The app's training jobs release their run folder's lock when the run ends: finished,
failed or stopped (issue 26 §3: a run folder is claimed exclusively, and the app's claim
must not outlive its run)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("streamlit")

from cvx_core.learn.runs import LOCK_FILE  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _claim_elsewhere(run_dir: Path) -> str:
    """Try to claim ``run_dir`` from another process: 'claimed' or the refusal."""
    code = ("import sys\nfrom cvx_core.learn.runs import claim_run_folder, RunError\n"
            f"try:\n    claim_run_folder({str(run_dir)!r}).release(); print('claimed')\n"
            "except RunError as e:\n    print('refused', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    return out.stdout.strip()


def _config(epochs: int = 1):
    from cvx_core.learn.config import TrainConfig

    return TrainConfig(epochs=epochs, hidden=0, seed=0)


def test_a_failed_run_releases_its_folder_lock(app_workspace, small_planted, monkeypatch):
    import cvx_core.learn.trainer as trainer
    from cvx_app import jobs
    from cvx_core.learn import runs

    held_during_run = []

    def failing_train(ts, config, *, run_dir, **kw):
        runs.claim_run_folder(run_dir)
        runs.atomic_write_json(Path(run_dir) / runs.CONFIG_FILE, {"train_config": {}, "model_spec": {}})
        held_during_run.append((Path(run_dir) / LOCK_FILE).exists())
        raise RuntimeError("disk full")

    monkeypatch.setattr(trainer, "train", failing_train)
    job = jobs.start_training("small", small_planted[0], _config(), name="fails")
    job.thread.join(60)
    assert job.status == "error" and "disk full" in job.error
    assert held_during_run == [True]
    assert not (job.run_dir / LOCK_FILE).exists()


@pytest.mark.slow
def test_a_finished_run_releases_its_folder_so_another_process_can_claim_it(app_workspace, small_planted):
    from cvx_app import jobs

    job = jobs.start_training("small", small_planted[0], _config(), name="finishes")
    job.thread.join(300)
    assert job.status == "done", job.error
    assert (job.run_dir / "model.pt").exists()
    assert not (job.run_dir / LOCK_FILE).exists()
    assert _claim_elsewhere(job.run_dir) == "claimed"


@pytest.mark.slow
def test_a_stopped_run_releases_its_folder_lock(app_workspace, small_planted):
    from cvx_app import jobs

    job = jobs.start_training("small", small_planted[0], _config(epochs=50), name="stopped")
    job.stop.set()
    job.thread.join(300)
    assert job.status == "done" and job.interrupted
    assert not (job.run_dir / LOCK_FILE).exists()
