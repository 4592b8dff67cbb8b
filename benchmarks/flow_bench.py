"""TV-L1 presets side by side: throughput per core and end-point difference from `reference`.

For each clip, decodes frames as the pipeline does (`pipelines.stages.video.iter_frames`: --fps,
--short_side), converts them to grayscale (`flow.to_gray`) and takes --pairs consecutive frame
pairs from --at (a fraction of the clip's length). On each pair it computes the flow with
`reference` (OpenCV's own implementation with its default parameters) and with each preset under
test (default: every other preset), in turn pair by pair so that all see the same load, each
through the pipeline's own call (`flow.compute_flow` with one algorithm object per preset, as a
worker has).

Printed per clip and overall: pairs/s per core of each (pairs per second of process CPU time,
with OpenCV on --threads threads; CPU time, unlike wall time, does not count time spent waiting
for a core that other processes hold), the throughput ratio (CPU time and wall time), and the
mean end-point difference |flow - reference| in pixels over all pixels and over the moving
pixels (|reference| > --moving px), the largest difference, and how many pairs are bit for bit the
reference's flow. "overall" pools every pair (and every moving pixel) of every
clip; "clip mean" averages the per-clip figures.

--cuts measures the pairs that cost most for what they carry: scene cuts (the last frame of one
clip and the first of the next, resized to one size), where the solvers run to their iteration
caps, and repeated frames (a low-rate source resampled to 25 fps), which `flow.compute_flow`
answers without solving. Printed per kind: CPU ms per pair of OpenCV's solver and of `fast`, the
iterations per pyramid level against the cap, and whether the flows are equal.

--profile explains where the time goes instead: the reference's time per pyramid level, then
one-parameter-at-a-time variations of the reference (epsilon, warps, scales, scale step, inner
and outer iterations, median filter, warm start, threads), each with its ratio and difference.

    python benchmarks/flow_bench.py [CLIP ...] [--pairs 8] [--preset fast,draft]
    python benchmarks/flow_bench.py --unlike     # four clips made unlike the samples
    python benchmarks/flow_bench.py --params epsilon=0.03,warps=4   # any parameters vs reference
    python benchmarks/flow_bench.py --profile [CLIP ...]
    python benchmarks/flow_bench.py --cuts [--pairs 4]
    python benchmarks/flow_bench.py --breakdown [CLIP ...]   # where `fast` spends a pair
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from flow import FLOW_PRESETS, TVL1Params, compute_flow, flow_params, to_gray  # noqa: E402


def sample_clips() -> list[str]:
    from pipelines import assets

    return sorted(str(p) for p in (assets.cache_dir() / "videos").glob("*.mp4"))


def load_frames(path: str, pairs: int, at: float, fps: float, short_side: int) -> list:
    """pairs + 1 consecutive grayscale frames starting at fraction `at` of the clip."""
    from pipelines.stages.video import iter_frames

    grays = [to_gray(f.rgb) for f in iter_frames(path, 0, None, fps, short_side)]
    n = min(pairs + 1, len(grays))
    start = min(int(at * len(grays)), len(grays) - n)
    return grays[start : start + n]


def write_unlike_clips(out_dir: str, seconds: float = 2.0, fps: float = 25.0) -> list[str]:
    """Four clips unlike the samples, made deterministically from them (MPEG-4 part 2, .mp4):

    - pan_zoom: a 16:9 window that pans across the multi-person scene and zooms in 1.6x;
    - shake_jpeg: the sports2d clip shifted by up to 12 px per frame at random (seeded) and
      re-encoded frame by frame as JPEG at quality 12 (blocking and ringing);
    - fast_motion: every third frame of a single-person clip (3x the motion per pair);
    - dark_small: a single-person clip at a quarter of the brightness and 180 px high, so the
      pipeline upscales it.
    """
    from pipelines import assets

    def source(name, step=1):
        cap = cv2.VideoCapture(str(assets.sample_video_path(name)))
        frames, i = [], 0
        while len(frames) < int(seconds * fps):
            ok, frame = cap.read()
            if not ok:
                if i == 0:
                    raise SystemExit(f"{name}: no frame could be read")
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)  # loop a short clip
                continue
            if i % step == 0:
                frames.append(frame)
            i += 1
        cap.release()
        return frames

    def write(name, frames):
        path = os.path.join(out_dir, f"unlike_{name}.mp4")
        h, w = frames[0].shape[:2]
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        for f in frames:
            writer.write(f)
        writer.release()
        return path

    rng = np.random.default_rng(0)
    out = []
    frames = source("pose2sim_multi_cam01.mp4")
    h, w = frames[0].shape[:2]
    views = []
    for k, f in enumerate(frames):
        a = k / max(len(frames) - 1, 1)
        cw = int(w / (1 + 0.6 * a))
        ch = min(h, cw * 9 // 16)
        x0, y0 = int(a * (w - cw)), (h - ch) // 2
        views.append(cv2.resize(f[y0 : y0 + ch, x0 : x0 + cw], (640, 360), cv2.INTER_AREA))
    out.append(write("pan_zoom", views))
    shaken = []
    for f in source("sports2d_demo.mp4"):
        dx, dy = rng.integers(-12, 13, size=2)
        m = np.float32([[1, 0, dx], [0, 1, dy]])
        g = cv2.warpAffine(f, m, (f.shape[1], f.shape[0]), borderMode=cv2.BORDER_REFLECT)
        ok, buf = cv2.imencode(".jpg", g, [cv2.IMWRITE_JPEG_QUALITY, 12])
        shaken.append(cv2.imdecode(buf, cv2.IMREAD_COLOR))
    out.append(write("shake_jpeg", shaken))
    out.append(write("fast_motion", source("pose2sim_single_cam02.mp4", step=3)))
    small = []
    for f in source("pose2sim_single_cam03.mp4"):
        f = cv2.resize(f, (f.shape[1] * 180 // f.shape[0], 180), interpolation=cv2.INTER_AREA)
        small.append((f.astype(np.float32) * 0.25).astype(np.uint8))
    out.append(write("dark_small", small))
    return out


@dataclasses.dataclass
class Tally:
    """CPU and wall seconds, pairs, and end-point differences of one method on some pairs."""

    cpu: float = 0.0
    wall: float = 0.0
    pairs: int = 0
    epe_sum: float = 0.0
    pixels: int = 0
    moving_epe_sum: float = 0.0
    moving_pixels: int = 0
    max_epe: float = 0.0
    identical: int = 0  # pairs whose flow equals the reference's bit for bit

    def add(self, other: Tally) -> None:
        for f in dataclasses.fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            setattr(self, f.name, max(mine, theirs) if f.name == "max_epe" else mine + theirs)

    @property
    def rate(self) -> float:
        return self.pairs / self.cpu if self.cpu else float("nan")

    @property
    def epe(self) -> float:
        return self.epe_sum / self.pixels if self.pixels else float("nan")

    @property
    def moving_epe(self) -> float:
        return self.moving_epe_sum / self.moving_pixels if self.moving_pixels else float("nan")


class FlowStream:
    """Frame-by-frame flow as `pipelines.stages.clip` computes it: `push(gray)` -> flow from the
    previous
    frame (None for the first). warm_start: OpenCV's `useInitialFlow` from the previous pair's
    flow (only the coarsest pyramid level uses it); measured, not used by any preset."""

    def __init__(self, params: TVL1Params, warm_start: bool = False):
        self.algo, self.warm = params.create(), warm_start
        self.prev = self.flow = None

    def push(self, gray):
        prev, self.prev = self.prev, gray
        if prev is None:
            return None
        if self.warm and self.flow is not None:
            self.algo.setUseInitialFlow(True)
            self.flow = self.algo.calc(prev, gray, self.flow.copy())
        else:
            self.flow = compute_flow(self.algo, prev, gray)
        return self.flow


def timed(fn, *args):
    w, c = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.process_time() - c, time.perf_counter() - w


def compare(flow: np.ndarray, ref: np.ndarray, moving: float, tally: Tally) -> None:
    d = np.linalg.norm(flow.astype(np.float64) - ref, axis=-1)
    m = np.linalg.norm(ref.astype(np.float64), axis=-1) > moving
    tally.epe_sum += float(d.sum())
    tally.pixels += d.size
    tally.moving_epe_sum += float(d[m].sum())
    tally.moving_pixels += int(m.sum())
    tally.max_epe = max(tally.max_epe, float(d.max()))
    tally.identical += bool(np.array_equal(flow, ref))


def warm_up(params_list) -> float:
    """Loads what a process loads once before its first flow (numba's cached code, the vector
    kernels compiled for this CPU) by one solve on a small synthetic pair; returns the CPU
    seconds it took. A job's worker pays this once, not per video or pair."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (48, 64), dtype=np.uint8)
    b = np.roll(a, 1, axis=1)
    t = time.process_time()
    for params in params_list:
        compute_flow(params.create(), a, b)
    return time.process_time() - t


