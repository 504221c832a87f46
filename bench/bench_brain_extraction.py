"""Time the brain extractor (HD-BET) on a raw head, torch against OpenVINO, fast (fold 0) against accurate (five
folds); and ``segment()`` on a skull-stripped case, where no extractor runs.

    python bench/bench_brain_extraction.py [--raw ../shared/data/jhu-ads-subject01]
        [--stripped ../shared/data/isles22-strokecase0001] [--engines torch openvino] [--modes fast accurate]
        [--no-raw]

Raw head rows: ``extract_brain`` on the case's canonical DWI, after one warm-up for OpenVINO (the warm-up pays the
conversion, kept on disk by the weights' checksum, and the compilation, as the app's first request does); Dice
against the site's ``brain_mask.nii.gz`` and the share of ``dagmnet_mask.nii.gz`` (a model's lesion) kept inside.
Skull-stripped rows: ``segment()`` with ``unet`` end to end (median of 3 after a warm-up). Wall seconds and this
process's CPU seconds (user + system) are both given, with the 1-minute load average before each row: on a shared
machine the wall time follows the load, the CPU time much less.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import stroke_seg  # noqa: E402
from stroke_seg.models.hdbet import extract_brain  # noqa: E402
from stroke_seg.pipeline.preprocess import from_canonical, to_canonical, voxel_sizes  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def raw_rows(folder: Path, engines: list[str], modes: list[str]) -> None:
    case = stroke_seg.load_case(folder / "dwi.nii.gz", b0=folder / "b0.nii.gz")
    site = np.asarray(nib.load(str(folder / "brain_mask.nii.gz")).dataobj) > 0
    lesion = np.asarray(nib.load(str(folder / "dagmnet_mask.nii.gz")).dataobj) > 0
    dwi_c, affine_c, ornt = to_canonical(case.dwi, case.affine)
    vs, ml = voxel_sizes(affine_c), float(np.prod(case.voxel_size)) / 1000
    head = "| mode | engine | input (Z, Y, X) | wall s | CPU s | load before | brain mL (site) | Dice vs site |"
    print(head + " lesion kept |")
    print("|---|---|---|---|---|---|---|---|---|")
    for mode in modes:
        for engine in engines:
            config = stroke_seg.SegmentConfig(mode=mode, engine=engine)
            if engine != "torch":
                extract_brain(dwi_c, vs, config=config)  # warm-up: conversion (first time) and compilation
            before, t, c = load(), time.perf_counter(), cpu_s()
            out = extract_brain(dwi_c, vs, config=config)
            wall, cpu = time.perf_counter() - t, cpu_s() - c
            mask = from_canonical(out.brain, ornt)
            dice = 2 * (mask & site).sum() / (mask.sum() + site.sum())
            kept = (mask & lesion).sum() / max(lesion.sum(), 1)
            print(
                f"| {mode} ({len(out.details['folds'])} fold{'s' * (len(out.details['folds']) > 1)}) | "
                f"{out.details['engine']} | {tuple(out.details['input_shape_zyx'])} | {wall:.1f} | {cpu:.1f} | "
                f"{before} | {mask.sum() * ml:.0f} ({site.sum() * ml:.0f}) | {dice:.4f} | {100 * kept:.2f} % |",
                flush=True,
            )


def stripped_rows(folder: Path, modes: list[str], repeats: int = 3) -> None:
    print("\n| case | model | mode | segment() median s (of 3) | CPU s per run | load before | brain extraction |")
    print("|---|---|---|---|---|---|---|")
    for mode in modes:
        config = stroke_seg.SegmentConfig(mode=mode)
        stroke_seg.segment(folder, model="unet", config=config)  # warm-up
        before, times, c = load(), [], cpu_s()
        for _ in range(repeats):
            t = time.perf_counter()
            r = stroke_seg.segment(folder, model="unet", config=config)
            times.append(time.perf_counter() - t)
        print(
            f"| {folder.name} | unet | {mode} | {statistics.median(times):.2f} | {(cpu_s() - c) / repeats:.2f} | "
            f"{before} | {r.model_details['brain_extraction']['method']} |",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--raw", type=Path, default=SHARED / "jhu-ads-subject01")
    ap.add_argument("--stripped", type=Path, default=SHARED / "isles22-strokecase0001")
    ap.add_argument("--engines", nargs="+", default=["torch", "openvino"])
    ap.add_argument("--modes", nargs="+", default=["fast", "accurate"])
    ap.add_argument("--no-raw", action="store_true", help="only the skull-stripped rows")
    args = ap.parse_args()
    if not args.no_raw:
        raw_rows(args.raw, args.engines, args.modes)
    stripped_rows(args.stripped, args.modes)


if __name__ == "__main__":
    main()
