"""DeepISLES' NVAUTO algorithm (the PyPI package ``stroke_segmentor``) behind this project's backend interface.

The mask is the package's own (:mod:`stroke_seg.models.deepisles_case`: its transforms, sliding window, softmax mean
over the 15 TorchScript checkpoints, resampling back, argmax). What this backend adds around that loop:

* speed on a CPU with the same mask: each checkpoint is rebuilt as its eager MONAI network
  (:mod:`stroke_seg.models.segresnet`, checked equal to the checkpoint on a window) and run by OpenVINO in float32,
  converted once per machine (disk cache) and compiled per case (the memory of one compiled checkpoint at a time);
  a checkpoint that cannot be rebuilt runs as TorchScript in torch. ``engine="torch"`` is the package's own way
  (TorchScript, float32); ``engine="openvino-bf16"`` is faster and not exact (agreement in BENCHMARKS.md). On CUDA
  it is always the package's way (TorchScript + autocast).
* provisional answers: after each checkpoint the mean so far, resampled and thresholded like the final (the last one
  is the final mask), through ``on_partial``;
* progress per checkpoint and window, cancel within one window, a duration estimate from the pace so far, the
  weights checked and fingerprinted (:mod:`stroke_seg.models.deepisles_weights`), and raw heads skull-stripped with
  this project's brain mask first (DeepISLES runs HD-BET there; its networks were trained on skull-stripped scans).

The weights (Zenodo record 16920681) are not part of this project: ``$STROKE_SEG_DEEPISLES_WEIGHTS`` names a folder
holding ``model0.ts`` ... ``model14.ts``, used as given; without it the package's own download-and-cache runs on
first use."""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import logging
import os
import threading
from collections.abc import Callable
from contextlib import nullcontext

import numpy as np
import torch

from stroke_seg.errors import ModelError, check_cancel
from stroke_seg.models import deepisles_case, segresnet
from stroke_seg.models.base import CaseBackend, CaseOutput, PartialCallback
from stroke_seg.models.deepisles_case import ROI, Pace, window_count
from stroke_seg.models.deepisles_weights import (
    CHECKPOINTS,
    GET_WEIGHTS,
    NAME,
    RECORD_ID,
    WEIGHTS_ENV,
    WeightSet,
    check_weights,
    find_weights,
)
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
    "snapped_geometry",
]

log = logging.getLogger(__name__)

PACKAGE_VERSION = "0.0.3"
INSTALL_HINT = (
    f"{NAME} needs the optional DeepISLES extra: pip install -r requirements-deepisles.txt "
    f"(stroke-segmentor {PACKAGE_VERSION} and MONAI)"
)
CPU_WINDOW_S = {"torch": 28.8, "openvino": 13.0, "openvino-bf16": 4.2}
"""Typical seconds per 192x192x128 window of an 87 M-parameter SegResNet stand-in on a 2-core CPU: torch measured on
an idle machine, the others from it and the ratios measured side by side on a loaded one (BENCHMARKS.md, "DeepISLES":
2.2x for OpenVINO float32, 3.1x more for bfloat16); only the first estimate of a process uses it, every later one the
pace timed in this process."""
TRACE_WINDOW = (64, 64, 32)
"""The window an eager checkpoint is converted to OpenVINO on (then reshaped to the 192x192x128 window)."""

Runner = Callable[[torch.Tensor], torch.Tensor]


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


def _one_mm_shape(case: Case) -> tuple[int, int, int]:
    return tuple(max(1, int(round(n * v))) for n, v in zip(case.dwi.shape[:3], voxel_sizes(case.affine)))


