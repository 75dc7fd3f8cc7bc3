"""The change-point sensitivity an analyst picks on Explore: the calibrated scale of
``cvx_core.analysis.penalty`` (the false-alarm rate per user on histories without a change),
the :class:`ChangePointConfig` it makes, and the sentence that states it.

The choice is kept under a session key of its own (:data:`CHOSEN_KEY`, not the widget's key,
which Streamlit drops when the page is left), so the Train page's change-point downloads
follow the same value.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from cvx_core.analysis.changepoints import ChangePointConfig
from cvx_core.analysis.penalty import DEFAULT_SENSITIVITY, SENSITIVITIES, sensitivity_text

WIDGET_KEY = "explore_sensitivity"
CHOSEN_KEY = "cvx_sensitivity"
PARAM = "sensitivity"  # the address's query parameter of a shared Explore view
_RESTORED = "_cvx_sensitivity_restored"

__all__ = ["SENSITIVITIES", "DEFAULT_SENSITIVITY", "WIDGET_KEY", "CHOSEN_KEY", "PARAM", "current", "cp_config",
           "rate_text", "caption", "choose", "restore_from_address"]


def current() -> float:
    """The sensitivity chosen in this session (the library's default before any choice)."""
    value = st.session_state.get(CHOSEN_KEY, DEFAULT_SENSITIVITY)
    return float(value) if value in SENSITIVITIES else DEFAULT_SENSITIVITY


def restore_from_address() -> None:
    """Once per session, take the sensitivity from the address (``?sensitivity=0.2``) when it
    is one of :data:`SENSITIVITIES`; anything else is ignored, and later moves of the slider win."""
    if st.session_state.get(_RESTORED):
        return
    st.session_state[_RESTORED] = True
    try:
        value = float(st.query_params.get(PARAM))
    except (TypeError, ValueError):
        return
    if value in SENSITIVITIES:
        st.session_state[CHOSEN_KEY] = st.session_state[WIDGET_KEY] = value


def cp_config(sensitivity: float = DEFAULT_SENSITIVITY) -> ChangePointConfig:
    """The change-point options at ``sensitivity`` (every other option the library's default)."""
    return ChangePointConfig(sensitivity=float(sensitivity))


def rate_text(sensitivity: float) -> str:
    """``0.05`` -> ``"5%"`` (the slider's labels)."""
    return f"{sensitivity:.0%}"


def caption(sensitivity: float) -> str:
    """What the value means, in a sentence (no user text)."""
    return (f"{sensitivity_text(sensitivity)} Higher finds more, and weaker, change points; "
            f"default {rate_text(DEFAULT_SENSITIVITY)}.")


def choose(container: Any = st) -> float:
    """Draw the sensitivity slider in ``container``, keep the choice for the session, return it."""
    if st.session_state.get(WIDGET_KEY) not in SENSITIVITIES:
        st.session_state[WIDGET_KEY] = current()
    value = float(container.select_slider(
        "Change-point sensitivity", options=list(SENSITIVITIES), key=WIDGET_KEY, format_func=rate_text,
        help="The false-alarm rate per user on histories without a change: the change points, their words "
             "and the change-point exports follow it."))
    st.session_state[CHOSEN_KEY] = value
    return value
