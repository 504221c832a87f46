from __future__ import annotations

import numpy as np
import pytest

from stroke_seg.pipeline.metrics import compare, lesion_table, measure, voxel_volume_ml

AFF = np.diag([2.0, 2.0, 2.0, 1.0])  # 8 mm³ voxels = 0.008 mL


def _vol(*boxes, shape=(10, 10, 10)):
    a = np.zeros(shape, bool)
    for b in boxes:
        a[b] = True
    return a


def test_voxel_volume():
    assert voxel_volume_ml(AFF) == pytest.approx(0.008)


def test_diagonal_voxels_are_one_lesion_with_26_connectivity():
    m = np.zeros((5, 5, 5), bool)
    m[1, 1, 1] = m[2, 2, 2] = True  # corner-touching only
    assert measure(m, AFF).count == 1


def test_lesion_table_volume_centroid_and_adc():
    m = _vol(np.s_[0:2, 0:2, 0:2], np.s_[6:7, 6:7, 6:9])  # 8 voxels and 3 voxels
    adc = np.where(m, 400.0, 800.0)
    adc[6, 6, 6:9] = [300, 400, 500]
    rows = lesion_table(m, AFF, adc)
    assert [r.voxels for r in rows] == [8, 3]
    assert rows[0].volume_ml == pytest.approx(0.064)
    assert rows[0].centroid_mm == pytest.approx((1.0, 1.0, 1.0))  # voxel (0.5,0.5,0.5) * 2 mm
    assert rows[1].centroid_mm == pytest.approx((12.0, 12.0, 14.0))
    assert rows[1].mean_adc == pytest.approx(400.0)


def test_isles22_metrics_by_hand():
    # truth: lesions A (8 vox) and B (1 vox); prediction: half of A (4 vox) and a false lesion C (2 vox)
    truth = _vol(np.s_[0:2, 0:2, 0:2], np.s_[8, 8, 8])
    pred = _vol(np.s_[0:1, 0:2, 0:2], np.s_[5, 0, 0:2])
    c = compare(pred, truth, 0.008)
    assert c.dice == pytest.approx(2 * 4 / (6 + 9))
    assert c.avd_ml == pytest.approx(3 * 0.008)
    assert (c.true_positive_lesions, c.false_positive_lesions, c.false_negative_lesions) == (1, 1, 1)
    assert c.lesion_f1 == pytest.approx(1 / (1 + (1 + 1) / 2))
    assert c.lesion_count_diff == 0


def test_one_predicted_component_touching_two_truth_lesions():
    truth = _vol(np.s_[0, 0, 0], np.s_[0, 0, 2])
    pred = _vol(np.s_[0, 0, 0:3])
    c = compare(pred, truth, 1.0)
    assert (c.true_positive_lesions, c.false_positive_lesions, c.false_negative_lesions) == (2, 0, 0)
    assert c.lesion_f1 == 1.0 and c.lesion_count_diff == 1


@pytest.mark.parametrize(
    "pred_empty, truth_empty, dice, f1",
    [(True, True, 1.0, 1.0), (False, True, 0.0, 0.0), (True, False, 0.0, 0.0)],
    ids=["both-empty", "false-alarm", "missed"],
)
def test_empty_conventions(pred_empty, truth_empty, dice, f1):
    full = _vol(np.s_[2:4, 2:4, 2:4])
    empty = np.zeros_like(full)
    c = compare(empty if pred_empty else full, empty if truth_empty else full, 0.008)
    assert c.dice == dice and c.lesion_f1 == f1
