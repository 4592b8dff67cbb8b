"""The solver's bicubic warp and linearised data term as explicit vector code, compiled with LLVM.

`Warp` gives `cv2.remap(stacked, x + u1, y + u2, cv2.INTER_CUBIC)` (OpenCV 5, float maps, zero
outside the frame) bit for bit on the frame and its two gradients, stacked as three channels,
then the linearised data term from them. OpenCV 5's kernel, found by probing `cv2.remap`: the
window's corner is floor(map) - 1 and the fraction t = map - floor(map); the weights (A = -0.75)
are A*(t*((t-1)*(t-1))), fma(t*t, fma(1.25, t, -2.25), 1), ((1 - w0) - w1) - w3 and
A*((t*t)*(1 - t)); each of the 4 window rows is summed left to right, then the rows top to
bottom, as chains of fused multiply-adds, with zero taps outside the frame (here: a zero border
around the stacked image, `padded`, whose corner also serves the windows wholly outside).

Pass 1 of a row computes the maps, weights and window offsets 16 pixels at a time. Pass 2 sums
the windows, 4 pixels at a time. The padded image keeps 4 floats a pixel (the three channels and
a zero), so one 16-lane load takes a pixel's window row (4 taps of 4 lanes), and a transpose of
4-lane blocks over the 4 pixels' loads (8 shuffles) gives, per tap, the 4 pixels side by side.
Each window row is then a multiply and three fused multiply-adds, and the rows one multiply and
three more: lane by lane, the per-channel chains above (the fourth lane of each pixel is unused).

Maps that are NaN or at least MAP_LIMIT pixels in size are refused (the call returns False) and
the caller warps with `cv2.remap` itself; NaN and infinite maps are the only ones seen to
differ. `tests/flow/test_flow_warp.py` checks the warp against `cv2.remap` on random frames and
maps (every 1/64 fraction, smooth flow, far outside, near-whole maps, values up to 1e5). The
kernel depends on OpenCV's version: OpenCV 4 rounded maps to 1/32 px and summed differently.
"""

from __future__ import annotations

import ctypes

import numpy as np

from flow._llvm import LANES, Block, block_loop, f32, kernel, pointers

# Zero border around the stacked frame and gradients (`padded`): wide enough that every 4x4
# window that touches the frame lies inside, and that the corner holds a 4x4 window of zeros for
# the windows that do not.
_PAD = 4
# Maps at or beyond this many pixels (and NaN) are left to `cv2.remap`.
MAP_LIMIT = 2.0**22
# Floats per pixel of the padded image: frame, d/dx, d/dy and a zero, so that a tap is one
# aligned 4-lane load and a window row of taps one 16-lane load.
CHANNELS = 4


def _fma(e: Block, a: str, b: str, c: str, ty: str, suffix: str) -> str:
    return e.op(f"call {ty} @llvm.fma.{suffix}({ty} {a}, {ty} {b}, {ty} {c})")


def _cubic_weights(e: Block, t: str) -> list[str]:
    """OpenCV 5's bicubic weights (A = -0.75) at fractions t in [0, 1), in its float32 order."""
    one = e.splat("1.0")
    a = e.splat(f32(-0.75))
    tm1 = e.bin("fsub", t, one)
    tt = e.bin("fmul", t, t)
    w0 = e.bin("fmul", a, e.bin("fmul", t, e.bin("fmul", tm1, tm1)))
    inner = _fma(e, e.splat(f32(1.25)), t, e.splat(f32(-2.25)), e.f, f"v{e.n}f32")
    w1 = _fma(e, tt, inner, one, e.f, f"v{e.n}f32")
    w3 = e.bin("fmul", a, e.bin("fmul", tt, e.bin("fsub", one, t)))
    w2 = e.bin("fsub", e.bin("fsub", e.bin("fsub", one, w0), w1), w3)
    return [w0, w1, w2, w3]


