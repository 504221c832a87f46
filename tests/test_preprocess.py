"""Preprocessing: orientation round trip, brain extraction (stripped, raw with skull, real raw scan), normalisation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from conftest import ROOT, phantom, require
from stroke_seg import load_case
from stroke_seg.pipeline.metrics import dice
from stroke_seg.pipeline.preprocess import BRAIN_ML_MAX, brain_mask, from_canonical, preprocess, to_canonical
from stroke_seg.synthetic import generator as synth

JHU = ROOT.parent / "shared" / "data" / "jhu-ads-subject01"


def test_orientation_round_trip_is_exact():
    rng = np.random.default_rng(0)
    data = rng.random((5, 6, 7)).astype(np.float32)
    affine = np.array([[0, 0, -2.0, 10], [-1.5, 0, 0, 5], [0, 3.0, 0, -4], [0, 0, 0, 1]])
    canonical, aff_c, ornt = to_canonical(data, affine)
    assert canonical.shape == (7, 5, 6)  # voxel axes 2, 0, 1 run along world x, y, z
    assert np.all(np.diag(aff_c[:3, :3]) > 0)  # RAS+: positive steps on the diagonal
    np.testing.assert_array_equal(from_canonical(canonical, ornt), data)


def _ellipsoid(r_vox):
    grid = np.ogrid[tuple(slice(-int(r), int(r) + 1) for r in r_vox)]
    return sum((g / max(float(r), 1e-6)) ** 2 for g, r in zip(grid, r_vox)) <= 1


def _with_bright_scalp(case, truth, vs, level):
    """Give a synthetic head a scalp as bright as ``level`` x the brain median, 3-9 mm outside the brain."""
    inner = ndi.binary_dilation(truth, _ellipsoid(np.maximum(1, np.round(3 / np.asarray(vs)))))
    outer = ndi.binary_dilation(truth, _ellipsoid(np.maximum(1, np.round(9 / np.asarray(vs)))))
    shell = outer & ~inner
    dwi, adc = case.dwi.copy(), case.adc.copy()
    dwi[shell] = level * np.median(case.dwi[truth])
    adc[shell] = 900.0
    return dwi, adc


@pytest.mark.parametrize(
    "voxel, stripped, scalp",
    [
        ((2.0, 2.0, 2.0), True, None),
        ((1.2, 1.2, 5.0), False, None),
        ((1.2, 1.2, 5.0), False, 1.0),
        ((1.5, 1.5, 3.5), False, 0.6),
    ],
    ids=["stripped-2mm", "raw-thick-slices", "raw-thick-bright-scalp", "raw-3.5mm-scalp"],
)
def test_brain_mask_on_synthetic_heads(voxel, stripped, scalp):
    acq = synth.Acquisition(
        voxel_size=voxel,
        orientation="LPS",
        tilt_deg=(3.0, 0.0, -6.0),
        skull_stripped=stripped,
        dtype="int16",
        adc_unit="mm2/s",
    )
    c = synth.make_case(5000, "emboli", acq)
    case = load_case(c.dwi, c.adc)
    truth = np.asarray(c.brain.dataobj) > 0
    dwi, adc = (case.dwi, case.adc) if scalp is None else _with_bright_scalp(case, truth, voxel, scalp)
    mask = brain_mask(dwi, adc, voxel)
    assert dice(mask, truth) >= 0.94
    assert mask.sum() <= 1.15 * truth.sum() <= BRAIN_ML_MAX / np.prod(voxel) * 1000 * 1.15
    if stripped:  # a skull-stripped input keeps its own support
        support = np.stack(
            [ndi.binary_fill_holes(s) for s in np.moveaxis(case.dwi != 0, 2, 0)], axis=2
        )  # int16 CSF may round to 0
        assert (mask & ~ndi.binary_dilation(support, iterations=1)).sum() == 0
        assert (support & ~mask).sum() / support.sum() < 0.02


def test_brain_mask_on_the_raw_clinical_scan():
    require(JHU.is_dir(), f"the raw clinical scan is not at {JHU}")
    import nibabel as nib

    case = load_case(JHU / "dwi.nii.gz", b0=JHU / "b0.nii.gz")
    reference = np.asarray(nib.load(str(JHU / "brain_mask.nii.gz")).dataobj) > 0
    vols = preprocess(case)
    mask = from_canonical(vols.brain, vols.ornt)
    assert dice(mask, reference) >= 0.90
    assert vols.outside_ml > 100  # the skull and scalp were there, and removed


def test_normalisation_divides_by_the_brain_median():
    dwi, adc, _ = phantom()
    import nibabel as nib

    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    dwi = np.where(adc > 0, dwi, 0.0)  # zeros outside the brain, as a skull-stripped scan has
    vols = preprocess(load_case(nib.Nifti1Image(dwi * 7.0, aff), nib.Nifti1Image(adc, aff)))
    assert np.median(vols.dwi[vols.brain]) == pytest.approx(1.0, abs=0.05)
    assert vols.outside_ml < 1.0  # zeros outside the phantom's brain: nothing was stripped


def test_affine_float_noise_cannot_move_voxel_sizes_or_the_brain_mask():
    """Voxel sizes 1e-8 mm apart (the float noise a converter leaves) round to one value, so every radius, step and
    working-grid size computed from them, and the brain mask, are the same."""
    from stroke_seg.pipeline.preprocess import voxel_sizes

    acq = synth.Acquisition(voxel_size=(2.0, 2.0, 3.0), skull_stripped=False, noise=0.04)
    c = synth.make_case(5001, "lacunar", acq)
    case = load_case(c.dwi, c.adc)
    noisy = case.affine.copy()
    noisy[:3, :3] *= 1 - 1e-8
    assert voxel_sizes(noisy) == voxel_sizes(case.affine) == (2.0, 2.0, 3.0)
    assert (brain_mask(case.dwi, case.adc, voxel_sizes(noisy)) == brain_mask(case.dwi, case.adc, (2.0, 2.0, 3.0))).all()


def _blobs(seed: int) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A random mask of a few balls and shells (holes, slice holes, walls touching the grid's faces), or empty."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(6, 40, 3))
    grid = np.indices(shape).astype(np.float32)
    mask = np.zeros(shape, bool)
    for _ in range(int(rng.integers(0, 5))):
        centre = rng.uniform(-3, np.asarray(shape) + 3)[:, None, None, None]
        r = np.sqrt((((grid - centre) / rng.uniform(2, 15, 3)[:, None, None, None]) ** 2).sum(0))
        mask |= (r <= 1) & (r >= rng.uniform(0, 0.9)) if rng.random() < 0.5 else r <= 1
    mask &= rng.random(shape) > rng.choice([0.0, 0.02])  # pinholes
    return mask, tuple(float(v) for v in rng.choice([1.0, 1.5, 2.0, 5.0], 3))


@pytest.mark.parametrize("seed", range(60))
def test_box_bounded_hole_filling_and_depth_equal_the_whole_grids(seed):
    """``filled`` and the normalisation interior work inside the mask's bounding box for speed; the answer must be
    the whole grid's, voxel for voxel, whatever the mask (empty, touching the faces, hollow, pierced)."""
    from scipy import ndimage as ndi

    from stroke_seg.pipeline.brain_extraction import filled
    from stroke_seg.pipeline.preprocess import NORMALISATION_DEPTH_MM, _interior

    mask, vs = _blobs(seed)
    whole = ndi.binary_fill_holes(np.stack([ndi.binary_fill_holes(s) for s in np.moveaxis(mask, 2, 0)], axis=2))
    np.testing.assert_array_equal(filled(mask), whole)
    coarse, interior = _interior(mask, vs)
    b = mask[coarse]
    step = np.asarray([c.step or 1 for c in coarse])
    depth = ndi.distance_transform_edt(np.pad(b, 1), sampling=np.asarray(vs) * step)[1:-1, 1:-1, 1:-1]
    core = b & (depth > NORMALISATION_DEPTH_MM)
    np.testing.assert_array_equal(interior, core if core.sum() >= 1000 else b)
