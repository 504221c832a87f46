"""The job engine behind the web app: a bounded pool of inference threads, cancel, and result commit.

A job validates its inputs, looks the result up in the :class:`~stroke_seg.serving.cache.ResultCache`, runs
:func:`stroke_seg.segment` on one of ``concurrency`` long-lived inference threads (the device is the one resource
every session shares), streams what it is doing, writes the outputs into a staging folder and commits it to the
cache. Nothing here imports a UI toolkit: the app maps the events to its widgets, and another executor (a cluster)
can take the pool's place behind the same :meth:`JobEngine.run`.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from stroke_seg.api import segment
from stroke_seg.errors import Cancelled, InvalidImageError, JobTimeoutError, LaneBusyError, StrokeSegError
from stroke_seg.io.case import load_case, missing_input, save_image
from stroke_seg.io.dicom import DicomCase, load_dicom
from stroke_seg.io.dicom_seg import with_seg
from stroke_seg.io.digest import file_sha256
from stroke_seg.models import check_model_name, get_model, model_class, weights_sha256
from stroke_seg.report import render, write_pdf
from stroke_seg.serving.cache import ResultCache
from stroke_seg.serving.provisional import ProvisionalWriter
from stroke_seg.serving.warmup import first_job
from stroke_seg.types import Case, Provisional, Result, SegmentConfig
from stroke_seg.version import __version__

__all__ = ["JobEngine", "JobEvent", "INPUT_NAMES", "DICOM", "B0", "entry_file", "after_upload", "own_files"]

DICOM = "dicom"
"""The key of a DICOM export (a .zip) in a job's files, instead of the DWI and ADC."""
B0 = "b0"
"""The key of a b=0 image in a job's files: the ADC is computed from it when no ADC map is given."""

log = logging.getLogger(__name__)

INPUT_NAMES = ("dwi", "adc", "flair", "ground_truth")
"""The files a job takes, in the order of the app's inputs and of the ``/segment`` API."""

JobEvent = tuple[str, Any]
"""``("summary", (case, inputs_png))``, ``("tick", status_text)``, ``("provisional", description)`` (a model's early
answer: :meth:`ProvisionalWriter.write`), then ``("done" | "cached", entry_folder)``."""

Runner = Callable[..., Result]
"""Where a job's :func:`stroke_seg.segment` runs: ``segment`` itself (in this process) or a
:class:`stroke_seg.serving.cluster.ClusterRunner` (on a Dask worker); called as
``runner(case, model=, config=, progress=, should_cancel=)``."""

Progress = Callable[..., Any]
"""``progress(fraction, desc=...)``; ``gr.Progress`` fits."""


ExampleState = dict[str, Any]
"""What an example left in the inputs: ``{"left": [input names an example filled], "user": uploaded since?}``."""


def after_upload(state: ExampleState | None, name: str) -> tuple[ExampleState, list[str]]:
    """The state after an upload into ``name``, and the example's optional inputs (FLAIR, ground truth) to clear.

    The example's DWI and ADC are left for the user to replace (clearing them at upload would race with the
    user's next upload); :func:`own_files` refuses to pair an upload with them.
    """
    left = [n for n in (state or {}).get("left", []) if n != name]
    cleared = [n for n in left if n in ("flair", "ground_truth")]
    return {"left": [n for n in left if n not in cleared], "user": True}, cleared


def own_files(files: dict[str, str | None], state: ExampleState | None) -> dict[str, str | None]:
    """The files to segment: a user's uploads are never paired with what an example left in another input.

    Raises:
        InvalidImageError: an uploaded file would be paired with the example's DWI or ADC.
    """
    state = state or {}
    if not state.get("user"):
        return files
    left = set(state.get("left", []))
    mixed = [] if files.get(DICOM) else [n.upper() for n in ("dwi", "adc") if n in left and files.get(n)]
    if mixed:
        raise InvalidImageError(
            f"Your upload would be paired with the example's {' and '.join(mixed)}: upload your own "
            f"{' and '.join(mixed)} too (or click the example again to run it whole)."
        )
    return {n: (None if n in left else v) for n, v in files.items()}


