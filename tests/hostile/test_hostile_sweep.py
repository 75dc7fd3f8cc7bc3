"""Issue 26, round three: new cases written as an attacker would, per class of the issue.

- point 1 (outputs): an output that is a device, FIFO or socket (``--out /dev/full``) is
  refused by every writing option and by the library's atomic writes (it was replaced by a
  file); an input that is one of the files a run writes into ``--out`` (``--config
  RUN/config.json``) is refused before ``--overwrite`` clears it;
- point 6 (one line): a full disk or read-only folder, at any stage of an atomic write
  (creating the temporary file, renaming it), in every writing subcommand, is one line
  naming the output file, and leaves no temporary file;
- point 7 / "Done when" (bad option values): every numeric option of every subcommand,
  read off the parser itself, refuses huge, negative, non-finite, Unicode-digit and
  non-number values in argparse (exit 2, one line), and every choice option refuses an
  unknown choice; empty names (``--model ''``, ``--split-column ''``) are refused;
- point 4 (terminal): control characters in user ids, texts, paths and option values are
  escaped in every subcommand's output and error line;
- point 8: ``forecast`` prints valid JSON (null) when the held-out score is undefined.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import json
import os
import socket
from pathlib import Path
from unittest import mock

import pytest

from cvx_core.cli import build_parser, main
from cvx_core.data import atomic
from cvx_core.data.atomic import OutputPathError
from cvx_core.data.io import save_trajectories
from cvx_core.data.synthetic import PlantedConfig, make_planted_trajectory_set

ESC_USER = "\x1b]0;pwned\x07evil"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweep")
    ts, _ = make_planted_trajectory_set(config=PlantedConfig(n_users=16, dim=3, n_planted=1, mean_posts=6,
                                                             max_posts=8), seed=2, name="s")
    data = save_trajectories(ts, d / "data.parquet")
    rows = [{"user_id": u, "timestamp": f"2024-01-0{k}T00:00:00Z", "embedding": [float(k % 3), 1.0, 0.5 * k],
             "text": f"post \x1b[31m{k}\x1b[0m \u202eevil", "label": int(u == ESC_USER)}
            for u in (ESC_USER, "\x1b[2Jclear") for k in range(1, 9)]
    esc = d / "esc.jsonl"
    esc.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    assert main(["train", str(data), "--out", str(d / "run"), "--epochs", "1"]) == 0
    fifo = d / "fifo"
    os.mkfifo(fifo)
    return {"dir": d, "data": data, "esc": esc, "run": d / "run", "fifo": fifo, "user": ts.user_ids[0]}


def _run(argv):
    """``(exit code, stdout, stderr lines)`` of ``main(argv)``; argparse's exit is a code too."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code
    lines = [ln for ln in err.getvalue().splitlines() if ln.strip() and not ln.startswith("warning:")]
    return code, out.getvalue(), lines


def _one_error_line(code, lines):
    assert code == 2, lines
    assert lines and lines[-1].count("error:") == 1 and not any("Traceback" in ln for ln in lines), lines


# -- point 1: outputs that are not regular files -------------------------------------------
def _special_outputs(env):
    sock_path = env["dir"] / "sock"
    if not sock_path.exists():
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(sock_path))
        s.close()
    return {"device": Path("/dev/full"), "fifo": env["fifo"], "socket": sock_path}


OUTPUT_OPTIONS = [
    ("extract --out", lambda e, p: ["extract", e["data"], "--out", p]),
    ("analyze --out", lambda e, p: ["analyze", e["data"], "--out", p]),
    ("embed --out", lambda e, p: ["embed", e["esc"], "--out", p]),
    ("embed --cache", lambda e, p: ["embed", e["esc"], "--out", e["dir"] / "emb.parquet", "--cache", p]),
    ("train --embedding-cache", lambda e, p: ["train", e["data"], "--out", e["dir"] / "r2", "--embedding-cache", p]),
    ("train --out", lambda e, p: ["train", e["data"], "--out", p]),
    ("forecast --model", lambda e, p: ["forecast", e["data"], "--user", e["user"], "--at", "2031-01-01", "--model", p]),
]


