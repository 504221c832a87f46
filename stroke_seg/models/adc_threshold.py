"""``adc-threshold``: the weight-free baseline rule for the acute infarct core.

Rule (a soft version, so that it returns a probability map):

    core = sigmoid((620 - ADC) / 25) * sigmoid((DWI / median_brain_DWI / trend(z) - 1.3) / 0.08), inside the brain
    rim  = sigmoid((850 - ADC) / 25) * (the same DWI term), kept within 4 mm of a core of >= 0.05 mL
    p    = max(core, rim)

ADC is median-filtered (a voxel and its 6 face neighbours) first, so that single noisy voxels do not pass.
``trend(z)`` is the median parenchyma DWI of each axial slice (smoothed over ~2 cm) relative to the
whole-brain parenchyma median: real DWI is brighter toward the skull base (posterior fossa, temporal
lobes), and without this correction the rule calls that brightening infarct (version 1.1).

* ADC < 620 x 1e-6 mm²/s is the core threshold the RAPID software uses clinically
  (Purushotham et al., Int J Stroke 2015: "Apparent diffusion coefficient threshold for
  delineation of ischemic core"; also used in DEFUSE 3, Albers et al., NEJM 2018).
* Relative DWI hyperintensity (> 1.3 x the brain median, slice trend removed) removes low-ADC voxels that are not
  bright on DWI (noise, susceptibility artefacts); the same combination is the usual rule-based
  baseline of ISLES'22 reports.
* The rim (version 1.2): an infarct's edge is DWI-bright with only mild restriction (the ISLES'22 case's
  DeepISLES lesions have a median ADC of 754); voxels that pass the DWI criterion with ADC < 850 are added
  when they connect to a core of at least 0.05 mL within 4 mm (geodesic growth), so a rim never appears
  without a core and tiny noisy cores do not grow.
* CSF is excluded by the ADC criterion itself (CSF ADC ~3000) and zero-ADC voxels (background,
  holes) by ``ADC > 50``; voxels outside the brain mask are 0. The minimum lesion size is applied
  in :mod:`stroke_seg.postprocess` (``SegmentConfig.min_lesion_ml``).

It still misses DWI-bright lesions with no core of their own (small embolic lesions whose ADC is only
mildly reduced), which is why it agrees poorly with DeepISLES on real small-vessel / embolic strokes.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..errors import check_cancel
from ..postprocess import remove_small_components
from ..preprocess import Preprocessed
from ..types import CancelCheck, ProgressCallback, SegmentConfig
from .base import Backend

__all__ = [
    "AdcThreshold",
    "ADC_CORE_THRESHOLD",
    "ADC_RIM_THRESHOLD",
    "DWI_RATIO_THRESHOLD",
    "grow_rim",
    "rim_probability",
]

ADC_CORE_THRESHOLD = 620.0  # 1e-6 mm²/s
DWI_RATIO_THRESHOLD = 1.3  # x brain median
ADC_RIM_THRESHOLD = 850.0  # 1e-6 mm²/s: a DWI-bright rim with only mild restriction, kept next to a core
RIM_MAX_MM = 4.0  # how far the rim may reach from the core (geodesic)
RIM_SEED_MIN_ML = 0.05  # only cores at least this large grow a rim (smaller ones are mostly noise)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))).astype(np.float32)


class AdcThreshold(Backend):
    name = "adc-threshold"
    description = (
        "Weight-free rule: ADC < 620e-6 mm²/s (RAPID core threshold) and DWI > 1.3x brain median (slice trend "
        "removed), plus a DWI-bright rim (ADC < 850) within 4 mm of the core."
    )
    validated_on = "Synthetic cases of stroke_seg.synth (see README); not trained."
    version = "1.2"

    def predict(
        self, volumes: Preprocessed, *, config: SegmentConfig, progress: ProgressCallback, should_cancel: CancelCheck
    ) -> np.ndarray:
        progress(0.0, "ADC threshold")
        adc = _filtered_adc(volumes)
        p_adc = _sigmoid((ADC_CORE_THRESHOLD - adc) / 25.0)
        check_cancel(should_cancel, "the ADC threshold")
        progress(0.5, "DWI hyperintensity")
        p_dwi = _dwi_term(volumes)
        inside = volumes.brain & (volumes.adc > 50)
        prob = p_adc * p_dwi * inside
        check_cancel(should_cancel, "the DWI criterion")
        progress(0.8, "DWI-bright rim next to the core")
        prob = grow_rim(prob, _rim(adc, p_dwi, inside), volumes.voxel_size, seed_min_ml=RIM_SEED_MIN_ML)
        progress(1.0, "rule applied")
        return prob


def _filtered_adc(volumes: Preprocessed) -> np.ndarray:
    """ADC median-filtered over a voxel and its 6 face neighbours: speckle from noisy ADC fits is not infarct."""
    return ndi.median_filter(volumes.adc, footprint=ndi.generate_binary_structure(3, 1))


def _dwi_term(volumes: Preprocessed) -> np.ndarray:
    """Soft DWI criterion: DWI / brain median / slice trend above 1.3."""
    return _sigmoid((volumes.dwi / slice_trend(volumes)[None, None, :] - DWI_RATIO_THRESHOLD) / 0.08)


def _rim(adc: np.ndarray, p_dwi: np.ndarray, inside: np.ndarray) -> np.ndarray:
    return _sigmoid((ADC_RIM_THRESHOLD - adc) / 25.0) * p_dwi * inside


def rim_probability(volumes: Preprocessed) -> np.ndarray:
    """Soft DWI-bright, mildly restricted tissue: sigmoid((850 - ADC) / 25) x the DWI criterion, inside the brain.

    Returns:
        (X, Y, Z) float32 in [0, 1], canonical grid of ``volumes`` (ADC median-filtered as in the rule).
    """
    return _rim(_filtered_adc(volumes), _dwi_term(volumes), volumes.brain & (volumes.adc > 50))


def grow_rim(
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
    """
    steps = max(1, int(round(RIM_MAX_MM / min(voxel_size))))
    seeds = prob > threshold
    if seed_min_ml > 0:
        seeds = remove_small_components(seeds, int(np.ceil(seed_min_ml / (float(np.prod(voxel_size)) / 1000.0))))
    grown = ndi.binary_dilation(seeds, iterations=steps, mask=p_rim > 0.5)
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
