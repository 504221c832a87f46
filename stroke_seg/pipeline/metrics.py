"""Lesion measurements and agreement with a ground truth, as defined for ISLES'22.

ISLES'22 (Hernandez Petzsche et al., Sci Data 2022) ranks on Dice, absolute volume difference
(mL), lesion-wise F1 and absolute lesion-count difference. Lesions are 26-connected components;
a ground-truth lesion is detected (TP) when at least one of its voxels is predicted; a predicted
lesion with no ground-truth voxel is a false positive. F1 = TP / (TP + (FP + FN) / 2).
Conventions for empty masks: Dice and F1 are 1.0 when both masks are empty.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from stroke_seg.pipeline.anatomy import component_centres_world
from stroke_seg.pipeline.postprocess import CONNECTIVITY_26
from stroke_seg.types import Comparison, Lesion, LesionMetrics

__all__ = ["voxel_volume_ml", "lesion_table", "compare", "measure", "dice"]


def voxel_volume_ml(affine: np.ndarray) -> float:
    """Volume of one voxel in mL, from a 4x4 affine in mm."""
    return abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0


def lesion_table(mask: np.ndarray, affine: np.ndarray, adc: np.ndarray | None = None) -> tuple[Lesion, ...]:
    """One row per 26-connected lesion, largest first.

    Args:
        mask: bool array, shape (X, Y, Z).
        affine: voxel-to-world affine (mm) of the mask's grid.
        adc: optional ADC on the same grid, 1e-6 mm²/s.
    """
    if not mask.any():
        return ()
    # work inside the bounding box of the mask (fast on 1 mm volumes)
    box = ndi.find_objects(mask.astype(np.uint8))[0]
    offset = np.array([s.start for s in box], float)
    mask = mask[box]
    adc = adc[box] if adc is not None else None
    labels, n = ndi.label(mask, structure=CONNECTIVITY_26)
    index = np.arange(1, n + 1)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    world = component_centres_world(labels, n, affine, offset)
    mean_adc = ndi.mean(adc, labels, index) if adc is not None else [None] * n
    vml = voxel_volume_ml(affine)
    order = np.argsort(-sizes, kind="stable")
    return tuple(
        Lesion(
            label=rank + 1,
            volume_ml=float(sizes[i]) * vml,
            voxels=int(sizes[i]),
            centroid_mm=tuple(float(c) for c in world[i]),  # type: ignore[arg-type]
            mean_adc=None if mean_adc[i] is None else float(mean_adc[i]),
        )
        for rank, i in enumerate(order)
    )


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient of two bool arrays (1.0 when both are empty)."""
    total = int(prediction.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(prediction, truth).sum()) / total


def compare(prediction: np.ndarray, truth: np.ndarray, voxel_ml: float) -> Comparison:
    """ISLES'22 metrics of a predicted mask against a ground truth on the same grid.

    Args:
        prediction, truth: bool arrays of the same shape (X, Y, Z).
        voxel_ml: volume of one voxel, mL.
    """
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction and truth must have one shape, but they are {prediction.shape} and {truth.shape}")
    gt_labels, n_gt = ndi.label(truth, structure=CONNECTIVITY_26)
    pred_labels, n_pred = ndi.label(prediction, structure=CONNECTIVITY_26)
    detected = np.unique(gt_labels[prediction & truth])
    tp = int((detected > 0).sum())
    fn = n_gt - tp
    hit_pred = np.unique(pred_labels[prediction & truth])
    fp = n_pred - int((hit_pred > 0).sum())
    f1 = 1.0 if tp + fp + fn == 0 else tp / (tp + (fp + fn) / 2.0)
    return Comparison(
        dice=dice(prediction, truth),
        avd_ml=abs(int(prediction.sum()) - int(truth.sum())) * voxel_ml,
        lesion_f1=float(f1),
        lesion_count_diff=abs(n_pred - n_gt),
        true_positive_lesions=tp,
        false_positive_lesions=fp,
        false_negative_lesions=fn,
    )


def measure(
    mask: np.ndarray, affine: np.ndarray, adc: np.ndarray | None = None, truth: np.ndarray | None = None
) -> LesionMetrics:
    """Volume (mL), count and per-lesion table of a mask, plus ISLES'22 metrics when ``truth`` is given."""
    lesions = lesion_table(mask, affine, adc)
    vml = voxel_volume_ml(affine)
    return LesionMetrics(
        volume_ml=float(mask.sum()) * vml,
        count=len(lesions),
        lesions=lesions,
        comparison=compare(mask, truth, vml) if truth is not None else None,
    )
