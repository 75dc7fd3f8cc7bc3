"""Fault injection on the app's workspace: corrupt every kind of dataset and run file, kill a
save or a training mid-write in a subprocess, race uploads and training starts. The other
data must survive, damaged items are reported (not hidden, not crashing), and every page of
the app still opens (Streamlit AppTest)."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("streamlit")

from cvx_core.data.io import load_trajectories, save_trajectories  # noqa: E402
from cvx_core.data.trajectory import TrajectoryError  # noqa: E402
from cvx_core.learn import runs  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 120
PAGES = [None, "pages/1_data.py", "pages/2_explore.py", "pages/3_train.py", "pages/4_compare.py"]
FAST = dict(epochs=1, patience=1, batch_size=16, hidden=8, eval_batch_size=64, device="cpu")


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory, small_planted):
    """A run folder whose training was killed (SIGKILL) in a subprocess after its first
    checkpoint, mid-way through later epochs' writes. Trained once for the module."""
    ws = tmp_path_factory.mktemp("killed")
    data = save_trajectories(small_planted[0].subset(small_planted[0].user_ids[:16]), ws / "small.parquet")
    run_dir = ws / "run-killed"
    proc = _python(
        f"""
        from cvx_core.data.io import load_trajectories
        from cvx_core.learn.config import TrainConfig
        from cvx_core.learn.trainer import train
        ts = load_trajectories({str(data)!r})
        train(ts, TrainConfig(epochs=500, patience=500, batch_size=8, hidden=8, head="mlp", eval_batch_size=64, device="cpu"),
              run_dir={str(run_dir)!r})
        """
    )
    _wait_for(lambda: (run_dir / runs.CHECKPOINT_FILE).is_file() and (run_dir / runs.HISTORY_FILE).is_file(), 300, proc)
    time.sleep(0.5)  # in the middle of later epochs' checkpoint writes
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for tmp in run_dir.glob("*.tmp"):
        tmp.unlink()  # an orphan of the kill; the cleaning has its own test
    return run_dir


def _csv(n_users: int = 3, dim: int = 4, seed: int = 1) -> bytes:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for i in range(5):
            row = {"user_id": f"a{u}", "timestamp": f"2024-02-{i + 1:02d}T10:00:00Z", "label": u % 2}
            row.update({f"e{d}": float(x) for d, x in enumerate(rng.normal(size=dim))})
            rows.append(row)
    return pd.DataFrame(rows).to_csv(index=False).encode()


# ------------------------------------------------------------------------------------------
# corrupt every kind of file: the app opens, the good data survives, the bad is reported
# ------------------------------------------------------------------------------------------
RUN_CORRUPTIONS = {
    runs.CONFIG_FILE: b"{not json",
    runs.METRICS_FILE: b"null",
    runs.HISTORY_FILE: b'{"epoch": "one"}',
    runs.CHECKPOINT_FILE: b"[1, 2]",
    runs.DATA_FILE: b"\xff\xfe\x00garbage",
    runs.WEIGHTS_FILE: b"PK\x03\x04 truncated zip",
    "app.json": b'{"dataset": ["not", "a", "name"]}',
}
DATASET_CORRUPTIONS = {
    "empty": b"",
    "garbage": b"PAR1 this is not parquet",
    "truncated": None,  # the good file cut in half (filled in below)
    "not_trajectories": None,  # valid Parquet, not a trajectory table
}