class _Job:
    """One segmentation job of one request; nothing in it is shared between sessions."""

    def __init__(
        self,
        model: str,
        mode: str,
        config: SegmentConfig,
        progress: Progress,
        stopping: threading.Event,
        runner: Runner = segment,
    ) -> None:
        self.model, self.mode, self.config, self.progress, self.stopping = model, mode, config, progress, stopping
        self.runner = runner
        self.cancel = threading.Event()
        self.stage = "queued"
        self.started = time.monotonic()
        self.running_since: float | None = None  # when it got an inference thread
        self.result: Result | None = None
        self.error: BaseException | None = None
        self.provisional: Provisional | None = None  # the latest early answer (a model averaging several networks)

    def keep_provisional(self, provisional: Provisional) -> None:
        self.provisional = provisional

    def report(self, fraction: float, description: str) -> None:
        self.stage = f"{description} ({fraction:.0%})"
        self.progress(fraction, desc=description)

    def should_cancel(self) -> bool:
        return self.cancel.is_set() or self.stopping.is_set()

    def run(self, case: Case) -> None:
        outcome = "error"
        try:
            self.running_since = time.monotonic()
            log.info("inference start model=%s mode=%s t=%.3f", self.model, self.mode, time.time())
            try:
                if self.should_cancel():
                    raise Cancelled("cancelled while waiting for the device")
                early = {"on_provisional": self.keep_provisional} if self.runner is segment else {}  # not on a cluster
                self.result = self.runner(
                    case,
                    model=self.model,
                    config=self.config.replace(mode=self.mode),
                    progress=self.report,
                    should_cancel=self.should_cancel,
                    **early,
                )
                outcome = "ok"
            except Cancelled:
                outcome = "cancelled"
                raise
            finally:
                log.info("inference end status=%s t=%.3f", outcome, time.time())
        except BaseException as err:  # handed to the request's generator, which raises it there
            self.error = err
            if outcome == "cancelled":
                log.info("job cancelled: the server-side inference loop stopped (%s)", err)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def running(self) -> float:
        """Seconds on its inference thread so far (0 while it waits for one)."""
        return 0.0 if self.running_since is None else time.monotonic() - self.running_since


class _Lane:
    """Inference threads for one kind of model (fast or slow) and the jobs waiting for them, first come first served.
    A slow model (minutes per job) runs in a lane of its own, so that jobs of fast models never wait for all of it."""

    def __init__(self, title: str, slots: int, max_waiting: int | None) -> None:
        self.title, self.slots, self.max_waiting = title, slots, max_waiting
        self.pool = ThreadPoolExecutor(max_workers=max(slots, 1), thread_name_prefix=f"stroke-seg-{title.split()[0]}")
        self._lock = threading.Lock()
        self._waiting: list[object] = []
        self._running: list[_Job] = []

    def join(self, ticket: object) -> None:
        with self._lock:
            if self.max_waiting is not None and len(self._waiting) >= self.max_waiting + max(
                0, self.slots - len(self._running)
            ):
                raise LaneBusyError(
                    f"model: the {self.title} is full ({len(self._running)} running, {len(self._waiting)} waiting"
                    f"{self._eta()}); submit again later or choose a faster model"
                )
            self._waiting.append(ticket)

    def try_enter(self, ticket: object, job: _Job) -> bool:
        with self._lock:
            if len(self._running) < self.slots and self._waiting and self._waiting[0] is ticket:
                self._waiting.pop(0)
                self._running.append(job)
                return True
            return False

    def leave(self, ticket: object, job: _Job | None) -> None:
        with self._lock:
            if ticket in self._waiting:
                self._waiting.remove(ticket)
            if job in self._running:
                self._running.remove(job)

    def busy(self) -> bool:  # a job runs or waits
        return bool(self._waiting or self._running)

    def waiting_text(self, ticket: object) -> str:
        with self._lock:
            ahead = self._waiting.index(ticket) if ticket in self._waiting else 0
            return f"Waiting for the {self.title}: {len(self._running) + ahead} job(s) ahead{self._eta()}"

    def _eta(self) -> str:
        stages = [j.stage for j in self._running if "left" in j.stage]
        return f"; the running one reports: {stages[0]}" if stages else ""


def _check_request(files: dict[str, str | None], model: str) -> None:
    """Refuse a request whose inputs cannot make a case (before it queues), or that names an unknown model."""
    dicom, b0 = files.get(DICOM) or None, files.get(B0) or None
    if dicom and (files.get("dwi") or files.get("adc") or b0):
        raise InvalidImageError(
            "input: expected either a DICOM export or NIfTI DWI + ADC (or b0) files, but both were given"
        )
    missing = None if dicom else missing_input(files)
    if missing:
        raise InvalidImageError(
            "input: expected a DWI and an ADC (or b0) file (.nii or .nii.gz) or a DICOM export (.zip), but "
            f"{missing} is missing"
        )
    check_model_name(model)


