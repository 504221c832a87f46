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

from .anatomy import MniMap, component_centres_world, in_susceptibility_zone
from .preprocess import DISTANCE_TOL_MM, Preprocessed

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

CONNECTIVITY_26 = ndi.generate_binary_structure(3, 3)
"""26-connectivity, as the ISLES'22 evaluation counts lesions."""


def min_voxels_for(min_ml: float, voxel_ml: float) -> int:
    """Fewest voxels of ``voxel_ml`` mL that hold at least ``min_ml`` mL (1e-6 relative tolerance), at least 1."""
    if min_ml <= 0 or voxel_ml <= 0:
        return 1
    return max(1, int(np.ceil(min_ml / voxel_ml * (1.0 - 1e-6))))


@dataclass(frozen=True)
class LesionRules:
    """The rules every lesion of a final mask obeys (the report states them).

    Attributes:
        min_lesion_ml: smallest lesion, mL.
        max_lesion_adc: largest median ADC of a lesion, 1e-6 mm²/s; None: no ADC rule.
        dwi_brain_median: a lesion's mean DWI must be above this (the DWI's median inside the brain mask, in the
            DWI's own units); None: no DWI rule.
    """

    min_lesion_ml: float
    max_lesion_adc: float | None
    dwi_brain_median: float | None


def lesion_rules(config, dwi_brain_median: float | None) -> LesionRules:
    """The rules of a :class:`~stroke_seg.types.SegmentConfig` run whose brain median DWI is ``dwi_brain_median``."""
    return LesionRules(config.min_lesion_ml, config.max_lesion_adc, dwi_brain_median)


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


def _components(mask: np.ndarray) -> tuple[np.ndarray, int, tuple[slice, ...]]:
    box = ndi.find_objects(mask.astype(np.uint8))[0]
    labels, n = ndi.label(mask[box], structure=CONNECTIVITY_26)
    return labels, n, box


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
    high = medians > rules.max_lesion_adc if rules.max_lesion_adc is not None else np.zeros(n, bool)
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


