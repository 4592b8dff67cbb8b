"""Multi-person pose per video frame -> COCO-17: which model, and the MediaPipe BlazePose runner.

Two kinds of pose model, told apart by their bytes (`pose_model_kind`):

- a TFLite file: MoveNet MultiPose (bottom-up, COCO-17, up to 6 people), run by
  `pipelines.stages.movenet.MultiPoseEstimator`. The default
  (`pipelines.assets.DEFAULT_POSE_MODEL`).
- a MediaPipe pose landmarker bundle (`.task` zip): BlazePose, a person detector then 33
  landmarks per person, run by `PoseEstimator` below (MediaPipe Tasks `PoseLandmarker`).

`create_estimator` makes the right one; both give `FramePoses` (`pipelines/stages/pose_types.py`)
per
frame. One estimator serves one video: MediaPipe's VIDEO running mode tracks people across
frames and needs strictly increasing timestamps, and neither can be pickled. The model's bytes
are read once per worker (`load_pose_model`) and passed to each estimator.

BlazePose output per frame: keypoints are the 17 COCO landmarks of its 33, scores their
visibility, boxes the extent of all 33 landmarks, box scores the mean of the 17 scores.
Speed (mediapipe 1.2.2, one core of a 2-core Intel Xeon VM, frames with shorter side 256): one
estimator keeps about one core busy; median detect time 28 ms with one person, 42-45 ms with
two (the landmark model runs once per tracked person). MediaPipe does not suppress duplicates
between tracked and newly detected people: now and then two poses of one person come back (box
IoU up to 0.95); `pipelines.stages.tracking.suppress_duplicates` drops the lower-scored one.
"""

from __future__ import annotations

import hashlib
import io
import numbers
import os
import subprocess
import sys
import zipfile

import numpy as np

from pipelines.stages.pose_types import NUM_KEYPOINTS, FramePoses, check_frame_and_time

__all__ = ["NUM_KEYPOINTS", "FramePoses", "PoseEstimator", "create_estimator", "load_pose_model"]

# BlazePose landmark index for each COCO-17 keypoint, in COCO order:
# nose, left/right eye, left/right ear, shoulders, elbows, wrists, hips, knees, ankles.
BLAZEPOSE_TO_COCO17 = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
NUM_BLAZEPOSE_LANDMARKS = 33  # landmarks per person that the BlazePose landmark model outputs

# Members that a MediaPipe pose landmarker bundle (`.task` zip) must contain.
POSE_BUNDLE_MEMBERS = ("pose_detector.tflite", "pose_landmarks_detector.tflite")
KIND_MOVENET = "movenet_multipose"  # a MoveNet MultiPose TFLite file
KIND_MEDIAPIPE = "mediapipe_pose_landmarker"  # a MediaPipe pose landmarker bundle
_TFLITE_FILE_ID = b"TFL3"  # flatbuffer file identifier of a TFLite model, at byte 4

DEFAULT_NUM_POSES = 10  # most people reported per frame
DEFAULT_MIN_CONFIDENCE = 0.5  # default for the three MediaPipe confidence thresholds

_MICROS_PER_MILLI = 1000


def poses_from_landmarks(landmarks: np.ndarray, visibility: np.ndarray) -> FramePoses:
    """Maps BlazePose landmarks of P people to COCO-17 keypoints, scores and boxes.

    Args:
      landmarks: float [P, 33, 2], (x, y) normalized by frame width and height (any range).
      visibility: float [P, 33], landmark visibility; clipped to [0, 1].

    Returns:
      FramePoses with keypoints = landmarks[:, BLAZEPOSE_TO_COCO17], scores = visibility of
      those, boxes = extent of all 33 landmarks clipped to [0, 1] as (ymin, xmin, ymax, xmax),
      and box_scores = mean of the 17 scores.
    """
    landmarks = np.asarray(landmarks, np.float32)
    visibility = np.asarray(visibility, np.float32)
    if landmarks.ndim != 3 or landmarks.shape[1:] != (NUM_BLAZEPOSE_LANDMARKS, 2):
        raise ValueError(f"landmarks: expected shape [P, 33, 2], got {list(landmarks.shape)}")
    if visibility.shape != landmarks.shape[:2]:
        raise ValueError(
            f"visibility: expected shape {list(landmarks.shape[:2])}, got {list(visibility.shape)}"
        )
    if landmarks.shape[0] == 0:
        return FramePoses.empty()
    index = np.asarray(BLAZEPOSE_TO_COCO17)
    keypoints = np.ascontiguousarray(landmarks[:, index, :])
    scores = np.clip(visibility[:, index], 0.0, 1.0)
    lo = np.clip(landmarks.min(axis=1), 0.0, 1.0)  # [P, 2] as (x, y)
    hi = np.clip(landmarks.max(axis=1), 0.0, 1.0)
    boxes = np.stack([lo[:, 1], lo[:, 0], hi[:, 1], hi[:, 0]], axis=1)
    return FramePoses(
        keypoints=keypoints,
        scores=scores,
        boxes=boxes.astype(np.float32),
        box_scores=scores.mean(axis=1, dtype=np.float32),
    )


