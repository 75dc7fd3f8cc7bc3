"""The command line's shared defences: option types that refuse bad values in argparse,
path checks (inputs are regular files, outputs never resolve to inputs), and the one place
that turns every failure into one line on stderr.

Option types (``type=`` of ``add_argument``) take ASCII digits only: ``int_in(1, 4096)``
refuses ``0``, ``-1``, ``1e8``, ``٣`` and anything beyond the bound; ``float_in`` refuses
NaN, infinities and values out of range. :func:`report_failure` maps an exception to
``(exit status, one line)``: ``TrajectoryError`` / ``RunError`` / ``ValueError`` and friends
say their own message, ``OSError`` says "disk full", "read-only file system" or
"permission denied" with the path, ``MemoryError`` says what ran out, anything else is an
"internal error" line (``CVX_DEBUG=1`` re-raises it for the traceback).

The forecast's plain-text report lives here too (:func:`forecast_lines`), to keep
``cli.py`` to its commands.
"""

from __future__ import annotations

import argparse
import math
import os
import stat
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from cvx_core.data.terminal import EscapingWriter, escape_control

__all__ = [
    "forecast_lines",
    "int_in",
    "float_in",
    "check_input_file",
    "check_outputs",
    "check_json_fields",
    "report_failure",
    "terminal_safe_output",
    "one_line_warnings",
    "run_command",
    "refuse_bare_separators",
]


def _ascii_number(text: str) -> bool:
    return text.isascii() and text.strip() == text and text != ""


def int_in(lo: int, hi: int | Callable[[], int]) -> Callable[[str], int]:
    """An argparse type: a whole number in ``[lo, hi]`` written in ASCII digits (``hi`` may be
    a function, read when the option is parsed: an environment-configured budget)."""

    def parse(text: str) -> int:
        top = hi() if callable(hi) else hi
        body = text[1:] if text.startswith(("-", "+")) else text
        if not (_ascii_number(text) and body.isdigit()):
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number (expected {lo} to {top:,})")
        value = int(text)
        if not lo <= value <= top:
            raise argparse.ArgumentTypeError(f"{value} is out of range (expected {lo} to {top:,})")
        return value

    parse.__name__ = "whole number"
    return parse


def float_in(lo: float, hi: float, *, lo_open: bool = True) -> Callable[[str], float]:
    """An argparse type: a finite number in ``(lo, hi]`` (``[lo, hi]`` with ``lo_open=False``),
    ASCII only (no NaN, no infinity, no Unicode digits)."""

    def parse(text: str) -> float:
        try:
            if not _ascii_number(text):
                raise ValueError(text)
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        low_ok = value > lo if lo_open else value >= lo
        if not math.isfinite(value) or not low_ok or value > hi:
            side = "(" if lo_open else "["
            raise argparse.ArgumentTypeError(f"{text} is out of range (expected a number in {side}{lo:g}, {hi:g}])")
        return value

    parse.__name__ = "number"
    return parse


