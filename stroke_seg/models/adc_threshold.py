"""``adc-threshold``: the weight-free baseline rule for the acute infarct core.

Rule (a soft version, so that it returns a probability map):

    p = sigmoid((620 - ADC) / 25) * sigmoid((DWI / median_brain_DWI - 1.3) / 0.08), inside the brain

* ADC < 620 x 1e-6 mm²/s is the core threshold the RAPID software uses clinically
  (Purushotham et al., Int J Stroke 2015: "Apparent diffusion coefficient threshold for
  delineation of ischemic core"; also used in DEFUSE 3, Albers et al., NEJM 2018).
* Relative DWI hyperintensity (> 1.3 x the brain median) removes low-ADC voxels that are not
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
    description = "Weight-free rule: ADC < 620e-6 mm²/s (RAPID core threshold) and DWI > 1.3x brain median."
    validated_on = "Synthetic cases of stroke_seg.synth (see README); not trained."
    version = "1.0"

    def predict(self, volumes: Preprocessed, *, config: SegmentConfig, progress: ProgressCallback, should_cancel: CancelCheck) -> np.ndarray:
        progress(0.0, "ADC threshold")
        p_adc = _sigmoid((ADC_CORE_THRESHOLD - volumes.adc) / 25.0)
        check_cancel(should_cancel, "the ADC threshold")
        progress(0.5, "DWI hyperintensity")
        p_dwi = _sigmoid((volumes.dwi - DWI_RATIO_THRESHOLD) / 0.08)
        prob = p_adc * p_dwi
        prob *= volumes.brain & (volumes.adc > 50)
        progress(1.0, "rule applied")
        return prob
