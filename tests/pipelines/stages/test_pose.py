"""Pose: the embedded BlazePose bundle and PoseEstimator on real sample videos (no mocks).

Needs the asset cache that `python -m pipelines.assets fetch` (the set-up step) fills.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines import assets
from pipelines.stages.pose import (
    BLAZEPOSE_TO_COCO17,
    FramePoses,
    PoseEstimator,
    check_pose_model,
    load_pose_model,
    poses_from_landmarks,
)

_FETCH = "run `python -m pipelines.assets fetch` (the set-up step) first"


@pytest.fixture(scope="module")
def model():
    """(bundle bytes, sha256) of the cached BlazePose full bundle."""
    try:
        path = assets.pose_model_path(assets.BLAZEPOSE_FULL.name)
    except FileNotFoundError as e:
        pytest.fail(f"asset cache missing; run python -m pipelines.assets fetch: {e}")
    return load_pose_model(str(path))


def _video(name: str) -> Path:
    try:
        return assets.sample_video_path(name)
    except FileNotFoundError as e:
        pytest.fail(f"asset cache missing; run python -m pipelines.assets fetch: {e}")


def _frames(path: Path, count: int, step: int = 1, short_side: int = 256):
    """Yields (rgb uint8 [H, W, 3] with shorter side `short_side`, timestamp_us) of every
    `step`-th frame, `count` frames at most."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"cannot open {path}"
    fps = cap.get(cv2.CAP_PROP_FPS)
    index = taken = 0
    try:
        while taken < count:
            ok, bgr = cap.read()
            if not ok:
                break
            if index % step == 0:
                h, w = bgr.shape[:2]
                scale = short_side / min(h, w)
                size = (max(1, round(w * scale)), max(1, round(h * scale)))
                bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), round(index * 1e6 / fps)
                taken += 1
            index += 1
    finally:
        cap.release()


def _check_arrays(poses: FramePoses) -> None:
    p = poses.num_people
    assert poses.keypoints.dtype == np.float32 and poses.keypoints.shape == (p, 17, 2)
    assert poses.scores.dtype == np.float32 and poses.scores.shape == (p, 17)
    assert poses.boxes.dtype == np.float32 and poses.boxes.shape == (p, 4)
    assert poses.box_scores.dtype == np.float32 and poses.box_scores.shape == (p,)
    assert np.all((poses.boxes >= 0) & (poses.boxes <= 1))
    ymin, xmin, ymax, xmax = poses.boxes.T
    assert np.all(ymin <= ymax) and np.all(xmin <= xmax)
    assert np.all((poses.scores >= 0) & (poses.scores <= 1))
    np.testing.assert_allclose(poses.box_scores, poses.scores.mean(axis=1), rtol=1e-6)


# ----------------------------------------------------------------------------- the bundle


def test_blazepose_full_bundle_matches_pinned_sha256(model):
    data, sha = model
    assert sha == assets.BLAZEPOSE_FULL.sha256
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
    assert [i.filename for i in infos] == ["pose_detector.tflite", "pose_landmarks_detector.tflite"]
    for info in infos:
        assert info.compress_type == zipfile.ZIP_STORED
        assert info.date_time == (1980, 1, 1, 0, 0, 0)
        data_start = info.header_offset + 30 + len(info.filename) + len(info.extra)
        assert data_start % 64 == 0, info.filename


def test_bundle_build_is_reproducible(tmp_path):
    wheel = assets.cache_dir() / "wheels" / assets.MEDIAPIPE_WHEEL.filename
    if not wheel.is_file():
        pytest.skip(f"cached mediapipe wheel {wheel} missing: {_FETCH}")
    detector = assets._member(wheel, "mediapipe/modules/pose_detection/pose_detection.tflite")
    landmarks = assets._member(wheel, "mediapipe/modules/pose_landmark/pose_landmark_full.tflite")
    first = assets.build_pose_bundle(detector, landmarks)
    second = assets.build_pose_bundle(detector, landmarks)
    assert first == second
    assert assets.sha256_bytes(first) == assets.BLAZEPOSE_FULL.sha256


