"""Frozen dataclasses and type aliases shared by the whole library.

Conventions used throughout:
    * Arrays are float32 unless stated, indexed (X, Y, Z) in voxel order.
    * "Canonical" means the closest RAS+ voxel order (axes permuted/flipped only, no resampling),
      so an oblique acquisition stays oblique; the affine keeps the exact geometry.
    * ADC is in 1e-6 mm²/s everywhere after :func:`stroke_seg.io.case.load_case`.
    * Volumes are in mL (1 mL = 1000 mm³), coordinates in world (scanner) mm.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import nibabel as nib
import numpy as np

from stroke_seg.io.limits import Limits

__all__ = [
    "ProgressCallback",
    "CancelCheck",
    "Mode",
    "SegmentConfig",
    "Geometry",
    "Case",
    "Lesion",
    "LesionMetrics",
    "Comparison",
    "Result",
    "Provisional",
    "ProvisionalCallback",
    "voxel_sizes",
    "scaled_progress",
]

ProgressCallback = Callable[[float, str], Any]
"""``progress(fraction, description)``; fraction in [0, 1]. ``gr.Progress`` fits this signature."""

CancelCheck = Callable[[], bool]
"""``should_cancel() -> bool``; polled between steps (and between sliding windows)."""

Mode = Literal["fast", "accurate"]

ENGINE_NAMES = ("auto", "torch", "openvino", "openvino-bf16")
BRAIN_EXTRACTORS = ("hd-bet", "morphology")
"""Values of :attr:`SegmentConfig.brain_extractor`."""
"""Values of :attr:`SegmentConfig.engine` (:mod:`stroke_seg.models.engines` implements them)."""


def scaled_progress(progress: ProgressCallback, start: float, end: float, prefix: str = "") -> ProgressCallback:
    """A callback that maps a step's own fraction in [0, 1] onto ``[start, end]`` of ``progress``, with
    ``prefix`` before each description (fractions outside [0, 1] are clipped)."""

    def report(fraction: float, description: str) -> None:
        progress(start + (end - start) * min(max(float(fraction), 0.0), 1.0), prefix + description)

    return report


VOXEL_SIZE_DECIMALS = 4
"""Voxel sizes are rounded to 1e-4 mm: the float noise converters leave in an affine (1e-8-1e-6 mm) must not move a
radius, a step or a grid size computed from them."""


def voxel_sizes(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel edge lengths (mm) of a 4x4 voxel-to-world affine, in its voxel axis order, rounded to 1e-4 mm."""
    lengths = np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))
    return tuple(round(float(v), VOXEL_SIZE_DECIMALS) for v in lengths)  # type: ignore[return-value]


