"""Probability map -> binary lesion mask: threshold, then remove components that are too small, that do not
restrict diffusion (median ADC too high), or that sit in a skull-base susceptibility zone without core restriction;
then (:func:`grow_to_dwi_edges`) extend each kept lesion to its own DWI edge; last (:func:`enforce_lesion_rules`, after
every step that can add voxels) drop every lesion that breaks the rules the report states.

Distances, radii and depths are compared with a tolerance of :data:`DISTANCE_TOL_MM`, so that a test sitting exactly on
its boundary (a 4 mm reach on a 2 mm grid, a 3-4-5 diagonal) gives the same answer whatever float noise the affine
carries."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from stroke_seg.pipeline.anatomy import MniMap
from stroke_seg.pipeline.components import (
    CONNECTIVITY_26,
    _components,
    filter_components,
    min_voxels_for,
    remove_small_components,
    remove_unrestricted_components,
)
from stroke_seg.pipeline.preprocess import DISTANCE_TOL_MM
from stroke_seg.pipeline.rim import (
    ADC_RIM_THRESHOLD,
    DWI_RATIO_THRESHOLD,
    RIM_MAX_MM,
    dwi_criterion,
    filtered_adc,
    grow_into_rim,
    grow_into_rim_around,
    grow_to_dwi_edges,
    rim_probability,
    rim_term,
    sigmoid,
    slice_trend,
)

__all__ = [
    "DISTANCE_TOL_MM",
    "LesionRules",
    "lesion_rules",
    "RuleViolation",
    "lesion_rule_violations",
    "enforce_lesion_rules",
    "describe_violations",
    "min_voxels_for",
    "apply_physics_guard",
    "measurable_diffusion",
    "MIN_LESION_ADC",
    "threshold_and_filter",
    "filter_components",
    "grow_to_dwi_edges",
    "remove_small_components",
    "remove_unrestricted_components",
    "CONNECTIVITY_26",
    "DWI_RATIO_THRESHOLD",
    "ADC_RIM_THRESHOLD",
    "RIM_MAX_MM",
    "sigmoid",
    "filtered_adc",
    "slice_trend",
    "dwi_criterion",
    "rim_term",
    "rim_probability",
    "grow_into_rim",
    "grow_into_rim_around",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LesionRules:
    """The rules every lesion of a final mask obeys (the report states them).

    Attributes:
        min_lesion_ml: smallest lesion, mL.
        max_lesion_adc: largest median ADC of a lesion, 1e-6 mm²/s; None: no absolute ADC rule.
        dwi_brain_median: a lesion's mean DWI must be above this (the DWI's median inside the brain mask, in the
            DWI's own units); None: no DWI rule.
        normal_adc: median ADC of this brain's normal-appearing tissue, 1e-6 mm²/s
            (:func:`~stroke_seg.pipeline.preprocess.normal_appearing_adc`); None: no relative ADC rule.
        max_lesion_radc: largest relative ADC of a lesion (the 25th percentile of its ADC over ``normal_adc``: at least
            a quarter of it restricted, whatever share its DWI-bright rim takes); None: no relative rule.
    """

    min_lesion_ml: float
    max_lesion_adc: float | None
    dwi_brain_median: float | None
    normal_adc: float | None = None
    max_lesion_radc: float | None = None

    @property
    def adc_limit(self) -> float | None:
        """The largest median ADC a lesion may have (1e-6 mm²/s): ``max_lesion_adc``."""
        return self.max_lesion_adc

    @property
    def radc_limit(self) -> float | None:
        """The largest 25th-percentile ADC a lesion may have (1e-6 mm²/s): ``max_lesion_radc`` x ``normal_adc``; None
        when the relative rule does not apply."""
        if self.max_lesion_radc is None or self.normal_adc is None:
            return None
        return self.max_lesion_radc * self.normal_adc

    def statement(self) -> str:
        """The rules in one sentence, with this case's figures (for the report's notes)."""
        adc = []
        if self.max_lesion_radc is not None and self.normal_adc is not None:
            adc.append(
                f"relative ADC (a quarter of the lesion at most {self.max_lesion_radc:g}x the ADC of this brain's "
                f"normal-appearing tissue, {self.normal_adc:.0f}e-6 mm²/s)"
            )
        if self.max_lesion_adc is not None:
            adc.append(f"median ADC at most {self.max_lesion_adc:g}e-6 mm²/s")
        parts = [f"at least {self.min_lesion_ml:g} mL"] + adc
        if self.dwi_brain_median is not None:
            parts.append("mean DWI above the brain median")
        limit = self.radc_limit
        tail = f" (here: ADC 25th percentile at most {limit:.0f}e-6 mm²/s)" if limit is not None else ""
        return "Every lesion is bright on DWI and restricted on ADC relative to this brain: " + "; ".join(parts) + tail


def lesion_rules(config, dwi_brain_median: float | None, normal_adc: float | None = None) -> LesionRules:
    """The rules of a :class:`~stroke_seg.types.SegmentConfig` run whose brain median DWI is ``dwi_brain_median`` and
    whose normal-appearing tissue has median ADC ``normal_adc`` (None: the relative ADC rule does not apply)."""
    radc = getattr(config, "max_lesion_radc", None)
    return LesionRules(config.min_lesion_ml, config.max_lesion_adc, dwi_brain_median, normal_adc, radc)


@dataclass(frozen=True)
class RuleViolation:
    """One lesion (26-connected component) that breaks at least one :class:`LesionRules` rule.

    Attributes:
        voxels, volume_ml: its size.
        median_adc: its median ADC, 1e-6 mm²/s.
        dwi_ratio: its mean DWI over the brain median (None without a brain median).
        first_voxel: index (X, Y, Z) of its first voxel in C order, to find it again.
        reasons: which rules it breaks: "small", "adc", "dark".
    """

    voxels: int
    volume_ml: float
    median_adc: float
    dwi_ratio: float | None
    first_voxel: tuple[int, int, int]
    reasons: tuple[str, ...]


def lesion_rule_violations(
    mask: np.ndarray, dwi: np.ndarray, adc: np.ndarray, voxel_ml: float, rules: LesionRules
) -> tuple[RuleViolation, ...]:
    """Every lesion of ``mask`` that breaks a rule: smaller than ``min_lesion_ml``, median ADC above
    ``max_lesion_adc``, or mean DWI not above ``dwi_brain_median``.

    Args:
        mask: bool lesion mask, shape (X, Y, Z) (the input grid, for the final check).
        dwi: DWI on the same grid, the units ``rules.dwi_brain_median`` is in.
        adc: ADC on the same grid, 1e-6 mm²/s.
        voxel_ml: volume of one voxel, mL.
        rules: the rules.

    Returns:
        One :class:`RuleViolation` per breaking lesion, in label order (empty when every lesion obeys).
    """
    if mask.shape != dwi.shape or mask.shape != adc.shape:
        raise ValueError(f"mask, DWI and ADC must have one shape, but they are {mask.shape}, {dwi.shape}, {adc.shape}")
    if not mask.any():
        return ()
    labels, n, box = _components(mask)
    index = np.arange(1, n + 1)
    inside = labels > 0
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    medians = np.asarray(ndi.median(adc[box][inside], labels[inside], index), np.float64).reshape(-1)
    means = np.asarray(ndi.mean(dwi[box][inside].astype(np.float64), labels[inside], index), np.float64).reshape(-1)
    small = sizes < min_voxels_for(rules.min_lesion_ml, voxel_ml)
    limit = rules.adc_limit
    high = medians > limit if limit is not None else np.zeros(n, bool)
    if rules.radc_limit is not None:  # the relative rule, on the 25th percentile
        p25 = ndi.labeled_comprehension(
            adc[box][inside], labels[inside], index, lambda a: np.percentile(a, 25), np.float64, 0.0
        )
        high |= np.asarray(p25, np.float64).reshape(-1) > rules.radc_limit
    dark = means <= rules.dwi_brain_median if rules.dwi_brain_median is not None else np.zeros(n, bool)
    bad = np.flatnonzero(small | high | dark)
    if bad.size == 0:
        return ()
    firsts = {}
    flat = labels.ravel()
    order = np.flatnonzero(np.isin(flat, bad + 1))
    for pos in order:  # first voxel of each breaking component (C order)
        firsts.setdefault(int(flat[pos]), pos)
    out = []
    for i in bad:
        local = np.unravel_index(firsts[int(i) + 1], labels.shape)
        reasons = tuple(r for r, hit in (("small", small[i]), ("adc", high[i]), ("dark", dark[i])) if hit)
        out.append(
            RuleViolation(
                voxels=int(sizes[i]),
                volume_ml=float(sizes[i]) * voxel_ml,
                median_adc=float(medians[i]),
                dwi_ratio=None if rules.dwi_brain_median is None else float(means[i]) / rules.dwi_brain_median,
                first_voxel=tuple(int(a + s.start) for a, s in zip(local, box)),  # type: ignore[arg-type]
                reasons=reasons,
            )
        )
    return tuple(out)


def enforce_lesion_rules(
    mask: np.ndarray, dwi: np.ndarray, adc: np.ndarray, voxel_ml: float, rules: LesionRules
) -> tuple[np.ndarray, tuple[RuleViolation, ...]]:
    """Remove every lesion that breaks a rule (:func:`lesion_rule_violations`); run it after the last step that can
    add voxels, on the grid the mask is delivered on. Removing whole components leaves the others unchanged, so the
    result obeys every rule.

    Returns:
        (the mask without them, bool, same shape; the removed lesions).
    """
    found = lesion_rule_violations(mask, dwi, adc, voxel_ml, rules)
    if not found:
        return mask, ()
    labels, _, box = _components(mask)
    drop = np.unique([labels[tuple(a - s.start for a, s in zip(v.first_voxel, box))] for v in found])
    out = mask.copy()
    out[box] &= ~np.isin(labels, drop)
    log.info(
        "lesion rules: removed %d lesions (%.3f mL): %s",
        len(found),
        sum(v.volume_ml for v in found),
        ", ".join(f"{k} {sum(k in v.reasons for v in found)}" for k in ("small", "adc", "dark")),
    )
    return out, found


def _adc_text(rules: LesionRules) -> str:
    parts = [f"median ADC above {rules.adc_limit:g}"] if rules.adc_limit is not None else []
    if rules.radc_limit is not None:
        parts.append(f"ADC 25th percentile above {rules.radc_limit:.0f} ({rules.max_lesion_radc:g}x normal tissue)")
    return " or ".join(parts)


def describe_violations(found: tuple[RuleViolation, ...] | list[RuleViolation], rules: LesionRules) -> str | None:
    """One warning line about lesions that break the rules (for a backend whose mask is kept as it is), or None."""
    if not found:
        return None
    parts = []
    for key, text in (
        ("small", f"smaller than {rules.min_lesion_ml:g} mL"),
        ("adc", _adc_text(rules)),
        ("dark", "mean DWI not above the brain median"),
    ):
        k = sum(key in v.reasons for v in found)
        if k:
            parts.append(f"{k} {text}")
    return (
        f"{len(found)} lesion(s) ({sum(v.volume_ml for v in found):.2f} mL) break the lesion rules: "
        + "; ".join(parts)
        + ". The model's own mask is kept as it is; check them on the overlay."
    )


def threshold_and_filter(
    probability: np.ndarray,
    threshold: float,
    min_lesion_ml: float,
    voxel_ml: float,
    adc: np.ndarray | None = None,
    max_median_adc: float | None = None,
    *,
    max_p25_adc: float | None = None,
    zone_max_adc: float | None = None,
    affine: np.ndarray | None = None,
    mni: MniMap | None = None,
) -> np.ndarray:
    """Threshold a probability map, then remove lesions smaller than ``min_lesion_ml``, (when ``adc``
    and ``max_median_adc`` are given) lesions whose median ADC is above ``max_median_adc``, and (when
    ``zone_max_adc``, ``affine`` and ``mni`` are given too) lesions in a skull-base susceptibility zone less than
    a quarter of which has ADC below ``zone_max_adc``.

    Args:
        probability: float array in [0, 1], shape (X, Y, Z).
        threshold: voxels with probability > threshold are lesion.
        min_lesion_ml: smallest kept lesion, mL.
        voxel_ml: volume of one voxel, mL.
        adc: ADC on the same grid, shape (X, Y, Z), in 1e-6 mm²/s.
        max_median_adc: largest kept lesion median ADC, 1e-6 mm²/s; None skips the rule.
        max_p25_adc: largest kept lesion 25th-percentile ADC, 1e-6 mm²/s (:attr:`LesionRules.radc_limit`); None skips.
        zone_max_adc: in a susceptibility zone, a lesion's ADC 25th percentile must be below this (1e-6 mm²/s); None
        skips.
        affine: 4x4 voxel-to-world affine of ``probability`` (mm).
        mni: world-to-MNI map of the case.

    Returns:
        bool array, shape (X, Y, Z).
    """
    return filter_components(
        probability > threshold,
        min_voxels=min_voxels_for(min_lesion_ml, voxel_ml),
        adc=adc,
        max_median_adc=max_median_adc,
        max_p25_adc=max_p25_adc,
        zone_max_adc=zone_max_adc,
        affine=affine,
        mni=mni,
    )


MIN_LESION_ADC = 50.0
"""ADC (1e-6 mm²/s) at or below which a voxel cannot be an infarct: the most restricted acute core is ~200-300;
lower values are fitting failures, signal voids or the zeros outside the ADC map."""


def measurable_diffusion(
    adc: np.ndarray,
    voxel_size: tuple[float, float, float],
    edge_mm: float = 2.0,
    *,
    within: tuple[slice, slice, slice] | None = None,
) -> np.ndarray:
    """Voxels with a diffusion measurement: inside the ADC map's support, minus its partial-volume edge.

    The support is where the ADC is > 0 (holes filled slice by slice, so a dark lesion core inside it counts); its
    outermost ``edge_mm`` (at least one voxel in-plane) is left out, because there the ADC mixes tissue and the
    zeros outside. After :func:`stroke_seg.pipeline.preprocess.preprocess` the ADC is 0 exactly outside
    :func:`stroke_seg.pipeline.preprocess.diffusion_support`, whatever its source.

    Args:
        adc: ADC in 1e-6 mm²/s, shape (X, Y, Z).
        voxel_size: voxel edge lengths in mm, in the axis order of ``adc``.
        edge_mm: width of the excluded edge, mm.
        within: only voxels inside this box are computed (the rest is False): the cost then follows the box, not
            the input's voxel count.

    Returns:
        bool array, shape (X, Y, Z).
    """
    radius = np.maximum(0, np.round(edge_mm / np.asarray(voxel_size, float))).astype(int)
    radius[:2] = np.maximum(radius[:2], 1)
    box = within or tuple(slice(0, n) for n in adc.shape)
    # the box grown by the erosion's radius (+1): inside the box the result is exact; holes are filled on whole slices
    outer = tuple(slice(max(b.start - r - 1, 0), min(b.stop + r + 1, n)) for b, r, n in zip(box, radius, adc.shape))
    support = adc[:, :, outer[2]] > 0
    if support.all():
        eroded = np.ones(tuple(o.stop - o.start for o in outer), bool)
    else:
        support = np.stack([ndi.binary_fill_holes(sl) for sl in np.moveaxis(support, 2, 0)], axis=2)
        grid = np.ogrid[tuple(slice(-int(r), int(r) + 1) for r in radius)]
        struct = sum((g / max(float(r), 1e-6)) ** 2 for g, r in zip(grid, radius)) <= 1.0
        eroded = ndi.binary_erosion(support[outer[0], outer[1]], structure=struct, border_value=1)
    out = np.zeros(adc.shape, bool)
    out[box] = eroded[tuple(slice(b.start - o.start, b.stop - o.start) for b, o in zip(box, outer))]
    return out


def apply_physics_guard(
    mask: np.ndarray, adc: np.ndarray, brain: np.ndarray, voxel_size: tuple[float, float, float]
) -> np.ndarray:
    """Remove lesion voxels that cannot be an infarct: ADC <= :data:`MIN_LESION_ADC`, no diffusion measurement
    (:func:`measurable_diffusion`) or outside the brain mask.

    Args:
        mask: lesion mask, bool, shape (X, Y, Z).
        adc: ADC in 1e-6 mm²/s, same shape.
        brain: brain mask, bool, same shape.
        voxel_size: voxel edge lengths in mm.

    Returns:
        The guarded mask, bool, same shape.
    """
    if mask.shape != adc.shape or mask.shape != brain.shape:
        raise ValueError(
            f"mask, ADC and brain must have one shape, but they are {mask.shape}, {adc.shape} and {brain.shape}"
        )
    if not mask.any():
        return mask
    box = ndi.find_objects(mask.astype(np.uint8))[0]
    allowed = (adc > MIN_LESION_ADC) & brain & measurable_diffusion(adc, voxel_size, within=box)
    removed = int((mask & ~allowed).sum())
    if removed:
        log.info(
            "physics guard: removed %d lesion voxels without a plausible diffusion measurement or outside the brain",
            removed,
        )
    return mask & allowed


# DWI criteria shared by the ADC rule and the U-Net's rim step.
