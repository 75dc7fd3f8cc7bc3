"""Where CVX keeps what it can rebuild: the platform's per-user cache directory.

``CVX_CACHE_DIR`` overrides it (tests and shared machines); otherwise
``platformdirs.user_cache_dir("cvx")`` (``~/.cache/cvx`` on Linux). Holds the default
embedding cache of ``python -m cvx_core embed`` and the locally exported ONNX encoders.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_cache_dir", "default_embedding_cache"]


def default_cache_dir() -> Path:
    """The per-user cache directory (not created here)."""
    env = os.environ.get("CVX_CACHE_DIR", "").strip()
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("cvx", appauthor=False))


def default_embedding_cache() -> Path:
    """The SQLite embedding cache ``embed`` uses unless told otherwise."""
    return default_cache_dir() / "embeddings.sqlite"
