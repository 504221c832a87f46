"""``adc-threshold``: the weight-free baseline rule for the acute infarct core.

Rule (a soft version, so that it returns a probability map):

    core = sigmoid((620 - ADC) / 25) * sigmoid((DWI / median_brain_DWI / trend(z) - 1.3) / 0.08), inside the brain
    rim  = sigmoid((850 - ADC) / 25) * (the same DWI term), kept within 4 mm of a core of >= 0.05 mL
    p    = max(core, rim)

ADC is median-filtered (a voxel and its 6 face neighbours) first, so that single noisy voxels do not pass.
The DWI criterion, the rim and ``trend(z)`` live in :mod:`stroke_seg.pipeline.postprocess`, shared with the U-Net's rim
step. ``trend(z)`` is the median parenchyma DWI of each axial slice (smoothed over ~2 cm) relative to the
whole-brain parenchyma median: real DWI is brighter toward the skull base (posterior fossa, temporal
lobes), and without this correction the rule calls that brightening infarct.

* ADC < 620 x 1e-6 mm²/s is the core threshold the RAPID software uses clinically
  (Purushotham et al., Int J Stroke 2015: "Apparent diffusion coefficient threshold for
  delineation of ischemic core"; also used in DEFUSE 3, Albers et al., NEJM 2018).
* Relative DWI hyperintensity (> 1.3 x the brain median, slice trend removed) removes low-ADC voxels that are not
  bright on DWI (noise, susceptibility artefacts); the same combination is the usual rule-based
  baseline of ISLES'22 reports.
* The rim: an infarct's edge is DWI-bright with only mild restriction (the ISLES'22 case's
  DeepISLES lesions have a median ADC of 754); voxels that pass the DWI criterion with ADC < 850 are added
  when they connect to a core of at least 0.05 mL within 4 mm (geodesic growth), so a rim never appears
  without a core and tiny noisy cores do not grow.
* CSF is excluded by the ADC criterion itself (CSF ADC ~3000) and zero-ADC voxels (background,
  holes) by ``ADC > 50``; voxels outside the brain mask are 0. The minimum lesion size is applied
  in :mod:`stroke_seg.pipeline.postprocess` (``SegmentConfig.min_lesion_ml``).

It still misses DWI-bright lesions with no core of their own (small embolic lesions whose ADC is only
mildly reduced), which is why it agrees poorly with DeepISLES on real small-vessel / embolic strokes.
"""

from __future__ import annotations

import numpy as np

from stroke_seg.errors import check_cancel
from stroke_seg.models.base import Backend
from stroke_seg.pipeline.postprocess import (
    dwi_criterion,
    filtered_adc,
    grow_into_rim,
    rim_term,
    sigmoid,
)
from stroke_seg.pipeline.preprocess import Preprocessed
from stroke_seg.types import CancelCheck, ProgressCallback, SegmentConfig

__all__ = ["AdcThreshold", "ADC_CORE_THRESHOLD", "RIM_SEED_MIN_ML"]

ADC_CORE_THRESHOLD = 620.0  # 1e-6 mm²/s
RIM_SEED_MIN_ML = 0.05  # only cores at least this large grow a rim (smaller ones are mostly noise)


class AdcThreshold(Backend):
    name = "adc-threshold"
    description = (
        "Weight-free rule: ADC < 620e-6 mm²/s (RAPID core threshold) and DWI > 1.3x brain median (slice trend "
        "removed), plus a DWI-bright rim (ADC < 850) within 4 mm of the core."
    )
    validated_on = "Synthetic cases of stroke_seg.synthetic.generator (see README); not trained."
    version = "1.2"

    def predict(
        self, volumes: Preprocessed, *, config: SegmentConfig, progress: ProgressCallback, should_cancel: CancelCheck
    ) -> np.ndarray:
        progress(0.0, "ADC threshold")
        adc = filtered_adc(volumes)
        p_adc = sigmoid((ADC_CORE_THRESHOLD - adc) / 25.0)
        check_cancel(should_cancel, "the ADC threshold")
        progress(0.5, "DWI hyperintensity")
        p_dwi = dwi_criterion(volumes)
        inside = volumes.brain & (volumes.adc > 50)
        prob = p_adc * p_dwi * inside
        check_cancel(should_cancel, "the DWI criterion")
        progress(0.8, "DWI-bright rim next to the core")
        prob = grow_into_rim(prob, rim_term(adc, p_dwi, inside), volumes.voxel_size, seed_min_ml=RIM_SEED_MIN_ML)
        progress(1.0, "rule applied")
        return prob
