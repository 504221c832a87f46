"""Safe to expose: bombs refused from headers and directories before they expand, every job bounded in time, and an
optional login that guards every route and keeps each user's results to that user.

The bombs are made here, a few MB each, never committed: a gzip or zip whose deflate stream repeats one block that
inflates to 16 MiB of zeros (the CRC is real, so they are genuine bombs for any reader that expands them).
"""

from __future__ import annotations

import io
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import stroke_seg
from apphelpers import ROOT, launched_app, log_text
from conftest import require, require_module
from stroke_seg.errors import InputTooLargeError, InvalidImageError
from stroke_seg.io.dicom import convert, dcm2niix_path
from stroke_seg.io.limits import Limits, copy_bounded
from stroke_seg.io.readers import read_image

EXAMPLE = ROOT / "examples" / "embolic_multi"
GiB = 1024**3
CHUNK = 16 * 1024**2
BOMB_SHAPE = (2048, 2048, 1024)  # uint8: 4 GiB of voxels in a ~4 MB .nii.gz
ZIP_BOMB_BYTES = 7 * GiB // 2  # one member inflating to 3.5 GiB (no zip64 needed)
MANY_MEMBERS = 20_000
CLI_PEAK_BYTES = 2 * 10**9
SERVER_PEAK_BYTES = 3 * 10**9


# --- bombs ---------------------------------------------------------------------------------------------------------


def _gf2_times(matrix: list[int], vector: int) -> int:
    total, i = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[i]
        vector >>= 1
        i += 1
    return total


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """zlib's crc32_combine: the CRC-32 of A + B from those of A and B (``len2`` bytes), without reading them."""
    if len2 <= 0:
        return crc1
    odd = [0xEDB88320] + [1 << n for n in range(31)]
    even = [_gf2_times(odd, v) for v in odd]
    odd = [_gf2_times(even, v) for v in even]
    while len2:
        even = [_gf2_times(odd, v) for v in odd]
        if len2 & 1:
            crc1 = _gf2_times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = [_gf2_times(even, v) for v in even]
        if len2 & 1:
            crc1 = _gf2_times(odd, crc1)
        len2 >>= 1
    return crc1 ^ crc2


def crc32_of_zeros(n: int, crc: int = 0) -> int:
    """``zlib.crc32(bytes(n), crc)`` in milliseconds, by doubling a 16 MiB block's CRC."""
    piece, piece_len, count = zlib.crc32(bytes(CHUNK)), CHUNK, n // CHUNK
    while count:
        if count & 1:
            crc = crc32_combine(crc, piece, piece_len)
        piece, piece_len, count = crc32_combine(piece, piece, piece_len), 2 * piece_len, count >> 1
    return zlib.crc32(bytes(n % CHUNK), crc)