class DeepIslesNvauto(CaseBackend):
    name = NAME
    description = (
        "DeepISLES' NVAUTO algorithm (ISLES'22 winning team; stroke_segmentor package): 15-checkpoint SegResNet "
        "ensemble on DWI + ADC at 1 mm. Slow on a CPU (tens of minutes; a provisional mask after each checkpoint), "
        "seconds on a GPU. Weights from Zenodo."
    )
    validated_on = (
        "Trained on ISLES'22 (250 multi-centre cases, skull-stripped). Published (not re-measured here: the weights "
        "are not reachable from this project's build machines): DeepISLES ensemble median Dice 0.82 on 1,685 external "
        "scans (de la Rosa et al., Nat Commun 2025)."
    )
    version = f"stroke_segmentor {PACKAGE_VERSION}"
    slow = True
    partial_results = True

    def __init__(self) -> None:
        if not available():
            raise ModelError(INSTALL_HINT)
        _import_package()
        self._lock = threading.Lock()
        self._weights: WeightSet | None = None
        self._weights_from: str | None = None  # the value of $STROKE_SEG_DEEPISLES_WEIGHTS they were found with
        self._scripted: dict[tuple[str, str], torch.jit.ScriptModule] = {}
        self._window_s: dict[str, float] = {}  # "engine@device" -> seconds per window timed in this process
        self._last_pace: dict[str, float] = {}  # device -> seconds per window of the last job there

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
                self._scripted.clear()
            self._weights_from = given
            return self._weights

    def weights_sha256(self, config: SegmentConfig) -> str | None:
        return self._weight_set(lambda f, d: None).sha256

    def _load(self, weights: WeightSet, index: int, device: torch.device) -> torch.jit.ScriptModule:
        """Checkpoint ``index`` as TorchScript, loaded once per process and device."""
        key = (weights.key(index), str(device))
        with self._lock:
            if key in self._scripted:
                return self._scripted[key]
        path = weights.files[index]
        try:
            net = torch.jit.load(str(path), map_location=device).eval()
        except Exception as err:  # noqa: BLE001 - RuntimeError/ValueError/zip errors of a damaged file
            raise ModelError(
                f"{NAME} weights: checkpoint {path.name} in {weights.folder} could not be loaded as TorchScript "
                f"({type(err).__name__}); the file is damaged or not a checkpoint; {GET_WEIGHTS}"
            ) from err
        with self._lock:
            self._scripted[key] = net
        return net

    def _runner(self, weights: WeightSet, index: int, engine: str, device: torch.device, exact: bool):
        """``(engine that runs it, runner)`` for checkpoint ``index``. OpenVINO runs the eager rebuild (converted once
        per machine, compiled now, not kept); ``exact``: a checkpoint that cannot be rebuilt runs as TorchScript,
        else its TorchScript module is converted as it is."""
        if device.type == "cuda" or engine == "torch":
            return "torch", _torch_runner(self._load(weights, index, device), device)
        from stroke_seg.models.engines import build_engine, openvino_cached

        key = f"deepisles-{weights.key(index)}-eager-{segresnet.VERSION}"
        if openvino_cached(key):  # rebuilt and converted before: TorchScript is loaded only for a fallback
            net = functools.partial(self._load, weights, index, device)
        else:
            scripted = self._load(weights, index, device)
            net = segresnet.rebuild(scripted, name=weights.files[index].name)
            if net is None and exact:
                return "torch", _torch_runner(scripted, device)
            if net is None:
                key, net = f"deepisles-{weights.key(index)}-script", scripted
        kw = {"window": ROI, "key": key, "channels": 2, "trace_window": TRACE_WINDOW, "keep": False}
        used, run = build_engine(engine, net, **kw)
        if used == "torch":  # OpenVINO failed (logged): the package's own way instead
            return "torch", _torch_runner(self._load(weights, index, device), device)
        with self._lock:  # converted: its TorchScript module is not needed in memory any more
            self._scripted.pop((weights.key(index), str(device)), None)
        return used, run

    def _engine_name(self, config: SegmentConfig, device: torch.device) -> str:
        """``auto``: OpenVINO float32 on a CPU (the package's own torch float32 where OpenVINO is missing), the
        package's torch + autocast on CUDA; ``torch``, ``openvino``, ``openvino-bf16`` as asked (never bf16 unless
        asked: it changes the masks)."""
        from stroke_seg.models.engines import openvino_available, resolve_engine

        if device.type == "cuda":
            return "torch"
        if config.engine == "auto":
            return "openvino" if openvino_available() else "torch"
        return resolve_engine(config.engine, device, "fast")

    def warm_up(self, config: SegmentConfig) -> None:
        device = _device(config)
        weights = self._weight_set(lambda f, d: None)
        engine = self._engine_name(config, device)
        for i in range(len(weights.files)):  # converts what is not in the disk cache yet
            self._runner(weights, i, engine, device, exact=config.engine == "auto")

    # -- estimate ---------------------------------------------------------------------------------------------
    def estimate_seconds(self, case: Case) -> float | None:
        """Windows x checkpoints x seconds per window: the last job's pace on this device, else the default engine's
        typical pace (:data:`CPU_WINDOW_S`)."""
        config = SegmentConfig()
        device = _device(config)
        per_window = self._last_pace.get(str(device)) or _default_pace(self._engine_name(config, device), device)
        if per_window is None:
            return None
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
        on_partial: PartialCallback | None = None,
    ) -> CaseOutput:
        device = _device(config)
        weights = self._weight_set(progress)
        engine = self._engine_name(config, device)
        check_cancel(should_cancel, "loading the DeepISLES weights")
        dwi, adc, notes = _inputs(case, volumes)
        prepared = deepisles_case.prepare(dwi, adc, snapped_geometry(case.geometry), device, progress)
        n = len(weights.files)
        rate_key = f"{engine}@{device}"
        pace = Pace(prepared.n_windows * n, self._window_s.get(rate_key) or _default_pace(engine, device))
        progress(0.0, f"{n} checkpoints x {prepared.n_windows} windows ({engine}), {pace.text()}")

        def runner(i: int) -> tuple[str, Runner]:
            if pace.done:  # the pace so far: the next job's estimate too
                self._window_s[rate_key] = self._last_pace[str(device)] = pace.per_window()
            return self._runner(weights, i, engine, device, exact=config.engine == "auto")

        prob, mask, used = deepisles_case.average(
            prepared, runner, n, pace, shape=case.dwi.shape[:3], progress=progress, should_cancel=should_cancel,
            on_partial=on_partial,
        )  # fmt: skip
        self._window_s[rate_key] = self._last_pace[str(device)] = pace.per_window()
        details = weights.details() | {
            "engine": "+".join(sorted(used)),
            "device": str(device),
            "windows_per_checkpoint": prepared.n_windows,
            "seconds_per_window": round(pace.per_window(), 3),
            "skull_stripped_by_stroke_seg": any("skull-stripped" in note for note in notes),
        }
        return CaseOutput(probability=prob, mask=mask, notes=notes, details=details)


