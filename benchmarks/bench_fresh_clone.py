"""A newcomer's first session, timed end to end (issue 25, "Done when"): from ``git clone``
of the repository into a temporary folder, ``make install-run`` (a new ``.venv``; pip's
cache and the machine's wheel sources are allowed, as for any user), the app's server, and a
real browser (Playwright driving ``/usr/bin/chromium``) that opens the app, trains on the
shipped sample with the Train page's defaults and follows "Compare this run" to the Compare
view. Every stage's seconds and the load average around it are printed as a table and
written to ``benchmarks/results/fresh_clone.json``; the goal is under 4 minutes on 2 cores.

Run (one command; Playwright comes from the interpreter that runs this script, e.g. the dev
venv): ``python benchmarks/bench_fresh_clone.py [--repo PATH_OR_URL] [--keep]``. The clone
takes the repository's committed ``HEAD`` (``--repo`` defaults to this checkout). On a
failure the JSON records the stage that failed and its error, with a screenshot and the
server's log kept next to it; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "fresh_clone.json"
CHROMIUM = os.environ.get("CVX_CHROMIUM", "/usr/bin/chromium")
GOAL_S = 240.0


class Stages:
    """Seconds and load averages per stage, in order."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.t0 = time.perf_counter()

    def run(self, name: str, fn: Any, *args: Any, **kw: Any) -> Any:
        load0 = os.getloadavg()[0]
        t = time.perf_counter()
        print(f"==> {name} ...", flush=True)
        try:
            return fn(*args, **kw)
        finally:
            self.rows.append({"stage": name, "seconds": round(time.perf_counter() - t, 1),
                              "load_1min_start": round(load0, 2), "load_1min_end": round(os.getloadavg()[0], 2)})
            print(f"    {self.rows[-1]}", flush=True)

    def add(self, name: str, seconds: float, **extra: Any) -> None:
        self.rows.append({"stage": name, "seconds": round(seconds, 1), **extra})


