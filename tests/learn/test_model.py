"""The classifier's fixed standardisation (cvx_core.learn.model)."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from cvx_core.data.synthetic import PlantedConfig, make_planted_trajectory_set
from cvx_core.learn.model import TrajectoryClassifier


def _batch(dead_dim: int | None):
    ts, _ = make_planted_trajectory_set(config=PlantedConfig(n_users=40, dim=16, n_planted=2, max_posts=20), seed=4)
    b = ts.padded(np.arange(len(ts)))
    values, stamps, lengths = b.to_torch("cpu")
    values = values.double()
    if dead_dim is not None:  # a dead embedding dimension: rounding noise around zero, as MiniLM's 319
        gen = torch.Generator().manual_seed(0)
        values[:, :, dead_dim] = 1e-9 * torch.randn(values.shape[:2], generator=gen, dtype=values.dtype)
    y = torch.as_tensor((b.labels > 0).astype(np.int64))
    return values, stamps, lengths, y


def _model(values, stamps, lengths) -> TrajectoryClassifier:
    torch.manual_seed(0)
    m = TrajectoryClassifier(16, 2, head="linear", mean_inputs=True, feature_dtype=torch.float64)
    with torch.no_grad():
        m.fit_normalisation(m.inputs(values, stamps, lengths))
    return m


def test_a_dead_embedding_dimension_is_standardised_as_constant_not_amplified_into_noise():
    values, stamps, lengths, y = _batch(dead_dim=5)
    m = _model(values, stamps, lengths)
    d, n = 16, m.out_features
    f = m.inputs(values, stamps, lengths).detach()
    own = f.std(dim=0, unbiased=False)
    for a in (0, d, 2 * d, 3 * d, n - d):  # its four SPEC features and its mean: the block's median std
        block = slice(a, a + d)
        assert own[a + 5] < 1e-5 * own[block].median()
        assert m.feature_std[a + 5] == own[block].median()
        live = [a + j for j in range(d) if j != 5]
        torch.testing.assert_close(m.feature_std[live], own[live])

    x = values.clone().requires_grad_(True)
    F.cross_entropy(m(x, stamps, lengths), y).backward()
    per_dim = x.grad.abs().amax(dim=(0, 1))
    others = torch.cat([per_dim[:5], per_dim[6:]])
    assert per_dim[5] <= 10 * others.max()  # standardised by its 1e-9 spread it would be about 1e8 x


def test_live_dimensions_keep_their_standardisation():
    values, stamps, lengths, _ = _batch(dead_dim=None)
    m = _model(values, stamps, lengths)
    f = m.inputs(values, stamps, lengths).detach()
    expected = f.std(dim=0, unbiased=False)
    d = 16
    blocks = list(range(4 * d)) + list(range(m.out_features - d, m.out_features))
    torch.testing.assert_close(m.feature_std[blocks], expected[blocks])
