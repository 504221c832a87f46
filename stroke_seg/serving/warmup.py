"""A first job run at start-up, on a case made here, so that a user's first job does not pay the warm-up.

The first ``segment()`` in a process costs more than the later ones: the MNI template is read for the clinical report,
and the allocator's pools and the libraries' first calls warm up (measured on the ISLES'22 case through the app: the
first job 3.3-3.6 s, the fifth 2.0 s). :func:`warm_up_case` is a skull-stripped ellipsoid head at 2 mm with a small
restricted-diffusion lesion, so that every stage runs (no brain extractor: the input is its own brain).
"""

from __future__ import annotations

import logging
import time

import nibabel as nib
import numpy as np

from stroke_seg.api import segment
from stroke_seg.errors import Cancelled, StrokeSegError
from stroke_seg.types import CancelCheck, SegmentConfig

log = logging.getLogger(__name__)

SHAPE = (80, 96, 80)
"""Grid of the warm-up case (2 mm voxels: 160 x 192 x 160 mm)."""


def warm_up_case() -> dict[str, nib.Nifti1Image]:
    """``{"dwi", "adc"}`` of a made-up skull-stripped head: a noisy ellipsoid brain, ADC 800, a lesion of DWI x 2 and
    ADC 450 in one hemisphere; zeros outside the brain."""
    rng = np.random.default_rng(0)
    grid = np.indices(SHAPE, dtype=np.float32)
    centre = (np.asarray(SHAPE, np.float32) - 1) / 2
    radii = np.asarray(SHAPE, np.float32) * np.float32(0.42)
    r2 = sum(((grid[i] - centre[i]) / radii[i]) ** 2 for i in range(3))
    brain = r2 <= 1.0
    lesion = sum((grid[i] - c) ** 2 for i, c in enumerate((centre[0] + 15, centre[1], centre[2] + 5))) <= 16.0
    dwi = np.where(brain, 100.0 + rng.normal(0, 5, SHAPE), 0.0)
    adc = np.where(brain, 800.0 + rng.normal(0, 40, SHAPE), 0.0)
    dwi[lesion], adc[lesion] = 200.0, 450.0
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -centre * 2.0
    return {
        "dwi": nib.Nifti1Image(dwi.astype(np.float32), affine),
        "adc": nib.Nifti1Image(adc.astype(np.float32), affine),
    }


def first_job(model: str, config: SegmentConfig, should_cancel: CancelCheck | None = None) -> None:
    """Run ``model`` once on :func:`warm_up_case` and drop the result; a failure is logged, never raised.

    Args:
        should_cancel: polled between steps and windows: True (a user's job is waiting) stops the warm-up there.
    """
    start = time.perf_counter()
    try:
        segment(warm_up_case(), model=model, config=config, should_cancel=should_cancel)
    except Cancelled:
        log.info("warm-up job stopped after %.2f s: a job is waiting", time.perf_counter() - start)
        return
    except StrokeSegError as err:
        log.warning("warm-up job failed: %s", err)
        return
    log.info("warm-up job done in %.2f s", time.perf_counter() - start)
