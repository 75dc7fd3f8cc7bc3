"""Synthetic trajectories with planted truth, for the shipped sample data and for tests.

The label depends on *how* a trajectory moves, not where it sits: every user changes at a
planted change point (a jump, then a steady drift), with the same magnitude in both
classes. Positive users (label 1) move along a fixed, known subset of dimensions (the
*planted dimensions*); negative users (label 0) move along a random subset of the other
dimensions, different for each user. Directions (signs) are random per user, so a user's
mean embedding says nothing linear about the label. Timestamps are irregular: bursts of
posts minutes apart, ordinary gaps of hours to days, and long silences of weeks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cvx_core.data.trajectory import Trajectory, TrajectorySet

__all__ = ["PlantedConfig", "make_planted_trajectory_set", "irregular_timestamps"]

_EPOCH = np.datetime64("2023-01-01T00:00:00", "us")


@dataclass(frozen=True)
class PlantedConfig:
    """Knobs of the planted-drift generator (defaults make the shipped sample).

    Attributes:
        n_users: number of users.
        dim: embedding dimension ``D``.
        n_planted: number of planted dimensions (and of moved dimensions for negatives).
        min_posts, max_posts: bounds of posts per user.
        mean_posts: mean posts per user (a shifted geometric law, clipped to the bounds).
        positive_fraction: share of users with label 1.
        n_topics: number of topic centres users are drawn around.
        topic_scale: per-dimension spread of topic centres.
        user_scale: per-dimension spread of a user's home point around its topic.
        noise: per-dimension noise of a post around the user's current point.
        jump: per-dimension size of the jump at the change point (on moved dimensions).
        drift: per-dimension drift accumulated from the change point to the last post.
    """

    n_users: int = 240
    dim: int = 384
    n_planted: int = 48
    min_posts: int = 5
    max_posts: int = 300
    mean_posts: float = 26.0
    positive_fraction: float = 0.5
    n_topics: int = 4
    topic_scale: float = 0.05
    user_scale: float = 0.02
    noise: float = 0.02
    jump: float = 0.06
    drift: float = 0.06


def irregular_timestamps(rng: np.random.Generator, n: int) -> np.ndarray:
    """``[n]`` float64 days from 0: bursts (minutes), ordinary gaps (hours-days), silences (weeks)."""
    kind = rng.choice(3, size=max(n - 1, 0), p=[0.25, 0.65, 0.10])
    gaps = np.where(
        kind == 0,
        rng.exponential(10.0 / 1440.0, size=kind.shape),  # burst: ~10 minutes
        np.where(kind == 1, rng.exponential(1.5, size=kind.shape), 10.0 + rng.exponential(14.0, size=kind.shape)),
    )
    return np.concatenate([[0.0], np.cumsum(gaps)])


def make_planted_trajectory_set(
    *,
    n_users: int = 240,
    dim: int = 384,
    seed: int = 0,
    config: PlantedConfig | None = None,
    name: str = "sample",
    with_text: bool = False,
) -> tuple[TrajectorySet, dict[str, Any]]:
    """Generate a labelled :class:`TrajectorySet` and its planted truth.

    Returns ``(trajectories, truth)`` where ``truth`` has ``planted_dims`` (sorted list),
    ``positive_label`` (1), ``change_points`` ({user_id: {"index", "datetime", "days"}}),
    ``moved_dims`` ({user_id: list}) and the generator settings.
    Embeddings are rounded to float16 precision (stored as float32) so the shipped file
    compresses well; the signal is far above that rounding.
    """
    cfg = config or PlantedConfig(n_users=n_users, dim=dim)
    if config is not None and (n_users != 240 or dim != 384):
        raise ValueError("pass n_users/dim inside config when config is given")
    if cfg.n_planted * 2 > cfg.dim:
        raise ValueError(f"n_planted={cfg.n_planted} too large for dim={cfg.dim}")
    rng = np.random.default_rng(seed)
    d = cfg.dim
    planted = np.sort(rng.choice(d, size=cfg.n_planted, replace=False))
    others = np.setdiff1d(np.arange(d), planted)
    topics = rng.normal(0.0, cfg.topic_scale, size=(cfg.n_topics, d))
    n_pos = int(round(cfg.positive_fraction * cfg.n_users))
    labels = np.array([1] * n_pos + [0] * (cfg.n_users - n_pos))
    rng.shuffle(labels)

    trajs: list[Trajectory] = []
    cps: dict[str, dict[str, Any]] = {}
    moved: dict[str, list[int]] = {}
    for u in range(cfg.n_users):
        uid = f"user_{u:04d}"
        p = 1.0 / max(cfg.mean_posts - cfg.min_posts, 1.0)
        n = int(np.clip(cfg.min_posts + rng.geometric(p) - 1, cfg.min_posts, cfg.max_posts))
        if u % 60 == 7:  # a few long-history users reach the upper bound
            n = int(rng.integers(cfg.max_posts // 2, cfg.max_posts + 1))
        t = np.round(irregular_timestamps(rng, n) * 86_400.0) / 86_400.0  # whole seconds
        home = topics[rng.integers(cfg.n_topics)] + rng.normal(0.0, cfg.user_scale, size=d)
        dims = planted if labels[u] == 1 else np.sort(rng.choice(others, size=cfg.n_planted, replace=False))
        sign = rng.choice([-1.0, 1.0], size=dims.size)
        cp = int(rng.integers(max(1, int(0.3 * n)), max(2, int(0.7 * n)) + 1)) if n >= 2 else 0
        cp = min(max(cp, 1), n - 1) if n >= 2 else 0
        e = home + rng.normal(0.0, cfg.noise, size=(n, d))
        if n >= 2:
            after = np.arange(n) >= cp
            span = max(t[-1] - t[cp], 1e-9)
            progress = np.clip((t - t[cp]) / span, 0.0, 1.0)
            shift = after[:, None] * (cfg.jump + cfg.drift * progress[:, None])
            e[:, dims] += shift * sign[None, :]
        e = e.astype(np.float16).astype(np.float32)
        secs = np.round(t * 86_400.0).astype(np.int64)
        start = _EPOCH + np.timedelta64(int(rng.integers(0, 180 * 86_400)), "s").astype("timedelta64[us]")
        dts = start + secs.astype("timedelta64[s]").astype("timedelta64[us]")
        texts = None
        if with_text:
            texts = tuple(f"post {i} of {uid}" for i in range(n))
        trajs.append(Trajectory(uid, e, dts, label=int(labels[u]), texts=texts))
        cps[uid] = {"index": cp, "datetime": str(dts[cp])[:26] if n >= 2 else None, "days": float(t[cp])}
        moved[uid] = [int(x) for x in dims]

    truth = {
        "description": (
            "Planted-drift sample: every user jumps then drifts after a change point; label 1 "
            "users move along planted_dims, label 0 users along random other dimensions."
        ),
        "seed": seed,
        "positive_label": 1,
        "planted_dims": [int(x) for x in planted],
        "change_points": cps,
        "moved_dims": moved,
        "generator": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
    }
    return TrajectorySet(trajs, name=name), truth


def rotating_trajectories(
    n_users: int = 200,
    *,
    dim: int = 64,
    n_posts: tuple[int, int] = (8, 24),
    period_days: float = 20.0,
    mean_gap_days: float = 3.0,
    noise: float = 0.01,
    seed: int = 0,
) -> TrajectorySet:
    """Trajectories driven by a known ODE: a rotation ``dz/dt = omega J z`` in one fixed 2-D
    subspace of ``R^dim`` (period ``period_days``), each user with a random position in the
    other dimensions, a random radius and phase, observed at irregular (exponential) gaps,
    plus Gaussian noise. The test bed of the latent-ODE forecaster."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(dim, 2)))
    omega = 2 * np.pi / period_days
    start = np.datetime64("2024-01-01T00:00:00", "us")
    trajs = []
    for u in range(n_users):
        t_count = int(rng.integers(n_posts[0], n_posts[1] + 1))
        gaps = rng.exponential(mean_gap_days, size=t_count - 1)
        t = np.concatenate([[0.0], np.cumsum(gaps)])
        radius, phase = rng.uniform(0.5, 1.5), rng.uniform(0, 2 * np.pi)
        centre = rng.normal(scale=0.3, size=dim)
        centre -= basis @ (basis.T @ centre)  # the rotation plane stays centred
        ang = omega * t + phase
        emb = centre + radius * (np.cos(ang)[:, None] * basis[:, 0] + np.sin(ang)[:, None] * basis[:, 1])
        emb += rng.normal(scale=noise, size=emb.shape)
        dts = start + (t * 86_400e6).astype("timedelta64[us]")
        trajs.append(Trajectory(user_id=f"rot_{u:04d}", embeddings=emb.astype(np.float32), datetimes=dts))
    return TrajectorySet(trajs, name="rotation")
