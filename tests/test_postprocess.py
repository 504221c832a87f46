"""Post-processing rules: small components and components without restricted diffusion."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from stroke_seg import SegmentConfig
from stroke_seg.pipeline.postprocess import (
    grow_to_dwi_edges,
    remove_small_components,
    remove_unrestricted_components,
    threshold_and_filter,
)


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
    assert threshold_and_filter(prob, 0.5, 0.01, 0.001).sum() == 64


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


def _blurred_ball(radius_mm: float = 6.0, contrast: float = 0.8):
    """A DWI-bright ball (1 mm voxels) whose edge voxels are part lesion (sub-voxel partial volume)."""
    g = np.indices((40, 40, 40)).astype(np.float32) - 19.6
    sub = np.stack(np.meshgrid(*[np.arange(4) / 4 - 0.375] * 3, indexing="ij")).reshape(3, -1)
    frac = np.mean([np.sqrt(((g + s[:, None, None, None]) ** 2).sum(0)) < radius_mm for s in sub.T], axis=0)
    dwi = 1.0 + contrast * frac
    adc = np.full(frac.shape, 800.0, np.float32)
    return frac, dwi.astype(np.float32), adc


def test_refine_edges_grows_a_lesion_to_its_half_partial_volume_edge():
    frac, dwi, adc = _blurred_ball()
    truth = frac >= 0.5
    seed = frac >= 0.999  # what a coarse model draws: only the full-lesion voxels
    assert truth.sum() > seed.sum() + 100
    grown = grow_to_dwi_edges(seed, dwi, adc, (1.0, 1.0, 1.0), level=0.5)
    assert (grown & seed).sum() == seed.sum()  # nothing removed
    assert (grown ^ truth).sum() <= 0.02 * truth.sum()  # the half-way DWI level is the 50 % partial-volume edge
    assert not grown[frac == 0].any()  # never into plain tissue


def test_refine_edges_stops_at_csf_at_its_reach_and_at_the_brain():
    frac, dwi, adc = _blurred_ball()
    seed = frac >= 0.999
    edge = (frac > 0) & ~seed  # the partial-volume voxels that a plain run adds (previous test)
    radius = np.sqrt(((np.indices(frac.shape) - 19.6) ** 2).sum(0))
    # a bright plateau (DWI 1.5, lesion 1.8, tissue 1.0) out to 12 mm from the centre: growth stops after reach_mm
    plateau = np.where(radius < 12, np.maximum(dwi, 1.5), 1.0).astype(np.float32)
    grown = grow_to_dwi_edges(seed, plateau, adc, (1.0, 1.0, 1.0), level=0.3, reach_mm=2.0, shell_mm=(8.0, 12.0))
    dist = ndi.distance_transform_edt(~seed)
    assert grown.sum() > seed.sum() + 100 and dist[grown].max() <= 2.0
    assert (
        grow_to_dwi_edges(seed, plateau, adc, (1.0, 1.0, 1.0), level=0.3, reach_mm=4.0, shell_mm=(8.0, 12.0)).sum()
        > grown.sum()
    )
    # CSF (ADC >= max_adc) and voxels outside the brain are never added
    assert grow_to_dwi_edges(seed, dwi, adc, (1.0, 1.0, 1.0))[edge].any()
    csf = np.where(edge, 3000.0, adc).astype(np.float32)
    assert (grow_to_dwi_edges(seed, dwi, csf, (1.0, 1.0, 1.0)) == seed).all()
    assert (grow_to_dwi_edges(seed, dwi, adc, (1.0, 1.0, 1.0), brain=~edge) == seed).all()
    with pytest.raises(ValueError, match="level"):
        grow_to_dwi_edges(seed, dwi, adc, (1.0, 1.0, 1.0), level=1.0)


def _map_edge(adc: np.ndarray) -> np.ndarray:
    """Voxels of the ADC map's support with an in-plane face neighbour outside it (interior holes filled): they mix
    tissue with the zeros outside, whatever the edge width a guard chooses (at least one voxel in-plane)."""
    support = ndi.binary_fill_holes(adc > 0)
    padded = np.pad(support, 1)
    inner = padded[2:, 1:-1, 1:-1] & padded[:-2, 1:-1, 1:-1] & padded[1:-1, 2:, 1:-1] & padded[1:-1, :-2, 1:-1]
    return support & ~inner


def _ball(shape, centre, radius_vox: float) -> np.ndarray:
    return ((np.indices(shape).transpose(1, 2, 3, 0) - np.asarray(centre)) ** 2).sum(-1) <= radius_vox**2


def test_physics_guard_removes_every_voxel_without_a_measurement_and_nothing_else():
    """Every voxel proposed (the whole volume): the guard leaves exactly the measurable brain voxels, i.e. none where
    the ADC is 0 (outside its map) or <= 50 (a fitting failure), none at the map's edge, none outside the brain, and
    all deep inside the map and the brain."""
    from stroke_seg.pipeline.postprocess import apply_physics_guard

    shape, voxel = (24, 24, 16), (2.0, 2.0, 2.0)
    grid = np.indices(shape).transpose(1, 2, 3, 0)
    support = (((grid - (11.5, 11.5, 7.5)) / (10.0, 10.0, 7.0)) ** 2).sum(-1) <= 1
    zero_blob, low_blob = _ball(shape, (8, 11, 8), 2), _ball(shape, (15, 11, 8), 2)
    adc = np.where(support, 800.0, 0.0).astype(np.float32)
    adc[zero_blob], adc[low_blob] = 0.0, 30.0
    brain = support & (grid[..., 1] < 18)  # the map reaches beyond the brain mask here
    kept = apply_physics_guard(np.ones(shape, bool), adc, brain, voxel)
    edge = _map_edge(adc)
    assert edge.sum() > 100 and (support & ~brain & ~edge).sum() > 20
    assert not kept[~support].any(), "kept where the ADC map has no value"
    assert not kept[zero_blob | low_blob].any(), "kept where the ADC is 0 or 30 inside the map"
    assert not kept[edge].any(), "kept at the ADC map's edge"
    assert not kept[~brain].any(), "kept outside the brain"
    deep = (ndi.distance_transform_edt(support, sampling=voxel) > 4.0) & brain
    deep &= ndi.distance_transform_edt(~(zero_blob | low_blob), sampling=voxel) > 4.0
    assert deep.sum() > 200 and kept[deep].all(), "removed voxels with a plausible measurement"
    assert not apply_physics_guard(np.zeros(shape, bool), adc, brain, voxel).any()


def test_physics_guard_on_a_case_built_to_tempt_it(monkeypatch):
    """DWI-bright blobs where the ADC is 0 (outside its map), 30 (a fitting failure) and at the ADC map's edge, all
    drawn by a stand-in model that takes every DWI-bright voxel, and restricted enough (median ADC <= 1000) that the
    component rules keep them: in ``segment()`` only the physics guard can remove them, and it must."""
    import nibabel as nib

    from conftest import phantom
    from stroke_seg import api, models, segment
    from stroke_seg.models.base import Backend
    from stroke_seg.pipeline import postprocess

    dwi, adc, truth = phantom(shape=(48, 48, 40), lesion_center=(24, 24, 20), radius=4.0)
    edge_blob = _ball(dwi.shape, (24, 5, 20), 3) & (adc > 0)  # at the map's edge, restricted
    zero_blob, low_blob = _ball(dwi.shape, (14, 24, 12), 3), _ball(dwi.shape, (34, 24, 28), 3)
    for blob in (edge_blob, zero_blob, low_blob):
        dwi[blob] = 260.0
    adc[edge_blob], adc[zero_blob], adc[low_blob] = 450.0, 0.0, 30.0
    edge = _map_edge(adc)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])

    class DwiBright(Backend):
        name = "dwi-bright-stand-in"

        def predict(self, volumes, *, config, progress, should_cancel):
            return (volumes.dwi > 1.5).astype(np.float32)  # brain-median normalised: lesion 2.0, blobs 2.6

    monkeypatch.setattr(models, "_FACTORIES", {**models._FACTORIES, DwiBright.name: DwiBright})
    monkeypatch.setattr(models, "_INSTANCES", dict(models._INSTANCES))
    config = SegmentConfig(artefact_zone_adc=None)  # no skull-base rule on a phantom that has no skull base

    def run() -> np.ndarray:
        files = {"dwi": nib.Nifti1Image(dwi, aff), "adc": nib.Nifti1Image(adc, aff)}
        return np.asarray(segment(files, model=DwiBright.name, config=config).mask.dataobj) > 0

    with monkeypatch.context() as m:  # the control: without the guard every temptation survives the other steps
        m.setattr(postprocess, "apply_physics_guard", lambda mask, *args, **kwargs: mask)
        m.setattr(api, "apply_physics_guard", lambda mask, *args, **kwargs: mask, raising=False)
        unguarded = run()
    assert unguarded[zero_blob].sum() > 50 and unguarded[low_blob].sum() > 50 and unguarded[edge].sum() > 5, (
        "the case no longer tempts: another step removes its blobs before the guard"
    )
    mask = run()
    assert (mask & truth).sum() > 0.5 * truth.sum()  # the real lesion stays
    assert not mask[zero_blob | low_blob].any(), "lesion where the ADC is 0 or 30"
    assert not (mask & (adc <= 50)).any(), "lesion where the ADC is <= 50"
    assert not mask[edge].any(), "lesion at the ADC map's edge"


def _rules_case():
    """Four lesions on a 1 mm grid (brain DWI median 100): one that obeys every rule, one too small, one whose median
    ADC is CSF-like, one darker than the brain median."""
    shape = (30, 30, 30)
    dwi = np.full(shape, 100.0, np.float32)
    adc = np.full(shape, 800.0, np.float32)
    mask = np.zeros(shape, bool)
    good, small, csf, dark = (
        np.s_[2:6, 2:6, 2:6],
        np.s_[10:12, 10:12, 10:12],
        np.s_[20:24, 2:6, 2:6],
        np.s_[2:6, 20:24, 20:24],
    )
    for s in (good, small, csf, dark):
        mask[s] = True
    dwi[good], adc[good] = 180.0, 450.0
    dwi[small], adc[small] = 180.0, 450.0  # 8 voxels = 0.008 mL < 0.01 mL
    dwi[csf], adc[csf] = 180.0, 2400.0
    dwi[dark], adc[dark] = 90.0, 450.0
    return mask, dwi, adc, good


def test_lesion_rules_remove_exactly_the_lesions_that_break_them():
    from stroke_seg.pipeline.postprocess import LesionRules, enforce_lesion_rules, lesion_rule_violations

    mask, dwi, adc, good = _rules_case()
    rules = LesionRules(min_lesion_ml=0.01, max_lesion_adc=1000.0, dwi_brain_median=100.0)
    found = lesion_rule_violations(mask, dwi, adc, 0.001, rules)
    assert sorted(v.reasons for v in found) == [("adc",), ("dark",), ("small",)]
    kept, removed = enforce_lesion_rules(mask, dwi, adc, 0.001, rules)
    expected = np.zeros_like(mask)
    expected[good] = True
    assert (kept == expected).all() and len(removed) == 3
    assert lesion_rule_violations(kept, dwi, adc, 0.001, rules) == ()
    # each rule alone: switching the others off keeps the lesions they would remove
    assert len(lesion_rule_violations(mask, dwi, adc, 0.001, LesionRules(0.0, None, 100.0))) == 1
    assert len(lesion_rule_violations(mask, dwi, adc, 0.001, LesionRules(0.0, 1000.0, None))) == 1
    assert len(lesion_rule_violations(mask, dwi, adc, 0.001, LesionRules(0.01, None, None))) == 1


def test_lesion_size_rule_is_exact_on_its_boundary():
    """A lesion of exactly min_lesion_ml is kept whatever float noise the voxel volume has; one voxel less is not."""
    from stroke_seg.pipeline.postprocess import LesionRules, lesion_rule_violations, min_voxels_for

    for voxel_ml in (0.001, 0.008, 0.001 * (1 + 1e-9), 0.001 * (1 - 1e-9), 0.0012 * 1.2 * 5 / 1.2):
        n = min_voxels_for(0.01, voxel_ml)
        assert n * voxel_ml >= 0.01 * (1 - 1e-6) and (n - 1) * voxel_ml < 0.01 * (1 - 1e-6) or n == 1
    mask = np.zeros((12, 12, 12), bool)
    mask[2:7, 2:4, 2] = True  # 10 voxels of 0.001 mL = 0.01 mL
    flat = np.ones(mask.shape, np.float32)
    rules = LesionRules(0.01, None, None)
    assert lesion_rule_violations(mask, flat, flat, 0.001 * (1 - 1e-9), rules) == ()
    mask[6, 3, 2] = False
    assert len(lesion_rule_violations(mask, flat, flat, 0.001, rules)) == 1


def test_a_backend_that_keeps_its_own_mask_gets_a_warning_not_a_removal():
    from stroke_seg.pipeline.postprocess import LesionRules, describe_violations, lesion_rule_violations

    mask, dwi, adc, _ = _rules_case()
    rules = LesionRules(0.01, 1000.0, 100.0)
    text = describe_violations(lesion_rule_violations(mask, dwi, adc, 0.001, rules), rules)
    assert text is not None and "3 lesion(s)" in text and "break the lesion rules" in text
    assert describe_violations((), rules) is None


def test_edge_growth_reach_is_the_same_under_affine_float_noise():
    """A 4 mm reach on a 2 mm grid sits exactly on voxel centres: voxel sizes a few 1e-8 mm apart give one answer."""
    frac, dwi, adc = _blurred_ball(radius_mm=6.0)
    seed = frac >= 0.999
    plateau = np.where(frac > 0, np.maximum(dwi, 1.5), 1.0).astype(np.float32)
    grown = [
        grow_to_dwi_edges(seed, plateau, adc, (v, v, v), level=0.3, reach_mm=4.0, shell_mm=(8.0, 12.0))
        for v in (2.0, 2.0 - 2e-8, 2.0 + 2e-8)
    ]
    assert (grown[0] == grown[1]).all() and (grown[0] == grown[2]).all()


@pytest.mark.parametrize(
    "voxel, reach_mm",
    [
        ((2.0, 2.0, 2.0), (4, 4, 4)),
        ((1.0, 1.0, 1.0), (4, 4, 4)),
        ((1.2, 1.2, 5.0), (3.6, 3.6, 5.0)),
        ((1.5, 1.5, 3.5), (4.5, 4.5, 3.5)),
        ((0.5, 0.5, 8.0), (4, 4, 8.0)),
    ],
    ids=["2mm", "1mm", "1.2x1.2x5", "1.5x1.5x3.5", "0.5x0.5x8"],
)
def test_rim_growth_reaches_the_same_mm_on_every_axis(voxel, reach_mm):
    """Along each axis the rim step reaches the voxels whose extent starts within RIM_MAX_MM (4 mm), whatever the voxel
    size of the other axes: one thick slice (it was crossed once per in-plane step: 15 mm on 1.2 x 1.2 x 5 mm)."""
    from stroke_seg.pipeline.postprocess import grow_into_rim

    prob = np.zeros((25, 25, 25), np.float32)
    prob[12, 12, 12] = 1.0
    grown = grow_into_rim(prob, np.ones_like(prob), voxel) > 0.5
    extent = (np.abs(np.argwhere(grown) - 12) * np.asarray(voxel)).max(axis=0)
    np.testing.assert_allclose(extent, reach_mm)