@dataclass(frozen=True, eq=False)
class Geometry:
    """Where a voxel grid lies in the world, independent of the file format it came from.

    Attributes:
        affine: 4x4 voxel-to-world (mm) affine, RAS+ world, any voxel order.
        sform_code, qform_code: how the affine is known, as NIfTI codes (0 unknown, 1 scanner, 2 aligned,
            3 Talairach, 4 MNI); a DICOM series converts to 1. Written back unchanged, so outputs open
            in the same space as the input in every viewer.
    """

    affine: np.ndarray
    sform_code: int = 2
    qform_code: int = 2

    def __post_init__(self) -> None:
        affine = np.asarray(self.affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, but it has shape {affine.shape}")
        object.__setattr__(self, "affine", affine)

    @property
    def has_world(self) -> bool:
        """True when the affine is declared (a non-zero code), finite and invertible: resampling may trust it."""
        return (
            max(self.sform_code, self.qform_code) > 0
            and bool(np.all(np.isfinite(self.affine)))
            and abs(float(np.linalg.det(self.affine[:3, :3]))) > 1e-6
        )

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        return voxel_sizes(self.affine)

    @property
    def orientation(self) -> str:
        """Storage axis codes, e.g. "LAS" or "RAS"."""
        return "".join(nib.aff2axcodes(self.affine))


@dataclass(frozen=True)
class SegmentConfig:
    """Options of one segmentation run. Defaults suit the bundled models.

    Attributes:
        mode: ``"fast"`` (one pass) or ``"accurate"`` (mirror test-time augmentation, 8 passes);
            backends without augmentation ignore it.
        threshold: probability above which a voxel is lesion, in (0, 1).
        min_lesion_ml: connected components (26-connectivity) smaller than this are removed, in mL.
        max_lesion_adc: components whose median ADC is above this, in 1e-6 mm²/s, are removed: an acute
            infarct restricts diffusion, and a DWI-bright spot with high ADC is T2 shine-through. None
            keeps them. The default (1000), chosen on a tuning set (``bench/evaluate.py --seed 9``, not the
            evaluation set), sits between lesion rims (<= 860 +-10 %) and the middle of the T2 shine-through range
            (950-1300); a territorial lesion with partial volume of CSF can reach a median of 930. In the real
            ISLES'22 case 5 of the 29 small DeepISLES lesions (<= 20 voxels, 44 voxels in all; partial volume with
            CSF) have medians above 1000 and are removed.
        max_lesion_radc: components whose relative ADC is above this are removed: the 25th percentile of the
            lesion's ADC (a quarter of it must be restricted, whatever share its DWI-bright rim takes) over the ADC of
            this brain's normal-appearing tissue (the histogram peak of brain voxels with ADC 200-1500 and DWI below
            1.3x the brain median). A lesion must restrict diffusion relative to the patient's own tissue, whatever
            the scanner's ADC scale, so T2 shine-through is not infarct. The default (1.0) keeps subacute lesions with
            moderately low ADC; 0.9 removed true lesions (held-out synthetic emboli: Dice 0.68 -> 0.60; the real
            ISLES'22 case: 0.478 -> 0.460; MODEL_CARD.md). None keeps them.
        mirror_dwi_min: a component whose median DWI is below this times the DWI of the tissue at its mirror image
            (across the mid-sagittal plane, widened by 4 mm; its 75th percentile) is removed unless it has a
            restricted core (median ADC at most 0.75x the normal-appearing ADC): brightness both hemispheres share (a
            bright cortical ribbon) is not infarct (:mod:`stroke_seg.pipeline.restriction`). None keeps them.
        artefact_zone_adc: a component whose centre lies in a skull-base susceptibility zone (temporal poles,
            inferior temporal lobes, orbitofrontal cortex; within 20 mm of the sites in
            :data:`stroke_seg.pipeline.anatomy.ARTEFACT_ZONE_SITES_MNI`, placed by
            :class:`stroke_seg.pipeline.anatomy.MniMap`) is
            kept only when at least a quarter of its voxels have ADC below this, in 1e-6 mm²/s (a core): there,
            DWI brightness without core restriction is most often an echo-planar artefact. The default, 620, is
            the RAPID core threshold. None keeps them (a true infarct there without a core is then not dropped).
        edge_level: after the rules above, every kept lesion is extended to its own DWI edge
            (:func:`stroke_seg.pipeline.postprocess.grow_to_dwi_edges`: voxels within 4 mm, connected to it, brighter
            than
            ``background + edge_level * (lesion - background)``, CSF excluded). An edge voxel is part lesion; 0.5 counts
            those at least half lesion, as a voxel mask does. The default (0.5) was chosen on the tuning set
            (``bench/evaluate.py --seed 9``): levels 0.3-0.6 and reaches 2 or 4 mm, 0.5 with 4 mm best (unet mean Dice
            0.865 -> 0.894, adc-threshold 0.755 -> 0.795, negatives 0 mL). None keeps the model's own edges.
        device: torch device for deep backends (``"cpu"``, ``"cuda"``); None picks CUDA when present.
        engine: what runs the network: ``"auto"`` (CUDA: torch; CPU: OpenVINO float32), ``"torch"`` (the float32
            reference), ``"openvino"``
            (float32) or ``"openvino-bf16"``. An engine that is missing or fails falls back to torch (logged);
            :mod:`stroke_seg.models.engines` has the details.
        brain_extractor: how a raw head's brain is found for the models that use this project's brain mask (all but
            DeepISLES and nnU-Net folders, which run their own pipeline): ``"hd-bet"`` (HD-BET, a trained network,
            :mod:`stroke_seg.models.hdbet`; fold 0 in fast mode, five folds fused in accurate mode; the engine as
            ``engine`` says, in float32) or ``"morphology"`` (:func:`stroke_seg.pipeline.preprocess.brain_mask`,
            thresholds and erosion: keeps scalp and neck on many heads). A skull-stripped input keeps its own support
            either way. A missing extractor is an error, never a silent fallback; an HD-BET mask that cannot be a
            brain (:func:`stroke_seg.pipeline.brain_extraction.implausible_brain`) is replaced by the morphological
            one with a warning in :attr:`Result.warnings`. Default ``"hd-bet"``, or ``STROKE_SEG_BRAIN_EXTRACTOR``.
        max_voxels: largest accepted image, in voxels, all volumes of a 4D image together, checked from each header
            before voxels are read (guards memory on shared servers); defaults to ``STROKE_SEG_MAX_VOXELS``
            (48,000,000).
        model_folder: the trained-model folder of a backend that runs one (``model="nnunet"``: a nnU-Net v2
            folder holding dataset.json, plans.json and fold_<k>/checkpoint_final.pth); other backends ignore it.
        core_adc: the clinical report's core threshold, 1e-6 mm²/s: lesion voxels with ADC below it are ischemic core
            (620, the RAPID rule).
        clinical_report: describe the mask (core, side, vascular territory, DWI-FLAIR mismatch;
            :func:`stroke_seg.report.describe`) as :attr:`Result.report`; False skips it (and its registration).
    """

    mode: Mode = "fast"
    threshold: float = 0.5
    min_lesion_ml: float = 0.01
    max_lesion_adc: float | None = 1000.0
    max_lesion_radc: float | None = 1.0
    mirror_dwi_min: float | None = 1.15
    artefact_zone_adc: float | None = 620.0
    edge_level: float | None = 0.5
    device: str | None = None
    engine: str = "auto"
    brain_extractor: str = field(default_factory=lambda: os.environ.get("STROKE_SEG_BRAIN_EXTRACTOR") or "hd-bet")
    max_voxels: int = field(default_factory=lambda: Limits.from_env().max_voxels)
    model_folder: str | None = None
    core_adc: float = 620.0
    clinical_report: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ("fast", "accurate"):
            raise ValueError(f'mode must be "fast" or "accurate", but it is {self.mode!r}')
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), but it is {self.threshold}")
        if self.min_lesion_ml < 0:
            raise ValueError(f"min_lesion_ml must be >= 0, but it is {self.min_lesion_ml}")
        if self.max_lesion_adc is not None and self.max_lesion_adc <= 0:
            raise ValueError(f"max_lesion_adc must be > 0 (1e-6 mm²/s) or None, but it is {self.max_lesion_adc}")
        if self.max_lesion_radc is not None and not 0.0 < self.max_lesion_radc <= 2.0:
            raise ValueError(f"max_lesion_radc must be in (0, 2] or None, but it is {self.max_lesion_radc}")
        if self.mirror_dwi_min is not None and self.mirror_dwi_min <= 0:
            raise ValueError(f"mirror_dwi_min must be > 0 or None, but it is {self.mirror_dwi_min}")
        if self.artefact_zone_adc is not None and self.artefact_zone_adc <= 0:
            raise ValueError(f"artefact_zone_adc must be > 0 (1e-6 mm²/s) or None, but it is {self.artefact_zone_adc}")
        if self.edge_level is not None and not 0.0 < self.edge_level < 1.0:
            raise ValueError(f"edge_level must be in (0, 1) or None, but it is {self.edge_level}")
        if self.engine not in ENGINE_NAMES:
            raise ValueError(f"engine must be one of {', '.join(ENGINE_NAMES)}, but it is {self.engine!r}")
        if self.brain_extractor not in BRAIN_EXTRACTORS:
            raise ValueError(
                f"brain_extractor must be one of {', '.join(BRAIN_EXTRACTORS)}, but it is {self.brain_extractor!r}"
            )
        if not self.core_adc > 0:
            raise ValueError(f"core_adc must be > 0 (1e-6 mm²/s), but it is {self.core_adc}")
        if self.max_voxels < 16**3:
            raise ValueError(f"max_voxels must be >= {16**3}, but it is {self.max_voxels}")
        if self.model_folder is not None:
            if not str(self.model_folder).strip():
                raise ValueError("model_folder must name a folder or be None, but it is empty")
            object.__setattr__(self, "model_folder", str(self.model_folder))

    def replace(self, **changes: Any) -> SegmentConfig:
        """Return a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, eq=False)
class Case:
    """One validated case, every image on the grid of the DWI the user gave.

    Attributes:
        dwi: DWI (b=1000) intensities, shape (X, Y, Z), float32, arbitrary units.
        adc: ADC on the DWI grid, shape (X, Y, Z), float32, in 1e-6 mm²/s.
        geometry: where the DWI grid lies in the world (:class:`Geometry`); outputs are written with it.
        flair: optional FLAIR on the DWI grid, shape (X, Y, Z), float32.
        ground_truth: optional lesion mask on the DWI grid, shape (X, Y, Z), bool.
        sources: a name for each input (file name or "<in-memory image>"), for messages and reports.
        adc_unit: the ADC unit detected in the input ("mm2/s", "1e-3 mm2/s" or "1e-6 mm2/s"), or how the ADC
            was computed ("computed from b0 + b=1000").
        adc_median_input: the brain median of the ADC as given, in its own unit, from which the unit was
            detected (None when the ADC was computed).
        notes: human-readable notes about conversions made while loading.
        adc_input: the ADC as given (its own unit, negative values kept) on the DWI grid, float32, when that differs
            from ``adc``; None when ``adc`` is it, or was computed. For a model that must see the values its own
            pipeline reads from the file (a nnU-Net folder).
    """

    dwi: np.ndarray
    adc: np.ndarray
    geometry: Geometry
    flair: np.ndarray | None = None
    ground_truth: np.ndarray | None = None
    sources: dict[str, str] = field(default_factory=dict)
    adc_unit: str = "1e-6 mm2/s"
    adc_median_input: float | None = None
    notes: tuple[str, ...] = ()
    adc_input: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.dwi.shape)  # type: ignore[return-value]

    @property
    def affine(self) -> np.ndarray:
        """4x4 voxel-to-world (mm) affine of the DWI, as stored (any orientation)."""
        return self.geometry.affine

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        """Voxel edge lengths in mm, from the affine, in storage axis order."""
        return self.geometry.voxel_size

    @property
    def orientation(self) -> str:
        """Storage axis codes, e.g. "LAS" or "RAS"."""
        return self.geometry.orientation

    def summary(self) -> dict[str, Any]:
        """Shapes, voxel size, orientation and units, as plain JSON-able values."""
        return {
            "shape": list(self.shape),
            "voxel_size_mm": [round(v, 3) for v in self.voxel_size],
            "orientation": self.orientation,
            "adc_unit_detected": self.adc_unit,
            "has_flair": self.flair is not None,
            "has_ground_truth": self.ground_truth is not None,
            "sources": dict(self.sources),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Lesion:
    """One connected lesion (26-connectivity).

    Attributes:
        label: 1-based index, largest lesion first.
        volume_ml: volume in mL.
        voxels: number of voxels.
        centroid_mm: centre of mass in world coordinates (mm), as the affine defines them.
        mean_adc: mean ADC inside the lesion, 1e-6 mm²/s (None when no ADC was given).
    """

    label: int
    volume_ml: float
    voxels: int
    centroid_mm: tuple[float, float, float]
    mean_adc: float | None


@dataclass(frozen=True)
class Comparison:
    """Agreement with a ground-truth mask, as the ISLES'22 challenge defines it.

    Attributes:
        dice: Dice coefficient in [0, 1] (1.0 when both masks are empty).
        avd_ml: absolute volume difference, mL.
        lesion_f1: lesion-wise F1 (a lesion is detected when one voxel overlaps).
        lesion_count_diff: absolute difference of the lesion counts.
        true_positive_lesions, false_positive_lesions, false_negative_lesions: the counts behind F1.
    """

    dice: float
    avd_ml: float
    lesion_f1: float
    lesion_count_diff: int
    true_positive_lesions: int
    false_positive_lesions: int
    false_negative_lesions: int


@dataclass(frozen=True)
class LesionMetrics:
    """Measurements of one mask.

    Attributes:
        volume_ml: total lesion volume, mL.
        count: number of connected lesions (26-connectivity).
        lesions: one row per lesion, largest first.
        comparison: agreement with a ground truth, when one was given.
    """

    volume_ml: float
    count: int
    lesions: tuple[Lesion, ...]
    comparison: Comparison | None = None


@dataclass(frozen=True, eq=False)
class Result:
    """What :func:`stroke_seg.segment` returns, always.

    Attributes:
        mask: binary lesion mask (uint8 0/1) on the exact grid (shape + affine) of the input DWI.
        probability: lesion probability map in [0, 1] (float32) on the same grid.
        metrics: volume, count, per-lesion table and, with a ground truth, ISLES'22 metrics.
        timings: seconds spent per stage ("load", "preprocess", "inference", "postprocess",
            "metrics", "total").
        model: backend name; model_version: its version string.
        config: the options used.
        case: the validated input case.
        warnings: plausibility warnings a user must see (:func:`stroke_seg.pipeline.qc.quality_warnings`); empty when
            none.
        brain_ml: volume of the brain mask, mL.
        brain_mask: the brain mask the models and rules used (uint8 0/1) on the grid of the input DWI; None only for a
            Result built elsewhere.
        notes: what the model did to the input that a reader of the result must know (e.g. skull stripping).
        model_details: JSON-able facts about the model run (weights checksum, checkpoints, windows, engine).
        report: the clinical report of the mask (:class:`stroke_seg.report.ClinicalReport`: core, side, territory,
            DWI-FLAIR mismatch); None when ``config.clinical_report`` is False.
    """

    mask: nib.Nifti1Image
    probability: nib.Nifti1Image
    metrics: LesionMetrics
    timings: dict[str, float]
    model: str
    model_version: str
    config: SegmentConfig
    case: Case
    warnings: tuple[str, ...] = ()
    brain_ml: float | None = None
    brain_mask: nib.Nifti1Image | None = None
    notes: tuple[str, ...] = ()
    model_details: dict[str, Any] = field(default_factory=dict)
    report: Any = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able report: model, volume, count, lesions, timings and comparison metrics."""
        m = self.metrics
        report: dict[str, Any] = {
            "model": self.model,
            "model_version": self.model_version,
            "mode": self.config.mode,
            "threshold": self.config.threshold,
            "min_lesion_ml": self.config.min_lesion_ml,
            "max_lesion_adc": self.config.max_lesion_adc,
            "max_lesion_radc": self.config.max_lesion_radc,
            "mirror_dwi_min": self.config.mirror_dwi_min,
            "artefact_zone_adc": self.config.artefact_zone_adc,
            "edge_level": self.config.edge_level,
            "lesion_volume_ml": round(m.volume_ml, 4),
            "lesion_count": m.count,
            "lesions": [
                {
                    "label": les.label,
                    "volume_ml": round(les.volume_ml, 4),
                    "voxels": les.voxels,
                    "centroid_mm": [round(c, 2) for c in les.centroid_mm],
                    "mean_adc_1e-6_mm2_per_s": None if les.mean_adc is None else round(les.mean_adc, 1),
                }
                for les in m.lesions
            ],
            "warnings": list(self.warnings),
            "notes": list(self.notes),
            "model_details": self.model_details,
            "brain_volume_ml": None if self.brain_ml is None else round(self.brain_ml, 1),
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "input": self.case.summary(),
            "disclaimer": "Research use only; not for diagnosis.",
        }
        if self.report is not None:  # the clinical report, whole, and its core and per-lesion side and territory
            clinical = self.report.to_dict()
            report.update(core_ml=clinical["core_ml"], core_adc=clinical["settings"]["core_adc"], report=clinical)
            for row, les in zip(report["lesions"], clinical["lesions"]):
                row.update(core_ml=les["core_ml"], hemisphere=les["hemisphere"], territory=les["territory"])
        if m.comparison is not None:
            c = m.comparison
            report.update(
                dice=round(c.dice, 4),
                avd_ml=round(c.avd_ml, 4),
                lesion_f1=round(c.lesion_f1, 4),
                lesion_count_diff=c.lesion_count_diff,
                true_positive_lesions=c.true_positive_lesions,
                false_positive_lesions=c.false_positive_lesions,
                false_negative_lesions=c.false_negative_lesions,
            )
        return report


