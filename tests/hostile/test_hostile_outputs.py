"""Issue 26, point 1 (outputs) and point 9 (leftovers): an output that resolves to an input
is refused in every writing command, whatever the path spelling (same path, symlink, hard
link, ``..``), and the input stays byte for byte; every output goes through a temporary
file named by its writer's process id, swept once that process is dead; out-of-core
grouping copies live in a scratch folder that is swept the same way."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cvx_core.cli import main
from cvx_core.data.atomic import (
    OutputPathError,
    atomic_write_bytes,
    check_output,
    describe_os_error,
    scratch_dir,
    sweep_stale,
)
from cvx_core.data.io import save_trajectories
from cvx_core.data.synthetic import PlantedConfig, make_planted_trajectory_set


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    ts, _ = make_planted_trajectory_set(config=PlantedConfig(n_users=6, dim=4, n_planted=1, mean_posts=6,
                                                             max_posts=8), seed=1, name="h")
    folder = tmp_path_factory.mktemp("outputs")
    return save_trajectories(ts, folder / "data.parquet")


def _spellings(src: Path, tmp: Path) -> dict[str, Path]:
    link = tmp / "link.parquet"
    link.symlink_to(src)
    hard = tmp / "hard.parquet"
    os.link(src, hard)
    return {"same": src, "symlink": link, "hardlink": hard, "dotdot": src.parent / ".." / src.parent.name / src.name}


@pytest.mark.parametrize("command", ["extract", "analyze"])
@pytest.mark.parametrize("spelling", ["same", "symlink", "hardlink", "dotdot"])
def test_extract_and_analyze_refuse_an_output_that_is_the_input_and_keep_it_intact(
        data_file, tmp_path, capsys, command, spelling):
    src = tmp_path / "in.parquet"
    src.write_bytes(data_file.read_bytes())
    before = src.read_bytes()
    out = _spellings(src, tmp_path)[spelling]
    assert main([command, str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "input" in err and len(err.splitlines()) == 1
    assert src.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_embed_refuses_an_output_or_cache_that_is_the_input(tmp_path, capsys):
    posts = tmp_path / "posts.csv"
    posts.write_text("user_id,timestamp,text\nu,2024-01-01T00:00:00Z,hello\n", encoding="utf-8")
    before = posts.read_bytes()
    assert main(["embed", str(posts), "--out", str(posts)]) == 2
    assert main(["embed", str(posts), "--out", str(tmp_path / "o.parquet"), "--cache", str(posts)]) == 2
    assert main(["embed", str(posts), "--out", str(tmp_path / "o.parquet"), "--cache", str(tmp_path / "o.parquet")]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 3 and "Traceback" not in err
    assert posts.read_bytes() == before


def test_train_refuses_test_data_inside_the_output_and_outputs_that_are_files(data_file, tmp_path, capsys):
    afile = tmp_path / "file.txt"
    afile.write_text("keep", encoding="utf-8")
    assert main(["train", str(data_file), "--out", str(afile), "--epochs", "1"]) == 2
    assert main(["extract", str(data_file), "--out", str(tmp_path)]) == 2  # an existing folder
    assert main(["extract", str(data_file), "--out", str(afile / "x.parquet")]) == 2  # parent is a file
    err = capsys.readouterr().err
    assert err.count("error:") == 3 and "Traceback" not in err
    assert afile.read_text(encoding="utf-8") == "keep"


def test_library_writers_refuse_the_input_too(data_file, tmp_path):
    from cvx_core.scale.stream import analyze_stream, extract_stream

    src = tmp_path / "in.parquet"
    src.write_bytes(data_file.read_bytes())
    with pytest.raises(OutputPathError):
        extract_stream(src, src)
    with pytest.raises(OutputPathError):
        analyze_stream(src, out=tmp_path / "." / "in.parquet")
    with pytest.raises(OutputPathError):
        check_output(tmp_path, [src])  # a folder is not a file output


def test_temporary_files_of_dead_writers_are_swept_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".features.parquet.{dead_pid}.abcd1234.tmp"
    live = tmp_path / f".features.parquet.{os.getppid()}.abcd1234.tmp"
    foreign = tmp_path / "notes.tmp"  # not a CVX temporary name: never touched
    for p in (stale, live, foreign):
        p.write_bytes(b"x")
    removed = sweep_stale(tmp_path)
    assert removed == [stale] and live.exists() and foreign.exists()


def test_a_killed_writer_leaves_a_temporary_file_that_the_next_write_sweeps(tmp_path):
    code = ("import os, sys\n"
            "from cvx_core.data.atomic import atomic_replace\n"
            "def w(fh):\n    fh.write(b'half'); fh.flush(); os._exit(9)\n"
            f"atomic_replace({str(tmp_path / 'out.parquet')!r}, w)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, "-c", code], env=env, timeout=60)
    assert proc.returncode == 9
    left = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1 and not (tmp_path / "out.parquet").exists()
    sub = subprocess.run([sys.executable, "-c",
                          f"from cvx_core.data.atomic import atomic_write_bytes; "
                          f"atomic_write_bytes({str(tmp_path / 'other.json')!r}, b'1')"], env=env, timeout=60)
    assert sub.returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.json"]


def test_scratch_folders_of_dead_processes_are_swept_before_a_new_one(tmp_path):
    dead_pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                                  capture_output=True, text=True).stdout)
    old = tmp_path / f"cvx-groupby-{dead_pid}-zz9"
    old.mkdir()
    (old / "part-0.bin").write_bytes(b"a copy of the input")
    new = scratch_dir("groupby", dir=tmp_path)
    assert not old.exists() and new.is_dir() and new.name.startswith(f"cvx-groupby-{os.getpid()}-")


def test_out_of_core_grouping_removes_its_copy_and_names_it_by_process(tmp_path):
    import pandas as pd

    from cvx_core.scale.stream import extract_stream

    rows = [{"user_id": u, "timestamp": f"2024-01-0{d}T00:00:00Z", "e0": float(d), "e1": 1.0}
            for d in range(1, 5) for u in ("a", "b")]  # interleaved users: not grouped
    src = tmp_path / "mixed.csv"
    pd.DataFrame(rows).to_csv(src, index=False)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    res = extract_stream(src, tmp_path / "f.parquet", scratch_dir=scratch)
    assert not res.grouped and res.n_users == 2
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "disk full"), (errno.EROFS, "read-only"),
                                         (errno.EACCES, "permission denied")])
def test_os_errors_are_one_line_naming_the_problem(code, words):
    line = describe_os_error(OSError(code, os.strerror(code), "/data/out.parquet"))
    assert words in line and "/data/out.parquet" in line and "\n" not in line


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "disk full"), (errno.EROFS, "read-only file system"),
                                         (errno.EACCES, "permission denied")])
def test_extract_on_a_full_or_read_only_disk_says_so_in_one_line(data_file, tmp_path, capsys, monkeypatch, code, words):
    import cvx_core.data.atomic as atomic

    def full(*a, **k):
        raise OSError(code, os.strerror(code), str(tmp_path / "f.parquet"))

    monkeypatch.setattr(atomic.os, "replace", full)
    assert main(["extract", str(data_file), "--out", str(tmp_path / "f.parquet")]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_atomic_write_leaves_no_temporary_file(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"1")
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]
