"""Multi-person pose with MoveNet MultiPose (bottom-up, COCO-17) on the LiteRT interpreter.

MoveNet MultiPose Lightning finds up to 6 people in one pass over the whole frame: no person
detector, so people whose face is hidden or who are small are found as well as the others, and
the cost does not grow with the number of people. The model is a TFLite file (the set-up step
converts it from its TensorFlow.js release; `pipelines/assets.py`) run by LiteRT
(`ai-edge-litert`, Google's TFLite runtime with the XNNPACK CPU kernels), so a worker does not
import TensorFlow to run it.

Model contract (checked when the estimator is created):

    input   int32 or uint8 [1, H, W, 3], RGB in [0, 255]; H and W dynamic (then multiples of
            32 are chosen here) or fixed.
    output  float32 [1, K, 56] per candidate person: 17 x (y, x, score) keypoints normalized by
            the input's H and W, then (ymin, xmin, ymax, xmax, score) of the person's box.

The frame is resized, aspect kept, so that its longer side is `input_size` (a dynamic model) or
so that it fits the fixed input, and padded at the bottom and right with black.

Speed (LiteRT, one thread, AMD EPYC Zen 4): 20 ms at 256x256, 28 ms at 384x224 (a 16:9 frame at
input size 384), 37 ms at 384x288 (4:3), 48 ms at 384x384; the same for any number of people.
"""

from __future__ import annotations

import numbers

import numpy as np

from pipelines.stages.pose_types import NUM_KEYPOINTS, FramePoses

MULTIPOSE_VALUES = NUM_KEYPOINTS * 3 + 5  # per candidate: 17 x (y, x, score), box, score
INPUT_MULTIPLE = 32  # H and W of a dynamic MoveNet input must be multiples of this
DEFAULT_INPUT_SIZE = 384  # longer side of the model input, pixels (docs/pose.md)
DEFAULT_MIN_PERSON_SCORE = 0.2  # candidates scoring below this are not people (docs/pose.md)


