"""stroke-seg web app: the Gradio UI over the ``stroke_seg`` library (UI only; no logic here).

Run ``python app.py`` (binds 0.0.0.0:7860; GRADIO_SERVER_NAME / GRADIO_SERVER_PORT override).
Every inference event runs on Gradio's queue under one ``concurrency_id``, streams progress
(stage + fraction) over SSE, and can be cancelled. Research use only; not for diagnosis.

Environment:
    STROKE_SEG_MAX_QUEUE (20), STROKE_SEG_CONCURRENCY (1), STROKE_SEG_CACHE_DIR (<tmp>/stroke-seg-cache),
    STROKE_SEG_CACHE_TTL seconds a result is reused for identical inputs (3600; 0: no reuse),
    STROKE_SEG_RESULT_KEEP seconds a result stays downloadable whatever the TTL (900), STROKE_SEG_MAX_FILE_SIZE ("200mb"),
    STROKE_SEG_DEFAULT_MODEL ("unet" when its weights load, else "adc-threshold"),
    GRADIO_HEARTBEAT_INTERVAL seconds (set to 1 here unless given: below any gateway idle timeout).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("GRADIO_HEARTBEAT_INTERVAL", "1")

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402

import stroke_seg  # noqa: E402
from stroke_seg import render  # noqa: E402
from stroke_seg.cache import DELIVERY_S, ResultCache, default_cache_dir  # noqa: E402
from stroke_seg.io import save_image  # noqa: E402

log = logging.getLogger("stroke_seg.app")

ROOT = Path(__file__).resolve().parent
EXAMPLES = ROOT / "examples"
NIIVUE_JS = ROOT / "node_modules" / "@niivue" / "niivue" / "dist" / "niivue.umd.js"
MAX_QUEUE = int(os.environ.get("STROKE_SEG_MAX_QUEUE", "20"))
CONCURRENCY = int(os.environ.get("STROKE_SEG_CONCURRENCY", "1"))
MAX_FILE_SIZE = os.environ.get("STROKE_SEG_MAX_FILE_SIZE", "200mb")
CACHE = ResultCache(
    default_cache_dir(), float(os.environ.get("STROKE_SEG_CACHE_TTL", "3600")), float(os.environ.get("STROKE_SEG_RESULT_KEEP", str(DELIVERY_S)))
)
# The device is the one resource shared by all sessions: long-lived inference threads, one per slot, so at
# most CONCURRENCY jobs compute at once and the same threads serve every job. (A cancelled job may need up
# to one window to notice; the next job queues here behind it.)
INFERENCE = ThreadPoolExecutor(max_workers=CONCURRENCY, thread_name_prefix="stroke-seg-infer")
# Set when the server stops (Ctrl-C): a running job then stops within one window instead of holding the process.
STOPPING = threading.Event()
TICK_S = 0.5  # the handler yields a status update at least this often while a job runs
CANCEL_NOTICE_DELAY_S = 1.0

gr.set_static_paths([str(CACHE.root)] + ([str(NIIVUE_JS.parent)] if NIIVUE_JS.is_file() else []))

DISCLAIMER = (
    "**Research use only — not for diagnosis or treatment decisions.** The `unet` model was trained only on "
    "synthetic cases generated from the MNI152 template (never on patient scans); `adc-threshold` is a fixed "
    "rule (ADC < 620×10⁻⁶ mm²/s and DWI > 1.3× brain median, slice trend removed, plus the DWI-bright rim next to that "
    "core). See the model card for validation figures."
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


def _url(path: Path) -> str:
    """Page-relative URL of a file Gradio serves (survives a reverse proxy and HTTPS termination)."""
    return f"gradio_api/file={path}"


# ------------------------------------------------------------------------------------------
# The job: validate, segment in a worker thread (progress + cancel), write the cache entry.


class _Job:
    """One segmentation job of one request; nothing in it is shared between sessions."""

    def __init__(self, files: dict[str, str | None], model: str, mode: str, progress) -> None:
        self.files, self.model, self.mode, self.progress = files, model, mode, progress
        self.cancel = threading.Event()
        self.stage = "queued"
        self.started = time.monotonic()
        self.result: stroke_seg.Result | None = None
        self.error: BaseException | None = None

    def report(self, fraction: float, description: str) -> None:
        self.stage = f"{description} ({fraction:.0%})"
        self.progress(fraction, desc=description)

    def should_cancel(self) -> bool:
        return self.cancel.is_set() or STOPPING.is_set()

    def run(self, case: stroke_seg.Case) -> None:
        outcome = "error"
        try:
            log.info("inference start model=%s mode=%s t=%.3f", self.model, self.mode, time.time())
            try:
                if self.should_cancel():
                    raise stroke_seg.Cancelled("cancelled while waiting for the device")
                config = stroke_seg.SegmentConfig(mode=self.mode)
                self.result = stroke_seg.segment(case, model=self.model, config=config, progress=self.report, should_cancel=self.should_cancel)
                outcome = "ok"
            except stroke_seg.Cancelled:
                outcome = "cancelled"
                raise
            finally:
                log.info("inference end status=%s t=%.3f", outcome, time.time())
        except BaseException as err:  # handed to the request's generator, which maps it
            self.error = err
            if outcome == "cancelled":
                log.info("job cancelled: the server-side inference loop stopped (%s)", err)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


async def _job_steps(dwi, adc, flair, ground_truth, model: str, mode: str, progress) -> AsyncIterator[tuple[str, object]]:
    """Yields ("summary", (case, png_path)), ("tick", status_text)..., then ("done" | "cached", cache_folder).

    An async generator on purpose: between updates it waits in ``await asyncio.sleep``, so when
    Gradio cancels the event the generator is closed at once (a sync generator blocked in a
    thread cannot be closed while it runs); its ``finally`` then tells the worker to stop.
    """
    if not dwi or not adc:
        raise stroke_seg.InvalidImageError("input: expected a DWI and an ADC file (.nii or .nii.gz), but " + ("the DWI" if not dwi else "the ADC") + " is missing")
    if model not in stroke_seg.model_names():
        raise stroke_seg.ModelError(f"model: expected one of {', '.join(stroke_seg.model_names())}, but got {model!r}")
    files = {"dwi": dwi, "adc": adc, "flair": flair or None, "ground_truth": ground_truth or None}
    await asyncio.to_thread(CACHE.sweep)
    key = await asyncio.to_thread(CACHE.key, list(files.values()), model, mode, stroke_seg.__version__)
    hit = CACHE.get(key)
    if hit is not None:
        progress(1.0, desc="served from the result cache")
        log.info("cache hit %s", key)
        yield "cached", hit
        return
    job = _Job(files, model, mode, progress)
    log.info("job accepted model=%s mode=%s t=%.3f", model, mode, time.time())
    job.report(0.0, "validating inputs")
    case = await asyncio.to_thread(stroke_seg.load_case, files["dwi"], files["adc"], files["flair"], files["ground_truth"])
    staging = CACHE.staging()
    try:
        # Inference starts now on an inference thread (the context carries Gradio's progress tracking);
        # the input montage is drawn while it runs, and the wrapped future wakes this handler at once.
        finished = asyncio.wrap_future(INFERENCE.submit(contextvars.copy_context().run, job.run, case))
        inputs_png = await asyncio.to_thread(lambda: render.save_png(render.input_montage(case), staging / "inputs.png"))
        yield "summary", (case, inputs_png)
        while not finished.done():
            done, _ = await asyncio.wait({finished}, timeout=TICK_S)
            if not done:
                yield "tick", f"Running `{model}` ({mode}) — {job.elapsed():.0f} s — {job.stage}"
        if job.error is not None:
            raise job.error
        await asyncio.to_thread(_write_entry, job.result, case, files, staging)
        folder = CACHE.commit(staging, key)
        staging = None
        log.info("result written %s t=%.3f", folder.name, time.time())
        yield "done", folder
    finally:
        job.cancel.set()  # runs when Gradio closes this generator on cancel: the worker stops at its next window
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def _write_entry(result: stroke_seg.Result, case: stroke_seg.Case, files: dict[str, str | None], folder: Path) -> None:
    """Write the cache entry; the files are independent, so they are written concurrently (zlib and PNG
    encoding release the GIL). The viewer shows the uploaded DWI and ADC as they are (copied, not
    re-encoded; NiiVue places them by their own affines). ``report.json`` is written last: its presence
    marks the entry complete."""
    mask = np.asarray(result.mask.dataobj) > 0
    tasks = [lambda name=name: shutil.copyfile(files[name], folder / (name + _nifti_suffix(files[name]))) for name in ("dwi", "adc")]
    tasks += [
        lambda: save_image(mask.astype(np.uint8), case, folder / "mask.nii.gz"),
        lambda: save_image(np.asarray(result.probability.dataobj, dtype=np.float32), case, folder / "probability.nii.gz", dtype=np.float32),
        lambda: render.save_png(render.result_montage(case, mask), folder / "montage.png"),
    ]
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="stroke-seg-write") as pool:
        for future in [pool.submit(t) for t in tasks]:
            future.result()
    (folder / "report.json").write_text(json.dumps(result.to_dict(), indent=2))


def _nifti_suffix(path: str) -> str:
    return ".nii.gz" if str(path).lower().endswith(".gz") else ".nii"


def _entry_file(folder: Path, name: str) -> Path:
    """The viewer copy of an input in a cache entry (``dwi.nii.gz`` or ``dwi.nii``)."""
    gz = folder / f"{name}.nii.gz"
    return gz if gz.is_file() else folder / f"{name}.nii"


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
        raise gr.Error(f"Unexpected server error ({type(err).__name__}); it was logged. Please retry or report it.", print_exception=False) from err
    finally:
        await steps.aclose()


# ------------------------------------------------------------------------------------------
# Handlers (top-level functions, as in Gradio's demos).


def _summary_md(case: stroke_seg.Case) -> str:
    s = case.summary()
    lines = [
        f"**Input** — shape {tuple(s['shape'])}, voxel {' × '.join(f'{v:g}' for v in s['voxel_size_mm'])} mm, "
        f"orientation {s['orientation']}, ADC unit detected: {s['adc_unit_detected']}"
        + (", FLAIR given" if s["has_flair"] else "") + (", ground truth given" if s["has_ground_truth"] else "")
    ]
    lines += [f"- {n}" for n in s["notes"]]
    return "\n".join(lines)


def _tables(report: dict) -> tuple[list[list], list[list]]:
    summary = [["Lesion volume (mL)", f"{report['lesion_volume_ml']:.2f}"], ["Lesion count", str(report["lesion_count"])]]
    for key, label in (("dice", "Dice vs ground truth"), ("avd_ml", "Abs. volume difference (mL)"), ("lesion_f1", "Lesion-wise F1"), ("lesion_count_diff", "Abs. lesion count difference")):
        if key in report:
            summary.append([label, f"{report[key]:.3f}" if isinstance(report[key], float) else str(report[key])])
    summary.append(["Model", f"{report['model']} {report['model_version']} ({report['mode']})"])
    summary.append(["Time (s)", f"{report['timings']['total']:.1f}"])
    lesions = [[les["label"], round(les["volume_ml"], 3), ", ".join(f"{c:.1f}" for c in les["centroid_mm"]), les["mean_adc_1e-6_mm2_per_s"]] for les in report["lesions"]]
    return summary, lesions


def _viewer_value(folder: Path) -> str:
    return json.dumps({
        "dwi": _url(_entry_file(folder, "dwi")),
        "adc": _url(_entry_file(folder, "adc")),
        "mask": _url(folder / "mask.nii.gz"),
        "key": folder.name,
    })


async def run_segmentation(dwi, adc, flair, ground_truth, model, mode, progress=gr.Progress()):
    """UI handler: streams an input summary, status ticks, then the full result."""
    async for kind, payload in _guard(_job_steps(dwi, adc, flair, ground_truth, model, mode, progress)):
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
                downloads: [str(folder / "mask.nii.gz"), str(folder / "probability.nii.gz"), str(folder / "report.json")],
            }


async def segment_api(dwi, adc, flair, ground_truth, model, mode, progress=gr.Progress()):
    """API handler (/segment): yields (None, {"status": "running", "input": ...}, input montage), then
    (mask NIfTI, report JSON, result montage PNG)."""
    async for kind, payload in _guard(_job_steps(dwi, adc, flair, ground_truth, model, mode, progress)):
        if kind == "summary":
            case, png = payload
            yield None, {"status": "running", "input": case.summary()}, str(png)
        elif kind in ("done", "cached"):
            folder = payload
            yield str(folder / "mask.nii.gz"), json.loads((folder / "report.json").read_text()), str(folder / "montage.png")


START_STATUS = "Upload your DWI and ADC (NIfTI), or click a bundled example below to load a whole case; then press **Run**."
INPUT_NAMES = ("dwi", "adc", "flair", "ground_truth")


def example_loaded(dwi, adc, flair, ground_truth):
    """An example filled all four inputs: remember which, so that a later upload clears the others."""
    filled = [n for n, v in zip(INPUT_NAMES, (dwi, adc, flair, ground_truth)) if v]
    return filled, "Example case loaded (DWI, ADC" + (", FLAIR" if flair else "") + (", ground truth" if ground_truth else "") + "): press **Run**.", gr.update(value="", visible=False)


def user_upload(name: str):
    """Handler factory: an upload into ``name`` clears every input still holding an example's file."""

    def handler(from_example: list[str]):
        updates = [gr.update(value=None) if (n in from_example and n != name) else gr.update() for n in INPUT_NAMES]
        note = "Your file replaced the example case: its other files were cleared. " if from_example else ""
        return (*updates, [], note + START_STATUS, gr.update(value="", visible=False))

    return handler


