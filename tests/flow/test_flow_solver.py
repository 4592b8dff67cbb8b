"""The compiled TV-L1 solver gives OpenCV's flow, bit for bit, on real and synthetic frames."""

import dataclasses
import os
import platform

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


def test_stopping_decision_is_the_float32_row_major_sums():
    """The float64 sum decides only where it cannot differ from OpenCV's float32 row-major sum;
    at and around that sum's own value the exact sum is taken."""
    from flow.solver import _exact_error, _stopping_error, _sum64

    rng = np.random.default_rng(7)
    checked = near = 0
    for trial in range(40):
        h, w = rng.integers(3, 60, size=2)
        # Terms of very different sizes, so that float32 rounding makes the sums differ.
        sq = (rng.random((h, w)) ** 8 * 10.0 ** rng.integers(-6, 3)).astype(np.float32)
        exact32 = np.float32(0.0)
        for v in sq.ravel():  # row-major, float32, one add at a time: OpenCV's sum
            exact32 = np.float32(exact32 + v)
        assert _exact_error(sq) == exact32
        sum64 = sum(_sum64(row) for row in sq)
        ulp = np.spacing(exact32)
        stops = [exact32, exact32 - ulp, exact32 + ulp, exact32 * 0.999, exact32 * 1.001]
        stops += [np.float32(sum64), exact32 * 0.5, exact32 * 2.0]
        for stop in stops:
            stop = np.float32(stop)
            error = _stopping_error(sq, sum64, np.float64(stop))
            assert (error > stop) == (exact32 > stop), (trial, stop)
            near += error == np.float64(exact32)
            checked += 1
    # The exact sum was taken for the four stops within the margin (the sum itself, one ulp
    # either side, the float64 sum), never for the four 0.1 % or more away (margin < 0.05 %).
    assert (checked, near) == (320, 160)


def test_identical_frames_have_zero_flow_as_both_solvers_give_it(assets_ready):
    from pipelines import assets

    a, _ = _pair(str(assets.cache_dir() / "videos" / "pose2sim_multi_cam03.mp4"), 5)
    opencv = REFERENCE.create().calc(a, a.copy(), None)
    compiled = FLOW_PRESETS["fast"].create().calc(a, a.copy(), None)
    shortcut = compute_flow(FLOW_PRESETS["fast"].create(), a, a.copy())
    assert shortcut.dtype == np.float32 and shortcut.shape == a.shape + (2,)
    for flow in (opencv, compiled):
        assert flow.view(np.uint32).tobytes() == shortcut.view(np.uint32).tobytes()
    assert not shortcut.view(np.uint32).any()  # +0.0, not -0.0


def test_one_remap_of_stacked_channels_is_three_remaps():
    """The solver warps the frame and its two gradients as one three-channel image: OpenCV's
    bicubic remap must interpolate each channel exactly as a one-channel call does."""
    rng = np.random.default_rng(11)
    h, w = 57, 83
    planes = [rng.standard_normal((h, w)).astype(np.float32) * s for s in (80.0, 10.0, 3.0)]
    stacked = np.dstack(planes)
    for scale in (0.0, 0.4, 5.0, 60.0):  # whole pixels, sub-pixel, far and outside the frame
        map_x = np.arange(w, dtype=np.float32)[None, :] + (
            rng.standard_normal((h, w)) * scale
        ).astype(np.float32)
        map_y = np.arange(h, dtype=np.float32)[:, None] + (
            rng.standard_normal((h, w)) * scale
        ).astype(np.float32)
        together = cv2.remap(stacked, map_x, map_y, cv2.INTER_CUBIC)
        for k, plane in enumerate(planes):
            alone = cv2.remap(plane, map_x, map_y, cv2.INTER_CUBIC)
            assert together[..., k].tobytes() == alone.tobytes(), (scale, k)


def test_solver_warps_with_opencv_where_its_warp_refuses(monkeypatch):
    """Where the vector warp refuses a map (NaN or huge), the solver warps with `cv2.remap` and
    the data term in numba: force that path on every warp and the flow is still OpenCV's."""
    from flow.vector_warp import Warp

    a, b = _textured_pair(37, 53)
    want = compute_flow(REFERENCE.create(), a, b)
    monkeypatch.setattr(Warp, "__call__", lambda self, u1, u2: False)
    got = compute_flow(dataclasses.replace(REFERENCE, solver="compiled").create(), a, b)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_one_solver_reused_across_pairs_and_sizes_gives_fresh_solvers_flow():
    """The solver keeps its levels' buffers between calls: reusing it, on pairs of one size and
    then another, must give what a fresh solver gives."""
    params = dataclasses.replace(REFERENCE, solver="compiled")
    pairs = [_textured_pair(40, 61, seed=1), _textured_pair(40, 61, (0, 3), seed=2),
             _textured_pair(33, 20, seed=3), _textured_pair(40, 61, seed=4)]  # fmt: skip
    reused = params.create()
    for a, b in pairs:
        got = compute_flow(reused, a, b)
        want = compute_flow(params.create(), a, b)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"), reason="x86 CPU models only"
)
@pytest.mark.parametrize("cpu", ["haswell", "x86-64"])
def test_vector_kernels_compiled_for_older_cpus_give_the_same_flow(cpu):
    """The kernels are compiled for the host CPU (here AVX-512 where it has it): compiled for an
    AVX2 model and for the x86-64 baseline (SSE2), in a fresh process, the solver's flow is still
    OpenCV's bit for bit."""
    import subprocess
    import sys

    code = """
import sys, numpy as np
from flow import FLOW_PRESETS, compute_flow
rng = np.random.default_rng(5)
a = rng.integers(0, 256, (52, 75), dtype=np.uint8)
a = (a // 3 + np.roll(a, 1, 0) // 3 + np.roll(a, 1, 1) // 3).astype(np.uint8)
b = np.roll(a, (1, -2), axis=(0, 1))
for name in ("reference", "fast"):
    sys.stdout.buffer.write(compute_flow(FLOW_PRESETS[name].create(), a, b).tobytes())
"""
    env = {**os.environ, "PERFNET_LLVM_CPU": cpu}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, env=env, timeout=300, check=True
    )
    half = len(done.stdout) // 2
    assert half == 52 * 75 * 2 * 4
    assert done.stdout[:half] == done.stdout[half:]
