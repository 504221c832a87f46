"""End-to-end through the launched app (gradio_client) vs direct ``segment()`` on the same case.

    python bench/bench_app.py [--model unet] [--mode fast] [--repeats 5] [--case examples/embolic_multi]

Direct and app runs are interleaved (one of each per repeat). Reports medians of N runs and their
ratio, the time from submit to the first progress event, the largest gap between progress events
seen by the client, and the time the app takes to bind its port. The app runs with STROKE_SEG_CACHE_TTL=0 (no result
cache) so every run computes. This machine's speed drifts (by 40 % within one night on a shared 2-core VM), so the
first line is a fixed load measured just before: 8 windows of the `unet` network on the default engine (the fast
path's network on this case).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def _last_inference_s(log: Path) -> float:
    """Seconds of the server's last ``segment()`` call, from its log (``inference start`` / ``inference end``): the
    report an app returns for the same inputs is the first run's (the result cache keeps the first writer's entry)."""
    stamps = re.findall(r"inference (start|end) .*?t=([0-9.]+)", log.read_text())
    start = next(float(t) for kind, t in reversed(stamps) if kind == "start")
    end = next(float(t) for kind, t in reversed(stamps) if kind == "end")
    return end - start


def network_seconds(repeats: int = 5) -> float:
    """Median seconds of 8 windows of the ``unet`` network on the default engine (a fixed load: the machine's speed)."""
    import torch

    import stroke_seg
    from stroke_seg.models import get_model
    from stroke_seg.models.unet import WINDOW

    _, engine = get_model("unet").engine(stroke_seg.SegmentConfig(mode="fast"))
    x = torch.rand(1, 3, *WINDOW, generator=torch.Generator().manual_seed(0))
    engine(x)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(8):
            engine(x)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="unet")
    p.add_argument("--mode", default="fast")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--case", default=str(ROOT / "examples" / "embolic_multi"))
    a = p.parse_args()
    from gradio_client import Client, handle_file

    import stroke_seg
    from apphelpers import launched_app

    case = Path(a.case)
    files = {"dwi": case / "dwi.nii.gz", "adc": case / "adc.nii.gz"}
    config = stroke_seg.SegmentConfig(mode=a.mode)
    stroke_seg.segment(files, model=a.model, config=config)  # warm-up
    print(f"machine speed: 8 windows of the unet network (default engine) {network_seconds():.2f} s")

    def direct_run() -> tuple[float, float]:
        t = time.perf_counter()
        result = stroke_seg.segment(files, model=a.model, config=config)
        return time.perf_counter() - t, result.timings["total"]

    with tempfile.TemporaryDirectory() as tmp, launched_app(Path(tmp), STROKE_SEG_CACHE_TTL="0") as (url, _log):
        bind_s = float(next(Path(tmp).glob("app-*.bind_seconds")).read_text())
        client = Client(url, verbose=False)

        def run():
            t0 = time.perf_counter()
            job = client.submit(
                handle_file(str(files["dwi"])),
                handle_file(str(files["adc"])),
                None,
                None,
                a.model,
                a.mode,
                api_name="/segment",
            )
            first, stamps, last = None, [], None
            while not job.done():
                st = job.status()
                if st.progress_data:
                    key = (st.progress_data[-1].progress, st.progress_data[-1].desc)
                    if key != last:
                        now = time.perf_counter() - t0
                        first = now if first is None else first
                        stamps.append(now)
                        last = key
                time.sleep(0.02)
            job.result()
            total = time.perf_counter() - t0
            gaps = [b - a_ for a_, b in zip(stamps, stamps[1:])] + ([total - stamps[-1]] if stamps else [])
            return total, first, max(gaps) if gaps else float("nan"), len(stamps), _last_inference_s(_log)

        run()  # warm-up (the app loads the model)
        # Interleaved (direct, app, direct, app, ...): this machine's speed drifts by 10-25 % over minutes,
        # and measuring all direct runs first would charge that drift to the app.
        direct, runs = [], []
        for _ in range(a.repeats):
            direct.append(direct_run())
            runs.append(run())
    e2e = [r[0] for r in runs]
    med_d, med_e = statistics.median(d[0] for d in direct), statistics.median(e2e)
    seg_d, seg_a = statistics.median(d[1] for d in direct), statistics.median(r[4] for r in runs)
    print(f"case {case.name}, model {a.model} ({a.mode}), {a.repeats} runs each")
    print(
        "| direct segment() median s | via gradio_client median s | ratio | target (1.05 x direct + 0.5 s) | first "
        "progress s (median / max) | largest gap s (max) | progress events (median) | port bind s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {med_d:.2f} | {med_e:.2f} | {med_e / med_d:.3f} | {1.05 * med_d + 0.5:.2f} | "
        f"{statistics.median(r[1] for r in runs):.2f} / {max(r[1] for r in runs):.2f} | {max(r[2] for r in runs):.2f} "
        "| "
        f"{statistics.median(r[3] for r in runs):.0f} | {bind_s:.1f} |"
    )
    print(
        f"segment() total inside: direct {seg_d:.2f} s, app {seg_a:.2f} s (median); app overhead outside segment(): "
        f"{med_e - seg_a:.2f} s"
    )


if __name__ == "__main__":
    main()