def describe_violations(found: tuple[RuleViolation, ...] | list[RuleViolation], rules: LesionRules) -> str | None:
    """One warning line about lesions that break the rules (for a backend whose mask is kept as it is), or None."""
    if not found:
        return None
    parts = []
    for key, text in (
        ("small", f"smaller than {rules.min_lesion_ml:g} mL"),
        ("adc", f"median ADC above {rules.max_lesion_adc:g}" if rules.max_lesion_adc is not None else ""),
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


def filter_components(
    mask: np.ndarray,
    *,
    min_voxels: int = 1,
    adc: np.ndarray | None = None,
    max_median_adc: float | None = None,
    zone_max_adc: float | None = None,
    affine: np.ndarray | None = None,
    mni: MniMap | None = None,
) -> np.ndarray:
    """Keep the connected components (26-connectivity) that pass every given rule.

    The mask is labelled once, inside its bounding box.

    Args:
        mask: bool array, shape (X, Y, Z).
        min_voxels: smallest kept component, in voxels; <= 1 keeps every size.
        adc: ADC on the same grid, shape (X, Y, Z), in 1e-6 mm²/s; needed by both ADC rules.
        max_median_adc: largest kept component median ADC, 1e-6 mm²/s; None skips this rule.
        zone_max_adc: a component whose centre lies in a skull-base susceptibility zone
            (:func:`stroke_seg.anatomy.in_susceptibility_zone`) is kept only when at least a quarter of its voxels
            have ADC below this (its 25th percentile; the median would count the DWI-bright rim the models include),
            1e-6 mm²/s; None skips this rule (as does a missing ``adc``, ``affine`` or ``mni``).
        affine: 4x4 voxel-to-world affine of ``mask`` (mm), for the zone rule.
        mni: world-to-MNI map of the case (:class:`stroke_seg.anatomy.MniMap`), for the zone rule.
    """
    by_adc = max_median_adc is not None and adc is not None
    by_zone = zone_max_adc is not None and adc is not None and affine is not None and mni is not None
    if (min_voxels <= 1 and not by_adc and not by_zone) or not mask.any():
        return mask
    box = ndi.find_objects(mask.astype(np.uint8))[0]
    labels, n = ndi.label(mask[box], structure=CONNECTIVITY_26)
    keep = np.bincount(labels.ravel(), minlength=n + 1) >= min_voxels
    inside = labels > 0 if (by_adc or by_zone) else None
    if by_adc:
        medians = np.asarray(
            ndi.median(adc[box][inside], labels[inside], index=np.arange(1, n + 1)), dtype=np.float64
        ).reshape(-1)
        unrestricted = keep[1:] & (medians > max_median_adc)
        if unrestricted.any():
            log.info(
                "dropped %d of %d components with median ADC > %g (not restricted)",
                int(unrestricted.sum()),
                n,
                max_median_adc,
            )
        keep[1:] &= ~unrestricted
    if by_zone:
        centres = mni(component_centres_world(labels, n, affine, offset=[s.start for s in box]))
        in_zone = keep[1:] & in_susceptibility_zone(centres)
        artefact = np.zeros(n, bool)
        if in_zone.any():
            index = np.flatnonzero(in_zone) + 1
            p25 = ndi.labeled_comprehension(
                adc[box][inside], labels[inside], index, lambda a: np.percentile(a, 25), np.float64, np.inf
            )
            artefact[index - 1] = np.asarray(p25).reshape(-1) >= zone_max_adc
        if artefact.any():
            log.info(
                "dropped %d of %d components in skull-base susceptibility zones without a core (ADC p25 >= %g)",
                int(artefact.sum()),
                n,
                zone_max_adc,
            )
        keep[1:] &= ~artefact
    keep[0] = False
    if keep[1:].all():
        return mask
    out = np.zeros_like(mask)
    out[box] = keep[labels]
    return out


def remove_small_components(mask: np.ndarray, min_voxels: int) -> np.ndarray:
    """Drop connected components (26-connectivity) with fewer than ``min_voxels`` voxels (mask: bool, (X, Y, Z))."""
    return filter_components(mask, min_voxels=min_voxels)


def remove_unrestricted_components(mask: np.ndarray, adc: np.ndarray, max_median_adc: float | None) -> np.ndarray:
    """Drop connected components whose median ADC (1e-6 mm²/s, same grid) is above ``max_median_adc``; None keeps
    all."""
    return filter_components(mask, adc=adc, max_median_adc=max_median_adc)


def threshold_and_filter(
    probability: np.ndarray,
    threshold: float,
    min_lesion_ml: float,
    voxel_ml: float,
    adc: np.ndarray | None = None,
    max_median_adc: float | None = None,
    *,
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
        zone_max_adc=zone_max_adc,
        affine=affine,
        mni=mni,
    )


def grow_to_dwi_edges(
    mask: np.ndarray,
    dwi: np.ndarray,
    adc: np.ndarray,
    voxel_size,
    *,
    level: float = 0.5,
    reach_mm: float = 4.0,
    shell_mm: tuple[float, float] = (4.0, 8.0),
    brain: np.ndarray | None = None,
    max_adc: float = 1500.0,
) -> np.ndarray:
    """Extend each lesion out to its own DWI edge at ``level`` between the surrounding tissue and the lesion.

    A lesion's edge voxel is part lesion, part tissue (partial volume), so its DWI lies between the two; a lesion
    mask counts the voxels that are at least half lesion (the synthetic ground truth is exactly that), whose DWI
    is above the half-way level. Per component (26-connectivity): ``peak`` is the median DWI inside it, ``background``
    the median DWI of the tissue in a shell ``shell_mm`` away from it (not lesion, ADC in (50, ``max_adc``), inside
    ``brain``). Voxels within ``reach_mm`` of the component, connected to it, that are tissue and whose DWI is above
    ``background + level * (peak - background)`` are added. Nothing is removed; a component not brighter than
    its surroundings is left as it is.

    Args:
        mask: bool lesion mask, shape (X, Y, Z).
        dwi: DWI on the same grid (any scale: the level is relative).
        adc: ADC on the same grid, 1e-6 mm²/s.
        voxel_size: voxel edge lengths of the grid, mm.
        level: fraction of the way from background to peak DWI that an added voxel must exceed, in (0, 1).
        reach_mm: how far a lesion may grow, mm.
        shell_mm: inner and outer distance (mm) of the background shell.
        brain: optional bool brain mask, same shape; growth and background stay inside it.
        max_adc: voxels with ADC at or above this (1e-6 mm²/s; CSF) are neither background nor added.

    Returns:
        bool array, shape (X, Y, Z), a superset of ``mask``.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), but it is {level}")
    if not mask.any():
        return mask
    vs = np.asarray(voxel_size, float)
    pad = np.ceil(max(shell_mm[1], reach_mm) / vs).astype(int) + 1
    labels, n = ndi.label(mask, structure=CONNECTIVITY_26)
    out = mask.copy()
    added = 0
    for i, box in enumerate(ndi.find_objects(labels), start=1):
        box = tuple(slice(max(s.start - p, 0), min(s.stop + p, dim)) for s, p, dim in zip(box, pad, mask.shape))
        lesion = labels[box] == i
        dist = ndi.distance_transform_edt(~lesion, sampling=vs)
        t = (adc[box] > 50) & (adc[box] < max_adc)  # tissue: no CSF, no background
        if brain is not None:
            t &= brain[box]
        d = dwi[box]
        tol = DISTANCE_TOL_MM
        shell = (dist > shell_mm[0] + tol) & (dist <= shell_mm[1] + tol) & t & ~mask[box]
        if shell.sum() < 5:
            continue
        peak, background = float(np.median(d[lesion])), float(np.median(d[shell]))
        if peak <= background:
            continue
        candidates = (dist > 0) & (dist <= reach_mm + tol) & t & (d > background + level * (peak - background))
        grown, _ = ndi.label(lesion | candidates, structure=CONNECTIVITY_26)
        reached = (grown == grown[lesion][0]) & candidates  # the lesion is one connected piece of the union
        added += int((reached & ~out[box]).sum())
        out[box] |= reached
    log.info("edges: %d lesions grew by %d voxels to their DWI level %.2f", n, added, level)
    return out


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
    zeros outside. After :func:`stroke_seg.preprocess.preprocess` the ADC is 0 exactly outside
    :func:`stroke_seg.preprocess.diffusion_support`, whatever its source.

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

DWI_RATIO_THRESHOLD = 1.3
"""DWI over the brain median (slice trend removed) above which tissue is DWI-bright."""
ADC_RIM_THRESHOLD = 850.0
"""1e-6 mm²/s: a DWI-bright rim with only mild restriction, kept next to a core."""
RIM_MAX_MM = 4.0
"""How far the rim may reach from the core (geodesic), mm."""


def sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))).astype(np.float32)


def filtered_adc(volumes: Preprocessed) -> np.ndarray:
    """ADC median-filtered over a voxel and its 6 face neighbours: speckle from noisy ADC fits is not infarct."""
    return ndi.median_filter(volumes.adc, footprint=ndi.generate_binary_structure(3, 1))


def dwi_criterion(volumes: Preprocessed) -> np.ndarray:
    """Soft DWI criterion: DWI / brain median / slice trend above 1.3."""
    return sigmoid((volumes.dwi / slice_trend(volumes)[None, None, :] - DWI_RATIO_THRESHOLD) / 0.08)


def rim_term(adc: np.ndarray, p_dwi: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Soft DWI-bright, mildly restricted tissue: sigmoid((850 - ADC) / 25) x ``p_dwi`` x ``inside``."""
    return sigmoid((ADC_RIM_THRESHOLD - adc) / 25.0) * p_dwi * inside


def rim_probability(volumes: Preprocessed) -> np.ndarray:
    """Soft DWI-bright, mildly restricted tissue: sigmoid((850 - ADC) / 25) x the DWI criterion, inside the brain.

    Returns:
        (X, Y, Z) float32 in [0, 1], canonical grid of ``volumes`` (ADC median-filtered as in the rule).
    """
    return rim_term(filtered_adc(volumes), dwi_criterion(volumes), volumes.brain & (volumes.adc > 50))


def grow_into_rim_around(prob: np.ndarray, volumes: Preprocessed, *, threshold: float = 0.5) -> np.ndarray:
    """``grow_into_rim(prob, rim_probability(volumes), volumes.voxel_size, threshold=threshold)``, computed only in the
    lesions' box grown by the rim's reach: the same result, at a cost that follows the lesions, not the input's voxel
    count (a 0.5 mm scan costs little more here than a 2 mm one).

    Args:
        prob: (X, Y, Z) lesion probability on the canonical grid of ``volumes``.
        volumes: the preprocessed case.
        threshold: probability above which a voxel is lesion (a seed).
    """
    prob = prob.astype(np.float32, copy=False)
    seeds = prob > threshold
    if not seeds.any():
        return prob
    vs = np.asarray(volumes.voxel_size, float)
    grow = np.floor(RIM_MAX_MM / vs + 0.5 + DISTANCE_TOL_MM).astype(int) + 2
    shape = prob.shape
    box = ndi.find_objects(seeds.astype(np.uint8))[0]
    outer = tuple(slice(max(b.start - g, 0), min(b.stop + g, n)) for b, g, n in zip(box, grow, shape))
    wider = tuple(slice(max(o.start - 1, 0), min(o.stop + 1, n)) for o, n in zip(outer, shape))  # median footprint
    adc = ndi.median_filter(volumes.adc[wider], footprint=ndi.generate_binary_structure(3, 1))
    adc = adc[tuple(slice(o.start - w.start, o.stop - w.start) for o, w in zip(outer, wider))]
    trend = slice_trend(volumes)[outer[2]]
    p_dwi = sigmoid((volumes.dwi[outer] / trend[None, None, :] - DWI_RATIO_THRESHOLD) / 0.08)
    p_rim = rim_term(adc, p_dwi, volumes.brain[outer] & (volumes.adc[outer] > 50))
    out = prob.copy()
    out[outer] = grow_into_rim(prob[outer], p_rim, vs, threshold=threshold)
    return out


def grow_into_rim(
    prob: np.ndarray, p_rim: np.ndarray, voxel_size, *, seed_min_ml: float = 0.0, threshold: float = 0.5
) -> np.ndarray:
    """Extend lesions (``prob > threshold``) into the DWI-bright rim around them, at most ``RIM_MAX_MM`` away.

    Args:
        prob: (X, Y, Z) lesion probability, canonical grid.
        p_rim: (X, Y, Z) rim probability on the same grid, from :func:`rim_probability`.
        voxel_size: voxel edge lengths in mm.
        seed_min_ml: only lesions at least this large grow (mL); 0 lets every lesion grow.
        threshold: probability above which a voxel is lesion (a seed).

    Returns:
        ``max(prob, p_rim)`` where the geodesic growth (face neighbours, through ``p_rim > 0.5``) reaches.

    The reach is in mm on every axis: along each axis the growth takes as many face steps as there are voxels whose
    extent starts within ``RIM_MAX_MM`` (spread over the iterations; city-block distance, as face-neighbour growth
    measures it), whatever the voxel size of the other axes: one slice of 5 mm, two voxels of 2 mm, four of 1 mm.
    """
    vs = np.asarray(voxel_size, float)
    # face steps per axis: the voxels whose extent starts within RIM_MAX_MM (centre at most RIM_MAX_MM + half a voxel)
    reach = np.floor(RIM_MAX_MM / vs + 0.5 + DISTANCE_TOL_MM).astype(int)
    steps = max(1, int(reach.max()))
    seeds = prob > threshold
    if seed_min_ml > 0:
        seeds = remove_small_components(seeds, min_voxels_for(seed_min_ml, float(np.prod(vs)) / 1000.0))
    allowed = p_rim > 0.5
    grown = seeds
    moves = np.zeros(3, int)
    for t in range(1, steps + 1):
        due = (t * reach) // steps  # each axis's moves spread evenly over the iterations
        struct = np.zeros((3, 3, 3), bool)
        struct[1, 1, 1] = True
        for axis in np.flatnonzero(due > moves):
            index = [1, 1, 1]
            for offset in (0, 2):
                index[axis] = offset
                struct[tuple(index)] = True
        moves = due
        grown = ndi.binary_dilation(grown, structure=struct, mask=allowed)
    return np.maximum(prob, p_rim * grown).astype(np.float32)


def slice_trend(volumes: Preprocessed, smooth_mm: float = 20.0) -> np.ndarray:
    """Median parenchyma DWI per axial slice over the whole-brain parenchyma median.

    Returns:
        (Z,) float32 array along canonical axis 2 (inferior to superior), at least 1.0; 1.0 where a slice has too
        little parenchyma to say (< 200 voxels). Parenchyma = brain with 50 < ADC < 1500 (no CSF).
    """
    par = volumes.brain & (volumes.adc > 50) & (volumes.adc < 1500)
    if par.sum() < 1000:
        return np.ones(volumes.dwi.shape[2], np.float32)
    overall = float(np.median(volumes.dwi[par]))
    valid = par.sum(axis=(0, 1)) >= 200
    per_slice = np.zeros(volumes.dwi.shape[2], np.float64)
    for z in np.flatnonzero(valid):
        per_slice[z] = np.median(volumes.dwi[:, :, z][par[:, :, z]]) / overall
    # Smooth over slices, averaging only slices that have a value (normalised convolution).
    sigma = smooth_mm / (2.355 * volumes.voxel_size[2])
    weight = ndi.gaussian_filter1d(valid.astype(np.float64), sigma, mode="nearest")
    trend = ndi.gaussian_filter1d(per_slice, sigma, mode="nearest") / np.maximum(weight, 1e-6)
    trend = np.where(weight > 1e-3, trend, 1.0)
    return np.clip(trend, 1.0, 2.0).astype(np.float32)  # only ever removes brightening
