"""Scale benchmark: peak memory and time of ``extract`` against dataset size, and throughput
against workers.

Datasets are the sample's recipe (240 planted-drift users, D=384, about 6.4k posts) repeated
1x to 50x with different seeds (50x = 12,000 users, ~320k posts, ~490 MB of float32
embeddings), written as Parquet in the layout ``save_trajectories`` uses, one row group per
240-user block (as an incremental writer produces them); the largest is also written as a
single row group (as an in-memory ``save_trajectories`` would), to show that reading it is
still streamed. Every measurement runs in a fresh subprocess (``python -m cvx_core
extract ...``) and reports its own peak RSS (``VmHWM``: ``ru_maxrss`` would carry the
parent's peak across exec) and wall time; the in-memory path
(``load_trajectories`` + the feature vectors, what ``extract`` did before streaming) is
measured the same way for comparison.

CPU seconds (user + system of the process and its children) are reported beside wall time:
on a shared machine they are the steadier measure of per-user cost (the projection in
docs/scale.md uses them); Ray's worker processes are not children of the driver, so the
throughput table reports wall time only.

Usage: ``python benchmarks/bench_scale.py [--sizes 1 5 10 25 50] [--workers 1 2]
[--throughput-size 5] [--skip-inmemory-above 50]``; prints tables and writes
``benchmarks/results/scale.json``.

``--workers-read [--throughput-size 25 --analyze-size 2 --rounds 3 --workers 1 2]``:
throughput against workers on one local Ray cluster of 2 CPUs started once (its start-up
reported apart), side by side in interleaved rounds: ``extract_ray`` / ``analyze_ray`` with
workers that read their own row ranges, the driver-read path they replace, and the local
streamed path; medians, the load average after each round, and the model's parts (driver planning ms per 1k rows, one
worker's read+compute users/s measured in-process, the driver's writing cost per user).
Writes ``benchmarks/results/scale_workers.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_RUNNER = r"""
import json, resource, sys, time
t0 = time.perf_counter()
mode, args = sys.argv[1], sys.argv[2:]
if mode == "cli":
    from cvx_core.cli import main
    rc = main(args)
else:  # the in-memory path: load everything, then the feature vectors
    from cvx_core.data.io import load_trajectories
    from cvx_core.scale.stream import features_frame, write_frames
    ts = load_trajectories(args[0])
    write_frames(args[1], iter([features_frame(ts)]))
    rc = 0
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
# VmHWM: this process's own peak (ru_maxrss survives exec on Linux, so it can carry the parent's peak)
hwm = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")]
print("RESULT " + json.dumps({"rc": rc, "seconds": time.perf_counter() - t0,
                              "cpu_seconds": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
                              "peak_rss_mb": (hwm[0] if hwm else me.ru_maxrss) / 1024}))
"""


def make_dataset(path: Path, blocks: int, *, single_row_group: bool = False) -> dict[str, int]:
    """``blocks`` x 240 users written block by block (or as one row group)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cvx_core.data.synthetic import make_planted_trajectory_set
    from cvx_core.data.trajectory import Trajectory, TrajectorySet
    from cvx_core.scale.stream import posts_table

    users = posts = 0
    tables = []
    writer = None
    tmp = path.with_suffix(".tmp")
    for k in range(blocks):
        ts, _ = make_planted_trajectory_set(n_users=240, dim=384, seed=1000 + k)
        ts = TrajectorySet([Trajectory(f"b{k:03d}_{tr.user_id}", tr.embeddings, tr.datetimes, label=tr.label)
                            for tr in ts])
        table = posts_table(ts)
        users += len(ts)
        posts += ts.n_posts
        if single_row_group:
            tables.append(table)
            continue
        if writer is None:
            writer = pq.ParquetWriter(tmp, table.schema, compression="zstd",
                                      use_byte_stream_split=["embedding.list.element"])
        writer.write_table(table)
    if single_row_group:
        whole = pa.concat_tables(tables)
        pq.write_table(whole, tmp, compression="zstd", use_byte_stream_split=["embedding.list.element"],
                       row_group_size=whole.num_rows)
    elif writer is not None:
        writer.close()
    os.replace(tmp, path)
    return {"users": users, "posts": posts}


