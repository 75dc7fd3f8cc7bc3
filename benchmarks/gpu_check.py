"""The GPU run in one process: machine and versions, then every GPU figure issue 28 asks for,
written to one JSON (``benchmarks/gpu_check.sh`` runs this after the ``cuda``-marked tests).

Figures (medians, synchronised wall clock):

- ``features``: ``TorchBackend.extract_all`` forward (no grad), forward with grad, and
  forward + backward at B x T x D (1000 x 100 x 768 on CUDA), and the backward/forward ratio.
- ``train_epoch``: one training epoch of the default classifier on the shipped sample
  (every other user in a dry run).
- ``finetune_step``: one optimizer step of MiniLM fine-tuned through the temporal features at
  the default batch (``TrainConfig`` defaults: 32 users, 8 posts with gradients per user).
- ``embed``: MiniLM ``embed_texts`` throughput (texts/s and tokens/s).

``--dry-run``: the same code on the CPU at toy sizes (B x T x D = 8 x 20 x 32, the hashing
encoder for the fine-tuning step, 16 short texts), so CI proves the script runs end to end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _timed(fn: Callable[[], Any], *, device: str, repeat: int) -> float:
    """Median seconds of ``fn`` over ``repeat`` calls after one warm-up."""
    fn()
    out = []
    for _ in range(repeat):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def machine(device: str) -> dict:
    import importlib.metadata as md

    def version(name: str) -> str | None:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    return {
        "platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
        "device": device, "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
        "gpu_memory_gb": torch.cuda.get_device_properties(0).total_memory / 2**30 if device == "cuda" else None,
        "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if device == "cuda" else None,
        "nccl": ".".join(map(str, torch.cuda.nccl.version())) if device == "cuda" else None,
        "versions": {p: version(p) for p in ("torch", "numpy", "numba", "transformers", "sentence-transformers",
                                               "onnxruntime", "ray")},
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def features(device: str, shape: tuple[int, int, int], repeat: int) -> dict:
    from cvx_core.features.config import TemporalFeaturesConfig
    from cvx_core.features.differentiable import TorchBackend

    b, t, d = shape
    gen = torch.Generator().manual_seed(0)
    E = torch.randn(b, t, d, generator=gen).to(device)
    ts = torch.cumsum(torch.rand(b, t, generator=gen, dtype=torch.float64) * 2, 1).to(device)
    Eg = E.clone().requires_grad_(True)
    cfg = TemporalFeaturesConfig()

    def fwd() -> None:
        with torch.no_grad():
            TorchBackend.extract_all(E, ts, cfg)

    def fwd_bwd() -> None:
        Eg.grad = None
        TorchBackend.extract_all(Eg, ts, cfg).sum().backward()

    f = _timed(fwd, device=device, repeat=repeat)
    g = _timed(lambda: TorchBackend.extract_all(Eg, ts, cfg), device=device, repeat=repeat)
    fb = _timed(fwd_bwd, device=device, repeat=repeat)
    return {"shape": list(shape), "fwd_ms": 1e3 * f, "fwd_grad_ms": 1e3 * g, "fwd_bwd_ms": 1e3 * fb,
            "bwd_over_fwd": (fb - g) / g}


def train_epoch(device: str, dry: bool) -> dict:
    from cvx_core.data.io import load_trajectories
    from cvx_core.data.trajectory import TrajectorySet
    from cvx_core.learn.config import TrainConfig
    from cvx_core.learn.trainer import train

    ts = load_trajectories(ROOT / "sample_data" / "sample.parquet")
    if dry:  # every other user: same classes, half the work
        ts = TrajectorySet(list(ts)[::2], name=ts.name)
    t0 = time.perf_counter()
    res = train(ts, TrainConfig(epochs=1, device=device, seed=0))
    return {"users": len(ts), "seconds": time.perf_counter() - t0, "test_auc": float(res.test.auc), "baseline_auc": float(res.baseline.test_auc)}


def finetune_step(device: str, dry: bool) -> dict:
    from cvx_core.learn.config import TrainConfig
    from cvx_core.learn.encoders import HashingBagEncoder, MiniLMEncoder, TextTrajectoryClassifier
    from cvx_core.learn.model import TrajectoryClassifier

    cfg = TrainConfig()
    enc = HashingBagEncoder(dim=64) if dry else MiniLMEncoder(max_seq_length=128)
    model = TextTrajectoryClassifier(enc, TrajectoryClassifier(enc.dim, 2)).to(device)
    model.posts_with_grad, model.micro_batch_posts = cfg.posts_with_grad, cfg.micro_batch_posts
    model.autocast_encoder = device == "cuda"
    model.train()
    b, t = (4, 6) if dry else (cfg.batch_size, 24)
    rng = np.random.default_rng(0)
    words = "economy war jobs taxes peace army navy health schools trade energy farms".split()
    texts = [[" ".join(rng.choice(words, 40)) + f" {u}.{k}" for k in range(t)] for u in range(b)]
    stamps = torch.cumsum(torch.rand(b, t, dtype=torch.float64), 1).to(device)
    lengths = torch.full((b,), t, dtype=torch.int64, device=device)
    y = torch.as_tensor(rng.integers(0, 2, b), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(texts, stamps, lengths), y).backward()
        opt.step()

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    s = _timed(step, device=device, repeat=3)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    return {"encoder": getattr(enc, "model_id", type(enc).__name__), "users": b, "posts_per_user": t,
            "posts_with_grad": cfg.posts_with_grad, "seconds": s, "peak_gpu_gb": peak}


def embed(device: str, dry: bool) -> dict:
    import pandas as pd

    from cvx_core.data.text import embed_texts, load_encoder

    docs = pd.read_parquet(ROOT / "sample_data" / "real_text.parquet", columns=["text"])["text"].tolist()
    paras = [p for d in docs for p in d.split("\n\n") if p.strip()]
    n, window = (16, 32) if dry else (2048, 256)
    texts = [f"{paras[i % len(paras)]} ({i})" for i in range(n)]
    enc = load_encoder("minilm", device=device, max_tokens=window, backend="torch")
    tokens = sum(min(c, window) for c in enc.count_tokens(texts))
    embed_texts(texts[:8], encoder=enc)
    s = _timed(lambda: embed_texts(texts, encoder=enc, batch_size=64 if dry else 256), device=device, repeat=1)
    return {"model_id": enc.model_id, "texts": n, "max_tokens": window, "texts_per_s": n / s, "tokens_per_s": tokens / s}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, toy sizes (CI)")
    ap.add_argument("--tests", default=None, help="JSON summary of the cuda-marked test run to include")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_check.json"))
    args = ap.parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device; run with --dry-run on a CPU machine", file=sys.stderr)
        return 2
    device = "cpu" if args.dry_run else "cuda"
    doc: dict = {"dry_run": args.dry_run, "machine": machine(device)}
    if args.tests and Path(args.tests).is_file():
        doc["cuda_tests"] = json.loads(Path(args.tests).read_text())
    steps = {
        "features": lambda: features(device, (8, 20, 32) if args.dry_run else (1000, 100, 768), 3 if args.dry_run else 11),
        "train_epoch": lambda: train_epoch(device, args.dry_run),
        "finetune_step": lambda: finetune_step(device, args.dry_run),
        "embed": lambda: embed(device, args.dry_run),
    }
    failed = []
    for name, fn in steps.items():
        t0 = time.perf_counter()
        try:
            doc[name] = fn()
        except Exception as exc:  # noqa: BLE001 - every figure is attempted; failures are recorded
            doc[name] = {"error": f"{type(exc).__name__}: {exc}"}
            failed.append(name)
        print(f"{name:<14} {time.perf_counter() - t0:6.1f}s  {json.dumps(doc[name])[:160]}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
