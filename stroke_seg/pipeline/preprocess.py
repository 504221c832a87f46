"""Pure preprocessing functions: canonical orientation, brain mask, normalisation, resampling.

Canonical orientation is the closest RAS+ voxel order: axes are permuted and flipped only (no
interpolation), so going back to the user's grid is exact. Oblique acquisitions stay oblique; the
affine carries the geometry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from nibabel import orientations as nio
from scipy import ndimage as ndi

from stroke_seg.pipeline.brain_extraction import BRAIN_ML_MAX, bounding_box, skull_stripped_support
from stroke_seg.types import Case, voxel_sizes

__all__ = [
    "BRAIN_ML_MAX",
    "NORMAL_ADC_RANGE",
    "NORMAL_DWI_MAX",
    "normal_appearing_adc",
    "Preprocessed",
    "preprocess",
    "to_canonical",
    "from_canonical",
    "brain_mask",
    "diffusion_support",
    "zoom_to_spacing",
    "zoom_to_shape",
    "resample_to_shape",
    "working_shape",
    "voxel_sizes",
]

log = logging.getLogger(__name__)

_RAS = nio.axcodes2ornt(("R", "A", "S"))

RAW_HEAD_ML = 100.0
"""A case with more than this much non-zero DWI outside its brain mask (:attr:`Preprocessed.outside_ml`, mL) is a raw
head (skull, scalp, background kept), not a skull-stripped input."""

DISTANCE_TOL_MM = 1e-3
"""Tolerance of distance and depth comparisons (mm), as in :mod:`stroke_seg.pipeline.postprocess`."""


@dataclass(frozen=True, eq=False)
class Preprocessed:
    """A case in canonical (closest RAS+) voxel order, ready for a model backend.

    Attributes:
        dwi: DWI, shape (X, Y, Z) canonical, float32, divided by its brain median (brain ~1).
        adc: ADC, same shape, float32, 1e-6 mm²/s.
        flair: FLAIR divided by its brain median, or None.
        brain: brain mask, same shape, bool.
        affine: 4x4 canonical voxel-to-world affine (mm).
        voxel_size: voxel edge lengths (mm) in canonical axis order.
        ornt: nibabel orientation of the stored DWI (to go back with :func:`from_canonical`).
        dwi_median: the brain median of the raw DWI (the normalisation factor).
        outside_ml: non-zero DWI more than 3 mm outside the brain mask, mL: 0 for a skull-stripped input (zeros
            outside the brain), the head and background a raw scan holds besides the brain.
        normal_adc: ADC of this brain's normal-appearing tissue (:func:`normal_appearing_adc`), 1e-6 mm²/s;
            None when too little of it is found. The reference of the relative-ADC rule.
        network_brain: the brain as a trained extractor drew it, before its safety margin (same shape, bool), or
            None (then :attr:`brain`): what a network's field of view is cropped to, as in training.
    """

    dwi: np.ndarray
    adc: np.ndarray
    flair: np.ndarray | None
    brain: np.ndarray
    affine: np.ndarray
    voxel_size: tuple[float, float, float]
    ornt: np.ndarray
    dwi_median: float
    outside_ml: float = 0.0
    normal_adc: float | None = None
    network_brain: np.ndarray | None = None


NORMAL_ADC_RANGE = (200.0, 1500.0)
"""ADC (1e-6 mm²/s) of brain parenchyma counted as normal-appearing tissue: no CSF (~3000), no signal voids or
background (< 200); a DWI-bright voxel is left out too (:data:`NORMAL_DWI_MAX`)."""
NORMAL_DWI_MAX = 1.3
"""DWI over the brain median at or above which a voxel is not normal-appearing (it may be lesion)."""


NORMALISATION_DEPTH_MM = 4.0
"""The DWI is divided by its median over the brain deeper than this (mm): the brain's outer edge, where a resampled or
interpolated scan mixes brain and background, does not move the scale."""


def _interior(brain: np.ndarray, voxel_size) -> tuple[tuple[slice, ...], np.ndarray]:
    """The brain deeper than :data:`NORMALISATION_DEPTH_MM`, on the ~2 mm grid the brain mask is made on: (the slices
    that pick that grid, the bool interior on it); the whole brain there when the interior holds fewer than 1000
    voxels."""
    step = np.maximum(1, np.floor(2.0 / np.asarray(voxel_size) + 1e-6)).astype(int)
    coarse = tuple(slice(None, None, int(k)) for k in step)
    b = brain[coarse]
    core = np.zeros(b.shape, bool)
    box = bounding_box(b)
    if box is not None:  # the distance to the nearest non-brain voxel, within the brain's box (the same distances)
        inner = np.pad(np.asarray(b[box], bool), 1)
        depth = ndi.distance_transform_edt(inner, sampling=np.asarray(voxel_size) * step)[1:-1, 1:-1, 1:-1]
        core[box] = b[box] & (depth > NORMALISATION_DEPTH_MM)
    return coarse, (core if core.sum() >= 1000 else b)


def normal_appearing_adc(dwi: np.ndarray, adc: np.ndarray, brain: np.ndarray) -> float | None:
    """The ADC of the brain's normal-appearing tissue: the peak of the ADC histogram of the brain voxels whose ADC lies
    in :data:`NORMAL_ADC_RANGE` and whose DWI is below :data:`NORMAL_DWI_MAX` x the brain median (lesions, bright
    artefacts and CSF left out).

    Args:
        dwi: DWI divided by its brain median, (X, Y, Z); adc: ADC in 1e-6 mm²/s, same shape; brain: bool, same shape.

    Returns:
        The peak (1e-6 mm²/s), or None when fewer than 1000 voxels qualify.
    """
    lo, hi = NORMAL_ADC_RANGE
    normal = brain & (adc > lo) & (adc < hi) & (dwi < NORMAL_DWI_MAX)
    if int(normal.sum()) < 1000:
        return None
    # The peak of the histogram (10-unit bins smoothed over 30), not the median: partial volume with CSF spreads a
    # tail toward high ADC whose weight follows the voxel size; the peak of the tissue stays.
    hist, edges = np.histogram(adc[normal], bins=np.arange(lo, hi + 10.0, 10.0))
    peak = int(np.argmax(ndi.gaussian_filter1d(hist.astype(np.float64), 3.0)))
    return float(0.5 * (edges[peak] + edges[peak + 1]))


def to_canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reorder a volume to the closest RAS+ voxel order.

    Returns:
        (canonical data, canonical affine, the input's orientation for :func:`from_canonical`).
    """
    ornt = nio.io_orientation(affine)
    to_ras = nio.ornt_transform(ornt, _RAS)
    data_c = np.ascontiguousarray(nio.apply_orientation(data, to_ras))
    affine_c = affine @ nio.inv_ornt_aff(to_ras, data.shape[:3])
    return data_c, affine_c, ornt


