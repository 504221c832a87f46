"""The ``nnunet`` backend against nnU-Net itself, with a random-weight stand-in folder the tests write.

``nnUNetPredictor.predict_from_files`` (nnunetv2 as installed by requirements-nnunet.txt) writes the reference mask of
the shared real ISLES'22 case; the library, the CLI and the app must give the same mask, voxel for voxel.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import stroke_seg
from apphelpers import ROOT, launched_app
from conftest import SHARED_CASE, require, require_module
from stroke_seg.errors import Cancelled, MissingChannelError, ModelError
from stroke_seg.types import SegmentConfig

require_module("nnunetv2")
sys.path.insert(0, str(ROOT / "bench"))

import make_nnunet_standin  # noqa: E402

from stroke_seg import models  # noqa: E402
from stroke_seg.models import nnunet  # noqa: E402

FILES = {"dwi": SHARED_CASE / "dwi.nii.gz", "adc": SHARED_CASE / "adc.nii.gz"}
QUICK = {"clinical_report": False} if "clinical_report" in {f.name for f in dataclasses.fields(SegmentConfig)} else {}
"""The clinical report (registration to the atlas) is not what these tests look at."""


@pytest.fixture(scope="session")
def standin(tmp_path_factory) -> Path:
    """The stand-in folder, in nnU-Net's layout: <root>/standin is a trained-model folder."""
    root = tmp_path_factory.mktemp("nnunet-models")
    return make_nnunet_standin.make_standin(root / "standin")


@pytest.fixture(scope="session")
def reference(standin, tmp_path_factory) -> np.ndarray:
    """What nnU-Net's own ``predict_from_files`` writes for the shared case (fast mode: no mirroring)."""
    require(SHARED_CASE.is_dir(), f"the shared real case is missing: {SHARED_CASE}")
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    out = tmp_path_factory.mktemp("nnunet-reference")
    predictor = nnUNetPredictor(use_mirroring=False, perform_everything_on_device=False, device=torch.device("cpu"))
    predictor.initialize_from_trained_model_folder(str(standin), use_folds=(0,))
    predictor.predict_from_files(
        [[str(FILES["dwi"]), str(FILES["adc"])]], [str(out / "case")], num_processes_preprocessing=1,
        num_processes_segmentation_export=1,
    )  # fmt: skip
    mask = np.asarray(nib.load(str(out / "case.nii.gz")).dataobj)
    assert 1000 < int(mask.sum()) < mask.size // 20, "the stand-in should give a non-empty, non-full mask"
    return mask


@pytest.mark.slow
def test_library_mask_equals_nnunets_own(standin, reference):
    result = stroke_seg.segment(FILES, model="nnunet", config=SegmentConfig(model_folder=standin, **QUICK))
    mask = np.asarray(result.mask.dataobj)
    assert mask.shape == reference.shape
    assert np.array_equal(mask, reference > 0), f"{int((mask != (reference > 0)).sum())} voxels differ"
    probability = np.asarray(result.probability.dataobj)  # nnU-Net's softmax, brought to the same voxel order
    assert np.array_equal(probability > 0.5, mask > 0)
    details = result.model_details
    assert details["weights_sha256"] == nnunet.inspect_folder(standin).sha256
    assert details["folds"] == ["0"] and details["mirror_axes"] == [] and details["windows_per_fold"] > 0
    assert "DWI -> DWI" in details["channels"] and "ADC -> ADC" in details["channels"]
    assert any("1e-3 mm2/s" in n for n in result.notes)  # the folder saw the ADC as the file holds it
    assert result.to_dict()["model_details"]["weights_sha256"] == details["weights_sha256"]


