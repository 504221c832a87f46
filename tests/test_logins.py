"""Every job bounded in time, and an optional login that guards every route and keeps each user's results to that
user (the users file, the add-user command, log redaction, the app with logins)."""

import io
import json
import logging
import re
import sys
import time
import urllib.parse
from pathlib import Path

import nibabel as nib
import pytest
from gradio_client import Client, handle_file

import stroke_seg
from apphelpers import ROOT, launched_app, log_text
from conftest import require
from stroke_seg.errors import JobTimeoutError, StrokeSegError
from stroke_seg.serving import auth
from stroke_seg.serving.jobs import JobEngine

EXAMPLE = ROOT / "examples" / "embolic_multi"


# --- job time-out ---------------------------------------------------------------------------------------------------


class _SlowRunner:
    """A stand-in for segment() that works in 50 ms steps until cancelled (or for ``steps`` steps)."""

    def __init__(self, steps: int = 10_000) -> None:
        self.steps, self.stopped = steps, []

    def __call__(self, case, *, model, config, progress, should_cancel):
        for i in range(self.steps):
            if should_cancel():
                self.stopped.append(i)
                raise stroke_seg.Cancelled("cancelled by the caller during window")
            progress(i / self.steps, f"window {i + 1}/{self.steps}")
            time.sleep(0.05)
        return stroke_seg.segment(case, model="adc-threshold")


def test_a_job_past_its_time_limit_is_stopped_and_its_slot_freed(tmp_path):
    import asyncio

    from stroke_seg.serving.cache import ResultCache

    runner = _SlowRunner()
    engine = JobEngine(ResultCache(tmp_path / "cache"), 1, tick_s=0.1, runner=runner, timeout_s=1.0)
    files = {"dwi": str(EXAMPLE / "dwi.nii.gz"), "adc": str(EXAMPLE / "adc.nii.gz")}

    async def run(model="adc-threshold"):
        return [kind async for kind, _ in engine.run(files, model, "fast", lambda *a, **k: None)]

    t = time.monotonic()
    with pytest.raises(JobTimeoutError, match=r"expected to finish within 1 s .*STROKE_SEG_JOB_TIMEOUT.*stopped"):
        asyncio.run(run())
    assert time.monotonic() - t < 10
    assert runner.stopped, "the inference loop was not told to stop"
    # the next job (another model: not a cache hit) gets the inference thread at once and finishes
    runner.steps, engine.timeout_s = 2, 120.0
    t = time.monotonic()
    assert asyncio.run(run("unet"))[-1] == "done"
    assert time.monotonic() - t < 60


def test_a_users_result_folder_swept_while_idle_is_made_again(tmp_path):
    """The engine's sweep removes a user's folder once it has been idle for the cache lifetime; that user's next job
    still gets its result, in that folder."""
    import asyncio
    import shutil

    from stroke_seg.serving.cache import ResultCache

    root = ResultCache(tmp_path / "cache", ttl_s=60, keep_s=60)
    mine = ResultCache(root.root / auth.user_folder("alice"), ttl_s=60, keep_s=60)
    engine = JobEngine(root, 1, tick_s=0.1, runner=_SlowRunner(steps=1))
    shutil.rmtree(mine.root)
    files = {"dwi": str(EXAMPLE / "dwi.nii.gz"), "adc": str(EXAMPLE / "adc.nii.gz")}

    async def run():
        return [event async for event in engine.run(files, "adc-threshold", "fast", lambda *a, **k: None, cache=mine)]

    kind, folder = asyncio.run(run())[-1]
    assert kind == "done" and folder.parent == mine.root and (folder / "mask.nii.gz").is_file()


# --- users file and the add-user command ----------------------------------------------------------------------------


def _add_user(users: Path, name: str, password: str, monkeypatch, capsys) -> tuple[int, str]:
    """``python -m stroke_seg add-user NAME --users-file USERS`` with the password piped in: (exit code, stderr)."""
    from stroke_seg.cli import main as cli_main

    monkeypatch.setattr(sys, "stdin", io.StringIO(password + "\n"))
    code = cli_main(["add-user", name, "--users-file", str(users)])
    return code, capsys.readouterr().err


