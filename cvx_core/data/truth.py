"""Planted truth files (``truth.json`` of synthetic data): read strictly.

``planted_dims`` must be a JSON list of integers ``>= 0`` (the embedding dimensions the
generator moved): ``0.9``, ``1.0``, ``true`` or ``"3"`` are refused, never rounded.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cvx_core.data.trajectory import TrajectoryError

__all__ = ["read_planted_dims", "planted_dims_of", "MAX_TRUTH_BYTES"]

MAX_TRUTH_BYTES = 16 << 20  # a truth file is a few hundred bytes; more is not a truth file


def planted_dims_of(doc: object, *, source: str) -> list[int]:
    """``doc["planted_dims"]`` as a list of integers ``>= 0``; anything else is refused."""
    if not isinstance(doc, dict) or "planted_dims" not in doc:
        raise TrajectoryError(f"{source}: no 'planted_dims' key; expected a JSON object with 'planted_dims': [3, 17, …]",
                              file=source, column="planted_dims")
    dims = doc["planted_dims"]
    if not isinstance(dims, list) or not dims:
        raise TrajectoryError(f"{source}: 'planted_dims' is {dims!r:.40}; expected a non-empty list of integers",
                              file=source, column="planted_dims")
    for k, d in enumerate(dims):
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise TrajectoryError(
                f"{source}: 'planted_dims' position {k} is {d!r:.40}; expected integers >= 0 (dimension indices, "
                "never rounded)",
                file=source,
                column="planted_dims",
            )
    return [int(d) for d in dims]


def read_planted_dims(path: str | os.PathLike) -> list[int]:
    """The ``planted_dims`` of the truth file at ``path`` (a regular file of at most
    :data:`MAX_TRUTH_BYTES`, strict UTF-8 JSON)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise TrajectoryError(f"{p}: cannot read the truth file ({exc.strerror})", file=str(p)) from None
    if not stat.S_ISREG(st.st_mode):
        raise TrajectoryError(f"{p}: not a regular file; expected a truth.json file", file=str(p))
    if st.st_size > MAX_TRUTH_BYTES:
        raise TrajectoryError(f"{p}: {st.st_size} bytes, over the {MAX_TRUTH_BYTES} bytes a truth file may have",
                              file=str(p))
    from cvx_core.data.budgets import read_json_file  # strict: no NaN, no repeated keys, bounded nesting

    try:
        doc = read_json_file(p, max_bytes=MAX_TRUTH_BYTES, what="truth file")
    except (UnicodeDecodeError, ValueError, RecursionError, OSError) as exc:
        msg = str(exc).removeprefix(f"{p}: ")
        raise TrajectoryError(f"{p}: not a readable JSON file ({msg.splitlines()[0]:.120})", file=str(p)) from None
    return planted_dims_of(doc, source=str(p))
