"""Scanner artefacts of the synthetic head: smooth random fields (bias, texture, heterogeneity) and the skull-base
effects (inferior brightening and susceptibility hot spots with normal or raised ADC) that a model must not call
lesions. Arrays are (X, Y, Z) float32."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from stroke_seg.pipeline.anatomy import SUSCEPTIBILITY_SITES_MNI


def _smooth_field(rng: np.random.Generator, shape, strength: float, scale_vox: float) -> np.ndarray:
    """A smooth random field with values in about [-strength/2, +strength/2]."""
    if strength <= 0:
        return np.zeros(shape, np.float32)
    coarse_shape = tuple(max(2, int(round(s / scale_vox))) for s in shape)
    coarse = rng.uniform(-0.5, 0.5, coarse_shape).astype(np.float32)
    field = ndi.zoom(coarse, [s / c for s, c in zip(shape, coarse_shape)], order=1, mode="nearest", grid_mode=True)
    field = field[: shape[0], : shape[1], : shape[2]]
    pad = [(0, max(0, s - f)) for s, f in zip(shape, field.shape)]
    field = np.pad(field, pad, mode="edge")
    return (strength * field / max(1e-6, np.abs(field).max() * 2)).astype(np.float32)


def _skull_base_gain(rng: np.random.Generator, affine: np.ndarray, shape) -> tuple[np.ndarray, np.ndarray]:
    """Multiplicative gains for S0 and S (b=1000): inferior brightening plus susceptibility hot spots.

    Returns two (X, Y, Z) float32 arrays. The hot spots raise S0 a little more than S, so the ADC there is
    normal or raised (as real artefacts are), never low.
    """
    ijk = np.indices(shape, dtype=np.float32)
    world = [affine[i, 0] * ijk[0] + affine[i, 1] * ijk[1] + affine[i, 2] * ijk[2] + affine[i, 3] for i in range(3)]
    del ijk
    amp = rng.uniform(0.0, 0.5)
    z0, width = rng.uniform(-32, -12), rng.uniform(5, 10)
    base = 1 + amp / (1 + np.exp((world[2] - z0) / width))
    spots = np.zeros(shape, np.float32)
    for site in SUSCEPTIBILITY_SITES_MNI:  # temporal poles, inferior temporal, orbitofrontal, cerebellum, pons
        for side in (-1.0, 1.0):
            if rng.random() < 0.5:
                continue
            c = site * np.array([side, 1, 1]) + rng.normal(0, 4, 3)
            sigma = rng.uniform(4, 10)
            d2 = sum((world[i] - c[i]) ** 2 for i in range(3))
            spots += rng.uniform(0.3, 4.0) * np.exp(
                -d2 / (2 * sigma**2)
            )  # v1.3: up to 5x (ISLES'22 temporal poles: DWI 4.5-5x median)
    s0_gain = (base * (1 + spots)).astype(np.float32)
    s_gain = (base * (1 + spots) ** 0.95).astype(np.float32)
    return s0_gain, s_gain


def rician(rng: np.random.Generator, x: np.ndarray, sigma, shape) -> np.ndarray:
    """Magnitude of ``x`` plus complex Gaussian noise of ``sigma`` (Rician), float32."""
    return np.sqrt((x + rng.normal(0, sigma, shape)) ** 2 + rng.normal(0, sigma, shape) ** 2).astype(np.float32)
