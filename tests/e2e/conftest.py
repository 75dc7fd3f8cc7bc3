"""Real-browser fixtures: a Streamlit server on a free 127.0.0.1 port with a temporary
workspace, and Playwright driving Debian's Chromium (``/usr/bin/chromium``; no browser
download). Without Chromium the e2e tests skip, unless ``CVX_REQUIRE_E2E=1`` (then fail).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = os.environ.get("CVX_CHROMIUM", "/usr/bin/chromium")
REQUIRE = os.environ.get("CVX_REQUIRE_E2E", "") == "1"


def _missing_reason() -> str | None:
    if not Path(CHROMIUM).is_file():
        return f"Chromium not found at {CHROMIUM} (apt-get install chromium, or set CVX_CHROMIUM)"
    try:
        import playwright  # noqa: F401
        import pytest_playwright  # noqa: F401
    except ImportError as exc:
        return f"pytest-playwright is not installed ({exc})"
    return None


def _need_browser() -> None:
    """Skip (or, with ``CVX_REQUIRE_E2E=1``, fail) when the browser stack is missing."""
    reason = _missing_reason()
    if reason is not None:
        if REQUIRE:
            pytest.fail(f"CVX_REQUIRE_E2E=1 but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session", autouse=True)
def _browser_available() -> None:
    """Runs before the browser fixtures, so a missing Chromium skips instead of erroring."""
    _need_browser()


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Launch Debian's Chromium with flags that suit a headless CI box."""
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-dev-shm-usage",
        ],
    }


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": {"width": 1400, "height": 1000}}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StreamlitServer:
    """A ``python -m streamlit run app.py`` process; ``url`` is its root."""

    def __init__(self, workspace: Path, log: Path) -> None:
        self.workspace = workspace
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "CVX_WORKSPACE": str(workspace), "PYTHONUNBUFFERED": "1"}
        env.pop("CVX_DATASET", None)
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "streamlit", "run", "app.py",
                "--server.headless", "true",
                "--server.address", "127.0.0.1",
                "--server.port", str(self.port),
                "--server.fileWatcherType", "none",
                "--browser.gatherUsageStats", "false",
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.log_path = log

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited early:\n{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        return
            except OSError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"streamlit not healthy after {timeout}s:\n{self.log_path.read_text()[-3000:]}")

    def assert_clean_log(self) -> None:
        """Fail if the server logged a Python traceback (an exception in a page or thread)."""
        text = self.log_path.read_text(errors="replace")
        if "Traceback (most recent call last)" in text:
            raise AssertionError(f"the Streamlit server logged an exception:\n{text[-4000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


def _start(tmp_path_factory, tag: str) -> StreamlitServer:
    base = tmp_path_factory.mktemp(f"e2e-{tag}")
    server = StreamlitServer(base / "workspace", base / "streamlit.log")
    server.wait_healthy()
    return server


@pytest.fixture(scope="session")
def app_server(tmp_path_factory) -> Iterator[StreamlitServer]:
    """One server shared by the e2e tests of a session (root is loaded first by tests)."""
    _need_browser()
    server = _start(tmp_path_factory, "shared")
    yield server
    server.stop()
    server.assert_clean_log()


@pytest.fixture
def cold_server(tmp_path_factory) -> Iterator[StreamlitServer]:
    """A freshly started server that no browser has talked to yet."""
    _need_browser()
    server = _start(tmp_path_factory, "cold")
    yield server
    server.stop()
    server.assert_clean_log()


@pytest.fixture
def streamed_server(tmp_path_factory, monkeypatch) -> Iterator[StreamlitServer]:
    """A fresh server that treats every dataset of 1,000 posts or more as large
    (``CVX_STREAM_ANALYSIS_POSTS=1000``): the Explore page streams the sample's analysis."""
    _need_browser()
    monkeypatch.setenv("CVX_STREAM_ANALYSIS_POSTS", "1000")
    server = _start(tmp_path_factory, "streamed")
    yield server
    server.stop()
    server.assert_clean_log()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
