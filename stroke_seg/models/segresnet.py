"""TorchScript SegResNet checkpoints rebuilt as their eager MONAI networks, so that OpenVINO can convert them.

A scripted MONAI ``SegResNetDS`` or ``SegResNet`` keeps its constructor's settings as attributes (filters, blocks,
channels, deep-supervision depth) and its layers as typed sub-modules (the normalisation, the activation, the
up-sampling). :func:`rebuild` reads those, builds the same class from ``monai.networks.nets``, loads the checkpoint's
own state dict (strict: every tensor, same names and shapes) and checks on a small window that both give the same
logits (:func:`max_difference`): only then is the eager network used. Anything else (another class, a setting it
cannot read, a different output) returns None with the reason logged, and the caller runs the TorchScript module.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

__all__ = ["rebuild", "max_difference", "CHECK_WINDOW", "TOLERANCE", "VERSION"]

log = logging.getLogger(__name__)

VERSION = "1"
"""Changes whenever :func:`rebuild` may build another network (converted models are cached under it)."""
CHECK_WINDOW = (64, 64, 32)
"""Spatial size of the window the rebuilt network is checked on (divisible by 16: five resolution levels)."""
TOLERANCE = 1e-5
"""Largest logit difference accepted between the rebuilt network and the checkpoint on the check window, relative to
the largest logit (both run the same torch operators, so the difference is 0 in practice)."""

_NORMS = ("InstanceNorm3d", "BatchNorm3d", "GroupNorm")
_ACTS = ("ReLU", "LeakyReLU", "PReLU", "ELU", "GELU", "SiLU")


def _only(mods: dict[str, Any], kinds: tuple[str, ...], what: str) -> Any:
    """The first sub-module of one of ``kinds``; ValueError when none, or when several kinds are mixed."""
    found = [m for m in mods.values() if m.original_name in kinds]
    names = sorted({m.original_name for m in found})
    if len(names) != 1:
        raise ValueError(f"expected one {what} type, found {names or 'none'}")
    return found[0]


def _norm(mods: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    m = _only(mods, _NORMS, "normalisation")
    if m.original_name == "InstanceNorm3d":
        args = {"affine": bool(m.affine), "eps": float(m.eps), "track_running_stats": bool(m.track_running_stats)}
        return "instance", args
    if m.original_name == "BatchNorm3d":
        return "batch", {"eps": float(m.eps), "momentum": m.momentum}
    return "group", {"num_groups": int(m.num_groups), "eps": float(m.eps), "affine": bool(m.affine)}


def _act(mods: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    m = _only(mods, _ACTS, "activation")
    kind = m.original_name
    if kind == "LeakyReLU":
        return "leakyrelu", {"negative_slope": float(m.negative_slope), "inplace": True}
    if kind in ("ReLU", "ELU", "SiLU"):
        return kind.lower(), {"inplace": True}
    if kind == "PReLU":
        return "prelu", {"num_parameters": int(m.weight.numel())}
    return kind.lower(), {}


def _upsample_mode(mods: dict[str, Any], prefix: str) -> str:
    leaves = {name.rsplit(".", 1)[-1] for name in mods if name.startswith(prefix)}
    return "deconv" if "deconv" in leaves else "pixelshuffle" if "pixelshuffle" in leaves else "nontrainable"


def _segresnet_ds(scripted: torch.jit.ScriptModule, mods: dict[str, Any]) -> nn.Module:
    from monai.networks.nets import SegResNetDS

    if getattr(scripted, "preprocess", None) is not None:
        raise ValueError("it has a preprocess module")
    return SegResNetDS(
        spatial_dims=int(scripted.spatial_dims),
        init_filters=int(scripted.init_filters),
        in_channels=int(scripted.in_channels),
        out_channels=int(scripted.out_channels),
        act=_act(mods),
        norm=_norm(mods),
        blocks_down=tuple(scripted.blocks_down),
        blocks_up=tuple(scripted.blocks_up),
        dsdepth=int(scripted.dsdepth),
        upsample_mode=_upsample_mode(mods, "up_layers.0.upsample"),
        resolution=getattr(scripted, "resolution", None),
    )


def _segresnet(scripted: torch.jit.ScriptModule, mods: dict[str, Any]) -> nn.Module:
    from monai.networks.nets import SegResNet

    final = scripted.state_dict().get("conv_final.2.conv.weight")
    return SegResNet(
        spatial_dims=int(scripted.spatial_dims),
        init_filters=int(scripted.init_filters),
        in_channels=int(scripted.in_channels),
        out_channels=int(final.shape[0]) if final is not None else 2,
        dropout_prob=scripted.dropout_prob,
        act=scripted.act,
        norm=_norm(mods),
        use_conv_final=bool(scripted.use_conv_final),
        blocks_down=tuple(scripted.blocks_down),
        blocks_up=tuple(scripted.blocks_up),
        upsample_mode=str(scripted.upsample_mode),
    )


_BUILDERS = {"SegResNetDS": _segresnet_ds, "SegResNet": _segresnet}


def max_difference(a: nn.Module, b: nn.Module, channels: int, window: tuple[int, ...] = CHECK_WINDOW) -> float:
    """Largest absolute logit difference of ``a`` and ``b`` on one seeded random window (1, channels, *window),
    relative to the largest logit of ``a``."""
    x = torch.randn(1, channels, *window, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ya, yb = a(x), b(x)
    if ya.shape != yb.shape:
        return float("inf")
    return float((ya - yb).abs().max() / ya.abs().max().clamp_min(1e-12))


def rebuild(scripted: torch.jit.ScriptModule, *, name: str = "checkpoint") -> nn.Module | None:
    """The eager MONAI network of a scripted ``SegResNetDS`` / ``SegResNet``, in eval mode, with the checkpoint's
    weights and the same logits on a check window; None (reason logged) when it cannot be rebuilt exactly.

    Args:
        scripted: the loaded TorchScript module (on the CPU).
        name: for the log (the checkpoint's file name).
    """
    kind = getattr(scripted, "original_name", type(scripted).__name__)
    builder = _BUILDERS.get(kind)
    if builder is None:
        log.info("%s: a TorchScript %s, not a MONAI SegResNet: it runs as TorchScript", name, kind)
        return None
    try:
        eager = builder(scripted, dict(scripted.named_modules()))
        eager.load_state_dict(scripted.state_dict(), strict=True)
        eager.eval()
        channels = int(scripted.in_channels)
        diff = max_difference(scripted, eager, channels)
    except Exception as err:  # noqa: BLE001 - an unreadable setting, a state dict that does not fit, a failed run
        log.warning("%s: not rebuilt as an eager %s (%s: %s); it runs as TorchScript", name, kind, type(err).__name__,
                    err)  # fmt: skip
        return None
    if not diff <= TOLERANCE:
        log.warning("%s: the eager %s differs from the checkpoint by %.2g (relative); it runs as TorchScript", name,
                    kind, diff)  # fmt: skip
        return None
    log.info("%s: rebuilt as an eager MONAI %s (logits equal on a %s window: %.1g)", name, kind, CHECK_WINDOW, diff)
    return eager
