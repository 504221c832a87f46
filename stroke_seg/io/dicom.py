"""DICOM input: a folder or a .zip of a scanner export, converted with ``dcm2niix``, series chosen by b-value and type.

``dcm2niix`` (the PyPI wheel ships the binary) writes one NIfTI per series with a BIDS JSON sidecar (image type,
series description and number) and, for diffusion series, ``.bval``/``.bvec`` files; it reads classic and enhanced
(multi-frame) MR, any folder layout, with or without a DICOMDIR. A series whose ``.bval`` is missing or holds no
volume near the wanted b-value gets the b-values its DICOM headers hold, read with pydicom (:func:`header_b_value`:
the standard or enhanced-MR attribute, or the Siemens, GE or Philips private tag). The series are then sorted into:

* the **DWI**: the volume whose b-value is closest to ``b_value`` (1000 s/mm²) within 20 %, from a diffusion series
  (a trace series, or one that also holds the b0); of several directions at that b-value, the isotropic volume if
  the series has one, else their geometric mean (the trace);
* the **b0**: a b=0 volume of a diffusion series (the same series or its own);
* the **ADC**: a series whose image type or description says ADC.

Everything is written under the caller's working folder (the job's temporary folder in the app), never elsewhere.
:func:`write_seg` writes the mask as a DICOM SEG referencing the DWI's source images; :func:`with_seg` turns a SEG
that cannot be written into a warning of the result, so that the mask is never lost.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from stroke_seg.errors import InputTooLargeError, InvalidImageError, StrokeSegError
from stroke_seg.io.dicom_headers import _read_frames, _series_frames, _volume_b_values, header_b_value
from stroke_seg.io.limits import Limits, check_archive, check_declared, copy_bounded, format_bytes
from stroke_seg.io.readers import Image, read_image, without_paths

__all__ = [
    "DicomSeries",
    "DicomCase",
    "load_dicom",
    "convert",
    "dcm2niix_path",
    "header_b_value",
]

log = logging.getLogger(__name__)

B_TOLERANCE = 0.2
"""Relative distance from the wanted b-value within which a volume counts as the DWI."""


@dataclass(frozen=True)
class DicomSeries:
    """One converted series: its NIfTI, sidecar fields, b-values and gradient directions (empty when not diffusion)."""

    nifti: Path
    description: str
    number: int | None
    image_type: tuple[str, ...]
    bvals: tuple[float, ...]
    bvecs: tuple[tuple[float, float, float], ...] = ()

    @property
    def name(self) -> str:
        label = self.description or self.nifti.name[: -len(".nii.gz")]
        return f"series {self.number} '{label}'" if self.number is not None else f"'{label}'"

    @property
    def is_trace(self) -> bool:
        """A scanner-computed trace-weighted series: image type TRACEW (Siemens) or a description saying trace."""
        text = (" ".join(self.image_type) + " " + self.description).upper()
        return not self.is_adc and ("TRACEW" in self.image_type or bool(re.search(r"(?<![A-Z])TRACE", text)))

    @property
    def is_adc(self) -> bool:
        """Image type or description says ADC ("ADC", Philips "dADC", "Apparent Diffusion Coefficient"); an
        exponential ADC ("eADC") is not one."""
        text = (" ".join(self.image_type) + " " + self.description).upper()
        return bool(re.search(r"(?<![A-Z0-9])D?ADC(?![A-Z])", text)) or "APPARENT" in text


@dataclass(frozen=True, eq=False)
class DicomCase:
    """The images chosen from a DICOM export, ready for :func:`stroke_seg.io.case.load_case`."""

    dwi: Image
    adc: Image | None
    b0: Image | None
    b_value: float
    notes: tuple[str, ...]
    source_dir: Path | None = None
    dwi_series: DicomSeries | None = None
    dwi_volume: int = 0
    source_name: str = ""

    def as_inputs(self) -> dict[str, object]:
        """The mapping :func:`stroke_seg.segment` takes."""
        return {"dwi": self.dwi, "adc": self.adc, "b0": self.b0, "b_value": self.b_value}


def dcm2niix_path() -> str:
    """The dcm2niix executable (the PyPI wheel's, else one on PATH)."""
    try:
        import dcm2niix  # type: ignore[import-not-found]

        exe = Path(dcm2niix.bin)  # the wheel exposes its binary's path
        if exe.is_file():
            return str(exe)
    except (ImportError, AttributeError):
        pass
    found = shutil.which("dcm2niix")
    if not found:
        raise InvalidImageError(
            "DICOM input: expected the dcm2niix converter (pip install dcm2niix), but it is not installed"
        )
    return found


def _directory_size(source: Path) -> tuple[int, int] | None:
    """(entries, bytes) of a zip's central directory as its end record declares them, read before the directory
    itself is parsed (a 200 MB directory of tiny entries would take GBs of memory); None when not found."""
    try:
        with open(source, "rb") as f:
            end = zipfile._EndRecData(f)  # the stdlib's own end-of-directory reader (zip64 aware)
        return (int(end[zipfile._ECD_ENTRIES_TOTAL]), int(end[zipfile._ECD_SIZE])) if end else None
    except (AttributeError, OSError, IndexError, TypeError):  # a future stdlib without it: ZipFile still checks
        return None


DIRECTORY_BYTES_PER_FILE = 1024
"""Central-directory bytes allowed per permitted member (46 bytes + name + extra fields) before it is parsed."""


def _unpack(source: Path, workdir: Path, name: str) -> Path:
    """A DICOM folder as it is, or a .zip unpacked into ``workdir/dicom`` within the limits
    (:class:`~stroke_seg.io.limits.Limits`): refused from its directory when it lists too many members, declares too
    many bytes or a bomb's ratio, and stopped when the bytes really written pass the limit."""
    if source.is_dir():
        return source
    if not zipfile.is_zipfile(source):
        raise InvalidImageError(f"DICOM input {name}: expected a folder or a .zip of DICOM files, but it is neither")
    limits = Limits.from_env()
    declared = _directory_size(source)
    if declared is not None:
        entries, directory_bytes = declared
        check_archive(name, entries, 0, 1, limits)
        if directory_bytes > limits.max_archive_files * DIRECTORY_BYTES_PER_FILE:
            raise InputTooLargeError(
                f"DICOM archive {name}: expected a directory of at most {limits.max_archive_files:,} files, but it "
                f"takes {format_bytes(directory_bytes)}"
            )
    target = workdir / "dicom"
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    try:
        with zipfile.ZipFile(source) as zf:
            members = zf.infolist()
            check_archive(
                name,
                len(members),
                sum(m.file_size for m in members),
                sum(m.compress_size for m in members),
                limits,
            )
            for member in members:
                dest = (target / member.filename).resolve()
                if not str(dest).startswith(str(root) + os.sep) and dest != root:
                    raise InvalidImageError(
                        f"DICOM archive {name}: expected files inside the archive, but {member.filename!r} points "
                        "outside it"
                    )
            written = 0
            too_much = (
                f"DICOM archive {name}: expected at most {format_bytes(limits.max_archive_bytes)} once unpacked, but "
                "it inflated past that while being unpacked (more than its directory declares); stopped"
            )
            for member in members:
                dest = (target / member.filename).resolve()
                if member.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(dest, "wb") as dst:
                    written += copy_bounded(src, dst, limits.max_archive_bytes - written, too_much)
    except StrokeSegError:
        shutil.rmtree(target, ignore_errors=True)
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError, NotImplementedError, EOFError, OSError) as err:
        shutil.rmtree(target, ignore_errors=True)
        raise InvalidImageError(
            f"DICOM archive {name}: expected a readable .zip, but it could not be unpacked ({type(err).__name__}: "
            f"{without_paths(err, source, name)})"
        ) from err
    return target