def _window_block(e: Block, x: str) -> str:
    """Maps, window weights and offsets of the LANES pixels at x of row %y (stored in the scratch
    rows); returns the mask of lanes whose map is NaN or too large."""
    iota = ", ".join(f"i64 {i}" for i in range(e.n))
    xs = e.op(f"add <{e.n} x i64> {e.splat(x, 'i64')}, <{iota}>")
    mx = e.bin("fadd", e.op(f"sitofp <{e.n} x i64> {xs} to {e.f}"), e.load("%u1", x))
    my = e.bin("fadd", e.splat("%fy"), e.load("%u2", x))
    limit = e.splat(f32(MAP_LIMIT))
    big = e.splat(f32(2 * MAP_LIMIT))
    fits = []
    for m in (mx, my):
        absolute = e.op(f"call {e.f} @llvm.fabs.v{e.n}f32({e.f} {m})")
        fits.append(e.op(f"fcmp olt {e.f} {absolute}, {limit}"))
    good = e.bin("and", fits[0], fits[1], e.b)
    bad = e.bin("xor", good, "splat (i1 true)", e.b)
    if e.mask is not None:
        bad = e.bin("and", bad, e.mask, e.b)
    corner = []
    for m, k0, side in ((mx, 0, "%w32"), (my, 4, "%h32")):
        neg = e.op(f"fneg {e.f} {big}")
        m = e.op(f"call {e.f} @llvm.maxnum.v{e.n}f32({e.f} {m}, {e.f} {neg})")
        m = e.op(f"call {e.f} @llvm.minnum.v{e.n}f32({e.f} {m}, {e.f} {big})")
        floor = e.op(f"call {e.f} @llvm.floor.v{e.n}f32({e.f} {m})")
        i = e.op(f"fptosi {e.f} {floor} to <{e.n} x i32>")
        i = e.op(f"add <{e.n} x i32> {i}, splat (i32 -1)")
        for k, weight in enumerate(_cubic_weights(e, e.bin("fsub", m, floor))):
            e.store(weight, "%scratch", e.op(f"add i64 {x}, %w{k0 + k}"))
        low = e.op(f"icmp slt <{e.n} x i32> {i}, splat (i32 {-_PAD})")
        high = e.op(f"icmp sgt <{e.n} x i32> {i}, {e.splat(side, 'i32')}")
        corner.append((i, e.bin("or", low, high, e.b)))
    (ix, out_x), (iy, out_y) = corner
    outside = e.bin("or", out_x, out_y, e.b)
    i64 = f"<{e.n} x i64>"
    row = e.op(f"sext <{e.n} x i32> {e.op(f'add <{e.n} x i32> {iy}, splat (i32 {_PAD})')} to {i64}")
    col = e.op(f"sext <{e.n} x i32> {e.op(f'add <{e.n} x i32> {ix}, splat (i32 {_PAD})')} to {i64}")
    wp = e.splat("%wp", "i64")
    off = e.op(f"add {i64} {e.op(f'mul {i64} {row}, {wp}')}, {col}")
    off = e.op(f"mul {i64} {off}, splat (i64 {CHANNELS})")
    off = e.op(f"select {e.b} {outside}, {i64} zeroinitializer, {i64} {off}")
    e.store(off, "%offsets", x, element="i64")
    return bad


# Pixels summed together in pass 2: their 4-lane taps side by side in one 16-lane vector.
_GROUP = 4
assert _GROUP * CHANNELS == 16


