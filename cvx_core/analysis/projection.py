"""2-D projections of every post of a dataset (PCA or UMAP), with a faithfulness figure,
an in-process cache, an optional disk cache, and progress for UMAP.

All posts of a :class:`TrajectorySet` are stacked in set order, each user's posts in time
order (``[N_posts, D]``), and projected to ``[N_posts, 2]``:

- ``"pca"`` (default): NumPy, exact and deterministic. The components come from the
  eigen-decomposition of the smaller of the ``D x D`` covariance and ``N x N`` Gram
  matrices; each component's sign is fixed so that its largest-magnitude loading is
  positive.
- ``"umap"``: umap-learn (imported only here). ``n_neighbors``, ``min_dist``, ``spread``,
  ``metric``, ``n_epochs`` and ``random_state`` are explicit; with ``random_state`` set the
  result is reproducible. The defaults (:data:`UMAP_DEFAULTS`) were chosen on the shipped
  sample (``benchmarks/bench_projection.py``, docs/app.md) so that one user's posts stay
  apart instead of collapsing onto a few positions (umap-learn's own defaults put 98% of
  consecutive posts of a user on the same spot). Datasets with more than ``max_fit`` posts
  are fitted on a seeded random subsample and the remaining posts placed with
  ``UMAP.transform``.

Every projection carries its **trustworthiness** (``sklearn.manifold.trustworthiness``,
Venna & Kaski): 1.0 when every post's ``k`` nearest neighbours in 2-D are also among its
nearest neighbours in the embedding space, lower when the picture invents neighbourhoods.
It is computed on a seeded subsample of at most :data:`TRUST_SAMPLE` posts (the exact
figure needs an ``N x N`` rank matrix).

Neighbours: for ``metric`` in :data:`EXACT_KNN_METRICS` and fits of at most ``max_fit``
posts, the ``n_neighbors`` nearest neighbours are exact (scikit-learn's brute-force
``NearestNeighbors``) and handed to umap-learn as ``precomputed_knn``. umap-learn would
otherwise use pynndescent above 4,096 points, whose numba functions take the distance
function as an argument and so are recompiled in every process (about 30 s of the
108-145 s a first UMAP on the sample took in a fresh process; numba's disk cache cannot
keep them). Exact neighbours take about a second on the sample (6,424 posts, D = 384).
Larger sets (subsample + ``UMAP.transform``) and other metrics still use pynndescent.

Numba: umap-learn compiles its layout and graph functions on first use in every process.
:func:`enable_numba_cache` turns on numba's on-disk cache for those it does not cache
itself, so that cost is paid once per machine (``NUMBA_CACHE_DIR``, or ``__pycache__``
beside umap-learn when that is writable), and :func:`warm_umap` compiles exactly the code
path :func:`project_posts` takes, on a tiny input (``make install-run`` runs it; the app
runs it at start in a child process, :func:`warm_umap_process`, then loads the result).
``benchmarks/bench_projection.py`` measures a fresh process before and after.

Results are cached in-process (bounded LRU, :data:`CACHE_SIZE` entries, thread-safe) under
``(TrajectorySet.digest(), method, parameters)``; with ``cache_dir`` they are also written
(atomically) to ``cache_dir/<digest>-<method>-<params hash>.npz`` and read back by later
processes, so a projection survives restarts.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cvx_core.data.atomic import atomic_replace
from cvx_core.data.trajectory import TrajectorySet

__all__ = [
    "Projection",
    "project_posts",
    "pca_2d",
    "projection_trustworthiness",
    "enable_numba_cache",
    "warm_umap",
    "warm_umap_process",
    "umap_cache_persisted",
    "exact_knn",
    "cached_projection",
    "clear_projection_cache",
    "CACHE_SIZE",
    "UMAP_DEFAULTS",
    "EXACT_KNN_METRICS",
    "TRUST_SAMPLE",
    "TRUST_NEIGHBORS",
]

CACHE_SIZE = 8
TRUST_SAMPLE = 1000  # 1000 posts: 0.4 s; 2000: 2.3 s (sklearn ranks all pairs)
TRUST_NEIGHBORS = 10
# chosen on the shipped sample (benchmarks/bench_projection.py): see the module doc
UMAP_DEFAULTS: dict[str, Any] = {
    "n_neighbors": 50,  # more than one user's posts (median 18 on the sample): users connect
    "min_dist": 0.99,  # posts of one user are kept at a visible distance from each other
    "spread": 1.0,
    "metric": "cosine",  # sentence embeddings
    "n_epochs": 200,  # umap-learn uses 500 below 10k points; 200 is the same picture, 2.5x faster
}
# metrics whose exact neighbours scikit-learn computes with the same meaning as umap-learn's
EXACT_KNN_METRICS = frozenset({"cosine", "euclidean", "manhattan", "chebyshev"})
_DISK_FORMAT = 2  # 2: exact neighbours (format 1 pictures came from approximate ones)
_cache: OrderedDict[tuple[Any, ...], Projection] = OrderedDict()
_lock = threading.Lock()

Progress = Callable[[int, int], None]


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
        trustworthiness: faithfulness of the 2-D neighbourhoods in ``[0, 1]`` (see the
            module doc; NaN when there are too few posts to measure it).
        trust_neighbors: the ``k`` of ``trustworthiness``.
        from_disk: True when this projection was read back from the disk cache.
    """

    coords: np.ndarray
    user_index: np.ndarray
    post_index: np.ndarray
    user_ids: tuple[str, ...]
    offsets: np.ndarray
    method: str
    params: dict[str, Any]
    explained_variance_ratio: tuple[float, float] | None = None
    trustworthiness: float = float("nan")
    trust_neighbors: int = 0
    from_disk: bool = False

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


