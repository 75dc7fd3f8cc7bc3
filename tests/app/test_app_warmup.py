"""The server's UMAP warm-up runs in a child process (issue 25 §8): it fills numba's disk
cache, and the server's own process then only loads from it, never compiling, so it never
holds the server's numba compiler lock for a compile while a training run starts
(benchmarks/bench_projection.py measures the training start)."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("streamlit")
pytest.importorskip("umap")


def test_warm_up_is_off_when_cvx_warm_umap_is_0(monkeypatch):
    from cvx_app import projection_jobs

    monkeypatch.setenv("CVX_WARM_UMAP", "0")
    projection_jobs._warm_up.clear()
    assert projection_jobs.warm_umap_in_background() is None


SERVER = """
import json, os, sys, time
sys.path.insert(0, {root!r})
from cvx_app import projection_jobs
state = projection_jobs.warm_umap_in_background()
deadline = time.monotonic() + 900
while state.returncode is None and time.monotonic() < deadline:
    time.sleep(0.5)
import umap.layouts
layout = umap.layouts._nb_optimize_layout_euclidean_single_epoch
print(json.dumps({{"pid": state.pid, "me": os.getpid(), "rc": state.returncode, "seconds": state.seconds,
                  "persisted": state.persisted, "loaded_s": state.loaded_s, "error": state.error,
                  "signatures": len(layout.signatures), "hits": layout.stats.cache_hits.total(),
                  "misses": layout.stats.cache_misses.total()}}))
"""


@pytest.mark.slow
def test_warm_up_compiles_in_a_child_process_and_the_server_only_loads_from_the_cache(tmp_path):
    """A server process with an empty numba cache (``NUMBA_CACHE_DIR``): the child compiles
    and fills the cache; the server then loads UMAP's functions from it without a compile."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "CVX_WARM_UMAP": "1", "NUMBA_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", SERVER.format(root=root)], env=env,
                         capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["pid"] not in (None, got["me"]) and got["rc"] == 0 and got["seconds"] > 0, got
    assert got["persisted"] and any(p.suffix == ".nbc" for p in tmp_path.rglob("*"))  # the child filled the cache
    assert got["signatures"] >= 1 and got["hits"] >= 1 and got["misses"] == 0, got  # loaded here, not compiled
