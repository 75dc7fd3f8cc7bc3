"""The ceiling measurement of ``benchmarks/bench_changepoints_real.py --ceiling``: its
mean-shift statistic is exactly PELT's gain of a split (so the oracle measures what the
detector could reach), splits keep two moments per side, and the whitener whitens."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from cvx_core.analysis.changepoints import segment_cost

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_cp_real", ROOT / "benchmarks" / "bench_changepoints_real.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_mean_statistic_is_the_l2_cost_saved_by_the_split(bench):
    x = np.random.default_rng(0).normal(size=(24, 5))
    starts = np.arange(0, 24, 3)  # 8 moments of 3 posts
    stats = bench._split_stats(x, starts, "mean")
    for j in range(1, 8):
        saved = segment_cost(x, []) - segment_cost(x, [int(starts[j])])
        if 2 <= j <= 6:
            assert stats[j - 1] == pytest.approx(saved)
        else:
            assert stats[j - 1] == -np.inf  # a side with one moment is not allowed


def test_energy_statistic_is_larger_for_a_shift_than_for_none(bench):
    rng = np.random.default_rng(1)
    starts = np.arange(0, 40, 4)
    same = rng.normal(size=(40, 8))
    shifted = same.copy()
    shifted[20:] += 2.0
    assert bench._split_stats(shifted, starts, "energy")[4] > 5 * max(bench._split_stats(same, starts, "energy")[4], 1e-9)


def test_whitener_gives_unit_covariance_on_plenty_of_data(bench):
    rng = np.random.default_rng(2)
    a = rng.normal(size=(4, 4))
    rows = rng.normal(size=(20_000, 4)) @ a
    w = bench._whitener(rows)
    assert np.allclose(np.cov((rows @ w).T), np.eye(4), atol=0.05)


def test_rbf_statistic_is_the_mmd_and_responds_to_a_shift(bench):
    rng = np.random.default_rng(3)
    starts = np.arange(0, 40, 4)
    same = rng.normal(size=(40, 8))
    shifted = same.copy()
    shifted[20:] += 2.0
    assert bench._split_stats(shifted, starts, "rbf")[4] > 3 * max(bench._split_stats(same, starts, "rbf")[4], 1e-9)
