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

import numbers
import os
import stat
import string
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
    "MIN_PERMUTATIONS",
    "budget",
    "text_char_budget",
    "truncate_text",
    "char_blocks",
    "check_dim",
    "check_permutations",
    "apply_posts_budget",
    "PostsBudgetWarning",
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
        if raw is None or raw.strip(string.whitespace) == "":
            return self.default
        text = raw.strip(string.whitespace)  # ASCII only: "500\u00a0" is refused, not read as 500
        if not (text.isascii() and text.isdigit()) or int(text) < self.minimum:
            raise BudgetError(f"environment variable {self.env}={raw!r}: expected a whole number >= {self.minimum}")
        return int(text)


CHARS_PER_TOKEN = Budget("characters per token of an encoder's window", 64, "CVX_CHARS_PER_TOKEN")
MAX_POSTS_PER_USER = Budget("posts per user in training", 512, "CVX_MAX_POSTS_PER_USER")
MAX_DIM = Budget("embedding dimension D", 131_072, "CVX_MAX_DIM")
MAX_JSON_MB = Budget("size of a JSON file in MiB", 64, "CVX_MAX_JSON_MB")
CHANGEPOINT_WINDOW = Budget("posts per user searched by exact PELT at once", 5_000, "CVX_CHANGEPOINT_WINDOW", 16)
MAX_PERMUTATIONS = Budget("permutations of a permutation test", 100_000, "CVX_MAX_PERMUTATIONS")
#: fewer permutations cannot resolve p-values near a 0.05 cut-off (the smallest is 1 / (n + 1))
MIN_PERMUTATIONS = 99

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


def char_blocks(text: str, size: int) -> list[str]:
    """``text`` cut into consecutive blocks of at most ``size`` characters (their
    concatenation is ``text``), each cut after the last whitespace in the block's second
    half when there is one. ``long_texts="chunk"`` tokenises a long text block by block, so
    no tokenizer call sees more than the character budget."""
    if size < 1:
        raise ValueError(f"block size must be >= 1, got {size}")
    blocks, start, n = [], 0, len(text)
    while n - start > size:
        end = start + size
        cut = max(text.rfind(" ", start + size // 2, end), text.rfind("\n", start + size // 2, end))
        end = cut + 1 if cut >= 0 else end
        blocks.append(text[start:end])
        start = end
    blocks.append(text[start:])
    return blocks


# -- sizes --------------------------------------------------------------------------------
def check_dim(dim: int, *, source: str) -> int:
    """``dim`` if within :data:`MAX_DIM`, else :class:`BudgetError` naming ``source``."""
    limit = MAX_DIM.value()
    if int(dim) > limit:
        raise BudgetError(f"{source}: embeddings have D={int(dim):,} dimensions, above the limit of {limit:,} "
                          f"({MAX_DIM.name}; set {MAX_DIM.env} to change it)")
    return int(dim)


class PostsBudgetWarning(UserWarning):
    """Training keeps each user's last posts within the posts-per-user budget."""


def apply_posts_budget(config: Any, lengths: Any) -> Any:
    """``config`` (anything with a ``max_len`` field, e.g. ``TrainConfig``) with ``max_len``
    set to :data:`MAX_POSTS_PER_USER` when it is unset and a user (``lengths``: posts per
    user) has more posts, with one :class:`PostsBudgetWarning` saying how many users were
    cut; unchanged otherwise. Bounds a padded training batch ``[B, T, D]`` whatever one
    user's history is (a 60k-post user padded a batch to 2.8 GiB)."""
    import warnings
    from dataclasses import replace

    import numpy as np

    lengths = np.asarray(lengths)
    budget = MAX_POSTS_PER_USER.value()
    if getattr(config, "max_len", 0) is not None or lengths.size == 0 or int(lengths.max()) <= budget:
        return config
    n_long = int((lengths > budget).sum())
    warnings.warn(f"{n_long} users have more than {budget} posts (longest {int(lengths.max())}); training keeps "
                  f"each user's last {budget} posts (set max_len, or {MAX_POSTS_PER_USER.env})",
                  PostsBudgetWarning, stacklevel=3)
    return replace(config, max_len=budget)


def check_permutations(n: Any, *, minimum: int = MIN_PERMUTATIONS) -> int:
    """``n`` as an int if it is a whole number from ``minimum`` (default
    :data:`MIN_PERMUTATIONS`) to :data:`MAX_PERMUTATIONS`'s current setting, else
    :class:`BudgetError` (a ValueError) naming the range and the variable. The one check of a
    permutation count (``cvx_core.learn.compare`` and the CLI use it)."""
    limit = MAX_PERMUTATIONS.value()
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not minimum <= n <= limit:
        raise BudgetError(
            f"permutations must be a whole number from {minimum} (the smallest p-value is 1/(n+1)) to {limit} "
            f"({MAX_PERMUTATIONS.env}; more only cost time), got {n!r}"
        )
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
    ``NaN`` / ``Infinity``, a number too large for a float (``1e400``), a key repeated in
    one object (which would silently keep the last value) and nesting too deep are a
    ``ValueError`` naming the file."""
    import json
    import math

    text = read_text_file(path, max_bytes=max_bytes, what=what)

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    def finite(literal: str) -> float:
        value = float(literal)
        if not math.isfinite(value):
            raise ValueError(f"the number {literal[:40]} is too large for a float")
        return value

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise ValueError(f"the key {key[:60]!r} appears twice in one object (which value is meant?)")
            out[key] = value
        return out

    try:
        return json.loads(text, parse_constant=no_constants, parse_float=finite, object_pairs_hook=unique_keys)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply") from None
