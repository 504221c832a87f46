"""Any nnU-Net v2 trained-model folder behind this project's backend interface (the optional nnU-Net extra).

The mask is nnU-Net's own: the case's channels are written as NIfTI files and go through the folder's own reader,
cropping, resampling and normalisation (``DefaultPreprocessor.run_case``), its Gaussian sliding window (step 0.5) and
fold average (``nnUNetPredictor.predict_logits_from_preprocessed_data``) and its export back to the input grid
(``convert_predicted_logits_to_segmentation_with_correct_shape``, written by the folder's own writer), exactly as
``nnUNetPredictor.predict_from_files`` does for the same files. What this module adds: the folder checked and
fingerprinted (SHA-256), each folder loaded once per process and device (checkpoints with ``weights_only=True``),
the case's DWI / ADC / FLAIR mapped to the folder's ``channel_names``, progress per fold and window, cancel between
two windows, CPU settings for small machines, and the folders of ``$STROKE_SEG_NNUNET_MODELS`` as named models.

Modes: ``fast`` runs every fold of the folder without mirroring; ``accurate`` adds nnU-Net's mirror test-time
augmentation over the axes the checkpoint allows (nnU-Net's own default, up to 8 passes per window). Folds are never
dropped: they are the model the folder's authors trained.

The ADC goes to the folder as the input holds it (``Case.adc_input``: its own unit, e.g. 1e-3 mm²/s, negative values
kept), so that the folder sees the values nnU-Net reads from the same files; a computed ADC (from a b0) goes in
1e-6 mm²/s.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import importlib.util
import io
import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from stroke_seg.errors import Cancelled, MissingChannelError, ModelError, check_cancel
from stroke_seg.io.readers import to_nifti
from stroke_seg.models.base import CaseBackend, CaseOutput
from stroke_seg.models.nnunet_folder import ROLE_NAMES, NnUNetFolder, inspect_folder, is_model_folder, load_network
from stroke_seg.pipeline.preprocess import RAW_HEAD_ML, Preprocessed
from stroke_seg.types import CancelCheck, Case, ProgressCallback, SegmentConfig

__all__ = ["NAME", "MODELS_ENV", "INSTALL_HINT", "available", "NnUNetBackend", "folder_models", "folder_backend"]

log = logging.getLogger(__name__)

NAME = "nnunet"
MODELS_ENV = "STROKE_SEG_NNUNET_MODELS"
NNUNET_VERSION = "2.8.1"
TILE_STEP = 0.5
INSTALL_HINT = (
    f"{NAME} needs the optional nnU-Net extra: pip install --no-deps -r requirements-nnunet.txt "
    f"(nnunetv2 {NNUNET_VERSION} beside this project's CPU torch)"
)
PREDICTORS_KEPT = 4
"""Loaded folders kept per process (least recently used first out): each holds all its folds' weights."""


def available() -> bool:
    """True when ``nnunetv2`` and ``dynamic_network_architectures`` are installed; found without importing them."""
    return all(importlib.util.find_spec(m) is not None for m in ("nnunetv2", "dynamic_network_architectures"))


class _LogStream(io.TextIOBase):
    """Where nnU-Net's ``print`` goes while this module calls it: the log, never the CLI's stdout."""

    def write(self, text: str) -> int:
        if text.strip():
            log.debug("nnunetv2: %s", text.strip())
        return len(text)


_QUIET = threading.Lock()


@contextlib.contextmanager
def _quiet():
    with _QUIET, contextlib.redirect_stdout(_LogStream()):
        yield


