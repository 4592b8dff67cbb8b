"""Person track ids across frames, on made sequences whose identities are known."""

import itertools

import numpy as np
import pytest

from pipelines.stages.tracking import (
    IouTracker,
    box_iou,
    keypoint_similarity,
    max_weight_assignment,
    suppress_duplicates,
)

FPS = 25.0


def person(cy: float, cx: float, h: float = 0.4, w: float = 0.1) -> np.ndarray:
    """A person's box (ymin, xmin, ymax, xmax) around centre (cy, cx), clipped to the frame."""
    return np.clip(np.array([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2]), 0, 1)


def track(frames, tracker=None) -> list[dict]:
    """Runs a tracker over frames of [(name, box), ...] (the detector's order); returns per frame
    {name: track id}."""
    tracker = tracker or IouTracker(fps=FPS)
    out = []
    for people in frames:
        boxes = np.array([box for _, box in people], np.float32).reshape(-1, 4)
        ids = tracker.update(boxes)
        assert ids.dtype == np.int64 and ids.shape == (len(people),)
        out.append({name: int(i) for (name, _), i in zip(people, ids)})
    return out


def ids_of(result: list[dict], name: str) -> list[int]:
    """The track id of `name` in each frame where it is seen."""
    return [frame[name] for frame in result if name in frame]


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


def test_two_people_crossing_keep_their_ids():
    # A walks right, B walks left, 0.025 of the frame width per frame; they pass between frames
    # 11 and 12, where A's new box lands exactly on B's last one (and B's on A's). The boxes
    # overlap for frames 9..14 (IoU up to 0.9). Matching on the last boxes alone (the tracker
    # before this one) swapped the two ids there; the constant-velocity prediction does not.
    frames = []
    for f in range(25):
        a = ("A", person(0.5, 0.2 + 0.025 * f))
        b = ("B", person(0.5, 0.775 - 0.025 * f, h=0.38))
        frames.append(sorted([a, b], key=lambda p: p[1][1]))  # detector order: left to right
    assert box_iou(frames[11][0][1][None], frames[11][1][1][None])[0, 0] > 0.5
    result = track(frames)
    assert ids_of(result, "A") == [0] * 25
    assert ids_of(result, "B") == [1] * 25


def test_crossing_with_the_one_behind_hidden_keeps_both_ids():
    # As they pass, B (behind) is not detected while the boxes' centres are within one box width:
    # frames 13..17. B's track coasts at its velocity and picks B up on the other side.
    frames, hidden = [], []
    for f in range(31):
        xa, xb = 0.2 + 0.02 * f, 0.8 - 0.02 * f
        people = [("A", person(0.5, xa))]
        if abs(xa - xb) < 0.1:
            hidden.append(f)
        else:
            people.append(("B", person(0.52, xb)))
        frames.append(people)
    assert hidden == [13, 14, 15, 16, 17]
    result = track(frames)
    assert ids_of(result, "A") == [0] * 31
    assert ids_of(result, "B") == [1] * 26


def test_occluded_person_keeps_the_id_when_back_nearby():
    # A walks right at 0.01 per frame, hidden for 20 frames (0.8 s) behind an obstacle, and comes
    # out where the walk leads; C stands still on the left all along.
    frames = []
    for f in range(60):
        people = [("C", person(0.5, 0.1))]
        if not 20 <= f < 40:
            people.append(("A", person(0.55, 0.3 + 0.01 * f)))
        frames.append(people)
    result = track(frames)
    assert ids_of(result, "C") == [0] * 60
    assert ids_of(result, "A") == [1] * 40


def test_person_stopping_while_hidden_keeps_the_id():
    # Hidden for 1 s while walking, then seen standing where they were hidden (the prediction ran
    # on; the gate around the last-seen place still holds them).
    frames = [[("A", person(0.5, 0.3 + 0.01 * f))] for f in range(10)]
    frames += [[] for _ in range(25)]
    frames += [[("A", person(0.5, 0.40))] for _ in range(5)]
    result = track(frames)
    assert ids_of(result, "A") == [0] * 15


