"""Benchmark of the characters-per-text budget (issue 26): embedding one huge post with the
packaged MiniLM, with and without the cut to ``cvx_core.data.budgets.text_char_budget`` before
tokenising.

Text: the shipped real-text sample (State of the Union paragraphs) repeated to ``--mb``
megabytes, one post. Each mode runs in a fresh process (peak RSS is per process):

- ``budget``: ``embed_texts([post])`` as the library does it (cut to 64 characters per token
  of the 256-token window, 16,384 characters, before the tokenizer sees it);
- ``full``: the tokenizer on the whole post (what ``count_tokens`` did before the budget).

Reports wall seconds and the process's peak RSS growth (VmHWM after minus VmRSS before),
median of ``--repeat`` runs, and checks that the budget's embedding equals the embedding of
the post's first window (the cut changes nothing the encoder would have kept).
Run: ``python benchmarks/bench_text_budget.py [--mb 10 --repeat 3]``.
Prints a table and writes ``benchmarks/results/text_budget.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "text_budget.json"

_CHILD = r"""
import json, sys, time
import numpy as np
import pandas as pd

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    return 0

mode, mb, root = sys.argv[1], float(sys.argv[2]), sys.argv[3]
from cvx_core.data.text import embed_texts, load_encoder
paras = [p for t in pd.read_parquet(root + "/sample_data/real_text.parquet", columns=["text"])["text"]
         for p in t.split("\n\n") if p.strip()]
unit = " ".join(paras)
post = (unit * (int(mb * 2**20) // len(unit) + 1))[: int(mb * 2**20)]
enc = load_encoder("minilm")
enc.encode(["warm up"])
before = rss("VmRSS")
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")
t0 = time.perf_counter()
if mode == "budget":
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vec = embed_texts([post], encoder=enc)[0]
    seconds = time.perf_counter() - t0
    head = enc.encode([post[:4000]])[0]  # the first window lies within 4,000 characters here
    same = float(np.abs(vec - head).max())
else:
    n = enc.count_tokens([post])[0]
    seconds = time.perf_counter() - t0
    same = None
print(json.dumps({"seconds": seconds, "peak_growth": rss("VmHWM") - before, "max_abs_diff_first_window": same}))
"""


def run_mode(mode: str, mb: float) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", _CHILD, mode, str(mb), str(ROOT)], capture_output=True, text=True,
                         env=env, timeout=3600)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rows = {}
    for mode in ("budget", "full"):
        runs = [run_mode(mode, args.mb) for _ in range(args.repeat)]
        ok = [r for r in runs if "error" not in r]
        rows[mode] = {
            "seconds_median": statistics.median(r["seconds"] for r in ok) if ok else None,
            "peak_growth_mb_median": statistics.median(r["peak_growth"] for r in ok) / 2**20 if ok else None,
            "max_abs_diff_first_window": ok[0]["max_abs_diff_first_window"] if ok else None,
            "errors": [r["error"] for r in runs if "error" in r],
        }
    print(f"one post of {args.mb:g} MB, MiniLM (256-token window); median of {args.repeat} fresh processes")
    print(f"{'mode':8s} {'seconds':>9s} {'peak RSS growth MB':>19s}")
    for mode, r in rows.items():
        s = "-" if r["seconds_median"] is None else f"{r['seconds_median']:.3f}"
        m = "-" if r["peak_growth_mb_median"] is None else f"{r['peak_growth_mb_median']:.1f}"
        print(f"{mode:8s} {s:>9s} {m:>19s}  {'; '.join(r['errors'])}")
    print(f"budget vs first window: max |difference| {rows['budget']['max_abs_diff_first_window']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    doc = {"mb": args.mb, "repeat": args.repeat, "rows": rows, "machine": platform.platform(),
           "cpus": os.cpu_count(), "load_average": os.getloadavg()}
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
