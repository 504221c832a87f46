"""Brain extraction's image steps: a skull-stripped input's own support, and the input and output of a trained
extractor (HD-BET, run by :mod:`stroke_seg.models.hdbet`), numpy in, numpy out.

HD-BET sees the whole head as one input at 1.5 mm in (Z, Y, X) order (slices first, as SimpleITK reads a file; the
canonical (X, Y, Z) = (R, A, S) array transposed), divided into zero mean and unit variance over the whole field of
view and padded to a multiple of 16. Its brain probability becomes a mask here: the largest component above 0.5,
grown by :data:`MARGIN_MM` (HD-BET draws the brain surface inside the sites' masks, and a cortical lesion's edge
must stay inside), resized straight back to the case's grid (linear interpolation of the mask,
then the largest component again and holes filled).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "SPACING_MM",
    "MARGIN_MM",
    "BRAIN_ML_MAX",
    "NetworkInput",
    "network_input",
    "brain_from_probability",
    "skull_stripped_support",
    "implausible_brain",
    "largest_component",
    "filled",
]

SPACING_MM = 1.5
"""HD-BET's working grid (mm, isotropic)."""
DIVISOR = 16
"""Every input edge is a multiple of this (four stride-2 levels)."""
MARGIN_MM = 3.0
"""The network's brain grown by this much (mm). On the shared raw head (site mask 1,571 mL, DAGMNet lesion 165 mL),
fold 0: no margin 1,444 mL, Dice 0.941, 99.59 % of the lesion inside; 2 mm 1,530 mL, 0.951, 99.93 %; 3 mm 1,641 mL,
0.949, 99.99 % (4 voxels out); five folds with 3 mm: 1,635 mL, 0.946, 100 %."""
BRAIN_ML_MAX = 2100.0
"""Largest plausible intracranial volume (mL); a larger candidate mask still holds scalp or eyes."""
DARK_FRACTION_MAX = 0.15
"""Largest share of a trained extractor's brain that may be dark (DWI below :data:`DARK_LEVEL` of the mask's median).
Measured with HD-BET fold 0: the shared raw head 0.059 (its site's mask 0.051), generated heads with scalp, neck and
fat 0.015-0.066; where HD-BET misplaced the brain (generated brains in noise without a visible head around them: Dice
0.57-0.83 against the known brain) 0.22-0.36."""
DARK_LEVEL = 0.15
"""Dark, for :data:`DARK_FRACTION_MAX`: below this fraction of the median DWI inside the mask (air, noise floor)."""
EXTRACTED_ML_MAX = 2300.0
"""Largest plausible brain from a trained extractor (mL): :data:`BRAIN_ML_MAX` and the grown margin."""


@dataclass(frozen=True, eq=False)
class NetworkInput:
    """A case's DWI as HD-BET takes it.

    Attributes:
        x: (Z, Y, X) float32 at :data:`SPACING_MM`, zero mean and unit variance, zero-padded (after) to multiples of
            :data:`DIVISOR`.
        shape: the resampled (Z, Y, X) shape inside ``x``.
        grid_shape: the canonical (X, Y, Z) shape of the case, to return to.
    """

    x: np.ndarray
    shape: tuple[int, int, int]
    grid_shape: tuple[int, int, int]


def _resize(data: np.ndarray, shape: tuple[int, ...], order: int = 1) -> np.ndarray:
    """``data`` resampled to ``shape``, voxel centres aligned as grids of equal extent (float32)."""
    if tuple(data.shape) == tuple(shape):
        return data.astype(np.float32, copy=False)
    scale = np.asarray(data.shape, float) / np.asarray(shape, float)
    return ndi.affine_transform(
        data.astype(np.float32, copy=False),
        scale,
        offset=0.5 * scale - 0.5,
        output_shape=tuple(int(s) for s in shape),
        order=order,
        mode="nearest",
        output=np.float32,
    )


def network_input(dwi: np.ndarray, voxel_size: tuple[float, float, float]) -> NetworkInput:
    """HD-BET's input for a canonical DWI: the whole field of view at 1.5 mm.

    Args:
        dwi: raw DWI, canonical (X, Y, Z) = (R, A, S) order, any scale.
        voxel_size: its voxel edge lengths (mm), same axis order.
    """
    zyx = np.ascontiguousarray(np.asarray(dwi, np.float32).transpose(2, 1, 0))
    spacing = np.asarray(voxel_size, float)[::-1]
    shape = tuple(int(s) for s in np.maximum(1, np.round(np.asarray(zyx.shape) * spacing / SPACING_MM)))
    resampled = _resize(zyx, shape, order=1)
    resampled -= np.float32(resampled.mean())
    resampled /= np.float32(max(float(resampled.std()), 1e-6))
    padded = tuple(int(np.ceil(s / DIVISOR)) * DIVISOR for s in shape)
    x = np.zeros(padded, np.float32)
    x[: shape[0], : shape[1], : shape[2]] = resampled
    return NetworkInput(x, shape, tuple(int(s) for s in dwi.shape))  # type: ignore[arg-type]


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a boolean mask (the mask itself when it has at most one)."""
    labels, n = ndi.label(mask, structure=np.ones((3, 3, 3), bool))
    if n <= 1:
        return mask.astype(bool, copy=False)
    return labels == (int(np.argmax(np.bincount(labels.ravel())[1:])) + 1)


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding every voxel of ``mask`` (slices), or None when it is empty."""
    axes = [np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != k))) for k in range(mask.ndim)]
    if any(idx.size == 0 for idx in axes):
        return None
    return tuple(slice(int(idx[0]), int(idx[-1]) + 1) for idx in axes)


