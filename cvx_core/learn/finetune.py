"""Training through a text encoder: a frozen encoder embeds each post once; a fine-tuned one
learns with memory bounded by design. Used by the trainer when ``TrainConfig.text_encoder``
is set.

Frozen (``freeze_encoder=True``): before training, every distinct post is embedded once
through :func:`cvx_core.data.text.embed_texts` (with the SQLite
:class:`~cvx_core.data.text.EmbeddingCache` of ``TrainConfig.embedding_cache`` when given)
into the model's in-memory :class:`~cvx_core.learn.encoders.PostEmbeddingTable`; epochs
then cost what they cost on stored vectors.

Fine-tuned (the memory mechanism, see :class:`~cvx_core.learn.encoders.TextTrajectoryClassifier`):

1. per user per step, only ``posts_with_grad`` (K) posts drawn at random get gradients; the
   user's other posts take their embeddings from the table, without gradient;
2. the K posts of all users of the batch are encoded by a gradient cache: a first pass
   without autograd state, then in backward each chunk of ``min(K, micro_batch_posts)``
   posts is re-encoded with gradients and its slice of ``dL/d embedding`` is
   backpropagated before the next chunk starts. The encoder's activation memory is
   therefore that of one chunk of at most ``micro_batch_posts`` posts of at most
   ``max_tokens`` tokens, whatever the batch size or the number of posts per user;
3. ``max_tokens`` truncates long posts.

Peak memory is predictable from the settings: :func:`finetune_memory_breakdown` /
:func:`estimate_finetune_memory` (the CLI prints it before training).

Learning: the encoder has its own learning rate (``encoder_lr``, ~2e-5) with a linear
warm-up (``encoder_warmup_steps``) and its own gradient clipping (``encoder_grad_clip``);
:class:`StepHooks` measures the gradient norms the trainer reports (``grad_norm``,
``encoder_grad_norm``). On CUDA with bf16 support and ``mixed_precision``, the encoder's
training passes run under bf16 autocast (evaluation stays float32).
"""

from __future__ import annotations

import json
import math
import resource
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cvx_core.data.trajectory import TrajectorySet
from cvx_core.learn.config import TrainConfig

__all__ = [
    "MemoryEstimate",
    "ModuleTextEncoder",
    "StepHooks",
    "adopt_text_encoder",
    "encoder_spec",
    "estimate_finetune_memory",
    "finetune_memory_breakdown",
    "fill_post_table",
    "load_text_data",
    "prepare_text_model",
    "peak_rss_bytes",
]

MB = 1 << 20


def encoder_spec(config: TrainConfig) -> dict[str, Any]:
    """The encoder part of a run's model spec: which encoder it starts from (``kind``,
    ``source``), its window, and whether it is fine-tuned (``finetuned``)."""
    from cvx_core.learn.encoders import default_encoder_spec

    if config.text_encoder is None:
        raise ValueError("encoder_spec needs TrainConfig.text_encoder")
    spec = default_encoder_spec(config.text_encoder, max_tokens=config.max_tokens)
    spec["finetuned"] = not config.freeze_encoder
    return spec


