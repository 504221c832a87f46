"""Load and validate a case: DWI + ADC (+ optional FLAIR and ground truth).

Everything the user gives is checked here, at the boundary, and each problem raises an
:class:`~stroke_seg.errors.InvalidImageError` or :class:`~stroke_seg.errors.IncompatibleImagesError`
whose message names the file and says what was expected and what came.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from stroke_seg.errors import IncompatibleImagesError, InvalidImageError
from stroke_seg.io.limits import Limits
from stroke_seg.io.readers import Image, ImageSource, read_image, to_nifti, write_image
from stroke_seg.types import Case, Geometry

__all__ = [
    "ImageLike",
    "load_case",
    "missing_input",
    "save_image",
    "make_image",
    "adc_from_b0",
    "resample_to_grid",
    "MIN_AXIS",
    "ADC_MAX",
    "ADC_UNITS",
]

log = logging.getLogger(__name__)

ImageLike = ImageSource
"""A path to a file a registered reader accepts (NIfTI), an :class:`~stroke_seg.io.readers.Image`, or an in-memory
nibabel image."""

MIN_AXIS = 16
"""Smallest accepted size of any image axis, in voxels."""

_GRID_ATOL_MM = 1e-3
# Median brain ADC of each unit, with generous bounds: (low, high, factor to 1e-6 mm²/s, name).
ADC_UNITS = (
    (1e-4, 5e-3, 1e6, "mm2/s"),
    (0.1, 5.0, 1e3, "1e-3 mm2/s"),
    (100.0, 5000.0, 1.0, "1e-6 mm2/s"),
)


def missing_input(files: dict) -> str | None:
    """What a case's inputs lack ("the DWI" or "the ADC (or a b0)"), or None: the one rule for every front end."""
    if not files.get("dwi"):
        return "the DWI"
    if not (files.get("adc") or files.get("b0")):
        return "the ADC (or a b0)"
    return None


def _check_values(data: np.ndarray, role: str, name: str) -> None:
    bad = ~np.isfinite(data)
    if bad.any():
        raise InvalidImageError(
            f"{role} file {name}: expected finite values, but {int(bad.sum())} voxels are NaN or infinite"
        )
    lo, hi = float(data.min()), float(data.max())
    if lo == hi:
        what = "all zero" if lo == 0 else f"constant ({lo:g})"
        raise InvalidImageError(f"{role} file {name}: expected an image with contrast, but it is {what}")


def _check_shape(data: np.ndarray, role: str, name: str, max_voxels: int) -> None:
    if data.ndim < 3 or min(data.shape[:3]) == 1:
        raise InvalidImageError(f"{role} file {name}: expected a 3D volume, but it is 2D (shape {data.shape})")
    if data.ndim > 3:
        raise InvalidImageError(
            f"{role} file {name}: expected a 3D volume, but it is {data.ndim}D (shape {data.shape})"
        )
    if min(data.shape) < MIN_AXIS:
        raise InvalidImageError(
            f"{role} file {name}: expected at least {MIN_AXIS} voxels on every axis, but the shape is {data.shape}"
        )
    if data.size > max_voxels:
        raise InvalidImageError(
            f"{role} file {name}: expected at most {max_voxels:,} voxels, but it has {data.size:,} (shape {data.shape})"
        )