def _pixels(g: int, x: str, tag: str) -> list[str]:
    """Pass 2 for the `g` pixels at x of row %y (g = 1 or _GROUP): each pixel's 4x4 window summed
    with its 4-lane taps (three channels and one unused value) side by side, then the data term.
    `tag` keeps the block's SSA names apart."""
    n = 4 * g
    v, fma = f"<{n} x float>", f"call <{n} x float> @llvm.fma.v{n}f32"
    out = []

    def op(name, text):
        out.append(f"  %{tag}{name} = {text}")
        return f"%{tag}{name}"

    offs = []
    for j in range(g):
        xj = op(f"x{j}", f"add i64 {x}, {j}")
        ptr = op(f"op{j}", f"getelementptr inbounds i64, ptr %offsets, i64 {xj}")
        offs.append(op(f"off{j}", f"load i64, ptr {ptr}, align 8"))
    # The 8 weights (4 across, 4 down) of each pixel, each repeated over that pixel's 4 lanes.
    spread = ", ".join(f"i32 {lane // 4}" for lane in range(n))
    weights = []
    for k in range(8):
        ptr = op(f"wp{k}", f"getelementptr inbounds float, ptr %scratch, i64 {x}")
        ptr = op(f"wq{k}", f"getelementptr inbounds float, ptr {ptr}, i64 %w{k}")
        few = op(f"ws{k}", f"load <{g} x float>, ptr {ptr}, align 4")
        spread_k = f"<{g} x float> {few}, <{g} x float> poison, <{n} x i32> <{spread}>"
        weights.append(op(f"wv{k}", f"shufflevector {spread_k}"))

    def window_row(i):
        """Tap t of window row i for each pixel, side by side: [pixel 0's 4 lanes, pixel 1's...]."""
        rows = []
        for j in range(g):
            q = op(f"q{i}{j}", f"add i64 {offs[j]}, %rowoff{i}")
            ptr = op(f"pp{i}{j}", f"getelementptr inbounds float, ptr %padded, i64 {q}")
            rows.append(op(f"row{i}{j}", f"load <16 x float>, ptr {ptr}, align 16"))
        if g == 1:  # one pixel: its taps are the row's four 4-lane quarters
            quarter = "<4 x float>", "<4 x i32>"
            return [
                op(f"tap{i}{t}", f"shufflevector <16 x float> {rows[0]}, <16 x float> poison,"
                   f" {quarter[1]} <{', '.join(f'i32 {4 * t + k}' for k in range(4))}>")
                for t in range(4)
            ]  # fmt: skip

        def pick(a, b, blocks, name):
            """The 4-lane blocks `blocks` (0-3 of a, 4-7 of b) of two 16-lane vectors."""
            order = ", ".join(f"i32 {4 * blk + k}" for blk in blocks for k in range(4))
            both = f"<16 x float> {a}, <16 x float> {b}"
            return op(name, f"shufflevector {both}, <16 x i32> <{order}>")

        # A 4x4 transpose of 4-lane blocks: pixel-major rows in, tap-major vectors out.
        even01 = pick(rows[0], rows[1], (0, 4, 2, 6), f"e01{i}")  # taps 0 and 2 of pixels 0, 1
        odd01 = pick(rows[0], rows[1], (1, 5, 3, 7), f"o01{i}")  # taps 1 and 3
        even23 = pick(rows[2], rows[3], (0, 4, 2, 6), f"e23{i}")
        odd23 = pick(rows[2], rows[3], (1, 5, 3, 7), f"o23{i}")
        return [
            pick(even01, even23, (0, 1, 4, 5), f"tap{i}0"),
            pick(odd01, odd23, (0, 1, 4, 5), f"tap{i}1"),
            pick(even01, even23, (2, 3, 6, 7), f"tap{i}2"),
            pick(odd01, odd23, (2, 3, 6, 7), f"tap{i}3"),
        ]

    total = None
    for i in range(4):
        taps = window_row(i)
        row = op(f"s{i}0", f"fmul {v} {taps[0]}, {weights[0]}")
        for t in range(1, 4):
            row = op(f"s{i}{t}", f"{fma}({v} {taps[t]}, {v} {weights[t]}, {v} {row})")
        if total is None:
            total = op(f"o{i}", f"fmul {v} {row}, {weights[4]}")
        else:
            total = op(f"o{i}", f"{fma}({v} {row}, {v} {weights[4 + i]}, {v} {total})")
    q = f"<{g} x float>"
    chans = []
    for c in range(3):
        pick = ", ".join(f"i32 {4 * j + c}" for j in range(g))
        chans.append(op(f"c{c}", f"shufflevector {v} {total}, {v} poison, <{g} x i32> <{pick}>"))
    c0, c1, c2 = chans
    loaded = {}
    for name in ("u1", "u2", "i0"):
        ptr = op(f"in{name}", f"getelementptr inbounds float, ptr %{name}, i64 {x}")
        loaded[name] = op(f"v{name}", f"load {q}, ptr {ptr}, align 4")
    g1 = op("g1", f"fmul {q} {c1}, {c1}")
    g2 = op("g2", f"fmul {q} {c2}, {c2}")
    grad = op("g", f"fadd {q} {g1}, {g2}")
    r1 = op("r1", f"fmul {q} {c1}, {loaded['u1']}")
    rho = op("r2", f"fsub {q} {c0}, {r1}")
    r3 = op("r3", f"fmul {q} {c2}, {loaded['u2']}")
    rho = op("r4", f"fsub {q} {rho}, {r3}")
    rho = op("r5", f"fsub {q} {rho}, {loaded['i0']}")
    for name, value in (("i1wx", c1), ("i1wy", c2), ("grad", grad), ("rho_c", rho)):
        ptr = op(f"st{name}", f"getelementptr inbounds float, ptr %{name}, i64 {x}")
        out.append(f"  store {q} {value}, ptr {ptr}, align 4")
    return out