def _warnings_md(report: dict):
    found = report.get("warnings") or []
    if not found:
        return gr.update(value="", visible=False)
    return gr.update(value="### ⚠️ Check this result\n" + "\n".join(f"- {w}" for w in found), visible=True)


def describe_model(model: str) -> str:
    info = next((i for i in stroke_seg.model_infos() if i["name"] == model), None)
    return f"*{info['description']}* Validated on: {info['validated_on']}" if info else ""


async def cancel_notice() -> str:
    # The click cancels the run and calls this at the same time; a status message of the run already on its way
    # (a tick, the input summary) could land after this notice and hide it, so it waits a moment first.
    await asyncio.sleep(CANCEL_NOTICE_DELAY_S)
    return "Cancelled. The server stopped the job at its next step; you can run again."


# ------------------------------------------------------------------------------------------
# Viewer: NiiVue served from node_modules by this app (no CDN); volumes fetched by URL.

_VIEWER_HTML = """
<div class="ss-viewer">
  <div class="ss-controls">
    <label>Base <select class="ss-base"><option value="dwi">DWI</option><option value="adc">ADC</option></select></label>
    <label>Lesion opacity <input class="ss-opacity" type="range" min="0" max="1" step="0.05" value="0.6"></label>
    <label>View <select class="ss-view"><option value="mpr">Multiplanar</option><option value="render">3D render</option><option value="axial">Axial</option></select></label>
  </div>
  <div class="ss-stage"><canvas class="ss-canvas"></canvas></div>
  <div class="ss-note">${value ? "" : "The viewer shows DWI with the lesion overlay once a segmentation finishes."}</div>
</div>
"""

