"""Person track ids across frames."""

import numpy as np
import pytest

from pipelines.tracking import IouTracker, box_iou, suppress_duplicates


def test_box_iou_exact():
    a = np.array([[0, 0, 2, 2]], np.float32)
    b = np.array([[0, 0, 2, 2], [1, 1, 3, 3], [5, 5, 6, 6], [0, 0, 0, 0]], np.float32)
    np.testing.assert_allclose(box_iou(a, b)[0], [1.0, 1 / 7, 0.0, 0.0], rtol=1e-6)


def test_tracks_follow_moving_people_and_swapped_order():
    t = IouTracker()
    left = np.array([0.1, 0.1, 0.9, 0.3], np.float32)
    right = np.array([0.1, 0.6, 0.9, 0.8], np.float32)
    assert t.update(np.stack([left, right])).tolist() == [0, 1]
    # Detector returns them in the other order, slightly moved: ids follow the people.
    assert t.update(np.stack([right + 0.01, left + 0.01])).tolist() == [1, 0]
    # One person missing for a frame, then back: same id; a newcomer gets a new id.
    assert t.update(np.stack([left + 0.02])).tolist() == [0]
    newcomer = np.array([0.5, 0.4, 0.6, 0.5], np.float32)
    assert t.update(np.stack([right, left + 0.02, newcomer])).tolist() == [1, 0, 2]
    assert t.update(np.zeros((0, 4), np.float32)).tolist() == []


def test_tracks_expire_after_max_gap():
    t = IouTracker(max_gap=2)
    box = np.array([[0.1, 0.1, 0.5, 0.5]], np.float32)
    assert t.update(box).tolist() == [0]
    t.update(np.zeros((0, 4)))
    t.update(np.zeros((0, 4)))
    assert t.update(box).tolist() == [1]


def test_bad_parameters():
    with pytest.raises(ValueError, match="min_iou=0"):
        IouTracker(min_iou=0)
    with pytest.raises(ValueError, match="max_gap=0"):
        IouTracker(max_gap=0)


def test_suppress_duplicates_keeps_the_better_of_two_poses_of_one_person():
    boxes = np.array(
        [[0.1, 0.1, 0.9, 0.4], [0.11, 0.1, 0.9, 0.41], [0.1, 0.5, 0.9, 0.8], [0.1, 0.3, 0.9, 0.6]],
        np.float32,
    )
    scores = np.array([0.6, 0.9, 0.8, 0.7], np.float32)
    # Box 0 overlaps box 1 (IoU 0.95) and loses; box 3 overlaps 0 and 2 by a third only.
    assert suppress_duplicates(boxes, scores).tolist() == [1, 2, 3]
    assert suppress_duplicates(np.zeros((0, 4)), np.zeros(0)).tolist() == []
    with pytest.raises(ValueError, match="max_iou=0"):
        suppress_duplicates(boxes, scores, max_iou=0)


def test_a_jittering_box_keeps_its_id_when_it_stays_near_its_person():
    t = IouTracker()
    person = np.array([[0.10, 0.30, 0.50, 0.40]], np.float32)  # diagonal ~0.41
    assert t.update(person).tolist() == [0]
    # The detector's box jumps to a small one: IoU 0.075 < 0.1, centre shift 0.13 < 0.5 * 0.41.
    jumped = np.array([[0.10, 0.36, 0.25, 0.38]], np.float32)
    assert box_iou(jumped, person)[0, 0] < 0.1
    assert t.update(jumped).tolist() == [0]
    # Someone far away is somebody else.
    far = np.array([[0.10, 0.80, 0.50, 0.90]], np.float32)
    assert t.update(np.vstack([jumped, far])).tolist() == [0, 1]
    with pytest.raises(ValueError, match="max_center_shift=-1"):
        IouTracker(max_center_shift=-1)
