"""``unet``: a small 3D U-Net trained here, on synthetic cases only.

Inputs are three channels on a 2 mm isotropic working grid (canonical RAS+ axes): DWI divided by
its brain median, ADC in 1e-3 mm²/s (clipped to [0, 4]), FLAIR divided by its brain median (zeros
when the case has none). The output is a lesion logit map; probabilities are resampled back to the
canonical grid of the case and zeroed outside the (dilated) brain mask; lesions are then extended into the
DWI-bright, mildly restricted rim around them at the input resolution (``postprocess.grow_into_rim``: ADC < 850,
at most 4 mm), because the 2 mm network draws lesion edges short.

Lifecycle (as nnU-Net's predictor): the weights load once when the backend is created (SHA-256
checked against the sidecar JSON), then ``predict`` runs Gaussian-weighted sliding windows under
``torch.inference_mode()``, reporting each window and honouring cancel between windows.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi
from torch import nn

from stroke_seg.errors import Cancelled, ModelError, check_cancel
from stroke_seg.io.digest import file_sha256
from stroke_seg.models.base import Backend
from stroke_seg.models.engines import build_engine, resolve_engine
from stroke_seg.models.inference import sliding_window
from stroke_seg.pipeline.postprocess import grow_into_rim_around
from stroke_seg.pipeline.preprocess import Preprocessed, resample_to_shape, zoom_to_spacing
from stroke_seg.types import CancelCheck, ProgressCallback, SegmentConfig, scaled_progress

__all__ = ["UNet3D", "UNetBackend", "prepare_inputs", "WEIGHTS_PATH", "SPACING_MM", "WINDOW", "resolve_device"]

log = logging.getLogger(__name__)

WEIGHTS_PATH = Path(os.environ.get("STROKE_SEG_UNET_WEIGHTS") or Path(__file__).parent / "weights" / "unet.pt")
"""Shipped weights; ``STROKE_SEG_UNET_WEIGHTS`` points to another file (with its .json sidecar)."""
SPACING_MM = 2.0
"""Voxel size of the network's working grid, mm, whatever the input's."""
BRAIN_MARGIN_MM = 4.0
"""Probabilities are kept within this distance of the brain mask on the working grid, mm."""
WINDOW = (64, 64, 64)
ACCURATE_MIRRORS: tuple[tuple[int, ...], ...] = ((), (0,), (1,), (0, 1))
"""Mirror images averaged in ``accurate`` mode: none, left-right, front-back and both (axes of the canonical working
grid). ``python bench/bench_mirrors.py``: on 8 held-out generated heads and the ISLES'22 case these 4 give the mean
Dice of all 8 flips (0.8684 vs 0.8683) at half the network passes; flips along the head-foot axis add nothing."""
CHANNELS = ("dwi", "adc", "flair")


class _Block(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.InstanceNorm3d(cout, affine=True),
            nn.LeakyReLU(0.01, inplace=True),
            nn.Conv3d(cout, cout, 3, padding=1, bias=False),
            nn.InstanceNorm3d(cout, affine=True),
            nn.LeakyReLU(0.01, inplace=True),
        )


class UNet3D(nn.Module):
    """3D U-Net: ``depth`` levels, ``base * 2**level`` channels, stride-2 convs down, transposed up.

    Input (N, in_channels, X, Y, Z) with X, Y, Z divisible by 2**(depth-1); output logits (N, 1, X, Y, Z).
    """

    def __init__(self, in_channels: int = 3, base: int = 16, depth: int = 4) -> None:
        super().__init__()
        chans = [base * 2**i for i in range(depth)]
        self.config = {"in_channels": in_channels, "base": base, "depth": depth}
        self.down = nn.ModuleList(
            [_Block(in_channels, chans[0])] + [_Block(chans[i - 1], chans[i], stride=2) for i in range(1, depth)]
        )
        self.up = nn.ModuleList(
            [nn.ConvTranspose3d(chans[i], chans[i - 1], 2, stride=2) for i in range(depth - 1, 0, -1)]
        )
        self.merge = nn.ModuleList([_Block(2 * chans[i - 1], chans[i - 1]) for i in range(depth - 1, 0, -1)])
        self.head = nn.Conv3d(chans[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


@dataclass(frozen=True, eq=False)
class Prepared:
    """Network input for one case: channels (3, x, y, z) on the 2 mm grid, cropped to the brain."""

    x: np.ndarray
    crop: tuple[slice, slice, slice]
    working_shape: tuple[int, int, int]
    brain: np.ndarray  # working grid, dilated by BRAIN_MARGIN_MM


def prepare_inputs(volumes: Preprocessed, pad_to: tuple[int, int, int] = WINDOW) -> Prepared:
    """Resample a preprocessed case to the 2 mm working grid, stack channels, crop to the brain.

    The working grid covers the case's field of view with voxels of about :data:`SPACING_MM` whatever the input's
    voxel size (:func:`~stroke_seg.pipeline.preprocess.resample_to_shape`: finer inputs are box-averaged, coarser ones
    interpolated), so the network sees one scale. The crop is padded (with zeros) so that every axis is at least
    ``pad_to``.
    """
    dwi = np.clip(volumes.dwi, 0, 6)
    adc = np.clip(volumes.adc / 1000.0, 0, 4)
    flair = np.clip(volumes.flair, 0, 6) if volumes.flair is not None else None
    chans = [zoom_to_spacing(c, volumes.voxel_size, SPACING_MM) for c in (dwi, adc)]
    chans.append(
        zoom_to_spacing(flair, volumes.voxel_size, SPACING_MM) if flair is not None else np.zeros_like(chans[0])
    )
    brain_w = zoom_to_spacing(volumes.brain.astype(np.float32), volumes.voxel_size, SPACING_MM) > 0.25
    working_shape = chans[0].shape
    # the field of view is cropped to the brain as the network was trained on it: an extractor's, before its margin
    tight = brain_w
    if volumes.network_brain is not None and volumes.network_brain.any():
        tight = zoom_to_spacing(volumes.network_brain.astype(np.float32), volumes.voxel_size, SPACING_MM) > 0.25
    if tight.any():
        idx = np.argwhere(tight)
        lo, hi = np.maximum(idx.min(0) - 4, 0), np.minimum(idx.max(0) + 5, working_shape)
    else:
        lo, hi = np.zeros(3, int), np.asarray(working_shape)
    # grow the box to at least the window, staying inside the volume where possible
    size = np.maximum(hi - lo, pad_to)
    lo = np.clip(np.minimum(lo, np.asarray(working_shape) - size), 0, None)
    hi = np.minimum(lo + size, working_shape)
    crop = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    x = np.stack([c[crop] for c in chans]).astype(np.float32)
    pad = [(0, 0)] + [(0, max(0, p - s)) for s, p in zip(x.shape[1:], pad_to)]
    x = np.pad(x, pad)
    margin = max(1, round(BRAIN_MARGIN_MM / SPACING_MM))
    dil = ndi.binary_dilation(brain_w, iterations=margin) if brain_w.any() else brain_w
    return Prepared(x, crop, tuple(int(s) for s in working_shape), dil)  # type: ignore[arg-type]


def restore(prob_crop: np.ndarray, prepared: Prepared, canonical_shape: tuple[int, ...]) -> np.ndarray:
    """Paste a cropped working-grid probability map back, zero it beyond the brain's margin and resample it to the
    canonical grid (:func:`~stroke_seg.pipeline.preprocess.resample_to_shape`: a thick input slice gets the mean
    probability of the working voxels inside it, a fine input voxel the interpolated one)."""
    full = np.zeros(prepared.working_shape, np.float32)
    sizes = tuple(s.stop - s.start for s in prepared.crop)
    full[prepared.crop] = prob_crop[: sizes[0], : sizes[1], : sizes[2]]
    return np.clip(resample_to_shape(full * prepared.brain, tuple(canonical_shape)), 0, 1)


def resolve_device(device: str | None) -> torch.device:
    """CUDA when present (unless ``device`` says otherwise), else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_weights(path: Path = WEIGHTS_PATH) -> tuple[UNet3D, dict]:
    """Load the network and its metadata, checking the file's SHA-256 against the sidecar JSON.

    Raises:
        ModelError: the weights or their JSON are missing, the checksum differs, or loading fails.
    """
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise ModelError(
            f"unet weights: expected {path.name} and {meta_path.name} in {path.parent}, but they are missing; train "
            f"them with `python -m stroke_seg.synthetic.train --out {path}`"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as err:
        raise ModelError(f"unet weights: {meta_path.name} is not valid JSON ({err})") from err
    digest = file_sha256(path)
    if digest != meta.get("sha256"):
        raise ModelError(
            f"unet weights: {path.name} is corrupt: expected SHA-256 {meta.get('sha256')}, but the file has {digest}"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net = UNet3D(**meta["architecture"])
        net.load_state_dict(state)
    except Exception as err:  # torch raises many types for damaged files
        raise ModelError(f"unet weights: {path.name} could not be loaded ({type(err).__name__}: {err})") from err
    net.eval()
    return net, meta


class UNetBackend(Backend):
    name = "unet"
    description = (
        "3D U-Net (DWI+ADC[+FLAIR], 2 mm) trained here on synthetic cases only, edges completed with the DWI-bright "
        "rim; fast, or accurate: 4x mirror TTA (left-right, front-back)."
    )
    validated_on = (
        "Held-out synthetic cases and three real scans it never trained on (see MODEL_CARD.md); never trained on "
        "patient scans."
    )
    version = "1.0"

    def __init__(self, weights: Path = WEIGHTS_PATH) -> None:
        self.net, self.meta = load_weights(weights)
        self.version = f"1.0+{self.meta['sha256'][:8]}"
        self._device: torch.device | None = None

    def _on(self, device: torch.device) -> UNet3D:
        if self._device != device:
            self.net.to(device)
            self._device = device
        return self.net

    def engine(self, config: SegmentConfig) -> tuple[str, Callable[[torch.Tensor], torch.Tensor]]:
        """The network engine for ``config`` (device, mode, engine), built once per process: (its name, it)."""
        device = resolve_device(config.device)
        name = resolve_engine(config.engine, device, config.mode)
        return build_engine(name, self._on(device), window=WINDOW, key=f"unet-{self.meta['sha256'][:16]}")

    def warm_up(self, config: SegmentConfig) -> None:
        """Build the engines of both modes now, so that the first request does not pay their conversion."""
        for mode in ("fast", "accurate"):
            self.engine(config.replace(mode=mode))

    def predict(
        self, volumes: Preprocessed, *, config: SegmentConfig, progress: ProgressCallback, should_cancel: CancelCheck
    ) -> np.ndarray:
        progress(0.0, f"resampling to {SPACING_MM:g} mm working grid")
        prepared = prepare_inputs(volumes)
        check_cancel(should_cancel, "input preparation")
        device = resolve_device(config.device)
        engine_name, engine = self.engine(config)
        mirrors = ACCURATE_MIRRORS if config.mode == "accurate" else ((),)
        log.info(
            "unet: %s windows of %s on %s (%s), %d mirror passes",
            prepared.x.shape[1:],
            WINDOW,
            device,
            engine_name,
            len(mirrors),
        )
        x = torch.from_numpy(prepared.x).to(device)

        def run(net: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
            prefix = f"{len(mirrors)}x mirror TTA: " if len(mirrors) > 1 else ""
            return sliding_window(
                x,
                net,
                WINDOW,
                mirror_axes=mirrors,
                progress=scaled_progress(progress, 0.02, 0.97, prefix=prefix),
                should_cancel=should_cancel,
            )

        try:
            prob = run(engine)
        except Cancelled:
            raise
        except Exception as err:  # noqa: BLE001 - an engine failure falls back to the reference, never to the user
            if engine_name == "torch":
                raise
            log.warning("engine %s failed (%s: %s); running the torch reference", engine_name, type(err).__name__, err)
            prob = run(build_engine("torch", self._on(device), window=WINDOW, key="")[1])
        progress(0.98, "resampling back to the input grid")
        prob = restore(prob, prepared, volumes.dwi.shape)
        check_cancel(should_cancel, "inference")
        progress(0.99, "DWI-bright rim at the input resolution")
        # The network works at 2 mm and draws edges short; the rule's rim step (DWI-bright, ADC < 850, within
        # 4 mm) completes them at the input resolution (tuning set: mean Dice 0.812 -> 0.864, negatives 0 mL).
        return grow_into_rim_around(prob, volumes, threshold=config.threshold)  # only around the lesions: same result