@pytest.mark.parametrize("kind", ["device", "fifo", "socket"])
@pytest.mark.parametrize("name, argv", OUTPUT_OPTIONS, ids=[o[0] for o in OUTPUT_OPTIONS])
def test_an_output_that_is_a_device_fifo_or_socket_is_refused_and_left_alone(env, name, argv, kind):
    target = _special_outputs(env)[kind]
    before = os.stat(target)
    code, _, lines = _run(argv(env, target))
    _one_error_line(code, lines)
    after = os.stat(target)
    assert (after.st_mode, after.st_ino, after.st_rdev) == (before.st_mode, before.st_ino, before.st_rdev)


def test_the_librarys_atomic_writes_never_replace_a_device_or_fifo(env):
    from cvx_core.data.io import load_trajectories

    ts = load_trajectories(env["data"])
    for target in (Path("/dev/full"), Path("/dev/null"), env["fifo"]):
        before = os.stat(target)
        with pytest.raises(OutputPathError, match="device, FIFO or socket"):
            save_trajectories(ts, target)
        with pytest.raises(OutputPathError):
            atomic.atomic_write_bytes(target, b"x")
        assert os.stat(target).st_ino == before.st_ino


@pytest.mark.parametrize("option, fname", [("--config", "config.json"), ("--truth", "metrics.json"),
                                           ("--config", "evaluation.json"), ("--truth", "comparison.json"),
                                           ("--config", ".lock")])
def test_an_input_that_is_one_of_the_runs_own_files_is_refused_before_overwrite_clears_it(env, tmp_path, option,
                                                                                          fname):
    run = tmp_path / "run"
    run.mkdir()
    doc = "{}" if option == "--config" else '{"planted_dims": [0]}'
    (run / fname).write_text(doc, encoding="utf-8")
    code, _, lines = _run(["train", env["data"], "--out", run, "--overwrite", "--epochs", "1", option, run / fname])
    _one_error_line(code, lines)
    assert "destroy the input" in lines[-1] and fname in lines[-1]
    assert (run / fname).read_text(encoding="utf-8") == doc


# -- point 6: a full disk or read-only folder, anywhere in an atomic write -----------------
WRITERS = [
    ("extract", lambda e, t: ["extract", e["data"], "--out", t / "f.parquet"], "f.parquet"),
    ("analyze", lambda e, t: ["analyze", e["data"], "--out", t / "a.parquet"], "a.parquet"),
    ("evaluate", lambda e, t: ["evaluate", t / "run", e["data"]], "evaluation.json"),
    ("compare", lambda e, t: ["compare", t / "run", e["data"], "--permutations", "99"], "comparison.json"),
    ("forecast", lambda e, t: ["forecast", e["data"], "--user", e["user"], "--at", "2031-01-01", "--epochs", "1",
                               "--model", t / "fc"], "forecaster"),
]


@pytest.mark.parametrize("err, words", [(errno.ENOSPC, "disk full"), (errno.EROFS, "read-only file system"),
                                        (errno.EACCES, "permission denied")])
@pytest.mark.parametrize("stage", ["create", "rename"])
@pytest.mark.parametrize("name, argv, fname", WRITERS, ids=[w[0] for w in WRITERS])
def test_a_failed_write_is_one_line_naming_the_file_and_leaves_no_temporary(env, tmp_path, name, argv, fname, err,
                                                                              words, stage):
    import shutil

    shutil.copytree(env["run"], tmp_path / "run")

    def fail(*a, **k):
        raise OSError(err, os.strerror(err))

    target = (atomic.tempfile, "mkstemp") if stage == "create" else (atomic.os, "replace")
    with mock.patch.object(*target, fail):
        code, _, lines = _run(argv(env, tmp_path))
    _one_error_line(code, lines)
    assert words in lines[-1] and fname in lines[-1], lines
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


# -- point 7 / Done when: every option value, read off the parser --------------------------
def _value_options():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for cmd, sp in sub.choices.items():
        for action in sp._actions:
            if not action.option_strings or action.nargs == 0 or isinstance(action, argparse._HelpAction):
                continue
            if action.type is not None or action.choices is not None:
                yield cmd, action


REQUIRED = {
    "train": ["{data}", "--out", "{dir}/never"], "evaluate": ["{run}", "{data}"], "extract": ["{data}", "--out", "{dir}/x.parquet"],
    "analyze": ["{data}", "--out", "{dir}/y.parquet"], "embed": ["{esc}", "--out", "{dir}/z.parquet"],
    "compare": ["{run}", "{data}"], "explain": ["{data}", "--user", "u"],
    "forecast": ["{data}", "--user", "u", "--at", "2031-01-01"],
}
HOSTILE_NUMBERS = ["-1", "-0.5", "1e400", "-1e400", "nan", "inf", "-inf", "99999999999999999999999",
                   "٣", "３", "²", "1_000", "0x10", " 3", "", "1e", "--", "true"]


