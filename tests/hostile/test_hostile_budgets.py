"""Issue 26, point 5 (budgets for size and time): every budget is documented with its
default, configurable through its environment variable, and refused or applied with a
message naming it: characters per text cut before tokenising, posts per user in training,
D, Ray workers capped at the CPUs, JSON files regular and bounded, permutations capped,
the change-point window."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cvx_core.data import budgets as limits
from cvx_core.cli import main
from cvx_core.data.io import save_trajectories
from cvx_core.data.synthetic import PlantedConfig, make_planted_trajectory_set
from cvx_core.data.text import TextTruncationWarning, embed_texts
from cvx_core.data.budgets import BudgetError

ROOT = Path(__file__).resolve().parents[2]


class _RecordingEncoder:
    """A TextEncoder that records the longest text its tokenizer and model were given."""

    model_id = "recording@0"
    max_tokens = 16
    dim = 3

    def __init__(self) -> None:
        self.longest = 0

    def count_tokens(self, texts):
        self.longest = max(self.longest, *(len(t) for t in texts))
        return [len(t.split()) + 2 for t in texts]

    def encode(self, texts):
        self.longest = max(self.longest, *(len(t) for t in texts))
        return np.array([[len(t), t.count("a"), 1.0] for t in texts], dtype=np.float32)


def test_a_10mb_text_is_cut_to_the_character_budget_before_tokenising():
    enc = _RecordingEncoder()
    huge = "a " * 5_000_000
    with pytest.warns(TextTruncationWarning):
        out = embed_texts([huge, "short text"], encoder=enc)
    assert enc.longest == limits.text_char_budget(enc.max_tokens) == 16 * 64
    assert out.shape == (2, 3) and out[1, 0] == len("short text")


def test_the_character_budget_follows_its_environment_variable(monkeypatch):
    monkeypatch.setenv("CVX_CHARS_PER_TOKEN", "4")
    assert limits.truncate_text("x" * 100, 8) == "x" * 32
    monkeypatch.setenv("CVX_CHARS_PER_TOKEN", "lots")
    with pytest.raises(BudgetError, match="CVX_CHARS_PER_TOKEN"):
        limits.text_char_budget(8)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    ts, _ = make_planted_trajectory_set(config=PlantedConfig(n_users=20, dim=4, n_planted=1, mean_posts=10,
                                                             max_posts=14), seed=5, name="b")
    return save_trajectories(ts, tmp_path_factory.mktemp("budgets") / "d.parquet")


def test_d_above_its_budget_is_refused_with_the_budget_named(data_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CVX_MAX_DIM", "3")
    assert main(["extract", str(data_file), "--out", str(tmp_path / "f.parquet")]) == 2
    err = capsys.readouterr().err
    assert "D=4" in err and "CVX_MAX_DIM" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "f.parquet").exists()
    monkeypatch.delenv("CVX_MAX_DIM")
    assert limits.check_dim(100_000, source="x") == 100_000  # D up to 100,000 still held by default
    with pytest.raises(BudgetError, match="1,000,000"):
        limits.check_dim(1_000_000, source="x")


@pytest.mark.slow
def test_training_keeps_each_users_last_posts_within_the_budget_with_a_note(data_file, tmp_path, capsys,
                                                                            monkeypatch):
    import json

    monkeypatch.setenv("CVX_MAX_POSTS_PER_USER", "5")
    run = tmp_path / "run"
    assert main(["train", str(data_file), "--out", str(run), "--epochs", "1", "--hidden", "4", "--device", "cpu",
                 "--quiet", "--no-attention"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"note: \d+ users have more than 5 posts .* last 5 posts \(--max-len", out)
    assert json.loads((run / "config.json").read_text())["train_config"]["max_len"] == 5


def test_ray_workers_are_capped_at_the_clusters_cpus():
    assert limits.cap_workers(12, 2) == (2, "--workers 12 is more than the cluster's 2 CPUs; using 2")
    assert limits.cap_workers(None, 4) == (4, None)
    assert limits.cap_workers(3, 8) == (3, None)
    with pytest.raises(BudgetError):
        limits.cap_workers(0, 8)


def test_a_local_ray_cluster_never_gets_more_cpus_than_the_machine():
    from cvx_core.scale import ray_engine

    with pytest.warns(UserWarning, match="using"):
        n = ray_engine._local_cpus(10_000)
    assert n == ray_engine._machine_cpus() <= (os.cpu_count() or 1)


def _returns_within(seconds, fn):
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "blocked"
    return box


def test_a_json_file_must_be_a_regular_file_of_bounded_size(tmp_path, monkeypatch):
    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)
    box = _returns_within(5, lambda: limits.read_json_file(fifo))
    assert "not a regular file" in str(box["error"])
    zero = tmp_path / "zero.json"
    zero.symlink_to("/dev/zero")
    with pytest.raises(ValueError, match="not a regular file"):
        limits.read_json_file(zero)
    folder = tmp_path / "folder.json"
    folder.mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        limits.read_json_file(folder)
    big = tmp_path / "big.json"
    big.write_text("[" + "0," * 600_000 + "0]", encoding="utf-8")
    monkeypatch.setenv("CVX_MAX_JSON_MB", "1")
    with pytest.raises(BudgetError, match="CVX_MAX_JSON_MB"):
        limits.read_json_file(big)
    monkeypatch.delenv("CVX_MAX_JSON_MB")
    assert len(limits.read_json_file(big)) == 600_001


def test_a_run_whose_config_is_a_fifo_or_dev_zero_fails_at_once(tmp_path):
    from cvx_core.learn.runs import RunError, load_run

    for target in ("fifo", "zero"):
        d = tmp_path / target
        d.mkdir()
        if target == "fifo":
            os.mkfifo(d / "config.json")
        else:
            (d / "config.json").symlink_to("/dev/zero")
        t0 = time.perf_counter()
        box = _returns_within(10, lambda d=d: load_run(d))
        assert isinstance(box["error"], RunError) and "not a regular file" in str(box["error"])
        assert time.perf_counter() - t0 < 10


def test_permutation_counts_are_capped_and_the_cap_is_configurable(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        main(["compare", "run", "data", "--permutations", "2000000000"])
    assert "100,000" in capsys.readouterr().err
    monkeypatch.setenv("CVX_MAX_PERMUTATIONS", "10")
    with pytest.raises(SystemExit):
        main(["compare", "run", "data", "--permutations", "11"])
    assert limits.check_permutations(10, minimum=1) == 10
    with pytest.raises(BudgetError, match="CVX_MAX_PERMUTATIONS"):
        limits.check_permutations(11)


def test_every_budget_is_listed_with_its_default_and_variable_in_the_security_notes():
    doc = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    section = doc[doc.index("## Budgets"):]
    for b in limits.BUDGETS:
        assert b.env in section, b.env
        assert f"{b.default:,}" in section or str(b.default) in section, (b.env, b.default)
    assert "--workers" in section


def test_changepoint_windows_cover_a_long_user_with_overlap_and_stay_whole_below_the_budget(monkeypatch):
    assert limits.changepoint_windows(4_000) == [(0, 4_000)]
    monkeypatch.setenv("CVX_CHANGEPOINT_WINDOW", "100")
    wins = limits.changepoint_windows(1_000)
    assert wins[0] == (0, 100) and wins[-1][1] == 1_000
    assert all(b - a <= 100 for a, b in wins)
    assert all(nxt[0] == prev[1] - 10 for prev, nxt in zip(wins, wins[1:]))  # 10-post overlap
    assert len(limits.changepoint_windows(20_000)) < 250  # linear in the posts


def test_analyze_refuses_d_above_its_budget(data_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CVX_MAX_DIM", "3")
    assert main(["analyze", str(data_file), "--out", str(tmp_path / "a.parquet")]) == 2
    assert "CVX_MAX_DIM" in capsys.readouterr().err


class _WindowEncoder(_RecordingEncoder):
    """A recording encoder that also cuts texts into windows (``long_texts="chunk"``)."""

    def __init__(self) -> None:
        super().__init__()
        self.windowed = 0
        self.words = 0

    def windows(self, text):
        self.windowed = max(self.windowed, len(text))
        words = text.split()
        self.words += len(words)
        return [" ".join(words[i : i + 10]) for i in range(0, max(len(words), 1), 10)]


def test_chunked_long_texts_tokenise_block_by_block_under_the_character_budget():
    enc = _WindowEncoder()
    huge = "ab " * 2_000_000  # 6 MB
    out = embed_texts([huge, "short"], encoder=enc, long_texts="chunk")
    budget = limits.text_char_budget(enc.max_tokens)
    assert enc.windowed <= budget and enc.longest <= budget
    assert enc.words == 2_000_000 + 1  # every word of the long text is still embedded
    assert out.shape == (2, 3)


def test_char_blocks_cover_the_text_exactly_and_cut_at_whitespace():
    for text in ("", "x" * 10, "word " * 1000, "x" * 1001, ("line of text\n") * 500):
        blocks = limits.char_blocks(text, 100)
        assert "".join(blocks) == text and all(len(b) <= 100 for b in blocks)
        assert all(b[-1].isspace() for b in blocks[:-1]) or "x" * 1001 == text
    with pytest.raises(ValueError):
        limits.char_blocks("abc", 0)


def test_fine_tuning_tokenises_texts_cut_to_the_character_budget():
    import torch

    from cvx_core.learn.encoders import SentenceTransformerModule

    seen = []

    class _Model(torch.nn.Module):
        def tokenize(self, texts):
            seen.extend(len(t) for t in texts)
            return {}

    module = SentenceTransformerModule.__new__(SentenceTransformerModule)
    torch.nn.Module.__init__(module)
    module.model = _Model()
    module.max_tokens = 16
    module.tokenize(["a " * 5_000_000, "short"])
    assert seen == [limits.text_char_budget(16), len("short")]


def _wide_files(tmp_path, D):
    import json as _json

    import pandas as pd

    rows = [{"user_id": "u", "timestamp": f"2024-01-0{d}T00:00:00Z", "embedding": [0.1] * D} for d in (1, 2)]
    e_cols = {f"e{j}": [0.1, 0.2] for j in range(D)}
    base = {"user_id": ["u", "u"], "timestamp": ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"]}
    pd.DataFrame(rows).to_parquet(tmp_path / "list.parquet")
    pd.DataFrame({**base, **e_cols}).to_parquet(tmp_path / "ecols.parquet")
    pd.DataFrame({**base, **e_cols}).to_csv(tmp_path / "ecols.csv", index=False)
    pd.DataFrame({**base, "embedding": [_json.dumps([0.1] * D)] * 2}).to_csv(tmp_path / "list.csv", index=False)
    (tmp_path / "list.jsonl").write_text("\n".join(_json.dumps(r) for r in rows) + "\n")
    np.savez(tmp_path / "m.npz", user_ids=np.array(["u", "u"]), embeddings=np.zeros((2, D)),
             timestamps=np.array(["2024-01-01T00:00:00", "2024-01-02T00:00:00"], dtype="datetime64[s]"))
    return sorted(p for p in tmp_path.iterdir())


def test_the_loader_and_the_stream_refuse_d_above_its_budget_in_every_format(tmp_path, monkeypatch):
    from cvx_core.data.io import load_trajectories
    from cvx_core.data.trajectory import TrajectoryError
    from cvx_core.scale.chunks import iter_user_chunks

    files = _wide_files(tmp_path, 20)
    monkeypatch.setenv("CVX_MAX_DIM", "16")
    for path in files:
        with pytest.raises(TrajectoryError) as e:
            load_trajectories(path)
        msg = str(e.value)
        assert msg.startswith(path.name) and "D=20" in msg and "CVX_MAX_DIM" in msg and e.value.column, msg
        if path.suffix != ".npz":
            with pytest.raises(TrajectoryError) as s:
                for _ in iter_user_chunks(path, batch_rows=1, chunk_users=1):
                    pass
            assert str(s.value) == msg
    monkeypatch.setenv("CVX_MAX_DIM", "20")
    for path in files:
        assert load_trajectories(path).dim == 20


def _budget_rows() -> list[str]:
    doc = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    section = doc[doc.index("## Budgets"):]
    section = section[: section.index("\n## ", 5)] if "\n## " in section[5:] else section
    return [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| Budget")]


def test_every_budget_row_states_the_default_the_code_uses():
    from cvx_app.set_analysis_jobs import STREAM_ANALYSIS_ENV, STREAM_ANALYSIS_POSTS
    from cvx_app.workspace import DEFAULT_MAX_DECODED_MB, MAX_DECODED_ENV
    from cvx_core.data.columns import MAX_EMBEDDING_NORM
    from cvx_core.data.truth import MAX_TRUTH_BYTES

    rows = _budget_rows()

    def row(key: str) -> str:
        found = [r for r in rows if key in r]
        assert len(found) == 1, (key, found)
        return found[0]

    for b in limits.BUDGETS:
        cells = row(f"`{b.env}`").split("|")
        assert f"{b.default:,}" in cells[2], (b.env, b.default, cells[2])
    assert f"{int(DEFAULT_MAX_DECODED_MB)} MB" in row(f"`{MAX_DECODED_ENV}`")
    assert f"{STREAM_ANALYSIS_POSTS:,}" in row(f"`{STREAM_ANALYSIS_ENV}`")
    assert float(re.search(r"\| ([0-9.e+]+) \(`MAX_EMBEDDING_NORM`\)", row("MAX_EMBEDDING_NORM")).group(1)) == MAX_EMBEDDING_NORM
    assert f"{MAX_TRUTH_BYTES >> 20} MiB" in row("MAX_TRUTH_BYTES") and MAX_TRUTH_BYTES % (1 << 20) == 0


def test_every_limit_variable_the_code_reads_is_in_the_budget_table():
    names = set()
    for folder in ("cvx_core", "cvx_app"):
        for path in (ROOT / folder).rglob("*.py"):
            names |= set(re.findall(r"CVX_(?:MAX_[A-Z_]+|[A-Z_]*(?:WINDOW|PER_TOKEN|POSTS)[A-Z_]*)", path.read_text()))
    table = "\n".join(_budget_rows())
    assert names and all(f"`{n}`" in table for n in names), sorted(n for n in names if f"`{n}`" not in table)


def test_the_library_trainer_applies_the_posts_budget_when_max_len_is_unset(monkeypatch):
    from cvx_core.learn.config import TrainConfig
    from cvx_core.learn.trainer import Trainer

    ts, _ = make_planted_trajectory_set(config=PlantedConfig(n_users=12, dim=3, n_planted=1, mean_posts=10,
                                                             max_posts=14), seed=5, name="p")
    monkeypatch.setenv("CVX_MAX_POSTS_PER_USER", "6")
    with pytest.warns(limits.PostsBudgetWarning, match="last 6 posts"):
        trainer = Trainer(ts, TrainConfig(epochs=1))
    assert trainer.config.max_len == 6
    assert Trainer(ts, TrainConfig(epochs=1, max_len=9)).config.max_len == 9  # an explicit window is kept
    monkeypatch.setenv("CVX_MAX_POSTS_PER_USER", "100")
    assert Trainer(ts, TrainConfig(epochs=1)).config.max_len is None  # nobody over budget: unchanged
