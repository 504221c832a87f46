"""DICOM series geometry and volumes: NIfTI vs DICOM of the same data over generated geometries (storage order,
signs, tilt, integer type), the trace of several diffusion directions, and a 4D series read one volume at a time."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from conftest import require_dicom_tools
from stroke_seg.pipeline.metrics import dice


@pytest.mark.parametrize("isotropic", [False, True], ids=["directions-only", "with-isotropic-volume"])
def test_several_directions_give_the_trace(tmp_path, isotropic):
    """A diffusion series of b0 + three b=1000 directions: the DWI is the geometric mean of the three (the trace a
    scanner computes), or the series' own isotropic volume when it holds one (zero gradient vector)."""
    from stroke_seg.io.dicom import DicomSeries, _dwi_volume

    rng = np.random.default_rng(0)
    volumes = rng.uniform(50, 500, (6, 5, 4, 5)).astype(np.float32)
    path = tmp_path / "3_dwi.nii.gz"
    nib.save(nib.Nifti1Image(volumes, np.diag([2.0, 2.0, 2.0, 1.0])), str(path))
    bvecs = ((0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 0, 0) if isotropic else (0.6, 0.8, 0))
    bvals = (0.0, 1000.0, 1000.0, 1000.0, 1000.0 if isotropic else 0.0)
    series = DicomSeries(path, "dwi", 3, ("ORIGINAL", "PRIMARY", "DIFFUSION"), bvals, bvecs)
    image, first, note = _dwi_volume(series, 1000.0, "export.zip series 3")
    if isotropic:
        assert first == 4 and "isotropic" in note
        np.testing.assert_allclose(image.data, volumes[..., 4], rtol=1e-6)
    else:
        assert first == 1 and "geometric mean" in note
        np.testing.assert_allclose(image.data, np.cbrt(volumes[..., 1] * volumes[..., 2] * volumes[..., 3]), rtol=1e-5)


def test_a_4d_series_is_read_one_volume_at_a_time(tmp_path, monkeypatch):
    """The voxel limit applies to the volume read, checked from the header before reading: a series of many
    volumes whose one volume fits is read (only that volume), one whose volume does not fit is refused by name."""
    from stroke_seg.errors import InputTooLargeError
    from stroke_seg.io.dicom import DicomSeries, _volume

    volumes = np.random.default_rng(1).uniform(0, 100, (8, 7, 6, 12)).astype(np.float32)
    path = tmp_path / "7_dti.nii.gz"
    nib.save(nib.Nifti1Image(volumes, np.diag([2.0, 2.0, 2.0, 1.0])), str(path))
    series = DicomSeries(path, "dti", 7, ("ORIGINAL", "PRIMARY", "DIFFUSION"), (1000.0,) * 12)
    monkeypatch.setenv("STROKE_SEG_MAX_VOXELS", str(8 * 7 * 6 * 2))  # two volumes' worth: the whole series is not
    image = _volume(series, 5, "export.zip series 7")
    np.testing.assert_array_equal(image.data, volumes[..., 5])
    monkeypatch.setenv("STROKE_SEG_MAX_VOXELS", str(8 * 7 * 6 - 1))
    with pytest.raises(InputTooLargeError, match="export.zip series 7"):
        _volume(series, 5, "export.zip series 7")


# --- NIfTI vs DICOM of the same data, as a property over generated geometries (tiny phantoms, adc-threshold) -----


def _rotation(deg) -> np.ndarray:
    x, y, z = np.radians(deg)
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    return rz @ ry @ rx


