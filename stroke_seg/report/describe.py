"""The clinical description of any lesion mask on a case's DWI grid: core, side, vascular territory, DWI-FLAIR mismatch.

Rules (the README and the model card state them too):

* **Core**: lesion voxels whose ADC is below :attr:`ReportConfig.core_adc` (620 x 10^-6 mm²/s, the RAPID rule), ADC in
  1e-6 mm²/s as :func:`stroke_seg.io.load_case` converts it. A voxel whose ADC is 0 (a computed ADC where b0 <= b1000,
  or no measurement) counts as core, and the report says how many there are.
* **Lesions**: 26-connected components, numbered largest first as :func:`stroke_seg.pipeline.metrics.lesion_table`
  numbers them.
* **Side**: every lesion voxel is placed in MNI152 space by an affine registration
  (:mod:`stroke_seg.report.registration`); voxels more than :attr:`ReportConfig.midline_mm` from the template's
  mid-sagittal plane are left (x < 0) or right (x > 0) in the patient's frame, whatever the voxel order. A lesion is
  "both" when the smaller side holds at least :attr:`ReportConfig.both_share` of its lateral voxels.
* **Territory**: the Johns Hopkins arterial territories atlas (:mod:`stroke_seg.report.territories`) at each voxel's
  MNI position (nearest labelled atlas voxel within :attr:`ReportConfig.atlas_reach_mm`), in mL per ACA / MCA / PCA /
  VB; the lesion's territory is the one holding most of it. The level-1 territories give the lobe or deep structure.
* **FLAIR** (when given): mean FLAIR in the lesion over the mean FLAIR at its mirror image across the mid-sagittal
  plane (lesion and non-brain voxels left out). A ratio below :attr:`ReportConfig.flair_ratio` is reported as a
  DWI-FLAIR mismatch: a research estimate, not a treatment criterion.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from stroke_seg.errors import IncompatibleImagesError, InvalidImageError
from stroke_seg.io.case import load_case
from stroke_seg.io.readers import read_image
from stroke_seg.pipeline.components import CONNECTIVITY_26
from stroke_seg.pipeline.metrics import voxel_volume_ml
from stroke_seg.pipeline.preprocess import brain_mask
from stroke_seg.report.registration import MniRegistration, moments_registration, register_to_mni
from stroke_seg.report.territories import CITATION, TERRITORIES, load_atlas, territory_table
from stroke_seg.types import Case
from stroke_seg.version import __version__

__all__ = ["ReportConfig", "LesionReport", "ClinicalReport", "describe", "register_case", "DISCLAIMER"]

log = logging.getLogger(__name__)

DISCLAIMER = "Research use only; not for diagnosis or treatment decisions."
_MISMATCH_NOTE = "research estimate, not validated for treatment decisions"


@dataclass(frozen=True)
class ReportConfig:
    """Settings of the clinical report; every value is printed in the report.

    Attributes:
        core_adc: ADC below which a lesion voxel is core, 1e-6 mm²/s (RAPID: 620).
        midline_mm: half-width of the band around the mid-sagittal plane whose voxels count for neither side, mm.
        both_share: smallest share of a lesion's lateral voxels on its minor side for the lesion to be "both".
        atlas_reach_mm: a voxel that lands outside the atlas takes the nearest atlas label within this distance, mm.
        flair_ratio: FLAIR lesion / mirror ratio below which a DWI-FLAIR mismatch is reported.
        register: run the affine registration (False: the brain-mask moments map, no registration cost).
    """

    core_adc: float = 620.0
    midline_mm: float = 2.0
    both_share: float = 0.1
    atlas_reach_mm: float = 6.0
    flair_ratio: float = 1.15
    register: bool = True

    def __post_init__(self) -> None:
        if not self.core_adc > 0:
            raise ValueError(f"core_adc must be > 0 (1e-6 mm²/s), but it is {self.core_adc}")
        if self.midline_mm < 0 or self.atlas_reach_mm < 0:
            raise ValueError(
                f"midline_mm and atlas_reach_mm must be >= 0, but are {self.midline_mm}, {self.atlas_reach_mm}"
            )
        if not 0 < self.both_share < 0.5:
            raise ValueError(f"both_share must be in (0, 0.5), but it is {self.both_share}")
        if not self.flair_ratio > 0:
            raise ValueError(f"flair_ratio must be > 0, but it is {self.flair_ratio}")


@dataclass(frozen=True)
class LesionReport:
    """One lesion (26-connected component) of the mask.

    Attributes:
        label: 1-based, largest first (as in the lesion table).
        volume_ml, core_ml: its volume and the part with ADC below the core threshold, mL.
        centroid_mm: centre of mass, world (scanner) mm; centroid_mni: the same in MNI152 mm.
        hemisphere: "left", "right" or "both" (patient's frame); left_ml, right_ml: its volume on each side.
        territory: the vascular territory holding most of it ("ACA", "MCA", "PCA", "VB"), None outside the atlas.
        territories_ml: mL per territory, plus "ventricle" and "outside atlas".
        regions: (lobe or deep structure with side, mL) of the level-1 territories, largest first.
        flair_ratio: mean FLAIR over its mirror's, None without FLAIR (or too little mirror inside the brain).
    """

    label: int
    volume_ml: float
    core_ml: float
    centroid_mm: tuple[float, float, float]
    centroid_mni: tuple[float, float, float]
    hemisphere: str
    left_ml: float
    right_ml: float
    territory: str | None
    territories_ml: dict[str, float]
    regions: tuple[tuple[str, float], ...]
    flair_ratio: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "volume_ml": round(self.volume_ml, 4),
            "core_ml": round(self.core_ml, 4),
            "centroid_mm": [round(v, 2) for v in self.centroid_mm],
            "centroid_mni": [round(v, 1) for v in self.centroid_mni],
            "hemisphere": self.hemisphere,
            "left_ml": round(self.left_ml, 4),
            "right_ml": round(self.right_ml, 4),
            "territory": self.territory,
            "territories_ml": {k: round(v, 4) for k, v in self.territories_ml.items()},
            "regions": [{"region": name, "ml": round(ml, 4)} for name, ml in self.regions],
            "flair_ratio": None if self.flair_ratio is None else round(self.flair_ratio, 3),
        }


@dataclass(frozen=True)
class ClinicalReport:
    """The clinical description of one lesion mask (what ``python -m stroke_seg report`` writes).

    Attributes:
        lesion_volume_ml: all lesion voxels, mL. core_ml: those with ADC below ``settings["core_adc"]``, mL.
        brain_volume_ml: the brain mask, mL. lesion_count: 26-connected components.
        lesions: one :class:`LesionReport` per lesion, largest first.
        territories_ml: mL of all lesions per territory (ACA, MCA, PCA, VB, ventricle, outside atlas).
        flair_ratio: all lesions' mean FLAIR over their mirror's (None without FLAIR).
        mismatch: True when a DWI-FLAIR mismatch is estimated, False when not, None without FLAIR or lesion.
        mismatch_statement: that estimate in words, labelled as a research estimate.
        registration: how the case was placed in MNI space and how well (``MniRegistration.summary``).
        settings: the :class:`ReportConfig` values. model, model_version: what made the mask (None: given by hand).
        warnings: what a reader must know (poor registration, ADC 0 in the lesion, ...).
        version: stroke-seg's version. atlas: the atlas citation. seconds: time to describe.
    """

    lesion_volume_ml: float
    core_ml: float
    brain_volume_ml: float
    lesion_count: int
    lesions: tuple[LesionReport, ...]
    territories_ml: dict[str, float]
    flair_ratio: float | None
    mismatch: bool | None
    mismatch_statement: str
    registration: dict[str, Any]
    settings: dict[str, Any]
    model: str | None = None
    model_version: str | None = None
    warnings: tuple[str, ...] = ()
    adc_unit: str = "1e-6 mm2/s"
    version: str = __version__
    atlas: str = CITATION
    disclaimer: str = DISCLAIMER
    seconds: float = 0.0
    sources: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, every number rounded; the same dict in ``report --json``, ``segment --json`` and the app."""
        out = dataclasses.asdict(self)
        out.update(
            lesion_volume_ml=round(self.lesion_volume_ml, 4),
            core_ml=round(self.core_ml, 4),
            brain_volume_ml=round(self.brain_volume_ml, 1),
            lesions=[les.to_dict() for les in self.lesions],
            territories_ml={k: round(v, 4) for k, v in self.territories_ml.items()},
            flair_ratio=None if self.flair_ratio is None else round(self.flair_ratio, 3),
            warnings=list(self.warnings),
            seconds=round(self.seconds, 3),
        )
        return out


def _case_and_mask(case_or_inputs, mask) -> tuple[Case, np.ndarray]:
    """A validated case and a bool mask on its DWI grid."""
    if not isinstance(case_or_inputs, Case):
        if not isinstance(case_or_inputs, Mapping):
            raise TypeError(f"case: expected a Case or a mapping of images, but got {type(case_or_inputs).__name__}")
        files = dict(case_or_inputs)
        if mask is None or isinstance(mask, np.ndarray):
            raise TypeError("mask: with image files as the case, give the mask as a file or image too")
        case = load_case(files["dwi"], files.get("adc"), files.get("flair"), mask, b0=files.get("b0"))
        return dataclasses.replace(case, ground_truth=None), case.ground_truth
    case = case_or_inputs
    if isinstance(mask, np.ndarray):
        data = mask
    else:
        image = read_image(mask, "mask")
        data = image.data
        if data.shape == case.shape and not np.allclose(image.geometry.affine, case.affine, atol=1e-3):
            raise IncompatibleImagesError(f"mask {image.name}: expected the DWI's grid, but its affine differs")
    if data.shape != case.shape:
        raise IncompatibleImagesError(f"mask: expected the DWI's shape {case.shape}, but it is {data.shape}")
    values = np.unique(data)
    if not np.all(np.isin(values, (0, 1))):
        raise InvalidImageError(f"mask: expected a binary mask (0 and 1), but it holds {values.size} values")
    return case, data > 0


def _components(mask: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """(labels, voxel indices (N, 3) of each lesion), lesions numbered largest first (stable), as the lesion table."""
    labels, n = ndi.label(mask, structure=CONNECTIVITY_26)
    if n == 0:
        return labels, []
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    order = np.argsort(-sizes, kind="stable")
    objects = ndi.find_objects(labels)
    out = []
    for i in order:
        box = objects[i]
        local = np.argwhere(labels[box] == i + 1)
        out.append(local + np.array([s.start for s in box]))
    return labels, out


def _world(ijk: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return ijk @ affine[:3, :3].T + affine[:3, 3]


_REACH_STEPS: dict[float, np.ndarray] = {}
_STEPS_AT_ONCE = 16


def _offsets(reach_mm: float) -> np.ndarray:
    """Integer 1 mm offsets within ``reach_mm``, nearest first."""
    if reach_mm not in _REACH_STEPS:
        r = int(np.floor(reach_mm))
        grid = np.stack(np.meshgrid(*(np.arange(-r, r + 1),) * 3, indexing="ij"), -1).reshape(-1, 3)
        dist = np.linalg.norm(grid, axis=1)
        keep = (dist <= reach_mm) & (dist > 0)
        _REACH_STEPS[reach_mm] = grid[keep][np.argsort(dist[keep], kind="stable")].astype(np.float64)
    return _REACH_STEPS[reach_mm]


def atlas_labels(mni: np.ndarray, reach_mm: float) -> np.ndarray:
    """Level-1 label at each (N, 3) MNI point; outside the atlas, the nearest label within ``reach_mm`` (0: none)."""
    atlas = load_atlas()
    labels = atlas.labels_at(mni)
    missing = np.nonzero(labels == 0)[0]
    steps = _offsets(reach_mm)
    # the steps nearest first, a run of them at a time for all points still unlabelled: each takes its first
    # labelled step, and the points found drop out before the next run
    for lo in range(0, len(steps), _STEPS_AT_ONCE):
        if missing.size == 0:
            break
        run, still = steps[lo : lo + _STEPS_AT_ONCE], []
        for points in np.array_split(missing, -(-missing.size // 65536)):  # bounded temporaries
            found = atlas.labels_at((mni[points][:, None, :] + run[None, :, :]).reshape(-1, 3))
            hit = found.reshape(points.size, -1) > 0
            got = hit.any(axis=1)
            labels[points[got]] = found.reshape(points.size, -1)[got, np.argmax(hit[got], axis=1)]
            still.append(points[~got])
        missing = np.concatenate(still)
    return labels


def _territories(labels: np.ndarray, voxel_ml: float) -> tuple[dict[str, float], tuple[tuple[str, float], ...]]:
    table = territory_table()
    per_label = np.bincount(labels, minlength=33)
    ml = dict.fromkeys((*TERRITORIES, "ventricle", "outside atlas"), 0.0)
    regions: dict[str, float] = {}
    for label, count in enumerate(per_label):
        if count == 0:
            continue
        if label == 0:
            ml["outside atlas"] += count * voxel_ml
            continue
        t = table[label]
        ml[t.territory] += count * voxel_ml
        name = f"{t.region}, {t.side}"
        regions[name] = regions.get(name, 0.0) + count * voxel_ml
    return ml, tuple(sorted(regions.items(), key=lambda kv: -kv[1]))


def _side(mni_x: np.ndarray, voxel_ml: float, config: ReportConfig) -> tuple[str, float, float]:
    left = float((mni_x < -config.midline_mm).sum()) * voxel_ml
    right = float((mni_x > config.midline_mm).sum()) * voxel_ml
    lateral = left + right
    if lateral == 0 or min(left, right) >= config.both_share * lateral:
        return "both", left, right
    return ("left" if left > right else "right"), left, right


def _mirror_values(
    ijk: np.ndarray, reg: MniRegistration, affine: np.ndarray, image: np.ndarray, keep: np.ndarray
) -> np.ndarray:
    """``image`` at the mirror (across MNI x = 0) of each voxel; NaN where the mirror is off the grid or not
    ``keep``."""
    mni = reg.to_mni(_world(ijk, affine)) * np.array([-1.0, 1.0, 1.0])
    mirror = np.rint((reg.to_world(mni) - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T).astype(np.int64)
    inside = np.all((mirror >= 0) & (mirror < np.array(image.shape)), axis=1)
    out = np.full(len(ijk), np.nan, np.float64)
    i, j, k = mirror[inside].T
    vals = np.where(keep[i, j, k], image[i, j, k], np.nan)
    out[inside] = vals
    return out


def _flair_ratio(lesion_vals: np.ndarray, mirror_vals: np.ndarray) -> float | None:
    valid = np.isfinite(mirror_vals)
    if valid.sum() < max(3, 0.5 * len(mirror_vals)):
        return None
    normal = float(np.mean(mirror_vals[valid]))
    return None if normal <= 0 else float(np.mean(lesion_vals[valid])) / normal


def _mismatch(ratio: float | None, has_flair: bool, n_lesions: int, config: ReportConfig) -> tuple[bool | None, str]:
    if not has_flair:
        return None, "No FLAIR given: DWI-FLAIR mismatch not assessed."
    if n_lesions == 0:
        return None, "No lesion: DWI-FLAIR mismatch not assessed."
    if ratio is None:
        return None, "FLAIR given, but too little of the lesions' mirror image lies in the brain: not assessed."
    if ratio < config.flair_ratio:
        return True, (
            f"DWI-FLAIR mismatch: the lesions are not clearly brighter on FLAIR than the mirrored normal side "
            f"(signal ratio {ratio:.2f} < {config.flair_ratio:.2f}), as in strokes usually less than about 4.5 h old "
            f"({_MISMATCH_NOTE})."
        )
    return False, (
        f"No DWI-FLAIR mismatch: the lesions are brighter on FLAIR than the mirrored normal side (signal ratio "
        f"{ratio:.2f} >= {config.flair_ratio:.2f}), as in strokes usually more than about 4.5 h old ({_MISMATCH_NOTE})."
    )


def register_case(case: Case, brain: np.ndarray, config: ReportConfig) -> MniRegistration:
    """The case's world -> MNI map that :func:`describe` reads territories through (``brain``: bool, DWI grid); the
    identity, with a warning, when the brain is too small to place. It needs no lesion mask, so a caller may find it
    while the mask is still being made and hand it to :func:`describe`."""
    t0 = time.perf_counter()
    try:
        if config.register:
            return register_to_mni(case.dwi, brain, case.affine)
        world_to_mni = moments_registration(brain, case.affine)
        return MniRegistration(world_to_mni, None, "brain-mask moments (registration off)", time.perf_counter() - t0)
    except ValueError as err:  # a brain mask of under 1000 voxels
        warning = f"the case could not be placed in MNI space ({err}): side and territory read the scanner coordinates"
        return MniRegistration(np.eye(4), None, "none (scanner coordinates)", time.perf_counter() - t0, warning)


def _lesion(
    label: int,
    ijk: np.ndarray,
    placed: tuple[np.ndarray, np.ndarray, np.ndarray],
    case: Case,
    reg: MniRegistration,
    config: ReportConfig,
    flair_keep: np.ndarray | None,
) -> LesionReport:
    """One lesion's report; ``placed``: its voxels' world and MNI coordinates and atlas labels."""
    vml = voxel_volume_ml(case.affine)
    i, j, k = ijk.T
    world, mni, labels = placed
    side, left, right = _side(mni[:, 0], vml, config)
    ml, regions = _territories(labels, vml)
    main = max(TERRITORIES, key=lambda t: ml[t])
    ratio = None
    if case.flair is not None and flair_keep is not None:
        ratio = _flair_ratio(case.flair[i, j, k], _mirror_values(ijk, reg, case.affine, case.flair, flair_keep))
    report = LesionReport(
        label=label,
        volume_ml=len(ijk) * vml,
        core_ml=float((case.adc[i, j, k] < config.core_adc).sum()) * vml,
        centroid_mm=tuple(float(v) for v in world.mean(axis=0)),  # type: ignore[arg-type]
        centroid_mni=tuple(float(v) for v in mni.mean(axis=0)),  # type: ignore[arg-type]
        hemisphere=side,
        left_ml=left,
        right_ml=right,
        territory=main if ml[main] > 0 else None,
        territories_ml=ml,
        regions=regions,
        flair_ratio=ratio,
    )
    return report


def describe(
    case_or_inputs: Case | Mapping[str, Any],
    mask: np.ndarray | nib.Nifti1Image | str | os.PathLike,
    *,
    config: ReportConfig | None = None,
    brain: np.ndarray | None = None,
    model: str | None = None,
    model_version: str | None = None,
    warnings: tuple[str, ...] = (),
    registration: MniRegistration | None = None,
) -> ClinicalReport:
    """Describe a binary lesion mask on a case's DWI grid (see the module docstring for the rules).

    Args:
        case_or_inputs: a :class:`Case`, or a mapping ``{"dwi": ..., "adc": ... (or "b0"), "flair": ...}`` of paths
            or images.
        mask: bool / 0-1 array (X, Y, Z) on the DWI grid, or a NIfTI image or path of it (same grid).
        config: the report's settings; default :class:`ReportConfig`.
        brain: the brain mask (bool, DWI grid) when known; else computed
            (:func:`stroke_seg.pipeline.preprocess.brain_mask`).
        model, model_version: what made the mask, for the report (None: a mask from elsewhere).
        warnings: the segmentation's own warnings, carried into the report.
        registration: the case's :func:`register_case` with this ``brain`` and ``config``, when already found; None
            registers here.

    Raises:
        InvalidImageError: an input image or the mask is unusable (the mask not binary).
        IncompatibleImagesError: the mask is not on the DWI grid.
    """
    t0 = time.perf_counter()
    config = config or ReportConfig()
    case, lesion = _case_and_mask(case_or_inputs, mask)
    if brain is None:
        brain = brain_mask(case.dwi, case.adc, case.voxel_size)
    vml = voxel_volume_ml(case.affine)
    reg = registration or register_case(case, brain, config)
    notes = list(warnings) + ([reg.warning] if reg.warning else [])
    _, voxels = _components(lesion)
    flair_keep = (brain & ~lesion & (case.flair > 0)) if case.flair is not None else None
    # every lesion voxel placed at once (a speckled mask may hold thousands of lesions), then split per lesion
    ijk_all = np.concatenate(voxels) if voxels else np.zeros((0, 3), np.int64)
    world_all = _world(ijk_all, case.affine)
    mni_all = reg.to_mni(world_all)
    labels_all = atlas_labels(mni_all, config.atlas_reach_mm)
    bounds = np.cumsum([0] + [len(v) for v in voxels])
    rows = [
        _lesion(n, ijk, tuple(a[lo:hi] for a in (world_all, mni_all, labels_all)), case, reg, config, flair_keep)
        for n, (ijk, lo, hi) in enumerate(zip(voxels, bounds[:-1], bounds[1:]), start=1)
    ]
    totals, _ = _territories(labels_all.astype(np.int64), vml)
    zero_adc = int((lesion & (case.adc <= 0)).sum())
    if zero_adc:
        notes.append(f"{zero_adc} lesion voxels have ADC 0 (no measurement, or b0 <= b1000): counted as core")
    ratio = None
    if case.flair is not None and voxels:
        ijk = np.concatenate(voxels)
        i, j, k = ijk.T
        ratio = _flair_ratio(case.flair[i, j, k], _mirror_values(ijk, reg, case.affine, case.flair, flair_keep))
    mismatch, statement = _mismatch(ratio, case.flair is not None, len(rows), config)
    return ClinicalReport(
        lesion_volume_ml=float(lesion.sum()) * vml,
        core_ml=float((lesion & (case.adc < config.core_adc)).sum()) * vml,
        brain_volume_ml=float(brain.sum()) * vml,
        lesion_count=len(rows),
        lesions=tuple(rows),
        territories_ml=totals,
        flair_ratio=ratio,
        mismatch=mismatch,
        mismatch_statement=statement,
        registration=reg.summary(),
        settings=dataclasses.asdict(config),
        model=model,
        model_version=model_version,
        warnings=tuple(notes),
        adc_unit=case.adc_unit,
        seconds=time.perf_counter() - t0,
        sources=dict(case.sources),
    )
