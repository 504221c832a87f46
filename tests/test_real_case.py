"""The one real scan (ISLES'22 sub-strokecase0001, read from ../shared, never copied)."""

from __future__ import annotations

import numpy as np
import pytest

import stroke_seg
from conftest import SHARED_CASE, require


@pytest.fixture(scope="module")
def real_files():
    require(SHARED_CASE.is_dir(), f"the real ISLES'22 case is not at {SHARED_CASE}")
    return {
        "dwi": SHARED_CASE / "dwi.nii.gz",
        "adc": SHARED_CASE / "adc.nii.gz",
        "ground_truth": SHARED_CASE / "expert_mask.nii.gz",
    }


def test_real_case_loads_with_units_detected(real_files):
    case = stroke_seg.load_case(**real_files)
    assert case.shape == (112, 112, 73) and case.orientation == "LAS"
    assert case.adc_unit == "1e-3 mm2/s"
    assert 900 < np.median(case.adc[case.adc > 0]) < 1200  # brain median ~1.0e-3 mm²/s
    assert case.ground_truth.sum() == 835  # the expert mask: 6.68 mL at 8 mm³


def test_adc_threshold_on_real_case(real_files):
    r = stroke_seg.segment(real_files, model="adc-threshold")
    assert r.mask.shape == (112, 112, 73)
    c = r.metrics.comparison
    # A plain threshold agrees poorly with the expert on this many-small-lesion case (~0.23).
    assert 0.05 < c.dice < 0.4
    assert r.metrics.volume_ml > 1.0


JHU = SHARED_CASE.parent / "jhu-ads-subject01"
UNLABELLED = SHARED_CASE.parent / "isles22-unlabelled-case"


@pytest.mark.slow
def test_raw_clinical_scan_with_b0_and_no_adc():
    """A hospital export with skull, b0 + b1000 only: brain mask, lesion vs DAGMNet, warnings (the shipped unet never
    trained on this scan)."""
    require(JHU.is_dir(), f"the raw clinical scan is not at {JHU}")
    from stroke_seg.models.unet import WEIGHTS_PATH

    require(WEIGHTS_PATH.is_file(), f"U-Net weights missing at {WEIGHTS_PATH}")
    import json

    assert "jhu-ads-subject01" not in json.loads(WEIGHTS_PATH.with_suffix(".json").read_text()).get("real_cases", [])
    r = stroke_seg.segment(
        {"dwi": JHU / "dwi.nii.gz", "b0": JHU / "b0.nii.gz", "ground_truth": JHU / "dagmnet_mask.nii.gz"}, model="unet"
    )
    assert r.case.adc_unit.startswith("computed from b0")
    assert r.metrics.comparison.dice >= 0.80, r.metrics.comparison
    assert 1200 < r.brain_ml < 2000
    assert any("not skull-stripped" in w for w in r.warnings)


@pytest.mark.slow
def test_unlabelled_case_of_another_site_gives_no_warning():
    require(UNLABELLED.is_dir(), f"the unlabelled ISLES'22 case is not at {UNLABELLED}")
    from stroke_seg.models.unet import WEIGHTS_PATH

    require(WEIGHTS_PATH.is_file(), f"U-Net weights missing at {WEIGHTS_PATH}")
    r = stroke_seg.segment({"dwi": UNLABELLED / "dwi.nii.gz", "adc": UNLABELLED / "adc.nii.gz"}, model="unet")
    assert r.warnings == ()
    assert r.metrics.volume_ml > 1.0  # the visible MCA lesion is found