def _inputs(case: Case, volumes: Preprocessed) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """DWI and ADC as DeepISLES gets them (a raw head skull-stripped with this project's brain mask), and the notes
    saying what was done."""
    notes: list[str] = []
    dwi, adc = case.dwi, case.adc
    if volumes.outside_ml > RAW_HEAD_ML:
        brain = from_canonical(volumes.brain, volumes.ornt)
        dwi, adc = np.where(brain, dwi, 0).astype(np.float32), np.where(brain, adc, 0).astype(np.float32)
        notes.append(
            f"Raw head ({volumes.outside_ml:.0f} mL of signal outside the brain): skull-stripped with this "
            "project's brain mask (zeros outside it) before DeepISLES, whose networks were trained on "
            "skull-stripped scans (DeepISLES itself uses HD-BET)."
        )
    if case.flair is not None:
        notes.append("FLAIR ignored: DeepISLES' NVAUTO algorithm uses DWI and ADC only.")
    return dwi, adc, tuple(notes)


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


def _default_pace(engine: str, device: torch.device) -> float | None:
    """Typical seconds per window before any is timed in this process: measured on a 2-core CPU; none on a GPU."""
    return None if device.type != "cpu" else CPU_WINDOW_S.get(engine, CPU_WINDOW_S["torch"])


def _device(config: SegmentConfig) -> torch.device:
    if config.device:
        return torch.device(config.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _torch_runner(net: torch.nn.Module, device: torch.device) -> Runner:
    """The package's own way to run a checkpoint: float32 on a CPU, autocast on CUDA."""

    def run(x: torch.Tensor) -> torch.Tensor:
        amp = torch.autocast("cuda", enabled=True) if device.type == "cuda" else nullcontext()
        with amp:
            return net(x.to(device))

    return run
