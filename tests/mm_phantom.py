"""A small skull-stripped head defined in millimetres and sampled at any voxel size, for resolution tests.

The phantom is continuous (ellipsoids in world mm): each voxel gets the partial-volume mix of what lies inside it
(sub-sampled), so a 2 mm, a 1 mm and a 1 x 1 x 4 mm grid of the same field of view hold the same head, the way two
acquisitions of one patient do. Brain: an ellipsoid of normal tissue (DWI 100, ADC 800 x 1e-6 mm²/s, smooth texture)
with a CSF ventricle; lesions, mimics and a bright cortical ribbon are added as ``Blob`` records.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np

FOV_MM = np.array([96.0, 112.0, 80.0])
BRAIN_SEMI_AXES_MM = np.array([42.0, 50.0, 34.0])


@dataclass(frozen=True)
class Blob:
    """An ellipsoid (centre and semi-axes in mm, world coordinates centred on the field of view) with its DWI (over
    normal tissue) and ADC (1e-6 mm²/s); ``lesion`` marks it as ground truth. ``rim`` (thickness mm, DWI gain, ADC)
    adds a shell around it, part of the lesion: the DWI-bright, mildly restricted edge of a real infarct."""

    centre: tuple[float, float, float]
    radii: tuple[float, float, float]
    dwi_gain: float
    adc: float
    lesion: bool = True
    rim: tuple[float, float, float] | None = None


ACUTE = (
    Blob((-18.0, 6.0, 4.0), (8.0, 6.0, 5.0), 2.0, 450.0, rim=(3.0, 1.5, 760.0)),
    Blob((20.0, -18.0, -6.0), (5.0, 5.0, 4.5), 1.9, 480.0),
)
"""Two acute lesions in opposite hemispheres: a core of 1.0 mL with a 3 mm DWI-bright rim (ADC 760; 2.4 mL in all)
and a 0.47 mL one without."""


def _inside(points: np.ndarray, centre, radii) -> np.ndarray:
    return (((points - np.asarray(centre)) / np.asarray(radii)) ** 2).sum(-1) <= 1.0


def _texture(points: np.ndarray) -> np.ndarray:
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    return 1.0 + 0.04 * np.sin(x / 7.0 + 0.3) * np.cos(y / 9.0) + 0.03 * np.sin(z / 6.0 + y / 11.0)


def sample(
    voxel_mm,
    blobs=ACUTE,
    *,
    cortex: tuple[float, float] | None = None,
    sub: int = 3,
    noise: float = 1.0,
    seed: int = 0,
) -> tuple[nib.Nifti1Image, nib.Nifti1Image, nib.Nifti1Image]:
    """The phantom on a RAS grid of ``voxel_mm`` covering :data:`FOV_MM`.

    Args:
        voxel_mm: voxel edge lengths (mm), 3 values.
        blobs: lesions and mimics.
        cortex: (DWI gain, ADC) of a 5 mm ribbon 2 mm below the surface at the top of the brain, in both hemispheres
            (apart at the midline, as the falx parts them; not a lesion); None: no ribbon.
        sub: sub-samples per voxel axis for the partial volume.
        noise: standard deviation of the Gaussian noise added to the DWI (normal tissue is 100).
        seed: noise seed.

    Returns:
        (DWI, ADC in 1e-6 mm²/s, ground truth mask: voxels at least half lesion) as NIfTI images, float32/uint8.
    """
    vs = np.asarray(voxel_mm, float)
    shape = tuple(int(v) for v in np.round(FOV_MM / vs))
    affine = np.diag(np.append(vs, 1.0))
    affine[:3, 3] = -FOV_MM / 2 + vs / 2
    fine = (np.arange(sub) + 0.5) / sub - 0.5
    axes = [
        ((np.arange(n)[:, None] + fine[None, :]).ravel() * v - f / 2 + v / 2).astype(np.float32)
        for n, v, f in zip(shape, vs, FOV_MM)
    ]
    out = np.zeros((4,) + shape, np.float32)  # brain fraction, DWI, ADC, lesion fraction
    for k in range(shape[2]):  # one voxel slab at a time: the sub-sampled grid of a whole 1 mm head is large
        pts = np.stack(np.meshgrid(axes[0], axes[1], axes[2][k * sub : (k + 1) * sub], indexing="ij"), -1)
        out[:, :, :, k] = _slab(pts, blobs, cortex).reshape(4, shape[0], sub, shape[1], sub, sub).mean(axis=(2, 4, 5))
    brain_v, dwi_v, adc_v, lesion_v = out
    keep = brain_v >= 0.5  # skull-stripped: zeros outside the brain
    rng = np.random.default_rng(seed)
    dwi_v = np.where(keep, dwi_v / np.maximum(brain_v, 1e-6) + rng.normal(0, noise, shape), 0.0)
    adc_v = np.where(keep, adc_v / np.maximum(brain_v, 1e-6), 0.0)
    truth = (lesion_v >= 0.5) & keep
    return (
        nib.Nifti1Image(dwi_v.astype(np.float32), affine),
        nib.Nifti1Image(adc_v.astype(np.float32), affine),
        nib.Nifti1Image(truth.astype(np.uint8), affine),
    )


def _slab(pts: np.ndarray, blobs, cortex) -> np.ndarray:
    """(4, ...) brain, DWI x brain, ADC x brain and lesion indicator at the points ``pts`` (..., 3) mm."""
    brain = _inside(pts, (0, 0, 0), BRAIN_SEMI_AXES_MM)
    csf = _inside(pts, (0, 4, 6), (6.0, 14.0, 6.0))
    tex = _texture(pts)
    dwi = np.where(brain, 100.0 * tex, 0.0)
    adc = np.where(brain, 800.0 * (2.0 - tex), 0.0)
    dwi, adc = np.where(csf, 25.0, dwi), np.where(csf, 3000.0, adc)
    lesion = np.zeros(brain.shape, bool)
    if cortex is not None:
        r = np.sqrt(((pts / BRAIN_SEMI_AXES_MM) ** 2).sum(-1))
        depth = (1.0 - r) * BRAIN_SEMI_AXES_MM.min()  # about the depth below the brain's surface, mm
        ribbon = brain & (depth > 2.0) & (depth < 7.0) & (pts[..., 2] > 12.0) & (np.abs(pts[..., 0]) > 4.0)
        dwi, adc = np.where(ribbon, dwi * cortex[0], dwi), np.where(ribbon, cortex[1], adc)
    for b in blobs:
        if b.rim is not None:
            shell = _inside(pts, b.centre, np.asarray(b.radii) + b.rim[0]) & brain
            dwi, adc = np.where(shell, 100.0 * b.rim[1], dwi), np.where(shell, b.rim[2], adc)
            lesion |= shell & b.lesion
        inside = _inside(pts, b.centre, b.radii) & brain
        dwi, adc = np.where(inside, 100.0 * b.dwi_gain, dwi), np.where(inside, b.adc, adc)
        lesion |= inside & b.lesion
    return np.stack([brain, dwi * brain, adc * brain, lesion]).astype(np.float32)


def at_centres(mask: np.ndarray, mask_affine: np.ndarray, target: nib.Nifti1Image) -> np.ndarray:
    """``mask`` (on its own grid) read at the voxel centres of ``target`` (nearest voxel), bool of target's shape."""
    from scipy import ndimage as ndi

    vox = np.linalg.inv(mask_affine) @ target.affine
    out = ndi.affine_transform(
        mask.astype(np.float32), vox[:3, :3], offset=vox[:3, 3], output_shape=target.shape[:3], order=0, cval=0
    )
    return out > 0.5


def resample(img: nib.Nifti1Image, factors) -> nib.Nifti1Image:
    """``img`` on a grid whose voxels are ``factors`` times the old ones (same field of view), by linear
    interpolation (as ``bench/bench_resolution.py`` does)."""
    from scipy import ndimage as ndi

    factors = np.asarray(factors, float)
    shape = np.maximum(1, np.round(np.asarray(img.shape[:3]) / factors)).astype(int)
    step = np.asarray(img.shape[:3]) / shape
    new_to_old = np.diag(np.append(step, 1.0))
    new_to_old[:3, 3] = 0.5 * step - 0.5
    data = np.asanyarray(img.dataobj).astype(np.float32)
    out = ndi.affine_transform(data, step, offset=new_to_old[:3, 3], output_shape=tuple(shape), order=1, mode="nearest")
    return nib.Nifti1Image(out, img.affine @ new_to_old)
