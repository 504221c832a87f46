"""Output grid = input DWI grid, and lesions come back where they were drawn (world mm)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

import stroke_seg
from stroke_seg.synthetic import generator as synth

ACQ = {
    "lps": synth.Acquisition(voxel_size=(2.0, 2.0, 2.0), orientation="LPS"),
    "oblique": synth.Acquisition(
        voxel_size=(1.5, 1.5, 3.0), orientation="RAS", tilt_deg=(7.0, -5.0, 4.0), oblique=True
    ),
    "anisotropic-1.2x1.2x5": synth.Acquisition(
        voxel_size=(1.2, 1.2, 5.0), orientation="LPS", tilt_deg=(3.0, 0.0, -2.0)
    ),
    "int16": synth.Acquisition(voxel_size=(2.0, 2.0, 2.0), dtype="int16", adc_unit="1e-6", skull_stripped=True),
}


@pytest.mark.parametrize("name", list(ACQ), ids=list(ACQ))
def test_mask_on_input_grid_and_lesion_at_world_position(name):
    c = synth.make_case(11, "control", ACQ[name])
    dwi = np.asarray(c.dwi.dataobj).astype(np.float32)
    adc = np.asarray(c.adc.dataobj).astype(np.float32)
    affine = c.dwi.affine
    # Draw a 9 mm-radius acute lesion around a known world point: 22 mm left of the field-of-view
    # centre (deep grey/white matter of the left hemisphere).
    centre = affine[:3, :3] @ ((np.asarray(dwi.shape) - 1) / 2) + affine[:3, 3]
    target = centre + np.array([-22.0, 6.0, 8.0])
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in dwi.shape], indexing="ij"), -1)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    ball = np.linalg.norm(world - target, axis=-1) <= 9.0
    dwi[ball] *= 2.0
    adc[ball] = 400.0
    dtype = np.int16 if ACQ[name].dtype == "int16" else np.float32
    dwi_img = nib.Nifti1Image(dwi.astype(dtype), affine, c.dwi.header)
    adc_img = nib.Nifti1Image(adc.astype(dtype), affine, c.adc.header)

    result = stroke_seg.segment({"dwi": dwi_img, "adc": adc_img}, model="adc-threshold")
    assert result.mask.shape == c.dwi.shape
    np.testing.assert_array_equal(result.mask.affine, affine)
    assert result.mask.get_data_dtype() == np.uint8
    assert result.metrics.count >= 1
    biggest = result.metrics.lesions[0]
    voxel_diag = float(np.linalg.norm(np.sqrt((affine[:3, :3] ** 2).sum(0))))
    assert np.linalg.norm(np.asarray(biggest.centroid_mm) - target) < voxel_diag
    drawn_ml = ball.sum() * abs(np.linalg.det(affine[:3, :3])) / 1000
    assert biggest.volume_ml == pytest.approx(drawn_ml, rel=0.35)
    # the mask array itself overlaps the drawn ball in storage order
    mask = np.asarray(result.mask.dataobj) > 0
    assert (mask & ball).sum() / ball.sum() > 0.6
