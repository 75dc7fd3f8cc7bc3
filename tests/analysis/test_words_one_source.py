"""Screen, CLI and export take a change point's words from one function
(:func:`cvx_core.analysis.explain.explain_changepoints`), and number posts consistently."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cvx_core.analysis.batch import analyze_set
from cvx_core.analysis.explain import explain_changepoints
from cvx_core.data.io import load_trajectories
from cvx_core.data.trajectory import TrajectorySet

REAL = Path(__file__).resolve().parents[2] / "sample_data" / "real_text.parquet"


@pytest.fixture(scope="module")
def real_with_changes() -> TrajectorySet:
    ts = load_trajectories(REAL)
    keep = [tr for tr in ts if tr.user_id in ("roosevelt-32", "truman", "reagan", "nixon")]
    return TrajectorySet(keep, name="real")


def test_exported_words_equal_the_words_on_screen_for_the_same_change_point(real_with_changes):
    pytest.importorskip("streamlit")
    from cvx_app import explore, exports

    ts = real_with_changes
    frame = exports.changepoints_frame(ts, analyze_set(ts))
    assert len(frame) >= 2  # the real sample has change points at the default sensitivity
    for row in frame.itertuples(index=False):
        screen = {w.index: w for w in explore.change_words(ts, row.user_id)}
        cp = screen[int(row.index)]
        assert row.words_rose == ", ".join(cp.terms_after)
        assert row.words_fell == ", ".join(cp.terms_before)
        assert row.words_rose  # real words, stop words removed
        assert not {"and", "the", "our", "will", "their"} & set(row.words_rose.split(", "))


def test_cli_text_counts_posts_from_one_and_json_index_from_zero(real_with_changes):
    tr = real_with_changes["truman"]
    exp = explain_changepoints(tr)
    assert exp.change_points
    c = exp.change_points[0]
    text = exp.to_text()
    assert f"change point at post {c.index + 1} " in text
    assert f"post {c.index + 1} of {tr.n_posts}" in c.narrative
    assert json.loads(json.dumps(exp.to_dict()))["change_points"][0]["index"] == c.index
    assert all(f"(post {p.index + 1}," in text for p in c.posts_before + c.posts_after)


def test_cli_explain_takes_sensitivity_and_rejects_a_rate_outside_0_1(capsys):
    from cvx_core.cli import main

    assert main(["explain", str(REAL), "--user", "roosevelt-32", "--format", "json", "--sensitivity", "0.05"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert 7 in [c["index"] for c in out["change_points"]]  # post 8 of 13, January 1941
    with pytest.raises(SystemExit) as exited:  # argparse refuses the value before anything loads
        main(["explain", str(REAL), "--user", "roosevelt-32", "--sensitivity", "1.5"])
    assert exited.value.code == 2
    assert "sensitivity" in capsys.readouterr().err
