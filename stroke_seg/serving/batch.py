"""Cohorts: case discovery (one naming scheme for the CLI, the app's examples and BIDS), a resumable
run-one-case, and the loop over a cohort.

A case's outputs are written into a staging folder and renamed into ``OUT/CASE/`` when complete (as the result cache
does), so an interrupted run never leaves a half-written case that a resumed run would skip.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from stroke_seg.api import find_case_files, segment
from stroke_seg.errors import InvalidImageError, StrokeSegError
from stroke_seg.io.case import missing_input, save_image
from stroke_seg.types import Result, SegmentConfig

__all__ = [
    "discover_cases",
    "write_outputs",
    "run_case",
    "run_batch",
    "write_summary",
    "remove_abandoned_staging",
    "CSV_FIELDS",
    "CaseFiles",
]

log = logging.getLogger(__name__)

CaseFiles = dict[str, Path | None]
"""Paths of one case's inputs: keys dwi, adc, b0, flair, ground_truth (None when absent)."""

CSV_FIELDS = [
    "case",
    "status",
    "model",
    "lesion_volume_ml",
    "lesion_count",
    "dice",
    "avd_ml",
    "lesion_f1",
    "lesion_count_diff",
    "seconds",
    "worker",
    "warnings",
    "error",
]


def discover_cases(root: str | Path) -> list[tuple[str, CaseFiles]]:
    """Cases under ``root``: ISLES'22 BIDS, else one folder per case (``CASE/dwi.nii.gz`` + ``adc`` or ``b0``).

    BIDS: ``sub-*/ses-*/dwi/*_dwi.nii.gz`` with ``*_adc.nii.gz`` beside it, ground truth under
    ``derivatives/**/sub-*/ses-*/**/*_msk.nii.gz`` and FLAIR under ``anat/`` when present.
    """
    root = Path(root)
    cases: list[tuple[str, CaseFiles]] = []
    for dwi in sorted(root.glob("sub-*/ses-*/dwi/*_dwi.nii*")):
        prefix = dwi.name.split("_dwi.nii")[0]
        adc = next(iter(sorted(dwi.parent.glob(f"{prefix}_adc.nii*"))), None)
        sub, ses = dwi.parts[-4], dwi.parts[-3]
        gt = (
            next(iter(sorted((root / "derivatives").glob(f"**/{sub}/{ses}/**/*_msk.nii*"))), None)
            if (root / "derivatives").is_dir()
            else None
        )
        anat = dwi.parent.parent / "anat"
        flair = next(iter(sorted(anat.glob(f"{sub}_{ses}*_FLAIR.nii*"))), None) if anat.is_dir() else None
        cases.append((f"{sub}_{ses}", {"dwi": dwi, "adc": adc, "b0": None, "flair": flair, "ground_truth": gt}))
    if cases:
        return cases
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        files = find_case_files(folder)
        if any(files[k] is not None for k in ("dwi", "adc", "b0")):
            cases.append((folder.name, files))
    return cases


def write_outputs(
    result: Result, mask_path: Path, json_path: Path | None = None, prob_path: Path | None = None
) -> None:
    """Write a result's mask (uint8, DWI grid), optional probability map (float32) and JSON report."""
    save_image(result.mask.get_fdata(dtype="float32"), result.case, mask_path)
    if prob_path is not None:
        save_image(result.probability.get_fdata(dtype="float32"), result.case, prob_path, dtype="float32")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result.to_dict(), indent=2))


def _row(name: str, status: str, report: dict[str, Any]) -> dict[str, Any]:
    row = {
        "case": name,
        "status": status,
        "model": report.get("model"),
        "seconds": report.get("timings", {}).get("total"),
        "warnings": " | ".join(report.get("warnings", [])),
    }
    for key in ("lesion_volume_ml", "lesion_count", "dice", "avd_ml", "lesion_f1", "lesion_count_diff"):
        row[key] = report.get(key)
    return row


