"""TV-L1 optical flow between consecutive frames, and its quantization.

Pure functions on numpy arrays. Flow is Dual TV-L1 as OpenCV contrib's
`cv2.optflow.DualTVL1OpticalFlow` computes it (that class, or `flow.solver.TVL1Solver`, which gives
the same flow faster) on grayscale frames at the stored resolution, forward from frame t to frame
t + 1, then clipped to [-20, 20] pixels and quantized with MediaPipe's linear map
`q = floor(255 * clip((v + 20) / 40, 0, 1))`, whose inverse is `v = (q / 255 - 0.5) * 40`.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from schemas.media_sequence import FLOW_SATURATION

SOLVERS = ("opencv", "compiled")


@dataclasses.dataclass(frozen=True)
class TVL1Params:
    """Parameters of the Dual TV-L1 solver (OpenCV's names; defaults are OpenCV's own).

    tau: time step of the numerical scheme; lambda_: data-term weight (smoothness trade-off);
    theta: coupling weight; nscales: pyramid levels; warps: warpings per level; epsilon: stopping
    criterion (root mean square update of the flow per iteration, pixels); inner_iterations,
    outer_iterations: iteration counts; scale_step: pyramid scale factor in (0, 1);
    median_filtering: median filter size applied to the flow (1 = off, 3 or 5 pixels, the sizes
    OpenCV filters float images with); solver: "opencv" for `cv2.optflow.DualTVL1OpticalFlow`,
    "compiled" for `flow.solver.TVL1Solver`, which gives the same flow faster.
    """

    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    nscales: int = 5
    warps: int = 5
    epsilon: float = 0.01
    inner_iterations: int = 30
    outer_iterations: int = 10
    scale_step: float = 0.8
    median_filtering: int = 5
    solver: str = "opencv"

    def __post_init__(self):
        for name in ("tau", "lambda_", "theta", "epsilon"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r}: must be > 0")
        for name in ("nscales", "warps", "inner_iterations", "outer_iterations"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r}: must be >= 1")
        if not 0 < self.scale_step < 1:
            raise ValueError(f"scale_step={self.scale_step!r}: must be in (0, 1)")
        if self.median_filtering not in (1, 3, 5):
            raise ValueError(f"median_filtering={self.median_filtering!r}: must be 1, 3 or 5")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver={self.solver!r}: expected one of {list(SOLVERS)}")

    def create(self):
        """A configured solver with OpenCV's `calc(prev, next, None)` call.

        `cv2.optflow.DualTVL1OpticalFlow` for solver "opencv", `flow.solver.TVL1Solver` for
        "compiled". Not picklable (OpenCV's): make one per worker.
        """
        if self.solver == "compiled":
            from flow.solver import TVL1Solver

            fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
            del fields["solver"]
            return TVL1Solver(**fields)
        algo = cv2.optflow.DualTVL1OpticalFlow.create()
        # The setters, because the Python keyword for inner iterations is misspelled upstream.
        algo.setTau(self.tau)
        algo.setLambda(self.lambda_)
        algo.setTheta(self.theta)
        algo.setScalesNumber(self.nscales)
        algo.setWarpingsNumber(self.warps)
        algo.setEpsilon(self.epsilon)
        algo.setInnerIterations(self.inner_iterations)
        algo.setOuterIterations(self.outer_iterations)
        algo.setScaleStep(self.scale_step)
        algo.setMedianFiltering(self.median_filtering)
        return algo


# `reference`: OpenCV's implementation with its default parameters, what I3D-style pipelines
# compute. `fast`, the project's default: the same parameters solved by `flow.solver.TVL1Solver`,
# which reproduces OpenCV's flow bit for bit (tests/flow/test_flow_solver.py) at about 25x the pairs
# per core-second (benchmarks/flow_bench.py; figures in docs/cost.md). `draft`: the compiled solver
# stopping sooner (3 warps per level instead of 5, epsilon 0.025 instead of 0.01), for runs where
# cost matters more than fidelity: several times faster again, but it is not the reference's flow
# (mean end-point difference about 0.07 px overall and 0.34 px on moving pixels of the sample
# clips). Measured before the compiled solver existed, no parameter change that saves 3x or more
# stays within 0.25 px of the reference on moving pixels of human-motion clips: OpenCV stops on
# the mean update over the whole frame, so where few pixels move the reference stops while they
# still change by ~0.1 px per iteration, and any change of the iteration count moves them.
FLOW_PRESETS: dict[str, TVL1Params] = {
    "reference": TVL1Params(),
    "fast": TVL1Params(solver="compiled"),
    "draft": TVL1Params(warps=3, epsilon=0.025, solver="compiled"),
}
DEFAULT_FLOW_PRESET = "fast"


def flow_params(preset: str) -> TVL1Params:
    """Returns the parameters of a named preset; ValueError naming unknown presets."""
    try:
        return FLOW_PRESETS[preset]
    except KeyError:
        raise ValueError(
            f"flow_preset={preset!r}: expected one of {sorted(FLOW_PRESETS)}"
        ) from None


def to_gray(frame_rgb: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] RGB -> uint8 [H, W] luma (ITU-R BT.601, OpenCV's weights)."""
    if frame_rgb.dtype != np.uint8 or frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3:
        raise ValueError(
            f"frame_rgb: expected uint8 [H, W, 3], got {frame_rgb.dtype} {frame_rgb.shape}"
        )
    return cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2GRAY)


