"""``python -m cvx_core compare RUN DATA [--truth T] --format json|text``: one JSON object with
the statistics of cvx_core.learn.compare, the text form with the verdict, its cut-off and
reason, escaped control characters, and clear refusals."""

from __future__ import annotations

import json

import pytest

from cvx_core.cli import COMPARISON_FILE, main
from cvx_core.data.io import load_trajectories, save_trajectories
from cvx_core.data.synthetic import PlantedConfig, make_planted_trajectory_set
from cvx_core.learn.compare import compare_run
from cvx_core.learn.runs import load_run


def _no_nan(text: str) -> dict:
    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in the JSON output")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = PlantedConfig(n_users=40, dim=12, n_planted=3, mean_posts=8, max_posts=20)
    ts, truth = make_planted_trajectory_set(config=cfg, seed=4, name="cli")
    folder = tmp_path_factory.mktemp("cli-compare")
    path = save_trajectories(ts, folder / "data.parquet")
    (folder / "truth.json").write_text(json.dumps(truth))
    run = folder / "run\x1b[31m"  # a control character in the run's path
    assert main(["train", str(path), "--out", str(run), "--epochs", "2", "--hidden", "8", "--batch-size", "8",
                 "--device", "cpu", "--seed", "3", "--quiet"]) == 0
    return run, path, folder / "truth.json"


def test_json_format_prints_one_object_with_the_cores_numbers(trained, capsys):
    run, path, truth = trained
    capsys.readouterr()
    assert main(["compare", str(run), str(path), "--truth", str(truth), "--format", "json", "--permutations", "199"]) == 0
    out = capsys.readouterr().out
    doc = _no_nan(out)
    assert len(out.strip().splitlines()) == 1
    for key in ("spearman", "pearson", "p_value", "permutations", "significant", "level", "verdict", "top_k",
                "planted_share", "cutoff", "reason"):
        assert key in doc, key
    assert isinstance(doc["significant"], bool) and doc["permutations"] == 199 and doc["cutoff"] == 0.05
    assert doc["level"] in ("none", "weak", "moderate", "strong")
    assert [t["k"] for t in doc["top_k"]] == [3] and all({"k", "overlap", "chance"} <= t.keys() for t in doc["top_k"])
    loaded = load_run(run)
    expected = compare_run(loaded.model, load_trajectories(path), split=loaded.data["split"],
                           config=loaded.config.features, planted_dims=json.loads(truth.read_text())["planted_dims"],
                           n_permutations=199, seed=loaded.config.seed).to_dict()
    for key in ("spearman", "pearson", "p_value", "level", "verdict", "planted_share", "top_k"):
        assert doc[key] == expected[key], key
    assert _no_nan((run / COMPARISON_FILE).read_text())["level"] == doc["level"]


def test_without_truth_there_is_no_planted_share(trained, capsys):
    run, path, _ = trained
    capsys.readouterr()
    assert main(["compare", str(run), str(path), "--format", "json", "--permutations", "99"]) == 0
    assert "planted_share" not in _no_nan(capsys.readouterr().out)


def test_text_is_the_default_with_verdict_cutoff_and_reason_and_escaped_control_characters(trained, capsys):
    run, path, _ = trained
    capsys.readouterr()
    assert main(["compare", str(run), str(path), "--permutations", "99"]) == 0
    out = capsys.readouterr().out
    assert "verdict:" in out and "cut-off p < 0.05" in out and "reason:" in out and "label permutations" in out
    assert "\x1b" not in out and "\\x1b" in out and "nan" not in out.lower()


@pytest.mark.parametrize("count", ["5", "1000000", "-1"])
def test_absurd_permutation_counts_exit_2_with_the_allowed_range(trained, capsys, count):
    run, path, _ = trained
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:  # argparse refuses the value before anything loads
        main(["compare", str(run), str(path), "--permutations", count])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # argparse's usage, then one line naming the option and its range
    assert "argument --permutations" in last and "expected 99 to 100,000" in last


def test_a_broken_truth_file_is_refused_naming_the_file(trained, tmp_path, capsys):
    run, path, _ = trained
    bad = tmp_path / "truth.json"
    bad.write_text('{"planted_dims": [1, "two"]}')
    capsys.readouterr()
    assert main(["compare", str(run), str(path), "--truth", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "planted_dims" in err
