"""Shared fixtures: tiny synthetic volumes built in tmp_path, and the strict-skip helper."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_CASE = ROOT.parent / "shared" / "data" / "isles22-strokecase0001"
STRICT = os.environ.get("STROKE_SEG_STRICT") == "1"


REPORT_KEYS = (
    "model",
    "lesion_volume_ml",
    "lesion_count",
    "lesions",
    "timings",
    "dice",
    "avd_ml",
    "lesion_f1",
    "lesion_count_diff",
)
"""Keys every JSON report of a case with a ground truth holds."""


def require(condition: bool, reason: str) -> None:
    """Skip with ``reason`` when ``condition`` is false, or fail when STROKE_SEG_STRICT=1 (CI)."""
    if not condition:
        if STRICT:
            pytest.fail(f"STROKE_SEG_STRICT=1 forbids this skip: {reason}")
        pytest.skip(reason)


def phantom(shape=(40, 44, 36), lesion_center=(24, 22, 18), radius=4.0, seed=0):
    """A small head phantom: ellipsoid brain (DWI ~100, ADC ~800 x1e-6) with one acute lesion.

    Returns (dwi, adc, truth) arrays of ``shape`` (float32, float32, bool).
    """
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"), -1)
    c = (np.asarray(shape) - 1) / 2
    brain = (((grid - c) / (np.asarray(shape) * 0.42)) ** 2).sum(-1) <= 1
    truth = ((grid - np.asarray(lesion_center)) ** 2).sum(-1) <= radius**2
    dwi = np.where(brain, 100.0, 0.0) + rng.normal(0, 2, shape)
    dwi = np.where(truth, 200.0, dwi)
    adc = np.where(brain, 800.0, 0.0) + np.where(brain, rng.normal(0, 20, shape), 0)
    adc = np.where(truth, 420.0, adc)
    return dwi.astype(np.float32), adc.astype(np.float32), truth & brain


def save(path: Path, data, affine=None, dtype=None) -> Path:
    data = np.asarray(data)
    img = nib.Nifti1Image(data.astype(dtype or data.dtype), np.eye(4) * [2, 2, 2, 1] if affine is None else affine)
    nib.save(img, str(path))
    return path


@pytest.fixture
def phantom_files(tmp_path):
    """dwi/adc/mask .nii.gz files of :func:`phantom` on a 2 mm RAS grid."""
    dwi, adc, truth = phantom()
    return {
        "dwi": save(tmp_path / "dwi.nii.gz", dwi),
        "adc": save(tmp_path / "adc.nii.gz", adc),
        "ground_truth": save(tmp_path / "mask.nii.gz", truth.astype(np.uint8)),
    }
