"""``deepisles-nvauto`` in the running app, through an outside ``gradio_client``: its result, and its lane beside the
fast models (a ``unet`` job submitted while a slowed DeepISLES stand-in runs does not wait for it)."""

from __future__ import annotations

import time

import nibabel as nib
import numpy as np
import pytest
import torch

import stroke_seg
from apphelpers import launched_app, log_text
from conftest import require, require_module
from stroke_seg.models.unet import WEIGHTS_PATH
from stroke_seg.synthetic import generator as synth
from stroke_seg.types import SegmentConfig

require_module("stroke_segmentor")
require_module("monai")
gradio_client = require_module("gradio_client")

from deepisles_standins import RuleNet, write_standins  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.utils import Status  # noqa: E402
from test_deepisles import dice, stripped_case  # noqa: E402

from stroke_seg.models import deepisles  # noqa: E402

pytestmark = [pytest.mark.app, pytest.mark.slow]

RUNNING = (Status.PROCESSING, Status.ITERATING, Status.PROGRESS)


def submit(client: Client, files: dict, model: str):
    return client.submit(
        handle_file(str(files["dwi"])), handle_file(str(files["adc"])), None, None, model, "fast", None, None,
        api_name="/segment",
    )  # fmt: skip


def progress_texts(job) -> list[str]:
    data = job.status().progress_data or []
    return [p.desc or "" for p in data]


