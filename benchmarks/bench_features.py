"""Benchmark of the temporal feature vector (SPEC.md): CVX beside a plain translation and a
memory-copy floor, per trajectory, at batch sizes 1 to 1024, in one process.

Run: ``.venv/bin/python benchmarks/bench_features.py [--quick] [--cold-compile]``. Prints a
table and writes ``benchmarks/results/features.json``.

Cases (float32 embeddings, 100 posts x 768 dimensions, irregular gaps about a day apart,
default config, 3083 features), for each batch size B in 1, 16, 64, 256, 1024:

- ``cvx_fwd``: ``TorchBackend.extract_all`` under ``no_grad``; ``cvx_fwd_grad``: the same
  with the input requiring grad (the denominator of the fwd+bwd ratio); ``cvx_fwd_bwd``:
  that plus ``.sum().backward()``. On the CPU these run the compiled kernels.
- ``vec_*``: the same through the vectorised fused ``autograd.Function`` that was CVX's CPU
  path before the kernels (now the CUDA path and the fallback without numba).
- ``plain_*``: ``benchmarks/plain_spec.py``, a plain PyTorch translation of SPEC (checked
  against CVX before timing).
- ``copy_new``: ``E.clone()`` (a fresh allocation, page faults included: what "one copy of
  the batch" costs a program); ``copy_into``: ``dst.copy_(E)`` into a preallocated buffer.
- ``analytic`` (B = 1 only): ``AnalyticBackend.extract_all`` on the float64 trajectory.
- on CUDA, when a device is present: CVX forward and forward + backward at B = 1 and 1000.

How it measures: every case of one batch size runs interleaved with the others (blocks of
calls, in turn, ``repeats`` times), so they all see the same background load; medians over
the blocks of wall-clock and of process CPU time, divided by B. One torch thread, one BLAS
thread. The kernels are compiled (or loaded from numba's cache) before timing; the time
that took is recorded, and ``--cold-compile`` also measures a compile with an empty cache
in a subprocess. The goals of issue 17 are evaluated on these ratios at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# BLAS and OpenMP threads: one (a 2-core shared machine spins badly with more); set before
# numpy/torch load.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from plain_spec import plain_features  # noqa: E402

from cvx_core.features import kernels  # noqa: E402
from cvx_core.features.analytic import AnalyticBackend  # noqa: E402
from cvx_core.features.config import TemporalFeaturesConfig  # noqa: E402
from cvx_core.features.differentiable import TorchBackend, _TemporalFeaturesFn  # noqa: E402

BATCHES = (1, 16, 64, 256, 1024)
T_POSTS, DIM = 100, 768


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


def measure(fns: dict, *, block_ms: float, repeats: int) -> dict[str, dict[str, float]]:
    """Milliseconds per call of each function (wall and process CPU), interleaved: each
    round runs one block of every function in turn (a block is as many calls as fit in
    about ``block_ms``, at least one), ``repeats`` rounds; medians and minima over blocks."""
    inner: dict[str, int] = {}
    for name, fn in fns.items():  # warm-up (caches, allocator, lazy imports), then size the block
        fn()
        c0 = time.process_time()
        fn()
        inner[name] = max(1, int(block_ms / max((time.process_time() - c0) * 1e3, 1e-3)))
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    faults: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            n = inner[name]
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(n):
                fn()
            wall[name].append((time.perf_counter() - w0) / n * 1e3)
            cpu[name].append((time.process_time() - c0) / n * 1e3)
            faults[name].append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / n)
    return {
        k: {
            "wall_ms_median": statistics.median(wall[k]),
            "wall_ms_min": min(wall[k]),
            "cpu_ms_median": statistics.median(cpu[k]),
            "cpu_ms_min": min(cpu[k]),
            "minor_faults_per_call_median": statistics.median(faults[k]),
            "calls_per_block": inner[k],
            "blocks": len(wall[k]),
        }
        for k in fns
    }


def make_batch(B: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    E = rng.normal(size=(B, T_POSTS, DIM)).astype(np.float32)
    t = np.cumsum(rng.exponential(1.0, size=(B, T_POSTS)), axis=1)  # about a post a day
    return E, t - t[:, :1]


def cases_for(B: int, cfg: TemporalFeaturesConfig, *, plain: bool) -> dict:
    E_np, t_np = make_batch(B, seed=B)
    E = torch.from_numpy(E_np)
    t = torch.from_numpy(t_np)
    Eg = E.clone().requires_grad_(True)
    dst = torch.empty_like(E)

    def vec(x: torch.Tensor, tt: torch.Tensor = t) -> torch.Tensor:  # the vectorised fused Function
        return _TemporalFeaturesFn.apply(x, tt, None, None, None, cfg.temperature, cfg)

    with torch.no_grad():  # the translations agree before anything is timed
        ref = TorchBackend.extract_all(E[:4], t[:4], cfg)
        for other in (vec(E[:4], t[:4]), plain_features(E[:4], t[:4], cfg)):
            err = ((other - ref).abs() / (ref.abs() + 1e-2)).max().item()
            assert err < 1e-3, f"translations disagree at B={B}: {err}"

    def fwd_bwd(fn):
        def run():
            Eg.grad = None
            fn(Eg).sum().backward()
        return run

    def no_grad(fn):
        def run():
            with torch.no_grad():
                fn(E)
        return run

    cvx = lambda x: TorchBackend.extract_all(x, t, cfg)  # noqa: E731
    pl = lambda x: plain_features(x, t, cfg)  # noqa: E731
    fns = {
        "cvx_fwd": no_grad(cvx),
        "cvx_fwd_grad": lambda: cvx(Eg),
        "cvx_fwd_bwd": fwd_bwd(cvx),
        "vec_fwd": no_grad(vec),
        "vec_fwd_grad": lambda: vec(Eg),
        "vec_fwd_bwd": fwd_bwd(vec),
        "copy_new": lambda: E.clone(),
        "copy_into": lambda: dst.copy_(E),
    }
    if plain:
        fns.update({"plain_fwd": no_grad(pl), "plain_fwd_grad": lambda: pl(Eg), "plain_fwd_bwd": fwd_bwd(pl)})
    if B == 1:
        E64, t64 = E_np[0].astype(np.float64), t_np[0]
        fns["analytic"] = lambda: AnalyticBackend.extract_all(E64, t64, cfg)
    return fns


def cold_compile_seconds() -> float:
    """Compile every kernel specialisation with an empty numba cache (``NUMBA_CACHE_DIR``
    pointed at a new directory takes precedence over the cache next to the module), in a
    fresh process: what the first test run after an install pays."""
    with tempfile.TemporaryDirectory() as tmp:
        code = ("import sys; sys.path.insert(0, %r); from cvx_core.features import kernels; "
                "print(kernels.compile_all())") % str(ROOT)
        out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, NUMBA_CACHE_DIR=tmp),
                             capture_output=True, text=True, check=True)
        return float(out.stdout.strip().splitlines()[-1])


def run(quick: bool, cold: bool) -> dict:
    torch.set_num_threads(1)
    # glibc hands blocks above its mmap threshold (128 KB at start) out as fresh mappings
    # until one such block has been freed; any program that has loaded data has done that
    block = np.ones(4_000_000)
    del block
    compile_s = kernels.compile_all()
    cfg = TemporalFeaturesConfig()
    results: dict = {
        "machine": {
            "cpu_model": cpu_model(),
            "logical_cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch_version": torch.__version__,
            "numpy_version": np.__version__,
            "numba_version": getattr(kernels.numba, "__version__", None),
            "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average_at_start": load_average(),
        },
        "shape": {"T": T_POSTS, "D": DIM, "dtype": "float32", "features": cfg.feature_dim(DIM)},
        "kernel_compile_or_cache_load_s": compile_s,
        "batches": {},
    }
    if cold:
        results["kernel_cold_compile_s"] = cold_compile_seconds()
    batches = (1, 16, 64) if quick else BATCHES
    for B in batches:
        repeats = 3 if quick else (5 if B >= 1024 else 7 if B >= 256 else 11)
        res = measure(cases_for(B, cfg, plain=True), block_ms=10.0 if quick else 40.0, repeats=repeats)
        per_traj = {k: {m: (v / B if m.endswith(("ms_median", "ms_min")) else v) for m, v in r.items()}
                    for k, r in res.items()}
        results["batches"][str(B)] = {"repeats": repeats, "per_call": res, "per_trajectory": per_traj,
                                      "load_average": load_average()}
        print(f"B={B} done (load {load_average()})", flush=True)
    results["cuda"] = cuda_cases(cfg, quick) if torch.cuda.is_available() else (
        "no CUDA device: the CUDA cases (B = 1 and 1000, forward, forward + backward) were not measured")
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results["machine"]["load_average_at_end"] = load_average()
    results["goals"] = goals(results, batches)
    return results


def cuda_cases(cfg: TemporalFeaturesConfig, quick: bool) -> dict:
    """CVX on CUDA (the vectorised fused Function), B = 1 and 1000, milliseconds per call
    (wall, synchronised), with the issue's goals: 1000 x 100 x 768 forward <= 5 ms and
    forward + backward <= 1.5x forward."""
    out: dict = {}
    for B in (1, 1000):
        E_np, t_np = make_batch(B, seed=B)
        E = torch.from_numpy(E_np).cuda()
        t = torch.from_numpy(t_np).cuda()
        Eg = E.clone().requires_grad_(True)

        def sync(fn):
            def run():
                fn()
                torch.cuda.synchronize()
            return run

        def fwd():
            with torch.no_grad():
                TorchBackend.extract_all(E, t, cfg)

        def fwd_bwd():
            Eg.grad = None
            TorchBackend.extract_all(Eg, t, cfg).sum().backward()

        res = measure({"fwd": sync(fwd), "fwd_grad": sync(lambda: TorchBackend.extract_all(Eg, t, cfg)),
                       "fwd_bwd": sync(fwd_bwd)}, block_ms=20.0, repeats=3 if quick else 11)
        res["ratio_fwd_bwd_over_fwd_grad"] = res["fwd_bwd"]["wall_ms_median"] / res["fwd_grad"]["wall_ms_median"]
        out[str(B)] = res
    return out


def goals(results: dict, batches) -> dict:
    """Issue 17's ratios, on wall-clock and on CPU-time medians."""
    out: dict = {}
    bt = results["batches"]
    for clock in ("wall", "cpu"):
        key = f"{clock}_ms_median"
        pt = lambda B, case: bt[str(B)]["per_trajectory"][case][key]  # noqa: E731
        g = {
            "analytic_over_plain_fwd_B1 (<= 0.25)": pt(1, "analytic") / pt(1, "plain_fwd"),
            "cvx_fwd_over_plain_fwd_B1 (<= 0.3)": pt(1, "cvx_fwd") / pt(1, "plain_fwd"),
        }
        for B in batches:
            g[f"fwd_bwd_over_fwd_grad_B{B} (<= 1.5)"] = pt(B, "cvx_fwd_bwd") / pt(B, "cvx_fwd_grad")
        if "256" in bt:
            g["cvx_fwd_B256_over_B16 (<= 1.3)"] = pt(256, "cvx_fwd") / pt(16, "cvx_fwd")
            g["cvx_fwd_B256_over_copy_new_B256 (<= 10)"] = pt(256, "cvx_fwd") / pt(256, "copy_new")
            g["cvx_fwd_B256_over_copy_into_B256"] = pt(256, "cvx_fwd") / pt(256, "copy_into")
        if "1024" in bt:
            g["cvx_fwd_B1024_over_B16"] = pt(1024, "cvx_fwd") / pt(16, "cvx_fwd")
        out[clock] = g
    return out


