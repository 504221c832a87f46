"""Dask scale-out with real processes: a ``dask scheduler`` and two ``dask worker`` processes on loopback.

* A cohort batch where one worker is killed mid-run still finishes every case, with the masks of an in-process run.
* The app with ``STROKE_SEG_DASK_SCHEDULER`` runs two jobs at once on the two workers, with progress from the
  workers' window loops, and a cancel that stops the worker's loop.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from apphelpers import ROOT, free_port, launched_app
from conftest import require, require_module
from stroke_seg import SegmentConfig
from stroke_seg.models.unet import WEIGHTS_PATH
from stroke_seg.serving import batch
from stroke_seg.synthetic import generator as synth

distributed = require_module("distributed")
gradio_client = require_module("gradio_client")

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

RUNNING = ("PROCESSING", "ITERATING")
STRIPPED_15 = synth.Acquisition(voxel_size=(1.5, 1.5, 1.5), skull_stripped=True)
"""Long enough to watch windows and cancel; skull-stripped, as brain extraction is not the subject of the app tests."""


def _dask_cli() -> list[str]:
    script = Path(sys.executable).with_name("dask")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "dask"]


class LoopbackCluster:
    """``dask scheduler`` + named ``dask worker`` processes (no nanny: a killed worker stays dead)."""

    def __init__(self, tmp: Path, names=("w1", "w2")) -> None:
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.env = dict(os.environ, PYTHONPATH=str(ROOT), STROKE_SEG_THREADS="1", STROKE_SEG_CACHE_DIR=str(tmp))
        self.logs = tmp
        port = self.address.rsplit(":", 1)[1]
        self.scheduler = self._start(
            "scheduler", ["scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"]
        )
        self.workers = {
            name: self._start(
                name,
                ["worker", self.address, "--name", name, "--nthreads", "1", "--no-nanny", "--no-dashboard"]
                + ["--host", "127.0.0.1"],
            )
            for name in names
        }
        self.client = distributed.Client(self.address, timeout="30s")
        self.client.wait_for_workers(len(names), timeout=90)

    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.logs / f"dask-{name}.log", "w")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(_dask_cli() + args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def processing(self) -> dict[str, int]:
        """Tasks each worker is running now, by worker name."""
        return self.client.run_on_scheduler(
            lambda dask_scheduler: {ws.name: len(ws.processing) for ws in dask_scheduler.workers.values()}
        )

    def close(self) -> None:
        """Workers first, then the scheduler (stopped together, a worker's close could race the scheduler's and hang
        until killed); a process still there after 5 s is killed."""
        self.client.close()
        for group in (list(self.workers.values()), [self.scheduler]):
            for proc in group:
                proc.terminate()
            for proc in group:
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


@pytest.fixture(scope="module")
def app_cases(tmp_path_factory) -> list[Path]:
    """Two generated cases for the app's jobs, written once for the module's tests."""
    folder = tmp_path_factory.mktemp("cluster-app-cases")
    return [synth.make_case(900 + i, "territorial", STRIPPED_15).save(folder / f"c{i}") for i in range(2)]


@pytest.fixture
def cluster(tmp_path):
    """A cluster of its own, for a test that kills a worker before others would use it."""
    require(WEIGHTS_PATH.is_file(), f"U-Net weights missing at {WEIGHTS_PATH}")
    c = LoopbackCluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory):
    """One cluster for the module's later tests, in file order: those that leave both workers alive first, the test
    that kills them last."""
    require(WEIGHTS_PATH.is_file(), f"U-Net weights missing at {WEIGHTS_PATH}")
    c = LoopbackCluster(tmp_path_factory.mktemp("shared-cluster"))
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def cluster_app(tmp_path_factory, shared_cluster):
    """The app on the shared cluster (the no-worker wait 2 s, for the last test)."""
    env = {"STROKE_SEG_DASK_SCHEDULER": shared_cluster.address, "STROKE_SEG_DASK_NO_WORKER_S": "2"}
    with launched_app(tmp_path_factory.mktemp("cluster-app"), **env) as (url, _log):
        yield url


def _masks(folder: Path) -> dict[str, np.ndarray]:
    return {p.parent.name: np.asarray(nib.load(str(p)).dataobj) for p in sorted(folder.glob("*/mask.nii.gz"))}


def test_a_batch_survives_a_killed_worker_with_the_masks_of_an_in_process_run(tmp_path, cluster):
    cohort = tmp_path / "cohort"
    patterns = ["lacunar", "territorial", "emboli", "control", "territorial", "lacunar"]  # 3 mm: small, quick cases
    acq = synth.Acquisition(voxel_size=(3.0, 3.0, 3.0))
    with ThreadPoolExecutor(2) as pool:  # each case has its own generator: the same images as one at a time
        list(pool.map(lambda i: synth.make_case(700 + i, patterns[i], acq).save(cohort / f"case{i}"), range(6)))
    cases = batch.discover_cases(cohort)
    batch.run_batch(cases, tmp_path / "local", "unet", SegmentConfig())

    out = tmp_path / "cluster"
    cmd = [sys.executable, "-m", "stroke_seg", "batch", str(cohort), "--out", str(out), "--model", "unet"]
    run = subprocess.Popen(
        cmd + ["--scheduler", cluster.address], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 240
    while not (len(list(out.glob("case*/report.json"))) >= 3 and cluster.processing().get("w1", 0) >= 1):
        if time.monotonic() > deadline or run.poll() is not None:
            run.kill()
            pytest.fail(f"the batch never had worker w1 busy after three cases: {run.communicate()[0][-2000:]}")
        time.sleep(0.05)
    cluster.workers["w1"].send_signal(signal.SIGKILL)  # mid-case: w1 is running one now
    output, _ = run.communicate(timeout=300)
    assert run.returncode == 0, output[-3000:]

    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [r["case"] for r in rows] == [name for name, _ in cases]
    assert all(r["status"] == "ok" for r in rows), [(r["case"], r["status"], r["worker"], r["error"]) for r in rows]
    assert {r["worker"] for r in rows} == {"w1", "w2"}, rows  # w1 finished cases before it died, w2 the rest
    assert all(float(r["seconds"]) > 0 for r in rows)
    assert sorted(p.name for p in out.iterdir()) == sorted([name for name, _ in cases] + ["summary.csv"])  # no staging
    local, remote = _masks(tmp_path / "local"), _masks(out)
    assert local.keys() == remote.keys() and len(local) == len(cases)
    for name in local:  # workers run OpenVINO on a share of the cores: float sums in another order, so a voxel
        a, b = local[name].astype(bool), remote[name].astype(bool)  # sitting on the threshold may flip
        assert (a != b).sum() <= max(2, 0.001 * a.sum()), (name, int(a.sum()), int(b.sum()), int((a != b).sum()))


def test_a_case_the_workers_cannot_read_is_reported_and_the_rest_go_on(tmp_path, shared_cluster):
    cohort = tmp_path / "cohort"
    for i in range(2):
        synth.make_case(800 + i, "lacunar", synth.Acquisition(voxel_size=(2.0, 2.0, 2.0))).save(cohort / f"c{i}")
    cases = batch.discover_cases(cohort)
    shutil.rmtree(cohort / "c1")  # gone after discovery: no worker can read it
    from stroke_seg.serving.cluster import run_batch_on_cluster

    rows = run_batch_on_cluster(cases, tmp_path / "out", "adc-threshold", SegmentConfig(), shared_cluster.client)
    assert rows[0]["status"] == "ok"
    assert rows[1]["status"] == "failed"
    assert "cannot read" in rows[1]["error"] and "storage every worker sees" in rows[1]["error"]


def _submit(client, folder: Path, mode: str):
    from gradio_client import handle_file

    return client.submit(
        handle_file(str(folder / "dwi.nii.gz")),
        handle_file(str(folder / "adc.nii.gz")),
        None,
        None,
        "unet",
        mode,
        api_name="/segment",
    )


def _desc(job) -> str:
    data = job.status().progress_data
    return (data[-1].desc or "") if data else ""


def test_the_app_runs_two_jobs_at_once_on_two_workers_with_progress_and_cancel(shared_cluster, cluster_app, app_cases):
    from gradio_client import Client

    cases, cluster, url = app_cases, shared_cluster, cluster_app
    # two users (two sessions): a gradio_client cancel closes its session's stream
    jobs = [_submit(Client(url, verbose=False), c, "accurate") for c in cases]
    deadline = time.monotonic() + 180
    # both jobs in the windows of a worker at the same time, each on its own worker
    while not all("window" in _desc(j) and "[worker " in _desc(j) for j in jobs):
        if time.monotonic() > deadline or any(j.done() for j in jobs):
            pytest.fail(f"the two jobs did not run at once: {[_desc(j) for j in jobs]}")
        time.sleep(0.05)
    names = {_desc(j).rsplit("[worker ", 1)[1].rstrip("]") for j in jobs}
    assert names == {"w1", "w2"}
    assert cluster.processing() == {"w1": 1, "w2": 1}
    jobs[0].cancel()
    deadline = time.monotonic() + 10
    while sum(cluster.processing().values()) != 1:  # the cancelled job's worker left its loop
        if time.monotonic() > deadline:
            pytest.fail(f"the cancelled job kept its worker busy: {cluster.processing()}")
        time.sleep(0.05)
    mask, report, *_ = jobs[1].result(timeout=300)
    assert Path(mask).is_file() and report["model"] == "unet"
    assert not jobs[0].done() or jobs[0].status().code.name in ("CANCELLED", "FINISHED")


def test_a_job_whose_worker_dies_finishes_elsewhere_and_a_cluster_without_workers_says_so(
    shared_cluster, cluster_app, app_cases
):
    """The module's last test: it kills both workers of the shared cluster."""
    from gradio_client import Client

    cases, cluster, url = app_cases, shared_cluster, cluster_app
    job = _submit(Client(url, verbose=False), cases[0], "fast")  # killed in its windows, then run whole again
    deadline = time.monotonic() + 180
    while not ("window" in _desc(job) and "[worker " in _desc(job)):
        if time.monotonic() > deadline or job.done():
            pytest.fail(f"the job never reached a worker's windows: {_desc(job)}")
        time.sleep(0.05)
    first = _desc(job).rsplit("[worker ", 1)[1].rstrip("]")
    cluster.workers[first].send_signal(signal.SIGKILL)
    mask, report, *_ = job.result(timeout=300)  # rerun on the other worker, transparently
    assert Path(mask).is_file() and report["lesion_volume_ml"] > 0

    other = ({"w1", "w2"} - {first}).pop()
    cluster.workers[other].send_signal(signal.SIGKILL)  # now the cluster has no worker at all
    job = _submit(Client(url, verbose=False), cases[1], "fast")
    with pytest.raises(Exception, match="has had none for 2 s"):
        job.result(timeout=120)
