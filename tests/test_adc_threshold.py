"""The adc-threshold rule on small hand-made volumes: core, rim growth and its limits."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from stroke_seg.models.adc_threshold import AdcThreshold
from stroke_seg.pipeline.preprocess import Preprocessed
from stroke_seg.types import SegmentConfig


def _volumes(adc: np.ndarray, dwi: np.ndarray) -> Preprocessed:
    return Preprocessed(
        dwi=dwi.astype(np.float32),
        adc=adc.astype(np.float32),
        flair=None,
        brain=np.ones(adc.shape, bool),
        affine=np.diag([2.0, 2.0, 2.0, 1.0]),
        voxel_size=(2.0, 2.0, 2.0),
        ornt=np.array([[0, 1], [1, 1], [2, 1]]),
        dwi_median=1.0,
    )


def _predict(vol: Preprocessed) -> np.ndarray:
    return (
        AdcThreshold().predict(vol, config=SegmentConfig(), progress=lambda f, d: None, should_cancel=lambda: False)
        > 0.5
    )


def _ball(shape, centre, radius):
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2


def test_core_grows_into_a_bright_mildly_restricted_rim_but_only_4_mm():
    shape = (40, 40, 40)
    adc, dwi = np.full(shape, 800.0), np.full(shape, 1.0)  # 800 < 850 (rim ADC) but DWI normal: never lesion
    core = _ball(shape, (20, 20, 20), 3)  # 123 voxels of 8 mm³ ~ 1 mL
    shell = _ball(shape, (20, 20, 20), 8) & ~core
    adc[core], dwi[core] = 450.0, 1.8
    adc[shell], dwi[shell] = 780.0, 1.6  # DWI-bright, mildly restricted
    mask = _predict(_volumes(adc, dwi))
    steps = ndi.distance_transform_cdt(~core, metric="taxicab")  # face-neighbour steps from the core
    assert mask[core].all()
    assert mask[shell & (steps <= 1)].all()
    assert mask[shell & (steps == 2)].mean() > 0.9  # 2 steps of 2 mm = the 4 mm limit
    assert not mask[steps > 2].any()  # no further, though the bright shell goes on to 8 voxels
    # The same bright shell without a core is not a lesion, and neither is one grown from a speck.
    adc[core] = 780.0
    assert not _predict(_volumes(adc, dwi)).any()
    adc[20, 20, 20] = 450.0
    assert _predict(_volumes(adc, dwi)).sum() <= 1
