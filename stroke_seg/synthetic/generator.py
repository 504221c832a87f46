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
import functools
import importlib.util
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from stroke_seg.pipeline.anatomy import SUSCEPTIBILITY_SITES_MNI

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
]

log = logging.getLogger(__name__)

GENERATOR_VERSION = "1.4"
LESION_PATTERNS = ("territorial", "lacunar", "emboli", "posterior")
MIMIC_PATTERNS = ("shine_through", "old_infarct")
PATTERNS = LESION_PATTERNS + ("control",) + MIMIC_PATTERNS
_B = 1000.0  # s/mm²


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


def template_path(name: str) -> Path:
    """Path of an MNI152 2009a map shipped in the nilearn wheel (name: "t1", "gm" or "wm")."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the synthetic generator needs the nilearn package (pip install nilearn); it ships the MNI152 template"
        )
    path = (
        Path(list(spec.submodule_search_locations)[0])
        / "datasets"
        / "data"
        / f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz"
    )
    if not path.is_file():
        raise RuntimeError(f"MNI152 template map not found at {path}")
    return path


@dataclass(frozen=True, eq=False)
class _Template:
    affine: np.ndarray  # 1 mm, RAS, MNI mm
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    scalp: np.ndarray
    brain: np.ndarray  # float 0/1, intracranial
    depth: np.ndarray  # parenchyma blurred by 2 mm: low near CSF, ~1 deep in tissue (for atrophy)
    parenchyma_mm: np.ndarray  # (N, 3) world mm of deep parenchyma voxels, for lesion placement


@functools.lru_cache(maxsize=1)
def _template() -> _Template:
    t1_img = nib.load(str(template_path("t1")))
    t1 = np.asarray(t1_img.dataobj, dtype=np.float32) / 255.0
    gm = np.asarray(nib.load(str(template_path("gm"))).dataobj, dtype=np.float32) / 255.0
    wm = np.asarray(nib.load(str(template_path("wm"))).dataobj, dtype=np.float32) / 255.0
    par = np.clip(gm + wm, 0, 1)
    ball = ndi.generate_binary_structure(3, 1)
    intracranial = ndi.binary_closing(par > 0.2, structure=ball, iterations=4)
    intracranial = ndi.binary_fill_holes(intracranial)
    intracranial = ndi.binary_dilation(intracranial, structure=ball, iterations=1)
    brain = ndi.gaussian_filter(intracranial.astype(np.float32), 0.7)
    csf = np.clip(brain - par, 0, 1)
    outer = ~ndi.binary_dilation(intracranial, structure=ball, iterations=3)  # skull gap
    scalp = np.where(outer, np.clip((t1 - 0.25) / 0.35, 0, 1), 0).astype(np.float32)
    idx = np.argwhere((par > 0.9)[::3, ::3, ::3]) * 3
    parenchyma_mm = (idx @ t1_img.affine[:3, :3].T + t1_img.affine[:3, 3]).astype(np.float32)
    depth = ndi.gaussian_filter(par, 2.0).astype(np.float32)
    return _Template(t1_img.affine.copy(), gm, wm, csf, scalp, brain, depth, parenchyma_mm)


@functools.lru_cache(maxsize=3)
def _blurred_template(sigma_mm: tuple[float, float, float]) -> tuple[np.ndarray, ...]:
    """Template maps (gm, wm, csf, scalp, brain, depth) blurred to mimic the partial volume of larger voxels."""
    tpl = _template()
    maps = (tpl.gm, tpl.wm, tpl.csf, tpl.scalp, tpl.brain, tpl.depth)
    if max(sigma_mm) == 0:
        return maps
    return tuple(ndi.gaussian_filter(v, sigma_mm, mode="constant", truncate=2.5) for v in maps)


# --------------------------------------------------------------------------------------------
# Lesions: unions of perturbed ellipsoids in world (MNI) mm.


@dataclass(frozen=True)
class _Blob:
    center: np.ndarray  # (3,) mm
    radii: np.ndarray  # (3,) mm
    rot: np.ndarray  # (3, 3)
    wave_k: np.ndarray  # (3,) rad/mm
    wave_phase: float
    wave_amp: float


def _rotation(angles_deg) -> np.ndarray:
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _blob(rng: np.random.Generator, center, radius_range, elong=(0.7, 1.4)) -> _Blob:
    r = rng.uniform(*radius_range)
    radii = r * rng.uniform(*elong, size=3)
    k = rng.normal(size=3)
    k *= (2 * math.pi / (1.6 * r)) / np.linalg.norm(k)
    return _Blob(
        np.asarray(center, float),
        radii,
        _rotation(rng.uniform(-90, 90, 3)),
        k,
        float(rng.uniform(0, 2 * math.pi)),
        float(rng.uniform(0.1, 0.3)),
    )


def _near(rng: np.random.Generator, point, radius: float, side: int | None = None) -> np.ndarray:
    """A random deep-parenchyma position within ``radius`` mm of ``point`` (same hemisphere)."""
    cand = _template().parenchyma_mm
    d = np.linalg.norm(cand - np.asarray(point), axis=1)
    ok = d < radius
    if side is not None:
        ok &= cand[:, 0] * side > 4
    pool = cand[ok] if ok.any() else cand[np.argsort(d)[:50]]
    return pool[rng.integers(len(pool))].astype(float)


def _lesion_blobs(rng: np.random.Generator, pattern: str) -> list[_Blob]:
    side = int(rng.choice([-1, 1]))
    if pattern == "territorial":  # MCA-like: several large blobs in one lateral territory
        seed = _near(rng, (side * rng.uniform(30, 42), rng.uniform(-25, 15), rng.uniform(5, 30)), 12, side)
        return [_blob(rng, _near(rng, seed, 22, side), (8, 18)) for _ in range(rng.integers(3, 7))]
    if pattern == "lacunar":  # small deep infarct(s), basal ganglia / internal capsule / corona radiata
        c = _near(rng, (side * rng.uniform(15, 26), rng.uniform(-18, 10), rng.uniform(-2, 20)), 8, side)
        return [_blob(rng, c, (2.5, 7.0))] + (
            [_blob(rng, _near(rng, c, 25, side), (2.0, 4.0))] if rng.random() < 0.3 else []
        )
    if pattern == "emboli":  # many small cortical/subcortical lesions in one territory (or both sides)
        both = rng.random() < 0.4
        seed = _near(rng, (side * rng.uniform(25, 45), rng.uniform(-60, 30), rng.uniform(0, 45)), 15, side)
        blobs = []
        for _ in range(rng.integers(5, 31)):  # v1.2: more and smaller (ISLES'22 case: 35 lesions, most 1-10 voxels)
            s = int(rng.choice([-1, 1])) if both else side
            centre = _near(rng, seed * np.array([s * side, 1, 1]), 40, s)
            r = float(np.exp(rng.uniform(np.log(1.3), np.log(5.0))))
            blobs.append(_blob(rng, centre, (r, r)))
        return blobs
    if pattern == "posterior":  # cerebellar (PICA/SCA) or occipital (PCA)
        if rng.random() < 0.5:
            c = _near(rng, (side * rng.uniform(12, 32), rng.uniform(-75, -50), rng.uniform(-42, -25)), 12, side)
        else:
            c = _near(rng, (side * rng.uniform(8, 28), rng.uniform(-92, -70), rng.uniform(-2, 18)), 12, side)
        return [_blob(rng, _near(rng, c, 12, side), (5, 13)) for _ in range(rng.integers(1, 4))]
    return []


def _mimic_blobs(rng: np.random.Generator) -> list[_Blob]:
    c = _near(rng, (rng.uniform(-45, 45), rng.uniform(-60, 30), rng.uniform(-10, 40)), 30)
    return [_blob(rng, _near(rng, c, 10), (6, 14)) for _ in range(rng.integers(1, 3))]


def _render_blobs(
    blobs: list[_Blob], affine: np.ndarray, shape, sub: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Fraction of each voxel inside the union of blobs, and a normalised depth q (0 centre, 1 edge)."""
    frac = np.zeros(shape, np.float32)
    depth = np.ones(shape, np.float32)
    inv = np.linalg.inv(affine)
    offsets = [((np.arange(n) + 0.5) / n - 0.5) for n in sub]
    for b in blobs:
        reach = float(b.radii.max() * (1 + b.wave_amp) + 2 * np.abs(affine[:3, :3]).sum(0).max())
        corners = np.array(
            [
                [b.center[0] + dx, b.center[1] + dy, b.center[2] + dz]
                for dx in (-reach, reach)
                for dy in (-reach, reach)
                for dz in (-reach, reach)
            ]
        )
        vox = corners @ inv[:3, :3].T + inv[:3, 3]
        lo = np.clip(np.floor(vox.min(0)).astype(int), 0, np.array(shape))
        hi = np.clip(np.ceil(vox.max(0)).astype(int) + 1, 0, np.array(shape))
        if np.any(hi <= lo):
            continue
        grids = np.meshgrid(*[np.arange(lo[i], hi[i], dtype=np.float32) for i in range(3)], indexing="ij")
        acc = np.zeros(grids[0].shape, np.float32)
        q_centre = None
        for ox in offsets[0]:
            for oy in offsets[1]:
                for oz in offsets[2]:
                    pts = [grids[0] + ox, grids[1] + oy, grids[2] + oz]
                    world = [
                        affine[i, 0] * pts[0]
                        + affine[i, 1] * pts[1]
                        + affine[i, 2] * pts[2]
                        + affine[i, 3]
                        - b.center[i]
                        for i in range(3)
                    ]
                    local = [sum(b.rot[j, i] * world[j] for j in range(3)) / b.radii[i] for i in range(3)]
                    q = np.sqrt(local[0] ** 2 + local[1] ** 2 + local[2] ** 2)
                    wave = b.wave_amp * np.sin(
                        b.wave_k[0] * world[0] + b.wave_k[1] * world[1] + b.wave_k[2] * world[2] + b.wave_phase
                    )
                    acc += q + wave < 1.0
                    q_centre = q if q_centre is None else np.minimum(q_centre, q)
        acc /= len(offsets[0]) * len(offsets[1]) * len(offsets[2])
        sl = tuple(slice(lo[i], hi[i]) for i in range(3))
        frac[sl] = np.maximum(frac[sl], acc)
        depth[sl] = np.minimum(depth[sl], np.clip(q_centre, 0, 1))
    return frac, depth


