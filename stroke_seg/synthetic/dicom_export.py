"""Write a synthetic case as scanners and hospitals export it: DICOM series of MR images, no patient data.

For tests and demos of the DICOM input: a diffusion series holding b0 and b1000 (or a trace b1000 series and a
separate b0 series) and, optionally, an ADC series in 1e-6 mm²/s. Geometry comes from the NIfTI affine (RAS) turned
into DICOM's LPS. The variants hospitals produce are options of :func:`write_dicom_case`:

* ``vendor``: where the b-value is stored: the standard Diffusion B-Value (0018,9087), or only a vendor's private
  tag (Siemens (0019,100C), GE (0043,1039), Philips (2001,1003)), with that vendor's Manufacturer;
* ``multiframe``: one Enhanced MR Image Storage file per series (per-frame position and MR Diffusion Sequence);
* ``deidentified``: the type-2 patient/study attributes (PatientBirthDate, PatientSex, ReferringPhysicianName,
  StudyID, AccessionNumber) and PatientName absent ("missing") or present but empty ("empty");
* ``pixel_dtype``: int16 or uint16 stored pixels;
* ``layout``: one folder per series, a deep folder tree with extensionless names and a non-DICOM file ("nested"),
  or a DICOM File-set with a DICOMDIR index as on a CD ("dicomdir").
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = ["write_dicom_case", "zip_folder", "VENDORS", "LAYOUTS"]

_MR = "1.2.840.10008.5.1.4.1.1.4"
_ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
VENDORS = ("standard", "siemens", "ge", "philips")
"""Where the b-value is stored: the standard attribute, or one vendor's private tag only."""
LAYOUTS = ("series", "nested", "dicomdir")
"""How the files lie: a folder per series, a deep tree with odd names, or a DICOMDIR File-set."""
_MANUFACTURER = {"standard": "stroke-seg synthetic", "siemens": "SIEMENS", "ge": "GE MEDICAL SYSTEMS"}
_MANUFACTURER["philips"] = "Philips Medical Systems"
_TYPE2 = ("PatientBirthDate", "PatientSex", "ReferringPhysicianName", "StudyID", "AccessionNumber")


def _vendor_b_value(ds, vendor: str, bval: float) -> None:
    """Store ``bval`` where ``vendor``'s scanners do (private tags), or in the standard attribute."""
    if vendor == "standard":
        ds.add_new(0x00189087, "FD", float(bval))  # Diffusion B-Value
    elif vendor == "siemens":
        ds.private_block(0x0019, "SIEMENS MR HEADER", create=True).add_new(0x0C, "IS", int(round(bval)))
    elif vendor == "ge":  # Slop_int_6..9: b-value first (GE adds 1e9 on some software versions)
        ds.private_block(0x0043, "GEMS_PARM_01", create=True).add_new(
            0x39, "IS", [int(round(bval)) + 1_000_000_000, 0, 0, 0]
        )
    elif vendor == "philips":
        block = ds.private_block(0x2001, "Philips Imaging DD 001", create=True)
        block.add_new(0x03, "FL", float(bval))  # Diffusion B-Factor
        block.add_new(0x04, "CS", "I" if bval > 0 else "")  # Diffusion Direction: isotropic (trace)
    else:
        raise ValueError(f"vendor must be one of {VENDORS}, but it is {vendor!r}")