def _is_remote(path: str) -> bool:
    return "://" in path


def load_pose_model(path: str) -> tuple[bytes, str]:
    """Reads a pose model (either kind, see `pose_model_kind`) and checks that it looks like one.

    Args:
      path: local path or a URL that Beam's FileSystems reads (e.g. `gs://bucket/x.tflite`).

    Returns:
      (model bytes, their sha256 as 64 hex characters).

    Raises:
      FileNotFoundError: nothing at `path`.
      ValueError: the file is neither a TFLite file nor a zip, or a zip that lacks
        `pose_detector.tflite` or `pose_landmarks_detector.tflite`; the message names `path`.
    """
    if not isinstance(path, str) or not path:
        raise ValueError(f"pose model path={path!r}: expected a non-empty string")
    if _is_remote(path):
        from apache_beam.io.filesystems import FileSystems

        if not FileSystems.exists(path):
            raise FileNotFoundError(f"pose model {path!r} does not exist")
        with FileSystems.open(path) as f:
            data = f.read()
    else:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"pose model {path!r} does not exist") from None
        except IsADirectoryError:
            raise ValueError(f"pose model {path!r} is a directory, not a pose model") from None
    pose_model_kind(data, path)
    return data, hashlib.sha256(data).hexdigest()


def pose_model_kind(data: bytes, name: str) -> str:
    """`KIND_MOVENET` for a TFLite file, `KIND_MEDIAPIPE` for a pose landmarker bundle.

    Only the container is checked here (cheap); `check_pose_model` runs the model once.

    Raises:
      ValueError: neither kind; the message names `name` and what the bytes are.
    """
    if data[4:8] == _TFLITE_FILE_ID:
        return KIND_MOVENET
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise ValueError(
            f"pose model {name!r}: not a pose model: expected a MoveNet MultiPose TFLite file "
            f"or a MediaPipe pose landmarker bundle (a zip), got {len(data)} bytes of neither "
            "(it is not a MediaPipe pose landmarker bundle: not a zip file)"
        )
    _check_bundle_members(data, name)
    return KIND_MEDIAPIPE


def _check_bundle_members(data: bytes, name: str) -> None:
    prefix = f"pose model {name!r}: not a MediaPipe pose landmarker bundle"
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = set(zf.namelist())
    except zipfile.BadZipFile as e:
        raise ValueError(f"{prefix}: unreadable zip ({e})") from None
    missing = [m for m in POSE_BUNDLE_MEMBERS if m not in names]
    if missing:
        raise ValueError(f"{prefix}: missing {missing}; it holds {sorted(names)}")


def create_estimator(
    model_bytes: bytes,
    num_poses: int = DEFAULT_NUM_POSES,
    input_size: int | None = None,
    min_person_score: float | None = None,
    num_threads: int = 1,
):
    """The estimator for the model's kind: `MultiPoseEstimator` or `PoseEstimator`.

    Args:
      model_bytes: as read by `load_pose_model`.
      num_poses: most people per frame, >= 1 (MoveNet MultiPose finds at most 6).
      input_size: MoveNet: longer side of the model input, a multiple of 32; None: its default.
        Not used by BlazePose (its models see fixed-size inputs).
      min_person_score: MoveNet: the person score threshold; BlazePose: its detection
        confidence threshold; in [0, 1]; None: the model's default.
      num_threads: MoveNet: interpreter threads (MediaPipe's Python API has no such setting).

    Returns:
      An estimator with `detect(frame_rgb, timestamp_us) -> FramePoses` and `close()`.
    """
    kind = pose_model_kind(model_bytes, "model_bytes")
    if kind == KIND_MOVENET:
        from pipelines.stages import movenet

        return movenet.MultiPoseEstimator(
            model_bytes,
            num_poses=num_poses,
            input_size=movenet.DEFAULT_INPUT_SIZE if input_size is None else input_size,
            min_person_score=(
                movenet.DEFAULT_MIN_PERSON_SCORE if min_person_score is None else min_person_score
            ),
            num_threads=num_threads,
        )
    confidence = DEFAULT_MIN_CONFIDENCE if min_person_score is None else min_person_score
    return PoseEstimator(model_bytes, num_poses=num_poses, min_pose_detection_confidence=confidence)


