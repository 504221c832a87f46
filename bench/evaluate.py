"""Evaluate backends on a held-out synthetic set and on the real scans in ../shared/data (leave-one-case-out).

    python bench/evaluate.py --n 35 --seed 7 --models adc-threshold unet ensemble [--real-root ../shared/data [--loco
    CASE=WEIGHTS ...]]

Case i has pattern PATTERNS[i % 7] and acquisition ACQUISITIONS[(i // 7) % 5] (1 mm iso, 2 mm
iso, 1.5x1.5x3.5 mm, 1.2x1.2x5 mm stripped, and a 1.2x1.2x5 mm raw head with skull, int16, ADC in mm²/s; RAS/LPS,
oblique or tilted, int16/float32, skull-stripped or not), seeds 7_000_000 + 1000 * seed + i: never used in training
(training uses 1_000_000+,
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
from stroke_seg.synthetic import generator as synth  # noqa: E402
from stroke_seg.synthetic.train import REAL_CASES  # noqa: E402

ACQUISITIONS = [
    synth.Acquisition(
        voxel_size=(1.0, 1.0, 1.0), orientation="RAS", dtype="float32", skull_stripped=False, noise=0.03, bias=0.2
    ),
    synth.Acquisition(
        voxel_size=(2.0, 2.0, 2.0),
        orientation="LPS",
        tilt_deg=(6.0, -4.0, 3.0),
        oblique=True,
        dtype="int16",
        skull_stripped=True,
        noise=0.04,
        bias=0.3,
    ),
    synth.Acquisition(
        voxel_size=(1.5, 1.5, 3.5),
        orientation="RAS",
        tilt_deg=(-5.0, 3.0, 0.0),
        dtype="int16",
        skull_stripped=False,
        noise=0.025,
        bias=0.1,
        adc_unit="1e-3",
        with_flair=True,
    ),
    synth.Acquisition(
        voxel_size=(1.2, 1.2, 5.0),
        orientation="LPS",
        tilt_deg=(3.0, 0.0, -6.0),
        dtype="float32",
        skull_stripped=True,
        noise=0.05,
        bias=0.25,
        adc_unit="mm2/s",
    ),
    synth.Acquisition(
        voxel_size=(1.2, 1.2, 5.0),
        orientation="RAS",
        tilt_deg=(-4.0, 2.0, 5.0),
        dtype="int16",
        skull_stripped=False,
        noise=0.05,
        bias=0.3,
        adc_unit="mm2/s",
    ),
]
ACQ_NAMES = ["1mm RAS", "2mm LPS oblique int16", "1.5x1.5x3.5 RAS +FLAIR", "1.2x1.2x5 LPS", "1.2x1.2x5 raw head int16"]


def _unet_for(case: str, loco: dict[str, Path]) -> tuple[str | None, str]:
    """The registered model name whose unet weights never trained on ``case``, and a label; (None, why) if none."""
    from stroke_seg.models import register
    from stroke_seg.models.unet import WEIGHTS_PATH, UNetBackend

    trained_on = json.loads(WEIGHTS_PATH.with_suffix(".json").read_text()).get("real_cases", [])
    if case not in trained_on:
        return "unet", "shipped (never trained on this case)"
    if case not in loco:
        return None, "not reported: the shipped weights trained on this case and no --loco weights were given"
    other = json.loads(loco[case].with_suffix(".json").read_text()).get("real_cases", [])
    if case in other:
        return None, f"not reported: {loco[case]} trained on this case too"
    name = f"unet-without-{case}"
    register(name, lambda: UNetBackend(loco[case]))
    return name, f"leave-one-case-out ({loco[case].parent.name}: trained without this case)"


def evaluate_real(root: Path, models: list[str], config, loco: dict[str, Path]) -> dict:
    """Each real scan against its reference, every figure from weights that never trained on that scan."""
    import nibabel as nib
    import numpy as np

    from stroke_seg.pipeline.metrics import dice
    from stroke_seg.pipeline.preprocess import from_canonical, preprocess

    out: dict = {}
    print("\nReal scans (read from " + str(root) + "; each figure from a model that never trained on the scan):\n")
    print(
        "| case | reference | model | weights | Dice | lesion F1 | predicted mL | reference mL | lesions (pred / ref) "
        "| brain-mask Dice | warnings |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for case, scan in REAL_CASES.items():
        inputs, reference, what, brain_ref = scan.inputs, scan.reference, scan.reference_kind, scan.brain_mask
        folder = root / case
        if not folder.is_dir():
            print(f"| {case} | missing | | | | | | | | | |")
            continue
        files = {k: folder / v for k, v in inputs.items()}
        if reference:
            files["ground_truth"] = folder / reference
        brain_dice = None
        if brain_ref:
            vols = preprocess(stroke_seg.io.case.load_case(files["dwi"], files.get("adc"), b0=files.get("b0")))
            ref = np.asarray(nib.load(str(folder / brain_ref)).dataobj) > 0
            brain_dice = dice(from_canonical(vols.brain, vols.ornt), ref)
        for m in models:
            if m == "adc-threshold":
                name, label = m, "rule (not trained)"
            else:
                name, label = _unet_for(case, loco)
                if m != "unet":  # the ensemble uses the shipped unet: reportable only where the shipped weights are
                    name, label = (
                        (m, label) if name == "unet" else (None, "not reported: its unet member trained on this case")
                    )
            if name is None:
                print(f"| {case} | {what} | {m} | {label} | | | | | | | |")
                continue
            r = stroke_seg.segment(files, model=name, config=config)
            c = r.metrics.comparison
            ref_ml = (
                float(r.case.ground_truth.sum()) * stroke_seg.pipeline.metrics.voxel_volume_ml(r.case.affine)
                if c
                else None
            )
            n_ref = (c.true_positive_lesions + c.false_negative_lesions) if c else None
            row = {
                "reference": what,
                "weights": label,
                "dice": None if c is None else round(c.dice, 3),
                "lesion_f1": None if c is None else round(c.lesion_f1, 3),
                "predicted_ml": round(r.metrics.volume_ml, 2),
                "reference_ml": None if ref_ml is None else round(ref_ml, 2),
                "lesions": r.metrics.count,
                "reference_lesions": n_ref,
                "brain_mask_dice": None if brain_dice is None else round(brain_dice, 3),
                "warnings": list(r.warnings),
            }
            out.setdefault(case, {})[m] = row

            def f(v, fmt="{:.3f}"):
                return "—" if v is None else fmt.format(v)

            print(
                f"| {case} | {what} | {m} | {label} | {f(row['dice'])} | {f(row['lesion_f1'])} | "
                f"{row['predicted_ml']:.2f} | {f(ref_ml, '{:.2f}')} | "
                f"{r.metrics.count} / {f(n_ref, '{}')} | {f(brain_dice)} | {len(r.warnings)}: "
                f"{'; '.join(w.split(':')[0] for w in r.warnings) or '—'} |",
                flush=True,
            )
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=35)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--models", nargs="+", default=["adc-threshold", "unet", "ensemble"])
    p.add_argument("--mode", default="fast")
    p.add_argument(
        "--max-lesion-adc",
        type=float,
        default=stroke_seg.SegmentConfig().max_lesion_adc or 0.0,
        help="SegmentConfig.max_lesion_adc; 0 turns the rule off",
    )
    p.add_argument(
        "--artefact-zone-adc",
        type=float,
        default=stroke_seg.SegmentConfig().artefact_zone_adc or 0.0,
        help="SegmentConfig.artefact_zone_adc; 0 turns the rule off",
    )
    p.add_argument(
        "--edge-level",
        type=float,
        default=stroke_seg.SegmentConfig().edge_level or 0.0,
        help="SegmentConfig.edge_level; 0 keeps the models' own edges",
    )
    p.add_argument(
        "--real-root",
        default=None,
        help="folder of the real scans (../shared/data): each is evaluated against its reference",
    )
    p.add_argument(
        "--loco",
        nargs="*",
        default=[],
        metavar="CASE=WEIGHTS",
        help="unet weights trained without CASE, used for CASE when the shipped weights trained on it",
    )
    p.add_argument(
        "--record",
        default=None,
        help="also write the summary figures as JSON (stroke_seg/models/validation.json is what `python -m stroke_seg "
        "models` shows)",
    )
    return p


def _synthetic_rows(a, config) -> list[dict]:
    """Every model on the held-out synthetic set (``a.n`` cases), a table row per case printed as it goes."""
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
            rows.append(
                {
                    "model": m,
                    "pattern": pattern,
                    "acq": ACQ_NAMES[acq_i],
                    "dice": cmp.dice,
                    "f1": cmp.lesion_f1,
                    "pred_ml": r.metrics.volume_ml,
                    "gt_ml": c.lesion_volume_ml,
                    "s": time.perf_counter() - t,
                }
            )
            cells.append(f"{cmp.dice:.3f} / {cmp.lesion_f1:.2f} / {r.metrics.volume_ml:.2f}")
        print(
            f"| {i} | {pattern} | {ACQ_NAMES[acq_i]} | {c.lesion_volume_ml:.2f} | " + " | ".join(cells) + " |",
            flush=True,
        )
    return rows


def _summary(rows: list[dict], models: list[str], record: dict) -> None:
    """Per pattern and overall figures of the synthetic rows, printed and recorded in ``record["models"]``."""
    print("\nPer pattern (lesion patterns: mean Dice / mean lesion-wise F1; controls and mimics: max predicted mL):\n")
    print("| pattern | n | " + " | ".join(models) + " |")
    print("|---|---|" + "---|" * len(models))
    for pattern in synth.PATTERNS:
        cells = []
        for m in models:
            sel = [r for r in rows if r["model"] == m and r["pattern"] == pattern]
            if pattern in synth.LESION_PATTERNS:
                cells.append(
                    f"{statistics.mean(r['dice'] for r in sel):.3f} / {statistics.mean(r['f1'] for r in sel):.3f}"
                )
            else:
                cells.append(f"max {max(r['pred_ml'] for r in sel):.2f} mL")
        n = len([r for r in rows if r["model"] == models[0] and r["pattern"] == pattern])
        print(f"| {pattern} | {n} | " + " | ".join(cells) + " |")
    cells = []
    for m in models:
        les = [r for r in rows if r["model"] == m and r["pattern"] in synth.LESION_PATTERNS]
        neg = [r for r in rows if r["model"] == m and r["pattern"] not in synth.LESION_PATTERNS]
        record["models"][m] = {
            "synthetic_cases": len(les) + len(neg),
            "synthetic_dice": round(statistics.mean(r["dice"] for r in les), 3),
            "synthetic_lesion_f1": round(statistics.mean(r["f1"] for r in les), 3),
            "negatives_max_ml": round(max(r["pred_ml"] for r in neg), 2),
        }
        cells.append(
            f"Dice {statistics.mean(r['dice'] for r in les):.3f}, F1 {statistics.mean(r['f1'] for r in les):.3f}; "
            f"negatives max {max(r['pred_ml'] for r in neg):.2f} mL; median "
            f"{statistics.median(r['s'] for r in les + neg):.1f} s/case"
        )
    print("| **all** | " + str(len(rows) // len(models)) + " | " + " | ".join(cells) + " |")


def main() -> None:
    a = _parser().parse_args()
    config = stroke_seg.SegmentConfig(
        mode=a.mode,
        max_lesion_adc=a.max_lesion_adc or None,
        artefact_zone_adc=a.artefact_zone_adc or None,
        edge_level=a.edge_level or None,
    )
    record: dict = {
        "command": "python bench/evaluate.py " + " ".join(sys.argv[1:]),
        "generator_version": synth.GENERATOR_VERSION,
        "mode": a.mode,
        "max_lesion_adc": config.max_lesion_adc,
        "artefact_zone_adc": config.artefact_zone_adc,
        "edge_level": config.edge_level,
        "models": {},
    }
    rows = _synthetic_rows(a, config)

    if not rows:
        record["real"] = (
            evaluate_real(
                Path(a.real_root), a.models, config, {k: Path(v) for k, v in (x.split("=", 1) for x in a.loco)}
            )
            if a.real_root
            else {}
        )
        if a.record:
            Path(a.record).write_text(json.dumps(record, indent=2) + "\n")
        return
    _summary(rows, a.models, record)

    if a.real_root:
        record["real"] = evaluate_real(
            Path(a.real_root), a.models, config, {k: Path(v) for k, v in (x.split("=", 1) for x in a.loco)}
        )
    if a.record:
        Path(a.record).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
