"""Fixtures of the scale tests: small planted sets written to files, and one local Ray
cluster (2 CPUs, a small object store) shared by every test of the session."""

from __future__ import annotations

from pathlib import Path

import pytest


def planted(n_users: int, dim: int = 16, seed: int = 0):
    from cvx_core.data.synthetic import PlantedConfig, make_planted_trajectory_set

    cfg = PlantedConfig(n_users=n_users, dim=dim, n_planted=4, min_posts=2, max_posts=40, mean_posts=12.0)
    ts, _ = make_planted_trajectory_set(config=cfg, seed=seed, with_text=True)
    return ts


@pytest.fixture(scope="session")
def make_planted():
    """``make_planted(n_users, dim=16, seed=0)``: a small planted set with texts."""
    return planted


@pytest.fixture(scope="session")
def small_file(tmp_path_factory) -> Path:
    """60 users, D=16, with texts, as Parquet (user-grouped, as ``save_trajectories`` writes)."""
    from cvx_core.data.io import save_trajectories

    path = tmp_path_factory.mktemp("scale") / "small.parquet"
    save_trajectories(planted(60), path)
    return path


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster for the session: started once (Ray start-up costs seconds)."""
    ray = pytest.importorskip("ray")
    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20, log_to_driver=False,
                 configure_logging=False)
        started = True
    yield ray
    if started:
        ray.shutdown()