def _base(study: dict, *, number: int, description: str, image_type: list[str], vendor: str, deidentified):
    """A dataset with the patient, study, series and equipment modules (no image or pixel attributes)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.Modality, ds.PatientID = "MR", "SYNTH0001"
    if deidentified is None:
        ds.PatientName = "SYNTHETIC^CASE"
        ds.PatientBirthDate, ds.PatientSex, ds.ReferringPhysicianName = "19500101", "O", "SYNTHETIC^REFERRER"
        ds.StudyID, ds.AccessionNumber = "1", "ACC0001"
    elif deidentified == "empty":
        ds.PatientName = ""
        for keyword in _TYPE2:
            setattr(ds, keyword, "")
    elif deidentified != "missing":
        raise ValueError(f'deidentified must be None, "missing" or "empty", but it is {deidentified!r}')
    ds.PatientIdentityRemoved = "NO" if deidentified is None else "YES"
    ds.Manufacturer = _MANUFACTURER[vendor]
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = (
        study["study"],
        study["series"],
        study["frame"],
    )
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20260101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.SeriesNumber, ds.SeriesDescription = number, description
    ds.ImageType = image_type
    ds.MagneticFieldStrength = 3.0
    return ds


def _pixels(data: np.ndarray, pixel_dtype: str) -> np.ndarray:
    """Rows run along voxel axis j, columns along i; values rounded and stored as ``pixel_dtype``."""
    if pixel_dtype not in ("int16", "uint16"):
        raise ValueError(f'pixel_dtype must be "int16" or "uint16", but it is {pixel_dtype!r}')
    info = np.iinfo(pixel_dtype)
    return np.ascontiguousarray(np.clip(np.round(data.T), info.min, info.max).astype(pixel_dtype))


def _set_pixel_module(ds, rows: int, cols: int, pixel_dtype: str) -> None:
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1 if pixel_dtype == "int16" else 0


def _geometry(affine: np.ndarray):
    """(LPS direction matrix, LPS origin, voxel sizes, row direction, column direction) of a NIfTI affine."""
    lps = np.diag([-1.0, -1.0, 1.0]) @ affine[:3, :3]
    origin = np.diag([-1.0, -1.0, 1.0]) @ affine[:3, 3]
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    return lps, origin, spacing, lps[:, 0] / spacing[0], lps[:, 1] / spacing[1]


def _classic_series(volumes, affine, study, *, number, vendor, pixel_dtype, **base) -> list:
    """One single-frame MR Image Storage dataset per slice per volume, volumes in instance order."""
    from pydicom.uid import generate_uid

    lps, origin, spacing, row_dir, col_dir = _geometry(affine)
    out, instance = [], 0
    for data, bval in volumes:
        for k in range(data.shape[2]):
            instance += 1
            ds = _base(study, number=number, vendor=vendor, **base)
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = _MR
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.InstanceNumber, ds.AcquisitionNumber = instance, 1
            ds.RepetitionTime, ds.EchoTime = 5000.0, 80.0
            ds.ScanningSequence, ds.SequenceVariant = "EP", "SK"
            ds.ImagePositionPatient = [float(v) for v in origin + lps[:, 2] * k]
            ds.ImageOrientationPatient = [float(v) for v in np.concatenate([row_dir, col_dir])]
            ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]
            ds.SliceThickness = ds.SpacingBetweenSlices = float(spacing[2])
            ds.SliceLocation = float(ds.ImagePositionPatient[2])
            if bval is not None:
                _vendor_b_value(ds, vendor, bval)
            pixels = _pixels(data[:, :, k], pixel_dtype)
            _set_pixel_module(ds, *pixels.shape, pixel_dtype)
            ds.RescaleIntercept, ds.RescaleSlope = 0, 1
            ds.PixelData = pixels.tobytes()
            out.append(ds)
    return out


def _enhanced_series(volumes, affine, study, *, number, vendor, pixel_dtype, **base) -> list:
    """One Enhanced MR Image Storage dataset holding every slice of every volume (volume-major frame order)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import generate_uid

    if vendor != "standard":
        raise ValueError("multiframe exports store the b-value in the standard MR Diffusion Sequence only")
    lps, origin, spacing, row_dir, col_dir = _geometry(affine)
    ds = _base(study, number=number, vendor=vendor, **base)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = _ENHANCED_MR
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.InstanceNumber, ds.AcquisitionNumber = 1, 1
    ds.AcquisitionDateTime = "20260101120000"
    ds.ImageType = [ds.ImageType[0], ds.ImageType[1], ds.ImageType[2], ds.ImageType[3]]
    ds.PixelPresentation, ds.VolumetricProperties, ds.VolumeBasedCalculationTechnique = "MONOCHROME", "VOLUME", "NONE"
    ds.ComplexImageComponent, ds.AcquisitionContrast = "MAGNITUDE", "DIFFUSION"
    ds.ContentQualification, ds.ResonantNucleus = "PRODUCT", "1H"
    ds.BurnedInAnnotation, ds.LossyImageCompression = "NO", "00"
    ds.PresentationLUTShape = "IDENTITY"
    ds.ImagedNucleus, ds.MRAcquisitionType, ds.PulseSequenceName = "1H", "2D", "ep2d_diff"
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [float(spacing[1]), float(spacing[0])]
    measures.SliceThickness = measures.SpacingBetweenSlices = float(spacing[2])
    orientation = Dataset()
    orientation.ImageOrientationPatient = [float(v) for v in np.concatenate([row_dir, col_dir])]
    timing = Dataset()
    timing.RepetitionTime, timing.EchoTrainLength, timing.FlipAngle = 5000.0, 1, 90.0
    transform = Dataset()
    transform.RescaleIntercept, transform.RescaleSlope, transform.RescaleType = 0, 1, "US"
    echo = Dataset()
    echo.EffectiveEchoTime = 80.0
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.MRTimingAndRelatedParametersSequence = Sequence([timing])
    shared.PixelValueTransformationSequence = Sequence([transform])
    shared.MREchoSequence = Sequence([echo])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    dim_org = generate_uid()
    org = Dataset()
    org.DimensionOrganizationUID = dim_org
    ds.DimensionOrganizationSequence = Sequence([org])
    dims = []
    for pointer, group in ((0x00189087, 0x00189117), (0x00200032, 0x00209113)):
        d = Dataset()
        d.DimensionOrganizationUID, d.DimensionIndexPointer, d.FunctionalGroupPointer = dim_org, pointer, group
        dims.append(d)
    ds.DimensionIndexSequence = Sequence(dims)
    frames, pixels = [], []
    for v, (data, bval) in enumerate(volumes):
        for k in range(data.shape[2]):
            frame = Dataset()
            content = Dataset()
            content.DimensionIndexValues = [v + 1, k + 1]
            content.StackID, content.InStackPositionNumber, content.TemporalPositionIndex = "1", k + 1, 1
            position = Dataset()
            position.ImagePositionPatient = [float(x) for x in origin + lps[:, 2] * k]
            frame.FrameContentSequence = Sequence([content])
            frame.PlanePositionSequence = Sequence([position])
            if bval is not None:
                diffusion = Dataset()
                diffusion.DiffusionBValue = float(bval)
                diffusion.DiffusionDirectionality = "ISOTROPIC" if bval > 0 else "NONE"
                frame.MRDiffusionSequence = Sequence([diffusion])
            frame_type = Dataset()
            frame_type.FrameType = list(ds.ImageType)
            frame.MRImageFrameTypeSequence = Sequence([frame_type])
            frames.append(frame)
            pixels.append(_pixels(data[:, :, k], pixel_dtype))
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.NumberOfFrames = len(frames)
    _set_pixel_module(ds, *pixels[0].shape, pixel_dtype)
    ds.PixelData = np.stack(pixels).tobytes()
    return [ds]


