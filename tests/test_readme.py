"""The README's layout table and command-line section are checked against the code: every
module of the library and the app is named in the layout table, and every subcommand of
``python -m cvx_core`` appears in the command-line section."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from cvx_core.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    start = README.index(f"## {title}")
    nxt = README.find("\n## ", start + 3)
    return README[start: nxt if nxt > 0 else len(README)]


def _modules(package: str) -> set[str]:
    """Module names (file stems, package folders) of ``package``, private ones excluded."""
    out = set()
    for path in (ROOT / package).rglob("*.py"):
        rel = path.relative_to(ROOT / package)
        if "__pycache__" in rel.parts or path.name.startswith("_"):
            continue
        out.add(path.stem)
    return out


def test_layout_table_names_every_module_of_the_library_and_the_app():
    table = _section("Layout")
    named = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_./]*)`", table))
    named |= {n.rstrip("/").split("/")[-1].removesuffix(".py") for n in named}
    missing = sorted((_modules("cvx_core") | _modules("cvx_app")) - named)
    assert not missing, f"README's layout table does not name: {missing}"


def test_command_line_section_shows_every_subcommand():
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    shown = set(re.findall(r"python -m cvx_core (\w+)", _section("Command line")))
    assert set(subs.choices) <= shown, f"not shown in README's Command line: {sorted(set(subs.choices) - shown)}"
