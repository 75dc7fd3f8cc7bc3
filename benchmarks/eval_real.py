"""CVX beside its baseline, a plain logistic regression and MiniRocket on real labelled sets.

In one process and on the same splits, for each set of ``benchmarks/real_sets.py`` (sensor,
speech and text sets that ship inside registry packages; sources and licences there):

- **CVX**: the trainer's defaults (``TrainConfig()``: head auto, 40 epochs, patience 10) with
  ``scales="auto"`` resolved on the training users (``cvx_core.features.scales``), CPU,
  no bootstrap;
- **its baseline**: the mean-embedding logistic regression the trainer reports beside it
  (class-weighted; ``C`` = 1 unless another value is better by a paired test on the inner-CV
  per-user log-losses; fitted on every non-test user, see ``cvx_core.learn.baseline``);
- **plain LR**: scikit-learn's ``LogisticRegression`` (C=1, standardised inputs) on each
  user's mean vector, fitted on every non-test user, independent of CVX's code;
- **MiniRocket**: ``aeon`` 1.6.0's ``MiniRocketClassifier`` on the raw series (time-series
  sets only; unequal lengths padded with each series' last value), fitted on every
  non-test user.

Official-split sets report test accuracy; ``holdout`` sets (100+ users, no official split:
the Debian changelogs) the test accuracy on the trainer's seeded stratified 60/20/20 split;
``cv`` sets (fewer than 100 users: State of the Union) the mean AUC over stratified 5-fold
cross-validation (``cvx_core.learn.splits.kfold_splits``, validation users from the other
folds). Seeds 0..n-1 (split seed, CVX initialisation, MiniRocket kernels); the table
gives mean ± sd over seeds. A set *meets* the bar when CVX >= max(baseline, plain LR) - 0.01.
Results are merged set by set into ``benchmarks/results/eval_real.json`` (a partial run keeps
the others' rows).

    nice .venv/bin/python benchmarks/eval_real.py [--sets A,B] [--seeds 3] [--epochs N]
        [--folds 5] [--no-minirocket] [--quick] [--extras] [--fixed-days]

``--extras`` adds ``--cv 5`` on a 30-user subset of BasicMotions and the early-detection
block of the shipped sample (the figures under "Small real data" in docs/training.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.real_sets import LOADERS, RealSet  # noqa: E402
from cvx_core.data.atomic import atomic_write_json  # noqa: E402
from cvx_core.data.trajectory import TrajectorySet  # noqa: E402
from cvx_core.features.config import TemporalFeaturesConfig  # noqa: E402
from cvx_core.features.scales import resolve_features  # noqa: E402
from cvx_core.learn.config import TrainConfig  # noqa: E402
from cvx_core.learn.metrics import macro_auc  # noqa: E402
from cvx_core.learn.splits import kfold_splits  # noqa: E402
from cvx_core.learn.trainer import train  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "eval_real.json"
BAR = 0.01


def mean_sd(v: list[float]) -> list[float]:
    a = np.asarray([x for x in v if x is not None and np.isfinite(x)], dtype=np.float64)
    if a.size == 0:
        return [float("nan"), float("nan")]
    return [float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0]


def mean_vectors(ts: TrajectorySet) -> np.ndarray:
    """``[N, D]``: each user's mean embedding."""
    return np.stack([tr.embeddings.astype(np.float64).mean(axis=0) for tr in ts])


def plain_lr(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray, k: int) -> dict:
    """Standardised ``LogisticRegression`` (C=1) on mean vectors: test accuracy and AUC."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(x_tr, y_tr)
    p = np.zeros((x_te.shape[0], k))
    p[:, est.classes_] = est.predict_proba(x_te)
    return {"accuracy": float((p.argmax(1) == y_te).mean()), "auc": macro_auc(y_te, p)}


def minirocket(train_series: list[np.ndarray], y_tr: np.ndarray, test_series: list[np.ndarray], y_te: np.ndarray,
               seed: int) -> dict:
    """aeon's MiniRocketClassifier on series ``[T, C]``: test accuracy (and how the input was shaped)."""
    from aeon.classification.convolution_based import MiniRocketClassifier

    n = max(s.shape[0] for s in [*train_series, *test_series])
    padded = any(s.shape[0] != n for s in [*train_series, *test_series])

    def stack(ss: list[np.ndarray]) -> np.ndarray:  # [N, C, T], padded with each series' last value
        return np.stack([np.pad(s, ((0, n - s.shape[0]), (0, 0)), mode="edge").T for s in ss])

    t0 = time.perf_counter()
    clf = MiniRocketClassifier(random_state=seed, n_jobs=1).fit(stack(train_series), y_tr)
    acc = float((clf.predict(stack(test_series)) == y_te).mean())
    return {"accuracy": acc, "input": f"padded to {n} (edge)" if padded else f"equal length {n}",
            "seconds": time.perf_counter() - t0}


