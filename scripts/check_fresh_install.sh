#!/usr/bin/env bash
# Packaging tells the truth (issue 27): `pip install .` into a fresh virtual environment, with
# nothing but pyproject.toml's dependencies (torch pinned to the tested 2.13.0 CPU build), then
# `import cvx_core.features.kernels` must report the compiled (numba) path, and the installed
# package, not this checkout, must be the one imported.
#   bash scripts/check_fresh_install.sh [VENV_DIR]      (a few minutes; about 2 GB of disk)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${1:-$(mktemp -d)/venv}
PYTHON=${PYTHON:-python3}
echo "==> fresh virtual environment: $VENV ($($PYTHON --version))"
"$PYTHON" -m venv "$VENV"
echo "==> pip install . (torch==2.13.0)"
start=$(date +%s)
"$VENV/bin/python" -m pip install --progress-bar off --quiet "$ROOT" "torch==2.13.0"
echo "    installed in $(( $(date +%s) - start )) s"
cd "$(mktemp -d)"  # away from the checkout: the installed copy is imported
"$VENV/bin/python" - <<'PY'
import time

import numpy as np

import cvx_core
import cvx_core.features.kernels as kernels

assert "site-packages" in cvx_core.__file__, cvx_core.__file__
if not kernels.available():
    raise SystemExit("cvx_core.features.kernels: the slow path (numba missing or disabled)")
import numba

seconds = kernels.compile_all()
from cvx_core.features.analytic import AnalyticBackend

E, t = np.random.default_rng(0).normal(size=(200, 64)), np.sort(np.random.default_rng(1).random(200)) * 100
start = time.perf_counter()
x = AnalyticBackend.extract_all(E, t)
print(f"cvx_core.features.kernels: the compiled path (numba {numba.__version__}); compile_all {seconds:.1f} s; "
      f"one trajectory 200 x 64 -> {x.shape[0]} features in {1e3 * (time.perf_counter() - start):.2f} ms; "
      f"cvx_core from {cvx_core.__file__}")
PY
