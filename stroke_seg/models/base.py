"""The one small interface every model backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from ..errors import check_cancel
from ..preprocess import Preprocessed
from ..types import CancelCheck, ProgressCallback, SegmentConfig

__all__ = ["Backend", "check_cancel"]  # check_cancel lives in errors; re-exported for backends


class Backend(ABC):
    """A segmentation model: load once (in ``__init__``), predict many.

    Class attributes:
        name: registry key, e.g. ``"adc-threshold"``.
        description: one line for menus and ``python -m stroke_seg models``.
        validated_on: what the backend was trained / validated on, with measured figures.
        version: changes whenever outputs may change.
    """

    name: str = ""
    description: str = ""
    validated_on: str = ""
    version: str = "0"

    @abstractmethod
    def predict(
        self,
        volumes: Preprocessed,
        *,
        config: SegmentConfig,
        progress: ProgressCallback,
        should_cancel: CancelCheck,
    ) -> np.ndarray:
        """Lesion probability map of a preprocessed case.

        Args:
            volumes: canonical (closest RAS+) DWI (brain-median normalised), ADC (1e-6 mm²/s),
                optional FLAIR and brain mask, all shape (X, Y, Z).
            config: run options (mode, device...).
            progress: ``progress(fraction, description)`` with fraction in [0, 1] of *this* stage.
            should_cancel: polled between steps; raise :class:`Cancelled` (see :func:`check_cancel`).

        Returns:
            float32 probabilities in [0, 1], shape (X, Y, Z), canonical grid.
        """

    def warm_up(self, config: SegmentConfig) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Do now what the first ``predict`` would otherwise pay for (engine conversion, compilation)."""

    def info(self) -> dict[str, str]:
        return {
            "name": self.name,
            "description": self.description,
            "validated_on": self.validated_on,
            "version": self.version,
        }
