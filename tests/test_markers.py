"""The `slow` list of tests/conftest.py stays true: every test and fixture it names exists
(a renamed test would silently fall back into ``make test-fast``), and the guard that fails
a test-fast run on an unlisted training really stops one."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("cvx_tests_conftest", ROOT / "tests" / "conftest.py")
_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_conftest)
SLOW_TESTS, SLOW_FIXTURES = _conftest.SLOW_TESTS, _conftest.SLOW_FIXTURES


def _defined(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


@pytest.mark.parametrize("path", sorted(set(SLOW_TESTS) | set(SLOW_FIXTURES)))
def test_every_test_and_fixture_on_the_slow_list_exists(path):
    file = ROOT / path
    assert file.is_file(), f"tests/conftest.py lists {path}, which does not exist"
    missing = (set(SLOW_TESTS.get(path, ())) - {"*"} | set(SLOW_FIXTURES.get(path, ()))) - _defined(file)
    assert not missing, f"tests/conftest.py's slow list names {sorted(missing)}, not defined in {path}"


def test_a_test_fast_run_fails_a_test_that_trains_without_being_marked_slow(tmp_path):
    test = tmp_path / "test_trains_unmarked.py"
    test.write_text(
        "from cvx_core.data.synthetic import PlantedConfig, make_planted_trajectory_set\n"
        "from cvx_core.learn.config import TrainConfig\n"
        "from cvx_core.learn.trainer import train\n\n"
        "def test_trains():\n"
        "    ts, _ = make_planted_trajectory_set(config=PlantedConfig(n_users=12, dim=4, n_planted=2, max_posts=8), seed=0)\n"
        "    train(ts, TrainConfig(epochs=1, device='cpu', bootstrap=0))\n"
    )
    (tmp_path / "conftest.py").write_text(  # the repository's hooks, loaded by path
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('cvx_tests_conftest', {str(ROOT / 'tests' / 'conftest.py')!r})\n"
        "mod = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(mod)\n"
        "globals().update({k: v for k, v in vars(mod).items() if k.startswith('pytest_')})\n"
    )
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
                           "--rootdir", str(tmp_path), str(test)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "trains (Trainer.run) but is not marked @pytest.mark.slow" in proc.stdout
