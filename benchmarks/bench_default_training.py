"""CPU and wall time of the app's default training run on the shipped sample (the figure the
landing page states): ``TrainConfig()`` on CPU, as the Train page starts it with its defaults.

Per seed: CPU seconds of the run (``time.process_time``, all threads of this process), user
and system time and peak RSS from ``resource.getrusage``, wall seconds, epochs run and the
kept epoch, test AUC beside the baseline, the head candidate that won, and the planted share
of the learned attention's top |planted| dimensions (``sample_data/truth.json``). Prints a
table and the medians, writes ``benchmarks/results/default_training.json``.
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
    from cvx_core.learn.metrics import planted_share
    from cvx_core.learn.trainer import train

    if args.threads:
        torch.set_num_threads(args.threads)
    ts = load_trajectories(ROOT / "sample_data" / "sample.parquet")
    planted = json.loads((ROOT / "sample_data" / "truth.json").read_text())["planted_dims"]
    setup_cpu = time.process_time()  # interpreter start, imports (torch, scikit-learn) and loading the sample
    print(f"set-up (imports and loading the sample): {setup_cpu:.1f} s CPU")
    rows = []
    print(f"sample: {len(ts)} users, {ts.n_posts} posts, D = {ts.dim}; torch threads {torch.get_num_threads()}")
    print(f"{'seed':>4} {'wall s':>7} {'cpu s':>6} {'user s':>6} {'sys s':>6} {'epochs':>6} {'kept':>4} "
          f"{'test AUC':>8} {'baseline':>8} {'share':>5} {'head':>9}")
    for seed in args.seeds:
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0, c0 = time.perf_counter(), time.process_time()
        with tempfile.TemporaryDirectory() as d:
            result = train(ts, TrainConfig(device="cpu", seed=seed), run_dir=d)
            metrics = json.loads((Path(d) / "metrics.json").read_text())
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - c0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        alpha = result.model.extractor.attention.alpha().detach().cpu().numpy()
        rows.append({"seed": seed, "seconds": seconds, "cpu_seconds": cpu, "user_seconds": r1.ru_utime - r0.ru_utime,
                     "system_seconds": r1.ru_stime - r0.ru_stime, "epochs": int(result.epochs_run),
                     "best_epoch": int(result.best_epoch), "stopped_early": bool(result.stopped_early),
                     "test_auc": float(metrics["test_auc"]), "baseline_auc": float(metrics["baseline_auc"]),
                     "head": metrics.get("head_candidate") or metrics.get("head"),
                     "planted_share": planted_share(alpha, planted)})
        r = rows[-1]
        print(f"{seed:>4} {seconds:>7.1f} {cpu:>6.1f} {r['user_seconds']:>6.1f} {r['system_seconds']:>6.1f} "
              f"{r['epochs']:>6} {r['best_epoch']:>4} {r['test_auc']:>8.3f} {r['baseline_auc']:>8.3f} "
              f"{r['planted_share']:>5.2f} {r['head']:>9}", flush=True)
    median = statistics.median(r["seconds"] for r in rows)
    median_cpu = statistics.median(r["cpu_seconds"] for r in rows)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"median {median:.1f} s wall, {median_cpu:.1f} s CPU over {len(rows)} seeds; peak RSS {peak_mb:.0f} MB; "
          f"load average {os.getloadavg()[0]:.1f}")
    out = {
        "what": "default TrainConfig on sample_data/sample.parquet, CPU; cpu_seconds = time.process_time of the run",
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.python_version()}, torch {torch.__version__}",
        "load_average_at_end": os.getloadavg(),
        "rows": rows,
        "median_seconds": median,
        "median_cpu_seconds": median_cpu,
        "setup_cpu_seconds": setup_cpu,
        "peak_rss_mb": peak_mb,
    }
    path = ROOT / "benchmarks" / "results" / "default_training.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
