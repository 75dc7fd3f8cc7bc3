"""Benchmark of the temporal feature vector (SPEC.md) on both paths.

Run: ``.venv/bin/python benchmarks/bench_features.py [--quick]``. Prints a table and writes
``benchmarks/results/features.json``. Measures, with medians over repeats:

- one trajectory 100 x 768, CPU: analytic (NumPy float64) and torch (float32 and float64)
  forward, forward with grad recording, forward + backward, and the ratio
  (forward + backward) / forward;
- a batch 64 x 100 x 768 on CPU (forward, forward + backward);
- the same on CUDA and a 1000 x 100 x 768 batch, when a CUDA device is present (skipped with
  a note otherwise).

Both wall-clock and process CPU time are recorded, with medians and minima over interleaved
blocks; the whole measurement runs in ``--processes`` fresh processes (default 3) and the
table aggregates them (median of medians, minimum of minima), because on a shared machine
one process can run twice as slow as the next for the same work.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# BLAS and OpenMP threads: one per process unless the caller says otherwise (a 2-core shared
# machine spins badly with more); set before numpy/torch load.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cvx_core.features.config import TemporalFeaturesConfig  # noqa: E402
from cvx_core.features.analytic import AnalyticBackend  # noqa: E402
from cvx_core.features.differentiable import TorchBackend  # noqa: E402


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def measure(fns: dict, *, inner: int, repeats: int, sync=None) -> dict[str, dict[str, float]]:
    """Milliseconds per call of each function, wall and process CPU time.

    The functions run interleaved (one block of ``inner`` calls each, in turn, ``repeats``
    times) so that they see the same load from other processes; ratios between them are
    then meaningful on a shared machine. Medians and minima over the blocks."""
    for fn in fns.values():
        for _ in range(max(3, inner // 5)):
            fn()
    if sync:
        sync()
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(inner):
                fn()
            if sync:
                sync()
            wall[name].append((time.perf_counter() - w0) / inner * 1e3)
            cpu[name].append((time.process_time() - c0) / inner * 1e3)
    return {
        k: {
            "wall_ms_median": statistics.median(wall[k]),
            "wall_ms_min": min(wall[k]),
            "cpu_ms_median": statistics.median(cpu[k]),
            "cpu_ms_min": min(cpu[k]),
        }
        for k in fns
    }


def trajectory(T: int, D: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    E = rng.normal(size=(T, D))
    t = np.cumsum(rng.exponential(1.0, size=T))  # about one post a day, irregular
    return E, t - t[0]


def torch_cases(E: np.ndarray, t: np.ndarray, device: str, dtype: torch.dtype, inner: int, repeats: int,
                lengths: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    sync = torch.cuda.synchronize if device == "cuda" else None
    Et = torch.tensor(E, dtype=dtype, device=device)
    tt = torch.tensor(t, dtype=torch.float64, device=device)
    ln = None if lengths is None else torch.tensor(lengths, device=device)
    Eg = Et.clone().requires_grad_(True)

    def fwd():
        with torch.no_grad():
            TorchBackend.extract_all(Et, tt, lengths=ln)

    def fwd_grad():
        TorchBackend.extract_all(Eg, tt, lengths=ln)

    def fwd_bwd():
        Eg.grad = None
        TorchBackend.extract_all(Eg, tt, lengths=ln).sum().backward()

    out = measure(
        {"forward": fwd, "forward_grad_recording": fwd_grad, "forward_backward": fwd_bwd},
        inner=inner, repeats=repeats, sync=sync,
    )
    out["ratio_fwd_bwd_over_fwd"] = {
        key: out["forward_backward"][key] / out["forward_grad_recording"][key]
        for key in ("wall_ms_median", "wall_ms_min", "cpu_ms_median", "cpu_ms_min")
    }
    return out


def warm_allocator() -> None:
    """Allocate and free one 32 MB block, as any process that has loaded data has done.

    glibc serves blocks above its mmap threshold (128 KB at start) with fresh mmaps, and
    raises the threshold only after such a block is freed. Before that, every 600 KB
    temporary of a 100 x 768 float64 computation is a new mapping whose pages fault on
    first touch: measured here, the analytic path takes ~1.5 ms in that state instead of
    ~0.65 ms. A benchmark process that has done nothing else would report the former.
    """
    block = np.ones(4_000_000)
    del block


def run_once(quick: bool, threads: int) -> dict[str, object]:
    """All cases in this process -> results dict (machine info, cases, notes)."""
    warm_allocator()
    torch.set_num_threads(threads)
    inner, repeats = (10, 3) if quick else (20, 25)
    cfg = TemporalFeaturesConfig()
    results: dict[str, object] = {
        "machine": {
            "cpu_model": cpu_model(),
            "logical_cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch_version": torch.__version__,
            "numpy_version": np.__version__,
            "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average_at_start": load_average(),
        },
        "config": cfg.to_dict(),
        "cases": {},
    }
    cases: dict[str, object] = results["cases"]  # type: ignore[assignment]
    E, t = trajectory(100, 768)

    cases["cpu_single_100x768_analytic_float64"] = measure(
        {"forward": lambda: AnalyticBackend.extract_all(E, t, cfg)}, inner=inner, repeats=repeats
    )
    for name, dtype in (("float32", torch.float32), ("float64", torch.float64)):
        cases[f"cpu_single_100x768_torch_{name}"] = torch_cases(E, t, "cpu", dtype, inner, repeats)

    B = 64
    rng = np.random.default_rng(1)
    Eb = rng.normal(size=(B, 100, 768))
    tb = np.cumsum(rng.exponential(1.0, size=(B, 100)), axis=1)
    tb -= tb[:, :1]
    cases[f"cpu_batch_{B}x100x768_torch_float32"] = torch_cases(
        Eb, tb, "cpu", torch.float32, 1, min(repeats, 11)
    )
    notes = []
    if torch.cuda.is_available():
        cases["cuda_single_100x768_torch_float32"] = torch_cases(E, t, "cuda", torch.float32, inner, repeats)
        Bc = 1000
        Ec = rng.normal(size=(Bc, 100, 768)).astype(np.float32)
        tc = np.cumsum(rng.exponential(1.0, size=(Bc, 100)), axis=1)
        tc -= tc[:, :1]
        cases[f"cuda_batch_{Bc}x100x768_torch_float32"] = torch_cases(
            Ec, tc, "cuda", torch.float32, 2, min(repeats, 11)
        )
    else:
        notes.append("no CUDA device: CUDA cases (single 100x768, batch 1000x100x768) not measured")
    results["notes"] = notes
    results["machine"]["load_average_at_end"] = load_average()  # type: ignore[index]
    return results


def aggregate(runs: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """Across processes: median of the per-process medians, minimum of the minima; ratios
    recomputed from the aggregated times."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for case in runs[0]["cases"]:
        out[case] = {}
        for mname in runs[0]["cases"][case]:
            if mname.startswith("ratio"):
                continue
            vals = [r["cases"][case][mname] for r in runs]
            out[case][mname] = {
                "wall_ms_median": statistics.median(v["wall_ms_median"] for v in vals),
                "wall_ms_min": min(v["wall_ms_min"] for v in vals),
                "cpu_ms_median": statistics.median(v["cpu_ms_median"] for v in vals),
                "cpu_ms_min": min(v["cpu_ms_min"] for v in vals),
            }
        if "forward_backward" in out[case]:
            fb, fw = out[case]["forward_backward"], out[case]["forward_grad_recording"]
            out[case]["ratio_fwd_bwd_over_fwd"] = {k: fb[k] / fw[k] for k in fb}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, one process (smoke run)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--processes", type=int, default=3,
                    help="measure in this many fresh processes, one after another (default 3)")
    ap.add_argument("--single-run", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "features.json"))
    args = ap.parse_args()
    if args.single_run or args.quick:
        runs = [run_once(args.quick, args.threads)]
        if args.single_run:
            Path(args.out).write_text(json.dumps(runs[0]))
            return
    else:
        runs = []
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.processes):
                path = Path(tmp) / f"run{i}.json"
                cmd = [sys.executable, __file__, "--single-run", "--threads", str(args.threads), "--out", str(path)]
                subprocess.run(cmd, check=True)
                runs.append(json.loads(path.read_text()))
    cases = aggregate(runs)
    results = {
        "machine": runs[0]["machine"],
        "load_average_per_process": [
            [r["machine"]["load_average_at_start"], r["machine"]["load_average_at_end"]] for r in runs
        ],
        "processes": len(runs),
        "config": runs[0]["config"],
        "cases": cases,
        "per_process": [r["cases"] for r in runs],
        "notes": runs[0]["notes"],
    }
    print(f"machine: {results['machine']}")
    print(f"processes: {len(runs)}; load average (1, 5, 15 min) at start/end of each: "
          f"{results['load_average_per_process']}")
    hdr = (f"{'case':40s} {'measure':24s} {'wall ms median':>15s} {'wall ms min':>12s} "
           f"{'cpu ms median':>14s} {'cpu ms min':>11s}")
    print(hdr)
    print("-" * len(hdr))
    for case, measures in cases.items():
        for mname, v in measures.items():
            unit = "x" if mname.startswith("ratio") else " "
            print(f"{case:40s} {mname:24s} {v['wall_ms_median']:14.3f}{unit} {v['wall_ms_min']:11.3f}{unit} "
                  f"{v['cpu_ms_median']:13.3f}{unit} {v['cpu_ms_min']:10.3f}{unit}")
    for note in results["notes"]:
        print("note:", note)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
