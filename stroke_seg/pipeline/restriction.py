"""Restricted diffusion relative to the patient: a lesion must be bright on DWI and low on ADC relative to this
brain's own normal tissue, not to a fixed scanner scale.

Two rules, each on whole lesions (26-connected components) and stated in every report's notes:

* **Relative ADC** (rADC): the lesion's median ADC over the ADC of this brain's normal-appearing tissue
  (:func:`stroke_seg.pipeline.preprocess.normal_appearing_adc`) must be at most ``SegmentConfig.max_lesion_radc``.
  T2 shine-through (bright on DWI, ADC at or above normal) fails it. It is applied with the absolute ADC rule
  through :attr:`stroke_seg.pipeline.postprocess.LesionRules.adc_limit`.
* **Mirror asymmetry** (:func:`remove_symmetric_unrestricted`): a lesion whose median DWI is below
  :data:`MIRROR_DWI_MIN` x the DWI of the tissue at its mirror image (across the mid-sagittal plane through the
  brain's centroid, widened by :data:`MIRROR_MARGIN_MM`; its 75th percentile, so that a homologous bright structure
  that fills a quarter of the widened image counts) is brightness both hemispheres share, such as a bright cortical
  ribbon, not an infarct; unless it holds a restricted core (rADC at most :data:`CORE_RADC`), as a bilateral infarct
  would.

Arrays are (X, Y, Z) on one grid with its voxel-to-world ``affine`` (mm); ADC in 1e-6 mm²/s.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage as ndi

from stroke_seg.pipeline.components import CONNECTIVITY_26
from stroke_seg.pipeline.preprocess import NORMAL_ADC_RANGE, _ellipsoid

__all__ = [
    "MIRROR_DWI_MIN",
    "CORE_RADC",
    "MIRROR_MARGIN_MM",
    "mirror_dwi_ratios",
    "mirror_statement",
    "remove_symmetric_unrestricted",
]

log = logging.getLogger(__name__)

MIRROR_DWI_MIN = 1.15
"""A lesion's median DWI over the DWI of the tissue at its mirror image must reach this (unless it holds a restricted
core)."""
CORE_RADC = 0.75
"""A lesion whose median ADC is at most this fraction of the normal-appearing ADC is restricted enough to keep, even
when the other hemisphere is as bright (a bilateral infarct)."""
MIRROR_MARGIN_MM = 4.0
"""The mirror image of a lesion is widened by this (mm): the mid-sagittal plane is only approximate."""
_MIN_MIRROR_VOXELS = 5


def _tissue(adc: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Brain parenchyma: brain voxels whose ADC is in :data:`NORMAL_ADC_RANGE` (no CSF, no void), bright or not."""
    lo, hi = NORMAL_ADC_RANGE
    return brain & (adc > lo) & (adc < hi)


def mirror_dwi_ratios(
    labels: np.ndarray,
    n: int,
    dwi: np.ndarray,
    tissue: np.ndarray,
    affine: np.ndarray,
    centre_x_mm: float,
) -> np.ndarray:
    """Each lesion's median DWI over the 75th percentile of the DWI of the tissue at its mirror image.

    Args:
        labels: (X, Y, Z) int labels 1..n of the lesions.
        n: number of lesions.
        dwi: DWI on the same grid (any scale).
        tissue: bool, brain parenchyma on the same grid (the lesion itself is left out of its own mirror image).
        affine: 4x4 voxel-to-world affine (mm).
        centre_x_mm: world x (mm) of the mid-sagittal plane.

    Returns:
        (n,) float64 ratios; NaN where the mirror image holds fewer than 5 tissue voxels.
    """
    vs = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    radius = np.maximum(1, np.round(MIRROR_MARGIN_MM / vs)).astype(int)
    ball = _ellipsoid(radius)
    inv = np.linalg.inv(affine)
    out = np.full(n, np.nan)
    for i, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        ijk = np.argwhere(labels[box] == i) + [s.start for s in box]
        world = ijk @ affine[:3, :3].T + affine[:3, 3]
        world[:, 0] = 2.0 * centre_x_mm - world[:, 0]
        mir = np.rint(world @ inv[:3, :3].T + inv[:3, 3]).astype(int)
        lo = np.maximum(mir.min(0) - radius, 0)
        hi = np.minimum(mir.max(0) + radius + 1, labels.shape)
        if np.any(hi <= lo):
            continue
        region = np.zeros(tuple(hi - lo), bool)
        inside = np.all((mir >= lo) & (mir < hi), axis=1)
        region[tuple((mir[inside] - lo).T)] = True
        region = ndi.binary_dilation(region, structure=ball)
        sub = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        values = dwi[sub][region & tissue[sub] & (labels[sub] != i)]
        if values.size >= _MIN_MIRROR_VOXELS:
            own = float(np.median(dwi[box][labels[box] == i]))
            out[i - 1] = own / max(float(np.percentile(values, 75)), 1e-6)
    return out


