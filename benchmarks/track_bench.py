"""Person tracking: the tracker before (`baseline`) and now
(`pipelines.stages.tracking.IouTracker`).

    python benchmarks/track_bench.py [--clips DIR_OR_MP4 ...] [--no_samples] [--scenes 200]

1. Real clips: the cached sample clips (`pipelines.assets.SAMPLE_VIDEOS`, unless --no_samples)
   and every *.mp4 of each --clips folder (or the file itself). Every frame of a clip, at its
   own rate (not resampled), resized to a shorter side of --short_side (384) with
   `pipelines.stages.video.resize_short_side`, goes through the default pose estimator (MoveNet
   MultiPose); the detections are kept in memory (or in --cache, a pickle, for reruns), then
   each tracker runs over them as the job does: `suppress_duplicates`, then `update` with the
   kept boxes. The new tracker is told the clip's frame rate (`IouTracker(fps=...)`; the job's
   clips are 25 fps); the baseline runs as in the job (10 frames of memory: 0.4 s at 25 fps,
   0.17 s on the 60 fps clips) and, to be fair to it, with 0.4 s of memory at the clip's rate.

   Printed per clip: frames, fps, people known to be there (as the project describes the
   clips; notes under the table say what else MoveNet finds), "visible": the most people the
   estimator reports in any one frame after duplicate
   suppression (the count of distinct people the clip is taken to show: MoveNet's misses and
   false positives make it only an estimate), and per tracker the ids used and ids per visible
   person (ids / visible; 1.0 when every visible person kept one id throughout). Pooled: sum of
   ids / sum of visible. Speed: median and 99th percentile microseconds per `update` call.

2. Made scenes (--scenes of them, seeded): 2-4 people walking at 25 fps, crossing each other,
   turning, leaving and coming back, with MoveNet-like faults: box edges jitter, a box now and
   then shrinks to the upper body, 10% of detections missed, the one behind mostly missed while
   two overlap, detector order shuffled. Identities are known, so per tracker variant (the
   baseline, the new tracker, and the new one with one idea taken away at a time): ids per
   person, identity switches (a person's id differs from the one they had when last seen),
   merges (an id given to more than one person), and IDF1 (the share of detections that carry
   their person's id, under the one-to-one mapping of people to ids that makes it largest).

Not a test: run by hand; the speeds depend on the machine.
"""

from __future__ import annotations

import argparse
import glob
import os
import pickle
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipelines import assets  # noqa: E402
from pipelines.stages import video
from pipelines.stages.tracking import (  # noqa: E402
    IouTracker,
    box_iou,
    max_weight_assignment,
    suppress_duplicates,
)

# People in the sample clips as the project describes them (None: not counted), and what a look
# at MoveNet's detections adds.
KNOWN_PEOPLE = {
    "pose2sim_single_cam01.mp4": (2, "the walker, and a person standing at the left edge"),
    "pose2sim_single_cam02.mp4": (1, "MoveNet also finds a person standing in the background"),
    "pose2sim_single_cam03.mp4": (1, ""),
    "pose2sim_single_cam04.mp4": (1, ""),
    "pose2sim_multi_cam01.mp4": (2, "MoveNet also finds a person standing at the left edge"),
    "pose2sim_multi_cam02.mp4": (2, "MoveNet also finds a person in the background, once"),
    "pose2sim_multi_cam03.mp4": (2, ""),
    "pose2sim_multi_cam04.mp4": (2, ""),
    "sports2d_demo.mp4": (None, "an athlete (missed by MoveNet for ~2 s in a flip), a passer-by"),
}


