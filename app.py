"""stroke-seg web app: the Gradio UI over the ``stroke_seg`` library (UI only; no logic here).

Run ``python app.py`` (binds 0.0.0.0:7860; GRADIO_SERVER_NAME / GRADIO_SERVER_PORT override).
Every inference event runs on Gradio's queue under one ``concurrency_id``, streams progress
(stage + fraction) over SSE, and can be cancelled. Research use only; not for diagnosis.

Environment:
    STROKE_SEG_MAX_QUEUE (20), STROKE_SEG_CONCURRENCY (1), STROKE_SEG_CACHE_DIR (<tmp>/stroke-seg-cache),
    STROKE_SEG_CACHE_TTL seconds a result is reused for identical inputs (3600; 0: no reuse),
    STROKE_SEG_RESULT_KEEP seconds a result stays downloadable whatever the TTL (900),
    STROKE_SEG_MAX_FILE_SIZE ("200mb"), STROKE_SEG_MCP ("1": also serve /segment as an MCP tool),
    STROKE_SEG_DEFAULT_MODEL ("unet" when its weights load, else "adc-threshold"),
    GRADIO_HEARTBEAT_INTERVAL seconds (set to 1 here unless given: below any gateway idle timeout).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

os.environ.setdefault("GRADIO_HEARTBEAT_INTERVAL", "1")

import gradio as gr  # noqa: E402

import stroke_seg  # noqa: E402
from stroke_seg.batch import discover_cases  # noqa: E402
from stroke_seg.cache import DELIVERY_S, ResultCache, default_cache_dir  # noqa: E402
from stroke_seg.jobs import B0, DICOM, INPUT_NAMES, JobEngine, entry_file  # noqa: E402
from viewer import NIIVUE_JS, NiiVueViewer, viewer_value  # noqa: E402

log = logging.getLogger("stroke_seg.app")

ROOT = Path(__file__).resolve().parent
EXAMPLES = ROOT / "examples"
MAX_QUEUE = int(os.environ.get("STROKE_SEG_MAX_QUEUE", "20"))
CONCURRENCY = int(os.environ.get("STROKE_SEG_CONCURRENCY", "1"))
MAX_FILE_SIZE = os.environ.get("STROKE_SEG_MAX_FILE_SIZE", "200mb")
CACHE = ResultCache(
    default_cache_dir(),
    float(os.environ.get("STROKE_SEG_CACHE_TTL", "3600")),
    float(os.environ.get("STROKE_SEG_RESULT_KEEP", str(DELIVERY_S))),
)
ENGINE = JobEngine(CACHE, CONCURRENCY)

gr.set_static_paths([str(CACHE.root)] + ([str(NIIVUE_JS.parent)] if NIIVUE_JS.is_file() else []))

DISCLAIMER = (
    "**Research use only — not for diagnosis or treatment decisions.** The `unet` model was trained only on "
    "synthetic cases generated from the MNI152 template (never on patient scans). On real scans it never saw it finds "
    "large infarcts well but misses most small, faint lesions (Dice 0.48 against an expert mask; a strong published "
    "model: 0.79). `adc-threshold` is a fixed rule (ADC < 620×10⁻⁶ mm²/s and DWI > 1.3× brain median, plus the "
    "DWI-bright rim next to that core). Implausible results get a warning. See the model card for the figures."
)


def _model_choices() -> list[tuple[str, str]]:
    return [(f"{i['name']} — {i['description']}", i["name"]) for i in stroke_seg.model_infos()]


def _default_model() -> str:
    wanted = os.environ.get("STROKE_SEG_DEFAULT_MODEL")
    names = stroke_seg.model_names()
    if wanted in names:
        return wanted
    return "unet" if "unet" in names and _weights_present() else "adc-threshold"


def _weights_present() -> bool:
    from stroke_seg.models.unet import WEIGHTS_PATH

    return WEIGHTS_PATH.is_file()


async def _guard(steps: AsyncIterator):
    """Map library errors to gr.Error once; unexpected errors are logged with traceback, shown short."""
    try:
        async for item in steps:
            yield item
    except stroke_seg.StrokeSegError as err:
        raise gr.Error(str(err), print_exception=False) from err
    except gr.Error:
        raise
    except Exception as err:
        log.exception("unexpected error in a segmentation job")
        raise gr.Error(
            f"Unexpected server error ({type(err).__name__}); it was logged. Please retry or report it.",
            print_exception=False,
        ) from err
    finally:
        await steps.aclose()


# ------------------------------------------------------------------------------------------
# Handlers (top-level functions, as in Gradio's demos).


def _summary_md(case: stroke_seg.Case) -> str:
    s = case.summary()
    lines = [
        f"**Input** — shape {tuple(s['shape'])}, voxel {' × '.join(f'{v:g}' for v in s['voxel_size_mm'])} mm, "
        f"orientation {s['orientation']}, ADC unit detected: {s['adc_unit_detected']}"
        + (", FLAIR given" if s["has_flair"] else "")
        + (", ground truth given" if s["has_ground_truth"] else "")
    ]
    lines += [f"- {n}" for n in s["notes"]]
    return "\n".join(lines)


def _tables(report: dict) -> tuple[list[list], list[list]]:
    summary = [
        ["Lesion volume (mL)", f"{report['lesion_volume_ml']:.2f}"],
        ["Lesion count", str(report["lesion_count"])],
    ]
    for key, label in (
        ("dice", "Dice vs ground truth"),
        ("avd_ml", "Abs. volume difference (mL)"),
        ("lesion_f1", "Lesion-wise F1"),
        ("lesion_count_diff", "Abs. lesion count difference"),
    ):
        if key in report:
            summary.append([label, f"{report[key]:.3f}" if isinstance(report[key], float) else str(report[key])])
    summary.append(["Model", f"{report['model']} {report['model_version']} ({report['mode']})"])
    summary.append(["Time (s)", f"{report['timings']['total']:.1f}"])
    lesions = [
        [
            les["label"],
            round(les["volume_ml"], 3),
            ", ".join(f"{c:.1f}" for c in les["centroid_mm"]),
            les["mean_adc_1e-6_mm2_per_s"],
        ]
        for les in report["lesions"]
    ]
    return summary, lesions


def _files(dwi, adc, flair, ground_truth, dicom=None, b0=None) -> dict[str, str | None]:
    return dict(zip(INPUT_NAMES, (dwi, adc, flair, ground_truth))) | {DICOM: dicom, B0: b0}


def _viewer_value(folder: Path) -> str:
    return viewer_value(entry_file(folder, "dwi"), entry_file(folder, "adc"), folder / "mask.nii.gz", folder.name)


async def run_segmentation(dwi, adc, flair, ground_truth, dicom, b0, model, mode, from_example, progress=gr.Progress()):
    """UI handler: streams an input summary, status ticks, then the full result."""
    files = _own_files(_files(dwi, adc, flair, ground_truth, dicom, b0), from_example)
    async for kind, payload in _guard(ENGINE.run(files, model, mode, progress)):
        if kind == "summary":
            case, png = payload
            yield {status: _summary_md(case), warnings_box: gr.update(value="", visible=False), inputs_img: str(png)}
        elif kind == "tick":
            yield {status: gr.update(value=payload)}
        else:
            folder = payload
            report = json.loads((folder / "report.json").read_text())
            summary_rows, lesion_rows = _tables(report)
            yield {
                status: f"Done in {report['timings']['total']:.1f} s with `{report['model']}` ({report['mode']})."
                + (" Served from the result cache." if kind == "cached" else ""),
                warnings_box: _warnings_md(report),
                inputs_img: str(folder / "inputs.png"),
                viewer: _viewer_value(folder),
                montage_img: str(folder / "montage.png"),
                summary_table: summary_rows,
                lesion_table: lesion_rows,
                downloads: [
                    str(folder / n)
                    for n in ("mask.nii.gz", "mask_seg.dcm", "probability.nii.gz", "report.json")
                    if (folder / n).is_file()
                ],
            }


async def segment_api(
    dwi=None,
    adc=None,
    flair=None,
    ground_truth=None,
    model="unet",
    mode="fast",
    dicom=None,
    b0=None,
    progress=gr.Progress(),
):
    """Segment the acute ischemic stroke lesion of one brain MRI (research use only, not for diagnosis).

    Yields (None, {"status": "running", "input": ...}, input montage), then
    (mask NIfTI, JSON report, result montage PNG).

    Args:
        dwi: DWI (b=1000) NIfTI file (.nii/.nii.gz); None when a DICOM export is given.
        adc: ADC map NIfTI file (mm²/s, 1e-3 or 1e-6 mm²/s, detected); None when a DICOM export is given.
        flair: optional FLAIR NIfTI file.
        ground_truth: optional binary lesion mask on the DWI grid (adds Dice and lesion F1 to the report).
        model: "unet", "adc-threshold" or "ensemble".
        mode: "fast" or "accurate" (8x mirror test-time augmentation).
        dicom: optional .zip of a DICOM export (DWI series b0 + b1000 or trace, and/or ADC) instead of dwi and adc.
        b0: optional b=0 NIfTI of the DWI's acquisition: with no adc, the ADC is computed from it (b=1000).
    """
    async for kind, payload in _guard(
        ENGINE.run(_files(dwi, adc, flair, ground_truth, dicom, b0), model, mode, progress)
    ):
        if kind == "summary":
            case, png = payload
            yield None, {"status": "running", "input": case.summary()}, str(png)
        elif kind in ("done", "cached"):
            folder = payload
            yield (
                str(folder / "mask.nii.gz"),
                json.loads((folder / "report.json").read_text()),
                str(folder / "montage.png"),
            )


START_STATUS = (
    "Upload your DWI and ADC (NIfTI), or click a bundled example below to load a whole case; then press **Run**."
)


def example_loaded(dwi, adc, flair, ground_truth):
    """An example filled the inputs: remember which, so that nothing of it is paired with a later upload."""
    filled = [n for n, v in zip(INPUT_NAMES, (dwi, adc, flair, ground_truth)) if v]
    return (
        {"left": filled, "user": False},
        "Example case loaded (DWI, ADC"
        + (", FLAIR" if flair else "")
        + (", ground truth" if ground_truth else "")
        + "): press **Run**.",
        gr.update(value="", visible=False),
    )


def user_upload(name: str):
    """Handler factory: an upload into ``name`` clears the example's optional files (FLAIR, ground truth).

    The DWI and ADC are left for the user to replace (clearing them here could race with the user's next upload);
    :func:`_own_files` refuses to pair an upload with the example's DWI or ADC at Run.
    """

    def handler(state: dict):
        left = [n for n in state.get("left", []) if n != name]
        cleared = [n for n in left if n in ("flair", "ground_truth")]
        updates = [gr.update(value=None) if n in cleared else gr.update() for n in INPUT_NAMES]
        note = (
            "Your file replaced part of the example case; its FLAIR and ground truth were cleared. " if cleared else ""
        )
        return (
            *updates,
            {"left": [n for n in left if n not in cleared], "user": True},
            note + START_STATUS,
            gr.update(value="", visible=False),
        )

    return handler


def _own_files(files: dict[str, str | None], state: dict | None) -> dict[str, str | None]:
    """The files to segment: a user's uploads are never paired with what an example left in another input."""
    state = state or {}
    if not state.get("user"):
        return files
    if files.get(DICOM):  # a DICOM export replaces the whole case: nothing an example left is used
        return {n: (None if n in state.get("left", []) else v) for n, v in files.items()}
    left = set(state.get("left", []))
    mixed = [n for n in ("dwi", "adc") if n in left and files.get(n)]
    if mixed:
        raise gr.Error(
            f"Your upload would be paired with the example's {' and '.join(m.upper() for m in mixed)}: upload your own "
            f"{' and '.join(m.upper() for m in mixed)} too (or click the example again to run it whole).",
            print_exception=False,
        )
    return {n: (None if n in left else v) for n, v in files.items()}


def _warnings_md(report: dict):
    found = report.get("warnings") or []
    if not found:
        return gr.update(value="", visible=False)
    return gr.update(value="### ⚠️ Check this result\n" + "\n".join(f"- {w}" for w in found), visible=True)


def describe_model(model: str) -> str:
    info = next((i for i in stroke_seg.model_infos() if i["name"] == model), None)
    return f"*{info['description']}* Validated on: {info['validated_on']}" if info else ""


def cancel_notice() -> str:
    """Shown in its own box, which the run never writes to after it started: no late status tick can hide it."""
    return "Cancelled. The server stopped the job at its next step; you can run again."


def clear_notice() -> str:
    return ""


def _examples() -> tuple[list[list], list[str]]:
    cases = discover_cases(EXAMPLES)
    rows = [[str(f[n]) if f[n] else None for n in INPUT_NAMES] for _, f in cases]
    return rows, [name.replace("_", " ") for name, _ in cases]


# Gradio's own upload/output cache is swept like ours: every 10 min, files older than the cache lifetime go.
with gr.Blocks(
    title="stroke-seg: ischemic stroke lesion segmentation (research use)", delete_cache=(600, int(CACHE.lifetime_s))
) as demo:
    gr.Markdown("# stroke-seg — ischemic stroke lesion segmentation of DWI + ADC\n" + DISCLAIMER)
    status = gr.Markdown(START_STATUS, elem_id="status", render=False)
    warnings_box = gr.Markdown("", elem_id="qc-warnings", visible=False, render=False)
    notice = gr.Markdown("", elem_id="cancel-notice", render=False)
    with gr.Row():
        with gr.Column(scale=1):
            example_rows, example_labels = _examples()
            from_example = gr.State(
                {"left": [], "user": False}
            )  # inputs an example filled, and whether the user uploaded since
            dwi_in = gr.File(label="DWI (b=1000) .nii / .nii.gz", file_types=[".nii", ".gz"], elem_id="dwi-in")
            adc_in = gr.File(
                label="ADC map .nii / .nii.gz (mm²/s, 10⁻³ or 10⁻⁶ mm²/s; detected)",
                file_types=[".nii", ".gz"],
                elem_id="adc-in",
            )
            with gr.Accordion("Optional: FLAIR, ground truth, or a b0 instead of the ADC", open=False):
                b0_in = gr.File(
                    label="b0 (b=0 image of the DWI's acquisition): with no ADC map, the ADC is computed",
                    file_types=[".nii", ".gz"],
                    elem_id="b0-in",
                )
                flair_in = gr.File(label="FLAIR (optional)", file_types=[".nii", ".gz"], elem_id="flair-in")
                gt_in = gr.File(
                    label="Ground-truth mask (optional, binary, DWI grid)", file_types=[".nii", ".gz"], elem_id="gt-in"
                )
            with gr.Accordion("Or: a DICOM export (.zip) instead of the DWI and ADC", open=False):
                dicom_in = gr.File(
                    label="DICOM .zip (DWI series b0 + b1000 or trace, and/or an ADC series); the result adds a DICOM "
                    "SEG",
                    file_types=[".zip"],
                    elem_id="dicom-in",
                )
            model_in = gr.Dropdown(choices=_model_choices(), value=_default_model(), label="Model")
            model_info = gr.Markdown(describe_model(_default_model()))
            mode_in = gr.Radio(
                ["fast", "accurate"], value="fast", label="Mode (accurate = 8× mirror test-time augmentation)"
            )
            with gr.Row():
                run_btn = gr.Button("Run segmentation", variant="primary", elem_id="run-btn")
                cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel-btn")
            gr.Examples(
                example_rows,
                inputs=[dwi_in, adc_in, flair_in, gt_in],
                example_labels=example_labels,
                fn=example_loaded,
                outputs=[from_example, status, warnings_box],
                run_on_click=True,
                cache_examples=False,
                label="Bundled synthetic examples (with ground truth) — click one to load the whole case",
            )
        with gr.Column(scale=2):
            status.render()
            notice.render()
            warnings_box.render()
            viewer = NiiVueViewer(elem_id="viewer")
            if not NiiVueViewer.available():
                gr.Markdown(
                    "*3D viewer unavailable: NiiVue is not installed. Run `npm ci` in the app folder (see README). "
                    "The PNG montage below shows the result.*"
                )
            with gr.Row():
                summary_table = gr.Dataframe(
                    headers=["Measure", "Value"], label="Results", interactive=False, elem_id="results-table"
                )
                lesion_table = gr.Dataframe(
                    headers=["Lesion", "Volume (mL)", "Centroid (world mm)", "Mean ADC (10⁻⁶ mm²/s)"],
                    label="Lesions (largest first)",
                    interactive=False,
                )
            montage_img = gr.Image(
                label="Lesion overlay montage (red: prediction, green outline: ground truth; radiological view)",
                type="filepath",
                interactive=False,
            )
            inputs_img = gr.Image(label="Inputs (DWI top, ADC bottom)", type="filepath", interactive=False)
            downloads = gr.File(
                label="Downloads: mask (DWI grid), DICOM SEG (for DICOM input), probability map, JSON report",
                file_count="multiple",
                interactive=False,
                elem_id="downloads",
            )
    # API-only outputs and trigger (the /segment endpoint for gradio_client)
    with gr.Row(visible=False):
        api_trigger = gr.Button("api", visible=False)
        api_mask = gr.File(label="mask", visible=False)
        api_report = gr.JSON(label="report", visible=False)
        api_montage = gr.Image(label="montage", type="filepath", visible=False)

    model_in.change(describe_model, model_in, model_info, api_visibility="private", queue=False)
    for name, component in zip(INPUT_NAMES + (DICOM, B0), (dwi_in, adc_in, flair_in, gt_in, dicom_in, b0_in)):
        component.upload(
            user_upload(name),
            from_example,
            [dwi_in, adc_in, flair_in, gt_in, from_example, status, warnings_box],
            api_visibility="private",
            queue=False,
        )
    run_event = run_btn.click(clear_notice, None, notice, api_visibility="private", queue=False).then(
        run_segmentation,
        inputs=[dwi_in, adc_in, flair_in, gt_in, dicom_in, b0_in, model_in, mode_in, from_example],
        outputs=[status, warnings_box, inputs_img, viewer, montage_img, summary_table, lesion_table, downloads],
        concurrency_id="inference",
        concurrency_limit=CONCURRENCY,
        api_visibility="private",
    )
    cancel_btn.click(cancel_notice, None, notice, cancels=[run_event], api_visibility="private", queue=False)
    api_trigger.click(
        segment_api,
        inputs=[dwi_in, adc_in, flair_in, gt_in, model_in, mode_in, dicom_in, b0_in],
        outputs=[api_mask, api_report, api_montage],
        api_name="segment",
        concurrency_id="inference",
        concurrency_limit=CONCURRENCY,
    )

demo.queue(max_size=MAX_QUEUE, default_concurrency_limit=CONCURRENCY)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ENGINE.warm_up(_default_model())
    try:
        demo.launch(
            server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
            server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
            max_file_size=MAX_FILE_SIZE,
            allowed_paths=[str(CACHE.root)],
            mcp_server=os.environ.get("STROKE_SEG_MCP") == "1" or "--mcp" in sys.argv[1:],
        )
    finally:  # launch() returns after Ctrl-C; the interpreter then joins the inference threads
        ENGINE.stop()
