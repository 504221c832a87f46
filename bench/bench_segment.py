"""Time ``stroke_seg.segment()`` on a 1 mm and a 2 mm synthetic case; median of N runs, peak RSS.

    python bench/bench_segment.py [--model adc-threshold] [--mode fast] [--repeats 5] [--case FOLDER]

Without --case: a 1 mm and a 2 mm synthetic case. With --case: that case folder (dwi + adc or b0, e.g. the real
2 mm ISLES'22 scan in ../shared/data), end to end (loading, brain extraction, model, post-processing, metrics).

Each resolution runs in a fresh subprocess (so peak RSS is that of loading + segmenting one case
of that size, including the model) after one warm-up run that is not counted.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def peak_rss_mb() -> float:
    """High-water RSS of this process (VmHWM; unlike ru_maxrss it does not inherit the parent's across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(folder: str, model: str, mode: str, repeats: int, device: str | None) -> None:
    import stroke_seg

    config = stroke_seg.SegmentConfig(mode=mode, device=device)
    stroke_seg.segment(folder, model=model, config=config)  # warm-up (loads the model)
    times, stages = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        r = stroke_seg.segment(folder, model=model, config=config)
        times.append(time.perf_counter() - t)
        stages.append(r.timings)
    rss_mb = peak_rss_mb()
    median_stages = {k: round(statistics.median(s[k] for s in stages), 3) for k in stages[0]}
    dice = r.metrics.comparison.dice if r.metrics.comparison else None
    print(
        json.dumps(
            {
                "median_s": round(statistics.median(times), 3),
                "min_s": round(min(times), 3),
                "max_s": round(max(times), 3),
                "peak_rss_mb": round(rss_mb),
                "stages": median_stages,
                "dice": dice,
                "shape": list(r.case.shape),
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="adc-threshold")
    p.add_argument("--mode", default="fast")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default=None)
    p.add_argument("--case", default=None, help="a case folder to time instead of the synthetic ones")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a.child, a.model, a.mode, a.repeats, a.device)
        return
    from stroke_seg import synth

    with tempfile.TemporaryDirectory() as tmp:
        print(f"| model | mode | case | shape | median s (of {a.repeats}) | min-max s | peak RSS MB | Dice |")
        print("|---|---|---|---|---|---|---|---|")
        if a.case:
            folders = [(Path(a.case).name, Path(a.case))]
        else:
            folders = [
                (
                    f"synthetic {vs:g} mm",
                    synth.make_case(7, "territorial", synth.Acquisition(voxel_size=(vs,) * 3)).save(
                        Path(tmp) / f"iso{vs:g}"
                    ),
                )
                for vs in (1.0, 2.0)
            ]
        for label, folder in folders:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                str(folder),
                "--model",
                a.model,
                "--mode",
                a.mode,
                "--repeats",
                str(a.repeats),
            ] + (["--device", a.device] if a.device else [])
            out = json.loads(
                subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            )
            dice = "—" if out["dice"] is None else f"{out['dice']:.3f}"
            print(
                f"| {a.model} | {a.mode} | {label} | {tuple(out['shape'])} | {out['median_s']} | "
                f"{out['min_s']}-{out['max_s']} | {out['peak_rss_mb']} | {dice} |"
            )
            print(f"<!-- stages (median s): {out['stages']} -->")


if __name__ == "__main__":
    main()
