"""Resolution: the same scan at its native voxel size, at half of it, and at half in-plane with double slices.

    python bench/bench_resolution.py stability --model unet --real-root ../shared/data
    python bench/bench_resolution.py cost --model unet --sizes 2 1 0.5

``stability``: each scan (the ISLES'22 case with its expert mask, and held-out synthetic cases: seeds 7_800_000+,
never used in training) is resampled (linear, same field of view, voxel centres of the new grid inside the old
voxels) to half its voxel size and to half in-plane + double slice thickness. Printed: lesion volume of each variant
over the native one, and the Dice of the half-voxel mask read at the native voxel centres (nearest) against the
native mask; the expert mask resampled the same way (linear, > 0.5) gives the ceiling of that Dice.

``cost``: one synthetic head (territorial lesion, raw with skull, 184 x 220 x 184 mm field of view) generated at 1 mm
and resampled (linear) to each isotropic voxel size, written as float32 NIfTI and segmented from those files in a fresh
process each: wall time per stage and peak resident memory of that process (``ru_maxrss``: imports, loading and
``segment()``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402

import stroke_seg  # noqa: E402
from stroke_seg.pipeline.metrics import dice  # noqa: E402
from stroke_seg.synthetic import generator as synth  # noqa: E402


def resample(img: nib.Nifti1Image, factors, order: int = 1) -> nib.Nifti1Image:
    """``img`` on a grid whose voxels are ``factors`` times the old ones (same field of view), by interpolation."""
    factors = np.asarray(factors, float)
    shape = np.maximum(1, np.round(np.asarray(img.shape[:3]) / factors)).astype(int)
    step = np.asarray(img.shape[:3]) / shape  # old voxels per new voxel, per axis
    new_to_old = np.diag(np.append(step, 1.0))
    new_to_old[:3, 3] = 0.5 * step - 0.5
    data = np.asanyarray(img.dataobj).astype(np.float32)
    out = ndi.affine_transform(
        data, step, offset=new_to_old[:3, 3], output_shape=tuple(shape), order=order, mode="nearest"
    )
    affine = img.affine @ new_to_old
    return nib.Nifti1Image(out, affine)


def at_native_centres(mask: np.ndarray, mask_affine: np.ndarray, native: nib.Nifti1Image) -> np.ndarray:
    """``mask`` (on its own grid) read at the voxel centres of ``native`` (nearest voxel)."""
    vox = np.linalg.inv(mask_affine) @ native.affine
    return (
        ndi.affine_transform(
            mask.astype(np.float32), vox[:3, :3], offset=vox[:3, 3], output_shape=native.shape[:3], order=0, cval=0
        )
        > 0.5
    )


def stability(a) -> None:
    cases = []
    if a.real_root:
        folder = Path(a.real_root) / "isles22-strokecase0001"
        if folder.is_dir():
            cases.append(
                (
                    "isles22-strokecase0001",
                    nib.load(str(folder / "dwi.nii.gz")),
                    nib.load(str(folder / "adc.nii.gz")),
                    nib.load(str(folder / "expert_mask.nii.gz")),
                )
            )
    acqs = [
        synth.Acquisition(voxel_size=(2.0, 2.0, 2.0), skull_stripped=True, tilt_deg=(4.0, -3.0, 2.0)),
        synth.Acquisition(voxel_size=(1.2, 1.2, 5.0), skull_stripped=False, tilt_deg=(-4.0, 2.0, 5.0), oblique=True),
        synth.Acquisition(voxel_size=(0.9, 0.9, 5.0), skull_stripped=False, tilt_deg=(3.0, 0.0, -4.0)),
    ]
    for i in range(a.n):
        c = synth.make_case(7_800_000 + i, ("territorial", "lacunar", "emboli", "posterior")[i % 4], acqs[i % 3])
        cases.append((f"synth-{i}-{c.pattern} {acqs[i % 3].voxel_size}", c.dwi, c.adc, c.mask))
    print(f"model {a.model}\n")
    print(
        "| case | native mL | half voxel mL (ratio) | half in-plane, double slices mL (ratio) "
        "| half-voxel Dice at native centres | same for the reference mask |"
    )
    print("|---|---|---|---|---|---|")
    config = stroke_seg.SegmentConfig(max_voxels=10**9)
    for name, dwi, adc, ref in cases:
        variants = {"native": (1.0, 1.0, 1.0), "half": (0.5, 0.5, 0.5), "aniso": (0.5, 0.5, 2.0)}
        out = {}
        for key, f in variants.items():
            d, c_ = (dwi, adc) if key == "native" else (resample(dwi, f), resample(adc, f))
            r = stroke_seg.segment({"dwi": d, "adc": c_}, model=a.model, config=config)
            out[key] = (np.asarray(r.mask.dataobj) > 0, r.mask.affine, r.metrics.volume_ml)
        native_mask, _, v0 = out["native"]
        half_at_native = at_native_centres(out["half"][0], out["half"][1], dwi)
        ref_half = resample(ref, (0.5, 0.5, 0.5))
        ref_back = at_native_centres(np.asarray(ref_half.dataobj) > 0.5, ref_half.affine, dwi)
        ref_native = np.asarray(ref.dataobj) > 0

        def ratio(v, v0=v0):
            return f"{v:.2f} ({v / v0:.2f})" if v0 > 0 else f"{v:.2f}"

        print(
            f"| {name} | {v0:.2f} | {ratio(out['half'][2])} | {ratio(out['aniso'][2])} | "
            f"{dice(half_at_native, native_mask):.3f} | {dice(ref_back, ref_native):.3f} |",
            flush=True,
        )


def cost(a) -> None:
    if a.one is not None:  # child process: segment the files of one size
        folder = Path(a.folder)
        t = time.perf_counter()
        r = stroke_seg.segment(
            {"dwi": folder / "dwi.nii", "adc": folder / "adc.nii"},
            model=a.model,
            config=stroke_seg.SegmentConfig(max_voxels=10**9),
        )
        total = time.perf_counter() - t
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
        print(
            json.dumps(
                {
                    "shape": list(r.case.shape),
                    "mvoxels": round(float(np.prod(r.case.shape)) / 1e6, 2),
                    "seconds": round(total, 1),
                    "stages": {k: round(v, 1) for k, v in r.timings.items() if k != "total"},
                    "peak_gb": round(peak_gb, 2),
                    "volume_ml": round(r.metrics.volume_ml, 2),
                }
            )
        )
        return
    import tempfile

    acq = synth.Acquisition(voxel_size=(1.0, 1.0, 1.0), skull_stripped=False, tilt_deg=(3.0, -2.0, 4.0))
    c = synth.make_case(7_900_000, "territorial", acq)
    print(f"model {a.model}\n")
    print(
        "| input voxel | shape (M voxels) | total s | load / preprocess / inference / postprocess / metrics s "
        "| peak GB | lesion mL |"
    )
    print("|---|---|---|---|---|---|")
    env = {**os.environ, "STROKE_SEG_MAX_VOXELS": str(10**9)}  # the 0.5 mm head is above the 48 M default
    with tempfile.TemporaryDirectory() as tmp:
        for size in a.sizes:
            folder = Path(tmp) / f"{size:g}"
            folder.mkdir()
            for name, img in (("dwi", c.dwi), ("adc", c.adc)):
                out = img if size == 1.0 else resample(img, (size,) * 3)
                nib.save(
                    nib.Nifti1Image(np.asarray(out.dataobj, dtype=np.float32), out.affine), str(folder / f"{name}.nii")
                )
            cmd = [sys.executable, __file__, "cost", "--model", a.model, "--one", str(size), "--folder", str(folder)]
            line = (
                subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout.strip().splitlines()[-1]
            )
            row = json.loads(line)
            st = row["stages"]
            print(
                f"| {size:g} mm | {'x'.join(map(str, row['shape']))} ({row['mvoxels']:.1f}) | {row['seconds']:.1f} | "
                f"{st['load']:.1f} / {st['preprocess']:.1f} / {st['inference']:.1f} / {st['postprocess']:.1f} / "
                f"{st['metrics']:.1f} | {row['peak_gb']:.2f} | {row['volume_ml']:.2f} |",
                flush=True,
            )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["stability", "cost"])
    p.add_argument("--model", default="unet")
    p.add_argument("--n", type=int, default=3, help="synthetic cases (stability)")
    p.add_argument("--real-root", default=None)
    p.add_argument("--sizes", nargs="+", type=float, default=[2.0, 1.0, 0.5])
    p.add_argument("--one", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    stability(a) if a.what == "stability" else cost(a)


if __name__ == "__main__":
    main()
