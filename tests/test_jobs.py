"""The job engine's input rules, without a UI: an example's files are never paired with a user's upload."""

from __future__ import annotations

import logging

import pytest

import stroke_seg
from stroke_seg.errors import InvalidImageError
from stroke_seg.serving.jobs import DICOM, after_upload, own_files

EXAMPLE = {"dwi": "ex/dwi.nii.gz", "adc": "ex/adc.nii.gz", "flair": "ex/flair.nii.gz", "ground_truth": "ex/gt.nii.gz"}


def test_an_upload_clears_the_examples_flair_and_ground_truth_only():
    state, cleared = after_upload({"left": list(EXAMPLE), "user": False}, "dwi")
    assert cleared == ["flair", "ground_truth"]
    assert state == {"left": ["adc"], "user": True}


def test_an_example_run_whole_is_used_as_it_is():
    assert own_files(dict(EXAMPLE), {"left": list(EXAMPLE), "user": False}) == EXAMPLE


def test_an_upload_is_never_paired_with_the_examples_adc():
    state, _ = after_upload({"left": list(EXAMPLE), "user": False}, "dwi")
    files = dict(EXAMPLE, dwi="mine/dwi.nii.gz", flair=None, ground_truth=None)
    with pytest.raises(InvalidImageError, match="paired with the example's ADC"):
        own_files(files, state)
    state, _ = after_upload(state, "adc")
    assert own_files(dict(files, adc="mine/adc.nii.gz"), state)["adc"] == "mine/adc.nii.gz"


def test_a_dicom_upload_drops_everything_the_example_left():
    state, _ = after_upload({"left": list(EXAMPLE), "user": False}, DICOM)
    # the upload handler has cleared the example's FLAIR and ground truth in the page
    files = own_files(dict(EXAMPLE, flair=None, ground_truth=None, **{DICOM: "mine/export.zip"}), state)
    assert files == {"dwi": None, "adc": None, "flair": None, "ground_truth": None, DICOM: "mine/export.zip"}


def test_the_start_up_job_runs_every_stage_and_gives_way_to_a_user(caplog):
    """The warm-up case is a brain with a lesion (every stage runs, the report included); a waiting job stops it."""
    from stroke_seg.serving.warmup import first_job, warm_up_case

    result = stroke_seg.segment(warm_up_case(), model="adc-threshold")
    assert result.metrics.count == 1 and 1.0 < result.metrics.volume_ml < 10.0
    assert result.report is not None and result.brain_ml > 500
    with caplog.at_level(logging.INFO, logger="stroke_seg.serving.warmup"):
        first_job("adc-threshold", stroke_seg.SegmentConfig(), should_cancel=lambda: True)
    assert "a job is waiting" in caplog.text


@pytest.mark.parametrize(
    "operator_env", [{}, {"MALLOC_TRIM_THRESHOLD_": "131072"}, {"STROKE_SEG_KEEP_FREED_MEMORY": "0"}]
)
def test_the_serving_allocator_keeps_freed_memory_unless_the_operator_set_it(operator_env):
    """Applied in a fresh process (glibc, as the app runs); an operator's own ``MALLOC_*_`` setting, or the switch
    that keeps glibc's defaults, is left alone."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from stroke_seg.serving import memory

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "NUMPY_MADVISE")) and k != memory.SWITCH}
    env |= operator_env
    code = (  # the second value: whether numpy still advised huge pages (the setter returns the previous state)
        "from numpy._core.multiarray import _set_madvise_hugepage as advise; "
        "from stroke_seg.serving.memory import keep_freed_memory; print(keep_freed_memory(), advise(False))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], env=env,
                         capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    assert out[0] == ("False" if operator_env else "True")
    assert out[1] == ("True" if "STROKE_SEG_KEEP_FREED_MEMORY" in operator_env else "False")