def print_table(results: dict) -> None:
    m = results["machine"]
    print(f"machine: {m['cpu_model']}, {m['logical_cores']} logical cores, torch {m['torch_version']}, "
          f"numba {m['numba_version']}, {m['torch_threads']} torch thread; load {m['load_average_at_start']} -> "
          f"{m['load_average_at_end']}")
    print(f"kernels compiled/loaded in {results['kernel_compile_or_cache_load_s']:.2f} s"
          + (f"; cold compile {results['kernel_cold_compile_s']:.1f} s" if "kernel_cold_compile_s" in results else ""))
    cases = ["analytic", "cvx_fwd", "cvx_fwd_grad", "cvx_fwd_bwd", "vec_fwd", "vec_fwd_grad", "vec_fwd_bwd",
             "plain_fwd", "plain_fwd_grad", "plain_fwd_bwd", "copy_new", "copy_into"]
    Bs = list(results["batches"])
    print("\nper trajectory, microseconds, median wall clock (median process CPU time)")
    print(f"{'case':16s}" + "".join(f"{'B=' + B:>20s}" for B in Bs))
    for c in cases:
        row = f"{c:16s}"
        for B in Bs:
            r = results["batches"][B]["per_trajectory"].get(c)
            row += f"{'-':>20s}" if r is None else f"{r['wall_ms_median'] * 1e3:>11.1f} ({r['cpu_ms_median'] * 1e3:6.1f})"
        print(row)
    print("\nminor page faults per call (median)")
    for c in ("cvx_fwd", "cvx_fwd_bwd", "vec_fwd_bwd", "plain_fwd_bwd", "copy_new", "copy_into"):
        print(f"{c:16s}" + "".join(
            f"{results['batches'][B]['per_call'][c]['minor_faults_per_call_median']:>20.0f}" for B in Bs))
    print("\ngoals (wall | cpu):")
    for name in results["goals"]["wall"]:
        print(f"  {name:45s} {results['goals']['wall'][name]:7.3f} | {results['goals']['cpu'][name]:7.3f}")
    print(f"peak RSS {results['peak_rss_mb']:.0f} MB")
    print("cuda:", results["cuda"] if isinstance(results["cuda"], str) else json.dumps(results["cuda"], indent=1))


