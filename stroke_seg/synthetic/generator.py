"""Deterministic synthetic acute-stroke cases on a real brain template.

Anatomy comes from the MNI152 2009a (symmetric) T1, grey- and white-matter maps that the
``nilearn`` wheel ships (``nilearn/datasets/data/mni_icbm152_*_converted.nii.gz``; nothing is
downloaded). CSF is the intracranial space the two tissue maps leave; scalp comes from the T1.

Signal model, per voxel, with partial-volume mixing of *signals* (not of ADC values):

    S0 = sum_t f_t * S0_t                     (b=0, T2-weighted)
    S  = sum_t f_t * S0_t * exp(-b * ADC_t)   (b = 1000 s/mm²)

then a smooth multiplicative bias field (same coil for both), Rician noise on both, and the
ADC a scanner would compute, ``ADC = ln(S0 / S) / b`` (0 where S0 is background). Tissue ADC
(1e-6 mm²/s): GM 790-860, WM 660-760, CSF 2800-3200, acute core 300-500 with spatial
heterogeneity (+-10 %) and a rim of milder restriction (v1.4: ``depth**(2-4)`` toward a nearly normal
650-860 at the edge); acute tissue also has a raised S0 (x1.1-1.5, early T2 change; up to +40 % more toward
the rim's edge, so the rim stays bright on DWI). Normal tissue has a fine random texture (ADC +-10-22 %, S0
+-6-17 %, ~2.5 mm grain), as real maps do.
Version 1.2 (and 1.3: a mildly restricted lesion rim, milder small lesions, stronger artefacts)
matched the ISLES'22 case's statistics more closely: atrophy (more CSF), wider texture,
more and smaller emboli, some only mildly restricted lesions (ADC 620-840 in v1.4, bright from T2 rise), and
skull-base effects (brighter posterior fossa, susceptibility hot spots with normal ADC) as negatives.
Mimics that must not be called lesions: T2 shine-through (S0 x1.8-2.5, ADC 950-1300 in v1.4, bright
on DWI) and an old infarct (ADC 1600-2600, dark on DWI).

The ground truth is every voxel whose volume is at least half acute infarct (from 8-125 point
supersampling of the analytic lesion shapes).

Command line::

    python -m stroke_seg.synthetic.generator OUTDIR --n 20 --seed 0 [--voxel-size 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from stroke_seg.synthetic.head import _template, head_grid, template_path, tissue_maps
from stroke_seg.synthetic.lesions import LESION_PATTERNS, MIMIC_PATTERNS, place_lesions
from stroke_seg.synthetic.signal import B_VALUE as _B
from stroke_seg.synthetic.signal import acquire
from stroke_seg.synthetic.storage import store

__all__ = [
    "GENERATOR_VERSION",
    "PATTERNS",
    "LESION_PATTERNS",
    "MIMIC_PATTERNS",
    "Acquisition",
    "SynthCase",
    "make_case",
    "random_acquisition",
    "generate",
    "template_path",
    "_template",
]

log = logging.getLogger(__name__)

GENERATOR_VERSION = "1.4"
PATTERNS = LESION_PATTERNS + ("control",) + MIMIC_PATTERNS


@dataclass(frozen=True)
class Acquisition:
    """How a synthetic case is 'acquired' and stored.

    Attributes:
        voxel_size: voxel edge lengths in mm (x, y, z before tilt), e.g. (2, 2, 2) or (1.2, 1.2, 5).
        orientation: storage axis order, "RAS" or "LPS".
        tilt_deg: rotation of the head relative to the grid, degrees about x, y, z.
        oblique: True stores the tilt in the affine (oblique grid, world = MNI mm); False keeps an
            axis-aligned affine (the head is tilted in scanner space).
        dtype: "float32" or "int16" storage.
        noise: Rician noise sigma as a fraction of grey-matter DWI signal.
        bias: peak-to-peak strength of the multiplicative bias field (0 = none).
        skull_stripped: zero everything outside the brain, as ISLES'22 releases do.
        adc_unit: stored ADC unit: "1e-6", "1e-3" or "mm2/s".
        with_flair: also write a FLAIR image.
        adc_background: where the stored ADC is 0: "air" (where the b0 is below a quarter of white matter's, as
            most scanners do) or "brain" (everywhere outside the intracranial mask, as some scanners and PACS
            exports do, while the DWI keeps its noise background).
    """

    voxel_size: tuple[float, float, float] = (2.0, 2.0, 2.0)
    orientation: str = "RAS"
    tilt_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    oblique: bool = False
    dtype: str = "float32"
    noise: float = 0.03
    bias: float = 0.2
    skull_stripped: bool = False
    adc_unit: str = "1e-6"
    with_flair: bool = False
    adc_background: str = "air"


@dataclass(frozen=True, eq=False)
class SynthCase:
    """One generated case (images as stored) and how it was made."""

    dwi: nib.Nifti1Image
    adc: nib.Nifti1Image
    mask: nib.Nifti1Image
    flair: nib.Nifti1Image | None
    pattern: str
    seed: int
    acquisition: Acquisition
    lesion_volume_ml: float
    brain: nib.Nifti1Image | None = None  # intracranial mask (uint8) on the same grid, the brain-extraction truth
    raw_b0: nib.Nifti1Image | None = None  # the noisy b=0 signal the ADC was computed from (float32, DWI's scale)

    def scanner_b0(self, dtype: str = "uint16", peak: float = 16000.0) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
        """(b0, b1000) as a scanner stores them: both from the noisy signals this case's ADC was computed from
        (noise in the background too), scaled by one factor so that the b0's 99.9th percentile is ``peak``, rounded
        to ``dtype`` ("uint16", "int16" or "float32"); the DWI's grid and affine."""
        if self.raw_b0 is None:
            raise ValueError("this case keeps no raw b0")
        b0 = np.asarray(self.raw_b0.dataobj, dtype=np.float32)
        dwi = np.asarray(self.dwi.dataobj, dtype=np.float32)
        scale = np.float32(peak / max(float(np.percentile(b0, 99.9)), 1e-6))
        hi = {"uint16": 65535, "int16": 32767}.get(dtype)
        out = []
        for data in (b0, dwi):
            data = data * scale
            if hi is not None:
                data = np.clip(np.round(data), 0, hi).astype(dtype)
            else:
                data = data.astype(np.float32)
            img = nib.Nifti1Image(data, self.dwi.affine, self.dwi.header.copy())
            img.header.set_data_dtype(data.dtype)
            img.header.set_slope_inter(1.0, 0.0)
            out.append(img)
        return out[0], out[1]

    def b0(self) -> nib.Nifti1Image:
        """The b=0 image this case's DWI and ADC imply (``S0 = S_b exp(b ADC)``, b=1000), in the DWI's dtype and grid:
        a b0 + b1000 export of the same scan, for the b0 and DICOM paths."""
        dwi = np.asanyarray(self.dwi.dataobj).astype(np.float32)
        adc = np.asanyarray(self.adc.dataobj).astype(np.float32)
        adc_micro = adc * {"1e-6": 1.0, "1e-3": 1e3, "mm2/s": 1e6}[self.acquisition.adc_unit]
        s0 = np.where(adc_micro > 0, dwi * np.exp(adc_micro * _B * 1e-6), dwi)
        dtype = self.dwi.get_data_dtype()
        data = np.round(s0).astype(dtype) if np.issubdtype(dtype, np.integer) else s0.astype(np.float32)
        img = nib.Nifti1Image(data, self.dwi.affine, self.dwi.header.copy())
        img.header.set_data_dtype(data.dtype)
        return img

    def save(self, folder: str | Path) -> Path:
        """Write dwi/adc/mask(/flair).nii.gz and meta.json into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        nib.save(self.dwi, str(folder / "dwi.nii.gz"))
        nib.save(self.adc, str(folder / "adc.nii.gz"))
        nib.save(self.mask, str(folder / "mask.nii.gz"))
        if self.flair is not None:
            nib.save(self.flair, str(folder / "flair.nii.gz"))
        meta = {
            "generator_version": GENERATOR_VERSION,
            "pattern": self.pattern,
            "seed": self.seed,
            "lesion_volume_ml": round(self.lesion_volume_ml, 4),
            "acquisition": dataclasses.asdict(self.acquisition),
        }
        (folder / "meta.json").write_text(json.dumps(meta, indent=2))
        return folder


def random_acquisition(rng: np.random.Generator) -> Acquisition:
    """Draw a plausible acquisition: 1-2 mm iso or thick-slice, RAS/LPS, tilt, dtype, noise, bias."""
    kind = rng.choice(["1iso", "2iso", "2iso", "aniso", "aniso5"])
    voxel = {
        "1iso": (1.0, 1.0, 1.0),
        "2iso": (2.0, 2.0, 2.0),
        "aniso": (round(float(rng.uniform(1.0, 1.8)), 1),) * 2 + (round(float(rng.uniform(3.0, 4.0)), 1),),
        "aniso5": (1.2, 1.2, 5.0),
    }[str(kind)]
    return Acquisition(
        voxel_size=tuple(float(v) for v in voxel),
        orientation=str(rng.choice(["RAS", "LPS"])),
        tilt_deg=tuple(float(v) for v in rng.uniform(-8, 8, 3)),
        oblique=bool(rng.random() < 0.5),
        dtype=str(rng.choice(["float32", "int16"])),
        noise=float(rng.uniform(0.02, 0.07)),
        bias=float(rng.uniform(0.0, 0.4)),
        skull_stripped=bool(rng.random() < 0.5),
        adc_unit=str(rng.choice(["1e-6", "1e-6", "1e-3", "mm2/s"])),
        with_flair=bool(rng.random() < 0.3),
    )


def make_case(seed: int, pattern: str | None = None, acquisition: Acquisition | None = None) -> SynthCase:
    """Generate one case, deterministically from ``seed``.

    Args:
        seed: random seed; the same seed, pattern and acquisition give identical images.
        pattern: one of :data:`PATTERNS`; None draws one.
        acquisition: how to acquire and store it; None draws one with :func:`random_acquisition`.
    """
    rng = np.random.default_rng(seed)
    pattern = pattern or str(rng.choice(PATTERNS))
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}, but it is {pattern!r}")
    acq = acquisition or random_acquisition(rng)
    grid = head_grid(rng, acq.voxel_size, acq.tilt_deg)
    tissue = tissue_maps(rng, grid)
    lesions = place_lesions(rng, pattern, grid, tissue)
    signals = acquire(rng, acq, grid, tissue, lesions)
    images = store(rng, acq, grid, signals, lesions.truth, tissue.brain > 0.5)
    return SynthCase(
        **images,
        pattern=pattern,
        seed=seed,
        acquisition=acq,
        lesion_volume_ml=float(lesions.truth.sum()) * float(np.prod(grid.vs)) / 1000.0,
    )


def case_plan(n: int, seed: int) -> list[tuple[int, str]]:
    """(seed, pattern) of each case of a set: patterns cycle so that every one is covered."""
    return [(seed * 1000 + i, PATTERNS[i % len(PATTERNS)]) for i in range(n)]


def generate(outdir: str | Path, n: int = 20, seed: int = 0, voxel_size: float | None = None) -> list[Path]:
    """Write ``n`` cases into ``outdir/case_XXX_<pattern>/``; patterns cycle, acquisitions are drawn.

    Args:
        voxel_size: force isotropic voxels of this size (mm) instead of drawing an acquisition grid.
    """
    outdir = Path(outdir)
    folders = []
    for i, (case_seed, pattern) in enumerate(case_plan(n, seed)):
        acq = None
        if voxel_size is not None:
            acq = dataclasses.replace(
                random_acquisition(np.random.default_rng(case_seed + 7)), voxel_size=(voxel_size,) * 3
            )
        case = make_case(case_seed, pattern, acq)
        folders.append(case.save(outdir / f"case_{i:03d}_{pattern}"))
        log.info(
            "case %d/%d: %s, %.2f mL, voxel %s %s",
            i + 1,
            n,
            pattern,
            case.lesion_volume_ml,
            case.acquisition.voxel_size,
            case.acquisition.orientation,
        )
    return folders


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stroke_seg.synthetic.generator",
        description="Generate synthetic acute-stroke cases (DWI, ADC, ground truth) on the MNI152 template.",
    )
    parser.add_argument("outdir")
    parser.add_argument("--n", type=int, default=20, help=f"number of cases (patterns cycle: {', '.join(PATTERNS)})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--voxel-size", type=float, default=None, help="force isotropic voxels of this size in mm")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    generate(args.outdir, args.n, args.seed, args.voxel_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