@functools.cache
def _predictor_class():
    """``nnUNetPredictor`` with hooks for progress (per fold and window) and cancel (between two windows)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    class Predictor(nnUNetPredictor):
        run: _Run | None = None

        def predict_sliding_window_return_logits(self, input_image):
            self.run.fold += 1
            logits = super().predict_sliding_window_return_logits(input_image)
            if self.run.cancelled:
                raise Cancelled(f"cancelled in nnU-Net fold {self.run.fold}")
            return logits

        def _internal_get_sliding_window_slicers(self, image_size):
            slicers = super()._internal_get_sliding_window_slicers(image_size)
            self.run.windows = len(slicers)
            return slicers

        def _internal_maybe_mirror_and_predict(self, x):
            run = self.run
            if not run.cancelled and run.should_cancel():
                run.cancelled = True  # the producer thread still hands over the rest: skip them, then raise
            if run.cancelled:
                return torch.zeros((x.shape[0], self.label_manager.num_segmentation_heads, *x.shape[2:]))
            t0 = time.perf_counter()
            out = super()._internal_maybe_mirror_and_predict(x)
            run.window_done(time.perf_counter() - t0)
            return out

    return Predictor


class _Run:
    """Progress of one prediction: fold k of n, window j of m."""

    def __init__(self, folds: int, progress: ProgressCallback, should_cancel: CancelCheck) -> None:
        self.folds, self.progress, self.should_cancel = folds, progress, should_cancel
        self.fold, self.windows, self.done_in_fold, self.spent, self.done = 0, 0, 0, 0.0, 0
        self.cancelled = False

    def window_done(self, seconds: float) -> None:
        self.spent += seconds
        self.done += 1
        self.done_in_fold = self.done - (self.fold - 1) * self.windows
        total = self.folds * max(self.windows, 1)
        left = (total - self.done) * self.spent / self.done
        self.progress(
            0.05 + 0.9 * self.done / total,
            f"nnU-Net fold {self.fold}/{self.folds}, window {self.done_in_fold}/{self.windows}, "
            f"about {left:.0f} s left",
        )


def _device(config: SegmentConfig) -> torch.device:
    if config.device:
        return torch.device(config.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class _Loaded:
    """One folder loaded for one device and mirroring setting, with the lock its network's weights need."""

    def __init__(self, folder: NnUNetFolder, device: torch.device, mirroring: bool) -> None:
        parts = load_network(folder)
        with _quiet():
            predictor = _predictor_class()(
                tile_step_size=TILE_STEP, use_gaussian=True, use_mirroring=mirroring,
                perform_everything_on_device=device.type == "cuda", device=device, verbose=False,
                verbose_preprocessing=False, allow_tqdm=False,
            )  # fmt: skip
            predictor.manual_initialization(
                parts["network"], parts["plans_manager"], parts["configuration_manager"], parts["parameters"],
                parts["dataset_json"], parts["trainer_name"], parts["inference_allowed_mirroring_axes"],
            )  # fmt: skip
        self.folder, self.predictor, self.lock = folder, predictor, threading.Lock()
        self.trainer = parts["trainer_name"]
        self.configuration = parts["configuration"]
        axes = parts["inference_allowed_mirroring_axes"]
        self.mirror_axes = list(axes) if (mirroring and axes is not None) else []


_LOADED: collections.OrderedDict[tuple[str, str, bool], _Loaded] = collections.OrderedDict()
_LOADED_LOCK = threading.Lock()


def _loaded(folder: NnUNetFolder, device: torch.device, mirroring: bool) -> _Loaded:
    key = (folder.sha256, str(device), mirroring)
    with _LOADED_LOCK:
        if key in _LOADED:
            _LOADED.move_to_end(key)
            return _LOADED[key]
    made = _Loaded(folder, device, mirroring)
    with _LOADED_LOCK:
        made = _LOADED.setdefault(key, made)
        while len(_LOADED) > PREDICTORS_KEPT:
            _LOADED.popitem(last=False)
    return made


def _channel_data(case: Case, folder: NnUNetFolder) -> tuple[list[np.ndarray], list[str]]:
    """The case's volume for each of the folder's channels, in its order, and notes on what was given.

    Raises:
        MissingChannelError: the folder needs a FLAIR the case lacks (named with the folder's channel name).
    """
    notes = []
    volumes = []
    for name, role in zip(folder.channel_names, folder.roles):
        if role == "flair" and case.flair is None:
            raise MissingChannelError(
                f"nnU-Net folder {folder.path.name} needs channel {name!r} ({ROLE_NAMES[role]}), which this case "
                f"lacks: it was trained on {', '.join(folder.channel_names)}; give a FLAIR as well"
            )
        if role == "adc" and case.adc_input is not None:
            volumes.append(case.adc_input)
            notes.append(
                f"ADC given to the nnU-Net folder as the input holds it ({case.adc_unit}), as nnU-Net reads it."
            )
        else:
            volumes.append({"dwi": case.dwi, "adc": case.adc, "flair": case.flair}[role])
    unused = [ROLE_NAMES[r] for r, v in (("flair", case.flair),) if v is not None and r not in folder.roles]
    if unused:
        notes.append(f"{', '.join(unused)} ignored: the nnU-Net folder uses {', '.join(folder.channel_names)} only.")
    return volumes, notes