def check_pose_model(model_bytes: bytes, name: str, timeout_s: float = 180.0) -> None:
    """Creates the model's estimator once and runs it on a blank frame, in a child process.

    Lets a job fail at start-up, before it reads any video, when a model has the right container
    but cannot be used (e.g. a bundle missing input-normalization metadata or with models in the
    wrong roles; a TFLite file that is not MoveNet MultiPose). The trial runs in a child process:
    a landmarker whose graph failed can hang when it is closed or collected, and a corrupt model
    can crash the native code; neither may take the launcher with it.

    Raises:
      ValueError: the runtime rejected the model, crashed or hung on it; the message names
        `name` and the reason.
    """
    kind = pose_model_kind(model_bytes, name)
    runtime = "MediaPipe" if kind == KIND_MEDIAPIPE else "LiteRT"
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHECK_SCRIPT],
            input=model_bytes,
            capture_output=True,
            timeout=timeout_s,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise ValueError(
            f"pose model {name!r}: {runtime} did not finish one frame in {timeout_s:.0f} s"
        ) from None
    if proc.returncode == 0:
        return
    reason = proc.stdout.decode("utf-8", "replace").strip()
    if not reason:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        reason = f"the check process exited with status {proc.returncode}: {' | '.join(tail)}"
    raise ValueError(f"pose model {name!r}: {runtime} cannot use it: {reason}")


def _check_in_process(model_bytes: bytes) -> None:
    """The trial of `check_pose_model`, run in the child process."""
    estimator = create_estimator(model_bytes, num_poses=1)
    try:
        estimator.detect(np.zeros((256, 256, 3), np.uint8), 0)
    finally:
        estimator.close()


# The child reads the model from stdin, prints the runtime's error if any, and leaves with
# os._exit so that no finalizer of a failed landmarker runs.
_CHECK_SCRIPT = """
import os, sys
from pipelines.stages.pose import _check_in_process
try:
    _check_in_process(sys.stdin.buffer.read())
except Exception as e:
    sys.stdout.write(f"{type(e).__name__}: {e}")
    sys.stdout.flush()
    os._exit(1)
os._exit(0)
"""


