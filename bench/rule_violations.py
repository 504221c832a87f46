"""Count output lesions that break the rules the report states, on synthetic raw heads and the shared real scans.

    python bench/rule_violations.py --make-cases /tmp/rv-cases --n 12
    python bench/rule_violations.py --cases /tmp/rv-cases --real-root ../shared/data [--root CHECKOUT]

Rules (every 26-connected component of the final mask, on the input grid): volume >= ``min_lesion_ml``, median ADC
<= ``max_lesion_adc``, mean DWI above the brain median (the median of the DWI inside the brain mask the pipeline
made). The checker lives here, independent of the library, so that the same code counts an old checkout
(``--root`` pointing at it, e.g. ``git archive HEAD~1 | tar -x -C /tmp/before``) and the working tree. Synthetic
cases are held out (seeds 7_500_000+; training uses 1_000_000+, evaluation 7_000_000 + 1000 * seed + i with seed 7),
written once by the working tree's generator (``--make-cases``) so that both checkouts see the same files: raw heads as
scanners store them (skull, noise in the whole DWI background), the scanner's ADC 0 in the air or 0 outside the brain,
and every third case a uint16 b0 + b1000 (ADC computed) instead of the ADC map. Prints one Markdown row per case and
model, and a total.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

RAW_HEADS = [
    dict(voxel_size=(1.2, 1.2, 5.0), orientation="RAS", tilt_deg=(-4.0, 2.0, 5.0), dtype="int16", noise=0.05),
    dict(
        voxel_size=(1.0, 1.0, 3.0),
        orientation="LPS",
        tilt_deg=(5.0, -3.0, 4.0),
        oblique=True,
        noise=0.04,
        adc_background="brain",
    ),
    dict(voxel_size=(1.8, 1.8, 4.0), orientation="LPS", tilt_deg=(-3.0, 4.0, -2.0), noise=0.06, adc_background="brain"),
]


def make_cases(folder: Path, n: int) -> None:
    import nibabel as nib

    from stroke_seg.synthetic import generator as synth

    for i in range(n):
        acq = synth.Acquisition(**RAW_HEADS[i % len(RAW_HEADS)], skull_stripped=False, bias=0.25)
        c = synth.make_case(7_500_000 + i, synth.PATTERNS[i % len(synth.PATTERNS)], acq)
        out = folder / f"synth-{i:02d}-{c.pattern}{'-b0' if i % 3 == 2 else ''}"
        out.mkdir(parents=True, exist_ok=True)
        nib.save(c.mask, str(out / "mask.nii.gz"))
        if i % 3 == 2:
            b0, dwi = c.scanner_b0("uint16")
            nib.save(b0, str(out / "b0.nii.gz"))
            nib.save(dwi, str(out / "dwi.nii.gz"))
        else:
            nib.save(c.dwi, str(out / "dwi.nii.gz"))
            nib.save(c.adc, str(out / "adc.nii.gz"))


def violations(mask, dwi, adc, brain_median, voxel_ml, min_ml, max_adc) -> tuple[int, int]:
    """(components, components breaking at least one rule)."""
    labels, n = ndi.label(mask, structure=np.ones((3, 3, 3), bool))
    bad = 0
    for i, box in enumerate(ndi.find_objects(labels), start=1):
        comp = labels[box] == i
        small = comp.sum() * voxel_ml < min_ml * (1 - 1e-6)
        high = max_adc is not None and float(np.median(adc[box][comp])) > max_adc
        dark = float(dwi[box][comp].mean()) <= brain_median
        bad += bool(small or high or dark)
    return n, bad


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--root", default=str(Path(__file__).resolve().parents[1]), help="checkout whose stroke_seg runs")
    p.add_argument("--make-cases", default=None, help="write the synthetic cases into this folder and stop")
    p.add_argument("--cases", default=None, help="folder of cases written by --make-cases")
    p.add_argument("--n", type=int, default=12)
    p.add_argument("--models", nargs="+", default=["unet", "adc-threshold"])
    p.add_argument("--real-root", default=None)
    a = p.parse_args()
    if a.make_cases:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        make_cases(Path(a.make_cases), a.n)
        return
    sys.path.insert(0, a.root)
    stroke_seg = importlib.import_module("stroke_seg")
    from stroke_seg.pipeline.metrics import dice, voxel_volume_ml
    from stroke_seg.pipeline.preprocess import preprocess

    cases: list[tuple[str, dict]] = []
    for folder in sorted(Path(a.cases).iterdir()) if a.cases else []:
        files = {k: folder / f"{k}.nii.gz" for k in ("dwi", "adc", "b0") if (folder / f"{k}.nii.gz").is_file()}
        cases.append((folder.name, {**files, "ground_truth": folder / "mask.nii.gz"}))
    if a.real_root:
        from stroke_seg.synthetic.train import REAL_CASES

        for name, scan in REAL_CASES.items():
            folder = Path(a.real_root) / name
            if folder.is_dir():
                files = {k: folder / v for k, v in scan.inputs.items()}
                if scan.reference:
                    files["ground_truth"] = folder / scan.reference
                cases.append((name, files))

    print(f"stroke_seg from {a.root}\n")
    print("| case | model | lesions | breaking rules | Dice vs reference | mL | s |")
    print("|---|---|---|---|---|---|---|")
    totals: dict[str, list[int]] = {m: [0, 0] for m in a.models}
    for name, files in cases:
        case = stroke_seg.load_case(
            files["dwi"], files.get("adc"), ground_truth=files.get("ground_truth"), b0=files.get("b0")
        )
        brain_median = preprocess(case).dwi_median
        for m in a.models:
            t = time.perf_counter()
            r = stroke_seg.segment(case, model=m)
            s = time.perf_counter() - t
            mask = np.asarray(r.mask.dataobj) > 0
            cfg = r.config
            n, bad = violations(
                mask,
                case.dwi,
                case.adc,
                brain_median,
                voxel_volume_ml(case.affine),
                cfg.min_lesion_ml,
                cfg.max_lesion_adc,
            )
            totals[m][0] += n
            totals[m][1] += bad
            d = dice(mask, case.ground_truth) if case.ground_truth is not None else float("nan")
            print(f"| {name} | {m} | {n} | {bad} | {d:.3f} | {r.metrics.volume_ml:.2f} | {s:.1f} |", flush=True)
    for m, (n, bad) in totals.items():
        print(f"| **all** | {m} | {n} | {bad} | | | |")


if __name__ == "__main__":
    main()