@pytest.mark.slow
def test_cli_mask_equals_nnunets_own(standin, reference, tmp_path):
    out, report = tmp_path / "mask.nii.gz", tmp_path / "report.json"
    cmd = [sys.executable, "-m", "stroke_seg", "segment", "--dwi", str(FILES["dwi"]), "--adc", str(FILES["adc"])]
    cmd += ["--model", "nnunet", "--model-folder", str(standin), "--out", str(out), "--json", str(report)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "nnunetv2" not in proc.stdout and "perform_everything_on_device" not in proc.stdout  # no nnU-Net prints
    assert np.array_equal(np.asarray(nib.load(str(out)).dataobj) > 0, reference > 0)
    data = json.loads(report.read_text())
    assert data["model"] == "nnunet"
    assert data["model_details"]["weights_sha256"] == nnunet.inspect_folder(standin).sha256


@pytest.mark.app
@pytest.mark.slow
def test_app_named_model_mask_equals_nnunets_own(standin, reference, tmp_path):
    """One app launch: the folder of models lists ``nnunet:standin`` in the dropdown, and its job gives nnU-Net's
    mask through gradio_client."""
    require_module("gradio_client")
    from gradio_client import Client, handle_file

    with launched_app(tmp_path, **{nnunet.MODELS_ENV: str(standin.parent), "STROKE_SEG_CACHE_TTL": "0"}) as (url, _):
        client = Client(url, verbose=False)
        job = client.submit(
            handle_file(str(FILES["dwi"])), handle_file(str(FILES["adc"])), None, None, "nnunet:standin", "fast",
            None, None, api_name="/segment",
        )  # fmt: skip
        mask_path, report = job.result(timeout=600)[:2]  # then the probability map, the report page, ...
    assert report["model"] == "nnunet:standin"
    assert report["model_details"]["weights_sha256"] == nnunet.inspect_folder(standin).sha256
    assert np.array_equal(np.asarray(nib.load(mask_path).dataobj) > 0, reference > 0)


def _with_channels(standin: Path, folder: Path, names: dict[str, str]) -> Path:
    shutil.copytree(standin, folder)
    dataset = json.loads((folder / "dataset.json").read_text())
    (folder / "dataset.json").write_text(json.dumps(dataset | {"channel_names": names}))
    return folder


def test_missing_flair_is_a_named_error(standin, phantom_files, tmp_path):
    folder = _with_channels(standin, tmp_path / "flair", {"0": "DWI", "1": "ADC", "2": "FLAIR"})
    with pytest.raises(MissingChannelError, match="needs channel 'FLAIR'.*this case lacks"):
        stroke_seg.segment(phantom_files, model="nnunet", config=SegmentConfig(model_folder=folder, **QUICK))


def test_a_channel_this_project_cannot_give_is_named(standin, phantom_files, tmp_path):
    folder = _with_channels(standin, tmp_path / "t1", {"0": "DWI", "1": "T1"})
    with pytest.raises(ModelError, match="input channel 1 is 'T1'"):
        stroke_seg.segment(phantom_files, model="nnunet", config=SegmentConfig(model_folder=folder, **QUICK))


def test_no_folder_and_broken_folders_are_named(standin, phantom_files, tmp_path):
    with pytest.raises(ModelError, match="--model-folder DIR"):
        stroke_seg.segment(phantom_files, model="nnunet", config=SegmentConfig(**QUICK))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="dataset.json is missing"):
        nnunet.inspect_folder(empty)
    nofold = shutil.copytree(standin, tmp_path / "nofold")
    shutil.rmtree(nofold / "fold_0")
    with pytest.raises(ModelError, match="fold_<k>/checkpoint_final.pth for at least one fold"):
        nnunet.inspect_folder(nofold)


def test_checkpoints_load_weights_only(standin, tmp_path):
    """The stand-in's checkpoint (numpy floats beside the weights, as a trained one holds) loads; one holding any
    other object is refused, not unpickled."""
    from stroke_seg.models.nnunet_folder import _load_checkpoint

    assert "network_weights" in _load_checkpoint(standin / "fold_0" / "checkpoint_final.pth")
    bad = tmp_path / "fold_0" / "checkpoint_final.pth"
    bad.parent.mkdir()
    torch.save({"network_weights": {}, "trainer_name": "x", "init_args": {}, "extra": Path("/")}, bad)
    with pytest.raises(ModelError, match="weights_only=True"):
        _load_checkpoint(bad)


@pytest.mark.slow
def test_progress_per_window_and_cancel_between_windows(standin, reference):
    """Progress names fold and window; a cancel asked during the first window stops before the second, and the
    loaded folder still gives whole answers afterwards (the windows left are drained, not run)."""
    require(SHARED_CASE.is_dir(), f"the shared real case is missing: {SHARED_CASE}")
    seen: list[str] = []

    def progress(_fraction: float, description: str) -> None:
        seen.append(description)

    def cancel() -> bool:
        return any("window 1/" in s for s in seen)

    config = SegmentConfig(model_folder=standin, **QUICK)
    with pytest.raises(Cancelled):
        stroke_seg.segment(FILES, model="nnunet", config=config, progress=progress, should_cancel=cancel)
    windows = [s for s in seen if "nnU-Net fold 1/1, window" in s]
    assert len(windows) == 1 and "window 1/" in windows[0], windows
    again = stroke_seg.segment(FILES, model="nnunet", config=config)
    assert np.array_equal(np.asarray(again.mask.dataobj), reference > 0)


def test_weights_checksum_follows_the_folder(standin, tmp_path):
    """Other weights, other checksum (the result cache key holds it): a fold rewritten with another seed."""
    other = shutil.copytree(standin, tmp_path / "other")
    config = SegmentConfig(model_folder=other)
    before = models.weights_sha256("nnunet", config)
    assert before == models.weights_sha256("nnunet", SegmentConfig(model_folder=standin))
    torch.save(
        make_nnunet_standin.checkpoint(0, 1, make_nnunet_standin.plans_json(), make_nnunet_standin.dataset_json()),
        other / "fold_0" / "checkpoint_final.pth",
    )
    os.utime(other / "fold_0" / "checkpoint_final.pth", ns=(1, 1))  # even with the old size, a new time
    assert models.weights_sha256("nnunet", config) != before


