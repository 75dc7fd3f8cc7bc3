"""The fused feature function of the differentiable path: ``_TemporalFeaturesFn``.

The whole SPEC.md feature vector as one ``torch.autograd.Function`` with a hand-written,
fused backward (gradients for the embeddings ``E [B, T, D]``, the attention weights
``alpha [D]``, the scale weights ``beta [S]`` and the change-point temperature), checked
against ``torch.autograd.gradcheck`` in the tests. Vectorised over the batch; it serves
CUDA (and the CPU when numba is unavailable or ``CVX_DISABLE_KERNELS=1``). The forward and
the backward are split into one helper per block of the feature vector (per-step
quantities, soft scalars, all scales at once, drift). Callers use
:meth:`cvx_core.features.differentiable.TorchBackend.extract_all`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from cvx_core.features.analytic import COSINE_EPS, VOLATILITY_EPS
from cvx_core.features.config import TemporalFeaturesConfig


def _clean_padding(E: Tensor, t: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Zero padded embeddings and repeat the last real timestamp (padding values are never
    trusted). Returns ``(E, t, mask [B,T] bool)``."""
    T = E.shape[1]
    mask = torch.arange(T, device=E.device)[None, :] < lengths[:, None]
    E = torch.where(mask[..., None], E, E.new_zeros(()))
    t_last = t.gather(1, (lengths - 1)[:, None])
    t = torch.where(mask, t, t_last)
    return E, t, mask



class _ScaleLayout:
    """Where every post lands when the batch is resampled at every scale at once.

    The bins of all (scale ``s``, row ``b``) sequences are stored back to back in one flat
    array of ``M = B * sum_s K_s`` slots (``K_s`` = most bins of any row at scale ``s``),
    so consecutive slots of one sequence are consecutive rows of a ``[M, D]`` tensor.

    Attributes: ``flat [S, B*T]`` slot of each post (``M`` for padding), ``row [M]`` the
    sequence ``s*B + b`` of each slot, ``step_valid [M-1]`` whether slots ``j, j+1`` are
    two consecutive real bins of one sequence, ``n_bins [S*B]``, ``M``.
    """

    def __init__(self, t: Tensor, mask: Tensor | None, widths: Tensor) -> None:
        B, T = t.shape
        S = widths.shape[0]
        dev = t.device
        k = torch.floor((t - t[:, :1]) / widths[:, None, None])  # [S, B, T]
        idx = torch.zeros((S, B, T), dtype=torch.int64, device=dev)
        if T > 1:
            idx[..., 1:] = torch.cumsum(k[..., 1:] != k[..., :-1], dim=-1)
        n_bins = idx[..., -1] + 1  # [S, B]
        Ks = n_bins.max(dim=1).values.tolist()  # one host sync
        bases = [0]
        for K in Ks[:-1]:
            bases.append(bases[-1] + B * K)
        M = bases[-1] + B * Ks[-1]
        Kt = torch.tensor(Ks, dtype=torch.int64, device=dev)
        off = torch.tensor(bases, dtype=torch.int64, device=dev)[:, None] + torch.arange(B, device=dev)[None, :] * Kt[:, None]
        flat = idx + off[..., None]
        if mask is not None:
            flat = torch.where(mask, flat, M)
        self.flat = flat.reshape(S, B * T)
        self.n_bins = n_bins.reshape(S * B)
        self.max_bins = max(Ks)
        self.M = M
        self.row = torch.repeat_interleave(torch.arange(S * B, device=dev), Kt.repeat_interleave(B), output_size=M)
        local = torch.arange(M, device=dev) - off.reshape(S * B)[self.row]
        self.step_valid = (local < (self.n_bins - 1)[self.row])[:-1]


