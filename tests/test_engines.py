"""Network engines: the default engine agrees with the float32 torch reference on every example and shared real
scan in fast mode, and in accurate mode (the same float32 engine on mirrored windows) on the smallest-lesion example;
a missing or failing engine falls back to the reference; progress and cancel keep their grain."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import stroke_seg
from conftest import require
from stroke_seg.models import engines
from stroke_seg.models.unet import WEIGHTS_PATH
from stroke_seg.serving.batch import discover_cases
from stroke_seg.synthetic.train import REAL_CASES

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DICE_MIN = 0.999
VOLUME_TOLERANCE = 0.005


@pytest.fixture(scope="module")
def weights():
    require(WEIGHTS_PATH.is_file(), f"U-Net weights missing at {WEIGHTS_PATH}")


def _cases() -> list[tuple[str, dict]]:
    cases = [(f"example {n}", f) for n, f in discover_cases(ROOT / "examples")]
    for name, scan in REAL_CASES.items():
        if (SHARED / name).is_dir():
            cases.append((f"real {name}", {r: SHARED / name / f for r, f in scan.inputs.items()}))
    return cases


def _mask(files, **config) -> np.ndarray:
    result = stroke_seg.segment(files, model="unet", config=stroke_seg.SegmentConfig(**config))
    return np.asarray(result.mask.dataobj) > 0


def _mask_and_engines(files, **config) -> tuple[np.ndarray, set[str]]:
    """The mask, and the engines that actually ran the network for it (after any fallback)."""
    with engines.record_engines() as ran:
        mask = _mask(files, **config)
    return mask, ran


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fast", "accurate"])
def test_the_default_engine_agrees_with_the_float32_reference(weights, mode):
    require(engines.openvino_available(), "OpenVINO is not installed: the default engine is the reference itself")
    missing = [n for n in REAL_CASES if SHARED.is_dir() and not (SHARED / n).is_dir()]
    require(not missing, f"shared real scans missing: {missing}")
    cases = _cases()
    if mode == "accurate":  # the same float32 engine on mirrored windows: the smallest lesion, where a voxel counts
        cases = [(n, f) for n, f in cases if n == "example lacunar"]
        assert len(cases) == 1
    chosen = engines.resolve_engine("auto", torch.device("cpu"), mode)
    assert chosen != "torch"
    failures = []
    for name, files in cases:
        (ref, ran_ref), (out, ran) = (  # masks only: the clinical report (its registration) is not asked for
            _mask_and_engines(files, mode=mode, engine=e, clinical_report=False) for e in ("torch", "auto")
        )
        # a fallback to torch (only logged) would compare the reference with itself
        assert ran_ref == {"torch"} and ran == {chosen}, f"{name}: engines {ran_ref} and {ran}, expected {chosen}"
        total = int(ref.sum() + out.sum())
        dice = 2 * int((ref & out).sum()) / total if total else 1.0
        volume = abs(int(out.sum()) - int(ref.sum())) / max(int(ref.sum()), 1)
        if dice < DICE_MIN or volume > VOLUME_TOLERANCE:
            failures.append(f"{name}: Dice {dice:.5f}, volume {volume:+.3%} ({out.sum()} vs {ref.sum()} voxels)")
    assert not failures, f"engine {chosen} ({mode}) disagrees with the reference: {failures}"


def test_resolve_engine_per_device_and_mode(monkeypatch):
    assert engines.resolve_engine("auto", torch.device("cuda"), "fast") == "torch"
    assert engines.resolve_engine("openvino", torch.device("cuda"), "fast") == "torch"
    assert engines.resolve_engine("torch", torch.device("cpu"), "accurate") == "torch"
    with pytest.raises(ValueError, match="engine must be one of"):
        engines.resolve_engine("tensorrt", torch.device("cpu"), "fast")
    with pytest.raises(ValueError, match="engine must be one of"):
        stroke_seg.SegmentConfig(engine="tensorrt")
    monkeypatch.setattr(engines, "openvino_available", lambda: True)
    monkeypatch.setattr(engines, "native_bf16", lambda: False)
    assert engines.resolve_engine("openvino-bf16", torch.device("cpu"), "fast") == "openvino"
    assert engines.resolve_engine("auto", torch.device("cpu"), "accurate") == "openvino"
    monkeypatch.setattr(engines, "native_bf16", lambda: True)
    assert engines.resolve_engine("auto", torch.device("cpu"), "accurate") == engines.AUTO_CPU["accurate"]
    assert engines.resolve_engine("auto", torch.device("cpu"), "fast") == engines.AUTO_CPU["fast"]


def _example() -> dict:
    return dict(discover_cases(ROOT / "examples"))["territorial_mca"]


@pytest.mark.slow
def test_missing_openvino_falls_back_to_the_reference(weights, monkeypatch, caplog):
    reference = _mask(_example(), engine="torch")
    monkeypatch.setattr(engines, "openvino_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="stroke_seg.models.engines"):
        mask, ran = _mask_and_engines(_example(), engine="openvino")
    assert (mask == reference).all() and ran == {"torch"}
    assert "OpenVINO is not installed" in caplog.text


@pytest.mark.slow
def test_an_engine_that_fails_to_build_or_to_run_falls_back(weights, monkeypatch, caplog):
    require(engines.openvino_available(), "OpenVINO is not installed")
    reference = _mask(_example(), engine="torch")
    monkeypatch.setattr(engines, "_compiled", {})

    def broken_build(*args, **kwargs):
        raise RuntimeError("no CPU plugin")

    monkeypatch.setattr(engines, "_openvino_engine", broken_build)
    with caplog.at_level(logging.WARNING):
        mask, ran = _mask_and_engines(_example(), engine="openvino")
    assert (mask == reference).all() and ran == {"torch"}
    assert "failed to build" in caplog.text

    def fails_at_run(*args, **kwargs):
        def run(x):
            raise RuntimeError("infer request failed")

        return run

    monkeypatch.setattr(engines, "_compiled", {})
    monkeypatch.setattr(engines, "_openvino_engine", fails_at_run)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        mask, ran = _mask_and_engines(_example(), engine="openvino")
    assert (mask == reference).all() and ran == {"torch"}
    assert "running the torch reference" in caplog.text


def test_progress_and_cancel_keep_their_grain_with_the_default_engine(weights):
    events: list[tuple[float, str]] = []
    stroke_seg.segment(_example(), model="unet", progress=lambda f, d: events.append((f, d)))
    windows = [d for _, d in events if "window" in d]
    assert len(windows) >= 4, events
    fired = threading.Event()
    seen_at: list[float] = []

    def progress(fraction, description):
        if "window 1/" in description and not fired.is_set():
            fired.set()
            seen_at.append(time.perf_counter())

    with pytest.raises(stroke_seg.Cancelled):
        stroke_seg.segment(
            _example(),
            model="unet",
            config=stroke_seg.SegmentConfig(mode="accurate"),
            progress=progress,
            should_cancel=fired.is_set,
        )
    assert time.perf_counter() - seen_at[0] <= 0.5
