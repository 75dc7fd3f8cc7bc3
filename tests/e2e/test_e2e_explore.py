"""Real-browser tests of the Data and Explore pages: posts uploaded as text and explained in
their own words, colour by metadata, the time window and its play button, search, a row
click opening a user; screenshots in the light and the dark theme."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlparse

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

GARDEN = [
    "Planted the tomatoes and basil in the raised garden bed this morning",
    "The roses are blooming, pruned the climbing rose along the fence",
    "Compost heap is finally warm, turning it every week for the garden",
    "Seedlings of peppers and tomatoes need more sun on the windowsill",
    "Harvested the first courgettes and lettuce from the vegetable garden",
    "Mulched the flower beds and watered the roses before the heatwave",
]
MARKETS = [
    "Bitcoin broke resistance today, trading volume on the exchange doubled",
    "Moved my savings into an index fund, markets look volatile this quarter",
    "Ethereum gas fees spiked again, the crypto exchange was congested",
    "Interest rates decision tomorrow, bond yields and stocks are nervous",
    "Sold half my bitcoin position after the rally, taking profits on crypto",
    "Portfolio rebalanced: fewer tech stocks, more bonds, markets are choppy",
]


def posts_csv(path: Path) -> Path:
    """Four writers, twelve dated posts each: gardening, then money (a change of subject)."""
    lines = ["user_id,timestamp,text,label,city"]
    for u in range(4):
        texts = GARDEN + MARKETS if u % 2 == 0 else MARKETS + GARDEN
        for i, text in enumerate(texts):
            lines.append(f'writer{u},2024-0{1 + i // 6}-{1 + 2 * (i % 6):02d}T09:00:00Z,"{text} ({u})",{u % 2},'
                         + ("Lyon" if u < 2 else "Oslo"))
    path.write_text("\n".join(lines) + "\n")
    return path


def _traces(page, index: int = 0) -> list[dict]:
    """name and point count of each trace of the index-th Plotly chart."""
    return page.evaluate(
        """(i) => { const el = document.querySelectorAll('.js-plotly-plot')[i];
                  return el && el._fullData ? el._fullData.map(t => ({name: t.name, n: t._length || 0})) : []; }""",
        index,
    )


def _hover_first_point(page, index: int, trace_name: str) -> str:
    """Move the mouse onto the first point of a named trace and return the hover label's text."""
    page.locator(".js-plotly-plot").nth(index).scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    where = page.evaluate(
        """([i, name]) => { const el = document.querySelectorAll('.js-plotly-plot')[i];
                   const t = el._fullData.find(t => t.name === name); if (!t) return null;
                   const xa = el._fullLayout[t.xaxis.replace('x', 'xaxis')], ya = el._fullLayout[t.yaxis.replace('y', 'yaxis')];
                   const r = el.getBoundingClientRect();
                   const x = xa.type === 'date' ? xa.d2p(t.x[0]) : xa.l2p(t.x[0]);
                   return {x: r.left + xa._offset + x, y: r.top + ya._offset + ya.l2p(t.y[0])}; }""",
        [index, trace_name],
    )
    assert where, f"no trace {trace_name!r}"
    page.mouse.move(where["x"] + 30, where["y"] + 30)
    page.mouse.move(where["x"], where["y"])
    label = page.locator(".js-plotly-plot").nth(index).locator(".hoverlayer .hovertext").first
    label.wait_for(timeout=10_000)
    return label.text_content() or ""


def _open_user_code(page) -> str:
    return page.get_by_test_id("stMain").get_by_test_id("stCode").first.inner_text()


def test_text_upload_is_embedded_explained_and_coloured_by_metadata(page, app_server, artifacts, tmp_path):
    from cvx_app.explore import explain_available

    open_page(page, app_server)
    nav(page, "Data")
    main = page.get_by_test_id("stMain")
    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(posts_csv(tmp_path / "writers.csv")))
    main.get_by_text(re.compile(r"Saved writers: 4 users, embedded 48 posts")).wait_for(timeout=LOAD_TIMEOUT)
    wait_for_app(page)
    assert (app_server.workspace / "embeddings.sqlite").is_file()
    expect(page.get_by_test_id("stSidebar").get_by_role("combobox", name="Dataset")).to_have_value("writers")
    shot(page, artifacts, "data_text")

    nav(page, "Explore")
    main.locator(".js-plotly-plot").first.wait_for(timeout=LOAD_TIMEOUT)
    wait_for_app(page)
    # hover a post of the cloud: its first words
    hover = _hover_first_point(page, 0, "label 0")
    assert "user writer" in hover and any(t.split()[0] in hover for t in GARDEN + MARKETS), hover
    # hover a post on the timeline: its first words too
    hover = _hover_first_point(page, 1, "drift")
    assert any(" ".join(t.split()[:4]) in hover for t in GARDEN + MARKETS), hover
    words = main.get_by_text("What changed, in words")
    expect(words).to_be_visible()
    if explain_available():  # the posts' own words beside each change point
        expect(main.get_by_text("After: distinctive words (highlighted in the posts)").first).to_be_visible()
        after = main.get_by_test_id("stMarkdownContainer").filter(has_text=re.compile("^“.+”$")).first
        assert any(t[:30] in after.inner_text() for t in GARDEN + MARKETS)
    shot(page, artifacts, "explore_text")

    # colour by a column of the upload, kept as metadata
    main.get_by_role("combobox", name="Colour posts by").click()
    page.get_by_role("option", name="metadata: city").click()
    wait_for_app(page)
    names = {t["name"] for t in _traces(page, 0) if t["n"]}
    assert {"metadata: city Lyon", "metadata: city Oslo"} <= names, names
    shot(page, artifacts, "explore_colour_metadata")


