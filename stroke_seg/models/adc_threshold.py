"""``adc-threshold``: the weight-free baseline rule for the acute infarct core.

Rule (a soft version, so that it returns a probability map):

    p = sigmoid((620 - ADC) / 25) * sigmoid((DWI / median_brain_DWI / trend(z) - 1.3) / 0.08), inside the brain

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
* CSF is excluded by the ADC criterion itself (CSF ADC ~3000) and zero-ADC voxels (background,
  holes) by ``ADC > 50``; voxels outside the brain mask are 0. The minimum lesion size is applied
  in :mod:`stroke_seg.postprocess` (``SegmentConfig.min_lesion_ml``).

It misses DWI-bright tissue whose ADC is only mildly reduced, which is why it agrees poorly with
DeepISLES on real small-vessel / embolic strokes.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..preprocess import Preprocessed
from ..types import CancelCheck, ProgressCallback, SegmentConfig
from .base import Backend, check_cancel

__all__ = ["AdcThreshold", "ADC_CORE_THRESHOLD", "DWI_RATIO_THRESHOLD"]

ADC_CORE_THRESHOLD = 620.0  # 1e-6 mm²/s
DWI_RATIO_THRESHOLD = 1.3  # x brain median


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))).astype(np.float32)


class AdcThreshold(Backend):
    name = "adc-threshold"
    description = "Weight-free rule: ADC < 620e-6 mm²/s (RAPID core threshold) and DWI > 1.3x brain median (slice trend removed)."
    validated_on = "Synthetic cases of stroke_seg.synth (see README); not trained."
    version = "1.1"

    def predict(self, volumes: Preprocessed, *, config: SegmentConfig, progress: ProgressCallback, should_cancel: CancelCheck) -> np.ndarray:
        progress(0.0, "ADC threshold")
        adc = ndi.median_filter(volumes.adc, footprint=ndi.generate_binary_structure(3, 1))  # speckle from noisy ADC fits is not infarct
        p_adc = _sigmoid((ADC_CORE_THRESHOLD - adc) / 25.0)
        check_cancel(should_cancel, "the ADC threshold")
        progress(0.5, "DWI hyperintensity")
        p_dwi = _sigmoid((volumes.dwi / slice_trend(volumes)[None, None, :] - DWI_RATIO_THRESHOLD) / 0.08)
        prob = p_adc * p_dwi
        prob *= volumes.brain & (volumes.adc > 50)
        progress(1.0, "rule applied")
        return prob


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