def projection_trustworthiness(
    x: np.ndarray,
    coords: np.ndarray,
    *,
    n_neighbors: int = TRUST_NEIGHBORS,
    sample: int = TRUST_SAMPLE,
    seed: int = 0,
) -> float:
    """Trustworthiness of ``coords [N, 2]`` as a picture of ``x [N, D]``
    (``sklearn.manifold.trustworthiness``, euclidean), on a seeded subsample of at most
    ``sample`` rows. NaN when fewer than ``2 * n_neighbors + 2`` rows (undefined)."""
    from sklearn.manifold import trustworthiness

    x = np.asarray(x)
    coords = np.asarray(coords, dtype=np.float64)
    n = x.shape[0]
    k = int(n_neighbors)
    if n != coords.shape[0]:
        raise ValueError(f"x has {n} rows but coords {coords.shape[0]}")
    if n < 2 * k + 2:
        k = (n - 2) // 2
        if k < 1:
            return float("nan")
    rows = np.arange(n)
    if n > sample:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=int(sample), replace=False))
    return float(trustworthiness(np.asarray(x[rows], dtype=np.float64), coords[rows], n_neighbors=k))


_numba_cache_on = False


def enable_numba_cache() -> int:
    """Turn on numba's on-disk compile cache for umap-learn's jitted functions (those not
    already cached), so their compilation is paid once per machine rather than once per
    process. The cache lives where numba puts it (``NUMBA_CACHE_DIR`` or next to the
    package). Returns how many functions were switched; idempotent."""
    global _numba_cache_on
    import importlib

    from numba.core.dispatcher import Dispatcher

    count = 0
    with _lock:
        if _numba_cache_on:
            return 0
        for name in ("umap.umap_", "umap.layouts", "umap.spectral", "umap.utils", "umap.distances", "umap.sparse"):
            try:
                mod = importlib.import_module(name)
            except ImportError:
                continue
            for obj in list(vars(mod).values()):
                if isinstance(obj, Dispatcher) and type(obj._cache).__name__ == "NullCache":
                    try:
                        obj.enable_caching()
                        count += 1
                    except Exception:  # pragma: no cover - a function numba cannot cache
                        continue
        _numba_cache_on = True
    return count


def warm_umap(*, metric: str = UMAP_DEFAULTS["metric"]) -> float:
    """Compile the numba functions :func:`project_posts` uses for a UMAP (``metric`` and
    the seeded, single-thread layout) by projecting a tiny seeded input, with the disk cache
    on so that later processes load them instead. Returns the seconds it took."""
    import time

    t0 = time.perf_counter()
    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    _umap_2d(x, **{**UMAP_DEFAULTS, "metric": metric, "n_epochs": 5}, random_state=0, max_fit=20_000)
    return time.perf_counter() - t0


