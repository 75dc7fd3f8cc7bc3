"""The chunk-aware parser against the previous reader, side by side (issue 27 item 1).

Writes one post table in four encodings (CSV with ``e0 … e{D-1}`` columns and a text
column, CSV with a list column, JSON Lines, Parquet) and times, in fresh subprocesses,
``load_trajectories`` and a full streamed read (``iter_user_chunks``, batches of 4,096 rows)
after a warm-up load (imports paid before the clock starts) with the code of the working
tree and with the code of ``--base`` (a git revision,
extracted with ``git archive``). Runs alternate between the two trees; medians over
``--repeats``. Peak resident growth (``VmHWM``, reset before the read) is reported too. The
load average at the start and end is printed: on a shared machine only the ratios mean much.
JSON goes to ``benchmarks/results/bench_parse.json``.

Usage: ``.venv/bin/python benchmarks/bench_parse.py [--rows 20000] [--dim 32] [--repeats 3] [--base c3855c9]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

CHILD = r"""
import json, sys, time
what, path = sys.argv[1], sys.argv[2]
from cvx_core.data.io import load_trajectories
from cvx_core.scale.stream import iter_user_chunks

def status_kb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])

# warm the imports (pyarrow.csv and the like) on a one-post copy, so both trees are timed on parsing
import os, tempfile
head = open(path, "rb").read(1 << 16)
if path.endswith((".csv", ".jsonl")):
    lines = head.split(b"\n")
    tiny = os.path.join(tempfile.mkdtemp(), os.path.basename(path))
    open(tiny, "wb").write(b"\n".join(lines[:2 if path.endswith(".csv") else 1]) + b"\n")
    load_trajectories(tiny)
else:
    load_trajectories(path)
before = status_kb("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM
t0 = time.perf_counter()
if what == "load":
    n = load_trajectories(path).n_posts
else:
    n = sum(c.trajectories.n_posts for c in iter_user_chunks(path, chunk_users=256))
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "posts": n, "peak_mb": (status_kb("VmHWM") - before) / 1024}))
"""


def _files(folder: Path, rows: int, dim: int, seed: int = 0) -> dict[str, Path]:
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(rows // 20), 20)[:rows]
    stamps = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(np.arange(rows) % 20, unit="D")
    emb = rng.standard_normal((rows, dim)).astype(np.float32)
    texts = [f'post {i}, with "quotes" and, commas' for i in range(rows)]
    base = pd.DataFrame({"user_id": [f"u{u}" for u in users], "timestamp": stamps.strftime("%Y-%m-%dT%H:%M:%SZ"),
                         "label": users % 2, "text": texts})
    wide = pd.concat([base, pd.DataFrame(emb, columns=[f"e{j}" for j in range(dim)])], axis=1)
    out = {"csv e-columns": folder / "wide.csv", "csv list": folder / "list.csv", "jsonl": folder / "posts.jsonl",
           "parquet": folder / "posts.parquet"}
    wide.to_csv(out["csv e-columns"], index=False)
    listed = base.assign(embedding=[json.dumps(r.tolist()) for r in emb])
    listed.to_csv(out["csv list"], index=False)
    listed.assign(embedding=[r.tolist() for r in emb]).to_json(out["jsonl"], orient="records", lines=True)
    from cvx_core.data.io import load_trajectories, save_trajectories

    save_trajectories(load_trajectories(out["csv e-columns"]), out["parquet"])
    return out


def _run(tree: Path, what: str, path: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    res = subprocess.run([sys.executable, "-c", CHILD, what, str(path)], env=env, capture_output=True, text=True,
                         check=True, cwd=tree)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--base", default="c3855c9")
    args = ap.parse_args()
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        old = tmp_path / "base"
        old.mkdir()
        archive = subprocess.run(["git", "archive", args.base, "cvx_core"], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
        files = _files(tmp_path, args.rows, args.dim)
        results = []
        for name, path in files.items():
            for what in ("load", "stream"):
                runs: dict[str, list[dict]] = {"base": [], "new": []}
                for _ in range(args.repeats):
                    for label, tree in (("base", old), ("new", ROOT)):
                        runs[label].append(_run(tree, what, path))
                row = {"file": name, "read": what, "bytes": path.stat().st_size}
                for label in ("base", "new"):
                    row[f"{label}_s"] = statistics.median(r["seconds"] for r in runs[label])
                    row[f"{label}_peak_mb"] = statistics.median(r["peak_mb"] for r in runs[label])
                row["new_over_base"] = row["new_s"] / row["base_s"]
                results.append(row)
                print(f"{name:14s} {what:6s} base {row['base_s']:7.3f} s {row['base_peak_mb']:7.1f} MB | "
                      f"new {row['new_s']:7.3f} s {row['new_peak_mb']:7.1f} MB | time ratio {row['new_over_base']:.2f}",
                      flush=True)
    load_end = os.getloadavg()
    print(f"load average at start {load_start[0]:.2f}, at end {load_end[0]:.2f} ({os.cpu_count()} CPUs)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {"rows": args.rows, "dim": args.dim, "repeats": args.repeats, "base": args.base,
           "machine": platform.platform(), "cpus": os.cpu_count(), "load_average": [load_start[0], load_end[0]],
           "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "results": results}
    (RESULTS / "bench_parse.json").write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
