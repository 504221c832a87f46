"""Time the clinical report (``stroke_seg.report.describe`` and ``write_pdf``) on the real scans in ../shared/data.

    python bench/bench_report.py [--repeats 3] [--segment]

Per scan, in one fresh process: the first ``describe`` (pays the SimpleITK import and the template's 3 mm build),
then the median of ``--repeats`` more (what every later job in a running app pays), the registration's share, and
``write_pdf``. ``--segment`` also runs ``segment()`` on the skull-stripped ISLES'22 scan with the default model in
fast mode, with and without the report, the median of ``--repeats`` after a warm-up (the report's cost inside a job).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from stroke_seg.io.case import load_case  # noqa: E402
from stroke_seg.report import describe, write_pdf  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
CASES = {
    "isles22-strokecase0001 (expert mask)": ({"adc": "adc.nii.gz"}, "expert_mask.nii.gz"),
    "jhu-ads-subject01 (DAGMNet mask, ADC from b0)": ({"b0": "b0.nii.gz"}, "dagmnet_mask.nii.gz"),
}


def _time_case(name: str, folder: Path, extra: dict, mask_name: str, repeats: int) -> None:
    files = {k: str(folder / v) for k, v in extra.items()}
    case = load_case(folder / "dwi.nii.gz", files.get("adc"), b0=files.get("b0"))
    mask = np.asarray(nib.load(str(folder / mask_name)).dataobj) > 0
    t0 = time.perf_counter()
    first = describe(case, mask)
    first_s = time.perf_counter() - t0
    runs, regs = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        report = describe(case, mask)
        runs.append(time.perf_counter() - t0)
        regs.append(report.registration["seconds"])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_pdf(first, case, mask, Path(tmp) / "r.pdf")
        pdf_s = time.perf_counter() - t0
    print(
        f"| {name} | {case.shape} | {first_s:.2f} | {statistics.median(runs):.2f} | {statistics.median(regs):.2f} | "
        f"{pdf_s:.2f} | {first.registration['brain_dice']:.2f} |"
    )


def _time_segment(repeats: int) -> None:
    import stroke_seg

    folder = SHARED / "isles22-strokecase0001"
    files = {"dwi": folder / "dwi.nii.gz", "adc": folder / "adc.nii.gz"}
    for report in (False, True):
        config = stroke_seg.SegmentConfig(clinical_report=report)
        stroke_seg.segment(files, config=config)  # warm-up
        runs = [stroke_seg.segment(files, config=config).timings for _ in range(repeats)]
        total = statistics.median(t["total"] for t in runs)
        part = statistics.median(t.get("report", 0.0) for t in runs)
        print(f"| segment(), report {'on' if report else 'off'} | {total:.2f} | {part:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--segment", action="store_true")
    args = parser.parse_args()
    print(
        "| scan | grid | first describe (s) | describe, median (s) | of which registration (s) | PDF (s) | brain Dice |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, (extra, mask_name) in CASES.items():
        folder = SHARED / name.split(" ")[0]
        if folder.is_dir():
            _time_case(name, folder, extra, mask_name, args.repeats)
    if args.segment:
        print("\n| run (default model, fast) | total (s) | report (s) |\n|---|---|---|")
        _time_segment(args.repeats)


if __name__ == "__main__":
    main()
