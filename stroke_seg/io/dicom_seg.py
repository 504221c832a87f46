"""DICOM SEG out: the lesion mask as a highdicom Segmentation that references the DWI's source images.

:func:`with_seg` turns a SEG that cannot be written into a warning of the result, so that the mask is never lost.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np

from stroke_seg.errors import InvalidImageError, StrokeSegError
from stroke_seg.io.dicom import B_TOLERANCE, DicomCase
from stroke_seg.io.dicom_headers import _Frame, _functional, _read_frames, _series_frames
from stroke_seg.io.readers import without_paths
from stroke_seg.types import Result

log = logging.getLogger(__name__)


_TYPE2_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDate",
    "StudyTime",
)
"""Patient/study attributes a SEG copies from its source: type 2, so empty (not absent) when the export lacks them."""


def _source_frames(case: DicomCase) -> list[_Frame]:
    """The frames of the chosen DWI volume, one per slice position, in acquisition order (pixel data not read)."""
    series = case.dwi_series
    if series is None or case.source_dir is None:
        raise InvalidImageError("DICOM SEG: expected a DICOM case made by load_dicom, but got one without its source")
    frames = _series_frames(_read_frames(case.source_dir, {series.number}), series)
    if frames and all(f.b_value is not None for f in frames):
        b = case.b_value
        frames = [f for f in frames if abs(float(f.b_value) - b) <= B_TOLERANCE * b]
    else:  # no b-value in the headers: volumes follow each other in acquisition order, as dcm2niix stacks them
        per_volume = len(frames) // max(1, len(series.bvals))
        frames = frames[case.dwi_volume * per_volume : (case.dwi_volume + 1) * per_volume]
    seen, unique = set(), []
    for f in frames:  # several directions at one b-value: one frame per position (the first acquired)
        key = tuple(round(v, 3) for v in f.position) if f.position is not None else None
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def _with_type2(ds):
    """``ds`` with each type-2 patient/study attribute it lacks present and empty (a de-identified export drops
    them; highdicom reads them unconditionally). Only the in-memory copy changes, never the export."""
    for keyword in _TYPE2_COPIED:
        if keyword not in ds:
            setattr(ds, keyword, "")
    return ds


def _frame_mask(frame: _Frame, data: np.ndarray, inv: np.ndarray) -> np.ndarray:
    """The mask sampled at the centre of every pixel of one source frame (nearest voxel, world coordinates)."""
    rows, cols = int(frame.ds.Rows), int(frame.ds.Columns)
    iop = np.asarray(frame.orientation, float)
    dr, dc = frame.spacing  # between rows, between columns
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    lps = np.asarray(frame.position, float)[:, None, None] + iop[:3, None, None] * c * dc + iop[3:, None, None] * r * dr
    ras = lps * np.array([-1.0, -1.0, 1.0])[:, None, None]
    ijk = np.rint(np.tensordot(inv[:3, :3], ras, axes=1) + inv[:3, 3][:, None, None]).astype(int)
    inside = np.all((ijk >= 0) & (ijk < np.array(data.shape)[:, None, None]), axis=0)
    out = np.zeros((rows, cols), bool)
    out[inside] = data[ijk[0][inside], ijk[1][inside], ijk[2][inside]]
    return out


def write_seg(mask: nib.Nifti1Image, case: DicomCase, out: str | os.PathLike, *, algorithm: str, version: str) -> Path:
    """Write a lesion mask as a DICOM Segmentation (binary) that references the DWI series it was made from.

    The mask (any grid with a valid affine, e.g. the result on the converted DWI grid) is sampled at the centre of
    every pixel of every source slice (nearest voxel, world coordinates), so the SEG frames match the scanner's
    slices whatever the converter's axis order. Single-frame and enhanced (multi-frame) sources are both referenced.
    Patient and study attributes are copied from the source when present; type-2 ones it lacks (a de-identified
    export) are left empty.

    Args:
        mask: lesion mask (nonzero = lesion).
        case: what :func:`load_dicom` returned (its source files must still exist).
        out: the .dcm file to write (written whole or not at all).
        algorithm, version: the model's name and version, recorded as the segmentation algorithm.

    Raises:
        StrokeSegError: the SEG cannot be made from this export (the message says why); the mask itself is not
            affected, and callers deliver it with this message as a warning.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    name = case.source_name or "the DICOM export"
    frames = [f for f in _source_frames(case) if f.position is not None and f.orientation and f.spacing]
    if not frames:
        raise InvalidImageError(
            f"DICOM SEG for {name}: expected the DWI series' DICOM images with their positions, but none were found "
            "next to the converted images"
        )
    multiframe = frames[0].frame is not None
    if multiframe and len({id(f.ds) for f in frames}) > 1:
        raise InvalidImageError(
            f"DICOM SEG for {name}: expected the DWI volume in one multi-frame file, but its frames are spread over "
            f"{len({id(f.ds) for f in frames})} files"
        )
    data = np.asanyarray(mask.dataobj) > 0
    inv = np.linalg.inv(mask.affine)
    pixels = np.stack([_frame_mask(f, data, inv) for f in frames]).astype(np.uint8)
    sources = [_with_type2(frames[0].ds)] if multiframe else [_with_type2(f.ds) for f in frames]
    geometry = {}
    if multiframe:  # the chosen b-value's frames only: their positions, the source's pixel measures
        first = frames[0]
        item = first.ds.PerFrameFunctionalGroupsSequence[first.frame - 1]
        measures = _functional(first.ds, item, "PixelMeasuresSequence")
        geometry = {
            "plane_positions": [
                hd.PlanePositionSequence(hd.CoordinateSystemNames.PATIENT, image_position=list(f.position))
                for f in frames
            ],
            "pixel_measures": hd.PixelMeasuresSequence(
                pixel_spacing=list(first.spacing),
                slice_thickness=float(measures.get("SliceThickness") or 1.0),
                spacing_between_slices=measures.get("SpacingBetweenSlices"),
            ),
        }
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="acute ischemic lesion",
        segmented_property_category=hd.sr.CodedConcept("49755003", "SCT", "Morphologically Altered Structure"),
        segmented_property_type=hd.sr.CodedConcept("55641003", "SCT", "Infarct"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=f"stroke-seg {algorithm}", version=version, family=codes.cid7162.ArtificialIntelligence
        ),
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    try:
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[description],
            series_instance_uid=hd.UID(),
            series_number=900,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="stroke-seg (research use only, not for diagnosis)",
            manufacturer_model_name=algorithm,
            software_versions=version,
            device_serial_number="none",
            series_description="stroke-seg lesion (research use only)",
            omit_empty_frames=False,
            **geometry,
        )
        seg.save_as(partial)
        partial.replace(out)
    except Exception as err:  # highdicom's checks of the source (ValueError, TypeError, AttributeError, ...)
        partial.unlink(missing_ok=True)
        log.warning("DICOM SEG for %s not written", name, exc_info=True)
        reason = without_paths(err, case.source_dir, name) if case.source_dir is not None else str(err)
        raise InvalidImageError(
            f"DICOM SEG for {name}: expected source images highdicom accepts, but it refused them "
            f"({type(err).__name__}: {reason})"
        ) from err
    log.info("DICOM SEG written: %d frames, %d lesion pixels", len(frames), int(pixels.sum()))
    return out


def with_seg(result: Result, case: DicomCase, out: str | os.PathLike) -> Result:
    """Write ``result``'s mask as a DICOM SEG (:func:`write_seg`); when that fails, ``result`` with a warning saying
    why the SEG is missing, so that the mask and report are delivered all the same.

    Returns:
        ``result`` itself when the SEG was written, else a copy whose ``warnings`` end with the reason.
    """
    try:
        write_seg(result.mask, case, out, algorithm=result.model, version=result.model_version)
        return result
    except StrokeSegError as err:
        reason = str(err)
    except Exception as err:  # an unforeseen failure of an optional output must not lose the mask
        log.exception("DICOM SEG for %s not written", case.source_name)
        reason = f"DICOM SEG for {case.source_name or 'the DICOM export'}: unexpected {type(err).__name__} (logged)"
    log.warning("%s", reason)
    return dataclasses.replace(result, warnings=(*result.warnings, f"DICOM SEG not written: {reason}"))