def _cases():
    for cmd, action in _value_options():
        values = HOSTILE_NUMBERS if action.type is not None else ["not-a-choice", "", "\x1b[2J"]
        for v in values:
            yield pytest.param(cmd, action.option_strings[-1], action, v, id=f"{cmd} {action.option_strings[-1]} {v!r}")


@pytest.mark.parametrize("cmd, option, action, value", list(_cases()))
def test_every_option_of_every_subcommand_refuses_hostile_values_in_argparse(env, cmd, option, action, value):
    if action.type is not None and action.choices is None:
        try:  # an in-range value for this option (e.g. "-0.5" nowhere, "1e400" never) is fine
            parsed = action.type(value)
        except (argparse.ArgumentTypeError, ValueError, TypeError):
            parsed = None
        if parsed is not None:
            pytest.skip(f"{value!r} is a valid {option}")
    fill = {k: str(v) for k, v in env.items()}
    argv = [cmd, *(a.format(**fill) for a in REQUIRED[cmd]), f"{option}={value}"]
    code, out, lines = _run(argv)
    assert code == 2 and out == "", (argv, lines)
    assert lines[-1].startswith("python -m cvx_core") and "error: argument" in lines[-1], lines
    assert "\x1b" not in "".join(lines)


def test_no_numeric_option_takes_plain_int_or_float():
    for cmd, action in _value_options():
        assert action.type not in (int, float), f"{cmd} {action.option_strings}: unbounded {action.type}"


@pytest.mark.parametrize("argv", [["embed", "{esc}", "--out", "{dir}/e.parquet", "--model", ""],
                                  ["embed", "{esc}", "--out", "{dir}/e.parquet", "--model", "  "],
                                  ["train", "{data}", "--out", "{dir}/r3", "--split-column", ""],
                                  ["train", "{data}", "--out", "{dir}/r3", "--group-column", ""]])
def test_empty_names_are_refused(env, argv):
    fill = {k: str(v) for k, v in env.items()}
    code, _, lines = _run([a.format(**fill) for a in argv])
    _one_error_line(code, lines)
    assert not (env["dir"] / "r3" / "model.pt").exists()


# -- point 4: control characters never reach the terminal -----------------------------------
def _controls(text: str) -> list[str]:
    return [c for c in text if (ord(c) < 32 and c not in "\n\t") or 0x7F <= ord(c) < 0xA0]


@pytest.mark.parametrize("argv", [
    ["explain", "{esc}", "--user", ESC_USER],
    ["explain", "{esc}", "--user", ESC_USER, "--format", "json"],
    ["explain", "{esc}", "--user", "\x1b[2Jnobody"],
    ["forecast", "{esc}", "--user", ESC_USER, "--at", "2030-01-01", "--epochs", "1"],
    ["forecast", "{esc}", "--user", "\x1b]0;x\x07", "--at", "2030-01-01"],
    ["extract", "{dir}/\x1b[2Jmissing.jsonl", "--out", "{dir}/x.parquet"],
    ["train", "{esc}", "--out", "{dir}/r4", "--split-column", "\x1b[2J"],
    ["embed", "{esc}", "--out", "{dir}/e.parquet", "--model", "\x1b[2Jmodel"],
    ["compare", "{run}", "{esc}", "--truth", "{dir}/\x07missing.json"],
])
def test_control_characters_are_escaped_in_every_subcommands_output(env, argv):
    fill = {k: str(v) for k, v in env.items()}
    code, out, lines = _run([a.format(**fill) for a in argv])
    assert not _controls(out) and not _controls("\n".join(lines)), (out[:200], lines)
    assert code in (0, 2)
    if code == 0 and argv[-2:] != ["--format", "json"] and argv[0] == "forecast":
        json.loads(out)  # valid JSON; an undefined held-out score is null, not NaN


