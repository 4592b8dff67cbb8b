"""The vector bicubic warp and data term give OpenCV's `cv2.remap` values bit for bit."""

import cv2
import numpy as np
import pytest

from flow.solver import _fill_border, _linearize, _warp_maps
from flow.vector_warp import MAP_LIMIT, padded, warp_linearize


def _centered_gradient(img):
    """OpenCV's gradients (half central differences, one-sided on the edges), in numpy."""
    half = np.float32(0.5)
    dx, dy = np.empty_like(img), np.empty_like(img)
    dx[:, 1:-1] = half * (img[:, 2:] - img[:, :-2])
    dx[:, 0] = half * (img[:, 1] - img[:, 0])
    dx[:, -1] = half * (img[:, -1] - img[:, -2])
    dy[1:-1] = half * (img[2:] - img[:-2])
    dy[0] = half * (img[1] - img[0])
    dy[-1] = half * (img[-1] - img[-2])
    return dx, dy


@pytest.mark.parametrize("shape", [(2, 2), (3, 5), (17, 4), (40, 61)])
def test_border_holds_the_frame_and_its_gradients(shape):
    rng = np.random.default_rng(shape[0])
    i1 = (rng.standard_normal(shape) * 40).astype(np.float32)
    border = padded(np.zeros(shape + (3,), np.float32))
    _fill_border(i1, border)
    want = padded(np.dstack([i1, *_centered_gradient(i1)]))
    np.testing.assert_array_equal(border.view(np.uint32), want.view(np.uint32))


def _opencv(stacked, u1, u2, i0):
    """What the solver computed before the compiled warp: maps, cv2.remap, `_linearize`."""
    map_x, map_y = np.empty_like(u1), np.empty_like(u1)
    _warp_maps(u1, u2, map_x, map_y)
    warped = cv2.remap(stacked, map_x, map_y, cv2.INTER_CUBIC)
    outs = [np.empty_like(u1) for _ in range(4)]
    _linearize(warped, u1, u2, i0, *outs)
    return warped, outs


def _compiled(stacked, u1, u2, i0):
    outs = [np.empty_like(u1) for _ in range(4)]
    ok = warp_linearize(padded(stacked), u1, u2, i0, *outs)
    return ok, outs


def _flow(rng, h, w, kind):
    """Flows whose maps hit every 1/64 fraction, fractions anywhere, the border region and far
    outside the frame."""
    if kind == "grid":
        u1 = rng.integers(-6 * 64, 6 * 64, (h, w)) / 64
        u2 = rng.integers(-6 * 64, 6 * 64, (h, w)) / 64
    elif kind == "smooth":
        u1 = cv2.GaussianBlur(rng.standard_normal((h, w)) * 8, (0, 0), 2)
        u2 = cv2.GaussianBlur(rng.standard_normal((h, w)) * 8, (0, 0), 2)
    elif kind == "far":
        u1 = rng.uniform(-3 * w, 3 * w, (h, w))
        u2 = rng.uniform(-3 * h, 3 * h, (h, w))
    else:  # "tiny": fractions near 0 and 1, maps on and next to whole pixels
        u1 = rng.choice([0.0, 1e-7, -1e-7, 0.999999, -0.999999, 2.5, -1.5], (h, w))
        u2 = rng.choice([0.0, 3e-8, -3e-8, 0.9999999, -2.0000002, 1.0], (h, w))
    return u1.astype(np.float32), u2.astype(np.float32)


@pytest.mark.parametrize("kind", ["grid", "smooth", "far", "tiny"])
@pytest.mark.parametrize("shape", [(3, 3), (4, 7), (17, 5), (37, 53), (64, 101)])
def test_compiled_warp_is_opencv_remap_bit_for_bit(kind, shape):
    rng = np.random.default_rng(hash((kind, shape)) % 2**32)
    h, w = shape
    for scale in (1.0, 255.0, 1e5):
        i1 = (rng.standard_normal((h, w)) * scale).astype(np.float32)
        i1[rng.random((h, w)) < 0.1] = 0.0
        i0 = (rng.standard_normal((h, w)) * scale).astype(np.float32)
        stacked = np.dstack([i1, *_centered_gradient(i1)])
        u1, u2 = _flow(rng, h, w, kind)
        warped, expected = _opencv(stacked, u1, u2, i0)
        ok, got = _compiled(stacked, u1, u2, i0)
        assert ok
        # The warped gradients are outputs as they are; the warped frame enters rho_c.
        np.testing.assert_array_equal(got[0].view(np.uint32), warped[..., 1].view(np.uint32))
        np.testing.assert_array_equal(got[1].view(np.uint32), warped[..., 2].view(np.uint32))
        for g, e in zip(got, expected):
            np.testing.assert_array_equal(g.view(np.uint32), e.view(np.uint32))


def test_compiled_warp_refuses_maps_it_does_not_reproduce():
    h, w = 8, 9
    rng = np.random.default_rng(0)
    i1 = rng.standard_normal((h, w)).astype(np.float32)
    stacked = np.dstack([i1, *_centered_gradient(i1)])
    for bad in (np.nan, np.inf, -np.inf, float(MAP_LIMIT)):
        u1 = np.zeros((h, w), np.float32)
        u1[3, 4] = bad
        ok, _ = _compiled(stacked, u1, np.zeros_like(u1), np.zeros_like(u1))
        assert not ok


def test_vector_warp_checks_its_arrays():
    rng = np.random.default_rng(1)
    i1 = rng.standard_normal((6, 7)).astype(np.float32)
    stacked = np.dstack([i1, *_centered_gradient(i1)])
    flow = np.zeros((6, 7), np.float32)
    outs = [np.empty_like(flow) for _ in range(4)]
    expected = r"border: expected padded\(stacked\), C-contiguous float32 \(14, 15, 4\)"
    with pytest.raises(ValueError, match=expected + r", got float32 \(6, 7, 3\)"):
        warp_linearize(stacked, flow, flow, flow, *outs)
    border = padded(stacked)
    with pytest.raises(ValueError, match=expected + r", got float64"):
        warp_linearize(border.astype(np.float64), flow, flow, flow, *outs)
    with pytest.raises(ValueError, match=r"rho_c: expected C-contiguous float32 \(6, 7\)"):
        warp_linearize(border, flow, flow, flow, *outs[:3], np.empty((6, 8), np.float32))