def filled(mask: np.ndarray) -> np.ndarray:
    """Holes filled slice by slice (axial, the thick-slice direction) and then in 3D.

    Worked inside the mask's bounding box: background on the box's faces touches background outside it, so it is no
    hole either way, and a hole inside is one either way; the answer is the whole grid's, voxel for voxel."""
    out = np.zeros(mask.shape, bool)
    box = bounding_box(mask)
    if box is None:
        return out
    inner = np.asarray(mask[box], bool)
    out[box] = ndi.binary_fill_holes(np.stack([ndi.binary_fill_holes(s) for s in np.moveaxis(inner, 2, 0)], axis=2))
    return out


def brain_from_probability(
    prob: np.ndarray, prepared: NetworkInput, voxel_size: tuple[float, float, float], *, margin_mm: float = MARGIN_MM
) -> np.ndarray:
    """The brain mask on the case's canonical grid from HD-BET's brain probability.

    Args:
        prob: brain probability, the shape of ``prepared.x`` (Z, Y, X), in [0, 1] (folds already fused).
        prepared: the input it came from.
        voxel_size: canonical voxel edge lengths (mm), to check the mask's size in the log.
        margin_mm: growth of the network's brain, mm (see :data:`MARGIN_MM`).

    Returns:
        bool array, canonical (X, Y, Z), ``prepared.grid_shape``.
    """
    z, y, x = prepared.shape
    brain = largest_component(np.asarray(prob)[:z, :y, :x] > 0.5)
    if margin_mm > 0 and brain.any():
        brain = ndi.distance_transform_edt(~brain, sampling=SPACING_MM) <= margin_mm + 1e-3
    grid_zyx = tuple(reversed(prepared.grid_shape))
    back = _resize(brain.astype(np.float32), grid_zyx, order=1) > 0.5
    return filled(largest_component(back)).transpose(2, 1, 0)


def skull_stripped_support(dwi: np.ndarray, voxel_size: tuple[float, float, float]) -> np.ndarray | None:
    """A skull-stripped input's own brain: its non-zero support, holes filled; None for a raw head.

    Skull-stripped means exact zeros on at least a tenth of the grid, around a support no larger than
    :data:`BRAIN_ML_MAX` (decided on a grid of about 2 mm, so a 0.5 mm scan costs little more than a 1 mm one).

    Args:
        dwi: DWI, shape (X, Y, Z); voxel_size: its voxel edge lengths (mm), same axis order.
    """
    step = np.maximum(1, np.floor(2.0 / np.asarray(voxel_size) + 1e-6)).astype(int)
    coarse = tuple(slice(None, None, int(k)) for k in step)
    support = filled(dwi[coarse] != 0)
    ml = support.sum() * float(np.prod(np.asarray(voxel_size, float) * step)) / 1000.0
    if support.mean() < 0.9 and ml <= BRAIN_ML_MAX:
        return support if (step == 1).all() else filled(dwi != 0)  # voxels over 1 mm: that was the whole grid
    return None


def implausible_brain(dwi: np.ndarray, brain: np.ndarray, voxel_size: tuple[float, float, float]) -> str | None:
    """Why a trained extractor's brain mask cannot be this head's brain, or None when it is plausible.

    Two signs of a misplaced mask: too much of it is dark (air or noise floor inside the "brain", see
    :data:`DARK_FRACTION_MAX`), or it is larger than any brain (:data:`EXTRACTED_ML_MAX`).

    Args:
        dwi: the DWI the mask was drawn on, same shape; brain: bool mask; voxel_size: mm, same axis order.
    """
    ml = float(brain.sum()) * float(np.prod(np.asarray(voxel_size, float))) / 1000.0
    if not brain.any():
        return "it is empty"
    if ml > EXTRACTED_ML_MAX:
        return f"it holds {ml:,.0f} mL, more than any brain ({EXTRACTED_ML_MAX:,.0f} mL)"
    inside = np.asarray(dwi, np.float32)[brain]
    dark = float(np.mean(inside < DARK_LEVEL * float(np.median(inside))))
    if dark > DARK_FRACTION_MAX:
        return f"{dark:.0%} of it is dark on DWI (air or noise; a brain has at most {DARK_FRACTION_MAX:.0%})"
    return None
