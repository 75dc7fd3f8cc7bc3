"""Issue 26, point 4 (terminal output): ids and texts are printed with their control
characters escaped as ``repr`` does, in ``explain --format text``, in the JSON printers
(as ``\\uXXXX``, the same JSON value) and in every other line the CLI prints (errors,
warnings, summaries)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cvx_core.cli import main
from cvx_core.data.io import save_trajectories
from cvx_core.data.trajectory import Trajectory, TrajectorySet
from cvx_core.data.terminal import EscapingWriter, escape_control, escape_output, json_safe

EVIL_ID = "evil\x1b]0;pwned\x07\x1b[2J\u202e\nfake line"
EVIL_TEXT = "war army navy \x1b[31mred\x1b[0m \x9b2J \x07bell\u2028sep"
RAW = ("\x1b", "\x07", "\x9b", "\u202e", "\u2028")


def _evil_file(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 8)) + np.r_[5.0, np.zeros(7)]
    b = rng.normal(size=(6, 8)) - np.r_[5.0, np.zeros(7)]
    texts = tuple([EVIL_TEXT] * 6 + ["taxes jobs economy \x1b]2;title\x07"] * 6)
    days = np.datetime64("2024-01-01", "us") + np.arange(12) * np.timedelta64(1, "D")
    tr = Trajectory(EVIL_ID, np.vstack([a, b]).astype(np.float32), days, label=1, texts=texts)
    return save_trajectories(TrajectorySet([tr], name="evil"), tmp_path / "evil.parquet")


def test_escape_control_writes_non_printables_as_repr_does():
    assert escape_control("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert escape_control("x\u202ey\n") == "x\\u202ey\\n"
    assert escape_control("plain text, ünïcode ✓") == "plain text, ünïcode ✓"
    assert escape_output("line\n\tnext\x1b") == "line\n\tnext\\x1b"


def test_json_safe_keeps_the_same_json_value_and_prints_no_control_character():
    value = {"id": EVIL_ID, "text": EVIL_TEXT + "\U000e0001\x7f"}
    text = json_safe(json.dumps(value, ensure_ascii=False, indent=2))
    assert json.loads(text) == value
    assert all(ch.isprintable() or ch == "\n" for ch in text)


def test_escaping_writer_escapes_everything_printed(capsys):
    import sys

    w = EscapingWriter(sys.stdout)
    print("id \x1b]0;t\x07", file=w)
    assert capsys.readouterr().out == "id \\x1b]0;t\\x07\n"


def test_explain_text_prints_ids_and_texts_with_control_characters_escaped(tmp_path, capsys):
    path = _evil_file(tmp_path)
    assert main(["explain", str(path), "--user", EVIL_ID, "--posts", "2"]) == 0
    out = capsys.readouterr().out
    assert not any(ch in out for ch in RAW)
    assert "evil\\x1b]0;pwned\\x07\\x1b[2J\\u202e\\nfake line" in out  # the id stays on its own line
    assert not any(line.startswith("fake line") for line in out.splitlines())
    if "example" in out:
        assert "\\x1b[31mred" in out


def test_explain_json_is_valid_and_free_of_control_characters(tmp_path, capsys):
    path = _evil_file(tmp_path)
    assert main(["explain", str(path), "--user", EVIL_ID, "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert not any(ch in out for ch in RAW)
    doc = json.loads(out)
    assert doc["user_id"] == EVIL_ID  # the same value, escaped only in print


@pytest.mark.parametrize("argv", [["explain", "{path}", "--user", "no\x1b[2Jbody"],
                                  ["extract", "{dir}/mis\x1b]0;x\x07sing.parquet", "--out", "{dir}/o.parquet"]])
def test_error_lines_escape_control_characters_from_ids_and_paths(tmp_path, capsys, argv):
    path = _evil_file(tmp_path)
    assert main([a.format(path=path, dir=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and not any(ch in err for ch in RAW) and "\\x1b" in err
