"""adc-threshold on a generated set covering every pattern (acquisitions drawn per case)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import stroke_seg
from stroke_seg.synthetic import generator as synth

pytestmark = pytest.mark.slow  # 14 generated heads through the whole pipeline (brain extraction included)


@pytest.fixture(scope="module")
def results():
    """The 14 heads, generated two at a time on other threads (numpy and scipy release the GIL; each case has its own
    random generator, so the images are the same) while this thread segments the ones ready."""
    out = []
    plan = synth.case_plan(14, seed=0)
    with ThreadPoolExecutor(2) as pool:
        for (_, pattern), c in zip(plan, pool.map(lambda sp: synth.make_case(*sp), plan)):
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