def from_canonical(data_c: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """Exact inverse of :func:`to_canonical` for the data (a permutation and flips)."""
    return np.ascontiguousarray(nio.apply_orientation(data_c, nio.ornt_transform(_RAS, ornt)))


_CORE_DEPTHS_MM = (5.0, 7.0, 9.0, 12.0)


def brain_mask(dwi: np.ndarray, adc: np.ndarray, voxel_size: tuple[float, float, float]) -> np.ndarray:
    """Brain (intracranial) mask from DWI + ADC by morphology, for skull-stripped and raw clinical scans alike (the
    ``morphology`` brain extractor; the default, HD-BET, is :mod:`stroke_seg.models.hdbet`).

    A skull-stripped input (:func:`~stroke_seg.pipeline.brain_extraction.skull_stripped_support`) keeps its own
    support, holes filled. Otherwise:

    1. Foreground: DWI above Otsu's threshold of the log-intensity (or half of it where the ADC is valid),
       with a valid ADC.
    2. Core: foreground voxels deeper than ``d`` mm inside the foreground (Euclidean distance in mm, so
       thick slices count their real thickness); the largest connected core is the brain's. Scalp, eyes and
       neck are thinner than the core depth or separated from the brain by the dark skull, so they hold no
       core connected to it.
    3. Brain: foreground within ``d`` mm (plus half a voxel) of that core, i.e. the core grown back to the
       surface it was eroded from but never across a gap, then concavities closed and ventricles filled.
       When the result is larger than :data:`BRAIN_ML_MAX` (scalp still attached by a bridge thicker
       than ``d``), ``d`` grows (5, 7, 9, 12 mm) and the steps repeat.

    Works on a grid of about 2 mm (full resolution in thick-slice directions) and returns to the input grid.

    Args:
        dwi: raw DWI, shape (X, Y, Z).
        adc: ADC in 1e-6 mm²/s, same shape (0 where the scanner gave no value).
        voxel_size: voxel edge lengths in mm, axis order of the arrays.

    Returns:
        bool array, shape (X, Y, Z).
    """
    positive = dwi[dwi > 0]
    if positive.size == 0:
        return np.zeros(dwi.shape, bool)
    support = skull_stripped_support(dwi, voxel_size)
    if support is not None:
        return support  # skull-stripped: zeros outside the brain; its support is the brain
    step = np.maximum(1, np.floor(2.0 / np.asarray(voxel_size) + 1e-6)).astype(int)
    coarse = tuple(slice(None, None, int(k)) for k in step)  # the ~2 mm working grid of this function
    vs = np.asarray(voxel_size, float) * step
    thr = _log_otsu(positive)
    # Foreground: bright DWI, or DWI with some signal where the ADC has a value. The ADC's support is not used
    # beyond that: a computed ADC has values wherever the DWI has (noise included), a scanner's is 0 in the air or
    # outside its own brain mask; the DWI signal decides, so both give one mask.
    dwi_w, adc_w = dwi[coarse], adc[coarse]
    fg = (np.log1p(np.maximum(dwi_w, 0)) > thr) | ((adc_w > 0) & (dwi_w > 0.5 * np.expm1(thr)))
    voxel_ml = float(np.prod(vs)) / 1000.0
    if not fg.any():
        return np.zeros(dwi.shape, bool)
    depth = ndi.distance_transform_edt(np.pad(fg, 1), sampling=vs)[1:-1, 1:-1, 1:-1]
    brain = fg
    for d in _CORE_DEPTHS_MM:
        labels, n = ndi.label(depth > d + DISTANCE_TOL_MM)
        if n == 0:
            break
        core = labels == (int(np.argmax(np.bincount(labels.ravel())[1:])) + 1)
        reach = ndi.distance_transform_edt(~core, sampling=vs) <= d + 0.5 * float(vs.max()) + DISTANCE_TOL_MM
        labels, _ = ndi.label(fg & reach)
        keep = np.unique(labels[core])
        brain = np.isin(labels, keep[keep > 0])
        if brain.sum() * voxel_ml <= BRAIN_ML_MAX:
            break
        log.info("brain mask: %.0f mL with a %g mm core; trying a deeper core", brain.sum() * voxel_ml, d)
    radius = np.maximum(1, np.round(3.0 / vs)).astype(int)
    closed = ndi.binary_closing(np.pad(brain, radius.max()), structure=_ellipsoid(radius))
    brain = closed[tuple(slice(radius.max(), -radius.max()) for _ in range(3))] | brain
    brain = _filled(brain)
    if np.any(step > 1):
        for axis, k in enumerate(step):
            brain = np.repeat(brain, k, axis=axis)
        brain = brain[: dwi.shape[0], : dwi.shape[1], : dwi.shape[2]]
    return brain


def _log_otsu(positive: np.ndarray) -> float:
    """Otsu's threshold of the log-intensity of positive DWI values (a subsample of at most ~200,000)."""
    return _otsu(np.log1p(positive[:: max(1, positive.size // 200_000)]))


def diffusion_support(dwi: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Where an ADC value is a measurement: the brain, and wherever the DWI carries signal (above half the level that
    separates head from background, from Otsu's threshold of the log-intensity).

    A scanner's ADC is 0 in the air (or outside its own brain mask); an ADC computed from b0 + b1000 has values
    wherever the DWI has, noise included. Setting the ADC to 0 outside this support makes both one map, so that
    every rule that uses the ADC map's support gives one answer.

    Args:
        dwi: raw DWI, shape (X, Y, Z); brain: brain mask, bool, same shape.
    """
    positive = dwi[dwi > 0]
    if positive.size == 0:
        return brain.copy()
    return brain | (dwi > 0.5 * np.expm1(_log_otsu(positive)))


def _filled(mask: np.ndarray) -> np.ndarray:
    """Holes filled slice by slice (axial, the thick-slice direction) and then in 3D."""
    return ndi.binary_fill_holes(np.stack([ndi.binary_fill_holes(s) for s in np.moveaxis(mask, 2, 0)], axis=2))


def _ellipsoid(radius: np.ndarray) -> np.ndarray:
    r = np.asarray(radius, float)
    grid = np.ogrid[tuple(slice(-int(v), int(v) + 1) for v in r)]
    return sum((g / max(v, 1e-6)) ** 2 for g, v in zip(grid, r)) <= 1.0


def _otsu(values: np.ndarray, bins: int = 128) -> float:
    hist, edges = np.histogram(values, bins=bins)
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers) / np.maximum(w0, 1)
    m1 = ((hist * centers).sum() - np.cumsum(hist * centers)) / np.maximum(w1, 1)
    return float(centers[int(np.argmax(w0 * w1 * (m0 - m1) ** 2))])


def working_shape(shape: tuple[int, ...], voxel_size, spacing: float) -> tuple[int, int, int]:
    """Shape of the grid of about ``spacing`` mm that covers the same field of view as ``shape`` voxels of
    ``voxel_size`` mm (each axis rounded to whole voxels, at least one)."""
    factors = np.asarray(voxel_size, float) / spacing
    return tuple(int(v) for v in np.maximum(1, np.round(np.asarray(shape[:3]) * factors)).astype(int))  # type: ignore


def zoom_to_spacing(data: np.ndarray, voxel_size, spacing: float, order: int = 1) -> np.ndarray:
    """Resample a canonical volume to isotropic ``spacing`` mm, float32: :func:`resample_to_shape` (box average
    along axes finer than ``spacing``, linear along the others) by default; ``order`` 0 or 3 interpolates."""
    shape = working_shape(data.shape, voxel_size, spacing)
    return resample_to_shape(data, shape) if order == 1 else zoom_to_shape(data, shape, order=order)


def resample_to_shape(data: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Resample a volume to ``shape`` over the same field of view (centre-aligned grids of equal extent), one axis at a
    time: where the new voxels are larger, each is the mean of the old ones over its extent (a box average: every old
    voxel counts, so a 0.5 mm scan is not sub-sampled to 2 mm and a thick slice holds what lies inside it); where they
    are smaller, linear interpolation. An old voxel of the same size maps onto itself, so the result depends on the
    field of view, not on how finely it was sampled.

    Args:
        data: (X, Y, Z) array; shape: the new (X, Y, Z).

    Returns:
        float32 array of ``shape``.
    """
    out = data.astype(np.float32, copy=False)
    order = np.argsort([n / max(m, 1) for n, m in zip(shape, data.shape)])  # shrink the largest reductions first
    for axis in order:
        out = _resample_axis(out, int(axis), int(shape[axis]))
    return np.ascontiguousarray(out, dtype=np.float32)


def _resample_axis(data: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    n_in = data.shape[axis]
    if n_out == n_in:
        return data
    r = n_in / n_out  # old voxels per new voxel
    centres = (np.arange(n_out) + 0.5) * r - 0.5  # new voxel centres in old voxel coordinates
    a = np.moveaxis(data, axis, 0)
    tail = (1,) * (a.ndim - 1)
    if r > 1:  # box: the integral of the old voxels over [c - r/2, c + r/2], from their cumulative sum
        cum = np.concatenate([np.zeros((1,) + a.shape[1:]), np.cumsum(a, axis=0, dtype=np.float64)])

        def integral(x: np.ndarray) -> np.ndarray:  # of the old voxels from their lower edge (-0.5) to x
            x = np.clip(x + 0.5, 0.0, n_in)
            i = np.minimum(np.floor(x).astype(int), n_in - 1)
            return cum[i] + (x - i).reshape((-1,) + tail) * (cum[i + 1] - cum[i])

        out = (integral(centres + r / 2) - integral(centres - r / 2)) / r
    else:  # linear, the edge voxels held beyond the old centres
        x = np.clip(centres, 0.0, n_in - 1)
        i = np.minimum(np.floor(x).astype(int), max(n_in - 2, 0))
        t = (x - i).reshape((-1,) + tail)
        out = a[i] * (1 - t) + a[np.minimum(i + 1, n_in - 1)] * t
    return np.moveaxis(out.astype(np.float32), 0, axis)


def zoom_to_shape(data: np.ndarray, shape: tuple[int, ...], order: int = 1) -> np.ndarray:
    """Resample a volume to ``shape`` with voxel centres aligned as grids of equal extent."""
    if tuple(data.shape) == tuple(shape):
        return data.astype(np.float32, copy=False)
    scale = np.asarray(data.shape, float) / np.asarray(shape, float)
    offset = 0.5 * scale - 0.5  # centre-aligned: voxel i covers the same world extent in both grids
    return ndi.affine_transform(
        data.astype(np.float32, copy=False),
        scale,
        offset=offset,
        output_shape=shape,
        order=order,
        mode="nearest",
        output=np.float32,
    )


def preprocess(case: Case, *, brain: np.ndarray | None = None, network_brain: np.ndarray | None = None) -> Preprocessed:
    """Canonical orientation, brain mask and DWI/FLAIR normalisation of a validated case.

    Args:
        case: the validated case.
        brain: its brain mask, canonical (X, Y, Z) bool (a trained extractor's:
            :func:`stroke_seg.models.hdbet.extract_brain`); None makes one by morphology (:func:`brain_mask`).
        network_brain: the extractor's brain before its margin (:attr:`Preprocessed.network_brain`), or None.
    """
    dwi_c, affine_c, ornt = to_canonical(case.dwi, case.affine)
    adc_c = to_canonical(case.adc, case.affine)[0]
    flair_c = to_canonical(case.flair, case.affine)[0] if case.flair is not None else None
    vs = voxel_sizes(affine_c)
    if brain is None:
        brain = brain_mask(dwi_c, adc_c, vs)
    elif brain.shape != dwi_c.shape:
        raise ValueError(f"brain mask must have the canonical shape {dwi_c.shape}, but it has {brain.shape}")
    adc_c = np.where(diffusion_support(dwi_c, brain), adc_c, np.float32(0.0))
    if brain.sum() < 100:
        log.warning("brain mask has only %d voxels; normalising over all positive voxels", int(brain.sum()))
        brain_for_stats = dwi_c > 0
    else:
        brain_for_stats = brain
    coarse, interior = _interior(brain_for_stats, vs)
    median = float(np.median(dwi_c[coarse][interior])) if interior.any() else 1.0
    median = median if median > 0 else 1.0
    flair_n = None
    if flair_c is not None:
        fm = float(np.median(flair_c[brain_for_stats])) if brain_for_stats.any() else 1.0
        flair_n = (flair_c / (fm if fm > 0 else 1.0)).astype(np.float32)
    # Head signal more than 3 mm outside the brain, on a grid of about 2 mm (what the brain mask was made on): a
    # QC figure, and the full-resolution dilation of a 0.5 mm scan would cost more than the network.
    step = np.maximum(1, np.floor(2.0 / np.asarray(vs) + 1e-6)).astype(int)
    coarse = tuple(slice(None, None, int(k)) for k in step)
    vs_coarse = np.asarray(vs) * step
    margin = np.maximum(1, np.round(3.0 / vs_coarse)).astype(int)
    near = ndi.binary_dilation(brain[coarse], structure=_ellipsoid(margin)) if brain.any() else brain[coarse]
    outside_ml = float(((dwi_c[coarse] != 0) & ~near).sum()) * float(np.prod(vs_coarse)) / 1000.0
    dwi_n = (dwi_c / np.float32(median)).astype(np.float32)
    return Preprocessed(
        dwi=dwi_n,
        adc=adc_c.astype(np.float32, copy=False),
        flair=flair_n,
        brain=brain,
        affine=affine_c,
        voxel_size=vs,
        ornt=ornt,
        dwi_median=median,
        outside_ml=outside_ml,
        normal_adc=normal_appearing_adc(dwi_n[coarse], adc_c[coarse], interior),
        network_brain=network_brain,
    )
