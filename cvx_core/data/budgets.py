"""Every documented budget of CVX in one place (docs/security.md, "Budgets").

Each budget has a default and an environment variable that changes it (read when the
budget is asked for, so a test or an operator can set it at run time). A value beyond a
budget is refused with a message that names the budget, the value, and how to change it;
text longer than its budget is cut (never refused).

=========================  ================================  ==========================
budget                     default                           environment variable
=========================  ================================  ==========================
characters per text        64 per token of the window         ``CVX_CHARS_PER_TOKEN``
posts per user (training)  512 (the last posts are kept)      ``CVX_MAX_POSTS_PER_USER``
embedding dimension D      131,072                            ``CVX_MAX_DIM``
JSON file size             64 MiB                             ``CVX_MAX_JSON_MB``
change points, exact PELT  5,000 moments per user (windowed   ``CVX_CHANGEPOINT_WINDOW``
                           above, in windows of that size)
permutations (compare)     100,000                            ``CVX_MAX_PERMUTATIONS``
Ray workers                the cluster's CPUs                 (``--workers``)
=========================  ================================  ==========================
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "Budget",
    "BudgetError",
    "BUDGETS",
    "CHARS_PER_TOKEN",
    "MAX_POSTS_PER_USER",
    "MAX_DIM",
    "MAX_JSON_MB",
    "CHANGEPOINT_WINDOW",
    "MAX_PERMUTATIONS",
    "budget",
    "text_char_budget",
    "truncate_text",
    "check_dim",
    "check_permutations",
    "cap_workers",
    "read_json_file",
    "read_text_file",
    "changepoint_windows",
]


class BudgetError(ValueError):
    """A value is beyond a documented budget; the message names the budget and its variable."""


@dataclass(frozen=True)
class Budget:
    """A documented limit: ``name`` (what it bounds), ``default``, ``env`` (the variable that
    changes it) and ``minimum`` (smallest accepted setting)."""

    name: str
    default: int
    env: str
    minimum: int = 1

    def value(self) -> int:
        """The current setting: ``env`` if set (a whole number >= ``minimum``), else the default."""
        raw = os.environ.get(self.env)
        if raw is None or raw.strip() == "":
            return self.default
        text = raw.strip()
        if not (text.isascii() and text.isdigit()) or int(text) < self.minimum:
            raise BudgetError(f"environment variable {self.env}={raw!r}: expected a whole number >= {self.minimum}")
        return int(text)


CHARS_PER_TOKEN = Budget("characters per token of an encoder's window", 64, "CVX_CHARS_PER_TOKEN")
MAX_POSTS_PER_USER = Budget("posts per user in training", 512, "CVX_MAX_POSTS_PER_USER")
MAX_DIM = Budget("embedding dimension D", 131_072, "CVX_MAX_DIM")
MAX_JSON_MB = Budget("size of a JSON file in MiB", 64, "CVX_MAX_JSON_MB")
CHANGEPOINT_WINDOW = Budget("posts per user searched by exact PELT at once", 5_000, "CVX_CHANGEPOINT_WINDOW", 16)
MAX_PERMUTATIONS = Budget("permutations of a permutation test", 100_000, "CVX_MAX_PERMUTATIONS")

#: every budget, for docs and tests
BUDGETS: tuple[Budget, ...] = (CHARS_PER_TOKEN, MAX_POSTS_PER_USER, MAX_DIM, MAX_JSON_MB, CHANGEPOINT_WINDOW,
                               MAX_PERMUTATIONS)


def budget(b: Budget) -> int:
    """``b.value()`` (the current setting of a budget)."""
    return b.value()


# -- text ---------------------------------------------------------------------------------
def text_char_budget(max_tokens: int) -> int:
    """Characters of a text kept before tokenising for a window of ``max_tokens`` tokens.

    A word-piece or BPE token spans a handful of characters; 64 per token (the default)
    keeps every text whose window is full of ordinary words, and bounds the tokenizer's
    work on a 10 MB post to a few kilobytes."""
    return int(max_tokens) * CHARS_PER_TOKEN.value()


def truncate_text(text: str, max_tokens: int) -> str:
    """``text`` cut to :func:`text_char_budget` characters (unchanged when shorter)."""
    limit = text_char_budget(max_tokens)
    return text if len(text) <= limit else text[:limit]


# -- sizes --------------------------------------------------------------------------------
def check_dim(dim: int, *, source: str) -> int:
    """``dim`` if within :data:`MAX_DIM`, else :class:`BudgetError` naming ``source``."""
    limit = MAX_DIM.value()
    if int(dim) > limit:
        raise BudgetError(f"{source}: embeddings have D={int(dim):,} dimensions, above the limit of {limit:,} "
                          f"({MAX_DIM.name}; set {MAX_DIM.env} to change it)")
    return int(dim)


def check_permutations(n: int, *, what: str = "--permutations") -> int:
    """``n`` if 1 <= n <= :data:`MAX_PERMUTATIONS`, else :class:`BudgetError`."""
    limit = MAX_PERMUTATIONS.value()
    if not 1 <= int(n) <= limit:
        raise BudgetError(f"{what} {n}: expected 1 to {limit:,} ({MAX_PERMUTATIONS.name}; set "
                          f"{MAX_PERMUTATIONS.env} to change it)")
    return int(n)


def cap_workers(workers: int | None, cpus: int) -> tuple[int, str | None]:
    """Ray workers to start on a cluster of ``cpus`` CPUs: ``min(workers, cpus)`` (``None``:
    all of them), with a note when the request was cut."""
    cpus = max(1, int(cpus))
    if workers is None:
        return cpus, None
    if int(workers) < 1:
        raise BudgetError(f"--workers {workers}: expected a whole number >= 1")
    if int(workers) > cpus:
        return cpus, f"--workers {int(workers)} is more than the cluster's {cpus} CPUs; using {cpus}"
    return int(workers), None


def changepoint_windows(n_posts: int, *, overlap: int | None = None) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` post ranges covering ``n_posts`` for change-point search on a
    very long user: one range up to :data:`CHANGEPOINT_WINDOW` posts, else windows of that
    size overlapping by ``overlap`` posts (default a tenth of the window), so a change near a
    window's edge is inside the next one. Exact PELT is quadratic in a window's posts, so the
    cost grows linearly with ``n_posts`` above the budget."""
    size = CHANGEPOINT_WINDOW.value()
    n = int(n_posts)
    if n <= size:
        return [(0, n)]
    lap = size // 10 if overlap is None else int(overlap)
    if not 0 <= lap < size:
        raise BudgetError(f"overlap {lap}: expected 0 to {size - 1} posts")
    step = size - lap
    out = []
    start = 0
    while True:
        stop = min(start + size, n)
        out.append((start, stop))
        if stop == n:
            return out
        start += step


