"""``benchmarks/gpu_check.sh --dry-run`` runs end to end on the CPU (so CI proves the GPU run's
script works before a GPU is at hand) and writes one JSON with the machine, the cuda-marked
tests it found and every figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_dry_run_writes_every_figure_on_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out), "CVX_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["dry_run"] is True and doc["machine"]["device"] == "cpu" and doc["machine"]["versions"]["torch"]
    assert doc["cuda_tests"]["exit_code"] == 0 and doc["cuda_tests"]["collect_only"] is True
    feats = doc["features"]
    assert feats["shape"] == [8, 20, 32] and 0 < feats["fwd_ms"] and feats["fwd_grad_ms"] < feats["fwd_bwd_ms"]
    assert 0.0 <= doc["train_epoch"]["test_auc"] <= 1.0 and doc["train_epoch"]["seconds"] > 0
    assert doc["finetune_step"]["seconds"] > 0 and doc["embed"]["texts_per_s"] > 0 and doc["embed"]["tokens_per_s"] > 0


def test_gpu_check_refuses_a_cpu_machine_without_dry_run(tmp_path):
    if __import__("torch").cuda.is_available():
        pytest.skip("a CUDA device is present")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path / "x.json")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--dry-run" in proc.stderr and not (tmp_path / "x.json").exists()
