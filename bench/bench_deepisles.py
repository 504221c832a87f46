"""DeepISLES NVAUTO: the package's own CPU path against this project's ``deepisles-nvauto`` backend, in one run,
with random-weight stand-ins of the architecture (the real checkpoints cannot be downloaded on the build machines).

    python bench/bench_deepisles.py [--checkpoints 2] [--case FOLDER] [--repeats 2] [--peak-gflops 300]

Stand-ins: MONAI ``SegResNetDS`` with Auto3DSeg's defaults (init_filters 32, blocks_down 1,2,2,4,4, instance norm,
2 channels in and out), random weights, TorchScript, saved as ``model{i}.ts``. NVAUTO is an Auto3DSeg SegResNet; its
exact configuration lives only inside the real checkpoints, so these give the scale, not the exact figure.

Both paths run the same K checkpoints (default 2, not 15: the package's path takes ~20 s per window here) on one
case: without --case, a synthetic skull-stripped 1 mm case (one 192x192x128 window per checkpoint).

* package: ``stroke_segmentor.Inferer().infer`` as published (torch float32, checkpoint loaded per case, two windows
  per batch, probabilities resampled back per checkpoint), its checkpoint list cut to K.
* ours: ``stroke_seg.segment(model="deepisles-nvauto")`` with the default engine (torch float32 on a CPU, each
  checkpoint loaded once per process; the averaged probabilities resampled back once): the first case pays the
  loading, later cases reuse it.

Reported: seconds per case (median of --repeats after the first), seconds per window, the ratio, the masks' Dice
between the two paths, the FLOP count per window (counted with torch's FlopCounterMode on a 1/8-size window and
scaled: convolutions scale with voxels) and the floor = FLOP per case / --peak-gflops (an estimate of the CPU's
float32 peak), the duration estimate the app shows before a job, and a full 15-checkpoint case extrapolated.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def standin_net() -> torch.nn.Module:
    from monai.networks.nets import SegResNetDS

    return SegResNetDS(
        init_filters=32, blocks_down=(1, 2, 2, 4, 4), norm="instance", in_channels=2, out_channels=2, dsdepth=1
    ).eval()


def write_standins(folder: Path, k: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(k):
        torch.manual_seed(i)
        net = standin_net()
        scripted = torch.jit.script(net)
        paths.append(folder / f"model{i}.ts")
        torch.jit.save(scripted, str(paths[-1]))
    params = sum(p.numel() for p in standin_net().parameters())
    print(f"stand-ins: {k} x SegResNetDS, {params / 1e6:.1f} M parameters each", flush=True)
    return paths


def flops_per_window() -> float:
    from torch.utils.flop_counter import FlopCounterMode

    net = standin_net()
    x = torch.zeros(1, 2, 96, 96, 64)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x)
    return counter.get_total_flops() * 8.0  # 192x192x128 has 8x the voxels


def openvino_converts(path: Path) -> str:
    """Whether OpenVINO converts the scripted stand-in (the error's first line when not)."""
    import openvino as ov

    try:
        ov.convert_model(torch.jit.load(str(path)).eval(), example_input=torch.zeros(1, 2, 192, 192, 128))
    except Exception as err:  # noqa: BLE001 - the bench reports it
        lines = [ln for ln in str(err).splitlines() if "Conversion is failed" in ln or "No conversion rule" in ln]
        return f"no: {type(err).__name__}: {'; '.join(lines) or str(err).splitlines()[0]}"
    return "yes"


def synthetic_case(folder: Path) -> dict[str, Path]:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import phantom, save

    shape = (150, 180, 120)
    dwi, adc, _ = phantom(shape=shape, lesion_center=(90, 80, 60), radius=10)
    dwi = np.where(adc > 0, dwi, 0)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    folder.mkdir(parents=True, exist_ok=True)
    return {"dwi": save(folder / "dwi.nii.gz", dwi, affine), "adc": save(folder / "adc.nii.gz", adc, affine)}


def package_path(weights: Path, k: int, files: dict[str, Path], out: Path) -> tuple[float, np.ndarray]:
    import nibabel as nib
    import stroke_segmentor.model_handler as handler
    from stroke_segmentor import Inferer

    handler.fetch_weights = lambda: weights  # the published loop, the stand-in folder
    inferer = Inferer(force_cpu=True)
    inferer.model_handler.checkpoints = inferer.model_handler.checkpoints[:k]
    t0 = time.perf_counter()
    inferer.infer(adc_path=files["adc"], dwi_path=files["dwi"], segmentation_path=out)
    return time.perf_counter() - t0, np.asarray(nib.load(str(out)).dataobj)


def our_path(weights: Path, k: int, files: dict[str, Path]) -> tuple[float, np.ndarray, dict, list[str]]:
    import stroke_seg
    from stroke_seg.models import deepisles

    original = deepisles.check_weights

    def first_k(folder: Path) -> deepisles.WeightSet:  # the backend insists on 15 files; the bench runs K
        full = original(folder) if all((folder / n).is_file() for n in deepisles.CHECKPOINTS) else None
        files_k = tuple(folder / f"model{i}.ts" for i in range(k))
        return full or deepisles.WeightSet(folder, files_k, f"bench-{k}")

    deepisles.check_weights = first_k
    events: list[str] = []
    t0 = time.perf_counter()
    result = stroke_seg.segment(files, model=deepisles.NAME, progress=lambda f, d: events.append(d))
    seconds = time.perf_counter() - t0
    return seconds, np.asarray(result.mask.dataobj), result.model_details, events


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", type=int, default=2)
    ap.add_argument("--case", type=Path, help="case folder with dwi.nii.gz and adc.nii.gz (skull-stripped)")
    ap.add_argument("--repeats", type=int, default=2, help="cases per path after the first (median)")
    ap.add_argument("--peak-gflops", type=float, default=300.0, help="the CPU's float32 peak, GFLOP/s (estimate)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import os

    from stroke_seg.models import deepisles

    with tempfile.TemporaryDirectory(prefix="bench-deepisles-") as tmp:
        tmp = Path(tmp)
        write_standins(tmp / "w", args.checkpoints)
        os.environ[deepisles.WEIGHTS_ENV] = str(tmp / "w")
        os.environ["STROKE_SEGMENTOR_CITATION_REMINDER"] = "false"
        files = {"dwi": args.case / "dwi.nii.gz", "adc": args.case / "adc.nii.gz"} if args.case else synthetic_case(tmp)
        flops = flops_per_window()
        print(f"FLOP per 192x192x128 window: {flops / 1e12:.2f} T", flush=True)
        converts = openvino_converts(tmp / "w" / "model0.ts")
        print(f"OpenVINO converts the scripted stand-in: {converts}", flush=True)

        pkg_times, pkg_mask = [], None
        for r in range(1 + args.repeats):
            seconds, pkg_mask = package_path(tmp / "w", args.checkpoints, files, tmp / f"pkg{r}.nii.gz")
            pkg_times.append(seconds)
            print(f"package case {r}: {seconds:.1f} s", flush=True)
        ours_times, details, events, mask = [], {}, [], None
        for r in range(1 + args.repeats):
            seconds, mask, details, events = our_path(tmp / "w", args.checkpoints, files)
            ours_times.append(seconds)
            print(f"ours case {r}: {seconds:.1f} s ({details.get('engine')})", flush=True)

    windows = details["windows_per_checkpoint"] * args.checkpoints
    pkg = statistics.median(pkg_times[1:]) if args.repeats else pkg_times[0]
    ours = statistics.median(ours_times[1:]) if args.repeats else ours_times[0]
    inter = (pkg_mask.astype(bool) & mask.astype(bool)).sum()
    total = pkg_mask.astype(bool).sum() + mask.astype(bool).sum()
    estimate = next((e for e in events if "expected" in e), "")
    full_windows = details["windows_per_checkpoint"] * 15
    out = {
        "checkpoints": args.checkpoints,
        "windows_per_checkpoint": details["windows_per_checkpoint"],
        "engine": details["engine"],
        "package_s_per_case_first": round(pkg_times[0], 1),
        "package_s_per_case": round(pkg, 1),
        "ours_s_per_case_first": round(ours_times[0], 1),
        "ours_s_per_case": round(ours, 1),
        "package_s_per_window": round(pkg / windows, 2),
        "ours_s_per_window": round(ours / windows, 2),
        "ratio": round(pkg / ours, 2),
        "mask_dice_package_vs_ours": round(float(2 * inter / total), 4) if total else 1.0,
        "mask_voxels_differing": int((pkg_mask.astype(bool) != mask.astype(bool)).sum()),
        "tflop_per_window": round(flops / 1e12, 2),
        "floor_s_per_window": round(flops / (args.peak_gflops * 1e9), 1),
        "full_case_15_checkpoints_package_min": round(full_windows * pkg / windows / 60, 1),
        "full_case_15_checkpoints_ours_min": round(full_windows * ours / windows / 60, 1),
        "full_case_floor_min": round(full_windows * flops / (args.peak_gflops * 1e9) / 60, 1),
        "estimate_shown": estimate,
        "openvino_converts_scripted_standin": converts,
    }
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