def _corrupt_workspace(ws: Path, good_run: Path, good_set) -> None:
    (ws / "datasets").mkdir(parents=True, exist_ok=True)
    good = save_trajectories(good_set, ws / "datasets" / "good.parquet")
    blob = good.read_bytes()
    for name, content in DATASET_CORRUPTIONS.items():
        if name == "truncated":
            content = blob[: len(blob) // 2]
        elif name == "not_trajectories":
            buf = io.BytesIO()
            pd.DataFrame({"a": [1, 2]}).to_parquet(buf)
            content = buf.getvalue()
        (ws / "datasets" / f"bad_{name}.parquet").write_bytes(content)
    (ws / "datasets" / "folder.parquet").mkdir()
    shutil.copytree(good_run, ws / "runs" / "run-good")
    (ws / "runs" / "run-good" / "app.json").write_text(json.dumps({"dataset": "good"}))
    for k, (fname, content) in enumerate(RUN_CORRUPTIONS.items()):
        bad = ws / "runs" / f"run-bad-{k}"
        shutil.copytree(good_run, bad)
        (bad / fname).write_bytes(content)
    (ws / "runs" / "run-empty-config").mkdir()
    (ws / "runs" / "run-empty-config" / runs.CONFIG_FILE).write_bytes(b"")


def test_every_corrupt_dataset_and_run_file_leaves_the_app_open_and_the_good_data_intact(
    app_workspace, open_app, monkeypatch, killed_run, small_planted
):
    from cvx_app import workspace

    ws = app_workspace
    good_set = small_planted[0]
    _corrupt_workspace(ws, killed_run, good_set)
    before = (ws / "datasets" / "good.parquet").read_bytes()

    listed = {r.name: r for r in runs.list_runs(ws / "runs")}
    assert listed["run-good"].damaged is None and listed["run-good"].has_weights
    damaged = {n for n, r in listed.items() if r.damaged}
    # the list reads the documents; weights, data.json and app.json only matter on loading
    assert {"run-bad-0", "run-bad-1", "run-bad-2", "run-bad-3", "run-empty-config"} <= damaged
    for k, fname in enumerate(RUN_CORRUPTIONS):
        if fname != "app.json":
            with pytest.raises(runs.RunError):
                runs.load_run(ws / "runs" / f"run-bad-{k}")
    runs.load_run(ws / "runs" / "run-good")
    names = {e.name for e in workspace.list_datasets()}
    assert {"good", "bad_empty", "bad_garbage", "bad_truncated", "bad_not_trajectories"} <= names
    assert load_trajectories(ws / "datasets" / "good.parquet").digest() == good_set.digest()
    for name in DATASET_CORRUPTIONS:
        with pytest.raises(TrajectoryError):
            load_trajectories(ws / "datasets" / f"bad_{name}.parquet")

    for dataset in ("good", "bad_truncated"):
        monkeypatch.setenv("CVX_DATASET", dataset)
        for page in PAGES:
            at = open_app(page, timeout=TIMEOUT)
            assert not at.exception, (dataset, page, at.exception)
    assert (ws / "datasets" / "good.parquet").read_bytes() == before


# ------------------------------------------------------------------------------------------
# kill a save or a training mid-write (SIGKILL in a subprocess)
# ------------------------------------------------------------------------------------------
def _python(code: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=str(ROOT),
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _wait_for(predicate, limit_s: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise AssertionError(f"the subprocess ended early ({proc.returncode}): {out[-2000:]}")
        time.sleep(0.005)
    proc.kill()
    raise AssertionError("timed out waiting for the subprocess")


def test_a_save_killed_mid_write_keeps_the_previous_file_and_the_orphan_is_cleaned(app_workspace, open_app, small_planted):
    from cvx_app import workspace

    ws = app_workspace
    target = ws / "datasets" / "good.parquet"
    save_trajectories(small_planted[0], target)
    before = target.read_bytes()
    # a much larger set saved over the same name, killed while its temporary file grows
    proc = _python(
        f"""
        import numpy as np
        from cvx_core.data.io import save_trajectories
        from cvx_core.data.trajectory import Trajectory, TrajectorySet
        rng = np.random.default_rng(0)
        dts = np.datetime64("2024-01-01", "us") + np.arange(400).astype("timedelta64[h]").astype("timedelta64[us]")
        trajs = [Trajectory(f"u{{i}}", rng.normal(size=(400, 256)).astype(np.float32), dts) for i in range(300)]
        print("ready", flush=True)
        while True:
            save_trajectories(TrajectorySet(trajs, name="big"), {str(target)!r})
        """
    )
    _wait_for(lambda: any(p.suffix == ".tmp" and p.stat().st_size > 0 for p in target.parent.iterdir()), 120, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    content = target.read_bytes()
    # either the old file or a complete new one, never half of one
    if content != before:
        assert len(load_trajectories(target)) == 300
    orphans = [p for p in target.parent.iterdir() if p.suffix == ".tmp"]
    assert orphans, "the kill left no temporary file; the test did not hit a write"
    removed = workspace.clean_orphan_temp_files(ws, min_age_s=0)
    assert set(removed) == set(orphans)
    assert not any(p.suffix == ".tmp" for p in target.parent.iterdir())
    at = open_app("pages/1_data.py", timeout=TIMEOUT)
    assert not at.exception, at.exception


def test_a_training_killed_mid_run_keeps_a_loadable_checkpoint_and_the_app_opens(app_workspace, open_app, killed_run):
    ws = app_workspace
    shutil.copytree(killed_run, ws / "runs" / killed_run.name)
    (info,) = runs.list_runs(ws / "runs")
    assert info.damaged is None and not info.complete and info.has_weights
    loaded = runs.load_run(ws / "runs" / killed_run.name)
    assert loaded.metrics is None and isinstance(loaded.checkpoint.get("epoch"), int)
    at = open_app("pages/4_compare.py", timeout=TIMEOUT)
    assert not at.exception, at.exception


# ------------------------------------------------------------------------------------------
# races: simultaneous uploads of one name, simultaneous training starts
# ------------------------------------------------------------------------------------------
def test_simultaneous_uploads_of_one_name_get_distinct_names_and_intact_files(app_workspace):
    from cvx_app import workspace

    datas = [_csv(n_users=2 + (k % 3), seed=k) for k in range(8)]
    results: list[tuple[str, str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(datas))

    def upload(k: int) -> None:
        try:
            barrier.wait()
            name, ts = workspace.import_upload(datas[k], "same.csv")
            results.append((name, ts.digest()))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    for _round in range(3):
        results.clear()
        barrier.reset()
        threads = [threading.Thread(target=upload, args=(k,)) for k in range(len(datas))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        names = [n for n, _ in results]
        assert len(set(names)) == len(datas), names
        for name, digest in results:
            entry = workspace.dataset_entry(name)
            assert entry is not None and load_trajectories(entry.path).digest() == digest
    assert not list((app_workspace / "datasets").glob("*.tmp"))


def test_simultaneous_training_starts_let_exactly_one_through(app_workspace, monkeypatch, small_planted):
    from cvx_app import jobs
    from cvx_core.learn.config import TrainConfig

    jobs.training_jobs().clear()
    release = threading.Event()

    def hold(self):  # a job that stays "running" until released, without training
        release.wait(30)
        with self.lock:
            self.status = "done"

    monkeypatch.setattr(jobs.TrainJob, "_work", hold)
    started, refused = [], []
    barrier = threading.Barrier(6)

    def start() -> None:
        barrier.wait()
        try:
            started.append(jobs.start_training("small", small_planted[0], TrainConfig(**FAST)))
        except RuntimeError:
            refused.append(1)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    release.set()
    for job in started:
        job.thread.join(10)
    jobs.training_jobs().clear()
    assert len(started) == 1 and len(refused) == 5


# ------------------------------------------------------------------------------------------
# start-up cleaning and the upload budget
# ------------------------------------------------------------------------------------------
def test_orphan_temporary_files_are_removed_on_first_open_but_young_ones_are_kept(app_workspace, monkeypatch):
    from cvx_app import workspace

    ws = app_workspace
    (ws / "datasets").mkdir(parents=True)
    (ws / "runs" / "run-x").mkdir(parents=True)
    old = [ws / "datasets" / ".a.parquet.x1.tmp", ws / "runs" / "run-x" / ".model.pt.y2.tmp"]
    young = ws / "datasets" / ".b.parquet.z3.tmp"
    keep = ws / "datasets" / "real.parquet"
    for p in [*old, young, keep]:
        p.write_bytes(b"partial")
    past = time.time() - 3600
    for p in old:
        os.utime(p, (past, past))
    monkeypatch.setattr(workspace, "_cleaned", set())
    workspace.workspace_dir()
    assert not any(p.exists() for p in old)
    assert young.exists() and keep.exists()


def test_the_upload_budget_refuses_a_file_that_decodes_past_it_with_how_to_change_it(app_workspace, monkeypatch):
    from cvx_app import workspace

    monkeypatch.setenv("CVX_MAX_DECODED_MB", "0.001")
    with pytest.raises(TrajectoryError, match="CVX_MAX_DECODED_MB") as info:
        workspace.import_upload(_csv(n_users=20), "big.csv")
    assert "over the limit" in str(info.value)
    assert not list((app_workspace / "datasets").glob("big*"))
    monkeypatch.setenv("CVX_MAX_DECODED_MB", "lots")
    with pytest.raises(ValueError, match="CVX_MAX_DECODED_MB"):
        workspace.max_decoded_bytes()
    monkeypatch.delenv("CVX_MAX_DECODED_MB")
    assert workspace.max_decoded_bytes() == 1024 * 2**20


# ------------------------------------------------------------------------------------------
# serving: local bind, no tracebacks to users, CSV exports without live formulas
# ------------------------------------------------------------------------------------------
def test_server_binds_localhost_and_hides_error_details_by_default():
    import tomllib

    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["address"] == "127.0.0.1"
    assert cfg["client"]["showErrorDetails"] == "none"


def test_neutralise_csv_prefixes_formula_cells_and_keeps_numbers():
    from cvx_app.escape import neutralise_csv

    frame = pd.DataFrame(
        {
            "user": pd.Series(["=HYPERLINK(\"x\")", "+1", "-2+3", "@SUM(A1)", "\t=1", "plain", None], dtype=object),
            "score": [-1.5, 2, 3, 4, 5, 6, 7],
        }
    )
    out = neutralise_csv(frame)
    assert out["user"].tolist()[:6] == ["'=HYPERLINK(\"x\")", "'+1", "'-2+3", "'@SUM(A1)", "'\t=1", "plain"]
    assert pd.isna(out["user"].iloc[6])  # missing stays missing (an empty CSV cell)
    assert out["score"].tolist() == frame["score"].tolist()
    assert frame["user"].iloc[0].startswith("=")  # the input is not changed
    text = out.to_csv(index=False)
    assert all(not line.startswith(("=", "+", "-", "@")) for line in text.splitlines())


def test_a_dataset_with_dates_outside_1677_2262_opens_on_the_data_and_explore_pages(app_workspace, open_app, monkeypatch):
    from cvx_core.data.trajectory import Trajectory, TrajectorySet

    rng = np.random.default_rng(0)
    trajs = []
    for u in range(12):
        start = np.datetime64("1500-01-01", "us") if u % 2 else np.datetime64("2500-01-01", "us")
        dts = start + (np.arange(20) * 30 * 86_400 * 10**6).astype("timedelta64[us]")
        trajs.append(Trajectory(f"u{u}", rng.normal(size=(20, 8)).astype(np.float32), dts, label=u % 2))
    save_trajectories(TrajectorySet(trajs, name="far"), app_workspace / "datasets" / "far.parquet")
    monkeypatch.setenv("CVX_DATASET", "far")
    for page in ("pages/1_data.py", "pages/2_explore.py"):
        at = open_app(page, timeout=TIMEOUT)
        assert not at.exception, (page, at.exception)
        assert not at.error, (page, [e.value for e in at.error])
