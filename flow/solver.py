"""A compiled Dual TV-L1 solver that reproduces OpenCV contrib's results, several times faster.

`cv2.optflow.DualTVL1OpticalFlow` spends most of its time in the inner iteration of the
primal-dual scheme (Zach, Pock, Bischof 2007; Sanchez Perez et al., IPOL 2013), which it runs as
seven separate passes over the frame per iteration, with a double-precision `hypot` per pixel and a
single-threaded error sum. `TVL1Solver` runs the same scheme with the same float32 arithmetic in
the same order: the iteration as one fused sweep of explicit vector code per iteration
(`flow.vector_iteration`; `_iterate` below, compiled with numba, is the same iteration written
plainly, and runs on frames narrower than one vector), the warps as explicit vector code fused
with the data term that follows them (`flow.vector_warp`), which reproduces `cv2.remap` (OpenCV 5,
bicubic, float maps, zero outside the frame) bit for bit on the frame and its two gradients,
including its fused multiply-adds (tests/flow/test_flow_warp.py); maps that are NaN or huge go to
`cv2.remap` itself. The 5x5 median filter is explicit vector code as well (`flow.vector_median`:
any correct median gives `cv2.medianBlur`'s bits where the window holds no NaN or -0.0, and
OpenCV filters the rare flow that does). OpenCV is called for the rest: the pyramid
(`cv2.resize`, bilinear) and 3x3 median filters. Its flow is therefore bit-for-bit OpenCV's on
the frames we have tested (tests/flow/test_flow_solver.py; `benchmarks/flow_bench.py` prints the
difference on any clip), at about 25x the pairs per core-second (docs/cost.md). The warp
depends on OpenCV's version: OpenCV 4 rounded the maps to 1/32 pixel and summed differently; the
solver tests catch that.

The stopping test needs OpenCV's error, a float32 sum in row-major order: a serial chain of adds
that no vector unit can run. The iteration sums the same float32 terms in float64 instead, in any
order (vectorised); the float32 row-major sum differs from the exact sum by at most
(n - 1) * 2^-24 of it (n terms, all >= 0), the float64 sum by far less, so wherever the float64
sum lies farther than n * 2^-23 of itself from the threshold both sums fall on the same side of
it. Only within that margin, once per stopping decision at most, is the row-major float32 sum
taken (`_exact_error`), so the decision, and with it the flow, is OpenCV's. (The vector iteration
first sums each lane's terms along a row in float32; its module docstring shows that the same
margin still covers that.)

Two identical frames have zero flow: the warps interpolate at whole pixels, the data term is zero,
and the first iteration of every level stops with a zero update; OpenCV returns +0.0 everywhere.
`flow.compute_flow` returns that without solving (a low-rate source resampled to 25 fps repeats
frames).

What is reproduced exactly, per pyramid level (coarsest first, flow upsampled bilinearly and
divided by the scale step between levels; levels stop before a side would drop under 16 px):
- centred image gradient of the second frame, one-sided at the borders, halved;
- for each warp: bicubic warp of the frame and its gradient by the current flow, the constant part
  of the linearised data term `rho_c = I1w - I1wx * u1 - I1wy * u2 - I0` and `|grad I1w|^2`;
  then up to `outer_iterations` rounds of: median filter of the flow, up to `inner_iterations`
  iterations of (thresholding step for v, divergence of the dual field, primal update of u with
  the sum of squared updates as the error, forward gradient of u and the dual update); it stops
  as soon as that error is at most `epsilon^2 * H * W`, summed in float32 in row-major order;
- the dual field is reset to zero at every level, as OpenCV does.

The illumination term (OpenCV's `gamma`) and initial flow are not supported: the project always
uses gamma = 0 and no initial flow.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from numba import njit

from flow import vector_iteration
from flow.vector_iteration import Iteration
from flow.vector_median import Median5
from flow.vector_warp import Warp, interior, padded

_F32 = np.float32
# The smallest squared gradient for which the thresholding step divides by it (FLT_EPSILON).
_GRAD_EPS = np.finfo(np.float32).eps
# Bigger than any error the iteration can produce: the first iteration always runs.
_NO_ERROR = np.float32(np.inf)


@njit(cache=True, inline="always", error_model="numpy")
def _dual_update(p11, p12, p21, p22, y, x, u1x, u1y, u2x, u2y, taut):
    """Projected gradient step of the dual field at (y, x) from the forward gradient of u."""
    one = np.float32(1.0)
    # OpenCV takes `hypot` in double precision and rounds it to float: the same value.
    g1 = np.float32(math.sqrt(np.float64(u1x) * u1x + np.float64(u1y) * u1y))
    g2 = np.float32(math.sqrt(np.float64(u2x) * u2x + np.float64(u2y) * u2y))
    ng1 = one + taut * g1
    ng2 = one + taut * g2
    p11[y, x] = (p11[y, x] + taut * u1x) / ng1
    p12[y, x] = (p12[y, x] + taut * u1y) / ng1
    p21[y, x] = (p21[y, x] + taut * u2x) / ng2
    p22[y, x] = (p22[y, x] + taut * u2y) / ng2


@njit(cache=True, fastmath={"reassoc"})
def _sum64(row):
    """float32 [W] -> their float64 sum, in any order (vectorised); used only for a bound."""
    acc = 0.0
    for x in range(row.shape[0]):
        acc += np.float64(row[x])
    return acc


@njit(cache=True, error_model="numpy")
def _exact_error(sq):
    """float32 [H, W] -> their float32 sum in row-major order, OpenCV's error."""
    h, w = sq.shape
    error = np.float32(0.0)
    for y in range(h):
        for x in range(w):
            error += sq[y, x]
    return error


