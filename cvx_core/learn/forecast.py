"""Forecast where a trajectory goes next: a latent ODE (ODE-RNN encoder, then the learned
ODE integrated from the last post to the target time) with a linear decoder.

The prediction at time ``t*`` after a user's last post ``v_T`` (at ``t_T``) is
``v_T + W (h(t*) - h(t_T))``: the decoder reads the *change* of the latent state, so a
user's own position (which no small latent state could hold at D = 768) comes from the
last post, and the ODE carries the motion. Training uses every prefix of every training
trajectory at once (teacher forcing): the encoder's state after post ``i`` is integrated
over the real gap to post ``i + 1`` and scored against it.

Evaluation (:func:`evaluate_forecaster`) predicts each trajectory's held-out last post from
the others, beside two baselines: the last value, and linear extrapolation of the last step.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cvx_core.data.atomic import atomic_torch_save, atomic_write_json
from cvx_core.data.columns import ascii_strip
from cvx_core.data.trajectory import Trajectory, TrajectorySet
from cvx_core.features.ode import ODEConfig, ODERNNEncoder

__all__ = [
    "ForecastConfig",
    "LatentODEForecaster",
    "ForecastEvaluation",
    "fit_forecaster",
    "forecast",
    "evaluate_forecaster",
    "save_forecaster",
    "load_forecaster",
    "parse_forecast_time",
]

#: ISO-8601 date, or date and time (seconds, up to 6 fraction digits), optional UTC offset;
#: ASCII digits only, four-digit years (1-9999)
_ISO_TIME = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})"
    r"(?:[T ](?P<time>[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?)"
    r"(?P<tz>Z|[+-][0-9]{2}:?[0-9]{2})?)?"
)


def parse_forecast_time(text: str) -> np.datetime64:
    """A target time from ISO-8601 text: ``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM[:SS[.ffffff]]``
    with an optional ``Z`` / ``+HH:MM`` offset (converted to UTC), years 1-9999 ->
    ``datetime64[us]`` (UTC). Words (``today``, ``NaT``), a bare year (``2031``), a
    five-digit year, non-ASCII digits and impossible dates are a ``ValueError``."""
    from datetime import datetime

    raw = text
    m = _ISO_TIME.fullmatch(ascii_strip(text)) if isinstance(text, str) else None  # not U+00A0 etc.
    if m is None:
        raise ValueError(f"--at {raw!r}: expected an ISO-8601 date or date and time such as 2031-05-01 or "
                         "2031-05-01T12:00:00Z (years 1-9999)")
    iso = m.group("date") + ("T" + m.group("time") if m.group("time") else "")
    tz = m.group("tz")
    if tz and tz != "Z" and ":" not in tz:
        tz = tz[:3] + ":" + tz[3:]
    try:
        dt = datetime.fromisoformat(iso + ("+00:00" if tz in (None, "Z") else tz))
    except ValueError as exc:
        raise ValueError(f"--at {raw!r}: not a valid date ({exc})") from None
    if dt.year < 1:
        raise ValueError(f"--at {raw!r}: year 0 is not a date")
    try:
        utc = (dt.replace(tzinfo=None) - dt.utcoffset()) if tz not in (None, "Z") else dt.replace(tzinfo=None)
    except (OverflowError, ValueError):
        raise ValueError(f"--at {raw!r}: outside years 1-9999 in UTC") from None
    return np.datetime64(utc, "us")


@dataclass(frozen=True)
class ForecastConfig:
    """Training settings of the forecaster (the ODE itself is ``ode``)."""

    ode: ODEConfig = field(default_factory=lambda: ODEConfig(latent_dim=16, input_dim=16, adjoint=False))
    epochs: int = 150
    lr: float = 1e-2
    weight_decay: float = 0.0
    batch_size: int = 64
    seed: int = 0
    max_len: int | None = 64

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ForecastConfig":
        from cvx_core.data.strict import strict_fields  # unknown keys, types: one line naming the field

        kw = strict_fields(cls, d)
        for name, low in (("epochs", 1), ("batch_size", 1), ("max_len", 1)):
            if kw.get(name) is not None and kw[name] < low:
                raise ValueError(f"ForecastConfig.{name}: expected a whole number >= {low}, got {kw[name]!r}")
        for name in ("lr", "weight_decay"):
            if name in kw and not (kw[name] > 0 or (name == "weight_decay" and kw[name] == 0)):
                raise ValueError(f"ForecastConfig.{name}: expected a number {'>= 0' if name == 'weight_decay' else '> 0'}, got {kw[name]!r}")
        return cls(**kw)


class LatentODEForecaster(nn.Module):
    """``forward(values [B, T, D], timestamps [B, T] days, lengths [B], target [B] days) -> [B, D]``."""

    def __init__(self, dim: int, config: ODEConfig | None = None) -> None:
        super().__init__()
        self.dim = int(dim)
        self.encoder = ODERNNEncoder(self.dim, config)
        self.decoder = nn.Linear(self.encoder.out_dim, self.dim, bias=False)

    def forward(self, values: Tensor, timestamps: Tensor, lengths: Tensor, target: Tensor) -> Tensor:
        b = values.shape[0]
        rows = torch.arange(b, device=values.device)
        last = lengths.long() - 1
        states = self.encoder.states(values, timestamps, lengths)
        h_last = states[rows, last]
        stamps = torch.as_tensor(timestamps, dtype=torch.float64, device=values.device)
        gap = (torch.as_tensor(target, dtype=torch.float64, device=values.device) - stamps[rows, last]).clamp_min(0.0)
        h_future = self.encoder.evolve(h_last, gap)
        return values[rows, last] + self.decoder(h_future - h_last)

    def next_step_loss(self, values: Tensor, timestamps: Tensor, lengths: Tensor) -> Tensor:
        """Mean squared error of predicting every post ``i >= 1`` from the posts before it."""
        b, t, d = values.shape
        if t < 2:
            return values.new_zeros(())
        states = self.encoder.states(values, timestamps, lengths)  # [B, T, H]
        stamps = torch.as_tensor(timestamps, dtype=torch.float64, device=values.device)
        valid = torch.arange(1, t, device=values.device).unsqueeze(0) < lengths.unsqueeze(1)  # [B, T-1]
        h_prev = states[:, :-1][valid]  # [M, H]
        gaps = (stamps[:, 1:] - stamps[:, :-1])[valid].clamp_min(0.0)
        h_next = self.encoder.evolve(h_prev, gaps)
        pred = values[:, :-1][valid] + self.decoder(h_next - h_prev)
        return ((pred - values[:, 1:][valid]) ** 2).mean()


def _batches(ts: TrajectorySet, idx: np.ndarray, batch_size: int, max_len: int | None):
    for k in range(0, idx.size, batch_size):
        b = idx[k : k + batch_size]
        pb = ts.padded(b, max_len=max_len)
        yield pb


def fit_forecaster(
    ts: TrajectorySet,
    *,
    config: ForecastConfig | None = None,
    exclude_last: int = 0,
    progress: Any = None,
) -> LatentODEForecaster:
    """Train a forecaster on every trajectory of ``ts`` (float32, CPU), leaving out each
    trajectory's last ``exclude_last`` posts (so they can be evaluated honestly)."""
    cfg = config or ForecastConfig()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    data = _truncate(ts, exclude_last) if exclude_last else ts
    keep = np.flatnonzero(data.lengths >= 2)
    if keep.size == 0:
        raise ValueError("forecasting needs at least one trajectory with 2 or more posts")
    model = LatentODEForecaster(data.dim, cfg.ode)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    for epoch in range(cfg.epochs):
        order = rng.permutation(keep)
        total = 0.0
        for pb in _batches(data, order, cfg.batch_size, cfg.max_len):
            values, stamps, lengths = pb.to_torch("cpu")
            loss = model.next_step_loss(values.float(), stamps, lengths)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            total += float(loss.detach())
        if progress is not None:
            progress(epoch + 1, cfg.epochs, total)
    return model.eval()


