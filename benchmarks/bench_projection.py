"""Benchmark of the Explore page's projections on the shipped sample (240 users, 6,424 posts,
D = 384): time, trustworthiness and how far one user's posts are kept apart, for PCA,
umap-learn's default parameters and CVX's UMAP defaults (with umap-learn's approximate
neighbours and with the exact ones CVX now uses); the first UMAP in a fresh process from an
empty numba cache, before (round one) and after, with and without the warm-up; and how long a
training run waits for its first step while the warm-up runs (in a thread, as in round one,
or in the child process the app now starts).

"Collapsed steps": the share of consecutive posts of a user that land less than 0.5% of the
picture's diameter apart (a path drawn as a single segment); "user spread": the median over
users of the spread of their posts relative to the whole cloud's.

Run: ``python benchmarks/bench_projection.py [--skip-fresh | --only-fresh] [--repeats 3]``. Prints a table and writes
``benchmarks/results/projection.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "projection.json"
SAMPLE = ROOT / "sample_data" / "sample.parquet"
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


# --- a fresh process: the first UMAP on the sample, before and after (issue 25 §8) -----------
# "before": round one's code path, kept here to measure against: a warm-up that fitted 64
# euclidean points (so pynndescent never ran) and a first UMAP through umap-learn's own
# neighbour search (pynndescent above 4,096 points, whose numba functions recompile per process).
BEFORE_WARM = """
import sys, time; sys.path.insert(0, {root!r})
import numpy as np
t0 = time.perf_counter()
import umap
from cvx_core.analysis.projection import enable_numba_cache
enable_numba_cache()
x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
umap.UMAP(n_components=2, n_neighbors=8, n_epochs=20, random_state=0, n_jobs=1).fit_transform(x)
print(time.perf_counter() - t0)
"""
BEFORE_FIRST = """
import sys, time; sys.path.insert(0, {root!r})
import numpy as np
from cvx_core.data.io import load_trajectories
ts = load_trajectories({sample!r})
x = np.concatenate([tr.embeddings for tr in ts])
t0 = time.perf_counter()
import umap
from cvx_core.analysis.projection import UMAP_DEFAULTS, enable_numba_cache
enable_numba_cache()
umap.UMAP(n_components=2, random_state=0, n_jobs=1, init="spectral", **UMAP_DEFAULTS).fit_transform(x)
print(time.perf_counter() - t0)
"""
AFTER_WARM = """
import sys; sys.path.insert(0, {root!r})
from cvx_core.analysis.projection import warm_umap
print(warm_umap())
"""
AFTER_FIRST = """
import sys, time; sys.path.insert(0, {root!r})
from cvx_core.data.io import load_trajectories
ts = load_trajectories({sample!r})
t0 = time.perf_counter()
from cvx_core.analysis.projection import project_posts
project_posts(ts, method="umap", use_cache=False)
print(time.perf_counter() - t0)
"""

AFTER_LOADED_FIRST = """
import sys, time; sys.path.insert(0, {root!r})
from cvx_core.data.io import load_trajectories
from cvx_core.analysis.projection import project_posts, warm_umap
warm_umap()  # the app's server does this after its warm-up child: loads from the disk cache
ts = load_trajectories({sample!r})
t0 = time.perf_counter()
project_posts(ts, method="umap", use_cache=False)
print(time.perf_counter() - t0)
"""


def _in_fresh_process(code: str, cache_dir: str) -> dict[str, float]:
    """Run ``code`` in a new interpreter with ``NUMBA_CACHE_DIR=cache_dir``; its last printed
    number (seconds timed inside), the process's wall seconds and the 1-min load average."""
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code.format(root=str(ROOT), sample=str(SAMPLE))],
                         env=env, capture_output=True, text=True, check=True)
    return {"seconds": round(float(out.stdout.strip().splitlines()[-1]), 2),
            "process_wall_s": round(time.perf_counter() - t0, 2), "load_1min": round(load, 2)}


def fresh_first_umap(only: str = "") -> dict[str, Any]:
    """Each scenario (those whose name contains ``only``) starts from an empty numba cache
    (a fresh install)."""
    out: dict[str, Any] = {}
    scenarios = {
        "before: round-1 warm-up, then first UMAP (umap-learn's pynndescent neighbours)": (BEFORE_WARM, BEFORE_FIRST),
        "after: no warm-up, first UMAP (exact neighbours)": (None, AFTER_FIRST),
        "after: warm_umap (make install-run / server start), then first UMAP": (AFTER_WARM, AFTER_FIRST),
        "after: warm_umap, then the app's server loads it from the cache; first UMAP": (AFTER_WARM, AFTER_LOADED_FIRST),
    }
    for name, (warm, first) in scenarios.items():
        if only not in name:
            continue
        with tempfile.TemporaryDirectory(prefix="numba-") as d:
            row = {"warm_up": _in_fresh_process(warm, d) if warm else None, "first_umap": _in_fresh_process(first, d)}
        out[name] = row
        print(name, row, flush=True)
    return out


