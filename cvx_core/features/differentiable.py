"""The differentiable path of SPEC.md on PyTorch (CPU or CUDA), batched and ragged.

- :class:`TorchBackend`: the :class:`~cvx_core.features.analytic.TemporalOps` on tensors. Single ops
  (``velocity``, ``cosine_distance``, ...) take one trajectory ``E [T, D]``, ``t [T]`` and use
  plain autograd. :meth:`TorchBackend.extract_all` takes one trajectory or a padded batch
  ``[B, T_max, D]`` with ``lengths [B]`` (or a mask) and returns ``[B, 4*D + 5 + 2*S]``
  with no Python loop over users or posts.
- ``_TemporalFeaturesFn`` (in :mod:`cvx_core.features.fused`, re-exported here): the whole
  feature vector as one ``torch.autograd.Function`` with a hand-written, fused backward
  (gradients for the embeddings, the attention weights ``alpha``, the scale weights ``beta``
  and the change-point temperature), checked against ``torch.autograd.gradcheck`` in the
  tests. Vectorised over the batch; it serves CUDA (and the CPU when numba is unavailable or
  ``CVX_DISABLE_KERNELS=1``).
- ``_KernelFeaturesFn``: the same contract on the CPU through the compiled loops of
  :mod:`cvx_core.features.kernels` (forward and backward, one trajectory at a time, no
  full-size temporaries); used for float32/float64 CPU tensors.
- :meth:`TorchBackend.extract_all`: the entry point (tensors or NumPy timestamps);
  ``temporal_features`` is its deprecated old name.

Timestamps are float64 days on every device and for every embedding dtype; padding values
are never read (everything is masked by ``lengths``). Gradients flow to the embeddings, not
to the timestamps.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cvx_core.features.config import TemporalFeaturesConfig
from cvx_core.features.analytic import COSINE_EPS, VOLATILITY_EPS, FeatureLayout, feature_layout, resolve_config
from cvx_core.features.fused import _clean_padding, _TemporalFeaturesFn

__all__ = ["TorchBackend"]


# --------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------
_LOW_PRECISION_TIMES = (torch.float16, torch.bfloat16, torch.float32)


def _warn_low_precision(dtype: Any) -> None:
    warnings.warn(
        f"timestamps given as {dtype}: they are used as float64 days, but the gaps have already "
        "lost precision (float32 days resolve about 4 s at day 700, float16 about a day); pass "
        "float64 timestamps",
        stacklevel=4,
    )


def _to_days(t: Any, device: torch.device) -> Tensor:
    """Timestamps (tensor, NumPy array or sequence of days) -> float64 tensor on ``device``.

    Low-precision float timestamps are accepted with a warning (SPEC: timestamps stay
    float64 on both paths whatever the embeddings' dtype).
    """
    if isinstance(t, Tensor):
        if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"timestamps must be numeric days, got dtype {t.dtype}")
        if t.dtype in _LOW_PRECISION_TIMES:
            _warn_low_precision(t.dtype)
        return t.detach().to(device=device, dtype=torch.float64)
    arr = np.asarray(t)
    if arr.dtype.kind not in "fiu":
        raise TypeError(
            f"timestamps must be numeric days (float), got dtype {arr.dtype}; convert datetimes "
            "with cvx_core.data.trajectory.days_since_first"
        )
    if arr.dtype.kind == "f" and arr.dtype.itemsize < 8:
        _warn_low_precision(arr.dtype)
    return torch.as_tensor(arr.astype(np.float64), device=device)


def _prepare_batch(
    E: Tensor, t: Any, lengths: Any = None, mask: Any = None
) -> tuple[Tensor, Tensor, Tensor | None, bool]:
    """-> ``(E [B,T,D], t [B,T] float64, lengths [B] int64 or None (no padding), single)``;
    validates shapes, lengths and the ordering of timestamps."""
    if not isinstance(E, Tensor):
        raise TypeError(f"embeddings must be a torch.Tensor, got {type(E).__name__}")
    if not E.is_floating_point():
        raise TypeError(f"embeddings must be a floating-point tensor, got {E.dtype}")
    single = E.dim() == 2
    if single:
        E = E.unsqueeze(0)
    if E.dim() != 3:
        raise ValueError(f"embeddings must be [T, D] or [B, T, D], got shape {tuple(E.shape)}")
    B, T, D = E.shape
    if T < 1 or D < 1:
        raise ValueError(f"embeddings need T >= 1 posts and D >= 1, got shape {tuple(E.shape)}")
    tt = _to_days(t, E.device)
    if single and tt.dim() == 1:
        tt = tt.unsqueeze(0)
    if tuple(tt.shape) != (B, T):
        raise ValueError(f"timestamps must have shape {(B, T) if not single else (T,)}, got {tuple(tt.shape)}")
    if lengths is not None and mask is not None:
        raise ValueError("give lengths or mask, not both")
    if mask is not None:
        m = torch.as_tensor(mask, device=E.device).bool()
        if tuple(m.shape) != (B, T):
            raise ValueError(f"mask must have shape {(B, T)}, got {tuple(m.shape)}")
        ln = m.sum(1)
        # a mask must be a prefix: True on the first lengths[b] posts, False after
        expect = torch.arange(T, device=E.device)[None, :] < ln[:, None]
        if not bool((expect == m).all()):
            raise ValueError("mask must be True on each row's first posts and False after them")
        lengths = ln
    if lengths is None:
        if T > 1 and not bool((tt[:, 1:] >= tt[:, :-1]).all()):  # also rejects NaN
            raise ValueError("timestamps must be non-decreasing within each trajectory (sort posts by time)")
        return E, tt, None, single
    ln = torch.as_tensor(lengths, device=E.device).to(torch.int64).reshape(-1)
    if ln.shape[0] != B:
        raise ValueError(f"lengths must have {B} entries, got {ln.shape[0]}")
    # one host sync checks lengths and the ordering of real timestamps together
    checks = [ln.min(), ln.max()]
    if T > 1:
        valid_step = torch.arange(T - 1, device=E.device)[None, :] < (ln - 1)[:, None]
        checks.append(((tt[:, 1:] >= tt[:, :-1]) | ~valid_step).all())
    vals = torch.stack([c.to(torch.int64) for c in checks]).tolist()
    if vals[0] < 1 or vals[1] > T:
        raise ValueError(f"lengths must lie in [1, {T}], got min {vals[0]}, max {vals[1]}")
    if T > 1 and not vals[2]:
        raise ValueError("timestamps must be non-decreasing within each trajectory (sort posts by time)")
    if vals[0] == T:
        return E, tt, None, single  # no padding anywhere
    return E, tt, ln, single


# posts per block of TorchBackend.ema (a [block, block] weight matrix per block)
_EMA_BLOCK = 256


# --------------------------------------------------------------------------------------
# batched resampling (segment means with bin ids per row, no loops)
# --------------------------------------------------------------------------------------
def _bins(t: Tensor, mask: Tensor | None, widths: Tensor) -> tuple[Tensor, Tensor, int]:
    """Bin ids of every post for each width (padded to a common ``K``), anchored at each
    row's first post. Used for bursts and the public ``resample`` ops; the feature vector
    uses the tighter :class:`cvx_core.features.fused._ScaleLayout`.

    ``t [B, T]`` float64 (padding already repeats the last real time), ``mask [B, T]`` or
    ``None`` (no padding), ``widths [S]`` float64. Bins are ``k = floor((t - t_1) / w)``;
    consecutive posts with the same ``k`` share a bin (posts are in time order).
    Returns ``(flat [S*B*T] index into S*B*K + 1 slots (the last one collects padding),
    n_bins [S*B], K = max n_bins)``; rows are ordered width-major (``s*B + b``).
    """
    B, T = t.shape
    S = widths.shape[0]
    k = torch.floor((t - t[:, :1]) / widths[:, None, None])  # [S, B, T]
    idx = torch.zeros((S, B, T), dtype=torch.int64, device=t.device)
    if T > 1:
        idx[..., 1:] = torch.cumsum(k[..., 1:] != k[..., :-1], dim=-1)
    n_bins = idx[..., -1].reshape(S * B) + 1
    K = int(n_bins.max())
    flat = idx + (torch.arange(S * B, device=t.device) * K).reshape(S, B, 1)
    if mask is not None:
        flat = torch.where(mask, flat, S * B * K)
    return flat.reshape(-1), n_bins, K


def _segment_mean(X: Tensor, flat: Tensor, K: int, *, exact: bool = False) -> Tensor:
    """Bin means of ``X [B, T, ...]`` for one width (``flat`` from :func:`_bins`) ->
    ``[B, K, ...]`` (empty bins are 0); differentiable in ``X``.

    ``exact=True`` (bin *times*) divides the sum by the count instead of multiplying by its
    reciprocal: the analytic path's canonical mean (a sequential sum in time order, then a
    true division). On the CPU ``index_add_`` adds in index order, so both paths give the
    same bits and an aggregated time on a scale's bin edge falls on the same side; on CUDA
    the atomic adds have no fixed order (agreement to rounding, not bit for bit).
    """
    B, T = X.shape[:2]
    rest = X.shape[2:]
    sums = X.new_zeros((B * K + 1,) + rest).index_add_(0, flat, X.reshape((B * T,) + rest))
    counts = torch.bincount(flat, minlength=B * K + 1)[: B * K].reshape(B, K)
    cnt = counts.clamp_min(1).to(X.dtype).reshape((B, K) + (1,) * len(rest))
    if exact:
        return sums[: B * K].reshape((B, K) + rest) / cnt
    return sums[: B * K].reshape((B, K) + rest) * (1.0 / cnt)


def _resample_batch(
    E: Tensor, t: Tensor, lengths: Tensor | None, width: float
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Batched ``resample``: ``E [B,T,D]``, ``t [B,T]`` float64, ``lengths [B]`` (or ``None``)
    -> ``(E_r [B,K,D], t_r [B,K] float64, lengths_r [B])``; differentiable in ``E``."""
    mask = None
    if lengths is not None:
        E, t, mask = _clean_padding(E, t, lengths)
    widths = torch.tensor([float(width)], dtype=torch.float64, device=E.device)
    flat, n_bins, K = _bins(t, mask, widths)
    E_r = _segment_mean(E, flat, K)
    t_r = _segment_mean(t, flat, K, exact=True)
    # padding of the result repeats the last real bin time, like PaddedBatch
    m_r = torch.arange(K, device=E.device)[None, :] < n_bins[:, None]
    t_r = torch.where(m_r, t_r, t_r.gather(1, (n_bins - 1)[:, None]))
    return E_r, t_r, n_bins


