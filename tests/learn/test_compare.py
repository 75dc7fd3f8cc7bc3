"""Learned attention vs analytic attribution: the statistics against references, the
permutation p-value's behaviour, and the comparison on a model whose attention is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cvx_core.analysis.attribution import cohort_attribution
from cvx_core.data.synthetic import PlantedConfig, make_planted_trajectory_set
from cvx_core.learn.compare import (
    compare_attention,
    learned_alpha,
    pearson,
    permutation_pvalue,
    spearman,
    topk_jaccard,
    verdict,
)
from cvx_core.learn.model import TrajectoryClassifier


@pytest.fixture(scope="module")
def planted():
    cfg = PlantedConfig(n_users=60, dim=40, n_planted=5, mean_posts=10, max_posts=25)
    return make_planted_trajectory_set(config=cfg, seed=5, name="cmp")


def test_spearman_and_pearson_match_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, size=50).astype(float)
    y = x + rng.normal(size=50)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert np.isnan(pearson(np.ones(5), np.arange(5.0)))


def test_topk_jaccard_counts_shared_top_indices():
    x = np.array([5.0, 4, 3, 2, 1, 0])
    y = np.array([5.0, 0, 3, 2, 1, 4])
    assert topk_jaccard(x, y, 2) == pytest.approx(1 / 3)  # {0,1} vs {0,5}
    assert topk_jaccard(x, y, 3) == pytest.approx(2 / 4)  # {0,1,2} vs {0,5,2}
    assert topk_jaccard(x, x, 4) == 1.0


def test_permutation_pvalue_is_small_for_dependence_large_for_noise_and_seeded():
    rng = np.random.default_rng(1)
    x = rng.normal(size=200)
    dependent = permutation_pvalue(x, x + 0.5 * rng.normal(size=200), n_permutations=500, seed=0)
    noise = permutation_pvalue(x, rng.normal(size=200), n_permutations=500, seed=0)
    assert dependent == pytest.approx(1 / 501)
    assert noise > 0.05
    y = rng.normal(size=200)
    assert permutation_pvalue(x, y, n_permutations=300, seed=4) == permutation_pvalue(x, y, n_permutations=300, seed=4)


def test_verdict_says_high_or_low_agreement():
    assert verdict(0.8, 0.001, kind="abs_class_difference").startswith("High agreement")
    assert "signals" in verdict(0.05, 0.6, kind="mean_shares")
    assert "flat" in verdict(float("nan"), float("nan"), kind="mean_shares")


def _model_attending(dims, dim):
    """A model whose attention puts ``dims`` on top (all alpha values distinct)."""
    model = TrajectoryClassifier(dim, 2, hidden=4)
    with torch.no_grad():
        model.extractor.attention.w.copy_(torch.linspace(0.0, 0.1, dim))
        model.extractor.attention.w[list(dims)] += 3.0
    return model


def test_attention_on_planted_dims_agrees_with_class_difference_attribution(planted):
    ts, truth = planted
    dims = truth["planted_dims"]
    cmp = compare_attention(_model_attending(dims, ts.dim), ts, planted_dims=dims, ks=(5, 10, 50), n_permutations=300)
    assert cmp.attribution_kind == "abs_class_difference" and cmp.positive_class == 1
    cohort = cohort_attribution(ts)
    signed = cohort.class_shares[1] - cohort.class_shares[0]
    np.testing.assert_allclose(cmp.attribution, np.abs(signed))
    assert cmp.signed_spearman == pytest.approx(spearman(cmp.alpha, signed))
    # the 5 attended dims are the attribution's top 5; the order of the other 35 is noise
    assert cmp.topk_jaccard[5] == 1.0 and cmp.pearson > 0.5
    assert cmp.planted_spearman == pytest.approx(cmp.planted_spearman_max)
    assert cmp.planted_topk_overlap[len(dims)] == 1.0
    assert set(cmp.topk_jaccard) == {5, 10, 40}  # k = 50 is capped at D = 40
    assert cmp.verdict and cmp.to_dict()["attribution_kind"] == "abs_class_difference"


def test_attention_elsewhere_disagrees_and_untrained_alpha_is_flat(planted):
    ts, truth = planted
    others = [d for d in range(ts.dim) if d not in truth["planted_dims"]][:5]
    cmp = compare_attention(_model_attending(others, ts.dim), ts, planted_dims=truth["planted_dims"], n_permutations=200)
    assert cmp.planted_topk_overlap[5] == 0.0 and cmp.planted_spearman < 0
    flat = TrajectoryClassifier(ts.dim, 2, hidden=4)
    np.testing.assert_allclose(learned_alpha(flat), np.ones(ts.dim))
    assert "flat" in compare_attention(flat, ts, n_permutations=50).verdict


def test_more_than_two_classes_use_mean_shares_and_dimension_mismatch_is_an_error(planted):
    from cvx_core.data.trajectory import Trajectory, TrajectorySet

    ts, _ = planted
    three = TrajectorySet([Trajectory(t.user_id, t.embeddings, t.datetimes, label=i % 3) for i, t in enumerate(ts)])
    cmp = compare_attention(_model_attending([0, 1], ts.dim), three, n_permutations=50)
    assert cmp.attribution_kind == "mean_shares" and cmp.positive_class is None and cmp.signed_spearman is None
    with pytest.raises(ValueError, match="dimensions"):
        compare_attention(_model_attending([0], ts.dim + 1), ts, n_permutations=50)
