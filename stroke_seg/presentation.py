"""What a person reads about a case and a result: Markdown lines and table rows, from :class:`Case` and the report.

UI-toolkit free: the web app puts these into its widgets; any other front end can do the same.
"""

from __future__ import annotations

from typing import Any

from stroke_seg.models import model_infos, unavailable_models
from stroke_seg.types import Case

__all__ = [
    "START",
    "CANCELLED",
    "example_markdown",
    "upload_markdown",
    "RESEARCH_NOTICE",
    "case_markdown",
    "result_rows",
    "warnings_markdown",
    "model_markdown",
    "done_markdown",
    "provisional_markdown",
]

RESEARCH_NOTICE = (
    "**Research use only — not for diagnosis or treatment decisions.** The `unet` model was trained only on "
    "synthetic cases generated from the MNI152 template (never on patient scans). On real scans it never saw it finds "
    "large infarcts well but misses most small, faint lesions (Dice 0.48 against an expert mask; a strong published "
    "model: 0.79). `adc-threshold` is a fixed rule (ADC < 620×10⁻⁶ mm²/s and DWI > 1.3× brain median, plus the "
    "DWI-bright rim next to that core). Implausible results get a warning. See the model card for the figures."
)


START = "Upload your DWI and ADC (NIfTI), or click a bundled example below to load a whole case; then press **Run**."
CANCELLED = (
    "Cancelled. The server stopped the job at its next step; you can run again. A provisional result shown above "
    "stays as it was: labelled provisional, it is not the model's final answer."
)


def example_markdown(filled: list[str]) -> str:
    """Status after an example filled the inputs named in ``filled``."""
    names = {"dwi": "DWI", "adc": "ADC", "flair": "FLAIR", "ground_truth": "ground truth"}
    return f"Example case loaded ({', '.join(names[n] for n in filled if n in names)}): press **Run**."


def upload_markdown(cleared: list[str]) -> str:
    """Status after an upload; says so when it cleared part of an example case."""
    note = "Your file replaced part of the example case; its FLAIR and ground truth were cleared. " if cleared else ""
    return note + START


def case_markdown(case: Case) -> str:
    """One line on the input (shape, voxel size, orientation, ADC unit, optional inputs), then the loading notes."""
    s = case.summary()
    lines = [
        f"**Input** — shape {tuple(s['shape'])}, voxel {' × '.join(f'{v:g}' for v in s['voxel_size_mm'])} mm, "
        f"orientation {s['orientation']}, ADC unit detected: {s['adc_unit_detected']}"
        + (", FLAIR given" if s["has_flair"] else "")
        + (", ground truth given" if s["has_ground_truth"] else "")
    ]
    lines += [f"- {n}" for n in s["notes"]]
    return "\n".join(lines)


LESION_COLUMNS = ["Lesion", "Volume (mL)", "Centroid (world mm)", "Mean ADC (10⁻⁶ mm²/s)"]
"""Column names of the lesion rows of :func:`result_rows`."""

_COMPARISON_ROWS = (
    ("dice", "Dice vs ground truth"),
    ("avd_ml", "Abs. volume difference (mL)"),
    ("lesion_f1", "Lesion-wise F1"),
    ("lesion_count_diff", "Abs. lesion count difference"),
)


def result_rows(report: dict[str, Any]) -> tuple[list[list], list[list]]:
    """The summary table (measure, value) and the lesion table (label, mL, world centroid, mean ADC) of a report."""
    summary = [
        ["Lesion volume (mL)", f"{report['lesion_volume_ml']:.2f}"],
        ["Lesion count", str(report["lesion_count"])],
    ]
    if "core_ml" in report:
        summary.append([f"Ischemic core (mL, ADC < {report['core_adc']:g})", f"{report['core_ml']:.2f}"])
    for key, label in _COMPARISON_ROWS:
        if key in report:
            summary.append([label, f"{report[key]:.3f}" if isinstance(report[key], float) else str(report[key])])
    summary.append(["Model", f"{report['model']} {report['model_version']} ({report['mode']})"])
    summary.append(["Time (s)", f"{report['timings']['total']:.1f}"])
    lesions = [
        [les["label"], round(les["volume_ml"], 3), ", ".join(f"{c:.1f}" for c in les["centroid_mm"])]
        + [les["mean_adc_1e-6_mm2_per_s"]]
        for les in report["lesions"]
    ]
    return summary, lesions