def _pass2() -> str:
    """Pass 2 of a row: groups of _GROUP pixels, then one pixel at a time."""
    lines = [
        "pass2:",
        "  br label %gh",
        "gh:",
        "  %gx = phi i64 [ 0, %pass2 ], [ %gx1, %gb ]",
        f"  %gx1 = add i64 %gx, {_GROUP}",
        "  %gfit = icmp sle i64 %gx1, %w",
        "  br i1 %gfit, label %gb, label %sh",
        "gb:",
        *_pixels(_GROUP, "%gx", "G."),
        "  br label %gh",
        "sh:",
        "  %sx = phi i64 [ %gx, %gh ], [ %sx1, %sb ]",
        "  %smore = icmp slt i64 %sx, %w",
        "  br i1 %smore, label %sb, label %rowdone",
        "sb:",
        *_pixels(1, "%sx", "S."),
        "  %sx1 = add i64 %sx, 1",
        "  br label %sh",
    ]
    return "\n".join(lines)


def module_ir() -> str:
    """The whole module's LLVM IR (text)."""
    lines: list[str] = []
    e = Block(lines, [0])
    n = e.n
    body_lines: list[str] = []
    blocks = Block(body_lines, e.counter)

    # Pass 1: whole blocks, then the masked rest; any refused map fails the call.
    body_lines.append("pass1:")
    _, bad = block_loop(
        blocks, "0", "%w", lambda x: _window_block(blocks, x), (blocks.b, "or"), tail=True
    )
    body_lines.append(f"  %anybad = call i1 @llvm.vector.reduce.or.v{n}i1(<{n} x i1> {bad})")
    body_lines.append("  br i1 %anybad, label %fail, label %pass2")

    row_ptrs = "\n".join(
        f"  %{a} = getelementptr inbounds float, ptr %{a}.base, i64 %rowstart"
        for a in ("u1", "u2", "i0", "i1wx", "i1wy", "grad", "rho_c")
    )
    scratch_offsets = "\n".join(f"  %w{k} = mul i64 %w, {k}" for k in range(8))
    row_offsets = "\n".join(f"  %rowoff{i} = mul i64 %rowstride, {i}" for i in range(4))
    return f"""
declare <{n} x float> @llvm.fabs.v{n}f32(<{n} x float>)
declare <{n} x float> @llvm.floor.v{n}f32(<{n} x float>)
declare <{n} x float> @llvm.minnum.v{n}f32(<{n} x float>, <{n} x float>)
declare <{n} x float> @llvm.maxnum.v{n}f32(<{n} x float>, <{n} x float>)
declare <{n} x float> @llvm.fma.v{n}f32(<{n} x float>, <{n} x float>, <{n} x float>)
declare <4 x float> @llvm.fma.v4f32(<4 x float>, <4 x float>, <4 x float>)
declare <{n} x float> @llvm.masked.load.v{n}f32.p0(ptr, i32, <{n} x i1>, <{n} x float>)
declare void @llvm.masked.store.v{n}f32.p0(<{n} x float>, ptr, i32, <{n} x i1>)
declare void @llvm.masked.store.v{n}i64.p0(<{n} x i64>, ptr, i32, <{n} x i1>)
declare i1 @llvm.vector.reduce.or.v{n}i1(<{n} x i1>)

define i64 @warp_linearize(ptr %padded, i64 %rowstride, ptr %u1.base, ptr %u2.base,
    ptr %i0.base, ptr %i1wx.base, ptr %i1wy.base, ptr %grad.base, ptr %rho_c.base, i64 %h,
    i64 %w, ptr %scratch, ptr %offsets) {{
entry:
  %w32 = trunc i64 %w to i32
  %h32 = trunc i64 %h to i32
  %wp = add i64 %w, {2 * _PAD}
{scratch_offsets}
{row_offsets}
  br label %row
row:
  %y = phi i64 [ 0, %entry ], [ %y1, %rowdone ]
  %fy = sitofp i64 %y to float
  %rowstart = mul i64 %y, %w
{row_ptrs}
  br label %pass1
{chr(10).join(body_lines)}
{_pass2()}
rowdone:
  %y1 = add i64 %y, 1
  %rows = icmp slt i64 %y1, %h
  br i1 %rows, label %row, label %done
done:
  ret i64 1
fail:
  ret i64 0
}}
"""