def _smooth_field(rng: np.random.Generator, shape, strength: float, scale_vox: float) -> np.ndarray:
    """A smooth random field with values in about [-strength/2, +strength/2]."""
    if strength <= 0:
        return np.zeros(shape, np.float32)
    coarse_shape = tuple(max(2, int(round(s / scale_vox))) for s in shape)
    coarse = rng.uniform(-0.5, 0.5, coarse_shape).astype(np.float32)
    field = ndi.zoom(coarse, [s / c for s, c in zip(shape, coarse_shape)], order=1, mode="nearest", grid_mode=True)
    field = field[: shape[0], : shape[1], : shape[2]]
    pad = [(0, max(0, s - f)) for s, f in zip(shape, field.shape)]
    field = np.pad(field, pad, mode="edge")
    return (strength * field / max(1e-6, np.abs(field).max() * 2)).astype(np.float32)


def _skull_base_gain(rng: np.random.Generator, affine: np.ndarray, shape) -> tuple[np.ndarray, np.ndarray]:
    """Multiplicative gains for S0 and S (b=1000): inferior brightening plus susceptibility hot spots.

    Returns two (X, Y, Z) float32 arrays. The hot spots raise S0 a little more than S, so the ADC there is
    normal or raised (as real artefacts are), never low.
    """
    ijk = np.indices(shape, dtype=np.float32)
    world = [affine[i, 0] * ijk[0] + affine[i, 1] * ijk[1] + affine[i, 2] * ijk[2] + affine[i, 3] for i in range(3)]
    del ijk
    amp = rng.uniform(0.0, 0.5)
    z0, width = rng.uniform(-32, -12), rng.uniform(5, 10)
    base = 1 + amp / (1 + np.exp((world[2] - z0) / width))
    spots = np.zeros(shape, np.float32)
    for site in SUSCEPTIBILITY_SITES_MNI:  # temporal poles, inferior temporal, orbitofrontal, cerebellum, pons
        for side in (-1.0, 1.0):
            if rng.random() < 0.5:
                continue
            c = site * np.array([side, 1, 1]) + rng.normal(0, 4, 3)
            sigma = rng.uniform(4, 10)
            d2 = sum((world[i] - c[i]) ** 2 for i in range(3))
            spots += rng.uniform(0.3, 4.0) * np.exp(
                -d2 / (2 * sigma**2)
            )  # v1.3: up to 5x (ISLES'22 temporal poles: DWI 4.5-5x median)
    s0_gain = (base * (1 + spots)).astype(np.float32)
    s_gain = (base * (1 + spots) ** 0.95).astype(np.float32)
    return s0_gain, s_gain


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
    tpl = _template()

    # Grid: head-covering field of view, tilted by the acquisition's rotation.
    vs = np.asarray(acq.voxel_size, float)
    fov = np.array([184.0, 220.0, 184.0]) + rng.uniform(-6, 6, 3)
    centre = np.array([0.0, -18.0, 12.0]) + rng.uniform(-4, 4, 3)
    shape = tuple(int(v) for v in np.ceil(fov / vs))
    rot = _rotation(acq.tilt_deg)
    lin = rot @ np.diag(vs)
    mni_affine = np.eye(4)
    mni_affine[:3, :3] = lin
    mni_affine[:3, 3] = centre - lin @ ((np.asarray(shape) - 1) / 2)

    # Tissue fractions on the grid; partial volume of large voxels from a box-equivalent blur.
    m = np.linalg.inv(tpl.affine) @ mni_affine
    blurred = _blurred_template(tuple(float(v) for v in np.round(np.sqrt(np.maximum(vs**2 - 1, 0) / 12) * 4) / 4))

    def sample(vol: np.ndarray) -> np.ndarray:
        return ndi.affine_transform(
            vol, m[:3, :3], offset=m[:3, 3], output_shape=shape, order=1, mode="constant", cval=0.0, output=np.float32
        )

    gm, wm, csf, scalp, brain, depth = (sample(v) for v in blurred)
    # Atrophy (v1.2): patients are older than the MNI average; parenchyma next to CSF gives way to
    # CSF (wider sulci and ventricles). ISLES'22 case: ~35 % of the brain mask is CSF (template ~15 %).
    keep = np.clip((depth - rng.uniform(0.2, 0.8)) / 0.25, 0, 1)
    lost = (gm + wm) * (1 - keep)
    gm, wm, csf = gm * keep, wm * keep, csf + lost
    par = np.clip(gm + wm, 0, 1)

    lesion_sub = tuple(int(min(5, max(2, math.ceil(v / 1.01)))) for v in vs) if vs.max() > 1.01 else (1, 1, 1)
    blobs = _lesion_blobs(rng, pattern)
    # Lesion severity (v1.2): most blobs are acute core (ADC 300-500), but some small ones are only mildly
    # restricted (ADC 600-820) and bright on DWI mostly from their T2 rise, as many small lesions in real
    # scans are (ISLES'22 case: median ADC 754e-6 mm²/s inside the DeepISLES mask).
    p_mild = {"emboli": 0.35, "lacunar": 0.5, "posterior": 0.1}.get(pattern, 0.0)
    mild = rng.random(len(blobs)) < p_mild
    mild[:1] = False  # the first blob (the main or index lesion) is always an acute core
    les_frac, les_depth = _render_blobs([b for b, m in zip(blobs, mild) if not m], mni_affine, shape, lesion_sub)
    mild_frac = (
        _render_blobs([b for b, m in zip(blobs, mild) if m], mni_affine, shape, lesion_sub)[0]
        if mild.any()
        else np.zeros(shape, np.float32)
    )
    is_mild = mild_frac > les_frac
    les_frac = np.maximum(les_frac, mild_frac)
    has_mimic = pattern in MIMIC_PATTERNS or (pattern in LESION_PATTERNS and rng.random() < 0.25)
    mimic_kind = pattern if pattern in MIMIC_PATTERNS else str(rng.choice(MIMIC_PATTERNS))
    mim_frac = (
        _render_blobs(_mimic_blobs(rng), mni_affine, shape, lesion_sub)[0] if has_mimic else np.zeros(shape, np.float32)
    )
    mim_frac *= 1 - les_frac

    f_les = les_frac * par
    f_mim = mim_frac * par
    f_gm = gm * (1 - les_frac) * (1 - mim_frac)
    f_wm = wm * (1 - les_frac) * (1 - mim_frac)
    truth = f_les >= 0.5

    # Tissue properties (ADC in 1e-6 mm²/s, S0 arbitrary).
    adc_gm, adc_wm, adc_csf = rng.uniform(790, 860), rng.uniform(660, 760), rng.uniform(2800, 3200)
    s0_gm, s0_wm, s0_csf, s0_scalp = 1.0, rng.uniform(0.7, 0.8), rng.uniform(1.8, 2.6), rng.uniform(0.15, 0.4)
    core = rng.uniform(300, 500)
    hetero = 1 + _smooth_field(rng, shape, 0.2, 6 / vs.mean())
    # The core's restriction fades toward the edge while the DWI stays bright: real lesion masks include
    # that mildly restricted rim. v1.4: the rim is wider (depth**2-4) and its edge nearly normal
    # (ADC 650-860; ISLES'22 case: lesion ADC median 754, p75 996), its T2 rise larger toward the edge.
    rim = les_depth ** rng.uniform(2.0, 4.0)
    adc_les = (core + (rng.uniform(650, 860) - core) * rim) * hetero
    adc_les = np.where(is_mild, rng.uniform(620, 840) * hetero, adc_les)
    s0_les = (
        rng.uniform(1.1, 1.5) * (1 + rng.uniform(0.1, 0.4) * rim) * np.where(gm > wm, s0_gm, s0_wm)
    )  # T2 rise of acute tissue
    s0_les = np.where(is_mild, s0_les * rng.uniform(1.15, 1.4), s0_les)
    if mimic_kind == "shine_through":  # v1.4: ADC clearly raised (950-1300), apart from the lesions' rims
        adc_mim, s0_mim = rng.uniform(950, 1300), rng.uniform(1.8, 2.5)
    else:
        adc_mim, s0_mim = rng.uniform(1600, 2600), rng.uniform(1.5, 2.0)

    # Fine tissue texture (v1.1, wider in v1.2): real ADC/DWI maps vary a lot within normal tissue
    # (ISLES'22 case: 5 % of parenchyma has ADC < 560; DWI p95/p50 ~1.25 above the skull base), which a rule
    # mistakes for lesions and a model must not.
    tex_adc = 1 + _smooth_field(rng, shape, rng.uniform(0.2, 0.45), 2.5 / vs.mean())
    tex_s0 = 1 + _smooth_field(rng, shape, rng.uniform(0.12, 0.35), 2.5 / vs.mean())
    adc_gm, adc_wm = adc_gm * tex_adc, adc_wm * tex_adc
    s0_gm, s0_wm = s0_gm * tex_s0, s0_wm * tex_s0

    def sig(s0, adc):
        return s0 * np.exp(-_B * adc * 1e-6)

    S0 = f_gm * s0_gm + f_wm * s0_wm + csf * s0_csf + f_les * s0_les + f_mim * s0_mim
    S = (
        f_gm * sig(s0_gm, adc_gm)
        + f_wm * sig(s0_wm, adc_wm)
        + csf * sig(s0_csf, adc_csf)
        + f_les * sig(s0_les, adc_les)
        + f_mim * sig(s0_mim, adc_mim)
    )
    if not acq.skull_stripped:
        adc_scalp = rng.uniform(600, 1400)
        S0 = S0 + scalp * s0_scalp
        S = S + scalp * sig(s0_scalp, adc_scalp)
    # Skull-base effects (v1.2), never lesions: the posterior fossa and temporal lobes are brighter on
    # real DWI (ISLES'22 case: parenchyma DWI / brain median 1.36-1.55 in the lowest slices vs ~1.08 above),
    # and susceptibility artefacts next to air and bone (temporal poles, orbitofrontal, mastoid) make
    # bright spots whose ADC is normal or raised. Applied to both b=0 and b=1000 signals.
    S0_gain, S_gain = _skull_base_gain(rng, mni_affine, shape)
    S0, S = S0 * S0_gain, S * S_gain
    bias = np.exp(_smooth_field(rng, shape, acq.bias, 60 / vs.mean()))
    sigma = acq.noise * sig(s0_gm, adc_gm)

    def rician(x):
        return np.sqrt((x + rng.normal(0, sigma, shape)) ** 2 + rng.normal(0, sigma, shape) ** 2).astype(np.float32)

    S0n, Sn = rician(S0 * bias), rician(S * bias)
    background = S0n < 0.25 * s0_wm
    adc = np.where(background, 0.0, np.log(np.maximum(S0n, 1e-6) / np.maximum(Sn, 1e-6)) / _B * 1e6)
    adc = np.clip(adc, 0, 4000).astype(np.float32)
    if acq.adc_background == "brain":
        adc = np.where(brain > 0.5, adc, 0.0).astype(np.float32)
    elif acq.adc_background != "air":
        raise ValueError(f'adc_background must be "air" or "brain", but it is {acq.adc_background!r}')
    flair = None
    if acq.with_flair:
        F = (
            f_gm * 1.0
            + f_wm * 0.8
            + csf * 0.12
            + f_les * rng.uniform(1.0, 1.25)
            + f_mim * (1.6 if mimic_kind == "shine_through" else 0.3)
        )
        if not acq.skull_stripped:
            F = F + scalp * 0.9
        flair = rician(F * bias)
    dwi = Sn
    b0 = S0n
    if acq.skull_stripped:
        keep = brain > 0.5
        dwi, adc, b0 = np.where(keep, dwi, 0), np.where(keep, adc, 0), np.where(keep, b0, 0)
        flair = np.where(keep, flair, 0) if flair is not None else None

    # Storage: gain, units, dtype, orientation, affine.
    gain = rng.uniform(300, 1500) / max(float(np.percentile(dwi[brain > 0.5], 50)), 1e-6)
    dwi = dwi * gain
    adc_scale = {"1e-6": 1.0, "1e-3": 1e-3, "mm2/s": 1e-6}[acq.adc_unit]
    store_affine = mni_affine if acq.oblique else _axis_aligned(mni_affine, rot)
    if acq.orientation == "LPS":
        flip = np.diag([-1.0, -1.0, 1.0, 1.0])
        flip[0, 3], flip[1, 3] = shape[0] - 1, shape[1] - 1
        store_affine = store_affine @ flip

        def orient(a):
            return np.ascontiguousarray(a[::-1, ::-1, :])
    elif acq.orientation == "RAS":

        def orient(a):
            return a
    else:
        raise ValueError(f'orientation must be "RAS" or "LPS", but it is {acq.orientation!r}')

    def image(a, dtype, scale=1.0):
        a = orient(a) * scale
        if dtype == "uint8":
            a = a.astype(np.uint8)
        elif dtype == "int16":
            a = np.clip(np.round(a), -32768, 32767).astype(np.int16)
        else:
            a = a.astype(np.float32)
        img = nib.Nifti1Image(a, store_affine)
        img.set_qform(store_affine, 1)
        img.set_sform(store_affine, 1)
        img.header.set_xyzt_units("mm", "sec")
        return img

    adc_dtype = acq.dtype if acq.adc_unit == "1e-6" else "float32"
    voxel_ml = float(np.prod(vs)) / 1000.0
    return SynthCase(
        dwi=image(dwi, acq.dtype),
        adc=image(adc, adc_dtype, adc_scale),
        mask=image(truth, "uint8"),
        flair=image(flair * gain, acq.dtype) if flair is not None else None,
        pattern=pattern,
        seed=seed,
        acquisition=acq,
        lesion_volume_ml=float(truth.sum()) * voxel_ml,
        brain=image(brain > 0.5, "uint8"),
        raw_b0=image(b0 * gain, "float32"),
    )


def _axis_aligned(mni_affine: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """Scanner-space affine of a tilted head: the grid is axis-aligned, the head rotated by rot^-1."""
    out = np.eye(4)
    out[:3, :] = rot.T @ mni_affine[:3, :]
    return out


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
