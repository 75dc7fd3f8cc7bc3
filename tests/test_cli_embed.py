"""``python -m cvx_core embed``: a per-user embedding cache by default (``CVX_CACHE_DIR``),
so a second run encodes nothing; ``--cache PATH`` overrides it and ``--no-cache`` turns it off."""

from __future__ import annotations

import pandas as pd
import pytest

from cvx_core.cli import main
from cvx_core.data import text as text_mod
from cvx_core.data.text import EmbeddingCache

transformers = pytest.importorskip("transformers")


def _tiny_bert(folder):
    import torch

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "war", "peace", "the", "economy", "jobs"]
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    tok = transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    cfg = transformers.BertConfig(vocab_size=len(words), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=16, max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture
def posts(tmp_path):
    rows = [{"user_id": f"u{k % 2}", "timestamp": f"2020-01-{k + 1:02d}", "text": t}
            for k, t in enumerate(["war war", "peace", "the economy", "jobs jobs", "war and peace", "the jobs"])]
    path = tmp_path / "posts.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _fail(*_a, **_k):
    raise AssertionError("the encoder ran although every text was cached")


def test_embed_twice_uses_the_per_user_cache_and_encodes_nothing_the_second_time(tmp_path, posts, monkeypatch):
    monkeypatch.setenv("CVX_CACHE_DIR", str(tmp_path / "cache-home"))
    model = _tiny_bert(tmp_path / "tiny-bert")
    args = ["embed", str(posts), "--model", str(model), "--max-tokens", "16"]
    assert main(args + ["--out", str(tmp_path / "a.parquet")]) == 0
    cache = tmp_path / "cache-home" / "embeddings.sqlite"
    with EmbeddingCache(cache) as c:
        assert c.stats().entries == 6
    text_mod._MODELS.clear()
    monkeypatch.setattr(text_mod.SentenceTransformerEncoder, "encode", _fail)
    assert main(args + ["--out", str(tmp_path / "b.parquet")]) == 0
    a, b = pd.read_parquet(tmp_path / "a.parquet"), pd.read_parquet(tmp_path / "b.parquet")
    pd.testing.assert_frame_equal(a, b)
    assert not text_mod._MODELS  # the model was not even loaded


def test_cache_path_overrides_and_no_cache_writes_nothing(tmp_path, posts, monkeypatch):
    monkeypatch.setenv("CVX_CACHE_DIR", str(tmp_path / "cache-home"))
    model = _tiny_bert(tmp_path / "tiny-bert")
    args = ["embed", str(posts), "--model", str(model), "--max-tokens", "16", "--out", str(tmp_path / "o.parquet")]
    assert main(args + ["--cache", str(tmp_path / "mine.sqlite")]) == 0
    assert (tmp_path / "mine.sqlite").is_file() and not (tmp_path / "cache-home").exists()
    assert main(args + ["--no-cache"]) == 0
    assert not (tmp_path / "cache-home").exists()
    with pytest.raises(SystemExit):
        main(args + ["--no-cache", "--cache", str(tmp_path / "x.sqlite")])


def test_onnx_backend_on_a_non_minilm_model_is_a_one_line_error(tmp_path, posts, capsys):
    model = _tiny_bert(tmp_path / "tiny-bert")
    capsys.readouterr()  # the model writer's progress bar
    assert main(["embed", str(posts), "--model", str(model), "--encoder-backend", "onnx", "--no-cache",
                 "--out", str(tmp_path / "o.parquet")]) == 2
    err = capsys.readouterr().err
    assert "only the packaged MiniLM" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_first_embed_on_a_machine_prints_each_step_of_the_onnx_export_with_its_time(posts, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CVX_CACHE_DIR", str(tmp_path / "fresh-cache"))  # no export on this "machine" yet
    assert main(["embed", str(posts), "--out", str(tmp_path / "t.parquet"), "--encoder-backend", "onnx"]) == 0
    err = capsys.readouterr().err
    assert "exporting MiniLM for ONNX Runtime (onnx) on first use" in err
    steps = [line for line in err.splitlines() if line.startswith("  ") and "s  " in line]
    assert any("step 1 of" in s for s in steps) and any("Loading the text encoder" in s for s in steps), err
    assert "Loading weights" not in err and "pre-processing" not in err  # no library noise between the steps
    assert main(["embed", str(posts), "--out", str(tmp_path / "u.parquet"), "--encoder-backend", "onnx"]) == 0
    assert "exporting" not in capsys.readouterr().err  # once per machine
