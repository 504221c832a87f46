"""Plausibility checks of a result: warnings a user must see before trusting a mask.

Each rule is a small function of the case, the mask and the brain mask, all on the input DWI grid, and
returns a message or None. :func:`quality_warnings` runs them all. The thresholds are clinical plausibility
bounds, not figures tuned on any case:

* a lesion volume above :data:`MAX_LESION_ML` (a malignant MCA infarct is ~150-300 mL; above that, artefacts or
  a wrong brain mask are more likely than a real lesion);
* more than :data:`MAX_LESIONS` separate lesions (showers of emboli have dozens at most; scattered false
  positives have many more);
* most of the lesion volume in the posterior fossa or along the brain edge, where echo-planar DWI has
  susceptibility artefacts, without a restricted core (:data:`CORE_ADC` is the RAPID core threshold);
* a brain mask outside :data:`BRAIN_ML_RANGE` (the MNI152 intracranial mask is ~1,960 mL, adult intracranial
  volumes 1,100-1,900 mL; outside the range the mask has lost brain or kept scalp);
* skull and scalp found and removed (the mask decides everything after it: check it);
* an ADC unit chosen from a median at the edge of its unit's range.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from stroke_seg.io.case import ADC_UNITS
from stroke_seg.pipeline.anatomy import MniMap
from stroke_seg.pipeline.preprocess import DISTANCE_TOL_MM, RAW_HEAD_ML
from stroke_seg.types import Case, voxel_sizes

__all__ = [
    "quality_warnings",
    "check_lesion_volume",
    "check_lesion_count",
    "check_artefact_sites",
    "check_brain_volume",
    "check_skull_removed",
    "check_adc_unit",
    "MAX_LESION_ML",
    "MAX_LESIONS",
    "BRAIN_ML_RANGE",
    "CORE_ADC",
    "EDGE_MM",
    "SKULL_ML",
]

MAX_LESION_ML = 150.0
MAX_LESIONS = 30
BRAIN_ML_RANGE = (800.0, 2200.0)
CORE_ADC = 620.0
"""ADC (1e-6 mm²/s) below which tissue is acute core (the RAPID threshold)."""
EDGE_MM = 5.0
"""Depth of the brain-edge band, mm."""
SKULL_ML = RAW_HEAD_ML
"""Non-zero image volume outside the brain mask (mL) above which the input counts as not skull-stripped."""
POSTERIOR_FOSSA_Z_MNI = -22.0
"""MNI z (mm) below which a point behind the brainstem's front (y < -25) is in the posterior fossa."""


def check_lesion_volume(volume_ml: float) -> str | None:
    if volume_ml > MAX_LESION_ML:
        return (
            f"Lesion volume {volume_ml:.0f} mL is above {MAX_LESION_ML:.0f} mL: implausible for most strokes; check "
            "the overlay for artefacts or a wrong brain mask."
        )
    return None


def check_lesion_count(count: int) -> str | None:
    if count > MAX_LESIONS:
        return (
            f"{count} separate lesions (more than {MAX_LESIONS}): scattered false positives are likely; check the "
            "overlay."
        )
    return None


