"""The server's UMAP warm-up runs in a child process (issue 25 §8): it fills numba's disk
cache without compiling anything in the server's own process, so it never holds the server's
numba compiler lock while a training run starts (benchmarks/bench_projection.py measures the
training start)."""

from __future__ import annotations

import os
import time

import pytest

pytest.importorskip("streamlit")
pytest.importorskip("umap")


def test_warm_up_is_off_when_cvx_warm_umap_is_0(monkeypatch):
    from cvx_app import projections

    monkeypatch.setenv("CVX_WARM_UMAP", "0")
    projections._warm_up.clear()
    assert projections.warm_umap_in_background() is None


@pytest.mark.slow
def test_warm_up_compiles_in_a_child_process_and_nothing_in_the_server(monkeypatch, tmp_path):
    import umap.layouts

    from cvx_app import projections

    monkeypatch.setenv("CVX_WARM_UMAP", "1")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))  # an empty cache: the child really compiles
    projections._warm_up.clear()
    state = projections.warm_umap_in_background()
    assert state is not None and state.pid not in (None, os.getpid())
    deadline = time.monotonic() + 900
    while state.returncode is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert state.returncode == 0 and state.seconds is not None and state.seconds > 0, state.error
    assert any(p.suffix == ".nbc" for p in tmp_path.rglob("*"))  # the child filled the disk cache
    layout = umap.layouts._nb_optimize_layout_euclidean_single_epoch
    assert layout.signatures == []  # ... and this process compiled nothing of UMAP's
    projections._warm_up.clear()
