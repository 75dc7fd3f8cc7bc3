"""User text made inert: escaping for Markdown widgets and Plotly hover labels (user text is never rendered as markup).
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&])")


def escape_markdown(text: object) -> str:
    """``text`` made inert for ``st.markdown``/``st.error``: every markdown or HTML special
    character is backslash-escaped, so user data (ids, file names) is shown literally."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))


def escape_hover(text: object) -> str:
    """``text`` made inert for Plotly hover labels (which understand a few HTML tags)."""
    return html.escape(str(text), quote=True)


_CSV_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def neutralise_csv_cell(value: object) -> object:
    """A text cell that a spreadsheet would run as a formula (starting with ``= + - @``, a tab
    or a carriage return) gets a leading ``'``; other values are returned unchanged."""
    if isinstance(value, str) and value.startswith(_CSV_TRIGGERS):
        return "'" + value
    return value


def neutralise_csv(frame: "pd.DataFrame") -> "pd.DataFrame":
    """A copy of ``frame`` safe to open in a spreadsheet: every text cell (and column name)
    passes through :func:`neutralise_csv_cell`; numeric columns are left as numbers."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object or str(out[col].dtype) in ("string", "str"):
            out[col] = out[col].map(neutralise_csv_cell)
    out.columns = [neutralise_csv_cell(str(c)) for c in out.columns]
    return out