ROW_FILE = "batch_row.json"
"""Beside a case's outputs: its summary row and the run that wrote it (a rerun within that run returns the row)."""


def run_case(
    name: str,
    files: CaseFiles,
    out: Path,
    model: str,
    config: SegmentConfig,
    *,
    worker: str = "in-process",
    run_id: str | None = None,
) -> dict[str, Any]:
    """Segment one case into ``out/name/`` (mask.nii.gz + report.json), unless done before with the same model and mode.

    Args:
        worker: who runs it, for the row.
        run_id: the batch run; a case this run already finished (its task ran again after the worker that held the
            result died) returns that row, status "ok", instead of "skipped (done)".

    Returns:
        The case's summary row (status "ok", "skipped (done)" or "failed" with the error).
    """
    target = out / name
    report_path = target / "report.json"
    if report_path.is_file():
        previous = json.loads(report_path.read_text())
        if previous.get("model") == model and previous.get("mode") == config.mode:
            done = json.loads((target / ROW_FILE).read_text()) if (target / ROW_FILE).is_file() else {}
            if run_id is not None and done.get("run_id") == run_id:
                return done["row"]
            return dict(_row(name, "skipped (done)", previous), worker=worker)
    try:
        missing = missing_input(files)
        if missing:
            raise InvalidImageError(f"case {name}: expected a DWI and an ADC (or a b0), but {missing} is missing")
        t0 = time.perf_counter()
        result = segment({k: v for k, v in files.items() if v is not None}, model=model, config=config)
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".staging-{name}-", dir=out))
        try:
            write_outputs(result, staging / "mask.nii.gz", staging / "report.json")
            row = dict(_row(name, "ok", result.to_dict()), worker=worker)
            row["seconds"] = round(time.perf_counter() - t0, 3)
            (staging / ROW_FILE).write_text(json.dumps({"run_id": run_id, "row": row}))
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return row
    except StrokeSegError as err:
        log.error("case %s failed: %s", name, err)
        return {"case": name, "status": "failed", "model": model, "worker": worker, "error": str(err)}


def run_batch(
    cases: Iterable[tuple[str, CaseFiles]],
    out: Path,
    model: str,
    config: SegmentConfig,
    *,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> list[dict[str, Any]]:
    """Run every case (a failing one is reported and the rest go on) and write ``out/summary.csv``.

    Args:
        cases: (name, files) pairs, e.g. from :func:`discover_cases`.
        out: output folder.
        model: backend name.
        config: options.
        progress: wraps the case iterable (e.g. ``tqdm``); None for none.
    """
    cases = list(cases)
    rows = [run_case(name, files, out, model, config) for name, files in (progress(cases) if progress else cases)]
    remove_abandoned_staging(rows, out)
    write_summary(rows, out)
    return rows


def remove_abandoned_staging(rows: list[dict[str, Any]], out: Path) -> int:
    """Delete the staging folders of the cases this run finished or found done: what a process that died while writing
    a case left in ``out`` (a killed cluster worker, an interrupted run). Returns how many."""
    done = {row["case"] for row in rows if row.get("status") in ("ok", "skipped (done)")}
    removed = 0
    for folder in Path(out).iterdir() if Path(out).is_dir() else ():
        # ".staging-CASE-XXXXXXXX" (run_case's mkdtemp; its random part has no "-"): the case is exact, so a case
        # named "a" never takes "a-b"'s folder
        case = folder.name.removeprefix(".staging-").rpartition("-")[0]
        if folder.is_dir() and folder.name.startswith(".staging-") and case in done:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    if removed:
        log.info("removed %d staging folder(s) left by a run that stopped while writing", removed)
    return removed


def write_summary(rows: list[dict[str, Any]], out: Path) -> Path:
    """Write ``out/summary.csv``: one row per case, columns :data:`CSV_FIELDS`."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return out / "summary.csv"
