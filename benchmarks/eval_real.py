"""CVX on real labelled multivariate time series with their official train/test splits.

Data: BasicMotions and JapaneseVowels from the UEA archive, as shipped inside the aeon
wheel (files in ``benchmarks/data/uea/``, provenance and licence in its README). Each
series is a user, each time step a post, the channels the embedding; timestamps are the
sampling instants (BasicMotions: 10 Hz; JapaneseVowels: one analysis frame per unit) with
``time_unit="seconds"`` and time constants in seconds.

For each seed, on the official split (validation drawn from TRAIN): CVX's trainer (head
chosen by validation), the mean-embedding logistic regression and a logistic regression
on CVX's analytic features, on the same users. Also ``--cv 5`` on a 30-user subset of
BasicMotions' training set (mean and sd of model and baseline), and the early-detection
block of the shipped sample. Prints a table, writes ``benchmarks/results/eval_real.json``.

    .venv/bin/python benchmarks/eval_real.py [--seeds 5] [--quick]
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cvx_core.data.atomic import atomic_write_json  # noqa: E402
from cvx_core.data.trajectory import Trajectory, TrajectorySet  # noqa: E402
from cvx_core.features.analytic import AnalyticBackend  # noqa: E402
from cvx_core.features.config import TemporalFeaturesConfig  # noqa: E402
from cvx_core.learn.baseline import logreg_on_vectors  # noqa: E402
from cvx_core.learn.config import TrainConfig  # noqa: E402
from cvx_core.learn.trainer import cross_validate, train  # noqa: E402

DATA = ROOT / "benchmarks" / "data" / "uea"

#: sampling period (seconds) and feature constants (seconds) per set
SETS = {
    "BasicMotions": dict(period=0.1, features=dict(time_unit="seconds", min_dt=0.01, scales=(0.5, 2.0, 5.0),
                                                   silence_gap=1.0, silence_temperature=0.1, ema_tau=1.0)),
    "JapaneseVowels": dict(period=1.0, features=dict(time_unit="seconds", min_dt=0.1, scales=(2.0, 4.0, 8.0),
                                                     silence_gap=5.0, silence_temperature=0.5, ema_tau=4.0)),
}

#: published ROCKET accuracy (see docs/training.md for the source)
ROCKET = {"BasicMotions": 1.000, "JapaneseVowels": 0.962}


def read_ts(path: Path) -> tuple[list[np.ndarray], list[str]]:
    """A ``.ts`` (sktime/aeon) file -> series ``[T, C]`` and class names."""
    series, labels = [], []
    in_data = False
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                in_data = line.lower() == "@data"
                continue
            *channels, label = line.split(":")
            arr = np.array([[float(v) for v in ch.split(",")] for ch in channels], dtype=np.float64)
            series.append(arr.T)
            labels.append(label.strip())
    return series, labels


def to_set(series: list[np.ndarray], labels: list[str], classes: list[str], period: float, prefix: str) -> TrajectorySet:
    start = np.datetime64("2020-01-01T00:00:00", "ns")
    trajs = []
    for i, (x, lab) in enumerate(zip(series, labels)):
        steps = (np.arange(x.shape[0]) * period * 1e9).astype("timedelta64[ns]")
        trajs.append(Trajectory(f"{prefix}{i}", x.astype(np.float32), start + steps, label=classes.index(lab)))
    return TrajectorySet(trajs, name=prefix.rstrip("_"))


def load(name: str) -> tuple[TrajectorySet, TrajectorySet, list[str]]:
    xs_tr, y_tr = read_ts(DATA / f"{name}_TRAIN.ts.gz")
    xs_te, y_te = read_ts(DATA / f"{name}_TEST.ts.gz")
    classes = sorted(set(y_tr) | set(y_te))
    period = SETS[name]["period"]
    return (to_set(xs_tr, y_tr, classes, period, f"{name}_train_"), to_set(xs_te, y_te, classes, period, f"{name}_test_"),
            classes)


def mean_sd(v: list[float]) -> tuple[float, float]:
    a = np.asarray(v, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def evaluate_set(name: str, seeds: list[int], epochs: int) -> dict:
    train_ts, test_ts, classes = load(name)
    fcfg = TemporalFeaturesConfig(**SETS[name]["features"])
    rows = []
    for seed in seeds:
        t0 = time.perf_counter()
        cfg = TrainConfig(device="cpu", seed=seed, epochs=epochs, patience=10, batch_size=32, features=fcfg,
                          bootstrap=0)
        res = train(train_ts, cfg, test_data=test_ts)
        # logistic regression on CVX's analytic features, same users, same split
        all_ts = TrajectorySet([*train_ts, *test_ts])
        feats = np.stack([AnalyticBackend.extract_all(tr.embeddings, tr.timestamps, fcfg) for tr in all_ts])
        y = all_ts.labels
        lr = logreg_on_vectors(feats, y, res.split, tuple(range(len(classes))), seed=seed)
        rows.append({
            "seed": seed, "cvx_accuracy": res.test.accuracy, "baseline_accuracy": res.baseline.test.accuracy,
            "analytic_lr_accuracy": lr.test.accuracy, "cvx_auc": res.test.auc, "baseline_auc": res.baseline.test_auc,
            "analytic_lr_auc": lr.test.auc, "head": res.head.head, "head_c": res.head.c, "head_choice": res.head.reason,
            "best_epoch": res.best_epoch, "seconds": time.perf_counter() - t0,
        })
        print(f"  {name} seed {seed}: CVX {res.test.accuracy:.3f}  mean-emb {res.baseline.test.accuracy:.3f}  "
              f"analytic LR {lr.test.accuracy:.3f}  ({res.head.reason}; best epoch {res.best_epoch}; "
              f"{rows[-1]['seconds']:.0f}s)", flush=True)
    summary = {k: mean_sd([r[k] for r in rows]) for k in
               ("cvx_accuracy", "baseline_accuracy", "analytic_lr_accuracy", "cvx_auc", "baseline_auc", "analytic_lr_auc")}
    return {"name": name, "n_train": len(train_ts), "n_test": len(test_ts), "dim": train_ts.dim, "classes": classes,
            "features": fcfg.to_dict(), "seeds": rows, "summary": summary, "rocket_published": ROCKET[name]}


def cv_small(k: int, n_users: int, epochs: int) -> dict:
    """``--cv k`` on a stratified ``n_users`` subset of BasicMotions' training set."""
    train_ts, _, classes = load("BasicMotions")
    rng = np.random.default_rng(0)
    y = train_ts.labels
    per = n_users // len(classes)
    keep = []
    for c in range(len(classes)):
        idx = np.flatnonzero(y == c)
        keep += rng.choice(idx, size=min(per + (1 if c < n_users % len(classes) else 0), idx.size), replace=False).tolist()
    sub = train_ts.subset([train_ts.user_ids[i] for i in sorted(keep)])
    cfg = TrainConfig(device="cpu", seed=0, epochs=epochs, patience=10, features=TemporalFeaturesConfig(
        **SETS["BasicMotions"]["features"]), bootstrap=0)
    res = cross_validate(sub, cfg, k=k)
    d = res.to_dict()
    d["n_users"] = len(sub)
    return d