def wait_for(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_deepisles_job_beside_fast_jobs(tmp_path, monkeypatch):
    require(WEIGHTS_PATH.is_file(), "U-Net weights missing (stroke_seg/models/weights)")
    weights = tmp_path / "weights"  # written once the unet job's own duration is known; read at the first use
    deep_case = stripped_case(tmp_path / "deep", "ras-1mm-float32")
    folders = [
        synth.make_case(700 + i, "lacunar", synth.Acquisition(voxel_size=(2.0, 2.0, 2.0), skull_stripped=True)).save(
            tmp_path / f"u{i}"
        )
        for i in range(2)
    ]
    fast = [{"dwi": f / "dwi.nii.gz", "adc": f / "adc.nii.gz"} for f in folders]
    env = {  # the default engine: unet in OpenVINO, the rule stand-ins (no SegResNet to rebuild) as TorchScript
        deepisles.WEIGHTS_ENV: str(weights),
        "STROKE_SEG_CONCURRENCY": "1",
        "STROKE_SEG_CACHE_TTL": "0",
    }
    with launched_app(tmp_path, **env) as (url, log):
        client = Client(url, verbose=False)
        submit(client, fast[1], "unet").result(timeout=300)  # the server's first job pays its warm-up
        t0 = time.monotonic()
        submit(client, fast[0], "unet").result(timeout=300)
        alone = time.monotonic() - t0
        # the DeepISLES stand-in: the same rules, its first 7 checkpoints slowed so that one window takes about half
        # the unet job (3.5 unet jobs in all before the fast rest: the lane checks and the job beside end well within)
        spin = 200
        probe = torch.jit.script(RuleNet(0.0, 0.0, 0.0, spin=spin))
        t_spin = time.monotonic()
        probe(torch.zeros(1, 2, 4, 4, 4))
        per_spin = (time.monotonic() - t_spin) / spin
        write_standins(weights, spin=max(200, int(alone / 2 / per_spin)), slow=7)

        slow = submit(Client(url, verbose=False), deep_case, deepisles.NAME)
        wait_for(lambda: any("checkpoint" in d for d in progress_texts(slow)), 300, "the DeepISLES job to run")
        second = submit(Client(url, verbose=False), deep_case, deepisles.NAME)
        wait_for(
            lambda: any("Waiting for the slow-model lane" in d for d in progress_texts(second)),
            60,
            "the second DeepISLES job to say what it waits for",
        )
        third = submit(Client(url, verbose=False), deep_case, deepisles.NAME)  # the lane's one waiting place is taken
        with pytest.raises(Exception, match="slow-model lane is full"):
            third.result(timeout=120)
        t1 = time.monotonic()
        submit(Client(url, verbose=False), fast[1], "unet").result(timeout=300)
        beside = time.monotonic() - t1
        assert not slow.done(), f"the DeepISLES stand-in finished first ({beside=:.1f} s, {alone=:.1f} s): slow it down"
        assert beside <= 4 * alone + 5, (beside, alone)

        mask_path, report, *_ = slow.result(timeout=900)
        second.cancel()
        assert report["model"] == deepisles.NAME
        assert report["model_details"]["weights_checkpoints"] == 15
        served = np.asarray(nib.load(mask_path).dataobj)
        monkeypatch.setenv(deepisles.WEIGHTS_ENV, str(write_standins(tmp_path / "unslowed")))  # the same rules
        local = stroke_seg.segment(deep_case, model=deepisles.NAME, config=SegmentConfig(engine="torch"))
        assert dice(served, np.asarray(local.mask.dataobj)) >= 0.99
        assert "inference end status=ok" in log_text(log)


def _provisional_outputs(job) -> list[tuple]:
    return [o for o in job.outputs() if isinstance(o, (tuple, list)) and isinstance(o[1], dict)
            and o[1].get("status") == "provisional"]  # fmt: skip


def test_gradio_client_receives_provisional_answers_and_cancel_keeps_the_last(tmp_path):
    """A DeepISLES job streams a provisional mask and volume after each checkpoint, labelled; the final result comes
    after them; a cancelled job's last provisional answer stays (the client's outputs, the server's files)."""
    spin, probe = 200, torch.jit.script(RuleNet(0.0, 0.0, 0.0, spin=200))
    t0 = time.monotonic()
    probe(torch.zeros(1, 2, 4, 4, 4))
    weights = write_standins(tmp_path / "weights", spin=int(0.2 / ((time.monotonic() - t0) / spin)))  # ~0.2 s a window
    deep_case = stripped_case(tmp_path / "deep", "ras-1mm-float32")
    other_case = stripped_case(tmp_path / "other", "ras-1mm-float32", seed=5, extent=(150.0, 170.0, 130.0))  # 2 windows
    env = {deepisles.WEIGHTS_ENV: str(weights), "STROKE_SEG_ENGINE": "torch", "STROKE_SEG_CACHE_TTL": "0"}
    with launched_app(tmp_path, **env) as (url, log):
        job = submit(Client(url, verbose=False), deep_case, deepisles.NAME)
        mask_path, report, *_ = job.result(timeout=900)
        early = _provisional_outputs(job)
        assert early, "no provisional answer reached the client"
        info = early[0][1]
        assert info["label"] == f"provisional, {info['done']}/15 checkpoints" and info["unit"] == "checkpoints"
        assert info["lesion_volume_ml"] > 0 and "not the model's final answer" in info["disclaimer"]
        assert [o[1]["done"] for o in early] == sorted({o[1]["done"] for o in early})  # each one refines the last
        assert nib.load(early[-1][0]).shape == nib.load(mask_path).shape
        assert report["model"] == deepisles.NAME and "lesion_count" in report  # the final result, after them

        cancelled = submit(Client(url, verbose=False), other_case, deepisles.NAME)
        wait_for(lambda: bool(_provisional_outputs(cancelled)), 600, "the second job's first provisional answer")
        cancelled.cancel()
        wait_for(lambda: "job cancelled" in log_text(log), 120, "the server to stop the cancelled job")
        kept = _provisional_outputs(cancelled)[-1]
        assert kept[1]["done"] < 15 and np.asarray(nib.load(kept[0]).dataobj).sum() > 0
        served = [p for p in tmp_path.glob("cache-*/.provisional-*/*_mask.nii.gz")]
        assert any(p.name.startswith(f"provisional_{kept[1]['done']:02d}_of_15") for p in served), served
