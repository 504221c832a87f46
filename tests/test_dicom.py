"""DICOM input: synthetic scanner exports converted with the real dcm2niix, series chosen by b-value and type."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import require
from stroke_seg import InvalidImageError, segment
from stroke_seg.cli import main as cli_main
from stroke_seg.io.dicom import dcm2niix_path, load_dicom
from stroke_seg.pipeline.metrics import dice
from stroke_seg.synthetic import generator as synth
from stroke_seg.synthetic.dicom_export import write_dicom_case, zip_folder


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """One synthetic raw head (int16) as NIfTI (dwi, b0, adc) and as three DICOM exports."""
    try:
        import pydicom  # noqa: F401

        dcm2niix_path()
    except (ImportError, InvalidImageError) as err:
        require(False, f"DICOM tools missing: {err}")
    root = tmp_path_factory.mktemp("dicom")
    c = synth.make_case(
        77,
        "lacunar",
        synth.Acquisition(voxel_size=(2.0, 2.0, 2.0), orientation="RAS", dtype="int16", skull_stripped=False),
    )
    b0 = c.b0()  # the b0 this DWI and ADC imply
    nii = {"dwi": root / "dwi.nii.gz", "b0": root / "b0.nii.gz", "adc": root / "adc.nii.gz"}
    nib.save(c.dwi, str(nii["dwi"]))
    nib.save(b0, str(nii["b0"]))
    nib.save(c.adc, str(nii["adc"]))
    b0_img = nib.load(str(nii["b0"]))
    exports = {
        "b0_b1000": zip_folder(write_dicom_case(root / "a", c.dwi, b0_img), root / "b0_b1000.zip"),
        "trace_b0_adc": write_dicom_case(root / "b", c.dwi, b0_img, c.adc, b0_in_dwi_series=False),
        "b0_only": zip_folder(write_dicom_case(root / "c", c.dwi, b0_img), root / "unused.zip"),
    }
    # an export without any b=1000 volume: the b0 series alone
    only_b0 = root / "d"
    shutil.copytree(root / "b" / "b0", only_b0 / "b0")
    exports["b0_only"] = zip_folder(only_b0, root / "b0_only.zip")
    # two DWI series
    two = root / "e"
    write_dicom_case(two / "first", c.dwi, b0_img)
    write_dicom_case(two / "second", c.dwi, b0_img, b0_in_dwi_series=False)
    exports["two_dwi"] = two
    # an oblique LPS acquisition: its own NIfTI files and export
    o = synth.make_case(
        78,
        "lacunar",
        synth.Acquisition(
            voxel_size=(2.0, 2.0, 2.0),
            orientation="LPS",
            tilt_deg=(8.0, -5.0, 4.0),
            oblique=True,
            dtype="int16",
            skull_stripped=False,
        ),
    )
    ob0 = o.b0()
    (root / "oblique").mkdir()
    nib.save(o.dwi, str(root / "oblique" / "dwi.nii.gz"))
    nib.save(ob0, str(root / "oblique" / "b0.nii.gz"))
    exports["oblique_lps"] = zip_folder(
        write_dicom_case(root / "o", o.dwi, nib.load(str(root / "oblique" / "b0.nii.gz"))), root / "oblique.zip"
    )
    nii["oblique"] = {"dwi": root / "oblique" / "dwi.nii.gz", "b0": root / "oblique" / "b0.nii.gz"}
    return nii, exports


def _canonical_mask(path):
    return np.asarray(nib.as_closest_canonical(nib.load(str(path))).dataobj) > 0


@pytest.mark.parametrize(
    "export, nifti_inputs",
    [
        pytest.param("b0_b1000", ("dwi", "b0"), marks=pytest.mark.slow),  # dcm2niix + ADC from b0: ~9 s
        ("trace_b0_adc", ("dwi", "adc")),
        ("oblique_lps", ("dwi", "b0")),
    ],
    ids=["zip-b0+b1000-no-adc", "folder-trace+b0+adc", "oblique-LPS-b0+b1000"],
)
def test_cli_dicom_mask_equals_the_nifti_path(scan, tmp_path, export, nifti_inputs):
    nii, exports = scan
    out_dicom, out_nifti = tmp_path / "dicom_mask.nii.gz", tmp_path / "nifti_mask.nii.gz"
    assert (
        cli_main(["segment", "--dicom", str(exports[export]), "--model", "adc-threshold", "--out", str(out_dicom)]) == 0
    )
    source = nii["oblique"] if export == "oblique_lps" else nii
    args = ["segment", "--model", "adc-threshold", "--out", str(out_nifti)]
    for key in nifti_inputs:
        args += [f"--{key}", str(source[key])]
    assert cli_main(args) == 0
    a, b = _canonical_mask(out_dicom), _canonical_mask(out_nifti)
    assert a.shape == b.shape and b.any()
    assert dice(a, b) == 1.0


def test_dicom_series_choice_and_notes(scan, tmp_path):
    _, exports = scan
    chosen = load_dicom(exports["trace_b0_adc"], tmp_path)
    assert chosen.adc is not None and chosen.b0 is not None and chosen.b_value == 1000
    assert any("ADC: series 5" in n for n in chosen.notes)
    r = segment(chosen.as_inputs(), model="adc-threshold")
    assert r.case.adc_unit == "1e-6 mm2/s"  # the ADC series is used, not the b0


def _listing(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.mark.parametrize("export", ["trace_b0_adc", "b0_b1000"], ids=["folder", "zip"])
def test_dicom_conversion_writes_only_inside_its_work_folder(scan, tmp_path, monkeypatch, export):
    """The converter is pointed at the work folder, a zip is unpacked there, and nothing is written next to the
    export, into it, or into the temporary folder."""
    _, exports = scan
    source = exports[export]
    beside = source if source.is_dir() else source.parent  # the export's folder, or the folder holding the zip
    before = _listing(beside)
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    commands = []
    real_run = subprocess.run

    def spy(cmd, *args, **kwargs):
        commands.append([str(c) for c in cmd])
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", spy)
    work = tmp_path / "work"
    chosen = load_dicom(source, work)
    segment(chosen.as_inputs(), model="adc-threshold")
    converter = [c for c in commands if "-o" in c]
    assert len(converter) == 1
    out, given = Path(converter[0][converter[0].index("-o") + 1]), Path(converter[0][-1])
    assert out.resolve().is_relative_to(work.resolve()) and list(out.glob("*.nii.gz"))
    if source.is_dir():
        assert given == source  # read in place
    else:
        assert given.resolve().is_relative_to(work.resolve()) and any(given.rglob("IM*"))  # unpacked in work
    assert _listing(beside) == before
    assert not any(temp.iterdir())


@pytest.mark.parametrize(
    "export, match",
    [("b0_only", "no series with b=1000"), ("two_dwi", "two or more")],
    ids=["no-b1000", "two-dwi-series"],
)
def test_bad_dicom_exports_give_clear_errors(scan, tmp_path, export, match):
    _, exports = scan
    with pytest.raises(InvalidImageError, match=match):
        load_dicom(exports[export], tmp_path)


def test_not_dicom_is_a_clear_error(tmp_path):
    bogus = tmp_path / "scan.zip"
    bogus.write_bytes(b"not a zip")
    with pytest.raises(InvalidImageError, match="scan.zip: expected a folder or a .zip"):
        load_dicom(bogus, tmp_path / "w")


def test_cli_writes_a_dicom_seg_that_matches_the_mask(scan, tmp_path):
    """--seg: a binary DICOM Segmentation referencing the DWI series; its frames hold the NIfTI mask's voxels."""
    _, exports = scan
    out, seg_path = tmp_path / "mask.nii.gz", tmp_path / "mask.dcm"
    assert (
        cli_main(
            [
                "segment",
                "--dicom",
                str(exports["b0_b1000"]),
                "--model",
                "adc-threshold",
                "--out",
                str(out),
                "--seg",
                str(seg_path),
            ]
        )
        == 0
    )
    import pydicom

    seg = pydicom.dcmread(seg_path)
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert seg.SegmentSequence[0].SegmentLabel == "acute ischemic lesion"
    frames = seg.pixel_array.astype(bool)
    mask = np.asarray(nib.load(str(out)).dataobj) > 0
    assert frames.shape[0] == mask.shape[2] and frames.sum() == mask.sum()  # one frame per source slice, same voxels
    referenced = {
        r.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence
    }
    assert len(referenced) == mask.shape[2]  # the b1000 slices only, not the b0 ones
    # read back with highdicom: one segment; each frame sits exactly on a referenced b1000 slice
    import highdicom as hd

    back = hd.seg.segread(seg_path)
    assert back.number_of_segments == 1
    positions = [
        tuple(round(float(v), 3) for v in fr.PlanePositionSequence[0].ImagePositionPatient)
        for fr in seg.PerFrameFunctionalGroupsSequence
    ]
    assert len(set(positions)) == mask.shape[2]
    orientation = seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    assert np.allclose([float(v) for v in orientation], [1, 0, 0, 0, -1, 0], atol=1e-4) or np.allclose(
        [float(v) for v in orientation], [-1, 0, 0, 0, -1, 0], atol=1e-4
    )


def test_seg_needs_dicom_input(scan, tmp_path):
    nii, _ = scan
    assert (
        cli_main(
            [
                "segment",
                "--dwi",
                str(nii["dwi"]),
                "--adc",
                str(nii["adc"]),
                "--out",
                str(tmp_path / "m.nii.gz"),
                "--seg",
                str(tmp_path / "m.dcm"),
            ]
        )
        == 2
    )
