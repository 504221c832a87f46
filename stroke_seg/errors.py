"""The library's error hierarchy.

Every error the library raises on purpose is a :class:`StrokeSegError`; the app maps this one
class to ``gr.Error`` and the CLI maps it to exit code 2. Messages name the file and say what was
expected and what came, so they can be shown to a user as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = [
    "StrokeSegError",
    "InvalidImageError",
    "IncompatibleImagesError",
    "InputTooLargeError",
    "MissingChannelError",
    "ModelError",
    "JobTimeoutError",
    "LaneBusyError",
    "Cancelled",
    "check_cancel",
]


class StrokeSegError(Exception):
    """Base class of every error stroke_seg raises on purpose."""


class InvalidImageError(StrokeSegError, ValueError):
    """One input image cannot be used: unreadable, wrong dimensionality, bad values or units."""


class IncompatibleImagesError(StrokeSegError, ValueError):
    """Two inputs cannot be put on one grid (no overlap, no world coordinates, mask on another grid)."""


class InputTooLargeError(InvalidImageError):
    """An input would expand past a limit (voxels its header declares, an archive's size, members or ratio); refused
    before it is expanded (:mod:`stroke_seg.io.limits`)."""


class MissingChannelError(InvalidImageError):
    """The model needs an input the case lacks (e.g. a nnU-Net folder trained on DWI + ADC + FLAIR, and no FLAIR);
    the message names the channel."""


class ModelError(StrokeSegError):
    """A model backend is unknown, or its weights are missing or corrupt."""


class JobTimeoutError(StrokeSegError):
    """A job ran past its wall-clock limit and was stopped."""


class LaneBusyError(StrokeSegError):
    """A job of a slow model was refused because that model's lane and its waiting places are all taken."""


class Cancelled(StrokeSegError):
    """The caller's ``should_cancel()`` returned True; the work stopped between two steps.

    Attributes:
        provisional: the last provisional answer (:class:`stroke_seg.types.Provisional`) of a model that gives them
            (DeepISLES), when ``segment()`` was stopped after one; else None.
    """

    provisional: Any = None


def check_cancel(should_cancel: Callable[[], bool], where: str) -> None:
    """Raise :class:`Cancelled` when ``should_cancel()`` is true; ``where`` names the step for the message."""
    if should_cancel():
        raise Cancelled(f"cancelled by the caller during {where}")