def convert(source: str | os.PathLike, workdir: str | os.PathLike) -> tuple[list[DicomSeries], Path]:
    """Convert every series of a DICOM folder or .zip with dcm2niix into ``workdir/nifti``.

    Returns:
        The converted series and the folder holding the DICOM files (unpacked when a .zip was given).

    Raises:
        InvalidImageError: not a folder/zip, unsafe archive paths, or no convertible DICOM series.
    """
    source, workdir = Path(source), Path(workdir)
    name = source.name
    folder = _unpack(source, workdir, name)
    out = workdir / "nifti"
    out.mkdir(parents=True, exist_ok=True)
    cmd = [dcm2niix_path(), "-z", "y", "-b", "y", "-ba", "y", "-f", "%s_%d", "-o", str(out), str(folder)]
    timeout_s = Limits.from_env().dicom_timeout_s
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as err:
        raise InputTooLargeError(
            f"DICOM input {name}: expected the conversion (dcm2niix) to finish within {timeout_s:g} s "
            "(STROKE_SEG_DICOM_TIMEOUT), but it was still running; it was stopped"
        ) from err
    log.info("dcm2niix exit %d: %s", proc.returncode, proc.stdout[-500:].replace(str(folder), name))
    series = []
    for nii in sorted(out.glob("*.nii.gz")):
        stem = nii.name[: -len(".nii.gz")]
        meta = json.loads((out / f"{stem}.json").read_text()) if (out / f"{stem}.json").is_file() else {}
        series.append(
            DicomSeries(
                nii,
                str(meta.get("SeriesDescription", "")),
                meta.get("SeriesNumber"),
                tuple(meta.get("ImageType", ())),
                _read_numbers(out / f"{stem}.bval"),
                _read_bvecs(out / f"{stem}.bvec"),
            )
        )
    if not series:
        raise InvalidImageError(
            f"DICOM input {name}: expected DICOM image series, but dcm2niix found none it could convert"
        )
    return series, folder


