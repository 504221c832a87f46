"""Probability map -> binary lesion mask: threshold, then remove components that are too small or
that do not restrict diffusion (median ADC too high)."""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage as ndi

__all__ = ["binarize", "remove_small_components", "remove_unrestricted_components", "CONNECTIVITY_26"]

log = logging.getLogger(__name__)

CONNECTIVITY_26 = ndi.generate_binary_structure(3, 3)
"""26-connectivity, as the ISLES'22 evaluation counts lesions."""


def remove_small_components(mask: np.ndarray, min_voxels: int) -> np.ndarray:
    """Drop connected components (26-connectivity) with fewer than ``min_voxels`` voxels.

    Args:
        mask: bool array, shape (X, Y, Z).
        min_voxels: smallest kept component, in voxels; <= 1 keeps everything.
    """
    if min_voxels <= 1 or not mask.any():
        return mask
    labels, n = ndi.label(mask, structure=CONNECTIVITY_26)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_voxels
    keep[0] = False
    return keep[labels]


def binarize(probability: np.ndarray, threshold: float, min_lesion_ml: float, voxel_ml: float) -> np.ndarray:
    """Threshold a probability map and remove lesions smaller than ``min_lesion_ml``.

    Args:
        probability: float array in [0, 1], shape (X, Y, Z).
        threshold: voxels with probability > threshold are lesion.
        min_lesion_ml: smallest kept lesion, mL.
        voxel_ml: volume of one voxel, mL.

    Returns:
        bool array, shape (X, Y, Z).
    """
    mask = probability > threshold
    return remove_small_components(mask, int(np.ceil(min_lesion_ml / voxel_ml - 1e-9)))


def remove_unrestricted_components(mask: np.ndarray, adc: np.ndarray, max_median_adc: float | None) -> np.ndarray:
    """Drop connected components (26-connectivity) whose median ADC is above ``max_median_adc``.

    Args:
        mask: bool array, shape (X, Y, Z).
        adc: ADC on the same grid, shape (X, Y, Z), in 1e-6 mm²/s.
        max_median_adc: largest kept component median, 1e-6 mm²/s; None keeps everything.
    """
    if max_median_adc is None or not mask.any():
        return mask
    box = ndi.find_objects(mask.astype(np.uint8))[0]  # work inside the mask's bounding box only
    labels, n = ndi.label(mask[box], structure=CONNECTIVITY_26)
    inside = labels > 0
    medians = np.asarray(ndi.median(adc[box][inside], labels[inside], index=np.arange(1, n + 1)), dtype=np.float64).reshape(-1)
    if (medians <= max_median_adc).all():
        return mask
    log.info("dropped %d of %d components with median ADC > %g (not restricted)", int((medians > max_median_adc).sum()), n, max_median_adc)
    keep = np.concatenate([[False], medians <= max_median_adc])
    out = np.zeros_like(mask)
    out[box] = keep[labels]
    return out
