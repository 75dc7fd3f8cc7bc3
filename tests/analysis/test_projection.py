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