def _truncate(ts: TrajectorySet, n: int) -> TrajectorySet:
    out = []
    for tr in ts:
        if tr.n_posts <= n:
            continue
        out.append(
            Trajectory(
                user_id=tr.user_id,
                embeddings=tr.embeddings[: tr.n_posts - n],
                datetimes=tr.datetimes[: tr.n_posts - n],
                label=tr.label,
                texts=None if tr.texts is None else tr.texts[: tr.n_posts - n],
            )
        )
    return TrajectorySet(out, name=ts.name)


@torch.no_grad()
def forecast(model: LatentODEForecaster, traj: Trajectory, at: Any, *, max_len: int | None = 64) -> np.ndarray:
    """The predicted embedding ``[D]`` of ``traj`` at ``at`` (a datetime, ``numpy.datetime64``
    or a number of days since the trajectory's first post)."""
    if isinstance(at, (int, float, np.floating, np.integer)):
        target = float(at)
    else:
        at64 = np.datetime64(at, "us")
        first = traj.datetimes[0].astype("datetime64[us]")
        target = float((at64 - first) / np.timedelta64(1, "us")) / 86_400e6
    if target < float(traj.timestamps[-1]):
        raise ValueError(
            f"forecast time is before the last post of user {traj.user_id!r} "
            f"({target:.3f} < {float(traj.timestamps[-1]):.3f} days since the first post)"
        )
    n = traj.n_posts if max_len is None else min(traj.n_posts, max_len)
    e = torch.as_tensor(np.array(traj.embeddings[-n:], dtype=np.float32)).unsqueeze(0)
    t = torch.as_tensor(np.array(traj.timestamps[-n:], dtype=np.float64)).unsqueeze(0)
    out = model(e, t, torch.tensor([n]), torch.tensor([target], dtype=torch.float64))
    return out[0].numpy().astype(np.float32)


