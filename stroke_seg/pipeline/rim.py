"""The DWI rim and edge steps: a lesion's rim of DWI-bright, mildly restricted tissue, and its own DWI edge.

:func:`grow_into_rim` and :func:`grow_into_rim_around` let a core grow into the DWI-bright rim around it whose ADC is
mildly low (below :data:`ADC_RIM_THRESHOLD`, within :data:`RIM_MAX_MM`); :func:`grow_to_dwi_edges` extends each kept
lesion to its own DWI edge. Arrays are (X, Y, Z); ADC in 1e-6 mm²/s; distances in mm, compared with a tolerance of
:data:`~stroke_seg.pipeline.preprocess.DISTANCE_TOL_MM`.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage as ndi

from stroke_seg.pipeline.components import CONNECTIVITY_26, min_voxels_for, remove_small_components
from stroke_seg.pipeline.preprocess import DISTANCE_TOL_MM, Preprocessed

log = logging.getLogger(__name__)


def grow_to_dwi_edges(
    mask: np.ndarray,
    dwi: np.ndarray,
    adc: np.ndarray,
    voxel_size,
    *,
    level: float = 0.5,
    reach_mm: float = 4.0,
    shell_mm: tuple[float, float] = (4.0, 8.0),
    brain: np.ndarray | None = None,
    max_adc: float = 1500.0,
) -> np.ndarray:
    """Extend each lesion out to its own DWI edge at ``level`` between the surrounding tissue and the lesion.

    A lesion's edge voxel is part lesion, part tissue (partial volume), so its DWI lies between the two; a lesion
    mask counts the voxels that are at least half lesion (the synthetic ground truth is exactly that), whose DWI
    is above the half-way level. Per component (26-connectivity): ``peak`` is the median DWI inside it, ``background``
    the median DWI of the tissue in a shell ``shell_mm`` away from it (not lesion, ADC in (50, ``max_adc``), inside
    ``brain``). Voxels within ``reach_mm`` of the component, connected to it, that are tissue and whose DWI is above
    ``background + level * (peak - background)`` are added. Nothing is removed; a component not brighter than
    its surroundings is left as it is.

    Args:
        mask: bool lesion mask, shape (X, Y, Z).
        dwi: DWI on the same grid (any scale: the level is relative).
        adc: ADC on the same grid, 1e-6 mm²/s.
        voxel_size: voxel edge lengths of the grid, mm.
        level: fraction of the way from background to peak DWI that an added voxel must exceed, in (0, 1).
        reach_mm: how far a lesion may grow, mm.
        shell_mm: inner and outer distance (mm) of the background shell.
        brain: optional bool brain mask, same shape; growth and background stay inside it.
        max_adc: voxels with ADC at or above this (1e-6 mm²/s; CSF) are neither background nor added.

    Returns:
        bool array, shape (X, Y, Z), a superset of ``mask``.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), but it is {level}")
    if not mask.any():
        return mask
    vs = np.asarray(voxel_size, float)
    pad = np.ceil(max(shell_mm[1], reach_mm) / vs).astype(int) + 1
    labels, n = ndi.label(mask, structure=CONNECTIVITY_26)
    out = mask.copy()
    added = 0
    for i, box in enumerate(ndi.find_objects(labels), start=1):
        box = tuple(slice(max(s.start - p, 0), min(s.stop + p, dim)) for s, p, dim in zip(box, pad, mask.shape))
        lesion = labels[box] == i
        dist = ndi.distance_transform_edt(~lesion, sampling=vs)
        t = (adc[box] > 50) & (adc[box] < max_adc)  # tissue: no CSF, no background
        if brain is not None:
            t &= brain[box]
        d = dwi[box]
        tol = DISTANCE_TOL_MM
        shell = (dist > shell_mm[0] + tol) & (dist <= shell_mm[1] + tol) & t & ~mask[box]
        if shell.sum() < 5:
            continue
        peak, background = float(np.median(d[lesion])), float(np.median(d[shell]))
        if peak <= background:
            continue
        candidates = (dist > 0) & (dist <= reach_mm + tol) & t & (d > background + level * (peak - background))
        grown, _ = ndi.label(lesion | candidates, structure=CONNECTIVITY_26)
        reached = (grown == grown[lesion][0]) & candidates  # the lesion is one connected piece of the union
        added += int((reached & ~out[box]).sum())
        out[box] |= reached
    log.info("edges: %d lesions grew by %d voxels to their DWI level %.2f", n, added, level)
    return out


