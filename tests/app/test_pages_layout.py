"""The app's shape (issue 27 §3-4): pages only draw (each at most 200 lines), no module name
appears in both cvx_core and cvx_app (singular and plural count as one name), and pages import
cvx_app modules under their own names (no ``runs as runs_mod`` aliases)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_PAGE_LINES = 200


def _forms(name: str) -> frozenset[str]:
    """The forms a module name may take, singular or plural: ``runs`` -> {runs, run},
    ``analyses`` -> {analyses, analysis, ...}, ``entries`` -> {entries, entry, ...}."""
    name = name.lower()
    forms = {name}
    if name.endswith("s"):
        forms.add(name[:-1])
    if name.endswith("es"):
        forms |= {name[:-2], name[:-2] + "is"}
    if name.endswith("ies"):
        forms.add(name[:-3] + "y")
    return frozenset(forms)


def _module_names(package: Path) -> dict[str, str]:
    """Every module and subpackage name under ``package`` (name -> the first path that has it)."""
    out: dict[str, str] = {}
    for path in sorted(package.rglob("*")):
        if "__pycache__" in path.parts:
            continue
        if path.is_dir() and (path / "__init__.py").is_file():
            out.setdefault(path.name, str(path.relative_to(package.parent)))
        elif path.suffix == ".py" and path.stem != "__init__":
            out.setdefault(path.stem, str(path.relative_to(package.parent)))
    return out


def shared_names(core: Path, app: Path) -> list[tuple[str, str]]:
    """Pairs (core path, app path) whose module names are the same up to a plural ending."""
    core_names, app_names = _module_names(core), _module_names(app)
    return sorted((core_path, app_path) for c, core_path in core_names.items() for a, app_path in app_names.items()
                  if _forms(c) & _forms(a))


def test_no_module_name_appears_in_both_the_core_and_the_app():
    assert shared_names(ROOT / "cvx_core", ROOT / "cvx_app") == []


def test_the_name_rule_sees_a_planted_plural_twin(tmp_path):
    for rel in ("core/__init__.py", "core/learn/__init__.py", "core/learn/runs.py", "core/analysis/__init__.py",
                "app/__init__.py", "app/run.py", "app/analyses.py", "app/class.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    assert shared_names(tmp_path / "core", tmp_path / "app") == [
        ("core/analysis", "app/analyses.py"), ("core/learn/runs.py", "app/run.py")]


def test_every_page_is_at_most_200_lines():
    pages = sorted((ROOT / "pages").glob("*.py")) + [ROOT / "app.py"]
    too_long = {p.name: n for p in pages if (n := len(p.read_text().splitlines())) > MAX_PAGE_LINES}
    assert too_long == {}, f"pages over {MAX_PAGE_LINES} lines (move logic into cvx_app): {too_long}"


def test_pages_import_app_modules_under_their_own_names():
    aliased = []
    for page in sorted((ROOT / "pages").glob("*.py")) + [ROOT / "app.py"]:
        for node in ast.walk(ast.parse(page.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cvx_app"):
                aliased += [f"{page.name}: {a.name} as {a.asname}" for a in node.names
                            if a.asname and a.asname != a.name]
    assert aliased == []