GEOMETRIES = {
    # id: (voxel size mm, axis order of storage (a permutation of RAS axes), signs, tilt degrees, stored dtype)
    "axial-RAS-int16": ((2.0, 2.0, 2.0), (0, 1, 2), (1, 1, 1), (0, 0, 0), "int16"),
    "axial-LPS-uint16": ((2.0, 2.0, 2.0), (0, 1, 2), (-1, -1, 1), (0, 0, 0), "uint16"),
    "oblique-thick-uint16": ((1.5, 1.5, 4.0), (0, 1, 2), (-1, -1, 1), (9.0, -6.0, 4.0), "uint16"),
    "descending-slices": ((2.0, 2.0, 2.5), (0, 1, 2), (1, -1, -1), (0, 4.0, 0), "int16"),
    "sagittal-oblique": ((2.0, 2.0, 2.0), (1, 2, 0), (1, -1, 1), (5.0, 0, -7.0), "uint16"),
    "coronal": ((2.0, 2.0, 3.0), (0, 2, 1), (1, -1, 1), (0, 0, 0), "int16"),
}


def _stored(geometry) -> dict[str, nib.Nifti1Image]:
    """The phantom's dwi, adc and b0 stored as ``geometry`` says: voxel order, signs, tilt, integer type."""
    from conftest import phantom

    voxel, order, signs, tilt, dtype = geometry
    dwi, adc, _ = phantom(seed=3)
    b0 = dwi * np.exp(adc * 1e-3)  # b=1000 s/mm², ADC in 1e-6 mm²/s
    columns = np.eye(3)[:, list(order)] * np.asarray(signs, float) * np.asarray(voxel, float)
    affine = np.eye(4)
    affine[:3, :3] = _rotation(tilt) @ columns
    affine[:3, 3] = -affine[:3, :3] @ (np.asarray(dwi.shape) / 2) + np.array([1.3, -17.2, 8.9])
    info = np.iinfo(dtype)
    return {
        name: nib.Nifti1Image(np.clip(np.round(data), info.min, info.max).astype(dtype), affine)
        for name, data in (("dwi", dwi), ("adc", adc), ("b0", b0))
    }


@pytest.mark.parametrize("geometry", list(GEOMETRIES.values()), ids=list(GEOMETRIES))
def test_nifti_and_dicom_of_the_same_data_agree(geometry, tmp_path):
    """Written as DICOM (b0 + b1000 + ADC, de-identified) and read back through dcm2niix, each volume holds the
    NIfTI's voxels at the same world positions (up to dcm2niix's 5-decimal direction cosines), and adc-threshold
    gives the same mask from both (Dice >= 0.99, the issue's storage-variant target)."""
    require_dicom_tools()
    from stroke_seg import segment
    from stroke_seg.io.dicom import load_dicom
    from stroke_seg.synthetic.dicom_export import write_dicom_case, zip_folder

    images = _stored(geometry)
    dtype = geometry[-1]
    export = write_dicom_case(
        tmp_path / "export", images["dwi"], images["b0"], images["adc"], pixel_dtype=dtype, deidentified="missing"
    )
    chosen = load_dicom(zip_folder(export, tmp_path / "export.zip"), tmp_path / "work")
    for got, want in ((chosen.dwi, images["dwi"]), (chosen.b0, images["b0"]), (chosen.adc, images["adc"])):
        a = nib.as_closest_canonical(nib.Nifti1Image(got.data, got.geometry.affine))
        b = nib.as_closest_canonical(want)
        assert np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj, dtype=np.float32)), got.name
        assert np.allclose(a.affine, b.affine, atol=0.01), (a.affine, b.affine)
    from_dicom = segment(chosen.as_inputs(), model="adc-threshold")
    from_nifti = segment({"dwi": images["dwi"], "adc": images["adc"]}, model="adc-threshold")
    a = np.asarray(nib.as_closest_canonical(from_dicom.mask).dataobj) > 0
    b = np.asarray(nib.as_closest_canonical(from_nifti.mask).dataobj) > 0
    print(f"NIfTI vs DICOM: Dice {dice(a, b):.4f}, {a.sum()} vs {b.sum()} voxels")
    assert b.sum() > 50 and dice(a, b) >= 0.99
