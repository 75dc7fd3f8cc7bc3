"""Old names that still work: one module ``__getattr__`` (PEP 562) for every module that keeps
a deprecated name (``cvx_core``'s flat names, ``features.learnable``, ``sklearn``,
``scale.stream``, ``learn.runs``), so the warning and the refusal read the same everywhere.

In the lowest room (``data``) so that every module may use it::

    __getattr__ = deprecated_names(__name__, {"OldName": ("NewName", lambda: NewName)})

``cvx_core.features.learnable.OldName`` then returns ``NewName`` with the DeprecationWarning
"cvx_core.features.learnable.OldName is deprecated: use NewName"; any other unknown name is
the usual ``AttributeError``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["deprecated_names"]


def deprecated_names(module: str, names: Mapping[str, tuple[str, Callable[[], Any]]], *,
                     stacklevel: int = 2) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``module``: ``names[old] = (what to use instead, as the
    warning says it, a function returning the object)``. The object is looked up at each use
    (lazily: the new home may import torch) and the warning points at the caller's line
    (``stacklevel=3`` when a module's own ``__getattr__`` calls this one)."""

    def __getattr__(name: str) -> Any:
        if name in names:
            use, value = names[name]
            warnings.warn(f"{module}.{name} is deprecated: use {use}", DeprecationWarning, stacklevel=stacklevel)
            return value()
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    __getattr__.__qualname__ = f"{module}.__getattr__"
    return __getattr__
