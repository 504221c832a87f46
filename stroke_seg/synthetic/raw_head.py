"""A generated raw head made harder for brain extraction: a neck below the skull base and a bright fat rim.

:func:`with_neck_and_fat` takes a raw (not skull-stripped) case of :func:`stroke_seg.synthetic.generator.make_case`
and adds what a clinical DWI of the whole head carries and the template head lacks: the field of view extended
down into the neck (muscle, spinal cord, airway, subcutaneous fat, noise) and a rim of unsuppressed fat at the scalp
(bright on DWI, very low ADC: a lesion mimic), shifted by the fat's chemical shift along the phase-encoding axis.
The brain (``SynthCase.brain``) and the lesions stay as they were: the brain-extraction truth.
"""

from __future__ import annotations

import dataclasses

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from stroke_seg.synthetic.generator import SynthCase

__all__ = ["with_neck_and_fat"]

_ADC_SCALE = {"1e-6": 1.0, "1e-3": 1e-3, "mm2/s": 1e-6}  # stored unit per 1e-6 mm²/s


def _canonical(img: nib.Nifti1Image, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Data in RAS+ voxel order with ``pad`` empty slices added below (inferior), and its affine."""
    can = nib.as_closest_canonical(img)
    data = np.pad(np.asanyarray(can.dataobj).astype(np.float32), ((0, 0), (0, 0), (pad, 0)))
    affine = can.affine.copy()
    affine[:3, 3] -= pad * affine[:3, 2]
    return data, affine


def _neck(shape, vs, top: int, centre_xy, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Boolean maps of the neck's parts in the slices below ``top`` (RAS+ grid)."""
    x, y = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape[:2]), indexing="ij")
    dx, dy = (x - centre_xy[0]) * vs[0], (y - centre_xy[1]) * vs[1] + 10.0
    radius = rng.uniform(0.9, 1.1) * np.array([58.0, 52.0])
    ellipse = (dx / radius[0]) ** 2 + (dy / radius[1]) ** 2
    section = {
        "neck": ellipse <= 1.0,
        "fat": (ellipse <= 1.0) & (ellipse > 0.8),
        "cord": (dx / 6.0) ** 2 + ((dy + 22.0) / 6.0) ** 2 <= 1.0,
        "airway": (dx / 8.0) ** 2 + ((dy - 18.0) / 6.0) ** 2 <= 1.0,
    }
    out = {k: np.zeros(shape, bool) for k in section}
    for k, v in section.items():
        out[k][:, :, :top] = v[:, :, None]
    return out


def _shell(brain: np.ndarray, vs, inner_mm: float, outer_mm: float) -> np.ndarray:
    """Voxels between ``inner_mm`` and ``outer_mm`` outside the brain."""
    distance = ndi.distance_transform_edt(~brain, sampling=vs)
    return (distance > inner_mm) & (distance <= outer_mm)


def with_neck_and_fat(case: SynthCase, *, neck_mm: float = 60.0, fat_shift_mm: float = 3.0, seed: int = 0) -> SynthCase:
    """``case`` with a neck below it and a bright fat rim at its scalp; stored RAS+, float32.

    Args:
        case: a raw generated case (``acquisition.skull_stripped`` False), with its ``brain``.
        neck_mm: how far the field of view is extended below the template's lowest slice (mm).
        fat_shift_mm: chemical shift of the fat rim along the anterior-posterior (phase) axis (mm).
        seed: random seed of the neck's size and the added noise.

    Returns:
        A :class:`SynthCase` on the extended grid: DWI, ADC (same unit as ``case``), lesion mask and brain; no FLAIR,
        no raw b0.
    """
    if case.acquisition.skull_stripped or case.brain is None:
        raise ValueError("with_neck_and_fat needs a raw generated case with its brain mask, but got a stripped one")
    rng = np.random.default_rng(seed)
    vs = np.asarray(case.dwi.header.get_zooms()[:3], float)
    pad = int(round(neck_mm / float(nib.as_closest_canonical(case.dwi).header.get_zooms()[2])))
    dwi, affine = _canonical(case.dwi, pad)
    adc = _canonical(case.adc, pad)[0] / _ADC_SCALE[case.acquisition.adc_unit]
    brain = _canonical(case.brain, pad)[0] > 0
    lesion = _canonical(case.mask, pad)[0] > 0
    vs = np.asarray(nib.affines.voxel_sizes(affine), float)
    level = float(np.median(dwi[brain]))
    # Skull: a dark gap 0-4 mm outside the brain; scalp 4-9 mm (muscle-like); subcutaneous fat 9-12 mm, chemically
    # shifted along y (DWI 1.6-2x the brain, ADC about 100); the neck below the brain, up into the skull base.
    distance = ndi.distance_transform_edt(~brain, sampling=vs)
    skull = distance <= 4.0
    scalp = (distance > 4.0) & (distance <= 9.0)
    rim = np.roll((distance > 9.0) & (distance <= 12.0), int(round(fat_shift_mm / vs[1])), axis=1)
    lowest = int(np.nonzero(brain.any(axis=(0, 1)))[0][0])
    neck = _neck(dwi.shape, vs, lowest + int(round(25.0 / vs[2])), ndi.center_of_mass(brain)[:2], rng)
    muscle = (scalp | (neck["neck"] & ~neck["fat"] & ~neck["airway"])) & ~skull
    for part, (signal, diffusion) in {
        "muscle": (rng.uniform(0.45, 0.6), 1450.0),
        "cord": (rng.uniform(0.8, 1.0), 1050.0),
        "fat": (rng.uniform(1.6, 2.0), 100.0),
    }.items():
        where = {"muscle": muscle, "cord": neck["cord"] & muscle, "fat": ((neck["fat"] | rim) & ~skull)}[part]
        dwi[where], adc[where] = signal * level, diffusion
    dwi[skull & ~brain], adc[skull & ~brain] = 0.05 * level, 0.0
    dwi[neck["airway"]], adc[neck["airway"]] = 0.0, 0.0
    noise = 0.03 * level
    dwi = np.abs(dwi + rng.normal(0, noise, dwi.shape) + 1j * rng.normal(0, noise, dwi.shape)).astype(np.float32)

    def image(data: np.ndarray, dtype) -> nib.Nifti1Image:
        img = nib.Nifti1Image(data.astype(dtype), affine)
        img.set_qform(affine, 1)
        img.set_sform(affine, 1)
        return img

    return dataclasses.replace(
        case,
        dwi=image(dwi, np.float32),
        adc=image(adc * _ADC_SCALE[case.acquisition.adc_unit], np.float32),
        mask=image(lesion, np.uint8),
        brain=image(brain, np.uint8),
        flair=None,
        raw_b0=None,
    )
