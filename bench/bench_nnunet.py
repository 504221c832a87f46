"""A nnU-Net v2 folder through this project's ``nnunet`` backend, beside nnU-Net's own ``predict_from_files``, on the
shared real case (or --case), with the random-weight stand-in of ``bench/make_nnunet_standin.py``.

    python bench/bench_nnunet.py [--folds 1] [--repeats 3] [--mode fast] [--case FOLDER]

* nnU-Net: ``nnUNetPredictor(device=cpu, perform_everything_on_device=False)``, ``initialize_from_trained_model_folder``
  then ``predict_from_files`` (one preprocessing and one export worker, as on a 2-core machine), timed per call.
* ours: ``stroke_seg.segment(model="nnunet", config=SegmentConfig(model_folder=...))``: the first case pays the folder's
  checksum and loading, later cases reuse them. The clinical report is off (it is not the model's time).

Reported: seconds per case (first, and median of the later ones), the inference stage alone, windows and seconds per
window, and whether the two masks are equal voxel for voxel.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import make_nnunet_standin  # noqa: E402

import stroke_seg  # noqa: E402
from stroke_seg.types import SegmentConfig  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "isles22-strokecase0001"


def nnunet_own(folder: Path, files: list[str], out: Path, folds: int, mirroring: bool) -> tuple[float, np.ndarray]:
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    t0 = time.perf_counter()
    predictor = nnUNetPredictor(use_mirroring=mirroring, perform_everything_on_device=False, device=torch.device("cpu"))
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=tuple(range(folds)))
    predictor.predict_from_files(
        [files], [str(out / "case")], num_processes_preprocessing=1, num_processes_segmentation_export=1
    )
    return time.perf_counter() - t0, np.asarray(nib.load(str(out / "case.nii.gz")).dataobj)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folds", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mode", choices=("fast", "accurate"), default="fast")
    parser.add_argument("--case", type=Path, default=SHARED, help="folder holding dwi.nii.gz and adc.nii.gz")
    args = parser.parse_args()
    files = [str(args.case / "dwi.nii.gz"), str(args.case / "adc.nii.gz")]
    fields = {f.name for f in dataclasses.fields(SegmentConfig)}
    quick = {"clinical_report": False} if "clinical_report" in fields else {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_nnunet_standin.make_standin(Path(tmp) / "standin", folds=args.folds)
        own_s, own_mask = nnunet_own(folder, files, Path(tmp), args.folds, args.mode == "accurate")
        config = SegmentConfig(model_folder=str(folder), mode=args.mode, **quick)
        runs = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            result = stroke_seg.segment({"dwi": files[0], "adc": files[1]}, model="nnunet", config=config)
            runs.append((time.perf_counter() - t0, result.timings["inference"]))
    mask = np.asarray(result.mask.dataobj)
    later = runs[1:] or runs
    report = {
        "case": args.case.name,
        "folds": args.folds,
        "mode": args.mode,
        "torch_threads": torch.get_num_threads(),
        "nnunet_predict_from_files_s": round(own_s, 2),
        "ours_first_case_s": round(runs[0][0], 2),
        "ours_later_case_s_median": round(statistics.median(r[0] for r in later), 2),
        "ours_inference_s_median": round(statistics.median(r[1] for r in later), 2),
        "windows_per_fold": result.model_details["windows_per_fold"],
        "seconds_per_window": result.model_details["seconds_per_window"],
        "lesion_voxels": int(mask.sum()),
        "masks_equal": bool(np.array_equal(mask > 0, own_mask > 0)),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
