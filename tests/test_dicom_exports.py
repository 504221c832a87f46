"""DICOM as hospitals export it, converted with the real dcm2niix and read back with pydicom.

Exports written here (:mod:`stroke_seg.synthetic.dicom_export`): b-values only in a vendor's private tag (Siemens,
GE, Philips),
enhanced multi-frame MR, de-identified (type-2 patient/study attributes missing or empty, no PatientName), a DICOMDIR
File-set and a deep folder tree. Each must give the same images as the NIfTI files it was written from, and a SEG
that copies the patient/study attributes present and leaves the missing type-2 ones empty. A SEG that cannot be
written never loses the mask (CLI and job engine). The same oblique raw head as NIfTI and as a DICOM zip (uint16,
no PatientBirthDate) gives the same `unet` mask, with its ADC series and without it, from the CLI and from the app.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import struct

import nibabel as nib
import numpy as np
import pytest

from conftest import require, require_dicom_tools
from stroke_seg.cli import main as cli_main
from stroke_seg.pipeline.metrics import dice
from stroke_seg.synthetic import generator as synth

TYPE2 = ("PatientBirthDate", "PatientSex", "ReferringPhysicianName", "StudyID", "AccessionNumber")
IDENTIFIED = {
    "PatientName": "SYNTHETIC^CASE",
    "PatientBirthDate": "19500101",
    "PatientSex": "O",
    "ReferringPhysicianName": "SYNTHETIC^REFERRER",
    "StudyID": "1",
    "AccessionNumber": "ACC0001",
}
"""What :func:`write_dicom_case` writes when not de-identified: a SEG must carry these over."""

VARIANTS = {
    "siemens-private-b": ({"vendor": "siemens"}, "folder"),
    "ge-private-b": ({"vendor": "ge"}, "zip"),
    "philips-private-b": ({"vendor": "philips"}, "folder"),
    "enhanced-multiframe": ({"multiframe": True}, "zip"),
    "enhanced-multiframe-deidentified": ({"multiframe": True, "deidentified": "missing"}, "folder"),
    "deidentified-missing": ({"deidentified": "missing"}, "zip"),
    "deidentified-empty": ({"deidentified": "empty", "pixel_dtype": "uint16"}, "folder"),
    "dicomdir": ({"layout": "dicomdir"}, "folder"),
    "nested-folders-zip": ({"layout": "nested", "vendor": "siemens"}, "zip"),
}
"""Export variant -> (write_dicom_case options, given as a folder or as a .zip)."""


def _canonical(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return np.asarray(nib.as_closest_canonical(nib.Nifti1Image(np.asarray(data, np.float32), affine)).dataobj)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A 3 mm raw head (int16) and every export variant of it: {variant: (folder, path given to load_dicom)}."""
    require_dicom_tools()
    from stroke_seg.synthetic.dicom_export import write_dicom_case, zip_folder

    root = tmp_path_factory.mktemp("exports")
    c = synth.make_case(
        31, "lacunar", synth.Acquisition(voxel_size=(3.0, 3.0, 3.0), dtype="int16", skull_stripped=False)
    )
    slab = _lesion_slab(c.mask, 24)  # 24 slices through the lesion: enough for every check, a third of the files
    b0 = c.b0().slicer[slab]
    c = dataclasses.replace(c, dwi=c.dwi.slicer[slab], adc=c.adc.slicer[slab], mask=c.mask.slicer[slab])
    exports = {}
    for name, (options, given) in VARIANTS.items():
        folder = write_dicom_case(root / name, c.dwi, b0, c.adc, **options)
        exports[name] = (folder, zip_folder(folder, root / f"{name}.zip") if given == "zip" else folder)
    return c, b0, exports


