"""The fused vector iteration is the plain compiled iteration, value for value and decision for
decision, on every row width its blocks treat differently."""

import numpy as np
import pytest

from flow._llvm import LANES
from flow.solver import _iterate
from flow.vector_iteration import _FUSED_MIN_WIDTH, iterate

L_T, THETA, TAUT = np.float32(0.15 * 0.3), np.float32(0.3), np.float32(0.25 / 0.3)


def _state(rng, h, w):
    """Warped gradients, data term, flow and dual field of a plausible solver state, with the
    thresholding step's three cases and flat (zero-gradient) pixels all present."""
    i1wx = (rng.standard_normal((h, w)) * 8).astype(np.float32)
    i1wy = (rng.standard_normal((h, w)) * 8).astype(np.float32)
    flat = rng.random((h, w)) < 0.1
    i1wx[flat] = 0.0
    i1wy[flat] = 0.0
    grad = (i1wx * i1wx + i1wy * i1wy).astype(np.float32)
    rho_c = (rng.standard_normal((h, w)) * 6).astype(np.float32)
    u1, u2 = (rng.standard_normal((2, h, w)) * 0.5).astype(np.float32)
    p = (rng.standard_normal((4, h, w)) * 0.3).astype(np.float32)
    return [i1wx, i1wy, grad, rho_c, u1, u2, *p]


def _run(fn, state, stop, limit):
    arrays = [a.copy() for a in state]
    n, error = fn(*arrays, L_T, THETA, TAUT, np.float32(stop), limit)
    return arrays, n, error


def _assert_same(state, stop, limit):
    want, n_want, e_want = _run(_iterate, state, stop, limit)
    got, n_got, e_got = _run(iterate, state, stop, limit)
    assert n_got == n_want
    assert (e_got > stop) == (e_want > stop)
    for name, g, w in zip(("u1", "u2", "p11", "p12", "p21", "p22"), got[4:], want[4:]):
        np.testing.assert_array_equal(g.view(np.uint32), w.view(np.uint32), err_msg=name)
    return n_want, e_want


WIDTHS = [LANES, LANES + 1, 2 * LANES - 1, 2 * LANES, _FUSED_MIN_WIDTH, 3 * LANES,
          3 * LANES + 1, 4 * LANES, 101]  # fmt: skip


@pytest.mark.parametrize("w", WIDTHS)
@pytest.mark.parametrize("h", [1, 2, 3, 17])
def test_vector_iteration_is_the_plain_iteration(h, w):
    rng = np.random.default_rng(h * 1000 + w)
    state = _state(rng, h, w)
    # Never stops (the cap), stops at once, and stops part way.
    n, _ = _assert_same(state, 0.0, 9)
    assert n == 9
    n, _ = _assert_same(state, 1e9, 9)
    assert n == 1
    _, error_at_4 = _run(_iterate, state, 0.0, 4)[1:]
    n, _ = _assert_same(state, (error_at_4 + _run(_iterate, state, 0.0, 3)[2]) / 2, 9)
    assert n == 4


def _row_major_error(state, k):
    """OpenCV's error at iteration k: the float32 squared updates summed in row-major order."""
    before = _run(_iterate, state, 0.0, k - 1)[0] if k > 1 else state
    after = _run(_iterate, state, 0.0, k)[0]
    da = after[4] - before[4]
    db = after[5] - before[5]
    error = np.float32(0.0)
    for v in (da * da + db * db).ravel():
        error = np.float32(error + v)
    return error


@pytest.mark.parametrize("w", [LANES, _FUSED_MIN_WIDTH, 100])
def test_vector_iteration_stops_on_the_float32_row_major_sum(w):
    """Thresholds at, and float32 steps either side of, the error after k iterations, where only
    the exact float32 row-major sum decides: both stop exactly where that sum says."""
    rng = np.random.default_rng(w)
    state = _state(rng, 9, w)
    errors = [_row_major_error(state, j) for j in range(1, 7)]
    for k in (1, 2, 5):
        exact = errors[k - 1]
        below = np.nextafter(exact, np.float32(0))
        above = np.nextafter(exact, np.float32(np.inf))
        for stop in (below, exact, above, np.nextafter(above, np.float32(np.inf))):
            n, _ = _assert_same(state, stop, 6)
            # OpenCV's rule: the first iteration whose error is at most the threshold.
            assert n == next((j + 1 for j, e in enumerate(errors) if not e > stop), 6)


def test_vector_iteration_runs_nothing_at_a_zero_limit():
    state = _state(np.random.default_rng(0), 4, LANES)
    arrays, n, error = _run(iterate, state, 0.0, 0)
    assert (n, error) == (0, np.inf)
    for a, b in zip(arrays, state):
        np.testing.assert_array_equal(a, b)


def test_vector_iteration_checks_its_arrays():
    state = _state(np.random.default_rng(0), 4, LANES)
    with pytest.raises(ValueError, match="rows must be at least 16 wide"):
        iterate(*[a[:, :8].copy() for a in state], L_T, THETA, TAUT, np.float32(0.0), 1)
    bad = list(state)
    bad[7] = state[7][:, ::-1]  # p12, not contiguous
    with pytest.raises(ValueError, match=r"p12: expected C-contiguous float32 \(4, 16\)"):
        iterate(*bad, L_T, THETA, TAUT, np.float32(0.0), 1)
    bad[7] = state[7].astype(np.float64)
    with pytest.raises(ValueError, match="p12: .* got float64"):
        iterate(*bad, L_T, THETA, TAUT, np.float32(0.0), 1)


def test_kernels_compile_once_under_threads():
    """Threads that all reach a kernel's first use get one compiled kernel (a fresh process, so
    that the first use is theirs), and the same results."""
    import subprocess
    import sys

    code = """
import threading, numpy as np
from flow import _llvm
from flow.solver import TVL1Solver
rng = np.random.default_rng(0)
a = rng.integers(0, 255, (40, 61), np.uint8)
b = np.roll(a, 2, axis=1)
out = [None] * 6
def run(k):
    out[k] = TVL1Solver(0.25, 0.15, 0.3, 3, 2, 0.01, 10, 3, 0.8, 5).calc(a, b, None)
threads = [threading.Thread(target=run, args=(k,)) for k in range(6)]
for t in threads: t.start()
for t in threads: t.join()
assert all(o.tobytes() == out[0].tobytes() for o in out)
print(sorted(_llvm._KERNELS))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['median5', 'tvl1_iterate', 'warp_linearize']"
