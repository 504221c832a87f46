"""The memory settings of the CLI (``stroke_seg.serving.memory``) on and off, side by side in one run.

    python bench/bench_allocator.py [--case ../shared/data/isles22-strokecase0001] [--mode accurate] [--repeats 5]
    python bench/bench_allocator.py --raw-1mm-head 3 --mode fast [--repeats 5]

Each repeat runs ``python -m stroke_seg segment --mode MODE`` on the case twice, interleaved: once as shipped (freed
memory kept, no numpy huge page advice) and once with ``STROKE_SEG_KEEP_FREED_MEMORY=0`` (glibc's and numpy's
defaults). Reports the median wall time and kernel (system) CPU time of each (a fresh process per run: imports
included) and their ratio. ``--raw-1mm-head SEED`` generates a raw head (skull, scalp) at 1 mm with a territorial
infarct instead of reading a case. The morphological brain mask is used (no HD-BET run) to time the settings alone.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stroke_seg.serving import memory  # noqa: E402


def _run(case: Path, out: Path, env: dict[str, str], mode: str) -> tuple[float, float]:
    """Wall seconds and the child's system CPU seconds of one CLI run."""
    command = [sys.executable, "-m", "stroke_seg", "segment", "--dwi", str(case / "dwi.nii.gz")]
    command += ["--adc", str(case / "adc.nii.gz"), "--out", str(out), "--mode", mode]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime
    t0 = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime - before


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--case", default=str(ROOT.parent / "shared" / "data" / "isles22-strokecase0001"))
    p.add_argument("--raw-1mm-head", type=int, default=None, metavar="SEED")
    p.add_argument("--mode", default="accurate")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "NUMPY_MADVISE")) and k != memory.SWITCH
    }
    base["STROKE_SEG_BRAIN_EXTRACTOR"] = "morphology"
    envs = {"shipped": base, "defaults": base | {memory.SWITCH: "0"}}
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in envs}
    with tempfile.TemporaryDirectory() as tmp:
        case = Path(args.case)
        if args.raw_1mm_head is not None:
            from stroke_seg.synthetic import generator as synth

            acquisition = synth.Acquisition(voxel_size=(1.0, 1.0, 1.0), skull_stripped=False)
            case = synth.make_case(args.raw_1mm_head, "territorial", acquisition).save(Path(tmp) / "raw-1mm-head")
        _run(case, Path(tmp) / "warm.nii.gz", base, args.mode)  # the engine cache and the page cache warm
        for _ in range(args.repeats):
            for name, env in envs.items():
                runs[name].append(_run(case, Path(tmp) / "mask.nii.gz", env, args.mode))
    medians = {name: statistics.median(w for w, _ in r) for name, r in runs.items()}
    print(f"case {case.name}, unet {args.mode}, CLI, {args.repeats} runs each, interleaved")
    print("| memory settings | median s | kernel CPU s (median) | runs (s) |")
    print("|---|---|---|---|")
    for name, r in runs.items():
        system = statistics.median(s for _, s in r)
        print(f"| {name} | {medians[name]:.2f} | {system:.2f} | {', '.join(f'{w:.2f}' for w, _ in r)} |")
    print(f"ratio shipped / defaults: {medians['shipped'] / medians['defaults']:.3f}")


if __name__ == "__main__":
    main()
