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


def test_style_profiles_are_square_roots_of_function_word_rates_and_ignore_topic_words(bench):
    prof = bench.style_profiles(["The war and the peace of the nation", "Tariffs, tariffs, tariffs!", ""])
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    vocab = sorted(ENGLISH_STOP_WORDS)
    assert prof.shape == (3, len(vocab))
    # 8 words: "the" 3 times, "and" once, "of" once; topic words carry no weight of their own
    assert prof[0, vocab.index("the")] == pytest.approx(np.sqrt(3 / 8))
    assert prof[0, vocab.index("and")] == pytest.approx(np.sqrt(1 / 8))
    assert np.count_nonzero(prof[0]) == 3
    assert not prof[1].any() and not prof[2].any()  # no function word / no word at all: the zero profile
    # Euclidean distance between profiles is (sqrt 2 x) the Hellinger distance of the two rate vectors
    a, b = bench.style_profiles(["of the and of the", "the the and and of"])
    assert np.linalg.norm(a - b) == pytest.approx(np.sqrt(np.sum((np.sqrt([2 / 5, 2 / 5, 1 / 5]) - np.sqrt([1 / 5, 2 / 5, 2 / 5])) ** 2)))


def test_real_null_rates_stated_by_the_app_and_cli_are_the_benchmarks_measurement():
    import json

    from cvx_core.analysis.penalty import DEFAULT_SENSITIVITY, REAL_NULL_RATES, SENSITIVITIES, real_null_text

    res = json.loads((ROOT / "benchmarks" / "results" / "changepoints_real.json").read_text())
    assert res["signal"] == "embedding" and res["docs"] == 4 and res["per_address"] == 4
    measured = {}
    for row in res["rows"]:
        if row["method"] == "pelt (analyze defaults)":
            measured[DEFAULT_SENSITIVITY] = row["null_with_any"]
        elif row["method"].startswith("pelt sensitivity "):
            measured[float(row["method"].rsplit(" ", 1)[1])] = row["null_with_any"]
    assert set(SENSITIVITIES) <= set(measured)  # every slider position was measured
    for s in SENSITIVITIES:
        assert REAL_NULL_RATES[s] == pytest.approx(measured[s], abs=5e-4)
        assert f"{measured[s]:.0%} of one speaker's" in real_null_text(s)
    assert real_null_text(0.07) == ""  # not measured: no figure is invented