def warm_umap_process(*, niceness: int = 10) -> subprocess.Popen[str]:
    """Start :func:`warm_umap` in a child process at lowered priority (``os.nice``) and
    return it; it prints the seconds it took, then 1 if :func:`umap_cache_persisted` (else 0).
    A warm-up in its own process never holds this process's numba compiler lock, so nothing
    here (a training run loading the feature kernels) waits for its compiles; the compiled
    code reaches this process through the disk cache."""
    import sys

    code = ("import os, sys\n"
            f"os.nice({int(niceness)})\n"
            "from cvx_core.analysis.projection import umap_cache_persisted, warm_umap\n"
            "print(f'{warm_umap():.2f} {int(umap_cache_persisted())}')\n")
    root = Path(__file__).resolve().parents[2]  # this checkout's cvx_core comes first on the path
    return subprocess.Popen([sys.executable, "-W", "ignore", "-c", code], cwd=root, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def umap_cache_persisted() -> bool:
    """Whether numba's disk cache holds umap-learn's main compiled functions (an index file
    for each in its cache folder), so that a new process loads them instead of compiling.
    Meaningful after :func:`warm_umap` ran in this process."""
    import umap.layouts
    import umap.umap_

    fns = (umap.umap_.smooth_knn_dist, umap.umap_.compute_membership_strengths,
           umap.layouts._nb_optimize_layout_euclidean_single_epoch)
    for fn in fns:
        folder = getattr(fn.stats, "cache_path", None)
        if not folder or not any(Path(folder).glob(f"*.{fn.py_func.__name__}-*.nbi")):
            return False
    return True


def exact_knn(x: np.ndarray, k: int, *, metric: str = "cosine") -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest neighbours of every row of ``x [N, D]`` among all rows (itself
    included, as umap-learn expects), by brute force (scikit-learn). Returns
    (``[N, k]`` int32 indices, ``[N, k]`` float32 distances, ascending)."""
    from sklearn.neighbors import NearestNeighbors

    if metric not in EXACT_KNN_METRICS:
        raise ValueError(f"exact neighbours support {sorted(EXACT_KNN_METRICS)}, not {metric!r}")
    nn = NearestNeighbors(n_neighbors=int(k), algorithm="brute", metric=metric).fit(x)
    dist, idx = nn.kneighbors(x)
    dist = np.clip(dist, 0.0, None)  # float rounding: cosine distance of a row to itself
    return np.ascontiguousarray(idx, dtype=np.int32), np.ascontiguousarray(dist, dtype=np.float32)


class _EpochSink:
    """A file-like target for umap-learn's tqdm epoch bar: turns its ``"n total"`` writes into
    ``progress(done, 1000)`` calls over a fit's stages (neighbours and graph 0-30%, layout
    epochs 30-100%; a transform of the rest is the last 10% when there is one)."""

    def __init__(self, progress: Progress, lo: int, hi: int) -> None:
        self.progress, self.lo, self.hi = progress, lo, hi

    def write(self, text: str) -> int:
        parts = text.replace("\r", " ").split()
        nums = [int(p) for p in parts if p.isdigit()]
        if len(nums) >= 2 and nums[-1] > 0:
            done, total = nums[-2], nums[-1]
            self.progress(self.lo + (self.hi - self.lo) * min(done, total) // total, 1000)
        return len(text)

    def flush(self) -> None:
        pass


def _umap_2d(
    x: np.ndarray,
    *,
    n_neighbors: int,
    min_dist: float,
    spread: float,
    metric: str,
    n_epochs: int,
    random_state: int | None,
    max_fit: int,
    progress: Progress | None = None,
) -> np.ndarray:
    import umap  # lazy: heavy import and numba JIT

    enable_numba_cache()
    n = x.shape[0]
    if n < 4:
        return pca_2d(x)[0]
    nn = int(min(n_neighbors, n - 1))
    fit_hi = 1000 if n <= max_fit else 900

    def reducer(lo: int, hi: int, knn: tuple[np.ndarray, np.ndarray] | None = None) -> Any:
        tqdm_kwds: dict[str, Any] = {"disable": True}
        if progress is not None:
            # a report every 5% of the epochs, by count (not by clock, so a fast fit reports too)
            tqdm_kwds = {"disable": False, "file": _EpochSink(progress, lo, hi), "bar_format": "{n} {total}",
                         "mininterval": 0.0, "miniters": max(1, int(n_epochs) // 20), "ascii": True}
        return umap.UMAP(
            n_components=2,
            n_neighbors=nn,
            min_dist=min_dist,
            spread=spread,
            metric=metric,
            n_epochs=n_epochs,
            random_state=random_state,
            n_jobs=1 if random_state is not None else -1,  # umap-learn forces 1 with a seed
            init="spectral" if n > nn + 2 else "random",
            tqdm_kwds=tqdm_kwds,
            precomputed_knn=(None, None, None) if knn is None else (knn[0], knn[1], None),
        )

    if progress is not None:
        progress(0, 1000)
    if n <= max_fit and metric in EXACT_KNN_METRICS:
        knn = exact_knn(x, nn, metric=metric)
        if progress is not None:
            progress(100, 1000)
        with warnings.catch_warnings():  # "transform will be unavailable": it is not used here
            warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]", category=UserWarning)
            out = np.asarray(reducer(300, 1000, knn).fit_transform(x), dtype=np.float64)
    elif n <= max_fit:
        out = np.asarray(reducer(300, 1000).fit_transform(x), dtype=np.float64)
    else:
        rng = np.random.default_rng(0 if random_state is None else random_state)
        fit_rows = np.sort(rng.choice(n, size=max_fit, replace=False))
        out = np.empty((n, 2))
        red = reducer(300, fit_hi)
        out[fit_rows] = red.fit_transform(x[fit_rows])
        rest = np.setdiff1d(np.arange(n), fit_rows)
        if progress is not None:
            red.tqdm_kwds["file"] = _EpochSink(progress, fit_hi, 1000)
        out[rest] = red.transform(x[rest])
    if progress is not None:
        progress(1000, 1000)
    return out


def _disk_path(cache_dir: str | os.PathLike[str], digest: str, method: str, params: dict[str, Any]) -> Path:
    blob = json.dumps({"format": _DISK_FORMAT, **params}, sort_keys=True).encode()
    return Path(cache_dir) / f"{digest[:40]}-{method}-{hashlib.sha256(blob).hexdigest()[:16]}.npz"


def _read_disk(path: Path, n_posts: int) -> dict[str, Any] | None:
    """The cached arrays, or None when absent or unusable (wrong shape, damaged file)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            coords = np.asarray(z["coords"], dtype=np.float32)
            meta = np.asarray(z["meta"], dtype=np.float64)
    except (OSError, ValueError, KeyError, EOFError):
        return None
    if coords.shape != (n_posts, 2) or meta.shape != (4,) or not np.isfinite(coords).all():
        return None
    return {"coords": coords, "trust": float(meta[0]), "k": int(meta[1]), "ratio": (float(meta[2]), float(meta[3]))}