@njit(cache=True, error_model="numpy")
def _stopping_error(sq, sum64, stop):
    """The error to hold against `stop` (float64): `sum64`, the float64 sum of the float32 [H, W]
    terms `sq` (all >= 0), where it decides as OpenCV's float32 row-major sum would; that exact
    sum otherwise (see the module docstring)."""
    margin = sq.size * 2.0**-23 * sum64
    if abs(sum64 - stop) <= margin or not sum64 == sum64:  # near the threshold, or NaN
        return np.float64(_exact_error(sq))
    return sum64


@njit(cache=True, error_model="numpy")
def _iterate(i1wx, i1wy, grad, rho_c, u1, u2, p11, p12, p21, p22, l_t, theta, taut, stop, limit):
    """Runs up to `limit` iterations in place on u and p; stops once the error is <= `stop`.

    All arrays float32 [H, W]; scalars float32. Returns (iterations run, last error as float64,
    on the same side of `stop` as OpenCV's float32 error).
    """
    h, w = u1.shape
    zero = np.float32(0.0)
    grad_eps = np.float32(_GRAD_EPS)
    sq = np.empty((h, w), np.float32)  # squared updates, kept for `_stopping_error`
    v1 = np.empty(w, np.float32)
    v2 = np.empty(w, np.float32)
    stop64 = np.float64(stop)
    error = np.float64(_NO_ERROR)
    n = 0
    while n < limit:
        sum64 = 0.0
        # Pass 1, row by row: thresholding step (v), divergence of p, primal update (u), error.
        for y in range(h):
            for x in range(w):
                ix = i1wx[y, x]
                iy = i1wy[y, x]
                g = grad[y, x]
                a = u1[y, x]
                b = u2[y, x]
                rho = rho_c[y, x] + (ix * a + iy * b)
                lg = l_t * g
                fi = -rho / g
                f = l_t if rho < -lg else (-l_t if rho > lg else (fi if g > grad_eps else zero))
                v1[x] = a + f * ix
                v2[x] = b + f * iy
            if y > 0:
                for x in range(1, w):
                    div1 = (p11[y, x] - p11[y, x - 1]) + (p12[y, x] - p12[y - 1, x])
                    div2 = (p21[y, x] - p21[y, x - 1]) + (p22[y, x] - p22[y - 1, x])
                    a = v1[x] + theta * div1
                    b = v2[x] + theta * div2
                    da = a - u1[y, x]
                    db = b - u2[y, x]
                    sq[y, x] = da * da + db * db
                    u1[y, x] = a
                    u2[y, x] = b
                div1 = p11[y, 0] + p12[y, 0] - p12[y - 1, 0]
                div2 = p21[y, 0] + p22[y, 0] - p22[y - 1, 0]
            else:
                for x in range(1, w):
                    div1 = p11[0, x] - p11[0, x - 1] + p12[0, x]
                    div2 = p21[0, x] - p21[0, x - 1] + p22[0, x]
                    a = v1[x] + theta * div1
                    b = v2[x] + theta * div2
                    da = a - u1[0, x]
                    db = b - u2[0, x]
                    sq[0, x] = da * da + db * db
                    u1[0, x] = a
                    u2[0, x] = b
                div1 = p11[0, 0] + p12[0, 0]
                div2 = p21[0, 0] + p22[0, 0]
            a = v1[0] + theta * div1
            b = v2[0] + theta * div2
            da = a - u1[y, 0]
            db = b - u2[y, 0]
            sq[y, 0] = da * da + db * db
            u1[y, 0] = a
            u2[y, 0] = b
            sum64 += _sum64(sq[y])
        # Pass 2: forward gradient of u (zero across the last row and column) and dual update.
        for y in range(h - 1):
            for x in range(w - 1):
                a = u1[y, x]
                b = u2[y, x]
                _dual_update(
                    p11, p12, p21, p22, y, x,
                    u1[y, x + 1] - a, u1[y + 1, x] - a, u2[y, x + 1] - b, u2[y + 1, x] - b,
                    taut,
                )  # fmt: skip
            x = w - 1
            _dual_update(
                p11, p12, p21, p22, y, x,
                zero, u1[y + 1, x] - u1[y, x], zero, u2[y + 1, x] - u2[y, x],
                taut,
            )  # fmt: skip
        y = h - 1
        for x in range(w - 1):
            _dual_update(
                p11, p12, p21, p22, y, x,
                u1[y, x + 1] - u1[y, x], zero, u2[y, x + 1] - u2[y, x], zero,
                taut,
            )  # fmt: skip
        _dual_update(p11, p12, p21, p22, y, w - 1, zero, zero, zero, zero, taut)
        n += 1
        error = _stopping_error(sq, sum64, stop64)
        if not error > stop64:
            break
    return n, error


