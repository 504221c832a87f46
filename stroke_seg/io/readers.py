"""Image readers behind one small interface, and the one image writer.

A reader turns a file into an :class:`Image`: voxel data, a :class:`~stroke_seg.types.Geometry` and the name the
user knows the file by. :func:`read_image` asks each registered reader in turn (:data:`READERS`; NIfTI today) and
:func:`register_reader` adds one, so a new format plugs in without touching validation (:mod:`stroke_seg.io.case`),
which works on arrays and geometries only. DICOM exports are whole cases, not single images:
:mod:`stroke_seg.io.dicom` converts them and hands :class:`Image` records to :func:`stroke_seg.io.case.load_case`.

Every output volume (mask, probability, staged inputs) is written by :func:`write_image`.

Nothing is read past a limit: a reader checks the shape and data type its header declares
(:func:`stroke_seg.io.limits.check_declared`) before it reads a voxel, and :func:`read_image` checks what any reader
returns as well.
"""

from __future__ import annotations

import gzip
import inspect
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import nibabel as nib
import numpy as np

from stroke_seg.errors import InvalidImageError
from stroke_seg.io.limits import Limits, check_declared
from stroke_seg.types import Geometry

__all__ = [
    "Image",
    "ImageReader",
    "ImageSource",
    "NiftiReader",
    "READERS",
    "register_reader",
    "read_image",
    "source_name",
    "to_nifti",
    "write_image",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Image:
    """One image as read: voxels, where they lie, and the name the user knows the file by.

    Attributes:
        data: float32 voxels, shape (X, Y, Z) or (X, Y, Z, T); trailing singleton axes beyond the third dropped.
        geometry: the grid's place in the world.
        name: file name without folders (never a server path), or ``"<in-memory image>"``.
    """

    data: np.ndarray
    geometry: Geometry
    name: str


ImageSource = str | os.PathLike | Image | nib.spatialimages.SpatialImage
"""A path to a file some reader accepts, an :class:`Image`, or an in-memory nibabel image."""


@runtime_checkable
class ImageReader(Protocol):
    """What a reader provides: the formats it reads (for messages), a cheap test, and the read itself."""

    formats: str
    """Human-readable format list, e.g. ``"NIfTI (.nii, .nii.gz)"``."""

    def accepts(self, path: Path) -> bool:
        """True when this reader can read ``path`` (by name or by its first bytes); never raises."""
        ...

    def read(self, path: Path, role: str) -> Image:
        """Read ``path``; raise :class:`~stroke_seg.errors.InvalidImageError` naming ``role`` and the file.

        A reader whose ``read`` also takes a keyword ``max_voxels`` gets the limit, and should check the declared
        shape with :func:`stroke_seg.io.limits.check_declared` before reading voxels.
        """
        ...


def without_paths(err: BaseException, path: Path, name: str) -> str:
    """An exception's text with the file's full path (a server path, in the app) replaced by its name."""
    text = str(err)
    for full in sorted({str(path), str(path.resolve())}, key=len, reverse=True):
        text = text.replace(full, name)
    for folder in sorted({str(path.parent), str(path.resolve().parent)}, key=len, reverse=True):
        if folder not in ("", ".", "/"):
            text = text.replace(folder + "/", "").replace(folder, "<folder>")
    return text


def _nifti_geometry(img: nib.spatialimages.SpatialImage) -> Geometry:
    header = img.header
    codes = [int(header[k]) if k in header else 2 for k in ("sform_code", "qform_code")]
    return Geometry(np.asarray(img.affine, dtype=np.float64), *codes)


def _nifti_data(img: nib.spatialimages.SpatialImage, role: str, name: str, max_voxels: int) -> np.ndarray:
    """All voxels as float32, after checking the shape and type the header declares against ``max_voxels``."""
    check_declared(img.header.get_data_shape(), img.header.get_data_dtype(), role, name, max_voxels)
    try:
        data = np.asanyarray(img.dataobj, dtype=np.float32)
    except (EOFError, zlib.error, OSError, ValueError) as err:
        where = Path(img.get_filename() or name)
        raise InvalidImageError(
            f"{role} file {name}: expected {role} voxel data, but the data is corrupt or truncated "
            f"({type(err).__name__}: {without_paths(err, where, name)})"
        ) from err
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return np.ascontiguousarray(data)


class NiftiReader:
    """NIfTI-1/2 (``.nii``, ``.nii.gz``); also a NIfTI under another name (``file.gz`` from an MCP upload),
    recognised by its header."""

    formats = "NIfTI (.nii or .nii.gz)"

    @staticmethod
    def _named(path: Path) -> bool:
        return path.name.endswith(".nii") or path.name.endswith(".nii.gz")

    @staticmethod
    def _by_content(path: Path) -> nib.Nifti1Image | None:
        """The image (header read, voxels not) when the first 348 bytes are a NIfTI-1 header, gzipped or not."""
        try:
            with open(path, "rb") as f:
                gzipped = f.read(2) == b"\x1f\x8b"
            stream = gzip.open(path, "rb") if gzipped else open(path, "rb")  # kept open: the proxy reads from it
            head = stream.read(352)
            if len(head) < 348 or head[344:347] not in (b"n+1", b"ni1"):
                stream.close()
                return None
            stream.seek(0)
            return nib.Nifti1Image.from_stream(stream)
        except (OSError, EOFError, zlib.error, ValueError, nib.filebasedimages.ImageFileError):
            return None

    def accepts(self, path: Path) -> bool:
        return self._named(path) or self._by_content(path) is not None

    def read(self, path: Path, role: str, *, max_voxels: int | None = None) -> Image:
        name = path.name
        try:
            loaded = nib.load(str(path)) if self._named(path) else self._by_content(path)
        except Exception as err:  # nibabel raises ImageFileError, gzip/zlib errors, OSError...
            raise InvalidImageError(
                f"{role} file {name}: expected a NIfTI image, but it could not be read ({type(err).__name__}: "
                f"{without_paths(err, path, name)})"
            ) from err
        if not isinstance(loaded, (nib.Nifti1Image, nib.Nifti2Image)):
            raise InvalidImageError(f"{role} file {name}: expected a NIfTI image, but it is {type(loaded).__name__}")
        limit = Limits.from_env().max_voxels if max_voxels is None else max_voxels
        return Image(_nifti_data(loaded, role, name, limit), _nifti_geometry(loaded), name)


READERS: list[ImageReader] = [NiftiReader()]
"""The registered readers, asked in order."""


def register_reader(reader: ImageReader) -> None:
    """Add a reader, asked before those already registered."""
    if not isinstance(reader, ImageReader):
        raise TypeError(f"expected an ImageReader (formats, accepts, read), but got {type(reader).__name__}")
    READERS.insert(0, reader)


def source_name(source: ImageSource) -> str:
    """The name the user knows an image by: the file name, never its folders."""
    if isinstance(source, Image):
        return source.name
    if isinstance(source, nib.spatialimages.SpatialImage):
        fname = source.get_filename()
        return Path(fname).name if fname else "<in-memory image>"
    return Path(source).name


def _takes_limit(reader: ImageReader) -> bool:
    try:
        return "max_voxels" in inspect.signature(reader.read).parameters
    except (TypeError, ValueError):
        return False


def read_image(source: ImageSource, role: str, *, max_voxels: int | None = None) -> Image:
    """Read one image with the first reader that accepts it, all voxels loaded (corrupt files fail here).

    Args:
        source: a path, an :class:`Image` (returned as it is) or an in-memory nibabel image.
        role: what the image is ("DWI", "ADC", ...), used in messages.
        max_voxels: largest accepted image, in voxels, all volumes of a 4D image together; None: the
            ``STROKE_SEG_MAX_VOXELS`` limit (:class:`stroke_seg.io.limits.Limits`). Checked from the header before any
            voxel is read, and again on what a reader returns.

    Raises:
        InputTooLargeError: the header declares more than ``max_voxels`` voxels or a non-numeric data type.
        InvalidImageError: missing, in no readable format, unreadable, corrupt or truncated.
    """
    limit = Limits.from_env().max_voxels if max_voxels is None else max_voxels
    if isinstance(source, Image):
        check_declared(source.data.shape, source.data.dtype, role, source.name, limit)
        return source
    name = source_name(source)
    if isinstance(source, nib.spatialimages.SpatialImage):
        return Image(_nifti_data(source, role, name, limit), _nifti_geometry(source), name)
    path = Path(source)
    formats = " or ".join(r.formats for r in READERS)
    if not path.is_file():
        raise InvalidImageError(f"{role} file {name}: expected an existing {formats} file, but it does not exist")
    for reader in READERS:
        if reader.accepts(path):
            image = reader.read(path, role, max_voxels=limit) if _takes_limit(reader) else reader.read(path, role)
            check_declared(image.data.shape, image.data.dtype, role, image.name, limit)
            return image
    raise InvalidImageError(
        f"{role} file {name}: expected a {formats} file, but the name ends in {''.join(path.suffixes) or 'no suffix'}"
    )


def to_nifti(data: np.ndarray, geometry: Geometry, dtype=np.uint8) -> nib.Nifti1Image:
    """A NIfTI-1 image of ``data`` on ``geometry``, keeping its sform/qform codes (unknown codes become aligned)."""
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), geometry.affine)
    img.header.set_data_dtype(dtype)
    img.header.set_xyzt_units("mm", "sec")
    img.set_sform(geometry.affine, geometry.sform_code or 2)
    img.set_qform(geometry.affine, geometry.qform_code or 2)
    return img


def write_image(data: np.ndarray, geometry: Geometry, path: str | os.PathLike, dtype=np.uint8) -> Path:
    """Write ``data`` as NIfTI (``.nii`` or ``.nii.gz``) on ``geometry``; parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(to_nifti(data, geometry, dtype), str(path))
    return path
