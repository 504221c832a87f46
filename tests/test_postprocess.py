"""Post-processing rules: small components and components without restricted diffusion."""

import numpy as np
import pytest

from stroke_seg import SegmentConfig
from stroke_seg.postprocess import binarize, remove_small_components, remove_unrestricted_components


def _two_blobs():
    mask = np.zeros((20, 20, 20), bool)
    mask[2:6, 2:6, 2:6] = True  # 64 voxels
    mask[12:14, 12:14, 12:14] = True  # 8 voxels
    return mask


def test_small_components_are_removed_by_size():
    mask = _two_blobs()
    assert remove_small_components(mask, 9).sum() == 64
    assert remove_small_components(mask, 8).sum() == 72
    prob = mask.astype(np.float32) * 0.9
    # 1 mm voxels (0.001 mL): 0.01 mL = 10 voxels keeps only the big blob
    assert binarize(prob, 0.5, 0.01, 0.001).sum() == 64


def test_components_with_high_median_adc_are_removed():
    mask = _two_blobs()
    adc = np.full(mask.shape, 800.0, np.float32)
    adc[2:6, 2:6, 2:6] = 450.0  # restricted: an infarct
    adc[12:14, 12:14, 12:14] = 1100.0  # DWI-bright with high ADC: T2 shine-through
    kept = remove_unrestricted_components(mask, adc, 900.0)
    assert kept.sum() == 64 and kept[3, 3, 3] and not kept[12, 12, 12]
    assert remove_unrestricted_components(mask, adc, None).sum() == 72
    assert remove_unrestricted_components(mask, adc, 1200.0).sum() == 72


def test_max_lesion_adc_is_validated():
    with pytest.raises(ValueError, match="max_lesion_adc"):
        SegmentConfig(max_lesion_adc=0.0)
    assert SegmentConfig(max_lesion_adc=None).max_lesion_adc is None