# -- the frozen path: one embedding per distinct post -----------------------------------------
class ModuleTextEncoder:
    """A torch encoder module as a :class:`cvx_core.data.text.TextEncoder` (for
    ``embed_texts`` and its cache): no gradient, eval mode, float32 ``[N, D]``.

    ``model_id`` is the module's (the name and digest of its *starting* weights): use it
    only before the weights change.
    """

    def __init__(self, module: nn.Module, *, max_tokens: int) -> None:
        self.module = module
        self.model_id = str(getattr(module, "model_id"))
        self.dim = int(getattr(module, "dim"))
        self.max_tokens = int(min(max_tokens, getattr(module, "max_tokens", max_tokens)))
        self.calls = 0  # encoder calls (texts) made through this wrapper

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        model = getattr(self.module, "model", None)
        tok = getattr(model, "tokenizer", None)
        if tok is None:
            return [len(t.split()) for t in texts]
        ids = tok(list(texts), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        return [len(x) for x in ids]

    def encode(self, texts: list[str]) -> np.ndarray:
        was = self.module.training
        self.module.eval()
        try:
            with torch.no_grad():
                out = self.module(list(texts)).float().cpu().numpy()
        finally:
            self.module.train(was)
        self.calls += len(texts)
        return out


def _model_texts(data: TrajectorySet, indices: Sequence[int] | None, max_len: int | None) -> list[str]:
    """Distinct texts of the posts the model will see (each user's last ``max_len``)."""
    idx = range(len(data)) if indices is None else indices
    seen: dict[str, None] = {}
    for i in idx:
        tr = data.at(int(i))
        texts = list(tr.texts or ())
        if max_len is not None:
            texts = texts[-max_len:]
        seen.update(dict.fromkeys(str(t) for t in texts))
    return list(seen)


def fill_post_table(
    model: nn.Module,
    texts: Sequence[str],
    *,
    cache: str | None = None,
    max_tokens: int = 128,
    batch_size: int = 32,
    progress: Any = None,
) -> int:
    """Embed the distinct ``texts`` missing from ``model.post_table`` once (through the
    persistent cache when given) and store them with the current weights' stamp. Returns
    how many texts the encoder itself had to encode (cache misses)."""
    from cvx_core.data.text import embed_texts
    from cvx_core.learn.encoders import weights_stamp

    table = model.post_table
    stamp = weights_stamp(model.encoder)
    missing = [t for t, r in zip(texts, table.rows(list(texts), stamp=stamp)) if r is None]
    if not missing:
        return 0
    wrapper = ModuleTextEncoder(model.encoder, max_tokens=max_tokens)
    emb = embed_texts(missing, encoder=wrapper, cache=cache, batch_size=batch_size, progress=progress)
    table.store(missing, torch.from_numpy(emb), stamp)
    return wrapper.calls


def load_text_data(source: Any, config: TrainConfig, *, progress: Any = None) -> TrajectorySet:
    """Read a table of posts for training with ``config.text_encoder``.

    An embedded table with a ``text`` column is used as it is (its embeddings feed the
    mean-embedding baseline; the model reads the texts). A text-only table (``user_id``,
    ``timestamp``, ``text``, ``label``) is embedded by the run's encoder at its starting
    weights, through ``config.embedding_cache`` (so the trainer's own pass over the posts
    then only reads the cache). ``source``: a path (it is read twice for text-only tables).
    """
    from cvx_core.data.io import read_posts
    from cvx_core.data.text import embed_posts
    from cvx_core.data.trajectory import TrajectoryError
    from cvx_core.learn.encoders import build_text_encoder

    posts = read_posts(source, need_embeddings=False)
    if posts.texts is None:
        raise TrajectoryError(
            f"{posts.file}: missing column 'text'; training with a text encoder needs the posts' texts",
            file=posts.file, column="text",
        )
    if posts.embeddings is not None:
        return posts.to_set()
    module = build_text_encoder(encoder_spec(config))
    wrapper = ModuleTextEncoder(module, max_tokens=config.max_tokens)
    return embed_posts(source, encoder=wrapper, cache=config.embedding_cache, max_tokens=config.max_tokens,
                       progress=progress)


def prepare_text_model(
    model: nn.Module,
    data: TrajectorySet,
    config: TrainConfig,
    *,
    device: torch.device,
    indices: Sequence[int] | None = None,
) -> None:
    """Set a :class:`TextTrajectoryClassifier` up for training with ``config``.

    Frozen: all users' posts are embedded now, once. Fine-tuned: the posts of the users at
    ``indices`` are (the training users': they are the "no gradient" embeddings of the
    first steps; evaluation posts are re-embedded by the current weights when they change).
    """
    from cvx_core.learn.encoders import set_encoder_trainable

    set_encoder_trainable(model.encoder, not config.freeze_encoder)
    model.posts_with_grad = config.posts_with_grad
    model.micro_batch_posts = config.micro_batch_posts
    model.eval_chunk = max(config.micro_batch_posts, 32)
    model.autocast_encoder = bool(
        config.mixed_precision and device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    )
    model.sampler = torch.Generator().manual_seed(int(config.seed))
    chosen = None if config.freeze_encoder else indices
    fill_post_table(model, _model_texts(data, chosen, config.max_len), cache=config.embedding_cache,
                    max_tokens=config.max_tokens)


def adopt_text_encoder(model: nn.Module, donor: nn.Module) -> None:
    """Give ``model`` the encoder, embedded posts and settings of ``donor`` (a model built
    from the same spec and prepared by :func:`prepare_text_model`), instead of a second
    copy of the same starting weights."""
    model.encoder = donor.encoder
    for name in ("post_table", "posts_with_grad", "micro_batch_posts", "eval_chunk", "autocast_encoder", "sampler"):
        setattr(model, name, getattr(donor, name))


# -- the optimisation step --------------------------------------------------------------------
class StepHooks:
    """Gradient clipping, gradient norms and the encoder's learning-rate warm-up for one
    optimiser. ``clip()`` after ``backward`` returns ``(grad_norm, encoder_grad_norm)``
    (L2 norms before clipping; ``encoder_grad_norm`` is NaN without a trained encoder);
    ``after_step()`` advances the warm-up.

    Without a text encoder it clips every parameter together at ``grad_clip`` (the
    trainer's behaviour before fine-tuning existed); with one, the encoder's parameters are
    clipped at ``encoder_grad_clip`` and the rest at ``grad_clip``, each group on its own.

    Clipping alone does not bound an AdamW step: Adam divides the gradient by its own
    running scale, so its first step moves every weight by the learning rate whatever the
    gradient's size. So the encoder's learning rate for a step is also multiplied by the
    factor clipping applied, ``min(1, encoder_grad_clip / |g|)``: a step whose loss is a
    thousand times more sensitive than the clip allows is a thousand times smaller. Below
    the clip nothing changes. (Seen: MiniLM's gradient norms of 8e3 to 1.7e6, from a dead
    embedding dimension standardised by its rounding-noise spread, since fixed in
    :meth:`~cvx_core.learn.model.TrajectoryClassifier.fit_normalisation`; one warm-up step
    at 1.8e-6 had thrown the training loss from 0.28 to 2.1.)
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig) -> None:
        self.config = config
        self.optimizer = optimizer
        enc = getattr(model, "encoder", None)
        enc_ids = {id(p) for p in enc.parameters()} if enc is not None else set()
        self.encoder_params: list[torch.Tensor] = []
        self.other_params: list[torch.Tensor] = []
        self.encoder_groups: list[dict[str, Any]] = []
        for g in optimizer.param_groups:
            is_enc = bool(g["params"]) and all(id(p) in enc_ids for p in g["params"])
            (self.encoder_params if is_enc else self.other_params).extend(g["params"])
            if is_enc:
                g.setdefault("base_lr", g["lr"])
                self.encoder_groups.append(g)
        self.steps = 0
        self._set_encoder_lr()

    def _set_encoder_lr(self, clip_factor: float = 1.0) -> None:
        """The encoder's learning rate for the next step: base rate x warm-up x ``clip_factor``."""
        w = self.config.encoder_warmup_steps
        scale = 1.0 if w <= 0 else min(1.0, (self.steps + 1) / (w + 1))
        for g in self.encoder_groups:
            g["lr"] = g["base_lr"] * scale * clip_factor

    @property
    def encoder_lr(self) -> float:
        return float(self.encoder_groups[0]["lr"]) if self.encoder_groups else float("nan")

    def clip(self) -> tuple[float, float]:
        cfg = self.config
        if not self.encoder_params:
            params = [p for p in self.other_params if p.grad is not None]
            total = _clip(params, cfg.grad_clip)
            return total, float("nan")
        enc = _clip([p for p in self.encoder_params if p.grad is not None], cfg.encoder_grad_clip)
        rest = _clip([p for p in self.other_params if p.grad is not None], cfg.grad_clip)
        factor = 1.0
        if cfg.encoder_grad_clip > 0 and math.isfinite(enc) and enc > cfg.encoder_grad_clip:
            factor = cfg.encoder_grad_clip / enc
        self._set_encoder_lr(factor)  # this step's rate carries the clip factor (see the class docstring)
        return float(math.hypot(enc, rest)), enc

    def after_step(self) -> None:
        self.steps += 1
        self._set_encoder_lr()


def _clip(params: list[torch.Tensor], max_norm: float) -> float:
    if not params:
        return 0.0
    if max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.float()) for p in params])))


