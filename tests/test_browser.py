"""Real browser: Debian chromium driven by Playwright (PyPI), against the launched app."""

from __future__ import annotations

import os
import re
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
            args=[
                "--no-sandbox",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
            ],
        )
        try:
            yield browser, url, log
        finally:
            browser.close()


def _open(browser, url, example: str | None):
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url, wait_until="load")
    page.get_by_text("Bundled synthetic examples").wait_for(timeout=60_000)
    assert "dwi.nii" not in page.locator("#dwi-in").inner_text()  # the page starts empty
    if example is not None:
        page.get_by_role("button", name=example, exact=True).click()  # one click loads the whole case
        _wait_text(page, "#dwi-in", "dwi.nii")
    return page, errors


def _wait_text(page, selector: str, text: str, timeout: float = 30.0, present: bool = True) -> None:
    deadline = time.monotonic() + timeout
    while ((text in page.locator(selector).inner_text()) != present) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (text in page.locator(selector).inner_text()) == present, (
        selector,
        text,
        page.locator(selector).inner_text(),
    )


def _wait_done(page, timeout: float = 240.0) -> list[str]:
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = _texts(page)
        if text and (not seen or seen[-1] != text):
            seen.append(text)
        if "Done in" in page.locator("#status").inner_text() or "Error" in text:
            break
        time.sleep(0.1)
    toasts = page.locator(".toast-body").all_inner_texts()
    return seen + [f"toast: {t}" for t in toasts]


def _cli_volume(tmp_path, *inputs: str) -> float:
    """The lesion volume the CLI reports for the same inputs (``--dwi X --adc Y`` or ``--dicom Z``), unet, fast."""
    import json
    import subprocess
    import sys

    report = tmp_path / "cli.json"
    command = [
        sys.executable,
        "-m",
        "stroke_seg",
        "segment",
        *inputs,
        "--model",
        "unet",
        "--out",
        str(tmp_path / "m.nii.gz"),
    ]
    subprocess.run([*command, "--json", str(report)], cwd=ROOT, check=True, capture_output=True)
    return json.loads(report.read_text())["lesion_volume_ml"]


def _redness(page):
    """Red minus the larger of green and blue, per pixel of the NiiVue canvas (int array, H x W)."""
    import io

    import numpy as np
    from PIL import Image

    shot = np.asarray(Image.open(io.BytesIO(page.locator("#viewer canvas").screenshot())).convert("RGB")).astype(int)
    return shot[..., 0] - np.maximum(shot[..., 1], shot[..., 2])


def _texts(page) -> str:
    return " | ".join(t.strip() for t in page.locator(PROGRESS_SELECTOR).all_inner_texts() if t.strip())


def test_example_run_progress_viewer_and_table(browser_app):
    browser, url, _ = browser_app
    page, errors = _open(browser, url, "territorial mca")
    page.locator("#run-btn").click()
    seen = _wait_done(page)
    assert "Done in" in page.locator("#status").inner_text(), seen[-5:]
    assert len(seen) >= 3, seen  # the progress text changed while the job ran
    assert any("window" in s for s in seen), seen
    page.wait_for_function("() => window.strokeSegViewer && window.strokeSegViewer.loads >= 1", timeout=60_000)
    n_volumes = page.evaluate("() => window.strokeSegViewer.nv.volumes.length")
    assert n_volumes == 3  # base image, lesion mask, brain mask (hidden until its toggle is on)
    urls = page.evaluate("() => window.strokeSegViewer.nv.volumes.map(v => v.url || v.name)")
    assert any("mask" in u for u in urls), urls
    table = page.locator("#results-table").inner_text()
    assert "Lesion volume (mL)" in table
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-result.png"), full_page=True)
    assert not errors, errors
    page.close()


def _blueness(page):
    """Blue minus the larger of red and green, per pixel of the NiiVue canvas (int array, H x W)."""
    import io

    import numpy as np
    from PIL import Image

    shot = np.asarray(Image.open(io.BytesIO(page.locator("#viewer canvas").screenshot())).convert("RGB")).astype(int)
    return shot[..., 2] - np.maximum(shot[..., 0], shot[..., 1])