def backward_floor(B: int = 64, repeats: int = 15) -> dict:
    """Where the time of forward + backward goes at ``B`` x 100 x 768 (issue 28): the kernels
    called directly (no autograd), the autograd calls, and the memory floor of a backward
    (read ``E``, write a same-size ``gE``: one copy into a preallocated buffer)."""
    cfg = TemporalFeaturesConfig()
    E_np, t_np = make_batch(B, seed=B)
    E, t = torch.from_numpy(E_np), torch.from_numpy(t_np)
    Eg = E.clone().requires_grad_(True)
    ln = np.full(B, T_POSTS, dtype=np.int64)
    out = np.empty((B, cfg.feature_dim(DIM)), dtype=np.float32)
    _, saved = kernels.forward(E_np, t_np, ln, cfg, out=out)
    G = np.random.default_rng(0).normal(size=out.shape)
    gE, dst = np.empty_like(E_np), np.empty_like(E_np)
    fns = {
        "kernel_fwd": lambda: kernels.forward(E_np, t_np, ln, cfg, out=out),
        "kernel_bwd": lambda: kernels.backward(E_np, t_np, ln, cfg, G, saved, gE=gE),
        "autograd_fwd_grad": lambda: TorchBackend.extract_all(Eg, t, cfg),
        "autograd_fwd_bwd": lambda: (setattr(Eg, "grad", None), TorchBackend.extract_all(Eg, t, cfg).sum().backward()),
        "copy_E_into_gE": lambda: np.copyto(dst, E_np),
    }
    res = measure(fns, block_ms=60.0, repeats=repeats)
    cpu = {k: v["cpu_ms_median"] for k, v in res.items()}
    res["ratios_cpu"] = {
        "kernel_bwd_over_kernel_fwd": cpu["kernel_bwd"] / cpu["kernel_fwd"],
        "autograd_fwd_bwd_over_fwd_grad": cpu["autograd_fwd_bwd"] / cpu["autograd_fwd_grad"],
        "autograd_overhead_ms": cpu["autograd_fwd_bwd"] - cpu["kernel_fwd"] - cpu["kernel_bwd"],
        "floor_fwd_bwd_over_fwd_if_autograd_free": (cpu["kernel_fwd"] + cpu["kernel_bwd"]) / cpu["kernel_fwd"],
        "copy_over_kernel_fwd": cpu["copy_E_into_gE"] / cpu["kernel_fwd"],
    }
    res["batch"], res["shape"], res["load_average"] = B, [B, T_POSTS, DIM], load_average()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backward-floor", action="store_true",
                    help="only the B = 64 breakdown of forward + backward (kernels, autograd, memory floor)")
    ap.add_argument("--quick", action="store_true", help="B = 1, 16, 64 only, few repeats (smoke run)")
    ap.add_argument("--cold-compile", action="store_true", help="also time a compile with an empty numba cache")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "features.json"))
    args = ap.parse_args()
    if args.backward_floor:
        kernels.compile_all()
        res = backward_floor()
        print(f"{'case (B = 64, 100 x 768)':<28} {'wall ms':>9} {'cpu ms':>9}")
        for k, v in res.items():
            if isinstance(v, dict) and "cpu_ms_median" in v:
                print(f"{k:<28} {v['wall_ms_median']:>9.2f} {v['cpu_ms_median']:>9.2f}")
        print(json.dumps(res["ratios_cpu"], indent=1), f"load average {res['load_average']}")
        out = Path(args.out).with_name("features_backward.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2))
        print(f"wrote {out}")
        return
    results = run(args.quick, args.cold_compile)
    print_table(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