# -- memory ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Arch:
    """What the memory model needs of a transformer encoder (or of the hashing bag)."""

    params: int
    layers: int = 0
    hidden: int = 0
    intermediate: int = 0
    heads: int = 0
    dim: int = 0
    transformer: bool = True


# all-MiniLM-L6-v2: BERT, 6 layers, 384 hidden, 1536 intermediate, 12 heads, 22.7M parameters
_MINILM = _Arch(params=22_713_216, layers=6, hidden=384, intermediate=1536, heads=12, dim=384)

# Calibration on CPU (torch 2.13, transformers 5, SDPA attention, float32): the runtime is the
# resident memory of a training process with torch, sentence-transformers, scikit-learn and
# pandas imported, set from the frozen run of benchmarks/bench_finetune.py (1.44 GB peak on
# 2,160 posts); the activation constants from ru_maxrss around one MiniLM forward+backward of
# 1, 4 and 8 posts at 64 and 128 tokens (about 12.5 MB per post at 128 tokens with gradients,
# 4.6 MB without).
RUNTIME_BYTES_TRANSFORMER = 1100 * MB
RUNTIME_BYTES_TORCH = 350 * MB
_SAVED_FLOATS_PER_TOKEN = (6, 1)  # x hidden, x intermediate, per layer (saved for backward)
_ATTENTION_MAPS = 1  # [heads, T, T] float tensors per layer (SDPA keeps none; one for margin)
_NOGRAD_FLOATS_PER_TOKEN = (6, 2)  # a forward without autograd keeps a few live tensors