def test_the_gate_widens_with_the_time_lost():
    # A stands still, is gone, and comes back 0.3 to the right: 0.73 diagonals of the box, no
    # overlap. After 2 frames that is somebody else (gate 0.5 + 0.25 * 2 / 25 diagonals); after
    # 30 frames (1.2 s: gate 0.8) it is A again.
    for absent, expected in ((2, 1), (30, 0)):
        frames = [[("A", person(0.5, 0.3))]] * 10 + [[]] * absent + [[("A", person(0.5, 0.6))]]
        assert ids_of(track(frames), "A") == [0] * 10 + [expected]


def leave_and_return(absent: int) -> list[list]:
    """A walks out of the right edge (the box clipped, then gone), stays out for `absent` frames,
    and walks back in at the same edge; B stands still all along."""
    frames = []
    for f in range(15):
        frames.append([("B", person(0.5, 0.2)), ("A", person(0.5, 0.85 + 0.01 * f))])
    for _ in range(absent):
        frames.append([("B", person(0.5, 0.2))])
    for f in range(15):
        frames.append([("B", person(0.5, 0.2)), ("A", person(0.5, 0.99 - 0.01 * f))])
    return frames


def test_person_leaving_and_coming_back_within_the_memory_keeps_the_id():
    # The memory is 2 s: 50 frames at 25 fps. A is out of the frame for 50 frames.
    result = track(leave_and_return(50))
    assert ids_of(result, "B") == [0] * 80
    assert ids_of(result, "A") == [1] * 30


def test_person_coming_back_after_the_memory_gets_a_new_id():
    result = track(leave_and_return(51))
    assert ids_of(result, "B") == [0] * 81
    assert ids_of(result, "A") == [1] * 15 + [2] * 15


def test_memory_follows_the_frame_rate():
    # The same 2 s at 10 fps: 20 frames absent keep the id, 21 do not.
    for absent, second in ((20, 1), (21, 2)):
        result = track(leave_and_return(absent), IouTracker(fps=10))
        assert ids_of(result, "A") == [1] * 15 + [second] * 15


def test_memory_boundary_in_frames():
    t = IouTracker(fps=FPS, max_lost_s=2 / FPS)  # absent for at most 2 frames
    box = np.array([[0.1, 0.1, 0.5, 0.5]], np.float32)
    empty = np.zeros((0, 4), np.float32)
    assert t.update(box).tolist() == [0]
    t.update(empty)
    t.update(empty)
    assert t.update(box).tolist() == [0]  # absent 2 frames: kept
    for _ in range(3):
        t.update(empty)
    assert t.num_tracks == 0
    assert t.update(box).tolist() == [1]  # absent 3 frames: forgotten


def test_jittering_boxes_keep_one_id():
    # MoveNet-like boxes: every edge jitters by 0.01 (sd), and every 7th frame the box shrinks to
    # the upper body; the person walks slowly right.
    rng = np.random.default_rng(0)
    frames = []
    for f in range(100):
        b = person(0.5, 0.3 + 0.003 * f) + rng.normal(0, 0.01, 4)
        if f % 7 == 3:
            b[2] = b[0] + 0.4 * (b[2] - b[0])  # upper body only
        frames.append([("A", np.clip(b, 0, 1))])
    assert ids_of(track(frames), "A") == [0] * 100


def test_missed_detections_keep_the_ids_of_two_walkers():
    # Two people walking towards each other on different rows, each missed in 30% of the frames
    # (at random, up to 4 frames in a row), both missed in some.
    rng = np.random.default_rng(1)
    frames = []
    for f in range(80):
        people = [
            ("A", person(0.3, 0.1 + 0.01 * f, h=0.3) + rng.normal(0, 0.005, 4)),
            ("B", person(0.7, 0.9 - 0.01 * f, h=0.3) + rng.normal(0, 0.005, 4)),
        ]
        frames.append([p for p in people if rng.random() >= 0.3])
    assert any(not f for f in frames)
    result = track(frames)
    assert set(ids_of(result, "A")) == {0}
    assert set(ids_of(result, "B")) == {1}


