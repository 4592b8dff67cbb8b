"""The solver's 5x5 median filter as explicit vector code, compiled with LLVM.

`cv2.medianBlur(u, 5)` on float32 (replicated borders) is what OpenCV's TV-L1 filters the flow
with. Any correct median gives the same value, and the same bits wherever the window holds no
NaN and no -0.0 (the only equal floats with different bits are +0.0 and -0.0): `median5` checks
its input for both (the flow never holds them in practice) and reports the image as refused
then, so that the caller runs OpenCV itself.

How it selects, 16 output pixels at a time, per output row:
1. each column of the 5 input rows (clamped at the top and bottom) is sorted with the
   9-comparator sorting network for 5 values, once for every column;
2. each pair of neighbouring sorted columns is merged into a sorted 10 (13 comparators), once
   for every pair;
3. each output pixel's window is then two merged pairs (its four left columns) and one sorted
   column (its right one): the pairs are merged only as far as their ranks 7 to 12 (Batcher's
   odd-even merge, every comparator that cannot reach those ranks removed: 36 minimums and
   maximums), and the median, the 13th smallest of the 25, is min over i = 8..13 of
   max(X[i - 1], E[12 - i]) for the merged four X and the right column E (10 more).
90 minimums and maximums per 16 pixels in all, where OpenCV's network for 25 values takes 198.
The comparator lists are generated below from Batcher's construction (not written out by hand),
and `tests/flow/test_flow_median.py` proves the selection network correct by the 0-1 principle
(all 7,776 0-1 inputs with sorted columns) and compares the filter with `cv2.medianBlur`.
"""

from __future__ import annotations

import ctypes

import numpy as np

from flow._llvm import LANES, Block, block_loop, kernel, pointers

# The optimal sorting network for 5 values (Knuth, TAOCP 5.3.4): (min, max) slot pairs.
SORT5 = ((0, 1), (3, 4), (2, 4), (2, 3), (1, 4), (0, 3), (0, 2), (1, 3), (1, 2))


def _batcher_merges(n: int, run: int) -> list[tuple[int, int]]:
    """Batcher's odd-even merge sort of n wires (a power of two) without the stages that sort
    runs of `run` wires: the comparators that merge sorted runs, in order."""
    out = []
    p = run
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        out.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return out


def merge_network(runs: tuple[int, ...], run: int):
    """A comparator network that merges sorted input runs of the given lengths.

    Batcher's merges of `len(runs)` runs padded with +inf to `run` wires each (and to a power of
    two of runs), with the comparators the padding makes trivial removed: one with +inf on its
    max side does nothing, one with +inf on its min side swaps, which is a relabelling.

    Returns (comparators as (a, b) over input slots, where slot r * run + i holds run r's i-th
    smallest and a comparator leaves min(a, b) in a and max(a, b) in b; the slot that holds each
    rank of the merged output, smallest first).
    """
    count = 1
    while count < len(runs):
        count *= 2
    n = run * count
    padding = {
        r * run + i for r in range(count) for i in range(run) if r >= len(runs) or i >= runs[r]
    }
    slot = list(range(n))
    inf = [w in padding for w in range(n)]
    ops = []
    for a, b in _batcher_merges(n, run):
        if inf[b]:
            continue
        if inf[a]:
            slot[a], slot[b] = slot[b], slot[a]
            inf[a], inf[b] = False, True
            continue
        ops.append((slot[a], slot[b]))
    return ops, slot[: sum(runs)]


def pruned_network(runs: tuple[int, ...], run: int, wanted: range):
    """`merge_network` pruned to the comparators that can reach the ranks `wanted` (0-based).

    Returns (comparators as (a, b, keep_min, keep_max), where only the outputs marked are
    needed; the slots that hold the wanted ranks, in order)."""
    ops, ranks = merge_network(runs, run)
    slots = [ranks[k] for k in wanted]
    live, kept = set(slots), []
    for a, b in reversed(ops):
        keep_min, keep_max = a in live, b in live
        if keep_min or keep_max:
            kept.append((a, b, keep_min, keep_max))
            live |= {a, b}
    return list(reversed(kept)), slots


# Step 2: two sorted columns (5 + 5) merged into a sorted 10: slots 0-4 and 8-12 in.
PAIR_MERGE, PAIR_RANKS = merge_network((5, 5), 8)
# Step 3: the four columns x - 2 .. x + 1 as two merged pairs (slots 0-9 and 16-25), merged only
# as far as ranks 7 to 12 of their 20 values, which are all that the median can be: the median
# is the 13th smallest of those 20 and the 5 of column x + 2, E, and the 13th smallest of two
# sorted lists is min over i = 8..13 of max(X[i - 1], E[12 - i]) (E[-1] = -inf).
QUAD_MERGE, QUAD_RANKS = pruned_network((10, 10), 16, range(7, 13))


