"""Posts at reading size: a sentence or two of a long post around a change point's terms,
and that excerpt as inert Markdown with the terms highlighted (every character of the user's
text is escaped first, so nothing in it is ever rendered as markup or HTML).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from cvx_app.escape import escape_markdown

EXCERPT_CHARS = 280  # about two sentences
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")
_SPACE = re.compile(r"\s+")


def _term_pattern(terms: Sequence[str]) -> re.Pattern[str] | None:
    words = sorted({t.strip() for t in terms if t and t.strip()}, key=len, reverse=True)
    if not words:
        return None
    alternatives = "|".join(r"\s+".join(map(re.escape, w.split())) for w in words)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def excerpt(text: str, terms: Sequence[str] = (), *, max_chars: int = EXCERPT_CHARS) -> str:
    """A sentence or two of ``text`` (raw): starting at the first sentence that holds one of
    ``terms`` (case-insensitive, whole words), else at the start; cut at a word boundary
    near ``max_chars`` with "…" where text was left out."""
    flat = _SPACE.sub(" ", str(text)).strip()
    if len(flat) <= max_chars:
        return flat
    sentences = _SENTENCE_END.split(flat)
    pattern = _term_pattern(terms)
    start = 0
    if pattern is not None:
        start = next((i for i, s in enumerate(sentences) if pattern.search(s)), 0)
    out = ""
    for sentence in sentences[start:]:
        if out and len(out) + 1 + len(sentence) > max_chars:
            break
        out = f"{out} {sentence}".strip()
    if len(out) > max_chars:  # one very long sentence: cut it at a word boundary
        cut = out[:max_chars].rsplit(" ", 1)[0]
        out = cut if cut else out[:max_chars]
    lead = "… " if start > 0 else ""
    tail = " …" if not flat.endswith(out) else ""
    return f"{lead}{out}{tail}"


def highlight_markdown(text: str, terms: Sequence[str] = (), *, colour: str = "orange") -> str:
    """``text`` as Markdown that shows it literally, with each whole-word occurrence of
    ``terms`` on a ``colour`` background. Every piece of ``text`` passes through
    :func:`cvx_app.escape.escape_markdown` (brackets included, so a term cannot close the
    highlight early); only the highlight directive itself is markup."""
    pattern = _term_pattern(terms)
    if pattern is None:
        return escape_markdown(text)
    out, last = [], 0
    for match in pattern.finditer(text):
        out.append(escape_markdown(text[last:match.start()]))
        out.append(f":{colour}-background[{escape_markdown(match.group(0))}]")
        last = match.end()
    out.append(escape_markdown(text[last:]))
    return "".join(out)
