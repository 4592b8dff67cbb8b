"""A compiled Dual TV-L1 solver that reproduces OpenCV contrib's results, several times faster.

`cv2.optflow.DualTVL1OpticalFlow` spends most of its time in the inner iteration of the
primal-dual scheme (Zach, Pock, Bischof 2007; Sanchez Perez et al., IPOL 2013), which it runs as
seven separate passes over the frame per iteration, with a double-precision `hypot` per pixel and a
single-threaded error sum. `TVL1Solver` runs the same scheme with the same float32 arithmetic in
the same order, in two passes per iteration compiled with numba (vectorised where the order of
operations allows). The warps are compiled too, fused with the data term that follows them
(`_warp_linearize`): they reproduce `cv2.remap` (OpenCV 5, bicubic, float maps, zero outside the
frame) bit for bit on the frame and its two gradients, including its fused multiply-adds
(tests/flow/test_flow_warp.py); maps that are NaN or huge go to `cv2.remap` itself. OpenCV is
called for the rest: the pyramid (`cv2.resize`, bilinear) and the median filter
(`cv2.medianBlur`). Its flow is therefore bit-for-bit OpenCV's on the frames we have tested
(tests/flow/test_flow_solver.py; `benchmarks/flow_bench.py` prints the difference on any clip),
at about 15x the pairs per core-second (docs/cost.md). The warp depends on OpenCV's version:
OpenCV 4 rounded the maps to 1/32 pixel and summed differently; the solver tests catch that.

The stopping test needs OpenCV's error, a float32 sum in row-major order: a serial chain of adds
that no vector unit can run. The iteration sums the same float32 terms in float64 instead, in any
order (vectorised); the float32 row-major sum differs from the exact sum by at most
(n - 1) * 2^-24 of it (n terms, all >= 0), the float64 sum by far less, so wherever the float64
sum lies farther than n * 2^-23 of itself from the threshold both sums fall on the same side of
it. Only within that margin, once per stopping decision at most, is the row-major float32 sum
taken (`_exact_error`), so the decision, and with it the flow, is OpenCV's.

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
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

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


# Zero border around the stacked frame and gradients for `_warp_linearize`: wide enough that every
# 4x4 bicubic window that touches the frame lies inside, and that the corner holds a 4x4 window of
# zeros for the windows that do not.
_PAD = 4
# `_warp_linearize` leaves maps at or beyond this many pixels (and NaN) to `cv2.remap`.
_MAP_LIMIT = np.float32(2.0**22)


@intrinsic
def _fma(typingctx, a, b, c):
    """float32 a * b + c rounded once (LLVM's fma: the hardware instruction where there is one)."""
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        f = ir.FloatType()
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(f, [f, f, f]), "llvm.fma.f32"
        )
        return builder.call(fn, args)

    return sig, codegen


@njit(cache=True, inline="always", error_model="numpy")
def _cubic_weights(t):
    """OpenCV 5's bicubic weights (A = -0.75) at fraction t in [0, 1), in its float32 order."""
    one = np.float32(1.0)
    a = np.float32(-0.75)
    tm1 = t - one
    tt = t * t
    w0 = a * (t * (tm1 * tm1))
    w1 = _fma(tt, _fma(np.float32(1.25), t, np.float32(-2.25)), one)
    w3 = a * (tt * (one - t))
    w2 = ((one - w0) - w1) - w3
    return w0, w1, w2, w3


def _padded(stacked: np.ndarray) -> np.ndarray:
    """float32 [H, W, 3] -> float32 [H + 2 * _PAD, W + 2 * _PAD, 3], zero outside."""
    h, w, c = stacked.shape
    out = np.zeros((h + 2 * _PAD, w + 2 * _PAD, c), np.float32)
    out[_PAD : _PAD + h, _PAD : _PAD + w] = stacked
    return out