@njit(cache=True, error_model="numpy")
def _warp_maps(u1, u2, map_x, map_y):
    """Fills map_x = x + u1 and map_y = y + u2 (float32 [H, W], pixels) for `cv2.remap`."""
    h, w = u1.shape
    for y in range(h):
        fy = np.float32(y)
        for x in range(w):
            map_x[y, x] = np.float32(x) + u1[y, x]
            map_y[y, x] = fy + u2[y, x]


@njit(cache=True, error_model="numpy")
def _linearize(warped, u1, u2, i0, i1wx, i1wy, grad, rho_c):
    """From the warped frame and gradients (float32 [H, W, 3]: I1w, I1wx, I1wy) fills the
    float32 [H, W] arrays of the linearised data term: I1wx, I1wy, |grad I1w|^2 and
    rho_c = I1w - I1wx * u1 - I1wy * u2 - I0, in OpenCV's order of operations."""
    h, w = u1.shape
    for y in range(h):
        for x in range(w):
            i1w = warped[y, x, 0]
            ix = warped[y, x, 1]
            iy = warped[y, x, 2]
            i1wx[y, x] = ix
            i1wy[y, x] = iy
            grad[y, x] = ix * ix + iy * iy
            rho_c[y, x] = i1w - ix * u1[y, x] - iy * u2[y, x] - i0[y, x]


