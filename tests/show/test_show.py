"""cvx_core.show: the figure builders work in a notebook, without Streamlit or the app."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_show_imports_neither_streamlit_nor_the_app_and_builds_a_figure():
    code = (
        "import sys\n"
        "from cvx_core.show import confusion_figure, roc_figure\n"
        "fig = confusion_figure({'confusion': [[2, 1], [0, 3]], 'classes': ['a', 'b']})\n"
        "assert list(fig.data[0].x) == ['class a', 'class b']\n"
        "assert not any(m == 'streamlit' or m.startswith(('streamlit.', 'cvx_app')) for m in sys.modules), "
        "sorted(m for m in sys.modules if m.startswith(('streamlit', 'cvx_app')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]


def test_the_app_draws_the_library_figures():
    from cvx_app import figures

    import cvx_core.show as show

    assert figures.roc_figure is show.roc_figure and figures.explore_figure is show.explore_figure
