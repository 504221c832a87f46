"""Approximate MNI152 coordinates for a case, and the skull-base zones where DWI has susceptibility artefacts.

Echo-planar DWI is distorted next to air and bone: at the temporal poles and inferior temporal lobes (sphenoid
sinus, petrous bone), the gyrus rectus and orbitofrontal cortex (frontal and ethmoid sinuses), the inferior
cerebellum (mastoid air cells) and the pons (clivus). There the signal piles up into bright bands whose ADC is
normal or only mildly low, which both the rule and the network call infarct (the ISLES'22 case: 237 of the
unet's 326 false-positive voxels lie in such bands at the temporal lobes, see MODEL_CARD.md). The synthetic
generator puts its susceptibility hot spots at the five sites of :data:`SUSCEPTIBILITY_SITES_MNI`; the
post-processing rule uses the zones of the three supratentorial ones (:data:`ARTEFACT_ZONE_SITES_MNI`).

:class:`MniMap` is a deliberately simple registration: per world axis, the brain mask's centroid and spread
(standard deviation of its voxel positions, mm) are matched to those of the MNI152 2009a intracranial mask.
It assumes the head is roughly aligned with the scanner's axes (RAS+ world) and that the brain is shaped like the
template's. On synthetic heads (the template itself, tilted up to 6 degrees) it places the sites within 1.5 mm;
on real heads its error is not measured. It is not an atlas registration.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "MniMap",
    "SUSCEPTIBILITY_SITES_MNI",
    "ARTEFACT_ZONE_SITES_MNI",
    "SUSCEPTIBILITY_RADIUS_MM",
    "MNI_BRAIN_MEAN_MM",
    "MNI_BRAIN_STD_MM",
    "in_susceptibility_zone",
    "component_centres_world",
]

SUSCEPTIBILITY_SITES_MNI = np.array(
    [  # MNI mm, right hemisphere; mirrored in x at use
        [38.0, 12.0, -32.0],  # temporal pole (sphenoid sinus, middle cranial fossa)
        [45.0, -15.0, -30.0],  # inferior temporal lobe (petrous bone)
        [12.0, 35.0, -22.0],  # gyrus rectus / orbitofrontal cortex (frontal and ethmoid sinuses)
        [32.0, -62.0, -40.0],  # inferior cerebellum (mastoid air cells)
        [5.0, -30.0, -38.0],  # pons (clivus)
    ]
)
"""Centres of the susceptibility-prone zones at the skull base, MNI152 mm (x > 0: right)."""

ARTEFACT_ZONE_SITES_MNI = SUSCEPTIBILITY_SITES_MNI[:3]
"""The sites whose zones the post-processing uses: the supratentorial three (temporal pole, inferior temporal lobe,
orbitofrontal cortex). The inferior cerebellum and pons are left out: a cerebellar infarct in the generator's
``posterior`` pattern is centred within 8 mm of the cerebellar site and its ADC rises toward the rim, and posterior
circulation strokes are too common and too important to put behind a stricter rule."""

SUSCEPTIBILITY_RADIUS_MM = 20.0
"""A point within this distance (MNI mm) of a zone site, either hemisphere, is in a susceptibility-prone zone."""

MNI_BRAIN_MEAN_MM = np.array([0.0, -21.68, 9.63])
MNI_BRAIN_STD_MM = np.array([33.86, 41.06, 32.05])
"""Centroid and per-axis standard deviation (mm) of the MNI152 2009a intracranial mask that
``stroke_seg.synthetic.generator`` builds from the nilearn template (``tests/test_anatomy.py`` recomputes them)."""


@dataclass(frozen=True)
class MniMap:
    """World (scanner RAS+ mm) to approximate MNI152 mm, per axis.

    ``mni = (world - centre) / spread * MNI spread + MNI centre``.

    Attributes:
        centre: (3,) brain-mask centroid in world mm.
        spread: (3,) standard deviation of the brain-mask voxel positions along each world axis, mm.
    """

    centre: np.ndarray
    spread: np.ndarray

    @classmethod
    def from_brain(cls, brain: np.ndarray, affine: np.ndarray) -> MniMap:
        """Fit the map from a brain mask.

        Args:
            brain: bool array (X, Y, Z), any orientation; at least 1000 voxels.
            affine: its 4x4 voxel-to-world affine (mm).

        Raises:
            ValueError: the mask has fewer than 1000 voxels (too little to say where the brain is).
        """
        # Moments from the three 2D projections (fast at 1 mm: no list of every brain voxel); world = A @ ijk + t.
        p_xy, p_xz, p_yz = (brain.sum(axis=ax, dtype=np.float64) for ax in (2, 1, 0))
        n = float(p_xy.sum())
        if n < 1000:
            raise ValueError(
                f"brain mask: expected at least 1000 voxels to place the brain in MNI space, but it has {int(n)}"
            )
        i, j, k = (np.arange(size, dtype=np.float64) for size in brain.shape)
        p_x, p_y, p_z = p_xy.sum(1), p_xy.sum(0), p_xz.sum(0)
        mean = np.array([p_x @ i, p_y @ j, p_z @ k]) / n
        second = np.empty((3, 3))
        second[0, 0], second[1, 1], second[2, 2] = p_x @ i**2, p_y @ j**2, p_z @ k**2
        second[0, 1] = second[1, 0] = i @ p_xy @ j
        second[0, 2] = second[2, 0] = i @ p_xz @ k
        second[1, 2] = second[2, 1] = j @ p_yz @ k
        cov = second / n - np.outer(mean, mean)
        a = affine[:3, :3]
        spread = np.sqrt(np.maximum(np.diag(a @ cov @ a.T), 0.0))
        return cls(a @ mean + affine[:3, 3], np.maximum(spread, 1e-3))

    def __call__(self, world_mm: np.ndarray) -> np.ndarray:
        """Map (N, 3) or (3,) world mm to approximate MNI mm (same shape)."""
        return (np.asarray(world_mm, np.float64) - self.centre) / self.spread * MNI_BRAIN_STD_MM + MNI_BRAIN_MEAN_MM


def in_susceptibility_zone(points_mni: np.ndarray, radius_mm: float = SUSCEPTIBILITY_RADIUS_MM) -> np.ndarray:
    """Whether each (N, 3) MNI point lies within ``radius_mm`` of a site in :data:`ARTEFACT_ZONE_SITES_MNI`.

    Returns:
        (N,) bool.
    """
    pts = np.atleast_2d(np.asarray(points_mni, np.float64))
    sites = np.concatenate([ARTEFACT_ZONE_SITES_MNI, ARTEFACT_ZONE_SITES_MNI * np.array([-1.0, 1.0, 1.0])])
    dist = np.linalg.norm(pts[:, None, :] - sites[None, :, :], axis=2)
    return dist.min(axis=1) < radius_mm


def component_centres_world(labels: np.ndarray, n: int, affine: np.ndarray, offset=(0, 0, 0)) -> np.ndarray:
    """World-mm centroids (n, 3) of labelled components 1..n; ``offset`` is the label array's voxel origin."""
    if n == 0:
        return np.zeros((0, 3))
    com = np.asarray(ndi.center_of_mass(labels > 0, labels, index=np.arange(1, n + 1)), np.float64).reshape(n, 3)
    com += np.asarray(offset, np.float64)
    return com @ affine[:3, :3].T + affine[:3, 3]