def run_side_by_side(frames, methods: dict, moving: float) -> dict[str, Tally]:
    """methods: name -> a fresh FlowStream (`push(gray) -> flow | None`).

    The first method is the reference that the others are compared with. Methods run in turn on
    each pair, so all see the same machine load.
    """
    names = list(methods)
    tallies = {k: Tally() for k in names}
    for gray in frames:
        outs = {}
        for k in names:
            flow, cpu, wall = timed(methods[k].push, gray)
            if flow is not None:
                tallies[k].cpu += cpu
                tallies[k].wall += wall
                tallies[k].pairs += 1
                outs[k] = flow
        if outs:
            ref = outs[names[0]]
            for k in names:
                compare(outs[k], ref, moving, tallies[k])
    return tallies


NAME_WIDTH = 44


def fmt_row(name: str, ref: Tally, t: Tally, moving_frac: float | None = None) -> str:
    ratio = ref.cpu / t.cpu * t.pairs / ref.pairs if t.cpu else float("nan")
    wall = ref.wall / t.wall * t.pairs / ref.pairs if t.wall else float("nan")
    mf = "" if moving_frac is None else f" {100 * moving_frac:6.1f}%"
    return (
        f"{name:<{NAME_WIDTH}} {t.pairs:5d} {ref.rate:9.3f} {t.rate:9.3f} {ratio:7.2f}x "
        f"{wall:6.2f}x "
        f"{t.epe:8.3f} {t.moving_epe:8.3f} {t.max_epe:7.2f} {t.identical:5d}{mf}"
    )


