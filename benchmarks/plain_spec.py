"""A plain PyTorch translation of SPEC.md's feature vector, for the benchmark to compare with.

What someone would write from SPEC.md in an afternoon: batched ``[B, T, D]`` tensor
operations (no padding: every row has ``T`` posts), ordinary autograd for the gradients, no
fusion, no hand-written backward. It is the "plain translation" column of
``benchmarks/bench_features.py`` and docs/performance.md; the benchmark checks that it
computes the same features as CVX before timing it.

``plain_features(E [B, T, D], t [B, T] float64 days, cfg) -> [B, 4*D + 5 + 2*S]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cvx_core.features.config import TemporalFeaturesConfig


def _cosine(X: Tensor) -> Tensor:
    """``c_i = 1 - <v_i, v_{i+1}> / sqrt(max(|v_i|^2 |v_{i+1}|^2, 1e-16))`` -> ``[B, K-1]``."""
    N = (X * X).sum(-1)
    p = (X[:, :-1] * X[:, 1:]).sum(-1)
    return 1.0 - p / torch.sqrt((N[:, :-1] * N[:, 1:]).clamp_min(1e-16))


def _resample(E: Tensor, t: Tensor, width: float) -> tuple[Tensor, Tensor]:
    """Bin means ``[B, T, D]`` (bins back to back from slot 0; unused slots 0) and the
    number of bins per row ``[B]``."""
    B, T, D = E.shape
    k = torch.floor((t - t[:, :1]) / width)
    idx = torch.zeros((B, T), dtype=torch.int64)
    idx[:, 1:] = torch.cumsum(k[:, 1:] != k[:, :-1], dim=1)
    counts = torch.zeros((B, T), dtype=E.dtype).scatter_add_(1, idx, torch.ones_like(t, dtype=E.dtype))
    sums = torch.zeros_like(E).scatter_add(1, idx[..., None].expand(B, T, D), E)
    return sums / counts.clamp_min(1)[..., None], idx[:, -1] + 1


def plain_features(E: Tensor, t: Tensor, cfg: TemporalFeaturesConfig | None = None) -> Tensor:
    """SPEC's feature vector, straight from the formulas (see the module docstring)."""
    cfg = cfg or TemporalFeaturesConfig()
    B, T, D = E.shape
    dt = (t[:, 1:] - t[:, :-1]).clamp_min(cfg.min_dt)
    u = (E[:, 1:] - E[:, :-1]) / dt.to(E.dtype)[..., None]
    mean_u = u.mean(1) if T >= 2 else E.new_zeros((B, D))
    if T >= 3:
        h = 0.5 * (dt[:, :-1] + dt[:, 1:])
        a = (u[:, 1:] - u[:, :-1]) / h.to(E.dtype)[..., None]
        mean_a = a.mean(1)
    else:
        mean_a = E.new_zeros((B, D))
    vol = torch.sqrt(((u - mean_u[:, None]) ** 2).mean(1) + 1e-12) if T >= 2 else E.new_full((B, D), 1e-6)
    drift = E[:, -1] - E[:, 0]
    c = _cosine(E)
    temp = cfg.temperature
    cp = torch.sigmoid((c - cfg.cp_threshold) / temp).sum(1)
    smax = temp * torch.logsumexp(c / temp, 1) if T >= 2 else E.new_zeros(B)
    sil = torch.sigmoid((dt - cfg.silence_gap) / cfg.silence_temperature).sum(1).to(E.dtype)
    mc = c.mean(1) if T >= 2 else E.new_zeros(B)
    r = torch.linalg.vector_norm(drift, dim=1)
    scale_feats = []
    for w in cfg.scales:
        V, nb = _resample(E, t, w)
        valid = (torch.arange(T - 1)[None, :] < (nb - 1)[:, None]).to(E.dtype)
        nk = (nb - 1).clamp_min(1).to(E.dtype)
        step = torch.linalg.vector_norm(V[:, 1:] - V[:, :-1], dim=-1)
        scale_feats.append((step * valid).sum(1) / nk)
        scale_feats.append((_cosine(V) * valid).sum(1) / nk)
    scalars = torch.stack([cp, smax, sil, mc, r] + scale_feats, 1)
    return torch.cat([mean_u, drift, vol, mean_a, scalars], 1)


__all__ = ["plain_features"]