#: ``--fixed-days``: the SPEC's day defaults instead of ``scales="auto"`` (an ablation)
FIXED_DAYS = False


def cvx_config(train_ts: TrajectorySet, seed: int, epochs: int | None) -> tuple[TrainConfig, dict]:
    """The trainer's defaults with ``scales="auto"`` resolved on ``train_ts`` (CPU, no bootstrap)."""
    if FIXED_DAYS:
        features, choice = TemporalFeaturesConfig(), {"reason": "--fixed-days: the SPEC's day defaults",
                                                      **TemporalFeaturesConfig().to_dict()}
    else:
        features, sc = resolve_features(TemporalFeaturesConfig.auto(), train_ts)
        choice = sc.to_dict()
    kw = {} if epochs is None else {"epochs": epochs}
    return TrainConfig(device="cpu", seed=seed, features=features, bootstrap=0, **kw), choice


def run_split(rs: RealSet, seeds: list[int], epochs: int | None, use_minirocket: bool) -> dict:
    """Official split: CVX (validation from TRAIN), its baseline, plain LR and MiniRocket on TEST."""
    y_tr, y_te, k = rs.train.labels, rs.test.labels, len(rs.classes)
    lr = plain_lr(mean_vectors(rs.train), y_tr, mean_vectors(rs.test), y_te, k)
    rows = []
    for seed in seeds:
        cfg, choice = cvx_config(rs.train, seed, epochs)
        t0 = time.perf_counter()
        res = train(rs.train, cfg, test_data=rs.test)
        row = {"seed": seed, "cvx": res.test.accuracy, "cvx_auc": res.test.auc, "baseline": res.baseline.test.accuracy,
               "baseline_auc": res.baseline.test_auc, "plain_lr": lr["accuracy"], "plain_lr_auc": lr["auc"],
               "head": res.head.reason if res.head else None, "candidate": getattr(res.head, "candidate", None), "best_epoch": res.best_epoch,
               "cvx_seconds": time.perf_counter() - t0}
        if use_minirocket and rs.series is not None:
            mr = minirocket(rs.series[0], y_tr, rs.series[1], y_te, seed)
            row.update(minirocket=mr["accuracy"], minirocket_input=mr["input"], minirocket_seconds=mr["seconds"])
        rows.append(row)
        print(f"  {rs.name} seed {seed}: CVX {row['cvx']:.3f}  baseline {row['baseline']:.3f}  plain LR "
              f"{row['plain_lr']:.3f}  MiniRocket {row.get('minirocket', float('nan')):.3f}  "
              f"(best epoch {row['best_epoch']}; {row['cvx_seconds']:.0f} s)", flush=True)
    return {"metric": "accuracy", "n_train": len(rs.train), "n_test": len(rs.test), "scale_choice": choice, "rows": rows}


def run_holdout(rs: RealSet, seeds: list[int], epochs: int | None) -> dict:
    """No official split, 100+ users: the trainer's stratified seeded 60/20/20 split per seed;
    plain LR fitted on its train+val users. Test accuracy (the bar) and AUC."""
    ts, y, k = rs.train, rs.train.labels, len(rs.classes)
    x = mean_vectors(ts)
    rows = []
    for seed in seeds:
        cfg, choice = cvx_config(ts, seed, epochs)
        t0 = time.perf_counter()
        res = train(ts, cfg)
        fit = np.concatenate([res.split.train, res.split.val])
        lr = plain_lr(x[fit], y[fit], x[res.split.test], y[res.split.test], k)
        rows.append({"seed": seed, "cvx": res.test.accuracy, "cvx_auc": res.test.auc,
                     "baseline": res.baseline.test.accuracy, "baseline_auc": res.baseline.test_auc,
                     "plain_lr": lr["accuracy"], "plain_lr_auc": lr["auc"], "n_test": int(res.split.test.size),
                     "head": res.head.reason if res.head else None, "candidate": getattr(res.head, "candidate", None), "best_epoch": res.best_epoch,
                     "cvx_seconds": time.perf_counter() - t0})
        r = rows[-1]
        print(f"  {rs.name} seed {seed}: accuracy CVX {r['cvx']:.3f}  baseline {r['baseline']:.3f}  plain LR "
              f"{r['plain_lr']:.3f}; AUC {r['cvx_auc']:.3f} / {r['baseline_auc']:.3f} / {r['plain_lr_auc']:.3f}  "
              f"(best epoch {r['best_epoch']}; {r['cvx_seconds']:.0f} s)", flush=True)
    return {"metric": "accuracy, seeded 60/20/20 split", "n_users": len(ts), "scale_choice": choice, "rows": rows}