def test_time_window_play_search_and_a_row_click(page, app_server, artifacts, sample_set):
    # a direct page URL: the only 404s are the frontend's probes of /explore as a possible
    # base path (streamlit#7074), nothing of the app's layout (docs/app.md)
    missing: list[str] = []
    page.on("response", lambda r: missing.append(urlparse(r.url).path) if r.status == 404 else None)
    open_page(page, app_server, "explore")
    assert set(missing) <= {"/explore/_stcore/health", "/explore/_stcore/host-config"}, missing
    main = page.get_by_test_id("stMain")
    main.locator(".js-plotly-plot").first.wait_for(timeout=LOAD_TIMEOUT)
    wait_for_app(page)
    assert not [t for t in _traces(page) if t["name"] == "outside the time window"]

    # the time window: a click on its track moves the nearer end there
    slider = main.get_by_test_id("stSlider").filter(has_text="Time window")  # not the sensitivity slider
    slider.scroll_into_view_if_needed()
    track = slider.bounding_box()
    page.mouse.click(track["x"] + 0.3 * track["width"], track["y"] + track["height"] - 8)
    wait_for_app(page)
    page.wait_for_function(
        """() => { const el = document.querySelectorAll('.js-plotly-plot')[0];
                   return el._fullData.some(t => t.name === 'outside the time window' && t._length > 0); }""",
        timeout=30_000,
    )
    values = slider.get_by_test_id("stSliderThumbValue")
    before = values.all_inner_texts()

    # play: the window moves by itself
    main.get_by_text("Play the time window").click()
    page.wait_for_function(
        """(v) => { const s = [...document.querySelectorAll("[data-testid='stSlider']")]
                                 .find(e => e.innerText.includes('Time window'));
                   const t = [...s.querySelectorAll("[data-testid='stSliderThumbValue']")].map(e => e.innerText);
                   return t.length === 2 && t.join('|') !== v; }""",
        arg="|".join(before), timeout=30_000,
    )
    main.get_by_text("Play the time window").click()
    wait_for_app(page)
    shot(page, artifacts, "explore_window")

    # search: the user's posts are ringed in the cloud and listed
    target = sample_set.at(7).user_id
    box = main.get_by_role("textbox", name="Search users")
    box.fill(target)
    box.press("Enter")
    wait_for_app(page)
    page.wait_for_function(
        """() => document.querySelectorAll('.js-plotly-plot')[0]._fullData.some(t => t.name.startsWith('search: '))""",
        timeout=30_000,
    )
    ring = [t for t in _traces(page) if t["name"].startswith("search: ")]
    assert ring[0]["n"] == sample_set[target].n_posts
    shot(page, artifacts, "explore_search")

    # a click on the row of the search table opens that user
    assert f"user {target} " not in _open_user_code(page)
    table = main.get_by_test_id("stDataFrame").first
    table.scroll_into_view_if_needed()
    bbox = table.bounding_box()
    page.mouse.click(bbox["x"] + 18, bbox["y"] + 35 + 17)  # the row-selection cell of row 1
    wait_for_app(page)
    main.get_by_test_id("stCode").filter(has_text=f"user {target} ").wait_for(timeout=30_000)


def _background_sum(page) -> int:
    background = page.evaluate("getComputedStyle(document.querySelector('[data-testid=stApp]')).backgroundColor")
    return sum(int(v) for v in re.findall(r"\d+", background)[:3])


def test_the_app_follows_the_systems_colour_scheme(page, browser, app_server, artifacts):
    """Light by default (the other tests' screenshots), dark when the system asks for it."""
    open_page(page, app_server)
    assert _background_sum(page) > 600
    context = browser.new_context(color_scheme="dark", viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    try:
        open_page(page, app_server)
        assert _background_sum(page) < 150
        for label, name in (("Data", "data"), ("Explore", "explore")):
            nav(page, label)
            if label == "Explore":
                page.get_by_test_id("stMain").locator(".js-plotly-plot").first.wait_for(timeout=LOAD_TIMEOUT)
                wait_for_app(page)
            shot(page, artifacts, f"{name}_dark")
    finally:
        context.close()
