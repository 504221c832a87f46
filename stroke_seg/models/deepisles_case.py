"""One case through DeepISLES' NVAUTO algorithm, the ``stroke_segmentor`` package's way: its MONAI transforms (load,
1 mm bilinear resampling, per-channel z-score on non-zero voxels) on the [ADC, DWI] files, its Gaussian sliding
window (192x192x128, overlap 0.625) per checkpoint, the softmax averaged over the checkpoints, resampled back to the
input grid (``Invertd``), argmax.

The average is resampled back once (resampling is linear: the mean commutes with it) instead of once per
checkpoint; with an ``on_partial`` callback, also after each checkpoint, as a provisional answer (the average so far).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stroke_seg.errors import ModelError, check_cancel
from stroke_seg.io.readers import to_nifti
from stroke_seg.models.base import PartialCallback, PartialOutput
from stroke_seg.types import CancelCheck, Geometry, ProgressCallback

__all__ = ["ROI", "OVERLAP", "Prepared", "Pace", "prepare", "invert", "average", "window_count", "minutes"]

log = logging.getLogger(__name__)

ROI = (192, 192, 128)
OVERLAP = 0.625

Runner = Callable[[torch.Tensor], torch.Tensor]
"""One window (1, 2, 192, 192, 128) -> logits (1, 2, 192, 192, 128)."""


@dataclass
class Prepared:
    """The case as the package's transforms give it: ``batch`` (their output dict, for ``Invertd``), ``image``
    (1, 2, X, Y, Z) on the 1 mm grid, channels [ADC, DWI], on the device), and the transforms themselves."""

    batch: dict[str, Any]
    image: torch.Tensor
    transforms: Any
    n_windows: int


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


def prepare(
    dwi: np.ndarray, adc: np.ndarray, geometry: Geometry, device: torch.device, progress: ProgressCallback
) -> Prepared:
    """Write DWI and ADC as float32 NIfTI files on ``geometry`` and run the package's transforms on them, as the
    package does on the files it is given."""
    transforms = _package_transforms()
    with tempfile.TemporaryDirectory(prefix="stroke-seg-deepisles-") as tmp:
        paths = {}
        for key, data in (("adc", adc), ("dwi", dwi)):
            paths[key] = Path(tmp) / f"{key}.nii"
            to_nifti(data, geometry, np.float32).to_filename(paths[key])
        progress(0.0, "DeepISLES preprocessing: 1 mm resampling, z-score per channel")
        batch = transforms({"image": [str(paths["adc"]), str(paths["dwi"])]})  # channel order [ADC, DWI]
    image = batch["image"].unsqueeze(0).to(device)
    return Prepared(batch, image, transforms, window_count(tuple(image.shape[2:])))


def invert(prepared: Prepared, mean: torch.Tensor, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The averaged softmax (1, 2, X, Y, Z on the 1 mm grid) resampled back to the input grid: (lesion probability
    float32, argmax mask uint8), both of ``shape``."""
    from monai.transforms.post.dictionary import Invertd

    data = dict(prepared.batch)
    data["pred"] = mean[0]
    inverter = Invertd(
        keys="pred", transform=prepared.transforms, orig_keys="image", meta_keys="pred_meta_dict",
        nearest_interp=False, to_tensor=True,
    )  # fmt: skip
    avg = inverter(data)["pred"].cpu().numpy()
    mask = np.argmax(avg, axis=0).astype(np.uint8)
    if mask.shape != tuple(shape):
        raise ModelError(f"deepisles-nvauto: the resampled mask has shape {mask.shape}, not the DWI's {tuple(shape)}")
    return avg[1].astype(np.float32), mask


class Pace:
    """Windows done and seconds spent in them, for the estimate of the time left (``default_s`` per window until
    one is timed; None: unknown until then)."""

    def __init__(self, total: int, default_s: float | None) -> None:
        self.total, self.default_s = total, default_s
        self.done, self.spent = 0, 0.0

    def per_window(self) -> float | None:
        return self.spent / self.done if self.done else self.default_s

    def remaining_s(self) -> float | None:
        per = self.per_window()
        return None if per is None else (self.total - self.done) * per

    def text(self) -> str:
        left = self.remaining_s()
        return "time left not known yet" if left is None else f"about {minutes(left)} left"


def _timed_network(run: Runner, pace: Pace, label: str, n_windows: int, progress, should_cancel) -> Runner:
    """``run`` with cancel before each window, its time counted and the progress reported after it."""
    window = 0

    def network(x: torch.Tensor) -> torch.Tensor:
        nonlocal window
        check_cancel(should_cancel, f"DeepISLES {label}, window {window + 1}")
        t0 = time.perf_counter()
        out = run(x)
        pace.spent += time.perf_counter() - t0
        pace.done += 1
        window += 1
        progress(pace.done / pace.total, f"{label}, window {window}/{n_windows}, {pace.text()}")
        return out

    return network


def average(
    prepared: Prepared,
    runners: Callable[[int], tuple[str, Runner]],
    n: int,
    pace: Pace,
    *,
    shape: tuple[int, ...],
    progress: ProgressCallback,
    should_cancel: CancelCheck,
    on_partial: PartialCallback | None = None,
) -> tuple[np.ndarray, np.ndarray, set[str]]:
    """The ``n`` checkpoints' mean softmax on ``prepared``, resampled back to the input grid of ``shape``:
    (lesion probability, mask, the engines that ran). ``runners(i)`` builds checkpoint ``i``'s runner just before
    its windows (it is dropped after them); ``on_partial`` receives the mean so far after each checkpoint."""
    from monai.inferers.inferer import SlidingWindowInferer

    inferer = SlidingWindowInferer(
        roi_size=list(ROI), overlap=OVERLAP, mode="gaussian", cache_roi_weight_map=True, sw_batch_size=1
    )
    summed, used, result = None, set(), None
    with torch.no_grad():
        for i in range(n):
            label = f"checkpoint {i + 1}/{n}"
            check_cancel(should_cancel, f"DeepISLES {label}")
            progress(pace.done / pace.total, f"{label}: loading")
            name, run = runners(i)
            used.add(name)
            network = _timed_network(run, pace, label, prepared.n_windows, progress, should_cancel)
            logits = inferer(inputs=prepared.image, network=network)
            del run, network  # an OpenVINO checkpoint's memory goes before the next is compiled
            probs = torch.softmax(logits.float(), dim=1).cpu()
            summed = probs if summed is None else summed + probs
            if on_partial is not None or i == n - 1:
                result = invert(prepared, summed / (i + 1), shape)
            if on_partial is not None:
                on_partial(PartialOutput(*result, done=i + 1, total=n, remaining_s=pace.remaining_s()))
    return *result, used


def minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
