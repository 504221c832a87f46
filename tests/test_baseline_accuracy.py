"""adc-threshold on a generated set covering every pattern (acquisitions drawn per case)."""

from __future__ import annotations

import numpy as np
import pytest

import stroke_seg
from stroke_seg.synthetic import generator as synth

pytestmark = pytest.mark.slow  # 14 generated heads through the whole pipeline (brain extraction included)


@pytest.fixture(scope="module")
def results():
    out = []
    for case_seed, pattern in synth.case_plan(14, seed=0):
        c = synth.make_case(case_seed, pattern)
        r = stroke_seg.segment(
            {"dwi": c.dwi, "adc": c.adc, "flair": c.flair, "ground_truth": c.mask}, model="adc-threshold"
        )
        out.append((pattern, r))
    return out


def test_covers_every_pattern(results):
    assert {p for p, _ in results} == set(synth.PATTERNS)


def test_mean_dice_on_lesion_cases(results):
    dices = [r.metrics.comparison.dice for p, r in results if p in synth.LESION_PATTERNS]
    assert len(dices) >= 8
    assert np.mean(dices) >= 0.75, dices


def test_controls_and_mimics_stay_below_1_ml(results):
    for p, r in results:
        if p not in synth.LESION_PATTERNS:
            assert r.metrics.volume_ml < 1.0, (p, r.metrics.volume_ml)
