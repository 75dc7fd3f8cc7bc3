"""A new analyst's walk through the app on real data (issue 25), in a real browser:
open the shipped real-text sample -> Explore a change point with its words -> train on the
labelled users -> Compare -> export a selection and a PNG; the server log stays clean.
Then screenshots of every page in both themes on the sample, the real-text sample and a
multi-class set (UEA BasicMotions from the aeon wheel), kept in tests/artifacts.

The tests of this module share one fresh server and run in order.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.e2e

try:  # the browser fixtures (page, browser, …) come from pytest-playwright
    import pytest_playwright  # noqa: F401
except ImportError:  # pragma: no cover - depends on the environment
    if os.environ.get("CVX_REQUIRE_E2E", "") == "1":
        raise
    pytest.skip("pytest-playwright is not installed", allow_module_level=True)

from playwright.sync_api import expect  # noqa: E402

from test_e2e_app import LOAD_TIMEOUT, nav, open_page, shot, wait_for_app  # noqa: E402

TRAIN_TIMEOUT = 900_000  # ms


def _helpers():
    spec = importlib.util.spec_from_file_location("cvx_e2e_conftest_rt", Path(__file__).with_name("conftest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def basic_motions():
    """UEA BasicMotions (80 users, 6 channels, 4 classes): the archive files shipped in
    ``benchmarks/data/uea`` (copied from the aeon 1.6.0 wheel, BSD-3-Clause), read by the
    benchmarks' own ``.ts`` reader, or ``None`` when they are missing."""
    from cvx_core.data.trajectory import Trajectory, TrajectorySet

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("cvx_real_sets", root / "benchmarks" / "real_sets.py")
    real_sets = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = real_sets  # its dataclasses look their module up while being defined
    spec.loader.exec_module(real_sets)
    files = [real_sets.UEA / f"BasicMotions_{part}.ts.gz" for part in ("TRAIN", "TEST")]
    if not all(f.is_file() for f in files):
        return None
    rows = [row for path in files for row in zip(*real_sets.read_ts(path))]
    classes = sorted({lab for _, lab in rows})
    start = np.datetime64("2020-01-01T00:00:00", "ns")
    trajs = []
    for i, (x, lab) in enumerate(rows):
        steps = (np.arange(x.shape[0]) * 1e8).astype("timedelta64[ns]")  # 10 Hz
        trajs.append(Trajectory(f"motion_{i:03d}", x.astype(np.float32), start + steps, label=classes.index(lab)))
    return TrajectorySet(trajs, name="basic_motions")


@pytest.fixture(scope="module")
def rt_server(tmp_path_factory):
    helpers = _helpers()
    helpers._need_browser()
    server = helpers._start(tmp_path_factory, "realtext")
    motions = basic_motions()
    if motions is not None:
        from cvx_core.data.io import save_trajectories

        save_trajectories(motions, server.workspace / "datasets" / "basic_motions.parquet")
    yield server
    server.stop()
    server.assert_clean_log()


def _sidebar_dataset(page, name: str) -> None:
    side = page.get_by_test_id("stSidebar")
    side.get_by_role("combobox", name="Dataset").click()
    page.get_by_role("option", name=re.compile(rf"^{re.escape(name)}( \(shipped sample\))?$")).click()
    wait_for_app(page)


def _download(page, button_name: str, *, timeout: int = 120_000) -> Path:
    with page.expect_download(timeout=timeout) as info:
        page.get_by_test_id("stMain").get_by_role("button", name=button_name, exact=True).first.click()
    path = info.value.path()
    assert path is not None and Path(path).stat().st_size > 0
    return Path(path)


