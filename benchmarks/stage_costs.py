"""Per-stage cost of the preprocessing pipeline, in core-seconds per clip-second (docs/cost.md).

Runs the real stages of `pipelines.stages.clip.ClipProcessor` one by one on the frames of the sample
clips (or the clips given) and charges each call's process CPU time to its stage:

- decode + resize: `pipelines.stages.video.iter_frames` (FFmpeg decode, resampling to --fps,
  resizing to --short_side and to --pose_short_side for the pose estimator, BGR -> RGB);
- pose: the default estimator's `detect` (all its threads counted) plus duplicate suppression
  and tracking;
- render: `render.render_poses` with the default style;
- JPEG encode: the RGB and the pose-rendered frame at --jpeg_quality;
- flow <preset>: decoding the stored RGB JPEG and its grayscale conversion (flow is computed from
  the frames as stored), TV-L1 on a sample of the clip's frame pairs (--flow_pairs, evenly spread;
  the preset's cost per pair times the clip's pair count), quantization and the 4:4:4 flow JPEG at
  --flow_jpeg_quality; one untimed pair first, as a worker pays the solver's start-up once per
  process and its buffers once per frame size, not per pair.

Process CPU time counts every thread of the process, so the figures are core-seconds whatever
the thread counts; OpenCV is set to one thread (`cv2.setNumThreads(1)`), as in one Beam worker
process per core. A clip-second is one second of stored video (--fps frames).

`--kinetics` adds what a Kinetics-600-size run costs: --videos clips of --clip_seconds seconds.
`--memory` instead measures peak RSS (VmHWM) of `ClipProcessor` writing rgb + flow for a short
and a long synthetic clip, each in a fresh subprocess: what a clip costs beyond the imports.
`--worker` measures the whole of a job worker process: the peak RSS of a fresh process that does
what `pipelines.job.transforms.ProcessVideoFn` does for one row (its imports, Beam included, its
setup, the row's part written) on a 10 s clip with every modality and with rgb alone, and lists
the packages it imported; `--worker_with_tf` adds the same runs with TensorFlow imported first.

    python benchmarks/stage_costs.py [CLIP ...] [--flow_pairs 6] [--kinetics]
    python benchmarks/stage_costs.py --memory
    python benchmarks/stage_costs.py --worker [--worker_with_tf]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

STAGES = ("decode + resize", "pose", "render", "JPEG encode (rgb + pose)")


def sample_clips() -> list[str]:
    from pipelines import assets

    folder = assets.cache_dir() / "videos"
    return sorted(str(p) for p in folder.glob("*.mp4"))


@dataclasses.dataclass
class ClipCost:
    name: str
    frames: int
    seconds: dict[str, float]  # stage -> process CPU seconds for the whole clip

    def clip_seconds(self, fps: float) -> float:
        return self.frames / fps


def measure_clip(path: str, args, model: bytes, presets: list[str]) -> ClipCost:
    from flow import compute_flow, flow_params, quantize_flow, to_gray
    from pipelines.stages import video
    from pipelines.stages.codec import decode_jpeg, encode_jpeg
    from pipelines.stages.pose import create_estimator
    from pipelines.stages.tracking import IouTracker, suppress_duplicates
    from render import render_poses

    cpu = time.process_time
    sec = dict.fromkeys(STAGES, 0.0)
    grays = []
    pose_side = args.short_side if args.pose_short_side == -1 else args.pose_short_side
    frames = video.iter_frames(path, 0, None, args.fps, args.short_side, pose_side)
    estimator = create_estimator(model)  # creation is charged to no stage: once per video
    tracker = IouTracker()
    n = 0
    gray_s = 0.0  # grayscale conversion, charged to flow
    try:
        while True:
            t0 = cpu()
            try:
                frame = next(frames)
            except StopIteration:
                break
            t1 = cpu()
            poses = estimator.detect(frame.pose_rgb, frame.timestamp_us)
            keep = suppress_duplicates(poses.boxes, poses.box_scores)
            tracker.update(poses.boxes[keep])
            t2 = cpu()
            rendered = render_poses(frame.rgb, poses.keypoints, poses.scores, poses.boxes)
            t3 = cpu()
            rgb_jpeg = encode_jpeg(frame.rgb, args.jpeg_quality)
            encode_jpeg(rendered, args.jpeg_quality)
            t4 = cpu()
            grays.append(to_gray(decode_jpeg(rgb_jpeg)))
            gray_s += cpu() - t4
            n += 1
            for stage, dt in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                sec[stage] += dt
    finally:
        frames.close()
        estimator.close()
    pairs = n - 1
    idx = np.unique(np.linspace(0, pairs - 1, min(args.flow_pairs, pairs)).astype(int))
    for preset in presets:
        algo = flow_params(preset).create()
        # Untimed: what a worker pays once, not per pair (loading and compiling the solver, once
        # per process; its buffers for this frame size, once per video): the timed pairs are
        # scaled up to the clip's pair count, and must not scale those up with them.
        compute_flow(algo, grays[0], grays[1])
        spent = 0.0
        for i in idx:
            t0 = cpu()
            flow = compute_flow(algo, grays[i], grays[i + 1])
            encode_jpeg(quantize_flow(flow), args.flow_jpeg_quality, full_chroma=True)
            spent += cpu() - t0
        sec[f"flow {preset}"] = gray_s + spent / len(idx) * pairs
    return ClipCost(os.path.basename(path), n, sec)


def cost_table(costs: list[ClipCost], fps: float, presets: list[str]) -> tuple[str, dict]:
    """Markdown table: core-seconds per clip-second per stage, per clip kind and overall."""
    total_clip_s = sum(c.clip_seconds(fps) for c in costs)
    stages = list(STAGES) + [f"flow {p}" for p in presets]
    per = {s: sum(c.seconds[s] for c in costs) / total_clip_s for s in stages}
    lines = [
        "| stage | core-s per clip-s | ms per frame (or pair) | range over clips |",
        "|---|---:|---:|---|",
    ]
    for s in stages:
        vals = [c.seconds[s] / c.clip_seconds(fps) for c in costs]
        spread = f"{min(vals):.3f} - {max(vals):.3f}"
        lines.append(f"| {s} | {per[s]:.3f} | {per[s] / fps * 1000:.1f} | {spread} |")
    common = sum(per[s] for s in STAGES)
    for p in presets:
        lines.append(f"| **total, flow {p}** | **{common + per[f'flow {p}']:.2f}** | | |")
    return "\n".join(lines), per


def kinetics_table(per: dict, presets: list[str], videos: int, clip_seconds: float) -> str:
    clip_s = videos * clip_seconds
    common = sum(per[s] for s in STAGES)
    lines = [
        f"Kinetics-600-size run: {videos:,} clips x {clip_seconds:g} s = {clip_s / 3600:,.0f} "
        "clip-hours.",
        "",
        "| preset | flow core-hours | everything else | total core-hours |",
        "|---|---:|---:|---:|",
    ]
    for p in presets:
        f = per[f"flow {p}"] * clip_s / 3600
        o = common * clip_s / 3600
        lines.append(f"| {p} | {f:,.0f} | {o:,.0f} | {f + o:,.0f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Memory: peak RSS of ClipProcessor (rgb + flow) on a short and a long clip.
# ---------------------------------------------------------------------------------------------
def _vm(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def write_panning_video(path: str, seconds: float, fps: float = 25.0, size=(480, 270)) -> str:
    """A synthetic clip: a window panning and bobbing over a textured image (every pixel moves)."""
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (900, 1600), dtype=np.uint8), (0, 0), 2.0)
    texture = cv2.cvtColor(
        cv2.normalize(texture, None, 0, 255, cv2.NORM_MINMAX), cv2.COLOR_GRAY2BGR
    )
    w, h = size
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for k in range(int(round(seconds * fps))):
        x = int(600 + 500 * np.sin(k / 40.0))
        y = int(300 + 200 * np.cos(k / 55.0))
        writer.write(np.ascontiguousarray(texture[y : y + h, x : x + w]))
    writer.release()
    return path


def _memory_child(path: str, short_side: int, preset: str, clip_seconds: float) -> None:
    """Runs in a subprocess: prints a JSON line with peak RSS before and after processing.

    clip_seconds 0: the video is one clip, kept in memory (`ClipProcessor.process`), the worst
    case. Otherwise the video is cut into clips of that length and written to a part file as
    they are made (`parts.write_done` over `ClipProcessor.iter_clips`), as the pipeline does.
    """
    from pipelines.storage import parts

    cv2.setNumThreads(1)
    from pipelines.job.config import PreprocessConfig
    from pipelines.manifests import ClipSpec
    from pipelines.stages.clip import ClipProcessor

    config = PreprocessConfig(
        input="m.csv",
        output_dir="/tmp/unused",
        modalities=("rgb", "flow"),
        flow_preset=preset,
        short_side=short_side,
        max_clip_seconds=clip_seconds,
    )
    proc = ClipProcessor(config.clip_settings(), None)
    # Warm-up on the first 0.2 s: imports (the flow solver's among them) and OpenCV's buffers.
    proc.process(ClipSpec("w", path, "v.mp4", "l", 0, 0, 200_000, "train", "m.csv:2"))
    spec = ClipSpec("v", path, "v.mp4", "l", 0, 0, None, "train", "m.csv:2")
    try:  # reset the peak to the current RSS (Linux >= 4.0), so the peak is this clip's alone
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    before = _vm("VmHWM")
    t0 = time.process_time()
    if clip_seconds:
        clips = parts.write_done(tempfile.mkdtemp(), "v", spec, proc.iter_clips(spec))["clips"]
        frames, output_bytes = sum(c["frames"] for c in clips), sum(c["bytes"] for c in clips)
    else:
        records = proc.process(spec)
        frames = sum(r.num_frames for r in records)
        output_bytes = sum(r.size for r in records)
    print(
        json.dumps(
            {
                "frames": frames,
                "output_bytes": output_bytes,
                "hwm_before": before,
                "hwm_after": _vm("VmHWM"),
                "cpu_s": time.process_time() - t0,
            }
        )
    )


def _child_json(*argv: str) -> dict:
    """Runs this script with `argv` in a fresh process; the JSON object its last line prints."""
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), *argv],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_report(args) -> str:
    tmp = tempfile.mkdtemp(prefix="perfnet-mem-")
    rows = []
    runs = [(seconds, 0.0) for seconds in args.memory_seconds]
    runs.append((max(args.memory_seconds), min(args.memory_seconds)))
    for seconds, clip_seconds in runs:
        path = write_panning_video(os.path.join(tmp, f"pan_{seconds:g}s.mp4"), seconds)
        r = _child_json(
            "--_memory_child", path,
            "--short_side", str(args.memory_short_side), "--preset", args.memory_preset,
            "--_memory_clip_seconds", str(clip_seconds),
        )  # fmt: skip
        r["seconds"], r["clip_seconds"] = seconds, clip_seconds
        rows.append(r)
        os.remove(path)
    mib = 1 / 2**20
    lines = [
        f"ClipProcessor, modalities rgb + flow, preset {args.memory_preset}, short side "
        f"{args.memory_short_side}, fresh process each; 'one clip' keeps the whole video as one "
        "record in memory (max_clip_seconds=0), 'N s clips' writes clips to a part file as made:",
        "",
        "| video | clips | frames | output MiB | RSS after warm-up MiB | peak RSS MiB | growth MiB "
        "| growth / output |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        growth = (r["hwm_after"] - r["hwm_before"]) * mib
        out_mib = r["output_bytes"] * mib
        clips = f"{r['clip_seconds']:g} s clips" if r["clip_seconds"] else "one clip"
        lines.append(
            f"| {r['seconds']:g} s | {clips} | {r['frames']} | {out_mib:.1f} "
            f"| {r['hwm_before'] * mib:.0f} | {r['hwm_after'] * mib:.0f} | {growth:.1f} "
            f"| {growth / out_mib:.2f} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Worker memory: peak RSS of one job worker process on one row, imports included.
# ---------------------------------------------------------------------------------------------
def write_looped_video(source: str, path: str, seconds: float) -> str:
    """`seconds` of `source` played forwards then backwards (and again), at its own frame rate
    and size, so that a short sample clip with people in it makes a clip of any length."""
    cap = cv2.VideoCapture(source)
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    if not frames:
        raise ValueError(f"source={source!r}: no frames decoded")
    h, w = frames[0].shape[:2]
    order = list(range(len(frames))) + list(range(len(frames) - 2, 0, -1))
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for k in range(int(round(seconds * fps))):
        writer.write(frames[order[k % len(order)]])
    writer.release()
    return path


def _third_party(modules) -> list[str]:
    """The top-level packages of `modules` that are neither the standard library's nor ours."""
    ours = {"benchmarks", "flow", "pipelines", "render", "schemas", "training", "__main__"}
    tops = {name.split(".")[0] for name in modules}
    return sorted(
        t for t in tops if t not in sys.stdlib_module_names and t not in ours and t[0] != "_"
    )


