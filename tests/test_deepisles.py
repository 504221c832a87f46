"""The ``deepisles-nvauto`` backend against the ``stroke_segmentor`` package itself, with stand-in checkpoints.

The package's own ``Inferer`` (its weight download replaced by the stand-in folder, nothing else) writes the
reference mask; ``segment()`` / the CLI / the app must give the same mask on the same files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import stroke_seg
from apphelpers import ROOT
from conftest import require, require_module, save
from stroke_seg.errors import Cancelled, ModelError
from stroke_seg.types import SegmentConfig

require_module("stroke_segmentor")
require_module("monai")
pytestmark = pytest.mark.slow  # the package's own pipeline and ours, 15 checkpoints each, per test

from deepisles_standins import package_mask, write_standins  # noqa: E402

from stroke_seg.models import deepisles, deepisles_weights  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "isles22-strokecase0001"
TORCH = SegmentConfig(engine="torch")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return write_standins(tmp_path_factory.mktemp("deepisles-weights"))


@pytest.fixture
def use_weights(weights, monkeypatch):
    monkeypatch.setenv(deepisles.WEIGHTS_ENV, str(weights))
    return weights


def _rotation(deg) -> np.ndarray:
    ax, ay, az = np.radians(deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rx @ ry @ rz


GEOMETRIES = {
    # name: (direction cosines, voxel size mm, stored dtype)
    "ras-1mm-float32": (np.eye(3), (1.0, 1.0, 1.0), np.float32),
    "lps-anisotropic-float32": (np.diag([-1.0, -1.0, 1.0]), (0.9, 0.9, 2.5), np.float32),
    "oblique-thick-int16": (_rotation((12, -7, 20)), (1.8, 1.8, 3.0), np.int16),
}


SMALL = ((100.0, 120.0, 84.0), (44.0, 54.0, 38.0))
"""The default phantom: field of view and brain radii (mm), a third of the voxels of a head-sized one (the package
and the backend resample every voxel at 1 mm, 15 times); the backend's window covers it, as it does a head."""
HEAD_BRAIN_MM = (65.0, 78.0, 55.0)
"""Brain radii (mm) of a phantom with an explicit ``extent`` (head-sized, as the fields of view given here are)."""