def _predict_files(loaded: _Loaded, paths: list[str], run: _Run, tmp: Path) -> tuple[np.ndarray, np.ndarray]:
    """nnU-Net's mask (as its writer writes it, read back in storage order) and lesion probability of ``paths``."""
    from nnunetv2.imageio.nibabel_reader_writer import NibabelIO
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

    p = loaded.predictor
    plans, conf, labels = p.plans_manager, p.configuration_manager, p.label_manager
    threads = torch.get_num_threads()
    try:
        with _quiet():
            preprocessor = conf.preprocessor_class(verbose=False)
            data, _seg, props = preprocessor.run_case(paths, None, plans, conf, p.dataset_json)
        run.progress(0.05, f"nnU-Net preprocessing done: {tuple(data.shape[1:])} voxels at {conf.spacing} mm")
        data = torch.from_numpy(data).to(dtype=torch.float32, memory_format=torch.contiguous_format)
        with loaded.lock:
            p.run = run
            try:
                logits = p.predict_logits_from_preprocessed_data(data).cpu().numpy()  # as predict_from_files
            finally:
                p.run = None
        run.progress(0.95, "nnU-Net export to the input grid")
        seg = convert_predicted_logits_to_segmentation_with_correct_shape(
            logits, plans, conf, labels, props, False, threads
        )
        _, probs = convert_predicted_logits_to_segmentation_with_correct_shape(
            logits, plans, conf, labels, props, True, threads
        )
    finally:
        torch.set_num_threads(threads)
    out = tmp / f"mask{p.dataset_json['file_ending']}"
    rw = plans.image_reader_writer_class()
    rw.write_seg(seg, str(out), props)
    mask = np.asarray(nib.load(str(out)).dataobj)
    if isinstance(rw, (SimpleITKIO, NibabelIO)):  # both read (z, y, x) of the file's storage order
        lesion = probs.max(0) if labels.has_regions else 1.0 - probs[0]
        probability = np.asarray(lesion, dtype=np.float32).transpose(2, 1, 0)
    else:  # a reorienting reader: its probabilities are on another grid; the mask is exact
        probability = (mask > 0).astype(np.float32)
    return mask, probability