def run(mode: str, args: list[str], *, timeout: float = 3600) -> dict:
    proc = subprocess.run([sys.executable, "-c", _RUNNER, mode, *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{mode} {args} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def _model_parts(path: Path, users: int, concurrency: int, *, job: str = "extract") -> dict:
    """The projection's inputs for ``job``, measured in this process (CPU seconds): planning,
    one worker's read+parse+compute rate (every partition run here in turn, after a warm-up
    partition), and the driver's share per user (folding the partitions' results in order,
    the cohort sums for analyze, and writing the output Parquet)."""
    import statistics

    import pyarrow as pa

    from cvx_core.data.parse import FileRules
    from cvx_core.scale.chunks import count_rows
    from cvx_core.scale.partitions import auto_target_rows, check_against, plan_parquet, run_partition
    from cvx_core.scale.stream import _CohortSums, analyze_chunk, features_frame, write_frames

    n_rows = count_rows(path)
    plans = [plan_parquet(path, target_rows=auto_target_rows(n_rows, concurrency)) for _ in range(3)]
    plan_s = statistics.median(p.seconds for p in plans)
    if job == "extract":
        def work(ts):  # as a worker does it: features, then the Arrow table
            return pa.Table.from_pandas(features_frame(ts), preserve_index=False)
    else:
        work = analyze_chunk
    run_partition(path, plans[0].partitions[0], work, chunk_users=512)  # warm (numba, imports)
    t0 = time.process_time()
    results = [run_partition(path, part, work, chunk_users=512) for part in plans[0].partitions]
    worker_cpu = time.process_time() - t0
    t0 = time.process_time()
    rules, sums = FileRules(), _CohortSums()

    def frames():
        for part, res in zip(plans[0].partitions, results):
            check_against(path, part, res, rules)
            for out in res.outputs:
                if job == "analyze":
                    sums.add(*out)
                    out = out[0]
                yield out

    write_frames(path.with_name("gather.parquet"), frames())
    driver_s = time.process_time() - t0
    return {"job": job, "rows": n_rows, "users": users, "partitions": len(plans[0].partitions),
            "plan_s": round(plan_s, 4), "plan_ms_per_1k_rows": round(1e6 * plan_s / n_rows, 3),
            "plan_us_per_user": round(1e6 * plan_s / users, 2),
            "worker_cpu_s": round(worker_cpu, 3), "worker_users_per_cpu_s": round(users / worker_cpu, 1),
            "worker_ms_per_user": round(1000 * worker_cpu / users, 3),
            "driver_us_per_user": round(1e6 * driver_s / users, 2)}


def _side_by_side(job: str, path: Path, info: dict, workers: list[int], rounds: int) -> list[dict]:
    """``job`` ("extract" / "analyze") on the local stream, the driver-read Ray path and
    workers that read, in interleaved rounds (the order reversed every other round)."""
    import statistics

    from cvx_core.scale.ray_engine import analyze_ray, extract_ray
    from cvx_core.scale.stream import analyze_stream, extract_stream

    out = path.with_name(f"{job}_out.parquet")
    local = (lambda: extract_stream(path, out)) if job == "extract" else (lambda: analyze_stream(path, out=out))

    from cvx_core.scale import ray_engine

    worker_cpu: list[float] = []
    real_run_parts = ray_engine._run_parts

    def spy(*args, **kwargs):  # the workers' own CPU seconds, from their partition results
        for res in real_run_parts(*args, **kwargs):
            worker_cpu.append(res.cpu_seconds)
            yield res

    ray_engine._run_parts = spy

    def on_ray(w: int, wr: bool) -> None:
        if job == "extract":
            extract_ray(path, out, workers=w, workers_read=wr)
        else:
            analyze_ray(path, out=out, workers=w, workers_read=wr)

    configs = [("local streamed", None, False)] + [("ray, driver reads (before)", w, False) for w in workers] + \
              [("ray, workers read", w, True) for w in workers]
    for _, w, wr in configs:  # warm-up: imports, numba compiles (here and in the workers)
        local() if w is None else on_ray(w, wr)
    times: dict[tuple, list[float]] = {(n, w): [] for n, w, _ in configs}
    cpu: dict[tuple, list[tuple[float, float]]] = {(n, w): [] for n, w, _ in configs}
    load = [os.getloadavg()[0]]
    for r in range(rounds):
        for name, w, wr in (configs if r % 2 == 0 else configs[::-1]):
            worker_cpu.clear()
            t, c = time.perf_counter(), time.process_time()
            local() if w is None else on_ray(w, wr)
            times[(name, w)].append(time.perf_counter() - t)
            cpu[(name, w)].append((time.process_time() - c, sum(worker_cpu)))
        load.append(os.getloadavg()[0])
    ray_engine._run_parts = real_run_parts
    print(f"\n{job} on {info['users']} users, {info['posts']} posts, 2-CPU local Ray cluster, median of {rounds} "
          f"interleaved rounds; 1-min load average {' / '.join(f'{x:.1f}' for x in load)} (before, after each round)")
    print(f"{'path':>28} {'workers':>8} {'median s':>9} {'users/s':>9} {'driver CPU ms/user':>19} "
          f"{'workers CPU ms/user':>20} {'runs s':>24}")
    rows = []
    for name, w, _ in configs:
        ts = times[(name, w)]
        med = statistics.median(ts)
        drv = statistics.median(c[0] for c in cpu[(name, w)]) * 1000 / info["users"]
        wrk = statistics.median(c[1] for c in cpu[(name, w)]) * 1000 / info["users"]
        row = {"job": job, "path": name, "workers": w or 1, "median_s": round(med, 3),
               "users_per_s": round(info["users"] / med, 1), "runs_s": [round(x, 3) for x in ts],
               "driver_cpu_ms_per_user": round(drv, 3), "workers_cpu_ms_per_user": round(wrk, 3) if wrk else None,
               "load": load}
        rows.append(row)
        print(f"{name:>28} {row['workers']:>8} {med:>9.2f} {row['users_per_s']:>9.0f} {drv:>19.3f} "
              f"{(f'{wrk:.3f}' if wrk else '-'):>20} {' '.join(f'{x:.2f}' for x in ts):>24}", flush=True)
    return rows


def model_parts(data: dict[str, tuple[Path, dict]], workers: list[int]) -> list[dict]:
    """:func:`_model_parts` for every job, printed."""
    parts = []
    print("\nmodel parts (CPU, in-process): planning / one worker / the driver's share")
    for job, (path, info) in data.items():
        p = _model_parts(path, info["users"], max(workers), job=job)
        p["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")  # Ray sets 1 in its workers
        parts.append(p)
        print(f"{job:>8}: planning {p['plan_ms_per_1k_rows']} ms per 1k rows ({p['plan_us_per_user']} us/user, "
              f"{p['partitions']} partitions); one worker {p['worker_ms_per_user']} ms/user "
              f"({p['worker_users_per_cpu_s']} users per CPU-s); driver {p['driver_us_per_user']} us/user", flush=True)
    return parts


def workers_read_bench(data: dict[str, tuple[Path, dict]], workers: list[int], rounds: int, out_json: Path) -> None:
    """Throughput against workers, side by side in interleaved rounds on one 2-CPU cluster
    (``data``: job -> (file, its sizes)), and the projection model's parts."""
    import ray

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=1 << 30, log_to_driver=False,
             configure_logging=False)
    startup = time.perf_counter() - t0
    rows = []
    for job, (path, info) in data.items():
        rows += _side_by_side(job, path, info, workers, rounds)
    ray.shutdown()
    parts = model_parts(data, workers)
    load_after = os.getloadavg()
    print(f"ray.init (2 CPUs) {startup:.1f} s; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                          "note": "shared 2-core VM, other jobs running"},
              "load_average_before": load_before, "load_average_after": load_after, "rounds": rounds,
              "datasets": {job: info for job, (_, info) in data.items()}, "ray_init_s": round(startup, 2),
              "throughput": rows, "model_parts": parts, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out_json}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 5, 10, 25, 50])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--throughput-size", type=int, default=5)
    ap.add_argument("--skip-inmemory-above", type=int, default=50)
    ap.add_argument("--chunk-users", type=int, default=512)
    ap.add_argument("--data-dir", default=None, help="where the generated files go (default: a temp folder)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scale.json"))
    ap.add_argument("--workers-read", action="store_true",
                    help="only the throughput of workers that read their own row ranges (see above)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model-parts", action="store_true", help="only the model's parts (see above)")
    ap.add_argument("--analyze-size", type=int, default=2, help="--workers-read: the analyze file (x 240 users)")
    opts = ap.parse_args()

    data_dir = Path(opts.data_dir or tempfile.mkdtemp(prefix="cvx-bench-scale-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict] = {}

    def dataset(size: int, single: bool = False) -> tuple[Path, dict]:
        name = f"x{size}{'_one_rowgroup' if single else ''}.parquet"
        p = data_dir / name
        if name not in files:
            meta = p.with_suffix(".json")
            if p.exists() and meta.exists():  # generated by an earlier run (same recipe)
                info = json.loads(meta.read_text())
            else:
                info = make_dataset(p, size, single_row_group=single)
                info["mb_on_disk"] = round(p.stat().st_size / 2**20, 1)
                meta.write_text(json.dumps(info))
            files[name] = info
        return p, files[name]

    if opts.workers_read or opts.model_parts:
        data = {"extract": dataset(opts.throughput_size), "analyze": dataset(opts.analyze_size)}
        out = Path(opts.out).with_name("scale_workers.json")
        if opts.workers_read:
            workers_read_bench(data, opts.workers, opts.rounds, out)
        else:  # the model's parts alone, added to an earlier --workers-read result
            doc = json.loads(out.read_text()) if out.exists() else {}
            doc["model_parts"] = model_parts(data, opts.workers)
            doc["model_parts_load_average"] = os.getloadavg()
            out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        return
    memory_rows = []
    print(f"{'size':>6} {'users':>7} {'posts':>8} {'path':>22} {'peak RSS MB':>12} {'seconds':>9} {'CPU s':>8} "
          f"{'CPU ms/user':>12}")
    cases = [(s, False) for s in opts.sizes] + [(max(opts.sizes), True)]
    for size, single in cases:
        path, info = dataset(size, single)
        out = data_dir / "features.parquet"
        paths = [("streamed", "cli", ["extract", str(path), "--out", str(out), "--chunk-users", str(opts.chunk_users)])]
        if not single and size <= opts.skip_inmemory_above:
            paths.append(("in-memory (before)", "inmemory", [str(path), str(out)]))
        for label, mode, args in paths:
            r = run(mode, args)
            row = {"size_x": size, "single_row_group": single, "path": label, **info,
                   "peak_rss_mb": round(r["peak_rss_mb"], 1), "seconds": round(r["seconds"], 2),
                   "cpu_seconds": round(r["cpu_seconds"], 2),
                   "users_per_s": round(info["users"] / r["seconds"], 1),
                   "cpu_ms_per_user": round(1000 * r["cpu_seconds"] / info["users"], 2)}
            memory_rows.append(row)
            tag = label + (" 1-RG" if single else "")
            print(f"{size:>5}x {info['users']:>7} {info['posts']:>8} {tag:>22} {row['peak_rss_mb']:>12.0f} "
                  f"{row['seconds']:>9.1f} {row['cpu_seconds']:>8.1f} {row['cpu_ms_per_user']:>12.2f}", flush=True)

    throughput_rows = []
    path, info = dataset(opts.throughput_size)
    print(f"\nthroughput on {info['users']} users ({opts.throughput_size}x), extract:")
    print(f"{'engine':>8} {'workers':>8} {'seconds':>9} {'users/s':>8} {'peak RSS MB (driver)':>21}")
    engines = [("local", None)] + [("ray", w) for w in opts.workers]
    for engine, w in engines:
        out = data_dir / "features.parquet"
        args = ["extract", str(path), "--out", str(out), "--chunk-users", str(min(opts.chunk_users, 256))]
        if engine == "ray":
            args += ["--engine", "ray", "--workers", str(w)]
        r = run("cli", args)
        row = {"engine": engine, "workers": w or 1, "users": info["users"], "seconds": round(r["seconds"], 2),
               "users_per_s": round(info["users"] / r["seconds"], 1), "peak_rss_mb_driver": round(r["peak_rss_mb"], 1)}
        throughput_rows.append(row)
        print(f"{engine:>8} {row['workers']:>8} {row['seconds']:>9.1f} {row['users_per_s']:>8.1f} "
              f"{row['peak_rss_mb_driver']:>21.0f}", flush=True)

    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "note": "shared machine (other jobs running); one run per cell"},
        "chunk_users": opts.chunk_users,
        "memory": memory_rows,
        "throughput": throughput_rows,
        "files": files,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {opts.out}")


if __name__ == "__main__":
    main()
