"""Real-browser check of the Explore page after a streamed analysis (the sample counted as a
large dataset): the page renders, says the analysis was streamed in chunks, and the
analysis file is in the workspace; screenshot ``explore_streamed``."""

from __future__ import annotations

import os
import re

import pytest

pytestmark = pytest.mark.e2e

try:
    import pytest_playwright  # noqa: F401
except ImportError:  # pragma: no cover - depends on the environment
    if os.environ.get("CVX_REQUIRE_E2E", "") == "1":
        raise
    pytest.skip("pytest-playwright is not installed", allow_module_level=True)

from playwright.sync_api import expect
from test_e2e_app import LOAD_TIMEOUT, open_page, shot, wait_for_app


def test_explore_after_a_streamed_analysis_says_so(page, streamed_server, artifacts, sample_set):
    open_page(page, streamed_server, "explore")
    main = page.get_by_test_id("stMain")
    main.locator(".js-plotly-plot").first.wait_for(timeout=LOAD_TIMEOUT)
    saved = streamed_server.workspace / "analysis" / f"{sample_set.digest()}.parquet"
    assert saved.is_file()
    expander = main.get_by_text(re.compile(rf"All {len(sample_set)} users: change points and drift \(.* s to analyse\)"))
    expander.click()
    wait_for_app(page)
    expect(main.get_by_text(re.compile(r"Analysed by streaming the dataset file in chunks of 512 users"))).to_be_visible()
    expander.scroll_into_view_if_needed()
    shot(page, artifacts, "explore_streamed")
