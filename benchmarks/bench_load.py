"""Peak memory of loading a large trajectory file (issue 12: at most about 3x the decoded data).

Writes a Parquet file whose decoded data is about ``--gb`` GB (float32 embeddings ``[N, D]``
as a fixed-size list column, like ``save_trajectories`` writes, plus ids and times), in two
layouts: one row group, and row groups of 65,536 rows. Each file is then loaded by
``load_trajectories`` in a fresh subprocess, which reports its resident memory before the
load (after imports) and its peak (``VmHWM``, reset before the load) after it. The table gives the peak growth
in GB and as a multiple of the decoded data; JSON goes to ``benchmarks/results/``.

Usage: ``.venv/bin/python benchmarks/bench_load.py [--gb 1.0] [--dim 768] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

CHILD = r"""
import json, sys, time
import numpy as np
from cvx_core.data.io import load_trajectories

def status_kb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])

# VmHWM (peak resident memory of this process image; unlike ru_maxrss it is not inherited
# from the parent across fork/exec). Reset it so the peak is the load's own.
open("/proc/self/clear_refs", "w").write("5")
before = status_kb("VmRSS")
t0 = time.perf_counter()
ts = load_trajectories(sys.argv[1])
seconds = time.perf_counter() - t0
peak = status_kb("VmHWM")
print(json.dumps({"before_kb": before, "peak_kb": peak, "after_kb": status_kb("VmRSS"), "seconds": seconds,
                  "users": len(ts), "posts": int(ts.n_posts), "dim": ts.dim}))
"""


def write_file(path: Path, *, rows: int, dim: int, posts_per_user: int, row_group: int | None, seed: int = 0) -> int:
    """Write the file in slices (the writer itself never holds it all); returns decoded bytes."""
    rng = np.random.default_rng(seed)
    schema = pa.schema(
        [
            ("user_id", pa.string()),
            ("timestamp", pa.timestamp("us", tz="UTC")),
            ("label", pa.int64()),
            ("embedding", pa.list_(pa.float32(), dim)),
        ]
    )
    step = row_group or 65_536
    decoded = 0
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        batches = []
        for start in range(0, rows, step):
            m = min(step, rows - start)
            idx = np.arange(start, start + m)
            users = idx // posts_per_user
            emb = rng.standard_normal((m, dim), dtype=np.float32)
            t = pa.table(
                {
                    "user_id": pa.array([f"user{u:07d}" for u in users]),
                    "timestamp": pa.array(1_700_000_000_000_000 + idx * 3_600_000_000, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                    "label": pa.array(users % 2, pa.int64()),
                    "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), dim),
                },
                schema=schema,
            )
            decoded += t.nbytes
            if row_group is None:
                batches.append(t)
            else:
                writer.write_table(t, row_group_size=row_group)
        if row_group is None:
            big = pa.concat_tables(batches)
            del batches
            writer.write_table(big, row_group_size=rows)
            del big
    return decoded


def measure(path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=1.0, help="decoded size of the file, GB")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--posts-per-user", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rows = int(args.gb * 2**30 / (args.dim * 4))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for layout, rg in (("one row group", None), ("row groups of 65,536", 65_536)):
            path = Path(tmp) / f"big_{'one' if rg is None else 'many'}.parquet"
            decoded = write_file(path, rows=rows, dim=args.dim, posts_per_user=args.posts_per_user, row_group=rg)
            runs = [measure(path) for _ in range(args.repeats)]
            growth = [(r["peak_kb"] - r["before_kb"]) * 1024 for r in runs]
            med = statistics.median(growth)
            results.append(
                {
                    "layout": layout,
                    "rows": rows,
                    "dim": args.dim,
                    "file_bytes": path.stat().st_size,
                    "decoded_bytes": decoded,
                    "peak_growth_bytes_median": med,
                    "peak_over_decoded_median": med / decoded,
                    "peak_over_decoded_all": [g / decoded for g in growth],
                    "load_seconds_median": statistics.median(r["seconds"] for r in runs),
                    "users": runs[0]["users"],
                }
            )
    print(f"{'layout':24s} {'decoded GB':>10s} {'file GB':>8s} {'peak growth GB':>15s} {'x decoded':>10s} {'load s':>7s}")
    for r in results:
        print(
            f"{r['layout']:24s} {r['decoded_bytes'] / 2**30:10.2f} {r['file_bytes'] / 2**30:8.2f} "
            f"{r['peak_growth_bytes_median'] / 2**30:15.2f} {r['peak_over_decoded_median']:10.2f} {r['load_seconds_median']:7.1f}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": "bench_load",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}".strip(),
        "note": "peak growth = VmHWM after the load (reset before it) - VmRSS before it (after imports), median of repeats",
        "results": results,
    }
    (RESULTS / "bench_load.json").write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
