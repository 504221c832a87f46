"""Real browser: Debian chromium driven by Playwright (PyPI), against the launched app."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from apphelpers import ROOT, launched_app, log_text
from conftest import require
from stroke_seg.models.unet import WEIGHTS_PATH

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
NIIVUE = ROOT / "node_modules" / "@niivue" / "niivue" / "dist" / "niivue.umd.js"
ARTIFACTS = Path(os.environ.get("STROKE_SEG_ARTIFACTS", ROOT / "artifacts"))
PROGRESS_SELECTOR = ".progress-text, .progress-level-inner, .meta-text, .meta-text-center, #status"


@pytest.fixture(scope="module")
def browser_app(tmp_path_factory):
    require(CHROMIUM.exists(), "Debian chromium is not installed at /usr/bin/chromium")
    require(NIIVUE.is_file(), "NiiVue is not installed (run `npm ci`)")
    require(WEIGHTS_PATH.is_file(), f"U-Net weights missing at {WEIGHTS_PATH}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "the playwright package is not installed")
    tmp = tmp_path_factory.mktemp("browser")
    with launched_app(tmp) as (url, log), sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync"],
        )
        try:
            yield browser, url, log
        finally:
            browser.close()


def _open(browser, url, example: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url, wait_until="networkidle")
    page.get_by_text("Bundled synthetic examples").wait_for(timeout=60_000)
    before = page.locator("#dwi-in").inner_text()  # the app starts on another bundled example
    page.get_by_role("button", name=example, exact=True).click()  # one click loads the case
    deadline = time.monotonic() + 30
    while page.locator("#dwi-in").inner_text() == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert page.locator("#dwi-in").inner_text() != before and "dwi.nii" in page.locator("#dwi-in").inner_text()
    return page, errors


def _texts(page) -> str:
    return " | ".join(t.strip() for t in page.locator(PROGRESS_SELECTOR).all_inner_texts() if t.strip())


def test_example_run_progress_viewer_and_table(browser_app):
    browser, url, _ = browser_app
    page, errors = _open(browser, url, "territorial mca")
    page.locator("#run-btn").click()
    seen, deadline = [], time.monotonic() + 240
    while time.monotonic() < deadline:
        text = _texts(page)
        if text and (not seen or seen[-1] != text):
            seen.append(text)
        if "Done in" in page.locator("#status").inner_text():
            break
        time.sleep(0.1)
    assert "Done in" in page.locator("#status").inner_text(), seen[-5:]
    assert len(seen) >= 3, seen  # the progress text changed while the job ran
    assert any("window" in s for s in seen), seen
    page.wait_for_function("() => window.strokeSegViewer && window.strokeSegViewer.loads >= 1", timeout=60_000)
    n_volumes = page.evaluate("() => window.strokeSegViewer.nv.volumes.length")
    assert n_volumes == 2
    urls = page.evaluate("() => window.strokeSegViewer.nv.volumes.map(v => v.url || v.name)")
    assert any("mask" in u for u in urls), urls
    table = page.locator("#results-table").inner_text()
    assert "Lesion volume (mL)" in table
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-result.png"), full_page=True)
    assert not errors, errors
    page.close()


def test_cancel_flow_in_browser(browser_app):
    browser, url, log = browser_app
    page, _ = _open(browser, url, "lacunar")
    page.get_by_label("accurate").check()
    page.locator("#run-btn").click()
    deadline = time.monotonic() + 120
    while "window" not in _texts(page) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "window" in _texts(page), _texts(page)
    page.locator("#cancel-btn").click()
    page.get_by_text("Cancelled.").wait_for(timeout=30_000)
    deadline = time.monotonic() + 30
    while "inference end status=cancelled" not in log_text(log) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "the server-side inference loop stopped" in log_text(log)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-cancelled.png"), full_page=True)
    page.close()
