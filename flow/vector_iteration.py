"""The TV-L1 inner iteration as one fused sweep of explicit vector code, compiled with LLVM.

`flow.solver.TVL1Solver` spends about 60% of a pair in its inner iteration. Numba compiles that
iteration as two passes over the frame (the primal update with its thresholding step and error,
then the dual update), because LLVM vectorises neither a fused sweep over 2-D arrays (it cannot
tell the rows of one array apart) nor rows handed to a row function (its runtime alias checks
between 17 row pointers cost about 490 ns a row). Here the iteration is written directly as LLVM
IR with explicit `<16 x float>` vectors, so nothing depends on the vectoriser: one sweep per
iteration runs the primal update of row y and then the dual update of row y - 1, which reads
exactly what the two-pass order reads (row y - 1's dual field is still the previous iteration's
when row y's divergence takes it; row y's flow is already the new one when row y - 1's forward
gradient takes it).

Every value is the one OpenCV computes, in OpenCV's order: the IR has no fast-math flags and no
fused multiply-adds (LLVM neither reassociates nor contracts without them), float32 divisions
and the double-precision `hypot` rounded to float are IEEE operations in any vector width, and
the special cases of the borders (one-sided divergence in the first row and column, zero forward
gradient across the last row and column) keep OpenCV's expressions. The rows' last, partial
blocks are masked loads and stores.

The stopping test is `flow.solver`'s, with a cheaper approximate sum. OpenCV's error is the
float32 sum of the n squared updates in row-major order, S32, within (n - 1) 2^-24 S of their
exact sum S (all terms >= 0). Here each of a row's 16 lanes sums its own terms in float32 (at
most m = ceil(W / 16) of them, within (m - 1) 2^-24 of their sum) and the lanes' sums are added
in float64: an S' within (m - 1) 2^-24 S + n 2^-53 S of S. So |S' - S32| < (n + m) 2^-24 S, and
since m < n / 2 for any row of 16 pixels or more, that is less than the margin n 2^-23 S' the
test allows: where S' lies farther than that from the threshold it falls on the same side as
S32. Within the margin the float32 row-major sum itself is taken (`exact_error`), so the decision
is always OpenCV's. `tests/flow/test_flow_vector_iteration.py` compares this iteration with
`flow.solver._iterate` array for array and decision for decision, at and one float32 step
either side of the threshold.

The module is generated as text and compiled once per process for the host CPU (about 0.1 s) by
`flow._llvm`, and called through ctypes.
"""

from __future__ import annotations

import ctypes

import numpy as np

from flow._llvm import LANES, Block, block_loop, f32, kernel, pointers

# The smallest squared gradient for which the thresholding step divides by it (FLT_EPSILON).
_GRAD_EPS = float(np.finfo(np.float32).eps)


def _divergence(e: Block, here_x, left_x, here_y, above_y) -> str:
    """OpenCV's divergence of the dual field from its two components here, left and above;
    None for a neighbour outside the frame (first column, first row)."""
    if left_x is None and above_y is None:
        return e.bin("fadd", here_x, here_y)
    if above_y is None:
        return e.bin("fadd", e.bin("fsub", here_x, left_x), here_y)
    if left_x is None:
        return e.bin("fsub", e.bin("fadd", here_x, here_y), above_y)
    return e.bin("fadd", e.bin("fsub", here_x, left_x), e.bin("fsub", here_y, above_y))