def _lesion_slab(mask: nib.Nifti1Image, n: int) -> tuple[slice, slice, slice]:
    z = np.nonzero(np.asarray(mask.dataobj).any(axis=(0, 1)))[0]
    start = int(np.clip((z.min() + z.max()) // 2 - n // 2, 0, mask.shape[2] - n))
    return slice(None), slice(None), slice(start, start + n)


def _images(folder):
    import pydicom

    found = []
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != "DICOMDIR" and p.suffix.upper() != ".TXT":
            found.append(pydicom.dcmread(p, stop_before_pixels=True))
    return found


@pytest.mark.parametrize("variant", list(VARIANTS), ids=list(VARIANTS))
def test_written_exports_are_what_they_claim(small, variant):
    """Read back with pydicom: the b-value sits only where the variant puts it; de-identified files lack (or empty)
    the type-2 attributes and PatientName; enhanced files are one multi-frame object per series; a DICOMDIR indexes
    every image; the nested tree is deep, extensionless and holds a non-DICOM file."""
    from pydicom.fileset import FileSet

    c, _, exports = small
    folder, _ = exports[variant]
    options, _ = VARIANTS[variant]
    images = _images(folder)
    slices = c.dwi.shape[2]
    if options.get("multiframe"):
        assert all(ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4.1" for ds in images) and len(images) == 2
        dwi = next(ds for ds in images if int(ds.SeriesNumber) == 3)
        assert int(dwi.NumberOfFrames) == 2 * slices
        b = [float(f.MRDiffusionSequence[0].DiffusionBValue) for f in dwi.PerFrameFunctionalGroupsSequence]
        assert b == [0.0] * slices + [1000.0] * slices
    else:
        assert len(images) == 3 * slices  # b0 + b1000 + ADC, one file per slice
    diffusion = [ds for ds in images if int(ds.SeriesNumber) == 3]
    vendor = options.get("vendor", "standard")
    if vendor != "standard":
        assert all((0x0018, 0x9087) not in ds for ds in diffusion)
        group, creator, offset = {
            "siemens": (0x0019, "SIEMENS MR HEADER", 0x0C),
            "ge": (0x0043, "GEMS_PARM_01", 0x39),
            "philips": (0x2001, "Philips Imaging DD 001", 0x03),
        }[vendor]
        values = {float(np.ravel([ds.private_block(group, creator)[offset].value])[0]) % 1e9 for ds in diffusion}
        assert values == {0.0, 1000.0}
    deidentified = options.get("deidentified")
    for ds in images:
        if deidentified == "missing":
            assert not any(k in ds for k in (*TYPE2, "PatientName"))
        elif deidentified == "empty":
            assert all(k in ds and str(ds[k].value or "") == "" for k in (*TYPE2, "PatientName"))
        else:
            assert all(str(ds.get(k)) == v for k, v in IDENTIFIED.items())
    if options.get("pixel_dtype") == "uint16":
        assert {int(ds.PixelRepresentation) for ds in images} == {0}
    if options.get("layout") == "dicomdir":
        import pydicom

        fs = FileSet(pydicom.dcmread(folder / "DICOMDIR"))
        assert len(fs) == len(images) and all(p.parent.name.startswith("SE") for p in folder.rglob("IM*"))
    if options.get("layout") == "nested":
        files = [p for p in folder.rglob("*") if p.is_file()]
        assert (folder / "EXPORT" / "README.TXT").is_file()
        assert all(len(p.relative_to(folder).parts) >= 6 and p.suffix == "" for p in files if p.name != "README.TXT")


@pytest.mark.parametrize("variant", list(VARIANTS), ids=list(VARIANTS))
def test_each_export_gives_the_nifti_images_and_a_seg(small, variant, tmp_path):
    """load_dicom finds b=1000, the b0 and the ADC series whatever the variant, with the voxels of the NIfTI files
    they were written from; write_seg references the b1000 slices, holds the mask's voxels and copies the patient
    and study attributes present (type-2 ones the export lacks are present and empty)."""
    import highdicom as hd
    import pydicom

    from stroke_seg.io.dicom import load_dicom
    from stroke_seg.io.dicom_seg import write_seg

    c, b0, exports = small
    _, given = exports[variant]
    chosen = load_dicom(given, tmp_path / "work")
    assert chosen.b_value == 1000 and chosen.adc is not None and chosen.b0 is not None
    for image, reference in ((chosen.dwi, c.dwi), (chosen.b0, b0), (chosen.adc, c.adc)):
        got = _canonical(image.data, image.geometry.affine)
        want = _canonical(np.round(np.asanyarray(reference.dataobj, np.float32)), reference.affine)
        assert got.shape == want.shape
        assert np.array_equal(got, want), f"{image.name}: {np.abs(got - want).max()}"
    seg_path = write_seg(c.mask, chosen, tmp_path / "out" / "mask.dcm", algorithm="test", version="0")
    seg = pydicom.dcmread(seg_path)
    frames = seg.pixel_array.reshape(-1, *seg.pixel_array.shape[-2:]).astype(bool)
    truth = np.asarray(c.mask.dataobj) > 0
    assert seg.Modality == "SEG" and frames.shape[0] == c.dwi.shape[2] and frames.sum() == truth.sum() > 0
    references = [item for series in seg.ReferencedSeriesSequence for item in series.ReferencedInstanceSequence]
    assert references
    deidentified = VARIANTS[variant][0].get("deidentified")
    for keyword in (*TYPE2, "PatientName"):
        assert keyword in seg  # type 2: always present
        assert str(seg[keyword].value or "") == ("" if deidentified else IDENTIFIED[keyword])
    assert hd.seg.segread(seg_path).number_of_segments == 1


def test_b_values_from_vendor_private_tags_in_any_encoding():
    """header_b_value reads the standard attribute first, else Siemens/GE (less GE's 1e9)/Philips private tags,
    also when an implicit-VR file left them as raw bytes (VR UN)."""
    require_dicom_tools()
    from pydicom.dataset import Dataset

    from stroke_seg.io.dicom import header_b_value

    def with_private(group, creator, offset, vr, value):
        ds = Dataset()
        ds.private_block(group, creator, create=True).add_new(offset, vr, value)
        return ds

    assert header_b_value(Dataset()) is None
    assert header_b_value(with_private(0x0019, "SIEMENS MR HEADER", 0x0C, "IS", 800)) == 800
    assert header_b_value(with_private(0x0043, "GEMS_PARM_01", 0x39, "IS", [1_000_001_000, 8, 0, 0])) == 1000
    assert header_b_value(with_private(0x2001, "Philips Imaging DD 001", 0x03, "FL", 1000.0)) == 1000
    assert header_b_value(with_private(0x2001, "Philips Imaging DD 001", 0x03, "UN", struct.pack("<f", 500.0))) == 500
    assert header_b_value(with_private(0x0019, "SIEMENS MR HEADER", 0x0C, "UN", b"1000")) == 1000
    both = with_private(0x0019, "SIEMENS MR HEADER", 0x0C, "IS", 800)
    both.add_new(0x00189087, "FD", 1000.0)
    assert header_b_value(both) == 1000  # the standard attribute wins


def _deidentified_zip(small):
    return small[2]["deidentified-missing"][1]


def test_cli_seg_of_a_deidentified_export(small, tmp_path):
    """The crash of the issue: `segment --dicom <no PatientBirthDate> --seg` now writes the mask and the SEG."""
    import pydicom

    out, seg_path = tmp_path / "mask.nii.gz", tmp_path / "seg" / "mask.dcm"
    args = ["segment", "--dicom", str(_deidentified_zip(small)), "--model", "adc-threshold", "--out", str(out)]
    assert cli_main([*args, "--json", str(tmp_path / "r.json"), "--seg", str(seg_path)]) == 0
    seg = pydicom.dcmread(seg_path)
    assert seg.PatientBirthDate == "" and seg.AccessionNumber == "" and "PatientName" in seg
    report = json.loads((tmp_path / "r.json").read_text())
    assert not any("SEG" in w for w in report["warnings"])
    assert seg.pixel_array.sum() == (np.asarray(nib.load(str(out)).dataobj) > 0).sum()


def _refuse(*args, **kwargs):
    raise ValueError("Source images must have a shared orientation.")


@pytest.mark.parametrize("failure", ["highdicom-refuses", "seg-folder-is-a-file"])
def test_cli_delivers_the_mask_when_the_seg_cannot_be_written(small, tmp_path, monkeypatch, capsys, failure):
    import highdicom as hd

    out, report_path = tmp_path / "mask.nii.gz", tmp_path / "report.json"
    seg_path = tmp_path / "seg.dcm"
    if failure == "highdicom-refuses":
        monkeypatch.setattr(hd.seg, "Segmentation", _refuse)
    else:
        (tmp_path / "blocker").write_text("a file where the SEG's folder should be")
        seg_path = tmp_path / "blocker" / "seg.dcm"
    args = ["segment", "--dicom", str(_deidentified_zip(small)), "--model", "adc-threshold", "--out", str(out)]
    assert cli_main([*args, "--json", str(report_path), "--seg", str(seg_path)]) == 0
    assert out.is_file() and nib.load(str(out)).shape == small[0].dwi.shape
    warnings = json.loads(report_path.read_text())["warnings"]
    missing = [w for w in warnings if w.startswith("DICOM SEG not written")]
    assert len(missing) == 1 and "deidentified-missing.zip" in missing[0]
    assert str(tmp_path) not in missing[0]  # the export as the user knows it, never a server path
    assert f"warning: {missing[0]}" in capsys.readouterr().err
    assert not seg_path.exists() and not list(tmp_path.rglob("*.partial"))


def test_job_engine_delivers_the_mask_when_the_seg_cannot_be_written(small, tmp_path, monkeypatch):
    """The app's job engine: a DICOM job whose SEG fails still commits mask, report (with the reason) and montage."""
    import highdicom as hd

    from stroke_seg.serving.cache import ResultCache
    from stroke_seg.serving.jobs import DICOM, JobEngine

    monkeypatch.setattr(hd.seg, "Segmentation", _refuse)
    engine = JobEngine(ResultCache(tmp_path / "cache"), tick_s=0.2)
    files = {"dwi": None, "adc": None, "flair": None, "ground_truth": None, DICOM: str(_deidentified_zip(small))}

    async def last_event():
        events = [e async for e in engine.run(files, "adc-threshold", "fast", lambda *a, **k: None)]
        return events[-1]

    try:
        kind, folder = asyncio.run(last_event())
    finally:
        engine.stop()
    assert kind == "done"
    assert (folder / "mask.nii.gz").is_file() and (folder / "montage.png").is_file()
    assert not (folder / "mask_seg.dcm").exists()
    report = json.loads((folder / "report.json").read_text())
    assert any(w.startswith("DICOM SEG not written") and "shared orientation" in w for w in report["warnings"])


# --- NIfTI vs DICOM of one oblique raw head, `unet` ---------------------------------------------------------------


@pytest.fixture(scope="module")
def oblique(tmp_path_factory):
    """An oblique raw head (2 mm, LPS storage, tilted, noise background; an 80 mm slab) as NIfTI (dwi, adc) and as
    two DICOM zips with uint16 pixels and no PatientBirthDate (de-identified): b0 + b1000 + ADC series, and b0 + b1000
    only; plus the NIfTI path's `unet` mask."""
    require_dicom_tools()
    from stroke_seg.models.unet import WEIGHTS_PATH
    from stroke_seg.synthetic.dicom_export import write_dicom_case, zip_folder

    require(WEIGHTS_PATH.is_file(), f"U-Net weights missing at {WEIGHTS_PATH}")
    root = tmp_path_factory.mktemp("oblique")
    c = synth.make_case(
        81,
        "territorial",
        synth.Acquisition(
            voxel_size=(2.0, 2.0, 2.0),
            orientation="LPS",
            tilt_deg=(10.0, -6.0, 5.0),
            oblique=True,
            dtype="int16",
            skull_stripped=False,
        ),
    )
    slab = _lesion_slab(c.mask, 40)  # an 80 mm slab through the lesion: half the network's windows of a whole head
    b0 = c.b0().slicer[slab]
    c = dataclasses.replace(c, dwi=c.dwi.slicer[slab], adc=c.adc.slicer[slab], mask=c.mask.slicer[slab])
    nib.save(c.dwi, str(root / "dwi.nii.gz"))
    nib.save(c.adc, str(root / "adc.nii.gz"))
    options = {"pixel_dtype": "uint16", "deidentified": "missing"}
    zips = {
        "with-adc": zip_folder(write_dicom_case(root / "a", c.dwi, b0, c.adc, **options), root / "export.zip"),
        "without-adc": zip_folder(write_dicom_case(root / "b", c.dwi, b0, **options), root / "no_adc.zip"),
    }
    out = root / "nifti_mask.nii.gz"
    args = ["--dwi", str(root / "dwi.nii.gz"), "--adc", str(root / "adc.nii.gz"), "--out", str(out)]
    assert cli_main(["segment", "--model", "unet", *args]) == 0
    return zips, _canonical_mask(out)


def _canonical_mask(path) -> np.ndarray:
    return np.asarray(nib.as_closest_canonical(nib.load(str(path))).dataobj) > 0


@pytest.mark.slow
@pytest.mark.parametrize("export, floor", [("with-adc", 0.99), ("without-adc", 0.95)], ids=["with-adc", "without-adc"])
def test_dicom_zip_gives_the_nifti_mask_with_its_seg(oblique, tmp_path, export, floor):
    """Acceptance of the issue: with the ADC series Dice >= 0.99 against the NIfTI path, --seg written; without it
    (ADC computed from b0 + b1000) Dice >= 0.95."""
    import pydicom

    zips, nifti_mask = oblique
    out, seg_path = tmp_path / "mask.nii.gz", tmp_path / "mask.dcm"
    args = ["segment", "--dicom", str(zips[export]), "--model", "unet", "--out", str(out), "--seg", str(seg_path)]
    assert cli_main(args) == 0
    mask = _canonical_mask(out)
    assert mask.shape == nifti_mask.shape and nifti_mask.sum() > 100
    score = dice(mask, nifti_mask)
    print(f"NIfTI vs DICOM ({export}): Dice {score:.4f}, {mask.sum()} vs {nifti_mask.sum()} voxels")
    assert score >= floor
    seg = pydicom.dcmread(seg_path)
    assert seg.Modality == "SEG" and seg.PatientBirthDate == ""
    assert seg.pixel_array.astype(bool).sum() == (np.asarray(nib.load(str(out)).dataobj) > 0).sum()


@pytest.mark.app
@pytest.mark.slow
def test_app_returns_the_mask_and_a_seg_for_the_zip(oblique, tmp_path):
    """/segment through gradio_client with the zip: the NIfTI path's mask, and the result entry holds the SEG."""
    import pydicom

    from apphelpers import launched_app

    try:
        from gradio_client import Client, handle_file
    except ImportError as err:
        require(False, f"gradio_client missing: {err}")
    zips, nifti_mask = oblique
    with launched_app(tmp_path) as (url, _log):
        mask_path, report, *_ = Client(url, verbose=False).predict(
            None, None, None, None, "unet", "fast", handle_file(str(zips["with-adc"])), api_name="/segment"
        )
    served = _canonical_mask(mask_path)
    assert dice(served, nifti_mask) >= 0.99
    assert not any("SEG" in w for w in report["warnings"])
    segs = list(tmp_path.rglob("mask_seg.dcm"))  # the app's result cache (STROKE_SEG_CACHE_DIR under tmp_path)
    assert len(segs) == 1
    seg = pydicom.dcmread(segs[0])
    assert seg.Modality == "SEG" and seg.PatientBirthDate == ""
    assert seg.pixel_array.astype(bool).sum() == served.sum()


def test_an_export_with_directions_and_trace_gives_the_trace(small, tmp_path):
    """An export holding the directional b=1000 series and the scanner's TRACEW series: the TRACEW one is the DWI
    (named in the notes), not an error; its voxels are the trace the NIfTI holds."""
    from stroke_seg.io.dicom import load_dicom
    from stroke_seg.synthetic.dicom_export import write_dicom_case

    c, b0, _ = small
    folder = write_dicom_case(tmp_path / "both", c.dwi, b0, c.adc, b0_in_dwi_series=False, directional=True)
    chosen = load_dicom(folder, tmp_path / "work")
    assert chosen.dwi_series is not None and chosen.dwi_series.is_trace and chosen.dwi_series.number == 4
    assert any("TRACEW" in n and "series 6" in n for n in chosen.notes), chosen.notes
    got = _canonical(chosen.dwi.data, chosen.dwi.geometry.affine)
    assert np.array_equal(got, _canonical(np.round(np.asanyarray(c.dwi.dataobj, np.float32)), c.dwi.affine))