def check_artefact_sites(mask: np.ndarray, adc: np.ndarray, brain: np.ndarray, affine: np.ndarray) -> str | None:
    """Most of the lesion volume in the posterior fossa or the brain-edge band, with no restricted core there.

    Args:
        mask, brain: bool, shape (X, Y, Z); adc: 1e-6 mm²/s, same shape; affine: voxel-to-world (mm).
    """
    if not mask.any() or brain.sum() < 1000:
        return None
    voxel = voxel_sizes(affine)
    # Depth inside the brain, in the mask's box grown by more than EDGE_MM: exact for the edge test there (a brain
    # edge within EDGE_MM of a lesion voxel lies inside it), and its cost follows the lesions, not the input grid.
    box = ndi.find_objects(mask.astype(np.uint8))[0]
    grow = np.ceil(EDGE_MM / np.asarray(voxel)).astype(int) + 2
    outer = tuple(slice(max(b.start - g, 0), min(b.stop + g, n)) for b, g, n in zip(box, grow, mask.shape))
    depth = ndi.distance_transform_edt(np.pad(brain[outer], 1), sampling=voxel)[1:-1, 1:-1, 1:-1]
    edge = np.zeros(mask.shape, bool)
    edge[outer] = mask[outer] & (depth <= EDGE_MM + DISTANCE_TOL_MM)
    idx = np.argwhere(mask)
    mni = MniMap.from_brain(brain, affine)(idx @ affine[:3, :3].T + affine[:3, 3])
    fossa = np.zeros(mask.shape, bool)
    in_fossa = (mni[:, 2] < POSTERIOR_FOSSA_Z_MNI) & (mni[:, 1] < -25.0)
    fossa[tuple(idx[in_fossa].T)] = True
    suspect = edge | fossa
    share = suspect.sum() / mask.sum()
    if share <= 0.5:
        return None
    core = float(np.mean(adc[suspect] < CORE_ADC))
    if core >= 0.25:
        return None
    return (
        f"{share:.0%} of the lesion volume lies in the posterior fossa or within {EDGE_MM:g} mm of the brain edge, "
        "where DWI has "
        f"susceptibility artefacts, and only {core:.0%} of it has a restricted core (ADC < {CORE_ADC:g}): it may be "
        "artefact."
    )


def check_brain_volume(brain_ml: float) -> str | None:
    lo, hi = BRAIN_ML_RANGE
    if not lo <= brain_ml <= hi:
        return (
            f"Brain mask volume {brain_ml:.0f} mL is outside {lo:.0f}-{hi:.0f} mL: brain extraction probably failed; "
            "the result is unreliable."
        )
    return None


def check_skull_removed(outside_ml: float) -> str | None:
    if outside_ml > SKULL_ML:
        return (
            "The input was not skull-stripped: skull, scalp and background were removed by the automatic brain mask; "
            "check that it cut no brain and kept no scalp: the viewer's 'Brain mask' toggle, the brain_mask.nii.gz "
            "download or `segment --brain-mask-out FILE` show it (how it was made: the report's "
            "model_details.brain_extraction)."
        )
    return None


def check_adc_unit(case: Case) -> str | None:
    """The ADC unit was detected from a brain median outside [0.5, 2] x the unit's typical value (800e-6 mm²/s)."""
    median = case.adc_median_input
    if median is None:
        return None
    for lo, hi, factor, unit in ADC_UNITS:
        if lo <= median <= hi and not 400.0 <= median * factor <= 1600.0:
            return (
                f"ADC unit guessed as {unit} from a borderline brain median ({median:g}); if the unit is wrong every "
                "ADC rule is off: check the ADC map's unit."
            )
    return None


def quality_warnings(
    case: Case, mask: np.ndarray, brain: np.ndarray, *, volume_ml: float, count: int, outside_ml: float
) -> tuple[str, ...]:
    """Every warning that applies to one result.

    Args:
        case: the validated case (ADC in 1e-6 mm²/s, its input unit record).
        mask: lesion mask on the case grid, bool, shape (X, Y, Z).
        brain: brain mask on the case grid, bool, same shape.
        volume_ml, count: the mask's lesion volume (mL) and number of lesions.
        outside_ml: head signal outside the brain mask, mL
            (:attr:`stroke_seg.pipeline.preprocess.Preprocessed.outside_ml`).
    """
    voxel_ml = float(abs(np.linalg.det(case.affine[:3, :3]))) / 1000.0
    found = (
        check_brain_volume(float(brain.sum()) * voxel_ml),
        check_skull_removed(outside_ml),
        check_adc_unit(case),
        check_lesion_volume(volume_ml),
        check_lesion_count(count),
        check_artefact_sites(mask, case.adc, brain, case.affine),
    )
    return tuple(w for w in found if w)
