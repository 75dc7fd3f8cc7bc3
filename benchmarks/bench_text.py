"""Benchmark of text ingest: MiniLM embedding throughput and the embedding cache.

Texts: paragraphs of the shipped real-text sample (State of the Union addresses; about 120
tokens each), cycled to ``--texts`` distinct texts (a suffix number keeps them distinct).

- ``encode``: ``embed_texts`` into an empty cache (every text encoded and written):
  texts/s, median of ``--repeat`` runs, each into a fresh cache.
- ``cache hit``: the same call again on the filled cache (no encoder work; the test suite
  asserts the encoder is not called): texts/s, median of ``--repeat`` runs.
- ``speed-up``: encode time / cache-hit time (goal: >= 50x).
- ``cold start``: ``load_encoder()`` (weights digest) and the model's load on its first
  call, in a fresh process. A run whose texts are all cached never loads the model.
- peak RSS of the process.

With ``--device cuda`` (when a GPU is present) the model runs there.
Run: ``python benchmarks/bench_text.py [--texts 256 --batch-size 64 --repeat 3]``.
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

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "text.json"


def sample_paragraphs(n: int) -> list[str]:
    import pandas as pd

    texts = pd.read_parquet(ROOT / "sample_data" / "real_text.parquet", columns=["text"])["text"]
    paras = [p for t in texts for p in t.split("\n\n") if p.strip()]
    return [f"{paras[i % len(paras)]} ({i})" for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--texts", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()

    import torch

    from cvx_core.data.text import EmbeddingCache, embed_texts, load_encoder

    t0 = time.perf_counter()
    enc = load_encoder(max_tokens=args.max_tokens, device=args.device)
    enc.encode(["cold start"])  # the model loads on first use
    cold = time.perf_counter() - t0
    texts = sample_paragraphs(args.texts)
    tokens = enc.count_tokens(texts)
    embed_texts(texts[: args.batch_size], encoder=enc)  # warm-up outside the timed region

    encode_s, hit_s = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            cache = EmbeddingCache(Path(tmp) / f"cache{r}.sqlite")
            t0 = time.perf_counter()
            embed_texts(texts, encoder=enc, cache=cache, batch_size=args.batch_size)
            encode_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            embed_texts(texts, encoder=enc, cache=cache, batch_size=args.batch_size)
            hit_s.append(time.perf_counter() - t0)
            cache_bytes = cache.stats().bytes
            cache.close()
    enc_med, hit_med = statistics.median(encode_s), statistics.median(hit_s)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = [
        ("encode (MiniLM, empty cache)", args.texts / enc_med, "texts/s"),
        ("cache hit (same texts)", args.texts / hit_med, "texts/s"),
        ("speed-up, cache hit vs encode", enc_med / hit_med, "x"),
        ("cold start: digest + model load", cold, "s"),
        ("peak RSS", peak_mb, "MB"),
    ]
    print(f"{args.texts} texts, median {statistics.median(tokens):.0f} tokens (max {max(tokens)}), "
          f"batch {args.batch_size}, max_tokens {args.max_tokens}, device {args.device}, "
          f"torch threads {torch.get_num_threads()}, load average {load:.1f}")
    print(f"{'measure':<34} {'value':>12}  unit")
    for name, val, unit in rows:
        print(f"{name:<34} {val:>12.1f}  {unit}")
    doc = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "load_average_1min": load,
                    "device": args.device,
                    "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None},
        "model_id": enc.model_id,
        "texts": args.texts, "batch_size": args.batch_size, "max_tokens": args.max_tokens,
        "median_tokens": statistics.median(tokens), "repeat": args.repeat,
        "encode_seconds": encode_s, "cache_hit_seconds": hit_s,
        "encode_texts_per_s": args.texts / enc_med, "cache_hit_texts_per_s": args.texts / hit_med,
        "speedup": enc_med / hit_med, "cold_start_s": cold, "cache_bytes": cache_bytes, "peak_rss_mb": peak_mb,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
