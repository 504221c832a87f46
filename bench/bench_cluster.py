"""Cohort throughput in-process vs on a Dask LocalCluster, and the cluster path's overhead per case.

    python bench/bench_cluster.py [--cases 9] [--model unet] [--workers 1 2]

One run: the same synthetic 2 mm cohort (``--cases`` cases, patterns in turn) through ``batch.run_batch``
(in-process) and ``cluster.run_batch_on_cluster`` on a LocalCluster of 1 and of 2 worker processes, each into a
fresh output folder (so nothing is skipped as done). Each engine is warmed up first (models loaded, engines built),
so the figures compare steady-state throughput. The overhead per case is measured with the ``adc-threshold`` model
(no network): the same small case, one at a time, in-process vs on a 1-worker LocalCluster (submit, run, gather),
median of 9; the difference is what the cluster path adds (scheduling, transfer of the row, worker-side checks).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=int, default=9)
    p.add_argument("--model", default="unet")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from stroke_seg import SegmentConfig
    from stroke_seg.serving import batch, cluster
    from stroke_seg.synthetic import generator as synth

    config = SegmentConfig()
    patterns = ["territorial", "lacunar", "emboli", "control"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for i in range(a.cases):
            acq = synth.Acquisition(voxel_size=(2.0, 2.0, 2.0))
            synth.make_case(1000 + i, patterns[i % len(patterns)], acq).save(tmp / "cohort" / f"case{i:02d}")
        cases = batch.discover_cases(tmp / "cohort")
        warm = cases[:1]

        print("| engine | cases | wall s | cases / min | vs in-process | workers named |")
        print("|---|---|---|---|---|---|")
        batch.run_batch(warm, tmp / "warm-local", a.model, config)
        t = time.perf_counter()
        batch.run_batch(cases, tmp / "local", a.model, config)
        local_s = time.perf_counter() - t
        print(
            f"| in-process | {len(cases)} | {local_s:.1f} | {60 * len(cases) / local_s:.1f} | 1.00x | — |", flush=True
        )
        for n in a.workers:
            with cluster.connect(workers=n) as client:
                client.run(lambda: __import__("stroke_seg").models.get_model(a.model).warm_up(config))
                t = time.perf_counter()
                rows = cluster.run_batch_on_cluster(cases, tmp / f"cluster{n}", a.model, config, client)
                wall = time.perf_counter() - t
            named = len({r.get("worker") for r in rows})
            assert all(r["status"] == "ok" for r in rows), rows
            print(
                f"| LocalCluster, {n} worker{'s' * (n > 1)} | {len(cases)} | {wall:.1f} | {60 * len(cases) / wall:.1f}"
                f" | {local_s / wall:.2f}x | {named} |",
                flush=True,
            )

        one = cases[:1]
        direct, remote = [], []
        for i in range(10):
            t = time.perf_counter()
            batch.run_batch(one, tmp / f"o-local{i}", "adc-threshold", config)
            direct.append(time.perf_counter() - t)
        with cluster.connect(workers=1) as client:
            for i in range(10):
                t = time.perf_counter()
                cluster.run_batch_on_cluster(one, tmp / f"o-cluster{i}", "adc-threshold", config, client)
                remote.append(time.perf_counter() - t)
        d, r = statistics.median(direct[1:]), statistics.median(remote[1:])
        print()
        print("| path | one case, median of 9 (s) | overhead per case (s) |")
        print("|---|---|---|")
        print(f"| in-process `run_batch` | {d:.3f} | — |")
        print(f"| LocalCluster (1 worker) `run_batch_on_cluster` | {r:.3f} | {r - d:+.3f} |")


if __name__ == "__main__":
    main()
