"""Strict reading of a config mapping (a JSON object) against a frozen dataclass.

Every config's ``from_dict`` goes through :func:`strict_fields` before the dataclass's own
range checks run, so a ``config.json`` (or ``--config`` file, or a dict handed to the
library) is held to its declared field types instead of being coerced:

- unknown keys are refused;
- ``bool`` fields take only ``true``/``false``; ``int`` fields only whole numbers (not a
  bool, not ``3.0``, not ``"3"``); ``float`` fields whole or decimal numbers that are
  finite (not a bool, not a string, not NaN or infinity); ``str`` fields only strings;
- ``Literal[...]`` fields one of their options; ``X | None`` fields ``null`` or an ``X``;
- ``tuple[float, ...]`` fields a list of such numbers; a nested dataclass field an object
  read by that dataclass's own ``from_dict`` (or an instance of it).

Every refusal is one ``ValueError`` line naming the class, the field and what was expected.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["strict_fields", "whole_number"]


class _Refused(Exception):
    """The value does not fit the annotation; ``args[0]`` says what was expected."""


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, (float, np.floating))) and not isinstance(v, (bool, np.bool_))


def _check(value: Any, hint: Any) -> Any:
    """``value`` checked against the type ``hint``; returns it (nested configs built)."""
    if hint is Any or hint is object:
        return value
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if value is None:
            if type(None) in args:
                return None
            raise _Refused(_expected(hint))
        for a in options:
            try:
                return _check(value, a)
            except _Refused:
                continue
        raise _Refused(_expected(hint))
    if origin is typing.Literal:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and value in args:
            return value
        raise _Refused(_expected(hint))
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Refused(_expected(hint))
        item = args[0] if args else Any
        return tuple(_check(v, item) for v in value)
    if hint is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        raise _Refused("true or false")
    if hint is int:
        if _is_int(value) and -(2**63) <= int(value) < 2**63:
            return int(value)
        raise _Refused("a whole number" + (" within 64 bits" if _is_int(value) else ""))
    if hint is float:
        try:
            ok = _is_number(value) and math.isfinite(float(value))
        except OverflowError:  # an integer beyond any float (10**400)
            ok = False
        if ok:
            return value
        raise _Refused("a finite number")
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Refused("a string")
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if isinstance(value, Mapping):
            reader = getattr(hint, "from_dict", None)
            return reader(dict(value)) if reader is not None else hint(**strict_fields(hint, value))
        raise _Refused(f"an object of {hint.__name__} fields")
    return value  # an annotation this reader does not know: the dataclass checks it


def _expected(hint: Any) -> str:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [_expected(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        inner = _expected(args[0]) if args else "value"
        return f"a list of {inner[2:] if inner.startswith('a ') else inner}s"
    names = {bool: "true or false", int: "a whole number", float: "a finite number", str: "a string"}
    if hint in names:
        return names[hint]
    return getattr(hint, "__name__", str(hint))


def strict_fields(cls: type, d: Any) -> dict[str, Any]:
    """The fields of ``d`` (a mapping) checked against dataclass ``cls``'s annotations.

    Returns a new dict ready for ``cls(**kw)`` (nested dataclass fields built, tuples from
    lists). Raises ``ValueError`` (one line) for a non-mapping, an unknown key or a value of
    the wrong type. Ranges (sizes >= 1, rates in (0, 1), ...) stay the dataclass's own
    ``__post_init__`` checks.
    """
    name = cls.__name__
    if not isinstance(d, Mapping):
        raise ValueError(f"{name}: expected an object of fields, got {_describe(d)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in d if k not in fields]
    if unknown:
        raise ValueError(f"unknown {name} fields: {sorted(map(str, unknown))} (known: {', '.join(fields)})")
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for key, value in d.items():
        if value is None and fields[key].default is None:
            out[key] = None  # "unset": the dataclass fills its default (e.g. a unit-dependent time)
            continue
        try:
            out[key] = _check(value, hints.get(key, Any))
        except _Refused as exc:
            raise ValueError(f"{name}.{key}: expected {exc.args[0]}, got {_describe(value)}") from None
    return out


def whole_number(name: str, value: Any, *, at_least: int) -> int:
    """``value`` as an ``int`` when it is a whole number (not a bool, not ``2.5``, not
    ``"3"``) of at least ``at_least``; else ``ValueError`` naming the option ``name``.
    The library's own size options (``chunk_users``, ``batch_rows``, ...) use it."""
    if not _is_int(value) or int(value) < at_least:
        raise ValueError(f"{name} must be a whole number >= {at_least}, got {_describe(value)}")
    return int(value)
