"""A view that can be shared: a page's choices (projection, colour, user, dataset, run) kept
in the address's query parameters and restored when the address is opened.

``restore`` copies valid parameters into the widgets' session keys once per session and
page (so later clicks win over the address); ``publish`` writes the current choices back.
Values are checked against the options a widget offers: an unknown value is ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import streamlit as st

_RESTORED = "_cvx_share_restored"


def restore(page: str, params: Mapping[str, tuple[str, Iterable[str]]]) -> list[str]:
    """For each ``param -> (session key, allowed values)``, set the session key from the
    address's query parameter when it is an allowed value, once per session and ``page``.
    Returns the parameters that were applied."""
    done = st.session_state.setdefault(_RESTORED, set())
    if page in done:
        return []
    done.add(page)
    applied = []
    for param, (key, allowed) in params.items():
        value = st.query_params.get(param)
        if value is not None and value in set(allowed):
            st.session_state[key] = value
            applied.append(param)
    return applied


def publish(values: Mapping[str, str | None]) -> None:
    """Write ``param -> value`` into the address (``None`` removes the parameter); only
    changed parameters are written, so an unchanged view does not touch the history."""
    for param, value in values.items():
        if value is None:
            if param in st.query_params:
                del st.query_params[param]
        elif st.query_params.get(param) != str(value):
            st.query_params[param] = str(value)
