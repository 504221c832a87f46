"""How the synthetic scanner stores a case: gain, ADC unit, dtype, axis order (RAS or LPS) and the affine (oblique,
or axis-aligned with the head tilted in scanner space)."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from stroke_seg.synthetic.head import Grid
from stroke_seg.synthetic.signal import Signals

ADC_SCALE = {"1e-6": 1.0, "1e-3": 1e-3, "mm2/s": 1e-6}
"""Stored ADC per 1e-6 mm²/s, by :attr:`Acquisition.adc_unit`."""


def _axis_aligned(mni_affine: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """Scanner-space affine of a tilted head: the grid is axis-aligned, the head rotated by rot^-1."""
    out = np.eye(4)
    out[:3, :] = rot.T @ mni_affine[:3, :]
    return out


def _storage_affine(acq, grid: Grid):
    """The stored affine and the voxel reordering that goes with it."""
    shape = grid.shape
    store_affine = grid.mni_affine if acq.oblique else _axis_aligned(grid.mni_affine, grid.rot)
    if acq.orientation == "LPS":
        flip = np.diag([-1.0, -1.0, 1.0, 1.0])
        flip[0, 3], flip[1, 3] = shape[0] - 1, shape[1] - 1
        return store_affine @ flip, lambda a: np.ascontiguousarray(a[::-1, ::-1, :])
    if acq.orientation == "RAS":
        return store_affine, lambda a: a
    raise ValueError(f'orientation must be "RAS" or "LPS", but it is {acq.orientation!r}')


def store(
    rng: np.random.Generator, acq, grid: Grid, signals: Signals, truth: np.ndarray, brain: np.ndarray
) -> dict[str, nib.Nifti1Image | None]:
    """The case's images as stored (dwi, adc, mask, flair, brain, raw_b0), all on one grid and affine.

    ``acq`` is the case's :class:`stroke_seg.synthetic.generator.Acquisition`; ``brain`` the intracranial mask.
    """
    gain = rng.uniform(300, 1500) / max(float(np.percentile(signals.dwi[brain], 50)), 1e-6)
    store_affine, orient = _storage_affine(acq, grid)

    def image(a, dtype, scale=1.0):
        a = orient(a) * scale
        if dtype == "uint8":
            a = a.astype(np.uint8)
        elif dtype == "int16":
            a = np.clip(np.round(a), -32768, 32767).astype(np.int16)
        else:
            a = a.astype(np.float32)
        img = nib.Nifti1Image(a, store_affine)
        img.set_qform(store_affine, 1)
        img.set_sform(store_affine, 1)
        img.header.set_xyzt_units("mm", "sec")
        return img

    adc_dtype = acq.dtype if acq.adc_unit == "1e-6" else "float32"
    flair = signals.flair
    return {
        "dwi": image(signals.dwi * gain, acq.dtype),
        "adc": image(signals.adc, adc_dtype, ADC_SCALE[acq.adc_unit]),
        "mask": image(truth, "uint8"),
        "flair": image(flair * gain, acq.dtype) if flair is not None else None,
        "brain": image(brain, "uint8"),
        "raw_b0": image(signals.b0 * gain, "float32"),
    }