def run_cv(rs: RealSet, seeds: list[int], epochs: int | None, folds: int) -> dict:
    """Stratified ``folds``-fold CV per seed: mean test AUC over the folds of CVX, its baseline, plain LR."""
    ts, y, k = rs.train, rs.train.labels, len(rs.classes)
    x = mean_vectors(ts)
    rows = []
    for seed in seeds:
        cfg, _ = cvx_config(ts, seed, epochs)
        per_fold = []
        for i, split in enumerate(kfold_splits(y, folds, val_fraction=cfg.val_fraction, seed=seed)):
            fit = np.concatenate([split.train, split.val])
            # scales chosen on the fold's non-test users only
            cfg_f, choice = cvx_config(ts.subset([ts.user_ids[j] for j in fit]), seed, epochs)
            t0 = time.perf_counter()
            res = train(ts, cfg_f, split=split)
            lr = plain_lr(x[fit], y[fit], x[split.test], y[split.test], k)
            per_fold.append({"fold": i + 1, "cvx": res.test.auc, "baseline": res.baseline.test_auc, "plain_lr": lr["auc"],
                             "cvx_accuracy": res.test.accuracy, "head": res.head.reason if res.head else None, "candidate": getattr(res.head, "candidate", None),
                             "best_epoch": res.best_epoch, "cvx_seconds": time.perf_counter() - t0})
        row = {"seed": seed, **{m: float(np.mean([f[m] for f in per_fold])) for m in ("cvx", "baseline", "plain_lr")},
               "fold_sd": {m: mean_sd([f[m] for f in per_fold])[1] for m in ("cvx", "baseline", "plain_lr")},
               "folds": per_fold, "cvx_seconds": float(sum(f["cvx_seconds"] for f in per_fold))}
        rows.append(row)
        print(f"  {rs.name} seed {seed}: {folds}-fold AUC CVX {row['cvx']:.3f}  baseline {row['baseline']:.3f}  "
              f"plain LR {row['plain_lr']:.3f}  ({row['cvx_seconds']:.0f} s)", flush=True)
    return {"metric": f"AUC, {folds}-fold CV", "n_users": len(ts), "scale_choice": choice, "rows": rows}


