"""User text made inert: escaping for Markdown widgets and Plotly hover labels (user text is never rendered as markup), and CSV exports with spreadsheet formulas neutralised.
"""

from __future__ import annotations

import html
import re

import pandas as pd
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


# a cell a spreadsheet would run as a formula: it starts with = + - @, or with a tab or
# carriage return followed by one (OWASP "CSV injection")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def neutralise_cell(value: object) -> object:
    """A text ``value`` a spreadsheet would evaluate gets a leading apostrophe (shown as
    text, not run); every other value (numbers, dates, None, other text) is unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def neutralise_csv(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` safe to export as CSV: every text cell (and column name, and
    text index value) that starts like a formula (``=``, ``+``, ``-``, ``@``, tab, CR) is
    prefixed with ``'``. Numeric columns are untouched, so ``-1.5`` stays a number."""
    out = frame.copy()
    for col in out.columns:
        s = out[col]
        if s.dtype == object or pd.api.types.is_string_dtype(s.dtype):
            out[col] = s.map(neutralise_cell).astype(s.dtype if s.dtype == object else object)
    out.columns = [neutralise_cell(c) if isinstance(c, str) else c for c in out.columns]
    if out.index.dtype == object:
        out.index = pd.Index([neutralise_cell(v) for v in out.index], name=neutralise_cell(out.index.name))
    return out
