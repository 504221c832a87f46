"""Write a synthetic case as a scanner would export it: classic MR DICOM slices, one file per slice.

For tests and demos of the DICOM input (no patient data): a diffusion series holding b0 and b1000 (or a trace
b1000 series and a separate b0 series) and, optionally, an ADC series in 1e-6 mm²/s. The b-value is in the standard
attribute Diffusion B-Value (0018,9087). Geometry comes from the NIfTI affine (RAS) turned into DICOM's LPS.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = ["write_dicom_case", "zip_folder"]

_MR = "1.2.840.10008.5.1.4.1.1.4"


def _series(
    folder: Path,
    volumes: list[tuple[np.ndarray, float | None]],
    affine: np.ndarray,
    *,
    number: int,
    description: str,
    image_type: list[str],
    study_uid: str,
) -> None:
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    frame_uid = generate_uid()
    lps = np.diag([-1.0, -1.0, 1.0]) @ affine[:3, :3]
    origin = np.diag([-1.0, -1.0, 1.0]) @ affine[:3, 3]
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    row_dir, col_dir = lps[:, 0] / spacing[0], lps[:, 1] / spacing[1]  # along a row: voxel axis i; down a column: j
    instance = 0
    for data, bval in volumes:
        for k in range(data.shape[2]):
            instance += 1
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = _MR
            meta.MediaStorageSOPInstanceUID = generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
            ds.SOPClassUID, ds.SOPInstanceUID = _MR, meta.MediaStorageSOPInstanceUID
            ds.PatientName, ds.PatientID, ds.Modality = "SYNTHETIC^CASE", "SYNTH0001", "MR"
            ds.PatientBirthDate, ds.PatientSex, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = (
                "",
                "O",
                "1",
                "",
                "",
            )
            ds.Manufacturer = "stroke-seg synthetic"
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
            ds.StudyDate = ds.SeriesDate = "20260101"
            ds.StudyTime = ds.SeriesTime = "120000"
            ds.SeriesNumber, ds.SeriesDescription, ds.InstanceNumber = number, description, instance
            ds.AcquisitionNumber = 1
            ds.ImageType = image_type
            ds.MagneticFieldStrength, ds.RepetitionTime, ds.EchoTime = 3.0, 5000.0, 80.0
            ds.ScanningSequence, ds.SequenceVariant = "EP", "SK"
            ds.ImagePositionPatient = [float(v) for v in origin + lps[:, 2] * k]
            ds.ImageOrientationPatient = [float(v) for v in np.concatenate([row_dir, col_dir])]
            ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]
            ds.SliceThickness = ds.SpacingBetweenSlices = float(spacing[2])
            ds.SliceLocation = float(ds.ImagePositionPatient[2])
            if bval is not None:
                ds.add_new(0x00189087, "FD", float(bval))  # Diffusion B-Value
            pixels = np.ascontiguousarray(data[:, :, k].T.astype(np.int16))  # rows run along j, columns along i
            ds.Rows, ds.Columns = pixels.shape
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.RescaleIntercept, ds.RescaleSlope = 0, 1
            ds.PixelData = pixels.tobytes()
            pydicom.dcmwrite(folder / f"IM{number:02d}{instance:05d}", ds, enforce_file_format=True)


def write_dicom_case(
    folder: str | Path,
    dwi: nib.Nifti1Image,
    b0: nib.Nifti1Image,
    adc: nib.Nifti1Image | None = None,
    *,
    b_value: float = 1000.0,
    b0_in_dwi_series: bool = True,
) -> Path:
    """Write DWI (+ b0, + ADC) volumes as DICOM series into ``folder`` (created).

    Args:
        dwi, b0: diffusion-weighted and b=0 images on one grid (values stored as int16).
        adc: optional ADC image on that grid, in 1e-6 mm²/s (int16), written as a derived ADC series.
        b_value: the DWI's b-value, s/mm².
        b0_in_dwi_series: one series holding b0 and b1000 (as most scanners export), else two series.
    """
    from pydicom.uid import generate_uid

    folder = Path(folder)
    study = generate_uid()
    affine = dwi.affine

    def arr(img):
        return np.round(np.asanyarray(img.dataobj, dtype=np.float32))

    if b0_in_dwi_series:
        _series(
            folder / "ep2d_diff",
            [(arr(b0), 0.0), (arr(dwi), b_value)],
            affine,
            number=3,
            description="ep2d_diff_b0_b1000",
            image_type=["ORIGINAL", "PRIMARY", "DIFFUSION", "NONE"],
            study_uid=study,
        )
    else:
        _series(
            folder / "b0",
            [(arr(b0), 0.0)],
            affine,
            number=3,
            description="ep2d_diff_b0",
            image_type=["ORIGINAL", "PRIMARY", "DIFFUSION", "NONE"],
            study_uid=study,
        )
        _series(
            folder / "trace",
            [(arr(dwi), b_value)],
            affine,
            number=4,
            description="ep2d_diff_TRACEW",
            image_type=["DERIVED", "PRIMARY", "DIFFUSION", "TRACEW"],
            study_uid=study,
        )
    if adc is not None:
        _series(
            folder / "adc",
            [(arr(adc), None)],
            affine,
            number=5,
            description="ep2d_diff_ADC",
            image_type=["DERIVED", "PRIMARY", "DIFFUSION", "ADC"],
            study_uid=study,
        )
    return folder


def zip_folder(folder: str | Path, archive: str | Path) -> Path:
    """Zip a folder's files (relative names), as a user would before uploading."""
    folder, archive = Path(folder), Path(archive)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            zf.write(f, f.relative_to(folder))
    return archive