def test_forecast_prints_null_for_an_undefined_held_out_score(env):
    code, out, _ = _run(["forecast", env["esc"], "--user", ESC_USER, "--at", "2030-01-01", "--epochs", "1"])
    assert code == 0
    doc = json.loads(out)  # strict: NaN would not parse with allow_nan semantics below
    json.dumps(doc, allow_nan=False)
    assert doc["user_id"] == ESC_USER


def test_features_that_overflow_from_an_extreme_config_are_refused_naming_the_user(tmp_path):
    import pandas as pd

    rows = [{"user_id": "u", "timestamp": "2024-01-01T00:00:00Z", "embedding": e}
            for e in ([1.0, 0.0], [0.0, 1.0], [1.0, 1.0])]  # three posts at one instant
    data = tmp_path / "dup.parquet"
    pd.DataFrame(rows).to_parquet(data)
    (tmp_path / "tiny.json").write_text('{"min_dt": 1e-300}')
    code, _, lines = _run(["extract", data, "--out", tmp_path / "f.parquet", "--config", tmp_path / "tiny.json"])
    _one_error_line(code, lines)
    assert "'u'" in lines[-1] and "not finite" in lines[-1] and "min_dt" in lines[-1]
    assert not (tmp_path / "f.parquet").exists()
    (tmp_path / "ok.json").write_text('{"min_dt": 0.001}')
    assert _run(["extract", data, "--out", tmp_path / "f.parquet", "--config", tmp_path / "ok.json"])[0] == 0


@pytest.mark.parametrize("text, words", [('{"cp_threshold": 0.1, "cp_threshold": 0.9}', "appears twice"),
                                         ('{"cp_threshold": 1e400}', "too large"),
                                         ('{"cp_threshold": NaN}', "not JSON"),
                                         ('{"scales": [1, 7], "extra": {"a": 1, "a": 2}}', "appears twice")])
def test_json_that_would_be_read_ambiguously_is_refused_in_every_json_input(env, tmp_path, text, words):
    from cvx_core.data.trajectory import TrajectoryError
    from cvx_core.data.truth import read_planted_dims
    from cvx_core.learn.runs import RunError, load_run

    cfg = tmp_path / "c.json"
    cfg.write_text(text)
    code, _, lines = _run(["extract", env["data"], "--out", tmp_path / "f.parquet", "--config", cfg])
    _one_error_line(code, lines)
    assert words in lines[-1]
    truth = tmp_path / "t.json"
    truth.write_text(text.replace("cp_threshold", "planted_dims"))
    with pytest.raises(TrajectoryError, match=words):
        read_planted_dims(truth)
    import shutil

    run = tmp_path / "run"
    shutil.copytree(env["run"], run)
    doc = (run / "data.json").read_text()
    (run / "data.json").write_text(doc[:-1].rstrip() + ', "digest": "x", "digest": "y"}' if "twice" in words
                                   else doc[:-1].rstrip() + ', "n": ' + text.split(": ", 1)[1].rstrip("}") + "}")
    with pytest.raises(RunError, match="data.json"):
        load_run(run)


def test_json_output_is_strict_json_with_null_for_an_undefined_statistic(env, tmp_path, monkeypatch):
    import shutil

    import cvx_core.learn.compare as compare_mod

    real = compare_mod.compare_run

    class _NaNs:
        def __init__(self, cmp):
            self._cmp = cmp

        def to_dict(self):
            return {**self._cmp.to_dict(), "spearman": float("nan"), "pearson": float("inf")}

    monkeypatch.setattr(compare_mod, "compare_run", lambda *a, **k: _NaNs(real(*a, **k)))
    run = tmp_path / "run"
    shutil.copytree(env["run"], run)
    code, out, lines = _run(["compare", run, env["data"], "--format", "json", "--permutations", "99"])
    assert code == 0, lines
    doc = json.loads(out)  # NaN or Infinity would not be JSON
    assert doc["spearman"] is None and doc["pearson"] is None


def test_evaluating_data_of_another_d_names_the_file_and_both_dimensions(env, tmp_path):
    ts, _ = make_planted_trajectory_set(config=PlantedConfig(n_users=6, dim=5, n_planted=1, mean_posts=4,
                                                             max_posts=6), seed=9, name="d5")
    data = save_trajectories(ts, tmp_path / "d5.parquet")
    code, _, lines = _run(["evaluate", env["run"], data])
    _one_error_line(code, lines)
    assert "d5.parquet" in lines[-1] and "D=5" in lines[-1] and "D=3" in lines[-1]