def refuse_bare_separators(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """argparse drops a value of ``--`` (``--epochs=--``) and stores ``[]`` without calling
    the option's type; such a value is refused like any other bad value (exit 2)."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sp = sub.choices[args.command]
    for action in sp._actions:
        if action.option_strings and action.nargs is None and isinstance(getattr(args, action.dest, None), list):
            sp.error(f"argument {'/'.join(action.option_strings)}: expected one value, got '--'")


# -- paths --------------------------------------------------------------------------------
def check_input_file(path: str | os.PathLike[str] | None, *, what: str = "input") -> None:
    """Refuse (``ValueError``) an input that is missing, or is not a regular file or folder
    (a device such as ``/dev/zero``, also through a symlink; a FIFO; a socket)."""
    if path is None:
        return
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file ({what})") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror})") from None
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise ValueError(f"{path}: not a regular file (a device, FIFO or socket); expected a {what}")


def check_outputs(outputs: Sequence[tuple[str | os.PathLike[str] | None, str, bool]],
                  inputs: Sequence[str | os.PathLike[str] | None]) -> None:
    """Refuse outputs ``(path, option name, is_folder)`` that resolve to an input or to each
    other, a file output that is a folder and a folder output that is a file
    (:func:`cvx_core.data.atomic.check_output`)."""
    from cvx_core.data.atomic import check_output

    given = [(p, name, folder) for p, name, folder in outputs if p is not None]
    for i, (p, name, folder) in enumerate(given):
        others = [q for j, (q, _, f) in enumerate(given) if j != i and not f]
        check_output(p, [*inputs, *others], what=name, folder=folder)


def check_json_fields(doc: dict[str, Any], cls: type, *, source: str) -> None:
    """Refuse (``ValueError`` naming ``source`` and the field) an unknown field or a JSON
    value whose type does not match the dataclass field it sets (numbers for ``float``,
    never ``true`` or NaN; whole numbers for ``int``; ``true``/``false`` for ``bool``; text
    for ``str``; a list of numbers for ``tuple[float, ...]``; ``null`` only where the field
    may be ``None``): :func:`cvx_core.data.strict.strict_fields`, the rule every config's
    ``from_dict`` applies."""
    from cvx_core.data.strict import strict_fields

    try:
        strict_fields(cls, doc)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None


# -- failures -------------------------------------------------------------------------------
def report_failure(exc: BaseException) -> tuple[int, str]:
    """``(exit status, one line)`` for a failure of a command (see the module docstring)."""
    from cvx_core.data.atomic import describe_os_error
    from cvx_core.data.trajectory import TrajectoryError
    from cvx_core.learn.config import DeviceUnavailableError
    from cvx_core.learn.runs import RunError

    if isinstance(exc, KeyboardInterrupt):
        return 130, "interrupted"
    if isinstance(exc, (TrajectoryError, RunError, DeviceUnavailableError, ValueError, ImportError)):
        return 2, _one_line(str(exc) or type(exc).__name__)
    if isinstance(exc, OSError):
        return 2, _one_line(describe_os_error(exc))
    if isinstance(exc, MemoryError):
        return 2, ("out of memory (the input or an option asks for more memory than this machine has: "
                   "lower --batch-size, --max-len or --chunk-users, or see docs/security.md, Budgets)")
    if isinstance(exc, RecursionError):
        return 2, "input nested too deeply"
    if os.environ.get("CVX_DEBUG"):
        raise exc
    return 1, _one_line(f"internal error ({type(exc).__name__}: {exc}); set CVX_DEBUG=1 to see the traceback")


def _one_line(text: str) -> str:
    first = " ".join(str(text).split("\n"))
    return escape_control(first if len(first) <= 2000 else first[:1999] + "…")


@contextmanager
def terminal_safe_output() -> Iterator[None]:
    """Route ``sys.stdout`` / ``sys.stderr`` through :class:`~cvx_core.data.terminal.EscapingWriter`
    for the duration (control characters in ids, texts and messages are escaped)."""
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = EscapingWriter(out), EscapingWriter(err)
    try:
        yield
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            sys.stdout, sys.stderr = out, err


@contextmanager
def one_line_warnings() -> Iterator[None]:
    """Show warnings as ``warning: MESSAGE`` on one line (no source line, no file path)."""

    def show(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        print(f"warning: {_one_line(str(message))}", file=file or sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def run_command(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace,
                checks: Callable[[argparse.Namespace], None] | None = None) -> int:
    """``checks(args)`` then ``handler(args)``; a failure becomes one line on stderr and its
    exit status (:func:`report_failure`)."""
    try:
        if checks is not None:
            checks(args)
        return handler(args)
    except BaseException as exc:  # noqa: BLE001 - every failure becomes one line
        if isinstance(exc, SystemExit):
            raise
        code, line = report_failure(exc)
        print(f"error: {line}", file=sys.stderr)
        return code


def forecast_time(text: str) -> Any:
    """``forecast --at``: a strict forecast time, else argparse's one-line error."""
    from cvx_core.learn.forecast import parse_forecast_time

    try:
        return parse_forecast_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def features_config(path: str | None) -> Any:
    """The TemporalFeaturesConfig of a ``--config`` JSON file (None without one); a folder,
    device, oversized file, invalid JSON or wrongly typed field is a one-line ValueError."""
    if not path:
        return None
    from cvx_core.features.config import TemporalFeaturesConfig

    from cvx_core.data.budgets import read_json_file

    doc = read_json_file(path, what="features config (JSON)")
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: holds a JSON {type(doc).__name__}, expected an object of "
                         "TemporalFeaturesConfig fields")
    check_json_fields(doc, TemporalFeaturesConfig, source=str(path))
    try:
        return TemporalFeaturesConfig.from_dict(doc)
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise ValueError(f"{path}: not a valid features config ({exc})") from None


def forecast_lines(doc: dict[str, Any]) -> list[str]:
    """The text report of a forecast (``doc`` as ``forecast --format json`` prints it)."""
    lines = [f"user {doc['user_id']}: forecast at {doc['at'][:16].replace('T', ' ')}, "
             f"{doc['horizon_days']:.1f} days after the last post ({doc['last_post'][:16].replace('T', ' ')})",
             f"the forecast lies {doc['moved_from_last_post']:.4g} (Euclidean) from the last post's embedding; "
             f"{len(doc['embedding'])} numbers (--format json prints them)"]
    held = doc["held_out_last_posts"]
    if held is None:
        lines.append("held-out check: not run (a saved forecaster was loaded)")
    else:
        def num(x: Any) -> str:
            return "undefined" if x is None else f"{x:.4g}"

        lines.append(f"held-out check, each user's last post predicted from the posts before it ({held['n_users']} "
                     f"users): mean squared error {num(held['mse_model'])}; {num(held['ratio_last_value'])}x that of "
                     f"'stays at the last post' and {num(held['ratio_linear'])}x that of a straight line through the "
                     "last two posts (below 1: the model is better)")
    return lines
