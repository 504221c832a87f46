"""Post-processing rules: small components and components without restricted diffusion."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from stroke_seg import SegmentConfig
from stroke_seg.postprocess import (
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


def test_physics_guard_on_a_case_built_to_tempt_it(tmp_path):
    """DWI-bright blobs where the ADC is 0 (outside its map), <= 50 (a fitting failure), at the ADC map's edge and
    outside the brain: a voxel there has no plausible diffusion measurement and must never be lesion."""
    import nibabel as nib

    from conftest import phantom
    from stroke_seg import segment
    from stroke_seg.postprocess import MIN_LESION_ADC, apply_physics_guard, measurable_diffusion

    dwi, adc, truth = phantom(shape=(48, 48, 40), lesion_center=(24, 24, 20), radius=4.0)
    grid = np.indices(dwi.shape).transpose(1, 2, 3, 0)
    support = adc > 0
    edge_blob = (((grid - np.array([24, 5, 20])) ** 2).sum(-1) <= 9) & support  # at the map's edge
    zero_blob = ((grid - np.array([14, 24, 12])) ** 2).sum(-1) <= 9
    low_blob = ((grid - np.array([34, 24, 28])) ** 2).sum(-1) <= 9
    for blob in (edge_blob, zero_blob, low_blob):
        dwi[blob] = 260.0
    adc[zero_blob] = 0.0
    adc[low_blob] = 30.0
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    files = {"dwi": nib.Nifti1Image(dwi, aff), "adc": nib.Nifti1Image(adc, aff)}
    unguarded = (dwi > 180) & (adc < 620)
    assert unguarded[zero_blob].any() and unguarded[low_blob].any()  # the rule alone would take them
    result = segment(files, model="adc-threshold")
    mask = np.asarray(result.mask.dataobj) > 0
    allowed = (adc > MIN_LESION_ADC) & measurable_diffusion(adc, (2.0, 2.0, 2.0))
    assert mask.any() and (mask & truth).sum() > 0.5 * truth.sum()  # the real lesion stays
    assert not (mask & ~allowed).any()
    assert not mask[zero_blob].any() and not mask[low_blob].any()
    # the function itself: outside the brain mask nothing is kept either
    brain = np.zeros_like(support)
    assert not apply_physics_guard(truth, adc, brain, (2.0, 2.0, 2.0)).any()
