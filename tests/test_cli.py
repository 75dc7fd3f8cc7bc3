"""Command line: ``extract`` writes the analytic features per user, ``train`` writes a
loadable run folder with metrics and the attention comparison, ``compare`` re-reads a run,
and bad input exits with status 2 and a one-line message."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from cvx_core.cli import COMPARISON_FILE, main
from cvx_core.data.io import save_trajectories
from cvx_core.data.synthetic import PlantedConfig, make_planted_trajectory_set
from cvx_core.features.analytic import AnalyticBackend, feature_names
from cvx_core.learn.runs import METRICS_FILE, load_run


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    cfg = PlantedConfig(n_users=30, dim=10, n_planted=2, mean_posts=8, max_posts=20)
    ts, truth = make_planted_trajectory_set(config=cfg, seed=4, name="cli")
    folder = tmp_path_factory.mktemp("cli")
    path = save_trajectories(ts, folder / "data.parquet")
    (folder / "truth.json").write_text(json.dumps(truth))
    return ts, path, folder / "truth.json"


def test_extract_writes_user_label_and_one_named_column_per_feature(data_file, tmp_path, capsys):
    ts, path, _ = data_file
    out = tmp_path / "features.parquet"
    assert main(["extract", str(path), "--out", str(out)]) == 0
    frame = pd.read_parquet(out)
    names = feature_names(ts.dim)
    assert list(frame.columns) == ["user_id", "label", *names]
    assert frame["user_id"].tolist() == ts.user_ids
    assert frame["label"].tolist() == ts.labels.tolist()
    tr = ts.at(3)
    expected = AnalyticBackend.extract_all(tr.embeddings, tr.timestamps)
    np.testing.assert_allclose(frame.loc[3, names].to_numpy(dtype=float), expected, rtol=1e-12)
    assert "30 users" in capsys.readouterr().out
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_train_writes_a_loadable_run_with_metrics_and_comparison(data_file, tmp_path, capsys):
    ts, path, truth = data_file
    run = tmp_path / "run"
    code = main(["train", str(path), "--out", str(run), "--epochs", "2", "--hidden", "8", "--batch-size", "8",
                 "--device", "cpu", "--seed", "3", "--truth", str(truth)])
    assert code == 0
    text = capsys.readouterr().out
    assert "test AUC" in text and "baseline" in text and "epoch   2" in text
    metrics = json.loads((run / METRICS_FILE).read_text())
    assert metrics["epochs"] == 2 and metrics["device"] == "cpu"
    comparison = json.loads((run / COMPARISON_FILE).read_text())
    assert comparison["attribution_kind"] == "abs_class_difference" and comparison["planted_spearman"] is not None
    loaded = load_run(run)
    assert loaded.config.seed == 3 and loaded.config.epochs == 2
    assert main(["compare", str(run), str(path), "--permutations", "99"]) == 0
    assert "Spearman" in capsys.readouterr().out


def test_bad_input_exits_with_status_2_and_a_one_line_message(tmp_path, capsys):
    assert main(["extract", str(tmp_path / "missing.parquet"), "--out", str(tmp_path / "f.parquet")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1
    with pytest.raises(SystemExit):
        main(["train", "x.parquet"])  # --out is required


def test_python_dash_m_cvx_core_runs_the_cli():
    proc = subprocess.run([sys.executable, "-m", "cvx_core", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "train" in proc.stdout and "extract" in proc.stdout


# ------------------------------------------------------------------------------------------
# embed / explain (text in, words out)
# ------------------------------------------------------------------------------------------
def _posts_csv(path):
    war = ["The army and the navy fought the war overseas.", "Our soldiers won hard battles in the war.",
           "The navy and the army defend the nation at war."]
    econ = ["Lower taxes and new jobs grow the economy.", "The economy needs lower taxes and more jobs.",
            "Inflation hurts jobs, wages and the economy."]
    rows = []
    for k in range(12):
        text = (war if k < 6 else econ)[k % 3]
        rows.append({"user_id": "pres", "timestamp": f"{1950 + k}-01-20T00:00:00Z", "text": text, "label": 1})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_embed_then_explain_text_and_json(tmp_path, capsys):
    posts = _posts_csv(tmp_path / "posts.csv")
    out = tmp_path / "traj.parquet"
    cache = tmp_path / "cache.sqlite"
    assert main(["embed", str(posts), "--out", str(out), "--model", "minilm", "--batch-size", "4",
                 "--max-tokens", "64", "--cache", str(cache)]) == 0
    from cvx_core.data.io import load_trajectories
    from cvx_core.data.text import EmbeddingCache

    ts = load_trajectories(out)
    assert ts.dim == 384 and ts["pres"].texts[0].startswith("The army")
    assert EmbeddingCache(cache).stats().entries == 6  # six distinct texts
    capsys.readouterr()
    assert main(["explain", str(out), "--user", "pres", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["user_id"] == "pres" and doc["change_points"], doc
    cp = doc["change_points"][0]
    assert cp["index"] == 6
    assert {"war", "army", "navy"} & {t["term"] for t in cp["terms_before"]}
    assert {"economy", "jobs", "taxes"} & {t["term"] for t in cp["terms_after"]}
    assert main(["explain", str(out), "--user", "pres"]) == 0
    text = capsys.readouterr().out
    assert "terms before:" in text and "example after" in text
    # the report ends by saying what the sensitivity promises and what real histories got
    assert text.rstrip().splitlines()[-1].startswith("Sensitivity 0.05. At most 5% of histories with no change")
    assert "29% of one speaker's 8 consecutive" in text


def test_explain_unknown_user_and_text_only_input_exit_2(tmp_path, capsys):
    posts = _posts_csv(tmp_path / "posts.csv")
    assert main(["explain", str(posts), "--user", "pres"]) == 2  # texts but no embedding
    err = capsys.readouterr().err
    assert "embed" in err and len(err.strip().splitlines()) == 1
    ts = make_planted_trajectory_set(config=PlantedConfig(n_users=3, dim=4, n_planted=1), seed=1)[0]
    path = save_trajectories(ts, tmp_path / "t.parquet")
    assert main(["explain", str(path), "--user", "nobody"]) == 2
    assert "no user 'nobody'" in capsys.readouterr().err


def test_train_with_a_test_set_cv_and_head_then_evaluate_early(tmp_path, capsys):
    cfg = PlantedConfig(n_users=42, dim=6, n_planted=2, mean_posts=8, max_posts=12)
    ts, _ = make_planted_trajectory_set(config=cfg, seed=8, name="all")
    train_ts, test_ts = ts.subset(ts.user_ids[:30]), ts.subset(ts.user_ids[30:])  # one generator: one signal
    tr_path = save_trajectories(train_ts, tmp_path / "train.parquet")
    te_path = save_trajectories(test_ts, tmp_path / "test.parquet")
    (tmp_path / "features.json").write_text(json.dumps({"time_unit": "hours", "scales": [24.0, 168.0]}))
    run = tmp_path / "run"
    code = main(["train", str(tr_path), "--out", str(run), "--test-data", str(te_path), "--cv", "3", "--head", "linear",
                 "--config", str(tmp_path / "features.json"), "--epochs", "2", "--device", "cpu", "--quiet",
                 "--no-attention"])
    assert code == 0
    out = capsys.readouterr().out
    assert "3-fold CV" in out and "head: linear" in out and "warning:" in out
    m = json.loads((run / METRICS_FILE).read_text())
    assert m["n_test"] == 12 and m["head"] == "linear" and m["cv"]["k"] == 3
    assert set(m["f1_per_class"]) == {"0", "1"} and m["confusion"]["classes"] == ["0", "1"]
    assert load_run(run).config.features.time_unit == "hours"
    assert main(["evaluate", str(run), str(te_path), "--early"]) == 0
    out = capsys.readouterr().out
    assert "ERDE5" in out and "all 12 users" in out
    doc = json.loads((run / "evaluation.json").read_text())
    assert doc["n"] == 12 and doc["early"]["posts_seen"][0] == 1.0


def test_split_column_names_the_bad_row_and_cv_needs_enough_users(tmp_path, capsys):
    cfg = PlantedConfig(n_users=12, dim=4, n_planted=1, mean_posts=5, max_posts=6)
    ts, _ = make_planted_trajectory_set(config=cfg, seed=1, name="s")
    path = save_trajectories(ts, tmp_path / "s.parquet")
    frame = pd.read_parquet(path)
    frame["part"] = "train"
    frame.loc[3, "part"] = "dev"
    frame.to_parquet(tmp_path / "p.parquet")
    assert main(["train", str(tmp_path / "p.parquet"), "--out", str(tmp_path / "r"), "--split-column", "part"]) == 2
    err = capsys.readouterr().err
    assert "'part'" in err and "'dev'" in err and "train, val or test" in err


@pytest.mark.parametrize("sensitivity, real", [("0.2", "39%"), ("0.05", "29%")])
def test_analyze_states_the_calibrated_rate_and_the_measured_rate_on_real_drifting_histories(
        data_file, tmp_path, capsys, sensitivity, real):
    _, path, _ = data_file
    assert main(["analyze", str(path), "--out", str(tmp_path / "a.parquet"), "--sensitivity", sensitivity]) == 0
    out = capsys.readouterr().out
    assert f"at sensitivity {float(sensitivity):g} (false-alarm rate per user without a change)" in out
    assert f"Real histories drift and get more: {real} of one speaker's 8 consecutive" in out