def test_a_new_analyst_walks_the_real_text_sample_from_explore_to_compare(page, rt_server, artifacts):
    import pandas as pd

    open_page(page, rt_server)
    # both shipped samples are listed from the first start
    side = page.get_by_test_id("stSidebar")
    side.get_by_role("combobox", name="Dataset").click()
    expect(page.get_by_role("option", name="real_text (shipped sample)")).to_have_count(1)
    page.keyboard.press("Escape")
    _sidebar_dataset(page, "real_text")

    # Explore opens on the user with the strongest change point, with its words
    nav(page, "Explore")
    main = page.get_by_test_id("stMain")
    main.get_by_text("What changed, in words").wait_for(timeout=LOAD_TIMEOUT)
    wait_for_app(page)
    expect(main.get_by_text(re.compile(r"^Change point 1"))).to_have_count(1, timeout=LOAD_TIMEOUT)
    expect(main.get_by_text("Example posts after")).to_have_count(0)  # no wall of full posts
    highlighted = main.locator("[data-testid='stMarkdownContainer'] span[class*='st-']").count() + \
        main.locator("[data-testid='stMarkdownContainer'] span[style*='background']").count()
    assert highlighted > 0, "the change point's terms are highlighted"
    height = page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollHeight")
    assert height < 6000, f"the Explore page is {height} px tall"
    shot(page, artifacts, "explore_real_text")

    # a box selection over the cloud, exported as posts and kept as a dataset
    cloud = main.locator(".js-plotly-plot").first
    cloud.hover()
    cloud.locator("[data-title='Box Select']").first.click()
    box = cloud.locator(".nsewdrag").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.05, box["y"] + box["height"] * 0.05)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.95, box["y"] + box["height"] * 0.95, steps=8)
    page.mouse.up()
    wait_for_app(page)
    main.get_by_text(re.compile(r"^Export the selection: \d+ users")).wait_for(timeout=LOAD_TIMEOUT)
    posts = pd.read_csv(_download(page, "Posts (CSV)"))
    assert {"user_id", "timestamp", "label", "text", "e0"} <= set(posts.columns) and len(posts) > 0
    main.get_by_role("button", name="Save as a new dataset").click()
    main.get_by_text(re.compile(r"^Saved real_text-selection")).wait_for(timeout=LOAD_TIMEOUT)
    assert (rt_server.workspace / "datasets" / "real_text-selection.parquet").is_file()

    # Train: the labelled users only, said on the page and kept in the run's record
    _sidebar_dataset(page, "real_text")
    nav(page, "Train")
    main.get_by_text(re.compile("10 of 45 users have no label")).first.wait_for(timeout=LOAD_TIMEOUT)
    if main.get_by_role("combobox", name="Head").count():
        main.get_by_role("combobox", name="Head").click()
        page.get_by_role("option", name="linear", exact=True).click()
    epochs = main.get_by_role("spinbutton", name="Epochs", exact=True)
    epochs.fill("2")
    epochs.press("Tab")
    main.get_by_role("button", name="Start training").click()
    main.get_by_test_id("stProgress").first.wait_for(timeout=60_000)
    expect(main.get_by_role("button", name=re.compile("^Stop"))).to_have_count(0, timeout=TRAIN_TIMEOUT)
    main.get_by_text("Test ROC AUC").first.wait_for(timeout=LOAD_TIMEOUT)
    wait_for_app(page)
    (run_dir,) = [p for p in (rt_server.workspace / "runs").iterdir() if p.is_dir()]
    record = json.loads((run_dir / "app.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert record["dataset"] == "real_text" and record["unlabelled_left_out"] == 10
    assert metrics["n_train"] + metrics["n_val"] + metrics["n_test"] == 35
    expect(main.get_by_text(re.compile("Early risk"))).to_have_count(1)
    shot(page, artifacts, "train_real_text")

    # the ROC as a PNG, looked at in docs/img
    png = _download(page, "ROC (PNG)")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (artifacts / "export_roc_real_text.png").write_bytes(png.read_bytes())

    # Compare this run
    main.get_by_role("link", name=re.compile("^Compare this run")).click()
    page.wait_for_url(re.compile(rf"/compare\?run={re.escape(run_dir.name)}$"), timeout=LOAD_TIMEOUT)
    wait_for_app(page)
    expect(main.get_by_test_id("stException")).to_have_count(0)
    main.locator(".js-plotly-plot").first.wait_for(timeout=LOAD_TIMEOUT)
    shot(page, artifacts, "compare_real_text")
    rt_server.assert_clean_log()


def test_a_multi_class_run_shows_one_roc_curve_per_class_and_per_class_f1(page, rt_server, artifacts):
    if not (rt_server.workspace / "datasets" / "basic_motions.parquet").is_file():
        pytest.skip("benchmarks/data/uea/BasicMotions_*.ts.gz is missing")
    open_page(page, rt_server)
    _sidebar_dataset(page, "basic_motions")
    nav(page, "Train")
    main = page.get_by_test_id("stMain")
    if main.get_by_role("combobox", name="Head").count():
        main.get_by_role("combobox", name="Head").click()
        page.get_by_role("option", name="linear", exact=True).click()
    epochs = main.get_by_role("spinbutton", name="Epochs", exact=True)
    epochs.fill("3")
    epochs.press("Tab")
    main.get_by_role("button", name="Start training").click()
    main.get_by_test_id("stProgress").first.wait_for(timeout=60_000)
    expect(main.get_by_role("button", name=re.compile("^Stop"))).to_have_count(0, timeout=TRAIN_TIMEOUT)
    main.get_by_text("Test ROC AUC").first.wait_for(timeout=LOAD_TIMEOUT)
    wait_for_app(page)
    main.get_by_text("F1 per class (one-vs-rest) on the test users").wait_for(timeout=LOAD_TIMEOUT)
    expect(main.get_by_text(re.compile("defined for two classes; this run has 4"))).to_have_count(1)
    legend = main.locator(".js-plotly-plot .legendtext").evaluate_all("els => els.map(e => e.textContent || '')")
    assert sum(t.startswith("class ") and "vs rest" in t for t in legend) == 4, legend
    shot(page, artifacts, "train_multiclass")
    png = _download(page, "Confusion (PNG)")
    (artifacts / "export_confusion_multiclass.png").write_bytes(png.read_bytes())
    rt_server.assert_clean_log()


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("dataset", ["sample", "real_text", "basic_motions"])
def test_screenshots_of_every_page_in_both_themes(page, rt_server, artifacts, scheme, dataset):
    if dataset == "basic_motions" and not (rt_server.workspace / "datasets" / "basic_motions.parquet").is_file():
        pytest.skip("benchmarks/data/uea/BasicMotions_*.ts.gz is missing")
    page.emulate_media(color_scheme=scheme)
    open_page(page, rt_server)
    _sidebar_dataset(page, dataset)
    for label in ("Data", "Explore", "Train", "Compare"):
        nav(page, label)
        main = page.get_by_test_id("stMain")
        if label in ("Data", "Explore"):
            main.locator(".js-plotly-plot").first.wait_for(timeout=LOAD_TIMEOUT)
        wait_for_app(page)
        expect(main.get_by_test_id("stException")).to_have_count(0)
        shot(page, artifacts, f"{label.lower()}_{dataset}_{scheme}")
    rt_server.assert_clean_log()
