"""Benchmark of text ingest: MiniLM on torch fp32 vs ONNX Runtime fp32 vs int8, side by side.

Texts: paragraphs of the shipped real-text sample (State of the Union addresses; about 120
tokens each), cycled to ``--texts`` distinct texts (a suffix number keeps them distinct).

- ``encode``: ``embed_texts`` without a cache (every text encoded, batches of similar token
  length) for each backend, the backends interleaved round by round (``--repeat`` rounds):
  texts/s and tokens/s (tokens after truncation, special tokens included), medians.
- ``cosine``: each backend's vectors against torch fp32, on the timed paragraphs and on the
  first ``--quality-docs`` whole documents (truncated to the window): min and mean.
- ``chosen``: the fastest backend whose minimum cosine is >= 0.99 (the library default,
  ``cvx_core.data.onnx_encoder.DEFAULT_BACKEND``, should be this one).
- ``ceiling``: FLOPs per text of MiniLM-L6 at the measured token counts (6 layers of
  4·H² + 8·H² weight FLOP-pairs per token plus 2·T·H per token for attention, H = 384) and
  the fp32 matmul peak of this machine measured in the same run (a 2048³ ``torch.mm``):
  texts/s the machine could reach at 100 % of that peak, and each backend's fraction of it.
- ``cache hit``: the chosen backend's call again on a filled cache; ``cold start``: the first
  call of the chosen backend in this process (ONNX export on a fresh cache dir included
  when ``CVX_CACHE_DIR`` points to an empty folder).

Run: ``nice -n 10 python benchmarks/bench_text.py [--texts 128 --repeat 3]``.
Prints a table and writes ``benchmarks/results/text.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "text.json"
BACKENDS = ("torch", "onnx", "onnx-int8")
H, LAYERS = 384, 6


def sample_texts(n: int, n_docs: int) -> tuple[list[str], list[str]]:
    import pandas as pd

    docs = pd.read_parquet(ROOT / "sample_data" / "real_text.parquet", columns=["text"])["text"].tolist()
    paras = [p for t in docs for p in t.split("\n\n") if p.strip()]
    return [f"{paras[i % len(paras)]} ({i})" for i in range(n)], docs[:n_docs]


def flops_per_text(tokens: int) -> float:
    """Multiply-add FLOPs (2 per MAC) of MiniLM-L6's encoder for one text of ``tokens``."""
    per_token = 2 * (4 * H * H + 2 * H * 4 * H) + 2 * 2 * tokens * H
    return float(LAYERS * tokens * per_token)


def matmul_peak_gflops(repeat: int = 5) -> float:
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return 2 * 2048**3 / min(times) / 1e9


def cosines(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return (a * ref).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(ref, axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--texts", type=int, default=128)
    ap.add_argument("--quality-docs", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()

    import torch

    from cvx_core.data.onnx_encoder import DEFAULT_BACKEND
    from cvx_core.data.text import EmbeddingCache, embed_texts, load_encoder

    texts, docs = sample_texts(args.texts, args.quality_docs)
    encs, cold = {}, {}
    for b in BACKENDS:
        t0 = time.perf_counter()
        encs[b] = load_encoder("minilm", max_tokens=args.max_tokens, backend=b)
        encs[b].encode(["cold start"])  # model load / ONNX export on first use
        cold[b] = time.perf_counter() - t0
    tokens = [min(n, args.max_tokens) for n in encs["torch"].count_tokens(texts)]
    seconds: dict[str, list[float]] = {b: [] for b in BACKENDS}
    vecs: dict[str, np.ndarray] = {}
    for b in BACKENDS:  # warm-up outside the timed region
        embed_texts(texts[: args.batch_size], encoder=encs[b], batch_size=args.batch_size)
    for _ in range(args.repeat):
        for b in BACKENDS:
            t0 = time.perf_counter()
            vecs[b] = embed_texts(texts, encoder=encs[b], batch_size=args.batch_size)
            seconds[b].append(time.perf_counter() - t0)
    doc_vecs = {b: embed_texts(docs, encoder=encs[b], batch_size=args.batch_size) for b in BACKENDS}
    peak = matmul_peak_gflops()
    flops = sum(flops_per_text(n) for n in tokens) / len(tokens)
    ceiling = peak * 1e9 / flops

    rows = {}
    for b in BACKENDS:
        med = statistics.median(seconds[b])
        cos = np.concatenate([cosines(vecs[b], vecs["torch"]), cosines(doc_vecs[b], doc_vecs["torch"])])
        rows[b] = {"seconds": seconds[b], "texts_per_s": len(texts) / med, "tokens_per_s": sum(tokens) / med,
                   "vs_torch": statistics.median(seconds["torch"]) / med, "cos_min": float(cos.min()),
                   "cos_mean": float(cos.mean()), "fraction_of_fp32_ceiling": len(texts) / med / ceiling,
                   "cold_start_s": cold[b], "model_id": encs[b].model_id}
    ok = [b for b in BACKENDS if rows[b]["cos_min"] >= 0.99]
    chosen = max(ok, key=lambda b: rows[b]["texts_per_s"])

    with tempfile.TemporaryDirectory() as tmp:
        cache = EmbeddingCache(Path(tmp) / "cache.sqlite")
        embed_texts(texts, encoder=encs[chosen], cache=cache, batch_size=args.batch_size)
        t0 = time.perf_counter()
        embed_texts(texts, encoder=encs[chosen], cache=cache, batch_size=args.batch_size)
        hit = time.perf_counter() - t0
        cache.close()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    print(f"{len(texts)} paragraphs (median {statistics.median(tokens):.0f} tokens, max {max(tokens)}) + "
          f"{len(docs)} documents for the cosine; batch {args.batch_size}, max_tokens {args.max_tokens}, "
          f"{args.repeat} interleaved rounds, torch threads {torch.get_num_threads()}, load average {load:.1f}")
    print(f"{'backend':<10} {'texts/s':>8} {'tokens/s':>9} {'vs torch':>8} {'cos min':>8} {'cos mean':>8} "
          f"{'of ceiling':>10} {'cold s':>7}")
    for b, r in rows.items():
        print(f"{b:<10} {r['texts_per_s']:>8.2f} {r['tokens_per_s']:>9.0f} {r['vs_torch']:>7.2f}x {r['cos_min']:>8.4f} "
              f"{r['cos_mean']:>8.4f} {100 * r['fraction_of_fp32_ceiling']:>9.1f}% {r['cold_start_s']:>7.1f}")
    print(f"fp32 matmul peak {peak:.1f} GFLOP/s; MiniLM {flops / 1e9:.2f} GFLOP per text -> ceiling {ceiling:.1f} texts/s")
    print(f"chosen (fastest with cos min >= 0.99): {chosen}  (library default: {DEFAULT_BACKEND}); "
          f"cache hit {len(texts) / hit:.0f} texts/s; peak RSS {peak_mb:.0f} MB")
    doc = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "load_average_1min": load},
        "texts": len(texts), "quality_docs": len(docs), "batch_size": args.batch_size, "max_tokens": args.max_tokens,
        "median_tokens": statistics.median(tokens), "repeat": args.repeat, "backends": rows,
        "fp32_matmul_peak_gflops": peak, "gflop_per_text": flops / 1e9, "ceiling_texts_per_s": ceiling,
        "chosen": chosen, "library_default": DEFAULT_BACKEND, "cache_hit_texts_per_s": len(texts) / hit,
        "peak_rss_mb": peak_mb,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
