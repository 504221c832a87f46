"""Command line: ``python -m stroke_seg {segment,batch,report,models,add-user}``.

Bad input exits with code 2 and one line on stderr (no traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import sys
import tempfile
import time
from pathlib import Path

from stroke_seg import api
from stroke_seg.errors import StrokeSegError
from stroke_seg.io.case import save_image
from stroke_seg.models import check_model_name, default_model, model_infos, unavailable_models
from stroke_seg.serving import batch
from stroke_seg.serving.memory import keep_freed_memory
from stroke_seg.types import BRAIN_EXTRACTORS, ENGINE_NAMES, SegmentConfig

__all__ = ["main", "build_parser"]

log = logging.getLogger("stroke_seg.cli")


def _field_docs() -> dict[str, str]:
    """The first sentence of each ``SegmentConfig`` attribute's docstring entry, for --help."""
    docs, current = {}, None
    for line in (SegmentConfig.__doc__ or "").split("Attributes:")[-1].splitlines():
        m = re.match(r"\s{8}(\w+)(?:, \w+)*: (.*)", line)
        if m:
            current = m.group(1)
            docs[current] = m.group(2)
        elif current and line.startswith(" " * 12):
            docs[current] += " " + line.strip()
    plain = {k: re.sub(r":\w+:`~?([^`]*)`", r"\1", v).replace("``", "") for k, v in docs.items()}
    return {k: re.split(r"(?<=[a-z)])\. ", v)[0].rstrip(".") for k, v in plain.items()}


_CONFIG_FLAGS = (
    "mode",
    "threshold",
    "min_lesion_ml",
    "max_lesion_adc",
    "max_lesion_radc",
    "mirror_dwi_min",
    "artefact_zone_adc",
    "edge_level",
    "device",
    "engine",
    "core_adc",
    "brain_extractor",
)
_CHOICES = {"mode": ("fast", "accurate"), "engine": ENGINE_NAMES, "brain_extractor": BRAIN_EXTRACTORS}


def _add_model_args(p: argparse.ArgumentParser) -> None:
    """--model and one flag per ``SegmentConfig`` field, with its default and documentation."""
    p.add_argument(
        "--model",
        default=None,
        help=f"backend name (see `models`); default {default_model()} (stroke_seg.models.default_model())",
    )
    p.add_argument(
        "--model-folder",
        default=None,
        metavar="DIR",
        help="a nnU-Net v2 trained-model folder (dataset.json, plans.json, fold_<k>/checkpoint_final.pth) for "
        "--model nnunet, which it implies (needs the nnU-Net extra: requirements-nnunet.txt)",
    )
    defaults, docs = SegmentConfig(), _field_docs()
    for f in dataclasses.fields(SegmentConfig):
        if f.name not in _CONFIG_FLAGS:
            continue
        default = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        helptext = docs.get(f.name, "").replace("%", "%%")
        if f.name in _CHOICES:
            p.add_argument(flag, choices=_CHOICES[f.name], default=default, help=helptext + f" (default {default})")
        elif default is None or isinstance(default, str):
            p.add_argument(flag, default=default, help=helptext + " (default: automatic)")
        else:
            optional = "None" in str(f.type)
            p.add_argument(
                flag,
                type=float,
                default=default,
                help=helptext + f" (default {default:g}" + ("; 0 turns it off)" if optional else ")"),
            )


def _config(args: argparse.Namespace) -> SegmentConfig:
    values = {}
    for f in dataclasses.fields(SegmentConfig):
        if f.name in _CONFIG_FLAGS:
            v = getattr(args, f.name)
            values[f.name] = (v or None) if ("None" in str(f.type) and isinstance(v, float)) else v
    return SegmentConfig(**values, model_folder=getattr(args, "model_folder", None))