def _extract_batch(
    E: Tensor,
    t: Tensor,
    lengths: Tensor,
    cfg: TemporalFeaturesConfig,
    alpha: Tensor | None,
    beta: Tensor | None,
    temperature: Tensor | float | None,
) -> Tensor:
    """Validated ``[B,T,D]`` input -> ``[B, F]`` (burst aggregation with plain autograd, then the fused op)."""
    B, T, D = E.shape
    if alpha is not None:
        alpha = alpha.to(device=E.device, dtype=E.dtype)
        if tuple(alpha.shape) != (D,):
            raise ValueError(f"alpha must have shape ({D},), got {tuple(alpha.shape)}")
    if beta is not None:
        beta = beta.to(device=E.device, dtype=E.dtype)
        if tuple(beta.shape) != (cfg.n_scales,):
            raise ValueError(f"beta must have shape ({cfg.n_scales},), got {tuple(beta.shape)}")
    if temperature is None:
        temperature = cfg.temperature
    if isinstance(temperature, Tensor):
        temperature = temperature.to(device=E.device).reshape(())
    elif not (math.isfinite(float(temperature)) and float(temperature) > 0):
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if cfg.burst_window is not None:
        E, t, lengths = _resample_batch(E, t, lengths, cfg.burst_window)
    if _use_kernels(E):
        return _KernelFeaturesFn.apply(E, t, lengths, alpha, beta, temperature, cfg)
    return _TemporalFeaturesFn.apply(E, t, lengths, alpha, beta, temperature, cfg)


