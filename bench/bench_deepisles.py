"""DeepISLES NVAUTO: the package's own CPU path against this project's ``deepisles-nvauto`` backend, side by side in
one run, with stand-ins of the architecture (the real checkpoints cannot be downloaded on the build machines).

    python bench/bench_deepisles.py [--checkpoints 2] [--repeats 1] [--windows 2] [--bf16] [--full-run]

Stand-ins (``tests/deepisles_standins.py``, ``segresnet_standin``): MONAI ``SegResNetDS`` at Auto3DSeg's default size
(init_filters 32, blocks_down 1,2,2,4,4, instance norm, 2 channels in and out; 87 M parameters), scripted and saved
as ``model{i}.ts``; their weights carry a DWI/ADC lesion rule through the network plus small random weights in every
layer, so that the masks have a lesion with soft borders to compare. NVAUTO is an Auto3DSeg SegResNet; its exact
configuration lives only in the real checkpoints, so these give the scale, not the exact figure.

Case: a synthetic skull-stripped 1 mm head (150x180x120 voxels: one 192x192x128 window per checkpoint). The two paths
alternate, round after round, in this one process, so that the load of a shared machine falls on both:

* package: ``stroke_segmentor.Inferer().infer`` as published (TorchScript, torch float32, each checkpoint loaded per
  case, two windows per batch, probabilities resampled back per checkpoint), its checkpoint list cut to K.
* this backend: ``stroke_seg.segment(model="deepisles-nvauto")``, default engine (on a CPU: each checkpoint rebuilt
  as its eager MONAI network, checked equal, converted to OpenVINO once (disk cache), compiled per case, float32).
  The first case pays the conversion; the later ones read it from the disk cache.

Also, per window (--windows rounds, alternating): the TorchScript checkpoint in torch, its eager rebuild in torch,
OpenVINO float32 and bfloat16, with their largest logit difference from TorchScript. ``--bf16``: one case with
``engine="openvino-bf16"`` and its mask against the package's. ``--full-run``: one case with all 15 checkpoints
(the K stand-ins repeated) through ``segment(on_provisional=...)``: when the first provisional mask came, and the end.
Reported: seconds (this backend: its ``segment()`` inference stage, the DeepISLES part, and the whole call with
loading, QC and the clinical report), ratios package / this backend, masks (voxels differing, Dice), the one-time
conversion, and the load averages during the run. ``--case DIR``: a skull-stripped case folder instead.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

WINDOW = (192, 192, 128)
LOADS: list[float] = []


def note_load() -> None:
    LOADS.append(os.getloadavg()[0])


def write_standins(folder: Path, k: int) -> None:
    from deepisles_standins import write_segresnet_standins

    write_segresnet_standins(folder, n=k, init_filters=32, blocks_down=(1, 2, 2, 4, 4))
    for i in range(k, 15):  # the backend's full set, for --full-run (the K stand-ins repeated)
        (folder / f"model{i}.ts").write_bytes((folder / f"model{i % k}.ts").read_bytes())


def synthetic_case(folder: Path) -> dict[str, Path]:
    from conftest import phantom, save

    dwi, adc, _ = phantom(shape=(150, 180, 120), lesion_center=(90, 80, 60), radius=10)
    dwi = np.where(adc > 0, dwi, 0)
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.eye(4)
    return {"dwi": save(folder / "dwi.nii.gz", dwi, affine), "adc": save(folder / "adc.nii.gz", adc, affine)}


def package_case(weights: Path, k: int, files: dict[str, Path], out: Path) -> tuple[float, np.ndarray]:
    import nibabel as nib
    import stroke_segmentor.model_handler as handler
    from stroke_segmentor import Inferer

    handler.fetch_weights = lambda: weights  # the published loop, the stand-in folder
    inferer = Inferer(force_cpu=True)
    inferer.model_handler.checkpoints = inferer.model_handler.checkpoints[:k]
    note_load()
    t0 = time.perf_counter()
    inferer.infer(adc_path=files["adc"], dwi_path=files["dwi"], segmentation_path=out)
    return time.perf_counter() - t0, np.asarray(nib.load(str(out)).dataobj)


def first_k(k: int) -> None:
    """The backend insists on 15 checkpoints; the side-by-side cases run the first K."""
    from stroke_seg.models import deepisles, deepisles_weights

    def check(folder: Path) -> deepisles_weights.WeightSet:
        files = tuple(folder / f"model{i}.ts" for i in range(k))
        each = tuple(deepisles_weights._file_sha256(p) for p in files)
        return deepisles_weights.WeightSet(folder, files, f"bench-{k}-{each[0][:8]}", each)

    deepisles.check_weights = check
    deepisles_stale()


def deepisles_stale() -> None:
    import stroke_seg.models as models

    models._INSTANCES.pop("deepisles-nvauto", None)  # a new backend: the weight set is checked again


def our_case(files: dict[str, Path], engine: str = "auto", on_provisional=None) -> tuple[float, np.ndarray, dict]:
    """``segment()`` once: (its inference stage's seconds, the mask, model details + the whole call's seconds)."""
    import stroke_seg
    from stroke_seg.types import SegmentConfig

    note_load()
    t0 = time.perf_counter()
    result = stroke_seg.segment(
        files, model="deepisles-nvauto", config=SegmentConfig(engine=engine), on_provisional=on_provisional
    )
    details = result.model_details | {"segment_s": time.perf_counter() - t0}
    return result.timings["inference"], np.asarray(result.mask.dataobj), details


def compare(a: np.ndarray, b: np.ndarray) -> dict:
    a, b = a.astype(bool), b.astype(bool)
    total = a.sum() + b.sum()
    return {
        "voxels_differing": int((a != b).sum()),
        "dice": round(float(2 * (a & b).sum() / total), 5) if total else 1.0,
    }


def per_window(weights: Path, rounds: int) -> dict:
    """Seconds per window of one checkpoint by each way to run it, alternating, and the largest logit difference
    from the TorchScript checkpoint."""
    import openvino as ov

    from stroke_seg.models import segresnet

    scripted = torch.jit.load(str(weights / "model0.ts")).eval()
    eager = segresnet.rebuild(scripted)
    model = ov.convert_model(eager, example_input=torch.zeros(1, 2, 64, 64, 32))
    model.reshape([1, 2, *WINDOW])
    core = ov.Core()

    def compiled(precision: str):
        request = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision}).create_infer_request()
        return lambda x: torch.from_numpy(np.array(request.infer({0: x.numpy()})[0], copy=True))

    ways = {"torchscript": lambda: scripted, "eager": lambda: eager}
    ways |= {"openvino-f32": lambda: compiled("f32"), "openvino-bf16": lambda: compiled("bf16")}
    x = torch.randn(1, 2, *WINDOW, generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {k: [] for k in ways}
    outs = {}
    with torch.inference_mode():
        for _ in range(rounds):
            for name, build in ways.items():  # one compiled OpenVINO model in memory at a time
                run = build()
                note_load()
                t0 = time.perf_counter()
                outs[name] = run(x)
                times[name].append(time.perf_counter() - t0)
                del run
                print(f"window {name}: {times[name][-1]:.1f} s (load {LOADS[-1]:.1f})", flush=True)
    ref = outs["torchscript"]
    return {
        name: {
            "s_per_window": [round(t, 1) for t in times[name]],
            "median_s": round(statistics.median(times[name]), 1),
            "ratio_torchscript_over_this": round(statistics.median(times["torchscript"]) / statistics.median(v), 2),
            "max_abs_logit_diff": float((outs[name] - ref).abs().max()),
            "argmax_voxels_differing": int((outs[name].argmax(1) != ref.argmax(1)).sum()),
        }
        for name, v in times.items()
    }


def convert(k: int) -> float:
    """Seconds to convert the first ``k`` checkpoints to OpenVINO (rebuild, check, convert; each compiled once)."""
    from stroke_seg.models import get_model

    backend = get_model("deepisles-nvauto")
    weights = backend._weight_set(lambda f, d: None)
    t0 = time.perf_counter()
    for i in range(k):
        backend._runner(weights, i, "openvino", torch.device("cpu"), exact=True)
    print(f"conversions of {k} checkpoints: {time.perf_counter() - t0:.1f} s", flush=True)
    return time.perf_counter() - t0


def full_run(files: dict[str, Path], k: int) -> dict:
    """One case with the 15 checkpoints (the K stand-ins, converted to OpenVINO first, as after a first case): when
    the first provisional mask came, and when the final one."""
    deepisles_stale()
    from stroke_seg.models import deepisles, deepisles_weights

    deepisles.check_weights = deepisles_weights.check_weights
    convert(k)  # once per machine, as after a first case
    stamps: list[tuple[int, float]] = []
    t0 = time.perf_counter()
    seconds, _, details = our_case(files, on_provisional=lambda p: stamps.append((p.done, time.perf_counter() - t0)))
    return {
        "checkpoints": 15,
        "engine": details["engine"],
        "first_provisional_s": round(stamps[0][1], 1),
        "full_s": round(details["segment_s"], 1),
        "inference_s": round(seconds, 1),
        "first_over_full": round(stamps[0][1] / details["segment_s"], 3),
        "provisional_s": [round(s, 1) for _, s in stamps],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", type=int, default=2)
    ap.add_argument("--case", type=Path, help="a skull-stripped case folder (dwi.nii.gz, adc.nii.gz) instead")
    ap.add_argument("--repeats", type=int, default=1, help="cases per path after the first (median)")
    ap.add_argument("--windows", type=int, default=2, help="rounds of the per-window comparison (0: none)")
    ap.add_argument("--bf16", action="store_true", help="also one case with engine=openvino-bf16")
    ap.add_argument("--full-run", action="store_true", help="also one 15-checkpoint case with provisional answers")
    ap.add_argument("--full-run-only", action="store_true", help="only the 15-checkpoint case (another process)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    out: dict = {"checkpoints": args.checkpoints, "cpu_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory(prefix="bench-deepisles-") as tmp:
        tmp = Path(tmp)
        write_standins(tmp / "w", args.checkpoints)
        os.environ.update(STROKE_SEG_DEEPISLES_WEIGHTS=str(tmp / "w"), STROKE_SEG_ENGINE_CACHE=str(tmp / "engines"))
        os.environ["STROKE_SEGMENTOR_CITATION_REMINDER"] = "false"
        files = synthetic_case(tmp / "case")
        if args.case:
            files = {k: args.case / f"{k}.nii.gz" for k in ("dwi", "adc")}
        if args.full_run_only:
            out["full_run"] = full_run(files, args.checkpoints)
            return report(out, args.json)
        if args.windows:
            out["per_window"] = per_window(tmp / "w", args.windows)
            report(out, args.json)
        first_k(args.checkpoints)
        out["conversion_s"] = round(convert(args.checkpoints), 1)  # once per machine: not part of a case
        pkg, ours, stamps, whole = [], [], [], []
        for r in range(1 + args.repeats):  # alternating, so that the machine's load falls on both paths
            seconds, pkg_mask = package_case(tmp / "w", args.checkpoints, files, tmp / f"pkg{r}.nii.gz")
            pkg.append(seconds)
            print(f"package case {r}: {seconds:.1f} s", flush=True)
            t0, stamps = time.perf_counter(), []
            seconds, mask, details = our_case(
                files, on_provisional=lambda p, s=stamps, t=t0: s.append(time.perf_counter() - t)
            )
            ours.append(seconds)
            whole.append(details["segment_s"])
            print(f"this backend case {r}: {seconds:.1f} s ({details['engine']}), provisional at {stamps}", flush=True)
        later = slice(1, None) if args.repeats else slice(0, None)
        out["case"] = {
            "windows_per_checkpoint": details["windows_per_checkpoint"],
            "engine": details["engine"],
            "package_s": [round(s, 1) for s in pkg],
            "this_backend_s": [round(s, 1) for s in ours],
            "this_backend_whole_segment_s": [round(s, 1) for s in whole],
            "this_backend_s_per_window": details["seconds_per_window"],
            "ratio_package_over_this_later_cases": round(
                statistics.median(pkg[later]) / statistics.median(ours[later]), 2
            ),
            "ratio_per_round": [round(p / o, 2) for p, o in zip(pkg, ours)],
            "mask_vs_package": compare(mask, pkg_mask),
            "mask_voxels": int(pkg_mask.astype(bool).sum()),
            "provisional_s_last_case": [round(t, 1) for t in stamps],
        }
        report(out, args.json)
        if args.bf16:
            seconds, bf16_mask, details = our_case(files, engine="openvino-bf16")
            out["bf16_case"] = {"s": round(seconds, 1), "engine": details["engine"]} | compare(bf16_mask, pkg_mask)
            report(out, args.json)
        if args.full_run:
            out["full_run"] = full_run(files, args.checkpoints)
    report(out, args.json)


def report(out: dict, path: Path | None) -> None:
    """Print the figures so far (and write them to ``path``): a long run on a loaded machine keeps what it measured."""
    if LOADS:
        out["load_average_1min"] = {"min": round(min(LOADS), 1), "median": round(statistics.median(LOADS), 1),
                                    "max": round(max(LOADS), 1)}  # fmt: skip
    print(json.dumps(out, indent=2), flush=True)
    if path:
        path.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