def _deflate_zeros(out, prefix: bytes, zeros: int) -> tuple[int, int]:
    """Write a raw deflate stream of ``prefix`` + ``zeros`` zero bytes to ``out``; returns (crc32, bytes written).

    After a full flush the compressor starts afresh, so every 16 MiB of zeros compresses to the same block: it is
    compressed once and repeated."""
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    start = out.tell()
    out.write(co.compress(prefix) + co.flush(zlib.Z_FULL_FLUSH))
    block = bytes(CHUNK)
    compressed = co.compress(block) + co.flush(zlib.Z_FULL_FLUSH)
    assert co.compress(block) + co.flush(zlib.Z_FULL_FLUSH) == compressed  # so repeating it is a valid stream
    co = zlib.compressobj(9, zlib.DEFLATED, -15)  # the tail: a fresh state, as after a full flush
    for _ in range(zeros // CHUNK):
        out.write(compressed)
    out.write(co.compress(bytes(zeros % CHUNK)) + co.flush())
    return crc32_of_zeros(zeros, zlib.crc32(prefix)), out.tell() - start


def make_nifti_bomb(path: Path, shape=BOMB_SHAPE) -> Path:
    """A .nii.gz whose header declares ``shape`` uint8 voxels, all present (zeros) in a small gzip."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.uint8)
    header["vox_offset"] = 352
    prefix = header.binaryblock + b"\x00" * 4
    voxels = int(np.prod(shape, dtype=np.int64))
    with open(path, "wb") as f:
        f.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")
        crc, _ = _deflate_zeros(f, prefix, voxels)
        f.write(struct.pack("<II", crc, (len(prefix) + voxels) & 0xFFFFFFFF))
    return path


def make_zip_bomb(path: Path, inflated: int = ZIP_BOMB_BYTES, name: bytes = b"IM0001.dcm") -> Path:
    """A .zip of one member whose directory truthfully declares ``inflated`` bytes (below 4 GiB: no zip64)."""
    with open(path, "w+b") as f:
        f.write(b"\x00" * (30 + len(name)))  # the local header, written once the sizes are known
        crc, size = _deflate_zeros(f, b"", inflated)
        fields = (20, 0, 8, 0, 0x21, crc, size, inflated, len(name))
        local = struct.pack("<IHHHHHIIIHH", 0x04034B50, *fields, 0) + name
        directory = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, *fields, 0, 0, 0, 0, 0, 0) + name
        end = f.tell()
        f.write(directory)
        f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(directory), end, 0))
        f.seek(0)
        f.write(local)
    return path


def make_many_member_zip(path: Path, members: int = MANY_MEMBERS) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for i in range(members):
            zf.writestr(f"series/IM{i:05d}.dcm", b"x")
    return path


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bombs")
    made = {
        "header": make_nifti_bomb(root / "bomb_dwi.nii.gz"),
        "zip": make_zip_bomb(root / "bomb_export.zip"),
        "many": make_many_member_zip(root / "many_files.zip"),
    }
    assert all(p.stat().st_size < 8 * 1024**2 for p in made.values()), {k: p.stat().st_size for k, p in made.items()}
    return made


def test_the_bombs_are_real(bombs):
    """The test inputs really expand: the gzip holds 4 GiB of voxels and the zip member 3.5 GiB (checked by
    inflating a prefix and by the trailers; their CRCs are computed as zlib would)."""
    n = 3 * CHUNK + 12345
    assert crc32_of_zeros(n, zlib.crc32(b"head")) == zlib.crc32(bytes(n), zlib.crc32(b"head"))
    raw = bombs["header"].read_bytes()
    crc, isize = struct.unpack("<II", raw[-8:])
    assert isize == (352 + int(np.prod(BOMB_SHAPE, dtype=np.int64))) & 0xFFFFFFFF
    head = zlib.decompressobj(-15).decompress(raw[10:], 64 * 1024**2)
    assert len(head) == 64 * 1024**2 and head[344:347] == b"n+1" and not any(head[352 : 352 + 1000])
    with zipfile.ZipFile(bombs["zip"]) as zf:
        (member,) = zf.infolist()
        assert member.file_size == ZIP_BOMB_BYTES and member.compress_size < 8 * 1024**2
        with zf.open(member) as f:
            assert f.read(CHUNK * 2) == bytes(CHUNK * 2)


# --- library: refused before expanding -----------------------------------------------------------------------------


def test_header_bomb_is_refused_from_its_header(bombs):
    t = time.monotonic()
    with pytest.raises(InputTooLargeError) as info:
        read_image(bombs["header"], "DWI")
    assert str(info.value) == (
        "DWI file bomb_dwi.nii.gz: expected at most 48,000,000 voxels, but its header declares 4,294,967,296 "
        "(2048x2048x1024)"
    )
    assert time.monotonic() - t < 2


def test_header_bomb_under_another_name_is_refused_without_inflating(bombs, tmp_path):
    """An MCP upload arrives as ``file.gz``: recognised by its header, which is all that is inflated."""
    other = tmp_path / "upload.gz"
    other.write_bytes(bombs["header"].read_bytes())
    with pytest.raises(InputTooLargeError, match=r"^ADC file upload.gz: expected at most 48,000,000 voxels"):
        read_image(other, "ADC")


def test_4d_counts_every_volume_and_the_limit_comes_from_the_environment(tmp_path, monkeypatch):
    four_d = tmp_path / "dwi4d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((20, 20, 20, 3), np.int16), np.eye(4)), str(four_d))
    monkeypatch.setenv("STROKE_SEG_MAX_VOXELS", "20000")
    with pytest.raises(
        InputTooLargeError, match=r"at most 20,000 voxels, but its header declares 24,000 \(20x20x20x3\)"
    ):
        stroke_seg.load_case(four_d, four_d)
    monkeypatch.setenv("STROKE_SEG_MAX_VOXELS", "24000")
    assert read_image(four_d, "DWI").data.shape == (20, 20, 20, 3)


def test_non_numeric_voxels_are_refused_from_the_header(tmp_path):
    path = tmp_path / "complex.nii"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 16), np.complex64), np.eye(4)), str(path))
    with pytest.raises(InputTooLargeError, match="complex.nii: expected voxels of a real number type"):
        read_image(path, "DWI")


@pytest.mark.parametrize(
    "kind, message",
    [
        ("zip", r"^DICOM archive bomb_export.zip: expected at most 2.0 GiB once unpacked, but its directory declares "
         r"3.5 GiB \(3,758,096,384 bytes\)$"),
        ("many", r"^DICOM archive many_files.zip: expected at most 10,000 files, but its directory lists 20,000$"),
    ],
    ids=["zip-bomb", "many-members"],
)  # fmt: skip
def test_dicom_archives_are_refused_from_their_directory(bombs, tmp_path, kind, message):
    t = time.monotonic()
    with pytest.raises(InputTooLargeError, match=message):
        convert(bombs[kind], tmp_path / "work")
    assert time.monotonic() - t < 5
    assert not any(p.is_file() for p in (tmp_path / "work").rglob("*"))  # nothing was unpacked


def test_a_bombs_compression_ratio_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "ratio.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("IM1.dcm", bytes(80 * 1024**2))  # 80 MiB of zeros deflate ~1000:1
    with pytest.raises(InputTooLargeError, match=r"ratio.zip: expected a compression ratio of at most 100:1"):
        convert(path, tmp_path / "work")
    monkeypatch.setenv("STROKE_SEG_MAX_ARCHIVE_RATIO", "5000")
    with pytest.raises(InvalidImageError, match="dcm2niix|DICOM") as info:  # unpacked now; not DICOM, though
        convert(path, tmp_path / "work2")
    assert not isinstance(info.value, InputTooLargeError)


def test_extraction_counts_the_bytes_it_really_writes():
    """A directory can lie: the copy stops once more bytes came than the limit, whatever was declared."""
    out = io.BytesIO()
    with pytest.raises(InputTooLargeError, match="stopped"):
        copy_bounded(io.BytesIO(bytes(5 * 1024**2)), out, 3 * 1024**2, "x.zip: stopped", chunk=1024**2)
    assert out.tell() <= 3 * 1024**2
    assert copy_bounded(io.BytesIO(b"abc"), io.BytesIO(), 3, "unused") == 3


def test_dcm2niix_gets_a_bounded_time(tmp_path, monkeypatch):
    try:
        dcm2niix_path()
    except InvalidImageError as err:
        require(False, str(err))
    from stroke_seg.synthetic.dicom_export import write_dicom_case, zip_folder

    dwi = nib.load(str(EXAMPLE / "dwi.nii.gz"))
    b0 = nib.Nifti1Image(np.asarray(dwi.dataobj) * 2.0, dwi.affine)
    export = zip_folder(write_dicom_case(tmp_path / "export", dwi, b0), tmp_path / "export.zip")
    monkeypatch.setenv("STROKE_SEG_DICOM_TIMEOUT", "0.001")
    with pytest.raises(InputTooLargeError, match=r"export.zip: expected the conversion \(dcm2niix\) to finish within"):
        convert(export, tmp_path / "work")


def test_limits_come_from_the_environment_and_are_validated(monkeypatch):
    for name in ("VOXELS", "ARCHIVE_BYTES", "ARCHIVE_FILES", "ARCHIVE_RATIO"):
        monkeypatch.delenv(f"STROKE_SEG_MAX_{name}", raising=False)
    monkeypatch.delenv("STROKE_SEG_DICOM_TIMEOUT", raising=False)
    assert Limits.from_env() == Limits(48_000_000, 2 * GiB, 10_000, 100.0, 300.0)
    monkeypatch.setenv("STROKE_SEG_MAX_ARCHIVE_FILES", "500")
    assert Limits.from_env().max_archive_files == 500
    monkeypatch.setenv("STROKE_SEG_MAX_VOXELS", "0")
    with pytest.raises(ValueError, match="STROKE_SEG_MAX_VOXELS must be > 0"):
        Limits.from_env()


# --- the command line: exit 2, one line, bounded memory and disk -----------------------------------------------------


_PEAK_MARK = "STROKE_SEG_TEST_VMHWM_KB"
_WITH_PEAK = (
    "import atexit, runpy, sys\n"
    "def _peak():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    f"            sys.stderr.write('\\n{_PEAK_MARK} ' + line.split()[1] + '\\n')\n"
    "atexit.register(_peak)\n"
    "sys.argv[0] = 'stroke_seg'\n"
    "runpy.run_module('stroke_seg', run_name='__main__')\n"
)
"""Runs the CLI and writes its own peak resident memory (VmHWM) to stderr at exit. Not ``wait4``'s ``ru_maxrss``:
that counts the parent's memory too, copied at the fork (a long pytest run is several GB)."""


def _cli_runs(argvs: dict[str, list[str]], tmp: Path) -> dict[str, tuple[int, str, int]]:
    """Run the CLI once per argv, at once; (exit code, stderr, peak resident bytes of the CLI process) of each."""
    env = dict(os.environ, TMPDIR=str(tmp))
    procs = {
        k: subprocess.Popen(
            [sys.executable, "-c", _WITH_PEAK, *argv],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for k, argv in argvs.items()
    }
    out = {}
    for k, proc in procs.items():
        _, err = proc.communicate()
        lines = err.decode().splitlines()
        peaks = [int(line.split()[1]) for line in lines if line.startswith(_PEAK_MARK)]
        text = "\n".join(line for line in lines if not line.startswith(_PEAK_MARK)).strip() + "\n"
        out[k] = (proc.returncode, text, (peaks[-1] if peaks else 1 << 40) * 1024)
    return out


def test_cli_refuses_each_bomb_with_exit_2_in_bounded_memory_and_disk(bombs, tmp_path):
    example_adc = str(EXAMPLE / "adc.nii.gz")
    runs = _cli_runs(
        {
            "header": [
                "segment",
                "--dwi",
                str(bombs["header"]),
                "--adc",
                example_adc,
                "--out",
                str(tmp_path / "a.nii"),
            ],
            "zip": ["segment", "--dicom", str(bombs["zip"]), "--out", str(tmp_path / "b.nii.gz")],
            "many": ["segment", "--dicom", str(bombs["many"]), "--out", str(tmp_path / "c.nii.gz")],
        },
        tmp_path,
    )
    for kind, (code, err, peak) in runs.items():
        errors = [line for line in err.strip().splitlines() if line.startswith("error: ")]
        assert code == 2, (kind, err[-2000:])
        assert len(errors) == 1 and err.strip().endswith(errors[0]) and bombs[kind].name in errors[0], (kind, err)
        assert "Traceback" not in err
        assert peak < CLI_PEAK_BYTES, f"{kind}: peak resident memory {peak / 1e9:.2f} GB"
    biggest = max((p.stat().st_size for p in tmp_path.rglob("*") if p.is_file()), default=0)
    assert biggest < GiB, f"a file of {biggest / GiB:.1f} GiB was written"


# --- the app: bombs, time-out, next job, memory ---------------------------------------------------------------------

gradio_client = require_module("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

from stroke_seg.models.unet import WEIGHTS_PATH  # noqa: E402


def _peak_rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024


def _refused(call) -> tuple[str, float]:
    t = time.monotonic()
    with pytest.raises(Exception) as info:  # gradio_client raises AppError with the server's message
        call()
    return str(info.value), time.monotonic() - t


@pytest.mark.app
@pytest.mark.slow
def test_app_refuses_bombs_times_out_a_job_and_serves_the_next(bombs, tmp_path):
    require(WEIGHTS_PATH.is_file(), f"U-Net weights missing at {WEIGHTS_PATH}")
    app_tmp = tmp_path / "tmp"
    app_tmp.mkdir()
    env = {
        # the torch reference in accurate mode: ~23 s on this 2-core CPU, ~10 s on CI's, well past the limit
        "STROKE_SEG_JOB_TIMEOUT": "4",
        "STROKE_SEG_ENGINE": "torch",
        "TMPDIR": str(app_tmp),  # every file the server writes lands here (checked below)
        "STROKE_SEG_ENGINE_CACHE": str(Path(tempfile.gettempdir()) / "stroke-seg-engines"),  # the usual, reused
    }
    with launched_app(tmp_path, with_process=True, **env) as (url, log, proc):
        client = Client(url, verbose=False)
        dwi, adc = handle_file(str(EXAMPLE / "dwi.nii.gz")), handle_file(str(EXAMPLE / "adc.nii.gz"))
        bomb = handle_file(str(bombs["header"]))
        message, took = _refused(
            lambda: client.predict(bomb, adc, None, None, "adc-threshold", "fast", api_name="/segment")
        )
        assert "DWI file bomb_dwi.nii.gz: expected at most 48,000,000 voxels, but its header declares" in message
        assert took < 30
        for kind, expected in (
            ("zip", "expected at most 2.0 GiB once unpacked"),
            ("many", "expected at most 10,000 files"),
        ):
            archive = handle_file(str(bombs[kind]))
            message, took = _refused(
                lambda a=archive: client.predict(
                    None, None, None, None, "adc-threshold", "fast", a, api_name="/segment"
                )
            )
            assert f"DICOM archive {bombs[kind].name}: {expected}" in message, message
            assert took < 30
        # a job past STROKE_SEG_JOB_TIMEOUT is stopped with a clear message ...
        message, took = _refused(lambda: client.predict(dwi, adc, None, None, "unet", "accurate", api_name="/segment"))
        assert "expected to finish within 4 s" in message and "stopped" in message, message
        assert took < 4 + 45
        assert "job timed out user=- model=unet" in log_text(log)
        # ... its inference loop stopped, and the next job is served
        assert "inference end status=cancelled" in log_text(log)
        mask, report, *_ = client.predict(dwi, adc, None, None, "adc-threshold", "fast", api_name="/segment")
        assert Path(mask).is_file() and report["lesion_count"] >= 1
        assert proc.poll() is None
        peak = _peak_rss(proc.pid)
        text = log_text(log)
    assert peak < SERVER_PEAK_BYTES, f"server peak resident memory {peak / 1e9:.2f} GB"
    biggest = max((p.stat().st_size for p in app_tmp.rglob("*") if p.is_file()), default=0)
    assert biggest < GiB, f"the server wrote a file of {biggest / GiB:.1f} GiB"
    # who ran what, on which bytes: digests, never the uploads' names
    assert re.search(
        r"job requested user=- model=adc-threshold mode=fast result=\w+ inputs=\[dwi:sha256=[0-9a-f]{64}", text
    )
    assert "bomb_dwi" not in text and "bomb_export" not in text and "many_files" not in text
