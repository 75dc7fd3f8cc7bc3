"""Change points of one very long user: time and searches against the user's length, with
the windowed search (``CVX_CHANGEPOINT_WINDOW``, default 5,000 moments) and, for lengths
where it is affordable, one whole search (the budget set above the length).

Data: Gaussian noise ``[n, D]`` with a mean shift of 1 standard deviation per dimension on
8 dimensions every 2,500 posts (one date per post), and the same noise without a change
(where PELT prunes least). Prints a table and writes
``benchmarks/results/analysis_long_user.json``.

Run: ``nice -n 10 python benchmarks/bench_analysis_long_user.py [--dim 64] [--lengths 2500,5000,10000,20000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cvx_core.analysis.changepoints import detect_changepoints  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "analysis_long_user.json"


def user(n: int, dim: int, *, planted: bool = True, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim))
    cuts = list(range(2_500, n, 2_500)) if planted else []
    for k, c in enumerate(cuts):
        x[c:, (8 * k) % dim:(8 * k) % dim + 8] += 1.0 if k % 2 == 0 else -1.0
    return x, cuts


def run(x: np.ndarray, budget: int) -> tuple[float, object]:
    os.environ["CVX_CHANGEPOINT_WINDOW"] = str(budget)
    t0 = time.perf_counter()
    res = detect_changepoints(x)
    return time.perf_counter() - t0, res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--lengths", default="2500,5000,10000,20000")
    ap.add_argument("--whole-up-to", type=int, default=10_000, help="also time one whole search up to this length")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    detect_changepoints(np.random.default_rng(0).normal(size=(50, args.dim)))  # import ruptures once
    rows = []
    for n, kind in [(int(v), k) for v in args.lengths.split(",") for k in ("planted", "noise")]:
        x, cuts = user(n, args.dim, planted=kind == "planted")
        for mode, budget in (("windowed", 5_000), ("whole", n)):
            if mode == "whole" and (n <= 5_000 or n > args.whole_up_to):
                continue
            sec, res = run(x, budget)
            found = sum(any(abs(i - c) <= 2 for i in res.indices) for c in cuts)
            rows.append({"posts": n, "user": kind, "mode": mode, "windows": res.n_windows, "seconds": sec, "planted": len(cuts),
                         "found": found, "detections": res.n_changes})
            print(f"{n:>6} posts {kind:7s} {mode:8s} windows {res.n_windows:>2}  {sec:7.2f} s  planted {len(cuts)} found {found} "
                  f"detections {res.n_changes}", flush=True)
    out = {"machine": platform.platform(), "cpus": os.cpu_count(), "load": os.getloadavg(), "dim": args.dim, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1), encoding="utf-8")
    print(f"wrote {args.out} (load {out['load'][0]:.1f})")


if __name__ == "__main__":
    main()
