"""stroke-seg: ischemic stroke lesion segmentation of brain MRI (DWI + ADC, optional FLAIR).

Research use only; not for diagnosis.

    >>> import stroke_seg
    >>> result = stroke_seg.segment({"dwi": "dwi.nii.gz", "adc": "adc.nii.gz"}, model="adc-threshold")
    >>> result.metrics.volume_ml, result.mask  # mL, nibabel image on the DWI grid
"""

from __future__ import annotations

import logging

from stroke_seg.api import find_case_files, segment
from stroke_seg.errors import Cancelled, IncompatibleImagesError, InvalidImageError, ModelError, StrokeSegError
from stroke_seg.io.case import load_case, save_image
from stroke_seg.models import get_model, model_infos, model_names
from stroke_seg.types import Case, Comparison, Lesion, LesionMetrics, Result, SegmentConfig
from stroke_seg.version import __version__

__all__ = [
    "segment",
    "load_case",
    "save_image",
    "find_case_files",
    "get_model",
    "model_names",
    "model_infos",
    "Case",
    "Result",
    "SegmentConfig",
    "LesionMetrics",
    "Lesion",
    "Comparison",
    "StrokeSegError",
    "InvalidImageError",
    "IncompatibleImagesError",
    "ModelError",
    "Cancelled",
    "__version__",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