@pytest.mark.slow
def test_job_cache_key_holds_the_weights_checksum(standin, phantom_files, tmp_path, monkeypatch):
    """The app's job engine: the same files and model name serve the cached result while the folder's weights are
    the same, and run again once a fold is rewritten with other weights."""
    import asyncio

    from stroke_seg.serving.cache import ResultCache
    from stroke_seg.serving.jobs import JobEngine

    root = tmp_path / "models"
    shutil.copytree(standin, root / "mine")
    monkeypatch.setenv(nnunet.MODELS_ENV, str(root))
    models.register_nnunet_folders()
    engine = JobEngine(ResultCache(tmp_path / "cache"), tick_s=0.1)
    engine.config = engine.config.replace(**QUICK)
    files = {"dwi": str(phantom_files["dwi"]), "adc": str(phantom_files["adc"]), "flair": None, "ground_truth": None}

    def last_kind() -> str:
        async def run():
            return [e async for e in engine.run(files, "nnunet:mine", "fast", lambda *a, **k: None)][-1][0]

        return asyncio.run(run())

    try:
        assert last_kind() == "done"
        assert last_kind() == "cached"
        ckpt = root / "mine" / "fold_0" / "checkpoint_final.pth"
        plans, dataset = make_nnunet_standin.plans_json(), make_nnunet_standin.dataset_json()
        torch.save(make_nnunet_standin.checkpoint(0, 7, plans, dataset), ckpt)
        os.utime(ckpt, ns=(2, 2))
        assert last_kind() == "done"
    finally:
        engine.stop()
        monkeypatch.delenv(nnunet.MODELS_ENV)
        models.register_nnunet_folders()


def test_folder_of_models_becomes_named_slow_models(standin, monkeypatch):
    monkeypatch.setenv(nnunet.MODELS_ENV, str(standin.parent))
    try:
        assert models.register_nnunet_folders() == ["nnunet:standin"]
        assert "nnunet:standin" in models.model_names()
        assert models.model_class("nnunet:standin").slow and models.model_class("nnunet").slow
        assert models.model_class("nnunet:standin").folder == standin
    finally:
        monkeypatch.delenv(nnunet.MODELS_ENV)
        models.register_nnunet_folders()
    assert "nnunet:standin" not in models.model_names()


def test_the_extra_keeps_the_cpu_torch_pin():
    """requirements-nnunet.txt installs beside the project's torch without replacing it."""
    pinned = next(ln for ln in (ROOT / "requirements.txt").read_text().splitlines() if ln.startswith("torch=="))
    version = pinned.split("==", 1)[1].strip()
    assert importlib.metadata.version("torch").split("+")[0] == version
    assert torch.__version__.split("+")[0] == version and not torch.version.cuda
    assert importlib.metadata.version("nnunetv2") == nnunet.NNUNET_VERSION
    extra = (ROOT / "requirements-nnunet.txt").read_text()
    pins = [ln.split("==")[0].strip().lower() for ln in extra.splitlines() if ln.strip() and not ln.startswith("#")]
    assert "nnunetv2" in pins and not {"torch", "torchvision", "timm"} & set(pins)


def test_deepisles_weights_checksum_follows_its_folder(tmp_path, monkeypatch):
    """The result cache key's weights part for DeepISLES (issue 29): the checked set's SHA-256, other for other
    weights."""
    require_module("stroke_segmentor")
    from deepisles_standins import write_standins

    from stroke_seg.models import deepisles

    monkeypatch.setenv(deepisles.WEIGHTS_ENV, str(write_standins(tmp_path / "a", seed=0)))
    first = models.weights_sha256(deepisles.NAME, SegmentConfig())
    assert first == deepisles.check_weights(tmp_path / "a").sha256
    monkeypatch.setenv(deepisles.WEIGHTS_ENV, str(write_standins(tmp_path / "b", seed=1)))
    assert models.weights_sha256(deepisles.NAME, SegmentConfig()) not in ("", first)


def test_listed_only_when_the_extra_imports(tmp_path):
    """Without nnunetv2 the model is not registered, and `models` says how to add it (never a failed import)."""
    hide = (
        "import importlib.util as u; _f = u.find_spec; "
        "u.find_spec = lambda n, *a, **k: None if n.split('.')[0] == 'nnunetv2' else _f(n, *a, **k); "
    )
    code = hide + (
        "from stroke_seg import models; from stroke_seg.cli import main; "
        "print('names', models.model_names()); main(['models'])"
    )
    env = dict(os.environ, **{nnunet.MODELS_ENV: str(tmp_path)})
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "nnunet" not in next(line for line in out.stdout.splitlines() if line.startswith("names"))
    line = next(line for line in out.stdout.splitlines() if line.startswith("nnunet "))
    assert "not installed: " in line and "--no-deps -r requirements-nnunet.txt" in line