def test_brain_mask_overlay_toggle_and_download(browser_app):
    """The brain mask the model used: hidden at first, drawn in blue by its toggle, hidden again; and downloadable."""
    browser, url, _ = browser_app
    page, errors = _open(browser, url, "territorial mca")
    page.locator("#run-btn").click()
    seen = _wait_done(page)
    assert "Done in" in page.locator("#status").inner_text(), seen[-5:]
    page.wait_for_function("() => window.strokeSegViewer && window.strokeSegViewer.loads >= 1", timeout=60_000)
    assert page.evaluate("() => window.strokeSegViewer.nv.volumes[2].name") == "brain_mask.nii.gz"
    opacity = "() => window.strokeSegViewer.nv.volumes[2].opacity"
    assert page.evaluate(opacity) == 0
    page.wait_for_timeout(500)
    hidden = _blueness(page)
    page.locator("#viewer .ss-brain").check()
    page.wait_for_timeout(800)
    assert page.evaluate(opacity) == pytest.approx(0.3)
    shown = int((_blueness(page) - hidden > 40).sum())
    assert shown >= 500, f"{shown} pixels turn blue with the brain mask shown: the overlay is not drawn"
    page.locator("#viewer .ss-brain").uncheck()
    page.wait_for_timeout(500)
    assert page.evaluate(opacity) == 0
    assert "brain_mask.nii" in page.locator("#downloads").inner_text()
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


@pytest.fixture(scope="module")
def own_case(tmp_path_factory):
    """A user's own scan, not among the examples (a 2 mm case with another seed), named as a scanner export might be."""
    from stroke_seg.synthetic import generator as synth

    c = synth.make_case(4242, "lacunar", synth.Acquisition(voxel_size=(2.0, 2.0, 2.0), orientation="LPS"))
    folder = tmp_path_factory.mktemp("own")
    nib_save = __import__("nibabel").save
    nib_save(c.dwi, str(folder / "patient_dwi.nii.gz"))
    nib_save(c.adc, str(folder / "patient_adc.nii.gz"))
    return folder / "patient_dwi.nii.gz", folder / "patient_adc.nii.gz"


def test_new_user_uploads_own_scan(browser_app, own_case, tmp_path):
    """What a new user does: open the page, (an example was clicked before), clear, upload own DWI + ADC, Run."""

    browser, url, _ = browser_app
    dwi, adc = own_case
    page, errors = _open(browser, url, "embolic multi")  # an example with FLAIR and ground truth is loaded first
    page.locator("#dwi-in button[aria-label='Clear']").first.click()  # clear what is there, as a user does
    page.locator("#adc-in button[aria-label='Clear']").first.click()
    _wait_text(page, "#dwi-in", "dwi.nii", present=False)
    page.locator("#dwi-in input[type=file]").set_input_files(str(dwi))
    _wait_text(page, "#dwi-in", "patient_dwi")
    page.locator("#adc-in input[type=file]").set_input_files(str(adc))
    _wait_text(page, "#adc-in", "patient_adc")
    _wait_text(page, "#flair-in", "flair.nii", present=False)  # the example's hidden FLAIR and ground truth are gone
    _wait_text(page, "#gt-in", "mask.nii", present=False)
    page.locator("#run-btn").click()
    seen = _wait_done(page)
    assert "Done in" in page.locator("#status").inner_text(), seen[-5:]
    assert "Error" not in _texts(page)
    table = page.locator("#results-table").inner_text()
    assert "Dice" not in table  # no ground truth was sent with the user's files
    shown = float(re.search(r"Lesion volume \(mL\)\s+([0-9.]+)", table).group(1))
    assert shown == pytest.approx(_cli_volume(tmp_path, "--dwi", str(dwi), "--adc", str(adc)), abs=0.006)
    page.wait_for_function("() => window.strokeSegViewer && window.strokeSegViewer.loads >= 1", timeout=60_000)
    assert page.evaluate("() => window.strokeSegViewer.nv.volumes.length") == 3
    assert page.evaluate("() => window.strokeSegViewer.nv.volumes[1].name") == "mask.nii.gz"
    # the overlay is drawn: the viewer opens on a lesion voxel, and the pixels that turn red when the mask is shown
    # are the lesion's (the red crosshair is in both renders, with and without the mask)
    assert page.evaluate("() => window.strokeSegViewer.target") is not None
    page.wait_for_timeout(1000)
    with_mask = _redness(page)
    page.evaluate("() => { const nv = window.strokeSegViewer.nv; nv.setOpacity(1, 0); nv.drawScene(); }")
    page.wait_for_timeout(500)
    without_mask = _redness(page)
    page.evaluate("() => { const nv = window.strokeSegViewer.nv; nv.setOpacity(1, 0.6); nv.drawScene(); }")
    overlay = int((with_mask - without_mask > 60).sum())
    assert overlay >= 20, f"{overlay} pixels turn red with the lesion mask shown: the overlay is not drawn"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-own-scan.png"), full_page=True)
    assert not errors, errors
    page.close()


