"""Pose estimator speed and agreement versus the resolution of the frames it sees.

    python benchmarks/pose_bench.py [--sizes 192,256,512,0] [--frames 60] [--cores 1] [VIDEO ...]

For each video (default: the cached sample clips) the frames are decoded at full resolution,
resampled to 25 fps, and the pose estimator (the default model unless --pose_model, e.g.
blazepose_full) runs on the same frames resized to each shorter side (0 = full resolution).
Printed per size:

- frames/s per core (the process is pinned to --cores cores; MediaPipe's threads share them);
- persons per frame;
- agreement with the full-resolution run: people matched by box IoU >= 0.5, then over keypoints
  that both runs score >= 0.5, the mean distance in units of the person's box diagonal and the
  PCK@0.05 (share of keypoints within 5% of the diagonal); `found` is the share of full-res people
  matched.

Not a test: run by hand, numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipelines import assets  # noqa: E402
from pipelines.stages import video
from pipelines.stages.pose import create_estimator, load_pose_model  # noqa: E402
from pipelines.stages.tracking import box_iou  # noqa: E402

SCORE = 0.5


def run_sizes(model: bytes, frames: list[np.ndarray], sizes: list[int]) -> dict:
    """{size: (poses per frame, seconds in detect)}; sizes interleaved frame by frame.

    One estimator per size, all fed the same frame in turn, so that every size sees the same
    machine load (this machine is shared); resizing is excluded from the time.
    """
    estimators = {s: create_estimator(model, num_poses=10) for s in sizes}
    out = {s: ([], 0.0) for s in sizes}
    for i, frame in enumerate(frames):
        for s in sizes:
            img = video.resize_short_side(frame, s) if s else frame
            t0 = time.perf_counter()
            poses = estimators[s].detect(img, i * 40_000)
            spent = time.perf_counter() - t0
            out[s] = (out[s][0] + [poses], out[s][1] + spent)
    for est in estimators.values():
        est.close()
    return out


def agreement(test: list, ref: list, aspect: float) -> tuple[float, float, float]:
    """(mean distance / box diagonal, PCK@0.05, share of reference people found)."""
    dists, total, found = [], 0, 0
    for a, b in zip(test, ref):
        total += b.num_people
        if not a.num_people or not b.num_people:
            continue
        iou = box_iou(a.boxes, b.boxes)
        used = set()
        for j in range(b.num_people):
            i = int(np.argmax(iou[:, j]))
            if iou[i, j] < 0.5 or i in used:
                continue
            used.add(i)
            found += 1
            ymin, xmin, ymax, xmax = b.boxes[j]
            diag = np.hypot((xmax - xmin) * aspect, ymax - ymin)
            ok = (a.scores[i] >= SCORE) & (b.scores[j] >= SCORE)
            d = a.keypoints[i] - b.keypoints[j]
            d[:, 0] *= aspect  # x normalized by width: put both axes in units of the height
            dists += list(np.hypot(d[ok, 0], d[ok, 1]) / max(diag, 1e-6))
    dists = np.asarray(dists)
    if not dists.size:
        return float("nan"), float("nan"), 0.0
    return float(dists.mean()), float((dists < 0.05).mean()), found / max(total, 1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("videos", nargs="*")
    p.add_argument("--sizes", default="160,192,256,320,384,512,0")
    p.add_argument("--frames", type=int, default=60, help="frames per video (25 fps)")
    p.add_argument("--cores", type=int, default=1)
    p.add_argument(
        "--pose_model", default=None, help="a pose model name or path (default: the default)"
    )
    args = p.parse_args()
    os.sched_setaffinity(0, set(range(args.cores)))
    name = args.pose_model or assets.DEFAULT_POSE_MODEL.name
    path = str(assets.pose_model_path(name)) if name in assets.POSE_MODELS else name
    model, _ = load_pose_model(path)
    videos = args.videos or [
        str(assets.sample_video_path(n))
        for n in ("sports2d_demo.mp4", "pose2sim_multi_cam01.mp4", "pose2sim_single_cam03.mp4")
    ]
    sizes = [int(s) for s in args.sizes.split(",")]
    totals = {s: [0, 0.0, 0, [], [], []] for s in sizes}  # frames, seconds, persons, d, pck, found
    print(f"pinned to {args.cores} core(s); {args.frames} frames per video at 25 fps")
    for path in videos:
        frames = []
        for f in video.iter_frames(path, 0, None, 25.0, short_side=0):
            frames.append(f.rgb)
            if len(frames) == args.frames:
                break
        h, w = frames[0].shape[:2]
        runs = run_sizes(model, frames, sizes if 0 in sizes else sizes + [0])
        ref = runs[0][0]
        print(f"\n{os.path.basename(path)}: {w}x{h}, {len(frames)} frames")
        print(f"{'short side':>10} {'frames/s':>9} {'persons':>8} {'dist/diag':>10} "
              f"{'PCK@0.05':>9} {'found':>6}")  # fmt: skip
        for s in sizes:
            poses, spent = runs[s]
            d, pck, found = agreement(poses, ref, w / h)
            persons = sum(x.num_people for x in poses)
            t = totals[s]
            t[0] += len(frames)
            t[1] += spent
            t[2] += persons
            t[3].append(d)
            t[4].append(pck)
            t[5].append(found)
            label = s or "full"
            rate = len(frames) / spent / args.cores
            print(f"{label:>10} {rate:>9.1f} {persons / len(frames):>8.2f} {d:>10.4f} "
                  f"{pck:>9.3f} {found:>6.2f}")  # fmt: skip
    print("\nall videos")
    print(f"{'short side':>10} {'frames/s':>9} {'dist/diag':>10} {'PCK@0.05':>9} {'found':>6}")
    for s in sizes:
        n, spent, _, d, pck, found = totals[s]
        print(f"{s or 'full':>10} {n / spent / args.cores:>9.1f} {np.nanmean(d):>10.4f} "
              f"{np.nanmean(pck):>9.3f} {np.mean(found):>6.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