class BaselineTracker:
    """The job's tracker before this one (`pipelines/stages/tracking.py` as of commit a0350b1),
    copied:
    greedy matching on IoU with each track's last box, a near-centre fallback, 10-frame memory.
    """

    def __init__(self, min_iou: float = 0.1, max_gap: int = 10, max_center_shift: float = 0.5):
        self._min_iou = min_iou
        self._max_gap = max_gap
        self._max_shift = max_center_shift
        self._boxes = np.zeros((0, 4), np.float32)
        self._ids = np.zeros((0,), np.int64)
        self._last_seen = np.zeros((0,), np.int64)
        self._frame = 0
        self._next_id = 0

    def _similarity(self, boxes: np.ndarray) -> np.ndarray:
        iou = box_iou(boxes, self._boxes)
        centers = (boxes[:, None, :2] + boxes[:, None, 2:]) / 2
        track_centers = (self._boxes[None, :, :2] + self._boxes[None, :, 2:]) / 2
        shift = np.linalg.norm(centers - track_centers, axis=2)
        diag = np.linalg.norm(self._boxes[:, 2:] - self._boxes[:, :2], axis=1)[None, :]
        near = shift <= self._max_shift * diag
        weak = 0.999 * self._min_iou * (1.0 - shift / np.maximum(self._max_shift * diag, 1e-9))
        return np.where(iou >= self._min_iou, iou, np.where(near, weak, -1.0))

    def update(self, boxes: np.ndarray) -> np.ndarray:
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        ids = np.full(len(boxes), -1, np.int64)
        if len(boxes) and len(self._ids):
            sim = self._similarity(boxes)
            order = np.dstack(
                np.unravel_index(np.argsort(-sim, axis=None, kind="stable"), sim.shape)
            )[0]
            used_box, used_track = set(), set()
            for i, t in order:
                if sim[i, t] < 0:
                    break
                if i in used_box or t in used_track:
                    continue
                ids[i] = self._ids[t]
                used_box.add(i)
                used_track.add(t)
                self._boxes[t] = boxes[i]
                self._last_seen[t] = self._frame
        for i in np.flatnonzero(ids < 0):
            ids[i] = self._next_id
            self._next_id += 1
            self._boxes = np.vstack([self._boxes, boxes[i : i + 1]])
            self._ids = np.append(self._ids, ids[i])
            self._last_seen = np.append(self._last_seen, self._frame)
        live = self._frame - self._last_seen < self._max_gap
        self._boxes, self._ids, self._last_seen = (
            self._boxes[live],
            self._ids[live],
            self._last_seen[live],
        )
        self._frame += 1
        return ids