def early_sample(epochs: int) -> dict:
    from cvx_core.data.io import load_trajectories

    ts = load_trajectories(ROOT / "sample_data" / "sample.parquet")
    res = train(ts, TrainConfig(device="cpu", seed=0, epochs=epochs, patience=10, bootstrap=1000))
    m = res.metrics_dict()
    return {"test_auc": m["test_auc"], "test_auc_ci": m["test_auc_ci"], "baseline_auc": m["baseline_auc"],
            "n_test": m["n_test"], "head_choice": m["head_choice"], "early": m["early"], "warnings": m["warnings"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--quick", action="store_true", help="2 seeds, 10 epochs (a smoke run)")
    ap.add_argument("--only", choices=("sets", "cv", "early"), default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "eval_real.json"))
    args = ap.parse_args()
    seeds = list(range(2 if args.quick else args.seeds))
    epochs = 10 if args.quick else args.epochs
    out: dict = {"machine": f"{platform.node()} {platform.machine()} ({platform.processor() or 'cpu'}), shared",
                 "epochs": epochs}
    if args.only in (None, "sets"):
        out["sets"] = [evaluate_set(n, seeds, epochs) for n in SETS]
    if args.only in (None, "cv"):
        out["cv5_30_users"] = cv_small(5, 30, epochs)
    if args.only in (None, "early"):
        out["early_sample"] = early_sample(epochs)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(path.read_text()) if path.exists() else {}
    atomic_write_json(path, {**old, **out})
    print()
    print("| set | users train/test | CVX accuracy | mean-embedding LR | LR on analytic features | ROCKET (published) |")
    print("|---|---|---|---|---|---|")
    for s in out.get("sets", []):
        f = s["summary"]
        print(f"| {s['name']} | {s['n_train']}/{s['n_test']} | {f['cvx_accuracy'][0]:.3f} ± {f['cvx_accuracy'][1]:.3f} | "
              f"{f['baseline_accuracy'][0]:.3f} ± {f['baseline_accuracy'][1]:.3f} | "
              f"{f['analytic_lr_accuracy'][0]:.3f} ± {f['analytic_lr_accuracy'][1]:.3f} | {s['rocket_published']:.3f} |")
    if "cv5_30_users" in out:
        c = out["cv5_30_users"]
        print(f"\n--cv 5 on {c['n_users']} BasicMotions users: model AUC {c['test_auc_mean']:.3f} ± {c['test_auc_sd']:.3f}, "
              f"baseline {c['baseline_auc_mean']:.3f} ± {c['baseline_auc_sd']:.3f}; accuracy {c['test_accuracy_mean']:.3f} ± "
              f"{c['test_accuracy_sd']:.3f} vs {c['baseline_accuracy_mean']:.3f} ± {c['baseline_accuracy_sd']:.3f}")
    if "early_sample" in out:
        e = out["early_sample"]["early"]
        print(f"\nsample early detection: ERDE5 {e['erde5']:.3f}, ERDE50 {e['erde50']:.3f}, F_latency {e['f_latency']:.3f}")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
