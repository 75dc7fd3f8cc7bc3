"""Text for a terminal: control characters escaped as ``repr`` writes them.

Ids and post texts come from users' files; printed raw, an escape sequence in one of them
can set the window title, clear the screen or hide lines. :func:`escape_control` turns
every non-printable character (C0/C1 controls, DEL, bidirectional overrides, zero-width
and other format characters, line and paragraph separators) into its ``repr`` escape
(``\\x1b``, ``\\u202e``, ``\\n``); :class:`EscapingWriter` does the same to everything a
command prints, keeping only the line breaks and tabs the printer itself wrote.
"""

from __future__ import annotations

from typing import IO, Any

__all__ = ["escape_control", "escape_output", "json_safe", "EscapingWriter"]


def _escape_char(ch: str) -> str:
    return repr(ch)[1:-1]


def escape_control(text: str) -> str:
    """``text`` with every non-printable character (``str.isprintable`` false, which
    includes newlines and tabs) written as ``repr`` would; printable text is unchanged."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape_char(ch) for ch in text)


def escape_output(text: str) -> str:
    """:func:`escape_control` except for ``\\n`` and ``\\t`` (a printer's own layout)."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch in "\n\t" else _escape_char(ch) for ch in text)


def json_safe(text: str) -> str:
    """JSON text (from ``json.dumps(..., ensure_ascii=False)``) with every non-printable
    character written as a ``\\uXXXX`` escape (surrogate pairs above U+FFFF); structural
    newlines and indentation are kept. The result is the same JSON value."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable() or ch == "\n":  # a raw newline is layout: json.dumps escapes those in strings
            out.append(ch)
        else:
            cp = ord(ch)
            if cp > 0xFFFF:
                cp -= 0x10000
                out.append(f"\\u{0xD800 + (cp >> 10):04x}\\u{0xDC00 + (cp & 0x3FF):04x}")
            else:
                out.append(f"\\u{cp:04x}")
    return "".join(out)


class EscapingWriter:
    """A text stream that passes everything through :func:`escape_output` to ``stream``.

    ``sys.stdout = EscapingWriter(sys.stdout)`` makes every ``print`` terminal-safe."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(escape_output(text))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:  # encoding, isatty, fileno...
        return getattr(self._stream, name)
