"""Limits on what one upload may expand to, checked from headers and archive directories before anything expands.

A 4 MB ``.nii.gz`` can declare 4 GiB of voxels, and a 6 MB ``.zip`` can inflate to 6 GiB: the size of an upload
says nothing about its size once read. Every reader therefore checks the shape and data type its header declares
(:func:`check_declared`) before it reads a voxel, and a DICOM archive is checked from its central directory
(:func:`check_archive`) and extracted with a running count of the bytes really written (:func:`copy_bounded`),
since a directory can lie.

Each limit is an environment variable, read when a check runs (:meth:`Limits.from_env`):

=================================  ==============  ===========================================================
variable                           default         meaning
=================================  ==============  ===========================================================
``STROKE_SEG_MAX_VOXELS``          48,000,000      voxels per image (4D: all volumes together)
``STROKE_SEG_MAX_ARCHIVE_BYTES``   2 GiB           uncompressed bytes of one DICOM archive
``STROKE_SEG_MAX_ARCHIVE_FILES``   10,000          members of one DICOM archive
``STROKE_SEG_MAX_ARCHIVE_RATIO``   100             uncompressed / compressed size of an archive above 64 MiB
``STROKE_SEG_DICOM_TIMEOUT``       300             seconds dcm2niix may take for one export
=================================  ==============  ===========================================================
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from stroke_seg.errors import InputTooLargeError

__all__ = ["Limits", "check_declared", "check_archive", "copy_bounded", "RATIO_FLOOR_BYTES", "format_bytes"]

RATIO_FLOOR_BYTES = 64 * 1024**2
"""Archives that inflate to less than this are never refused for their compression ratio alone."""


def _env_number(name: str, default: float, cast=int):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = cast(float(raw.replace("_", "")))
    except ValueError as err:
        raise ValueError(f"{name} must be a number, but it is {raw!r}") from err
    if value <= 0:
        raise ValueError(f"{name} must be > 0, but it is {raw!r}")
    return value


@dataclass(frozen=True)
class Limits:
    """What one input may expand to.

    Attributes:
        max_voxels: voxels per image; a 4D image counts all its volumes.
        max_archive_bytes: uncompressed bytes of one archive (a DICOM .zip), all members together.
        max_archive_files: members of one archive.
        max_archive_ratio: uncompressed / compressed size of an archive that inflates to more than
            :data:`RATIO_FLOOR_BYTES` (scanner DICOM deflates 2-10x; a zip bomb ~1000x).
        dicom_timeout_s: seconds the DICOM converter (dcm2niix) may run for one export.
    """

    max_voxels: int = 48_000_000
    max_archive_bytes: int = 2 * 1024**3
    max_archive_files: int = 10_000
    max_archive_ratio: float = 100.0
    dicom_timeout_s: float = 300.0

    @classmethod
    def from_env(cls) -> Limits:
        """The limits set by ``STROKE_SEG_MAX_VOXELS``, ``STROKE_SEG_MAX_ARCHIVE_BYTES``,
        ``STROKE_SEG_MAX_ARCHIVE_FILES``, ``STROKE_SEG_MAX_ARCHIVE_RATIO`` and ``STROKE_SEG_DICOM_TIMEOUT``, each
        falling back to its default."""
        d = cls()
        return cls(
            max_voxels=_env_number("STROKE_SEG_MAX_VOXELS", d.max_voxels),
            max_archive_bytes=_env_number("STROKE_SEG_MAX_ARCHIVE_BYTES", d.max_archive_bytes),
            max_archive_files=_env_number("STROKE_SEG_MAX_ARCHIVE_FILES", d.max_archive_files),
            max_archive_ratio=_env_number("STROKE_SEG_MAX_ARCHIVE_RATIO", d.max_archive_ratio, float),
            dicom_timeout_s=_env_number("STROKE_SEG_DICOM_TIMEOUT", d.dicom_timeout_s, float),
        )


def format_bytes(n: float) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def check_declared(shape: Sequence[int], dtype: np.dtype, role: str, name: str, max_voxels: int) -> None:
    """Refuse an image from what its header declares, before a voxel is read.

    Args:
        shape: the declared shape, every axis (a 4D image counts all its volumes).
        dtype: the declared on-disk data type.
        role: what the image is ("DWI", "ADC", ...), for the message.
        name: the file name as the user knows it (never a server path).
        max_voxels: largest accepted number of voxels.

    Raises:
        InputTooLargeError: more voxels than ``max_voxels``, or a data type that is not a real number (complex,
            RGB, structured) of at most 8 bytes.
    """
    dims = [int(s) for s in shape]
    dtype = np.dtype(dtype)
    if dtype.kind not in "biuf" or dtype.itemsize > 8:
        raise InputTooLargeError(
            f"{role} file {name}: expected voxels of a real number type (integer or float, at most 8 bytes), but its "
            f"header declares {dtype} ({dtype.itemsize} bytes per voxel)"
        )
    if any(d < 0 for d in dims):
        raise InputTooLargeError(f"{role} file {name}: expected a non-negative shape, but its header declares {dims}")
    voxels = int(np.prod(dims, dtype=object)) if dims else 0
    if voxels > max_voxels:
        raise InputTooLargeError(
            f"{role} file {name}: expected at most {max_voxels:,} voxels, but its header declares {voxels:,} "
            f"({'x'.join(str(d) for d in dims)})"
        )


def check_archive(name: str, members: int, uncompressed: int, compressed: int, limits: Limits) -> None:
    """Refuse an archive from its directory: too many members, too many bytes once inflated, or a bomb's ratio.

    Args:
        name: the archive's name as the user knows it.
        members: entries in its directory.
        uncompressed, compressed: bytes of all members together, as the directory declares them.
        limits: the limits to apply.

    Raises:
        InputTooLargeError: naming the archive and the limit it passed.
    """
    if members > limits.max_archive_files:
        raise InputTooLargeError(
            f"DICOM archive {name}: expected at most {limits.max_archive_files:,} files, but its directory lists "
            f"{members:,}"
        )
    if uncompressed > limits.max_archive_bytes:
        raise InputTooLargeError(
            f"DICOM archive {name}: expected at most {format_bytes(limits.max_archive_bytes)} once unpacked, but its "
            f"directory declares {format_bytes(uncompressed)} ({uncompressed:,} bytes)"
        )
    ratio = uncompressed / max(compressed, 1)
    if uncompressed > RATIO_FLOOR_BYTES and ratio > limits.max_archive_ratio:
        raise InputTooLargeError(
            f"DICOM archive {name}: expected a compression ratio of at most {limits.max_archive_ratio:g}:1, but it "
            f"inflates {format_bytes(compressed)} to {format_bytes(uncompressed)} ({ratio:,.0f}:1)"
        )


def copy_bounded(src: BinaryIO, dst: BinaryIO, budget: int, message: str, chunk: int = 1 << 20) -> int:
    """Copy ``src`` to ``dst`` in chunks, stopping as soon as more than ``budget`` bytes came.

    Directories can lie about sizes, so extraction counts the bytes it really writes.

    Returns:
        The number of bytes copied (at most ``budget``).

    Raises:
        InputTooLargeError: with ``message``, when ``src`` holds more than ``budget`` bytes (at most ``budget`` were
            written and ``budget + chunk`` read).
    """
    copied = 0
    while True:
        block = src.read(chunk)
        if not block:
            return copied
        copied += len(block)
        if copied > budget:
            raise InputTooLargeError(message)
        dst.write(block)
