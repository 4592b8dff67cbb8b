"""The people found in one frame (`FramePoses`), shared by every pose estimator.

Per frame, P people, all float32:

    keypoints   [P, 17, 2]  (x, y) / (frame width, frame height); not clipped: a joint outside
                            the frame has a value outside [0, 1]. COCO-17 order.
    scores      [P, 17]     keypoint confidence in [0, 1].
    boxes       [P, 4]      (ymin, xmin, ymax, xmax) normalized, clipped to [0, 1].
    box_scores  [P]         person confidence in [0, 1].
"""

from __future__ import annotations

import dataclasses
import numbers

import numpy as np

from schemas import media_sequence as ms

# Keypoints per person: the record contract's joint count (`schemas.media_sequence.NUM_JOINTS`,
# the length of its COCO-17 joint list), under the name the pose estimators use.
NUM_KEYPOINTS = ms.NUM_JOINTS
# COCO's per-keypoint OKS constants (sigmas: the spread of human annotations, relative to the
# person's size), in COCO-17 order: float64 [NUM_KEYPOINTS].
COCO_SIGMAS = (
    np.array([26, 25, 25, 35, 35, 79, 79, 72, 72, 62, 62, 107, 107, 87, 87, 89, 89], np.float64)
    / 1000.0
)
if COCO_SIGMAS.shape != (NUM_KEYPOINTS,):
    raise ImportError(f"COCO_SIGMAS: {COCO_SIGMAS.size} sigmas for NUM_KEYPOINTS={NUM_KEYPOINTS}")


@dataclasses.dataclass(frozen=True)
class FramePoses:
    """The people found in one frame. Shapes, dtypes and ranges: see the module docstring.

    Attributes:
      keypoints: float32 [P, 17, 2], (x, y) normalized by frame width and height, not clipped.
      scores: float32 [P, 17], keypoint confidence in [0, 1].
      boxes: float32 [P, 4], (ymin, xmin, ymax, xmax) normalized, clipped to [0, 1].
      box_scores: float32 [P], person confidence in [0, 1].
    """

    keypoints: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    box_scores: np.ndarray

    def __post_init__(self):
        p = self.box_scores.shape[0] if self.box_scores.ndim == 1 else -1
        expected = {
            "keypoints": (p, NUM_KEYPOINTS, 2),
            "scores": (p, NUM_KEYPOINTS),
            "boxes": (p, 4),
            "box_scores": (p,),
        }
        for name, shape in expected.items():
            value = getattr(self, name)
            if value.dtype != np.float32 or value.shape != shape:
                raise ValueError(
                    f"FramePoses.{name}: expected float32 {list(shape)}, "
                    f"got {value.dtype} {list(value.shape)}"
                )

    @property
    def num_people(self) -> int:
        """P, the number of people."""
        return int(self.box_scores.shape[0])

    @classmethod
    def empty(cls) -> FramePoses:
        """No people: arrays of shapes [0, 17, 2], [0, 17], [0, 4] and [0]."""
        return cls(
            keypoints=np.zeros((0, NUM_KEYPOINTS, 2), np.float32),
            scores=np.zeros((0, NUM_KEYPOINTS), np.float32),
            boxes=np.zeros((0, 4), np.float32),
            box_scores=np.zeros((0,), np.float32),
        )


def check_frame_and_time(frame_rgb, timestamp_us, last_us: int | None) -> int:
    """Checks one estimator input: a uint8 [H, W, 3] frame and a timestamp after `last_us`.

    Returns:
      The timestamp as an int.

    Raises:
      ValueError: naming the bad frame shape or dtype, or the timestamp and the previous one.
    """
    if not isinstance(frame_rgb, np.ndarray) or frame_rgb.dtype != np.uint8:
        raise ValueError(
            f"frame_rgb: expected a uint8 numpy array, got "
            f"{getattr(frame_rgb, 'dtype', type(frame_rgb).__name__)}"
        )
    if frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3 or 0 in frame_rgb.shape:
        raise ValueError(f"frame_rgb: expected shape [H, W, 3], got {list(frame_rgb.shape)}")
    if isinstance(timestamp_us, bool) or not isinstance(timestamp_us, numbers.Integral):
        raise ValueError(f"timestamp_us={timestamp_us!r}: expected an integer")
    timestamp_us = int(timestamp_us)
    if timestamp_us < 0:
        raise ValueError(f"timestamp_us={timestamp_us}: expected >= 0")
    if last_us is not None and timestamp_us <= last_us:
        raise ValueError(
            f"timestamp_us={timestamp_us}: must be greater than the previous frame's "
            f"{last_us} (use one estimator per video)"
        )
    return timestamp_us