async def _load_inputs(
    job: _Job, ordered: list[str | None], dicom: str | None, b0: str | None, workdir: Path
) -> tuple[Case, DicomCase | None]:
    """The job's validated case (a DICOM export converted in ``workdir`` first) and the DICOM case it came from."""
    if not dicom:
        return await asyncio.to_thread(lambda: load_case(*ordered, b0=b0)), None
    job.report(0.0, "converting the DICOM export (dcm2niix)")
    chosen = await asyncio.to_thread(load_dicom, dicom, workdir)
    case = await asyncio.to_thread(
        lambda: load_case(chosen.dwi, chosen.adc, ordered[2], ordered[3], b0=chosen.b0, b_value=chosen.b_value)
    )
    return case, chosen


class JobEngine:
    """Runs segmentation jobs on ``concurrency`` inference threads and commits their results to ``cache``.

    Args:
        cache: where finished results go (and are reused from, within its TTL).
        concurrency: inference jobs at once.
        tick_s: a running job reports its status at least this often, seconds.
        engine: the network engine of every job (:attr:`SegmentConfig.engine`).
        runner: where jobs run (:data:`Runner`); ``concurrency`` jobs at once are handed to it.
        timeout_s: wall-clock seconds a job may run on its inference thread (waiting in the queue or for the thread
            does not count; reading and checking the inputs is bounded by :mod:`stroke_seg.io.limits`); then it is
            stopped at its next step and fails with :class:`~stroke_seg.errors.JobTimeoutError`. None: no limit.
        slow_concurrency: jobs of slow models (``Backend.slow``, e.g. DeepISLES on a CPU) at once, in a lane of
            their own beside the ``concurrency`` fast ones; 0 runs them in the fast lane.
        slow_queue: slow-model jobs that may wait for their lane; one more is refused with a message saying why.
    """

    STOP_GRACE_S = 30.0
    """Seconds a timed-out job's inference is given to stop (at its next window) before the job fails anyway."""

    def __init__(
        self,
        cache: ResultCache,
        concurrency: int = 1,
        tick_s: float = 0.5,
        *,
        engine: str = "auto",
        runner: Runner = segment,
        timeout_s: float | None = None,
        slow_concurrency: int = 1,
        slow_queue: int = 1,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, but it is {concurrency}")
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 seconds or None, but it is {timeout_s}")
        self.timeout_s = timeout_s
        self.config = SegmentConfig(engine=engine)
        self.runner = runner
        self.cache = cache
        self.concurrency = concurrency
        self.tick_s = tick_s
        self.stopping = threading.Event()  # set on shutdown: a running job stops within one window
        self._fast = _Lane("inference queue", concurrency, None)
        self._pool = self._fast.pool
        self._slow = _Lane("slow-model lane", slow_concurrency, slow_queue) if slow_concurrency > 0 else None
        self.slots = concurrency + (slow_concurrency + slow_queue if self._slow else 0)
        """Jobs this engine takes at once (running or waiting for their lane): the app's queue concurrency."""

    def _lane(self, model: str) -> _Lane:
        return self._slow if self._slow is not None and getattr(model_class(model), "slow", False) else self._fast

    def warm_up(self, model: str) -> None:
        """Load ``model``, build its engines and run a local fast model once (:mod:`.warmup`) on an inference thread."""

        def load() -> None:
            try:
                warm = getattr(self.runner, "warm_up", None)
                warm(model, self.config) if warm else get_model(model).warm_up(self.config)
            except StrokeSegError as err:
                log.warning("model warm-up failed: %s", err)
                return
            if self.runner is segment and not getattr(model_class(model), "slow", False):
                first_job(model, self.config, lambda: self._fast.busy() or self.stopping.is_set())  # gives way

        self._pool.submit(load)

    def stop(self) -> None:  # running jobs stop at their next step
        self.stopping.set()

    async def run(
        self,
        files: dict[str, str | None],
        model: str,
        mode: str,
        progress: Progress,
        *,
        user: str | None = None,
        cache: ResultCache | None = None,
    ) -> AsyncIterator[JobEvent]:
        """One job, as a stream of :data:`JobEvent`.

        An async generator on purpose: between events it waits in ``await``, so a caller that closes it (a
        cancelled request) closes it at once; its ``finally`` then tells the inference thread to stop.

        Args:
            files: the inputs by name (:data:`INPUT_NAMES`, :data:`DICOM`, :data:`B0`), server paths or None.
            model, mode: the backend and its mode.
            progress: ``progress(fraction, desc=...)``.
            user: who asked (logins on), for the log; None when logins are off.
            cache: where this job's result is looked up and committed (a user's own folder); default the engine's.

        Raises:
            StrokeSegError: bad input, unknown model, failed inference, :class:`Cancelled`, or
                :class:`JobTimeoutError` after :attr:`timeout_s`.
        """
        dicom, b0 = files.get(DICOM) or None, files.get(B0) or None
        _check_request(files, model)
        ordered = [files.get(n) or None for n in INPUT_NAMES]
        cache = cache or self.cache
        await asyncio.to_thread(self.cache.sweep)
        if cache is not self.cache:
            await asyncio.to_thread(cache.sweep)
            cache.root.mkdir(parents=True, exist_ok=True)  # the engine's sweep removes a folder idle for its lifetime
        # the weights' checksum too (DeepISLES' folder, a nnU-Net folder): other weights, other answer
        weights = await asyncio.to_thread(weights_sha256, model, self.config.replace(mode=mode))
        options = (model, mode, self.config.engine, self.config.brain_extractor, __version__, weights)
        key = await asyncio.to_thread(cache.key, ordered + [dicom, b0], *options)
        # who ran which model on which bytes: digests only, never a file name (it may hold a patient's name)
        named = dict(zip(INPUT_NAMES, ordered)) | {DICOM: dicom, B0: b0}
        digests = await asyncio.to_thread(lambda: {n: file_sha256(f) for n, f in named.items() if f})
        inputs = " ".join(f"{n}:sha256={d}" for n, d in digests.items())
        log.info("job requested user=%s model=%s mode=%s result=%s inputs=[%s]", user or "-", model, mode, key, inputs)
        hit = cache.get(key)
        if hit is not None:
            progress(1.0, desc="served from the result cache")
            log.info("cache hit %s", key)
            yield "cached", hit
            return
        job = _Job(model, mode, self.config, progress, self.stopping, self.runner)
        lane, ticket = self._lane(model), object()
        lane.join(ticket)
        try:
            while not lane.try_enter(ticket, job):
                waiting = lane.waiting_text(ticket)
                progress(0.0, desc=waiting)
                yield "tick", waiting
                await asyncio.sleep(self.tick_s)
        except BaseException:
            lane.leave(ticket, job)
            raise
        job.started = time.monotonic()  # elapsed time shows from here; the time-out counts from job.run
        log.info("job accepted model=%s mode=%s t=%.3f", model, mode, time.time())
        job.report(0.0, "validating inputs")
        workdir = Path(tempfile.mkdtemp(prefix="stroke-seg-job-"))  # uploads converted here, deleted with the job
        staging: Path | None = None
        try:
            case, chosen = await _load_inputs(job, ordered, dicom, b0, workdir)
            staging = cache.staging()
            # Inference starts now on an inference thread (the context carries the caller's progress tracking);
            # the input montage is drawn while it runs, and the wrapped future wakes this generator at once.
            finished = asyncio.wrap_future(lane.pool.submit(contextvars.copy_context().run, job.run, case))
            inputs_png = await asyncio.to_thread(
                lambda: render.save_png(render.input_montage(case), staging / "inputs.png")
            )
            yield "summary", (case, inputs_png)
            early = ProvisionalWriter(cache.root, case, files)
            async for event in self._follow(job, finished, early, user):
                yield event
            if job.error is not None:
                raise job.error
            result = job.result
            if chosen is not None:  # the SEG first: one that cannot be written becomes a warning in the report
                result = await asyncio.to_thread(with_seg, result, chosen, staging / "mask_seg.dcm")
            await asyncio.to_thread(write_entry, result, case, files, staging)
            folder = cache.commit(staging, key)
            staging = None
            early.discard()  # the final result replaces the provisional answers; kept when the job stops before it
            log.info("result written %s t=%.3f", folder.name, time.time())
            yield "done", folder
        finally:
            job.cancel.set()
            lane.leave(ticket, job)
            shutil.rmtree(workdir, ignore_errors=True)
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)

    async def _follow(
        self, job: _Job, finished: asyncio.Future, early: ProvisionalWriter, user: str | None
    ) -> AsyncIterator[JobEvent]:
        """Status ticks while the job's inference runs, each new provisional answer written and described, and the
        time-out enforced."""
        shown = None
        while not finished.done():
            left = None if self.timeout_s is None else self.timeout_s - job.running()
            if left is not None and left <= 0:
                await self._stop_timed_out(job, finished, user)
            wait_s = self.tick_s if left is None else max(0.01, min(self.tick_s, left))
            done, _ = await asyncio.wait({finished}, timeout=wait_s)
            latest = job.provisional
            if latest is not None and latest is not shown and not done:
                shown = latest
                yield "provisional", await asyncio.to_thread(early.write, latest)
            if not done:
                yield "tick", f"Running `{job.model}` ({job.mode}) — {job.elapsed():.0f} s — {job.stage}"

    async def _stop_timed_out(self, job: _Job, finished: asyncio.Future, user: str | None) -> None:
        """Stop a job past :attr:`timeout_s`: cancel its inference, give it :attr:`STOP_GRACE_S` to let go of its
        thread, then fail the job."""
        job.cancel.set()
        log.warning(
            "job timed out user=%s model=%s after %.0f s (limit %g s) during %s: stopping it",
            user or "-",
            job.model,
            job.running(),
            self.timeout_s,
            job.stage,
        )
        await asyncio.wait({finished}, timeout=self.STOP_GRACE_S)
        if not finished.done():
            log.warning("timed-out job still holds its inference thread after %.0f s", self.STOP_GRACE_S)
        raise JobTimeoutError(
            f"job: expected to finish within {self.timeout_s:g} s (the server's STROKE_SEG_JOB_TIMEOUT), but "
            f"`{job.model}` ({job.mode}) was still running after {job.running():.0f} s, at {job.stage}; it was "
            "stopped and its place freed for the next job. Try the fast mode, another model or a smaller scan."
        )


