"""Shared fixtures: the shipped sample, small planted sets, and an isolated workspace."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

# CI (CI=true) replays the same examples every run, so a landing is never decided by a new
# random draw; local runs keep exploring new examples (and keep failures in .hypothesis/).
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data" / "sample.parquet"
TRUTH = ROOT / "sample_data" / "truth.json"


@pytest.fixture(scope="session")
def sample_set():
    from cvx_core.data.io import load_trajectories

    return load_trajectories(SAMPLE)


@pytest.fixture(scope="session")
def sample_truth() -> dict:
    return json.loads(TRUTH.read_text())


@pytest.fixture
def app_workspace(tmp_path, monkeypatch) -> Path:
    """An empty app workspace (``CVX_WORKSPACE``) with no preselected dataset (``CVX_DATASET``)
    and no UMAP warm-up thread (``CVX_WARM_UMAP=0``)."""
    ws = tmp_path / "ws"
    monkeypatch.setenv("CVX_WORKSPACE", str(ws))
    monkeypatch.delenv("CVX_DATASET", raising=False)
    monkeypatch.setenv("CVX_WARM_UMAP", "0")  # no numba compile thread inside the test process
    return ws


@pytest.fixture
def open_app():
    """``open_app(page=None, *, timeout=120)``: an AppTest of ``app.py`` after its first run,
    switched to ``page`` (e.g. ``"pages/2_explore.py"``) when one is given."""
    from streamlit.testing.v1 import AppTest

    def _open(page: str | None = None, *, timeout: float = 120):
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout).run()
        if page is not None:
            at.switch_page(page).run()
        return at

    return _open


@pytest.fixture(scope="session")
def small_planted():
    """A small planted set (40 users, D=32) and its truth, for fast tests."""
    from cvx_core.data.synthetic import PlantedConfig, make_planted_trajectory_set

    cfg = PlantedConfig(n_users=40, dim=32, n_planted=4, mean_posts=15, max_posts=40)
    return make_planted_trajectory_set(config=cfg, seed=7, name="small")


# ---- `slow` covers every training ---------------------------------------------------------
# A run that leaves out the slow tests (``make test-fast``: ``-m "not e2e and not slow"``)
# must not train: there, a test that is not marked ``slow`` and starts a training loop
# (``Trainer.run``, which ``train``, ``cross_validate``, ``TemporalClassifier.fit`` and DDP
# go through, or ``fit_forecaster``) fails at once, naming itself. With
# ``CVX_RECORD_TRAINING=FILE`` such tests are listed in FILE instead (to find them).
_RUNNING: list[Any] = []  # the test item being set up, run or torn down


def _slow_left_out(config: Any) -> bool:
    return "not slow" in " ".join((config.getoption("markexpr") or "").split())


def _guarded(fn: Any, what: str) -> Any:
    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        item = _RUNNING[-1] if _RUNNING else None
        if item is not None and item.get_closest_marker("slow") is None:
            record = os.environ.get("CVX_RECORD_TRAINING")
            if record:
                with open(record, "a", encoding="utf-8") as fh:
                    fh.write(f"{item.nodeid}\t{what}\n")
            else:
                pytest.fail(f"{item.nodeid} trains ({what}) but is not marked @pytest.mark.slow; mark it "
                            "slow (make test-fast leaves out every training)", pytrace=False)
        return fn(*args, **kwargs)

    guarded.__cvx_guarded__ = True  # type: ignore[attr-defined]
    return guarded


def pytest_configure(config: Any) -> None:
    if not (_slow_left_out(config) or os.environ.get("CVX_RECORD_TRAINING")):
        return
    from cvx_core.learn import forecast, trainer

    if not getattr(trainer.Trainer.run, "__cvx_guarded__", False):
        trainer.Trainer.run = _guarded(trainer.Trainer.run, "Trainer.run")
        forecast.fit_forecaster = _guarded(forecast.fit_forecaster, "fit_forecaster")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: Any, nextitem: Any) -> Any:
    _RUNNING.append(item)
    try:
        yield
    finally:
        _RUNNING.pop()
