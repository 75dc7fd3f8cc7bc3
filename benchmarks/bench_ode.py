"""Benchmark the latent ODE block: forward and forward+backward cost per trajectory, and the
peak memory of adjoint vs direct backpropagation as the solver takes more steps.

Each memory case runs in its own subprocess (peak RSS above the RSS after warm-up, from
/proc/self/status VmHWM after a reset is not portable, so ``ru_maxrss`` of a fresh child).
Prints a table and writes ``benchmarks/results/ode.json``.

    .venv/bin/python benchmarks/bench_ode.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "ode.json"

CHILD = r"""
import json, resource, sys, torch
torch.set_num_threads(1)
from cvx_core.features.ode import ODEConfig, ODERNNEncoder
b, t, d, steps, adjoint = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
torch.manual_seed(0)
enc = ODERNNEncoder(d, ODEConfig(latent_dim=64, input_dim=64, hidden=256, steps=steps, adjoint=adjoint))
v = torch.randn(b, t, d)
ts = torch.cumsum(torch.rand(b, t, dtype=torch.float64) * 5, 1)
small = enc(v[:2, :3], ts[:2, :3]); small.sum().backward()  # warm-up (allocator, torchdiffeq import)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
h = enc(v, ts)
h.pow(2).sum().backward()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"extra_peak_mb": max(peak - base, 0) / 1024}))
"""


def _time(fn, repeats: int) -> float:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    import torch

    from cvx_core.features.ode import ODEConfig, ODERNNEncoder

    torch.set_num_threads(1)
    rows = []
    b, t = (8, 20) if args.quick else (32, 50)
    repeats = 3 if args.quick else 5
    for d in (384, 768):
        for adjoint in (False, True):
            torch.manual_seed(0)
            enc = ODERNNEncoder(d, ODEConfig(latent_dim=16, input_dim=32, adjoint=adjoint))
            v = torch.randn(b, t, d)
            ts = torch.cumsum(torch.rand(b, t, dtype=torch.float64) * 5, 1)

            def fwd():
                with torch.no_grad():
                    enc(v, ts)

            def fwd_bwd():
                enc.zero_grad()
                enc(v, ts).pow(2).sum().backward()

            f, fb = _time(fwd, repeats), _time(fwd_bwd, repeats)
            rows.append({"case": "time", "B": b, "T": t, "D": d, "adjoint": adjoint,
                         "fwd_ms_per_traj": 1e3 * f / b, "fwd_bwd_ms_per_traj": 1e3 * fb / b, "ratio": fb / f})
    mem = []
    mb, mt, md = (16, 30, 384) if args.quick else (64, 100, 384)
    for steps in (4, 16, 64):
        for adjoint in (False, True):
            out = subprocess.run([sys.executable, "-c", CHILD, str(mb), str(mt), str(md), str(steps), "1" if adjoint else "0"],
                                 capture_output=True, text=True, check=True)
            mem.append({"case": "memory", "B": mb, "T": mt, "D": md, "steps": steps, "adjoint": adjoint,
                        **json.loads(out.stdout.strip().splitlines()[-1])})
    print(f"machine: {platform.processor() or platform.machine()}, {platform.system()}, torch threads 1")
    print(f"{'D':>5} {'adjoint':>8} {'fwd ms/traj':>12} {'fwd+bwd ms/traj':>16} {'ratio':>6}   (B={b}, T={t}, latent 16, input 32, rk4x4)")
    for r in rows:
        print(f"{r['D']:>5} {str(r['adjoint']):>8} {r['fwd_ms_per_traj']:>12.3f} {r['fwd_bwd_ms_per_traj']:>16.3f} {r['ratio']:>6.2f}")
    print(f"\npeak memory above warm-up, B={mb}, T={mt}, D={md}, latent 64, hidden 256, one fwd+bwd")
    print(f"{'steps/gap':>9} {'direct MB':>10} {'adjoint MB':>11}")
    for steps in (4, 16, 64):
        dm = next(m for m in mem if m["steps"] == steps and not m["adjoint"])["extra_peak_mb"]
        am = next(m for m in mem if m["steps"] == steps and m["adjoint"])["extra_peak_mb"]
        print(f"{steps:>9} {dm:>10.1f} {am:>11.1f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": platform.platform(), "timing": rows, "memory": mem}, indent=2))
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
