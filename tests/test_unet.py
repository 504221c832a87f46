"""The U-Net backend with its shipped weights: accuracy floor on a few held-out cases, cancel,
progress, fast/accurate output grids, weights integrity; and the ensemble."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import stroke_seg
from conftest import require
from stroke_seg import Cancelled, ModelError, SegmentConfig
from stroke_seg.models import unet as unet_mod
from stroke_seg.synthetic import generator as synth

pytestmark = pytest.mark.slow

HELD_OUT = [  # seeds never used in training (training 1_000_000+, validation 900_000+)
    (8_000_001, "territorial", synth.Acquisition(voxel_size=(2.0, 2.0, 2.0), orientation="LPS")),
    (8_000_002, "emboli", synth.Acquisition(voxel_size=(1.5, 1.5, 3.5), tilt_deg=(4.0, 0.0, -3.0), dtype="int16")),
    (8_000_003, "posterior", synth.Acquisition(voxel_size=(1.2, 1.2, 5.0), orientation="LPS", skull_stripped=True)),
    (8_000_004, "shine_through", synth.Acquisition(voxel_size=(2.0, 2.0, 2.0), oblique=True, tilt_deg=(6.0, 2.0, 0.0))),
]


@pytest.fixture(scope="module")
def weights():
    require(unet_mod.WEIGHTS_PATH.is_file(), f"U-Net weights missing at {unet_mod.WEIGHTS_PATH}")


@pytest.fixture(scope="module")
def cases():
    with ThreadPoolExecutor(2) as pool:  # two at a time (numpy and scipy release the GIL): the same images
        made = list(pool.map(lambda spa: synth.make_case(*spa), HELD_OUT))
    return {p: c for (_, p, _), c in zip(HELD_OUT, made)}


def _files(c):
    return {"dwi": c.dwi, "adc": c.adc, "flair": c.flair, "ground_truth": c.mask}


def test_accuracy_floor_on_four_held_out_cases(weights, cases):
    dice = []
    for pattern, c in cases.items():
        r = stroke_seg.segment(_files(c), model="unet")
        if pattern in synth.LESION_PATTERNS:
            dice.append(r.metrics.comparison.dice)
            assert r.metrics.comparison.lesion_f1 >= 0.5, (pattern, r.metrics.comparison)
        else:
            assert r.metrics.volume_ml < 1.0, (pattern, r.metrics.volume_ml)
    # A regression floor, below the shipped model's 0.731 on these cases (0.763 before the edge step of version
    # 0.4.0). The 0.85 target is measured on 28 cases by bench/evaluate.py: 0.876; see MODEL_CARD.md.
    assert np.mean(dice) >= 0.6, dice


def test_progress_rises_per_window_to_one(weights, cases):
    calls = []
    stroke_seg.segment(_files(cases["territorial"]), model="unet", progress=lambda f, d: calls.append((f, d)))
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    windows = [d for _, d in calls if "window" in d]
    assert len(windows) >= 2 and windows[-1].startswith("inference: window") and "/" in windows[-1]


def test_cancel_stops_within_one_window(weights, cases):
    seen = []

    def progress(f, d):
        seen.append(d)

    def cancel():
        return any("window 1/" in d for d in seen)  # ask to stop right after the first window

    with pytest.raises(Cancelled, match="window 2/"):
        stroke_seg.segment(_files(cases["territorial"]), model="unet", progress=progress, should_cancel=cancel)
    assert not any("window 2/" in d for d in seen)


@pytest.mark.parametrize("mode", ["fast", "accurate"])
def test_modes_return_masks_on_input_grid(weights, cases, mode):
    c = cases["emboli"]
    r = stroke_seg.segment(_files(c), model="unet", config=SegmentConfig(mode=mode))
    assert r.mask.shape == c.dwi.shape
    np.testing.assert_array_equal(r.mask.affine, c.dwi.affine)
    assert r.config.mode == mode and r.metrics.count >= 1


def test_ensemble_fuses_members(weights, cases, monkeypatch):
    """The ensemble's map is its members' maps fused as documented (mean by default; strict majority vote), on a
    case where the members disagree, so that either member alone is not the fusion."""
    from stroke_seg.models import get_model

    ensemble = get_model("ensemble")
    maps: dict[str, np.ndarray] = {}
    for backend in (*ensemble.backends, ensemble):  # record what each one returns, unchanged

        def recording(volumes, *, _predict=backend.predict, _name=backend.name, **kwargs):
            maps[_name] = np.array(_predict(volumes, **kwargs), np.float32)
            return maps[_name]

        monkeypatch.setattr(backend, "predict", recording)
    c = cases["territorial"]
    r = stroke_seg.segment(_files(c), model="ensemble")
    assert r.model == "ensemble" and "unet" in r.model_version and "adc-threshold" in r.model_version
    members = np.stack([maps[b.name] for b in ensemble.backends])
    if ensemble.fusion == "mean":
        expected = members.mean(axis=0)
    else:
        expected = ((members > r.config.threshold).sum(axis=0) > len(members) / 2).astype(np.float32)
    np.testing.assert_allclose(
        maps["ensemble"], expected, atol=1e-6, err_msg=f"not the {ensemble.fusion} of its members"
    )
    for b, member in zip(ensemble.backends, members):
        assert (np.abs(member - expected) > 0.1).sum() > 100, f"{b.name} alone is close to the fusion: no test"
    assert r.metrics.comparison.dice > 0.5


def test_missing_and_corrupt_weights_give_clear_errors(weights, tmp_path):
    with pytest.raises(ModelError, match="missing"):
        unet_mod.load_weights(tmp_path / "nope.pt")
    bad = tmp_path / "unet.pt"
    shutil.copy(unet_mod.WEIGHTS_PATH, bad)
    shutil.copy(unet_mod.WEIGHTS_PATH.with_suffix(".json"), tmp_path / "unet.json")
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="corrupt"):
        unet_mod.load_weights(bad)
    meta = json.loads((tmp_path / "unet.json").read_text())
    # the command as it was recorded when the shipped weights were trained (before the module moved to synthetic/)
    assert meta["command"].startswith(("python -m stroke_seg.synthetic.train", "python -m stroke_seg.train"))


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,  # only the Dice assertion is the known gap; a crash or a strict-mode failure is a failure
    reason="known gap: the shipped unet reaches Dice 0.476 against the expert mask (target 0.65); see MODEL_CARD.md",
)
def test_real_case_against_the_expert_mask(weights):
    from conftest import SHARED_CASE

    require(SHARED_CASE.is_dir(), f"the real ISLES'22 case is not at {SHARED_CASE}")
    r = stroke_seg.segment(
        {
            "dwi": SHARED_CASE / "dwi.nii.gz",
            "adc": SHARED_CASE / "adc.nii.gz",
            "ground_truth": SHARED_CASE / "expert_mask.nii.gz",
        },
        model="unet",
    )
    assert r.metrics.comparison.dice >= EXPERT_DICE_TARGET, r.metrics.comparison


EXPERT_DICE_TARGET = 0.65
