"""Command line: ``python -m stroke_seg {segment,batch,models}``.

Bad input exits with code 2 and one line on stderr (no traceback).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path

from . import api
from .errors import StrokeSegError
from .io import save_image
from .models import model_infos, model_names
from .types import SegmentConfig

__all__ = ["main", "discover_cases"]

log = logging.getLogger("stroke_seg.cli")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="adc-threshold", help="backend name (see `models`); default adc-threshold")
    p.add_argument("--mode", choices=("fast", "accurate"), default="fast", help="accurate = 8x mirror test-time augmentation (deep models)")
    p.add_argument("--threshold", type=float, default=0.5, help="probability threshold")
    p.add_argument("--min-lesion-ml", type=float, default=0.01, help="drop lesions smaller than this (mL)")
    p.add_argument("--max-lesion-adc", type=float, default=1000.0, help="drop lesions whose median ADC is above this (1e-6 mm2/s; T2 shine-through); 0 keeps them")
    p.add_argument("--edge-level", type=float, default=0.5, help="extend each lesion to the voxels brighter on DWI than this fraction of the way from the surrounding tissue to the lesion (within 4 mm); 0 keeps the model's edges")
    p.add_argument("--artefact-zone-adc", type=float, default=620.0, help="in skull-base susceptibility zones (temporal poles, orbitofrontal) keep a lesion only when a quarter of it has ADC below this (1e-6 mm2/s); 0 keeps them")
    p.add_argument("--device", default=None, help="torch device for deep models (default: cuda if present, else cpu)")


def _config(args: argparse.Namespace) -> SegmentConfig:
    return SegmentConfig(
        mode=args.mode, threshold=args.threshold, min_lesion_ml=args.min_lesion_ml, max_lesion_adc=args.max_lesion_adc or None,
        artefact_zone_adc=args.artefact_zone_adc or None, edge_level=args.edge_level or None, device=args.device,
    )


def _write_outputs(result, mask_path: Path, json_path: Path | None, prob_path: Path | None = None) -> None:
    save_image(result.mask.get_fdata(dtype="float32"), result.case, mask_path)
    if prob_path is not None:
        save_image(result.probability.get_fdata(dtype="float32"), result.case, prob_path, dtype="float32")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result.to_dict(), indent=2))


def cmd_segment(args: argparse.Namespace) -> int:
    if args.adc is None and args.b0 is None:
        raise StrokeSegError("segment: expected --adc ADC_MAP or --b0 B0_IMAGE (the ADC is then computed), but neither was given")
    files = {"dwi": args.dwi, "adc": args.adc, "b0": args.b0, "b_value": args.b_value, "flair": args.flair, "ground_truth": args.ground_truth}
    result = api.segment(files, model=args.model, config=_config(args))
    _write_outputs(result, Path(args.out), Path(args.json) if args.json else None, Path(args.probability) if args.probability else None)
    m = result.metrics
    line = f"{result.model}: {m.volume_ml:.2f} mL in {m.count} lesion(s), {result.timings['total']:.1f} s"
    if m.comparison is not None:
        line += f"; Dice {m.comparison.dice:.3f}, lesion F1 {m.comparison.lesion_f1:.3f}"
    print(line)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def discover_cases(root: Path) -> list[tuple[str, dict[str, Path | None]]]:
    """Cases under ``root`` in the simple layout (CASE/dwi.nii.gz + CASE/adc.nii.gz) or ISLES'22 BIDS.

    BIDS: ``sub-*/ses-*/dwi/*_dwi.nii.gz`` with ``*_adc.nii.gz`` beside it, ground truth under
    ``derivatives/**/sub-*/ses-*/**/*_msk.nii.gz`` when present.
    """
    cases: list[tuple[str, dict[str, Path | None]]] = []
    for dwi in sorted(root.glob("sub-*/ses-*/dwi/*_dwi.nii*")):
        prefix = dwi.name.split("_dwi.nii")[0]
        adc = next(iter(sorted(dwi.parent.glob(f"{prefix}_adc.nii*"))), None)
        sub, ses = dwi.parts[-4], dwi.parts[-3]
        gt = next(iter(sorted((root / "derivatives").glob(f"**/{sub}/{ses}/**/*_msk.nii*"))), None) if (root / "derivatives").is_dir() else None
        flair = next(iter(sorted((dwi.parent.parent / "anat").glob(f"{sub}_{ses}*_FLAIR.nii*"))), None) if (dwi.parent.parent / "anat").is_dir() else None
        cases.append((f"{sub}_{ses}", {"dwi": dwi, "adc": adc, "flair": flair, "ground_truth": gt}))
    if cases:
        return cases
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = api.find_case_files(folder)
        if files["dwi"] is not None or files["adc"] is not None or files["b0"] is not None:
            cases.append((folder.name, files))
    return cases


_CSV_FIELDS = ["case", "status", "model", "lesion_volume_ml", "lesion_count", "dice", "avd_ml", "lesion_f1", "lesion_count_diff", "seconds", "warnings", "error"]


def cmd_batch(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    root, out = Path(args.input_dir), Path(args.out)
    if not root.is_dir():
        raise StrokeSegError(f"batch input {root}: expected a folder of cases, but it does not exist")
    cases = discover_cases(root)
    if not cases:
        raise StrokeSegError(f"batch input {root}: expected CASE/dwi.nii.gz + CASE/adc.nii.gz or ISLES'22 BIDS (sub-*/ses-*/dwi/*_dwi.nii.gz), but found no case")
    config = _config(args)
    rows, failed = [], 0
    for name, files in tqdm(cases, desc=f"segment ({args.model})", unit="case"):
        report_path = out / name / "report.json"
        if report_path.is_file():
            previous = json.loads(report_path.read_text())
            if previous.get("model") == args.model and previous.get("mode") == config.mode:
                rows.append(_row(name, "skipped (done)", previous))
                continue
        try:
            if files.get("dwi") is None or (files.get("adc") is None and files.get("b0") is None):
                raise StrokeSegError(f"case {name}: expected a DWI and an ADC (or a b0), but {'the DWI' if files.get('dwi') is None else 'the ADC'} is missing")
            result = api.segment(files, model=args.model, config=config)
            _write_outputs(result, out / name / "mask.nii.gz", report_path)
            rows.append(_row(name, "ok", result.to_dict()))
        except StrokeSegError as err:
            failed += 1
            log.error("case %s failed: %s", name, err)
            rows.append({"case": name, "status": "failed", "model": args.model, "error": str(err)})
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=_CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(cases) - failed}/{len(cases)} cases done, {failed} failed; summary: {out / 'summary.csv'}")
    return 0 if failed == 0 else 1


def _row(name: str, status: str, report: dict) -> dict:
    row = {"case": name, "status": status, "model": report.get("model"), "seconds": report.get("timings", {}).get("total"), "warnings": " | ".join(report.get("warnings", []))}
    for key in ("lesion_volume_ml", "lesion_count", "dice", "avd_ml", "lesion_f1", "lesion_count_diff"):
        row[key] = report.get(key)
    return row


def cmd_models(args: argparse.Namespace) -> int:
    for info in model_infos():
        print(f"{info['name']:14s} {info['description']}\n{'':14s} validated on: {info['validated_on']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stroke_seg", description="Ischemic stroke lesion segmentation of DWI + ADC. Research use only; not for diagnosis.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and notes")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("segment", help="segment one case")
    p.add_argument("--dwi", required=True)
    p.add_argument("--adc", help="ADC map (mm2/s, 1e-3 or 1e-6 mm2/s; detected); optional with --b0")
    p.add_argument("--b0", help="b=0 image of the DWI acquisition: the ADC is computed from it when --adc is not given")
    p.add_argument("--b-value", type=float, default=1000.0, help="the DWI's b-value in s/mm2, for --b0 (default 1000)")
    p.add_argument("--flair")
    p.add_argument("--ground-truth")
    p.add_argument("--out", required=True, help="mask NIfTI to write (on the DWI grid)")
    p.add_argument("--json", help="JSON report to write")
    p.add_argument("--probability", help="probability map NIfTI to write")
    _add_model_args(p)
    p.set_defaults(func=cmd_segment)
    p = sub.add_parser("batch", help="segment every case in a folder (simple or ISLES'22 BIDS layout)")
    p.add_argument("input_dir")
    p.add_argument("--out", required=True)
    _add_model_args(p)
    p.set_defaults(func=cmd_batch)
    p = sub.add_parser("models", help="list the model backends")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "model", None) is not None and args.model not in model_names():
        print(f"error: --model: expected one of {', '.join(model_names())}, but got {args.model!r}", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except StrokeSegError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # invalid option values (SegmentConfig)
        print(f"error: {err}", file=sys.stderr)
        return 2
