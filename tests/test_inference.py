"""Sliding-window inference with a stand-in network whose output is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stroke_seg import Cancelled
from stroke_seg.models.inference import MIRROR_AXES, gaussian_weight, sliding_window, window_starts


def identity_logit(x: torch.Tensor) -> torch.Tensor:
    """A stand-in network: the logit is the first channel itself."""
    return x[:, :1]


def test_known_output_is_reproduced_across_windows_and_mirrors():
    rng = np.random.default_rng(0)
    vol = torch.from_numpy(rng.normal(0, 2, (2, 40, 36, 33)).astype(np.float32))
    expected = torch.sigmoid(vol[0]).numpy()
    for mirrors in (((),), MIRROR_AXES):
        out = sliding_window(vol, identity_logit, (16, 16, 16), mirror_axes=mirrors)
        np.testing.assert_allclose(out, expected, atol=1e-5)  # windows, weights and flips undo exactly


SLOPES = (0.3, -0.2, 0.1)
"""Logit bias per voxel of position along each window axis in :func:`position_biased_logit`."""


def position_biased_logit(x: torch.Tensor) -> torch.Tensor:
    """A stand-in network that is not mirror-equivariant: the first channel plus a bias that rises along each axis of
    the window it sees (a different slope per axis), so a flipped input gives another output than the unflipped one."""
    ramps = [torch.arange(n, dtype=torch.float32) for n in x.shape[2:]]
    bias = SLOPES[0] * ramps[0][:, None, None] + SLOPES[1] * ramps[1][None, :, None] + SLOPES[2] * ramps[2][None, None]
    return x[:, :1] + bias


@pytest.mark.parametrize(
    "mirrors", [((),), ((), (1,)), ((2,), (0, 1)), MIRROR_AXES], ids=["none", "axis-1", "axes-2-and-0-1", "all-8"]
)
def test_mirror_tta_averages_each_flipped_pass_flipped_back(mirrors):
    """One window, so the output is the mean over the mirror passes: pass A sees voxel p at the flipped position
    (w - 1 - p along the axes in A), so its bias there is that of the flipped position; only real flips give it."""
    rng = np.random.default_rng(1)
    shape = (16, 16, 16)
    vol = rng.normal(0, 2, (2, *shape)).astype(np.float32)
    index = np.indices(shape, dtype=np.float32)
    expected = np.zeros(shape, np.float64)
    for axes in mirrors:
        seen_at = [shape[k] - 1 - index[k] if k in axes else index[k] for k in range(3)]
        logit = vol[0] + sum(s * p for s, p in zip(SLOPES, seen_at))
        expected += 1 / (1 + np.exp(-logit))
    expected /= len(mirrors)
    out = sliding_window(torch.from_numpy(vol), position_biased_logit, shape, mirror_axes=mirrors)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    if mirrors != ((),):  # the case can tell: TTA that never flips would give the unmirrored output
        unflipped = sliding_window(torch.from_numpy(vol), position_biased_logit, shape)
        assert np.abs(out - unflipped).max() > 0.2


def test_gaussian_weighting_favours_window_centres():
    w = gaussian_weight((16, 16, 16))
    assert w.shape == (16, 16, 16) and w.max() == pytest.approx(1.0) and w.min() > 0
    assert w[8, 8, 8] > w[4, 8, 8] > w[4, 4, 4]

    # a network that is wrong only at window borders: the weighting keeps the error small where windows overlap
    def border_biased(x):
        out = x[:, :1].clone()
        out[..., :2, :, :] += 5.0
        return out

    vol = torch.zeros((1, 48, 16, 16))
    out = sliding_window(vol, border_biased, (16, 16, 16))
    assert out[24, 8, 8] < 0.6  # inside, the neighbouring window's centre outweighs this window's border


def test_window_starts_cover_the_volume():
    for length, window in ((64, 64), (100, 64), (130, 48)):
        starts = window_starts(length, window)
        assert starts[0] == 0 and starts[-1] == length - window
        assert all(b - a <= window for a, b in zip(starts, starts[1:]))


@pytest.mark.parametrize(
    "shape, window, overlap, match",
    [
        ((1, 10, 20, 20), (16, 16, 16), 0.5, "pad it first"),
        ((1, 20, 20, 20), (16, 16, 16), 1.0, "overlap"),
        ((20, 20, 20), (16, 16, 16), 0.5, r"\(C, X, Y, Z\)"),
    ],
    ids=["smaller-than-window", "overlap-1", "no-channel-axis"],
)
def test_preconditions_are_checked(shape, window, overlap, match):
    with pytest.raises(ValueError, match=match):
        sliding_window(torch.zeros(shape), identity_logit, window, overlap=overlap)


def test_cancel_and_progress_per_window():
    calls, seen = {"n": 0}, []

    def cancel_after_two():
        calls["n"] += 1
        return calls["n"] > 2

    with pytest.raises(Cancelled, match="window 3"):
        sliding_window(
            torch.zeros((1, 48, 16, 16)),
            identity_logit,
            (16, 16, 16),
            should_cancel=cancel_after_two,
            progress=lambda f, d: seen.append(f),
        )
    assert seen == pytest.approx([1 / 5, 2 / 5])
