"""Docs that run: every ```python block in README.md and docs/*.md is executed.

Blocks of one file run in order in one fresh interpreter (later blocks may use names from
earlier ones), from a temporary folder that holds a link to the repository's
``sample_data/``, so a snippet reads the shipped samples by the same relative paths a reader
would type at the repository root and writes nothing into the repository. A block that is
meant as a signature listing, not a program, is fenced as ```text instead.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)


def python_blocks(path: Path) -> list[str]:
    return _BLOCK.findall(path.read_text(encoding="utf-8"))


def test_block_extraction_finds_fenced_python_only():
    text = "x\n```python\na = 1\n```\n```bash\nls\n```\n```python\nb = a\n```\n"
    assert _BLOCK.findall(text) == ["a = 1\n", "b = a\n"]


@pytest.mark.slow
@pytest.mark.parametrize("doc", [d for d in DOCS if python_blocks(d)], ids=lambda d: d.name)
def test_python_blocks_in_docs_run(doc: Path, tmp_path: Path):
    (tmp_path / "sample_data").symlink_to(ROOT / "sample_data")
    source = "\n\n".join(python_blocks(doc))
    (tmp_path / "snippet.py").write_text(source, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "snippet.py"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"{doc.name}'s python blocks failed:\n{proc.stderr[-4000:]}"


# ---- the tutorial notebook ------------------------------------------------------------------
TUTORIAL = ROOT / "docs" / "tutorial.ipynb"


def test_tutorial_is_stored_without_outputs_and_walks_load_explain_train_compare():
    import nbformat

    nb = nbformat.read(TUTORIAL, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "store the tutorial without outputs"
    source = "\n".join(c.source for c in code)
    steps = ["cvx_core.load_trajectories(", "cvx_core.explain_changepoints(", "cvx_core.train(", "cvx_core.compare_run("]
    assert [source.index(s) for s in steps] == sorted(source.index(s) for s in steps)
    for figure in ("words_timeline_figure", "roc_figure", "attention_bars", "attention_scatter"):
        assert f"show.{figure}(" in source


@pytest.mark.slow
def test_tutorial_notebook_runs_top_to_bottom_in_a_kernel(monkeypatch):
    """Executed as a reader would run it: an ipykernel kernel, the notebook's folder as the
    working directory, no network; every cell must run and the figures must be drawn."""
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.read(TUTORIAL, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(TUTORIAL.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if o.output_type in ("display_data", "execute_result")
               and "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figures) == 4
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "test AUC" in text and "mean-embedding baseline" in text and "permutation p" in text


def test_the_analytics_module_table_names_modules_and_entry_points_that_exist():
    import importlib

    text = (ROOT / "docs" / "analytics.md").read_text(encoding="utf-8")
    table = text[text.index("| module | what | main entry points |"):].split("\n\n")[0]
    rows = [r for r in table.splitlines()[2:] if r.startswith("| `")]
    assert len(rows) >= 8
    seen = set()
    for row in rows:
        module, _, entries = [c.strip() for c in row.strip("|").split(" | ")]
        mod = importlib.import_module(module.strip("`"))
        for name in re.findall(r"`([\w.]+)`", entries):
            obj = mod
            for part in name.split("."):
                assert hasattr(obj, part), f"docs/analytics.md: {module} has no {name}"
                obj = getattr(obj, part)
            seen.add(name)
    assert {"SetAnalysisBase", "SetAnalysis", "StreamedSetAnalysis", "analyze_set"} <= seen