CLINICAL_COLUMNS = [
    "Lesion",
    "Volume (mL)",
    "Core (mL)",
    "Side",
    "Territory (mL)",
    "Lobe / deep structure",
    "FLAIR ratio",
]
"""Column names of :func:`clinical_rows`."""


def clinical_rows(report: dict[str, Any]) -> list[list]:
    """One row per lesion of a result's clinical report (``report["report"]``): volume, core, side, territory, region,
    FLAIR ratio; empty without one."""
    clinical = report.get("report") or {}
    rows = []
    for les in clinical.get("lesions", []):
        territory = les["territory"]
        rows.append(
            [
                les["label"],
                round(les["volume_ml"], 3),
                round(les["core_ml"], 3),
                les["hemisphere"],
                "-" if territory is None else f"{territory} {les['territories_ml'][territory]:.2f}",
                les["regions"][0]["region"] if les["regions"] else "outside the atlas",
                les["flair_ratio"],
            ]
        )
    return rows


def clinical_markdown(report: dict[str, Any]) -> str:
    """The clinical report's totals, DWI-FLAIR statement and registration check, in a few lines; empty without one."""
    clinical = report.get("report")
    if not clinical:
        return ""
    reg = clinical["registration"]
    dice = "" if reg["brain_dice"] is None else f", brain-mask Dice {reg['brain_dice']:.2f}"
    territories = ", ".join(f"{k} {v:.1f}" for k, v in clinical["territories_ml"].items() if v > 0) or "none"
    return "\n".join(
        [
            f"**Ischemic core {clinical['core_ml']:.1f} mL** (ADC < {clinical['settings']['core_adc']:g} × 10⁻⁶ mm²/s)"
            f" of {clinical['lesion_volume_ml']:.1f} mL; territories (mL): {territories}.",
            f"{clinical['mismatch_statement']}",
            f"*Placed in MNI152 space by {reg['method']}{dice}. {clinical['disclaimer']}*",
        ]
    )


def warnings_markdown(report: dict[str, Any]) -> str:
    """The report's plausibility warnings under a heading; empty when there are none."""
    found = report.get("warnings") or []
    return "### ⚠️ Check this result\n" + "\n".join(f"- {w}" for w in found) if found else ""


def done_markdown(report: dict[str, Any], cached: bool) -> str:
    return f"Done in {report['timings']['total']:.1f} s with `{report['model']}` ({report['mode']})." + (
        " Served from the result cache." if cached else ""
    )


def provisional_markdown(provisional: dict[str, Any]) -> str:
    """Status of a provisional answer (:meth:`stroke_seg.types.Provisional.to_dict`)."""
    left = provisional.get("remaining_s")
    pace = f"; about {left / 60:.0f} min left" if left and left >= 120 else f"; about {left:.0f} s left" if left else ""
    return (
        f"**Provisional result ({provisional['label']})**: {provisional['lesion_volume_ml']:.2f} mL with "
        f"`{provisional['model']}` so far{pace}. It refines after each of the {provisional['total']} "
        f"{provisional['unit']}; the final result replaces it. Not the model's final answer."
    )


def unavailable_markdown() -> str:
    """One line per optional model that is not installed here, saying how to add it; empty when none."""
    return "\n".join(f"*`{name}` is not installed here: {how}.*" for name, how in unavailable_models().items())


def model_markdown(name: str) -> str:
    """A model's description and what it was validated on; empty for an unknown name."""
    info = next((i for i in model_infos() if i["name"] == name), None)
    return f"*{info['description']}* Validated on: {info['validated_on']}" if info else ""