def test_quality_warning_is_visible_above_the_results(browser_app, tmp_path):
    """A result that fails a plausibility rule shows the warning block (a 90 mL 'brain': brain extraction failed)."""
    import nibabel as nib
    import numpy as np

    from conftest import phantom

    dwi, adc, _ = phantom()
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(dwi, aff), str(tmp_path / "tiny_dwi.nii.gz"))
    nib.save(nib.Nifti1Image(adc, aff), str(tmp_path / "tiny_adc.nii.gz"))
    browser, url, _ = browser_app
    page, errors = _open(browser, url, None)
    page.locator("#dwi-in input[type=file]").set_input_files(str(tmp_path / "tiny_dwi.nii.gz"))
    _wait_text(page, "#dwi-in", "tiny_dwi")
    page.locator("#adc-in input[type=file]").set_input_files(str(tmp_path / "tiny_adc.nii.gz"))
    _wait_text(page, "#adc-in", "tiny_adc")
    page.locator("#run-btn").click()
    seen = _wait_done(page)
    assert "Done in" in page.locator("#status").inner_text(), seen[-5:]
    page.locator("#qc-warnings").wait_for(state="visible", timeout=10_000)
    assert "Brain mask volume" in page.locator("#qc-warnings").inner_text()
    assert not errors, errors
    page.close()


def test_an_upload_is_never_paired_with_an_example_file(browser_app, own_case):
    """After an example, uploading only one's own DWI must not run it with the example's ADC, FLAIR or ground truth."""
    browser, url, _ = browser_app
    dwi, _adc = own_case
    page, errors = _open(browser, url, "embolic multi")
    page.locator("#dwi-in button[aria-label='Clear']").first.click()  # replace the DWI only
    page.locator("#dwi-in input[type=file]").set_input_files(str(dwi))
    _wait_text(page, "#dwi-in", "patient_dwi")
    _wait_text(page, "#flair-in", "flair.nii", present=False)
    _wait_text(page, "#gt-in", "mask.nii", present=False)
    page.locator("#run-btn").click()
    page.locator(".toast-body").first.wait_for(timeout=30_000)
    toast = " ".join(page.locator(".toast-body").all_inner_texts())
    assert "upload your own ADC" in toast, toast
    assert "Done in" not in page.locator("#status").inner_text()
    assert not errors, errors
    page.close()


def test_dicom_zip_upload_runs_and_offers_a_seg(browser_app, tmp_path):
    """A user uploads a scanner's DICOM export (.zip) instead of NIfTI files: same volume as the CLI, SEG offered."""

    from stroke_seg.synthetic import generator as synth
    from stroke_seg.synthetic.dicom_export import write_dicom_case, zip_folder

    c = synth.make_case(
        79, "lacunar", synth.Acquisition(voxel_size=(2.0, 2.0, 2.0), dtype="int16", skull_stripped=False)
    )
    b0 = c.b0()
    archive = zip_folder(write_dicom_case(tmp_path / "export", c.dwi, b0, c.adc), tmp_path / "patient_export.zip")
    browser, url, _ = browser_app
    page, errors = _open(browser, url, None)
    page.get_by_text("Or: a DICOM export").click()
    page.locator("#dicom-in input[type=file]").set_input_files(str(archive))
    _wait_text(page, "#dicom-in", "patient_export")
    page.locator("#run-btn").click()
    seen = _wait_done(page)
    assert "Done in" in page.locator("#status").inner_text(), seen[-5:]
    table = page.locator("#results-table").inner_text()
    shown = float(re.search(r"Lesion volume \(mL\)\s+([0-9.]+)", table).group(1))
    assert shown == pytest.approx(_cli_volume(tmp_path, "--dicom", str(archive)), abs=0.006)
    downloads = "".join(page.locator("#downloads").all_inner_texts()).replace("\n", "")
    assert "mask_seg.dcm" in downloads, downloads
    assert not errors, errors
    page.close()