def stripped_case(folder: Path, geometry: str, seed: int = 0, lesion_mm: float = 9.0, extent=None) -> dict[str, Path]:
    """A skull-stripped head phantom (zeros outside the brain) with one lesion, both defined in world space (mm),
    sampled on ``geometry`` over ``extent`` (mm; None: :data:`SMALL`; 140 x 160 x 110 mm fits one 192 x 192 x 128
    window at 1 mm, 150 x 170 x 130 mm needs two): every geometry shows the same anatomy."""
    rot, vs, dtype = GEOMETRIES[geometry]
    extent, brain_mm = SMALL if extent is None else (extent, HEAD_BRAIN_MM)
    extent = np.asarray(extent, dtype=float)  # mm
    shape = tuple(int(round(e / v)) for e, v in zip(extent, vs))
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(vs)
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    ijk = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"), -1)
    world = ijk @ affine[:3, :3].T.astype(np.float32) + affine[:3, 3].astype(np.float32)
    rng = np.random.default_rng(seed)
    brain = ((world / np.array(brain_mm)) ** 2).sum(-1) <= 1
    centre = np.array([25.0, -10.0, 8.0]) + rng.uniform(-5, 5, 3)
    lesion = (((world - centre) ** 2).sum(-1) <= lesion_mm**2) & brain
    dwi = np.where(brain, 100.0 + rng.normal(0, 3, shape), 0.0)
    dwi = np.where(lesion, 210.0 + rng.normal(0, 3, shape), dwi)
    adc = np.where(brain, 800.0 + rng.normal(0, 25, shape), 0.0)
    adc = np.where(lesion, 430.0 + rng.normal(0, 25, shape), adc)
    folder.mkdir(parents=True, exist_ok=True)
    scale = 10.0 if dtype == np.int16 else 1.0
    return {
        "dwi": save(folder / "dwi.nii.gz", np.round(dwi * scale) if scale != 1 else dwi, affine, dtype),
        "adc": save(folder / "adc.nii.gz", np.round(adc) if scale != 1 else adc, affine, dtype),
    }


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 1.0 if not a.any() and not b.any() else 2 * (a & b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_mask_equals_the_packages_own(geometry, tmp_path, use_weights, monkeypatch):
    files = stripped_case(tmp_path / "case", geometry)
    reference = package_mask(monkeypatch, use_weights, files["adc"], files["dwi"], tmp_path / "pkg.nii.gz")
    assert reference.sum() > 100  # the rule finds the lesion: the comparison has something to compare
    result = stroke_seg.segment(files, model=deepisles.NAME, config=TORCH)
    mask = np.asarray(result.mask.dataobj)
    assert mask.shape == reference.shape == nib.load(str(files["dwi"])).shape
    np.testing.assert_allclose(result.mask.affine, nib.load(str(files["dwi"])).affine, atol=1e-5)
    assert dice(mask, reference) >= 0.99, (int(mask.sum()), int(reference.sum()))
    report = result.to_dict()
    assert report["model"] == deepisles.NAME
    assert report["model_details"]["weights_checkpoints"] == 15
    assert len(report["model_details"]["weights_sha256"]) == 64
    assert report["model_details"]["skull_stripped_by_stroke_seg"] is False
    assert not any("skull-stripped" in n for n in report["notes"])


def test_real_skull_stripped_scan_equals_the_package(tmp_path, use_weights, monkeypatch):
    require(SHARED.is_dir(), f"shared real scan {SHARED.name} not present")
    reference = package_mask(monkeypatch, use_weights, SHARED / "adc.nii.gz", SHARED / "dwi.nii.gz", tmp_path / "p.nii")
    result = stroke_seg.segment(
        {"dwi": SHARED / "dwi.nii.gz", "adc": SHARED / "adc.nii.gz"}, model=deepisles.NAME, config=TORCH
    )
    mask = np.asarray(result.mask.dataobj)
    assert reference.sum() > 100
    assert dice(mask, reference) >= 0.99
    assert result.model_details["windows_per_checkpoint"] == 8  # 224x224x146 at 1 mm: 2x2x2 windows, none outside


def test_cli_with_weights_env_equals_package_and_names_the_model(tmp_path, weights, monkeypatch):
    """The acceptance command, default engine: same mask as the package's."""
    files = stripped_case(tmp_path / "case", "oblique-thick-int16", seed=3)
    reference = package_mask(monkeypatch, weights, files["adc"], files["dwi"], tmp_path / "pkg.nii.gz")
    out, report = tmp_path / "mask.nii.gz", tmp_path / "report.json"
    env = dict(os.environ, **{deepisles.WEIGHTS_ENV: str(weights)})
    cmd = [sys.executable, "-m", "stroke_seg", "segment", "--dwi", str(files["dwi"]), "--adc", str(files["adc"])]
    cmd += ["--model", deepisles.NAME, "--out", str(out), "--json", str(report)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert dice(np.asarray(nib.load(str(out)).dataobj), reference) >= 0.99
    data = json.loads(report.read_text())
    assert data["model"] == deepisles.NAME
    assert data["model_details"]["engine"] == "torch"


def test_openvino_engine_on_request_gives_the_same_mask(tmp_path, monkeypatch):
    """``engine="openvino"``: the rule stand-ins convert, run in OpenVINO float32, and give the package's mask. Three
    different stand-ins, each in five of the 15 files: three conversions (each file is converted once per machine)."""
    require_module("openvino")
    weights = write_standins(tmp_path / "weights", n=3)
    for i in range(3, 15):
        (weights / f"model{i}.ts").write_bytes((weights / f"model{i % 3}.ts").read_bytes())
    monkeypatch.setenv(deepisles.WEIGHTS_ENV, str(weights))
    monkeypatch.setenv("STROKE_SEG_ENGINE_CACHE", str(tmp_path / "engines"))  # converted here, as on a new machine
    files = stripped_case(tmp_path / "case", "oblique-thick-int16", seed=4)
    reference = package_mask(monkeypatch, weights, files["adc"], files["dwi"], tmp_path / "pkg.nii.gz")
    result = stroke_seg.segment(files, model=deepisles.NAME, config=SegmentConfig(engine="openvino"))
    assert result.model_details["engine"] == "openvino"
    assert len(list((tmp_path / "engines").glob("deepisles-*.xml"))) == 3
    assert dice(np.asarray(result.mask.dataobj), reference) >= 0.99


def test_channel_order_matters(tmp_path, use_weights):
    files = stripped_case(tmp_path / "case", "ras-1mm-float32")
    right = np.asarray(stroke_seg.segment(files, model=deepisles.NAME, config=TORCH).mask.dataobj)
    # the same volumes handed over the other way round: the stand-ins' rule is not symmetric in the channels
    dwi, adc = (np.asarray(nib.load(str(files[k])).dataobj) for k in ("dwi", "adc"))
    affine = nib.load(str(files["dwi"])).affine
    swapped = {"dwi": save(tmp_path / "d.nii.gz", adc, affine), "adc": save(tmp_path / "a.nii.gz", dwi * 8, affine)}
    wrong = np.asarray(stroke_seg.segment(swapped, model=deepisles.NAME, config=TORCH).mask.dataobj)
    assert right.sum() > 100
    assert dice(right, wrong) < 0.5


def test_raw_head_is_skull_stripped_with_the_brain_mask_and_says_so(tmp_path, use_weights, monkeypatch):
    from stroke_seg.io.case import load_case
    from stroke_seg.pipeline.preprocess import from_canonical, preprocess

    files = stripped_case(tmp_path / "case", "ras-1mm-float32")
    head = {k: nib.load(str(p)) for k, p in files.items()}
    rng = np.random.default_rng(1)
    noisy = {}
    for k, img in head.items():  # a scanner's raw head: signal (scalp, noise) outside the brain too
        data = np.asarray(img.dataobj, dtype=np.float32)
        shell = (data == 0) & (rng.random(data.shape) < 0.6)
        data = np.where(shell, 60.0 if k == "dwi" else 2000.0, data) + np.where(data == 0, rng.random(data.shape), 0)
        noisy[k] = save(tmp_path / f"raw_{k}.nii.gz", data.astype(np.float32), img.affine)
    result = stroke_seg.segment(noisy, model=deepisles.NAME, config=TORCH)
    assert result.model_details["skull_stripped_by_stroke_seg"] is True
    assert any("skull-stripped with this project's brain mask" in n for n in result.notes)
    volumes = preprocess(load_case(noisy["dwi"], noisy["adc"]))
    brain = from_canonical(volumes.brain, volumes.ornt)
    stripped = {}
    for k in ("dwi", "adc"):
        img = nib.load(str(noisy[k]))
        stripped[k] = save(
            tmp_path / f"s_{k}.nii.gz", np.where(brain, img.get_fdata(), 0).astype(np.float32), img.affine
        )
    reference = package_mask(monkeypatch, use_weights, stripped["adc"], stripped["dwi"], tmp_path / "pkg.nii.gz")
    assert dice(np.asarray(result.mask.dataobj), reference) >= 0.99


def test_flair_is_ignored_with_a_note(tmp_path, use_weights):
    files = stripped_case(tmp_path / "case", "ras-1mm-float32")
    files["flair"] = files["dwi"]
    result = stroke_seg.segment(files, model=deepisles.NAME, config=TORCH)
    assert any("FLAIR ignored" in n for n in result.notes)


def test_progress_per_checkpoint_and_window_and_cancel_within_one_window(tmp_path, use_weights):
    files = stripped_case(tmp_path / "case", "ras-1mm-float32", extent=(150.0, 170.0, 130.0))
    events: list[str] = []
    result = stroke_seg.segment(files, model=deepisles.NAME, config=TORCH, progress=lambda f, d: events.append(d))
    n = result.model_details["windows_per_checkpoint"]
    assert n == 2  # 150 x 170 x 130 mm at 1 mm: two windows along the 130 mm axis, none outside the image
    windows = [e for e in events if ", window " in e]
    assert len(windows) == 15 * n
    for i in range(1, 16):
        for j in range(1, n + 1):
            assert any(f"checkpoint {i}/15, window {j}/{n}" in e for e in windows), (i, j)
    assert all("left" in e for e in windows)
    assert any("expected" in e for e in events[: events.index(windows[0])])  # the estimate, before the first window

    seen: list[str] = []
    stop = threading.Event()

    def progress(fraction: float, description: str) -> None:
        seen.append(description)
        if "checkpoint 3/15, window 1/2" in description:
            stop.set()

    with pytest.raises(Cancelled):
        stroke_seg.segment(files, model=deepisles.NAME, config=TORCH, progress=progress, should_cancel=stop.is_set)
    ran = [e for e in seen if ", window " in e]
    assert ran[-1].startswith("inference: checkpoint 3/15, window 1/2")  # no window ran after the cancel


def test_missing_and_corrupt_checkpoints_are_named(tmp_path, weights, monkeypatch):
    files = stripped_case(tmp_path / "case", "ras-1mm-float32")
    broken = tmp_path / "w"
    broken.mkdir()
    for p in weights.iterdir():
        (broken / p.name).write_bytes(p.read_bytes())
    (broken / "model7.ts").unlink()
    monkeypatch.setenv(deepisles.WEIGHTS_ENV, str(broken))
    stroke_seg.models._INSTANCES.pop(deepisles.NAME, None)
    with pytest.raises(ModelError, match=r"model7\.ts is missing"):
        stroke_seg.segment(files, model=deepisles.NAME, config=TORCH)
    (broken / "model7.ts").write_bytes(b"not a torchscript archive" * 100)
    with pytest.raises(ModelError, match=r"model7\.ts .*could not be loaded"):
        stroke_seg.segment(files, model=deepisles.NAME, config=TORCH)
    monkeypatch.setenv(deepisles.WEIGHTS_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(ModelError, match=r"model0\.ts \.\.\. model14\.ts"):
        stroke_seg.segment(files, model=deepisles.NAME, config=TORCH)


def test_offline_without_weights_says_where_to_put_them(tmp_path, monkeypatch):
    from stroke_segmentor import zenodo

    monkeypatch.delenv(deepisles.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(zenodo, "WEIGHTS_FOLDER", tmp_path / "empty-cache")
    monkeypatch.setattr(deepisles_weights, "_zenodo_reachable", lambda timeout_s=10.0: False)
    t0 = time.monotonic()
    with pytest.raises(ModelError) as err:
        deepisles.find_weights(lambda f, d: None)
    assert time.monotonic() - t0 < 5
    text = str(err.value)
    assert deepisles.RECORD_ID in text and deepisles.WEIGHTS_ENV in text and "model14.ts" in text


def test_offline_with_a_cached_download_uses_it(tmp_path, weights, monkeypatch):
    from stroke_segmentor import zenodo

    cache = tmp_path / "cache"
    for version in ("1.0.0", "1.2.0"):
        (cache / f"{deepisles.RECORD_ID}_v{version}").mkdir(parents=True)
        for p in weights.iterdir():
            (cache / f"{deepisles.RECORD_ID}_v{version}" / p.name).write_bytes(p.read_bytes())
    monkeypatch.delenv(deepisles.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(zenodo, "WEIGHTS_FOLDER", cache)
    monkeypatch.setattr(deepisles_weights, "_zenodo_reachable", lambda timeout_s=10.0: False)
    assert deepisles.find_weights(lambda f, d: None) == cache / f"{deepisles.RECORD_ID}_v1.2.0"


HIDE_PACKAGE = (
    "import importlib.util as u; _f = u.find_spec; "
    "u.find_spec = lambda n, *a, **k: None if n.split('.')[0] == 'stroke_segmentor' else _f(n, *a, **k); "
)


def test_listed_only_when_the_package_imports():
    assert deepisles.NAME in stroke_seg.models.model_names()
    listed, hidden, refused = _side_by_side(
        "-m stroke_seg models",
        HIDE_PACKAGE
        + "from stroke_seg import models; from stroke_seg.cli import main; "
        + "print('names', models.model_names()); main(['models'])",
        HIDE_PACKAGE
        + "import sys; from stroke_seg.cli import main; "
        + "sys.exit(main(['segment', '--dwi', 'x.nii.gz', '--adc', 'y.nii.gz', '--out', 'm.nii.gz', "
        + f"'--model', '{deepisles.NAME}']))",
    )
    assert listed.stdout.count(deepisles.NAME) == 1 and "not installed" not in listed.stdout
    assert hidden.returncode == 0, hidden.stderr
    names_line = next(line for line in hidden.stdout.splitlines() if line.startswith("names"))
    assert deepisles.NAME not in names_line
    assert f"{deepisles.NAME} not installed: " in hidden.stdout and "requirements-deepisles.txt" in hidden.stdout
    assert refused.returncode == 2 and "requirements-deepisles.txt" in refused.stderr, refused.stderr


def _side_by_side(*codes: str) -> list[subprocess.CompletedProcess]:
    """``python -c CODE`` for each code (``-m stroke_seg ...`` for a code starting with ``-m``), the interpreters
    running at the same time (each imports for seconds)."""
    argvs = [c.split() if c.startswith("-m ") else ["-c", c] for c in codes]
    procs = [
        subprocess.Popen([sys.executable, *a], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for a in argvs
    ]
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def test_app_dropdown_lists_it_only_when_importable():
    code = "import app; print('choices', [v for _, v in app.model_in.choices]); print('extra', app.EXTRA_MODELS)"
    shown, hidden = _side_by_side(code, HIDE_PACKAGE + code)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert deepisles.NAME in next(ln for ln in shown.stdout.splitlines() if ln.startswith("choices"))
    assert hidden.returncode == 0, hidden.stderr[-2000:]
    assert deepisles.NAME not in next(ln for ln in hidden.stdout.splitlines() if ln.startswith("choices"))
    assert "requirements-deepisles.txt" in next(ln for ln in hidden.stdout.splitlines() if ln.startswith("extra"))


def _variant(files: dict[str, Path], folder: Path, kind: str) -> tuple[dict[str, Path], callable]:
    """The same scan stored another way, and the map that brings a mask of the variant back to the original's voxel
    order (world space is unchanged, except for ``translate``, where the whole scan moves)."""
    folder.mkdir(parents=True, exist_ok=True)
    out, back = {}, lambda m: m
    for key, path in files.items():
        img = nib.load(str(path))
        data, affine = np.asarray(img.dataobj), img.affine.copy()
        n = np.asarray(data.shape)
        if kind.startswith("flip"):
            axis = int(kind[-1])
            data = np.flip(data, axis)
            flip = np.eye(4)
            flip[axis, axis], flip[axis, 3] = -1, n[axis] - 1
            affine = affine @ flip
            back = lambda m, axis=axis: np.flip(m, axis)  # noqa: E731
        elif kind == "permute":
            data, affine = np.transpose(data, (1, 0, 2)), affine[:, [1, 0, 2, 3]]
            back = lambda m: np.transpose(m, (1, 0, 2))  # noqa: E731
        elif kind == "translate":
            affine[:3, 3] += (12.3, -7.7, 31.0)
        elif kind == "perturb":
            affine[:3, :3] += np.random.default_rng(5).uniform(-1e-6, 1e-6, (3, 3))
        out[key] = save(folder / path.name, data, affine, img.get_data_dtype())
    return out, back


STORAGE_CASES = [
    ("flip0", "ras-1mm-float32"),
    ("flip2", "ras-1mm-float32"),
    ("permute", "ras-1mm-float32"),
    ("translate", "oblique-thick-int16"),
    ("perturb", "lps-anisotropic-float32"),
    pytest.param(
        "perturb",
        "oblique-thick-int16",
        marks=pytest.mark.xfail(
            strict=True,
            raises=AssertionError,
            reason="1e-6 noise on oblique direction cosines moves the package's 1 mm grid (MONAI Spacing rounds its "
            "extent): Dice 0.987 between the two; axis-aligned noise is removed before the package sees it",
        ),
    ),
    pytest.param(
        "flip0",
        "lps-anisotropic-float32",
        marks=pytest.mark.xfail(
            strict=True,
            raises=AssertionError,
            reason="the package resamples to 1 mm from the first stored voxel: on a 0.9 mm grid a flipped storage "
            "order moves that grid by a fraction of a millimetre (Dice 0.967 between the two on a 3.4 mL lesion)",
        ),
    ),
]


@pytest.mark.parametrize(("kind", "geometry"), STORAGE_CASES)
def test_storage_does_not_change_the_mask(kind, geometry, tmp_path, tmp_path_factory, monkeypatch):
    """Geometry properties of the backend: the same scan stored in another voxel order, moved, or with 1e-6 noise in
    its affine gives the same mask in world space. Voxel-wise stand-in rules, so only the geometry can differ."""
    weights = tmp_path_factory.getbasetemp() / "deepisles-voxelwise"
    if not (weights / "model14.ts").is_file():
        write_standins(weights, pool=False)
    monkeypatch.setenv(deepisles.WEIGHTS_ENV, str(weights))
    # the two known gaps were measured on the 150 x 170 x 130 mm phantom (two windows at 1 mm)
    extent = (150.0, 170.0, 130.0) if kind in ("perturb", "flip0") and geometry != "ras-1mm-float32" else None
    files = stripped_case(tmp_path / "case", geometry, seed=len(kind), **({"extent": extent} if extent else {}))
    base = np.asarray(stroke_seg.segment(files, model=deepisles.NAME, config=TORCH).mask.dataobj)
    varied, back = _variant(files, tmp_path / kind, kind)
    other = back(np.asarray(stroke_seg.segment(varied, model=deepisles.NAME, config=TORCH).mask.dataobj))
    assert base.sum() > 100
    assert dice(base, other) >= 0.99, (geometry, int(base.sum()), int(other.sum()))


def test_provisional_answers_refine_and_the_last_equals_the_final(tmp_path, use_weights):
    # head-sized, one window: on the small phantom the 15 stand-ins happen to agree voxel for voxel
    files = stripped_case(tmp_path / "case", "ras-1mm-float32", extent=(140.0, 160.0, 110.0))
    seen: list = []
    result = stroke_seg.segment(files, model=deepisles.NAME, config=TORCH, on_provisional=seen.append)
    assert [p.done for p in seen] == list(range(1, 16)) and {p.total for p in seen} == {15}
    assert seen[0].label == "provisional, 1/15 checkpoints" and seen[-1].label == "provisional, 15/15 checkpoints"
    final = np.asarray(result.mask.dataobj)
    assert np.array_equal(np.asarray(seen[-1].mask.dataobj), final)
    np.testing.assert_array_equal(seen[-1].probability.get_fdata(), result.probability.get_fdata())
    assert seen[-1].volume_ml == pytest.approx(result.metrics.volume_ml)
    assert seen[0].mask.shape == final.shape and np.asarray(seen[0].mask.dataobj).sum() > 100
    assert any(not np.array_equal(np.asarray(p.mask.dataobj), final) for p in seen[:-1])  # the stand-ins differ
    left = [p.remaining_s for p in seen]  # the estimate from the pace so far, down to 0 at the last checkpoint
    assert all(s > 0 for s in left[:-1]) and left[-1] == 0
    assert seen[0].to_dict()["status"] == "provisional"


def test_cancel_keeps_the_last_provisional_answer(tmp_path, use_weights):
    files = stripped_case(tmp_path / "case", "ras-1mm-float32")  # one window
    seen: list = []
    stop = threading.Event()

    def keep(provisional) -> None:
        seen.append(provisional)
        if provisional.done == 2:
            stop.set()

    with pytest.raises(Cancelled) as err:
        stroke_seg.segment(files, model=deepisles.NAME, config=TORCH, should_cancel=stop.is_set, on_provisional=keep)
    assert err.value.provisional is seen[-1] and err.value.provisional.label == "provisional, 2/15 checkpoints"
    assert np.asarray(err.value.provisional.mask.dataobj).sum() > 100
    with pytest.raises(Cancelled) as err:  # stopped before any checkpoint ended: nothing provisional to keep
        stroke_seg.segment(files, model=deepisles.NAME, config=TORCH, should_cancel=lambda: True, on_provisional=keep)
    assert err.value.provisional is None