# --- a training start while the UMAP warm-up runs (issue 25 §8: the compiler lock) -----------
TRAIN_START = """
import sys, threading, time; sys.path.insert(0, {root!r})
from cvx_core.data.io import load_trajectories
from cvx_core.learn.config import TrainConfig
from cvx_core.learn.trainer import train
ts = load_trajectories({sample!r})
mode = {mode!r}
if mode == "thread":
    from cvx_core.analysis.projection import warm_umap
    threading.Thread(target=warm_umap, daemon=True).start()
elif mode == "process":
    from cvx_core.analysis.projection import warm_umap_process
    proc = warm_umap_process()
time.sleep(1.0)  # the warm-up is under way (compiling) when training starts
stop, first = threading.Event(), []
t0 = time.perf_counter()
def step(p):
    if not first:
        first.append(time.perf_counter() - t0)
    stop.set()
train(ts, TrainConfig(epochs=1, seed=0), callbacks={{"on_step_end": step}}, should_stop=stop)
if mode == "process":
    proc.kill()
print(first[0])
"""


def training_start_during_warm_up(repeats: int) -> dict[str, Any]:
    """Seconds from ``train()`` to its first step in a fresh process whose numba cache holds
    the feature kernels but not UMAP's, with no warm-up, round one's in-process warm-up
    thread, or the warm-up child process the app now starts."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="numba-") as base:
        _in_fresh_process(TRAIN_START.replace("{mode!r}", "'none'"), base)  # compile the feature kernels once
        for mode in ("none", "thread", "process"):
            runs = []
            for _ in range(repeats):
                with tempfile.TemporaryDirectory(prefix="numba-") as d:
                    shutil.copytree(base, d, dirs_exist_ok=True)
                    runs.append(_in_fresh_process(TRAIN_START.replace("{mode!r}", repr(mode)), d))
            out[mode] = {"median_s": round(statistics.median(r["seconds"] for r in runs), 2), "runs": runs}
            print("training start, warm-up:", mode, out[mode], flush=True)
    return out


def quality_rows(ts: Any) -> list[dict[str, Any]]:
    """Time and faithfulness of each projection on the sample (numba compiled beforehand)."""
    import umap

    x = np.concatenate([tr.embeddings for tr in ts])
    offsets = np.concatenate([[0], np.cumsum(ts.lengths)])
    rows: list[dict[str, Any]] = []
    clear_projection_cache()
    project_posts(ts.subset(ts.user_ids[:20]), method="umap", use_cache=False)  # JIT outside the timings
    umap.UMAP(n_components=2, random_state=0, n_jobs=1, **UMAP_DEFAULTS).fit_transform(x)

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
    coords = umap.UMAP(n_components=2, random_state=0, n_jobs=1, init="spectral", **UMAP_DEFAULTS).fit_transform(x)
    record("UMAP, CVX defaults, pynndescent neighbours (round 1)", coords, time.perf_counter() - t0)
    t0 = time.perf_counter()
    cvx = project_posts(ts, method="umap", use_cache=False)
    record(f"UMAP, CVX defaults, exact neighbours {UMAP_DEFAULTS}", cvx.coords, time.perf_counter() - t0)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-fresh", action="store_true", help="skip the fresh-process runs")
    ap.add_argument("--only-fresh", action="store_true", help="only the fresh-process runs (keeps the quality rows "
                    "already in the results file)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per training-start scenario (median)")
    ap.add_argument("--only", default="", help="only the fresh-process scenarios whose name contains this "
                    "(the others stay as they are in the results file)")
    ap.add_argument("--skip-training-start", action="store_true", help="fresh-process runs without the "
                    "training-start ones (keeps those already in the results file)")
    args = ap.parse_args()
    ts = load_trajectories(SAMPLE)
    doc: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    doc.update({
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.python_version()}; shared with other jobs",
        "load_average_start": os.getloadavg(),
        "dataset": {"users": len(ts), "posts": int(ts.n_posts), "dim": ts.dim},
    })
    if not args.only_fresh:
        doc["rows"] = quality_rows(ts)
        print(f"\n{'projection':<60} {'s':>7} {'trust':>6} {'collapsed':>9} {'spread':>6}")
        for r in doc["rows"]:
            print(f"{r['projection'][:60]:<60} {r['seconds']:>7.1f} {r['trustworthiness']:>6.3f} "
                  f"{r['collapsed_steps']:>9.3f} {r['user_spread']:>6.3f}")
    if not args.skip_fresh:
        doc["fresh_process_first_umap"] = {**doc.get("fresh_process_first_umap", {}), **fresh_first_umap(args.only)}
        if not args.skip_training_start:
            doc["training_start_during_umap_warm_up"] = training_start_during_warm_up(args.repeats)
        print(f"\n{'fresh process, empty numba cache':<72} {'warm-up s':>9} {'first UMAP s':>12} {'load':>5}")
        for name, row in doc["fresh_process_first_umap"].items():
            warm = row["warm_up"]
            print(f"{name[:72]:<72} {warm['seconds'] if warm else 0:>9.1f} {row['first_umap']['seconds']:>12.1f} "
                  f"{row['first_umap']['load_1min']:>5.1f}")
        print(f"\n{'warm-up while training starts':<30} {'first step, median s':>21}")
        for mode, row in doc.get("training_start_during_umap_warm_up", {}).items():
            print(f"{mode:<30} {row['median_s']:>21.1f}")
    doc["load_average_end"] = os.getloadavg()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
