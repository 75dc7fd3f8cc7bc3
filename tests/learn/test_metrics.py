"""Metrics on scikit-learn: AUC against the pairwise win rate, ROC curve area, macro AUC with
an absent class, per-class F1 and confusion by hand, the bootstrap interval's coverage of the
point estimate, and the small-data warnings."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvx_core.learn.metrics import (
    bootstrap_auc_ci,
    class_weights,
    classification_metrics,
    macro_auc,
    roc_auc,
    roc_curve,
    small_data_warnings,
)


def _pairwise_auc(y, s):
    pos, neg = s[y == 1], s[y == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (pos.size * neg.size)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 5)), min_size=4, max_size=60))
def test_roc_auc_equals_the_pairwise_win_rate_with_ties(pairs):
    y = np.array([p[0] for p in pairs])
    s = np.array([p[1] for p in pairs], dtype=float)
    if y.min() == y.max():
        assert np.isnan(roc_auc(y, s))
    else:
        assert roc_auc(y, s) == pytest.approx(_pairwise_auc(y, s), abs=1e-12)


def test_roc_auc_is_one_for_perfect_zero_for_reversed_half_for_constant():
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert roc_auc(y, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert roc_auc(y, np.full(4, 0.5)) == 0.5


def test_roc_curve_area_equals_roc_auc_and_runs_from_origin_to_one():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=80)
    s = np.round(rng.normal(size=80) + y, 1)
    fpr, tpr, thr = roc_curve(y, s)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.isinf(thr[0])
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(y, s), abs=1e-12)


def test_binary_metrics_by_hand():
    y = np.array([0, 0, 1, 1, 1])
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4]])
    m = classification_metrics(y, proba, (0, 1))
    np.testing.assert_array_equal(m.confusion, [[1, 1], [1, 2]])
    assert m.accuracy == pytest.approx(3 / 5)
    assert m.f1 == pytest.approx(4 / 6)
    np.testing.assert_allclose(m.f1_per_class, [2 / 4, 4 / 6])
    assert m.auc == pytest.approx(_pairwise_auc(y, proba[:, 1]))
    np.testing.assert_array_equal(m.class_counts, [2, 3])


def test_three_classes_macro_auc_skips_a_class_absent_from_the_test_users():
    y = np.array([0, 1, 0, 1])
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    m = classification_metrics(y, proba, (3, 5, 9))
    assert m.auc == pytest.approx(1.0) and m.accuracy == 1.0
    assert macro_auc(y, proba) == pytest.approx(np.mean([roc_auc(y == 0, proba[:, 0]), roc_auc(y == 1, proba[:, 1])]))
    np.testing.assert_array_equal(m.f1_per_class, [1.0, 1.0, 0.0])
    assert m.fpr is None and m.confusion.shape == (3, 3)


def test_bootstrap_interval_brackets_the_auc_and_narrows_with_more_users():
    rng = np.random.default_rng(0)

    def sample(n):
        y = np.arange(n) % 2
        s = rng.normal(size=n) + 1.0 * y
        return y, np.c_[1 - s, s]

    y, p = sample(40)
    lo, hi = bootstrap_auc_ci(y, p, n_resamples=500, seed=1)
    assert lo <= macro_auc(y, p) <= hi
    y2, p2 = sample(400)
    lo2, hi2 = bootstrap_auc_ci(y2, p2, n_resamples=500, seed=1)
    assert hi2 - lo2 < hi - lo
    assert bootstrap_auc_ci(y, p, n_resamples=500, seed=1) == (lo, hi)  # seeded
    assert all(np.isnan(bootstrap_auc_ci(np.zeros(5, int), np.full((5, 2), 0.5))))


def test_small_data_warnings_name_the_small_test_set_and_class():
    notes = small_data_warnings([12, 4], ["healthy", "at-risk"])
    assert len(notes) == 2 and "16 users" in notes[0] and "at-risk (4)" in notes[1]
    assert small_data_warnings([40, 40], ["a", "b"]) == []


def test_class_weights_are_inverse_frequency():
    np.testing.assert_allclose(class_weights(np.array([0, 0, 0, 1]), 2), [4 / 6, 2.0])
    np.testing.assert_allclose(class_weights(np.array([0, 0]), 2), [0.5, 1.0])


def test_vectorised_bootstrap_statistics_equal_scikit_learn_on_every_resample():
    from sklearn.metrics import f1_score

    from cvx_core.learn.metrics import _resampled_f1, _resampled_macro_auc, macro_auc

    rng = np.random.default_rng(4)
    for k in (2, 3):
        y = rng.integers(0, k, size=25)
        p = rng.dirichlet(np.ones(k), size=25)
        p[:5] = np.round(p[:5], 1)  # ties
        p /= p.sum(axis=1, keepdims=True)
        idx = rng.integers(0, 25, size=(40, 25))
        aucs, f1s = _resampled_macro_auc(y, p, idx), _resampled_f1(y, p.argmax(1), idx, k)
        for r in range(40):
            yy, pp = y[idx[r]], p[idx[r]]
            want = macro_auc(yy, pp) if np.unique(yy).size >= 2 else np.nan
            np.testing.assert_allclose(aucs[r], want, atol=1e-12)
            per = f1_score(yy, pp.argmax(1), labels=np.arange(k), average=None, zero_division=0.0)
            assert f1s[r] == pytest.approx(per[1] if k == 2 else per.mean())


def test_metric_intervals_bracket_model_and_baseline_and_accuracy_is_wilson():
    from cvx_core.learn.metrics import accuracy_interval, metric_intervals

    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 12)
    good = np.column_stack([1 - (y * 0.6 + 0.2), y * 0.6 + 0.2])
    noise = rng.dirichlet([1, 1], size=y.size)
    iv = metric_intervals(y, good, noise, n_resamples=300, seed=1)
    assert set(iv) == {f"{w}_{m}" for w in ("test", "baseline") for m in ("auc", "f1", "accuracy")}
    assert iv["test_auc"] == (1.0, 1.0) and iv["test_accuracy"][1] == pytest.approx(1.0)
    assert iv["baseline_auc"][0] < 0.5 < iv["baseline_auc"][1]
    lo, hi = accuracy_interval(18, 24)
    assert lo < 0.75 < hi and hi - lo > 0.3  # 24 users: wide
    assert metric_intervals(y, good, n_resamples=0).keys() == {"test_accuracy"}
