"""Affine registration of a case to the MNI152 template nilearn ships (SimpleITK, Mattes mutual information).

The moving image is the case's brain-masked DWI (b=1000) on its own grid; the fixed image is the brain-masked MNI152
2009 T1 template at 2 mm (``nilearn.datasets.load_mni152_template``, in the wheel: nothing is downloaded). Mutual
information copes with the two contrasts. Two levels (4 and 2 mm), a random 5 % sample of the fixed voxels, started
from the brain-mask moments (:class:`stroke_seg.pipeline.anatomy.MniMap`), so a head that lies anywhere in the scanner
starts close.

Quality: the case's brain mask carried into MNI space is compared with the template's brain mask inside the case's
field of view (Dice). Below :data:`MIN_BRAIN_DICE` the report warns that the territory look-up is unreliable.

ITK works in LPS world coordinates, NIfTI and this project in RAS: the conversions are the ``_FLIP`` products below.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from stroke_seg.pipeline.anatomy import MniMap
from stroke_seg.types import voxel_sizes

__all__ = ["MniRegistration", "register_to_mni", "MIN_BRAIN_DICE", "moments_registration"]

log = logging.getLogger(__name__)

MIN_BRAIN_DICE = 0.80
"""Below this brain-mask Dice (case brain in MNI space vs the template's, inside the case's field of view) the
registration is reported as poor."""


_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS


@dataclass(frozen=True, eq=False)
class MniRegistration:
    """A case's world (RAS mm) to MNI152 (RAS mm) map.

    Attributes:
        world_to_mni: 4x4 affine, case world mm -> MNI mm.
        brain_dice: Dice of the case's brain mask in MNI space against the template's brain mask, inside the case's
            field of view; None when not measured (the moments fallback).
        method: how it was found, in words.
        seconds: time taken.
        warning: why it may be unreliable, or None.
    """

    world_to_mni: np.ndarray
    brain_dice: float | None
    method: str
    seconds: float
    warning: str | None = None

    def to_mni(self, world_mm: np.ndarray) -> np.ndarray:
        """(N, 3) world mm -> (N, 3) MNI mm."""
        pts = np.atleast_2d(np.asarray(world_mm, np.float64))
        return pts @ self.world_to_mni[:3, :3].T + self.world_to_mni[:3, 3]

    def to_world(self, mni_mm: np.ndarray) -> np.ndarray:
        """(N, 3) MNI mm -> (N, 3) world mm."""
        inv = np.linalg.inv(self.world_to_mni)
        pts = np.atleast_2d(np.asarray(mni_mm, np.float64))
        return pts @ inv[:3, :3].T + inv[:3, 3]

    def summary(self) -> dict:
        return {
            "method": self.method,
            "brain_dice": None if self.brain_dice is None else round(self.brain_dice, 3),
            "seconds": round(self.seconds, 2),
            "warning": self.warning,
        }


def moments_registration(brain: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World -> MNI 4x4 from the brain mask's centroid and per-axis spread (:class:`MniMap`). When the brain is cut by
    the grid's top or bottom slice (a slab), its head-foot spread says nothing: that axis takes the mean scale of the
    other two."""
    m = MniMap.from_brain(brain, affine)
    scale = MniMap(np.zeros(3), np.ones(3))(np.eye(3)) - MniMap(np.zeros(3), np.ones(3))(np.zeros(3))
    diag = np.diag(scale) / m.spread
    if is_slab(brain, affine):
        diag[2] = (diag[0] + diag[1]) / 2
    out = np.eye(4)
    out[:3, :3] = np.diag(diag)
    out[:3, 3] = m(m.centre) - diag * m.centre  # the brain's centroid goes to the template's
    return out


def is_slab(brain: np.ndarray, affine: np.ndarray) -> bool:
    """Whether the brain mask reaches the first or last slice of the voxel axis closest to the head-foot one."""
    axis = int(np.argmax(np.abs(np.asarray(affine)[2, :3])))
    first = np.take(brain, 0, axis=axis).any()
    last = np.take(brain, brain.shape[axis] - 1, axis=axis).any()
    return bool(first or last)


TEMPLATE_SPACING_MM = 3
SAMPLING = 0.1
"""Grid of the fixed image: the 1 mm template block-averaged to this size."""