def input_shape(height: int, width: int, input_size: int) -> tuple[int, int, float]:
    """The model input for a frame of a dynamic-size model: (H, W, scale).

    Args:
      height, width: the frame's size in pixels, >= 1.
      input_size: the input's longer side in pixels, a multiple of 32.

    Returns:
      (H, W, scale): the frame resized by `scale` (its longer side becomes `input_size`) fits
      in H x W, both multiples of 32 (the shorter side rounded up).
    """
    scale = input_size / max(height, width)
    h = max(1, round(height * scale))
    w = max(1, round(width * scale))
    return -(-h // INPUT_MULTIPLE) * INPUT_MULTIPLE, -(-w // INPUT_MULTIPLE) * INPUT_MULTIPLE, scale


def decode_multipose(
    output: np.ndarray,
    frame_hw: tuple[int, int],
    input_hw: tuple[int, int],
    scale: float,
    min_person_score: float,
    max_people: int,
) -> FramePoses:
    """MoveNet MultiPose output -> the people of the frame, highest person score first.

    Args:
      output: float [K, 56], the model's output for one frame.
      frame_hw: (height, width) of the frame, pixels.
      input_hw: (H, W) of the model input the frame was placed in, pixels.
      scale: the frame's resize factor into the input (input pixels per frame pixel).
      min_person_score: candidates whose person score is below this are dropped, in [0, 1].
      max_people: most people kept, >= 1.

    Returns:
      FramePoses: keypoints (x, y) normalized by the frame's width and height (not clipped),
      keypoint scores, boxes (ymin, xmin, ymax, xmax) normalized and clipped to [0, 1], and the
      person scores as box scores.
    """
    output = np.asarray(output, np.float32).reshape(-1, MULTIPOSE_VALUES)
    person = output[:, -1]
    keep = np.flatnonzero(person >= min_person_score)
    keep = keep[np.argsort(-person[keep], kind="stable")][:max_people]
    if keep.size == 0:
        return FramePoses.empty()
    rows = output[keep]
    fh, fw = frame_hw
    # Input-normalized -> frame-normalized: multiply by input size / (frame size * scale).
    ky, kx = input_hw[0] / (fh * scale), input_hw[1] / (fw * scale)
    kps = rows[:, : NUM_KEYPOINTS * 3].reshape(-1, NUM_KEYPOINTS, 3)
    keypoints = np.stack([kps[:, :, 1] * kx, kps[:, :, 0] * ky], axis=2)
    box = rows[:, NUM_KEYPOINTS * 3 : NUM_KEYPOINTS * 3 + 4] * np.float32([ky, kx, ky, kx])
    return FramePoses(
        keypoints=keypoints.astype(np.float32),
        scores=np.clip(kps[:, :, 2], 0.0, 1.0).astype(np.float32),
        boxes=np.clip(box, 0.0, 1.0).astype(np.float32),
        box_scores=np.clip(rows[:, -1], 0.0, 1.0).astype(np.float32),
    )


class MultiPoseEstimator:
    """MoveNet MultiPose over the frames of one video (stateless between frames).

    Same interface as `pipelines.stages.pose.PoseEstimator`: `detect(frame_rgb, timestamp_us)` per
    frame
    in time order, then `close()`. Not thread-safe; not picklable.

    Args:
      model_bytes: a MoveNet MultiPose TFLite file (the contract in the module docstring).
      num_poses: most people reported per frame, >= 1 (the model itself finds at most K = 6).
      input_size: longer side of the model input for a dynamic-size model, a multiple of 32 in
        [128, 1024]; ignored by a fixed-size model.
      min_person_score: person score threshold, in [0, 1].
      num_threads: interpreter threads, >= 1.

    Raises:
      ValueError: a parameter is out of range (the message names it and its value), or the
        model is not a MoveNet MultiPose TFLite file (the message says what differs).
    """

    def __init__(
        self,
        model_bytes: bytes,
        num_poses: int = 6,
        input_size: int = DEFAULT_INPUT_SIZE,
        min_person_score: float = DEFAULT_MIN_PERSON_SCORE,
        num_threads: int = 1,
    ):
        for name, value, lo, hi in (
            ("num_poses", num_poses, 1, None),
            ("input_size", input_size, 128, 1024),
            ("num_threads", num_threads, 1, None),
        ):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ValueError(f"{name}={value!r}: expected an integer")
            if value < lo or (hi is not None and value > hi):
                raise ValueError(f"{name}={value!r}: expected {lo}..{hi or 'any'}")
        if input_size % INPUT_MULTIPLE:
            raise ValueError(f"input_size={input_size!r}: expected a multiple of {INPUT_MULTIPLE}")
        if (
            isinstance(min_person_score, bool)
            or not isinstance(min_person_score, numbers.Real)
            or not 0 <= min_person_score <= 1
        ):
            raise ValueError(f"min_person_score={min_person_score!r}: expected a number in [0, 1]")
        from ai_edge_litert.interpreter import Interpreter

        try:
            self._it = Interpreter(model_content=bytes(model_bytes), num_threads=int(num_threads))
        except (ValueError, RuntimeError) as e:
            raise ValueError(f"not a TFLite model LiteRT can load: {e}") from None
        inputs, outputs = self._it.get_input_details(), self._it.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(
                f"expected one input and one output (MoveNet MultiPose), got {len(inputs)} "
                f"inputs and {len(outputs)} outputs"
            )
        self._in, self._out = inputs[0], outputs[0]
        signature = [int(d) for d in self._in["shape_signature"]]
        if (
            len(signature) != 4
            or signature[0] not in (1, -1)
            or signature[3] != 3
            or self._in["dtype"] not in (np.int32, np.uint8)
        ):
            raise ValueError(
                f"input {signature} {np.dtype(self._in['dtype']).name}: expected int32 or uint8 "
                "[1, H, W, 3] (MoveNet MultiPose)"
            )
        out_sig = [int(d) for d in self._out["shape_signature"]]
        if len(out_sig) != 3 or out_sig[-1] != MULTIPOSE_VALUES:
            raise ValueError(f"output {out_sig}: expected [1, K, 56] (MoveNet MultiPose)")
        self._fixed = None if -1 in signature[1:3] else (signature[1], signature[2])
        self._num_poses = int(num_poses)
        self._input_size = int(input_size)
        self._min_score = float(min_person_score)
        self._shape: tuple[int, int] | None = None  # the input shape allocated now
        self._last_us: int | None = None

    def _place(self, frame: np.ndarray) -> tuple[np.ndarray, tuple[int, int], float]:
        """The frame resized and padded into the model input: ([1, H, W, 3], (H, W), scale)."""
        import cv2

        h, w = frame.shape[:2]
        if self._fixed is None:
            ih, iw, scale = input_shape(h, w, self._input_size)
        else:
            ih, iw = self._fixed
            scale = min(ih / h, iw / w)
        nh, nw = min(ih, max(1, round(h * scale))), min(iw, max(1, round(w * scale)))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        x = np.zeros((1, ih, iw, 3), self._in["dtype"])
        x[0, :nh, :nw] = cv2.resize(frame, (nw, nh), interpolation=interp)
        return x, (ih, iw), scale

    def detect(self, frame_rgb: np.ndarray, timestamp_us: int) -> FramePoses:
        """Finds the people in one frame.

        Args:
          frame_rgb: uint8 [H, W, 3] RGB image.
          timestamp_us: the frame's time in microseconds, >= 0, strictly greater than the
            previous call's (one estimator serves one video, as `PoseEstimator`).

        Returns:
          FramePoses for this frame (P may be 0), highest person score first.

        Raises:
          ValueError: bad frame shape or dtype, or a timestamp that does not increase.
          RuntimeError: the estimator is closed.
        """
        from pipelines.stages.pose_types import check_frame_and_time

        if self._it is None:
            raise RuntimeError("MultiPoseEstimator.detect called after close()")
        timestamp_us = check_frame_and_time(frame_rgb, timestamp_us, self._last_us)
        x, input_hw, scale = self._place(frame_rgb)
        if self._shape != input_hw:
            self._it.resize_tensor_input(self._in["index"], list(x.shape), strict=False)
            self._it.allocate_tensors()
            self._shape = input_hw
        self._it.set_tensor(self._in["index"], x)
        self._it.invoke()
        output = self._it.get_tensor(self._out["index"])[0]
        self._last_us = timestamp_us
        return decode_multipose(
            output, frame_rgb.shape[:2], input_hw, scale, self._min_score, self._num_poses
        )

    def close(self) -> None:
        """Releases the interpreter. Idempotent."""
        self._it = None

    def __enter__(self) -> MultiPoseEstimator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __reduce__(self):
        raise TypeError(
            "MultiPoseEstimator cannot be pickled; pickle the model bytes and create one per video"
        )
