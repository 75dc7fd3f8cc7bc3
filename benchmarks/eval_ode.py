"""Classification with and without the latent ODE block on the shipped samples, over seeds,
with the mean-embedding baseline beside it (same split per seed). Table + JSON
(``benchmarks/results/eval_ode.json``); the figures go to docs/training.md.

    .venv/bin/python benchmarks/eval_ode.py [--seeds 0 1 2] [--epochs 15] [--max-len 64]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "eval_ode.json"
SAMPLES = {"synthetic sample (240 users)": ROOT / "sample_data" / "sample.parquet",
           "real text: State of the Union (35 labelled presidents)": ROOT / "sample_data" / "real_text.parquet"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--latent", type=int, default=16)
    args = ap.parse_args()
    import torch

    from cvx_core.data.io import load_trajectories
    from cvx_core.features.config import TemporalFeaturesConfig
    from cvx_core.learn.config import TrainConfig
    from cvx_core.learn.trainer import train

    torch.set_num_threads(1)
    rows = []
    for name, path in SAMPLES.items():
        ts = load_trajectories(path)
        labelled = [u for u, y in zip(ts.user_ids, ts.labels) if y >= 0]
        ts = ts.subset(labelled)
        for ode in (0, args.latent):
            for seed in args.seeds:
                cfg = TrainConfig(epochs=args.epochs, seed=seed, max_len=args.max_len, head="mlp", device="cpu",
                                  bootstrap=0, features=TemporalFeaturesConfig(ode_latent_dim=ode))
                t0 = time.perf_counter()
                res = train(ts, cfg)
                m = res.metrics_dict() if hasattr(res, "metrics_dict") else res.to_dict()
                rows.append({"sample": name, "ode_latent_dim": ode, "seed": seed, "seconds": time.perf_counter() - t0,
                             "test_auc": m.get("test_auc"), "baseline_auc": m.get("baseline_auc"),
                             "test_accuracy": m.get("test_accuracy"), "baseline_accuracy": m.get("baseline_accuracy")})
                print(rows[-1], flush=True)
    print(f"\nmachine: {platform.platform()}, 1 torch thread; epochs {args.epochs}, max_len {args.max_len}, MLP head")
    print(f"{'sample':<52} {'ODE':>4} {'test AUC':>16} {'baseline AUC':>16} {'s/run':>6}")
    summary = []
    for name in SAMPLES:
        for ode in (0, args.latent):
            rs = [r for r in rows if r["sample"] == name and r["ode_latent_dim"] == ode]
            auc = [r["test_auc"] for r in rs]
            base = [r["baseline_auc"] for r in rs]
            s = {"sample": name, "ode_latent_dim": ode, "test_auc_mean": statistics.mean(auc),
                 "test_auc_sd": statistics.stdev(auc) if len(auc) > 1 else 0.0,
                 "baseline_auc_mean": statistics.mean(base), "baseline_auc_sd": statistics.stdev(base) if len(base) > 1 else 0.0,
                 "seconds_mean": statistics.mean(r["seconds"] for r in rs)}
            summary.append(s)
            print(f"{name:<52} {ode:>4} {s['test_auc_mean']:>8.3f} ± {s['test_auc_sd']:.3f} "
                  f"{s['baseline_auc_mean']:>8.3f} ± {s['baseline_auc_sd']:.3f} {s['seconds_mean']:>6.1f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": platform.platform(), "args": vars(args), "runs": rows, "summary": summary}, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