HEADER = (
    f"{'clip / preset':<{NAME_WIDTH}} {'pairs':>5} {'ref p/s':>9} {'test p/s':>9} {'ratio':>8} "
    f"{'wall':>7} "
    f"{'EPE all':>8} {'EPE mov':>8} {'EPE max':>7} {'same':>5} {'moving':>7}"
)


def parse_params(spec: str) -> TVL1Params:
    """'epsilon=0.03,warps=4' -> TVL1Params with those fields changed from the reference."""
    base = FLOW_PRESETS["reference"]
    kw = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        field = {f.name: f for f in dataclasses.fields(TVL1Params)}.get(key.strip())
        if field is None:
            raise SystemExit(f"--params: unknown parameter {key!r}")
        cur = getattr(base, field.name)
        if isinstance(cur, bool):
            kw[field.name] = value.strip().lower() in ("1", "true", "yes")
        else:
            kw[field.name] = type(cur)(value)
    return dataclasses.replace(base, **kw)


def benchmark(args) -> None:
    ref_params = FLOW_PRESETS["reference"]
    if args.params:
        tests = {f"params({args.params})": parse_params(args.params)}
    else:
        tests = {name: flow_params(name) for name in args.preset.split(",")}
    print(f"reference: {ref_params}")
    for name, params in tests.items():
        print(f"test {name}: {params}")
    print(
        f"{args.pairs} consecutive pairs per clip from {args.at:.0%} of its length, {args.fps:g} "
        f"fps, short side {args.short_side}, OpenCV threads {args.threads}; p/s = pairs per "
        f"CPU-second (per core); EPE = end-point difference from the reference, px; same = pairs "
        f"equal to the reference bit for bit; moving = |reference| > {args.moving:g} px\n"
    )
    once = warm_up(tests.values())
    print(f"once per process, before timing: {once:.2f} CPU-s (loading and compiling the solver)\n")
    print(HEADER)
    total = {k: Tally() for k in ["ref", *tests]}
    per_clip = []
    for path in args.clips:
        frames = load_frames(path, args.pairs, args.at, args.fps, args.short_side)
        methods = {"ref": FlowStream(ref_params)}
        methods.update({name: FlowStream(params) for name, params in tests.items()})
        t = run_side_by_side(frames, methods, args.moving)
        frac = t["ref"].moving_pixels / max(t["ref"].pixels, 1)
        h, w = frames[0].shape
        clip = f"{os.path.splitext(os.path.basename(path))[0]}"
        for name in tests:
            room = NAME_WIDTH - len(f" {w}x{h} {name}")
            short = clip if len(clip) <= room else "~" + clip[-(room - 1) :]  # keep the end
            label = f"{short} {w}x{h} {name}"
            print(fmt_row(label, t["ref"], t[name], frac), flush=True)
        per_clip.append(t)
        for k in total:
            total[k].add(t[k])
    frac = total["ref"].moving_pixels / max(total["ref"].pixels, 1)
    print("-" * len(HEADER))
    for name in tests:
        print(fmt_row(f"overall (pooled) {name}", total["ref"], total[name], frac))
    for name in tests:
        ratios = [c["ref"].cpu / c[name].cpu * c[name].pairs / c["ref"].pairs for c in per_clip]
        mov = [c[name].moving_epe for c in per_clip if c[name].moving_pixels]
        print(
            f"clip mean, {name}: ratio {np.mean(ratios):.2f}x (min {np.min(ratios):.2f}x, max "
            f"{np.max(ratios):.2f}x), EPE all {np.mean([c[name].epe for c in per_clip]):.3f}, "
            f"EPE moving {np.mean(mov) if mov else float('nan'):.3f} "
            f"(max {np.max(mov) if mov else float('nan'):.3f})"
        )