def _read_numbers(path: Path) -> tuple[float, ...]:
    """The numbers of a dcm2niix ``.bval`` file; empty when it is missing or unreadable."""
    try:
        return tuple(float(v) for v in path.read_text().split()) if path.is_file() else ()
    except ValueError:
        log.warning("unreadable b-value file %s ignored", path.name)
        return ()


def _read_bvecs(path: Path) -> tuple[tuple[float, float, float], ...]:
    """The gradient directions of a dcm2niix ``.bvec`` file (3 rows), one per volume; empty when missing."""
    rows = [_read_numbers_line(line) for line in path.read_text().splitlines()] if path.is_file() else []
    rows = [r for r in rows if r]
    if len(rows) != 3 or len({len(r) for r in rows}) != 1:
        return ()
    return tuple(zip(*rows))


def _read_numbers_line(line: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in line.split())
    except ValueError:
        return ()


def _with_header_b_values(
    series: list[DicomSeries], folder: Path, b_value: float, name: str
) -> tuple[list[DicomSeries], list[str]]:
    """Series whose dcm2niix b-values are missing or hold no volume near ``b_value`` get the b-values their DICOM
    headers hold (standard, enhanced per-frame or vendor private tags, read with pydicom), when they fit."""
    suspect = [
        s for s in series if not s.is_adc and not any(abs(b - b_value) <= B_TOLERANCE * b_value for b in s.bvals)
    ]
    if not suspect:
        return series, []
    frames = _read_frames(folder, {s.number for s in suspect})
    fixed, notes = [], []
    for s in series:
        if s in suspect:
            shape = nib.load(str(s.nifti)).shape
            volumes = shape[3] if len(shape) == 4 else 1
            found = _volume_b_values(_series_frames(frames, s), volumes)
            if found is not None and found != s.bvals:
                was = ",".join(f"{b:g}" for b in s.bvals) or "none"
                notes.append(
                    f"{s.name}: b-values {','.join(f'{b:g}' for b in found)} read from the DICOM headers "
                    f"(dcm2niix reported {was})"
                )
                s = dataclasses.replace(s, bvals=found, bvecs=())
        fixed.append(s)
    for note in notes:
        log.info("DICOM %s: %s", name, note)
    return fixed, notes


