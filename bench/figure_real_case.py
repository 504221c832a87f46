"""Picture of the real ISLES'22 case: the 12 DWI slices with the most lesion voxels, with the unet mask (red) and
the DeepISLES mask (green outline).

    python bench/figure_real_case.py [--case ../shared/data/isles22-strokecase0001] [--model unet] [--out docs/real_case_unet.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import stroke_seg  # noqa: E402
from stroke_seg import render  # noqa: E402
from stroke_seg.preprocess import to_canonical  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--case", default=str(ROOT.parent / "shared" / "data" / "isles22-strokecase0001"))
    p.add_argument("--model", default="unet")
    p.add_argument("--out", default=str(ROOT / "docs" / "real_case_unet.png"))
    a = p.parse_args()
    case = Path(a.case)
    r = stroke_seg.segment({"dwi": case / "dwi.nii.gz", "adc": case / "adc.nii.gz", "ground_truth": case / "deepisles_mask.nii.gz"}, model=a.model)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # the 12 axial slices with the most predicted or DeepISLES voxels, so that both outlines show
    mask = np.asarray(r.mask.dataobj) > 0
    both = to_canonical((mask | r.case.ground_truth).astype(np.uint8), r.case.affine)[0] > 0
    slices = [int(k) for k in np.argsort(-both.sum(axis=(0, 1)), kind="stable")[:12]]
    render.save_png(render.result_montage(r.case, mask, cols=6, slices=slices), out)
    c = r.metrics.comparison
    print(f"{a.model}: Dice {c.dice:.3f}, lesion F1 {c.lesion_f1:.3f}, {r.metrics.volume_ml:.2f} mL -> {out}")


if __name__ == "__main__":
    main()
