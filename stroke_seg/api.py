"""``segment()``: the one call the app, the CLI and the tests use.

load/validate -> preprocess (canonical orientation, brain mask, normalisation) -> model ->
postprocess (threshold; small, unrestricted and skull-base artefact components; lesion edges at their DWI level) ->
metrics, with progress and cancel at every stage.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stroke_seg.errors import Cancelled, InvalidImageError, check_cancel
from stroke_seg.io.case import ImageLike, load_case, make_image
from stroke_seg.models import default_model, get_model
from stroke_seg.models.base import CaseBackend, CaseOutput, PartialOutput
from stroke_seg.models.engines import record_engines
from stroke_seg.models.hdbet import BrainExtraction, extract_brain
from stroke_seg.pipeline import metrics as metrics_mod
from stroke_seg.pipeline.anatomy import MniMap
from stroke_seg.pipeline.postprocess import (
    LesionRules,
    apply_physics_guard,
    describe_violations,
    enforce_lesion_rules,
    grow_to_dwi_edges,
    lesion_rule_violations,
    lesion_rules,
    threshold_and_filter,
)
from stroke_seg.pipeline.preprocess import Preprocessed, from_canonical, preprocess, to_canonical, voxel_sizes
from stroke_seg.pipeline.qc import quality_warnings
from stroke_seg.pipeline.restriction import mirror_statement, remove_symmetric_unrestricted
from stroke_seg.report import ClinicalReport, ReportConfig, describe, register_case
from stroke_seg.report.registration import MniRegistration
from stroke_seg.types import (
    CancelCheck,
    Case,
    LesionMetrics,
    ProgressCallback,
    Provisional,
    ProvisionalCallback,
    Result,
    SegmentConfig,
    scaled_progress,
)

__all__ = ["segment", "CaseInput", "find_case_files"]

log = logging.getLogger(__name__)

CaseInput = Case | Mapping[str, ImageLike | float | None] | str | os.PathLike
"""A :class:`Case`; a mapping with keys dwi and adc and/or b0 (+ flair, ground_truth, b_value in s/mm²); or a case
folder."""

CASE_KEYS = ("dwi", "adc", "b0", "flair", "ground_truth", "b_value")

# Share of the progress bar each stage gets: (start, end).
_STAGES = {
    "load": (0.0, 0.08),
    "preprocess": (0.08, 0.30),  # brain extraction: a network on a raw head (HD-BET, one or five folds)
    "inference": (0.30, 0.92),
    "postprocess": (0.92, 0.96),
    "metrics": (0.96, 0.98),
    "report": (0.98, 1.0),
}


class _Progress:
    """Maps per-stage fractions onto the overall bar; never goes backwards."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self.callback = callback
        self.last = 0.0

    def stage(self, name: str) -> ProgressCallback:
        return scaled_progress(self._forward, *_STAGES[name], prefix=f"{name}: ")

    def _forward(self, overall: float, description: str) -> None:
        self.last = max(self.last, overall)
        if self.callback is not None:
            self.callback(self.last, description)


def find_case_files(folder: str | os.PathLike) -> dict[str, Path | None]:
    """The dwi/adc/flair/ground-truth files of a case folder (``dwi.nii.gz``, ``adc.nii.gz``, ...)."""
    folder = Path(folder)

    def pick(*names: str) -> Path | None:
        for n in names:
            for ext in (".nii.gz", ".nii"):
                if (folder / f"{n}{ext}").is_file():
                    return folder / f"{n}{ext}"
        return None

    return {
        "dwi": pick("dwi"),
        "adc": pick("adc"),
        "b0": pick("b0"),
        "flair": pick("flair"),
        "ground_truth": pick("mask", "ground_truth", "msk"),
    }


