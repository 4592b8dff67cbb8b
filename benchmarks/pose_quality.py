"""Pose quality and cost of pose models side by side: annotated images, real clips, garbage.

    python benchmarks/pose_quality.py --images DIR --clips DIR [--models M,M,...] [--frames 60]

Each model is a pose model name (`movenet_multipose`, `blazepose_full`, `blazepose_heavy`, or a
path), optionally `@N` for MoveNet's input size (longer side, a multiple of 32) and `:S` for
its person score threshold (BlazePose: detection confidence), e.g. `movenet_multipose@384:0.2`.
Every model sees what the job gives the estimator: the frame resized to a shorter side of
`--pose_short_side` (384), never upscaled. The process is pinned to one core and MoveNet runs
one interpreter thread; models are interleaved image by image (frame by frame) so that all see
the same load on a shared machine.

Printed:

1. Annotated images (`--images`: folders holding a COCO-format keypoint JSON and their images;
   joint sets other than COCO-17 are scored on the joints that correspond): per set and pooled,
   COCO OKS AP, AP50, recall at OKS 0.5, the share of annotated people found (OKS > 0.3) and
   PCK@0.2 on those (`pipelines/tools/pose_eval.py`); median ms per image in `detect`.
2. Clips (`--clips` folders or video files, plus the cached sample clips unless
   `--no_samples`): the first `--frames` frames of each, at their own rate; per clip the share of
   frames with a person, persons per frame, the track ids the job's tracker gives and their
   ratio to the most persons seen in one frame, median ms per frame; then pooled over all clips
   (mean ms per frame).
3. Garbage frames (uniform, noise, blocky decoding glitch, gradient, stripes; 640x360):
   persons reported on each (must be 0).

Not a test: run by hand, numbers depend on the machine. Needs pycocotools (installed with the
test extra).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipelines import assets  # noqa: E402
from pipelines.stages import video
from pipelines.stages.pose import create_estimator, load_pose_model  # noqa: E402
from pipelines.stages.tracking import IouTracker, suppress_duplicates  # noqa: E402
from pipelines.tools import pose_eval


class Candidate:
    """A model as named on the command line, and a factory for its estimators."""

    def __init__(self, spec: str):
        self.label = spec
        name, _, score = spec.partition(":")
        name, _, size = name.partition("@")
        path = str(assets.pose_model_path(name)) if name in assets.POSE_MODELS else name
        self.model, _ = load_pose_model(path)
        self.input_size = int(size) if size else None
        self.min_score = float(score) if score else None

    def estimator(self):
        return create_estimator(
            self.model, num_poses=10, input_size=self.input_size, min_person_score=self.min_score
        )


def _rgb(path: str) -> np.ndarray:
    import cv2

    bgr = cv2.imread(path)
    if bgr is None:
        raise ValueError(f"cannot read image {path!r}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _pose_frame(frame: np.ndarray, short_side: int) -> np.ndarray:
    side = min(short_side, min(frame.shape[:2])) if short_side else 0
    return video.resize_short_side(frame, side)


def bench_images(cands: list[Candidate], sets, short_side: int) -> None:
    dets = {c.label: [[] for _ in sets] for c in cands}
    times = {c.label: [] for c in cands}
    for k, kset in enumerate(sets):
        for im in kset.images:
            frame = _pose_frame(_rgb(im.path), short_side)
            for c in cands:
                est = c.estimator()  # one "video" per image: BlazePose tracks within a video
                t0 = time.perf_counter()
                poses = est.detect(frame, 0)
                times[c.label].append(time.perf_counter() - t0)
                est.close()
                for p in range(poses.num_people):
                    xy = poses.keypoints[p] * np.float32([im.width, im.height])
                    dets[c.label][k].append(
                        pose_eval.detection(im.id, xy, poses.scores[p], poses.box_scores[p])
                    )
    n = sum(s.num_people for s in sets)
    print(f"\n## Annotated images: {sum(len(s.images) for s in sets)} images, {n} people\n")
    print("| model | set | people | AP | AP50 | recall@0.5 | found | PCK@0.2 | ms/image |")
    print("|---|---|---|---|---|---|---|---|---|")
    for c in cands:
        ms = 1000 * float(np.median(times[c.label]))
        pooled = pose_eval.merge(sets, dets[c.label])
        rows = [(s, d) for s, d in zip(sets, dets[c.label], strict=True)] + [pooled]
        for kset, ds in rows:
            r = pose_eval.score(kset, ds)
            cost = f"{ms:.1f}" if kset.name == "pooled" else ""
            print(
                f"| {c.label} | {kset.name} | {r['n']} | {r['AP']:.3f} | {r['AP50']:.3f} | "
                f"{r['recall50']:.3f} | {r['found']:.2f} | {r['pck']:.3f} | {cost} |"
            )


def _clip_frames(path: str, count: int, short_side: int) -> tuple[list[np.ndarray], float]:
    import cv2

    cap = cv2.VideoCapture(path)
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    frames = []
    while len(frames) < count:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(_pose_frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), short_side))
    cap.release()
    if not frames:
        raise ValueError(f"no frames decoded from {path!r}")
    return frames, fps


def bench_clips(cands: list[Candidate], clips: list[str], count: int, short_side: int) -> None:
    print(f"\n## Clips: the first {count} frames of each\n")
    print(
        "| model | clip | frames | with a person | persons/frame | ids | ids per person "
        "| ms/frame |"
    )
    print("|---|---|---|---|---|---|---|---|")
    pooled = {c.label: [0, 0, 0, 0, 0, 0.0] for c in cands}  # frames, found, persons, ids, runs, s
    for path in clips:
        frames, fps = _clip_frames(path, count, short_side)
        ests = {c.label: c.estimator() for c in cands}
        found = {c.label: [] for c in cands}
        times = {c.label: [] for c in cands}
        for i, frame in enumerate(frames):
            ts = round(i * 1e6 / fps)
            for c in cands:
                t0 = time.perf_counter()
                poses = ests[c.label].detect(frame, ts)
                times[c.label].append(time.perf_counter() - t0)
                found[c.label].append(poses)
        for c in cands:
            ests[c.label].close()
            per_frame = [p.num_people for p in found[c.label]]
            ids, runs = _track(found[c.label], fps)
            acc = pooled[c.label]
            for k, v in enumerate(
                (len(frames), sum(k > 0 for k in per_frame), sum(per_frame), ids, runs,
                 sum(times[c.label]))
            ):  # fmt: skip
                acc[k] += v
            print(
                f"| {c.label} | {os.path.basename(path)} | {len(frames)} | "
                f"{np.mean([k > 0 for k in per_frame]):.0%} | {np.mean(per_frame):.2f} | {ids} | "
                f"{ids / max(runs, 1):.2f} | {1000 * float(np.median(times[c.label])):.1f} |"
            )
    for c in cands:
        n, hit, persons, ids, runs, secs = pooled[c.label]
        print(
            f"| {c.label} | all clips | {n} | {hit / n:.0%} | {persons / n:.2f} | {ids} | "
            f"{ids / max(runs, 1):.2f} | {1000 * secs / n:.1f} (mean) |"
        )


def _track(frames, fps: float) -> tuple[int, int]:
    """(track ids the job's tracker gives, most persons seen in one frame)."""
    tracker = IouTracker(fps=fps)
    ids: set[int] = set()
    most = 0
    for poses in frames:
        keep = suppress_duplicates(poses.boxes, poses.box_scores)
        ids.update(int(t) for t in tracker.update(poses.boxes[keep]))
        most = max(most, len(keep))
    return len(ids), most


def bench_garbage(cands: list[Candidate]) -> None:
    frames = pose_eval.garbage_frames()
    print("\n## Garbage frames: persons reported\n")
    print("| model | " + " | ".join(frames) + " |")
    print("|---|" + "---|" * len(frames))
    for c in cands:
        counts = []
        for frame in frames.values():
            est = c.estimator()
            counts.append(str(est.detect(frame, 0).num_people))
            est.close()
        print(f"| {c.label} | " + " | ".join(counts) + " |")


def _clip_paths(items: list[str], samples: bool) -> list[str]:
    paths = []
    for item in items:
        if os.path.isdir(item):
            paths += sorted(glob.glob(os.path.join(item, "*.mp4")))
        else:
            paths.append(item)
    if samples:
        paths += [str(assets.sample_video_path(v.name)) for v in assets.SAMPLE_VIDEOS]
    return paths


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", action="append", default=[], help="folder of annotated sets")
    p.add_argument("--clips", action="append", default=[], help="folder of clips, or a clip")
    p.add_argument("--no_samples", action="store_true", help="leave out the sample clips")
    p.add_argument(
        "--models",
        default="movenet_multipose@256,movenet_multipose@320,movenet_multipose@384,"
        "movenet_multipose@448,blazepose_full,blazepose_heavy",
    )
    p.add_argument("--frames", type=int, default=60, help="frames per clip")
    p.add_argument("--pose_short_side", type=int, default=384)
    p.add_argument("--core", type=int, default=0, help="the one core to run on")
    args = p.parse_args(argv)
    os.sched_setaffinity(0, {args.core})
    cands = [Candidate(s) for s in args.models.split(",") if s]
    sets = []
    for folder in args.images:
        for js in sorted(glob.glob(os.path.join(folder, "*", "*.json"))):
            sets.append(pose_eval.load_coco_keypoints(js))
    if sets:
        bench_images(cands, sets, args.pose_short_side)
    clips = _clip_paths(args.clips, not args.no_samples)
    if clips:
        bench_clips(cands, clips, args.frames, args.pose_short_side)
    bench_garbage(cands)
    return 0


if __name__ == "__main__":
    sys.exit(main())