def test_new_people_get_new_ids_in_order_of_appearance():
    # A is lost at frame 10; D appears far from where A was (the other side of the frame) while
    # A's track is still remembered: D is somebody else. E appears next to B.
    frames = []
    for f in range(30):
        people = [("B", person(0.5, 0.5))]
        if f < 10:
            people.insert(0, ("A", person(0.5, 0.1)))
        if f >= 15:
            people.append(("D", person(0.5, 0.9)))
        if f >= 20:
            people.append(("E", person(0.5, 0.62)))
        frames.append(people)
    result = track(frames)
    assert [sorted(r.values()) for r in result[8:22]] == (
        [[0, 1]] * 2 + [[1]] * 5 + [[1, 2]] * 5 + [[1, 2, 3]] * 2
    )
    assert result[-1] == {"B": 1, "D": 2, "E": 3}
    assert ids_of(result, "A") == [0] * 10


def test_same_input_same_ids():
    rng = np.random.default_rng(2)
    frames = [
        [(k, person(0.5, 0.2 * k + 0.1) + rng.normal(0, 0.02, 4)) for k in range(4)]
        for _ in range(40)
    ]
    frames = [[p for p in f if rng.random() > 0.2] for f in frames]
    assert track(frames) == track(frames)


def test_a_jittering_box_keeps_its_id_when_it_stays_near_its_person():
    t = IouTracker()
    person_box = np.array([[0.10, 0.30, 0.50, 0.40]], np.float32)  # diagonal ~0.41
    assert t.update(person_box).tolist() == [0]
    # The detector's box jumps to a small one: IoU 0.075 < 0.1, centre shift 0.13 < 0.5 * 0.41.
    jumped = np.array([[0.10, 0.36, 0.25, 0.38]], np.float32)
    assert box_iou(jumped, person_box)[0, 0] < 0.1
    assert t.update(jumped).tolist() == [0]
    # Someone far away is somebody else.
    far = np.array([[0.10, 0.80, 0.50, 0.90]], np.float32)
    assert t.update(np.vstack([jumped, far])).tolist() == [0, 1]


def skeleton(arms_up: bool) -> np.ndarray:
    """float32 [17, 2] (x, y) COCO-17 keypoints of a person standing in `person(0.5, 0.5)`."""
    head = [(0.5, 0.33), (0.49, 0.32), (0.51, 0.32), (0.48, 0.33), (0.52, 0.33)]
    shoulders = [(0.46, 0.40), (0.54, 0.40)]
    if arms_up:
        arms = [(0.44, 0.34), (0.56, 0.34), (0.43, 0.30), (0.57, 0.30)]
    else:
        arms = [(0.44, 0.47), (0.56, 0.47), (0.43, 0.53), (0.57, 0.53)]
    legs = [(0.47, 0.53), (0.53, 0.53), (0.47, 0.61), (0.53, 0.61), (0.47, 0.69), (0.53, 0.69)]
    return np.array(head + shoulders + arms + legs, np.float32)  # elbows, then wrists


def test_keypoints_tell_apart_two_people_with_the_same_box():
    # Two people at the same place (one right behind the other): the boxes cannot tell them
    # apart, their poses can (arms up / arms down), whatever order the detector lists them in.
    t = IouTracker()
    box = person(0.5, 0.5)[None].repeat(2, axis=0).astype(np.float32)
    up, down = skeleton(True), skeleton(False)
    scores = np.full((2, 17), 0.9, np.float32)
    assert t.update(box, np.stack([up, down]), scores).tolist() == [0, 1]
    for k in range(6):
        kps = np.stack([down, up] if k % 2 == 0 else [up, down])
        expected = [1, 0] if k % 2 == 0 else [0, 1]
        assert t.update(box, kps, scores).tolist() == expected
    # Without confident keypoints the pair scores tie; still two distinct ids.
    ids = t.update(box, np.stack([up, down]), np.zeros((2, 17), np.float32))
    assert sorted(ids.tolist()) == [0, 1]