def _nilearn_map(name: str) -> Path:
    """An MNI152 2009a map in the nilearn wheel ("t1", "gm", "wm"), found without importing nilearn (slow)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the MNI152 template ships with nilearn, which is not installed")
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    path = folder / f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz"
    if not path.is_file():
        raise RuntimeError(f"MNI152 template map not found at {path}")
    return path


def _block_mean(data: np.ndarray, n: int) -> np.ndarray:
    shape = [s // n * n for s in data.shape]
    d = data[: shape[0], : shape[1], : shape[2]]
    return d.reshape(shape[0] // n, n, shape[1] // n, n, shape[2] // n, n).mean(axis=(1, 3, 5))


@functools.lru_cache(maxsize=1)
def template_brain() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T1 inside the brain, brain mask, affine) of the MNI152 2009a template on a :data:`TEMPLATE_SPACING_MM` grid;
    the brain is grey + white matter > 0.2 with holes filled (the intracranial space), as float32 / bool / 4x4 RAS."""
    t1_img = nib.load(str(_nilearn_map("t1")))
    n = TEMPLATE_SPACING_MM
    t1 = _block_mean(np.asarray(t1_img.dataobj, dtype=np.float32), n)
    par = sum(
        _block_mean(np.asarray(nib.load(str(_nilearn_map(m))).dataobj, dtype=np.float32), n) for m in ("gm", "wm")
    )
    brain_n = ndi.binary_fill_holes(ndi.binary_closing(par > 0.4 * 255, iterations=1))
    t1_n = t1
    affine = t1_img.affine.copy()
    affine[:3, 3] += affine[:3, :3] @ np.full(3, (n - 1) / 2)
    affine[:3, :3] *= n
    return np.where(brain_n, t1_n, 0).astype(np.float32), brain_n, affine


def _template():
    """(masked T1, brain mask) of :func:`template_brain` as SimpleITK images."""
    import SimpleITK as sitk

    t1, brain, affine = template_brain()
    return _to_sitk(t1, affine, sitk.sitkFloat32), _to_sitk(brain.astype(np.uint8), affine, sitk.sitkUInt8)


def _to_sitk(data: np.ndarray, affine: np.ndarray, pixel):
    """A SimpleITK image of an (X, Y, Z) array on a RAS voxel-to-world affine (shear dropped: nearest rotation)."""
    import SimpleITK as sitk

    lps = _FLIP @ np.asarray(affine, np.float64)
    spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    u, _, vt = np.linalg.svd(lps[:3, :3] / spacing)
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(data, (2, 1, 0))))
    img = sitk.Cast(img, pixel)
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection([float(v) for v in (u @ vt).ravel()])
    img.SetOrigin([float(v) for v in lps[:3, 3]])
    return img


def _affine_of(transform) -> np.ndarray:
    """4x4 (fixed LPS -> moving LPS) of a SimpleITK affine transform."""
    a = np.array(transform.GetMatrix(), np.float64).reshape(3, 3)
    c = np.array(transform.GetCenter(), np.float64)
    t = np.array(transform.GetTranslation(), np.float64)
    out = np.eye(4)
    out[:3, :3] = a
    out[:3, 3] = t + c - a @ c
    return out


