"""Burst aggregation (``burst_window``) on long users: time and traced memory of the analytic
resampling before issue 26 round three (a ``[bins, posts]`` membership matrix whenever a
bin held more than 8 posts) and now (the same matrix up to 2^23 elements, a time-ordered
scatter-add beyond), side by side in one process, and the largest difference of the bin
means. Prints a table and writes ``benchmarks/results/burst_window.json``.

Usage: ``nice -n 10 python benchmarks/bench_burst.py [--repeat 5]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import tracemalloc
from pathlib import Path

import numpy as np

from cvx_core.features.analytic import _resample

OUT = Path(__file__).resolve().parent / "results" / "burst_window.json"


def resample_before(X: np.ndarray, tt: np.ndarray, width: float):
    """The analytic burst resampling before issue 26 round three, kept verbatim as the reference
    for the numbers: bin means ``[K, D]`` and bin times ``[K]`` of ``X [T, D]`` at times
    ``tt [T]`` in bins of ``width``, with the ``[K, T]`` membership matrix whenever a bin holds
    more than 8 posts. The one copy: ``tests/hostile/test_hostile_long_users.py`` loads this
    file by path and checks the current code against it."""
    T = X.shape[0]
    k = np.floor((tt - tt[0]) / width)
    new = np.empty(T, dtype=bool)
    new[0] = False
    np.not_equal(k[1:], k[:-1], out=new[1:])
    if not new.any():
        return X.mean(axis=0, keepdims=True), np.array([tt.mean()])
    if new[1:].all():
        return X, tt
    starts = np.concatenate(([0], np.flatnonzero(new)))
    K = starts.shape[0]
    counts = np.diff(np.append(starts, T))
    sums = np.empty((K, X.shape[1]))
    bin_of = np.cumsum(new)
    if int(counts.max()) <= 8:
        np.take(X, starts, axis=0, out=sums)
        for r in range(1, int(counts.max())):
            sel = np.flatnonzero(counts > r)
            sums[sel] += X[starts[sel] + r]
    else:
        W = np.zeros((K, T))
        W[bin_of, np.arange(T)] = 1.0
        np.matmul(W, X, out=sums)
    tsum = np.zeros(K)
    np.add.at(tsum, bin_of, tt)
    cnt = counts.astype(np.float64)
    sums /= cnt[:, None]
    return sums, tsum / cnt


def user(T: int, D: int, per_bin: int, seed: int = 0):
    """``T`` posts in bins of ``per_bin`` (one day each) plus one busy bin of 50 posts."""
    rng = np.random.default_rng(seed)
    t = np.sort(np.repeat(np.arange(T // per_bin + 1), per_bin)[:T] + rng.uniform(0, 0.5, size=T))
    t[T // 3 : T // 3 + 50] = t[T // 3]
    return rng.normal(size=(T, D)), np.sort(t)


def measure(fn, X, t, repeat: int) -> tuple[float, int]:
    times = []
    for _ in range(repeat):
        a = time.perf_counter()
        fn(X, t, 1.0)
        times.append(time.perf_counter() - a)
    tracemalloc.start()
    fn(X, t, 1.0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return statistics.median(times), peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    cases = [(2_000, 384, 20), (2_000, 384, 1), (20_000, 384, 20), (20_000, 32, 1), (60_000, 32, 20)]
    rows = []
    print(f"load average {os.getloadavg()[0]:.1f}; median of {args.repeat}")
    print(f"{'posts':>7} {'D':>4} {'per bin':>7} | {'before s':>9} {'before MB':>10} | {'now s':>8} {'now MB':>8} | max |diff|")
    for T, D, per in cases:
        X, t = user(T, D, per)
        before = measure(resample_before, X, t, args.repeat)
        now = measure(_resample, X, t, args.repeat)
        diff = float(np.abs(resample_before(X, t, 1.0)[0] - _resample(X, t, 1.0)[0]).max())
        rows.append({"posts": T, "dim": D, "posts_per_bin": per, "before_s": before[0], "before_peak_mb": before[1] / 2**20,
                     "now_s": now[0], "now_peak_mb": now[1] / 2**20, "max_abs_diff": diff})
        print(f"{T:>7} {D:>4} {per:>7} | {before[0]:>9.4f} {before[1] / 2**20:>10.1f} | {now[0]:>8.4f} "
              f"{now[1] / 2**20:>8.1f} | {diff:.2e}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"load_average": os.getloadavg()[0], "repeat": args.repeat, "rows": rows}, indent=1))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