def write_dicom_case(
    folder: str | Path,
    dwi: nib.Nifti1Image,
    b0: nib.Nifti1Image,
    adc: nib.Nifti1Image | None = None,
    *,
    b_value: float = 1000.0,
    b0_in_dwi_series: bool = True,
    vendor: str = "standard",
    multiframe: bool = False,
    deidentified: str | None = None,
    pixel_dtype: str = "int16",
    layout: str = "series",
    directional: bool = False,
) -> Path:
    """Write DWI (+ b0, + ADC) volumes as DICOM series into ``folder`` (created).

    Args:
        dwi, b0: diffusion-weighted and b=0 images on one grid (values rounded to ``pixel_dtype``).
        adc: optional ADC image on that grid, in 1e-6 mm²/s, written as a derived ADC series.
        b_value: the DWI's b-value, s/mm².
        b0_in_dwi_series: one series holding b0 and b1000 (as most scanners export), else two series.
        vendor, multiframe, deidentified, pixel_dtype, layout: the export variant (see the module docstring).
        directional: also write the three directional b-value volumes the trace is made from (series 6, b0 + three
            directions whose geometric mean is the DWI), as scanners that export both do.

    Returns:
        ``folder``.
    """
    import pydicom
    from pydicom.uid import generate_uid

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, but it is {layout!r}")
    folder = Path(folder)
    study_uid, frame_uid = generate_uid(), generate_uid()
    affine = dwi.affine

    def arr(img):
        return np.round(np.asanyarray(img.dataobj, dtype=np.float32))

    diff_type = ["ORIGINAL", "PRIMARY", "DIFFUSION", "NONE"]
    plan = []  # (subfolder, volumes, number, description, image type)
    if b0_in_dwi_series:
        plan.append(("ep2d_diff", [(arr(b0), 0.0), (arr(dwi), b_value)], 3, "ep2d_diff_b0_b1000", diff_type))
    else:
        plan.append(("b0", [(arr(b0), 0.0)], 3, "ep2d_diff_b0", diff_type))
        plan.append(
            ("trace", [(arr(dwi), b_value)], 4, "ep2d_diff_TRACEW", ["DERIVED", "PRIMARY", "DIFFUSION", "TRACEW"])
        )
    if directional:  # three directions whose geometric mean is the DWI: x 1.2, x 1/1.2, x 1
        dirs = [(arr(dwi) * f, b_value) for f in (1.2, 1 / 1.2, 1.0)]
        plan.append(("dirs", [(arr(b0), 0.0), *dirs], 6, "ep2d_diff_3scan", diff_type))
    if adc is not None:
        plan.append(("adc", [(arr(adc), None)], 5, "ep2d_diff_ADC", ["DERIVED", "PRIMARY", "DIFFUSION", "ADC"]))
    write = _enhanced_series if multiframe else _classic_series
    written: list[tuple[Path, object]] = []
    for sub, volumes, number, description, image_type in plan:
        study = {"study": study_uid, "series": generate_uid(), "frame": frame_uid}
        datasets = write(
            volumes,
            affine,
            study,
            number=number,
            vendor=vendor,
            pixel_dtype=pixel_dtype,
            description=description,
            image_type=image_type,
            deidentified=deidentified,
        )
        for i, ds in enumerate(datasets, start=1):
            if layout == "nested":  # as some PACS export tools lay it out: deep, numbered, no extension
                path = folder / "EXPORT" / "DATA" / f"ST{1:04d}" / f"SE{number:04d}" / "IMG" / f"{i:08X}"
            else:
                path = folder / sub / f"IM{number:02d}{i:05d}"
            written.append((path, ds))
    staging = folder / ".staging" if layout == "dicomdir" else None
    for path, ds in written:
        target = staging / path.relative_to(folder) if staging is not None else path
        target.parent.mkdir(parents=True, exist_ok=True)
        pydicom.dcmwrite(target, ds, enforce_file_format=True)
    if layout == "nested":
        (folder / "EXPORT" / "README.TXT").write_text("Exported by a synthetic PACS viewer. Not DICOM.\n")
    if staging is not None:
        _write_fileset(folder, staging)
    return folder


def _write_fileset(folder: Path, staging: Path) -> None:
    """Move the staged files into a DICOM File-set (``DICOMDIR`` + PT*/ST*/SE*/IM* files) at ``folder``."""
    import shutil

    from pydicom.fileset import FileSet

    fs = FileSet()
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        fs.add(path)
    fs.write(folder)
    shutil.rmtree(staging)


def zip_folder(folder: str | Path, archive: str | Path) -> Path:
    """Zip a folder's files (relative names), as a user would before uploading."""
    folder, archive = Path(folder), Path(archive)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            zf.write(f, f.relative_to(folder))
    return archive
