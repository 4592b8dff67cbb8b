"""The vector 5x5 median filter selects the median (proved for every input by the 0-1
principle) and gives `cv2.medianBlur`'s bits; it refuses what it cannot reproduce."""

import itertools

import cv2
import numpy as np
import pytest

from flow.vector_median import (
    PAIR_MERGE,
    PAIR_RANKS,
    QUAD_MERGE,
    QUAD_RANKS,
    SORT5,
    median5,
)


def _apply(network, values):
    """Runs comparators (a, b[, keep_min, keep_max]) on a dict of slot values."""
    v = dict(values)
    for a, b, *_ in network:
        v[a], v[b] = min(v[a], v[b]), max(v[a], v[b])
    return v


def _select(columns):
    """The filter's selection, on five sorted columns (lists), as the kernel runs it."""

    def runs(first, second, offset):
        return {**dict(enumerate(first)), **{offset + i: x for i, x in enumerate(second)}}

    pairs = []
    for left, right in ((columns[0], columns[1]), (columns[2], columns[3])):
        v = _apply(PAIR_MERGE, runs(left, right, 8))
        pairs.append([v[s] for s in PAIR_RANKS])
    v = _apply(QUAD_MERGE, runs(pairs[0], pairs[1], 16))
    x = dict(zip(range(7, 13), (v[s] for s in QUAD_RANKS)))
    e = columns[4]
    return min([x[12]] + [max(x[i - 1], e[12 - i]) for i in range(8, 13)])


def test_sorting_network_sorts_every_five():
    for bits in itertools.product((0, 1), repeat=5):
        v = _apply(SORT5, dict(enumerate(bits)))
        assert [v[i] for i in range(5)] == sorted(bits)


def test_selection_is_the_median_of_every_window():
    """By the 0-1 principle a comparator network (with min/max steps) selects the median of every
    input with sorted columns iff it does for the 0-1 ones: a column of 0s and 1s is sorted iff
    it is k zeros then 5 - k ones, so the 6^5 cases are all of them."""
    for ones in itertools.product(range(6), repeat=5):
        columns = [[0] * (5 - k) + [1] * k for k in ones]
        assert _select(columns) == sorted(sum(columns, []))[12], ones


def _numpy_median(u):
    padded = np.pad(u, 2, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (5, 5))
    return np.median(windows.reshape(*u.shape, 25), axis=-1).astype(np.float32)


SHAPES = [(1, 16), (2, 17), (3, 31), (5, 32), (16, 33), (37, 53), (64, 101)]


@pytest.mark.parametrize("shape", SHAPES)
def test_vector_median_is_opencv_bit_for_bit(shape):
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    fields = [
        rng.standard_normal(shape) * 3,
        np.round(rng.standard_normal(shape) * 2) + 0.0,  # many ties
        np.full(shape, 1.25),
        np.where(rng.random(shape) < 0.2, np.inf, rng.standard_normal(shape)),
        rng.standard_normal(shape) * 1e-40,  # subnormals (and +0.0 where they round to it)
    ]
    for u in fields:
        u = np.ascontiguousarray(u, np.float32) + np.float32(0.0)  # no -0.0
        got = median5(u)
        assert got is not None
        want = cv2.medianBlur(u, 5)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
        np.testing.assert_array_equal(got, _numpy_median(u))


def test_vector_median_refuses_nan_and_negative_zero():
    u = np.random.default_rng(0).standard_normal((9, 20)).astype(np.float32)
    assert median5(u) is not None
    for value in (np.nan, -0.0):
        bad = u.copy()
        bad[4, 19] = value
        assert median5(bad) is None
    with pytest.raises(ValueError, match=r"u: expected float32 \[H, W\] with W >= 16"):
        median5(u[:, :8].copy())
    wrong = r"u: expected C-contiguous float32 \(9, 20\), got float64"
    with pytest.raises(ValueError, match=wrong):
        median5(u.astype(np.float64))


def test_solver_median_falls_back_to_opencv_where_it_must():
    from flow.solver import _median
    from flow.vector_median import Median5

    u = np.random.default_rng(1).standard_normal((9, 20)).astype(np.float32)
    clean = u.copy()
    u[3, 3] = -0.0
    u[5, 7] = np.nan
    vector = Median5(u.shape)
    for image in (clean, u):
        for size, filt in ((3, None), (5, None), (5, vector)):
            got, want = _median(image, size, filt), cv2.medianBlur(image, size)
            np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_median_filter_alternates_its_buffers():
    """The solver filters the flow the filter returned the call before: the output must never be
    the input's buffer."""
    from flow.vector_median import Median5

    u = np.random.default_rng(2).standard_normal((12, 30)).astype(np.float32)
    vector = Median5(u.shape)
    once = vector(u)
    twice = vector(once)
    thrice = vector(twice)
    assert once is not twice and thrice is once
    np.testing.assert_array_equal(twice, cv2.medianBlur(cv2.medianBlur(u, 5), 5))
