"""What a person reads about a result: the clinical description of any lesion mask and its pictures.

Lives here: ``describe`` (:func:`describe`: core volume by the ADC rule, side, vascular territory and lobe or deep
structure, DWI-FLAIR mismatch, for any mask on a case's DWI grid -> :class:`ClinicalReport`), ``territories`` (the Johns
Hopkins arterial territories atlas shipped in ``atlas/``, with its licence and citation, and its MNI placement),
``registration`` (affine registration of a case to the MNI152 template nilearn ships), ``page`` (the one-page PDF:
:func:`write_pdf`) and ``render`` (PNG montages for the app). May import ``stroke_seg.pipeline``, ``stroke_seg.io``,
``stroke_seg.types`` and ``stroke_seg.errors``; never ``models``, ``api``, ``serving`` or a UI toolkit.

    >>> from stroke_seg.report import describe, write_pdf
    >>> report = describe({"dwi": "dwi.nii.gz", "adc": "adc.nii.gz"}, "mask.nii.gz")
    >>> report.core_ml, [les.territory for les in report.lesions], report.to_dict()
"""

from __future__ import annotations

from stroke_seg.report.describe import (
    DISCLAIMER,
    ClinicalReport,
    LesionReport,
    ReportConfig,
    describe,
    register_case,
)
from stroke_seg.report.page import write_pdf

__all__ = ["describe", "register_case", "write_pdf", "ClinicalReport", "LesionReport", "ReportConfig", "DISCLAIMER"]
