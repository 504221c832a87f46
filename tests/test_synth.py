from __future__ import annotations

import numpy as np
import pytest

from stroke_seg import load_case
from stroke_seg.synthetic import generator as synth

ACQ = synth.Acquisition(voxel_size=(2.0, 2.0, 2.0))


def test_template_comes_from_nilearn_wheel():
    assert "nilearn" in str(synth.template_path("t1"))


def test_deterministic_for_a_seed():
    a, b = synth.make_case(5, "lacunar", ACQ), synth.make_case(5, "lacunar", ACQ)
    np.testing.assert_array_equal(np.asarray(a.dwi.dataobj), np.asarray(b.dwi.dataobj))
    c = synth.make_case(6, "lacunar", ACQ)
    assert not np.array_equal(np.asarray(a.dwi.dataobj), np.asarray(c.dwi.dataobj))


@pytest.mark.parametrize("pattern", synth.PATTERNS)
def test_patterns_and_tissue_values(pattern):
    c = synth.make_case(3, pattern, ACQ)
    case = load_case(c.dwi, c.adc, ground_truth=c.mask)
    lesion = case.ground_truth
    assert (lesion.sum() > 0) == (pattern in synth.LESION_PATTERNS)
    brain = case.adc > 0
    if lesion.any():  # restricted: a core of 300-500 fading to a nearly normal rim (1e-6 mm²/s)
        parenchyma = brain & ~lesion & (case.adc < 1500)
        assert 250 < np.median(case.adc[lesion]) < min(800, 0.9 * np.median(case.adc[parenchyma]))
    assert 650 < np.median(case.adc[brain & ~lesion]) < 1300  # GM/WM with some CSF


def test_acquisition_variety_is_drawn():
    acqs = [synth.random_acquisition(np.random.default_rng(s)) for s in range(40)]
    assert {a.orientation for a in acqs} == {"RAS", "LPS"}
    assert {a.dtype for a in acqs} == {"float32", "int16"}
    assert {a.voxel_size[2] for a in acqs} >= {1.0, 2.0, 5.0}


def test_cli_writes_cases(tmp_path):
    assert synth.main([str(tmp_path), "--n", "2", "--seed", "3", "--voxel-size", "2"]) == 0
    folders = sorted(tmp_path.iterdir())
    assert [f.name for f in folders] == ["case_000_territorial", "case_001_lacunar"]
    for f in folders:
        assert {"dwi.nii.gz", "adc.nii.gz", "mask.nii.gz", "meta.json"} <= {p.name for p in f.iterdir()}
