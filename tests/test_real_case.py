"""The one real scan (ISLES'22 sub-strokecase0001, read from ../shared, never copied)."""

from __future__ import annotations

import numpy as np
import pytest

import stroke_seg
from conftest import SHARED_CASE, require


@pytest.fixture(scope="module")
def real_files():
    require(SHARED_CASE.is_dir(), f"the real ISLES'22 case is not at {SHARED_CASE}")
    return {"dwi": SHARED_CASE / "dwi.nii.gz", "adc": SHARED_CASE / "adc.nii.gz", "ground_truth": SHARED_CASE / "deepisles_mask.nii.gz"}


def test_real_case_loads_with_units_detected(real_files):
    case = stroke_seg.load_case(**real_files)
    assert case.shape == (112, 112, 73) and case.orientation == "LAS"
    assert case.adc_unit == "1e-3 mm2/s"
    assert 900 < np.median(case.adc[case.adc > 0]) < 1200  # brain median ~1.0e-3 mm²/s
    assert case.ground_truth.sum() == 619


def test_adc_threshold_on_real_case(real_files):
    r = stroke_seg.segment(real_files, model="adc-threshold")
    assert r.mask.shape == (112, 112, 73)
    c = r.metrics.comparison
    # A plain threshold agrees poorly with DeepISLES on this many-small-lesion case (~0.15).
    assert 0.05 < c.dice < 0.4
    assert r.metrics.volume_ml > 1.0