# --------------------------------------------------------------------------------------
# CPU: the compiled kernels (cvx_core.features.kernels), shared with the analytic path
# --------------------------------------------------------------------------------------
def _use_kernels(E: Tensor) -> bool:
    """The compiled CPU kernels serve float32/float64 embeddings on the CPU; CUDA (and any
    other device or dtype, or numba disabled) keeps the vectorised ``_TemporalFeaturesFn``."""
    if E.device.type != "cpu" or E.dtype not in (torch.float32, torch.float64):
        return False
    from cvx_core.features import kernels  # imported on first use (numba)

    return kernels.available()


def _np64(x: Tensor | None) -> np.ndarray | None:
    return None if x is None else x.detach().to(torch.float64).contiguous().numpy()


class _KernelFeaturesFn(torch.autograd.Function):
    """Same contract as ``_TemporalFeaturesFn`` (same arguments, same output), computed by
    the compiled kernels of :mod:`cvx_core.features.kernels`: one trajectory at a time, no
    full-size temporaries in the forward, and a backward that writes ``gE`` once.
    ``lengths=None`` means no padding."""

    @staticmethod
    def forward(ctx, E, t, lengths, alpha, beta, temperature, cfg):  # type: ignore[override]
        from cvx_core.features import kernels

        Ec = E.detach().contiguous()
        B, T, D = Ec.shape
        t_np = t.detach().to(torch.float64).contiguous().numpy()
        if lengths is None:
            ln_np = np.full(B, T, dtype=np.int64)
        else:
            ln_np = lengths.detach().to(torch.int64).contiguous().numpy()
        temp = float(temperature)
        a_np, b_np = _np64(alpha), _np64(beta)
        out = torch.empty((B, cfg.feature_dim(D)), dtype=E.dtype)
        _, saved = kernels.forward(Ec.numpy(), t_np, ln_np, cfg, alpha=a_np, beta=b_np, temperature=temp,
                                   out=out.numpy())
        ctx.save_for_backward(E, alpha, beta, temperature if isinstance(temperature, Tensor) else None)
        ctx.kern = (t_np, ln_np, saved, cfg, temp, a_np, b_np)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, G):  # type: ignore[override]
        from cvx_core.features import kernels

        E, alpha, beta, temp_in = ctx.saved_tensors
        t_np, ln_np, saved, cfg, temp, a_np, b_np = ctx.kern
        need_E, _, _, need_alpha, need_beta, need_temp, _ = ctx.needs_input_grad
        B, T, D = E.shape
        S = cfg.n_scales
        Gd = G.detach().to(torch.float64).contiguous()
        gE = g_alpha = g_beta = g_temp = None
        temp_grad = need_temp and temp_in is not None
        if need_E or temp_grad:
            Ec = E.detach().contiguous()
            gE_t = torch.empty_like(Ec)
            _, dtemp = kernels.backward(Ec.numpy(), t_np, ln_np, cfg, Gd.numpy(), saved, alpha=a_np, beta=b_np,
                                        temperature=temp, gE=gE_t.numpy())
            gE = gE_t if need_E else None
            if temp_grad:
                dt_t = torch.from_numpy(dtemp)
                g_temp = (Gd[:, 4 * D] * dt_t[:, 0] + Gd[:, 4 * D + 1] * dt_t[:, 1]).sum().to(temp_in.dtype)
        if need_alpha and alpha is not None:
            rows = torch.arange(B)
            ln = torch.from_numpy(ln_np)
            d = (E.detach()[rows, ln - 1] - E.detach()[:, 0]).to(torch.float64)
            g_alpha = (Gd[:, D : 2 * D] * d).sum(0).to(alpha.dtype)
        if need_beta and beta is not None:
            raw = torch.from_numpy(saved.raw)  # [B, S, 2]
            g_beta = (Gd[:, 4 * D + 5 :].reshape(B, S, 2) * raw).sum((0, 2)).to(beta.dtype)
        return gE, None, None, g_alpha, g_beta, g_temp, None


