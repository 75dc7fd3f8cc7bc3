"""The package layout stays a pipeline: no module imports a room above its own, no import
cycles (lazy, function-level imports included), and the library never imports the app."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "cvx_core"
# rooms in the order data flows; a module may import its own room and the rooms before it
ORDER = ["data", "features", "analysis", "learn", "show", "scale", "sklearn", "cli_support", "cli", "__main__", "__init__"]


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _room(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def _imports(path: Path) -> set[str]:
    """Every ``cvx_core`` module that ``path`` imports, at any depth of the file."""
    tree = ast.parse(path.read_text())
    me = _module_name(path)
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] in ("cvx_core", "cvx_app", "streamlit")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = me.split(".")[: len(me.split(".")) - node.level + (1 if path.name == "__init__.py" else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] not in ("cvx_core", "cvx_app", "streamlit"):
                continue
            out.add(mod)
            for a in node.names:  # ``from cvx_core.learn import runs`` imports a module
                if (PKG.parent / (mod.replace(".", "/") + f"/{a.name}.py")).is_file():
                    out.add(f"{mod}.{a.name}")
    out.discard(me)
    return out


GRAPH = {_module_name(p): _imports(p) for p in PKG.rglob("*.py")}


def test_every_module_belongs_to_a_known_room():
    assert {_room(m) for m in GRAPH} <= set(ORDER)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_module_imports_a_room_above_its_own_or_the_app(module):
    mine = ORDER.index(_room(module))
    for target in GRAPH[module]:
        assert target.split(".")[0] == "cvx_core", f"{module} imports {target}: the library must not know the app"
        if target == "cvx_core":
            assert _room(module) in ("__init__", "cli", "__main__"), f"{module} imports the package root"
            continue
        assert ORDER.index(_room(target)) <= mine, f"{module} ({_room(module)}) imports {target} ({_room(target)})"


def test_no_import_cycles():
    modules = {m: {t for t in ts if t in GRAPH} for m, ts in GRAPH.items()}
    # package __init__ edges are implicit in Python; only explicit module edges count here
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in modules[m]:
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(modules):
        if m not in state:
            visit(m)


def test_the_walker_sees_a_planted_cycle_and_an_upward_import(tmp_path):
    """The checks above can fail: a planted upward import is found by the same walker."""
    fake = PKG / "data" / "_planted_for_test.py"
    fake.write_text("from cvx_core.learn import runs\n")
    try:
        found = _imports(fake)
    finally:
        fake.unlink()
    assert "cvx_core.learn.runs" in found
    assert ORDER.index(_room("cvx_core.learn.runs")) > ORDER.index(_room("cvx_core.data._planted_for_test"))


# ------------------------------------------------------------------------------------------
# no private names across a package boundary
# ------------------------------------------------------------------------------------------
APP = PKG.parent / "cvx_app"


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rsplit(".", 1)[0]


def _private_uses(path: Path, root: Path) -> list[tuple[str, str]]:
    """``(module, name)`` for every ``_private`` name of another ``cvx_core``/``cvx_app``
    module that ``path`` uses: ``from m import _x``, or ``alias._x`` where ``alias`` is an
    imported module (``import cvx_core.m as alias``, ``from cvx_core import m as alias``)."""
    tree = ast.parse(path.read_text())
    rel = path.relative_to(root.parent).with_suffix("")
    me = ".".join(rel.parts[:-1] if rel.parts[-1] == "__init__" else rel.parts)
    aliases: dict[str, str] = {}
    out: list[tuple[str, str]] = []

    def private(name: str) -> bool:
        return name.startswith("_") and not name.startswith("__")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in ("cvx_core", "cvx_app") and a.asname:
                    aliases[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("cvx_core", "cvx_app"):
            for a in node.names:
                target = f"{node.module}.{a.name}"
                if (root.parent / (target.replace(".", "/") + ".py")).is_file() or (
                    root.parent / target.replace(".", "/") / "__init__.py"
                ).is_file():
                    aliases[a.asname or a.name] = target  # a module imported by name
                elif private(a.name):
                    out.append((node.module, a.name))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            if private(node.attr):
                out.append((aliases[node.value.id], node.attr))
    mine = _package_of(me, path)
    return [(m, n) for m, n in out if m.rsplit(".", 1)[0] != mine and m != mine]


# known private imports across packages (none since issue 27 item 2: DDP overrides and imports only public names)
KNOWN_PRIVATE_IMPORTS: set[tuple[str, str, str]] = set()


def _all_private_uses() -> set[tuple[str, str, str]]:
    found = set()
    for root in (PKG, APP):
        for path in root.rglob("*.py"):
            rel = path.relative_to(root.parent).with_suffix("")
            me = ".".join(rel.parts[:-1] if rel.parts[-1] == "__init__" else rel.parts)
            found |= {(me, m, n) for m, n in _private_uses(path, root)}
    return found


def test_no_module_uses_another_packages_private_names():
    unexpected = sorted(_all_private_uses() - KNOWN_PRIVATE_IMPORTS)
    assert not unexpected, "private names used across a package boundary: " + ", ".join(
        f"{me} uses {m}.{n}" for me, m, n in unexpected
    )


def test_the_private_name_walker_sees_a_planted_private_import_and_attribute():
    fake = PKG / "scale" / "_planted_private_for_test.py"
    fake.write_text(
        "from cvx_core.data.io import _hidden\nfrom cvx_core.data import io as _io\nx = _io._other\n"
        "from cvx_core.scale.stream import _same_package_is_fine\n"
    )
    try:
        found = _private_uses(fake, PKG)
    finally:
        fake.unlink()
    assert ("cvx_core.data.io", "_hidden") in found
    assert ("cvx_core.data.io", "_other") in found
    assert all(n != "_same_package_is_fine" for _, n in found)
