"""DeepISLES' NVAUTO algorithm (the PyPI package ``stroke_segmentor``) behind this project's backend interface.

The mask is the package's own: its MONAI transforms (load, 1 mm bilinear resampling, per-channel z-score on non-zero
voxels), 192x192x128 Gaussian sliding windows with 0.625 overlap, softmax averaged over the 15 TorchScript
checkpoints, resampled back to the input grid, argmax. What this module adds around that loop: each checkpoint
loaded once per process (the package's own torch float32 on a CPU and torch + autocast on CUDA; OpenVINO on
request), the average resampled back once instead of once per checkpoint, progress per checkpoint and window, cancel
within one window, a duration estimate, the weights folder checked and fingerprinted, and raw heads skull-stripped
with this project's brain mask first (DeepISLES runs HD-BET there; its networks were trained on skull-stripped
scans).

The weights (Zenodo record 16920681) are not part of this project: ``$STROKE_SEG_DEEPISLES_WEIGHTS`` names a folder
holding ``model0.ts`` ... ``model14.ts``, used as given; without it the package's own download-and-cache runs on
first use."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stroke_seg.errors import ModelError, check_cancel
from stroke_seg.io.readers import to_nifti
from stroke_seg.models.base import CaseBackend, CaseOutput
from stroke_seg.pipeline.preprocess import RAW_HEAD_ML, Preprocessed, from_canonical
from stroke_seg.types import CancelCheck, Case, Geometry, ProgressCallback, SegmentConfig, voxel_sizes

__all__ = [
    "NAME",
    "RECORD_ID",
    "CHECKPOINTS",
    "WEIGHTS_ENV",
    "INSTALL_HINT",
    "available",
    "DeepIslesNvauto",
    "WeightSet",
    "find_weights",
    "check_weights",
    "window_count",
]

log = logging.getLogger(__name__)

NAME = "deepisles-nvauto"
RECORD_ID = "16920681"
CHECKPOINTS = tuple(f"model{i}.ts" for i in range(15))
WEIGHTS_ENV = "STROKE_SEG_DEEPISLES_WEIGHTS"
ROI = (192, 192, 128)
OVERLAP = 0.625
PACKAGE_VERSION = "0.0.3"
INSTALL_HINT = (
    f"{NAME} needs the optional DeepISLES extra: pip install -r requirements-deepisles.txt "
    f"(stroke-segmentor {PACKAGE_VERSION} and MONAI)"
)
GET_WEIGHTS = (
    f"download the archive of Zenodo record {RECORD_ID} (https://zenodo.org/records/{RECORD_ID}), unpack it and set "
    f"{WEIGHTS_ENV} to the folder holding {CHECKPOINTS[0]} ... {CHECKPOINTS[-1]}"
)
CPU_WINDOW_S = 28.8
"""Seconds per 192x192x128 window of an 87 M-parameter SegResNet stand-in through this backend on a 2-core CPU
(BENCHMARKS.md, "DeepISLES"); only the first estimate of a process uses it, every later one uses the windows timed in
this process."""


def available() -> bool:
    """True when ``stroke_segmentor`` and MONAI are installed (the optional extra); found without importing them,
    which takes seconds (the backend imports them when it is created)."""
    return all(importlib.util.find_spec(m) is not None for m in ("stroke_segmentor", "monai"))


@functools.cache
def _import_package() -> None:
    try:
        import monai  # noqa: F401
        import stroke_segmentor  # noqa: F401
    except Exception as err:  # noqa: BLE001 - a broken install is reported like a missing one
        raise ModelError(f"{INSTALL_HINT}; importing it failed ({type(err).__name__}: {err})") from err


class WeightSet:
    """A checked weights folder: the 15 checkpoint paths and one SHA-256 over the set (file name + content)."""

    def __init__(self, folder: Path, files: tuple[Path, ...], sha256: str) -> None:
        self.folder, self.files, self.sha256 = folder, files, sha256

    def details(self) -> dict[str, Any]:
        return {"weights_checkpoints": len(self.files), "weights_sha256": self.sha256}


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def check_weights(folder: Path) -> WeightSet:
    """The checkpoint set in ``folder`` (never modified).

    Raises:
        ModelError: the folder or one of ``model0.ts`` ... ``model14.ts`` is missing or empty (named).
    """
    if not folder.is_dir():
        raise ModelError(f"{NAME} weights: expected a folder holding {CHECKPOINTS[0]} ... {CHECKPOINTS[-1]}, but "
                         f"{folder} is not a folder; {GET_WEIGHTS}")  # fmt: skip
    files = tuple(folder / name for name in CHECKPOINTS)
    missing = [p.name for p in files if not p.is_file()]
    if missing:
        raise ModelError(
            f"{NAME} weights: checkpoint {missing[0]} is missing from {folder} ({len(missing)} of {len(CHECKPOINTS)} "
            f"missing: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}); {GET_WEIGHTS}"
        )
    empty = [p.name for p in files if p.stat().st_size == 0]
    if empty:
        raise ModelError(f"{NAME} weights: checkpoint {empty[0]} in {folder} is empty (a broken download?); "
                         f"{GET_WEIGHTS}")  # fmt: skip
    digest = hashlib.sha256()
    for p in files:
        digest.update(f"{p.name}:{_file_sha256(p)}\n".encode())
    return WeightSet(folder, files, digest.hexdigest())


def _cached_folder(root: Path) -> Path | None:
    """The newest ``<record>_v<version>`` folder the package downloaded before, holding the checkpoints."""

    def version(p: Path) -> tuple[int, ...]:
        try:
            return tuple(int(x) for x in p.name.split("_v", 1)[1].split("."))
        except (IndexError, ValueError):
            return ()

    found = [p for p in root.glob(f"{RECORD_ID}_v*") if (p / CHECKPOINTS[0]).is_file()]
    return max(found, key=version) if found else None


def _zenodo_reachable(timeout_s: float = 10.0) -> bool:
    try:
        import requests

        return requests.get(f"https://zenodo.org/api/records/{RECORD_ID}", timeout=timeout_s).status_code == 200
    except Exception:  # noqa: BLE001 - any failure means "offline" here
        return False


def find_weights(report: ProgressCallback) -> Path:
    """The weights folder: ``$STROKE_SEG_DEEPISLES_WEIGHTS`` as given, else the package's download cache.

    Without the variable, Zenodo is asked first (10 s timeout): reachable, the package's own ``fetch_weights``
    downloads or updates its cache (reported as a stage); unreachable, the newest cached download is used, and with
    none a :class:`ModelError` says how to get the weights.
    """
    given = os.environ.get(WEIGHTS_ENV)
    if given:
        return Path(given).expanduser()
    from stroke_segmentor import zenodo

    cached = _cached_folder(zenodo.WEIGHTS_FOLDER)
    report(0.0, f"weights: asking Zenodo for record {RECORD_ID}")
    if not _zenodo_reachable():
        if cached is not None:
            log.info("%s: Zenodo unreachable; using the cached weights %s", NAME, cached)
            return cached
        raise ModelError(
            f"{NAME} weights are not on this machine and Zenodo could not be reached: expected "
            f"{CHECKPOINTS[0]} ... {CHECKPOINTS[-1]} in {WEIGHTS_ENV} or in the package's cache "
            f"{zenodo.WEIGHTS_FOLDER}; {GET_WEIGHTS}"
        )
    if cached is None:
        report(0.0, f"weights: downloading Zenodo record {RECORD_ID} (first use only; the 15 checkpoints)")
    else:
        report(0.0, f"weights: checking the cached download against Zenodo record {RECORD_ID}")
    try:
        return Path(zenodo.fetch_weights())
    except Exception as err:  # noqa: BLE001 - ZenodoException, requests errors, a broken archive
        if cached is not None:
            log.warning("%s: weights download failed (%s); using the cached weights %s", NAME, err, cached)
            return cached
        raise ModelError(f"{NAME} weights: the download from Zenodo failed ({err}); {GET_WEIGHTS}") from err


def _package_transforms():
    """The package's own preprocessing chain (``ModelHandler._get_transforms``), without creating a handler (which
    would fetch weights)."""
    from stroke_segmentor.model_handler import ModelHandler

    return ModelHandler._get_transforms(None)  # it uses no instance state


def window_count(shape: tuple[int, ...]) -> int:
    """Sliding windows MONAI runs over an image of ``shape`` (1 mm grid): one grid over the image, none outside it
    (an image smaller than a window is padded up to one window)."""
    from monai.data.utils import dense_patch_slices

    padded = tuple(max(int(s), r) for s, r in zip(shape, ROI))
    interval = tuple(max(1, int(r * (1 - OVERLAP))) if s > r else r for s, r in zip(padded, ROI))
    return len(dense_patch_slices(padded, ROI, interval))


def _one_mm_shape(case: Case) -> tuple[int, int, int]:
    return tuple(max(1, int(round(n * v))) for n, v in zip(case.dwi.shape[:3], voxel_sizes(case.affine)))


class DeepIslesNvauto(CaseBackend):
    name = NAME
    description = (
        "DeepISLES' NVAUTO algorithm (ISLES'22 winning team; stroke_segmentor package): 15-checkpoint SegResNet "
        "ensemble on DWI + ADC at 1 mm. Slow on a CPU (tens of minutes), seconds on a GPU. Weights from Zenodo."
    )
    validated_on = (
        "Trained on ISLES'22 (250 multi-centre cases, skull-stripped). Published (not re-measured here: the weights "
        "are not reachable from this project's build machines): DeepISLES ensemble median Dice 0.82 on 1,685 external "
        "scans (de la Rosa et al., Nat Commun 2025)."
    )
    version = f"stroke_segmentor {PACKAGE_VERSION}"
    slow = True

    def __init__(self) -> None:
        if not available():
            raise ModelError(INSTALL_HINT)
        _import_package()
        self._lock = threading.Lock()
        self._weights: WeightSet | None = None
        self._weights_from: str | None = None  # the value of $STROKE_SEG_DEEPISLES_WEIGHTS they were found with
        self._runners: dict[tuple[str, str, int], tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = {}
        self._window_s: dict[str, float] = {}

    # -- weights and engines, once per process ----------------------------------------------------------------
    def _weight_set(self, report: ProgressCallback) -> WeightSet:
        """The checked weights, found once per process (and again only when the variable changes)."""
        given = os.environ.get(WEIGHTS_ENV)
        with self._lock:
            if self._weights is not None and self._weights_from == given:
                return self._weights
        folder = find_weights(report)
        with self._lock:
            if self._weights is None or self._weights.folder != folder:
                report(0.0, "weights: checking the 15 checkpoints (SHA-256)")
                self._weights = check_weights(folder)
                self._runners.clear()
            self._weights_from = given
            return self._weights

    def weights_sha256(self, config: SegmentConfig) -> str | None:
        return self._weight_set(lambda f, d: None).sha256

    def _runner(self, weights: WeightSet, index: int, engine: str, device: torch.device):
        key = (weights.sha256, f"{engine}@{device}", index)
        with self._lock:
            if key in self._runners:
                return self._runners[key]
        path = weights.files[index]
        try:
            net = torch.jit.load(str(path), map_location=device).eval()
        except Exception as err:  # noqa: BLE001 - RuntimeError/ValueError/zip errors of a damaged file
            raise ModelError(
                f"{NAME} weights: checkpoint {path.name} in {weights.folder} could not be loaded as TorchScript "
                f"({type(err).__name__}); the file is damaged or not a checkpoint; {GET_WEIGHTS}"
            ) from err
        if device.type == "cuda" or engine == "torch":
            built = ("torch", _torch_runner(net, device))
        else:
            from stroke_seg.models.engines import build_engine

            built = build_engine(engine, net, window=ROI, key=f"deepisles-{weights.sha256[:16]}-{index}", channels=2)
            if built[0] == "torch":  # OpenVINO could not convert it (logged): the package's own way instead
                built = ("torch", _torch_runner(net, device))
        with self._lock:
            self._runners[key] = built
        return built

    def _engine_name(self, config: SegmentConfig, device: torch.device) -> str:
        """``auto``: the package's own way (torch float32 on a CPU, torch + autocast on CUDA). OpenVINO (``openvino``,
        ``openvino-bf16``) only when asked for: it cannot convert a scripted SegResNet (control flow and list
        operations; BENCHMARKS.md, "DeepISLES"), which then runs in torch, and bf16 changes the masks."""
        if device.type == "cuda" or config.engine == "auto":
            return "torch"
        from stroke_seg.models.engines import resolve_engine

        return resolve_engine(config.engine, device, "fast")

    def warm_up(self, config: SegmentConfig) -> None:
        device = _device(config)
        weights = self._weight_set(lambda f, d: None)
        engine = self._engine_name(config, device)
        for i in range(len(weights.files)):
            self._runner(weights, i, engine, device)

    # -- estimate ---------------------------------------------------------------------------------------------
    def estimate_seconds(self, case: Case) -> float | None:
        per_window = self._window_s.get(str(_device(SegmentConfig())), CPU_WINDOW_S)
        return window_count(_one_mm_shape(case)) * len(CHECKPOINTS) * per_window

    # -- the case ---------------------------------------------------------------------------------------------
    def predict_case(
        self,
        case: Case,
        volumes: Preprocessed,
        *,
        config: SegmentConfig,
        progress: ProgressCallback,
        should_cancel: CancelCheck,
    ) -> CaseOutput:
        from monai.inferers.inferer import SlidingWindowInferer
        from monai.transforms.post.dictionary import Invertd

        device = _device(config)
        weights = self._weight_set(progress)
        engine = self._engine_name(config, device)
        check_cancel(should_cancel, "loading the DeepISLES weights")
        notes: list[str] = []
        dwi, adc = case.dwi, case.adc
        stripped = volumes.outside_ml > RAW_HEAD_ML
        if stripped:
            brain = from_canonical(volumes.brain, volumes.ornt)
            dwi, adc = np.where(brain, dwi, 0).astype(np.float32), np.where(brain, adc, 0).astype(np.float32)
            notes.append(
                f"Raw head ({volumes.outside_ml:.0f} mL of signal outside the brain): skull-stripped with this "
                "project's brain mask (zeros outside it) before DeepISLES, whose networks were trained on "
                "skull-stripped scans (DeepISLES itself uses HD-BET)."
            )
        if case.flair is not None:
            notes.append("FLAIR ignored: DeepISLES' NVAUTO algorithm uses DWI and ADC only.")

        transforms = _package_transforms()
        with tempfile.TemporaryDirectory(prefix="stroke-seg-deepisles-") as tmp:
            paths = {}
            for key, data in (("adc", adc), ("dwi", dwi)):
                paths[key] = Path(tmp) / f"{key}.nii"
                to_nifti(data, snapped_geometry(case.geometry), np.float32).to_filename(paths[key])
            progress(0.0, "DeepISLES preprocessing: 1 mm resampling, z-score per channel")
            batch = transforms({"image": [str(paths["adc"]), str(paths["dwi"])]})  # channel order [ADC, DWI]
        image = batch["image"].unsqueeze(0).to(device)
        n_windows = window_count(tuple(image.shape[2:]))
        total = n_windows * len(weights.files)
        timer = {"done": 0, "spent": 0.0}
        label = str(device)

        def remaining() -> str:
            left = total - timer["done"]
            per = timer["spent"] / timer["done"] if timer["done"] else self._window_s.get(label, CPU_WINDOW_S)
            return f"about {_minutes(left * per)} left"

        progress(0.0, f"{len(weights.files)} checkpoints x {n_windows} windows ({engine}), {remaining()}")
        inferer = SlidingWindowInferer(
            roi_size=list(ROI), overlap=OVERLAP, mode="gaussian", cache_roi_weight_map=True, sw_batch_size=1
        )
        summed = None
        with torch.no_grad():
            for i in range(len(weights.files)):
                check_cancel(should_cancel, f"DeepISLES checkpoint {i + 1}/{len(weights.files)}")
                progress(timer["done"] / total, f"checkpoint {i + 1}/{len(weights.files)}: loading")
                used, run = self._runner(weights, i, engine, device)
                window = {"j": 0}

                def network(x: torch.Tensor, i=i, run=run, window=window) -> torch.Tensor:
                    check_cancel(should_cancel, f"DeepISLES checkpoint {i + 1}, window {window['j'] + 1}")
                    t0 = time.perf_counter()
                    out = run(x)
                    timer["spent"] += time.perf_counter() - t0
                    timer["done"] += 1
                    window["j"] += 1
                    progress(
                        timer["done"] / total,
                        f"checkpoint {i + 1}/{len(weights.files)}, window {window['j']}/{n_windows}, {remaining()}",
                    )
                    return out

                logits = inferer(inputs=image, network=network)
                probs = torch.softmax(logits.float(), dim=1).cpu()
                summed = probs if summed is None else summed + probs
        if timer["done"]:
            self._window_s[label] = timer["spent"] / timer["done"]
        batch["pred"] = (summed / len(weights.files))[0]  # resampling is linear: the mean commutes with it
        inverter = Invertd(
            keys="pred", transform=transforms, orig_keys="image", meta_keys="pred_meta_dict", nearest_interp=False,
            to_tensor=True,
        )  # fmt: skip
        probs = inverter(batch)
        avg = probs["pred"].cpu().numpy()
        mask = np.argmax(avg, axis=0).astype(np.uint8)
        if mask.shape != case.dwi.shape[:3]:
            raise ModelError(f"{NAME}: the resampled mask has shape {mask.shape}, not the DWI's {case.dwi.shape[:3]}")
        details = weights.details() | {
            "engine": used,
            "device": label,
            "windows_per_checkpoint": n_windows,
            "seconds_per_window": round(timer["spent"] / max(timer["done"], 1), 3),
            "skull_stripped_by_stroke_seg": bool(stripped),
        }
        return CaseOutput(probability=avg[1].astype(np.float32), mask=mask, notes=tuple(notes), details=details)


def snapped_geometry(geometry: Geometry) -> Geometry:
    """``geometry`` without the float noise converters leave in an axis-aligned affine.

    The package's 1 mm resampling (MONAI ``Spacing``) rounds the resampled grid's extent, so 1e-6 noise in an affine
    can move that grid by up to 1 mm and change the mask. When every direction cosine is within 1e-5 of 0 or +-1, the
    cosines are set to those values and each voxel size within 1e-5 mm of a multiple of 1e-4 mm to that multiple.
    Any other affine (oblique, or clean) is returned unchanged, so the mask stays the package's own for the file.
    """
    affine = np.asarray(geometry.affine, dtype=np.float64)
    sizes = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    cosines = affine[:3, :3] / sizes
    nice = np.round(cosines)
    if not np.all(np.abs(cosines - nice) < 1e-5):
        return geometry
    round_sizes = np.round(sizes, 4)
    sizes = np.where(np.abs(sizes - round_sizes) < 1e-5, round_sizes, sizes)
    clean = affine.copy()
    clean[:3, :3] = nice * sizes
    if np.array_equal(clean, affine):
        return geometry
    return dataclasses.replace(geometry, affine=clean)


def _device(config: SegmentConfig) -> torch.device:
    if config.device:
        return torch.device(config.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _torch_runner(net: torch.nn.Module, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """The package's own way to run a checkpoint: float32 on a CPU, autocast on CUDA."""

    def run(x: torch.Tensor) -> torch.Tensor:
        amp = torch.autocast("cuda", enabled=True) if device.type == "cuda" else nullcontext()
        with amp:
            return net(x.to(device))

    return run


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