# ---------------------------------------------------------------------------------------------
# --cuts
# ---------------------------------------------------------------------------------------------
def cut_pairs(clips: list[str], pairs: int, fps: float, short_side: int) -> list[tuple]:
    """(last frame of clip k, first frame of clip k + 1), the second resized to the first's size."""
    from pipelines.stages.video import iter_frames

    firsts, lasts = [], []
    for path in clips[: pairs + 1]:
        grays = [to_gray(f.rgb) for f in iter_frames(path, 0, None, fps, short_side)]
        firsts.append(grays[0])
        lasts.append(grays[-1])
    out = []
    for k in range(min(pairs, len(clips) - 1)):
        a = lasts[k]
        out.append((a, cv2.resize(firsts[k + 1], (a.shape[1], a.shape[0]), cv2.INTER_AREA)))
    return out


def cuts(args) -> None:
    fast = FLOW_PRESETS["fast"]
    cap = fast.warps * fast.outer_iterations * fast.inner_iterations
    print(
        f"{args.pairs} pairs of each kind, {args.fps:g} fps, short side {args.short_side}; "
        f"ms = CPU milliseconds per pair; cap = {cap} iterations per level (warps x outer x inner)"
    )
    scene_cuts = cut_pairs(args.clips, args.pairs, args.fps, args.short_side)
    kinds = {
        "scene cut": scene_cuts,
        "repeated frame": [(a, a.copy()) for a, _ in scene_cuts],
        "consecutive": [
            (f[0], f[1])
            for f in (load_frames(c, 1, args.at, args.fps, args.short_side) for c in args.clips)
        ][: args.pairs],
    }
    opencv, compiled = FLOW_PRESETS["reference"].create(), fast.create()
    print(f"once per process, before timing: {warm_up([fast]):.2f} CPU-s")
    print(f"{'kind':<16}{'pairs':>6}{'OpenCV ms':>11}{'fast ms':>9}{'ratio':>8}  same  "
          "fast iterations per level, finest first")  # fmt: skip
    for kind, pairs in kinds.items():
        t_cv = t_fast = 0.0
        same, levels = 0, []
        for a, b in pairs:
            ref, c, _ = timed(opencv.calc, a, b, None)  # OpenCV's own, no shortcut
            t_cv += c
            flow, c, _ = timed(compute_flow, compiled, a, b)  # the pipeline's call
            t_fast += c
            same += bool(np.array_equal(ref, flow))
            levels.append(compiled.last_iterations if not np.array_equal(a, b) else [0])
        n = len(pairs)
        its = " ".join(f"{np.mean([lv[i] for lv in levels if len(lv) > i]):.0f}" for i in range(
            max(len(lv) for lv in levels)))  # fmt: skip
        print(
            f"{kind:<16}{n:>6}{1000 * t_cv / n:>11.0f}{1000 * t_fast / n:>9.1f}"
            f"{t_cv / t_fast if t_fast else float('inf'):>7.0f}x {same:>5}  {its}"
        )