def _primal(e: Block, x: str, first_row: bool, first_block: bool) -> str:
    """Thresholding step, divergence and primal update of the lanes at x of one row (lane 0 of
    the first block is the first column); stores the new flow and the squared updates and
    returns the squared updates (zero outside the block's mask) for the row's lane sums."""
    a = e.load("%u1", x)
    b = e.load("%u2", x)
    ix = e.load("%i1wx", x)
    iy = e.load("%i1wy", x)
    g = e.load("%grad", x)
    rc = e.load("%rho_c", x)
    lt = e.splat("%lt")
    rho = e.bin("fadd", rc, e.bin("fadd", e.bin("fmul", ix, a), e.bin("fmul", iy, b)))
    lg = e.bin("fmul", lt, g)
    fi = e.bin("fdiv", e.op(f"fneg {e.f} {rho}"), g)
    below = e.op(f"fcmp olt {e.f} {rho}, {e.op(f'fneg {e.f} {lg}')}")
    above = e.op(f"fcmp ogt {e.f} {rho}, {lg}")
    steep = e.op(f"fcmp ogt {e.f} {g}, {e.splat(f32(_GRAD_EPS))}")
    f = e.select(steep, fi, e.splat("0.0"))
    f = e.select(above, e.op(f"fneg {e.f} {lt}"), f)
    f = e.select(below, lt, f)
    v1 = e.bin("fadd", a, e.bin("fmul", f, ix))
    v2 = e.bin("fadd", b, e.bin("fmul", f, iy))
    theta = e.splat("%theta")
    divs = []
    for left, up in (("%p11", "%p12"), ("%p21", "%p22")):
        here_x = e.load(left, x)
        here_y = e.load(up, x)
        above_y = None if first_row else e.load(up + "u", x)
        if first_block:
            # Lane 0 is the first column; the others take their left neighbours from the same
            # load, shifted by one lane.
            order = ", ".join(f"i32 {max(i - 1, 0)}" for i in range(e.n))
            left_x = e.op(f"shufflevector {e.f} {here_x}, {e.f} poison, <{e.n} x i32> <{order}>")
            inner = _divergence(e, here_x, left_x, here_y, above_y)
            edge = _divergence(e, here_x, None, here_y, above_y)
            lane0 = ", ".join(f"i1 {'true' if i == 0 else 'false'}" for i in range(e.n))
            div = e.select(f"<{lane0}>", edge, inner)
        else:
            left_x = e.load(left, e.op(f"add i64 {x}, -1"))
            div = _divergence(e, here_x, left_x, here_y, above_y)
        divs.append(div)
    an = e.bin("fadd", v1, e.bin("fmul", theta, divs[0]))
    bn = e.bin("fadd", v2, e.bin("fmul", theta, divs[1]))
    da = e.bin("fsub", an, a)
    db = e.bin("fsub", bn, b)
    sq = e.bin("fadd", e.bin("fmul", da, da), e.bin("fmul", db, db))
    e.store(an, "%u1", x)
    e.store(bn, "%u2", x)
    e.store(sq, "%sq", x)
    if e.mask is not None:
        sq = e.select(e.mask, sq, e.splat("0.0"))
    return sq


# Row pointers of the dual update when it runs alone (its row, the next row) and when it runs
# fused with the primal update of the next row (the row above that one's, that row).
_DUAL_ALONE = {"u1": "%u1", "u2": "%u2", "u1d": "%u1d", "u2d": "%u2d",
               "p11": "%p11", "p12": "%p12", "p21": "%p21", "p22": "%p22"}  # fmt: skip
_DUAL_FUSED = {"u1": "%u1u", "u2": "%u2u", "u1d": "%u1", "u2d": "%u2",
               "p11": "%p11u", "p12": "%p12u", "p21": "%p21u", "p22": "%p22u"}  # fmt: skip


def _dual(e: Block, x: str, last_row: bool, inner: str | None, rows: dict) -> None:
    """Forward gradient of the new flow and the projected dual step of the lanes at x of one
    row. `inner`: the mask of lanes left of the last column (None: all of them), whose forward
    x-difference is taken; it is zero in the last column, as is the y-difference in the last row.
    `rows`: the IR row pointers (`_DUAL_ALONE` or `_DUAL_FUSED`)."""
    zero = e.splat("0.0")
    taut = e.splat("%taut")
    one = e.splat("1.0")
    grads = []
    for u in ("u1", "u2"):
        here = e.load(rows[u], x)
        right = e.load(rows[u], e.op(f"add i64 {x}, 1"), inner)
        gx = e.bin("fsub", right, here)
        if inner is not None:
            gx = e.select(inner, gx, zero)
        gy = zero if last_row else e.bin("fsub", e.load(rows[u + "d"], x), here)
        grads.append((gx, gy))
    for (gx, gy), (px, py) in zip(grads, (("p11", "p12"), ("p21", "p22"))):
        ng = e.bin("fadd", one, e.bin("fmul", taut, e.hypot(gx, gy)))
        for p, gr in ((rows[px], gx), (rows[py], gy)):
            new = e.bin("fdiv", e.bin("fadd", e.load(p, x), e.bin("fmul", taut, gr)), ng)
            e.store(new, p, x)


def _row_sum(e: Block, lanes: str) -> str:
    """The float64 sum of a row's per-lane float32 sums of squared updates."""
    wide = e.op(f"fpext {e.f} {lanes} to {e.d}")
    return e.op(f"call double @llvm.vector.reduce.fadd.v{LANES}f64(double 0.0, {e.d} {wide})")


