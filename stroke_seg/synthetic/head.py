"""The synthetic head: MNI152 2009a anatomy from the nilearn wheel, placed on a tilted acquisition grid.

``template_path`` finds the T1, grey- and white-matter maps the ``nilearn`` wheel ships (nothing is downloaded); the
intracranial mask, CSF (the space the two tissue maps leave), scalp (from the T1) and a depth map derive from them.
:func:`head_grid` draws the field of view of one case; :func:`tissue_maps` samples the tissue fractions on it, with
partial volume of large voxels and atrophy (patients are older than the MNI average). Arrays are (X, Y, Z), mm.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi


@dataclass(frozen=True, eq=False)
class Grid:
    """One case's acquisition grid: voxel sizes (mm), shape, the head's rotation, and voxel -> MNI mm."""

    vs: np.ndarray
    shape: tuple[int, int, int]
    rot: np.ndarray
    mni_affine: np.ndarray


@dataclass(frozen=True, eq=False)
class Tissue:
    """Tissue fractions on a case's grid (float32, (X, Y, Z)); ``brain`` is the intracranial mask's fraction."""

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    scalp: np.ndarray
    brain: np.ndarray
    par: np.ndarray


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


@functools.lru_cache(maxsize=12)
def _blurred_template(sigma_mm: tuple[float, float, float]) -> tuple[np.ndarray, ...]:
    """Template maps (gm, wm, csf, scalp, brain, depth) blurred to mimic the partial volume of larger voxels.

    Kept for up to 12 blurs (the voxel sizes of a generated set, rounded to 0.25 mm of blur: a few kinds; ~175 MB
    each): a set that mixes acquisitions computes each blur once (2.3 s each on one core)."""
    tpl = _template()
    maps = (tpl.gm, tpl.wm, tpl.csf, tpl.scalp, tpl.brain, tpl.depth)
    if max(sigma_mm) == 0:
        return maps
    return tuple(ndi.gaussian_filter(v, sigma_mm, mode="constant", truncate=2.5) for v in maps)


def _rotation(angles_deg) -> np.ndarray:
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def head_grid(rng: np.random.Generator, voxel_size, tilt_deg) -> Grid:
    """A head-covering field of view (about 184 x 220 x 184 mm), tilted by ``tilt_deg``, drawn from ``rng``."""
    vs = np.asarray(voxel_size, float)
    fov = np.array([184.0, 220.0, 184.0]) + rng.uniform(-6, 6, 3)
    centre = np.array([0.0, -18.0, 12.0]) + rng.uniform(-4, 4, 3)
    shape = tuple(int(v) for v in np.ceil(fov / vs))
    rot = _rotation(tilt_deg)
    lin = rot @ np.diag(vs)
    mni_affine = np.eye(4)
    mni_affine[:3, :3] = lin
    mni_affine[:3, 3] = centre - lin @ ((np.asarray(shape) - 1) / 2)
    return Grid(vs, shape, rot, mni_affine)


def tissue_maps(rng: np.random.Generator, grid: Grid) -> Tissue:
    """Tissue fractions on ``grid``: partial volume of large voxels from a box-equivalent blur, then atrophy."""
    tpl = _template()
    vs, shape = grid.vs, grid.shape
    m = np.linalg.inv(tpl.affine) @ grid.mni_affine
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
    return Tissue(gm, wm, csf, scalp, brain, np.clip(gm + wm, 0, 1))
