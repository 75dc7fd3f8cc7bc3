"""The persistent embedding cache: a SQLite file (WAL journal) keyed by ``(model_id,
max_tokens, sha256(text))``, holding float32 vectors ``[D]``.

Each :meth:`EmbeddingCache.put_many` is one transaction, so a killed run leaves every
finished batch and nothing half-written. Damaged state is a miss, never an error: an entry
of the wrong length, stored as text, cut short or non-finite is skipped and rewritten; a
damaged database (garbled pages, a foreign ``embeddings`` table) makes every lookup miss and
skips writes, with one :class:`CacheDamageWarning`. A file that is not SQLite at all is a
:class:`~cvx_core.data.trajectory.TrajectoryError` when opened.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from cvx_core.data.trajectory import TrajectoryError

__all__ = ["EmbeddingCache", "CacheStats", "CacheDamageWarning", "CacheLike", "text_sha256", "open_cache"]

class CacheDamageWarning(UserWarning):
    """The embedding cache database is damaged: its entries are misses, new ones are not saved."""





def text_sha256(text: str) -> str:
    """Hex sha256 of ``text`` encoded as UTF-8 (the cache's content address)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CacheStats:
    """What a cache holds and how it was used by this object.

    ``entries``: stored vectors (all models); ``models``: distinct ``(model_id,
    max_tokens)``; ``bytes``: database file size (plus WAL); ``hits`` / ``misses`` /
    ``writes``: counted by this :class:`EmbeddingCache` object since it was opened."""

    path: str
    entries: int
    models: int
    bytes: int
    hits: int
    misses: int
    writes: int

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    model_id   TEXT    NOT NULL,
    max_tokens INTEGER NOT NULL,
    text_sha   TEXT    NOT NULL,
    dim        INTEGER NOT NULL,
    vector     BLOB    NOT NULL,
    PRIMARY KEY (model_id, max_tokens, text_sha)
) WITHOUT ROWID
"""


class EmbeddingCache:
    """Persistent, content-addressed store of text embeddings (SQLite, WAL journal).

    Key: ``(model_id, max_tokens, sha256(text))``; value: a float32 vector ``[D]``. Safe to
    share between threads of one process (one connection behind a lock) and between
    processes (SQLite locking). Every :meth:`put_many` is one transaction.
    """

    _CHUNK = 500  # keys per SELECT (SQLite's bound-parameter limit is 999 on old builds)

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._hits = self._misses = self._writes = 0
        self._warned = False
        try:
            self._conn = sqlite3.connect(str(self.path), timeout=30.0, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise TrajectoryError(
                f"{self.path}: not a usable embedding cache ({exc}); expected an SQLite file written by "
                "cvx_core.EmbeddingCache (delete it to start a new cache)",
                file=str(self.path),
            ) from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> "EmbeddingCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.path)!r})"

    def get_many(self, model_id: str, max_tokens: int, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors among ``hashes`` (sha256 hex of texts): ``{hash: [D] float32}``.

        A damaged entry (a vector of the wrong length, stored as text, non-finite) is a miss
        and is rewritten; a damaged database (garbled pages, a foreign ``embeddings`` table)
        makes every lookup a miss, with one :class:`CacheDamageWarning`."""
        found: dict[str, np.ndarray] = {}
        uniq = list(dict.fromkeys(hashes))
        with self._lock:
            try:
                for i in range(0, len(uniq), self._CHUNK):
                    part = uniq[i : i + self._CHUNK]
                    marks = ",".join("?" * len(part))
                    rows = self._conn.execute(
                        f"SELECT text_sha, dim, vector FROM embeddings WHERE model_id = ? AND max_tokens = ? "
                        f"AND text_sha IN ({marks})",
                        (model_id, int(max_tokens), *part),
                    ).fetchall()
                    for sha, dim, blob in rows:
                        vec = _decode_vector(dim, blob)
                        if vec is not None and isinstance(sha, str):
                            found[sha] = vec
            except sqlite3.Error as exc:
                self._damaged(exc)
                found = {}
            self._hits += len(found)
            self._misses += len(uniq) - len(found)
        return found

    def _damaged(self, exc: BaseException) -> None:
        """Warn once that the database is damaged (lookups miss, writes are skipped)."""
        if not self._warned:
            self._warned = True
            warnings.warn(f"{self.path}: embedding cache damaged ({exc}); its entries are treated as misses and "
                          "new embeddings are not saved (delete the file to start a new cache)",
                          CacheDamageWarning, stacklevel=4)

    def put_many(self, model_id: str, max_tokens: int, items: Iterable[tuple[str, np.ndarray]]) -> int:
        """Store ``(hash, vector [D])`` pairs in one transaction; returns how many (0 when the
        database is damaged: the vectors are then not cached, with a warning)."""
        rows = []
        for sha, vec in items:
            v = np.ascontiguousarray(vec, dtype="<f4").reshape(-1)
            rows.append((model_id, int(max_tokens), sha, int(v.shape[0]), v.tobytes()))
        if not rows:
            return 0
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    self._conn.executemany(
                        "INSERT OR REPLACE INTO embeddings (model_id, max_tokens, text_sha, dim, vector) "
                        "VALUES (?, ?, ?, ?, ?)",
                        rows,
                    )
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    raise
                self._damaged(exc)
                return 0
            except sqlite3.DatabaseError as exc:
                self._damaged(exc)
                return 0
            self._writes += len(rows)
        return len(rows)

    def stats(self) -> CacheStats:
        with self._lock:
            entries = int(self._conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])
            models = int(
                self._conn.execute("SELECT COUNT(*) FROM (SELECT DISTINCT model_id, max_tokens FROM embeddings)").fetchone()[0]
            )
            hits, misses, writes = self._hits, self._misses, self._writes
        size = sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())
        return CacheStats(str(self.path), entries, models, size, hits, misses, writes)


CacheLike = Union[EmbeddingCache, str, os.PathLike, None]


def _decode_vector(dim: Any, blob: Any) -> np.ndarray | None:
    """A cached ``[D]`` float32 vector, or None for a damaged entry (wrong type, cut short,
    wrong length, non-finite)."""
    if not isinstance(blob, bytes) or isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        return None
    if len(blob) != 4 * dim:
        return None
    vec = np.frombuffer(blob, dtype="<f4")
    if not np.isfinite(vec).all():
        return None
    return vec.astype(np.float32)


def open_cache(cache: CacheLike) -> tuple[EmbeddingCache | None, bool]:
    """``(cache, owned)``: an :class:`EmbeddingCache` for a path (owned: the caller closes it),
    the cache itself, or None."""
    if cache is None or isinstance(cache, EmbeddingCache):
        return cache, False
    return EmbeddingCache(cache), True