def _as_case(case: CaseInput, config: SegmentConfig) -> Case:
    if isinstance(case, Case):
        return case
    if isinstance(case, Mapping):
        files = dict(case)
    else:
        files = find_case_files(case)
        if files["dwi"] is None or (files["adc"] is None and files["b0"] is None):
            raise InvalidImageError(
                f"case folder {Path(case).name}: expected dwi.nii.gz and adc.nii.gz (or b0.nii.gz) in it, but found "
                f"{sorted(p.name for p in Path(case).glob('*'))[:8]}"
            )
    unknown = set(files) - set(CASE_KEYS)
    if unknown:
        raise TypeError(f"case keys must be among {', '.join(CASE_KEYS)}, but got {sorted(unknown)}")
    if files.get("dwi") is None:
        raise InvalidImageError("case: expected a DWI image, but none was given")
    return load_case(
        files["dwi"],
        files.get("adc"),
        files.get("flair"),
        files.get("ground_truth"),
        b0=files.get("b0"),
        b_value=float(files.get("b_value") or 1000.0),
        max_voxels=config.max_voxels,
    )


def _mni_map(volumes, config: SegmentConfig) -> MniMap | None:
    """The case's world-to-MNI map for the susceptibility-zone rule; None when the rule is off or the brain too
    small."""
    if config.artefact_zone_adc is None:
        return None
    try:
        return MniMap.from_brain(volumes.brain, volumes.affine)
    except ValueError as err:
        log.warning("susceptibility-zone rule skipped: %s", err)
        return None