class NnUNetBackend(CaseBackend):
    name = NAME
    description = (
        "Any nnU-Net v2 trained-model folder (--model-folder DIR; nnU-Net extra): nnU-Net's own preprocessing, "
        "sliding window and fold ensemble via nnUNetPredictor, channels from its dataset.json."
    )
    validated_on = (
        "What the folder was trained on (its dataset.json). This project checks that it runs a folder exactly as "
        "nnU-Net does: the same mask as nnUNetPredictor.predict_from_files on the same files."
    )
    version = f"nnunetv2 {NNUNET_VERSION}"
    slow = True
    folder: Path | None = None
    """The folder of a named model (``nnunet:<name>``); None: ``SegmentConfig.model_folder`` names it."""

    def __init__(self) -> None:
        if not available():
            raise ModelError(INSTALL_HINT)

    def checked_folder(self, config: SegmentConfig) -> NnUNetFolder:
        """The folder this backend runs with ``config``, checked (its checksum computed once per change)."""
        given = self.folder if self.folder is not None else config.model_folder
        if given is None:
            raise ModelError(
                f"{NAME} needs a nnU-Net v2 trained-model folder: --model-folder DIR on the command line, "
                "SegmentConfig(model_folder=DIR) in the library, or a named model from $" + MODELS_ENV
            )
        return inspect_folder(given)

    def weights_sha256(self, config: SegmentConfig) -> str | None:
        return self.checked_folder(config).sha256

    def warm_up(self, config: SegmentConfig) -> None:
        _loaded(self.checked_folder(config), _device(config), config.mode == "accurate")

    def predict_case(
        self,
        case: Case,
        volumes: Preprocessed,
        *,
        config: SegmentConfig,
        progress: ProgressCallback,
        should_cancel: CancelCheck,
    ) -> CaseOutput:
        progress(0.0, "nnU-Net folder: checking files (SHA-256)")
        folder = self.checked_folder(config)
        channels, notes = _channel_data(case, folder)
        device = _device(config)
        progress(0.0, f"nnU-Net folder {folder.path.name}: loading {len(folder.folds)} fold(s)")
        loaded = _loaded(folder, device, config.mode == "accurate")
        check_cancel(should_cancel, "loading the nnU-Net folder")
        if volumes.outside_ml > RAW_HEAD_ML:
            notes.append(
                f"Raw head ({volumes.outside_ml:.0f} mL of signal outside the brain) given to the nnU-Net folder as it "
                "is: nnU-Net does no skull stripping; a folder trained on skull-stripped scans may mark the skull."
            )
        run = _Run(len(folder.folds), progress, should_cancel)
        with tempfile.TemporaryDirectory(prefix="stroke-seg-nnunet-") as tmp:
            ending = folder.dataset.get("file_ending", ".nii.gz")
            if ending not in (".nii.gz", ".nii"):
                raise ModelError(
                    f"nnU-Net folder {folder.path.name}: file_ending {ending!r}; this backend writes NIfTI"
                )
            paths = []
            for i, data in enumerate(channels):
                paths.append(str(Path(tmp) / f"case_{i:04d}{ending}"))
                to_nifti(data, case.geometry, np.float32).to_filename(paths[-1])
            progress(0.01, f"nnU-Net preprocessing ({loaded.configuration}, {len(channels)} channels)")
            mask, probability = _predict_files(loaded, paths, run, Path(tmp))
        if mask.shape != case.dwi.shape[:3]:
            raise ModelError(f"{NAME}: the exported mask has shape {mask.shape}, not the DWI's {case.dwi.shape[:3]}")
        details = folder.details() | {
            "trainer": loaded.trainer,
            "configuration": loaded.configuration,
            "mirror_axes": loaded.mirror_axes,
            "tile_step_size": TILE_STEP,
            "device": str(device),
            "windows_per_fold": run.windows,
            "seconds_per_window": round(run.spent / max(run.done, 1), 3),
        }
        return CaseOutput(
            probability=probability, mask=(mask > 0).astype(np.uint8), notes=tuple(notes), details=details
        )


def folder_models(root: str | os.PathLike | None = None) -> dict[str, Path]:
    """The named models of ``root`` (default ``$STROKE_SEG_NNUNET_MODELS``): ``nnunet:<sub>`` for each subfolder
    that is a trained-model folder, and ``nnunet:<sub>.<configuration>`` for each trained-model folder one level
    below (nnU-Net's ``<dataset>/<trainer>__<plans>__<configuration>`` layout). Nothing is hashed or loaded."""
    root = root if root is not None else os.environ.get(MODELS_ENV)
    if not root or not Path(root).is_dir():
        return {}
    found: dict[str, Path] = {}
    for sub in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        if is_model_folder(sub):
            found[f"{NAME}:{sub.name}"] = sub
            continue
        for child in sorted(p for p in sub.iterdir() if p.is_dir() and is_model_folder(p)):
            found[f"{NAME}:{sub.name}.{child.name.split('__')[-1]}"] = child
    return found


def folder_backend(name: str, folder: Path) -> type[NnUNetBackend]:
    """A backend class bound to one trained-model folder, registered as ``name``."""
    dataset = {}
    with contextlib.suppress(OSError, ValueError):
        dataset = json.loads((folder / "dataset.json").read_text())
    channels = ", ".join(str(v) for v in (dataset.get("channel_names") or {}).values()) or "?"
    return type(
        "NnUNetFolderBackend",
        (NnUNetBackend,),
        {
            "name": name,
            "folder": folder,
            "description": f"nnU-Net v2 folder {folder.name} ({channels}): nnU-Net's own pipeline via nnUNetPredictor.",
        },
    )
