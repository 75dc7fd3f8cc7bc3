"""Learned attention vs analytic attribution (cvx_core.learn.compare): the statistics against
scipy and exact references, the one top-k rule, the label-permutation test's calibration, the
graded verdict, and the comparison on models whose attention is known."""

from __future__ import annotations

import dataclasses
import json
from itertools import combinations

import numpy as np
import pytest
import torch
from scipy import stats

from cvx_core.analysis.attribution import cohort_attribution
from cvx_core.data.synthetic import PlantedConfig, make_planted_trajectory_set
from cvx_core.data.trajectory import TrajectorySet
from cvx_core.learn.compare import (
    CUTOFF,
    MAX_PERMUTATIONS,
    TopKOverlap,
    chance_jaccard,
    check_permutations,
    compare_attention,
    compare_run,
    grade,
    held_out_users,
    label_permutation_pvalue,
    learned_alpha,
    overlap_ks,
    pearson,
    planted_share,
    spearman,
    topk_indices,
    topk_jaccard,
    topk_overlaps,
)
from cvx_core.learn.model import TrajectoryClassifier


@pytest.fixture(scope="module")
def planted():
    cfg = PlantedConfig(n_users=60, dim=40, n_planted=5, mean_posts=10, max_posts=25)
    return make_planted_trajectory_set(config=cfg, seed=5, name="cmp")


def _model_attending(dims, dim):
    """A model whose attention puts ``dims`` on top (all alpha values distinct)."""
    model = TrajectoryClassifier(dim, 2, hidden=4)
    with torch.no_grad():
        model.extractor.attention.w.copy_(torch.linspace(0.0, 0.1, dim))
        model.extractor.attention.w[list(dims)] += 3.0
    return model


def _relabel(ts: TrajectorySet, labels) -> TrajectorySet:
    return TrajectorySet([dataclasses.replace(t, label=int(y)) for t, y in zip(ts, labels)], name=ts.name)


# ---- statistics ------------------------------------------------------------------------------
def test_spearman_and_pearson_are_scipys_with_ties_and_nan_for_a_constant_vector():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, size=50).astype(float)
    y = x + rng.normal(size=50)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)
    assert np.isnan(pearson(np.ones(5), np.arange(5.0))) and np.isnan(spearman(np.arange(5.0), np.ones(5)))
    with pytest.raises(ValueError, match="one length"):
        spearman(np.ones(3), np.ones(4))


def test_the_top_k_rule_orders_descending_and_breaks_ties_by_the_lower_index():
    assert topk_indices(np.array([1.0, 3, 3, 2]), 2).tolist() == [1, 2]
    x = np.array([5.0, 4, 3, 2, 1, 0])
    y = np.array([5.0, 0, 3, 2, 1, 4])
    assert topk_jaccard(x, y, 2) == pytest.approx(1 / 3)  # {0,1} vs {0,5}
    assert topk_jaccard(x, y, 3) == pytest.approx(2 / 4)  # {0,1,2} vs {0,5,2}
    with pytest.raises(ValueError):
        topk_indices(x, 7)


@pytest.mark.parametrize("dim,ks", [(384, (10, 50)), (40, (10,)), (22, (5,)), (13, (3,)), (4, (1,)), (1, ())])
def test_overlap_ks_stay_at_most_a_quarter_of_d(dim, ks):
    assert overlap_ks(dim) == ks
    assert all(4 * k <= dim or k == 1 for k in ks)


def test_chance_jaccard_equals_the_exact_mean_over_all_pairs_of_k_subsets():
    dim, k = 7, 2
    subsets = [set(c) for c in combinations(range(dim), k)]
    exact = np.mean([len(a & b) / len(a | b) for a in subsets for b in subsets])
    assert chance_jaccard(k, dim) == pytest.approx(exact, rel=1e-12)


def test_topk_overlap_reports_shared_count_chance_and_hypergeometric_p_and_none_when_flat():
    a = np.arange(40.0)[::-1]  # top 10 = dims 0..9
    (ov,) = topk_overlaps(a, a)
    assert ov.k == 10 and ov.jaccard == 1.0 and ov.shared == 10
    assert ov.p_value == pytest.approx(stats.hypergeom(40, 10, 10).sf(9)) and ov.above_chance()
    (flat,) = topk_overlaps(np.ones(40), a)
    assert flat.jaccard is None and flat.shared is None and flat.p_value is None and not flat.above_chance()
    assert flat.chance == pytest.approx(chance_jaccard(10, 40))


def test_planted_share_is_the_planted_fraction_of_alphas_top_planted_count():
    alpha = np.array([9.0, 8, 7, 1, 1, 1])
    assert planted_share(alpha, [0, 1, 5]) == pytest.approx(2 / 3)
    assert planted_share(alpha, [0, 1, 2]) == 1.0
    with pytest.raises(ValueError, match="planted_dims"):
        planted_share(alpha, [6])