@pytest.mark.slow
def test_check_pose_model_accepts_the_bundles(model):
    check_pose_model(model[0], "blazepose_full")
    heavy, sha = load_pose_model(str(assets.pose_model_path(assets.BLAZEPOSE_HEAVY.name)))
    assert sha == assets.BLAZEPOSE_HEAVY.sha256
    check_pose_model(heavy, "blazepose_heavy")


def test_heavy_bundle_finds_the_person(model):
    heavy, _ = load_pose_model(str(assets.pose_model_path(assets.BLAZEPOSE_HEAVY.name)))
    counts = []
    with PoseEstimator(heavy) as estimator:
        for rgb, ts in _frames(_video("pose2sim_single_cam02.mp4"), count=5):
            poses = estimator.detect(rgb, ts)
            _check_arrays(poses)
            counts.append(poses.num_people)
    assert counts == [1, 1, 1, 1, 1]


# ----------------------------------------------------------------------------- real video


def test_two_people_on_multi_person_video(model):
    path = _video("pose2sim_multi_cam01.mp4")
    counts = []
    with PoseEstimator(model[0]) as estimator:
        for rgb, ts in _frames(path, count=20):
            assert min(rgb.shape[:2]) == 256
            poses = estimator.detect(rgb, ts)
            _check_arrays(poses)
            counts.append(poses.num_people)
    assert len(counts) == 20
    assert max(counts) >= 2, f"people per frame: {counts}"
    assert sum(c == 2 for c in counts) >= 10, f"people per frame: {counts}"


def test_person_found_on_sports2d_demo(model):
    path = _video("sports2d_demo.mp4")
    found = 0
    # 230 frames at 30 fps, every 3rd (10 fps): frequent enough for MediaPipe's tracking.
    frames = list(_frames(path, count=100, step=3))
    with PoseEstimator(model[0], num_poses=4) as estimator:
        for rgb, ts in frames:
            poses = estimator.detect(rgb, ts)
            _check_arrays(poses)
            if poses.num_people == 0:
                continue
            found += 1
            # Confident joints lie in (or within a small margin of) the frame.
            confident = poses.keypoints[poses.scores > 0.5]
            assert confident.size > 0
            assert np.all((confident > -0.05) & (confident < 1.05)), confident
            # Each person's box is not degenerate.
            ymin, xmin, ymax, xmax = poses.boxes.T
            assert np.all(ymax - ymin > 0.02) and np.all(xmax - xmin > 0.01)
    assert found >= 0.8 * len(frames), f"people found in {found} of {len(frames)} frames"


# ----------------------------------------------------------------------------- bad models


def test_missing_model_path(tmp_path):
    missing = str(tmp_path / "nope.task")
    with pytest.raises(FileNotFoundError, match=re.escape(missing)):
        load_pose_model(missing)


def test_text_file_is_not_a_bundle(tmp_path):
    path = tmp_path / "model.task"
    path.write_text("not a model\n")
    with pytest.raises(ValueError, match="not a pose model: expected a MoveNet") as err:
        load_pose_model(str(path))
    assert str(path) in str(err.value)


def test_zip_without_pose_members(tmp_path):
    path = tmp_path / "hand.task"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("hand_detector.tflite", b"x")
        zf.writestr("pose_detector.tflite", b"x")
    with pytest.raises(ValueError, match="not a MediaPipe pose landmarker bundle") as err:
        load_pose_model(str(path))
    assert str(path) in str(err.value)
    assert "pose_landmarks_detector.tflite" in str(err.value)