def test_keypoint_similarity():
    up, down = skeleton(True), skeleton(False)
    sc = np.full((1, 17), 0.9, np.float32)
    sim = keypoint_similarity(
        up[None], sc, np.stack([up, down, up + 0.3]), sc.repeat(3, 0), [0.08] * 3
    )
    assert sim.shape == (1, 3) and sim.dtype == np.float32
    assert sim[0, 0] == pytest.approx(1.0)
    assert 0.2 < sim[0, 1] < 0.9  # 4 of 17 keypoints differ
    assert sim[0, 2] < 1e-3
    none = keypoint_similarity(up[None], np.zeros((1, 17)), up[None], sc, [0.08])
    assert np.isnan(none[0, 0])


def brute_force(w: np.ndarray) -> float:
    """The largest summed weight over matchings, pairs of weight <= 0 excluded."""
    n, m = w.shape
    best = 0.0
    for k in range(min(n, m) + 1):
        for rows in itertools.combinations(range(n), k):
            for cols in itertools.permutations(range(m), k):
                if all(w[r, c] > 0 for r, c in zip(rows, cols)):
                    best = max(best, sum(w[r, c] for r, c in zip(rows, cols)))
    return best


def test_max_weight_assignment_is_optimal():
    rng = np.random.default_rng(3)
    for n, m in [(1, 1), (2, 3), (3, 2), (4, 4), (5, 3), (3, 6), (6, 6)]:
        for _ in range(20):
            w = rng.random((n, m))
            w[rng.random((n, m)) < 0.4] = 0.0  # forbidden pairs
            rows, cols = max_weight_assignment(w)
            assert rows.dtype == cols.dtype == np.int64
            assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
            assert np.all(w[rows, cols] > 0)
            assert w[rows, cols].sum() == pytest.approx(brute_force(w))
    # Greedy would take the 0.9 and be left with 0.1; the best pairs are the two 0.8s.
    w = np.array([[0.9, 0.8], [0.8, 0.0]])
    assert [r.tolist() for r in max_weight_assignment(w)] == [[0, 1], [1, 0]]
    assert [r.tolist() for r in max_weight_assignment(np.zeros((0, 3)))] == [[], []]
    assert [r.tolist() for r in max_weight_assignment(-np.ones((2, 2)))] == [[], []]
    with pytest.raises(ValueError, match="weights"):
        max_weight_assignment(np.array([[np.nan]]))


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


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"fps": 0}, "fps=0"),
        ({"fps": float("nan")}, "fps=nan"),
        ({"max_lost_s": -1}, "max_lost_s=-1"),
        ({"min_iou": 0}, "min_iou=0"),
        ({"min_iou": 1.5}, "min_iou=1.5"),
        ({"max_center_shift": -1}, "max_center_shift=-1"),
        ({"gate_growth": -0.1}, "gate_growth=-0.1"),
        ({"max_gate": 0.2}, "max_gate=0.2: must be >= max_center_shift=0.5"),
        ({"velocity_smoothing": 1.0}, "velocity_smoothing=1.0"),
        ({"max_coast_s": -1}, "max_coast_s=-1"),
        ({"keypoint_weight": "1"}, "keypoint_weight='1'"),
        ({"fps": True}, "fps=True"),
    ],
)
def test_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        IouTracker(**kwargs)


def test_bad_update_arguments():
    t = IouTracker()
    box = np.array([[0.1, 0.1, 0.5, 0.5]], np.float32)
    with pytest.raises(ValueError, match=r"boxes: expected shape \[P, 4\], got \[1, 5\]"):
        t.update(np.zeros((1, 5)))
    with pytest.raises(ValueError, match="boxes: expected finite"):
        t.update(np.array([[0.1, np.nan, 0.5, 0.5]]))
    with pytest.raises(ValueError, match="pass both or neither"):
        t.update(box, keypoints=np.zeros((1, 17, 2)))
    with pytest.raises(ValueError, match=r"keypoints: expected shape \[1, 17, 2\]"):
        t.update(box, np.zeros((2, 17, 2)), np.zeros((2, 17)))
    with pytest.raises(ValueError, match=r"scores: expected shape \[1, 17\]"):
        t.update(box, np.zeros((1, 17, 2)), np.zeros((1, 16)))
    # A failed call changes nothing: the first real frame is still frame 0, id 0.
    assert t.update(box).tolist() == [0]
    assert t.update(np.zeros(0), np.zeros(0), np.zeros(0)).tolist() == []
