"""Uploads of posts as text: recognise a table of texts without embeddings, embed it with the
packaged sentence encoder (``cvx_core.data.text.embed_posts``) through the workspace's
SQLite embedding cache, and save the result as a workspace dataset that keeps the texts.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from cvx_app.workspace import save_new_dataset, workspace_dir
from cvx_core.data.trajectory import TrajectoryError, TrajectorySet

CACHE_FILE = "embeddings.sqlite"


def embeddings_cache_path() -> Path:
    """``workspace_dir()/embeddings.sqlite``: vectors already computed are never recomputed."""
    return workspace_dir() / CACHE_FILE


def encoder_spec() -> str | None:
    """The encoder to use: ``$CVX_TEXT_ENCODER`` (a sentence-transformers model folder) or
    ``None`` for the packaged all-MiniLM-L6-v2."""
    return os.environ.get("CVX_TEXT_ENCODER", "").strip() or None


def is_text_table(data: bytes, filename: str) -> bool:
    """True when the upload is a valid table of posts with a ``text`` column and no
    embedding (the Data page then offers to embed it); False for anything else (the normal
    loader reports what is wrong with it)."""
    from cvx_core.data.io import read_posts

    try:
        posts = read_posts(data, name=Path(str(filename)).name, need_embeddings=False)
    except (TrajectoryError, ValueError, OSError):
        return False
    return posts.embeddings is None and posts.texts is not None


def import_texts(
    data: bytes, filename: str, *, progress: Callable[[int, int], None] | None = None,
    stage: Callable[[str], None] | None = None,
) -> tuple[str, TrajectorySet]:
    """Embed an uploaded table of texts and save it in the workspace as Parquet (atomically).

    Returns ``(dataset name, TrajectorySet)``; the set keeps the texts (and the upload's
    extra columns as metadata, when the data model keeps them). Raises
    :class:`TrajectoryError` (empty text cells, bad rows, a failing encoder) without
    touching the datasets; finished batches stay in the embedding cache. ``stage(text)`` is
    told each step of the one-time ONNX export of the encoder (tens of seconds) when it runs.
    """
    from cvx_core.data.text import embed_posts

    fname = Path(str(filename)).name
    ts = embed_posts(
        data, name=fname, encoder=encoder_spec(), cache=embeddings_cache_path(), progress=progress,
        stage=stage,
    )
    return save_new_dataset(ts, filename), ts  # claims the name exclusively (no upload race)
