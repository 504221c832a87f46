"""Peak memory and time of one job on the largest accepted scan, and of refusing each bomb (command line).

    python bench/bench_limits.py [--models adc-threshold unet] [--mode fast] [--voxels 48000000]
    python bench/bench_limits.py --app      # the bombs through the launched app instead


The largest accepted scan is the example case ``examples/embolic_multi`` (2 mm, 92x110x94) repeated to 0.5 mm and
cropped to just under ``--voxels`` (the ``STROKE_SEG_MAX_VOXELS`` default): a DWI and an ADC of ~48 M voxels each,
int16 like a scanner's. Each row is one fresh ``python -m stroke_seg segment`` process; its peak resident memory is
the kernel's (``wait4`` rusage ``ru_maxrss``, the process's VmHWM). The bombs are those of ``tests/test_security.py``
(a 4 GiB-voxel .nii.gz, a zip inflating to 3.5 GiB, a zip of 20,000 members). Prints one Markdown table.

With ``--app`` the bombs go to the app (``python app.py`` on loopback, ``gradio_client``), each followed by the
example case with ``adc-threshold``; the server's resident memory (VmRSS, and its peak VmHWM since start, from
``/proc/PID/status``) is read after each.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def largest_case(folder: Path, voxels: int) -> tuple[Path, Path, tuple[int, ...]]:
    """DWI and ADC of the example at 0.5 mm (4x repeated on each axis), cropped on z to at most ``voxels``."""
    out = []
    for name in ("dwi", "adc"):
        img = nib.load(str(ROOT / "examples" / "embolic_multi" / f"{name}.nii.gz"))
        data = np.asanyarray(img.dataobj)
        for axis in range(3):
            data = np.repeat(data, 4, axis=axis)
        keep = voxels // (data.shape[0] * data.shape[1])
        cut = (data.shape[2] - keep) // 2
        data = np.ascontiguousarray(data[:, :, cut : cut + keep])
        affine = img.affine @ np.diag([0.25, 0.25, 0.25, 1.0])
        affine[:3, 3] = img.affine[:3, :3] @ (np.array([-0.375, -0.375, -0.375 + cut / 4])) + img.affine[:3, 3]
        path = folder / f"{name}.nii"
        nib.save(nib.Nifti1Image(data, affine, img.header), str(path))
        out.append(path)
    return out[0], out[1], data.shape


def run_cli(argv: list[str], tmp: Path) -> tuple[int, float, int, str]:
    """(exit code, seconds, peak resident bytes, last stderr line) of one CLI process."""
    t = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stroke_seg", *argv],
        cwd=ROOT,
        env=dict(os.environ, TMPDIR=str(tmp)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    err = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    last = (err.strip().splitlines() or [""])[-1]
    return proc.returncode, time.monotonic() - t, usage.ru_maxrss * 1024, last


def _proc_memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, bytes."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def app_bombs(work: Path) -> None:
    from gradio_client import Client, handle_file
    from test_security import make_many_member_zip, make_nifti_bomb, make_zip_bomb

    from apphelpers import launched_app

    example = ROOT / "examples" / "embolic_multi"
    dwi, adc = handle_file(str(example / "dwi.nii.gz")), handle_file(str(example / "adc.nii.gz"))
    bombs = {
        "header bomb as DWI (4.2 MB .nii.gz declaring 2048x2048x1024)": (
            lambda b: (b, adc, None, None, "adc-threshold", "fast"),
            make_nifti_bomb(work / "bomb_dwi.nii.gz"),
        ),
        "zip bomb as DICOM (3.7 MB, one member of 3.5 GiB)": (
            lambda b: (None, None, None, None, "adc-threshold", "fast", b),
            make_zip_bomb(work / "bomb.zip"),
        ),
        "zip of 20,000 members as DICOM (2.3 MB)": (
            lambda b: (None, None, None, None, "adc-threshold", "fast", b),
            make_many_member_zip(work / "many.zip"),
        ),
    }
    print("| request | answer | seconds | server RSS after MB | server peak since start MB |")
    print("|---|---|---|---|---|")
    with launched_app(work, with_process=True, TMPDIR=str(work)) as (url, _log, proc):
        client = Client(url, verbose=False)
        rss, peak = _proc_memory(proc.pid)
        print(f"| (app started) | — | — | {rss / 1e6:.0f} | {peak / 1e6:.0f} |")
        for label, (args, path) in bombs.items():
            t = time.monotonic()
            try:
                client.predict(*args(handle_file(str(path))), api_name="/segment")
                answer = "accepted (!)"
            except Exception as err:  # the app's error, as gradio_client raises it
                answer = f"refused: `{str(err)[:80]}...`"
            seconds = time.monotonic() - t
            rss, peak = _proc_memory(proc.pid)
            print(f"| {label} | {answer} | {seconds:.1f} | {rss / 1e6:.0f} | {peak / 1e6:.0f} |")
            t = time.monotonic()
            report = client.predict(dwi, adc, None, None, "adc-threshold", "fast", api_name="/segment")[1]
            rss, peak = _proc_memory(proc.pid)
            print(
                f"| next job: the example, `adc-threshold` (then from the result cache) | {report['lesion_count']} "
                f"lesions | {time.monotonic() - t:.1f} | {rss / 1e6:.0f} | {peak / 1e6:.0f} |"
            )
        alive = proc.poll() is None
    biggest = max((q.stat().st_size for q in work.rglob("*") if q.is_file()), default=0)
    print(f"\nserver alive at the end: {alive}; largest file under its TMPDIR: {biggest / 1e6:.1f} MB")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", nargs="+", default=["adc-threshold", "unet"])
    p.add_argument("--mode", default="fast")
    p.add_argument("--voxels", type=int, default=48_000_000)
    p.add_argument("--app", action="store_true", help="send the bombs to the launched app instead")
    a = p.parse_args()
    if a.app:
        with tempfile.TemporaryDirectory(prefix="bench-limits-app-") as work:
            app_bombs(Path(work))
        return
    from test_security import make_many_member_zip, make_nifti_bomb, make_zip_bomb

    with tempfile.TemporaryDirectory(prefix="bench-limits-") as work:
        work = Path(work)
        dwi, adc, shape = largest_case(work, a.voxels)
        print("| input | what runs | exit | seconds | peak RSS MB | largest file written MB |")
        print("|---|---|---|---|---|---|")
        for model in a.models:
            out = work / f"mask-{model}.nii.gz"
            argv = ["segment", "--dwi", str(dwi), "--adc", str(adc), "--model", model, "--mode", a.mode]
            code, seconds, peak, last = run_cli(argv + ["--out", str(out)], work)
            shown = "x".join(map(str, shape))
            voxels = int(np.prod(shape))
            print(
                f"| largest accepted scan ({shown} = {voxels:,} voxels, 0.5 mm, int16) | `{model}` {a.mode} | {code} "
                f"| {seconds:.1f} | {peak / 1e6:.0f} | — |"
            )
            if code:
                print(f"<!-- {last} -->")
        bombs = {
            "header bomb (.nii.gz declaring 2048x2048x1024 uint8, 4 MB)": ["--dwi", make_nifti_bomb(work / "b.nii.gz")],
            "zip bomb (one member inflating to 3.5 GiB)": ["--dicom", make_zip_bomb(work / "b.zip")],
            "zip of 20,000 members": ["--dicom", make_many_member_zip(work / "m.zip")],
        }
        for label, (flag, path) in bombs.items():
            extra = ["--adc", str(adc)] if flag == "--dwi" else []
            argv = ["segment", flag, str(path), *extra, "--out", str(work / "x.nii.gz")]
            before = {q for q in work.rglob("*") if q.is_file()}
            code, seconds, peak, last = run_cli(argv, work)
            written = [q.stat().st_size for q in work.rglob("*") if q.is_file() and q not in before]
            print(
                f"| {label} ({path.stat().st_size / 1e6:.1f} MB) | refused: `{last[:90]}...` | {code} | {seconds:.1f} "
                f"| {peak / 1e6:.0f} | {max(written, default=0) / 1e6:.1f} |"
            )


if __name__ == "__main__":
    main()
