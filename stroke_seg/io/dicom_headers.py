"""DICOM headers read with pydicom (pixel data never read): the image planes of an export, their positions, and the
b-value of each (the standard or enhanced-MR attribute, or the Siemens, GE or Philips private tag), for the series
whose dcm2niix ``.bval`` is missing and for the source frames a SEG references."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from stroke_seg.io.dicom import DicomSeries


_VENDOR_B_TAGS = (
    # (group, private creator, element offset, vendor); the b-value is the first value
    (0x0019, "SIEMENS MR HEADER", 0x0C, "Siemens"),
    (0x0043, "GEMS_PARM_01", 0x39, "GE"),  # Slop_int_6: b-value, plus 1e9 on some software versions
    (0x2001, "Philips Imaging DD 001", 0x03, "Philips"),  # Diffusion B-Factor
)


@dataclass(frozen=True, eq=False)
class _Frame:
    """One image plane of the export: a single-frame dataset, or one frame of a multi-frame (enhanced) one."""

    ds: Any  # pydicom Dataset, pixel data not read
    frame: int | None  # 1-based frame number in a multi-frame dataset; None for a single-frame one
    order: tuple[int, int]  # acquisition order: (InstanceNumber, frame)
    position: tuple[float, ...] | None  # ImagePositionPatient, LPS mm
    orientation: tuple[float, ...] | None  # ImageOrientationPatient (row, column direction cosines)
    spacing: tuple[float, float] | None  # PixelSpacing: between rows, between columns (mm)
    b_value: float | None  # s/mm²; None when no standard or known private tag holds one

    @property
    def series_key(self) -> tuple[int | None, str]:
        return _series_number(self.ds), str(self.ds.get("SeriesDescription", ""))


def _series_number(ds) -> int | None:
    number = ds.get("SeriesNumber")
    return int(number) if number not in (None, "") else None


def _private_value(ds, group: int, creator: str, offset: int) -> float | None:
    """The first number of a private element, whatever VR it was read with (explicit, or bytes when implicit)."""
    try:
        elem = ds.private_block(group, creator)[offset]
    except KeyError:
        return None
    value = elem.value
    if isinstance(value, bytes):
        text = value.rstrip(b"\0 ").decode("ascii", "replace")
        try:
            return float(text.split("\\")[0])
        except ValueError:
            return float(np.frombuffer(value[:4], "<f4")[0]) if len(value) >= 4 else None
    first = value[0] if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue" else value
    try:
        return float(first)
    except (TypeError, ValueError):
        return None


def header_b_value(ds, item=None) -> float | None:
    """The b-value (s/mm²) of a DICOM image or of one frame of it (``item``: its per-frame functional group).

    Read from the MR Diffusion Sequence (enhanced MR, per frame or shared), the standard Diffusion B-Value
    (0018,9087), or a vendor's private tag: Siemens (0019,xx0C), GE (0043,xx39, less the 1e9 some versions add),
    Philips (2001,xx03). None when none of them is present.
    """
    shared = ds.get("SharedFunctionalGroupsSequence")
    for holder in (item, shared[0] if shared else None):
        if holder is not None and holder.get("MRDiffusionSequence"):
            value = holder.MRDiffusionSequence[0].get("DiffusionBValue")
            if value is not None:
                return float(value)
    if (0x0018, 0x9087) in ds and ds[0x0018, 0x9087].value not in (None, b""):
        return float(ds[0x0018, 0x9087].value)
    for group, creator, offset, vendor in _VENDOR_B_TAGS:
        value = _private_value(ds, group, creator, offset)
        if value is not None:
            return value % 1e9 if vendor == "GE" and value >= 1e9 else value
    return None


def _functional(ds, item, sequence: str):
    """An attribute sequence's first item from a frame's functional group, else from the shared group."""
    for holder in (item, (ds.get("SharedFunctionalGroupsSequence") or [None])[0]):
        if holder is not None and holder.get(sequence):
            return holder.get(sequence)[0]
    return None


def _floats(value) -> tuple[float, ...] | None:
    return tuple(float(v) for v in value) if value is not None else None


def _frames_of(ds) -> list[_Frame]:
    instance = int(ds.get("InstanceNumber") or 0)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame:
        spacing = _floats(ds.get("PixelSpacing"))
        return [
            _Frame(
                ds,
                None,
                (instance, 0),
                _floats(ds.get("ImagePositionPatient")),
                _floats(ds.get("ImageOrientationPatient")),
                spacing[:2] if spacing else None,
                header_b_value(ds),
            )
        ]
    frames = []
    for i, item in enumerate(per_frame):
        position = _functional(ds, item, "PlanePositionSequence")
        orientation = _functional(ds, item, "PlaneOrientationSequence")
        measures = _functional(ds, item, "PixelMeasuresSequence")
        spacing = _floats(measures.get("PixelSpacing")) if measures is not None else None
        frames.append(
            _Frame(
                ds,
                i + 1,
                (instance, i + 1),
                _floats(position.get("ImagePositionPatient")) if position is not None else None,
                _floats(orientation.get("ImageOrientationPatient")) if orientation is not None else None,
                spacing[:2] if spacing else None,
                header_b_value(ds, item),
            )
        )
    return frames


def _read_frames(folder: str | os.PathLike, numbers: set[int | None] | None = None) -> list[_Frame]:
    """Every image plane of the DICOM files under ``folder`` (any layout; DICOMDIR and non-DICOM files skipped),
    of the series whose SeriesNumber is in ``numbers`` (all when None; the others' headers are not kept)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    frames = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, AttributeError, KeyError) as err:
            log.debug("not a DICOM image, skipped: %s (%s)", path.name, type(err).__name__)
            continue
        if "DirectoryRecordSequence" in ds or "Rows" not in ds:  # a DICOMDIR index, or not an image
            continue
        if numbers is not None and _series_number(ds) not in numbers:
            continue
        frames.extend(_frames_of(ds))
    return frames


def _series_frames(frames: list[_Frame], series: DicomSeries) -> list[_Frame]:
    """The frames of one converted series (same number and, when the sidecar has one, description), in acquisition
    order."""
    found = [
        f
        for f in frames
        if f.series_key[0] == series.number and (not series.description or f.series_key[1] == series.description)
    ]
    return sorted(found, key=lambda f: f.order)


def _volume_b_values(frames: list[_Frame], volumes: int) -> tuple[float, ...] | None:
    """Per-volume b-values of a series from its frames' headers: the b-value sequence at each slice position (all
    positions must agree), else the frames cut into ``volumes`` equal runs in acquisition order (each run must hold
    one b-value). None when the headers hold no b-value or do not fit ``volumes``."""
    if not frames or any(f.b_value is None for f in frames) or volumes < 1:
        return None
    by_position: dict[tuple, list[float]] = {}
    for f in frames:
        key = tuple(round(v, 2) for v in f.position) if f.position is not None else None
        by_position.setdefault(key, []).append(float(f.b_value))
    sequences = {tuple(v) for v in by_position.values()}
    if len(sequences) == 1 and None not in by_position:
        (sequence,) = sequences
        if len(sequence) == volumes:
            return sequence
    if len(frames) % volumes:
        return None
    size = len(frames) // volumes
    runs = [{f.b_value for f in frames[v * size : (v + 1) * size]} for v in range(volumes)]
    return tuple(float(r.pop()) for r in runs) if all(len(r) == 1 for r in runs) else None
