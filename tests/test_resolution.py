"""The same answer at any voxel size (issue 33).

One head defined in millimetres (``tests/mm_phantom.py``) is sampled at 2 mm, at half that, at half in-plane with
double slices and at 1.5 x 1.5 x 3 mm, the way two acquisitions of one patient differ, and segmented by a backend
that is not a network (``adc-threshold``): the subject is everything around the model (canonical grid, brain mask,
normalisation, thresholds, component and rim rules in mm and mL). The lesion volume must stay within 15 % of the
2 mm answer and, at half the voxel size, the mask read at the 2 mm voxel centres must reach Dice 0.85 against it.
The slow test does the same with ``unet`` on a generated head resampled as ``bench/bench_resolution.py`` does.
"""

from __future__ import annotations

import mm_phantom
import numpy as np
import pytest

import stroke_seg
from conftest import require
from stroke_seg import models
from stroke_seg.models.base import Backend
from stroke_seg.pipeline.metrics import dice

NATIVE = (2.0, 2.0, 2.0)
VARIANTS = {
    "half-voxel": (1.0, 1.0, 1.0),
    "half-in-plane-double-slices": (1.0, 1.0, 4.0),
    "1.5x1.5x3": (1.5, 1.5, 3.0),
}
PARAMS = [pytest.param(n, id=n, marks=[pytest.mark.slow] if n == "half-voxel" else []) for n in VARIANTS]
"""The variants; the 1 mm one (8x the voxels) runs in the whole suite only."""
CONFIG = stroke_seg.SegmentConfig(artefact_zone_adc=None)  # the phantom has no skull base


def _segment(dwi, adc, model="adc-threshold", config=CONFIG):
    r = stroke_seg.segment({"dwi": dwi, "adc": adc}, model=model, config=config)
    return np.asarray(r.mask.dataobj) > 0, r.metrics.volume_ml


@pytest.fixture(scope="module")
def native():
    dwi, adc, _ = mm_phantom.sample(NATIVE)
    mask, volume = _segment(dwi, adc)
    assert volume > 1.0, "the 2 mm phantom's lesions were not found: nothing to compare with"
    return dwi, mask, volume


@pytest.mark.parametrize("name", PARAMS)
def test_the_answer_does_not_depend_on_the_voxel_size(native, name):
    ref_dwi, ref_mask, ref_ml = native
    dwi, adc, _ = mm_phantom.sample(VARIANTS[name])
    mask, volume = _segment(dwi, adc)
    assert abs(volume / ref_ml - 1.0) <= 0.15, f"{name}: {volume:.3f} mL against {ref_ml:.3f} mL at 2 mm"
    if name == "half-voxel":
        score = dice(mm_phantom.at_centres(mask, dwi.affine, ref_dwi), ref_mask)
        assert score >= 0.85, f"{name}: Dice {score:.3f} at the 2 mm voxel centres"


@pytest.mark.slow
def test_unet_answer_does_not_depend_on_the_voxel_size():
    from stroke_seg.models import model_names
    from stroke_seg.synthetic import generator as synth

    require("unet" in model_names(), "the unet weights are not installed")
    acq = synth.Acquisition(voxel_size=NATIVE, skull_stripped=True, tilt_deg=(4.0, -3.0, 2.0))
    case = synth.make_case(7_800_000, "territorial", acq)  # held out: training uses seeds 1,000,000+
    config = stroke_seg.SegmentConfig()
    ref_mask, ref_ml = _segment(case.dwi, case.adc, "unet", config)
    assert ref_ml > 1.0
    for name, factors in (("half-voxel", (0.5, 0.5, 0.5)), ("half-in-plane-double-slices", (0.5, 0.5, 2.0))):
        dwi, adc = mm_phantom.resample(case.dwi, factors), mm_phantom.resample(case.adc, factors)
        mask, volume = _segment(dwi, adc, "unet", config)
        assert abs(volume / ref_ml - 1.0) <= 0.15, f"{name}: {volume:.2f} mL against {ref_ml:.2f} mL"
        if name == "half-voxel":
            score = dice(mm_phantom.at_centres(mask, dwi.affine, case.dwi), ref_mask)
            assert score >= 0.85, f"{name}: Dice {score:.3f} at the native voxel centres"


SHINE = mm_phantom.Blob((-20.0, -22.0, -10.0), (6.0, 6.0, 5.0), 2.0, 950.0, lesion=False)


class DwiBright(Backend):
    """Calls every DWI-bright voxel lesion: the lesions, the T2 shine-through and the bright cortical ribbon alike, so
    that only the relative rules (in mm, against this brain's own tissue) decide."""

    name = "dwi-bright-stand-in"

    def predict(self, volumes, *, config, progress, should_cancel):
        return (volumes.dwi > 1.35).astype(np.float32)


@pytest.fixture
def tempted(monkeypatch):
    monkeypatch.setattr(models, "_FACTORIES", {**models._FACTORIES, DwiBright.name: DwiBright})
    monkeypatch.setattr(models, "_INSTANCES", dict(models._INSTANCES))

    def run(voxel):
        dwi, adc, _ = mm_phantom.sample(voxel, mm_phantom.ACUTE + (SHINE,), cortex=(1.6, 700.0))
        return (dwi,) + _segment(dwi, adc, DwiBright.name)

    return run


@pytest.mark.parametrize("name", PARAMS)
def test_the_relative_rules_decide_alike_at_any_voxel_size(tempted, name):
    """The mimics (shine-through, bright cortex) go and the lesions stay at every voxel size: same volume, same mask."""
    ref_dwi, ref_mask, ref_ml = tempted(NATIVE)
    dwi, mask, volume = tempted(VARIANTS[name])
    assert abs(volume / ref_ml - 1.0) <= 0.15, f"{name}: {volume:.3f} mL against {ref_ml:.3f} mL at 2 mm"
    if name == "half-voxel":
        score = dice(mm_phantom.at_centres(mask, dwi.affine, ref_dwi), ref_mask)
        assert score >= 0.85, f"{name}: Dice {score:.3f} at the 2 mm voxel centres"