def _volume(series: DicomSeries, index: int | None, label: str) -> Image:
    """One 3D volume of a converted series, named as the user knows it (``label``). Only that volume is read: its
    declared size is checked against the voxel limit first, so a long 4D series never comes into memory whole."""
    path = series.nifti
    try:
        img = nib.load(str(path))
        shape = img.header.get_data_shape()
    except Exception as err:  # nibabel raises several types for a damaged converted file
        raise InvalidImageError(
            f"DICOM input {label}: expected a readable converted series, but it is damaged "
            f"({type(err).__name__}: {without_paths(err, path, label)})"
        ) from err
    if len(shape) == 4 and shape[3] > 1:
        check_declared(shape[:3], img.header.get_data_dtype(), "DICOM series", label, Limits.from_env().max_voxels)
        try:
            data = np.asarray(img.dataobj[..., index or 0], dtype=np.float32)
        except (EOFError, OSError, ValueError) as err:
            raise InvalidImageError(
                f"DICOM input {label}: expected volume {(index or 0) + 1} of the series, but the converted data is "
                f"corrupt or truncated ({type(err).__name__}: {without_paths(err, path, label)})"
            ) from err
        header = img.header.copy()
        header.set_data_dtype(np.float32)
        header.set_slope_inter(1.0, 0.0)
        one = nib.Nifti1Image(data, img.affine, header)
        one.set_sform(*img.get_sform(coded=True))  # the converter's own sform and qform, unchanged
        one.set_qform(*img.get_qform(coded=True))
        img = one
    image = read_image(img if len(shape) == 4 and shape[3] > 1 else path, label)
    data = image.data[..., index or 0] if image.data.ndim == 4 else image.data
    return Image(np.ascontiguousarray(data), image.geometry, label)


def _dwi_volume(series: DicomSeries, b_value: float, label: str) -> tuple[Image, int, str]:
    """The DWI of a diffusion series: its one volume near ``b_value``; of several (directions), the isotropic one
    when the series holds it (zero gradient vector), else their geometric mean (the trace, as scanners compute it).

    Returns:
        (image, index of the first volume used, a note saying which volumes).
    """
    near = [i for i, b in enumerate(series.bvals) if abs(b - b_value) <= B_TOLERANCE * b_value]
    near.sort(key=lambda i: abs(series.bvals[i] - b_value))
    b = series.bvals[near[0]]
    total = len(series.bvals)
    if len(near) == 1:
        return _volume(series, near[0], label), near[0], f"volume {near[0] + 1} of {total}"
    same_b = [i for i in near if abs(series.bvals[i] - b) <= 1.0]
    isotropic = [i for i in same_b if series.bvecs and not any(series.bvecs[i])]
    if isotropic:
        k = isotropic[0]
        return _volume(series, k, label), k, f"volume {k + 1} of {total} (isotropic)"
    logs, geometry = None, None
    for i in same_b:  # one volume in memory at a time
        image = _volume(series, i, label)
        logs = np.zeros(image.data.shape, np.float32) if logs is None else logs
        logs += np.log(np.maximum(image.data, 1e-3))
        geometry = image.geometry
    data = np.exp(logs / len(same_b)).astype(np.float32)
    used = ",".join(str(i + 1) for i in same_b)
    return Image(data, geometry, label), same_b[0], f"trace of volumes {used} of {total} (geometric mean)"


