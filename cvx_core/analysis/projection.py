"""2-D projections of every post of a dataset (PCA or UMAP), fitted once and cached.

All posts of a :class:`TrajectorySet` are stacked in set order, each user's posts in time
order (``[N_posts, D]``), and projected to ``[N_posts, 2]``:

- ``"pca"`` (default): NumPy, exact and deterministic. The components come from the
  eigen-decomposition of the smaller of the ``D x D`` covariance and ``N x N`` Gram
  matrices; each component's sign is fixed so that its largest-magnitude loading is
  positive.
- ``"umap"``: umap-learn (imported only here; its first call in a process pays numba's JIT,
  10-30 s). ``n_neighbors``, ``min_dist``, ``metric`` and ``random_state`` are explicit;
  with ``random_state`` set the result is reproducible. Datasets with more than
  ``max_fit`` posts are fitted on a seeded random subsample of ``max_fit`` posts and the
  remaining posts are placed with ``UMAP.transform``.

Results are cached in-process (bounded LRU, :data:`CACHE_SIZE` entries, thread-safe) under
``(TrajectorySet.digest(), method, parameters)``: a second call with the same data and
parameters returns the same :class:`Projection` object without recomputing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from cvx_core.data.trajectory import TrajectorySet

__all__ = ["Projection", "project_posts", "pca_2d", "clear_projection_cache", "CACHE_SIZE"]

CACHE_SIZE = 8
_cache: "OrderedDict[tuple[Any, ...], Projection]" = OrderedDict()
_lock = threading.Lock()


@dataclass(frozen=True, eq=False)
class Projection:
    """One 2-D point per post.

    Attributes:
        coords: ``[N_posts, 2]`` float32.
        user_index: ``[N_posts]`` int64, the row's user (position in ``user_ids``).
        post_index: ``[N_posts]`` int64, the row's post within its user (time order).
        user_ids: the ``N_users`` user ids, in the set's order.
        offsets: ``[N_users + 1]`` int64; user u's rows are ``offsets[u]:offsets[u+1]``.
        method: ``"pca"`` or ``"umap"``.
        params: the parameters used (for display and the cache key).
        explained_variance_ratio: ``(r1, r2)`` for PCA, ``None`` for UMAP.
    """

    coords: np.ndarray
    user_index: np.ndarray
    post_index: np.ndarray
    user_ids: tuple[str, ...]
    offsets: np.ndarray
    method: str
    params: dict[str, Any]
    explained_variance_ratio: tuple[float, float] | None = None

    @property
    def n_points(self) -> int:
        return int(self.coords.shape[0])

    @property
    def row_user_ids(self) -> np.ndarray:
        """``[N_posts]`` the user id of each row (object array)."""
        return np.asarray(self.user_ids, dtype=object)[self.user_index]

    def rows(self, user_id: str) -> slice:
        """The rows of one user (time order)."""
        try:
            u = self.user_ids.index(str(user_id))
        except ValueError:
            raise KeyError(f"no user {user_id!r} in this projection") from None
        return slice(int(self.offsets[u]), int(self.offsets[u + 1]))

    def path(self, user_id: str) -> np.ndarray:
        """``[T, 2]`` the user's posts in time order."""
        return self.coords[self.rows(user_id)]

    def changepoint_positions(self, user_id: str, indices: Any) -> np.ndarray:
        """``[K, 2]`` positions on the user's path of posts ``indices`` (e.g. the change
        points' first posts, ``ChangePointResult.indices``)."""
        path = self.path(user_id)
        idx = np.asarray(list(getattr(indices, "indices", indices)), dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= path.shape[0]):
            raise IndexError(f"post indices {idx.tolist()} out of range for {path.shape[0]} posts")
        return path[idx]


