"""The allocator setting of the CLI (``stroke_seg.serving.memory``) on and off, side by side in one run.

    python bench/bench_allocator.py [--case ../shared/data/isles22-strokecase0001] [--repeats 5]

Each repeat runs ``python -m stroke_seg segment --mode accurate`` on the case twice, interleaved: once as shipped (freed
memory kept) and once with ``STROKE_SEG_KEEP_FREED_MEMORY=0`` (glibc's own defaults). Reports the median wall time of
each (a fresh process per run: imports included) and their ratio. The morphological brain mask is used (no HD-BET
run), as the case is skull-stripped.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stroke_seg.serving import memory  # noqa: E402


def _run(case: Path, out: Path, env: dict[str, str]) -> float:
    command = [sys.executable, "-m", "stroke_seg", "segment", "--dwi", str(case / "dwi.nii.gz")]
    command += ["--adc", str(case / "adc.nii.gz"), "--out", str(out), "--mode", "accurate"]
    t0 = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--case", default=str(ROOT.parent / "shared" / "data" / "isles22-strokecase0001"))
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    case = Path(args.case)
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != memory.SWITCH}
    base["STROKE_SEG_BRAIN_EXTRACTOR"] = "morphology"
    envs = {"shipped (kept)": base, "glibc defaults": base | {memory.SWITCH: "0"}}
    times: dict[str, list[float]] = {name: [] for name in envs}
    with tempfile.TemporaryDirectory() as tmp:
        _run(case, Path(tmp) / "warm.nii.gz", base)  # the engine cache and the page cache warm
        for _ in range(args.repeats):
            for name, env in envs.items():
                times[name].append(_run(case, Path(tmp) / "mask.nii.gz", env))
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"case {case.name}, unet accurate, CLI, {args.repeats} runs each, interleaved")
    print("| allocator | median s | runs (s) |")
    print("|---|---|---|")
    for name, t in times.items():
        print(f"| {name} | {medians[name]:.2f} | {', '.join(f'{x:.2f}' for x in t)} |")
    print(f"ratio kept / defaults: {medians['shipped (kept)'] / medians['glibc defaults']:.3f}")


if __name__ == "__main__":
    main()