def load_dicom(source: str | os.PathLike, workdir: str | os.PathLike, *, b_value: float = 1000.0) -> DicomCase:
    """Choose the DWI (b close to ``b_value``), b0 and ADC of a DICOM export.

    b-values come from dcm2niix's ``.bval`` files; a series with none there, or none near ``b_value``, gets the
    b-values its DICOM headers hold (standard or enhanced-MR attribute, or a Siemens/GE/Philips private tag).

    Args:
        source: a folder of DICOM files or a .zip of them (any layout, any file names, a DICOMDIR or not).
        workdir: an empty folder for the unpacked and converted files (deleted by the caller).
        b_value: the wanted diffusion weighting, s/mm².

    Returns:
        A :class:`DicomCase`; its ``adc`` or ``b0`` may be None, not both.

    Raises:
        InvalidImageError: no series with b close to ``b_value``, two candidate DWI series (unless one is the
            scanner's trace, TRACEW, and the others hold several directions: the trace is chosen, named in the
            notes), or neither an ADC series nor a b0 volume; messages name the series found.
    """
    name = Path(source).name
    series, folder = convert(source, workdir)
    series, header_notes = _with_header_b_values(series, folder, b_value, name)
    found = "; ".join(
        f"{s.name} (b={','.join(f'{b:g}' for b in s.bvals) or '-'}{', ADC' if s.is_adc else ''})" for s in series
    )
    adcs = [s for s in series if s.is_adc]
    diffusion = [s for s in series if s.bvals and not s.is_adc]
    dwis = [s for s in diffusion if any(abs(b - b_value) <= B_TOLERANCE * b_value for b in s.bvals)]
    if not dwis:
        raise InvalidImageError(
            f"DICOM input {name}: expected a diffusion series with b={b_value:g}, but there is no series with "
            f"b={b_value:g} (found: {found})"
        )
    traces = [s for s in dwis if s.is_trace]
    directional = [s for s in dwis if sum(abs(b - b_value) <= B_TOLERANCE * b_value for b in s.bvals) > 1]
    if len(traces) == 1 and len(dwis) == 1 + len(directional) and traces[0] not in directional:
        # the scanner's trace beside the directional series it was made from
        header_notes = header_notes + [
            f"DWI: the trace series {traces[0].name} (TRACEW) chosen over the directional "
            f"{', '.join(s.name for s in dwis if s is not traces[0])}"
        ]
        dwis = traces
    if len(dwis) > 1:
        raise InvalidImageError(
            f"DICOM input {name}: expected one DWI series with b={b_value:g}, but there are two or more: "
            f"{', '.join(s.name for s in dwis)}"
        )
    if len(adcs) > 1:
        raise InvalidImageError(
            f"DICOM input {name}: expected at most one ADC series, but there are {len(adcs)}: "
            f"{', '.join(s.name for s in adcs)}"
        )
    dwi_s = dwis[0]
    near = min(range(len(dwi_s.bvals)), key=lambda i: abs(dwi_s.bvals[i] - b_value))
    dwi, k, which = _dwi_volume(dwi_s, b_value, f"{name} {dwi_s.name} b={dwi_s.bvals[near]:g}")
    notes = header_notes + [f"DWI: {dwi_s.name}, b={dwi_s.bvals[k]:g} ({which})"]
    b0 = None
    for s in [dwi_s] + [d for d in diffusion if d is not dwi_s]:
        zeros = [i for i, b in enumerate(s.bvals) if b <= 50]
        if zeros:
            b0 = _volume(s, zeros[0], f"{name} {s.name} b=0")
            notes.append(f"b0: {s.name}, volume {zeros[0] + 1}")
            break
    adc = _volume(adcs[0], None, f"{name} {adcs[0].name}") if adcs else None
    if adc is not None:
        notes.append(f"ADC: {adcs[0].name}")
    if adc is None and b0 is None:
        raise InvalidImageError(
            f"DICOM input {name}: expected an ADC series or a b=0 volume to compute it from, but found neither "
            f"(found: {found})"
        )
    for n in notes:
        log.info("DICOM %s: %s", name, n)
    return DicomCase(
        dwi=dwi,
        adc=adc,
        b0=b0,
        b_value=float(dwi_s.bvals[k]),
        notes=tuple(notes),
        source_dir=folder,
        dwi_series=dwi_s,
        dwi_volume=k,
        source_name=name,
    )