def _primal_row(first_row: bool) -> list[str]:
    """`double @primal_row[_first](...)`: the primal update of one row (the first row or any
    other) of w >= LANES pixels: whole blocks, then one masked block for the rest. Returns the
    float64 sum of the row's per-lane float32 sums of squared updates."""
    name = "primal_row_first" if first_row else "primal_row"
    lines = [
        f"define internal double @{name}(ptr %i1wx, ptr %i1wy, ptr %grad, ptr %rho_c, ptr %u1,"
        " ptr %u2, ptr %p11, ptr %p12, ptr %p21, ptr %p22, ptr %p12u, ptr %p22u, ptr %sq,"
        " i64 %w, float %lt, float %theta) alwaysinline {",
        "entry:",
    ]
    e = Block(lines, [0])
    first = _primal(e, "0", first_row, True)
    x, acc = block_loop(
        e, str(LANES), "%w", lambda x: _primal(e, x, first_row, False), (e.f, "fadd")
    )
    e.mask = e.lanes_below(x, "%w")
    rest = _primal(e, x, first_row, False)
    total = e.bin("fadd", e.bin("fadd", first, acc), rest)
    out = _row_sum(e, total)
    lines += [f"  ret double {out}", "}"]
    return lines


# Blocks by which the fused row's dual update trails its primal update: far enough that a dual
# block's inputs are ready when it issues, so that the two overlap in the out-of-order window.
_LAG = 2
# The narrowest row the fused row takes (narrower rows run the two updates one after the other).
_FUSED_MIN_WIDTH = LANES * _LAG + 1


def _fused_row() -> list[str]:
    """`double @fused_row(...)`: the primal update of row y > 0 and the dual update of row y - 1
    in one pass, the dual block at x - _LAG * LANES after the primal block at x, so that the dual
    update's roots and divisions overlap the primal update's loads and arithmetic. Rows of at
    least _FUSED_MIN_WIDTH pixels. Returns row y's error sum, as `@primal_row`'s."""
    lines = [
        "define internal double @fused_row(ptr %i1wx, ptr %i1wy, ptr %grad, ptr %rho_c, ptr %u1,"
        " ptr %u2, ptr %p11, ptr %p12, ptr %p21, ptr %p22, ptr %u1u, ptr %u2u, ptr %p11u,"
        " ptr %p12u, ptr %p21u, ptr %p22u, ptr %sq, i64 %w, float %lt, float %theta,"
        " float %taut) alwaysinline {",
        "entry:",
    ]
    e = Block(lines, [0])
    wm1 = e.op("add i64 %w, -1")
    total = _primal(e, "0", False, True)
    for k in range(1, _LAG):
        total = e.bin("fadd", total, _primal(e, str(k * LANES), False, False))

    def block(x):
        out = _primal(e, x, False, False)
        _dual(e, e.op(f"add i64 {x}, {-_LAG * LANES}"), False, None, _DUAL_FUSED)
        return out

    x, acc = block_loop(e, str(_LAG * LANES), wm1, block, (e.f, "fadd"))
    for k in range(_LAG, 0, -1):
        _dual(e, e.op(f"add i64 {x}, {-k * LANES}"), False, None, _DUAL_FUSED)
    e.mask = e.lanes_below(x, "%w")
    rest = _primal(e, x, False, False)
    _dual(e, x, False, e.lanes_below(x, wm1), _DUAL_FUSED)
    total = e.bin("fadd", e.bin("fadd", total, acc), rest)
    out = _row_sum(e, total)
    lines += [f"  ret double {out}", "}"]
    return lines


def _dual_row(last_row: bool) -> list[str]:
    """`void @dual_row[_last](...)`: the dual update of one row of w >= LANES pixels from the new
    flow of that row and the next (`%u1d`, `%u2d`; unused in the last row): whole blocks left of
    the last column, then one masked block that ends with it."""
    name = "dual_row_last" if last_row else "dual_row"
    lines = [
        f"define internal void @{name}(ptr %u1, ptr %u2, ptr %u1d, ptr %u2d, ptr %p11, ptr %p12,"
        " ptr %p21, ptr %p22, i64 %w, float %taut) alwaysinline {",
        "entry:",
    ]
    e = Block(lines, [0])
    wm1 = e.op("add i64 %w, -1")
    x, _ = block_loop(e, "0", wm1, lambda x: _dual(e, x, last_row, None, _DUAL_ALONE))
    e.mask = e.lanes_below(x, "%w")
    _dual(e, x, last_row, e.lanes_below(x, wm1), _DUAL_ALONE)
    lines += ["  ret void", "}"]
    return lines


_ARRAYS = ("i1wx", "i1wy", "grad", "rho_c", "u1", "u2", "p11", "p12", "p21", "p22", "sq")

