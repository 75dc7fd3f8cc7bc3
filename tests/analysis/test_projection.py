"""Tests of cvx_core.analysis.projection: 2-D PCA/UMAP projections of every post, cached."""

from __future__ import annotations

import time

import numpy as np
import pytest

from cvx_core.analysis.projection import (
    Projection,
    clear_projection_cache,
    pca_2d,
    project_posts,
)
from cvx_core.data.trajectory import Trajectory, TrajectorySet


def tiny_set(seed: int = 0, dim: int = 6) -> TrajectorySet:
    rng = np.random.default_rng(seed)
    trajs = []
    for u, n in enumerate([5, 1, 8]):
        dts = np.datetime64("2024-01-01", "us") + np.arange(n).astype("timedelta64[D]").astype("timedelta64[us]")
        trajs.append(Trajectory(f"u{u}", rng.normal(size=(n, dim)), dts))
    return TrajectorySet(trajs, name="tiny")


def test_pca_gives_one_point_per_post_with_user_and_post_indices():
    ts = tiny_set()
    proj = project_posts(ts, use_cache=False)
    assert isinstance(proj, Projection)
    assert proj.coords.shape == (ts.n_posts, 2) and proj.coords.dtype == np.float32
    assert proj.user_index.tolist() == [0] * 5 + [1] + [2] * 8
    assert proj.post_index.tolist() == list(range(5)) + [0] + list(range(8))
    assert proj.row_user_ids.tolist()[5] == "u1"
    assert proj.path("u2").shape == (8, 2)
    np.testing.assert_array_equal(proj.path("u2"), proj.coords[6:])
    np.testing.assert_array_equal(proj.changepoint_positions("u2", (3, 6)), proj.coords[[9, 12]])
    with pytest.raises(KeyError):
        proj.path("nobody")
    with pytest.raises(IndexError):
        proj.changepoint_positions("u0", [5])


def test_pca_matches_svd_up_to_a_deterministic_sign():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 7)) * np.array([5, 3, 1, 1, 1, 1, 1])
    coords, ratio = pca_2d(x)
    centred = x - x.mean(axis=0)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    for j in range(2):
        ref = centred @ vt[j]
        assert np.allclose(coords[:, j], ref) or np.allclose(coords[:, j], -ref)
        assert vt[j][np.argmax(np.abs(vt[j]))] * np.sign(coords[:, j] @ ref) > 0
    assert ratio[0] == pytest.approx(s[0] ** 2 / np.sum(s**2))
    wide, _ = pca_2d(x[:5])  # N < D path
    ref = (x[:5] - x[:5].mean(axis=0)) @ np.linalg.svd(x[:5] - x[:5].mean(axis=0))[2][0]
    assert np.allclose(np.abs(wide[:, 0]), np.abs(ref))
    np.testing.assert_array_equal(pca_2d(-x)[0], pca_2d(-x)[0])


def test_pca_of_degenerate_data_is_zero_not_nan():
    coords, ratio = pca_2d(np.ones((4, 3)))
    assert np.all(coords == 0) and ratio == (0.0, 0.0)
    line, _ = pca_2d(np.outer(np.arange(5.0), [1.0, 2.0, 3.0]))
    assert np.all(line[:, 1] == 0) and np.isfinite(line).all()


def test_second_call_is_cached_and_instant(small_planted):
    ts, _ = small_planted
    clear_projection_cache()
    first = project_posts(ts)
    t0 = time.perf_counter()
    second = project_posts(ts)
    assert time.perf_counter() - t0 < 0.05
    assert second is first
    assert project_posts(ts, use_cache=False) is not first
    clear_projection_cache()
    assert project_posts(ts) is not first


def test_bad_method_is_rejected():
    with pytest.raises(ValueError, match="method"):
        project_posts(tiny_set(), method="tsne")


@pytest.mark.slow
def test_umap_gives_one_point_per_post_reproducibly_and_caches(small_planted):
    pytest.importorskip("umap")
    ts, _ = small_planted
    clear_projection_cache()
    kw = dict(method="umap", n_neighbors=10, min_dist=0.2, random_state=3, max_fit=300)
    proj = project_posts(ts, **kw)
    assert proj.coords.shape == (ts.n_posts, 2) and np.isfinite(proj.coords).all()
    assert proj.params["n_neighbors"] == 10 and proj.explained_variance_ratio is None
    assert project_posts(ts, **kw) is proj
    assert ts.n_posts > 300  # subsample-then-transform path was taken


def test_trustworthiness_is_sklearns_figure_and_orders_a_faithful_map_above_a_shuffled_one():
    from sklearn.manifold import trustworthiness

    from cvx_core.analysis.projection import projection_trustworthiness

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5)) * np.array([4.0, 3.0, 0.2, 0.2, 0.2])
    faithful = x[:, :2]
    shuffled = faithful[rng.permutation(120)]
    tw = projection_trustworthiness(x, faithful, n_neighbors=5)
    assert tw == pytest.approx(trustworthiness(x, faithful, n_neighbors=5))
    assert tw > 0.9 > projection_trustworthiness(x, shuffled, n_neighbors=5)
    # on a subsample: the same figure computed on the sampled rows only
    rows = np.sort(np.random.default_rng(3).choice(120, size=50, replace=False))
    assert projection_trustworthiness(x, faithful, n_neighbors=5, sample=50, seed=3) == pytest.approx(
        trustworthiness(x[rows], faithful[rows], n_neighbors=5))
    assert np.isnan(projection_trustworthiness(x[:3], faithful[:3]))


