"""`unet` on generated raw heads with a stroke, behind HD-BET and behind the morphological brain mask.

    python bench/bench_raw_heads.py [--pattern lacunar]

Each head is a generated case of the pattern (default: a lacunar stroke; ``territorial`` for a large one; skull, scalp,
neck and a fat rim from ``stroke_seg.synthetic.raw_head``) at a clinical thick-slice geometry; printed as a Markdown
table: brain Dice against the known brain, the predicted lesion volume and Dice against the known lesion, and how many
of the lesion's voxels the brain mask holds, per extractor.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import stroke_seg  # noqa: E402
from stroke_seg.synthetic.generator import Acquisition, make_case  # noqa: E402
from stroke_seg.synthetic.raw_head import with_neck_and_fat  # noqa: E402
from stroke_seg.types import SegmentConfig  # noqa: E402

HEADS = [(9001, (1.2, 1.2, 5.0), "LPS"), (9002, (1.2, 1.2, 5.0), "RAS"), (9003, (0.9, 0.9, 5.0), "RAS"),
         (9004, (1.8, 1.8, 4.0), "LPS")]  # fmt: skip
EXTRACTORS = ("hd-bet", "morphology")


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def one_head(seed: int, voxel_size: tuple[float, float, float], orientation: str, folder: Path, pattern: str) -> str:
    acq = Acquisition(
        voxel_size=voxel_size, orientation=orientation, dtype="int16", skull_stripped=False, tilt_deg=(3.0, 0.0, -5.0)
    )
    c = with_neck_and_fat(make_case(seed, pattern, acq), seed=seed)
    for name, img in (("dwi", c.dwi), ("adc", c.adc), ("gt", c.mask)):
        nib.save(img, folder / f"{name}.nii.gz")
    files = {"dwi": folder / "dwi.nii.gz", "adc": folder / "adc.nii.gz", "ground_truth": folder / "gt.nii.gz"}
    brain, lesion = np.asarray(c.brain.dataobj) > 0, np.asarray(c.mask.dataobj) > 0
    cells = []
    for extractor in EXTRACTORS:
        r = stroke_seg.segment(files, model="unet", config=SegmentConfig(brain_extractor=extractor))
        found = np.asarray(r.brain_mask.dataobj) > 0
        cells.append(
            f"{_dice(found, brain):.3f} | {r.metrics.volume_ml:.2f} | {r.metrics.comparison.dice:.2f} | "
            f"{int((found & lesion).sum())}/{int(lesion.sum())}"
        )
    true_ml = float(lesion.sum()) * float(np.prod(c.dwi.header.get_zooms()[:3])) / 1000.0
    size = " x ".join(f"{v:g}" for v in voxel_size)
    return f"| {seed} | {size} {orientation} | {true_ml:.2f} | " + " | ".join(cells) + " |"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--pattern", default="lacunar", help="the generator's lesion pattern (lacunar, territorial, ...)")
    a = p.parse_args()
    head = " | ".join(f"{e}: brain Dice | mL | lesion Dice | lesion voxels in brain" for e in EXTRACTORS)
    print(f"| seed | voxel mm, storage | true mL | {head} |")
    print("|" + "---|" * (3 + 4 * len(EXTRACTORS)))
    for seed, voxel_size, orientation in HEADS:
        with tempfile.TemporaryDirectory() as tmp:
            print(one_head(seed, voxel_size, orientation, Path(tmp), a.pattern), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