def clone(repo: str, dest: Path) -> str:
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", repo, str(dest)], check=True)
    return subprocess.run(["git", "-C", str(dest), "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()


def install(dest: Path, python: str, log: Path, stages: Stages) -> None:
    """``make install-run``; its ``==> [k/4]`` lines split the time into steps."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "NUMBA_CACHE_DIR")}
    cmd = ["make", "install-run", f"PYTHON={python}"]
    marks: list[tuple[str, float, float]] = []
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(cmd, cwd=dest, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line)
            if line.startswith("==> "):
                marks.append((line[4:].strip(), time.perf_counter(), os.getloadavg()[0]))
                print(f"    {line.strip()}", flush=True)
            elif "UMAP compiled in" in line:
                print(f"    {line.strip()}", flush=True)
        rc = proc.wait()
    end = time.perf_counter()
    for k, (what, t, load) in enumerate(marks):
        stop = marks[k + 1][1] if k + 1 < len(marks) else end
        stages.add(f"install: {what[:70]}", stop - t, load_1min_start=round(load, 2))
    if rc != 0:
        raise RuntimeError(f"make install-run exited {rc}; see {log}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(dest: Path, workspace: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "NUMBA_CACHE_DIR",
                                                             "CVX_DATASET", "CVX_WARM_UMAP")}
    env.update({"CVX_WORKSPACE": str(workspace), "PYTHONUNBUFFERED": "1"})
    proc = subprocess.Popen(
        [str(dest / ".venv" / "bin" / "python"), "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false"],
        cwd=dest, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}); see {log}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return proc, url
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the server was not healthy after 300 s; see {log}")


def _wait_for_app(page: Any, timeout: int) -> None:
    page.wait_for_selector("[data-testid='stApp'][data-test-connection-state='CONNECTED']", timeout=timeout)
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=timeout)
    page.wait_for_function("document.querySelectorAll(\"[data-testid='stSkeleton']\").length === 0",
                           timeout=timeout)


def walk(url: str, stages: Stages, shots: Path, *, train_timeout_s: int) -> dict[str, Any]:
    """Home -> Train (the sample, the page's defaults) -> Start -> finished -> Compare."""
    from playwright.sync_api import expect, sync_playwright

    load_ms, train_ms = 180_000, train_timeout_s * 1000
    found: dict[str, Any] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                                                      "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            def home() -> None:
                page.goto(url)
                _wait_for_app(page, load_ms)
                page.get_by_test_id("stMain").get_by_role("heading").first.wait_for(timeout=load_ms)

            def train_page() -> None:
                page.get_by_test_id("stSidebar").get_by_role("link", name="Train", exact=True).click()
                page.wait_for_url(re.compile(r"/train(\?.*)?$"), timeout=load_ms)
                main = page.get_by_test_id("stMain")
                main.get_by_role("button", name="Start training").wait_for(timeout=load_ms)
                _wait_for_app(page, load_ms)
                found["dataset"] = main.get_by_role("combobox", name="Dataset to train on").input_value()
                if not found["dataset"].startswith("sample"):
                    raise RuntimeError(f"the Train page opened on {found['dataset']!r}, not the shipped sample")

            def training() -> None:
                main = page.get_by_test_id("stMain")
                main.get_by_role("button", name="Start training").click()
                main.get_by_test_id("stProgress").first.wait_for(timeout=load_ms)
                expect(main.get_by_role("button", name=re.compile("^Stop"))).to_have_count(0, timeout=train_ms)
                main.get_by_text("Test ROC AUC").first.wait_for(timeout=load_ms)
                _wait_for_app(page, load_ms)
                box = main.get_by_test_id("stMetric").filter(has_text="Test ROC AUC").first
                found["test_auc"] = box.get_by_test_id("stMetricValue").inner_text().strip()

            def compare() -> None:
                main = page.get_by_test_id("stMain")
                main.get_by_role("link", name=re.compile("^Compare this run")).click()
                page.wait_for_url(re.compile(r"/compare\?run="), timeout=load_ms)
                page.get_by_test_id("stMain").get_by_role("combobox", name="Run").wait_for(timeout=load_ms)
                _wait_for_app(page, load_ms)
                found["compare_url"] = page.url

            stages.run("browser: open the app (first page)", home)
            stages.run("browser: Train page on the sample", train_page)
            stages.run("browser: train with the page's defaults until the results show", training)
            stages.run("browser: 'Compare this run' -> Compare view", compare)
            page.screenshot(path=str(shots / "fresh_clone_compare.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(shots / "fresh_clone_failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", default=str(ROOT), help="what to clone (default: this checkout; its HEAD commit)")
    ap.add_argument("--python", default="python3", help="the interpreter make uses to create .venv")
    ap.add_argument("--train-timeout", type=int, default=1800, help="seconds the training may take")
    ap.add_argument("--keep", action="store_true", help="keep the temporary clone, workspace and logs")
    ap.add_argument("--out", type=Path, default=RESULTS, help="the JSON results file")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="cvx-fresh-clone-"))
    dest, workspace, logs = tmp / "cvx", tmp / "workspace", tmp / "logs"
    logs.mkdir()
    stages = Stages()
    doc: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "repo": args.repo, "load_average_start": os.getloadavg(), "goal_s": GOAL_S,
    }
    server = None
    ok = False
    try:
        doc["commit"] = stages.run("git clone", clone, args.repo, dest)
        t_install = time.perf_counter()
        install(dest, args.python, logs / "install.log", stages)
        stages.add("install: make install-run (total)", time.perf_counter() - t_install)
        server, url = stages.run("server: start until healthy", start_server, dest, workspace, logs / "server.log")
        doc["walk"] = walk(url, stages, logs, train_timeout_s=args.train_timeout)
        ok = True
    except Exception as exc:  # recorded in the JSON; the stages done so far are kept
        doc["error"] = f"{type(exc).__name__}: {exc}"
        print(f"FAILED: {doc['error']}", file=sys.stderr)
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
    log = (logs / "server.log").read_text(errors="replace") if (logs / "server.log").exists() else ""
    doc["server_log_tracebacks"] = log.count("Traceback (most recent call last)")
    doc["stages"] = stages.rows
    counted = [r for r in stages.rows if not r["stage"].startswith("install: ") or r["stage"].endswith("(total)")]
    doc["total_s"] = round(sum(r["seconds"] for r in counted), 1)
    doc["ok"] = ok
    doc["under_goal"] = ok and doc["total_s"] < GOAL_S
    doc["load_average_end"] = os.getloadavg()
    print(f"\n{'stage':<72} {'s':>7} {'load':>5}")
    for r in stages.rows:
        print(f"{r['stage'][:72]:<72} {r['seconds']:>7.1f} {r.get('load_1min_start', float('nan')):>5.1f}")
    print(f"{'TOTAL (clone to Compare)':<72} {doc['total_s']:>7.1f}   goal < {GOAL_S:.0f} s: "
          f"{'met' if doc['under_goal'] else 'NOT met'}; load average {doc['load_average_start']} -> "
          f"{doc['load_average_end']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.keep or not ok:
        doc["kept"] = str(tmp)
    args.out.write_text(json.dumps(doc, indent=2))
    print(f"wrote {args.out}", flush=True)
    if not args.keep:  # a failure keeps only its logs and screenshots
        shutil.rmtree(tmp if ok else dest, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