# --------------------------------------------------------------------------------------
# The backend
# --------------------------------------------------------------------------------------
class TorchBackend:
    """SPEC.md on PyTorch: the same ops as :class:`~cvx_core.features.analytic.AnalyticBackend`, on
    tensors, differentiable in the embeddings. Single ops take one trajectory ``E [T, D]``,
    ``t [T]`` (days, converted to float64); :meth:`extract_all` also takes padded batches.
    """

    @staticmethod
    def time_steps(t: Any, config: TemporalFeaturesConfig | None = None) -> Tensor:
        """``dt_i = max(t_{i+1} - t_i, min_dt)`` -> ``[T-1]`` float64."""
        cfg = resolve_config(config)
        tt = cfg.to_unit(_to_days(t, t.device if isinstance(t, Tensor) else torch.device("cpu")))
        return (tt[..., 1:] - tt[..., :-1]).clamp_min(cfg.min_dt)

    @staticmethod
    def cosine_distance(E: Tensor) -> Tensor:
        """``c_i = 1 - <v_i, v_{i+1}> / sqrt(max(|v_i|^2 |v_{i+1}|^2, 1e-16))`` -> ``[T-1]``."""
        N = (E * E).sum(-1)
        p = (E[..., :-1, :] * E[..., 1:, :]).sum(-1)
        q = torch.sqrt((N[..., :-1] * N[..., 1:]).clamp_min(COSINE_EPS))
        return 1.0 - p / q

    @staticmethod
    def velocity(E: Tensor, t: Any, config: TemporalFeaturesConfig | None = None) -> Tensor:
        """``u_i = (v_{i+1} - v_i) / dt_i`` -> ``[T-1, D]``."""
        dt = TorchBackend.time_steps(_to_days(t, E.device), config).to(E.dtype)
        return (E[..., 1:, :] - E[..., :-1, :]) / dt[..., None]

    @staticmethod
    def acceleration(E: Tensor, t: Any, config: TemporalFeaturesConfig | None = None) -> Tensor:
        """``a_i = (u_{i+1} - u_i) / (0.5 (dt_i + dt_{i+1}))`` -> ``[T-2, D]``."""
        dt = TorchBackend.time_steps(_to_days(t, E.device), config)
        u = (E[..., 1:, :] - E[..., :-1, :]) / dt.to(E.dtype)[..., None]
        h = (0.5 * (dt[..., :-1] + dt[..., 1:])).to(E.dtype)
        return (u[..., 1:, :] - u[..., :-1, :]) / h[..., None]

    @staticmethod
    def drift(E: Tensor) -> Tensor:
        """``v_T - v_1`` -> ``[D]``."""
        return E[..., -1, :] - E[..., 0, :]

    @staticmethod
    def volatility(E: Tensor, t: Any, config: TemporalFeaturesConfig | None = None) -> Tensor:
        """``sqrt(mean_i (u_i - mean u)^2 + 1e-12)`` per dimension -> ``[D]``."""
        u = TorchBackend.velocity(E, t, config)
        if u.shape[-2] == 0:
            return torch.full(E.shape[:-2] + E.shape[-1:], math.sqrt(VOLATILITY_EPS), dtype=E.dtype, device=E.device)
        dev = u - u.mean(-2, keepdim=True)
        return torch.sqrt((dev * dev).mean(-2) + VOLATILITY_EPS)

    @staticmethod
    def ema(E: Tensor, t: Any, config: TemporalFeaturesConfig | None = None) -> Tensor:
        """EMA ``m_1 = v_1``, ``m_{i+1} = g_i m_i + (1 - g_i) v_{i+1}``, ``g_i = exp(-dt_i/ema_tau)``
        -> ``[T, D]``, as lower-triangular weight matrices over blocks of at most
        ``_EMA_BLOCK`` posts (no loop over posts; memory O(T * block), not O(T^2))."""
        cfg = resolve_config(config)
        dt = TorchBackend.time_steps(_to_days(t, E.device), cfg)  # [..., T-1]
        T = E.shape[-2]
        # cumulative (floored) time sigma_j, weight of v_i in m_j:
        #   i = 1: exp(-sigma_j / tau);  i > 1: (1 - g_{i-1}) exp(-(sigma_j - sigma_i) / tau)
        sigma = torch.cat([dt.new_zeros(dt.shape[:-1] + (1,)), torch.cumsum(dt, -1)], -1)
        first = torch.cat([dt.new_ones(dt.shape[:-1] + (1,)), -torch.expm1(-dt / cfg.ema_tau)], -1)
        blocks, carry = [], None
        for a in range(0, T, _EMA_BLOCK):
            b = min(a + _EMA_BLOCK, T)
            s = sigma[..., a:b]
            diff = s[..., :, None] - s[..., None, :]
            tri = torch.ones(b - a, b - a, dtype=torch.bool, device=E.device).tril()
            W = torch.where(tri, torch.exp(-diff.clamp_min(0.0) / cfg.ema_tau), 0.0)
            m = (W * first[..., None, a:b]).to(E.dtype) @ E[..., a:b, :]
            if carry is not None:  # m_{a-1} decays into the block: exp(-(sigma_j - sigma_{a-1}) / tau)
                decay = torch.exp(-(s - sigma[..., a - 1 : a]) / cfg.ema_tau).to(E.dtype)
                m = m + decay[..., None] * carry[..., None, :]
            carry = m[..., -1, :]
            blocks.append(m)
        return blocks[0] if len(blocks) == 1 else torch.cat(blocks, -2)

    @staticmethod
    def resample(E: Tensor, t: Any, width: float) -> tuple[Tensor, Tensor]:
        """Bins of ``width`` days anchored at ``t_1`` -> ``(E_r [K, D], t_r [K] float64)``."""
        if not (math.isfinite(width) and width > 0):
            raise ValueError(f"resampling width must be a finite number of days > 0, got {width!r}")
        Eb, tt, ln, single = _prepare_batch(E, t)
        E_r, t_r, n_r = _resample_batch(Eb, tt, ln, float(width))
        if single:
            return E_r[0], t_r[0]
        return E_r, t_r

    @staticmethod
    def resample_batch(E: Tensor, t: Any, lengths: Any, width: float) -> tuple[Tensor, Tensor, Tensor]:
        """Batched :meth:`resample`: ``[B,T,D]``, ``[B,T]``, ``lengths [B]`` ->
        ``(E_r [B,K,D], t_r [B,K], lengths_r [B])`` (padding repeats the last bin time)."""
        if not (math.isfinite(width) and width > 0):
            raise ValueError(f"resampling width must be a finite number of days > 0, got {width!r}")
        Eb, tt, ln, _ = _prepare_batch(E, t, lengths)
        return _resample_batch(Eb, tt, ln, float(width))

    @staticmethod
    def soft_changepoints(
        E: Tensor, config: TemporalFeaturesConfig | None = None, *, temperature: Tensor | float | None = None
    ) -> Tensor:
        """``sigmoid((c_i - cp_threshold) / temperature)`` per step -> ``[T-1]``."""
        cfg = resolve_config(config)
        temp = cfg.temperature if temperature is None else temperature
        return torch.sigmoid((TorchBackend.cosine_distance(E) - cfg.cp_threshold) / temp)

    @staticmethod
    def smooth_max_severity(
        E: Tensor, config: TemporalFeaturesConfig | None = None, *, temperature: Tensor | float | None = None
    ) -> Tensor:
        """``temperature * logsumexp(c_i / temperature)``; 0 if T < 2."""
        cfg = resolve_config(config)
        temp = cfg.temperature if temperature is None else temperature
        c = TorchBackend.cosine_distance(E)
        if c.shape[-1] == 0:
            return c.sum(-1)
        return temp * torch.logsumexp(c / temp, dim=-1)

    @staticmethod
    def soft_silences(t: Any, config: TemporalFeaturesConfig | None = None) -> Tensor:
        """``sigmoid((dt_i - silence_gap) / silence_temperature)`` per step -> ``[T-1]`` float64."""
        cfg = resolve_config(config)
        dt = TorchBackend.time_steps(t, cfg)
        return torch.sigmoid((dt - cfg.silence_gap) / cfg.silence_temperature)

    @staticmethod
    def soft_topk(
        scores: Tensor,
        k: int,
        temperature: float | Tensor,
        *,
        hard: bool = True,
        gumbel: bool = False,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Relaxed top-``k`` mask over the last dimension (e.g. ``|v_T - v_1|``) -> same shape.

        ``k`` successive softmaxes of ``scores / temperature``, each after suppressing what
        the previous one took (Xie & Ermon 2019), optionally with Gumbel noise (training). ``hard=True`` returns the exact
        top-``k`` mask in the forward pass with the soft mask's gradient (straight-through).
        As ``temperature -> 0`` the soft mask converges to the exact top-``k`` mask.
        """
        D = scores.shape[-1]
        if not 0 <= k <= D:
            raise ValueError(f"k must lie in [0, {D}], got {k}")
        s = scores
        if gumbel:
            # draw on the generator's own device (a CPU generator may drive CUDA scores)
            noise_device = generator.device if generator is not None else scores.device
            u = torch.rand(scores.shape, generator=generator, dtype=scores.dtype, device=noise_device)
            u = u.to(scores.device)
            s = s - temperature * torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))
        noisy = s
        tiny = torch.finfo(scores.dtype).tiny
        soft = torch.zeros_like(scores)
        w = torch.zeros_like(scores)
        for _ in range(k):  # k is a handful of dimensions, not a loop over data
            # suppress what the previous draw took, in the unscaled domain (Xie & Ermon 2019)
            s = s + torch.log((1.0 - w).clamp_min(tiny))
            w = torch.softmax(s / temperature, dim=-1)
            soft = soft + w
        if not hard:
            return soft
        idx = torch.topk(noisy, k, dim=-1).indices  # deterministic top-k without noise
        hard_mask = torch.zeros_like(scores).scatter_(-1, idx, 1.0)
        return hard_mask - soft.detach() + soft

    @staticmethod
    def extract_all(
        E: Tensor,
        t: Any,
        config: TemporalFeaturesConfig | None = None,
        *,
        lengths: Any = None,
        mask: Any = None,
        alpha: Tensor | None = None,
        beta: Tensor | None = None,
        temperature: Tensor | float | None = None,
    ) -> Tensor:
        """The feature vector: ``E [T, D]`` -> ``[F]`` or ``E [B, T, D]`` (+ ``lengths [B]`` or a
        prefix ``mask [B, T]``) -> ``[B, F]``, ``F = 4*D + 5 + 2*S``, in ``E``'s dtype.

        ``alpha [D]`` (attention), ``beta [S]`` (scale weights) and ``temperature`` (the
        change-point temperature, may be a learnable 0-d tensor) default to the analytic
        values (ones, ones, ``config.temperature``).
        """
        cfg = resolve_config(config)
        Eb, tt, ln, single = _prepare_batch(E, t, lengths, mask)
        out = _extract_batch(Eb, cfg.to_unit(tt), ln, cfg, alpha, beta, temperature)
        return out[0] if single else out

    @staticmethod
    def layout(dim: int, config: TemporalFeaturesConfig | None = None) -> FeatureLayout:
        """Same as :func:`cvx_core.features.analytic.feature_layout`."""
        return feature_layout(dim, config)


def temporal_features(
    embeddings: Tensor,
    timestamps: Any,
    config: TemporalFeaturesConfig | None = None,
    lengths: Any = None,
) -> Tensor:
    """Deprecated: :meth:`TorchBackend.extract_all` under another name (one of four near-twin
    names). ``TorchBackend.extract_all(embeddings [T, D] | [B, T, D], timestamps, config,
    lengths=lengths)`` -> ``[F]`` | ``[B, F]``, the same numbers and gradients."""
    warnings.warn("cvx_core.features.differentiable.temporal_features is deprecated: use "
                  "TorchBackend.extract_all (same arguments)", DeprecationWarning, stacklevel=2)
    return TorchBackend.extract_all(embeddings, timestamps, config, lengths=lengths)