_MAIN = """
define internal float @exact_error(ptr %sq, i64 %n) {
entry:
  br label %head
head:
  %i = phi i64 [ 0, %entry ], [ %i1, %body ]
  %s = phi float [ 0.0, %entry ], [ %s1, %body ]
  %more = icmp slt i64 %i, %n
  br i1 %more, label %body, label %done
body:
  %p = getelementptr inbounds float, ptr %sq, i64 %i
  %v = load float, ptr %p, align 4
  %s1 = fadd float %s, %v
  %i1 = add i64 %i, 1
  br label %head
done:
  ret float %s
}

define i64 @tvl1_iterate(ptr %i1wx, ptr %i1wy, ptr %grad, ptr %rho_c, ptr %u1, ptr %u2,
    ptr %p11, ptr %p12, ptr %p21, ptr %p22, ptr %sq, i64 %h, i64 %w, float %lt, float %theta,
    float %taut, double %stop, i64 %limit, ptr %error_out) {
entry:
  %size = mul i64 %h, %w
  %sizef = sitofp i64 %size to double
  %scale = fmul double %sizef, 0x3E80000000000000
  %fuse = icmp sge i64 %w, FUSED_MIN_WIDTH
  %any = icmp sgt i64 %limit, 0
  br i1 %any, label %iter, label %none
none:
  store double 0x7FF0000000000000, ptr %error_out, align 8
  ret i64 0
iter:
  %n = phi i64 [ 0, %entry ], [ %n1, %again ]
  %s0 = call double @primal_row_first(ptr %i1wx, ptr %i1wy, ptr %grad, ptr %rho_c, ptr %u1,
      ptr %u2, ptr %p11, ptr %p12, ptr %p21, ptr %p22, ptr null, ptr null, ptr %sq, i64 %w,
      float %lt, float %theta)
  br label %rows
rows:
  %y = phi i64 [ 1, %iter ], [ %y1, %rowdone ]
  %sum = phi double [ %s0, %iter ], [ %sum1, %rowdone ]
  %more = icmp slt i64 %y, %h
  br i1 %more, label %row, label %last
row:
  %off = mul i64 %y, %w
  %offu = sub i64 %off, %w
ROW_POINTERS
  br i1 %fuse, label %fused, label %split
split:
  %ss = call double @primal_row(ptr %i1wx.y, ptr %i1wy.y, ptr %grad.y, ptr %rho_c.y, ptr %u1.y,
      ptr %u2.y, ptr %p11.y, ptr %p12.y, ptr %p21.y, ptr %p22.y, ptr %p12.u, ptr %p22.u,
      ptr %sq.y, i64 %w, float %lt, float %theta)
  call void @dual_row(ptr %u1.u, ptr %u2.u, ptr %u1.y, ptr %u2.y, ptr %p11.u, ptr %p12.u,
      ptr %p21.u, ptr %p22.u, i64 %w, float %taut)
  br label %rowdone
fused:
  %sf = call double @fused_row(ptr %i1wx.y, ptr %i1wy.y, ptr %grad.y, ptr %rho_c.y, ptr %u1.y,
      ptr %u2.y, ptr %p11.y, ptr %p12.y, ptr %p21.y, ptr %p22.y, ptr %u1.u, ptr %u2.u,
      ptr %p11.u, ptr %p12.u, ptr %p21.u, ptr %p22.u, ptr %sq.y, i64 %w, float %lt,
      float %theta, float %taut)
  br label %rowdone
rowdone:
  %sr = phi double [ %ss, %split ], [ %sf, %fused ]
  %sum1 = fadd double %sum, %sr
  %y1 = add i64 %y, 1
  br label %rows
last:
  %offl = mul i64 %h, %w
  %offl1 = sub i64 %offl, %w
LAST_POINTERS
  call void @dual_row_last(ptr %u1.l, ptr %u2.l, ptr null, ptr null, ptr %p11.l, ptr %p12.l,
      ptr %p21.l, ptr %p22.l, i64 %w, float %taut)
  %n1 = add i64 %n, 1
  %margin = fmul double %scale, %sum
  %diff = fsub double %sum, %stop
  %dist = call double @llvm.fabs.f64(double %diff)
  %near = fcmp ole double %dist, %margin
  %nan = fcmp uno double %sum, %sum
  %exact = or i1 %near, %nan
  br i1 %exact, label %slow, label %decide
slow:
  %e32 = call float @exact_error(ptr %sq, i64 %size)
  %e64 = fpext float %e32 to double
  br label %decide
decide:
  %err = phi double [ %sum, %last ], [ %e64, %slow ]
  %go = fcmp ogt double %err, %stop
  %room = icmp slt i64 %n1, %limit
  %cont = and i1 %go, %room
  br i1 %cont, label %again, label %out
again:
  br label %iter
out:
  store double %err, ptr %error_out, align 8
  ret i64 %n1
}
"""


