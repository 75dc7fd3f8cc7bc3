"""Issue 26, point 6 (damaged state is a clear error or a miss): a damaged embedding cache
(garbled pages, a foreign ``embeddings`` table, a vector stored as text, a cut-short entry)
is a cache miss and the texts are embedded again; damaged forecaster folders and malformed
run documents are a ``RunError`` naming the file."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from cvx_core.data.embedding_cache import CacheDamageWarning, EmbeddingCache, text_sha256
from cvx_core.data.text import embed_texts, load_encoder
from cvx_core.learn.runs import RunError, load_run

TEXTS = ["the army fought", "taxes and jobs", "a third post", "and a fourth"]


def _fn(texts):
    return np.array([[len(t), t.count("a"), t.count(" ") + 1.0] for t in texts], dtype=np.float32)


_ENC = load_encoder(_fn, model_id="damage-test")
EXPECTED = _fn(TEXTS)


def _filled(path):
    embed_texts(TEXTS, encoder=_ENC, cache=path)
    return path


def _rows(path, sql, params=()):
    con = sqlite3.connect(path)
    con.execute(sql, params)
    con.commit()
    con.close()


@pytest.mark.parametrize("damage", ["vector as text", "cut short", "wrong dim", "dim as text", "nan"])
def test_a_damaged_entry_is_a_miss_and_is_rewritten(tmp_path, damage):
    path = _filled(tmp_path / "c.sqlite")
    sql = {"vector as text": "UPDATE embeddings SET vector = 'not a vector'",
           "cut short": "UPDATE embeddings SET vector = substr(vector, 1, 5)",
           "wrong dim": "UPDATE embeddings SET dim = 7",
           "dim as text": "UPDATE embeddings SET dim = 'three'",
           "nan": "UPDATE embeddings SET vector = ?"}[damage]
    _rows(path, sql, (np.full(3, np.nan, dtype="<f4").tobytes(),) if damage == "nan" else ())
    np.testing.assert_array_equal(embed_texts(TEXTS, encoder=_ENC, cache=path), EXPECTED)
    with EmbeddingCache(path) as cache:  # rewritten: every entry is whole again and hits
        found = cache.get_many(_ENC.model_id, _ENC.max_tokens, [text_sha256(t) for t in TEXTS])
    assert len(found) == len(TEXTS)
    np.testing.assert_array_equal(np.stack([found[text_sha256(t)] for t in TEXTS]), EXPECTED)


def test_a_foreign_embeddings_table_makes_every_lookup_a_miss(tmp_path):
    path = tmp_path / "foreign.sqlite"
    _rows(path, "CREATE TABLE embeddings (word TEXT, score REAL)")
    with pytest.warns(CacheDamageWarning, match="damaged"):
        out = embed_texts(TEXTS, encoder=_ENC, cache=path)
    np.testing.assert_array_equal(out, EXPECTED)


def test_garbled_pages_make_every_lookup_a_miss(tmp_path):
    path = _filled(tmp_path / "g.sqlite")
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.execute("PRAGMA journal_mode=DELETE")
    con.close()
    raw = bytearray(path.read_bytes())
    assert len(raw) > 4096
    raw[4096:] = b"\xa5" * (len(raw) - 4096)  # every page after the first one garbled
    path.write_bytes(bytes(raw))
    with pytest.warns(CacheDamageWarning):
        out = embed_texts(TEXTS, encoder=_ENC, cache=path)
    np.testing.assert_array_equal(out, EXPECTED)


def test_a_file_that_is_not_sqlite_is_refused_when_opened(tmp_path):
    from cvx_core.data.trajectory import TrajectoryError

    path = tmp_path / "c.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(TrajectoryError, match="not a usable embedding cache"):
        EmbeddingCache(path)


@pytest.mark.parametrize("doc, weights, words", [
    ("{bad json", None, "not valid JSON"),
    ('{"dim": 4}', None, "not a CVX forecaster"),
    ('{"dim": true, "config": {"ode": {}}}', None, "'dim'"),
    ('{"dim": 4, "config": {"ode": {"latent_dim": "x"}}}', None, "forecaster"),
    ('{"dim": 4, "config": {"ode": {}, "epochs": 1}}', None, "missing"),
    ('{"dim": 4, "config": {"ode": {}, "epochs": 1}}', b"PK\x03\x04garbage", "cannot load weights"),
])
def test_damaged_forecaster_folders_are_a_run_error_naming_the_file(tmp_path, doc, weights, words):
    from cvx_core.learn.forecast import load_forecaster

    (tmp_path / "forecaster.json").write_text(doc, encoding="utf-8")
    if weights is not None:
        (tmp_path / "forecaster.pt").write_bytes(weights)
    with pytest.raises(RunError, match=words):
        load_forecaster(tmp_path)


def test_forecaster_weights_of_another_shape_are_a_run_error(tmp_path):
    import torch

    from cvx_core.learn.forecast import ForecastConfig, LatentODEForecaster, load_forecaster, save_forecaster

    save_forecaster(LatentODEForecaster(4, ForecastConfig().ode), ForecastConfig(), tmp_path)
    doc = json.loads((tmp_path / "forecaster.json").read_text())
    doc["dim"] = 5
    (tmp_path / "forecaster.json").write_text(json.dumps(doc))
    with pytest.raises(RunError, match="do not match"):
        load_forecaster(tmp_path)
    torch.save([1, 2, 3], tmp_path / "forecaster.pt")
    with pytest.raises(RunError):
        load_forecaster(tmp_path)


@pytest.mark.parametrize("name, text", [("data.json", "{not json"), ("data.json", "[1, 2]"),
                                        ("config.json", '{"train_config": {"epochs": "x"}, "model_spec": {}}')])
def test_malformed_run_documents_are_a_run_error(tmp_path, name, text):
    (tmp_path / "config.json").write_text('{"train_config": {}, "model_spec": {}}', encoding="utf-8")
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(RunError):
        load_run(tmp_path)