def test_add_user_stores_a_salted_hash_and_replaces_the_users_line(tmp_path, monkeypatch, capsys):
    users = tmp_path / "users.txt"
    auth.add_user(users, "alice", "first-password")
    auth.add_user(users, "bob", "first-password")
    code, err = _add_user(users, "alice", "second-password", monkeypatch, capsys)
    assert code == 0, err
    text = users.read_text()
    assert "password" not in text and text.count("alice:") == 1 and text.count("bob:") == 1
    alice, bob = (re.search(rf"^{n}:(\S+)$", text, re.M).group(1) for n in ("alice", "bob"))
    assert alice.split("$")[4] != bob.split("$")[4]  # salted: one password, two hashes
    assert oct(users.stat().st_mode & 0o777) == "0o600"
    gate = auth.UsersFile(users)
    assert gate.check("alice", "second-password") and not gate.check("alice", "first-password")
    assert gate.check("bob", "first-password") and not gate.check("carol", "first-password")
    code, err = _add_user(users, "carol", "short", monkeypatch, capsys)
    assert code == 2 and err.strip().splitlines() == [
        "error: password for carol: expected at least 8 characters, but it has fewer"
    ]
    with pytest.raises(StrokeSegError, match="user name"):
        auth.add_user(users, "bad name", "long-enough")


def test_log_redactor_hides_upload_names_while_a_job_runs(caplog):
    redactor = auth.LogRedactor()
    logger = logging.getLogger("stroke_seg.test_redact")
    caplog.handler.addFilter(redactor)
    try:
        with caplog.at_level(logging.INFO, logger="stroke_seg.test_redact"):
            with redactor.hiding(["/tmp/gradio/abc/Doe_Jane_DWI.nii.gz", None]):
                logger.info("DWI %s is 4D", "Doe_Jane_DWI.nii.gz")
            logger.info("after: Doe_Jane_DWI.nii.gz")
    finally:
        caplog.handler.removeFilter(redactor)
    assert caplog.messages == ["DWI <upload> is 4D", "after: Doe_Jane_DWI.nii.gz"]


# --- the app with logins --------------------------------------------------------------------------------------------

PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22"}


@pytest.fixture(scope="module")
def login_app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("login")
    users = tmp / "users.txt"
    for name, password in PASSWORDS.items():
        auth.add_user(users, name, password)
    with launched_app(tmp, with_process=True, STROKE_SEG_USERS_FILE=str(users), STROKE_SEG_MCP="1") as (url, log, proc):
        yield url, log, proc


def _session(url: str, user: str | None):
    import httpx

    client = httpx.Client(base_url=url, timeout=30)
    if user is not None:
        answer = client.post("/login", data={"username": user, "password": PASSWORDS[user]})
        assert answer.status_code == 200, answer.text
    return client


def _routes(session) -> list[tuple[str, str]]:
    """(method, path) of every route the running app serves, path parameters filled in: FastAPI's schema of it (which
    lists every route but itself), the schema's own route and MCP's."""
    schema = session.get("/openapi.json")
    assert schema.status_code == 200, schema.text[:200]
    found = {
        (method.upper(), re.sub(r"\{[^}]+\}", "x", path))
        for path, methods in schema.json()["paths"].items()
        for method in methods
    }
    return sorted(found | {("GET", "/openapi.json"), ("POST", "/gradio_api/mcp/"), ("GET", "/gradio_api/mcp/sse")})


@pytest.mark.app
@pytest.mark.slow
def test_with_a_users_file_every_route_refuses_an_unauthenticated_request(login_app):
    from stroke_seg.serving.login import PUBLIC

    url, _, _ = login_app
    anonymous = _session(url, None)
    public = list(PUBLIC)
    checked = []
    for method, path in _routes(_session(url, "alice")):
        if path in public or any(p.endswith("*") and path.startswith(p[:-1]) for p in public):
            continue
        answer = anonymous.request(method, path)
        assert answer.status_code == 401, (method, path, answer.status_code, answer.text[:200])
        checked.append(path)
    assert {"/gradio_api/queue/join", "/gradio_api/upload", "/gradio_api/info"} <= set(checked)
    assert any(p.startswith("/gradio_api/file=") for p in checked) and len(checked) > 30
    # the page itself is Gradio's login form: no component of the app, no endpoint
    page = anonymous.get("/")
    assert page.status_code == 200 and '"auth_required":true' in page.text.replace(" ", "")
    assert "dwi-in" not in page.text and '"dependencies":[]' in page.text.replace(" ", "")
    assert anonymous.post("/login", data={"username": "alice", "password": "wrong-password"}).status_code == 400