def cmd_segment(args: argparse.Namespace) -> int:
    if args.dicom is not None:
        if args.dwi or args.adc or args.b0:
            raise StrokeSegError("segment: expected --dicom alone or --dwi with --adc/--b0, but got both kinds")
        with tempfile.TemporaryDirectory(prefix="stroke-seg-dicom-") as work:
            from stroke_seg.io.dicom import load_dicom

            chosen = load_dicom(args.dicom, work, b_value=args.b_value)
            for note in chosen.notes:
                log.info("%s", note)
            files = chosen.as_inputs() | {"flair": args.flair, "ground_truth": args.ground_truth}
            result = api.segment(files, model=args.model, config=_config(args), progress=_progress_lines())
            if args.seg:  # a SEG that cannot be written becomes a warning; the mask and report are still written
                from stroke_seg.io.dicom_seg import with_seg

                result = with_seg(result, chosen, args.seg)
    else:
        if args.dwi is None:
            raise StrokeSegError(
                "segment: expected --dwi DWI (with --adc or --b0) or --dicom DIR_OR_ZIP, but got neither"
            )
        if args.adc is None and args.b0 is None:
            raise StrokeSegError(
                "segment: expected --adc ADC_MAP or --b0 B0_IMAGE (the ADC is then computed), but neither was given"
            )
        if args.seg:
            raise StrokeSegError(
                "segment: --seg (DICOM SEG) needs --dicom input to reference, but NIfTI inputs were given"
            )
        files = {
            "dwi": args.dwi,
            "adc": args.adc,
            "b0": args.b0,
            "b_value": args.b_value,
            "flair": args.flair,
            "ground_truth": args.ground_truth,
        }
        result = api.segment(files, model=args.model, config=_config(args), progress=_progress_lines())
    batch.write_outputs(
        result,
        Path(args.out),
        Path(args.json) if args.json else None,
        Path(args.probability) if args.probability else None,
    )
    if args.brain_mask_out:
        save_image(result.brain_mask.get_fdata(dtype="float32"), result.case, Path(args.brain_mask_out))
    m = result.metrics
    line = f"{result.model}: {m.volume_ml:.2f} mL in {m.count} lesion(s), {result.timings['total']:.1f} s"
    if m.comparison is not None:
        line += f"; Dice {m.comparison.dice:.3f}, lesion F1 {m.comparison.lesion_f1:.3f}"
    print(line)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """The clinical report of a lesion mask from anywhere (an expert's drawing, another tool's output)."""
    import json

    from stroke_seg.io.case import load_case
    from stroke_seg.report import ReportConfig, describe, write_pdf

    if args.adc is None and args.b0 is None:
        raise StrokeSegError(
            "report: expected --adc ADC_MAP or --b0 B0_IMAGE (the ADC is then computed), but got neither"
        )
    case = load_case(args.dwi, args.adc, args.flair, args.mask, b0=args.b0, b_value=args.b_value)
    mask, case = case.ground_truth, dataclasses.replace(case, ground_truth=None)
    report = describe(case, mask, config=ReportConfig(core_adc=args.core_adc))
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2))
    if args.pdf:
        write_pdf(report, case, mask, args.pdf)
    sides = ", ".join(f"{les.hemisphere} {les.territory or '-'}" for les in report.lesions[:3])
    print(
        f"report: {report.lesion_volume_ml:.2f} mL in {report.lesion_count} lesion(s), core {report.core_ml:.2f} mL"
        + (f"; largest: {sides}" if sides else "")
    )
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    root, out = Path(args.input_dir), Path(args.out)
    if not root.is_dir():
        raise StrokeSegError(f"batch input {root}: expected a folder of cases, but it does not exist")
    cases = batch.discover_cases(root)
    if not cases:
        raise StrokeSegError(
            f"batch input {root}: expected CASE/dwi.nii.gz + CASE/adc.nii.gz (or b0.nii.gz) or ISLES'22 BIDS "
            "(sub-*/ses-*/dwi/*_dwi.nii.gz), but found no case"
        )
    desc = f"segment ({args.model})"
    if args.scheduler or args.workers:
        from stroke_seg.serving import cluster

        with cluster.connect(args.scheduler, args.workers) as client:
            rows = cluster.run_batch_on_cluster(
                cases,
                out,
                args.model,
                _config(args),
                client,
                progress=lambda done, n: tqdm(done, total=n, desc=desc, unit="case"),
            )
    else:
        rows = batch.run_batch(
            cases, out, args.model, _config(args), progress=lambda c: tqdm(c, desc=desc, unit="case")
        )
    failed = sum(r["status"] == "failed" for r in rows)
    print(f"{len(cases) - failed}/{len(cases)} cases done, {failed} failed; summary: {out / 'summary.csv'}")
    return 0 if failed == 0 else 1


def cmd_models(args: argparse.Namespace) -> int:
    for info in model_infos():
        print(f"{info['name']:14s} {info['description']}\n{'':14s} validated on: {info['validated_on']}")
    for name, how in unavailable_models().items():
        print(f"{name:14s} not installed: {how}")
    return 0


def _progress_lines(every_s: float = 10.0):
    """A progress callback for long runs (DeepISLES on a CPU): silent for the first ``every_s``, then one stderr line
    when the stage changes and at most every ``every_s`` within a stage."""
    start = time.monotonic()
    last = {"t": start, "stage": ""}

    def report(fraction: float, description: str) -> None:
        stage = description.split(":", 1)[0]
        now = time.monotonic()
        if now - start >= every_s and (stage != last["stage"] or now - last["t"] >= every_s):
            last.update(t=now, stage=stage)
            print(f"[{fraction:4.0%}] {description}", file=sys.stderr, flush=True)

    return report


