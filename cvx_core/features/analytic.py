"""Temporal features of one embedding trajectory: the shared contract and the analytic path.

This module holds what both feature paths share (SPEC.md):

- the :class:`TemporalOps` protocol both backends satisfy;
- the numerical constants of the formulas (one definition, imported by the torch path);
- the named layout of the ``4*D + 5 + 2*S`` feature vector (:class:`FeatureLayout`,
  :func:`feature_layout`, :func:`feature_names`);
- :class:`AnalyticBackend`: NumPy, float64, no gradients; it also exposes the discrete
  originals of the soft relaxations (:meth:`AnalyticBackend.discrete_summary`). Its
  ``extract_all`` runs the compiled kernel of :mod:`cvx_core.features.kernels` (the same
  code as the torch path on the CPU, so the two agree bit for bit in float64); the NumPy
  implementation (``_extract_all_numpy``) remains as the fallback without numba and as the
  kernel's cross-check in the tests.

Inputs are one trajectory: embeddings ``E [T, D]`` and timestamps ``t [T]`` in days
(float64, non-decreasing; only differences and the first point matter).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from cvx_core.features.config import TemporalFeaturesConfig

__all__ = [
    "COSINE_EPS",
    "VOLATILITY_EPS",
    "TemporalOps",
    "FeatureBlock",
    "FeatureLayout",
    "feature_layout",
    "feature_names",
    "DiscreteSummary",
    "AnalyticBackend",
]

#: floor under ``|v_i|^2 * |v_{i+1}|^2`` in the cosine distance's denominator (SPEC).
COSINE_EPS: float = 1e-16
#: added to the population variance before the square root in the volatility (SPEC).
VOLATILITY_EPS: float = 1e-12

_DEFAULT_CONFIG = TemporalFeaturesConfig()
#: resampling adds bins member by member up to this many posts per bin, else uses a matmul
_SMALL_BINS = 8
#: most elements of the [bins, posts] membership matrix of a burst aggregation (64 MB)
_MEMBERSHIP_CAP = 1 << 23


def resolve_config(config: TemporalFeaturesConfig | None) -> TemporalFeaturesConfig:
    """``None`` -> the default config; anything else must be a :class:`TemporalFeaturesConfig`."""
    if config is None:
        return _DEFAULT_CONFIG
    if not isinstance(config, TemporalFeaturesConfig):
        raise TypeError(f"config must be a TemporalFeaturesConfig or None, got {type(config).__name__}")
    if config.is_auto:
        raise ValueError(
            "TemporalFeaturesConfig has scales='auto': resolve it against the data first "
            "(cvx_core.features.scales.resolve_features(config, data))"
        )
    return config


# --------------------------------------------------------------------------------------
# The protocol both backends satisfy
# --------------------------------------------------------------------------------------
@runtime_checkable
class TemporalOps(Protocol):
    """The temporal operations of SPEC.md, callable on the backend class itself.

    Shapes for one trajectory: ``E [T, D]``, ``t [T]`` (days). Array types are the
    backend's own (NumPy arrays for :class:`AnalyticBackend`, tensors for ``TorchBackend``).
    """

    @staticmethod
    def time_steps(t: Any, config: TemporalFeaturesConfig | None = None) -> Any:
        """``dt_i = max(t_{i+1} - t_i, min_dt)`` -> ``[T-1]``."""

    @staticmethod
    def velocity(E: Any, t: Any, config: TemporalFeaturesConfig | None = None) -> Any:
        """``u_i = (v_{i+1} - v_i) / dt_i`` -> ``[T-1, D]``."""

    @staticmethod
    def acceleration(E: Any, t: Any, config: TemporalFeaturesConfig | None = None) -> Any:
        """``a_i = (u_{i+1} - u_i) / (0.5 (dt_i + dt_{i+1}))`` -> ``[T-2, D]``."""

    @staticmethod
    def drift(E: Any) -> Any:
        """``v_T - v_1`` -> ``[D]``."""

    @staticmethod
    def volatility(E: Any, t: Any, config: TemporalFeaturesConfig | None = None) -> Any:
        """``sqrt(population var_i(u_i) + 1e-12)`` per dimension -> ``[D]``."""

    @staticmethod
    def cosine_distance(E: Any) -> Any:
        """``c_i = 1 - <v_i, v_{i+1}> / sqrt(max(|v_i|^2 |v_{i+1}|^2, 1e-16))`` -> ``[T-1]``."""

    @staticmethod
    def ema(E: Any, t: Any, config: TemporalFeaturesConfig | None = None) -> Any:
        """Exponential moving average with real gaps -> ``[T, D]``."""

    @staticmethod
    def resample(E: Any, t: Any, width: float) -> tuple[Any, Any]:
        """Bin means of width ``width`` days anchored at ``t_1`` -> ``(E_r [K, D], t_r [K])``."""

    @staticmethod
    def soft_changepoints(E: Any, config: TemporalFeaturesConfig | None = None) -> Any:
        """Per-step soft change indicator ``sigmoid((c_i - cp_threshold) / temperature)`` -> ``[T-1]``."""

    @staticmethod
    def extract_all(E: Any, t: Any, config: TemporalFeaturesConfig | None = None) -> Any:
        """The fixed-size feature vector -> ``[4*D + 5 + 2*S]``."""


# --------------------------------------------------------------------------------------
# Layout of the feature vector
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureBlock:
    """One named block of the feature vector: entries ``[start, stop)``."""

    name: str
    start: int
    stop: int
    description: str

    @property
    def slice(self) -> slice:
        return slice(self.start, self.stop)

    def __len__(self) -> int:
        return self.stop - self.start


def _fmt_width(width: float) -> str:
    return f"{width:g}d"


@dataclass(frozen=True)
class FeatureLayout:
    """Names and slices of every block and entry of the ``4*D + 5 + 2*S`` vector.

    ``blocks`` are the semantic blocks in order (four D-wide blocks, five scalars, two
    scalars per scale); ``groups`` are the six groups SPEC's float32 tolerance is stated
    on (``mean_velocity``, ``attended_drift``, ``volatility``, ``mean_acceleration``,
    ``scalars``, ``scales``).
    """

    dim: int
    scales: tuple[float, ...]
    blocks: tuple[FeatureBlock, ...]

    @property
    def n_scales(self) -> int:
        return len(self.scales)

    @property
    def size(self) -> int:
        return 4 * self.dim + 5 + 2 * self.n_scales

    def __len__(self) -> int:
        return self.size

    def block(self, name: str) -> FeatureBlock:
        for b in self.blocks:
            if b.name == name:
                return b
        raise KeyError(f"no feature block {name!r}; blocks are {[b.name for b in self.blocks]}")

    def slice(self, name: str) -> slice:
        """Slice of a block (see :attr:`blocks`) or group (see :attr:`groups`) by name."""
        groups = self.groups
        if name in groups:
            return groups[name]
        return self.block(name).slice

    @property
    def groups(self) -> dict[str, slice]:
        d = self.dim
        return {
            "mean_velocity": slice(0, d),
            "attended_drift": slice(d, 2 * d),
            "volatility": slice(2 * d, 3 * d),
            "mean_acceleration": slice(3 * d, 4 * d),
            "scalars": slice(4 * d, 4 * d + 5),
            "scales": slice(4 * d + 5, self.size),
        }

    @property
    def names(self) -> list[str]:
        """One name per entry, ``len == size``; D-wide blocks are ``block[d]``."""
        out: list[str] = []
        for b in self.blocks:
            if len(b) == 1:
                out.append(b.name)
            else:
                out.extend(f"{b.name}[{i}]" for i in range(len(b)))
        return out

    def name_of(self, index: int) -> str:
        """Name of entry ``index`` (``0 <= index < size``)."""
        if not 0 <= index < self.size:
            raise IndexError(f"feature index {index} out of range [0, {self.size})")
        for b in self.blocks:
            if b.start <= index < b.stop:
                return b.name if len(b) == 1 else f"{b.name}[{index - b.start}]"
        raise AssertionError("unreachable")  # pragma: no cover


def feature_layout(dim: int, config: TemporalFeaturesConfig | None = None) -> FeatureLayout:
    """The layout of the feature vector for embedding dimension ``dim``."""
    if not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be an integer >= 1, got {dim!r}")
    dim = int(dim)
    cfg = resolve_config(config)
    d = dim
    blocks = [
        FeatureBlock("mean_velocity", 0, d, "mean over steps of (v_{i+1} - v_i) / dt_i"),
        FeatureBlock("attended_drift", d, 2 * d, "alpha * (v_T - v_1)"),
        FeatureBlock("volatility", 2 * d, 3 * d, "sqrt(population variance of velocity + 1e-12)"),
        FeatureBlock("mean_acceleration", 3 * d, 4 * d, "mean over steps of the acceleration"),
        FeatureBlock("cp_count", 4 * d, 4 * d + 1, "soft count of cosine distances above cp_threshold"),
        FeatureBlock("max_severity", 4 * d + 1, 4 * d + 2, "temperature * logsumexp(c_i / temperature)"),
        FeatureBlock("silence_count", 4 * d + 2, 4 * d + 3, "soft count of gaps longer than silence_gap"),
        FeatureBlock("mean_cosine", 4 * d + 3, 4 * d + 4, "mean cosine distance between consecutive posts"),
        FeatureBlock("drift_norm", 4 * d + 4, 4 * d + 5, "|v_T - v_1|"),
    ]
    base = 4 * d + 5
    for k, w in enumerate(cfg.scales):
        tag = _fmt_width(w)
        blocks.append(
            FeatureBlock(f"scale_{tag}_step_norm", base + 2 * k, base + 2 * k + 1,
                         f"beta_k * mean step norm after resampling at {tag}")
        )
        blocks.append(
            FeatureBlock(f"scale_{tag}_cosine", base + 2 * k + 1, base + 2 * k + 2,
                         f"beta_k * mean cosine distance after resampling at {tag}")
        )
    return FeatureLayout(dim=d, scales=cfg.scales, blocks=tuple(blocks))


def feature_names(dim: int, config: TemporalFeaturesConfig | None = None) -> list[str]:
    """One name per entry of the ``4*D + 5 + 2*S`` vector (plot labels, exports)."""
    return feature_layout(dim, config).names


# --------------------------------------------------------------------------------------
# Discrete originals of the relaxations
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DiscreteSummary:
    """Exact (non-relaxed) counterparts of the soft features, for one trajectory.

    Attributes:
        n_change_points: ``#{i : c_i > cp_threshold}`` (limit of the soft count).
        change_point_steps: the steps ``i`` (change between post ``i`` and ``i+1``, 0-based)
            with ``c_i > cp_threshold``.
        max_severity: ``max_i c_i``; 0 if ``T < 2`` (limit of the smooth max).
        n_silences: ``#{i : dt_i > silence_gap}`` (limit of the soft silence count).
        silence_steps: the steps ``i`` with ``dt_i > silence_gap``.
        top_dims: the ``k`` dimensions with the largest ``|v_T - v_1|``, descending (the
            deterministic top-K the Gumbel relaxation converges to).
        top_dims_drift: ``|v_T - v_1|`` at ``top_dims``.
    """

    n_change_points: int
    change_point_steps: tuple[int, ...]
    max_severity: float
    n_silences: int
    silence_steps: tuple[int, ...]
    top_dims: tuple[int, ...]
    top_dims_drift: tuple[float, ...]


# --------------------------------------------------------------------------------------
# Analytic backend
# --------------------------------------------------------------------------------------
def _as_E(E: Any) -> np.ndarray:
    arr = np.asarray(E, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"embeddings must be a [T, D] matrix, got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"embeddings need T >= 1 posts and D >= 1, got shape {arr.shape}")
    return arr


def _as_t(t: Any, n: int | None = None) -> np.ndarray:
    arr = np.asarray(t, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"timestamps must be a [T] vector of days, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{n} embeddings but {arr.shape[0]} timestamps")
    if arr.size > 1 and not np.all(arr[1:] >= arr[:-1]):
        raise ValueError("timestamps must be non-decreasing (sort posts by time, stably)")
    if not np.all(np.isfinite(arr)):
        raise ValueError("timestamps must be finite")
    return arr


def _row_norms(X: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("ij,ij->i", X, X))


class AnalyticBackend:
    """SPEC.md on NumPy: float64, no gradients. All methods are static (class-level) ops.

    ``E [T, D]`` embeddings, ``t [T]`` days; ``config=None`` means the default config.
    """

    # -- per-step quantities ---------------------------------------------------------------
    @staticmethod
    def time_steps(t: Any, config: TemporalFeaturesConfig | None = None) -> np.ndarray:
        """``dt_i = max(t_{i+1} - t_i, min_dt)`` -> ``[T-1]`` float64."""
        cfg = resolve_config(config)
        tt = cfg.to_unit(_as_t(t))
        return np.maximum(np.diff(tt), cfg.min_dt)

    @staticmethod
    def cosine_distance(E: Any) -> np.ndarray:
        """``c_i = 1 - <v_i, v_{i+1}> / sqrt(max(|v_i|^2 |v_{i+1}|^2, 1e-16))`` -> ``[T-1]``."""
        X = _as_E(E)
        dots = np.einsum("ij,ij->i", X[:-1], X[1:])
        sq = np.einsum("ij,ij->i", X, X)
        denom = np.sqrt(np.maximum(sq[:-1] * sq[1:], COSINE_EPS))
        return 1.0 - dots / denom

    @staticmethod
    def velocity(E: Any, t: Any, config: TemporalFeaturesConfig | None = None) -> np.ndarray:
        """``u_i = (v_{i+1} - v_i) / dt_i`` -> ``[T-1, D]``."""
        X = _as_E(E)
        dt = AnalyticBackend.time_steps(_as_t(t, X.shape[0]), config)
        return np.diff(X, axis=0) / dt[:, None]

    @staticmethod
    def acceleration(E: Any, t: Any, config: TemporalFeaturesConfig | None = None) -> np.ndarray:
        """``a_i = (u_{i+1} - u_i) / (0.5 (dt_i + dt_{i+1}))`` -> ``[T-2, D]`` (empty if T < 3)."""
        X = _as_E(E)
        dt = AnalyticBackend.time_steps(_as_t(t, X.shape[0]), config)
        u = np.diff(X, axis=0) / dt[:, None]
        h = 0.5 * (dt[:-1] + dt[1:])
        return np.diff(u, axis=0) / h[:, None]

    @staticmethod
    def drift(E: Any) -> np.ndarray:
        """``v_T - v_1`` -> ``[D]``."""
        X = _as_E(E)
        return X[-1] - X[0]

    @staticmethod
    def volatility(E: Any, t: Any, config: TemporalFeaturesConfig | None = None) -> np.ndarray:
        """``sqrt(mean_i (u_i - mean u)^2 + 1e-12)`` per dimension -> ``[D]``; ``sqrt(1e-12)`` if T < 2."""
        u = AnalyticBackend.velocity(E, t, config)
        if u.shape[0] == 0:
            return np.full(u.shape[1], np.sqrt(VOLATILITY_EPS))
        dev = u - u.mean(axis=0)
        return np.sqrt(np.mean(dev * dev, axis=0) + VOLATILITY_EPS)

    @staticmethod
    def ema(E: Any, t: Any, config: TemporalFeaturesConfig | None = None) -> np.ndarray:
        """``m_1 = v_1``, ``m_{i+1} = g_i m_i + (1 - g_i) v_{i+1}``, ``g_i = exp(-dt_i / ema_tau)`` -> ``[T, D]``."""
        cfg = resolve_config(config)
        X = _as_E(E)
        dt = AnalyticBackend.time_steps(_as_t(t, X.shape[0]), cfg)
        g = np.exp(-dt / cfg.ema_tau)
        out = np.empty_like(X)
        out[0] = X[0]
        for i in range(X.shape[0] - 1):
            out[i + 1] = g[i] * out[i] + (1.0 - g[i]) * X[i + 1]
        return out

    @staticmethod
    def resample(E: Any, t: Any, width: float) -> tuple[np.ndarray, np.ndarray]:
        """Bins of ``width`` days anchored at ``t_1``: ``k = floor((t - t_1) / width)``.

        Each non-empty bin becomes one point: mean embedding, mean time, in time order.
        Returns ``(E_r [K, D], t_r [K])``.
        """
        if not (np.isfinite(width) and width > 0):
            raise ValueError(f"resampling width must be a finite number of days > 0, got {width!r}")
        X = _as_E(E)
        tt = _as_t(t, X.shape[0])
        E_r, t_r = _resample(X, tt, width)
        return (E_r.copy() if E_r is X else E_r), (t_r.copy() if t_r is tt else t_r)

    # -- relaxations -----------------------------------------------------------------------
    @staticmethod
    def soft_changepoints(E: Any, config: TemporalFeaturesConfig | None = None) -> np.ndarray:
        """``sigmoid((c_i - cp_threshold) / temperature)`` per step -> ``[T-1]``; sums to the soft count."""
        cfg = resolve_config(config)
        c = AnalyticBackend.cosine_distance(E)
        return _sigmoid((c - cfg.cp_threshold) / cfg.temperature)

    @staticmethod
    def smooth_max_severity(E: Any, config: TemporalFeaturesConfig | None = None) -> float:
        """``temperature * logsumexp(c_i / temperature)``; 0 if T < 2."""
        cfg = resolve_config(config)
        return _smooth_max(AnalyticBackend.cosine_distance(E), cfg.temperature)

    @staticmethod
    def soft_silences(t: Any, config: TemporalFeaturesConfig | None = None) -> np.ndarray:
        """``sigmoid((dt_i - silence_gap) / silence_temperature)`` per step -> ``[T-1]``."""
        cfg = resolve_config(config)
        dt = AnalyticBackend.time_steps(t, cfg)
        return _sigmoid((dt - cfg.silence_gap) / cfg.silence_temperature)

    @staticmethod
    def discrete_summary(
        E: Any, t: Any, config: TemporalFeaturesConfig | None = None, *, k: int = 10
    ) -> DiscreteSummary:
        """Exact counterparts of the relaxations (on the burst-aggregated sequence, if any)."""
        cfg = resolve_config(config)
        X = _as_E(E)
        tt = cfg.to_unit(_as_t(t, X.shape[0]))
        if cfg.burst_window is not None:
            X, tt = AnalyticBackend.resample(X, tt, cfg.burst_window)
        c = AnalyticBackend.cosine_distance(X)
        dt = np.maximum(np.diff(tt), cfg.min_dt)
        cp = np.flatnonzero(c > cfg.cp_threshold)
        sil = np.flatnonzero(dt > cfg.silence_gap)
        mag = np.abs(X[-1] - X[0])
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        kk = min(int(k), mag.shape[0])
        order = np.argsort(-mag, kind="stable")[:kk]
        return DiscreteSummary(
            n_change_points=int(cp.size),
            change_point_steps=tuple(int(i) for i in cp),
            max_severity=float(c.max()) if c.size else 0.0,
            n_silences=int(sil.size),
            silence_steps=tuple(int(i) for i in sil),
            top_dims=tuple(int(i) for i in order),
            top_dims_drift=tuple(float(mag[i]) for i in order),
        )

    # -- the feature vector ----------------------------------------------------------------
    @staticmethod
    def extract_all(E: Any, t: Any, config: TemporalFeaturesConfig | None = None) -> np.ndarray:
        """The fixed-size feature vector ``[4*D + 5 + 2*S]`` float64 (SPEC.md, alpha = beta = 1)."""
        cfg = resolve_config(config)
        X = _as_E(E)
        tt = cfg.to_unit(_as_t(t, X.shape[0]))
        if cfg.burst_window is not None:
            X, tt = _resample(X, tt, cfg.burst_window)
        if _kernels_available():
            # the compiled kernel (the torch path runs the same code: same bits in float64)
            from cvx_core.features import kernels

            Xb = np.ascontiguousarray(X)[None]
            tb = np.ascontiguousarray(tt, dtype=np.float64)[None]
            out, _ = kernels.forward(Xb, tb, np.array([X.shape[0]], dtype=np.int64), cfg)
            return out[0]
        return _extract_all_numpy(X, tt, cfg)

    @staticmethod
    def layout(dim: int, config: TemporalFeaturesConfig | None = None) -> FeatureLayout:
        """Same as :func:`feature_layout`."""
        return feature_layout(dim, config)


def _kernels_available() -> bool:
    """Whether :mod:`cvx_core.features.kernels` (numba) can run; imported on first use, so
    that importing the feature modules does not import numba."""
    from cvx_core.features import kernels

    return kernels.available()


def _extract_all_numpy(X: np.ndarray, tt: np.ndarray, cfg: TemporalFeaturesConfig) -> np.ndarray:
    """The feature vector with NumPy array operations (validated, burst-aggregated ``X [T, D]``,
    ``tt [T]``) -> ``[4*D + 5 + 2*S]``: the implementation before the compiled kernel, kept
    as the fallback without numba and as the kernel's cross-check in the tests."""
    T, D = X.shape
    S = cfg.n_scales
    out = np.zeros(4 * D + 5 + 2 * S, dtype=np.float64)
    vol = out[2 * D : 3 * D]
    if T < 2:
        vol[:] = np.sqrt(VOLATILITY_EPS)
    else:
        dt = np.maximum(np.diff(tt), cfg.min_dt)
        n = T - 1
        u = np.diff(X, axis=0)
        u /= dt[:, None]
        mu = u.sum(axis=0) / n
        out[:D] = mu
        if T >= 3:
            ih = 2.0 / (dt[:-1] + dt[1:])
            # sum_i (u_{i+1} - u_i) / h_i, as one weighted sum over the velocity rows
            w = np.zeros(n)
            w[1:] += ih
            w[:-1] -= ih
            out[3 * D : 4 * D] = (w @ u) / (T - 2)
        u -= mu  # deviations, in place (large temporaries cost page faults)
        var = np.einsum("ij,ij->j", u, u) / n
        vol[:] = np.sqrt(var + VOLATILITY_EPS)
        d = X[-1] - X[0]
        out[D : 2 * D] = d
        c = AnalyticBackend.cosine_distance(X)
        base = 4 * D
        out[base + 0] = _sigmoid((c - cfg.cp_threshold) / cfg.temperature).sum()
        out[base + 1] = _smooth_max(c, cfg.temperature)
        out[base + 2] = _sigmoid((dt - cfg.silence_gap) / cfg.silence_temperature).sum()
        out[base + 3] = c.sum() / n
        out[base + 4] = np.sqrt(d @ d)
    base = 4 * D + 5
    if T < 2:
        return out
    scratch = np.empty_like(X)  # bin means of each scale in turn; steps go into u
    for k, width in enumerate(cfg.scales):
        V, _ = _resample(X, tt, width, out=scratch)
        if V.shape[0] < 2:
            continue
        nk = V.shape[0] - 1
        steps = np.subtract(V[1:], V[:-1], out=u[:nk])
        out[base + 2 * k] = _row_norms(steps).sum() / nk
        out[base + 2 * k + 1] = AnalyticBackend.cosine_distance(V).sum() / nk
    return out