@pytest.mark.app
@pytest.mark.slow
def test_with_a_users_file_results_are_served_to_their_user_only(login_app):
    url, log, _ = login_app
    with pytest.raises(Exception, match="(?i)login|401|auth"):
        Client(url, verbose=False)  # no credentials: not even the API description
    alice_api = Client(url, auth=("alice", PASSWORDS["alice"]), verbose=False, download_files=False)
    dwi, adc = handle_file(str(EXAMPLE / "dwi.nii.gz")), handle_file(str(EXAMPLE / "adc.nii.gz"))
    mask, report, montage, _ = alice_api.predict(dwi, adc, None, None, "adc-threshold", "fast", api_name="/segment")
    assert report["lesion_count"] >= 1
    download = urllib.parse.urlsplit(mask["url"])
    path = download.path + (f"?{download.query}" if download.query else "")
    alice, bob, anonymous = _session(url, "alice"), _session(url, "bob"), _session(url, None)
    got = alice.get(path)
    assert got.status_code == 200 and nib.Nifti1Image.from_bytes(__import__("gzip").decompress(got.content)).shape
    assert bob.get(path).status_code == 403
    assert anonymous.get(path).status_code == 401
    # an upload of alice's is hers too
    uploaded = alice.post("/gradio_api/upload", files={"files": ("Doe_Jane_dwi.nii.gz", b"\x1f\x8b not a scan")})
    assert uploaded.status_code == 200, uploaded.text
    (upload_path,) = uploaded.json()
    assert alice.get(f"/gradio_api/file={upload_path}").status_code == 200
    assert bob.get(f"/gradio_api/file={upload_path}").status_code == 403
    # bob's own job lands in bob's folder, and he reads it; the log says who ran what, never the file names
    bob_api = Client(url, auth=("bob", PASSWORDS["bob"]), verbose=False, download_files=False)
    bob_mask = bob_api.predict(dwi, adc, None, None, "adc-threshold", "fast", api_name="/segment")[0]
    assert bob.get(urllib.parse.urlsplit(bob_mask["url"]).path).status_code == 200
    assert alice.get(urllib.parse.urlsplit(bob_mask["url"]).path).status_code == 403
    text = log_text(log)
    assert re.search(r"job requested user=alice model=adc-threshold mode=fast .*dwi:sha256=[0-9a-f]{64}", text)
    assert re.search(r"job requested user=bob model=adc-threshold", text)
    assert "Doe_Jane" not in text and json.dumps(PASSWORDS["alice"])[1:-1] not in text


@pytest.mark.app
@pytest.mark.browser
@pytest.mark.slow
def test_with_a_users_file_the_browser_logs_in_runs_a_case_and_fetches_only_its_own_files(login_app):
    """Gradio's login form in a real browser, then one example run: the viewer's volumes and the downloads come from
    the user's own folder, and no request the page makes is refused."""
    chromium = Path("/usr/bin/chromium")
    require(chromium.exists(), "Debian chromium is not installed at /usr/bin/chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "the playwright package is not installed")
    url, _, _ = login_app
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            refused: list[tuple[int, str]] = []
            page.on("response", lambda r: refused.append((r.status, r.url)) if r.status >= 400 else None)
            page.goto(url, wait_until="load")
            page.locator("input[type=password]").wait_for(timeout=60_000)
            assert page.get_by_text("Bundled synthetic examples").count() == 0  # nothing of the app before login
            page.locator("input").first.fill("alice")
            page.locator("input[type=password]").fill(PASSWORDS["alice"])
            page.get_by_role("button", name="Login").click()
            page.get_by_text("Bundled synthetic examples").wait_for(timeout=60_000)
            page.get_by_role("button", name="embolic multi", exact=True).click()
            page.wait_for_timeout(1500)
            page.locator("#run-btn").click()
            page.get_by_text("Done in").wait_for(timeout=120_000)
            links = page.locator("#downloads a").evaluate_all("els => els.map(e => e.href)")
        finally:
            browser.close()
    assert refused == [], refused
    assert links and all(auth.user_folder("alice") in link for link in links), links
