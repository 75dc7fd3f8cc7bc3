"""Wall time of the app's default training run on the shipped sample (the figure the landing
page states): ``TrainConfig()`` on CPU, as the Train page starts it with its defaults.

Prints one row per seed and the median, writes ``benchmarks/results/default_training.json``.
Usage: ``python benchmarks/bench_default_training.py [--seeds 0 1 2] [--threads N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = ap.parse_args()

    import torch

    from cvx_core.data.io import load_trajectories
    from cvx_core.learn.config import TrainConfig
    from cvx_core.learn.trainer import train

    if args.threads:
        torch.set_num_threads(args.threads)
    ts = load_trajectories(ROOT / "sample_data" / "sample.parquet")
    rows = []
    print(f"sample: {len(ts)} users, {ts.n_posts} posts, D = {ts.dim}; torch threads {torch.get_num_threads()}")
    print(f"{'seed':>4} {'seconds':>8} {'cpu s':>8} {'epochs':>6} {'test AUC':>8} {'baseline':>8} {'head':>8}")
    for seed in args.seeds:
        t0, c0 = time.perf_counter(), time.process_time()
        with tempfile.TemporaryDirectory() as d:
            result = train(ts, TrainConfig(device="cpu", seed=seed), run_dir=d)
            metrics = json.loads((Path(d) / "metrics.json").read_text())
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - c0
        head = metrics.get("head") or metrics.get("head_chosen") or "?"
        head = head if isinstance(head, str) else str(head.get("name", head)) if isinstance(head, dict) else str(head)
        rows.append({"seed": seed, "seconds": seconds, "cpu_seconds": cpu, "epochs": int(result.epochs_run),
                     "test_auc": float(metrics["test_auc"]), "baseline_auc": float(metrics["baseline_auc"]),
                     "head": head})
        r = rows[-1]
        print(f"{seed:>4} {seconds:>8.1f} {cpu:>8.1f} {r['epochs']:>6} {r['test_auc']:>8.3f} {r['baseline_auc']:>8.3f} {head:>8}")
    median = statistics.median(r["seconds"] for r in rows)
    median_cpu = statistics.median(r["cpu_seconds"] for r in rows)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"median {median:.1f} s wall, {median_cpu:.1f} s CPU over {len(rows)} seeds; peak RSS {peak_mb:.0f} MB; "
          f"load average {os.getloadavg()[0]:.1f}")
    out = {
        "what": "default TrainConfig on sample_data/sample.parquet, CPU",
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.python_version()}, torch {torch.__version__}",
        "load_average_at_end": os.getloadavg(),
        "rows": rows,
        "median_seconds": median,
        "median_cpu_seconds": median_cpu,
        "peak_rss_mb": peak_mb,
    }
    path = ROOT / "benchmarks" / "results" / "default_training.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