_VIEWER_CSS = """
.ss-stage { height: 480px; background: #000; border-radius: 6px; }
.ss-canvas { width: 100%; height: 100%; display: block; }
.ss-controls { display: flex; gap: 1em; flex-wrap: wrap; margin-bottom: 0.4em; font-size: 0.9em; }
.ss-note { font-size: 0.85em; opacity: 0.8; margin-top: 0.3em; }
"""

_VIEWER_JS = """
const state = { nv: null, canvas: null, spec: null, loads: 0, error: null };
window.strokeSegViewer = state;
const note = (t) => { const n = element.querySelector('.ss-note'); if (n) n.textContent = t; };
async function ensure() {
  if (typeof niivue === 'undefined') { note('3D viewer unavailable: NiiVue is not installed on this server (run `npm ci` in the app folder). The PNG montage below shows the result.'); return null; }
  const canvas = element.querySelector('canvas');
  if (!state.nv || state.canvas !== canvas) {
    state.nv = new niivue.Niivue({ backColor: [0, 0, 0, 1], show3Dcrosshair: true, isColorbar: false });
    await state.nv.attachToCanvas(canvas);
    state.canvas = canvas;
  }
  return state.nv;
}
async function show() {
  let spec = null;
  try { spec = props.value ? JSON.parse(props.value) : null; } catch (e) { spec = null; }
  if (!spec) return;
  const nv = await ensure();
  if (!nv) return;
  const base = element.querySelector('.ss-base').value;
  const opacity = parseFloat(element.querySelector('.ss-opacity').value);
  try {
    await nv.loadVolumes([
      { url: spec[base], name: spec[base].split('/').pop(), colormap: 'gray' },
      { url: spec.mask, name: 'mask.nii.gz', colormap: 'red', opacity: opacity, cal_min: 0.5, cal_max: 1 },
    ]);
    state.spec = spec; state.loads += 1; state.error = null;
    note('DWI/ADC with the lesion in red. Drag to move the crosshair; scroll to change slices.');
  } catch (e) { state.error = String(e); note('The viewer could not load the volumes: ' + e); }
}
element.querySelector('.ss-opacity').addEventListener('input', (ev) => {
  if (state.nv && state.nv.volumes.length > 1) { state.nv.setOpacity(1, parseFloat(ev.target.value)); }
});
element.querySelector('.ss-base').addEventListener('change', () => show());
element.querySelector('.ss-view').addEventListener('change', (ev) => {
  if (!state.nv) return;
  const t = { mpr: state.nv.sliceTypeMultiplanar, render: state.nv.sliceTypeRender, axial: state.nv.sliceTypeAxial }[ev.target.value];
  state.nv.setSliceType(t);
});
watch('value', () => show());
show();
"""


