"""Benchmark of the Explore page's projections on the shipped sample (240 users, 6,424 posts,
D = 384): time, trustworthiness and how far one user's posts are kept apart, for PCA,
umap-learn's default parameters and CVX's UMAP defaults; and the first UMAP fit in a fresh
process with and without numba's disk cache.

"Collapsed steps": the share of consecutive posts of a user that land less than 0.5% of the
picture's diameter apart (a path drawn as a single segment); "user spread": the median over
users of the spread of their posts relative to the whole cloud's.

Run: ``python benchmarks/bench_projection.py [--skip-fresh]``. Prints a table and writes
``benchmarks/results/projection.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "projection.json"
sys.path.insert(0, str(ROOT))

from cvx_core.analysis.projection import (  # noqa: E402
    UMAP_DEFAULTS,
    clear_projection_cache,
    project_posts,
    projection_trustworthiness,
)
from cvx_core.data.io import load_trajectories  # noqa: E402


def separation(coords: np.ndarray, offsets: np.ndarray) -> tuple[float, float]:
    diam = float(np.linalg.norm(coords.max(0) - coords.min(0)))
    collapsed, spread = [], []
    cloud = float(np.linalg.norm(coords.std(0)))
    for u in range(len(offsets) - 1):
        path = coords[offsets[u] : offsets[u + 1]]
        if len(path) >= 2:
            collapsed.append(np.mean(np.linalg.norm(np.diff(path, axis=0), axis=1) < 0.005 * diam))
        spread.append(float(np.linalg.norm(path.std(0))) / cloud)
    return float(np.mean(collapsed)), float(np.median(spread))


FRESH = """
import os, sys, time
sys.path.insert(0, {root!r})
import numpy as np
t0 = time.perf_counter()
from cvx_core.analysis.projection import enable_numba_cache
import umap
if {cache}:
    enable_numba_cache()
x = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
t1 = time.perf_counter()
umap.UMAP(n_components=2, random_state=0, n_jobs=1).fit_transform(x)
print(time.perf_counter() - t1)
"""


def fresh_fit(cache: bool, cache_dir: str) -> float:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", FRESH.format(root=str(ROOT), cache=cache)],
                         env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-fresh", action="store_true", help="skip the fresh-process numba cache runs")
    args = ap.parse_args()
    ts = load_trajectories(ROOT / "sample_data" / "sample.parquet")
    x = np.concatenate([tr.embeddings for tr in ts])
    offsets = np.concatenate([[0], np.cumsum(ts.lengths)])
    import umap

    rows = []
    clear_projection_cache()
    umap.UMAP(n_components=2, random_state=0, n_jobs=1).fit_transform(x[:200])  # JIT outside the timings

    def record(name: str, coords: np.ndarray, seconds: float) -> None:
        collapsed, spread = separation(coords, offsets)
        rows.append({"projection": name, "seconds": round(seconds, 2),
                     "trustworthiness": round(projection_trustworthiness(x, coords), 4),
                     "collapsed_steps": round(collapsed, 3), "user_spread": round(spread, 3)})
        print(rows[-1], flush=True)

    t0 = time.perf_counter()
    pca = project_posts(ts, use_cache=False)
    record("PCA", pca.coords, time.perf_counter() - t0)
    t0 = time.perf_counter()
    coords = umap.UMAP(n_components=2, random_state=0, n_jobs=1).fit_transform(x)
    record("UMAP, umap-learn defaults (15 neighbours, min_dist 0.1, euclidean, 500 epochs)", coords,
           time.perf_counter() - t0)
    t0 = time.perf_counter()
    cvx = project_posts(ts, method="umap", use_cache=False)
    record(f"UMAP, CVX defaults {UMAP_DEFAULTS}", cvx.coords, time.perf_counter() - t0)

    fresh = {}
    if not args.skip_fresh:
        with tempfile.TemporaryDirectory() as d:
            fresh["no_disk_cache_s"] = round(fresh_fit(False, d), 2)
            fresh["disk_cache_first_process_s"] = round(fresh_fit(True, d), 2)
            fresh["disk_cache_next_process_s"] = round(fresh_fit(True, d), 2)
        print(fresh, flush=True)

    print(f"\n{'projection':<60} {'s':>7} {'trust':>6} {'collapsed':>9} {'spread':>6}")
    for r in rows:
        print(f"{r['projection'][:60]:<60} {r['seconds']:>7.1f} {r['trustworthiness']:>6.3f} "
              f"{r['collapsed_steps']:>9.3f} {r['user_spread']:>6.3f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.python_version()}; shared with other jobs",
        "load_average": os.getloadavg(),
        "dataset": {"users": len(ts), "posts": int(ts.n_posts), "dim": ts.dim},
        "rows": rows,
        "fresh_process_first_umap_fit": fresh,
    }, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
