"""Change-point detection on the shipped sample data against its planted truth.

Run: ``python benchmarks/measure_sample.py [--data sample_data/sample.parquet --truth
sample_data/truth.json --tolerance 2]``. For every user, PELT (``detect_changepoints`` with
the default ``ChangePointConfig``, default penalty) and BOCPD (``detect_bocpd`` with the
default ``BOCPDConfig``, ``BOCPDResult.peaks(threshold=0.5)``) are compared with the planted
change point (``truth.json``: ``change_points[user_id]["index"]``). A planted change counts
as found when a detected index lies within ``--tolerance`` posts of it; a detected index
farther than that from the planted one is an extra change point (a second detection within
the tolerance is counted apart, as a near duplicate). Prints a table and writes
``benchmarks/results/sample.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import numpy as np

from cvx_core.analysis.changepoints import detect_bocpd, detect_changepoints
from cvx_core.data.io import load_trajectories

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "sample.json"


def score(found: tuple[int, ...] | list[int], planted: int, tolerance: int) -> tuple[bool, int, int]:
    """(planted change found within tolerance, detections farther than tolerance from it,
    further detections within tolerance beyond the first)."""
    near = sum(abs(int(i) - planted) <= tolerance for i in found)
    return near > 0, len(found) - near, max(near - 1, 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=str(ROOT / "sample_data" / "sample.parquet"))
    ap.add_argument("--truth", default=str(ROOT / "sample_data" / "truth.json"))
    ap.add_argument("--tolerance", type=int, default=2)
    ap.add_argument("--threshold", type=float, default=0.5, help="BOCPD peaks threshold")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()

    ts = load_trajectories(args.data)
    truth = json.loads(Path(args.truth).read_text(encoding="utf-8"))
    planted = {uid: int(cp["index"]) for uid, cp in truth["change_points"].items()}

    stats = {name: {"found": 0, "extra": 0, "near_duplicates": 0, "detected": 0} for name in ("pelt", "bocpd")}
    missed: dict[str, list[str]] = {"pelt": [], "bocpd": []}
    n = 0
    for traj in ts:
        if traj.user_id not in planted:
            continue
        n += 1
        idx = planted[traj.user_id]
        pelt = detect_changepoints(traj).indices
        bocpd = detect_bocpd(traj).peaks(threshold=args.threshold)
        for name, found in (("pelt", pelt), ("bocpd", bocpd)):
            ok, extra, dup = score(found, idx, args.tolerance)
            stats[name]["found"] += int(ok)
            stats[name]["extra"] += extra
            stats[name]["near_duplicates"] += dup
            stats[name]["detected"] += len(found)
            if not ok:
                missed[name].append(traj.user_id)

    rows = []
    for name, label in (("pelt", "PELT (default penalty)"), ("bocpd", f"BOCPD pca, peaks(threshold={args.threshold})")):
        s = stats[name]
        rows.append({
            "method": label,
            "users": n,
            "found": s["found"],
            "recall": s["found"] / n if n else float("nan"),
            "extra_changepoints": s["extra"],
            "near_duplicates": s["near_duplicates"],
            "detected": s["detected"],
            "missed_users": missed[name],
        })

    s = ts.summary()
    print(f"{args.data}: {s.n_users} users, {s.n_posts} posts, D={s.dim}; match within {args.tolerance} posts")
    print(f"{'method':<36} {'found':>9} {'recall':>8} {'extra':>6} {'near dup.':>9} {'detected':>9}")
    for r in rows:
        print(f"{r['method']:<36} {r['found']:>4} / {r['users']:<3} {100 * r['recall']:>7.2f}% "
              f"{r['extra_changepoints']:>6} {r['near_duplicates']:>9} {r['detected']:>9}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "sample_changepoints",
                "data": os.path.relpath(args.data, ROOT),
                "truth": os.path.relpath(args.truth, ROOT),
                "users": s.n_users,
                "posts": s.n_posts,
                "dim": s.dim,
                "n_planted_dims": len(truth.get("planted_dims", [])),
                "tolerance": args.tolerance,
                "bocpd_threshold": args.threshold,
                "python": platform.python_version(),
                "numpy": np.__version__,
                "rows": rows,
            },
            indent=1,
        )
        + "\n",
        encoding="utf-8",
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