# ---------------------------------------------------------------------------------------------
# --breakdown
# ---------------------------------------------------------------------------------------------
def breakdown(args) -> None:
    """Where `fast` (the compiled solver) spends a pair: CPU ms per part, timed by wrapping the
    solver module's calls (its iteration, its compiled glue, and the OpenCV calls it makes)."""
    import types

    from flow import solver

    spent: dict[str, float] = {}

    restore = []

    def wrap(owner, name: str, part: str) -> None:
        fn = getattr(owner, name)
        restore.append((owner, name, fn))

        def timed_call(*a, **k):
            t = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                spent[part] = spent.get(part, 0.0) + time.process_time() - t

        setattr(owner, name, timed_call)

    real_cv2 = solver.cv2
    solver.cv2 = types.SimpleNamespace(
        **{k: getattr(real_cv2, k) for k in dir(real_cv2) if not k.startswith("__")}
    )
    wrap(solver.Iteration, "__call__", "iteration (compiled)")
    wrap(solver, "_iterate", "iteration (compiled, narrow frames)")
    wrap(solver.Warp, "__call__", "warps and data term (compiled)")
    wrap(solver.cv2, "remap", "warps (cv2.remap, maps out of range)")
    wrap(solver, "_median", "median filter (compiled)")
    wrap(solver, "_linearize", "data term (compiled)")
    wrap(solver, "_warp_maps", "warp maps (compiled)")
    wrap(solver.cv2, "resize", "pyramid and upsampling (cv2.resize)")
    wrap(solver, "_fill_border", "frame and gradients (compiled)")
    algo = FLOW_PRESETS["fast"].create()
    clips = [load_frames(p, args.pairs, args.at, args.fps, args.short_side) for p in args.clips]
    algo.calc(clips[0][0], clips[0][1], None)  # compiled code loaded before timing
    spent.clear()
    pairs, total, pixel_iterations = 0, 0.0, 0
    try:
        for frames in clips:
            for a, b in zip(frames[:-1], frames[1:]):
                _, cpu, _ = timed(algo.calc, a, b, None)
                total += cpu
                pairs += 1
                h, w = a.shape
                for n in algo.last_iterations:  # finest level first, as cv2.resize sizes them
                    pixel_iterations += n * h * w
                    h, w = round(h * algo.scale_step), round(w * algo.scale_step)
    finally:
        solver.cv2 = real_cv2
        for owner, name, fn in restore:
            setattr(owner, name, fn)
    print(f"`fast` on {pairs} pairs ({len(clips)} clips): {1000 * total / pairs:.1f} ms/pair")
    rest = total - sum(spent.values())
    for part, cpu in [*sorted(spent.items(), key=lambda kv: -kv[1]), ("the rest", rest)]:
        print(f"  {part:<38}{1000 * cpu / pairs:8.1f} ms {100 * cpu / total:6.1f}%")
    it = spent.get("iteration (compiled)", 0.0)
    print(f"  iteration: {1e9 * it / max(pixel_iterations, 1):.2f} ns per pixel and iteration")