def write_entry(result: Result, case: Case, files: dict[str, str | None], folder: Path) -> None:
    """Write a result's files into an entry folder; ``report.json`` last (its presence marks the entry complete).

    The files are independent, so they are written concurrently (zlib and PNG encoding release the GIL). The
    viewer shows the uploaded DWI and ADC as they are (copied, not re-encoded; NiiVue places them by their affines).
    """
    mask = np.asarray(result.mask.dataobj) > 0
    if files.get("dwi") and files.get("adc"):
        tasks = [
            lambda name=name: shutil.copyfile(files[name], folder / (name + _nifti_suffix(files[name])))
            for name in ("dwi", "adc")
        ]
    else:  # converted inputs (DICOM): the viewer shows the validated DWI and ADC (1e-6 mm²/s)
        tasks = [
            lambda: save_image(case.dwi, case, folder / "dwi.nii.gz", dtype=np.float32),
            lambda: save_image(case.adc, case, folder / "adc.nii.gz", dtype=np.float32),
        ]
    tasks += [
        lambda: save_image(mask.astype(np.uint8), case, folder / "mask.nii.gz"),
        lambda: save_image(
            np.asarray(result.probability.dataobj, dtype=np.float32),
            case,
            folder / "probability.nii.gz",
            dtype=np.float32,
        ),
        lambda: render.save_png(render.result_montage(case, mask), folder / "montage.png"),
    ]
    if result.brain_mask is not None:  # the brain the model and the rules used: a download and the viewer's toggle
        tasks.append(lambda: save_image(np.asarray(result.brain_mask.dataobj), case, folder / "brain_mask.nii.gz"))
    if result.report is not None:  # the one-page clinical report
        tasks.append(lambda: write_pdf(result.report, case, mask, folder / "report.pdf"))
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="stroke-seg-write") as pool:
        for future in [pool.submit(t) for t in tasks]:
            future.result()
    (folder / ResultCache.DONE).write_text(json.dumps(result.to_dict(), indent=2))


def _nifti_suffix(path: str | None) -> str:
    return ".nii.gz" if str(path).lower().endswith(".gz") else ".nii"


def entry_file(folder: Path, name: str) -> Path:
    """The copy of an input in an entry (``dwi.nii.gz`` or ``dwi.nii``)."""
    gz = folder / f"{name}.nii.gz"
    return gz if gz.is_file() else folder / f"{name}.nii"
