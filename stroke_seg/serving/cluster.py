"""Scale-out on Dask distributed: cohort batches across machines, and the app's jobs on cluster workers.

Two uses, one mechanism (a task per case or per job on a Dask cluster):

* :func:`run_batch_on_cluster`: every case of a cohort is a task; a worker loads a model once (the model registry is
  per process, and a Dask worker is a process) and writes the case's outputs itself, so inputs and outputs must be
  paths on storage every worker sees. A worker that dies mid-case loses nothing: the scheduler runs its cases again
  elsewhere. A case that fails is reported in ``summary.csv`` and the rest go on.
* :class:`ClusterRunner`: :func:`stroke_seg.segment` for the web app's job engine, run on a worker. The case travels
  to the worker and the result back (no shared storage needed); the worker's progress comes back through a Dask
  ``Variable``, a cancel goes out through a Dask ``Event`` that the worker's sliding-window loop polls.

``connect`` opens a client to ``tcp://HOST:PORT`` (an existing ``dask scheduler``) or starts a ``LocalCluster`` of N
worker processes on this machine.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from stroke_seg.api import segment
from stroke_seg.errors import Cancelled, StrokeSegError
from stroke_seg.serving.batch import CaseFiles, remove_abandoned_staging, run_case, write_summary
from stroke_seg.serving.memory import keep_freed_memory
from stroke_seg.types import CancelCheck, Case, ProgressCallback, Result, SegmentConfig

__all__ = [
    "ClusterError",
    "connect",
    "run_batch_on_cluster",
    "ClusterRunner",
    "worker_name",
    "THREADS_ENV",
]

log = logging.getLogger(__name__)

THREADS_ENV = "STROKE_SEG_THREADS"
"""Environment variable: CPU threads one worker process uses for the network (set for LocalCluster workers)."""

NO_WORKER_TIMEOUT_S = float(os.environ.get("STROKE_SEG_DASK_NO_WORKER_S", "30"))
"""How long a job waits with no worker in the cluster before it fails with a clear error
(``STROKE_SEG_DASK_NO_WORKER_S``, 30)."""
_memory_settings_once = functools.cache(keep_freed_memory)  # a worker process: applied by its first task


class ClusterError(StrokeSegError):
    """The cluster cannot be reached, has no workers, or lost the worker of a job more often than it retries."""


def _distributed():
    try:
        import distributed
    except ImportError as err:  # pragma: no cover - a normal requirement
        raise ClusterError("cluster: expected the dask[distributed] package, but it is not installed") from err
    return distributed


def worker_name() -> str:
    """The Dask worker's name inside a task; ``"in-process"`` outside one."""
    try:
        return str(_distributed().get_worker().name)
    except ValueError:
        return "in-process"


def _use_thread_budget() -> None:
    """Apply :data:`THREADS_ENV` to torch in this worker process (OpenVINO reads it when it compiles), and the app's
    memory settings (:mod:`.memory`), once per process."""
    _memory_settings_once()
    threads = os.environ.get(THREADS_ENV)
    if threads:
        import torch

        if torch.get_num_threads() != int(threads):
            torch.set_num_threads(int(threads))


@contextlib.contextmanager
def connect(scheduler: str | None = None, workers: int | None = None) -> Iterator[Any]:
    """A ``distributed.Client`` on an existing scheduler (``tcp://HOST:PORT``) or on a new LocalCluster.

    Args:
        scheduler: address of a running ``dask scheduler``.
        workers: with no scheduler, start a LocalCluster of this many single-threaded worker processes; the
            machine's cores are shared among them (:data:`THREADS_ENV`).

    Raises:
        ClusterError: the scheduler cannot be reached, or neither argument is given.
    """
    distributed = _distributed()
    if scheduler:
        try:
            client = distributed.Client(scheduler, timeout="15s")
        except (OSError, TimeoutError) as err:
            raise ClusterError(
                f"cluster: expected a Dask scheduler at {scheduler}, but it cannot be reached ({err})"
            ) from err
        try:
            yield client
        finally:
            client.close()
        return
    if not workers or workers < 1:
        raise ClusterError(f"cluster: expected a scheduler address or a number of workers >= 1, but got {workers}")
    import dask

    threads = max(1, (os.cpu_count() or 1) // workers)
    with dask.config.set({"distributed.nanny.environ": {THREADS_ENV: str(threads)}}):
        cluster = distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
    try:
        with distributed.Client(cluster) as client:
            yield client
    finally:
        cluster.close()


def _case_on_worker(
    name: str, files: dict[str, str | None], out: str, model: str, config: SegmentConfig, run_id: str
) -> dict:
    """One case on a worker: check that the worker sees its paths, run it (resumable), name the worker."""
    _use_thread_budget()
    here = worker_name()
    unreadable = [f"{k} {p}" for k, p in files.items() if p is not None and not os.access(p, os.R_OK)]
    if unreadable:
        return {
            "case": name,
            "status": "failed",
            "model": model,
            "worker": here,
            "error": f"case {name}: expected inputs that worker {here} can read, but it cannot read "
            f"{', '.join(unreadable)} (inputs and outputs must be on storage every worker sees)",
        }
    paths = {k: (Path(v) if v else None) for k, v in files.items()}
    return run_case(name, paths, Path(out), model, config, worker=here, run_id=run_id)


def run_batch_on_cluster(
    cases: Iterable[tuple[str, CaseFiles]],
    out: Path,
    model: str,
    config: SegmentConfig,
    client: Any,
    *,
    progress: Callable[[Iterable, int], Iterable] | None = None,
) -> list[dict[str, Any]]:
    """Run every case as one task on the cluster of ``client`` and write ``out/summary.csv`` (with ``worker``).

    Args:
        cases: (name, files) pairs; paths must be visible to every worker (made absolute here).
        out: output folder, on storage every worker sees.
        model: backend name.
        config: options.
        client: a ``distributed.Client`` (see :func:`connect`).
        progress: wraps the iterator of completed cases with their total (e.g. ``lambda it, n: tqdm(it, total=n)``).

    Returns:
        One row per case, in the order of ``cases``.
    """
    distributed = _distributed()
    cases = list(cases)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:8]
    futures = {
        client.submit(
            _case_on_worker,
            name,
            {k: (str(Path(v).resolve()) if v is not None else None) for k, v in files.items()},
            str(out),
            model,
            config,
            run_id,
            key=f"stroke-seg-case-{name}-{run_id}",
            retries=2,
        ): name
        for name, files in cases
    }
    rows: dict[str, dict[str, Any]] = {}
    completed = distributed.as_completed(futures)
    for future in progress(completed, len(futures)) if progress else completed:
        name = futures[future]
        try:
            rows[name] = future.result()
        except distributed.KilledWorker as err:
            rows[name] = {"case": name, "status": "failed", "model": model, "error": f"workers kept dying: {err}"}
        except StrokeSegError as err:
            rows[name] = {"case": name, "status": "failed", "model": model, "error": str(err)}
        log.info("case %s: %s on %s", name, rows[name]["status"], rows[name].get("worker"))
    ordered = [rows[name] for name, _ in cases]
    remove_abandoned_staging(ordered, out)  # a worker killed while writing a case left its staging folder
    write_summary(ordered, out)
    return ordered