def module_ir() -> str:
    """The whole module's LLVM IR (text)."""
    row = "\n".join(
        f"  %{a}.y = getelementptr inbounds float, ptr %{a}, i64 %off\n"
        f"  %{a}.u = getelementptr inbounds float, ptr %{a}, i64 %offu"
        for a in _ARRAYS
    )
    last = "\n".join(
        f"  %{a}.l = getelementptr inbounds float, ptr %{a}, i64 %offl1" for a in _ARRAYS
    )
    parts = [
        f"declare <{LANES} x float> @llvm.masked.load.v{LANES}f32.p0(ptr, i32, <{LANES} x i1>,"
        f" <{LANES} x float>)",
        f"declare void @llvm.masked.store.v{LANES}f32.p0(<{LANES} x float>, ptr, i32,"
        f" <{LANES} x i1>)",
        f"declare <{LANES} x double> @llvm.sqrt.v{LANES}f64(<{LANES} x double>)",
        f"declare double @llvm.vector.reduce.fadd.v{LANES}f64(double, <{LANES} x double>)",
        "declare double @llvm.fabs.f64(double)",
        *_primal_row(True),
        *_primal_row(False),
        *_dual_row(False),
        *_fused_row(),
        *_dual_row(True),
        _MAIN.replace("ROW_POINTERS", row)
        .replace("FUSED_MIN_WIDTH", str(_FUSED_MIN_WIDTH))
        .replace("LAST_POINTERS", last),
    ]
    return "\n".join(parts)


_SIGNATURE = ctypes.CFUNCTYPE(
    ctypes.c_int64,
    *([ctypes.c_void_p] * len(_ARRAYS)),
    ctypes.c_int64,
    ctypes.c_int64,
    ctypes.c_float,
    ctypes.c_float,
    ctypes.c_float,
    ctypes.c_double,
    ctypes.c_int64,
    ctypes.c_void_p,
)


class Iteration:
    """The iteration bound to one pyramid level's arrays, which stay put across its warps (the
    warp rewrites i1wx, i1wy, grad and rho_c in place), so that each call passes only the flow.

    Args:
      i1wx, i1wy, grad, rho_c, p11, p12, p21, p22: C-contiguous float32 [H, W], W >= LANES
        (ValueError naming the array otherwise); the dual field p is updated in place.
      l_t, theta, taut: float32, as `flow.solver._iterate`.
    """

    def __init__(self, i1wx, i1wy, grad, rho_c, p11, p12, p21, p22, l_t, theta, taut):
        self.shape = h, w = i1wx.shape
        if w < LANES:
            raise ValueError(f"i1wx.shape={i1wx.shape}: rows must be at least {LANES} wide")
        self._sq = np.empty((h, w), np.float32)  # squared updates, for the exact error sum
        data = pointers(self.shape, i1wx=i1wx, i1wy=i1wy, grad=grad, rho_c=rho_c)
        dual = pointers(self.shape, p11=p11, p12=p12, p21=p21, p22=p22)
        self._arrays = (i1wx, i1wy, grad, rho_c, p11, p12, p21, p22)  # kept alive
        self._data, self._dual = data, [*dual, self._sq.ctypes.data]
        self._scalars = (h, w, float(l_t), float(theta), float(taut))
        self._error = ctypes.c_double()
        self._fn = kernel("tvl1_iterate", module_ir, _SIGNATURE)

    def __call__(self, u1, u2, stop, limit) -> tuple[int, float]:
        """Up to `limit` iterations on the flow u1, u2 (float32 [H, W], updated in place), until
        the error is at most `stop` (float32). Returns (iterations run, last error as float64, on
        the same side of `stop` as OpenCV's float32 error)."""
        flow = pointers(self.shape, u1=u1, u2=u2)
        n = self._fn(
            *self._data, *flow, *self._dual, *self._scalars,
            float(stop), int(limit), ctypes.byref(self._error),
        )  # fmt: skip
        return n, self._error.value


def iterate(i1wx, i1wy, grad, rho_c, u1, u2, p11, p12, p21, p22, l_t, theta, taut, stop, limit):
    """`flow.solver._iterate` (same arguments, same results bit for bit), as one fused sweep:
    `Iteration` bound and called once. Arrays as `Iteration` takes them."""
    bound = Iteration(i1wx, i1wy, grad, rho_c, p11, p12, p21, p22, l_t, theta, taut)
    return bound(u1, u2, stop, limit)
