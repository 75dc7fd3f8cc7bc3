"""Benchmark of the analytic interpretation path: batch analysis (PELT + attribution) of
1000 users x 100 posts x D=768, and the per-user cost of each piece.

Run: ``python benchmarks/bench_analysis.py [--users 1000 --posts 100 --dim 768]``.
Prints a table and writes ``benchmarks/results/analysis.json``.

``--blas`` instead times ``analyze_set`` with BLAS limited to one thread (the library's
``cvx_core.analysis.batch.BLAS_THREADS``) against the default thread count, alternating, one
run; medians of ``--repeats`` runs, wall and CPU seconds, with a 200-user set and a single
10,000-post user. Writes ``benchmarks/results/analysis_blas.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from cvx_core.analysis.batch import analyze_set
from cvx_core.analysis.attribution import attribute_drift, cohort_attribution
from cvx_core.analysis.changepoints import ChangePointConfig, detect_bocpd, detect_changepoints, match_changepoints
from cvx_core.analysis.narrative import narrate_changepoints
from cvx_core.analysis.projection import clear_projection_cache, project_posts
from cvx_core.data.trajectory import Trajectory, TrajectorySet

RESULTS = Path(__file__).resolve().parent / "results" / "analysis.json"


def make_set(n_users: int, n_posts: int, dim: int, seed: int = 0) -> tuple[TrajectorySet, list[list[int]]]:
    """Users with 0-3 planted mean shifts (jump norm 1.5 sigma sqrt(D)), sigma = 0.05."""
    rng = np.random.default_rng(seed)
    trajs, truth = [], []
    base = np.datetime64("2024-01-01", "us")
    for u in range(n_users):
        k = int(rng.integers(0, 4))
        cps = sorted(rng.choice(np.arange(10, n_posts - 10), size=k, replace=False).tolist()) if k else []
        emb = rng.normal(0.0, 0.05, (n_posts, dim))
        for c in cps:
            direction = rng.normal(size=dim)
            emb[c:] += direction / np.linalg.norm(direction) * 1.5 * 0.05 * np.sqrt(dim)
        secs = np.concatenate([[0], np.cumsum(rng.integers(60, 3 * 86_400, size=n_posts - 1))])
        dts = base + secs.astype("timedelta64[s]").astype("timedelta64[us]")
        trajs.append(Trajectory(f"user_{u:05d}", emb.astype(np.float32), dts, label=u % 2))
        truth.append(cps)
    return TrajectorySet(trajs, name="bench"), truth


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def blas_threads(repeats: int) -> None:
    """Side by side: ``analyze_set`` at ``BLAS_THREADS = 1`` and ``None`` (the default)."""
    from cvx_core.analysis import batch

    many, _ = make_set(200, 100, 384)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(10_000, 64))
    x[3000:] += 0.5
    t = np.datetime64("2020-01-01", "us") + (np.arange(10_000) * 3_600_000_000).astype("timedelta64[us]")
    one = TrajectorySet([Trajectory(user_id="long", embeddings=x, datetimes=t)])
    out: dict[str, dict[str, float]] = {}
    print(f"{'set':<32} {'BLAS threads':>12} {'wall s':>8} {'CPU s':>8}")
    for name, ts in (("200 users x 100 posts x D=384", many), ("1 user x 10,000 posts x D=64", one)):
        times: dict[str, list[tuple[float, float]]] = {"1": [], "default": []}
        analyze_set(ts)  # warm
        for _ in range(repeats):
            for key, limit in (("1", 1), ("default", None)):
                batch.BLAS_THREADS = limit
                t0, c0 = time.perf_counter(), time.process_time()
                analyze_set(ts)
                times[key].append((time.perf_counter() - t0, time.process_time() - c0))
        batch.BLAS_THREADS = 1
        for key, v in times.items():
            wall, cpu = float(np.median([a for a, _ in v])), float(np.median([b for _, b in v]))
            out[f"{name} / {key}"] = {"wall_s": wall, "cpu_s": cpu}
            print(f"{name:<32} {key:>12} {wall:>8.2f} {cpu:>8.2f}")
    path = RESULTS.with_name("analysis_blas.json")
    path.write_text(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(), "load": os.getloadavg(),
                                "repeats": repeats, "rows": out}, indent=1), encoding="utf-8")
    print(f"load {os.getloadavg()}; wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--posts", type=int, default=100)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--sample", type=int, default=100, help="users for the per-user rows")
    ap.add_argument("--blas", action="store_true", help="instead: analyze_set with 1 BLAS thread vs the default")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if args.blas:
        blas_threads(args.repeats)
        return

    ts, truth = make_set(args.users, args.posts, args.dim)
    sample = [ts.at(i) for i in range(min(args.sample, len(ts)))]
    detect_changepoints(sample[0])  # imports outside the timed region
    detect_bocpd(sample[0])

    rows: list[tuple[str, float, str]] = []

    def per_user(name: str, fn) -> None:
        sec = timed(lambda: [fn(tr) for tr in sample], repeat=3)
        rows.append((name, 1e3 * sec / len(sample), "ms/user"))

    per_user("detect_changepoints (KernelCPD l2, default pen)", lambda tr: detect_changepoints(tr))
    per_user(
        "detect_changepoints (KernelCPD cosine)",
        lambda tr: detect_changepoints(tr, config=ChangePointConfig(cost="cosine")),
    )
    few = sample[: max(1, len(sample) // 10)]
    sec = timed(lambda: [detect_changepoints(tr, config=ChangePointConfig(search="pelt")) for tr in few])
    rows.append(("detect_changepoints (ruptures Pelt l2 jump=1, reference)", 1e3 * sec / len(few), "ms/user"))
    per_user("attribute_drift", lambda tr: attribute_drift(tr))
    per_user("detect_bocpd (pca, R=200)", lambda tr: detect_bocpd(tr))
    per_user("narrate_changepoints", lambda tr: narrate_changepoints(tr))

    calls: list[int] = []
    t0 = time.perf_counter()
    res = analyze_set(ts, progress=lambda d, t: calls.append(d))
    batch = time.perf_counter() - t0
    rows.append((f"analyze_set PELT+attribution, {len(ts)} users", batch, "s"))
    rows.append(("cohort_attribution", timed(lambda: cohort_attribution(ts)), "s"))
    clear_projection_cache()
    rows.append((f"project_posts pca ({ts.n_posts} posts), first call", timed(lambda: project_posts(ts)), "s"))
    rows.append(("project_posts pca, cached call", timed(lambda: project_posts(ts)), "s"))

    found = total = false = 0
    for u, cps in zip(res, truth):
        total += len(cps)
        f, x = match_changepoints(cps, u.changepoints.indices, margin=2)
        found, false = found + f, false + x
    recall = found / max(total, 1)

    width = max(len(r[0]) for r in rows)
    print(f"analytic path, {len(ts)} users x {args.posts} posts x D={args.dim} ({os.cpu_count()} cpus)")
    print(f"{'what':<{width}}  {'time':>10}  unit")
    for name, value, unit in rows:
        print(f"{name:<{width}}  {value:>10.3f}  {unit}")
    print(f"planted change points found (+-2 posts): {found}/{total} = {recall:.3f}; false: {false}")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "analysis",
                "users": len(ts),
                "posts": args.posts,
                "dim": args.dim,
                "cpus": os.cpu_count(),
                "machine": platform.machine(),
                "python": platform.python_version(),
                "numpy": np.__version__,
                "rows": [{"what": n, "value": v, "unit": u} for n, v, u in rows],
                "analyze_set_seconds": batch,
                "progress_calls": len(calls),
                "planted_recall": recall,
                "planted_total": total,
                "false_change_points": false,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
