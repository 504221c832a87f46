"""Plausibility warnings: each rule fires on a case built for it and stays quiet on a plain one."""

from __future__ import annotations

import dataclasses

import nibabel as nib
import numpy as np

import stroke_seg
from conftest import phantom
from stroke_seg.pipeline import qc

AFF = np.diag([2.0, 2.0, 2.0, 1.0])


def _case(**changes):
    dwi, adc, _ = phantom()
    case = stroke_seg.load_case(nib.Nifti1Image(dwi, AFF), nib.Nifti1Image(adc, AFF))
    return dataclasses.replace(case, **changes) if changes else case


def test_volume_and_count_rules():
    assert qc.check_lesion_volume(151.0) and qc.check_lesion_volume(149.0) is None
    assert qc.check_lesion_count(31) and qc.check_lesion_count(30) is None


def test_brain_volume_rule():
    assert qc.check_brain_volume(700.0) and qc.check_brain_volume(2500.0)
    assert qc.check_brain_volume(1400.0) is None


def test_skull_rule():
    assert "not skull-stripped" in qc.check_skull_removed(500.0)
    assert qc.check_skull_removed(0.0) is None


def test_adc_unit_rule_fires_on_a_borderline_median():
    assert qc.check_adc_unit(_case(adc_unit="1e-3 mm2/s", adc_median_input=0.35))
    assert qc.check_adc_unit(_case(adc_unit="1e-3 mm2/s", adc_median_input=0.8)) is None
    assert qc.check_adc_unit(_case(adc_unit="computed from b0 + b=1000", adc_median_input=None)) is None


def test_edge_band_without_core_is_flagged_and_a_cored_one_is_not():
    shape = (60, 60, 50)
    grid = np.indices(shape).transpose(1, 2, 3, 0)
    brain = (((grid - np.array([30, 30, 25])) / np.array([26, 26, 21])) ** 2).sum(-1) <= 1
    band = brain & (grid[..., 0] > 52)  # the right-most 4 voxels (8 mm) of the brain: its edge
    assert band.sum() > 20
    adc = np.where(brain, 800.0, 0.0).astype(np.float32)
    assert qc.check_artefact_sites(band, adc, brain, AFF)  # bright band at the edge with normal ADC
    cored = adc.copy()
    cored[band] = 400.0
    assert qc.check_artefact_sites(band, cored, brain, AFF) is None  # a restricted core: a real lesion
    deep = brain & (np.abs(grid - np.array([30, 30, 25])).max(-1) <= 3)
    assert qc.check_artefact_sites(deep, adc, brain, AFF) is None  # deep in the brain


def test_quality_warnings_reach_the_report(phantom_files):
    r = stroke_seg.segment(phantom_files, model="adc-threshold")
    report = r.to_dict()
    assert report["warnings"] == list(r.warnings)
    assert any("Brain mask volume" in w for w in r.warnings)  # the phantom's brain is ~90 mL: implausible
