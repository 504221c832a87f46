"""``ensemble``: fuses several backends, as DeepISLES fuses its three ISLES'22 models.

Fusion is the mean probability (default) or a strict majority vote of the members' binary
masks (each at ``SegmentConfig.threshold``). Members and fusion are configurable:
``Ensemble(members=("unet", "adc-threshold"), fusion="vote")`` registered under a name of your
choice, or the environment variables ``STROKE_SEG_ENSEMBLE_MEMBERS`` (comma-separated) and
``STROKE_SEG_ENSEMBLE_FUSION`` for the built-in ``ensemble``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from stroke_seg.errors import ModelError, check_cancel
from stroke_seg.models.base import Backend
from stroke_seg.pipeline.preprocess import Preprocessed
from stroke_seg.types import CancelCheck, ProgressCallback, SegmentConfig, scaled_progress

__all__ = ["Ensemble"]


class Ensemble(Backend):
    name = "ensemble"
    description = "Mean probability of unet and adc-threshold (members and fusion configurable)."
    validated_on = "Held-out synthetic cases and three real scans (see MODEL_CARD.md)."
    version = "1.0"

    def __init__(self, members: Sequence[str] | None = None, fusion: str | None = None) -> None:
        from stroke_seg.models import get_model

        env_members = os.environ.get("STROKE_SEG_ENSEMBLE_MEMBERS")
        self.members = tuple(members or (env_members.split(",") if env_members else ("unet", "adc-threshold")))
        self.fusion = fusion or os.environ.get("STROKE_SEG_ENSEMBLE_FUSION", "mean")
        if self.fusion not in ("mean", "vote"):
            raise ModelError(f"ensemble fusion: expected 'mean' or 'vote', but got {self.fusion!r}")
        if len(self.members) < 2 or self.name in self.members:
            raise ModelError(f"ensemble members: expected at least two other backends, but got {self.members}")
        self.backends = [get_model(m.strip()) for m in self.members]
        self.version = "1.0[" + ",".join(f"{b.name}:{b.version}" for b in self.backends) + f"]/{self.fusion}"
        self.description = f"{self.fusion.capitalize()} fusion of {', '.join(self.members)}."

    def warm_up(self, config: SegmentConfig) -> None:
        for backend in self.backends:
            backend.warm_up(config)

    def predict(
        self, volumes: Preprocessed, *, config: SegmentConfig, progress: ProgressCallback, should_cancel: CancelCheck
    ) -> np.ndarray:
        n = len(self.backends)
        probs = []
        for i, backend in enumerate(self.backends):
            sub = scaled_progress(progress, i / n, (i + 1) / n, prefix=f"{backend.name} ")
            probs.append(backend.predict(volumes, config=config, progress=sub, should_cancel=should_cancel))
            check_cancel(should_cancel, f"ensemble member {backend.name}")
        stack = np.stack(probs)
        if self.fusion == "mean":
            return stack.mean(axis=0).astype(np.float32)
        votes = (stack > config.threshold).sum(axis=0)
        return (votes > n / 2).astype(np.float32)
