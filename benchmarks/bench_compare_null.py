"""Calibration of the Compare verdict on labels permuted across users (issue 23.3).

For each of ``--perms`` seeded permutations of the sample's labels across its users, trains the
default classifier (``cvx_core.learn.trainer.train`` with ``TrainConfig()`` except ``--epochs``,
and ``bootstrap=0``: the AUC interval does not touch alpha) and compares its attention with the
analytic attribution as the CLI does (``compare_run``: the run's held-out test users, one-sided
label-permutation test at ``CUTOFF``). Under this null the verdict should be significant in at
most 5% of the trainings. For contrast it also reports the same test on the *training* users
(which the old comparison used) and the unpermuted sample at the same settings.

Run: ``nice -n 10 python benchmarks/bench_compare_null.py [--perms 20 --epochs 5]``.
Prints a table and writes ``benchmarks/results/compare_null.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from cvx_core.data.io import load_trajectories
from cvx_core.data.trajectory import TrajectorySet
from cvx_core.learn.compare import CUTOFF, compare_attention, compare_run
from cvx_core.learn.config import TrainConfig
from cvx_core.learn.trainer import train

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "compare_null.json"


def permuted(ts: TrajectorySet, seed: int) -> TrajectorySet:
    """``ts`` with its labels shuffled across users (seeded); embeddings and times untouched."""
    labels = np.random.default_rng(seed).permutation([tr.label for tr in ts])
    return TrajectorySet([dataclasses.replace(tr, label=int(y)) for tr, y in zip(ts, labels)], name=f"{ts.name}-perm{seed}")


def one(ts: TrajectorySet, *, epochs: int, permutations: int, planted: list[int]) -> dict:
    """Train on ``ts`` and compare on held-out and (for contrast) on training users."""
    t0 = time.perf_counter()
    config = TrainConfig(epochs=epochs, seed=0, bootstrap=0, device="cpu")
    res = train(ts, config)
    ids = res.split.as_user_ids(ts)
    held = compare_run(res.model, ts, split=ids, config=config.features, planted_dims=planted,
                       n_permutations=permutations, seed=config.seed)
    insample = compare_attention(res.model, ts.subset(ids["train"]), config=config.features,
                                 n_permutations=permutations, seed=config.seed, users="training users")
    return {
        "spearman": held.spearman, "pearson": held.pearson, "p_value": held.p_value, "significant": held.significant, "level": held.level,
        "planted_share": held.planted_share, "train_users_spearman": insample.spearman,
        "train_users_p_value": insample.p_value, "train_users_significant": insample.significant,
        "test_auc": res.metrics_dict()["test_auc"], "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / "sample_data" / "sample.parquet"))
    ap.add_argument("--truth", default=str(ROOT / "sample_data" / "truth.json"))
    ap.add_argument("--perms", type=int, default=20, help="label permutations (trainings) under the null")
    ap.add_argument("--epochs", type=int, default=5, help="training epochs per run (default settings otherwise)")
    ap.add_argument("--permutations", type=int, default=999, help="label permutations of each test")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    ts = load_trajectories(args.data)
    planted = json.loads(Path(args.truth).read_text())["planted_dims"]
    rows = []
    print(f"{'labels':>10} {'rho':>7} {'p':>7} {'level':>9} {'sig':>5} {'rho(train)':>10} {'p(train)':>9} "
          f"{'AUC':>6} {'s':>5}", flush=True)
    for seed in [None, *range(args.perms)]:
        data = ts if seed is None else permuted(ts, 1000 + seed)
        row = {"labels": "true" if seed is None else f"perm {seed}", **one(
            data, epochs=args.epochs, permutations=args.permutations, planted=planted)}
        rows.append(row)
        f = lambda x, s: "–" if x is None else format(x, s)  # noqa: E731
        print(f"{row['labels']:>10} {f(row['spearman'], '.3f'):>7} {f(row['p_value'], '.3f'):>7} {row['level']:>9} "
              f"{str(row['significant']):>5} {f(row['train_users_spearman'], '.3f'):>10} "
              f"{f(row['train_users_p_value'], '.3f'):>9} {row['test_auc']:>6.3f} {row['seconds']:>5.0f}", flush=True)
    null = rows[1:]
    summary = {
        "cutoff": CUTOFF,
        "null_trainings": len(null),
        "significant_held_out": sum(r["significant"] for r in null),
        "significant_train_users": sum(r["train_users_significant"] for r in null),
        "levels_held_out": {lv: sum(r["level"] == lv for r in null) for lv in ("none", "weak", "moderate", "strong")},
        "true_labels": rows[0],
    }
    print(f"null: significant on held-out users {summary['significant_held_out']}/{len(null)}, "
          f"on training users {summary['significant_train_users']}/{len(null)} (cut-off p < {CUTOFF:g}); "
          f"true labels: level {rows[0]['level']}, p {rows[0]['p_value']}, load {os.getloadavg()}")
    doc = {"settings": vars(args), "machine": platform.platform(), "cpus": os.cpu_count(),
           "load_average": os.getloadavg(), "summary": summary, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
