"""The one small interface every model backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stroke_seg.errors import check_cancel
from stroke_seg.pipeline.preprocess import Preprocessed
from stroke_seg.types import CancelCheck, Case, ProgressCallback, SegmentConfig

# check_cancel re-exported for backends
__all__ = ["Backend", "CaseBackend", "CaseOutput", "PartialOutput", "PartialCallback", "check_cancel"]


class Backend(ABC):
    """A segmentation model: load once (in ``__init__``), predict many.

    Class attributes:
        name: registry key, e.g. ``"adc-threshold"``.
        description: one line for menus and ``python -m stroke_seg models``.
        validated_on: what the backend was trained / validated on, with measured figures.
        version: changes whenever outputs may change.
        slow: minutes per job on a CPU; the app runs such jobs in a lane of their own beside the fast ones.
    """

    name: str = ""
    description: str = ""
    validated_on: str = ""
    version: str = "0"
    slow: bool = False

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

    def weights_sha256(self, config: SegmentConfig) -> str | None:
        """SHA-256 of the weights this backend runs with ``config``, for the result cache key (other weights, other
        answer); None when they ship with the code and :attr:`version` covers them. Cheap after the first call.

        Raises:
            ModelError: the weights are missing or unreadable.
        """
        return None

    def info(self) -> dict[str, str]:
        return {
            "name": self.name,
            "description": self.description,
            "validated_on": self.validated_on,
            "version": self.version,
        }


@dataclass(frozen=True, eq=False)
class CaseOutput:
    """What a :class:`CaseBackend` returns, on the exact grid of the input DWI.

    Attributes:
        probability: lesion probability in [0, 1], float32.
        mask: the backend's own binary mask (uint8 0/1); this project's post-processing does not change it.
        notes: lines for the report about what the backend did to the input (e.g. "skull-stripped with ...").
        details: JSON-able facts for the report (weights, checkpoints, windows, engine).
    """

    probability: np.ndarray
    mask: np.ndarray
    notes: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class PartialOutput:
    """An early answer of a backend that averages several networks (checkpoints, folds): the average of the first
    ``done`` of ``total``, resampled and thresholded as the final answer is, on the exact grid of the input DWI.

    Attributes:
        probability: lesion probability in [0, 1], float32.
        mask: uint8 0/1; at ``done == total`` it is the final mask.
        done, total: networks averaged so far, and in all.
        unit: what the networks are, plural ("checkpoints", "folds").
        remaining_s: the backend's estimate of the seconds left, from the pace so far; None when unknown.
    """

    probability: np.ndarray
    mask: np.ndarray
    done: int
    total: int
    unit: str = "checkpoints"
    remaining_s: float | None = None


PartialCallback = Callable[[PartialOutput], None]
"""Receives each :class:`PartialOutput` on the inference thread; it should return quickly."""


class CaseBackend(Backend):
    """A backend with its own preprocessing and post-processing (another project's published pipeline).

    It receives the validated case as loaded (input grid, input orientation) together with this project's
    preprocessed volumes (for the brain mask and the skull check), and returns its own mask on the input grid.
    ``segment()`` then measures it and runs the plausibility checks; lesions that break the report's rules are
    reported as warnings, not removed.

    A backend that averages several networks may set :attr:`partial_results`: its ``predict_case`` then also takes
    ``on_partial`` (a :data:`PartialCallback` or None) and calls it after each network with the average so far.
    """

    partial_results: bool = False

    def predict(self, volumes, *, config, progress, should_cancel):  # pragma: no cover - not used for case backends
        raise NotImplementedError(f"{self.name} works on the whole case: call predict_case")

    @abstractmethod
    def predict_case(
        self,
        case: Case,
        volumes: Preprocessed,
        *,
        config: SegmentConfig,
        progress: ProgressCallback,
        should_cancel: CancelCheck,
    ) -> CaseOutput:
        """The backend's probability map and mask of ``case``, on the grid of ``case.dwi``."""

    def estimate_seconds(self, case: Case) -> float | None:
        """Expected duration of :meth:`predict_case` on ``case``, or None when unknown."""
        return None
