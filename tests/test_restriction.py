"""Restricted diffusion relative to the patient (issue 33): bright on DWI is not enough.

A phantom built to tempt the rules (``tests/mm_phantom.py``, normal tissue ADC ~800): an acute lesion, a subacute
lesion with moderately low ADC (640: relative ADC 0.8), T2 shine-through (bright, ADC 950: below the absolute limit
of 1000 but above normal tissue) and a bright cortical ribbon in both hemispheres (DWI x1.6) with near-normal ADC.
A stand-in backend calls every DWI-bright voxel lesion, so only the rules decide. Without the relative rules each
temptation survives; with them, the mimics go and both lesions stay.
"""

from __future__ import annotations

import functools

import mm_phantom
import numpy as np
import pytest

from stroke_seg import api, models
from stroke_seg.models.base import Backend
from stroke_seg.pipeline.restriction import CORE_RADC
from stroke_seg.types import SegmentConfig

ACUTE = mm_phantom.Blob((-18.0, 6.0, 4.0), (9.0, 7.0, 6.0), 2.0, 450.0)
SUBACUTE = mm_phantom.Blob((20.0, -18.0, -6.0), (6.0, 6.0, 5.0), 1.6, 640.0)
SHINE = mm_phantom.Blob((-20.0, -22.0, -10.0), (6.0, 6.0, 5.0), 2.0, 950.0, lesion=False)
VOXEL = (2.0, 2.0, 2.0)
OFF = SegmentConfig(artefact_zone_adc=None, max_lesion_radc=None, mirror_dwi_min=None)  # absolute rules only


class DwiBright(Backend):
    name = "dwi-bright-stand-in"

    def predict(self, volumes, *, config, progress, should_cancel):
        return (volumes.dwi > 1.35).astype(np.float32)  # brain-median normalised: every blob and the ribbon pass


@pytest.fixture
def stand_in(monkeypatch):
    monkeypatch.setattr(models, "_FACTORIES", {**models._FACTORIES, DwiBright.name: DwiBright})
    monkeypatch.setattr(models, "_INSTANCES", dict(models._INSTANCES))
    return DwiBright.name


@functools.lru_cache(maxsize=8)
def _region(blobs=(), cortex=None) -> np.ndarray:
    """Where a blob (or the ribbon) is at least about half of a voxel: its noise-free DWI above 1.3x normal."""
    dwi = mm_phantom.sample(VOXEL, blobs, cortex=cortex, noise=0.0)[0]
    return np.asarray(dwi.dataobj) > 130.0


def _run(model, cortex_adc, config):
    """Fraction of each part of the phantom that the result calls lesion, and the result."""
    dwi, adc, _ = mm_phantom.sample(VOXEL, (ACUTE, SUBACUTE, SHINE), cortex=(1.6, cortex_adc))
    parts = {"acute": _region((ACUTE,)), "subacute": _region((SUBACUTE,)), "shine": _region((SHINE,))}
    parts["cortex"] = _region(cortex=(1.6, cortex_adc))
    result = api.segment({"dwi": dwi, "adc": adc}, model=model, config=config)
    mask = np.asarray(result.mask.dataobj) > 0
    return {k: int((mask & v).sum()) / max(int(v.sum()), 1) for k, v in parts.items()}, result


@pytest.mark.parametrize("cortex_adc", [740.0, 680.0], ids=["cortex-adc-740", "cortex-adc-680"])
def test_bright_cortex_and_shine_through_are_not_infarct(stand_in, cortex_adc):
    tempted, _ = _run(stand_in, cortex_adc, OFF)
    assert tempted["cortex"] > 0.5 and tempted["shine"] > 0.5, f"the case no longer tempts the rules: {tempted}"
    kept, result = _run(stand_in, cortex_adc, SegmentConfig(artefact_zone_adc=None))
    assert kept["cortex"] == 0.0, f"bright cortex with ADC {cortex_adc:g} called infarct: {kept}"
    assert kept["shine"] == 0.0, f"T2 shine-through called infarct: {kept}"
    assert kept["acute"] > 0.8 and kept["subacute"] > 0.8, f"a real lesion was removed: {kept}"
    assert any("relative ADC" in n and "mirror image" in n for n in result.notes), result.notes


def test_each_relative_rule_does_its_part(stand_in):
    """Cortex at ADC 680 (relative 0.85, under the rADC limit) is caught by the mirror rule alone; shine-through by
    the rADC rule alone."""
    mirror_off, _ = _run(stand_in, 680.0, SegmentConfig(artefact_zone_adc=None, mirror_dwi_min=None))
    assert mirror_off["cortex"] > 0.5 and mirror_off["shine"] == 0.0, mirror_off
    radc_off, _ = _run(stand_in, 680.0, SegmentConfig(artefact_zone_adc=None, max_lesion_radc=None))
    assert radc_off["cortex"] == 0.0 and radc_off["shine"] > 0.5, radc_off
    assert 680.0 / 800.0 > CORE_RADC  # near-normal: no core that would exempt it from the mirror rule