def _brain_dice(brain_img, mni_to_world_lps: np.ndarray) -> float:
    """Dice of the case brain carried to the template grid vs the template brain, inside the case's field of view."""
    import SimpleITK as sitk

    fixed, fixed_brain = _template()
    tx = sitk.AffineTransform(3)
    tx.SetMatrix([float(v) for v in mni_to_world_lps[:3, :3].ravel()])
    tx.SetTranslation([float(v) for v in mni_to_world_lps[:3, 3]])
    moved = sitk.GetArrayFromImage(sitk.Resample(brain_img, fixed, tx, sitk.sitkNearestNeighbor, 0)) > 0
    ones = sitk.Image(brain_img.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(brain_img)
    fov = sitk.GetArrayFromImage(sitk.Resample(ones, fixed, tx, sitk.sitkNearestNeighbor, 0)) > 0
    ref = (sitk.GetArrayFromImage(fixed_brain) > 0) & fov
    total = int(moved.sum()) + int(ref.sum())
    return 0.0 if total == 0 else 2.0 * int((moved & ref).sum()) / total


def _coarse(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Block means of about :data:`TEMPLATE_SPACING_MM` (integer factors per axis; thick slices kept) and their
    affine: the registration needs no finer grid than the template's."""
    factors = [max(1, int(round(TEMPLATE_SPACING_MM / v))) for v in voxel_sizes(affine)]
    if factors == [1, 1, 1]:
        return data, affine
    shape = [s // f * f for s, f in zip(data.shape, factors)]
    d = data[: shape[0], : shape[1], : shape[2]]
    d = d.reshape(shape[0] // factors[0], factors[0], shape[1] // factors[1], factors[1], -1, factors[2])
    out = affine.copy()
    out[:3, 3] += affine[:3, :3] @ ((np.asarray(factors) - 1) / 2)
    out[:3, :3] = affine[:3, :3] * np.asarray(factors, float)
    return d.mean(axis=(1, 3, 5)).astype(np.float32), out


def _method(iterations: int, seed: int):
    """The SimpleITK registration: Mattes MI on a random sample, gradient descent, 6 then 3 mm."""
    import SimpleITK as sitk

    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(SAMPLING, seed)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsGradientDescent(
        learningRate=1.0, numberOfIterations=iterations, convergenceMinimumValue=1e-6, convergenceWindowSize=10
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([4.0, 2.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return reg


SLAB_SEARCH_MM = 110.0
"""A brain cut by the grid and less tall than this (head-foot, mm; an adult brain is 130-150 mm) is a slab whose place
along the head is searched (:data:`SLAB_SHIFTS_MM`); a taller one starts from its moments."""


def _height_mm(brain: np.ndarray, affine: np.ndarray) -> float:
    """Head-foot extent of the brain mask in world mm (voxel centres)."""
    axis = int(np.argmax(np.abs(np.asarray(affine)[2, :3])))
    present = np.nonzero(brain.any(axis=tuple(a for a in range(3) if a != axis)))[0]
    step = float(np.linalg.norm(np.asarray(affine)[:3, axis]))
    return float(present.max() - present.min()) * step if present.size else 0.0


SLAB_SHIFTS_MM = tuple(float(v) for v in np.arange(-36, 37, 12))
"""Head-foot shifts (MNI mm) tried as starts for a slab that does not cover the whole brain."""


def _best_start(reg, tx, fixed, moving):
    """The start among ``tx`` shifted head-foot by :data:`SLAB_SHIFTS_MM` with the best metric (lowest)."""
    import SimpleITK as sitk

    fixed = sitk.Shrink(fixed, [2, 2, 2])  # the first level's 6 mm grid: the starts differ by 12 mm
    best, best_value = tx, np.inf
    for shift in SLAB_SHIFTS_MM:
        candidate = sitk.AffineTransform(tx)
        t = np.array(candidate.GetTranslation()) + np.array(candidate.GetMatrix()).reshape(3, 3) @ [0, 0, shift]
        candidate.SetTranslation([float(v) for v in t])
        reg.SetInitialTransform(candidate)
        value = reg.MetricEvaluate(fixed, moving)
        if value < best_value:
            best, best_value = candidate, value
    return best


def register_to_mni(
    dwi: np.ndarray, brain: np.ndarray, affine: np.ndarray, *, iterations: int = 60, seed: int = 1
) -> MniRegistration:
    """Affine registration of a brain-masked DWI to the MNI152 template.

    Args:
        dwi: DWI (b=1000), shape (X, Y, Z), any units, any voxel order.
        brain: bool brain mask on the same grid (at least 1000 voxels).
        affine: 4x4 voxel-to-world (RAS mm) affine of that grid.
        iterations: gradient-descent iterations per level.
        seed: the metric's sampling seed, >= 1: the map is the same for a seed, run after run (on another number of
            threads up to rounding, under 1e-6 mm); SimpleITK reads 0 as "seed from the clock", a new map every run.

    Returns:
        The :class:`MniRegistration`; when SimpleITK fails, the moments map with a warning.
    """
    if seed < 1:
        raise ValueError(f"registration seed must be >= 1 (0 would seed from the clock), got {seed}")
    t0 = time.perf_counter()
    initial = moments_registration(brain, affine)
    try:
        import SimpleITK as sitk

        fixed, _ = _template()
        moving = _to_sitk(*_coarse(np.where(brain, dwi, 0).astype(np.float32), affine), sitk.sitkFloat32)
        start = _FLIP @ np.linalg.inv(initial) @ _FLIP  # MNI LPS -> world LPS
        tx = sitk.AffineTransform(3)
        tx.SetMatrix([float(v) for v in start[:3, :3].ravel()])
        tx.SetTranslation([float(v) for v in start[:3, 3]])
        reg = _method(iterations, seed)
        if is_slab(brain, affine) and _height_mm(brain, affine) < SLAB_SEARCH_MM:  # where along the head? try starts
            tx = _best_start(reg, tx, fixed, moving)
        reg.SetInitialTransform(tx, inPlace=True)
        reg.Execute(fixed, moving)
        mni_to_world_lps = _affine_of(tx)
        world_to_mni = _FLIP @ np.linalg.inv(mni_to_world_lps) @ _FLIP
        dice = _brain_dice(_to_sitk(brain.astype(np.uint8), affine, sitk.sitkUInt8), mni_to_world_lps)
        method = f"affine (SimpleITK, Mattes mutual information, {TEMPLATE_SPACING_MM} mm) to the MNI152 2009a template"
    except (ImportError, RuntimeError) as err:  # SimpleITK missing or its optimiser failed
        log.warning("registration to MNI152 failed (%s); brain-mask moments used", err)
        elapsed = time.perf_counter() - t0
        return MniRegistration(initial, None, "brain-mask moments", elapsed, f"registration failed ({err})")
    warning = None
    if dice < MIN_BRAIN_DICE:
        warning = (
            f"registration to MNI152 is poor (brain-mask Dice {dice:.2f} < {MIN_BRAIN_DICE:.2f}): "
            "territories and lobes may be wrong"
        )
    return MniRegistration(world_to_mni, dice, method, time.perf_counter() - t0, warning)