def remove_symmetric_unrestricted(
    mask: np.ndarray,
    dwi: np.ndarray,
    adc: np.ndarray,
    brain: np.ndarray,
    affine: np.ndarray,
    *,
    normal_adc: float | None,
    min_ratio: float | None = MIRROR_DWI_MIN,
) -> np.ndarray:
    """Remove the lesions that are no brighter than their mirror image (median DWI below ``min_ratio`` x the DWI of the
    tissue there, :func:`mirror_dwi_ratios`) and hold no restricted core (median ADC above :data:`CORE_RADC` x
    ``normal_adc``).

    Args:
        mask: bool lesion mask, (X, Y, Z).
        dwi: DWI, same grid (any scale: the rule is a ratio).
        adc: ADC, same grid, 1e-6 mm²/s (0 outside the diffusion support).
        brain: bool brain mask, same grid.
        affine: 4x4 voxel-to-world affine of the grid (mm).
        normal_adc: this brain's normal-appearing ADC; None: the rule is not applied (nothing to compare with).
        min_ratio: :data:`MIRROR_DWI_MIN` by default (``SegmentConfig.mirror_dwi_min``); None: the rule is off.

    Returns:
        bool mask, a subset of ``mask`` (whole lesions removed).
    """
    if min_ratio is None or normal_adc is None or not mask.any() or brain.sum() < 1000:
        return mask
    labels, n = ndi.label(mask, structure=CONNECTIVITY_26)
    centre = np.asarray(ndi.center_of_mass(brain), float)
    centre_x = float(affine[0, :3] @ centre + affine[0, 3])
    ratios = mirror_dwi_ratios(labels, n, dwi, _tissue(adc, brain), affine, centre_x)
    inside = labels > 0  # the lesions' voxels only: a median over the whole volume sorts every voxel
    medians = np.asarray(ndi.median(adc[inside], labels[inside], index=np.arange(1, n + 1)), np.float64).reshape(-1)
    drop = (ratios < min_ratio) & (medians > CORE_RADC * normal_adc)  # NaN ratios compare False: kept
    if not drop.any():
        return mask
    log.info(
        "mirror rule: removed %d of %d lesions no brighter than their mirror image (DWI ratio < %g) without a core",
        int(drop.sum()),
        n,
        min_ratio,
    )
    return mask & ~np.isin(labels, np.flatnonzero(drop) + 1)


def mirror_statement(config) -> str:
    """The mirror rule of a :class:`~stroke_seg.types.SegmentConfig` in words ('' when it is off), for the notes."""
    if getattr(config, "mirror_dwi_min", None) is None:
        return ""
    return (
        f"; brighter on DWI than its mirror image in the other hemisphere (at least {config.mirror_dwi_min:g}x) unless "
        f"it has a restricted core (relative ADC at most {CORE_RADC:g})"
    )