def _split_dwi_4d(data: np.ndarray, name: str, notes: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """A 4D DWI holding b0 + b1000 is split into (b1000, b0); the b0 is the brighter one in the head."""
    if data.ndim == 4 and data.shape[3] == 2:
        keep = int(np.argmin([float(np.sum(data[..., i], dtype=np.float64)) for i in range(2)]))
        note = (
            f"DWI {name} is 4D with 2 volumes (b0 + b1000); volume {keep} (lower signal) is the b1000, volume "
            f"{1 - keep} the b0"
        )
        log.info(note)
        notes.append(note)
        return np.ascontiguousarray(data[..., keep]), np.ascontiguousarray(data[..., 1 - keep])
    if data.ndim == 4:
        raise InvalidImageError(
            f"DWI file {name}: expected a 3D b=1000 volume (or 4D with b0 + b1000), but it is 4D with {data.shape[3]} "
            "volumes"
        )
    return data, None


ADC_MAX = 5000.0
"""Largest ADC (1e-6 mm²/s) kept when computing it from b0 + DWI (free water at 37 °C is ~3,000)."""


def adc_from_b0(b0: np.ndarray, dwi: np.ndarray, b_value: float = 1000.0) -> np.ndarray:
    """Apparent diffusion coefficient from a b=0 and a diffusion-weighted image (mono-exponential model).

    ``ADC = ln(S_b0 / S_b) / b``, as a scanner computes it.

    Args:
        b0: b=0 signal, shape (X, Y, Z), any scale.
        dwi: signal at ``b_value``, same shape and scale.
        b_value: diffusion weighting of ``dwi`` in s/mm².

    Returns:
        ADC in 1e-6 mm²/s, float32, clipped to [0, :data:`ADC_MAX`]; 0 where either signal is <= 0
        (no measurement there).
    """
    if b0.shape != dwi.shape:
        raise ValueError(f"b0 and DWI must have one shape, but they are {b0.shape} and {dwi.shape}")
    if not b_value > 0:
        raise ValueError(f"b_value must be > 0 s/mm², but it is {b_value}")
    valid = (b0 > 0) & (dwi > 0)
    ratio = np.where(valid, b0, 1.0).astype(np.float32) / np.where(valid, dwi, 1.0).astype(np.float32)
    adc = np.log(ratio, dtype=np.float32) * np.float32(1e6 / b_value)
    return np.where(valid, np.clip(adc, 0.0, ADC_MAX), 0.0).astype(np.float32)


def _same_grid(shape_a, aff_a, shape_b, aff_b) -> bool:
    return tuple(shape_a[:3]) == tuple(shape_b[:3]) and np.allclose(aff_a, aff_b, atol=_GRID_ATOL_MM)


def resample_to_grid(
    data: np.ndarray, src_affine: np.ndarray, dst_shape, dst_affine: np.ndarray, order: int = 1
) -> tuple[np.ndarray, float]:
    """Resample ``data`` (on ``src_affine``) onto a destination grid, in world coordinates.

    Returns:
        The resampled float32 volume of shape ``dst_shape`` (0 outside the source field of view) and
        the fraction of destination voxels that fall inside the source field of view.
    """
    vox = np.linalg.inv(src_affine) @ dst_affine  # destination voxel -> source voxel
    out = ndi.affine_transform(
        data,
        vox[:3, :3],
        offset=vox[:3, 3],
        output_shape=tuple(dst_shape),
        order=order,
        mode="constant",
        cval=0.0,
        output=np.float32,
    )
    # Field-of-view overlap, from a coarse lattice of destination voxels.
    axes = [np.linspace(0, s - 1, 12) for s in dst_shape]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    src = pts @ vox[:3, :3].T + vox[:3, 3]
    inside = np.all((src >= -0.5) & (src <= np.array(data.shape) - 0.5), axis=1)
    return out, float(inside.mean())


def _to_dwi_grid(
    image: Image, dwi_geometry: Geometry, dwi_shape, role: str, notes: list[str], order: int = 1
) -> np.ndarray:
    data, name = image.data, image.name
    if _same_grid(data.shape, image.geometry.affine, dwi_shape, dwi_geometry.affine):
        return data
    if not (image.geometry.has_world and dwi_geometry.has_world):
        raise IncompatibleImagesError(
            f"{role} file {name}: expected the DWI's grid {tuple(dwi_shape)} or valid world coordinates to resample "
            "it, "
            f"but its grid is {data.shape} and the images have no usable sform/qform"
        )
    out, overlap = resample_to_grid(data, image.geometry.affine, dwi_shape, dwi_geometry.affine, order=order)
    if overlap < 0.5:
        raise IncompatibleImagesError(
            f"{role} file {name}: expected to overlap the DWI in world coordinates, but only {overlap:.0%} of the DWI "
            f"field of view is covered (shape {data.shape} vs DWI {tuple(dwi_shape)})"
        )
    note = (
        f"{role} {name} is on another grid {data.shape}; resampled onto the DWI grid {tuple(dwi_shape)} "
        f"(field-of-view overlap {overlap:.0%})"
    )
    log.info(note)
    notes.append(note)
    return out


def _adc_to_micro(adc: np.ndarray, dwi: np.ndarray, name: str, notes: list[str]) -> tuple[np.ndarray, str, float]:
    """Detect the ADC unit from the brain median and convert to 1e-6 mm²/s."""
    # The brain, roughly: positive ADC where the DWI is above its background.
    positive_dwi = dwi[dwi > 0]
    head = adc > 0
    if positive_dwi.size:
        head &= dwi > np.percentile(positive_dwi, 25)
    vals = adc[head] if head.sum() > 100 else adc[adc > 0]
    if vals.size == 0:
        raise InvalidImageError(f"ADC file {name}: expected positive ADC values in the brain, but none are positive")
    median = float(np.median(vals))
    for lo, hi, factor, unit in ADC_UNITS:
        if lo <= median <= hi:
            if factor != 1.0:
                note = f"ADC {name}: brain median {median:g} looks like {unit}; converted to 1e-6 mm2/s (x{factor:g})"
                log.info(note)
                notes.append(note)
                adc = adc * np.float32(factor)
            if (adc < 0).any():
                adc = np.maximum(adc, 0)
            return adc.astype(np.float32, copy=False), unit, median
    raise InvalidImageError(
        f"ADC file {name}: expected a brain median ADC near 0.0008 (mm2/s), 0.8 (1e-3 mm2/s) or 800 (1e-6 mm2/s), "
        f"but it is {median:g}, which fits no known unit"
    )


def _check_mask(data: np.ndarray, name: str) -> np.ndarray:
    values = np.unique(data)
    if values.size > 2 or not np.all(np.isin(values, (0.0, 1.0))):
        shown = ", ".join(f"{v:g}" for v in values[:6]) + (", ..." if values.size > 6 else "")
        raise InvalidImageError(
            f"ground-truth file {name}: expected a binary mask (values 0 and 1), but it holds {values.size} values "
            f"({shown})"
        )
    return data > 0.5


def load_case(
    dwi: ImageLike,
    adc: ImageLike | None = None,
    flair: ImageLike | None = None,
    ground_truth: ImageLike | None = None,
    *,
    b0: ImageLike | None = None,
    b_value: float = 1000.0,
    max_voxels: int | None = None,
) -> Case:
    """Load and validate a case; every image ends up on the grid of the DWI as given.

    Args:
        dwi: DWI (b=1000), 3D; or 4D holding b0 + b1000 (the b0 then serves as ``b0``).
        adc: ADC map in mm²/s, 1e-3 mm²/s or 1e-6 mm²/s (detected, converted to 1e-6 mm²/s).
            Resampled onto the DWI grid when its grid differs and world coordinates overlap.
            Optional when a b0 is given: the ADC is then computed (:func:`adc_from_b0`).
        flair: optional FLAIR, resampled like the ADC.
        ground_truth: optional binary lesion mask on the DWI grid.
        b0: optional b=0 image of the DWI's acquisition (same scale); used when no ADC map is given.
        b_value: the DWI's b-value in s/mm², for computing the ADC from the b0.
        max_voxels: largest accepted image size, in voxels (a 4D image: all volumes), checked from each header
            before its voxels are read; None: ``STROKE_SEG_MAX_VOXELS`` (:class:`stroke_seg.io.limits.Limits`).

    Returns:
        A validated :class:`Case`.

    Raises:
        InputTooLargeError: an image's header declares more than ``max_voxels`` voxels (nothing read).
        InvalidImageError: an image is unreadable, not 3D, non-finite, constant, too small or too
            large, an ADC in no known unit, a ground truth that is not binary, or neither ADC nor b0.
        IncompatibleImagesError: an image cannot be put on the DWI grid.
    """
    if not b_value > 0:
        raise InvalidImageError(f"b-value: expected a positive diffusion weighting in s/mm², but got {b_value}")
    notes: list[str] = []
    if max_voxels is None:
        max_voxels = Limits.from_env().max_voxels
    dwi_image = read_image(dwi, "DWI", max_voxels=max_voxels)
    dwi_name, geometry = dwi_image.name, dwi_image.geometry
    dwi_data, b0_data = _split_dwi_4d(dwi_image.data, dwi_name, notes)
    _check_shape(dwi_data, "DWI", dwi_name, max_voxels)
    _check_values(dwi_data, "DWI", dwi_name)
    sources = {"dwi": dwi_name}

    def load_other(source: ImageLike, role: str, key: str, values: bool = True) -> Image:
        image = read_image(source, role, max_voxels=max_voxels)
        sources[key] = image.name
        _check_shape(image.data, role, image.name, max_voxels)
        if values:
            _check_values(image.data, role, image.name)
        return image

    adc_given = None
    if adc is not None:
        image = load_other(adc, "ADC", "adc")
        adc_given = _to_dwi_grid(image, geometry, dwi_data.shape, "ADC", notes)
        adc_data, unit, adc_median = _adc_to_micro(adc_given, dwi_data, image.name, notes)
        if b0 is not None or b0_data is not None:
            notes.append("an ADC map was given: it is used as it is, and the b0 is not")
    else:
        if b0 is not None:
            b0_data = _to_dwi_grid(load_other(b0, "b0", "b0"), geometry, dwi_data.shape, "b0", notes)
        elif b0_data is not None:
            sources["b0"] = f"{dwi_name} (b0 volume)"
        else:
            raise InvalidImageError(
                f"DWI file {dwi_name}: expected an ADC map or a b0 image to compute the ADC from, but neither was given"
            )
        adc_data = adc_from_b0(b0_data, dwi_data, b_value)
        unit, adc_median = f"computed from b0 + b={b_value:g}", None
        note = f"ADC computed from {sources['b0']} and {dwi_name} (ln(S_b0 / S_b) / {b_value:g} s/mm²)"
        log.info(note)
        notes.append(note)

    flair_data = None
    if flair is not None:
        flair_data = _to_dwi_grid(load_other(flair, "FLAIR", "flair"), geometry, dwi_data.shape, "FLAIR", notes)

    gt = None
    if ground_truth is not None:
        image = load_other(ground_truth, "ground-truth", "ground_truth", values=False)
        data, name = image.data, image.name
        gt = _check_mask(data, name)
        if not _same_grid(data.shape, image.geometry.affine, dwi_data.shape, geometry.affine):
            diff = np.abs(image.geometry.affine - geometry.affine).max() if data.shape == dwi_data.shape else None
            raise IncompatibleImagesError(
                f"ground-truth file {name}: expected the DWI's grid (shape {dwi_data.shape}, same affine), "
                f"but its shape is {data.shape}"
                + (f" and its affine differs by up to {diff:.3g} mm" if diff is not None else "")
            )
    return Case(
        dwi=dwi_data,
        adc=adc_data,
        geometry=geometry,
        flair=flair_data,
        ground_truth=gt,
        sources=sources,
        adc_unit=unit,
        adc_median_input=adc_median,
        notes=tuple(notes),
        adc_input=None if adc_data is adc_given else adc_given,
    )


def save_image(data: np.ndarray, case: Case, path: str | os.PathLike, dtype=np.uint8) -> Path:
    """Write a volume of shape ``case.shape`` on the case's DWI grid (:func:`~stroke_seg.io.readers.write_image`)."""
    _check_on_grid(data, case)
    return write_image(data, case.geometry, path, dtype)


def make_image(data: np.ndarray, case: Case, dtype=np.uint8) -> nib.Nifti1Image:
    """A NIfTI image of ``data`` (shape ``case.shape``) on the case's DWI grid."""
    _check_on_grid(data, case)
    return to_nifti(data, case.geometry, dtype)


def _check_on_grid(data: np.ndarray, case: Case) -> None:
    if tuple(data.shape) != case.shape:
        raise ValueError(f"data must have the DWI shape {case.shape}, but it has {data.shape}")
