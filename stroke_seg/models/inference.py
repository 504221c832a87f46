"""Gaussian-weighted sliding-window inference with progress and cancel (nnU-Net style).

Windows overlap by half; each prediction is weighted by a Gaussian centred on its window
(sigma = 1/8 of the window edge), so borders, where a network sees least context, count least.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from stroke_seg.errors import check_cancel
from stroke_seg.types import CancelCheck, ProgressCallback

__all__ = ["gaussian_weight", "window_starts", "sliding_window", "MIRROR_AXES"]

MIRROR_AXES: tuple[tuple[int, ...], ...] = tuple(c for r in range(4) for c in itertools.combinations((0, 1, 2), r))
"""The 8 mirror combinations over the three spatial axes (including no flip)."""


def gaussian_weight(size: Sequence[int], sigma_scale: float = 0.125) -> np.ndarray:
    """Gaussian importance map of a window, shape ``size``, float32, max 1, min > 0."""
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) - (s - 1) / 2 for s in size], indexing="ij")
    w = np.exp(-sum((g / (sigma_scale * s)) ** 2 / 2 for g, s in zip(grids, size)))
    w /= w.max()
    return np.maximum(w, 1e-3).astype(np.float32)


def window_starts(length: int, window: int, overlap: float = 0.5) -> list[int]:
    """Start indices covering ``length`` with windows of ``window`` and the given overlap."""
    if length <= window:
        return [0]
    step = max(1, int(window * (1 - overlap)))
    n = math.ceil((length - window) / step) + 1
    return [int(round(i * (length - window) / (n - 1))) for i in range(n)]


def sliding_window(
    volume: torch.Tensor,
    net: Callable[[torch.Tensor], torch.Tensor],
    window: Sequence[int],
    *,
    mirror_axes: Sequence[tuple[int, ...]] = ((),),
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
    overlap: float = 0.5,
) -> np.ndarray:
    """Predict a whole volume window by window.

    Args:
        volume: input tensor (C, X, Y, Z) on the network's device; every spatial size >= window.
        net: maps (1, C, x, y, z) to logits (1, 1, x, y, z).
        window: window size (x, y, z) in voxels.
        mirror_axes: test-time mirroring; each entry is a tuple of spatial axes to flip (0-2).
        progress: called after each window with (i / N, "window i/N").
        should_cancel: checked before each window and each mirror pass; raises ``Cancelled``.

    Returns:
        Probabilities (mean over mirrors, Gaussian-weighted over windows), shape (X, Y, Z), float32.
    """
    if volume.ndim != 4:
        raise ValueError(f"volume must be (C, X, Y, Z), but it has shape {tuple(volume.shape)}")
    if len(window) != 3 or min(window) < 1:
        raise ValueError(f"window must be 3 positive sizes, but it is {tuple(window)}")
    if any(s < w for s, w in zip(volume.shape[1:], window)):
        raise ValueError(
            f"every spatial size must be >= the window {tuple(window)}, but the volume is {tuple(volume.shape[1:])} "
            "(pad it first)"
        )
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), but it is {overlap}")
    for axes in mirror_axes:
        if any(a not in (0, 1, 2) for a in axes):
            raise ValueError(f"mirror axes must be spatial axes 0-2, but got {tuple(axes)}")
    cancel = should_cancel or (lambda: False)
    shape = tuple(volume.shape[1:])
    starts = [window_starts(s, w, overlap) for s, w in zip(shape, window)]
    boxes = list(itertools.product(*starts))
    weight = torch.from_numpy(gaussian_weight(window)).to(volume.device)
    acc = torch.zeros(shape, dtype=torch.float32, device=volume.device)
    norm = torch.zeros(shape, dtype=torch.float32, device=volume.device)
    total = len(boxes)
    with torch.inference_mode():
        for i, (x, y, z) in enumerate(boxes):
            check_cancel(cancel, f"inference (before window {i + 1}/{total})")
            sl = (slice(x, x + window[0]), slice(y, y + window[1]), slice(z, z + window[2]))
            patch = volume[(slice(None),) + sl][None]
            prob = torch.zeros(tuple(window), dtype=torch.float32, device=volume.device)
            for j, axes in enumerate(mirror_axes):
                if j:  # in accurate mode a window is 8 passes: stop between them too
                    check_cancel(cancel, f"inference (window {i + 1}/{total}, mirror pass {j + 1}/{len(mirror_axes)})")
                dims = [a + 2 for a in axes]
                inp = torch.flip(patch, dims) if dims else patch
                out = torch.sigmoid(net(inp).float())
                prob += (torch.flip(out, dims) if dims else out)[0, 0]
            prob /= len(mirror_axes)
            acc[sl] += prob * weight
            norm[sl] += weight
            if progress is not None:
                progress((i + 1) / total, f"window {i + 1}/{total}")
    return (acc / norm.clamp_min(1e-6)).cpu().numpy()
