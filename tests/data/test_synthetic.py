"""The planted-drift generator: reproducible, labelled by how users move, truth consistent."""

from __future__ import annotations

import numpy as np

from cvx_core.data.synthetic import PlantedConfig, make_planted_trajectory_set


def test_same_seed_gives_identical_data_and_other_seed_differs():
    cfg = PlantedConfig(n_users=10, dim=16, n_planted=3, mean_posts=10, max_posts=30)
    a, ta = make_planted_trajectory_set(config=cfg, seed=1)
    b, tb = make_planted_trajectory_set(config=cfg, seed=1)
    c, _ = make_planted_trajectory_set(config=cfg, seed=2)
    assert a.digest() == b.digest() and ta == tb
    assert a.digest() != c.digest()


def test_positive_users_move_along_planted_dims_and_negatives_elsewhere(small_planted):
    ts, truth = small_planted
    planted = np.array(truth["planted_dims"])
    for tr in ts:
        cp = truth["change_points"][tr.user_id]["index"]
        before, after = tr.embeddings[:cp].mean(0), tr.embeddings[cp:].mean(0)
        shift = np.abs(after - before)
        top = set(np.argsort(-shift)[: planted.size].tolist())
        moved = set(truth["moved_dims"][tr.user_id])
        assert len(top & moved) >= planted.size - 1
        if tr.label == 1:
            assert moved == set(planted.tolist())
        else:
            assert not moved & set(planted.tolist())


def test_mean_embedding_carries_little_linear_signal_but_drift_magnitude_does(sample_set, sample_truth):
    y = sample_set.labels
    planted = np.array(sample_truth["planted_dims"])
    drift = np.stack([np.abs(t.embeddings[-1] - t.embeddings[0]) for t in sample_set])
    share = drift[:, planted].sum(1) / drift.sum(1)
    # planted share of |drift| separates the classes almost perfectly ...
    pos, neg = share[y == 1], share[y == 0]
    assert (pos[:, None] > neg[None, :]).mean() > 0.95
    # ... while the class means of the mean embeddings barely differ on planted dims
    means = np.stack([t.embeddings.mean(0) for t in sample_set])
    gap = np.abs(means[y == 1][:, planted].mean(0) - means[y == 0][:, planted].mean(0))
    assert gap.mean() < 0.05


def test_timestamps_have_bursts_and_long_silences(sample_set):
    gaps = np.concatenate([np.diff(t.timestamps) for t in sample_set])
    assert (gaps < 1 / 24).mean() > 0.1  # bursts: gaps under an hour
    assert (gaps > 7).mean() > 0.05  # silences: gaps over a week