def _check_fraction(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ValueError(f"{name}={value!r}: expected a number in [0, 1]")
    return float(value)


class PoseEstimator:
    """MediaPipe `PoseLandmarker` in VIDEO mode over the frames of one video.

    Use one instance per video, feed frames in time order, then `close()` it (or use it as a
    context manager). Not thread-safe; not picklable.

    Args:
      model_bytes: a pose landmarker bundle (`.task` zip), as read by `load_pose_model`.
      num_poses: most people reported per frame, >= 1.
      min_pose_detection_confidence: detector score threshold, in [0, 1].
      min_pose_presence_confidence: landmark model pose-presence threshold, in [0, 1].
      min_tracking_confidence: below this, a tracked person is re-detected, in [0, 1].

    Raises:
      ValueError: a parameter is out of range (the message names it and its value), or
        MediaPipe rejected the model.
    """

    def __init__(
        self,
        model_bytes: bytes,
        num_poses: int = DEFAULT_NUM_POSES,
        min_pose_detection_confidence: float = DEFAULT_MIN_CONFIDENCE,
        min_pose_presence_confidence: float = DEFAULT_MIN_CONFIDENCE,
        min_tracking_confidence: float = DEFAULT_MIN_CONFIDENCE,
    ):
        if not isinstance(model_bytes, (bytes, bytearray)) or not model_bytes:
            raise ValueError(
                f"model_bytes: expected non-empty bytes, got {type(model_bytes).__name__}"
            )
        if isinstance(num_poses, bool) or not isinstance(num_poses, numbers.Integral):
            raise ValueError(f"num_poses={num_poses!r}: expected an integer >= 1")
        if num_poses < 1:
            raise ValueError(f"num_poses={num_poses!r}: expected an integer >= 1")
        thresholds = {
            "min_pose_detection_confidence": min_pose_detection_confidence,
            "min_pose_presence_confidence": min_pose_presence_confidence,
            "min_tracking_confidence": min_tracking_confidence,
        }
        thresholds = {k: _check_fraction(k, v) for k, v in thresholds.items()}

        import mediapipe as mp  # imported here: ~3 s, and only workers need it
        from mediapipe.tasks.python.core.base_options import BaseOptions
        from mediapipe.tasks.python.vision import pose_landmarker
        from mediapipe.tasks.python.vision.core.vision_task_running_mode import (
            VisionTaskRunningMode,
        )

        self._mp = mp
        options = pose_landmarker.PoseLandmarkerOptions(
            base_options=BaseOptions(model_asset_buffer=bytes(model_bytes)),
            running_mode=VisionTaskRunningMode.VIDEO,
            num_poses=int(num_poses),
            output_segmentation_masks=False,
            **thresholds,
        )
        self._landmarker = pose_landmarker.PoseLandmarker.create_from_options(options)
        self._last_us: int | None = None
        self._last_ms = -1

    def detect(self, frame_rgb: np.ndarray, timestamp_us: int) -> FramePoses:
        """Finds the people in one frame.

        Args:
          frame_rgb: uint8 [H, W, 3] RGB image.
          timestamp_us: the frame's time in microseconds, >= 0, strictly greater than the
            previous call's. MediaPipe counts milliseconds: a frame less than 1 ms after the
            previous one is passed as previous + 1 ms.

        Returns:
          FramePoses for this frame (P may be 0).

        Raises:
          ValueError: bad frame shape or dtype, or a timestamp that does not increase.
          RuntimeError: the estimator is closed, or MediaPipe failed on this frame.
        """
        if self._landmarker is None:
            raise RuntimeError("PoseEstimator.detect called after close()")
        timestamp_us = check_frame_and_time(frame_rgb, timestamp_us, self._last_us)
        timestamp_ms = max(timestamp_us // _MICROS_PER_MILLI, self._last_ms + 1)

        image = self._mp.Image(
            image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame_rgb)
        )
        result = self._landmarker.detect_for_video(image, timestamp_ms)
        self._last_us, self._last_ms = timestamp_us, timestamp_ms
        return _to_frame_poses(result.pose_landmarks)

    def close(self) -> None:
        """Releases the landmarker. Idempotent."""
        landmarker, self._landmarker = getattr(self, "_landmarker", None), None
        if landmarker is not None:
            landmarker.close()

    def __enter__(self) -> PoseEstimator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: MediaPipe's bindings may be gone
            pass

    def __reduce__(self):
        raise TypeError(
            "PoseEstimator cannot be pickled; pickle the model bytes and create one per video"
        )


def _to_frame_poses(pose_landmarks) -> FramePoses:
    """MediaPipe's per-person lists of 33 NormalizedLandmark -> FramePoses."""
    count = len(pose_landmarks)
    if count == 0:
        return FramePoses.empty()
    xy = np.empty((count, NUM_BLAZEPOSE_LANDMARKS, 2), np.float32)
    vis = np.empty((count, NUM_BLAZEPOSE_LANDMARKS), np.float32)
    for p, person in enumerate(pose_landmarks):
        if len(person) != NUM_BLAZEPOSE_LANDMARKS:
            raise RuntimeError(
                f"pose model returned {len(person)} landmarks per person, expected "
                f"{NUM_BLAZEPOSE_LANDMARKS} (BlazePose)"
            )
        for j, lm in enumerate(person):
            xy[p, j, 0] = lm.x
            xy[p, j, 1] = lm.y
            # Visibility; presence if the model reports no visibility; 0 if neither.
            score = lm.visibility if lm.visibility is not None else lm.presence
            vis[p, j] = 0.0 if score is None else score
    return poses_from_landmarks(xy, vis)