_SIGNATURE = ctypes.CFUNCTYPE(
    ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, *([ctypes.c_void_p] * 7),
    ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
)  # fmt: skip


def padded(stacked: np.ndarray) -> np.ndarray:
    """float32 [H, W, 3] (frame, d/dx, d/dy) -> float32 [H + 8, W + 8, 4]: the three channels and
    a zero one, zero outside the frame, C-contiguous."""
    h, w, c = stacked.shape
    out = np.zeros((h + 2 * _PAD, w + 2 * _PAD, CHANNELS), np.float32)
    out[_PAD : _PAD + h, _PAD : _PAD + w, :c] = stacked
    return out


def interior(border: np.ndarray) -> np.ndarray:
    """The stacked frame inside `padded`'s border: a view, float32 [H, W, 3]."""
    return border[_PAD:-_PAD, _PAD:-_PAD, :3]


class Warp:
    """The warp bound to one pyramid level's frame and outputs, so that each call passes only the
    flow: `cv2.remap(stacked, x + u1, y + u2, cv2.INTER_CUBIC)` (zero outside the frame), then
    `flow.solver._linearize`, the same float32 values bit for bit.

    Args:
      border: float32 [H + 8, W + 8, 4], `padded(stacked)` (frame, d/dx, d/dy, zero).
      i0: float32 [H, W], the first frame.
      i1wx, i1wy, grad, rho_c: float32 [H, W], written by each call: the warped gradients, their
        squared norm and rho_c = I1w - I1wx * u1 - I1wy * u2 - I0.
    ValueError naming any array of the wrong shape, type or layout.
    """

    def __init__(self, border, i0, i1wx, i1wy, grad, rho_c):
        self.shape = h, w = i0.shape
        expected = (h + 2 * _PAD, w + 2 * _PAD, CHANNELS)
        if border.shape != expected or border.dtype != np.float32 or not border.flags.c_contiguous:
            raise ValueError(
                f"border: expected padded(stacked), C-contiguous float32 {expected}, got "
                f"{border.dtype} {border.shape}"
            )
        fixed = pointers(self.shape, i0=i0, i1wx=i1wx, i1wy=i1wy, grad=grad, rho_c=rho_c)
        self._scratch = np.empty(8 * w + LANES, np.float32)  # a row's window weights
        self._offsets = np.empty(w + LANES, np.int64)  # and window offsets
        self._arrays = (border, i0, i1wx, i1wy, grad, rho_c)  # kept alive
        self._head = (border.ctypes.data, border.shape[1] * CHANNELS)
        self._tail = (*fixed, h, w, self._scratch.ctypes.data, self._offsets.ctypes.data)
        self._fn = kernel("warp_linearize", module_ir, _SIGNATURE)

    def __call__(self, u1, u2) -> bool:
        """Warps by the flow u1, u2 (float32 [H, W], pixels). Returns True; False, with the
        outputs partly written, where a map (x + u1 or y + u2) is NaN or at least MAP_LIMIT
        pixels in size: the caller then warps with OpenCV."""
        flow = pointers(self.shape, u1=u1, u2=u2)
        return bool(self._fn(*self._head, *flow, *self._tail))


def warp_linearize(border, u1, u2, i0, i1wx, i1wy, grad, rho_c) -> bool:
    """`Warp(border, i0, i1wx, i1wy, grad, rho_c)(u1, u2)`: one warp, bound and run."""
    return Warp(border, i0, i1wx, i1wy, grad, rho_c)(u1, u2)
