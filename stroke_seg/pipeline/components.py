"""Connected components of a lesion mask: the connectivity the lesion count uses, and sizes in mL."""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage as ndi

from stroke_seg.pipeline.anatomy import MniMap, component_centres_world, in_susceptibility_zone

log = logging.getLogger(__name__)

CONNECTIVITY_26 = ndi.generate_binary_structure(3, 3)
"""26-connectivity, as the ISLES'22 evaluation counts lesions."""


def min_voxels_for(min_ml: float, voxel_ml: float) -> int:
    """Fewest voxels of ``voxel_ml`` mL that hold at least ``min_ml`` mL (1e-6 relative tolerance), at least 1."""
    if min_ml <= 0 or voxel_ml <= 0:
        return 1
    return max(1, int(np.ceil(min_ml / voxel_ml * (1.0 - 1e-6))))


def remove_small_components(mask: np.ndarray, min_voxels: int) -> np.ndarray:
    """Drop connected components (26-connectivity) with fewer than ``min_voxels`` voxels (mask: bool, (X, Y, Z))."""
    return filter_components(mask, min_voxels=min_voxels)


def _components(mask: np.ndarray) -> tuple[np.ndarray, int, tuple[slice, ...]]:
    box = ndi.find_objects(mask.astype(np.uint8))[0]
    labels, n = ndi.label(mask[box], structure=CONNECTIVITY_26)
    return labels, n, box


def filter_components(
    mask: np.ndarray,
    *,
    min_voxels: int = 1,
    adc: np.ndarray | None = None,
    max_median_adc: float | None = None,
    max_p25_adc: float | None = None,
    zone_max_adc: float | None = None,
    affine: np.ndarray | None = None,
    mni: MniMap | None = None,
) -> np.ndarray:
    """Keep the connected components (26-connectivity) that pass every given rule.

    The mask is labelled once, inside its bounding box.

    Args:
        mask: bool array, shape (X, Y, Z).
        min_voxels: smallest kept component, in voxels; <= 1 keeps every size.
        adc: ADC on the same grid, shape (X, Y, Z), in 1e-6 mm²/s; needed by both ADC rules.
        max_median_adc: largest kept component median ADC, 1e-6 mm²/s; None skips this rule.
        max_p25_adc: largest kept component 25th-percentile ADC, 1e-6 mm²/s (the relative-ADC rule: a quarter of the
            lesion must be restricted; the median would count the DWI-bright rim the models include); None skips it.
        zone_max_adc: a component whose centre lies in a skull-base susceptibility zone
            (:func:`stroke_seg.pipeline.anatomy.in_susceptibility_zone`) is kept only when at least a quarter of its
            voxels have ADC below this (its 25th percentile; the median would count the DWI-bright rim the models
            include),
            1e-6 mm²/s; None skips this rule (as does a missing ``adc``, ``affine`` or ``mni``).
        affine: 4x4 voxel-to-world affine of ``mask`` (mm), for the zone rule.
        mni: world-to-MNI map of the case (:class:`stroke_seg.pipeline.anatomy.MniMap`), for the zone rule.
    """
    by_adc = max_median_adc is not None and adc is not None
    by_p25 = max_p25_adc is not None and adc is not None
    by_zone = zone_max_adc is not None and adc is not None and affine is not None and mni is not None
    if (min_voxels <= 1 and not by_adc and not by_p25 and not by_zone) or not mask.any():
        return mask
    box = ndi.find_objects(mask.astype(np.uint8))[0]
    labels, n = ndi.label(mask[box], structure=CONNECTIVITY_26)
    keep = np.bincount(labels.ravel(), minlength=n + 1) >= min_voxels
    inside = labels > 0 if (by_adc or by_p25 or by_zone) else None
    if by_adc:
        medians = np.asarray(
            ndi.median(adc[box][inside], labels[inside], index=np.arange(1, n + 1)), dtype=np.float64
        ).reshape(-1)
        unrestricted = keep[1:] & (medians > max_median_adc)
        if unrestricted.any():
            log.info(
                "dropped %d of %d components with median ADC > %g (not restricted)",
                int(unrestricted.sum()),
                n,
                max_median_adc,
            )
        keep[1:] &= ~unrestricted
    if by_p25:
        p25 = np.asarray(
            ndi.labeled_comprehension(
                adc[box][inside], labels[inside], np.arange(1, n + 1), lambda a: np.percentile(a, 25), np.float64, 0.0
            )
        ).reshape(-1)
        unrestricted = keep[1:] & (p25 > max_p25_adc)
        if unrestricted.any():
            log.info("dropped %d of %d components with ADC p25 > %g", int(unrestricted.sum()), n, max_p25_adc)
        keep[1:] &= ~unrestricted
    if by_zone:
        centres = mni(component_centres_world(labels, n, affine, offset=[s.start for s in box]))
        in_zone = keep[1:] & in_susceptibility_zone(centres)
        artefact = np.zeros(n, bool)
        if in_zone.any():
            index = np.flatnonzero(in_zone) + 1
            p25 = ndi.labeled_comprehension(
                adc[box][inside], labels[inside], index, lambda a: np.percentile(a, 25), np.float64, np.inf
            )
            artefact[index - 1] = np.asarray(p25).reshape(-1) >= zone_max_adc
        if artefact.any():
            log.info(
                "dropped %d of %d components in skull-base susceptibility zones without a core (ADC p25 >= %g)",
                int(artefact.sum()),
                n,
                zone_max_adc,
            )
        keep[1:] &= ~artefact
    keep[0] = False
    if keep[1:].all():
        return mask
    out = np.zeros_like(mask)
    out[box] = keep[labels]
    return out


def remove_unrestricted_components(mask: np.ndarray, adc: np.ndarray, max_median_adc: float | None) -> np.ndarray:
    """Drop connected components whose median ADC (1e-6 mm²/s, same grid) is above ``max_median_adc``; None keeps
    all."""
    return filter_components(mask, adc=adc, max_median_adc=max_median_adc)