@pytest.mark.parametrize("bad", [0, 10, MAX_PERMUTATIONS + 1, 10**9, 99.5, True, "1000"])
def test_absurd_permutation_counts_are_refused_with_the_allowed_range(bad):
    with pytest.raises(ValueError, match="permutations must be a whole number from 99"):
        check_permutations(bad)


def test_label_permutation_pvalue_is_minimal_for_dependence_large_for_noise_and_seeded():
    rng = np.random.default_rng(1)
    n, d = 60, 30
    labels = np.repeat([0, 1], n // 2)
    shares = rng.random((n, d))
    alpha = np.linspace(0, 1, d)
    signal = shares.copy()
    signal[labels == 1] += 0.3 * alpha  # the class difference grows with alpha
    assert label_permutation_pvalue(alpha, signal, labels, n_permutations=199, seed=0) == pytest.approx(1 / 200)
    p = label_permutation_pvalue(alpha, shares, labels, n_permutations=199, seed=0)
    assert p > CUTOFF and p == label_permutation_pvalue(alpha, shares, labels, n_permutations=199, seed=0)


def test_label_permutation_test_rejects_about_five_percent_under_the_null_even_with_structure():
    """Dimensions whose shares vary more have larger class differences by chance; alpha following
    that variance is not agreement with the labels, and the test must not call it one."""
    rng = np.random.default_rng(7)
    n, d = 40, 30
    spread = np.linspace(0.1, 2.0, d)
    alpha = spread + rng.normal(0, 0.05, d)  # follows the label-free structure
    rejections = 0
    for trial in range(60):
        shares = rng.random((n, d)) * spread
        labels = rng.permutation(np.repeat([0, 1], n // 2))
        rejections += label_permutation_pvalue(alpha, shares, labels, n_permutations=99, seed=trial) < CUTOFF
    assert rejections <= 8  # binomial(60, 0.05): P(X > 8) < 0.01
    # a dimension permutation would call most of these trials significant
    shares = rng.random((n, d)) * spread
    labels = np.repeat([0, 1], n // 2)
    diff = np.abs(shares[labels == 1].mean(0) - shares[labels == 0].mean(0))
    assert spearman(alpha, diff) > 0.3


# ---- the verdict -----------------------------------------------------------------------------
def _ov(k: int, p: float) -> TopKOverlap:
    return TopKOverlap(k, 0.2, 0.01, 3, p)


def test_the_verdict_never_grades_above_none_without_significance_and_states_cutoff_and_reason():
    v = grade(0.9, 0.06, [_ov(10, 1e-6), _ov(50, 1e-6)], n_permutations=999)
    assert v.level == "none" and not v.significant and v.cutoff == CUTOFF
    assert "0.06" in v.reason and "not below 0.05" in v.reason and "No evidence" in v.sentence
    strong = grade(0.6, 0.001, [_ov(10, 1e-4), _ov(50, 1e-6)])
    moderate = grade(0.6, 0.001, [_ov(10, 0.3), _ov(50, 1e-6)])
    weak = grade(0.6, 0.001, [_ov(10, 0.3), _ov(50, 0.2)])
    assert [strong.level, moderate.level, weak.level] == ["strong", "moderate", "weak"]
    assert all(v.significant and "< 0.05" in v.reason for v in (strong, moderate, weak))
    assert "k = 50" in moderate.reason and "no top-k overlap" in weak.reason
    none = grade(None, None, [], why_none="alpha is flat")
    assert none.level == "none" and not none.significant and "flat" in none.sentence


# ---- the comparison --------------------------------------------------------------------------
def test_attention_on_planted_dims_is_strong_agreement_with_the_class_difference(planted):
    ts, truth = planted
    dims = truth["planted_dims"]
    cmp = compare_attention(_model_attending(dims, ts.dim), ts, planted_dims=dims, n_permutations=199)
    assert cmp.attribution_kind == "abs_class_difference" and cmp.positive_class == 1
    cohort = cohort_attribution(ts)
    signed = cohort.class_shares[1] - cohort.class_shares[0]
    np.testing.assert_allclose(cmp.attribution, np.abs(signed), rtol=1e-5, atol=1e-8)
    assert cmp.spearman == pytest.approx(spearman(cmp.alpha, cmp.attribution))
    assert cmp.signed_spearman == pytest.approx(spearman(cmp.alpha, signed), abs=1e-6)
    assert cmp.p_value == pytest.approx(1 / 200) and cmp.significant and cmp.level == "strong"
    assert cmp.planted_share == 1.0 and cmp.planted_spearman == pytest.approx(cmp.planted_spearman_max)
    assert [o.k for o in cmp.top_k] == [10]  # k <= D/4 for D = 40
    doc = json.loads(json.dumps(cmp.to_dict(), allow_nan=False))
    for key in ("spearman", "pearson", "p_value", "permutations", "significant", "level", "verdict", "top_k",
                "planted_share", "cutoff", "reason"):
        assert key in doc
    assert doc["top_k"][0].keys() >= {"k", "overlap", "chance"}


def test_attention_elsewhere_is_not_significant_and_has_no_planted_dims_on_top(planted):
    ts, truth = planted
    others = [d for d in range(ts.dim) if d not in truth["planted_dims"]][:5]
    cmp = compare_attention(_model_attending(others, ts.dim), ts, planted_dims=truth["planted_dims"], n_permutations=199)
    assert cmp.planted_share == 0.0 and cmp.planted_spearman < 0
    assert not cmp.significant and cmp.level == "none" and "not below" in cmp.verdict.reason


def test_a_flat_alpha_is_level_none_with_its_reason_and_no_nan_anywhere(planted):
    ts, truth = planted
    flat = TrajectoryClassifier(ts.dim, 2, hidden=4)
    np.testing.assert_allclose(learned_alpha(flat), np.ones(ts.dim))
    cmp = compare_attention(flat, ts, planted_dims=truth["planted_dims"], n_permutations=99)
    assert cmp.level == "none" and not cmp.significant and "flat" in cmp.verdict.reason
    assert cmp.spearman is None and cmp.p_value is None and cmp.planted_share is None
    json.dumps(cmp.to_dict(), allow_nan=False)  # raises on NaN
    assert "nan" not in cmp.to_text().lower()


def test_more_than_two_classes_use_the_class_spread_and_a_dimension_mismatch_is_an_error(planted):
    ts, _ = planted
    three = _relabel(ts, [i % 3 for i in range(len(ts))])
    cmp = compare_attention(_model_attending([0, 1], ts.dim), three, n_permutations=99)
    assert cmp.attribution_kind == "class_spread" and cmp.positive_class is None and cmp.signed_spearman is None
    shares = cohort_attribution(three).class_shares
    np.testing.assert_allclose(cmp.attribution, np.std([shares[c] for c in (0, 1, 2)], axis=0), rtol=1e-5, atol=1e-8)
    with pytest.raises(ValueError, match="dimensions"):
        compare_attention(_model_attending([0], ts.dim + 1), ts, n_permutations=99)


def test_one_class_has_no_test_and_says_why(planted):
    ts, _ = planted
    cmp = compare_attention(_model_attending([0], ts.dim), _relabel(ts, [0] * len(ts)), n_permutations=99)
    assert cmp.attribution_kind == "mean_shares" and cmp.level == "none" and "two classes" in cmp.verdict.reason


def test_held_out_users_are_the_runs_test_users_else_the_users_it_did_not_see(planted):
    ts, _ = planted
    ids = ts.user_ids
    split = {"train": ids[:40], "val": ids[40:50], "test": ids[50:]}
    assert held_out_users(ts, split) == (ids[50:], "10 held-out test users")
    other = ts.subset(ids[45:55])  # e.g. a --test-data file: the run's test users are elsewhere
    assert held_out_users(other, {"train": ids[:40], "val": ids[40:50], "test": ["x"]})[0] == ids[50:55]
    with pytest.raises(ValueError, match="no train/test split"):
        held_out_users(ts, {})
    with pytest.raises(ValueError, match="none of the run's held-out users"):
        held_out_users(ts.subset(ids[:40]), split)
    cmp = compare_run(_model_attending([0], ts.dim), ts, split=split, n_permutations=99)
    assert cmp.n_users == 10 and cmp.users == "10 held-out test users"


@pytest.mark.slow
def test_a_training_on_permuted_labels_is_not_significant_and_not_the_real_runs_level(sample_set, sample_truth):
    """Issue 23: a default training (5 epochs, seed 0) on the sample's labels shuffled across
    users gives ``significant: false``; the same training on the true labels is significant.
    The same two trainings as the first rows of benchmarks/bench_compare_null.py."""
    from cvx_core.learn.config import TrainConfig
    from cvx_core.learn.trainer import train

    config = TrainConfig(epochs=5, seed=0, bootstrap=0, device="cpu")
    out = {}
    for name, data in (("true", sample_set),
                       ("permuted", _relabel(sample_set, np.random.default_rng(1000).permutation(sample_set.labels)))):
        res = train(data, config)
        out[name] = compare_run(res.model, data, split=res.split.as_user_ids(data), config=config.features,
                                planted_dims=sample_truth["planted_dims"], n_permutations=999, seed=0)
    assert out["permuted"].significant is False and out["permuted"].level == "none"
    assert out["true"].significant is True and out["true"].level != out["permuted"].level