def greedy_assignment(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs by decreasing weight, each row and column once; weights <= 0 never paired."""
    used_r, used_c, pairs = set(), set(), []
    flat = np.argsort(-weights, axis=None, kind="stable")
    for r, c in zip(*np.unravel_index(flat, weights.shape)):
        if weights[r, c] <= 0:
            break
        if r not in used_r and c not in used_c:
            used_r.add(int(r))
            used_c.add(int(c))
            pairs.append((int(r), int(c)))
    pairs.sort()
    rows = np.asarray([p[0] for p in pairs], np.int64)
    return rows, np.asarray([p[1] for p in pairs], np.int64)


class GreedyTracker(IouTracker):
    """The new tracker with greedy matching instead of the optimal assignment (an ablation)."""

    _assign = staticmethod(greedy_assignment)


class AnySizeTracker(IouTracker):
    """The new tracker letting every box move the velocity, however its size jumped."""

    _size_change = float("inf")


# name -> (factory(fps), whether update gets keypoints)
def trackers() -> dict:
    return {
        "baseline": (lambda fps: BaselineTracker(), False),
        "baseline 0.4 s": (lambda fps: BaselineTracker(max_gap=max(1, round(0.4 * fps))), False),
        "new": (lambda fps: IouTracker(fps=fps), False),
        "new + keypoints": (lambda fps: IouTracker(fps=fps), True),
    }


def ablations() -> dict:
    return {
        "baseline": (lambda fps: BaselineTracker(), False),
        "new": (lambda fps: IouTracker(fps=fps), False),
        "new, no prediction": (lambda fps: IouTracker(fps=fps, max_coast_s=0), False),
        "new, greedy matching": (lambda fps: GreedyTracker(fps=fps), False),
        "new, memory 0.4 s": (lambda fps: IouTracker(fps=fps, max_lost_s=0.4), False),
        "new, gate not widening": (lambda fps: IouTracker(fps=fps, gate_growth=0), False),
        "new, velocity from every box": (lambda fps: AnySizeTracker(fps=fps), False),
    }


# ---------------------------------------------------------------------------------------------
# Real clips


def detect_clip(path: str, model: bytes, short_side: int):
    """(fps, [FramePoses per frame]) for every frame of the clip."""
    import cv2

    from pipelines.stages.pose import create_estimator

    cap = cv2.VideoCapture(path)
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    est = create_estimator(model)
    found = []
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            rgb = video.resize_short_side(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), short_side)
            found.append(est.detect(rgb, round(len(found) * 1e6 / fps)))
    finally:
        cap.release()
        est.close()
    if not found:
        raise ValueError(f"no frames decoded from {path!r}")
    return fps, found


def track_clip(make, with_keypoints: bool, fps: float, frames) -> tuple[int, int, list[float]]:
    """(ids used, most persons in one frame, seconds per update call)."""
    tracker = make(fps)
    ids: set[int] = set()
    most = 0
    times = []
    for poses in frames:
        keep = suppress_duplicates(poses.boxes, poses.box_scores)
        args = (poses.boxes[keep],)
        if with_keypoints:
            args += (poses.keypoints[keep], poses.scores[keep])
        t0 = time.perf_counter()
        out = tracker.update(*args)
        times.append(time.perf_counter() - t0)
        ids.update(out.tolist())
        most = max(most, len(keep))
    return len(ids), most, times


def clip_paths(items: list[str], samples: bool) -> list[str]:
    paths = [str(assets.sample_video_path(v.name)) for v in assets.SAMPLE_VIDEOS] if samples else []
    for item in items:
        if os.path.isdir(item):
            paths += sorted(glob.glob(os.path.join(item, "*.mp4")))
        elif os.path.exists(item):
            paths.append(item)
        else:
            print(f"(skipped {item!r}: no such file or folder)")
    return paths


def bench_clips(paths: list[str], short_side: int, cache: str | None) -> None:
    from pipelines.stages.pose import load_pose_model

    stored = {}
    if cache and os.path.exists(cache):
        with open(cache, "rb") as f:
            stored = pickle.load(f)
    model = None
    detections = {}
    for path in paths:
        key = (os.path.abspath(path), short_side)
        if key not in stored:
            if model is None:
                model, _ = load_pose_model(str(assets.default_pose_model_path()))
            t0 = time.perf_counter()
            stored[key] = detect_clip(path, model, short_side)
            print(f"(detected {os.path.basename(path)}: {time.perf_counter() - t0:.1f} s)")
        detections[path] = stored[key]
    if cache:
        with open(cache, "wb") as f:
            pickle.dump(stored, f)

    names = list(trackers())
    print(f"\n## Real clips: MoveNet MultiPose, every frame, shorter side {short_side}\n")
    head = "| clip | frames | fps | known | visible | " + " | ".join(
        f"{n} ids | {n} ids/visible" for n in names
    )
    print(head + " |")
    print("|---" * (5 + 2 * len(names)) + "|")
    total_ids = dict.fromkeys(names, 0)
    total_visible = 0
    times = {n: [] for n in names}
    notes: list[str] = []
    for path in paths:
        fps, frames = detections[path]
        name = os.path.basename(path)
        cells, visible = [], 0
        for n, (make, kp) in trackers().items():
            ids, visible, t = track_clip(make, kp, fps, frames)
            times[n] += t
            total_ids[n] += ids
            ratio = f"{ids / visible:.2f}" if visible else "-"
            cells += [str(ids), ratio]
        total_visible += visible
        known, note = KNOWN_PEOPLE.get(name, (None, ""))
        if note:
            notes.append(f"  {name}: {note}")
        print(
            f"| {name} | {len(frames)} | {fps:g} | {'-' if known is None else known} | "
            f"{visible} | " + " | ".join(cells) + " |"
        )
    pooled = [f"{total_ids[n]} | {total_ids[n] / max(total_visible, 1):.2f}" for n in names]
    print(f"| pooled | | | | {total_visible} | " + " | ".join(pooled) + " |")
    if notes:
        print("\nknown: people in the clip as described; visible: the most persons in one frame")
        print("after duplicate suppression (the denominator of ids/visible).")
        print("\n".join(notes))
    print("\nupdate() per frame, microseconds (median / 99th percentile, all real-clip frames):")
    for n in names:
        us = 1e6 * np.asarray(times[n])
        print(f"  {n}: {np.median(us):.0f} / {np.percentile(us, 99):.0f}")


# ---------------------------------------------------------------------------------------------
# Made scenes


def made_scene(
    rng: np.random.Generator,
    fps: float = 25.0,
    seconds: float = 8.0,
    jitter: float = 0.003,
    partial: float = 0.02,
    miss: float = 0.1,
):
    """Frames of [(person index, box)], detector order, with MoveNet-like faults; see the
    module docstring.

    jitter: sd of each box edge, frame heights, for a person 0.4 frame heights tall (scaled with
    the height). 0.003 gives a frame-to-frame second difference of the box centre of about
    0.007 box diagonals (median), as MoveNet's boxes on the sample clips (0.002-0.008).
    partial: share of boxes cut to the upper body; miss: share of detections missed.
    """
    n = int(rng.integers(2, 5))
    frames_n = int(seconds * fps)
    people = []
    for _ in range(n):
        h = rng.uniform(0.3, 0.5)
        people.append(
            {
                "h": h,
                "w": h * rng.uniform(0.25, 0.4),
                "y": rng.uniform(0.4, 0.6),
                "x": rng.uniform(0.05, 0.95),
                "v": rng.choice([-1, 1]) * rng.uniform(0.05, 0.3) / fps,  # widths per frame
                "start": int(rng.integers(0, int(2 * fps))),
            }
        )
    frames = []
    for f in range(frames_n):
        truth = []
        for k, p in enumerate(people):
            if f < p["start"]:
                continue
            if rng.random() < 0.15 / fps:  # turns around now and then
                p["v"] = -p["v"]
            p["x"] += p["v"]
            if p["x"] < -0.3 or p["x"] > 1.3:  # far outside: turns and comes back
                p["v"] = -p["v"]
            box = np.array(
                [p["y"] - p["h"] / 2, p["x"] - p["w"] / 2, p["y"] + p["h"] / 2, p["x"] + p["w"] / 2]
            )
            inside = min(box[3], 1) - max(box[1], 0)
            if inside >= 0.3 * p["w"]:
                truth.append((k, box))
        seen = []
        for k, box in truth:
            # Behind someone: overlapped (IoU > 0.3) by a taller (nearer) person.
            hidden = any(
                people[j]["h"] > people[k]["h"] and box_iou(box[None], b[None])[0, 0] > 0.3
                for j, b in truth
            )
            if (hidden and rng.random() < 0.7) or rng.random() < miss:
                continue
            b = box + rng.normal(0, jitter * people[k]["h"] / 0.4, 4)
            if rng.random() < partial:
                b[2] = b[0] + 0.45 * (b[2] - b[0])  # upper body only
            seen.append((k, np.clip(b, 0, 1)))
        order = rng.permutation(len(seen))
        frames.append([seen[i] for i in order])
    return frames


def score_scene(tracker, frames) -> np.ndarray:
    """[people seen, ids used, identity switches, merges, detections, detections with the id of
    their person] of one tracker over one scene.

    A person's id is the one that the best one-to-one mapping of people to ids gives them (the
    mapping that labels the most detections right, as in the IDF1 of multi-object tracking).
    """
    last: dict[int, int] = {}
    owners: dict[int, set[int]] = {}
    pairs: dict[tuple[int, int], int] = {}
    switches = detections = 0
    for seen in frames:
        boxes = np.array([b for _, b in seen], np.float32).reshape(-1, 4)
        keep = suppress_duplicates(boxes, np.ones(len(boxes), np.float32))
        ids = tracker.update(boxes[keep])
        for i, tid in zip(keep.tolist(), ids.tolist()):
            k = seen[i][0]
            switches += k in last and last[k] != tid
            last[k] = tid
            owners.setdefault(tid, set()).add(k)
            pairs[k, tid] = pairs.get((k, tid), 0) + 1
            detections += 1
    merges = sum(len(v) - 1 for v in owners.values())
    people, ids = sorted(last), sorted(owners)
    counts = np.zeros((len(people), len(ids)))
    for (k, tid), c in pairs.items():
        counts[people.index(k), ids.index(tid)] = c
    rows, cols = max_weight_assignment(counts)
    right = int(counts[rows, cols].sum())
    return np.array([len(people), len(ids), switches, merges, detections, right], np.int64)


def bench_scenes(count: int, seed: int) -> None:
    fps = 25.0
    scenes = [made_scene(np.random.default_rng([seed, s]), fps) for s in range(count)]
    print(f"\n## Made scenes: {count}, 8 s at {fps:g} fps each (identities known)\n")
    print("| tracker | people | ids | ids/person | switches | merges | IDF1 | us/update |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (make, _) in ablations().items():
        tot = np.zeros(6, np.int64)
        t0 = time.perf_counter()
        for frames in scenes:
            tot += score_scene(make(fps), frames)
        us = 1e6 * (time.perf_counter() - t0) / sum(len(f) for f in scenes)
        print(
            f"| {name} | {tot[0]} | {tot[1]} | {tot[1] / tot[0]:.2f} | {tot[2]} | {tot[3]} | "
            f"{tot[5] / tot[4]:.3f} | {us:.0f} |"
        )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clips", nargs="*", default=[], help="folders of *.mp4 clips, or clips")
    p.add_argument("--no_samples", action="store_true", help="leave out the cached sample clips")
    p.add_argument("--short_side", type=int, default=384, help="pose frames' shorter side")
    p.add_argument("--cache", help="pickle to keep detections in between runs")
    p.add_argument("--scenes", type=int, default=200, help="made scenes; 0: none")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    paths = clip_paths(args.clips, not args.no_samples)
    if paths:
        bench_clips(paths, args.short_side, args.cache)
    if args.scenes:
        bench_scenes(args.scenes, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