def _arch(config: TrainConfig) -> _Arch:
    kind = config.text_encoder
    if kind == "minilm":
        return _MINILM
    if kind == "hashing":
        from cvx_core.learn.encoders import default_encoder_spec

        s = default_encoder_spec("hashing")
        n = s["n_buckets"] * s["hidden"] + s["hidden"] * s["dim"] + s["dim"]
        return _Arch(params=n, dim=s["dim"], transformer=False)
    path = Path(str(kind))
    cfg_file = path / "config.json"
    if cfg_file.is_file():
        c = json.loads(cfg_file.read_text(encoding="utf-8"))
        h, inter, layers = int(c.get("hidden_size", 384)), int(c.get("intermediate_size", 1536)), int(c.get("num_hidden_layers", 6))
        vocab, pos = int(c.get("vocab_size", 30522)), int(c.get("max_position_embeddings", 512))
        params = (vocab + pos + 2) * h + layers * (4 * h * h + 2 * h * inter + 9 * h + inter)
        return _Arch(params=params, layers=layers, hidden=h, intermediate=inter,
                     heads=int(c.get("num_attention_heads", 12)), dim=h)
    raise ValueError(f"cannot estimate the memory of text encoder {kind!r}: no config.json in that folder")


@dataclass(frozen=True)
class MemoryEstimate:
    """Predicted peak resident memory of a text-encoder training run, in bytes, by part.

    ``total`` is the sum of ``parts``; ``encoder_activations`` depends only on
    ``min(posts_with_grad, micro_batch_posts)`` and ``max_tokens`` (fine-tuning) or on the
    evaluation chunk and ``max_tokens`` (frozen), never on the batch size.
    """

    total: int
    parts: dict[str, int] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """One line: total and the largest parts, in MB."""
        top = sorted(self.parts.items(), key=lambda kv: -kv[1])
        return f"{self.total / MB:,.0f} MB peak (estimate): " + ", ".join(f"{k} {v / MB:,.0f}" for k, v in top if v >= MB)


