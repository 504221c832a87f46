"""A ``unet`` job beside a running DeepISLES job: the app's slow-model lane, measured through ``gradio_client``.

    python bench/bench_lanes.py [--repeats 3] [--window-s 4]

Launches ``app.py`` on loopback with slowed DeepISLES stand-ins (``tests/deepisles_standins.py``: rules on the
z-scored channels plus matrix products sized to about ``--window-s`` seconds per window, 15 checkpoints), submits a
DeepISLES job, and while it runs submits ``unet`` jobs on 2 mm synthetic cases; prints the ``unet`` job's time alone
and beside the DeepISLES job (median of --repeats), and how long the DeepISLES job took.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--window-s", type=float, default=4.0)
    args = ap.parse_args()

    from deepisles_standins import RuleNet, write_standins
    from gradio_client import Client
    from test_deepisles import stripped_case
    from test_deepisles_app import submit, wait_for

    from apphelpers import launched_app
    from stroke_seg.synthetic import generator as synth

    with tempfile.TemporaryDirectory(prefix="bench-lanes-") as tmp:
        tmp = Path(tmp)
        probe = torch.jit.script(RuleNet(0.0, 0.0, 0.0, spin=200))
        t0 = time.perf_counter()
        probe(torch.zeros(1, 2, 4, 4, 4))
        per_spin = (time.perf_counter() - t0) / 200
        weights = write_standins(tmp / "w", spin=int(args.window_s / per_spin))
        deep = stripped_case(tmp / "deep", "ras-1mm-float32")
        cases = []
        for i in range(2 * args.repeats + 1):
            folder = synth.make_case(900 + i, "lacunar", synth.Acquisition(voxel_size=(2.0, 2.0, 2.0))).save(
                tmp / f"u{i}"
            )
            cases.append({"dwi": folder / "dwi.nii.gz", "adc": folder / "adc.nii.gz"})
        env = {"STROKE_SEG_DEEPISLES_WEIGHTS": str(weights), "STROKE_SEG_CACHE_TTL": "0"}
        env["STROKE_SEG_ENGINE"] = os.environ.get("STROKE_SEG_ENGINE", "auto")
        with launched_app(tmp, **env) as (url, _log):

            def timed(case: dict, model: str) -> float:
                t = time.perf_counter()
                submit(Client(url, verbose=False), case, model).result(timeout=1800)
                return time.perf_counter() - t

            timed(cases[-1], "unet")  # warm-up (model load), not counted
            alone = [timed(cases[i], "unet") for i in range(args.repeats)]
            t_deep = time.perf_counter()
            slow = submit(Client(url, verbose=False), deep, "deepisles-nvauto")
            wait_for(lambda: "checkpoint" in str(slow.status().progress_data), 600, "the DeepISLES job to start")
            beside = [timed(cases[args.repeats + i], "unet") for i in range(args.repeats)]
            still_running = not slow.done()
            slow.result(timeout=3600)
            deep_s = time.perf_counter() - t_deep
    out = {
        "unet_alone_s": round(statistics.median(alone), 2),
        "unet_beside_deepisles_s": round(statistics.median(beside), 2),
        "ratio": round(statistics.median(beside) / statistics.median(alone), 2),
        "deepisles_job_s": round(deep_s, 1),
        "deepisles_still_running_when_unet_jobs_ended": still_running,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