def _worker_child(path: str, modalities: list[str], preload: list[str]) -> None:
    """Runs in a fresh subprocess: what a job worker does for one row, imports included
    (`pipelines.job.transforms.ProcessVideoFn`: setup, then the row's part written to a
    temporary directory). Prints a JSON line: VmRSS after each phase, VmHWM at the end (bytes)
    and the third-party packages imported."""
    import importlib

    marks = [("python, numpy, OpenCV", _vm("VmRSS"))]
    for name in preload:
        importlib.import_module(name)
        marks.append((f"+ import {name}", _vm("VmRSS")))
    from pipelines import assets
    from pipelines.job.config import PreprocessConfig
    from pipelines.job.transforms import DONE, ProcessVideoFn
    from pipelines.manifests import ClipSpec
    from pipelines.stages.pose import load_pose_model

    marks.append(("+ the job's DoFns (Beam)", _vm("VmRSS")))
    out = tempfile.mkdtemp(prefix="perfnet-worker-")
    config = PreprocessConfig(
        input="m.csv", output_dir=out, modalities=tuple(modalities), threads_per_worker=1
    )
    model_path = sha = None
    if "pose" in modalities:
        model_path = str(assets.pose_model_path())
        _, sha = load_pose_model(model_path)
    fn = ProcessVideoFn(config.clip_settings(), out, model_path, sha)
    fn.setup()
    marks.append(("+ setup (stages, pose model, flow solver)", _vm("VmRSS")))
    spec = ClipSpec("v", path, "v.mp4", "l", 0, 0, None, "train", "m.csv:2")
    t0 = time.process_time()
    status, _, stats = next(iter(fn.process(spec)))
    if status != DONE:
        raise RuntimeError(f"the row failed: {stats}")
    marks.append(("after the row", _vm("VmRSS")))
    print(
        json.dumps(
            {
                "marks": marks,
                "hwm": _vm("VmHWM"),
                "frames": stats["frames"],
                "clips": stats["clips"],
                "cpu_s": time.process_time() - t0,
                "packages": _third_party(sys.modules),
            }
        )
    )


