"""Issue 26, point 5 (small inputs, large memory): burst aggregation (``burst_window``) and
the EMA op grow linearly with a user's posts on both paths, with the same numbers as before.

The old analytic burst path built a ``[K, T]`` bin-membership matrix (``K`` bins, ``T``
posts) when a bin held more than 8 posts: 60k posts with one busy day cost ~28 GB. It is
kept as ``resample_before`` in ``benchmarks/bench_burst.py`` (the one copy, loaded here by
path as ``_resample_quadratic``) to prove the numbers did not move.
Complexity is proved by memory against size (tracemalloc for NumPy, the largest tensor any
torch op produces for torch), never by wall time.
"""

from __future__ import annotations

import importlib.util
import tracemalloc
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from cvx_core.features import analytic
from cvx_core.features.analytic import AnalyticBackend as A
from cvx_core.features.config import TemporalFeaturesConfig
from cvx_core.features.differentiable import TorchBackend as TB


def _load_reference():
    """``benchmarks/bench_burst.py`` loaded by path (``benchmarks/`` is not a package): it holds
    the one copy of the pre-round resampling, ``resample_before``, for its "before" column and
    for the tests below."""
    spec = importlib.util.spec_from_file_location("cvx_bench_burst", ROOT / "benchmarks" / "bench_burst.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ROOT = Path(__file__).resolve().parents[2]
# the implementation before issue 26 round three (membership-matrix branch included)
_resample_quadratic = _load_reference().resample_before


def _sequential_bin_means(X: np.ndarray, tt: np.ndarray, width: float):
    """A plain loop: bin sums added one post at a time in time order, then divided."""
    k = np.floor((tt - tt[0]) / width)
    E_r, t_r, acc, tacc, n = [], [], X[0].astype(np.float64).copy(), float(tt[0]), 1
    for i in range(1, len(tt)):
        if k[i] != k[i - 1]:
            E_r.append(acc / n), t_r.append(tacc / n)
            acc, tacc, n = X[i].astype(np.float64).copy(), float(tt[i]), 1
        else:
            acc, tacc, n = acc + X[i], tacc + float(tt[i]), n + 1
    E_r.append(acc / n), t_r.append(tacc / n)
    return np.array(E_r), np.array(t_r)


def _busy_user(T: int, D: int, *, busy: int, seed: int = 0, dtype=np.float64):
    """``T`` posts a day apart except ``busy`` posts within one minute (one crowded bin)."""
    rng = np.random.default_rng(seed)
    t = np.arange(T, dtype=np.float64)
    t[T // 3 : T // 3 + busy] = T // 3 + np.sort(rng.uniform(0, 1 / 1440, size=busy))
    t = np.sort(t)
    return rng.normal(size=(T, D)).astype(dtype), t


@pytest.mark.parametrize("long_path", [False, True], ids=["membership-matrix", "scatter-add"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("busy", [3, 8, 9, 40, 400])
def test_burst_resample_matches_the_quadratic_implementation(dtype, busy, long_path):
    X, t = _busy_user(1500, 6, busy=busy, seed=busy, dtype=dtype)
    rng = np.random.default_rng(1)
    t = t + np.repeat(rng.uniform(0, 0.4, size=300), 5)  # bins of several posts everywhere
    t = np.sort(t)
    cap = 0 if long_path else analytic._MEMBERSHIP_CAP  # 0: the path a long user takes
    with mock.patch.object(analytic, "_MEMBERSHIP_CAP", cap):
        new_E, new_t = A.resample(X, t, 1.0)
    old_E, old_t = _resample_quadratic(np.asarray(X, dtype=np.float64), t, 1.0)
    assert new_E.shape == old_E.shape
    np.testing.assert_array_equal(new_t, old_t)
    if busy <= 8 or not long_path:  # the same code as before: the very same bits
        np.testing.assert_array_equal(new_E, old_E)
    else:  # sequential sums against the matrix product's BLAS order: the same numbers to rounding
        np.testing.assert_allclose(new_E, old_E, rtol=1e-13, atol=1e-14)
        np.testing.assert_array_equal(new_E, _sequential_bin_means(np.asarray(X, dtype=np.float64), t, 1.0)[0])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_burst_features_agree_between_paths_and_with_the_old_resample(dtype):
    X, t = _busy_user(1200, 5, busy=200, seed=3)
    cfg = TemporalFeaturesConfig(burst_window=0.5)
    analytic = A.extract_all(X, t, cfg)
    plain = TemporalFeaturesConfig(burst_window=None)
    before = A.extract_all(*_resample_quadratic(X, cfg.to_unit(t), 0.5), plain)
    np.testing.assert_allclose(analytic, before, rtol=1e-12, atol=1e-12)
    torch_out = TB.extract_all(torch.tensor(X, dtype=dtype), t, cfg).double().numpy()
    tol = 1e-10 if dtype == torch.float64 else 2e-4
    np.testing.assert_allclose(torch_out, analytic, rtol=tol, atol=tol)


@settings(max_examples=60, deadline=None)
@given(
    gaps=st.lists(
        st.one_of(st.just(0.0), st.floats(0.0, 0.01), st.floats(0.01, 3.0)), min_size=0, max_size=60
    ),
    width=st.sampled_from([0.05, 0.25, 1.0, 7.0]),
    seed=st.integers(0, 2**16),
)
def test_burst_resample_is_the_sequential_bin_mean_property(gaps, width, seed):
    t = np.concatenate(([0.0], np.cumsum(gaps)))
    X = np.random.default_rng(seed).normal(size=(t.size, 3)) * 10.0 ** np.random.default_rng(seed).integers(-3, 4)
    E_r, t_r = A.resample(X, t, width)
    old_E, old_t = _resample_quadratic(X, t, width)
    # below the membership-matrix cap the implementation is the old one: the very same bits
    np.testing.assert_array_equal(E_r, old_E)
    np.testing.assert_array_equal(t_r, old_t)
    with mock.patch.object(analytic, "_MEMBERSHIP_CAP", 0):  # the long-user path on the same data
        E_l, t_l = A.resample(X, t, width)
    ref_E, ref_t = _sequential_bin_means(X, t, width)
    if ref_E.shape[0] > 1:  # one bin for all posts keeps NumPy's mean (unchanged)
        np.testing.assert_array_equal(E_l, ref_E)
        np.testing.assert_array_equal(t_l, ref_t)
    np.testing.assert_allclose(E_l, old_E, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(t_l, old_t)
    T_E, T_t = TB.resample(torch.tensor(X), t, width)
    np.testing.assert_allclose(T_E.numpy(), E_r, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(T_t.numpy(), t_r, rtol=1e-15, atol=0)


def _numpy_peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_analytic_burst_memory_grows_linearly_with_posts():
    D = 4
    peaks = {}
    for T in (4000, 16000):
        X, t = _busy_user(T, D, busy=50)
        cfg = TemporalFeaturesConfig(burst_window=1.0, scales=(7.0,))
        peaks[T] = _numpy_peak(lambda: A.extract_all(X, t, cfg))
        # the old [K, T] matrix alone would be ~T^2 * 8 bytes (128 MB at 4000, 2 GB at 16000)
        assert peaks[T] < 40 * T * D * 8 + 2_000_000, (T, peaks[T])
    assert peaks[16000] < 6 * peaks[4000], peaks  # x4 posts: ~x4 memory, not x16


class _LargestTensor(TorchDispatchMode):
    """Records the most elements of any tensor an op returns (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for o in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(o, torch.Tensor):
                self.largest = max(self.largest, o.numel())
        return out


@pytest.mark.parametrize("T", [2000, 8000])
def test_differentiable_burst_and_ema_hold_no_square_sized_tensor(T):
    D = 4
    X, t = _busy_user(T, D, busy=50)
    E = torch.tensor(X, requires_grad=True)
    cfg = TemporalFeaturesConfig(burst_window=1.0, scales=(7.0,))
    with _LargestTensor() as mode:
        TB.extract_all(E, t, cfg).sum().backward()
        TB.ema(E, t, cfg).sum().backward()
    # O(T * D) or O(T * EMA block) elements; a [T, T] matrix would be T^2 (9e6 / 1.4e8)
    assert mode.largest <= max(4 * T * D, 2 * T * 256), (T, mode.largest)
    np.testing.assert_allclose(TB.ema(torch.tensor(X), t, cfg).numpy(), A.ema(X, t, cfg), rtol=1e-9, atol=1e-12)
