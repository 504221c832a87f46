"""Approximate MNI placement and the skull-base susceptibility-zone rule."""

from __future__ import annotations

import numpy as np
import pytest

import stroke_seg
from stroke_seg import SegmentConfig
from stroke_seg.pipeline.anatomy import (
    MNI_BRAIN_MEAN_MM,
    MNI_BRAIN_STD_MM,
    SUSCEPTIBILITY_SITES_MNI,
    MniMap,
    in_susceptibility_zone,
)
from stroke_seg.pipeline.postprocess import filter_components
from stroke_seg.pipeline.preprocess import preprocess
from stroke_seg.synthetic import generator as synth

IDENTITY = MniMap(MNI_BRAIN_MEAN_MM, MNI_BRAIN_STD_MM)  # world mm == MNI mm


def test_mni_constants_match_the_template():
    tpl = synth._template()
    idx = np.argwhere(tpl.brain > 0.5)
    world = idx @ tpl.affine[:3, :3].T + tpl.affine[:3, 3]
    np.testing.assert_allclose(world.mean(0), MNI_BRAIN_MEAN_MM, atol=0.05)
    np.testing.assert_allclose(world.std(0), MNI_BRAIN_STD_MM, atol=0.05)


@pytest.mark.parametrize("stripped", [True, False])
def test_mni_map_places_a_synthetic_head(stripped):
    # Oblique storage: the case's world coordinates are MNI mm, so the fitted map should be close to identity.
    acq = synth.Acquisition(
        voxel_size=(2.0, 2.0, 2.0), orientation="LPS", tilt_deg=(6.0, -4.0, 3.0), oblique=True, skull_stripped=stripped
    )
    c = synth.make_case(4242, "control", acq)
    volumes = preprocess(stroke_seg.load_case(c.dwi, c.adc))
    mni = MniMap.from_brain(volumes.brain, volumes.affine)
    sites = np.concatenate([SUSCEPTIBILITY_SITES_MNI, SUSCEPTIBILITY_SITES_MNI * [-1, 1, 1]])
    err = np.linalg.norm(mni(sites) - sites, axis=1)
    assert err.max() < 10.0, err  # a centimetre: well inside the 20 mm zones


def test_mni_map_needs_a_brain():
    with pytest.raises(ValueError, match="at least 1000 voxels"):
        MniMap.from_brain(np.zeros((10, 10, 10), bool), np.eye(4))


def test_zones_cover_the_skull_base_not_the_centrum_semiovale():
    assert in_susceptibility_zone(
        np.array([[-38.0, 12.0, -30.0], [12.0, 40.0, -20.0]])
    ).all()  # left temporal pole, gyrus rectus
    # centrum semiovale, occipital, and the infratentorial generator sites (cerebellum, pons) are not in a zone
    assert not in_susceptibility_zone(
        np.array([[-28.0, -10.0, 40.0], [20.0, -90.0, 5.0], [-32.0, -62.0, -40.0], [5.0, -30.0, -38.0]])
    ).any()


def _world_grid(shape=(100, 120, 100)):
    """A 2 mm RAS grid whose world coordinates are MNI mm (origin at MNI (-99, -139, -89))."""
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = (-99.0, -139.0, -89.0)
    return np.zeros(shape, bool), aff


def _blob_at(mask, aff, mni_xyz, r=2):
    ijk = np.round(np.linalg.solve(aff[:3, :3], np.asarray(mni_xyz) - aff[:3, 3])).astype(int)
    mask[tuple(slice(i - r, i + r) for i in ijk)] = True
    return tuple(ijk)


def test_zone_rule_drops_unrestricted_components_at_the_skull_base_only():
    mask, aff = _world_grid()
    adc = np.full(mask.shape, 800.0, np.float32)
    pole = _blob_at(mask, aff, (40.0, 10.0, -30.0))  # temporal pole, ADC 800: a susceptibility band
    deep = _blob_at(mask, aff, (-28.0, -10.0, 40.0))  # centrum semiovale, ADC 800: kept
    core_mask, _ = _world_grid()
    core = _blob_at(core_mask, aff, (-40.0, 10.0, -30.0), r=3)  # other temporal pole, 216 voxels: kept
    adc[core_mask] = 800.0
    ring = np.argwhere(core_mask)
    adc[tuple(ring[: int(0.3 * len(ring))].T)] = 450.0  # a core in 30 % of it: its median (800) is not what counts
    mask |= core_mask
    kept = filter_components(mask, adc=adc, zone_max_adc=620.0, affine=aff, mni=IDENTITY)
    assert not kept[pole] and kept[deep] and kept[core]
    assert filter_components(mask, adc=adc, zone_max_adc=None, affine=aff, mni=IDENTITY).sum() == mask.sum()
    assert filter_components(mask, adc=adc, zone_max_adc=620.0, affine=aff, mni=None).sum() == mask.sum()


def test_artefact_zone_adc_is_validated_and_recorded():
    with pytest.raises(ValueError, match="artefact_zone_adc"):
        SegmentConfig(artefact_zone_adc=-1.0)
    assert SegmentConfig(artefact_zone_adc=None).artefact_zone_adc is None
    assert SegmentConfig().artefact_zone_adc == 620.0
