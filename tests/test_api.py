from __future__ import annotations

import json

import numpy as np
import pytest

import stroke_seg
from conftest import REPORT_KEYS
from stroke_seg import Cancelled, ModelError, Result, SegmentConfig


def test_segment_returns_result_with_everything(phantom_files):
    r = stroke_seg.segment(phantom_files, model="adc-threshold")  # the phantom is the rule's stand-in case
    assert isinstance(r, Result)
    assert r.model == "adc-threshold" and r.model_version
    assert set(r.timings) == {"load", "preprocess", "inference", "postprocess", "metrics", "report", "total"}
    assert r.metrics.comparison is not None and r.metrics.comparison.dice > 0.9
    assert r.metrics.count == 1
    assert r.probability.get_data_dtype() == np.float32
    report = json.loads(json.dumps(r.to_dict()))
    assert set(REPORT_KEYS) <= set(report), set(REPORT_KEYS) - set(report)


def test_progress_rises_to_one_and_names_every_stage(phantom_files):
    calls = []
    stroke_seg.segment(phantom_files, progress=lambda f, d: calls.append((f, d)))
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    stages = {d.split(":")[0] for _, d in calls}
    assert stages == {"load", "preprocess", "inference", "postprocess", "metrics", "report"}


def test_cancel_raises_cancelled(phantom_files):
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) >= 2  # let loading pass, stop at preprocessing

    with pytest.raises(Cancelled):
        stroke_seg.segment(phantom_files, should_cancel=cancel)


def test_folder_input_and_unknown_model(phantom_files):
    folder = phantom_files["dwi"].parent
    assert (
        stroke_seg.segment(folder, model="adc-threshold").metrics.comparison is not None
    )  # mask.nii.gz found as ground truth
    with pytest.raises(ModelError, match="expected one of"):
        stroke_seg.segment(folder, model="nope")


def test_config_validates():
    with pytest.raises(ValueError, match="mode"):
        SegmentConfig(mode="slow")
    with pytest.raises(ValueError, match="threshold"):
        SegmentConfig(threshold=1.5)


def test_min_lesion_size_removes_small_components(phantom_files):
    big = stroke_seg.segment(phantom_files, model="adc-threshold", config=SegmentConfig(min_lesion_ml=0.0))
    none = stroke_seg.segment(
        phantom_files, model="adc-threshold", config=SegmentConfig(min_lesion_ml=big.metrics.volume_ml * 2)
    )
    assert big.metrics.count == 1 and none.metrics.count == 0