def compute_flow(algo, prev_gray: np.ndarray, next_gray: np.ndarray) -> np.ndarray:
    """TV-L1 flow from `prev_gray` to `next_gray`.

    Args:
      algo: from `TVL1Params.create()`.
      prev_gray, next_gray: uint8 [H, W] grayscale frames of the same size.

    Returns:
      float32 [H, W, 2]: (dx, dy) displacement in pixels of each pixel of `prev_gray`.

    Two identical frames (a source below 25 fps repeats frames) get +0.0 everywhere without
    solving: what both solvers return for them, bit for bit (`flow.solver` says why).
    """
    for name, img in (("prev_gray", prev_gray), ("next_gray", next_gray)):
        if img.dtype != np.uint8 or img.ndim != 2:
            raise ValueError(f"{name}: expected uint8 [H, W], got {img.dtype} {img.shape}")
    if prev_gray.shape != next_gray.shape:
        raise ValueError(f"prev_gray.shape={prev_gray.shape} != next_gray.shape={next_gray.shape}")
    if np.array_equal(prev_gray, next_gray):
        return np.zeros(prev_gray.shape + (2,), np.float32)
    return algo.calc(prev_gray, next_gray, None)


def quantize_flow(flow: np.ndarray, bound: float = FLOW_SATURATION) -> np.ndarray:
    """Clips flow to [-bound, bound] and maps it linearly to uint8 (MediaPipe's quantization).

    Args:
      flow: float [H, W, 2], pixels.
      bound: saturation in pixels, > 0.

    Returns:
      uint8 [H, W, 3]: R = quantized x, G = quantized y, B = 0;
      `q = floor(255 * clip((v + bound) / (2 * bound), 0, 1))`.
    """
    if bound <= 0:
        raise ValueError(f"bound={bound!r}: must be > 0")
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow.shape={flow.shape}: expected [H, W, 2]")
    # float64 so that values at exact quantization boundaries floor as the formula says.
    scaled = np.clip((flow.astype(np.float64) + bound) / (2.0 * bound), 0.0, 1.0)
    q = np.floor(255.0 * scaled).astype(np.uint8)
    out = np.zeros(flow.shape[:2] + (3,), np.uint8)
    out[..., :2] = q
    return out


def dequantize_flow(image: np.ndarray, bound: float = FLOW_SATURATION) -> np.ndarray:
    """Inverse of `quantize_flow`: uint8 [H, W, >=2] -> float32 [H, W, 2] pixels.

    `v = (q / 255 - 0.5) * 2 * bound`. Round trip error is at most one step, 2 * bound / 255
    (0.157 px for bound 20) plus, for stored flow, the JPEG error.
    """
    if bound <= 0:
        raise ValueError(f"bound={bound!r}: must be > 0")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] < 2:
        raise ValueError(f"image.shape={image.shape}: expected [H, W, 2 or 3]")
    q = image[..., :2].astype(np.float32)
    return ((q / 255.0 - 0.5) * (2.0 * bound)).astype(np.float32)
