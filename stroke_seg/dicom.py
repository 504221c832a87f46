"""DICOM input: a folder or a .zip of a scanner export, converted with ``dcm2niix``, series chosen by b-value and type.

``dcm2niix`` (the PyPI wheel ships the binary) writes one NIfTI per series with a BIDS JSON sidecar (image type,
series description and number) and, for diffusion series, a ``.bval`` file. The series are then sorted into:

* the **DWI**: the volume whose b-value is closest to ``b_value`` (1000 s/mm²) within 20 %, from a diffusion series
  (a trace series, or one that also holds the b0);
* the **b0**: a b=0 volume of a diffusion series (the same series or its own);
* the **ADC**: a series whose image type or description says ADC.

Everything is written under the caller's working folder (the job's temporary folder in the app), never elsewhere.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from .errors import InvalidImageError
from .readers import Image, read_image

__all__ = ["DicomSeries", "DicomCase", "load_dicom", "convert", "dcm2niix_path", "write_seg"]

log = logging.getLogger(__name__)

B_TOLERANCE = 0.2
"""Relative distance from the wanted b-value within which a volume counts as the DWI."""


@dataclass(frozen=True)
class DicomSeries:
    """One converted series: its NIfTI, sidecar fields and b-values (empty when not diffusion)."""

    nifti: Path
    description: str
    number: int | None
    image_type: tuple[str, ...]
    bvals: tuple[float, ...]

    @property
    def name(self) -> str:
        return f"series {self.number} '{self.description}'" if self.number is not None else f"'{self.description}'"

    @property
    def is_adc(self) -> bool:
        text = " ".join(self.image_type).upper() + " " + self.description.upper()
        return "ADC" in text.replace("_", " ").split() or " ADC" in " " + text or "APPARENT" in text


@dataclass(frozen=True, eq=False)
class DicomCase:
    """The images chosen from a DICOM export, ready for :func:`stroke_seg.io.load_case`."""

    dwi: Image
    adc: Image | None
    b0: Image | None
    b_value: float
    notes: tuple[str, ...]
    source_dir: Path | None = None
    dwi_series: DicomSeries | None = None
    dwi_volume: int = 0

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


def _unpack(source: Path, workdir: Path, name: str) -> Path:
    if source.is_dir():
        return source
    if zipfile.is_zipfile(source):
        target = workdir / "dicom"
        target.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(source) as zf:
            for member in zf.infolist():
                dest = (target / member.filename).resolve()
                if not str(dest).startswith(str(target.resolve()) + os.sep) and dest != target.resolve():
                    raise InvalidImageError(
                        f"DICOM archive {name}: expected files inside the archive, but {member.filename!r} points "
                        "outside it"
                    )
            zf.extractall(target)
        return target
    raise InvalidImageError(f"DICOM input {name}: expected a folder or a .zip of DICOM files, but it is neither")


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
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    log.info("dcm2niix exit %d: %s", proc.returncode, proc.stdout[-500:].replace(str(folder), name))
    series = []
    for nii in sorted(out.glob("*.nii.gz")):
        stem = nii.name[: -len(".nii.gz")]
        meta = json.loads((out / f"{stem}.json").read_text()) if (out / f"{stem}.json").is_file() else {}
        bval_file = out / f"{stem}.bval"
        bvals = tuple(float(v) for v in bval_file.read_text().split()) if bval_file.is_file() else ()
        series.append(
            DicomSeries(
                nii,
                str(meta.get("SeriesDescription", stem)),
                meta.get("SeriesNumber"),
                tuple(meta.get("ImageType", ())),
                bvals,
            )
        )
    if not series:
        raise InvalidImageError(
            f"DICOM input {name}: expected DICOM image series, but dcm2niix found none it could convert"
        )
    return series, folder


def _volume(series: DicomSeries, index: int | None, label: str) -> Image:
    """One 3D volume of a converted series (read by the NIfTI reader), named as the user knows it (``label``)."""
    image = read_image(series.nifti, label)
    data = image.data[..., index or 0] if image.data.ndim == 4 else image.data
    return Image(np.ascontiguousarray(data), image.geometry, label)


def load_dicom(source: str | os.PathLike, workdir: str | os.PathLike, *, b_value: float = 1000.0) -> DicomCase:
    """Choose the DWI (b close to ``b_value``), b0 and ADC of a DICOM export.

    Args:
        source: a folder of DICOM files or a .zip of them (any layout, any file names).
        workdir: an empty folder for the unpacked and converted files (deleted by the caller).
        b_value: the wanted diffusion weighting, s/mm².

    Returns:
        A :class:`DicomCase`; its ``adc`` or ``b0`` may be None, not both.

    Raises:
        InvalidImageError: no series with b close to ``b_value``, two candidate DWI series, or neither an ADC
            series nor a b0 volume; messages name the series found.
    """
    name = Path(source).name
    series, folder = convert(source, workdir)
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
    k = int(np.argmin([abs(b - b_value) for b in dwi_s.bvals]))
    dwi = _volume(dwi_s, k, f"{name} {dwi_s.name} b={dwi_s.bvals[k]:g}")
    notes = [f"DWI: {dwi_s.name}, b={dwi_s.bvals[k]:g} (volume {k + 1} of {len(dwi_s.bvals)})"]
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
    )


def _source_slices(case: DicomCase) -> list:
    """The DICOM datasets of the chosen DWI volume, one per slice (pixel data not read)."""
    import pydicom

    series = case.dwi_series
    if series is None or case.source_dir is None:
        raise ValueError("write_seg needs a DicomCase made by load_dicom")
    found = []
    for path in sorted(p for p in case.source_dir.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=False)
        except Exception:  # not DICOM (a README, a DICOMDIR index...)
            continue
        if (
            "ImagePositionPatient" not in ds
            or ds.get("SeriesNumber") != series.number
            or str(ds.get("SeriesDescription", "")) != series.description
        ):
            continue
        found.append(ds)
    b_tag = [ds.get((0x0018, 0x9087)) for ds in found]
    if found and all(t is not None for t in b_tag):
        found = [
            ds for ds in found if abs(float(ds[0x0018, 0x9087].value) - case.b_value) <= B_TOLERANCE * case.b_value
        ]
    else:  # no standard b-value attribute: volumes follow each other in instance order, as dcm2niix stacks them
        found.sort(key=lambda ds: int(ds.get("InstanceNumber", 0)))
        per_volume = len(found) // max(1, len(series.bvals))
        found = found[case.dwi_volume * per_volume : (case.dwi_volume + 1) * per_volume]
    return found


def write_seg(mask: nib.Nifti1Image, case: DicomCase, out: str | os.PathLike, *, algorithm: str, version: str) -> Path:
    """Write a lesion mask as a DICOM Segmentation (binary) that references the DWI series it was made from.

    The mask (any grid with a valid affine, e.g. the result on the converted DWI grid) is sampled at the centre of
    every pixel of every source slice (nearest voxel, world coordinates), so the SEG frames match the scanner's
    slices whatever the converter's axis order.

    Args:
        mask: lesion mask (nonzero = lesion).
        case: what :func:`load_dicom` returned (its source files must still exist).
        out: the .dcm file to write.
        algorithm, version: the model's name and version, recorded as the segmentation algorithm.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    sources = _source_slices(case)
    if not sources:
        raise InvalidImageError(
            "DICOM SEG: expected the DWI series' DICOM files, but none were found next to the converted images"
        )
    data = np.asanyarray(mask.dataobj) > 0
    inv = np.linalg.inv(mask.affine)
    frames = []
    for ds in sources:
        rows, cols = int(ds.Rows), int(ds.Columns)
        iop = np.asarray(ds.ImageOrientationPatient, float)
        dr, dc = (float(v) for v in ds.PixelSpacing)  # between rows, between columns
        r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        lps = (
            np.asarray(ds.ImagePositionPatient, float)[:, None, None]
            + iop[:3, None, None] * c * dc
            + iop[3:, None, None] * r * dr
        )
        ras = lps * np.array([-1.0, -1.0, 1.0])[:, None, None]
        ijk = np.rint(np.tensordot(inv[:3, :3], ras, axes=1) + inv[:3, 3][:, None, None]).astype(int)
        inside = np.all((ijk >= 0) & (ijk < np.array(data.shape)[:, None, None]), axis=0)
        frame = np.zeros((rows, cols), bool)
        frame[inside] = data[ijk[0][inside], ijk[1][inside], ijk[2][inside]]
        frames.append(frame)
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
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=np.stack(frames).astype(np.uint8),
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
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(out)
    log.info("DICOM SEG written: %d frames, %d lesion pixels", len(frames), int(sum(f.sum() for f in frames)))
    return out