def worker_report(args) -> str:
    """Peak RSS of a job worker on one row of --worker_seconds, each configuration in a fresh
    process; the last configuration also imports TensorFlow first, for comparison."""
    from pipelines import assets

    tmp = tempfile.mkdtemp(prefix="perfnet-mem-")
    source = str(assets.sample_video_path(args.worker_source))
    path = write_looped_video(source, os.path.join(tmp, "looped.mp4"), args.worker_seconds)
    runs = [(m.split(","), []) for m in args.worker_modalities]
    runs += [(m.split(","), ["tensorflow"]) for m in args.worker_modalities if args.worker_with_tf]
    rows = []
    for modalities, preload in runs:
        r = _child_json(
            "--_worker_child", path, "--_modalities", ",".join(modalities),
            "--_preload", ",".join(preload),
        )  # fmt: skip
        r["modalities"], r["preload"] = modalities, preload
        rows.append(r)
    os.remove(path)
    mib = 1 / 2**20
    phases = [name for name, _ in rows[0]["marks"] if not name.startswith("+ import")]
    lines = [
        f"One job worker process (ProcessVideoFn: setup, then one row) on a "
        f"{args.worker_seconds:g} s clip ({args.worker_source} played forwards and backwards), "
        "default settings, one thread, a fresh process each; RSS in MiB:",
        "",
        "| modalities | imported first | " + " | ".join(phases) + " | peak RSS | frames |",
        "|---|---|" + "---:|" * (len(phases) + 2),
    ]
    for r in rows:
        marks = dict(r["marks"])
        cells = " | ".join(f"{marks[p] * mib:.0f}" for p in phases)
        lines.append(
            f"| {' + '.join(r['modalities'])} | {', '.join(r['preload']) or '-'} | {cells} "
            f"| **{r['hwm'] * mib:.0f}** | {r['frames']} |"
        )
    lines += ["", "Third-party packages a worker imports:"]
    for r in rows:
        label = " + ".join(r["modalities"]) + (" (+ " + ", ".join(r["preload"]) + ")") * bool(
            r["preload"]
        )
        lines.append(f"- {label}: {' '.join(r['packages'])}")
    return "\n".join(lines)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores visible; Python {platform.python_version()}, "
        f"OpenCV {cv2.__version__}, numpy {np.__version__}"
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("clips", nargs="*", help="video files (default: the sample clips)")
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--short_side", type=int, default=256)
    p.add_argument("--jpeg_quality", type=int, default=90)
    p.add_argument("--flow_jpeg_quality", type=int, default=100)
    p.add_argument("--pose_short_side", type=int, default=384)
    p.add_argument(
        "--pose_model", default=None, help="a pose model name or path (default: the default)"
    )
    p.add_argument("--flow_pairs", type=int, default=6, help="pairs timed per clip and preset")
    p.add_argument("--presets", nargs="+", default=None, help="default: every preset")
    p.add_argument("--kinetics", action="store_true", help="add the Kinetics-600-size estimate")
    p.add_argument("--videos", type=int, default=None, help="default: Kinetics-600's clips")
    p.add_argument("--clip_seconds", type=float, default=10.0)
    p.add_argument("--json", help="also write the raw figures here")
    p.add_argument("--memory", action="store_true", help="measure peak RSS instead")
    p.add_argument("--memory_seconds", type=float, nargs="+", default=[4.0, 40.0])
    p.add_argument("--memory_short_side", type=int, default=256)
    p.add_argument("--memory_preset", default=None, help="default: the default preset")
    p.add_argument("--worker", action="store_true", help="measure a job worker's peak RSS")
    p.add_argument("--worker_seconds", type=float, default=10.0)
    p.add_argument(
        "--worker_modalities", nargs="+", default=["rgb,pose,flow", "rgb"], help="one run each"
    )
    p.add_argument("--worker_source", default="sports2d_demo.mp4", help="a sample video")
    p.add_argument(
        "--worker_with_tf",
        action="store_true",
        help="add runs that import TensorFlow first (what a worker held when it built the "
        "records with TensorFlow's protobuf classes)",
    )
    p.add_argument("--preset", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_memory_child", help=argparse.SUPPRESS)
    p.add_argument("--_memory_clip_seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--_worker_child", help=argparse.SUPPRESS)
    p.add_argument("--_modalities", default="", help=argparse.SUPPRESS)
    p.add_argument("--_preload", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    from flow import DEFAULT_FLOW_PRESET, FLOW_PRESETS

    if args._memory_child:
        _memory_child(args._memory_child, args.short_side, args.preset, args._memory_clip_seconds)
        return 0
    if args._worker_child:
        preload = [m for m in args._preload.split(",") if m]
        _worker_child(args._worker_child, args._modalities.split(","), preload)
        return 0
    # Imported here, not above: a child process's first memory mark must not include Beam.
    from pipelines.job.progress import KINETICS_600_CLIPS

    args.videos = args.videos or KINETICS_600_CLIPS
    print(machine())
    if args.worker:
        print(worker_report(args))
        return 0
    if args.memory:
        args.memory_preset = args.memory_preset or DEFAULT_FLOW_PRESET
        print(memory_report(args))
        return 0

    cv2.setNumThreads(1)
    from pipelines import assets
    from pipelines.stages.pose import load_pose_model

    presets = args.presets or sorted(FLOW_PRESETS, key=lambda k: k != "reference")
    name = args.pose_model or assets.DEFAULT_POSE_MODEL.name
    path = str(assets.pose_model_path(name)) if name in assets.POSE_MODELS else name
    model, _ = load_pose_model(path)
    clips = args.clips or sample_clips()
    costs = []
    for path in clips:
        c = measure_clip(path, args, model, presets)
        costs.append(c)
        per = ", ".join(f"{k} {v / c.clip_seconds(args.fps):.3f}" for k, v in c.seconds.items())
        print(f"{c.name}: {c.frames} frames; core-s per clip-s: {per}", flush=True)
    table, per = cost_table(costs, args.fps, presets)
    total_s = sum(c.clip_seconds(args.fps) for c in costs)
    print(
        f"\n{len(costs)} clips, {total_s:.1f} clip-seconds at {args.fps:g} fps, short side "
        f"{args.short_side}, JPEG quality {args.jpeg_quality}, one OpenCV thread; flow timed on "
        f"{args.flow_pairs} pairs per clip and preset.\n"
    )
    print(table)
    if args.kinetics:
        print()
        print(kinetics_table(per, presets, args.videos, args.clip_seconds))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"per_clip": [dataclasses.asdict(c) for c in costs], "overall": per}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