def _exchange(e: Block, regs: dict, a: int, b: int, keep_min: bool = True, keep_max: bool = True):
    """A comparator on registers a, b: min to a, max to b (only the kept outputs computed)."""
    below = e.op(f"fcmp olt {e.f} {regs[a]}, {regs[b]}")
    low = e.select(below, regs[a], regs[b]) if keep_min else None
    high = e.select(below, regs[b], regs[a]) if keep_max else None
    if keep_min:
        regs[a] = low
    if keep_max:
        regs[b] = high


def module_ir() -> str:
    """The module's LLVM IR (text): `i64 @median5(src, dst, h, w, columns, pairs)`."""
    lines: list[str] = []
    e = Block(lines, [0])

    def columns(x):
        """Step 1: the 5 rows' values of the columns at x, sorted, into the column scratch;
        returns the mask of lanes whose centre value is NaN or -0.0."""
        regs = {k: e.load(f"%row{k}", x) for k in range(5)}
        centre = e.op(f"bitcast {e.f} {regs[2]} to <{e.n} x i32>")
        bad = e.op(f"icmp eq <{e.n} x i32> {centre}, splat (i32 -2147483648)")
        nan = e.op(f"fcmp uno {e.f} {regs[2]}, {regs[2]}")
        bad = e.bin("or", bad, nan, e.b)
        if e.mask is not None:
            bad = e.bin("and", bad, e.mask, e.b)
        for a, b in SORT5:
            _exchange(e, regs, a, b)
        at = e.op(f"add i64 {x}, 2")
        for r in range(5):
            e.store(regs[r], f"%col{r}", at)
        return bad

    def pairs(x):
        """Step 2: the sorted columns at x and x + 1 (scratch index) merged into the pairs."""
        nxt = e.op(f"add i64 {x}, 1")
        regs = {}
        for r in range(5):
            for base, at in ((0, x), (8, nxt)):
                ptr = e.op(f"getelementptr inbounds float, ptr %col{r}, i64 {at}")
                regs[base + r] = e.op(f"load {e.f}, ptr {ptr}, align 4")
        for a, b in PAIR_MERGE:
            _exchange(e, regs, a, b)
        for k, slot in enumerate(PAIR_RANKS):
            e.store(regs[slot], f"%pair{k}", x)

    def medians(x):
        """Step 3: each output's four left columns (two merged pairs), ranks 7-12 of their
        merge, and the 13th smallest of those and the sorted column x + 2."""
        regs = {}
        at_cd = e.op(f"add i64 {x}, 2")
        at_e = e.op(f"add i64 {x}, 4")
        for k in range(10):
            for base, at in ((0, x), (16, at_cd)):
                ptr = e.op(f"getelementptr inbounds float, ptr %pair{k}, i64 {at}")
                regs[base + k] = e.op(f"load {e.f}, ptr {ptr}, align 4")
        for a, b, keep_min, keep_max in QUAD_MERGE:
            _exchange(e, regs, a, b, keep_min, keep_max)
        x_ranks = dict(zip(range(7, 13), (regs[slot] for slot in QUAD_RANKS)))
        column = []
        for r in range(5):
            ptr = e.op(f"getelementptr inbounds float, ptr %col{r}, i64 {at_e}")
            column.append(e.op(f"load {e.f}, ptr {ptr}, align 4"))
        median = x_ranks[12]
        for i in range(8, 13):
            a, b = x_ranks[i - 1], column[12 - i]
            high = e.select(e.op(f"fcmp olt {e.f} {a}, {b}"), b, a)
            median = e.select(e.op(f"fcmp olt {e.f} {high}, {median}"), high, median)
        e.store(median, "%out", x)

    _, bad = block_loop(e, "0", "%w", columns, (e.b, "or"), tail=True)
    # The row's verdict, folded into the image's once per row.
    flag = e.op(f"call i1 @llvm.vector.reduce.or.v{e.n}i1({e.b} {bad})")
    was = e.op("load i1, ptr %bad, align 1")
    lines.append(f"  store i1 {e.bin('or', was, flag, 'i1')}, ptr %bad, align 1")
    # The two columns beyond each side repeat the edge column (replicated border).
    for r in range(5):
        lines.append(f"  %e0.{r} = load float, ptr %col{r}.2, align 4")
        lines.append(f"  store float %e0.{r}, ptr %col{r}, align 4")
        lines.append(f"  store float %e0.{r}, ptr %col{r}.1, align 4")
        lines.append(f"  %e1.{r} = load float, ptr %col{r}.w1, align 4")
        lines.append(f"  store float %e1.{r}, ptr %col{r}.w2, align 4")
        lines.append(f"  store float %e1.{r}, ptr %col{r}.w3, align 4")
    block_loop(e, "0", "%w2", pairs, tail=True)
    block_loop(e, "0", "%w", medians, tail=True)

    n = LANES
    col_ptrs = "\n".join(
        f"  %col{r}.off = mul i64 %cs, {r}\n"
        f"  %col{r} = getelementptr inbounds float, ptr %columns, i64 %col{r}.off\n"
        f"  %col{r}.1 = getelementptr inbounds float, ptr %col{r}, i64 1\n"
        f"  %col{r}.2 = getelementptr inbounds float, ptr %col{r}, i64 2\n"
        f"  %col{r}.w1 = getelementptr inbounds float, ptr %col{r}, i64 %w.1\n"
        f"  %col{r}.w2 = getelementptr inbounds float, ptr %col{r}, i64 %w.2\n"
        f"  %col{r}.w3 = getelementptr inbounds float, ptr %col{r}, i64 %w.3"
        for r in range(5)
    )
    pair_ptrs = "\n".join(
        f"  %pair{k}.off = mul i64 %cs, {k}\n"
        f"  %pair{k} = getelementptr inbounds float, ptr %pairs, i64 %pair{k}.off"
        for k in range(10)
    )
    row_ptrs = "\n".join(
        f"  %ry{k} = add i64 %y, {k - 2}\n"
        f"  %rc{k} = call i64 @llvm.smax.i64(i64 %ry{k}, i64 0)\n"
        f"  %rd{k} = call i64 @llvm.smin.i64(i64 %rc{k}, i64 %hm1)\n"
        f"  %ro{k} = mul i64 %rd{k}, %w\n"
        f"  %row{k} = getelementptr inbounds float, ptr %src, i64 %ro{k}"
        for k in range(5)
    )
    return f"""
declare <{n} x float> @llvm.masked.load.v{n}f32.p0(ptr, i32, <{n} x i1>, <{n} x float>)
declare void @llvm.masked.store.v{n}f32.p0(<{n} x float>, ptr, i32, <{n} x i1>)
declare i1 @llvm.vector.reduce.or.v{n}i1(<{n} x i1>)
declare i64 @llvm.smax.i64(i64, i64)
declare i64 @llvm.smin.i64(i64, i64)

define i64 @median5(ptr %src, ptr %dst, i64 %h, i64 %w, ptr %columns, ptr %pairs) {{
entry:
  %bad = alloca i1, align 1
  store i1 false, ptr %bad, align 1
  %cs = add i64 %w, {4 + 2 * n}
  %hm1 = add i64 %h, -1
  %w2 = add i64 %w, 2
  %w.1 = add i64 %w, 1
  %w.2 = add i64 %w, 2
  %w.3 = add i64 %w, 3
{col_ptrs}
{pair_ptrs}
  br label %row
row:
  %y = phi i64 [ 0, %entry ], [ %y1, %rowdone ]
{row_ptrs}
  %oo = mul i64 %y, %w
  %out = getelementptr inbounds float, ptr %dst, i64 %oo
{chr(10).join(lines)}
  br label %rowdone
rowdone:
  %y1 = add i64 %y, 1
  %more = icmp slt i64 %y1, %h
  br i1 %more, label %row, label %finish
finish:
  %anybad = load i1, ptr %bad, align 1
  %ok = select i1 %anybad, i64 0, i64 1
  ret i64 %ok
}}
"""