# ---------------------------------------------------------------------------------------------
# --profile
# ---------------------------------------------------------------------------------------------
def level_times(frames, params: TVL1Params) -> list[tuple[int, tuple, float]]:
    """CPU seconds per pyramid level of `params`, replaying OpenCV's pyramid one level at a time.

    OpenCV's calc builds the pyramid by repeated `resize(scale_step)`, solves the coarsest level
    from zero flow, then upsamples each level's flow (times 1 / scale_step) to initialize the
    next; dual variables restart at each level. The same with nscales=1 calls reproduces it (up
    to float rounding), and lets each level be timed.
    """
    out = {}
    for a, b in zip(frames[:-1], frames[1:]):
        i0, i1 = [a.astype(np.float32) / 255], [b.astype(np.float32) / 255]
        for _ in range(1, params.nscales):
            i0.append(cv2.resize(i0[-1], None, fx=params.scale_step, fy=params.scale_step))
            i1.append(cv2.resize(i1[-1], None, fx=params.scale_step, fy=params.scale_step))
        u = np.zeros(i0[-1].shape + (2,), np.float32)
        for s in range(params.nscales - 1, -1, -1):
            algo = dataclasses.replace(params, nscales=1).create()
            algo.setUseInitialFlow(True)
            u, cpu, _ = timed(algo.calc, i0[s], i1[s], u)
            prev = out.get(s, (i0[s].shape, 0.0))
            out[s] = (i0[s].shape, prev[1] + cpu)
            if s:
                h, w = i0[s - 1].shape
                u = cv2.resize(u, (w, h)) * np.float32(1 / params.scale_step)
    return [(s, *out[s]) for s in sorted(out, reverse=True)]


