"""Test-time mirroring in `unet` accurate mode: which mirror images to average, accuracy against time.

    python bench/bench_mirrors.py [--n 14] [--seed 7] [--real-root ../shared/data]

Runs `unet` in accurate mode with each mirror set on held-out generated cases (the acquisitions 2-5 of
``bench/evaluate.py``; its 1 mm one is left out for time; seeds never used in training) and on the real ISLES'22 case,
and prints per set: mean Dice against the truth (the generated mask; the expert's on the real case), the lowest Dice
against the 8-image mask, network passes per window and median seconds per case. Axes are the network's working grid
(canonical: 0 left-right, 1 posterior-anterior, 2 inferior-superior). The brain mask is the morphological one
(the generated heads are brains in noise, see MODEL_CARD.md; the real case is skull-stripped): the same for every set.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402

import stroke_seg  # noqa: E402
from stroke_seg.models import unet as unet_mod  # noqa: E402
from stroke_seg.models.inference import MIRROR_AXES  # noqa: E402
from stroke_seg.pipeline.metrics import dice  # noqa: E402
from stroke_seg.synthetic import generator as synth  # noqa: E402

SETS = {
    "8 (all flips)": tuple(MIRROR_AXES),
    "4 in-plane (LR, AP)": ((), (0,), (1,), (0, 1)),
    "4 (LR, SI)": ((), (0,), (2,), (0, 2)),
    "2 (LR)": ((), (0,)),
    "1 (none = fast)": ((),),
}


def run(files, mirrors) -> tuple[np.ndarray, float, float]:
    unet_mod.ACCURATE_MIRRORS = mirrors
    t = time.perf_counter()
    r = stroke_seg.segment(
        files, model="unet", config=stroke_seg.SegmentConfig(mode="accurate", brain_extractor="morphology")
    )
    return np.asarray(r.mask.dataobj) > 0, r.metrics.volume_ml, time.perf_counter() - t


def main() -> None:
    from evaluate import ACQUISITIONS  # the held-out acquisitions

    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=14)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--real-root", type=Path, default=ROOT.parent / "shared" / "data")
    a = p.parse_args()
    rows: dict[str, list[tuple[float, float, float, float]]] = {k: [] for k in SETS}
    cases = []
    for i in range(a.n):
        acq = ACQUISITIONS[1 + i % 4]
        c = synth.make_case(7_000_000 + 1000 * a.seed + i, synth.PATTERNS[i % len(synth.PATTERNS)], acq)
        cases.append(
            (f"gen{i}-{c.pattern}", {"dwi": c.dwi, "adc": c.adc, "flair": c.flair}, np.asarray(c.mask.dataobj) > 0)
        )
    for name, folder in (("isles22-strokecase0001", "expert_mask.nii.gz"),):
        d = a.real_root / name
        if d.is_dir():
            import nibabel as nib

            ref = np.asarray(nib.load(str(d / folder)).dataobj) > 0
            cases.append((name, {"dwi": d / "dwi.nii.gz", "adc": d / "adc.nii.gz"}, ref))
    run(cases[0][1], SETS["8 (all flips)"])  # warm-up: engines built
    for label, files, truth in cases:
        line, full = [label], None
        for k, mirrors in SETS.items():  # the 8-image set first: the others are compared with it
            mask, ml, s = run(files, mirrors)
            full = mask if full is None else full
            d_truth = dice(mask, truth) if truth.any() or mask.any() else 1.0
            d_full = dice(mask, full) if full.any() or mask.any() else 1.0
            rows[k].append((d_truth, d_full, s, ml))
            line.append(f"{k}: {d_truth:.3f}/{d_full:.3f}/{ml:.2f} mL/{s:.1f} s")
        print(" | ".join(line), flush=True)
    print(
        "\n| mirror set | network passes per window | mean Dice vs truth | min Dice vs the 8-image mask | "
        "median s per case |"
    )
    print("|---|---|---|---|---|")
    for k, mirrors in SETS.items():
        r = rows[k]
        print(
            f"| {k} | {len(mirrors)} | {statistics.mean(x[0] for x in r):.4f} | {min(x[1] for x in r):.4f} | "
            f"{statistics.median(x[2] for x in r):.2f} |"
        )


if __name__ == "__main__":
    main()