@njit(cache=True, error_model="numpy", boundscheck=False)
def _warp_linearize(padded, u1, u2, i0, i1wx, i1wy, grad, rho_c):
    """`cv2.remap(stacked, x + u1, y + u2, INTER_CUBIC)` (zero outside the frame) followed by
    `_linearize`; `padded` is `_padded(stacked)`. The same float32 values bit for bit: OpenCV 5
    takes the window's corner as floor(map) - 1 and the fraction as map - floor(map), the weights
    as `_cubic_weights`, and sums each of the 4 rows left to right, then the rows top to bottom, as
    chains of fused multiply-adds (zero taps outside the frame). Row by row: the weights and
    window offsets first (vectorised), then the sums. Returns False, having written part of the
    outputs, where a map is NaN or at least `_MAP_LIMIT` in size (the caller then uses OpenCV);
    True otherwise."""
    h, w = u1.shape
    wp = padded.shape[1]
    flat = padded.reshape(-1)
    row = np.uintp(wp * 3)
    off = np.empty(w, np.uintp)
    wx = np.empty((4, w), np.float32)
    wy = np.empty((4, w), np.float32)
    big = np.float32(2 * _MAP_LIMIT)
    for y in range(h):
        fy = np.float32(y)
        bad = False
        for x in range(w):
            mx = np.float32(x) + u1[y, x]
            my = fy + u2[y, x]
            bad |= not (abs(mx) < _MAP_LIMIT and abs(my) < _MAP_LIMIT)
            mx = min(max(mx, -big), big)  # keeps the conversions below defined; refused anyway
            my = min(max(my, -big), big)
            fx0 = np.floor(mx)
            fy0 = np.floor(my)
            ix = np.int32(fx0) - 1
            iy = np.int32(fy0) - 1
            wx[0, x], wx[1, x], wx[2, x], wx[3, x] = _cubic_weights(mx - fx0)
            wy[0, x], wy[1, x], wy[2, x], wy[3, x] = _cubic_weights(my - fy0)
            outside = (ix < -_PAD) | (ix > w) | (iy < -_PAD) | (iy > h)
            # Wholly outside: the same sums over the window of zeros in the corner.
            off[x] = np.uintp(0 if outside else ((iy + _PAD) * wp + (ix + _PAD)) * 3)
        if bad:
            return False
        for x in range(w):
            p = off[x]
            a0 = wx[0, x]
            a1 = wx[1, x]
            a2 = wx[2, x]
            a3 = wx[3, x]
            o0 = o1 = o2 = np.float32(0.0)
            for i in range(4):
                q = p + np.uintp(i) * row
                r0 = flat[q] * a0
                r1 = flat[q + np.uintp(1)] * a0
                r2 = flat[q + np.uintp(2)] * a0
                r0 = _fma(flat[q + np.uintp(3)], a1, r0)
                r1 = _fma(flat[q + np.uintp(4)], a1, r1)
                r2 = _fma(flat[q + np.uintp(5)], a1, r2)
                r0 = _fma(flat[q + np.uintp(6)], a2, r0)
                r1 = _fma(flat[q + np.uintp(7)], a2, r1)
                r2 = _fma(flat[q + np.uintp(8)], a2, r2)
                r0 = _fma(flat[q + np.uintp(9)], a3, r0)
                r1 = _fma(flat[q + np.uintp(10)], a3, r1)
                r2 = _fma(flat[q + np.uintp(11)], a3, r2)
                b = wy[i, x]
                if i == 0:
                    o0 = r0 * b
                    o1 = r1 * b
                    o2 = r2 * b
                else:
                    o0 = _fma(r0, b, o0)
                    o1 = _fma(r1, b, o1)
                    o2 = _fma(r2, b, o2)
            a = u1[y, x]
            b = u2[y, x]
            i1wx[y, x] = o1
            i1wy[y, x] = o2
            grad[y, x] = o1 * o1 + o2 * o2
            rho_c[y, x] = o0 - o1 * a - o2 * b - i0[y, x]
    return True


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


def _centered_gradient(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 [H, W] -> (d/dx, d/dy), each float32 [H, W]: half central differences inside,
    half one-sided differences on the border."""
    half = _F32(0.5)
    dx = np.empty_like(img)
    dy = np.empty_like(img)
    dx[:, 1:-1] = half * (img[:, 2:] - img[:, :-2])
    dx[:, 0] = half * (img[:, 1] - img[:, 0])
    dx[:, -1] = half * (img[:, -1] - img[:, -2])
    dy[1:-1] = half * (img[2:] - img[:-2])
    dy[0] = half * (img[1] - img[0])
    dy[-1] = half * (img[-1] - img[-2])
    return dx, dy


class TVL1Solver:
    """Dual TV-L1 optical flow with OpenCV's parameters and results (see the module docstring).

    Same call as OpenCV's algorithm object: `calc(prev, next, None)`. Keeps no state between
    calls except `last_iterations`; OpenCV's thread count (`cv2.setNumThreads`) applies to the
    OpenCV calls, and the compiled iteration runs on the calling thread.

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
        l_t = _F32(self.lambda_ * self.theta)
        taut = _F32(self.tau / self.theta)
        theta = _F32(self.theta)
        # The frame and its gradients as the three channels of one image: one remap warps all.
        stacked = np.dstack([i1, *_centered_gradient(i1)])
        padded = _padded(stacked)
        p11, p12, p21, p22 = (np.zeros_like(i0) for _ in range(4))
        i1wx, i1wy, grad, rho_c = (np.empty_like(i0) for _ in range(4))
        iterations = 0
        for _ in range(self.warps):
            if not _warp_linearize(padded, u1, u2, i0, i1wx, i1wy, grad, rho_c):
                map_x, map_y = np.empty_like(i0), np.empty_like(i0)
                _warp_maps(u1, u2, map_x, map_y)
                warped = cv2.remap(stacked, map_x, map_y, cv2.INTER_CUBIC)
                _linearize(warped, u1, u2, i0, i1wx, i1wy, grad, rho_c)
            error = _NO_ERROR
            for _ in range(self.outer_iterations):
                if not error > stop:
                    break
                if self.median_filtering > 1:
                    u1 = cv2.medianBlur(u1, self.median_filtering)
                    u2 = cv2.medianBlur(u2, self.median_filtering)
                n, error = _iterate(
                    i1wx, i1wy, grad, rho_c, u1, u2, p11, p12, p21, p22,
                    l_t, theta, taut, stop, self.inner_iterations,
                )  # fmt: skip
                iterations += n
        self.last_iterations.append(iterations)
        return u1, u2