@njit(cache=True, error_model="numpy")
def _fill_border(img, border):
    """Writes the frame `img` (float32 [H, W], H, W >= 2) and its gradients d/dx, d/dy as the
    first three channels of `border`'s interior (float32 [H + 8, W + 8, 4]), leaving its zero
    border and fourth channel as they are. The gradients are OpenCV's: half the central
    difference inside, half the one-sided difference on the frame's edges, in float32."""
    h, w = img.shape
    half = np.float32(0.5)
    pad = (border.shape[0] - h) // 2
    for y in range(h):
        up = y - 1 if y > 0 else 0
        down = y + 1 if y < h - 1 else h - 1
        for x in range(w):
            left = x - 1 if x > 0 else 0
            right = x + 1 if x < w - 1 else w - 1
            border[y + pad, x + pad, 0] = img[y, x]
            border[y + pad, x + pad, 1] = half * (img[y, right] - img[y, left])
            border[y + pad, x + pad, 2] = half * (img[down, x] - img[up, x])


class _Level:
    """One pyramid level's buffers and vector kernels bound to them, for frames of one size:
    kept by the solver across calls, so that a video's pairs allocate nothing (fresh buffers
    cost page faults on every pair)."""

    def __init__(self, h: int, w: int, l_t, theta, taut, median_filtering: int):
        self.i0 = np.empty((h, w), _F32)
        self.border = padded(np.zeros((h, w, 3), _F32))  # the stacked frame, zero around it
        self.p = [np.empty((h, w), _F32) for _ in range(4)]  # the dual field
        self.data = [np.empty((h, w), _F32) for _ in range(4)]  # i1wx, i1wy, grad, rho_c
        self.warp = Warp(self.border, self.i0, *self.data)
        wide = w >= vector_iteration.LANES
        if wide:
            self.iterate = Iteration(*self.data, *self.p, l_t, theta, taut)
        else:  # frames narrower than one vector: the plain iteration

            def iterate(u1, u2, stop, limit):
                args = (*self.data, u1, u2, *self.p)
                return _iterate(*args, l_t, theta, taut, stop, limit)

            self.iterate = iterate
        vector = wide and median_filtering == 5
        self.medians = [Median5((h, w)) if vector else None for _ in range(2)]

    def stacked(self) -> np.ndarray:
        """The frame and its gradients, float32 [H, W, 3], for `cv2.remap`."""
        return np.ascontiguousarray(interior(self.border))


