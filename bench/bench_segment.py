"""Time ``stroke_seg.segment()`` and its network on a 1 mm and a 2 mm synthetic case; median of N runs, peak RSS.

    python bench/bench_segment.py [--model unet] [--modes fast accurate] [--engines torch openvino auto]
                                  [--repeats 5] [--case FOLDER]

Without --case: a 1 mm and a 2 mm synthetic case. With --case: that case folder (dwi + adc or b0, e.g. the real
2 mm ISLES'22 scan in ../shared/data), end to end (loading, brain extraction, model, post-processing, metrics).
"network" is the time inside the U-Net's sliding-window loop (every window and mirror pass); the rest of
``segment()`` is loading, preprocessing, resampling and post-processing.

Each (case, mode, engine) runs in a fresh subprocess (so peak RSS is that of loading + segmenting one case of that
size with that engine, including the model) after one warm-up run that is not counted (the warm-up pays the
engine's conversion, as the app's start does).
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


def child(folder: str, model: str, mode: str, repeats: int, device: str | None, engine: str) -> None:
    import stroke_seg
    from stroke_seg.models import unet

    network: list[float] = []
    windows = unet.sliding_window

    def timed_windows(*args, **kwargs):
        t = time.perf_counter()
        try:
            return windows(*args, **kwargs)
        finally:
            network.append(time.perf_counter() - t)

    unet.sliding_window = timed_windows
    config = stroke_seg.SegmentConfig(mode=mode, device=device, engine=engine)
    stroke_seg.segment(folder, model=model, config=config)  # warm-up (loads the model, builds the engine)
    network.clear()
    times, stages = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        r = stroke_seg.segment(folder, model=model, config=config)
        times.append(time.perf_counter() - t)
        stages.append(r.timings)
    resolved = engine
    if model in ("unet", "ensemble"):
        resolved = stroke_seg.models.engines.resolve_engine(engine, unet.resolve_device(device), mode)
    rss_mb = peak_rss_mb()
    median_stages = {k: round(statistics.median(s[k] for s in stages), 3) for k in stages[0]}
    dice = r.metrics.comparison.dice if r.metrics.comparison else None
    print(
        json.dumps(
            {
                "median_s": round(statistics.median(times), 3),
                "network_s": round(statistics.median(network), 3) if network else None,
                "engine": resolved,
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
    p.add_argument("--model", default="unet")
    p.add_argument("--modes", nargs="+", default=["fast", "accurate"])
    p.add_argument("--engines", nargs="+", default=["torch", "auto"], help="first one is the reference of the ratios")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default=None)
    p.add_argument("--case", default=None, help="a case folder to time instead of the synthetic ones")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a.child, a.model, a.modes[0], a.repeats, a.device, a.engines[0])
        return
    from stroke_seg.synthetic import generator as synth

    with tempfile.TemporaryDirectory() as tmp:
        print(
            f"| model | mode | engine | case | shape | network median s | segment() median s (of {a.repeats}) | "
            "segment() min-max s | vs first engine | peak RSS MB | Dice |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
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
            for mode in a.modes:
                first = None
                for engine in a.engines:
                    cmd = [sys.executable, __file__, "--child", str(folder), "--model", a.model, "--modes", mode]
                    cmd += ["--engines", engine, "--repeats", str(a.repeats)] + (
                        ["--device", a.device] if a.device else []
                    )
                    run = subprocess.run(cmd, check=True, capture_output=True, text=True)
                    out = json.loads(run.stdout.strip().splitlines()[-1])
                    first = first or out
                    dice = "—" if out["dice"] is None else f"{out['dice']:.3f}"
                    net = "—" if out["network_s"] is None else f"{out['network_s']:.3f}"
                    ratio = first["median_s"] / out["median_s"]
                    if out["network_s"] and first["network_s"]:
                        ratio_text = f"{first['network_s'] / out['network_s']:.2f}x network, {ratio:.2f}x segment()"
                    else:
                        ratio_text = f"{ratio:.2f}x segment()"
                    print(
                        f"| {a.model} | {mode} | {engine} ({out['engine']}) | {label} | {tuple(out['shape'])} | "
                        f"{net} | {out['median_s']:.3f} | {out['min_s']}-{out['max_s']} | {ratio_text} | "
                        f"{out['peak_rss_mb']} | {dice} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