def finetune_memory_breakdown(config: TrainConfig, data: TrajectorySet) -> MemoryEstimate:
    """Predicted peak memory (bytes, by part) of training ``config`` on ``data`` with a text
    encoder, on CPU (on CUDA the encoder's parts are device memory). Cheap: reads no
    weights. Parts:

    - ``runtime``: the Python process with torch (and sentence-transformers) imported;
    - ``encoder_weights`` and, when fine-tuned, ``encoder_training`` (gradients, AdamW's
      two moments, the best-so-far copy and the checkpoint's copy: 5 more copies);
    - ``encoder_activations``: one gradient-cache chunk of ``min(K, micro_batch_posts)``
      posts x ``max_tokens`` tokens (fine-tuned), or one evaluation chunk without
      gradient (frozen);
    - ``post_table`` and ``data``: the distinct posts' embeddings and texts, the stored set;
    - ``features``: the temporal features of one training batch (``batch_size`` users x
      their posts x D, as on stored vectors).
    """
    if config.text_encoder is None:
        raise ValueError("finetune_memory_breakdown needs TrainConfig.text_encoder")
    a = _arch(config)
    f32 = 4
    finetune = not config.freeze_encoder
    lengths = np.asarray(data.lengths, dtype=np.int64)
    if config.max_len is not None:
        lengths = np.minimum(lengths, config.max_len)
    n_posts = int(lengths.sum())
    texts = [str(t) for tr in data for t in (tr.texts or ())]
    n_unique = len(set(texts))
    text_bytes = sum(len(t.encode("utf-8")) + 80 for t in texts)
    dim = a.dim
    parts: dict[str, int] = {"runtime": RUNTIME_BYTES_TRANSFORMER if a.transformer else RUNTIME_BYTES_TORCH}
    parts["encoder_weights"] = a.params * f32
    parts["encoder_training"] = 5 * a.params * f32 if finetune else a.params * f32  # best-state copy when frozen
    tokens = int(config.max_tokens)
    if a.transformer:
        if finetune:
            chunk = min(config.posts_with_grad or config.micro_batch_posts, config.micro_batch_posts)
            hs, ins = _SAVED_FLOATS_PER_TOKEN
            per_post = a.layers * (tokens * (hs * a.hidden + ins * a.intermediate) + _ATTENTION_MAPS * a.heads * tokens * tokens) * f32
        else:
            chunk = max(config.micro_batch_posts, 32)
            hs, ins = _NOGRAD_FLOATS_PER_TOKEN
            per_post = (tokens * (hs * a.hidden + ins * a.intermediate) + 2 * a.heads * tokens * tokens) * f32
        parts["encoder_activations"] = int(chunk * per_post)
    else:
        chunk = config.micro_batch_posts
        parts["encoder_activations"] = int(chunk * 64 * f32 * 8)
    parts["post_table"] = n_unique * (dim * f32 + 120) + text_bytes
    parts["data"] = n_posts * (data.dim * f32 + 16) + text_bytes
    b = min(config.batch_size, len(data))
    t_max = int(lengths.max()) if lengths.size else 0
    parts["features"] = int(24 * b * t_max * dim * f32)
    settings = {
        "text_encoder": config.text_encoder, "finetune": finetune, "posts_with_grad": config.posts_with_grad,
        "micro_batch_posts": config.micro_batch_posts, "max_tokens": tokens, "batch_size": config.batch_size,
        "chunk_posts": int(chunk), "n_posts": n_posts, "n_unique_posts": n_unique,
    }
    return MemoryEstimate(int(sum(parts.values())), parts, settings)


def estimate_finetune_memory(config: TrainConfig, data: TrajectorySet) -> int:
    """Predicted peak resident memory in bytes of training ``config`` on ``data`` with its
    text encoder (frozen or fine-tuned); see :func:`finetune_memory_breakdown` for the parts."""
    return finetune_memory_breakdown(config, data).total


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux ``ru_maxrss`` is in KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
