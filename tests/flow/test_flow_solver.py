"""The compiled TV-L1 solver gives OpenCV's flow, bit for bit, on real and synthetic frames."""

import dataclasses

import cv2
import numpy as np
import pytest

from flow import FLOW_PRESETS, TVL1Params, compute_flow, to_gray
from flow.solver import TVL1Solver
from pipelines.stages.video import iter_frames

REFERENCE = FLOW_PRESETS["reference"]


def _pair(clip: str, index: int, short_side: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Grayscale frames `index` and `index + 1` of a sample clip, decoded as the pipeline does."""
    grays = []
    for frame in iter_frames(clip, 0, None, 25.0, short_side):
        grays.append(to_gray(frame.rgb))
        if len(grays) > index + 1:
            break
    return grays[index], grays[index + 1]


def _both(params: TVL1Params, a: np.ndarray, b: np.ndarray):
    opencv = compute_flow(dataclasses.replace(params, solver="opencv").create(), a, b)
    compiled = compute_flow(dataclasses.replace(params, solver="compiled").create(), a, b)
    return opencv, compiled


@pytest.mark.parametrize(
    "clip, index",
    [("pose2sim_single_cam02.mp4", 10), ("sports2d_demo.mp4", 30), ("pose2sim_multi_cam03.mp4", 5)],
)
def test_default_preset_is_the_reference_bit_for_bit_on_sample_clips(assets_ready, clip, index):
    from pipelines import assets

    a, b = _pair(str(assets.cache_dir() / "videos" / clip), index)
    assert min(a.shape) == 256
    reference = compute_flow(REFERENCE.create(), a, b)
    fast = compute_flow(FLOW_PRESETS["fast"].create(), a, b)
    assert np.abs(reference).max() > 1.0  # real motion, not a still pair
    np.testing.assert_array_equal(fast, reference)


def _textured_pair(h: int, w: int, shift=(2, -1), seed=3):
    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.integers(0, 256, (h + 8, w + 8), dtype=np.uint8), (0, 0), 1.5)
    big = cv2.normalize(big, None, 0, 255, cv2.NORM_MINMAX)
    dy, dx = shift
    return big[4 : 4 + h, 4 : 4 + w], big[4 - dy : 4 - dy + h, 4 - dx : 4 - dx + w]


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"median_filtering": 1},
        {"median_filtering": 3, "inner_iterations": 7, "outer_iterations": 2, "warps": 2},
        {"scale_step": 0.5, "nscales": 3},
        {"tau": 0.2, "lambda_": 0.3, "theta": 0.5, "epsilon": 0.05},
        {"warps": 3, "epsilon": 0.025},
    ],
)
@pytest.mark.parametrize("shape", [(37, 53), (20, 20), (3, 5), (64, 101)])
def test_compiled_solver_matches_opencv_for_any_parameters_and_size(changes, shape):
    a, b = _textured_pair(*shape)
    opencv, compiled = _both(dataclasses.replace(REFERENCE, **changes), a, b)
    assert compiled.shape == shape + (2,) and compiled.dtype == np.float32
    np.testing.assert_array_equal(compiled, opencv)


def test_iterations_are_counted_per_pyramid_level():
    params = dataclasses.replace(REFERENCE, solver="compiled")
    solver = params.create()
    # 20 -> 16 -> 12.8: the third level would be under 16 px, so there are two.
    compute_flow(solver, *_textured_pair(20, 20))
    assert len(solver.last_iterations) == 2
    # 452 x 256 at scale step 0.8: all five levels (the coarsest is 185 x 105).
    compute_flow(solver, *_textured_pair(452, 256))
    assert len(solver.last_iterations) == 5
    most = params.warps * params.outer_iterations * params.inner_iterations
    assert all(params.warps <= n <= most for n in solver.last_iterations)


def test_solver_checks_its_inputs():
    solver = TVL1Params(solver="compiled").create()
    assert isinstance(solver, TVL1Solver)
    gray = np.zeros((8, 8), np.uint8)
    with pytest.raises(ValueError, match="prev: expected uint8"):
        solver.calc(gray.astype(np.float32), gray, None)
    with pytest.raises(ValueError, match=r"next_: expected uint8 \[H, W\]"):
        solver.calc(gray, np.zeros((8, 8, 3), np.uint8), None)
    with pytest.raises(ValueError, match=r"prev.shape=\(8, 8\) != next_.shape=\(8, 9\)"):
        solver.calc(gray, np.zeros((8, 9), np.uint8), None)
    with pytest.raises(ValueError, match=r"prev.shape=\(2, 8\): sides must be >= 3"):
        solver.calc(np.zeros((2, 8), np.uint8), np.zeros((2, 8), np.uint8), None)
    with pytest.raises(ValueError, match="initial flow is not supported"):
        solver.calc(gray, gray, np.zeros((8, 8, 2), np.float32))
    with pytest.raises(ValueError, match="solver='cuda'"):
        TVL1Params(solver="cuda")
    with pytest.raises(ValueError, match="median_filtering=7: must be 1, 3 or 5"):
        TVL1Params(median_filtering=7)