def _segment_on_worker(
    case: Case, model: str, config: SegmentConfig, cancel_name: str, progress_name: str
) -> tuple[Result, str]:
    """:func:`stroke_seg.segment` on a worker, reporting to a Dask Variable and polling a Dask Event."""
    distributed = _distributed()
    _use_thread_budget()
    client = distributed.get_client()
    cancel = distributed.Event(cancel_name, client=client)
    reported = distributed.Variable(progress_name, client=client)
    here = worker_name()

    def progress(fraction: float, description: str) -> None:
        reported.set((float(fraction), description, here))

    result = segment(case, model=model, config=config, progress=progress, should_cancel=cancel.is_set)
    return result, here


class ClusterRunner:
    """Runs :func:`stroke_seg.segment` on a Dask cluster's workers, with the same signature, for the job engine.

    Args:
        scheduler: ``tcp://HOST:PORT`` of a running ``dask scheduler``.

    Raises:
        ClusterError: the scheduler cannot be reached.
    """

    def __init__(self, scheduler: str) -> None:
        distributed = _distributed()
        self.address = scheduler
        try:
            self.client = distributed.Client(scheduler, timeout="15s", set_as_default=False)
        except (OSError, TimeoutError) as err:
            raise ClusterError(
                f"cluster: expected a Dask scheduler at {scheduler}, but it cannot be reached ({err})"
            ) from err

    def workers(self) -> int:
        return len(self.client.scheduler_info(n_workers=-1)["workers"])

    def warm_up(self, model: str, config: SegmentConfig) -> None:
        """Load ``model`` and build its engines on every worker now."""

        def load(name: str, cfg: SegmentConfig) -> None:
            from stroke_seg.models import get_model

            _use_thread_budget()
            get_model(name).warm_up(cfg)

        self.client.run(load, model, config)

    def close(self) -> None:
        self.client.close()

    def __call__(
        self,
        case: Case,
        *,
        model: str,
        config: SegmentConfig,
        progress: ProgressCallback,
        should_cancel: CancelCheck,
    ) -> Result:
        distributed = _distributed()
        uid = uuid.uuid4().hex
        cancel = distributed.Event(f"stroke-seg-cancel-{uid}", client=self.client)
        reported = distributed.Variable(f"stroke-seg-progress-{uid}", client=self.client)
        with warnings.catch_warnings():  # the case's voxels travel with the task on purpose (tens of MB)
            warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
            future = self.client.submit(
                _segment_on_worker, case, model, config, cancel.name, reported.name, key=f"stroke-seg-job-{uid}"
            )
        last, alone_since = None, None
        try:
            while True:
                try:
                    result, worker = future.result(timeout=0.2)
                    log.info("job %s done on worker %s", uid[:8], worker)
                    return result
                except TimeoutError:
                    pass
                except distributed.KilledWorker as err:
                    raise ClusterError(
                        "cluster: the workers running this job were lost repeatedly; please retry or report it"
                    ) from err
                try:
                    now = reported.get(timeout=0.05)
                except TimeoutError:
                    now = None
                if now is not None and now != last:
                    last = now
                    progress(now[0], f"{now[1]} [worker {now[2]}]")
                if should_cancel() and not cancel.is_set():
                    cancel.set()  # the worker stops at its next window and raises Cancelled, which comes back here
                if self.workers() == 0:
                    alone_since = alone_since or time.monotonic()
                    if time.monotonic() - alone_since > NO_WORKER_TIMEOUT_S:
                        future.cancel()
                        raise ClusterError(
                            f"cluster: expected a worker to run this job, but the cluster at {self.address} has had "
                            f"none for {NO_WORKER_TIMEOUT_S:.0f} s"
                        )
                    if should_cancel():
                        future.cancel()
                        raise Cancelled("cancelled while waiting for a cluster worker")
                else:
                    alone_since = None
        finally:
            with contextlib.suppress(Exception):
                reported.delete()