def _stack(ts: TrajectorySet) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    lengths = ts.lengths
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    x = np.concatenate([tr.embeddings for tr in ts], axis=0)  # float32
    user_index = np.repeat(np.arange(len(ts), dtype=np.int64), lengths)
    post_index = np.arange(int(offsets[-1]), dtype=np.int64) - offsets[user_index]
    return x, user_index, post_index, offsets


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """``[N, D]`` -> (``[N, 2]`` scores on the top two principal components, explained
    variance ratios). Deterministic signs; missing components (N < 2 or rank < 2) are 0.

    Large inputs (``N >= D``) stay in their float dtype (float32 embeddings: float32
    centring and covariance product, float64 eigen-decomposition)."""
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    n, d = x.shape
    out = np.zeros((n, 2))
    if n < 2:
        return out, (0.0, 0.0)
    centred = x - x.mean(axis=0, dtype=np.float64).astype(x.dtype)
    if n >= d:
        cov = np.asarray(centred.T @ centred, dtype=np.float64)
        cov = 0.5 * (cov + cov.T)
        total = float(np.trace(cov))
        w, v = np.linalg.eigh(cov)
        order = np.argsort(-w, kind="stable")[:2]
        w, comps = np.clip(w[order], 0.0, None), v[:, order]  # [D, k]
    else:
        centred = centred.astype(np.float64)
        gram = centred @ centred.T
        total = float(np.trace(gram))
        w, u = np.linalg.eigh(gram)
        order = np.argsort(-w, kind="stable")[:2]
        w, u = np.clip(w[order], 0.0, None), u[:, order]
        comps = centred.T @ u / np.sqrt(np.maximum(w, 1e-300))[None, :]
    if total <= 0.0:
        return out, (0.0, 0.0)
    k = comps.shape[1]
    for j in range(k):
        if w[j] <= 1e-12 * total:
            comps[:, j] = 0.0
            continue
        c = comps[:, j]
        if c[int(np.argmax(np.abs(c)))] < 0:
            comps[:, j] = -c
    out[:, :k] = centred @ comps.astype(centred.dtype)
    ratios = [float(w[j] / total) if j < k else 0.0 for j in range(2)]
    return out, (ratios[0], ratios[1])


def _umap_2d(
    x: np.ndarray, *, n_neighbors: int, min_dist: float, metric: str, random_state: int | None, max_fit: int
) -> np.ndarray:
    import umap  # lazy: heavy import and numba JIT

    n = x.shape[0]
    if n < 4:
        return pca_2d(x)[0]
    nn = int(min(n_neighbors, n - 1))
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=nn,
        min_dist=min_dist,
        metric=metric,
        random_state=random_state,
        n_jobs=1 if random_state is not None else -1,  # umap-learn forces 1 with a seed
        init="spectral" if n > nn + 2 else "random",
    )
    if n <= max_fit:
        return np.asarray(reducer.fit_transform(x), dtype=np.float64)
    rng = np.random.default_rng(0 if random_state is None else random_state)
    fit_rows = np.sort(rng.choice(n, size=max_fit, replace=False))
    out = np.empty((n, 2))
    out[fit_rows] = reducer.fit_transform(x[fit_rows])
    rest = np.setdiff1d(np.arange(n), fit_rows)
    out[rest] = reducer.transform(x[rest])
    return out


def project_posts(
    trajectories: TrajectorySet,
    *,
    method: Literal["pca", "umap"] = "pca",
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "euclidean",
    random_state: int | None = 0,
    max_fit: int = 20_000,
    use_cache: bool = True,
) -> Projection:
    """Project every post of ``trajectories`` to 2-D (see the module doc).

    UMAP-only options (``n_neighbors``, ``min_dist``, ``metric``, ``random_state``,
    ``max_fit``) are ignored by PCA and not part of its cache key.
    """
    if method not in ("pca", "umap"):
        raise ValueError(f"method must be 'pca' or 'umap', got {method!r}")
    if method == "umap":
        if int(n_neighbors) < 2:
            raise ValueError("n_neighbors must be >= 2")
        if not (0.0 <= float(min_dist)):
            raise ValueError("min_dist must be >= 0")
        if int(max_fit) < 4:
            raise ValueError("max_fit must be >= 4")
        params: dict[str, Any] = {
            "n_neighbors": int(n_neighbors),
            "min_dist": float(min_dist),
            "metric": str(metric),
            "random_state": None if random_state is None else int(random_state),
            "max_fit": int(max_fit),
        }
    else:
        params = {}
    key = (trajectories.digest(), method, tuple(sorted(params.items())))
    if use_cache:
        with _lock:
            hit = _cache.get(key)
            if hit is not None:
                _cache.move_to_end(key)
                return hit

    x, user_index, post_index, offsets = _stack(trajectories)
    ratio: tuple[float, float] | None = None
    if method == "pca":
        coords, ratio = pca_2d(x)
    else:
        coords = _umap_2d(x, **params)
    coords32 = np.ascontiguousarray(coords, dtype=np.float32)
    for arr in (coords32, user_index, post_index, offsets):
        arr.setflags(write=False)
    proj = Projection(
        coords=coords32,
        user_index=user_index,
        post_index=post_index,
        user_ids=tuple(trajectories.user_ids),
        offsets=offsets,
        method=method,
        params=params,
        explained_variance_ratio=ratio,
    )
    if use_cache:
        with _lock:
            _cache[key] = proj
            _cache.move_to_end(key)
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
    return proj


def clear_projection_cache() -> None:
    """Forget every cached projection."""
    with _lock:
        _cache.clear()