# -- files read whole ---------------------------------------------------------------------
def read_text_file(path: str | os.PathLike[str], *, max_bytes: int | None = None, what: str = "file") -> str:
    """The UTF-8 text of a *regular* file of at most ``max_bytes`` (default the JSON budget).

    Refused, with a :class:`BudgetError` or ``ValueError`` naming the file: a folder, a FIFO,
    a device (``/dev/zero``, also through a symlink), a socket, a file over the budget, and
    text that is not UTF-8. The file is opened without blocking, so a FIFO never hangs."""
    p = Path(path)
    limit = MAX_JSON_MB.value() * 2**20 if max_bytes is None else int(max_bytes)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except IsADirectoryError:
        raise ValueError(f"{p}: is a folder, expected a {what}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ValueError(f"{p}: is a folder, expected a {what}")
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{p}: is not a regular file (a device, FIFO or socket), expected a {what}")
        if st.st_size > limit:
            raise BudgetError(f"{p}: {st.st_size:,} bytes, above the limit of {limit:,} bytes for a {what} "
                              f"(set {MAX_JSON_MB.env} to change it)")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            block = os.read(fd, min(1 << 20, limit + 1 - size))
            if not block:
                break
            chunks.append(block)
            size += len(block)
        if size > limit:  # grew while being read
            raise BudgetError(f"{p}: more than {limit:,} bytes, above the limit for a {what} "
                              f"(set {MAX_JSON_MB.env} to change it)")
    finally:
        os.close(fd)
    data = b"".join(chunks)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def read_json_file(path: str | os.PathLike[str], *, max_bytes: int | None = None, what: str = "JSON file") -> Any:
    """The value of a JSON file read with :func:`read_text_file`'s rules; invalid JSON,
    ``NaN`` / ``Infinity`` and nesting too deep are a ``ValueError`` naming the file."""
    import json

    text = read_text_file(path, max_bytes=max_bytes, what=what)

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(text, parse_constant=no_constants)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply") from None