def _resample(
    X: np.ndarray, tt: np.ndarray, width: float, out: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Validated-input core of :meth:`AnalyticBackend.resample`.

    For internal, read-only use: when every bin holds one post it returns ``X`` and ``tt``
    themselves; ``out`` (``[>= K, D]``) receives the bin means otherwise (no large
    temporaries: each one would cost page faults on every call).
    """
    T = X.shape[0]
    k = np.floor((tt - tt[0]) / width)
    new = np.empty(T, dtype=bool)
    new[0] = False
    np.not_equal(k[1:], k[:-1], out=new[1:])
    if not new.any():
        return X.mean(axis=0, keepdims=True), np.array([tt.mean()])
    if new[1:].all():
        return X, tt
    starts = np.concatenate(([0], np.flatnonzero(new)))
    K = starts.shape[0]
    counts = np.diff(np.append(starts, T))
    max_count = int(counts.max())
    sums = np.empty((K, X.shape[1])) if out is None else out[:K]
    bin_of = np.cumsum(new)
    if max_count <= _SMALL_BINS:
        # few posts per bin: add the r-th member of every bin that has one, r = 0, 1, ...
        np.take(X, starts, axis=0, out=sums)
        for r in range(1, max_count):
            sel = np.flatnonzero(counts > r)
            sums[sel] += X[starts[sel] + r]
    elif K * T <= _MEMBERSHIP_CAP:
        # many posts per bin, a small [K, T] bin-membership matrix: one matrix product
        W = np.zeros((K, T))
        W[bin_of, np.arange(T)] = 1.0
        np.matmul(W, X, out=sums)
    else:
        # a long user: one unbuffered scatter-add in time order (a sequential sum per bin,
        # like the loop above and torch's index_add_; the same numbers to rounding), O(T*D)
        # time and O(K*D) memory where the [K, T] matrix would grow with the square of T
        sums.fill(0.0)
        np.add.at(sums, bin_of, X)
    # bin times: one canonical mean on both paths (a sequential sum in time order, then a
    # true division), so that an aggregated time on a scale's bin edge falls on the same side
    tsum = np.zeros(K)
    np.add.at(tsum, bin_of, tt)
    cnt = counts.astype(np.float64)
    sums /= cnt[:, None]
    return sums, tsum / cnt


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def _smooth_max(c: np.ndarray, temperature: float) -> float:
    """``temperature * logsumexp(c / temperature)``; 0 for an empty ``c``."""
    if c.size == 0:
        return 0.0
    z = c / temperature
    m = z.max()
    return float(temperature * (m + np.log(np.exp(z - m).sum())))
