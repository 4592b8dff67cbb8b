"""Flow quantization (exact values), its inverse, and TV-L1 on a known motion."""

import cv2
import numpy as np
import pytest

from flow import FLOW_PRESETS, compute_flow, dequantize_flow, flow_params, quantize_flow, to_gray


def test_quantize_exact_values():
    v = np.array([-25.0, -20.0, -10.0, 0.0, 0.05, 10.0, 19.9, 20.0, 30.0], np.float32)
    flow = np.stack([v, -v], axis=-1)[None]  # [1, 9, 2]
    q = quantize_flow(flow)
    assert q.dtype == np.uint8 and q.shape == (1, 9, 3)
    # floor(255 * clip((v + 20) / 40, 0, 1))
    assert q[0, :, 0].tolist() == [0, 0, 63, 127, 127, 191, 254, 255, 255]
    assert q[0, :, 1].tolist() == [255, 255, 191, 127, 127, 63, 0, 0, 0]
    assert q[0, :, 2].tolist() == [0] * 9


def test_dequantize_exact_values():
    q = np.array([[[0, 255, 0], [127, 128, 0], [255, 0, 0]]], np.uint8)
    v = dequantize_flow(q)
    assert v.dtype == np.float32 and v.shape == (1, 3, 2)
    np.testing.assert_allclose(v[0, :, 0], [-20.0, (127 / 255 - 0.5) * 40, 20.0], atol=1e-5)
    np.testing.assert_allclose(v[0, :, 1], [20.0, (128 / 255 - 0.5) * 40, -20.0], atol=1e-5)


def test_round_trip_error_is_at_most_one_step():
    rng = np.random.default_rng(0)
    flow = rng.uniform(-20, 20, size=(64, 64, 2)).astype(np.float32)
    err = np.abs(dequantize_flow(quantize_flow(flow)) - flow)
    assert err.max() <= 40 / 255 + 1e-5
    # Outside the bound values saturate at the bound.
    big = np.full((2, 2, 2), 100.0, np.float32)
    np.testing.assert_allclose(dequantize_flow(quantize_flow(big)), 20.0)


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="bound=0"):
        quantize_flow(np.zeros((2, 2, 2)), bound=0)
    with pytest.raises(ValueError, match=r"flow.shape=\(2, 2\)"):
        quantize_flow(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="flow_preset='slow'"):
        flow_params("slow")
    with pytest.raises(ValueError, match="warps=0"):
        FLOW_PRESETS["reference"].__class__(warps=0)


@pytest.mark.parametrize("preset", sorted(FLOW_PRESETS))
def test_tvl1_recovers_a_known_shift(preset):
    rng = np.random.default_rng(1)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (96, 128), dtype=np.uint8), (0, 0), 2.0)
    texture = cv2.normalize(texture, None, 0, 255, cv2.NORM_MINMAX)
    dx, dy = 3, -2
    moved = np.roll(texture, shift=(dy, dx), axis=(0, 1))
    flow = compute_flow(flow_params(preset).create(), texture, moved)
    assert flow.shape == (96, 128, 2) and flow.dtype == np.float32
    inner = flow[16:-16, 16:-16]
    assert abs(np.median(inner[..., 0]) - dx) < 0.25
    assert abs(np.median(inner[..., 1]) - dy) < 0.25


def test_to_gray_checks_input():
    assert to_gray(np.zeros((4, 5, 3), np.uint8)).shape == (4, 5)
    with pytest.raises(ValueError, match="frame_rgb"):
        to_gray(np.zeros((4, 5), np.uint8))
