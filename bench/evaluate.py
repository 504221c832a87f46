"""Evaluate backends on a held-out synthetic set (and the real ISLES'22 case when present).

    python bench/evaluate.py --n 28 --seed 7 --models adc-threshold unet ensemble [--real ../shared/data/isles22-strokecase0001]

Case i has pattern PATTERNS[i % 7] and acquisition ACQUISITIONS[(i // 7) % 4] (1 mm iso, 2 mm
iso, 1.5x1.5x3.5 mm, 1.2x1.2x5 mm; RAS/LPS, oblique or tilted, int16/float32, skull-stripped or
not), seeds 7_000_000 + 1000 * seed + i: never used in training (training uses 1_000_000+,
validation 900_000+). Prints per-case rows and a per-pattern table in Markdown.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import stroke_seg  # noqa: E402
from stroke_seg import synth  # noqa: E402

ACQUISITIONS = [
    synth.Acquisition(voxel_size=(1.0, 1.0, 1.0), orientation="RAS", dtype="float32", skull_stripped=False, noise=0.03, bias=0.2),
    synth.Acquisition(voxel_size=(2.0, 2.0, 2.0), orientation="LPS", tilt_deg=(6.0, -4.0, 3.0), oblique=True, dtype="int16", skull_stripped=True, noise=0.04, bias=0.3),
    synth.Acquisition(voxel_size=(1.5, 1.5, 3.5), orientation="RAS", tilt_deg=(-5.0, 3.0, 0.0), dtype="int16", skull_stripped=False, noise=0.025, bias=0.1, adc_unit="1e-3", with_flair=True),
    synth.Acquisition(voxel_size=(1.2, 1.2, 5.0), orientation="LPS", tilt_deg=(3.0, 0.0, -6.0), dtype="float32", skull_stripped=True, noise=0.05, bias=0.25, adc_unit="mm2/s"),
]
ACQ_NAMES = ["1mm RAS", "2mm LPS oblique int16", "1.5x1.5x3.5 RAS +FLAIR", "1.2x1.2x5 LPS"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=28)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--models", nargs="+", default=["adc-threshold", "unet", "ensemble"])
    p.add_argument("--mode", default="fast")
    p.add_argument("--max-lesion-adc", type=float, default=stroke_seg.SegmentConfig().max_lesion_adc or 0.0, help="SegmentConfig.max_lesion_adc; 0 turns the rule off")
    p.add_argument("--artefact-zone-adc", type=float, default=stroke_seg.SegmentConfig().artefact_zone_adc or 0.0, help="SegmentConfig.artefact_zone_adc; 0 turns the rule off")
    p.add_argument("--edge-level", type=float, default=stroke_seg.SegmentConfig().edge_level or 0.0, help="SegmentConfig.edge_level; 0 keeps the models' own edges")
    p.add_argument("--real", default=None, help="folder of the real case (dwi, adc, deepisles_mask)")
    p.add_argument("--record", default=None, help="also write the summary figures as JSON (stroke_seg/models/validation.json is what `python -m stroke_seg models` shows)")
    a = p.parse_args()
    config = stroke_seg.SegmentConfig(mode=a.mode, max_lesion_adc=a.max_lesion_adc or None, artefact_zone_adc=a.artefact_zone_adc or None, edge_level=a.edge_level or None)
    record: dict = {"command": "python bench/evaluate.py " + " ".join(sys.argv[1:]), "generator_version": synth.GENERATOR_VERSION, "mode": a.mode, "max_lesion_adc": config.max_lesion_adc, "artefact_zone_adc": config.artefact_zone_adc, "edge_level": config.edge_level, "models": {}}
    rows = []
    print("| case | pattern | acquisition | GT mL | " + " | ".join(f"{m} Dice / F1 / mL" for m in a.models) + " |")
    print("|---|---|---|---|" + "---|" * len(a.models))
    for i in range(a.n):
        pattern = synth.PATTERNS[i % len(synth.PATTERNS)]
        acq_i = (i // len(synth.PATTERNS)) % len(ACQUISITIONS)
        c = synth.make_case(7_000_000 + 1000 * a.seed + i, pattern, ACQUISITIONS[acq_i])
        case = stroke_seg.load_case(c.dwi, c.adc, c.flair, c.mask)
        cells = []
        for m in a.models:
            t = time.perf_counter()
            r = stroke_seg.segment(case, model=m, config=config)
            cmp = r.metrics.comparison
            rows.append({"model": m, "pattern": pattern, "acq": ACQ_NAMES[acq_i], "dice": cmp.dice, "f1": cmp.lesion_f1, "pred_ml": r.metrics.volume_ml, "gt_ml": c.lesion_volume_ml, "s": time.perf_counter() - t})
            cells.append(f"{cmp.dice:.3f} / {cmp.lesion_f1:.2f} / {r.metrics.volume_ml:.2f}")
        print(f"| {i} | {pattern} | {ACQ_NAMES[acq_i]} | {c.lesion_volume_ml:.2f} | " + " | ".join(cells) + " |", flush=True)

    print("\nPer pattern (lesion patterns: mean Dice / mean lesion-wise F1; controls and mimics: max predicted mL):\n")
    print("| pattern | n | " + " | ".join(a.models) + " |")
    print("|---|---|" + "---|" * len(a.models))
    for pattern in synth.PATTERNS:
        cells = []
        for m in a.models:
            sel = [r for r in rows if r["model"] == m and r["pattern"] == pattern]
            if pattern in synth.LESION_PATTERNS:
                cells.append(f"{statistics.mean(r['dice'] for r in sel):.3f} / {statistics.mean(r['f1'] for r in sel):.3f}")
            else:
                cells.append(f"max {max(r['pred_ml'] for r in sel):.2f} mL")
        n = len([r for r in rows if r["model"] == a.models[0] and r["pattern"] == pattern])
        print(f"| {pattern} | {n} | " + " | ".join(cells) + " |")
    cells = []
    for m in a.models:
        les = [r for r in rows if r["model"] == m and r["pattern"] in synth.LESION_PATTERNS]
        neg = [r for r in rows if r["model"] == m and r["pattern"] not in synth.LESION_PATTERNS]
        record["models"][m] = {"synthetic_cases": len(les) + len(neg), "synthetic_dice": round(statistics.mean(r["dice"] for r in les), 3), "synthetic_lesion_f1": round(statistics.mean(r["f1"] for r in les), 3), "negatives_max_ml": round(max(r["pred_ml"] for r in neg), 2)}
        cells.append(f"Dice {statistics.mean(r['dice'] for r in les):.3f}, F1 {statistics.mean(r['f1'] for r in les):.3f}; negatives max {max(r['pred_ml'] for r in neg):.2f} mL; median {statistics.median(r['s'] for r in les + neg):.1f} s/case")
    print("| **all** | " + str(len(rows) // len(a.models)) + " | " + " | ".join(cells) + " |")

    if a.real:
        real = Path(a.real)
        print(f"\nReal case {real.name} vs the DeepISLES mask:\n")
        print("| model | Dice | lesion-wise F1 | predicted mL | DeepISLES mL | AVD mL | lesions (pred / DeepISLES) |")
        print("|---|---|---|---|---|---|---|")
        files = {"dwi": real / "dwi.nii.gz", "adc": real / "adc.nii.gz", "ground_truth": real / "deepisles_mask.nii.gz"}
        for m in a.models:
            r = stroke_seg.segment(files, model=m, config=config)
            cmp = r.metrics.comparison
            gt_ml = float(r.case.ground_truth.sum()) * stroke_seg.metrics.voxel_volume_ml(r.case.affine)
            n_gt = cmp.true_positive_lesions + cmp.false_negative_lesions
            print(f"| {m} | {cmp.dice:.3f} | {cmp.lesion_f1:.3f} | {r.metrics.volume_ml:.2f} | {gt_ml:.2f} | {cmp.avd_ml:.2f} | {r.metrics.count} / {n_gt} |")
            record["models"][m].update({"real_dice": round(cmp.dice, 3), "real_lesion_f1": round(cmp.lesion_f1, 3), "real_avd_ml": round(cmp.avd_ml, 2)})
    if a.record:
        Path(a.record).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