def test_check_pose_model_rejects_unusable_bundle(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("pose_detector.tflite", b"garbage")
        zf.writestr("pose_landmarks_detector.tflite", b"garbage")
    path = tmp_path / "broken.task"
    path.write_bytes(buf.getvalue())
    data, _ = load_pose_model(str(path))  # right members: passes the cheap check
    with pytest.raises(ValueError, match=re.escape(str(path))):
        check_pose_model(data, str(path))


def test_check_pose_model_rejects_a_bundle_of_the_wrong_kind(model):
    """Real TFLite models in the wrong roles (detector and landmarker swapped) are refused."""
    bundle = zipfile.ZipFile(io.BytesIO(model[0]))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("pose_detector.tflite", bundle.read("pose_landmarks_detector.tflite"))
        zf.writestr("pose_landmarks_detector.tflite", bundle.read("pose_detector.tflite"))
    with pytest.raises(ValueError, match="pose model 'swapped.task': MediaPipe cannot use it"):
        check_pose_model(buf.getvalue(), "swapped.task")


# ----------------------------------------------------------------------------- parameters


def test_estimator_rejects_bad_parameters(model):
    with pytest.raises(ValueError, match="num_poses=0"):
        PoseEstimator(model[0], num_poses=0)
    with pytest.raises(ValueError, match="min_tracking_confidence=1.5"):
        PoseEstimator(model[0], min_tracking_confidence=1.5)
    with pytest.raises(ValueError, match="model_bytes"):
        PoseEstimator(b"")


def test_detect_rejects_bad_frames_and_timestamps(model):
    frame = np.zeros((256, 320, 3), np.uint8)
    with PoseEstimator(model[0], num_poses=1) as estimator:
        with pytest.raises(ValueError, match="frame_rgb"):
            estimator.detect(frame.astype(np.float32), 0)
        with pytest.raises(ValueError, match="frame_rgb"):
            estimator.detect(frame[..., 0], 0)
        assert estimator.detect(frame, 40_000).num_people == 0
        with pytest.raises(ValueError, match="timestamp_us=40000"):
            estimator.detect(frame, 40_000)
        estimator.detect(frame, 40_500)  # < 1 ms later: still accepted
    with pytest.raises(RuntimeError, match="close"):
        estimator.detect(frame, 80_000)


# ----------------------------------------------------------------------------- mapping


def test_blazepose_to_coco17_exact_map():
    # nose 0; eyes 2, 5; ears 7, 8; shoulders 11, 12; elbows 13, 14; wrists 15, 16; hips 23, 24;
    # knees 25, 26; ankles 27, 28 (BlazePose's 33-landmark topology), in COCO-17 order.
    expected = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
    assert BLAZEPOSE_TO_COCO17 == expected


def test_poses_from_landmarks_exact_values():
    lm = np.zeros((1, 33, 2), np.float32)
    lm[0, :, 0] = np.linspace(-0.1, 0.9, 33)  # x
    lm[0, :, 1] = np.linspace(0.2, 1.2, 33)  # y
    vis = np.linspace(0.0, 1.0, 33, dtype=np.float32)[None]
    vis[0, 0] = -0.5  # clipped to 0
    poses = poses_from_landmarks(lm, vis)
    index = list(BLAZEPOSE_TO_COCO17)
    np.testing.assert_array_equal(poses.keypoints[0], lm[0, index])  # not clipped
    expected_scores = np.clip(vis[0, index], 0, 1)
    np.testing.assert_array_equal(poses.scores[0], expected_scores)
    # (ymin, xmin, ymax, xmax) of all 33 landmarks, clipped: y in [0.2, 1.2], x in [-0.1, 0.9].
    np.testing.assert_allclose(poses.boxes[0], [0.2, 0.0, 1.0, 0.9], atol=1e-6)
    np.testing.assert_allclose(poses.box_scores, [expected_scores.mean()], rtol=1e-6)


def test_empty_frame_poses():
    empty = FramePoses.empty()
    assert empty.num_people == 0
    assert empty.keypoints.shape == (0, 17, 2) and empty.scores.shape == (0, 17)
    assert empty.boxes.shape == (0, 4) and empty.box_scores.shape == (0,)
    empty_from_landmarks = poses_from_landmarks(np.zeros((0, 33, 2)), np.zeros((0, 33)))
    assert empty_from_landmarks.keypoints.shape == (0, 17, 2)
    with pytest.raises(ValueError, match="keypoints"):
        FramePoses(
            keypoints=np.zeros((1, 17, 2), np.float64),
            scores=np.zeros((1, 17), np.float32),
            boxes=np.zeros((1, 4), np.float32),
            box_scores=np.zeros((1,), np.float32),
        )