@dataclass(frozen=True)
class ForecastEvaluation:
    """Mean squared error (per dimension, averaged over users) of predicting each user's
    held-out last post, for the model and the two baselines; ``ratio_*`` = model / baseline."""

    n_users: int
    mse_model: float
    mse_last_value: float
    mse_linear: float
    seconds: float

    @property
    def ratio_last_value(self) -> float:
        return self.mse_model / self.mse_last_value if self.mse_last_value > 0 else math.nan

    @property
    def ratio_linear(self) -> float:
        return self.mse_model / self.mse_linear if self.mse_linear > 0 else math.nan

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ratio_last_value"] = self.ratio_last_value
        d["ratio_linear"] = self.ratio_linear
        return d


@torch.no_grad()
def evaluate_forecaster(model: LatentODEForecaster, ts: TrajectorySet, *, max_len: int | None = 64) -> ForecastEvaluation:
    """Predict every trajectory's last post (trajectories with >= 3 posts) from the posts
    before it; compare with last value and linear extrapolation of the last step."""
    start = time.perf_counter()
    errs = {"model": [], "last": [], "linear": []}
    for tr in ts:
        if tr.n_posts < 3:
            continue
        e, t = np.asarray(tr.embeddings, dtype=np.float64), np.asarray(tr.timestamps, dtype=np.float64)
        ctx = Trajectory(user_id=tr.user_id, embeddings=tr.embeddings[:-1], datetimes=tr.datetimes[:-1])
        pred = forecast(model, ctx, float(t[-1]) - float(t[0]), max_len=max_len).astype(np.float64)
        # ctx's timestamps are relative to the same first post, so ``t[-1] - t[0]`` is the target
        dt_prev = max(t[-2] - t[-3], 1.0 / 1440.0)
        linear = e[-2] + (e[-2] - e[-3]) / dt_prev * (t[-1] - t[-2])
        errs["model"].append(np.mean((pred - e[-1]) ** 2))
        errs["last"].append(np.mean((e[-2] - e[-1]) ** 2))
        errs["linear"].append(np.mean((linear - e[-1]) ** 2))
    if not errs["model"]:
        raise ValueError("evaluation needs trajectories with at least 3 posts")
    return ForecastEvaluation(
        n_users=len(errs["model"]),
        mse_model=float(np.mean(errs["model"])),
        mse_last_value=float(np.mean(errs["last"])),
        mse_linear=float(np.mean(errs["linear"])),
        seconds=time.perf_counter() - start,
    )


def save_forecaster(model: LatentODEForecaster, config: ForecastConfig, folder: str | Path) -> Path:
    """Write ``forecaster.json`` (config, dim) and ``forecaster.pt`` (state dict) atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, folder / "forecaster.pt")
    atomic_write_json(folder / "forecaster.json", {"dim": model.dim, "config": config.to_dict()})
    return folder


def load_forecaster(folder: str | Path) -> tuple[LatentODEForecaster, ForecastConfig]:
    """Inverse of :func:`save_forecaster` (weights loaded with ``weights_only=True``).

    Every failure (a missing, oversized or non-regular file, invalid JSON, a config of the
    wrong shape or types, weights that are not a state dict or do not fit) is a
    :class:`~cvx_core.learn.runs.RunError` naming the file."""
    from cvx_core.learn.runs import RunError, read_json

    folder = Path(folder)
    doc = read_json(folder / "forecaster.json")
    where = folder / "forecaster.json"
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict) or not isinstance(doc["config"].get("ode"), dict):
        raise RunError(f"{where}: not a CVX forecaster (expected an object with 'dim' and a 'config' object)")
    dim = doc.get("dim")
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= 1_000_000:
        raise RunError(f"{where}: 'dim' is {str(dim)[:40]!r}, expected a whole number of dimensions")
    try:
        cfg = ForecastConfig.from_dict(doc["config"])
        model = LatentODEForecaster(dim, cfg.ode)
    except (TypeError, ValueError, KeyError, OverflowError, RuntimeError, MemoryError) as exc:
        raise RunError(f"{where}: not a valid forecaster config ({type(exc).__name__}: {exc})") from None
    weights = folder / "forecaster.pt"
    if not weights.is_file():
        raise RunError(f"{weights}: missing or not a file (the forecaster's weights)")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt or foreign file
        raise RunError(f"{weights}: cannot load weights ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict):
        raise RunError(f"{weights}: holds a {type(state).__name__}, expected a state dict of tensors")
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        raise RunError(f"{weights}: weights do not match forecaster.json ({exc})") from None
    return model.eval(), cfg