def _postprocess(
    prob_c: np.ndarray, loaded: Case, volumes, config: SegmentConfig, rules: LesionRules, report: ProgressCallback
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """This project's post-processing of a canonical probability map: (probability, mask, brain, voxel mL), all on
    the input grid."""
    report(0.0, "threshold; small, unrestricted and skull-base artefact component removal")
    prob = from_canonical(np.clip(prob_c, 0, 1).astype(np.float32, copy=False), volumes.ornt)
    voxel_ml = metrics_mod.voxel_volume_ml(loaded.affine)
    adc = from_canonical(volumes.adc, volumes.ornt)  # 0 outside the diffusion support, whatever the ADC's source
    mask = threshold_and_filter(
        prob,
        config.threshold,
        config.min_lesion_ml,
        voxel_ml,
        adc,
        config.max_lesion_adc,
        max_p25_adc=rules.radc_limit,  # relative to this brain's normal-appearing tissue
        zone_max_adc=config.artefact_zone_adc,
        affine=loaded.affine,
        mni=_mni_map(volumes, config),
    )
    brain = from_canonical(volumes.brain, volumes.ornt)
    mask = remove_symmetric_unrestricted(
        mask, loaded.dwi, adc, brain, loaded.affine, normal_adc=volumes.normal_adc, min_ratio=config.mirror_dwi_min
    )
    if config.edge_level is not None:
        report(0.5, "lesion edges at their DWI level")
        mask = grow_to_dwi_edges(
            mask, loaded.dwi, adc, voxel_sizes(loaded.affine), level=config.edge_level, brain=brain
        )
    report(0.9, "physics guard: no lesion without a diffusion measurement or outside the brain")
    mask = apply_physics_guard(mask, adc, brain, voxel_sizes(loaded.affine))
    report(0.95, "lesion rules: size, median ADC and DWI brightness of every lesion")
    mask, _ = enforce_lesion_rules(mask, loaded.dwi, loaded.adc, voxel_ml, rules)
    report(1.0, "mask ready")
    return prob, mask, brain, voxel_ml


def _brain(loaded: Case, backend, config: SegmentConfig, report, cancel) -> tuple[BrainExtraction | None, dict]:
    """The canonical brain mask from the configured extractor (None: :func:`preprocess` makes it by morphology, as
    for DeepISLES and nnU-Net folders, which run their own pipeline), and how it was made."""
    if config.brain_extractor == "morphology" or isinstance(backend, CaseBackend):
        own = config.brain_extractor == "morphology"
        return None, {"method": "morphology" if own else "morphology (the model runs its own pipeline)"}
    dwi_c, affine_c, _ = to_canonical(loaded.dwi, loaded.affine)
    extracted = extract_brain(dwi_c, voxel_sizes(affine_c), config=config, progress=report, should_cancel=cancel)
    reason = extracted.details.get("implausible")
    if reason is None:
        return extracted, extracted.details
    # a misplaced brain would delete lesions: the morphological mask instead, said in the result's warnings
    return None, {"method": "morphology (HD-BET's mask was not plausible)", "hd_bet": extracted.details}


def _brain_warnings(details: dict) -> tuple[str, ...]:
    """The result's warning when the extractor's mask was set aside (see :func:`_brain`)."""
    reason = details.get("hd_bet", {}).get("implausible")
    if reason is None:
        return ()
    return (
        f"Brain extraction: HD-BET's brain mask is not plausible ({reason}), so the morphological brain mask was "
        "used instead; check the brain mask overlay before trusting the lesions.",
    )


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


class _Clock:
    """Seconds per stage of one :func:`segment` call, and the total."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._start = self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = now - self._last
        self._last = now

    def total(self) -> dict[str, float]:
        self.timings["total"] = self._last - self._start
        return self.timings


@dataclass(frozen=True)
class _Inferred:
    """What the inference and post-processing stages hand to the metrics: arrays on the input DWI grid."""

    probability: np.ndarray
    mask: np.ndarray
    brain: np.ndarray
    voxel_ml: float
    notes: tuple[str, ...]
    details: dict
    broken: str | None


def _run_case_backend(
    backend: CaseBackend, loaded: Case, volumes: Preprocessed, config: SegmentConfig, stage, cancel,
    on_provisional: ProvisionalCallback | None,
) -> CaseOutput:  # fmt: skip
    """The case backend's output; its partial answers go to ``on_provisional`` as :class:`Provisional` answers, and
    a :class:`Cancelled` raised meanwhile carries the last one (``provisional``)."""
    last: list[Provisional] = []
    extra = {}
    if on_provisional is not None and backend.partial_results:
        voxel_ml = metrics_mod.voxel_volume_ml(loaded.affine)

        def on_partial(part: PartialOutput) -> None:
            prob = np.clip(part.probability, 0, 1).astype(np.float32, copy=False)
            last[:] = [
                Provisional(
                    mask=make_image(part.mask.astype(np.uint8), loaded, np.uint8),
                    probability=make_image(prob, loaded, np.float32),
                    volume_ml=float(np.count_nonzero(part.mask)) * voxel_ml,
                    done=part.done,
                    total=part.total,
                    unit=part.unit,
                    remaining_s=part.remaining_s,
                    model=backend.name,
                )
            ]
            on_provisional(last[0])

        extra["on_partial"] = on_partial
    try:
        output = backend.predict_case(loaded, volumes, config=config, progress=stage, should_cancel=cancel, **extra)
        check_cancel(cancel, "inference")
    except Cancelled as err:
        err.provisional = last[0] if last else None
        raise
    return output


class _Registration:
    """The clinical report's registration to MNI, started on its own thread as soon as the network has finished: it
    needs the image and the brain, not the mask, so it runs beside post-processing and the metrics (single-threaded
    scipy) instead of after them. Not started beside the network, which already keeps every core busy."""

    def __init__(self, loaded: Case, volumes: Preprocessed, config: SegmentConfig) -> None:
        self.loaded, self.volumes, self.config = loaded, volumes, config
        self.future: Future[MniRegistration] | None = None

    def report_config(self) -> ReportConfig:
        return ReportConfig(core_adc=self.config.core_adc)

    def start(self) -> None:
        if not self.config.clinical_report or self.future is not None:
            return
        brain = from_canonical(self.volumes.brain, self.volumes.ornt)  # the brain _postprocess hands the report
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stroke-seg-register")
        self.future = pool.submit(register_case, self.loaded, brain, self.report_config())
        pool.shutdown(wait=False)  # the thread ends with its one task

    def result(self) -> MniRegistration | None:
        return None if self.future is None else self.future.result()


def _infer(
    backend, loaded: Case, volumes: Preprocessed, config: SegmentConfig, bar, cancel, clock: _Clock,
    on_provisional: ProvisionalCallback | None, registration: _Registration,
) -> _Inferred:  # fmt: skip
    """Run the backend, then this project's post-processing (a case backend's own mask is kept, its broken rules
    warned); ``registration`` starts when the network has finished."""
    stage = bar.stage("inference")
    rules = lesion_rules(config, volumes.dwi_median, volumes.normal_adc)
    if isinstance(backend, CaseBackend):
        estimate = backend.estimate_seconds(loaded)
        if estimate is not None:
            stage(0.0, f"{backend.name}: about {_duration(estimate)} expected")
        output = _run_case_backend(backend, loaded, volumes, config, stage, cancel, on_provisional)
        clock.lap("inference")
        registration.start()
        report = bar.stage("postprocess")
        report(0.0, f"{backend.name}'s own mask: this project's post-processing is not applied")
        prob = np.clip(output.probability, 0, 1).astype(np.float32, copy=False)
        mask = output.mask.astype(bool)
        voxel_ml = metrics_mod.voxel_volume_ml(loaded.affine)
        # another project's mask: broken rules are warned, not fixed
        broken = describe_violations(lesion_rule_violations(mask, loaded.dwi, loaded.adc, voxel_ml, rules), rules)
        brain = from_canonical(volumes.brain, volumes.ornt)
        return _Inferred(prob, mask, brain, voxel_ml, tuple(output.notes), output.details, broken)
    with record_engines() as engines_ran:  # what actually ran the network, after any fallback
        prob_c = backend.predict(volumes, config=config, progress=stage, should_cancel=cancel)
    check_cancel(cancel, "inference")
    clock.lap("inference")
    registration.start()
    prob, mask, brain, voxel_ml = _postprocess(prob_c, loaded, volumes, config, rules, bar.stage("postprocess"))
    details = {"engine": "+".join(sorted(engines_ran))} if engines_ran else {}
    notes = (rules.statement() + mirror_statement(config) + ".",)  # the rules, with this case's figures
    return _Inferred(prob, mask, brain, voxel_ml, notes, details, None)


def _measure(loaded: Case, volumes: Preprocessed, out: _Inferred, report) -> tuple[LesionMetrics, tuple[str, ...]]:
    """Lesion metrics and the plausibility warnings of one result."""
    report(0.0, "lesion volume and count")
    lesion_metrics = metrics_mod.measure(out.mask, loaded.affine, loaded.adc, loaded.ground_truth)
    report(0.5, "plausibility checks")
    warnings = quality_warnings(
        loaded,
        out.mask,
        out.brain,
        volume_ml=lesion_metrics.volume_ml,
        count=lesion_metrics.count,
        outside_ml=volumes.outside_ml,
    ) + ((out.broken,) if out.broken else ())
    for w in warnings:
        log.info("QC warning: %s", w)
    report(1.0, "done")
    return lesion_metrics, warnings


def _clinical(
    loaded: Case, out: _Inferred, backend, registration: _Registration, warnings: tuple[str, ...], report
) -> ClinicalReport | None:
    """The clinical report of the mask (core, side, territory, DWI-FLAIR mismatch), None when turned off."""
    if not registration.config.clinical_report:
        return None
    report(0.0, "clinical report: core, side, vascular territory")
    clinical = describe(
        loaded,
        out.mask,
        config=registration.report_config(),
        brain=out.brain,
        model=backend.name,
        model_version=backend.version,
        warnings=warnings,
        registration=registration.result(),
    )
    report(1.0, "clinical report ready")
    return clinical


def segment(
    case: CaseInput,
    *,
    model: str | None = None,
    config: SegmentConfig | None = None,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
    on_provisional: ProvisionalCallback | None = None,
) -> Result:
    """Segment the acute ischemic lesion of one case.

    Args:
        case: a :class:`Case`, a mapping ``{"dwi": ..., "adc": ..., "flair": ..., "ground_truth": ...}``
            of paths or nibabel images, or a folder holding ``dwi.nii.gz`` and ``adc.nii.gz``.
        model: backend name (see ``stroke_seg.models.model_names()``); None: ``stroke_seg.models.default_model()``
            (``unet`` when its weights are installed), the default of every front end.
        config: options; defaults to ``SegmentConfig()``.
        progress: ``progress(fraction, description)``, called at every stage and during inference;
            fractions rise monotonically to 1.0. ``gr.Progress`` fits.
        should_cancel: polled between steps; when it returns True, :class:`Cancelled` is raised.
        on_provisional: for a model that averages several networks (``Backend.partial_results``: DeepISLES), called
            after each network with a :class:`Provisional` answer (the average so far), on the inference thread.

    Returns:
        A :class:`Result` whose mask and probability map are on the exact grid of the input DWI.

    Raises:
        InvalidImageError, IncompatibleImagesError: bad input (message names the file).
        ModelError: unknown model or unusable weights.
        Cancelled: ``should_cancel()`` returned True; its ``provisional`` is the last :class:`Provisional` answer
            given to ``on_provisional`` (None when none was).
    """
    config = config or SegmentConfig()
    bar = _Progress(progress)
    cancel = should_cancel or (lambda: False)
    clock = _Clock()

    report = bar.stage("load")
    report(0.0, "reading and validating images")
    loaded = _as_case(case, config)
    report(1.0, "images valid")
    check_cancel(cancel, "loading")
    clock.lap("load")

    report = bar.stage("preprocess")
    report(0.0, "canonical orientation, brain mask")
    backend = get_model(model or default_model())
    extracted, brain_details = _brain(loaded, backend, config, scaled_progress(report, 0.0, 0.95), cancel)
    volumes = preprocess(
        loaded,
        brain=extracted.brain if extracted else None,
        network_brain=extracted.network_brain if extracted else None,
    )
    report(1.0, f"brain mask {int(volumes.brain.sum())} voxels")
    check_cancel(cancel, "preprocessing")
    clock.lap("preprocess")

    registration = _Registration(loaded, volumes, config)
    out = _infer(backend, loaded, volumes, config, bar, cancel, clock, on_provisional, registration)
    prob, mask, brain, voxel_ml = out.probability, out.mask, out.brain, out.voxel_ml
    clock.lap("postprocess")

    lesion_metrics, warnings = _measure(loaded, volumes, out, bar.stage("metrics"))
    warnings = _brain_warnings(brain_details) + warnings
    clock.lap("metrics")
    clinical = _clinical(loaded, out, backend, registration, warnings, bar.stage("report"))
    if clinical is not None:
        clock.lap("report")
        warnings += tuple(w for w in clinical.warnings if w not in warnings)
    timings = clock.total()
    log.info(
        "segment: model=%s volume=%.2f mL count=%d total=%.2fs (%s)",
        backend.name,
        lesion_metrics.volume_ml,
        lesion_metrics.count,
        timings["total"],
        " ".join(f"{stage}={s:.2f}s" for stage, s in timings.items() if stage != "total"),
    )
    return Result(
        mask=make_image(mask.astype(np.uint8), loaded, np.uint8),
        probability=make_image(prob, loaded, np.float32),
        metrics=lesion_metrics,
        timings=timings,
        model=backend.name,
        model_version=backend.version,
        config=config,
        case=loaded,
        warnings=warnings,
        brain_ml=float(brain.sum()) * voxel_ml,
        brain_mask=make_image(brain.astype(np.uint8), loaded, np.uint8),
        notes=tuple(out.notes),
        model_details={**out.details, "brain_extraction": brain_details},
        report=clinical,
    )