def _write_disk(path: Path, coords: np.ndarray, trust: float, k: int, ratio: tuple[float, float] | None) -> None:
    r = ratio if ratio is not None else (np.nan, np.nan)
    buf = io.BytesIO()
    np.savez(buf, coords=coords, meta=np.array([trust, k, r[0], r[1]], dtype=np.float64))
    atomic_replace(path, lambda fh: fh.write(buf.getvalue()))


def project_posts(
    trajectories: TrajectorySet,
    *,
    method: Literal["pca", "umap"] = "pca",
    n_neighbors: int = UMAP_DEFAULTS["n_neighbors"],
    min_dist: float = UMAP_DEFAULTS["min_dist"],
    spread: float = UMAP_DEFAULTS["spread"],
    metric: str = UMAP_DEFAULTS["metric"],
    n_epochs: int = UMAP_DEFAULTS["n_epochs"],
    random_state: int | None = 0,
    max_fit: int = 20_000,
    use_cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> Projection:
    """Project every post of ``trajectories`` to 2-D (see the module doc).

    UMAP-only options (``n_neighbors``, ``min_dist``, ``spread``, ``metric``, ``n_epochs``,
    ``random_state``, ``max_fit``) are ignored by PCA and not part of its cache key.
    ``cache_dir``: a folder for the disk cache (created when needed); ``None`` keeps the
    result in memory only. ``progress(done, total)`` is called as UMAP works (PCA calls it
    once at the end).
    """
    options = {
        "n_neighbors": n_neighbors, "min_dist": min_dist, "spread": spread, "metric": metric,
        "n_epochs": n_epochs, "random_state": random_state, "max_fit": max_fit,
    }
    proj = _project(trajectories, method, options, use_cache=use_cache, cache_dir=cache_dir, progress=progress)
    assert proj is not None
    return proj


def cached_projection(
    trajectories: TrajectorySet,
    *,
    method: Literal["pca", "umap"] = "pca",
    cache_dir: str | os.PathLike[str] | None = None,
    **options: Any,
) -> Projection | None:
    """The projection :func:`project_posts` would return, if it is already in the memory or
    disk cache (same ``options``); else ``None`` without computing anything."""
    kw = dict(_OPTION_DEFAULTS, **options)
    unknown = set(options) - set(_OPTION_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown projection options {sorted(unknown)}")
    return _project(trajectories, method, kw, use_cache=True, cache_dir=cache_dir, progress=None, cached_only=True)


_OPTION_DEFAULTS: dict[str, Any] = {**UMAP_DEFAULTS, "random_state": 0, "max_fit": 20_000}


def _checked_params(method: str, options: dict[str, Any]) -> dict[str, Any]:
    """The validated projection parameters of ``method`` (``{}`` for PCA; UMAP's options as
    plain numbers) that key the caches; a clear ``ValueError`` for a bad method or option."""
    n_neighbors, min_dist, spread = options["n_neighbors"], options["min_dist"], options["spread"]
    metric, n_epochs, random_state, max_fit = (
        options["metric"], options["n_epochs"], options["random_state"], options["max_fit"]
    )
    if method not in ("pca", "umap"):
        raise ValueError(f"method must be 'pca' or 'umap', got {method!r}")
    if method == "umap":
        if int(n_neighbors) < 2:
            raise ValueError("n_neighbors must be >= 2")
        if not (0.0 <= float(min_dist)):
            raise ValueError("min_dist must be >= 0")
        if not (float(spread) > 0.0 and float(min_dist) <= float(spread)):
            raise ValueError("spread must be > 0 and >= min_dist")
        if int(n_epochs) < 1:
            raise ValueError("n_epochs must be >= 1")
        if int(max_fit) < 4:
            raise ValueError("max_fit must be >= 4")
        return {
            "n_neighbors": int(n_neighbors),
            "min_dist": float(min_dist),
            "spread": float(spread),
            "metric": str(metric),
            "n_epochs": int(n_epochs),
            "random_state": None if random_state is None else int(random_state),
            "max_fit": int(max_fit),
        }
    return {}


def _project(
    trajectories: TrajectorySet,
    method: str,
    options: dict[str, Any],
    *,
    use_cache: bool,
    cache_dir: str | os.PathLike[str] | None,
    progress: Progress | None,
    cached_only: bool = False,
) -> Projection | None:
    params = _checked_params(method, options)
    digest = trajectories.digest()
    key = (digest, method, tuple(sorted(params.items())))
    if use_cache:
        with _lock:
            hit = _cache.get(key)
            if hit is not None:
                _cache.move_to_end(key)
                return hit

    disk = None if cache_dir is None else _disk_path(cache_dir, digest, method, params)
    x, user_index, post_index, offsets = _stack(trajectories)
    stored = None if disk is None else _read_disk(disk, x.shape[0])
    if stored is None and cached_only:
        return None
    if stored is not None:
        coords32 = stored["coords"]
        trust, k = stored["trust"], stored["k"]
        ratio = stored["ratio"] if method == "pca" else None
    else:
        ratio: tuple[float, float] | None = None
        if method == "pca":
            coords, ratio = pca_2d(x)
        else:
            coords = _umap_2d(x, **params, progress=progress)
        coords32 = np.ascontiguousarray(coords, dtype=np.float32)
        k = TRUST_NEIGHBORS
        trust = projection_trustworthiness(x, coords32, n_neighbors=k)
        if disk is not None:
            try:
                _write_disk(disk, coords32, trust, k, ratio)
            except OSError:
                pass  # a read-only cache folder costs a recomputation, nothing else
    if progress is not None:
        progress(1000, 1000)
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
        trustworthiness=float(trust),
        trust_neighbors=int(k),
        from_disk=stored is not None,
    )
    if use_cache:
        with _lock:
            _cache[key] = proj
            _cache.move_to_end(key)
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
    return proj


def clear_projection_cache() -> None:
    """Forget every projection cached in memory (the disk cache is left alone)."""
    with _lock:
        _cache.clear()