class TVL1Solver:
    """Dual TV-L1 optical flow with OpenCV's parameters and results (see the module docstring).

    Same call as OpenCV's algorithm object: `calc(prev, next, None)`. Between calls it keeps
    `last_iterations` and, for frames of the last call's size, its buffers and the kernels bound
    to them (so a solver serves one thread at a time, as OpenCV's object does). OpenCV's thread
    count (`cv2.setNumThreads`) applies to the OpenCV calls; the compiled code runs on the
    calling thread.

    Args:
      tau, lambda_, theta, nscales, warps, epsilon, inner_iterations, outer_iterations,
      scale_step, median_filtering: as `flow.TVL1Params` (OpenCV's meanings).
    """

    # The smallest frame side the solver accepts: gradients need 3 samples.
    MIN_SIDE = 3

    def __init__(
        self,
        tau: float,
        lambda_: float,
        theta: float,
        nscales: int,
        warps: int,
        epsilon: float,
        inner_iterations: int,
        outer_iterations: int,
        scale_step: float,
        median_filtering: int,
    ):
        self.tau, self.lambda_, self.theta = tau, lambda_, theta
        self.nscales, self.warps, self.epsilon = int(nscales), int(warps), epsilon
        self.inner_iterations = int(inner_iterations)
        self.outer_iterations = int(outer_iterations)
        self.scale_step, self.median_filtering = scale_step, int(median_filtering)
        # Iterations run per pyramid level at the last call, finest level first (for profiling).
        self.last_iterations: list[int] = []
        # The levels' buffers and bound kernels, for the frame size of the last call.
        self._levels: dict[tuple[int, int], _Level] = {}
        self._frame_shape: tuple[int, int] | None = None

    def calc(self, prev: np.ndarray, next_: np.ndarray, flow=None) -> np.ndarray:
        """TV-L1 flow from `prev` to `next_`.

        Args:
          prev, next_: uint8 [H, W] grayscale frames of the same size, H and W >= 3.
          flow: must be None (initial flow is not supported; the argument mirrors OpenCV's).

        Returns:
          float32 [H, W, 2]: (dx, dy) in pixels of each pixel of `prev`.
        """
        if flow is not None:
            raise ValueError("flow: initial flow is not supported; pass None")
        for name, img in (("prev", prev), ("next_", next_)):
            if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 2:
                raise ValueError(
                    f"{name}: expected uint8 [H, W], got {getattr(img, 'dtype', type(img))} "
                    f"{getattr(img, 'shape', '')}"
                )
            if min(img.shape) < self.MIN_SIDE:
                raise ValueError(f"{name}.shape={img.shape}: sides must be >= {self.MIN_SIDE}")
        if prev.shape != next_.shape:
            raise ValueError(f"prev.shape={prev.shape} != next_.shape={next_.shape}")

        if prev.shape != self._frame_shape:  # another video: let the last one's buffers go
            self._levels, self._frame_shape = {}, prev.shape
        i0s, i1s = [prev.astype(_F32)], [next_.astype(_F32)]
        for _ in range(1, self.nscales):
            a = cv2.resize(i0s[-1], None, fx=self.scale_step, fy=self.scale_step)
            if a.shape[0] < 16 or a.shape[1] < 16:
                break
            i0s.append(a)
            i1s.append(cv2.resize(i1s[-1], None, fx=self.scale_step, fy=self.scale_step))

        self.last_iterations = []
        u1 = np.zeros_like(i0s[-1])
        u2 = np.zeros_like(i0s[-1])
        inv_step = _F32(1.0 / self.scale_step)
        for s in range(len(i0s) - 1, -1, -1):
            u1, u2 = self._level(i0s[s], i1s[s], u1, u2)
            if s > 0:
                size = (i0s[s - 1].shape[1], i0s[s - 1].shape[0])
                u1 = cv2.resize(u1, size) * inv_step
                u2 = cv2.resize(u2, size) * inv_step
        self.last_iterations.reverse()
        return np.dstack([u1, u2])

    def _level(self, i0, i1, u1, u2):
        """Solves one pyramid level from the flow (u1, u2), all float32 [h, w]; returns it."""
        h, w = i0.shape
        stop = _F32(self.epsilon * self.epsilon * h * w)
        level = self._levels.get((h, w))
        if level is None:
            l_t = _F32(self.lambda_ * self.theta)
            taut = _F32(self.tau / self.theta)
            theta = _F32(self.theta)
            level = _Level(h, w, l_t, theta, taut, self.median_filtering)
            self._levels[(h, w)] = level
        level.i0[...] = i0
        # The frame and its gradients as the three channels of one image: one warp warps all.
        _fill_border(i1, level.border)
        for p in level.p:  # the dual field starts at zero on every level, as OpenCV's does
            p.fill(0.0)
        iterations = 0
        for _ in range(self.warps):
            if not level.warp(u1, u2):
                map_x, map_y = np.empty_like(i0), np.empty_like(i0)
                _warp_maps(u1, u2, map_x, map_y)
                warped = cv2.remap(level.stacked(), map_x, map_y, cv2.INTER_CUBIC)
                _linearize(warped, u1, u2, level.i0, *level.data)
            error = _NO_ERROR
            for _ in range(self.outer_iterations):
                if not error > stop:
                    break
                if self.median_filtering > 1:
                    u1 = _median(u1, self.median_filtering, level.medians[0])
                    u2 = _median(u2, self.median_filtering, level.medians[1])
                n, error = level.iterate(u1, u2, stop, self.inner_iterations)
                iterations += n
        self.last_iterations.append(iterations)
        return u1, u2


def _median(u: np.ndarray, size: int, vector: Median5 | None) -> np.ndarray:
    """`cv2.medianBlur(u, size)` (float32 [H, W]): by `vector`, the vector 5x5 filter, where it
    gives the same bits (it refuses flow holding NaN or -0.0); by OpenCV otherwise."""
    if vector is not None:
        out = vector(u)
        if out is not None:
            return out
    return cv2.medianBlur(u, size)