def _viewer_head() -> str | None:
    if not NIIVUE_JS.is_file():
        return None
    return f'<script src="{_url(NIIVUE_JS)}"></script>'


def _examples() -> tuple[list[list], list[str]]:
    rows, labels = [], []
    for folder in sorted(p for p in EXAMPLES.iterdir() if (p / "dwi.nii.gz").is_file()) if EXAMPLES.is_dir() else []:
        flair = folder / "flair.nii.gz"
        rows.append([str(folder / "dwi.nii.gz"), str(folder / "adc.nii.gz"), str(flair) if flair.is_file() else None, str(folder / "mask.nii.gz")])
        labels.append(folder.name.replace("_", " "))
    return rows, labels


# Gradio's own upload/output cache is swept like ours: every 10 min, files older than the cache lifetime go.
with gr.Blocks(title="stroke-seg: ischemic stroke lesion segmentation (research use)", delete_cache=(600, int(CACHE.lifetime_s))) as demo:
    gr.Markdown("# stroke-seg — ischemic stroke lesion segmentation of DWI + ADC\n" + DISCLAIMER)
    status = gr.Markdown(START_STATUS, elem_id="status", render=False)
    warnings_box = gr.Markdown("", elem_id="qc-warnings", visible=False, render=False)
    with gr.Row():
        with gr.Column(scale=1):
            example_rows, example_labels = _examples()
            from_example = gr.State([])  # names of the inputs an example filled; a user upload clears the rest
            dwi_in = gr.File(label="DWI (b=1000) .nii / .nii.gz", file_types=[".nii", ".gz"], elem_id="dwi-in")
            adc_in = gr.File(label="ADC map .nii / .nii.gz (mm²/s, 10⁻³ or 10⁻⁶ mm²/s; detected)", file_types=[".nii", ".gz"], elem_id="adc-in")
            with gr.Accordion("Optional: FLAIR and ground truth", open=False):
                flair_in = gr.File(label="FLAIR (optional)", file_types=[".nii", ".gz"], elem_id="flair-in")
                gt_in = gr.File(label="Ground-truth mask (optional, binary, DWI grid)", file_types=[".nii", ".gz"], elem_id="gt-in")
            model_in = gr.Dropdown(choices=_model_choices(), value=_default_model(), label="Model")
            model_info = gr.Markdown(describe_model(_default_model()))
            mode_in = gr.Radio(["fast", "accurate"], value="fast", label="Mode (accurate = 8× mirror test-time augmentation)")
            with gr.Row():
                run_btn = gr.Button("Run segmentation", variant="primary", elem_id="run-btn")
                cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel-btn")
            gr.Examples(
                example_rows, inputs=[dwi_in, adc_in, flair_in, gt_in], example_labels=example_labels, fn=example_loaded,
                outputs=[from_example, status, warnings_box], run_on_click=True, cache_examples=False,
                label="Bundled synthetic examples (with ground truth) — click one to load the whole case",
            )
        with gr.Column(scale=2):
            status.render()
            warnings_box.render()
            viewer = gr.HTML(value="", html_template=_VIEWER_HTML, css_template=_VIEWER_CSS, js_on_load=_VIEWER_JS, head=_viewer_head(), elem_id="viewer", padding=False)
            if not NIIVUE_JS.is_file():
                gr.Markdown("*3D viewer unavailable: NiiVue is not installed. Run `npm ci` in the app folder (see README). The PNG montage below shows the result.*")
            with gr.Row():
                summary_table = gr.Dataframe(headers=["Measure", "Value"], label="Results", interactive=False, elem_id="results-table")
                lesion_table = gr.Dataframe(headers=["Lesion", "Volume (mL)", "Centroid (world mm)", "Mean ADC (10⁻⁶ mm²/s)"], label="Lesions (largest first)", interactive=False)
            montage_img = gr.Image(label="Lesion overlay montage (red: prediction, green outline: ground truth; radiological view)", type="filepath", interactive=False)
            inputs_img = gr.Image(label="Inputs (DWI top, ADC bottom)", type="filepath", interactive=False)
            downloads = gr.File(label="Downloads: mask (DWI grid), probability map, JSON report", file_count="multiple", interactive=False)
    # API-only outputs and trigger (the /segment endpoint for gradio_client)
    with gr.Row(visible=False):
        api_trigger = gr.Button("api", visible=False)
        api_mask = gr.File(label="mask", visible=False)
        api_report = gr.JSON(label="report", visible=False)
        api_montage = gr.Image(label="montage", type="filepath", visible=False)

    model_in.change(describe_model, model_in, model_info, api_visibility="private", queue=False)
    for name, component in zip(INPUT_NAMES, (dwi_in, adc_in, flair_in, gt_in)):
        component.upload(
            user_upload(name), from_example, [dwi_in, adc_in, flair_in, gt_in, from_example, status, warnings_box],
            api_visibility="private", queue=False,
        )
    run_event = run_btn.click(
        run_segmentation,
        inputs=[dwi_in, adc_in, flair_in, gt_in, model_in, mode_in],
        outputs=[status, warnings_box, inputs_img, viewer, montage_img, summary_table, lesion_table, downloads],
        concurrency_id="inference",
        concurrency_limit=CONCURRENCY,
        api_visibility="private",
    )
    cancel_btn.click(cancel_notice, None, status, cancels=[run_event], api_visibility="private", queue=False)
    api_trigger.click(
        segment_api,
        inputs=[dwi_in, adc_in, flair_in, gt_in, model_in, mode_in],
        outputs=[api_mask, api_report, api_montage],
        api_name="segment",
        concurrency_id="inference",
        concurrency_limit=CONCURRENCY,
    )

demo.queue(max_size=MAX_QUEUE, default_concurrency_limit=CONCURRENCY)


def _warm_up() -> None:
    """Load the default model in the background so the port binds at once."""
    try:
        stroke_seg.get_model(_default_model())
    except stroke_seg.StrokeSegError as err:
        log.warning("model warm-up failed: %s", err)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    INFERENCE.submit(_warm_up)  # on an inference thread: the first job simply queues behind the load
    try:
        demo.launch(
            server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
            server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
            max_file_size=MAX_FILE_SIZE,
            allowed_paths=[str(CACHE.root)],
        )
    finally:  # launch() returns after Ctrl-C; the interpreter then joins the inference threads
        STOPPING.set()