def test_every_projection_carries_its_trustworthiness(small_planted):
    ts, _ = small_planted
    proj = project_posts(ts, use_cache=False)
    assert 0.5 < proj.trustworthiness <= 1.0 and proj.trust_neighbors == 10


def test_disk_cache_survives_a_restart_and_ignores_a_damaged_file(tmp_path, small_planted):
    from cvx_core.analysis.projection import cached_projection

    ts, _ = small_planted
    clear_projection_cache()
    assert cached_projection(ts, cache_dir=tmp_path) is None  # nothing computed yet
    first = project_posts(ts, cache_dir=tmp_path)
    (path,) = tmp_path.glob("*-pca-*.npz")
    clear_projection_cache()  # as after a restart
    again = cached_projection(ts, cache_dir=tmp_path)
    assert again is not None and again.from_disk and not first.from_disk
    np.testing.assert_array_equal(again.coords, first.coords)
    assert again.trustworthiness == first.trustworthiness
    assert again.explained_variance_ratio == pytest.approx(first.explained_variance_ratio)
    clear_projection_cache()
    path.write_bytes(b"not an npz file")
    assert cached_projection(ts, cache_dir=tmp_path) is None
    rebuilt = project_posts(ts, cache_dir=tmp_path)  # recomputed and rewritten
    assert not rebuilt.from_disk
    np.testing.assert_array_equal(rebuilt.coords, first.coords)
    clear_projection_cache()
    assert cached_projection(ts, cache_dir=tmp_path).from_disk


def test_disk_cache_is_keyed_by_the_data_and_the_parameters(tmp_path, small_planted):
    ts, _ = small_planted
    clear_projection_cache()
    project_posts(ts, cache_dir=tmp_path)
    other = ts.subset(ts.user_ids[:10])
    proj = project_posts(other, cache_dir=tmp_path)
    assert proj.coords.shape == (other.n_posts, 2) and not proj.from_disk
    assert len(list(tmp_path.glob("*.npz"))) == 2
    with pytest.raises(ValueError, match="spread"):
        project_posts(ts, method="umap", min_dist=2.0, spread=1.0)


@pytest.mark.slow
def test_umap_reports_progress_and_keeps_a_users_posts_apart(tmp_path, small_planted):
    pytest.importorskip("umap")
    from cvx_core.analysis.projection import cached_projection

    ts, _ = small_planted
    clear_projection_cache()
    seen: list[tuple[int, int]] = []
    proj = project_posts(ts, method="umap", cache_dir=tmp_path, progress=lambda d, t: seen.append((d, t)))
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[0] == 0 and seen[-1] == (1000, 1000)
    assert any(300 < d < 1000 for d in done)  # the layout epochs were reported
    assert 0.5 < proj.trustworthiness <= 1.0
    # consecutive posts of a user do not land on one spot (< 0.5% of the picture's diameter)
    diam = float(np.linalg.norm(proj.coords.max(0) - proj.coords.min(0)))
    steps = np.concatenate([np.linalg.norm(np.diff(proj.path(u), axis=0), axis=1) for u in ts.user_ids])
    assert np.mean(steps < 0.005 * diam) < 0.5
    clear_projection_cache()
    assert cached_projection(ts, method="umap", cache_dir=tmp_path).from_disk


def test_numba_cache_is_switched_on_for_umaps_functions():
    pytest.importorskip("umap")
    import umap.layouts
    from numba.core.dispatcher import Dispatcher

    from cvx_core.analysis.projection import enable_numba_cache

    enable_numba_cache()
    jitted = [f for f in vars(umap.layouts).values() if isinstance(f, Dispatcher)]
    assert jitted and all(type(f._cache).__name__ != "NullCache" for f in jitted)


def test_exact_knn_lists_each_row_first_and_matches_brute_force_cosine():
    from cvx_core.analysis.projection import exact_knn

    rng = np.random.default_rng(1)
    x = rng.normal(size=(90, 6)).astype(np.float32)
    idx, dist = exact_knn(x, 7, metric="cosine")
    assert idx.shape == dist.shape == (90, 7) and idx.dtype == np.int32 and dist.dtype == np.float32
    assert (idx[:, 0] == np.arange(90)).all() and (dist >= 0).all()
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    full = 1.0 - unit @ unit.T
    want = np.sort(full, axis=1)[:, :7]
    assert np.allclose(dist, np.clip(want, 0, None), atol=1e-5)
    assert (np.diff(dist, axis=1) >= 0).all()
    with pytest.raises(ValueError, match="exact neighbours"):
        exact_knn(x, 3, metric="haversine")


WARM_STATS = """
import json, sys
sys.path.insert(0, {root!r})
from cvx_core.analysis.projection import warm_umap
warm_umap()
import umap.umap_, umap.layouts
fns = [umap.umap_.smooth_knn_dist, umap.umap_.compute_membership_strengths,
       umap.layouts._nb_optimize_layout_euclidean_single_epoch]
print(json.dumps({{f.py_func.__name__: [f.stats.cache_hits.total(), f.stats.cache_misses.total()] for f in fns}}))
"""


@pytest.mark.slow
def test_warm_umap_leaves_a_numba_cache_that_the_next_process_loads_instead_of_compiling(tmp_path):
    pytest.importorskip("umap")
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    runs = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-W", "ignore", "-c", WARM_STATS.format(root=root)], env=env,
                             capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stderr[-2000:]
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    first, second = runs
    assert all(misses >= 1 for _, misses in first.values())  # compiled (and written) by the first
    assert all(hits >= 1 and misses == 0 for hits, misses in second.values()), second
    assert any(p.suffix == ".nbc" for p in tmp_path.rglob("*"))