_SIGNATURE = ctypes.CFUNCTYPE(
    ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
    ctypes.c_void_p, ctypes.c_void_p,
)  # fmt: skip


class Median5:
    """`cv2.medianBlur(u, 5)` for float32 [H, W] images of one shape (W >= LANES), bit for bit,
    into buffers of its own: two, used in turn, so that an image it returned can be filtered
    again (the solver filters the flow it iterated on, in place, the call before).
    """

    def __init__(self, shape: tuple[int, int]):
        h, w = shape
        if w < LANES:
            raise ValueError(f"shape={shape}: rows must be at least {LANES} wide")
        self.shape = (h, w)
        self._outputs = [np.empty((h, w), np.float32) for _ in range(2)]
        stride = w + 4 + 2 * LANES
        self._columns = np.empty(5 * stride, np.float32)  # a row's sorted columns
        self._pairs = np.empty(10 * stride, np.float32)  # and merged pairs of columns
        self._scratch = (self._columns.ctypes.data, self._pairs.ctypes.data)
        self._fn = kernel("median5", module_ir, _SIGNATURE)

    def __call__(self, u: np.ndarray) -> np.ndarray | None:
        """The filtered `u` (float32 [H, W], C-contiguous; ValueError otherwise), in one of the
        filter's buffers (not `u`'s); None where `u` holds a NaN or a -0.0."""
        (src,) = pointers(self.shape, u=u)
        out = self._outputs[0] if src != self._outputs[0].ctypes.data else self._outputs[1]
        ok = self._fn(src, out.ctypes.data, *self.shape, *self._scratch)
        return out if ok else None


def median5(u: np.ndarray) -> np.ndarray | None:
    """`Median5(u.shape)(u)`: `cv2.medianBlur(u, 5)` bit for bit, as a new float32 [H, W]; None
    where `u` holds a NaN or a -0.0 (the caller then uses OpenCV)."""
    if u.ndim != 2 or u.shape[1] < LANES:
        raise ValueError(f"u: expected float32 [H, W] with W >= {LANES}, got {u.dtype} {u.shape}")
    return Median5(u.shape)(u)