def _read_password(name: str) -> str:
    """The new password: asked twice without echo on a terminal, else one line of standard input."""
    if sys.stdin.isatty():
        import getpass

        first = getpass.getpass(f"password for {name}: ")
        if getpass.getpass("again: ") != first:
            raise StrokeSegError(f"password for {name}: expected the same password twice, but they differ")
        return first
    line = sys.stdin.readline()
    if not line:
        raise StrokeSegError(f"password for {name}: expected one line on standard input, but it is empty")
    return line.rstrip("\r\n")


def cmd_add_user(args: argparse.Namespace) -> int:
    from stroke_seg.serving.auth import add_user

    new = add_user(args.users_file, args.name, _read_password(args.name))
    print(f"{'added' if new else 'replaced'} user {args.name} in {args.users_file}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m stroke_seg",
        description="Ischemic stroke lesion segmentation of DWI + ADC. Research use only; not for diagnosis.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and notes")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("segment", help="segment one case")
    p.add_argument("--dwi", help="DWI (b=1000) NIfTI; 4D b0 + b1000 accepted")
    p.add_argument(
        "--dicom",
        help="a folder or .zip of DICOM files holding the DWI series (b0 + b1000 or trace) and/or an ADC series, "
        "instead of --dwi/--adc",
    )
    p.add_argument("--adc", help="ADC map (mm2/s, 1e-3 or 1e-6 mm2/s; detected); optional with --b0")
    p.add_argument("--b0", help="b=0 image of the DWI acquisition: the ADC is computed from it when --adc is not given")
    p.add_argument("--b-value", type=float, default=1000.0, help="the DWI's b-value in s/mm2, for --b0 (default 1000)")
    p.add_argument("--flair")
    p.add_argument("--ground-truth")
    p.add_argument("--out", required=True, help="mask NIfTI to write (on the DWI grid)")
    p.add_argument("--json", help="JSON report to write")
    p.add_argument("--probability", help="probability map NIfTI to write")
    p.add_argument(
        "--brain-mask-out",
        metavar="FILE",
        help="brain mask NIfTI to write (uint8 0/1 on the DWI grid): the brain the model and the rules used",
    )
    p.add_argument(
        "--seg", help="with --dicom: also write the mask as a DICOM Segmentation (.dcm) referencing the DWI series"
    )
    _add_model_args(p)
    p.set_defaults(func=cmd_segment)
    p = sub.add_parser("batch", help="segment every case in a folder (simple or ISLES'22 BIDS layout)")
    p.add_argument("input_dir")
    p.add_argument("--out", required=True)
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--scheduler",
        metavar="tcp://HOST:PORT",
        help="run one task per case on this Dask cluster (inputs and --out on storage every worker sees)",
    )
    where.add_argument(
        "--workers", type=int, metavar="N", help="start a Dask LocalCluster of N worker processes on this machine"
    )
    _add_model_args(p)
    p.set_defaults(func=cmd_batch)
    p = sub.add_parser(
        "report",
        help="the clinical report of any lesion mask: core, side, vascular territory, DWI-FLAIR mismatch (JSON, PDF)",
    )
    p.add_argument("--dwi", required=True, help="DWI (b=1000) NIfTI")
    p.add_argument("--adc", help="ADC map (mm2/s, 1e-3 or 1e-6 mm2/s; detected); optional with --b0")
    p.add_argument("--b0", help="b=0 image: the ADC is computed from it when --adc is not given")
    p.add_argument("--b-value", type=float, default=1000.0, help="the DWI's b-value in s/mm2, for --b0 (default 1000)")
    p.add_argument("--flair", help="FLAIR NIfTI: adds the FLAIR signal ratio and the DWI-FLAIR mismatch estimate")
    p.add_argument("--mask", required=True, help="binary lesion mask NIfTI on the DWI grid")
    p.add_argument("--json", help="JSON report to write")
    p.add_argument("--pdf", help="one-page PDF report to write")
    p.add_argument(
        "--core-adc", type=float, default=620.0, help="core: ADC below this, 1e-6 mm2/s (default 620, the RAPID rule)"
    )
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("models", help="list the model backends")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser(
        "add-user",
        help="add a user to an app's users file, or replace that user's password (STROKE_SEG_USERS_FILE)",
        description="The password is read from standard input (one line when piped; asked twice without echo on a "
        "terminal) and stored as a salted scrypt hash, never in plain text.",
    )
    p.add_argument("name", help="user name: letters, digits or . _ @ -")
    p.add_argument("--users-file", required=True, help="the users file (created, mode 600, when missing)")
    p.set_defaults(func=cmd_add_user)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if hasattr(args, "model"):  # a command that segments: the serving memory settings (BENCHMARKS.md)
        keep_freed_memory()
    try:
        if hasattr(args, "model"):
            args.model = args.model or ("nnunet" if getattr(args, "model_folder", None) else default_model())
            check_model_name(args.model)
        return args.func(args)
    except StrokeSegError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # invalid option values (SegmentConfig)
        print(f"error: {err}", file=sys.stderr)
        return 2
