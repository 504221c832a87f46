"""Integration tests: the real app launched with ``python app.py``, driven with gradio_client."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import stroke_seg
from apphelpers import ROOT, launched_app, log_text
from conftest import require, require_module
from stroke_seg.models.unet import WEIGHTS_PATH
from stroke_seg.synthetic import generator as synth

gradio_client = require_module("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.utils import Status  # noqa: E402

pytestmark = [pytest.mark.app, pytest.mark.slow]

EXAMPLE = ROOT / "examples" / "embolic_multi"
RUNNING = {Status.PROCESSING, Status.ITERATING, Status.PROGRESS}


@pytest.fixture(scope="module")
def weights():
    require(WEIGHTS_PATH.is_file(), f"U-Net weights missing at {WEIGHTS_PATH}")


@pytest.fixture(scope="module")
def app(tmp_path_factory, weights):
    tmp = tmp_path_factory.mktemp("app")
    with launched_app(tmp, STROKE_SEG_MAX_QUEUE="20", STROKE_SEG_CONCURRENCY="1", STROKE_SEG_MCP="1") as (url, log):
        yield url, log, tmp


@pytest.fixture(scope="module")
def case_fine(tmp_path_factory):
    """A 1.5 mm territorial case, skull-stripped (brain extraction is not the subject here): long enough in accurate
    mode to cancel mid-inference (the network works on its 2 mm grid whatever the input; a 1 mm case costs 30 s more
    to generate and no more inference)."""
    folder = tmp_path_factory.mktemp("case_fine")
    acquisition = synth.Acquisition(voxel_size=(1.5, 1.5, 1.5), skull_stripped=True)
    return synth.make_case(21, "territorial", acquisition).save(folder)


def submit(client: Client, folder: Path, model="unet", mode="fast", with_gt=True):
    gt = handle_file(str(folder / "mask.nii.gz")) if with_gt else None
    flair = handle_file(str(folder / "flair.nii.gz")) if (folder / "flair.nii.gz").is_file() else None
    return client.submit(
        handle_file(str(folder / "dwi.nii.gz")),
        handle_file(str(folder / "adc.nii.gz")),
        flair,
        gt,
        model,
        mode,
        api_name="/segment",
    )


def rule_on_example(client: Client):
    """The bundled example through /segment with the fast rule: (mask path, report, montage path)."""
    dwi, adc = handle_file(str(EXAMPLE / "dwi.nii.gz")), handle_file(str(EXAMPLE / "adc.nii.gz"))
    return client.predict(dwi, adc, None, None, "adc-threshold", "fast", api_name="/segment")


def watch(job, on_status=None) -> list[tuple[float, float | None, str]]:
    """Poll a job until done; returns (time, fraction, description) of each distinct progress update."""
    seen: list[tuple[float, float | None, str]] = []
    t0 = time.monotonic()
    while not job.done():
        st = job.status()
        if on_status is not None:
            on_status(st)
        if st.progress_data:
            p = st.progress_data[-1]
            item = (p.progress, p.desc or "")
            if not seen or seen[-1][1:] != item:
                seen.append((time.monotonic() - t0, *item))
        time.sleep(0.05)
    return seen


def test_api_lists_segment_and_hides_ui_events(app):
    url, _, _ = app
    api = Client(url, verbose=False).view_api(print_info=False, return_format="dict")
    assert list(api["named_endpoints"]) == ["/segment"]
    params = [p["parameter_name"] for p in api["named_endpoints"]["/segment"]["parameters"]]
    assert params == ["dwi", "adc", "flair", "ground_truth", "model", "mode", "dicom", "b0"]
    for extra in api["named_endpoints"]["/segment"]["parameters"][-2:]:
        assert extra["parameter_has_default"] and extra["parameter_default"] is None  # six-argument calls still work


def test_job_streams_progress_and_returns_what_segment_returns(app):
    url, log, _ = app
    assert "allocator: freed memory kept between jobs (applied)" in log_text(log)  # set before the warm-up job
    job = submit(Client(url, verbose=False), EXAMPLE)
    seen = watch(job)
    mask_path, report, montage, brain_path = job.result()
    fractions = [f for _, f, _ in seen if f is not None]
    assert len(fractions) >= 3, seen
    assert fractions == sorted(fractions) and fractions[-1] > fractions[0]
    assert any("window" in d for _, _, d in seen), seen
    # an early output (input summary) came before the final result
    outputs = job.outputs()
    assert len(outputs) >= 2 and outputs[0][1]["status"] == "running" and "shape" in outputs[0][1]["input"]
    assert Path(montage).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    brain = np.asarray(nib.load(brain_path).dataobj)  # the brain mask the model used, on the input grid
    assert brain.dtype == np.uint8 and brain.shape == np.asarray(nib.load(mask_path).dataobj).shape
    assert report["brain_volume_ml"] > 0 and "method" in report["model_details"]["brain_extraction"]
    assert report["model"] == "unet" and "dice" in report
    direct = stroke_seg.segment(
        {
            "dwi": EXAMPLE / "dwi.nii.gz",
            "adc": EXAMPLE / "adc.nii.gz",
            "flair": EXAMPLE / "flair.nii.gz",
            "ground_truth": EXAMPLE / "mask.nii.gz",
        },
        model="unet",
    )
    served = nib.load(mask_path)
    np.testing.assert_array_equal(np.asarray(served.dataobj), np.asarray(direct.mask.dataobj))
    np.testing.assert_array_equal(served.affine, direct.mask.affine)
    assert report["lesion_volume_ml"] == pytest.approx(direct.metrics.volume_ml, abs=1e-3)


def test_resubmission_is_served_from_cache(app):
    url, log, _ = app
    client = Client(url, verbose=False)
    first = submit(client, EXAMPLE, model="adc-threshold").result()
    hits_before = log_text(log).count("cache hit")
    t = time.monotonic()
    second = submit(client, EXAMPLE, model="adc-threshold").result()
    assert log_text(log).count("cache hit") == hits_before + 1
    assert second[1] == first[1]
    assert time.monotonic() - t < 5


def test_cancel_stops_server_loop_and_next_job_runs(app, case_fine):
    url, log, _ = app
    client = Client(url, verbose=False)
    job = submit(client, case_fine, mode="accurate", with_gt=False)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        st = job.status()
        if st.progress_data and "window" in (st.progress_data[-1].desc or ""):
            break
        time.sleep(0.05)
    else:
        pytest.fail("the job never reached the sliding-window stage")
    cancelled_at = time.monotonic()
    job.cancel()
    while not job.done() and time.monotonic() - cancelled_at < 30:
        time.sleep(0.1)
    assert job.status().code == Status.CANCELLED
    # the server-side loop stops at the next window (observable in the server log)
    while "inference end status=cancelled" not in log_text(log) and time.monotonic() - cancelled_at < 30:
        time.sleep(0.1)
    assert "the server-side inference loop stopped" in log_text(log)
    # and the next job starts clean and completes
    result = submit(client, EXAMPLE, model="adc-threshold", with_gt=True).result()
    assert result[1]["lesion_count"] >= 1


def test_ctrl_c_stops_a_running_job_within_a_window(tmp_path, weights, case_fine):
    with launched_app(tmp_path, with_process=True) as (url, log, proc):
        job = submit(Client(url, verbose=False), case_fine, mode="accurate", with_gt=False)
        deadline = time.monotonic() + 300
        while not (job.status().progress_data and "window" in (job.status().progress_data[-1].desc or "")):
            if time.monotonic() > deadline:
                pytest.fail("the job never reached the sliding-window stage")
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends
        proc.wait(60)
        text = log_text(log)
    # the job stopped at its next window instead of running to the end (status=ok) before the process could exit
    assert "inference end status=cancelled" in text, text[-2000:]
    assert "inference end status=ok" not in text


def _intervals(log: str) -> list[tuple[float, float]]:
    starts = [float(t) for t in re.findall(r"inference start .* t=([0-9.]+)", log)]
    ends = [float(t) for t in re.findall(r"inference end status=\w+ t=([0-9.]+)", log)]
    return list(zip(starts, ends))


def test_queue_full_and_concurrency_limit(tmp_path, weights):
    # five different cases, so that none is served from the result cache
    acquisition = synth.Acquisition(voxel_size=(2.0, 2.0, 2.0))
    with ThreadPoolExecutor(2) as pool:  # made two at a time: the same images
        cases = list(
            pool.map(lambda i: synth.make_case(500 + i, "lacunar", acquisition).save(tmp_path / f"c{i}"), range(5))
        )
    # no separate slow-model lane: the queue counts of this test assume one inference slot in all
    with launched_app(
        tmp_path, STROKE_SEG_MAX_QUEUE="2", STROKE_SEG_CONCURRENCY="1", STROKE_SEG_SLOW_CONCURRENCY="0"
    ) as (url, log):
        client = Client(url, verbose=False)
        # Five submissions: the first is running, then four arrive at once. The queue holds two
        # waiting jobs, so exactly two of the four must be refused.
        first = submit(client, cases[0])
        while first.status().code not in RUNNING:
            time.sleep(0.05)
        jobs, barrier = [None] * 4, threading.Barrier(4)

        def go(i):
            barrier.wait()
            jobs[i] = submit(Client(url, verbose=False), cases[i + 1])

        threads = [threading.Thread(target=go, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        outcomes = []
        for job in [first] + jobs:
            try:
                job.result(timeout=300)
                outcomes.append("ok")
            except Exception as err:  # gradio_client raises for a refused job
                outcomes.append(
                    "full" if "full" in str(err).lower() or job.status().code == Status.QUEUE_FULL else f"error: {err}"
                )
        assert outcomes.count("full") == 2, outcomes
        assert outcomes.count("ok") == 3, outcomes
        spans = _intervals(log_text(log))
        assert len(spans) == 3
        for (_, e1), (s2, _) in zip(spans, spans[1:]):
            assert s2 >= e1 - 1e-3, spans  # never two inferences at once (concurrency 1)


def test_twenty_clients_ttl_zero_every_served_client_downloads_its_mask(tmp_path, weights):
    """20 clients at once on a queue of 5 with the cache's reuse off (TTL 0): each served client gets its mask."""
    folder = synth.make_case(610, "lacunar", synth.Acquisition(voxel_size=(3.0, 3.0, 3.0))).save(tmp_path / "c")
    with launched_app(tmp_path, STROKE_SEG_MAX_QUEUE="5", STROKE_SEG_CONCURRENCY="1", STROKE_SEG_CACHE_TTL="0") as (
        url,
        _log,
    ):
        outcomes: list[str] = [""] * 20
        barrier = threading.Barrier(20)

        def go(i):
            client = Client(url, verbose=False)
            barrier.wait()
            job = submit(client, folder, model="unet", with_gt=False)
            try:
                mask_path = job.result(timeout=600)[0]
                data = np.asarray(nib.load(mask_path).dataobj)  # downloaded by this client, readable
                outcomes[i] = "ok" if data.shape == nib.load(str(folder / "dwi.nii.gz")).shape else "bad mask"
            except Exception as err:
                outcomes[i] = (
                    "full" if "full" in str(err).lower() or job.status().code == Status.QUEUE_FULL else f"error: {err}"
                )

        threads = [threading.Thread(target=go, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert set(outcomes) <= {"ok", "full"}, outcomes
        assert outcomes.count("ok") >= 6, outcomes  # one running + five waiting, at least
        assert outcomes.count("full") >= 1, outcomes
        after = Client(url, verbose=False).predict(
            handle_file(str(folder / "dwi.nii.gz")),
            handle_file(str(folder / "adc.nii.gz")),
            None,
            None,
            "adc-threshold",
            "fast",
            api_name="/segment",
        )
        assert Path(after[0]).is_file()  # the server answers afterwards


def test_bad_upload_gives_clear_error_and_server_stays_up(app, tmp_path):
    url, _, _ = app
    bad = tmp_path / "broken_dwi.nii.gz"
    bad.write_bytes(b"not a nifti")
    client = Client(url, verbose=False)
    with pytest.raises(Exception, match="broken_dwi.nii.gz") as raised:
        client.predict(
            handle_file(str(bad)),
            handle_file(str(EXAMPLE / "adc.nii.gz")),
            None,
            None,
            "adc-threshold",
            "fast",
            api_name="/segment",
        )
    message = str(raised.value)
    assert "/tmp" not in message and "gradio" not in message.lower() and str(tmp_path) not in message, (
        message
    )  # no server path
    assert json.dumps(rule_on_example(client)[1])


def test_upload_size_limit_has_a_clear_message(tmp_path, weights):
    with launched_app(tmp_path, STROKE_SEG_MAX_FILE_SIZE="100kb") as (url, _log):
        client = Client(url, verbose=False)
        with pytest.raises(Exception, match=r"(?i)size|large|exceed"):
            rule_on_example(client)


def test_dicom_zip_through_the_api_gives_the_nifti_result(app, tmp_path):
    """/segment with a DICOM .zip (b0 + b1000, no ADC series) returns what the NIfTI files of the same scan give."""
    require_module("pydicom")
    from stroke_seg.synthetic.dicom_export import write_dicom_case, zip_folder

    c = synth.make_case(
        78, "territorial", synth.Acquisition(voxel_size=(2.0, 2.0, 2.0), dtype="int16", skull_stripped=False)
    )
    b0 = c.b0()
    nib.save(c.dwi, str(tmp_path / "dwi.nii.gz"))
    nib.save(b0, str(tmp_path / "b0.nii.gz"))
    archive = zip_folder(write_dicom_case(tmp_path / "export", c.dwi, b0), tmp_path / "export.zip")
    url, _, _ = app
    client = Client(url, verbose=False)
    mask_path, report, *_ = client.predict(
        None, None, None, None, "unet", "fast", handle_file(str(archive)), api_name="/segment"
    )
    direct = stroke_seg.segment({"dwi": tmp_path / "dwi.nii.gz", "b0": tmp_path / "b0.nii.gz"}, model="unet")
    assert report["lesion_volume_ml"] == pytest.approx(direct.metrics.volume_ml, abs=1e-3)
    assert report["input"]["adc_unit_detected"].startswith("computed from b0")
    served = np.asarray(nib.as_closest_canonical(nib.load(mask_path)).dataobj) > 0
    local = np.asarray(nib.as_closest_canonical(direct.mask).dataobj) > 0
    assert (served == local).all()
    with pytest.raises(Exception, match="either a DICOM export or NIfTI"):
        client.predict(
            handle_file(str(tmp_path / "dwi.nii.gz")),
            None,
            None,
            None,
            "unet",
            "fast",
            handle_file(str(archive)),
            api_name="/segment",
        )
    # the same scan as NIfTI DWI + b0 (no ADC map): the ADC is computed, the result is the same
    _, report_b0, *_ = client.predict(
        handle_file(str(tmp_path / "dwi.nii.gz")),
        None,
        None,
        None,
        "unet",
        "fast",
        None,
        handle_file(str(tmp_path / "b0.nii.gz")),
        api_name="/segment",
    )
    assert report_b0["lesion_volume_ml"] == pytest.approx(direct.metrics.volume_ml, abs=1e-3)


def test_mcp_tool_is_listed_and_callable(app, tmp_path):
    """gradio[mcp]: the /segment endpoint is an MCP tool; an MCP client lists it and segments a case by URL."""
    import asyncio

    mcp = require_module("mcp")
    from mcp.client.streamable_http import streamable_http_client

    url, _, _ = app
    import base64

    def data_url(path):  # what an MCP client sends for a local file
        return "data:application/gzip;base64," + base64.b64encode(path.read_bytes()).decode()

    dwi_url, adc_url = data_url(EXAMPLE / "dwi.nii.gz"), data_url(EXAMPLE / "adc.nii.gz")

    async def call():
        async with streamable_http_client(url + "gradio_api/mcp/") as (read, write, _):
            async with mcp.ClientSession(read, write) as session:
                await session.initialize()
                tools = {t.name: t for t in (await session.list_tools()).tools}
                assert "segment_api" in tools and "dwi" in tools["segment_api"].inputSchema["properties"]
                return await session.call_tool(
                    "segment_api", {"dwi": dwi_url, "adc": adc_url, "model": "adc-threshold", "mode": "fast"}
                )

    result = asyncio.run(call())
    assert not result.isError, result
    text = " ".join(getattr(c, "text", "") for c in result.content)
    expected = stroke_seg.segment(
        {"dwi": EXAMPLE / "dwi.nii.gz", "adc": EXAMPLE / "adc.nii.gz"}, model="adc-threshold"
    ).metrics.volume_ml
    assert f'"lesion_volume_ml": {round(expected, 4)}' in text.replace("\\n", " ") or str(round(expected, 4)) in text, (
        text[:2000]
    )