def profile(args) -> None:
    ref = FLOW_PRESETS["reference"]
    clips = [load_frames(p, args.pairs, args.at, args.fps, args.short_side) for p in args.clips]
    npairs = sum(len(f) - 1 for f in clips)
    print(
        f"profile on {len(clips)} clips x {args.pairs} pairs, short side {args.short_side}; "
        "CPU time; moving = |reference| > 1 px\n"
    )
    print("1. Where the reference's time goes, by pyramid level (coarsest first):")
    levels = {}
    for frames in clips:
        for s, shape, cpu in level_times(frames, ref):
            levels.setdefault(s, [shape, 0.0])[1] += cpu
    total = sum(v[1] for v in levels.values())
    for s, (shape, cpu) in sorted(levels.items(), reverse=True):
        h, w = shape
        print(
            f"   level {s}: {f'{w}x{h}':>9} {h * w / 1000:5.0f}k px "
            f"{1000 * cpu / npairs:8.1f} ms/pair {100 * cpu / total:5.1f}%"
        )
    print(
        "   (each level runs `warps` warps; each warp iterates until the mean squared update\n"
        "   per pixel falls below epsilon^2, at most inner x outer iterations)\n"
    )

    def P(**kw):
        return dataclasses.replace(ref, **kw)

    variants = [
        ("epsilon 0.009 (10% tighter)", lambda: FlowStream(P(epsilon=0.009))),
        ("epsilon 0.002 (more converged)", lambda: FlowStream(P(epsilon=0.002))),
        ("epsilon 0.02", lambda: FlowStream(P(epsilon=0.02))),
        ("epsilon 0.03", lambda: FlowStream(P(epsilon=0.03))),
        ("epsilon 0.05", lambda: FlowStream(P(epsilon=0.05))),
        ("warps 3", lambda: FlowStream(P(warps=3))),
        ("warps 2", lambda: FlowStream(P(warps=2))),
        ("warps 1", lambda: FlowStream(P(warps=1))),
        ("nscales 4", lambda: FlowStream(P(nscales=4))),
        ("nscales 3", lambda: FlowStream(P(nscales=3))),
        ("scale_step 0.6, nscales 4", lambda: FlowStream(P(scale_step=0.6, nscales=4))),
        ("scale_step 0.5, nscales 3", lambda: FlowStream(P(scale_step=0.5, nscales=3))),
        ("inner 10", lambda: FlowStream(P(inner_iterations=10))),
        ("inner 15", lambda: FlowStream(P(inner_iterations=15))),
        ("outer 3", lambda: FlowStream(P(outer_iterations=3))),
        ("median 3", lambda: FlowStream(P(median_filtering=3))),
        ("median 1 (off)", lambda: FlowStream(P(median_filtering=1))),
        ("warm start", lambda: FlowStream(ref, warm_start=True)),
        ("compiled solver (same parameters)", lambda: FlowStream(P(solver="compiled"))),
        ("epsilon 0.03, warm start", lambda: FlowStream(P(epsilon=0.03), warm_start=True)),
    ]
    for name in FLOW_PRESETS:
        if name != "reference":
            variants.append((f"preset {name}", lambda n=name: FlowStream(flow_params(n))))
    print("2. One change at a time from the reference (same pairs, run in turn pair by pair):")
    print(f"   {'variant':<30} {'ratio':>7} {'EPE all':>8} {'EPE mov':>8}  per clip EPE moving")
    for name, make in variants:
        ref_t, t, per = Tally(), Tally(), []
        for frames in clips:
            c = run_side_by_side(frames, {"ref": FlowStream(ref), "v": make()}, 1.0)
            ref_t.add(c["ref"])
            t.add(c["v"])
            per.append(c["v"].moving_epe)
        ratio = ref_t.cpu / t.cpu
        print(
            f"   {name:<30} {ratio:6.2f}x {t.epe:8.3f} {t.moving_epe:8.3f}  "
            + " ".join(f"{x:.2f}" for x in per),
            flush=True,
        )
    print(
        "\n3. Threads (reference; wall time per pair only means something on an idle machine; CPU\n"
        "   time counts every thread, so per core more threads never pay more than processes):"
    )
    frames = clips[0]
    for n in sorted({1, 2, os.cpu_count() or 1}):
        cv2.setNumThreads(n)
        t = run_side_by_side(frames, {"r": FlowStream(ref)}, 1.0)["r"]
        print(
            f"   {n} thread(s): {1000 * t.wall / t.pairs:7.0f} ms/pair wall, "
            f"{1000 * t.cpu / t.pairs:7.0f} ms/pair CPU"
        )
    cv2.setNumThreads(args.threads)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("clips", nargs="*", help="video files (default: the sample clips)")
    p.add_argument(
        "--preset",
        default=None,
        help="presets under test, comma-separated (default: every preset but the reference)",
    )
    p.add_argument("--params", help="instead of --preset: reference parameters changed, k=v,...")
    p.add_argument("--pairs", type=int, default=None, help="pairs per clip (8; profile 4)")
    p.add_argument("--at", type=float, default=0.3, help="where the pairs start (fraction)")
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--short_side", type=int, default=256)
    p.add_argument("--moving", type=float, default=1.0, help="moving: |reference| > this (px)")
    p.add_argument("--threads", type=int, default=1, help="OpenCV threads (1: per core)")
    p.add_argument("--profile", action="store_true", help="explain where the time goes")
    p.add_argument("--cuts", action="store_true", help="scene cuts and repeated frames")
    p.add_argument("--breakdown", action="store_true", help="where `fast` spends a pair")
    p.add_argument(
        "--unlike",
        action="store_true",
        help="instead of the sample clips, four clips made unlike them (write_unlike_clips)",
    )
    args = p.parse_args(argv)
    args.preset = args.preset or ",".join(k for k in FLOW_PRESETS if k != "reference")
    if args.unlike:
        import tempfile

        args.clips = write_unlike_clips(tempfile.mkdtemp(prefix="perfnet-unlike-"))
    args.clips = args.clips or sample_clips()
    cv2.setNumThreads(args.threads)
    if args.cuts:
        args.pairs = args.pairs or 4
        cuts(args)
    elif args.breakdown:
        args.pairs = args.pairs or 4
        breakdown(args)
    elif args.profile:
        args.pairs = args.pairs or 4
        if not sys.argv[1:] or all(a.startswith("-") for a in sys.argv[1:]):
            c = args.clips  # first, middle and last sample clip
            args.clips = list(dict.fromkeys([c[0], c[len(c) // 2], c[-1]]))
        profile(args)
    else:
        args.pairs = args.pairs or 8
        benchmark(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