@dataclass(frozen=True, eq=False)
class Provisional:
    """An early answer of a model that averages several networks (DeepISLES' 15 checkpoints), handed to
    ``segment(on_provisional=...)`` after each network: the model's own mask of the average so far. Each one refines
    the last; the one at ``done == total`` has the final :class:`Result`'s mask. No metrics or report yet.

    Attributes:
        mask: binary (uint8 0/1) on the exact grid of the input DWI; probability: float32 in [0, 1], same grid.
        volume_ml: the mask's volume, mL.
        done, total, unit: networks averaged so far, in all, and what they are ("checkpoints").
        remaining_s: the model's estimate of the inference seconds left, from the pace so far; None when unknown.
        model: backend name.
    """

    mask: nib.Nifti1Image
    probability: nib.Nifti1Image
    volume_ml: float
    done: int
    total: int
    unit: str
    remaining_s: float | None
    model: str

    @property
    def label(self) -> str:
        return f"provisional, {self.done}/{self.total} {self.unit}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": "provisional",
            "label": self.label,
            "model": self.model,
            "done": self.done,
            "total": self.total,
            "unit": self.unit,
            "lesion_volume_ml": round(self.volume_ml, 4),
            "remaining_s": None if self.remaining_s is None else round(self.remaining_s, 1),
            "disclaimer": "Provisional: not the model's final answer. Research use only; not for diagnosis.",
        }


ProvisionalCallback = Callable[[Provisional], Any]
"""``on_provisional(provisional)``, called on the inference thread; it should return quickly."""
