"""User text made inert: escaping for Markdown widgets and Plotly hover labels (user text is never rendered as markup).
"""

from __future__ import annotations

import html
import re

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&])")


def escape_markdown(text: object) -> str:
    """``text`` made inert for ``st.markdown``/``st.error``: every markdown or HTML special
    character is backslash-escaped, so user data (ids, file names) is shown literally."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))


def escape_hover(text: object) -> str:
    """``text`` made inert for Plotly hover labels (which understand a few HTML tags)."""
    return html.escape(str(text), quote=True)
