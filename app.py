"""stroke-seg web app: the Gradio Blocks layout and its handlers over the ``stroke_seg`` library (UI only).

Run ``python app.py`` (0.0.0.0:7860). Every inference event runs on Gradio's queue under one ``concurrency_id`` and
streams progress over SSE with heartbeats; the job engine is :mod:`stroke_seg.serving.jobs`, the viewer :mod:`viewer`.
Settings are environment variables (README, "Configuration"). Research use only; not for diagnosis.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

os.environ.setdefault("GRADIO_HEARTBEAT_INTERVAL", "1")

import gradio as gr  # noqa: E402

import stroke_seg  # noqa: E402
from stroke_seg import presentation  # noqa: E402
from stroke_seg.serving.batch import discover_cases  # noqa: E402
from stroke_seg.serving.cache import ResultCache  # noqa: E402
from stroke_seg.serving.cluster import ClusterRunner  # noqa: E402
from stroke_seg.serving.jobs import B0, DICOM, INPUT_NAMES, JobEngine, after_upload, entry_file, own_files  # noqa: E402
from stroke_seg.serving.login import Login  # noqa: E402
from stroke_seg.serving.memory import keep_freed_memory  # noqa: E402
from viewer import NIIVUE_JS, NiiVueViewer, viewer_value  # noqa: E402

log = logging.getLogger("stroke_seg.app")

ROOT = Path(__file__).resolve().parent
EXAMPLES = ROOT / "examples"
MAX_QUEUE = int(os.environ.get("STROKE_SEG_MAX_QUEUE", "20"))
SCHEDULER = os.environ.get("STROKE_SEG_DASK_SCHEDULER")  # jobs run on this Dask cluster's workers
RUNNER = ClusterRunner(SCHEDULER) if SCHEDULER else stroke_seg.segment
CONCURRENCY = int(os.environ.get("STROKE_SEG_CONCURRENCY") or (max(1, RUNNER.workers()) if SCHEDULER else 1))
MAX_FILE_SIZE = os.environ.get("STROKE_SEG_MAX_FILE_SIZE", "200mb")
CACHE = ResultCache.from_env()
JOB_TIMEOUT = float(os.environ.get("STROKE_SEG_JOB_TIMEOUT") or 7200) or None  # seconds a job may run; 0: no limit
# slow models (DeepISLES on a CPU: minutes) run in a lane of their own, so fast jobs never wait for all of one
SLOW_MODELS = [n for n in stroke_seg.models.model_names() if getattr(stroke_seg.models.model_class(n), "slow", False)]
SLOW_CONCURRENCY = int(os.environ.get("STROKE_SEG_SLOW_CONCURRENCY") or (1 if SLOW_MODELS else 0))
ENGINE = JobEngine(
    CACHE,
    CONCURRENCY,
    engine=os.environ.get("STROKE_SEG_ENGINE", "auto"),
    runner=RUNNER,
    timeout_s=JOB_TIMEOUT,
    slow_concurrency=SLOW_CONCURRENCY,
    slow_queue=int(os.environ.get("STROKE_SEG_SLOW_QUEUE", "1")),
)

gr.set_static_paths([str(CACHE.root)] + ([str(NIIVUE_JS.parent)] if NIIVUE_JS.is_file() else []))

DOWNLOADS = ("mask.nii.gz", "brain_mask.nii.gz", "mask_seg.dcm", "probability.nii.gz", "report.json", "report.pdf")
EXTRA_MODELS = presentation.unavailable_markdown()  # optional models not installed here, and how to add them
DEFAULT_MODEL = stroke_seg.models.default_model()  # the library's, CLI's and API's default too
DEFAULT_MODE = stroke_seg.SegmentConfig().mode


def _job(files: dict, model: str, mode: str, progress, request: gr.Request) -> AsyncIterator:
    """The engine's job for this request's user (with logins: results in the user's own folder)."""
    user, cache = LOGIN.job_owner(request)
    return ENGINE.run(files, model, mode, progress, user=user, cache=cache)


async def _guard(start: Callable[[], AsyncIterator], files: dict):
    """Map library errors to gr.Error once; unexpected errors are logged with traceback, shown short. The uploads'
    names (a patient's name, maybe) are kept out of the server log while the job runs."""
    steps = None
    try:
        with LOGIN.redactor.hiding(files.values()):
            steps = start()
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
        if steps is not None:
            await steps.aclose()


def _files(dwi, adc, flair, ground_truth, dicom=None, b0=None) -> dict[str, str | None]:
    return dict(zip(INPUT_NAMES, (dwi, adc, flair, ground_truth))) | {DICOM: dicom, B0: b0}


def _brain_file(folder: Path) -> str | None:
    """The entry's brain mask (what the model used), None for an entry written before it was kept."""
    path = folder / "brain_mask.nii.gz"
    return str(path) if path.is_file() else None


def _warnings(report: dict):
    text = presentation.warnings_markdown(report)
    return gr.update(value=text, visible=bool(text))


async def run_segmentation(
    dwi, adc, flair, ground_truth, dicom, b0, model, mode, from_example, request: gr.Request, progress=gr.Progress()
):
    """UI handler: streams an input summary, status ticks, provisional answers (DeepISLES: after each checkpoint,
    labelled; they stay shown, labelled, when the job is cancelled), then the full result."""
    files = _files(dwi, adc, flair, ground_truth, dicom, b0)
    early = ""  # the latest provisional answer's status line, kept under every tick
    async for kind, payload in _guard(
        lambda: _job(own_files(files, from_example), model, mode, progress, request), files
    ):
        if kind == "summary":
            case, png = payload
            yield {status: presentation.case_markdown(case), warnings_box: _warnings({}), inputs_img: str(png)}
        elif kind == "tick":
            yield {status: gr.update(value=payload + early)}
        elif kind == "provisional":
            early = "\n\n" + presentation.provisional_markdown(payload)
            paths = [payload[n] for n in ("dwi", "adc", "mask")]
            yield {
                status: presentation.provisional_markdown(payload),
                viewer: viewer_value(*paths, f"{payload['mask'].parent.name}-{payload['done']}"),
                montage_img: str(payload["montage"]),
            }
        else:
            folder = payload
            report = json.loads((folder / "report.json").read_text())
            summary_rows, lesion_rows = presentation.result_rows(report)
            yield {
                status: presentation.done_markdown(report, cached=kind == "cached"),
                warnings_box: _warnings(report),
                inputs_img: str(folder / "inputs.png"),
                viewer: viewer_value(
                    *(entry_file(folder, n) for n in ("dwi", "adc", "mask")), folder.name, brain=_brain_file(folder)
                ),
                montage_img: str(folder / "montage.png"),
                summary_table: summary_rows,
                lesion_table: lesion_rows,
                downloads: [str(folder / n) for n in DOWNLOADS if (folder / n).is_file()],
                clinical_table: presentation.clinical_rows(report),
                clinical_notes: presentation.clinical_markdown(report),
                report_pdf: str(folder / "report.pdf") if (folder / "report.pdf").is_file() else None,
            }


async def segment_api(
    dwi=None, adc=None, flair=None, ground_truth=None, model=DEFAULT_MODEL, mode=DEFAULT_MODE, dicom=None, b0=None,
    request: gr.Request = None, progress=gr.Progress(),
):  # fmt: skip
    """Segment the acute ischemic stroke lesion of one brain MRI (research use only, not for diagnosis).

    Yields (None, {"status": "running", "input": ...}, input montage); for a model that averages several networks
    (DeepISLES) after each one (provisional mask NIfTI, {"status": "provisional", "label": "provisional, 3/15
    checkpoints", "lesion_volume_ml": ..., "remaining_s": ...}, its montage PNG); then
    (mask NIfTI, JSON report, result montage PNG, brain mask NIfTI: the brain the model and the rules used; the
    fourth item is None before the result); the JSON report's "report" holds the clinical report (ischemic core
    by ADC < 620 x 10^-6 mm²/s, side, vascular territory and lobe per lesion, DWI-FLAIR mismatch estimate).

    Args:
        dwi: DWI (b=1000) NIfTI file (.nii/.nii.gz); None when a DICOM export is given.
        adc: ADC map NIfTI file (mm²/s, 1e-3 or 1e-6 mm²/s, detected); None when a DICOM export is given.
        flair: optional FLAIR NIfTI file.
        ground_truth: optional binary lesion mask on the DWI grid (adds Dice and lesion F1 to the report).
        model: "unet", "adc-threshold", "ensemble" or, where its extra is installed, "deepisles-nvauto" (DeepISLES;
            minutes on a CPU) or "nnunet:<name>" (a nnU-Net v2 folder under $STROKE_SEG_NNUNET_MODELS); default:
            stroke_seg.models.default_model().
        mode: "fast" or "accurate" (test-time mirroring: `unet` averages 4 mirror images).
        dicom: optional .zip of a DICOM export (DWI series b0 + b1000 or trace, and/or ADC) instead of dwi and adc.
        b0: optional b=0 NIfTI of the DWI's acquisition: with no adc, the ADC is computed from it (b=1000).
    """
    files = _files(dwi, adc, flair, ground_truth, dicom, b0)
    async for kind, payload in _guard(lambda: _job(files, model, mode, progress, request), files):
        if kind == "summary":
            case, png = payload
            yield None, {"status": "running", "input": case.summary()}, str(png), None
        elif kind == "provisional":
            described = {k: v for k, v in payload.items() if k not in ("mask", "montage", "dwi", "adc")}
            yield str(payload["mask"]), described, str(payload["montage"]), None
        elif kind in ("done", "cached"):
            report = json.loads((payload / "report.json").read_text())
            yield str(payload / "mask.nii.gz"), report, str(payload / "montage.png"), _brain_file(payload)


def example_loaded(dwi, adc, flair, ground_truth):
    """An example filled the inputs: remember which, so that nothing of it is paired with a later upload."""
    filled = [n for n, v in zip(INPUT_NAMES, (dwi, adc, flair, ground_truth)) if v]
    return {"left": filled, "user": False}, presentation.example_markdown(filled), _warnings({})


def user_upload(name: str):
    """Handler factory: an upload into ``name`` clears the example's FLAIR and ground truth (:func:`after_upload`)."""

    def handler(state: dict):
        state, cleared = after_upload(state, name)
        updates = [gr.update(value=None) if n in cleared else gr.update() for n in INPUT_NAMES]
        return *updates, state, presentation.upload_markdown(cleared), _warnings({})

    return handler


def _nifti_input(label: str, elem_id: str) -> gr.File:
    return gr.File(label=label, file_types=[".nii", ".gz"], elem_id=elem_id)


RO = {"interactive": False}
MONTAGE_LABEL = "Lesion overlay montage (red: prediction, green outline: ground truth; radiological view)"
DOWNLOADS_LABEL = "Downloads: mask (DWI grid), DICOM SEG (for DICOM input), probability map, JSON report, PDF page"
CLINICAL_LABEL = "Clinical report: core (ADC < 620 x 10^-6 mm²/s), side, vascular territory (JHU arterial atlas)"
DICOM_LABEL = "DICOM .zip (DWI series b0 + b1000 or trace, and/or an ADC series); the result adds a DICOM SEG"


def _examples() -> dict[str, list]:
    cases = discover_cases(EXAMPLES)
    rows = [[str(f[n]) if f[n] else None for n in INPUT_NAMES] for _, f in cases]
    return {"examples": rows, "example_labels": [name.replace("_", " ") for name, _ in cases]}


# Gradio's own upload/output cache is swept like ours: every 10 min, files older than the cache lifetime go.
with gr.Blocks(
    title="stroke-seg: ischemic stroke lesion segmentation (research use)", delete_cache=(600, int(CACHE.lifetime_s))
) as demo:
    gr.Markdown("# stroke-seg — ischemic stroke lesion segmentation of DWI + ADC\n" + presentation.RESEARCH_NOTICE)
    status = gr.Markdown(presentation.START, elem_id="status", render=False)
    warnings_box = gr.Markdown("", elem_id="qc-warnings", visible=False, render=False)
    notice = gr.Markdown("", elem_id="cancel-notice", render=False)
    from_example = gr.State({"left": [], "user": False})  # inputs an example filled; uploads since?
    with gr.Row():
        with gr.Column(scale=1):
            dwi_in = _nifti_input("DWI (b=1000) .nii / .nii.gz", "dwi-in")
            adc_in = _nifti_input("ADC map .nii / .nii.gz (mm²/s, 10⁻³ or 10⁻⁶ mm²/s; detected)", "adc-in")
            with gr.Accordion("Optional: FLAIR, ground truth, or a b0 instead of the ADC", open=False):
                b0_in = _nifti_input("b0 (b=0 image of the DWI's acquisition): with no ADC map, it is used", "b0-in")
                flair_in = _nifti_input("FLAIR (optional)", "flair-in")
                gt_in = _nifti_input("Ground-truth mask (optional, binary, DWI grid)", "gt-in")
            with gr.Accordion("Or: a DICOM export (.zip) instead of the DWI and ADC", open=False):
                dicom_in = gr.File(label=DICOM_LABEL, file_types=[".zip"], elem_id="dicom-in")
            # plain "nnunet" needs a folder (CLI/library); the app lists the named ones of $STROKE_SEG_NNUNET_MODELS
            infos = [i for i in stroke_seg.model_infos() if i["name"] != "nnunet"]
            choices = [(f"{i['name']} — {i['description']}", i["name"]) for i in infos]
            model_in = gr.Dropdown(choices, value=DEFAULT_MODEL, label="Model")
            model_info = gr.Markdown(presentation.model_markdown(DEFAULT_MODEL))
            gr.Markdown(EXTRA_MODELS, visible=bool(EXTRA_MODELS))
            mode_in = gr.Radio(["fast", "accurate"], value=DEFAULT_MODE, label="Mode (accurate = test-time mirroring)")
            with gr.Row():
                run_btn = gr.Button("Run segmentation", variant="primary", elem_id="run-btn")
                cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel-btn")
            gr.Examples(
                **_examples(),
                inputs=[dwi_in, adc_in, flair_in, gt_in],
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
            gr.Markdown(NiiVueViewer.MISSING, visible=not NiiVueViewer.available())
            clinical_table = gr.Dataframe(
                headers=presentation.CLINICAL_COLUMNS, label=CLINICAL_LABEL, elem_id="clinical-table", **RO
            )
            clinical_notes = gr.Markdown("", elem_id="clinical-notes")
            report_pdf = gr.File(label="One-page report (PDF, research use only)", elem_id="report-pdf", **RO)
            with gr.Row():
                summary_table = gr.Dataframe(
                    headers=["Measure", "Value"], label="Results", elem_id="results-table", **RO
                )
                lesion_table = gr.Dataframe(headers=presentation.LESION_COLUMNS, label="Lesions, largest first", **RO)
            montage_img = gr.Image(label=MONTAGE_LABEL, type="filepath", **RO)
            inputs_img = gr.Image(label="Inputs (DWI top, ADC bottom)", type="filepath", **RO)
            downloads = gr.File(label=DOWNLOADS_LABEL, file_count="multiple", **RO, elem_id="downloads")
    # API-only outputs and trigger (the /segment endpoint for gradio_client)
    with gr.Row(visible=False):
        api_trigger = gr.Button("api", visible=False)
        api_mask = gr.File(label="mask", visible=False)
        api_report = gr.JSON(label="report", visible=False)
        api_montage = gr.Image(label="montage", type="filepath", visible=False)
        api_brain = gr.File(label="brain mask", visible=False)

    UI_ONLY = {"api_visibility": "private", "queue": False}  # instant page updates, not API endpoints
    # one queue for all inference; the engine holds its lanes (fast, and slow models beside them)
    INFERENCE = {"concurrency_id": "inference", "concurrency_limit": ENGINE.slots}
    model_in.change(presentation.model_markdown, model_in, model_info, **UI_ONLY)
    upload_outputs = [dwi_in, adc_in, flair_in, gt_in, from_example, status, warnings_box]
    for name, component in zip(INPUT_NAMES + (DICOM, B0), (dwi_in, adc_in, flair_in, gt_in, dicom_in, b0_in)):
        component.upload(user_upload(name), from_example, upload_outputs, **UI_ONLY)
    run_event = run_btn.click(lambda: "", None, notice, **UI_ONLY).then(
        run_segmentation,
        inputs=[dwi_in, adc_in, flair_in, gt_in, dicom_in, b0_in, model_in, mode_in, from_example],
        outputs=[status, warnings_box, inputs_img, viewer, montage_img, summary_table, lesion_table, downloads]
        + [clinical_table, clinical_notes, report_pdf],
        api_visibility="private",
        **INFERENCE,
    )
    # the notice has its own box, which a run never writes to after it started: no late status tick can hide it
    cancel_btn.click(lambda: presentation.CANCELLED, None, notice, cancels=[run_event], **UI_ONLY)
    api_inputs = [dwi_in, adc_in, flair_in, gt_in, model_in, mode_in, dicom_in, b0_in]
    api_outputs = [api_mask, api_report, api_montage, api_brain]
    api_trigger.click(segment_api, api_inputs, api_outputs, api_name="segment", **INFERENCE)

demo.queue(max_size=MAX_QUEUE, default_concurrency_limit=ENGINE.slots)
QUEUE_POLL_S = {"sleep_when_free": 0.01, "progress_update_sleep_when_free": 0.05}
"""How often Gradio's queue wakes its event loop to look for a job to start and for progress to send (gradio's own:
every 1 ms and 10 ms). On a 2-core machine that loop's CPU comes out of the network's: at 10 ms and 50 ms a job starts
within 10 ms of its turn, progress goes out 20 times a second, and a fast job ends 0.05 s sooner (BENCHMARKS.md)."""


def calm_queue(queue) -> None:
    """Set :data:`QUEUE_POLL_S` on Gradio's queue (attributes of ``gradio.queueing.Queue``; one missing after an
    upgrade is logged, and the queue keeps Gradio's own timing)."""
    for name, seconds in QUEUE_POLL_S.items():
        if isinstance(getattr(queue, name, None), float):
            setattr(queue, name, seconds)
        else:
            log.warning("Gradio's queue has no float %s; its own polling interval is kept", name)


calm_queue(demo._queue)
LOGIN = Login.from_env(CACHE, demo.GRADIO_CACHE, EXAMPLES)  # STROKE_SEG_USERS_FILE; off by default


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(LOGIN.redactor)
    keep_freed_memory()  # a job's large arrays reuse the last job's pages (BENCHMARKS.md, "App end to end")
    ENGINE.warm_up(DEFAULT_MODEL)

    def _interrupted(signum, frame):  # Ctrl-C: running jobs stop at their next window, before the server's graceful
        ENGINE.stop()  # shutdown waits for their streams; then the usual KeyboardInterrupt
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, _interrupted)
    try:
        demo.launch(
            server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
            server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
            max_file_size=MAX_FILE_SIZE,
            allowed_paths=[str(CACHE.root)],
            mcp_server=(os.environ.get("STROKE_SEG_MCP") == "1" or "--mcp" in sys.argv[1:]) and not LOGIN.on,
            **LOGIN.launch_kwargs(),
        )
    finally:  # launch() returns after Ctrl-C; the interpreter then joins the inference threads
        ENGINE.stop()