# --------------------------------------------------------------------------------------
# cosine distance pieces (the backward reuses them)
# --------------------------------------------------------------------------------------
def _cosine_parts(X: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``X [B, T, D]`` -> ``(c, p, N, q, unclamped)``; ``c, p, q, unclamped: [B, T-1]``, ``N: [B, T]``."""
    N = torch.linalg.vecdot(X, X)
    p = torch.linalg.vecdot(X[:, :-1], X[:, 1:])
    q2 = N[:, :-1] * N[:, 1:]
    unclamped = q2 > COSINE_EPS
    q = q2.clamp_min_(COSINE_EPS).sqrt_()
    c = 1.0 - p / q
    return c, p, N, q, unclamped




# --------------------------------------------------------------------------------------
# forward blocks (each stores what the backward needs in ``sv``)
# --------------------------------------------------------------------------------------
def _step_features(
    E: Tensor, t: Tensor, lengths: Tensor | None, nf: Tensor | float, cfg: TemporalFeaturesConfig,
    sv: dict[str, Any], *, need_dev: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
    """Velocity mean, volatility and acceleration mean of ``E [B, T, D]`` (``T >= 2``) ->
    ``(mu [B, D], vol [B, D], acc [B, D], dt64 [B, T-1] float64, smask, smf)``; ``smask`` /
    ``smf`` (``[B, T-1]`` bool / float, real steps) are ``None`` without padding."""
    B, T, D = E.shape
    dtype, device = E.dtype, E.device
    padded = lengths is not None
    smask = smf = None
    dt64 = (t[:, 1:] - t[:, :-1]).clamp_min_(cfg.min_dt)
    inv64 = dt64.reciprocal()
    if padded:
        smask = torch.arange(T - 1, device=device)[None, :] < (lengths - 1)[:, None]
        smf = smask.to(dtype)
        inv64 = inv64 * smask
    inv_dt = inv64.to(dtype)
    u = (E[:, 1:] - E[:, :-1]).mul_(inv_dt[..., None])
    mu = u.sum(1).div_(nf)
    w = None
    if T >= 3:
        ih = 2.0 / (dt64[:, :-1] + dt64[:, 1:])
        if padded:
            ih = ih * smask[:, 1:]
            ih = ih / (lengths - 2).clamp_min(1)[:, None]
        else:
            ih = ih * (1.0 / (T - 2))
        # mean_i (u_{i+1} - u_i) / h_i == sum_j w_j u_j with w_j = ih_{j-1} - ih_j
        w = torch.diff(torch.nn.functional.pad(ih, (1, 1)), dim=1).neg_().to(dtype)
        acc = torch.bmm(w[:, None, :], u)[:, 0]
    else:
        acc = E.new_zeros((B, D))
    dev = u.sub_(mu[:, None])  # u is not needed any more: reuse its memory
    if padded:
        dev.mul_(smf[..., None])
    vol = torch.linalg.vecdot(dev, dev, dim=1).div_(nf).add_(VOLATILITY_EPS).sqrt_()
    if need_dev:
        dev.mul_(inv_dt[..., None])  # the backward needs (u_i - mean u) / dt_i
    sv.update(smf=smf, inv_dt=inv_dt, dev_dt=dev, vol=vol, w=w)
    return mu, vol, acc, dt64, smask, smf


def _soft_scalars(
    E: Tensor, dt64: Tensor, smask: Tensor | None, smf: Tensor | None, nf1: Tensor | float,
    has: Tensor | None, r: Tensor, temp: Tensor | float, cfg: TemporalFeaturesConfig, sv: dict[str, Any],
) -> Tensor:
    """Soft change-point count, smooth-max severity, soft silence count, mean cosine distance
    and drift norm ``r [B]`` -> ``[B, 5]`` (``T >= 2``)."""
    padded = smask is not None
    c, p, N, q, unc = _cosine_parts(E)
    z = (c - cfg.cp_threshold) / temp
    sig = torch.sigmoid(z)
    x = c / temp
    if padded:
        sig = sig * smf
        x = x.masked_fill(~smask, -math.inf)
    lse = torch.logsumexp(x, dim=1)
    if padded:
        lse = torch.where(has, lse, 0.0)
    smax = temp * lse
    sil = torch.sigmoid((dt64 - cfg.silence_gap) * (1.0 / cfg.silence_temperature))
    cm = c
    if padded:
        sil = sil * smask
        cm = c * smf
    scal = torch.stack([sig.sum(1), smax, sil.sum(1).to(E.dtype), cm.sum(1) / nf1, r], 1)
    sv.update(c=c, p=p, N=N, q=q, unc=unc, z=z, sig=sig, x=x, lse=lse, has=has)
    return scal


def _scale_features(
    E: Tensor, t: Tensor, mask: Tensor | None, cfg: TemporalFeaturesConfig, sv: dict[str, Any]
) -> Tensor:
    """Mean bin-to-bin distance and cosine distance at every scale at once -> ``raw [B, S, 2]``
    (before ``beta``); ``sv["scales"]`` keeps the layout and bin means for the backward."""
    B, T, D = E.shape
    S = cfg.n_scales
    dtype = E.dtype
    widths = torch.tensor(cfg.scales, dtype=torch.float64, device=E.device)
    lay = _ScaleLayout(t, mask, widths)
    if lay.max_bins < 2:
        return E.new_zeros((B, S, 2))
    M = lay.M
    Ef = E.reshape(B * T, D)
    sums = E.new_zeros((M + 1, D))
    for s in range(S):  # a handful of scales; each adds the whole batch at once
        sums.index_add_(0, lay.flat[s], Ef)
    counts = torch.bincount(lay.flat.reshape(-1), minlength=M + 1)[:M]
    inv_cnt = counts.clamp_min(1).to(dtype).reciprocal_()
    V = sums[:M].mul_(inv_cnt[:, None])  # [M, D] bin means, sequences back to back
    delta = V[1:] - V[:-1]
    rho = torch.linalg.vector_norm(delta, dim=-1)  # [M-1]
    ck, pk, Nk, qk, unck = _cosine_parts(V[None])
    valid = lay.step_valid.to(dtype)
    rows = lay.row[:-1]
    nkf = (lay.n_bins - 1).clamp_min(1).to(dtype)[:, None]  # [S*B, 1]
    per_step = torch.stack([rho, ck[0]], 1) * valid[:, None]  # [M-1, 2]
    raw = E.new_zeros((S * B, 2)).index_add_(0, rows, per_step) / nkf
    raw = raw.reshape(S, B, 2).transpose(0, 1)  # [B, S, 2]
    sv["scales"] = dict(lay=lay, inv_cnt=inv_cnt, V=V, valid=valid, nkf=nkf, delta=delta,
                        rho=rho, pk=pk, Nk=Nk, qk=qk, unck=unck, raw=raw)
    return raw


# --------------------------------------------------------------------------------------
# backward blocks
# --------------------------------------------------------------------------------------
def _scales_grad(Gsc: Tensor, beta: Tensor | None, ss: dict[str, Any], B: int, T: int, D: int, S: int) -> Tensor:
    """Gradient of the multi-scale block ``Gsc [B, S, 2]`` -> ``gE [B, T, D]``: the gradient of
    every bin mean ``V_k``, then one gather-sum per post over its S bins (weighted by
    1 / bin count)."""
    if beta is not None:
        Gsc = Gsc * beta[:, None]
    Gsc = Gsc.transpose(0, 1).reshape(S * B, 2) / ss["nkf"]  # width-major rows, like the layout
    lay, V, rho, delta = ss["lay"], ss["V"], ss["rho"], ss["delta"]
    M = lay.M
    g_step = Gsc[lay.row[:-1]] * ss["valid"][:, None]  # [M-1, 2]
    coef = (g_step[:, 0] / torch.where(rho > 0, rho, 1.0)).masked_fill_(rho == 0, 0.0)
    qk, Nk = ss["qk"][0], ss["Nk"][0]
    ak = g_step[:, 1] / qk
    bk = torch.where(ss["unck"][0], ak * ss["pk"][0] / (qk * qk), 0.0)
    ck = torch.nn.functional.pad(bk * Nk[1:], (0, 1)) + torch.nn.functional.pad(bk * Nk[:-1], (1, 0))
    # rho_k = |delta_k| (delta_k = V_{k+1} - V_k) gives +-coef_k delta_k; the cosine distance
    # of bins k, k+1 (as on the posts below) gives -a_k V_{k+1} to bin k and -a_k V_k to
    # bin k+1, i.e. -a_k V_k - a_k delta_k and -a_k V_{k+1} + a_k delta_k: all in
    # GV_j = diag_j V_j + e_{j-1} delta_{j-1} - e_j delta_j,  e = coef + a
    diag = ck - torch.nn.functional.pad(ak, (0, 1)) - torch.nn.functional.pad(ak, (1, 0))
    e = (coef + ak)[:, None]
    GVf = torch.empty((M + 1, D), dtype=V.dtype, device=V.device)
    GVf[M] = 0.0  # the slot of padding posts
    GV = torch.mul(V, diag[:, None], out=GVf[:M])
    GV[1:].addcmul_(delta, e)
    GV[:-1].addcmul_(delta, e, value=-1.0)
    idx = lay.flat.t()  # [B*T, S] the slot of each post at each scale
    w_ps = torch.nn.functional.pad(ss["inv_cnt"], (0, 1))[idx]
    return torch.nn.functional.embedding_bag(idx, GVf, mode="sum", per_sample_weights=w_ps).view(B, T, D)


def _steps_grad_E(
    sv: dict[str, Any], G: Tensor, E: Tensor, gE: Tensor | None, Gc: Tensor, D: int
) -> Tensor:
    """Add the gradient of the per-step blocks to ``gE [B, T, D]`` (created if ``None``):
    the cosine distances (``Gc [B, T-1]``: the gradient of each ``c_i``), the velocity mean,
    the volatility and the acceleration mean."""
    nf = sv["nf"]
    # cosine distances: dc_i/dv_i = -v_{i+1}/q_i + b_i |v_{i+1}|^2 v_i, and symmetrically
    q, N = sv["q"], sv["N"]
    a = Gc / q
    b = torch.where(sv["unc"], a * sv["p"] / (q * q), 0.0)
    coef = torch.nn.functional.pad(b * N[:, 1:], (0, 1)) + torch.nn.functional.pad(b * N[:, :-1], (1, 0))
    if gE is None:
        gE = E * coef[..., None]
    else:
        gE.addcmul_(E, coef[..., None])
    # velocity mean, volatility and acceleration mean act through the steps
    # s_i = (v_{i+1} - v_i) * inv_dt_i: post j gets s-gradient_{j-1} - s-gradient_j.
    # The mean and acceleration parts are rank one in (post, dimension) each.
    g_mu, g_vol, g_acc = G[:, :D], G[:, 2 * D : 3 * D], G[:, 3 * D : 4 * D]
    inv_dt = sv["inv_dt"]
    ldt = torch.nn.functional.pad(inv_dt, (1, 0)) - torch.nn.functional.pad(inv_dt, (0, 1))  # [B, T]
    gE.addcmul_(ldt[..., None], (g_mu / nf)[:, None, :])
    if sv["w"] is not None:
        iw = inv_dt * sv["w"]
        lw = torch.nn.functional.pad(iw, (1, 0)) - torch.nn.functional.pad(iw, (0, 1))
        gE.addcmul_(lw[..., None], g_acc[:, None, :])
    dev_dt, A = sv["dev_dt"], (g_vol / (sv["vol"] * nf))[:, None, :]
    a = a[..., None]
    # with Gs_i = A * (u_i - mean u) / dt_i (volatility; saved pre-scaled by the forward):
    # rows 1..T-1 get  Gs_{i-1} - a_{i-1} v_{i-1};  rows 0..T-2 get  -(Gs_i + a_i v_{i+1})
    gE[:, 1:].addcmul_(dev_dt, A).addcmul_(a, E[:, :-1], value=-1.0)
    gE[:, :-1].addcmul_(dev_dt, A, value=-1.0).addcmul_(a, E[:, 1:], value=-1.0)
    return gE


def _steps_grad(
    sv: dict[str, Any], G: Tensor, E: Tensor, gE: Tensor | None, temp: Tensor | float, D: int,
    *, need_E: bool, temp_grad: bool, padded: bool,
) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of the per-step blocks and the soft scalars (``T >= 2``) -> ``(gE, g_temp)``."""
    nf, smf = sv["nf"], sv["smf"]
    sig, z, x, lse, c = sv["sig"], sv["z"], sv["x"], sv["lse"], sv["c"]
    g_cp = G[:, 4 * D : 4 * D + 1]
    g_smax = G[:, 4 * D + 1 : 4 * D + 2]
    g_mc = G[:, 4 * D + 3 : 4 * D + 4]
    soft = torch.exp(x - lse[:, None])  # softmax of c / temperature; 0 on padding (x = -inf)
    sig1 = sig * (1.0 - sig)
    g_temp = None
    if need_E:
        Gc = torch.addcmul(soft * g_smax, sig1, g_cp / temp)
        Gc += (g_mc / nf) if smf is None else (g_mc / nf) * smf
        gE = _steps_grad_E(sv, G, E, gE, Gc, D)
    if temp_grad:
        dcp = (sig1 * z).sum(1) / (-temp)
        cm = c if smf is None else c.masked_fill(smf == 0, 0.0)
        dsm = lse - (soft * cm).sum(1) / temp
        if padded:
            dsm = torch.where(sv["has"], dsm, 0.0)
        g_temp = (g_cp[:, 0] * dcp + g_smax[:, 0] * dsm).sum()
    return gE, g_temp


def _drift_grad(
    sv: dict[str, Any], G: Tensor, E: Tensor, gE: Tensor | None, alpha: Tensor | None, D: int, *, padded: bool
) -> Tensor:
    """Add the gradient of the drift block and the drift norm (both act on ``v_T - v_1``) to
    ``gE [B, T, D]`` (created if ``None``)."""
    B = E.shape[0]
    d, r = sv["d"], sv["r"]
    g_drift = G[:, D : 2 * D]
    if gE is None:
        gE = torch.zeros_like(E)
    gd = g_drift * alpha if alpha is not None else g_drift.clone()
    gd.addcmul_((G[:, 4 * D + 4] / torch.where(r > 0, r, 1.0)).masked_fill_(r == 0, 0.0)[:, None], d)
    if padded:
        gE.index_put_((torch.arange(B, device=E.device), sv["lengths"] - 1), gd, accumulate=True)
    else:
        gE[:, -1].add_(gd)
    gE[:, 0].sub_(gd)
    return gE


# --------------------------------------------------------------------------------------
# the fused feature function
# --------------------------------------------------------------------------------------
class _TemporalFeaturesFn(torch.autograd.Function):
    """``(E [B,T,D], t [B,T] f64, lengths [B] | None, alpha [D] | None, beta [S] | None,
    temperature, cfg) -> [B, 4*D + 5 + 2*S]`` with a fused hand-written backward (once
    differentiable). ``lengths=None`` means no padding: every mask is skipped and counts
    are Python numbers (the fast path); otherwise padding is masked by ``lengths``.
    """

    @staticmethod
    def forward(ctx, E, t, lengths, alpha, beta, temperature, cfg):  # type: ignore[override]
        E = E.contiguous()
        B, T, D = E.shape
        S = cfg.n_scales
        dtype, device = E.dtype, E.device
        padded = lengths is not None
        mask = None
        # inputs go through save_for_backward (version checks); intermediates live on ctx
        ctx.save_for_backward(
            None if padded else E, alpha, beta, temperature if isinstance(temperature, Tensor) else None
        )
        if padded:
            E, t, mask = _clean_padding(E, t, lengths)
            n = lengths - 1
            nf = n.clamp_min(1).to(dtype)[:, None]  # [B, 1] steps per row (>= 1)
            nf1 = nf[:, 0]
            has = n > 0
        else:
            nf = nf1 = float(max(T - 1, 1))
            has = None
        temp = temperature.to(dtype) if isinstance(temperature, Tensor) else float(temperature)
        ctx.shape = (B, T, D, S)
        ctx.padded = padded
        ctx.temp_dtype = temperature.dtype if isinstance(temperature, Tensor) else None
        sv: dict[str, Any] = {"E": E if padded else None, "lengths": lengths, "nf": nf,
                              "temp": None if isinstance(temp, Tensor) else temp, "mask": mask, "scales": None}
        ctx.sv = sv
        # drift
        last = E[torch.arange(B, device=device), lengths - 1] if padded else E[:, -1]
        d = last - E[:, 0]
        r = torch.linalg.vector_norm(d, dim=-1)
        sv.update(d=d, r=r)
        drift_out = d * alpha if alpha is not None else d
        if T < 2:
            zD = E.new_zeros((B, D))
            vol = torch.full_like(zD, math.sqrt(VOLATILITY_EPS))
            scal = torch.nn.functional.pad(r[:, None], (4, 0))
            return torch.cat([zD, drift_out, vol, zD, scal, E.new_zeros((B, 2 * S))], 1)
        mu, vol, acc, dt64, smask, smf = _step_features(E, t, lengths, nf, cfg, sv, need_dev=ctx.needs_input_grad[0])
        scal = _soft_scalars(E, dt64, smask, smf, nf1, has, r, temp, cfg, sv)
        raw = _scale_features(E, t, mask, cfg, sv)
        scales_out = raw * beta[:, None] if beta is not None else raw
        return torch.cat([mu, drift_out, vol, acc, scal, scales_out.reshape(B, 2 * S)], 1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, G):  # type: ignore[override]
        sv = ctx.sv
        B, T, D, S = ctx.shape
        padded = ctx.padded
        E_in, alpha, beta, temp_in = ctx.saved_tensors
        E = sv["E"] if padded else E_in
        G = G.to(E.dtype).contiguous()  # `.sum().backward()` passes an expanded (stride-0) tensor
        need_E, _, _, need_alpha, need_beta, need_temp, _ = ctx.needs_input_grad
        temp = temp_in.to(E.dtype) if temp_in is not None else sv["temp"]
        temp_grad = need_temp and isinstance(temp, Tensor)
        gE = g_alpha = g_beta = g_temp = None
        ss = sv["scales"]
        if need_alpha and alpha is not None:
            g_alpha = (G[:, D : 2 * D] * sv["d"]).sum(0)
        Gsc = G[:, 4 * D + 5 :].reshape(B, S, 2)
        if need_beta and beta is not None:
            g_beta = torch.zeros_like(beta) if ss is None else (Gsc * ss["raw"]).sum((0, 2))
        if need_E and ss is not None:
            gE = _scales_grad(Gsc, beta, ss, B, T, D, S)
        if T >= 2:
            gE, g_temp = _steps_grad(sv, G, E, gE, temp, D, need_E=need_E, temp_grad=temp_grad, padded=padded)
        if need_E:
            gE = _drift_grad(sv, G, E, gE, alpha, D, padded=padded)
        if temp_grad and g_temp is None:
            g_temp = temp.new_zeros(())
        if need_E and padded:
            gE.mul_(sv["mask"][..., None])
        if g_temp is not None:
            g_temp = g_temp.to(ctx.temp_dtype)
        return gE, None, None, g_alpha, g_beta, g_temp, None