def cv_30_users(epochs: int | None) -> dict:
    """``cross_validate`` (``--cv 5``) on a stratified 30-user subset of BasicMotions' TRAIN."""
    from cvx_core.learn.trainer import cross_validate

    rs = LOADERS["BasicMotions"]()
    rng = np.random.default_rng(0)
    y, k = rs.train.labels, len(rs.classes)
    keep: list[int] = []
    for c in range(k):
        keep += rng.choice(np.flatnonzero(y == c), size=30 // k + (1 if c < 30 % k else 0), replace=False).tolist()
    sub = rs.train.subset([rs.train.user_ids[i] for i in sorted(keep)])
    cfg, _ = cvx_config(sub, 0, epochs)
    d = cross_validate(sub, cfg, k=5).to_dict()
    d["n_users"] = len(sub)
    return d


def early_sample(epochs: int | None) -> dict:
    """Default training on the shipped sample (seed 0, bootstrap CI) and its early-detection block."""
    from cvx_core.data.io import load_trajectories

    ts = load_trajectories(ROOT / "sample_data" / "sample.parquet")
    cfg, choice = cvx_config(ts, 0, epochs)
    m = train(ts, replace(cfg, bootstrap=1000)).metrics_dict()
    return {"test_auc": m["test_auc"], "test_auc_ci": m["test_auc_ci"], "baseline_auc": m["baseline_auc"],
            "n_test": m["n_test"], "head_choice": m["head_choice"], "early": m["early"], "warnings": m["warnings"],
            "scale_choice": choice}


def summarise(name: str, rs: RealSet, block: dict) -> dict:
    rows = block["rows"]
    s = {m: mean_sd([r.get(m) for r in rows]) for m in ("cvx", "baseline", "plain_lr", "minirocket")}
    s.update({f"{m}_auc": mean_sd([r.get(f"{m}_auc") for r in rows]) for m in ("cvx", "baseline", "plain_lr")})
    best_ref = max(s["baseline"][0], s["plain_lr"][0])
    s["meets_bar"] = bool(s["cvx"][0] >= best_ref - BAR)
    s["gap_to_bar"] = s["cvx"][0] - best_ref
    s["gap_to_minirocket"] = s["cvx"][0] - s["minirocket"][0] if np.isfinite(s["minirocket"][0]) else None
    return {"name": name, "kind": rs.kind, "protocol": rs.protocol, "source": rs.source, "licence": rs.licence,
            "classes": len(rs.classes), "note": rs.note, **block, "summary": s}


def table(sets: list[dict]) -> str:
    lines = ["| set | kind | users | metric | CVX | its baseline | plain LR | MiniRocket | CVX − max(baseline, LR) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for d in sets:
        s = d["summary"]
        users = f"{d['n_train']}/{d['n_test']}" if "n_test" in d else str(d["n_users"])
        f = lambda m: ("–" if s[m][0] is None or not np.isfinite(s[m][0])  # noqa: E731
                       else f"{s[m][0]:.3f} ± {s[m][1]:.3f}")
        lines.append(f"| {d['name']} | {d['kind']} | {users} | {d['metric']} | {f('cvx')} | {f('baseline')} | "
                     f"{f('plain_lr')} | {f('minirocket')} | {s['gap_to_bar']:+.3f}{'' if s['meets_bar'] else ' (below)'} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default=",".join(LOADERS), help=f"comma-separated subset of {', '.join(LOADERS)}")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=None, help="override TrainConfig's epochs (default: its default)")
    ap.add_argument("--folds", type=int, default=5, help="folds of the cv sets")
    ap.add_argument("--no-minirocket", action="store_true")
    ap.add_argument("--quick", action="store_true", help="1 seed, 5 epochs, 3 folds (a smoke run)")
    ap.add_argument("--extras", action="store_true",
                    help="also --cv 5 on 30 BasicMotions users and the sample's early-detection block")
    ap.add_argument("--fixed-days", action="store_true",
                    help="ablation: the SPEC's day defaults (scales 1, 7, 30 days) instead of scales='auto'")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    global FIXED_DAYS
    FIXED_DAYS = args.fixed_days
    names = [n.strip() for n in args.sets.split(",") if n.strip()]
    unknown = [n for n in names if n not in LOADERS]
    if unknown:
        ap.error(f"unknown sets {unknown}; choose from {', '.join(LOADERS)}")
    seeds = list(range(1 if args.quick else args.seeds))
    epochs = 5 if args.quick else args.epochs
    folds = 3 if args.quick else args.folds
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = []
    for name in names:
        t0 = time.perf_counter()
        rs = LOADERS[name]()
        print(f"{name}: {rs.kind}, {rs.protocol}, {len(rs.train)}{'' if rs.test is None else f'/{len(rs.test)}'} users, "
              f"D={rs.train.dim}, {len(rs.classes)} classes", flush=True)
        if rs.protocol == "split":
            block = run_split(rs, seeds, epochs, not args.no_minirocket)
        elif rs.protocol == "holdout":
            block = run_holdout(rs, seeds, epochs)
        else:
            block = run_cv(rs, seeds, epochs, folds)
        d = summarise(name, rs, block)
        d["wall_seconds"] = time.perf_counter() - t0
        d["measured"] = {"utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load_average": os.getloadavg(),
                         "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, shared",
                         "seeds": seeds, "epochs": epochs or TrainConfig().epochs, "quick": args.quick,
                         "fixed_days": args.fixed_days}
        done.append(d)
        old = json.loads(path.read_text()) if path.exists() else {}
        sets = {s["name"]: s for s in old.get("sets", []) if isinstance(s, dict) and "name" in s}
        sets[name] = d
        atomic_write_json(path, {**old, "sets": list(sets.values())})
    if args.extras:
        extras = {"cv5_30_users": cv_30_users(epochs), "early_sample": early_sample(epochs)}
        old = json.loads(path.read_text()) if path.exists() else {}
        atomic_write_json(path, {**old, **extras})
        c, e = extras["cv5_30_users"], extras["early_sample"]
        print(f"--cv 5 on {c['n_users']} BasicMotions users: AUC {c['test_auc_mean']:.3f} ± {c['test_auc_sd']:.3f}, "
              f"baseline {c['baseline_auc_mean']:.3f} ± {c['baseline_auc_sd']:.3f}")
        print(f"sample: test AUC {e['test_auc']:.3f} {e['test_auc_ci']}, baseline {e['baseline_auc']:.3f}; early "
              f"ERDE5 {e['early']['erde5']:.3f}, ERDE50 {e['early']['erde50']:.3f}, F_latency {e['early']['f_latency']:.3f}")
    print()
    print(table(done))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
