"""Regenerate the shipped sample data: ``python sample_data/generate.py``.

Writes ``sample_data/sample.parquet`` (the trajectories) and ``sample_data/truth.json``
(the planted change points and dimensions) from a fixed seed.
"""

from __future__ import annotations

import json
from pathlib import Path

from cvx_core.data.atomic import atomic_write_bytes
from cvx_core.data.io import save_trajectories
from cvx_core.data.synthetic import make_planted_trajectory_set

HERE = Path(__file__).resolve().parent
SEED = 20261125


def main() -> None:
    trajectories, truth = make_planted_trajectory_set(seed=SEED, name="sample")
    save_trajectories(trajectories, HERE / "sample.parquet")
    atomic_write_bytes(HERE / "truth.json", json.dumps(truth, indent=1).encode("utf-8"))
    s = trajectories.summary()
    print(f"wrote {HERE / 'sample.parquet'}: {s.n_users} users, {s.n_posts} posts, D={s.dim}, labels {s.label_counts}")


if __name__ == "__main__":
    main()