DWI_RATIO_THRESHOLD = 1.3
"""DWI over the brain median (slice trend removed) above which tissue is DWI-bright."""


ADC_RIM_THRESHOLD = 850.0
"""1e-6 mm²/s: a DWI-bright rim with only mild restriction, kept next to a core."""


RIM_MAX_MM = 4.0
"""How far the rim may reach from the core (geodesic), mm."""


def sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))).astype(np.float32)


def filtered_adc(volumes: Preprocessed) -> np.ndarray:
    """ADC median-filtered over a voxel and its 6 face neighbours: speckle from noisy ADC fits is not infarct."""
    return ndi.median_filter(volumes.adc, footprint=ndi.generate_binary_structure(3, 1))


def dwi_criterion(volumes: Preprocessed) -> np.ndarray:
    """Soft DWI criterion: DWI / brain median / slice trend above 1.3."""
    return sigmoid((volumes.dwi / slice_trend(volumes)[None, None, :] - DWI_RATIO_THRESHOLD) / 0.08)


def rim_term(adc: np.ndarray, p_dwi: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Soft DWI-bright, mildly restricted tissue: sigmoid((850 - ADC) / 25) x ``p_dwi`` x ``inside``."""
    return sigmoid((ADC_RIM_THRESHOLD - adc) / 25.0) * p_dwi * inside


def rim_probability(volumes: Preprocessed) -> np.ndarray:
    """Soft DWI-bright, mildly restricted tissue: sigmoid((850 - ADC) / 25) x the DWI criterion, inside the brain.

    Returns:
        (X, Y, Z) float32 in [0, 1], canonical grid of ``volumes`` (ADC median-filtered as in the rule).
    """
    return rim_term(filtered_adc(volumes), dwi_criterion(volumes), volumes.brain & (volumes.adc > 50))


def grow_into_rim_around(prob: np.ndarray, volumes: Preprocessed, *, threshold: float = 0.5) -> np.ndarray:
    """``grow_into_rim(prob, rim_probability(volumes), volumes.voxel_size, threshold=threshold)``, computed only in the
    lesions' box grown by the rim's reach: the same result, at a cost that follows the lesions, not the input's voxel
    count (a 0.5 mm scan costs little more here than a 2 mm one).

    Args:
        prob: (X, Y, Z) lesion probability on the canonical grid of ``volumes``.
        volumes: the preprocessed case.
        threshold: probability above which a voxel is lesion (a seed).
    """
    prob = prob.astype(np.float32, copy=False)
    seeds = prob > threshold
    if not seeds.any():
        return prob
    vs = np.asarray(volumes.voxel_size, float)
    grow = np.floor(RIM_MAX_MM / vs + 0.5 + DISTANCE_TOL_MM).astype(int) + 2
    shape = prob.shape
    box = ndi.find_objects(seeds.astype(np.uint8))[0]
    outer = tuple(slice(max(b.start - g, 0), min(b.stop + g, n)) for b, g, n in zip(box, grow, shape))
    wider = tuple(slice(max(o.start - 1, 0), min(o.stop + 1, n)) for o, n in zip(outer, shape))  # median footprint
    adc = ndi.median_filter(volumes.adc[wider], footprint=ndi.generate_binary_structure(3, 1))
    adc = adc[tuple(slice(o.start - w.start, o.stop - w.start) for o, w in zip(outer, wider))]
    trend = slice_trend(volumes)[outer[2]]
    p_dwi = sigmoid((volumes.dwi[outer] / trend[None, None, :] - DWI_RATIO_THRESHOLD) / 0.08)
    p_rim = rim_term(adc, p_dwi, volumes.brain[outer] & (volumes.adc[outer] > 50))
    out = prob.copy()
    out[outer] = grow_into_rim(prob[outer], p_rim, vs, threshold=threshold)
    return out


def grow_into_rim(
    prob: np.ndarray, p_rim: np.ndarray, voxel_size, *, seed_min_ml: float = 0.0, threshold: float = 0.5
) -> np.ndarray:
    """Extend lesions (``prob > threshold``) into the DWI-bright rim around them, at most ``RIM_MAX_MM`` away.

    Args:
        prob: (X, Y, Z) lesion probability, canonical grid.
        p_rim: (X, Y, Z) rim probability on the same grid, from :func:`rim_probability`.
        voxel_size: voxel edge lengths in mm.
        seed_min_ml: only lesions at least this large grow (mL); 0 lets every lesion grow.
        threshold: probability above which a voxel is lesion (a seed).

    Returns:
        ``max(prob, p_rim)`` where the geodesic growth (face neighbours, through ``p_rim > 0.5``) reaches.

    The reach is in mm on every axis: along each axis the growth takes as many face steps as there are voxels whose
    extent starts within ``RIM_MAX_MM`` (spread over the iterations; city-block distance, as face-neighbour growth
    measures it), whatever the voxel size of the other axes: one slice of 5 mm, two voxels of 2 mm, four of 1 mm.
    """
    vs = np.asarray(voxel_size, float)
    # face steps per axis: the voxels whose extent starts within RIM_MAX_MM (centre at most RIM_MAX_MM + half a voxel)
    reach = np.floor(RIM_MAX_MM / vs + 0.5 + DISTANCE_TOL_MM).astype(int)
    steps = max(1, int(reach.max()))
    seeds = prob > threshold
    if seed_min_ml > 0:
        seeds = remove_small_components(seeds, min_voxels_for(seed_min_ml, float(np.prod(vs)) / 1000.0))
    allowed = p_rim > 0.5
    grown = seeds
    moves = np.zeros(3, int)
    for t in range(1, steps + 1):
        due = (t * reach) // steps  # each axis's moves spread evenly over the iterations
        struct = np.zeros((3, 3, 3), bool)
        struct[1, 1, 1] = True
        for axis in np.flatnonzero(due > moves):
            index = [1, 1, 1]
            for offset in (0, 2):
                index[axis] = offset
                struct[tuple(index)] = True
        moves = due
        grown = ndi.binary_dilation(grown, structure=struct, mask=allowed)
    return np.maximum(prob, p_rim * grown).astype(np.float32)


def slice_trend(volumes: Preprocessed, smooth_mm: float = 20.0) -> np.ndarray:
    """Median parenchyma DWI per axial slice over the whole-brain parenchyma median.

    Returns:
        (Z,) float32 array along canonical axis 2 (inferior to superior), at least 1.0; 1.0 where a slice has too
        little parenchyma to say (< 200 voxels). Parenchyma = brain with 50 < ADC < 1500 (no CSF).
    """
    par = volumes.brain & (volumes.adc > 50) & (volumes.adc < 1500)
    if par.sum() < 1000:
        return np.ones(volumes.dwi.shape[2], np.float32)
    overall = float(np.median(volumes.dwi[par]))
    valid = par.sum(axis=(0, 1)) >= 200
    per_slice = np.zeros(volumes.dwi.shape[2], np.float64)
    for z in np.flatnonzero(valid):
        per_slice[z] = np.median(volumes.dwi[:, :, z][par[:, :, z]]) / overall
    # Smooth over slices, averaging only slices that have a value (normalised convolution).
    sigma = smooth_mm / (2.355 * volumes.voxel_size[2])
    weight = ndi.gaussian_filter1d(valid.astype(np.float64), sigma, mode="nearest")
    trend = ndi.gaussian_filter1d(per_slice, sigma, mode="nearest") / np.maximum(weight, 1e-6)
    trend = np.where(weight > 1e-3, trend, 1.0)
    return np.clip(trend, 1.0, 2.0).astype(np.float32)  # only ever removes brightening
