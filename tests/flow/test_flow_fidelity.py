"""Fidelity of the default flow preset to OpenCV's defaults, and of stored flow to computed flow.

Fast tests only; the throughput and fidelity figures on real clips come from
`benchmarks/flow_bench.py`.
"""

import dataclasses

import cv2
import numpy as np
import pytest

from flow import (
    DEFAULT_FLOW_PRESET,
    FLOW_PRESETS,
    TVL1Params,
    compute_flow,
    dequantize_flow,
    flow_params,
    quantize_flow,
)
from pipelines.stages.codec import decode_jpeg, encode_jpeg

STEP = 40 / 255  # one quantization step in pixels


def _texture(h, w, seed=0, sigma=1.5):
    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur(rng.integers(0, 256, (h, w), dtype=np.uint8), (0, 0), sigma)
    return cv2.normalize(t, None, 0, 255, cv2.NORM_MINMAX)


def _moving_square_pair():
    """A textured background shifted by (1, 0) px and a textured square moving by (4, -3) px."""
    h, w = 96, 128
    bg, fg = _texture(h, w, 1), _texture(h, w, 2)
    mask = np.zeros((h, w), bool)
    mask[30:62, 40:80] = True
    a = np.where(mask, fg, bg)
    bg1 = np.roll(bg, 1, axis=1)
    fg1 = np.roll(fg, (-3, 4), axis=(0, 1))
    mask1 = np.roll(mask, (-3, 4), axis=(0, 1))
    b = np.where(mask1, fg1, bg1)
    truth = np.zeros((h, w, 2), np.float32)
    truth[..., 0] = 1.0
    truth[mask] = (4.0, -3.0)
    return a, b, truth, mask


def test_reference_preset_is_opencvs_default():
    ours = FLOW_PRESETS["reference"].create()
    theirs = cv2.optflow.DualTVL1OpticalFlow.create()
    for getter in (
        "getTau",
        "getLambda",
        "getTheta",
        "getScalesNumber",
        "getWarpingsNumber",
        "getEpsilon",
        "getInnerIterations",
        "getOuterIterations",
        "getScaleStep",
        "getMedianFiltering",
        "getGamma",
        "getUseInitialFlow",
    ):
        assert getattr(ours, getter)() == pytest.approx(getattr(theirs, getter)()), getter


def test_default_preset_is_the_reference_on_the_compiled_solver():
    ref, default = FLOW_PRESETS["reference"], flow_params(DEFAULT_FLOW_PRESET)
    assert DEFAULT_FLOW_PRESET == "fast"
    assert ref.solver == "opencv" and default.solver == "compiled"
    assert dataclasses.replace(default, solver="opencv") == ref


def test_draft_preset_is_a_sooner_stopping_variant_of_the_reference():
    ref, draft = FLOW_PRESETS["reference"], FLOW_PRESETS["draft"]
    # Same energy (data term, smoothness, coupling) and pyramid: only the solver stops sooner.
    for name in ("tau", "lambda_", "theta", "nscales", "scale_step", "median_filtering"):
        assert getattr(draft, name) == getattr(ref, name), name
    assert (draft.epsilon, draft.warps) == (0.025, 3)


def test_draft_preset_stays_close_to_reference_on_a_synthetic_pair():
    a, b, truth, mask = _moving_square_pair()
    ref = compute_flow(FLOW_PRESETS["reference"].create(), a, b)
    draft = compute_flow(FLOW_PRESETS["draft"].create(), a, b)
    inner = (slice(8, -8), slice(8, -8))  # borders: both solvers are unreliable there
    d = np.linalg.norm(draft - ref, axis=-1)[inner]
    moving = (np.linalg.norm(ref, axis=-1) > 1)[inner]
    assert d.mean() < 0.25
    assert d[moving].mean() < 0.35
    # Both recover the motion they are given (medians are robust to the square's edges).
    for flow in (ref, draft):
        core = flow[34:58, 44:76]
        assert np.median(core[..., 0]) == pytest.approx(4.0, abs=0.3)
        assert np.median(core[..., 1]) == pytest.approx(-3.0, abs=0.3)
        bg = flow[inner][~mask[inner]]
        assert np.median(bg[:, 0]) == pytest.approx(1.0, abs=0.2)


@pytest.mark.parametrize("preset", sorted(FLOW_PRESETS))
def test_presets_are_deterministic(preset):
    a, b, _, _ = _moving_square_pair()
    algo = flow_params(preset).create()
    np.testing.assert_array_equal(compute_flow(algo, a, b), compute_flow(algo, a, b))


def _piecewise_smooth_flow():
    """Smooth flow within [-20, 20] with a sharp-edged block moving differently (a motion edge)."""
    h, w = 64, 96
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    flow = np.stack([8 * np.sin(x / 15) + 2, 6 * np.cos(y / 11) - 1], axis=-1)
    flow[20:44, 30:70] = (-12.5, 9.3)
    flow[0, :4] = (25.0, -30.0)  # beyond the bound: saturates
    return flow.astype(np.float32)


@pytest.mark.parametrize(
    "quality, max_steps, mean_px, p99_px, smooth_p99_steps",
    [(100, 4, 0.15, 0.5, 2.5), (90, 24, 0.25, 1.5, 3.5)],
)
def test_stored_flow_round_trip_error_is_bounded(
    quality, max_steps, mean_px, p99_px, smooth_p99_steps
):
    """quantize -> JPEG 4:4:4 -> decode -> dequantize, as the pipeline stores and readers read.

    Measured on this field: quality 100 moves codes by at most 3 steps (mean error 0.11 px);
    quality 90, the pipeline's default, by up to 17 steps at the motion edge (mean 0.17 px).
    """
    flow = _piecewise_smooth_flow()
    q = quantize_flow(flow)
    back = decode_jpeg(encode_jpeg(q, quality, full_chroma=True))
    assert back.shape == q.shape
    steps = np.abs(back[..., :2].astype(int) - q[..., :2].astype(int))
    assert steps.max() <= max_steps
    err = np.abs(dequantize_flow(back) - np.clip(flow, -20, 20))
    # Quantization alone is within one step; JPEG adds a few steps, most at the motion edge.
    assert err.mean() <= mean_px
    assert np.percentile(err, 99) <= p99_px
    assert np.abs(dequantize_flow(back)[0, 0] - (20.0, -20.0)).max() <= max_steps * STEP + 1e-5
    # Away from the edge and the saturated corner the error stays within a few steps.
    smooth = np.ones(flow.shape[:2], bool)
    smooth[16:48, 26:74] = False
    smooth[:8, :12] = False
    assert err[smooth].mean() <= STEP
    assert np.percentile(err[smooth], 99) <= smooth_p99_steps * STEP


def test_full_chroma_keeps_flow_sharper_than_420():
    flow = _piecewise_smooth_flow()
    q = quantize_flow(flow)
    err = {}
    for full in (True, False):
        back = dequantize_flow(decode_jpeg(encode_jpeg(q, 100, full_chroma=full)))
        err[full] = np.abs(back - np.clip(flow, -20, 20)).max()
    assert err[True] < err[False]


def test_tvl1_params_round_trip_through_create():
    p = TVL1Params(epsilon=0.03, warps=4, inner_iterations=20, median_filtering=3)
    algo = p.create()
    assert algo.getEpsilon() == pytest.approx(0.03)
    assert algo.getWarpingsNumber() == 4
    assert algo.getInnerIterations() == 20
    assert algo.getMedianFiltering() == 3
