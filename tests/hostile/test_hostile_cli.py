"""Issue 26, point 6 (every failure is one line) and the "Done when": every subcommand of
``python -m cvx_core`` is driven with bad option values, hostile paths and damaged files;
each is refused by argparse (exit 2) or exits 2 with one ``error:`` line, never a
traceback, and never writes an output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cvx_core.cli import main
from cvx_core.data.io import save_trajectories
from cvx_core.data.synthetic import PlantedConfig, make_planted_trajectory_set

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    """Paths used by the cases: data, a texts table, a fake run, hostile files."""
    d = tmp_path_factory.mktemp("hostile_cli")
    ts, _ = make_planted_trajectory_set(config=PlantedConfig(n_users=8, dim=4, n_planted=1, mean_posts=6,
                                                             max_posts=8), seed=3, name="c")
    data = save_trajectories(ts, d / "data.parquet")
    posts = d / "posts.csv"
    posts.write_text("user_id,timestamp,text\nu,2024-01-01T00:00:00Z,hello\n", encoding="utf-8")
    fifo = d / "fifo.json"
    os.mkfifo(fifo)
    zero = d / "zero.json"
    zero.symlink_to("/dev/zero")
    (d / "folder.json").mkdir()
    (d / "list.json").write_text("[1, 2]", encoding="utf-8")
    (d / "typed.json").write_text('{"scales": "weekly", "cp_threshold": "high"}', encoding="utf-8")
    (d / "bool.json").write_text('{"cp_threshold": true}', encoding="utf-8")
    (d / "mixed.json").write_text('{"scales": [1, "7"]}', encoding="utf-8")
    (d / "unknown.json").write_text('{"not_a_field": 1}', encoding="utf-8")
    (d / "nan.json").write_text('{"cp_threshold": NaN}', encoding="utf-8")
    (d / "truth_float.json").write_text('{"planted_dims": [0.9, 1.7]}', encoding="utf-8")
    (d / "truth_bad.json").write_text('{"planted_dims": ', encoding="utf-8")
    (d / "afile").write_text("x", encoding="utf-8")
    run = d / "run"  # a run folder whose documents are damaged
    run.mkdir()
    (run / "config.json").write_text('{"train_config": {"epochs": "many"}, "model_spec": {}}', encoding="utf-8")
    (run / "data.json").write_text("{not json", encoding="utf-8")
    fifo_run = d / "fifo_run"
    fifo_run.mkdir()
    os.mkfifo(fifo_run / "config.json")
    zero_run = d / "zero_run"
    zero_run.mkdir()
    (zero_run / "config.json").symlink_to("/dev/zero")
    fc = d / "forecaster"  # a damaged forecaster folder
    fc.mkdir()
    (fc / "forecaster.json").write_text('{"dim": "four", "config": {"ode": {}}}', encoding="utf-8")
    fc2 = d / "forecaster2"
    fc2.mkdir()
    (fc2 / "forecaster.json").write_text('{"dim": 4, "config": {"ode": {"latent_dim": 4}}}', encoding="utf-8")
    (fc2 / "forecaster.pt").write_bytes(b"not torch")
    return {"data": str(data), "posts": str(posts), "fifo": str(fifo), "zero": str(zero), "dir": str(d),
            "run": str(run), "fifo_run": str(fifo_run), "zero_run": str(zero_run), "fc": str(fc), "fc2": str(fc2),
            "out": str(d / "out.parquet"), "outrun": str(d / "newrun"), "user": ts.user_ids[0]}


# (case name, argv template); {x} are filled from ``env``; every case must fail cleanly
CASES = [
    # extract / analyze / embed: engine options and paths
    ("extract workers 0", "extract {data} --out {out} --engine ray --workers 0"),
    ("extract workers -1", "extract {data} --out {out} --engine ray --workers -1"),
    ("extract chunk-users 0", "extract {data} --out {out} --chunk-users 0"),
    ("extract chunk-users 1e3", "extract {data} --out {out} --chunk-users 1e3"),
    ("extract chunk-users unicode", "extract {data} --out {out} --chunk-users ٣"),
    ("extract workers without ray", "extract {data} --out {out} --workers 2"),
    ("extract config folder", "extract {data} --out {out} --config {dir}/folder.json"),
    ("extract config fifo", "extract {data} --out {out} --config {fifo}"),
    ("extract config /dev/zero", "extract {data} --out {out} --config {zero}"),
    ("extract config list", "extract {data} --out {out} --config {dir}/list.json"),
    ("extract config typed", "extract {data} --out {out} --config {dir}/typed.json"),
    ("extract config bool as number", "extract {data} --out {out} --config {dir}/bool.json"),
    ("extract config text in a list", "extract {data} --out {out} --config {dir}/mixed.json"),
    ("extract config unknown", "extract {data} --out {out} --config {dir}/unknown.json"),
    ("extract config NaN", "extract {data} --out {out} --config {dir}/nan.json"),
    ("extract input /dev/zero", "extract {zero} --out {out}"),
    ("extract input fifo", "extract {fifo} --out {out}"),
    ("extract input missing", "extract {dir}/missing.parquet --out {out}"),
    ("extract out is a folder", "extract {data} --out {dir}"),
    ("extract out is the input", "extract {data} --out {data}"),
    ("analyze chunk-users -5", "analyze {data} --out {out} --chunk-users -5"),
    ("analyze workers 0", "analyze {data} --out {out} --engine ray --workers 0"),
    ("analyze out is the input", "analyze {data} --out {data}"),
    ("embed batch-size 0", "embed {posts} --out {out} --batch-size 0"),
    ("embed max-tokens 0", "embed {posts} --out {out} --max-tokens 0"),
    ("embed max-tokens huge", "embed {posts} --out {out} --max-tokens 1000000000"),
    ("embed out is the input", "embed {posts} --out {posts}"),
    # train
    ("train lr 1e300", "train {data} --out {outrun} --lr 1e300"),
    ("train lr nan", "train {data} --out {outrun} --lr nan"),
    ("train lr negative", "train {data} --out {outrun} --lr -1"),
    ("train hidden 1e8", "train {data} --out {outrun} --hidden 1e8"),
    ("train hidden 100000000", "train {data} --out {outrun} --hidden 100000000"),
    ("train epochs 0", "train {data} --out {outrun} --epochs 0"),
    ("train batch-size 0", "train {data} --out {outrun} --batch-size 0"),
    ("train max-len 0", "train {data} --out {outrun} --max-len 0"),
    ("train seed -1", "train {data} --out {outrun} --seed -1"),
    ("train patience unicode", "train {data} --out {outrun} --patience ٣"),
    ("train cv 1", "train {data} --out {outrun} --cv 1 --epochs 1"),
    ("train workers 0", "train {data} --out {outrun} --workers 0"),
    ("train out an existing file", "train {data} --out {dir}/afile"),
    ("train config folder", "train {data} --out {outrun} --config {dir}/folder.json"),
    ("train config typed", "train {data} --out {outrun} --config {dir}/typed.json"),
    ("train truth float dims", "train {data} --out {outrun} --truth {dir}/truth_float.json"),
    ("train truth broken", "train {data} --out {outrun} --truth {dir}/truth_bad.json"),
    ("train input /dev/zero", "train {zero} --out {outrun}"),
    ("train finetune without encoder", "train {data} --out {outrun} --finetune"),
    # evaluate / compare
    ("evaluate damaged run", "evaluate {run} {data}"),
    ("evaluate config.json fifo", "evaluate {fifo_run} {data}"),
    ("evaluate config.json /dev/zero", "evaluate {zero_run} {data}"),
    ("evaluate missing run", "evaluate {dir}/norun {data}"),
    ("evaluate by bad", "evaluate {run} {data} --by weeks"),
    ("compare permutations 2e9", "compare {run} {data} --permutations 2000000000"),
    ("compare permutations 0", "compare {run} {data} --permutations 0"),
    ("compare damaged run", "compare {run} {data}"),
    ("compare truth float dims", "compare {run} {data} --truth {dir}/truth_float.json"),
    # explain
    ("explain terms 0", "explain {data} --user x --terms 0"),
    ("explain posts -1", "explain {data} --user x --posts -1"),
    ("explain unknown user", "explain {data} --user nobody"),
    ("explain input fifo", "explain {fifo} --user x"),
    # forecast
    ("forecast at NaT", "forecast {data} --user {user} --at NaT"),
    ("forecast at today", "forecast {data} --user {user} --at today"),
    ("forecast at 2031", "forecast {data} --user {user} --at 2031"),
    ("forecast at year 100000", "forecast {data} --user {user} --at 100000-01-01"),
    ("forecast at unicode digits", "forecast {data} --user {user} --at ٢٠٣١-٠١-٠١"),
    ("forecast at Feb 30", "forecast {data} --user {user} --at 2031-02-30"),
    ("forecast at before last post", "forecast {data} --user {user} --at 1970-01-02"),
    ("forecast epochs 0", "forecast {data} --user {user} --at 2031-01-01 --epochs 0"),
    ("forecast model is a file", "forecast {data} --user {user} --at 2031-01-01 --model {dir}/afile"),
    ("forecast damaged config", "forecast {data} --user {user} --at 2031-01-01 --model {fc}"),
    ("forecast damaged weights", "forecast {data} --user {user} --at 2031-01-01 --model {fc2}"),
]


def _argv(template: str, env: dict[str, str]) -> list[str]:
    return [part.format(**env) for part in template.split(" ")]


@pytest.mark.parametrize("name, template", CASES, ids=[c[0] for c in CASES])
def test_every_subcommand_refuses_bad_values_without_a_traceback(env, capsys, name, template):
    before = sorted(os.listdir(env["dir"]))
    try:
        code = main(_argv(template, env))
    except SystemExit as exc:  # argparse refused the option value
        code = exc.code
        err = capsys.readouterr().err
        assert code == 2 and "error:" in err.splitlines()[-1]
    else:
        err = capsys.readouterr().err.strip()
        assert code == 2, err
        assert err.startswith("error:") and len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert sorted(os.listdir(env["dir"])) == before  # nothing written, nothing left behind


def test_bad_values_exit_2_without_a_traceback_in_a_real_process(env):
    for template in ("extract {data} --out {out} --chunk-users 0", "forecast {data} --user {user} --at NaT",
                     "evaluate {fifo_run} {data}", "compare {run} {data} --permutations 2000000000"):
        proc = subprocess.run([sys.executable, "-m", "cvx_core", *_argv(template, env)], capture_output=True,
                              text=True, timeout=120, cwd=ROOT)
        assert proc.returncode == 2, (template, proc.stderr)
        assert "Traceback" not in proc.stderr and proc.stderr.strip().splitlines()[-1].count("error:") == 1


def test_an_unexpected_exception_is_one_internal_error_line(env, capsys, monkeypatch):
    import cvx_core.cli as cli

    def boom(args):
        raise KeyError("surprise")

    monkeypatch.setitem(cli._HANDLERS, "extract", "_boom")
    monkeypatch.setattr(cli, "_boom", boom, raising=False)
    assert main(["extract", env["data"], "--out", env["out"]]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: internal error (KeyError") and len(err.splitlines()) == 1


def test_forecast_prints_valid_json_for_a_good_time(env, capsys):
    code = main(["forecast", env["data"], "--user", env["user"], "--at", "2200-01-01T00:00:00Z", "--epochs", "1"])
    out = capsys.readouterr().out
    assert code == 0
    doc = json.loads(out)
    assert doc["at"].startswith("2200-01-01") and all(isinstance(x, float) for x in doc["embedding"])


def test_train_on_a_full_disk_says_disk_full_in_one_line(env, capsys, monkeypatch, tmp_path):
    import errno

    import cvx_core.data.atomic as atomic

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "replace", full)
    assert main(["train", env["data"], "--out", str(tmp_path / "run"), "--epochs", "1", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "disk full" in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not list(tmp_path.rglob("*.tmp"))


def test_option_types_take_any_text_and_either_parse_in_range_or_refuse():
    import argparse

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from cvx_core.cli_support import float_in, int_in

    ints, floats = int_in(1, 4096), float_in(0, 10)

    @settings(max_examples=300, deadline=None)
    @given(st.one_of(st.text(max_size=12), st.integers().map(str), st.floats().map(repr)))
    def check(text):
        for parse, lo, hi in ((ints, 1, 4096), (floats, 0, 10)):
            try:
                value = parse(text)
            except argparse.ArgumentTypeError:
                continue
            assert lo <= value <= hi and text.isascii()

    check()
