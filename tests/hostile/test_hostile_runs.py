"""Issue 26, point 3 (run folders): a run folder is claimed by a lock file holding the
process id (a live holder is refused, a dead one's lock taken over with a note); training
into a used folder needs ``--overwrite`` and then clears everything the old run wrote;
``evaluation.json`` records the digest of the weights it scored and is ignored when the
weights change."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cvx_core.cli import main
from cvx_core.data.io import save_trajectories
from cvx_core.data.synthetic import PlantedConfig, make_planted_trajectory_set
from cvx_core.learn import runs
from cvx_core.learn.runs import RunError, RunLockNote, claim_run_folder, read_evaluation, write_evaluation


def _dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)


@pytest.fixture
def live_holder():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_a_folder_held_by_a_live_process_is_refused(tmp_path, live_holder):
    d = tmp_path / "run"
    d.mkdir()
    (d / runs.LOCK_FILE).write_text(f"{live_holder} {os.uname().nodename}\n", encoding="utf-8")
    with pytest.raises(RunError, match=f"in use by another training run \\(process {live_holder}"):
        claim_run_folder(d)
    assert (d / runs.LOCK_FILE).read_text(encoding="utf-8").split()[0] == str(live_holder)


def test_a_dead_holders_lock_is_taken_over_with_a_note(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    dead = _dead_pid()
    (d / runs.LOCK_FILE).write_text(f"{dead} {os.uname().nodename}\n", encoding="utf-8")
    with pytest.warns(RunLockNote, match=f"process {dead}, which is no longer running"):
        claim = claim_run_folder(d)
    assert (d / runs.LOCK_FILE).read_text(encoding="utf-8").split()[0] == str(os.getpid())
    claim.release()
    assert not (d / runs.LOCK_FILE).exists()


def test_a_used_folder_needs_overwrite_which_clears_every_old_run_file(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    for name in runs.RUN_FILES:
        (d / name).write_text("{}", encoding="utf-8")
    (d / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(RunError, match="--overwrite"):
        claim_run_folder(d, overwrite=False)
    assert all((d / n).exists() for n in runs.RUN_FILES) and not (d / runs.LOCK_FILE).exists()
    with claim_run_folder(d, overwrite=True):
        assert not any((d / n).exists() for n in runs.RUN_FILES)
        assert (d / "notes.txt").exists() and (d / runs.LOCK_FILE).exists()
    assert not (d / runs.LOCK_FILE).exists()


def test_a_second_process_cannot_claim_a_folder_this_one_holds(tmp_path):
    d = tmp_path / "run"
    with claim_run_folder(d):
        code = (f"from cvx_core.learn.runs import claim_run_folder, RunError\n"
                f"try:\n    claim_run_folder({str(d)!r})\nexcept RunError as e:\n    print('refused', e)\n")
        env = {**os.environ, "PYTHONPATH": os.getcwd()}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        assert out.stdout.startswith("refused") and str(os.getpid()) in out.stdout


def test_evaluation_is_ignored_when_the_weights_change(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / runs.WEIGHTS_FILE).write_bytes(b"weights one")
    write_evaluation(d, {"auc": 0.9})
    assert read_evaluation(d)["auc"] == 0.9
    assert json.loads((d / runs.EVALUATION_FILE).read_text())["weights_sha256"] == runs.run_weights_digest(d)
    (d / runs.WEIGHTS_FILE).write_bytes(b"weights two")  # retrained in place
    assert read_evaluation(d) is None
    (d / runs.EVALUATION_FILE).write_text('{"auc": 0.9}', encoding="utf-8")  # no digest at all
    assert read_evaluation(d) is None


@pytest.mark.slow
def test_cli_train_into_a_used_folder_needs_overwrite_and_evaluation_follows_the_weights(tmp_path, capsys):
    ts, _ = make_planted_trajectory_set(config=PlantedConfig(n_users=24, dim=6, n_planted=1, mean_posts=6,
                                                             max_posts=10), seed=2, name="r")
    data = save_trajectories(ts, tmp_path / "d.parquet")
    run = tmp_path / "run"
    base = ["train", str(data), "--out", str(run), "--epochs", "1", "--hidden", "4", "--device", "cpu", "--quiet",
            "--no-attention"]
    assert main(base) == 0
    assert main(["evaluate", str(run), str(data)]) == 0
    assert read_evaluation(run) is not None
    first = (run / runs.CONFIG_FILE).read_bytes()
    capsys.readouterr()
    assert main(base + ["--seed", "5"]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "Traceback" not in err
    assert (run / runs.CONFIG_FILE).read_bytes() == first and (run / runs.EVALUATION_FILE).exists()
    assert main(base + ["--seed", "5", "--overwrite"]) == 0
    assert not (run / runs.EVALUATION_FILE).exists()  # the old run's evaluation is gone
    assert json.loads((run / runs.CONFIG_FILE).read_text())["train_config"]["seed"] == 5
    assert not (run / runs.LOCK_FILE).exists()


def test_a_delegated_folder_lets_the_holders_worker_processes_write_without_clearing(tmp_path):
    d = tmp_path / "run"
    with claim_run_folder(d, delegate=True):
        (d / runs.CONFIG_FILE).write_text("{}", encoding="utf-8")
        code = (f"from cvx_core.learn.runs import claim_run_folder\n"
                f"claim_run_folder({str(d)!r}); print('worker may write')\n")
        env = {**os.environ, "PYTHONPATH": os.getcwd()}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        assert out.stdout.strip() == "worker may write"
        assert (d / runs.CONFIG_FILE).exists()  # a worker's claim clears nothing
