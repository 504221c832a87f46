"""Pictures of the real scans: for each, the 12 axial DWI slices with the most lesion voxels, the model's mask in red
and the reference mask (expert or DAGMNet) as a green outline; the unlabelled case shows the prediction alone.

    python bench/figure_real_case.py [--root ../shared/data] [--model unet] [--loco CASE=WEIGHTS ...] [--out docs]

Writes ``docs/real_<case>_<model>.png``. As in ``bench/evaluate.py``, a case the shipped weights trained on is drawn
with the --loco weights that never saw it (or skipped).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
from evaluate import REAL_CASES, _unet_for  # noqa: E402

import stroke_seg  # noqa: E402
from stroke_seg.pipeline.preprocess import to_canonical  # noqa: E402
from stroke_seg.report import render  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--root", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--model", default="unet")
    p.add_argument("--loco", nargs="*", default=[], metavar="CASE=WEIGHTS")
    p.add_argument("--out", default=str(ROOT / "docs"))
    a = p.parse_args()
    loco = {k: Path(v) for k, v in (x.split("=", 1) for x in a.loco)}
    for case, scan in REAL_CASES.items():
        inputs, reference = scan.inputs, scan.reference
        folder = Path(a.root) / case
        if not folder.is_dir():
            continue
        name, label = (a.model, "rule") if a.model != "unet" else _unet_for(case, loco)
        if name is None:
            print(f"{case}: {label}")
            continue
        files = {k: folder / v for k, v in inputs.items()} | ({"ground_truth": folder / reference} if reference else {})
        r = stroke_seg.segment(files, model=name)
        mask = np.asarray(r.mask.dataobj) > 0
        shown = mask | r.case.ground_truth if r.case.ground_truth is not None else mask
        per_slice = (to_canonical(shown.astype(np.uint8), r.case.affine)[0] > 0).sum(axis=(0, 1))
        slices = sorted(int(k) for k in np.argsort(-per_slice, kind="stable")[:12])
        out = Path(a.out) / f"real_{case}_{a.model}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        render.save_png(render.result_montage(r.case, mask, cols=6, slices=slices), out)
        c = r.metrics.comparison
        figures = f"Dice {c.dice:.3f}, lesion F1 {c.lesion_f1:.3f}, " if c else ""
        print(f"{case} ({label}): {figures}{r.metrics.volume_ml:.2f} mL -> {out}")


if __name__ == "__main__":
    main()
