"""Pose rendering at training time (`pose_live`): agreement, throughput and storage figures.

Three measurements on a preprocessing output directory (the demo records by default):

    # (a) the TF renderer (training.pose_render) against the stored POSE_RENDERED frames
    python benchmarks/pose_render_bench.py agreement --data_dir out/demo
    # (b) clips/s of the input pipeline: pose_live vs reading the stored pose stream
    python benchmarks/pose_render_bench.py throughput --data_dir out/demo
    # (c) the pose-rendered stream's share of the shards' bytes
    python benchmarks/pose_render_bench.py storage --data_dir out/demo

(a) For every frame of every record of the splits: decode the RGB and the POSE_RENDERED JPEGs
(`tf.io.decode_jpeg`, as the pipeline), draw the record's keypoints (person boxes, scores) onto
the decoded RGB frame with `training.pose_render.render_clip` at the stored size, unflipped, in
the style the dataset was made with (`dataset_info.json`: `config.render_style_resolved`), and
compare with the decoded POSE_RENDERED frame: mean absolute difference per pixel and channel
(levels of 255) over the frame and over the skeletons (the pixels the TF renderer drew on), and
the fraction of pixels off by more than 32 / 64 levels in some channel. Baselines: the same
between the decoded RGB and POSE_RENDERED frames away from the skeletons (the two JPEGs of one
frame: coding noise), and, where OpenCV is installed, the offline renderer's own redraw
(`render.render_poses` on the decoded RGB frame) against the stored frame, which separates
JPEG coding and the records' rounding (keypoints and boxes clipped to [0, 1], float32) from the
TF renderer's own differences.

(b) `training.inputs.build_dataset` on the train split, training clips (random window, crop,
flip) of `--num_frames` x `--crop`, batches of `--batch_size`: clips/s over `--batches`
batches after `--warmup`, for the stored `pose` stream, `pose_live` in the dataset's style and
in `--black_style` (no RGB frames decoded), and `rgb` alone.

(c) Sums the lengths of every record's POSE_RENDERED/image/encoded JPEGs (and of the other
streams') over the splits, as a share of the shard files' bytes: what writing `rgb,flow,
keypoints` instead of `rgb,pose,flow` saves.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SPLITS = ("train", "validation")
CHUNK = 32  # frames rendered at once


def _records(data_dir: str, split: str):
    import tensorflow as tf

    for path in sorted(glob.glob(os.path.join(data_dir, split, "*.tfrecord"))):
        for raw in tf.data.TFRecordDataset(path):
            record = tf.train.SequenceExample()
            record.ParseFromString(raw.numpy())
            yield record


def _style(data_dir: str, spec: str):
    from render.style import RenderStyle, style_from_text

    if spec:
        return style_from_text(spec)
    with open(os.path.join(data_dir, "dataset_info.json")) as f:
        info = json.load(f)
    return RenderStyle.from_dict(info["config"]["render_style_resolved"])


def _steps(record, key, kind):
    steps = record.feature_lists.feature_list[key].feature
    return [list(getattr(s, kind).value) for s in steps]


def agreement(args) -> dict:
    import numpy as np
    import tensorflow as tf

    from schemas import media_sequence as ms
    from training.pose_render import render_clip

    try:
        from render import render_poses
    except ImportError:  # no OpenCV: no offline baseline
        render_poses = None
    style = _style(args.data_dir, args.style)
    rgb_key = ms.prefixed(ms.RGB_PREFIX, ms.IMAGE_ENCODED)
    pose_key = ms.prefixed(ms.POSE_RENDERED_PREFIX, ms.IMAGE_ENCODED)
    sums = dict.fromkeys(
        ("frames", "pixels", "drawn", "all", "skel", "gt32", "gt64", "noise", "away")
        + ("cv", "cvs", "tcv", "tcv64"),
        0.0,
    )
    render = tf.function(
        lambda frames, x, y, s, b, hw: render_clip(
            frames, x, y, s, b, style=style, frame_hw=hw, resized_hw=hw, offset=[0, 0],
            crop_hw=(int(frames.shape[1]), int(frames.shape[2])), flip=tf.constant(False),
        ),
    )  # fmt: skip
    for split in args.splits.split(","):
        for record in _records(args.data_dir, split):
            rgb_jpegs = [s[0] for s in _steps(record, rgb_key, "bytes_list")]
            pose_jpegs = [s[0] for s in _steps(record, pose_key, "bytes_list")]
            xs = _steps(record, ms.POSE_POINT_X_KEY, "float_list")
            ys = _steps(record, ms.POSE_POINT_Y_KEY, "float_list")
            cs = _steps(record, ms.POSE_CONFIDENCE_KEY, "float_list")
            sides = [_steps(record, k, "float_list") for k in (
                ms.REGION_BBOX_YMIN_KEY, ms.REGION_BBOX_XMIN_KEY,
                ms.REGION_BBOX_YMAX_KEY, ms.REGION_BBOX_XMAX_KEY,
            )]  # fmt: skip
            people = max(1, max(len(c) // ms.NUM_JOINTS for c in cs))
            for start in range(0, len(rgb_jpegs), CHUNK):
                idx = range(start, min(start + CHUNK, len(rgb_jpegs)))
                rgb = np.stack([tf.io.decode_jpeg(rgb_jpegs[i], channels=3).numpy() for i in idx])
                pose = np.stack([tf.io.decode_jpeg(pose_jpegs[i], channels=3).numpy() for i in idx])
                t = len(idx)
                kp = np.zeros((t, people, ms.NUM_JOINTS, 3), np.float32)  # x, y, score
                boxes = np.zeros((t, people, 4), np.float32)
                for j, i in enumerate(idx):
                    n = len(cs[i]) // ms.NUM_JOINTS
                    for c, values in enumerate((xs[i], ys[i], cs[i])):
                        kp[j, :n, :, c] = np.reshape(values, (n, ms.NUM_JOINTS))
                    boxes[j, :n] = np.stack([s[i] for s in sides], axis=-1)
                live = render(
                    tf.constant(rgb, tf.float32), kp[..., 0], kp[..., 1], kp[..., 2], boxes,
                    tf.constant(rgb.shape[1:3]),
                ).numpy()  # fmt: skip
                stored = pose.astype(np.float32)
                diff = np.abs(live - stored)
                drawn = np.abs(live - rgb).max(-1) > 0.5
                noise = np.abs(rgb.astype(np.float32) - stored)
                sums["frames"] += t
                sums["pixels"] += drawn.size
                sums["drawn"] += drawn.sum()
                sums["all"] += diff.mean(-1).sum()
                sums["skel"] += diff.mean(-1)[drawn].sum()
                sums["gt32"] += (diff.max(-1) > 32).sum()
                sums["gt64"] += (diff.max(-1) > 64).sum()
                sums["noise"] += noise.mean(-1)[~drawn].sum()
                sums["away"] += (~drawn).sum()
                if render_poses is not None:
                    for j, i in enumerate(idx):
                        n = len(cs[i]) // ms.NUM_JOINTS
                        redraw = render_poses(
                            rgb[j], kp[j, :n, :, :2], kp[j, :n, :, 2], boxes[j, :n], style
                        ).astype(np.float32)
                        off = np.abs(redraw - stored[j]).mean(-1)
                        sums["cv"] += off.sum()
                        sums["cvs"] += off[drawn[j]].sum()
                        own = np.abs(redraw - live[j])
                        sums["tcv"] += own.mean(-1)[drawn[j]].sum()
                        sums["tcv64"] += (own.max(-1) > 64).sum()
    s = sums
    out = {
        "style": style.name,
        "frames": int(s["frames"]),
        "skeleton_pixel_share": s["drawn"] / s["pixels"],
        "mean_abs_diff": float(s["all"] / s["pixels"]),
        "mean_abs_diff_skeleton": s["skel"] / max(s["drawn"], 1),
        "share_off_by_more_than_32": s["gt32"] / s["pixels"],
        "share_off_by_more_than_64": s["gt64"] / s["pixels"],
        "baseline_rgb_vs_pose_away_from_skeletons": s["noise"] / max(s["away"], 1),
    }
    if render_poses is not None:
        out["opencv_redraw_mean_abs_diff"] = float(s["cv"] / s["pixels"])
        out["opencv_redraw_mean_abs_diff_skeleton"] = s["cvs"] / max(s["drawn"], 1)
        out["tf_vs_opencv_redraw_skeleton"] = s["tcv"] / max(s["drawn"], 1)
        out["tf_vs_opencv_redraw_share_off_by_more_than_64"] = s["tcv64"] / s["pixels"]
    return out


def throughput(args) -> dict:
    from training import inputs
    from training.config import DataConfig

    crop = tuple(int(v) for v in args.crop.split(","))
    style = _style(args.data_dir, args.style)
    pattern = inputs.split_pattern(DataConfig(data_dir=args.data_dir), "train")
    settings = (
        ("pose (stored)", ["pose"], ""),
        (f"pose_live {style.name}", ["pose_live"], style.to_spec()),
        (f"pose_live {args.black_style}", ["pose_live"], args.black_style),
        ("rgb", ["rgb"], ""),
    )
    iterators = {}
    for label, modalities, spec in settings:
        data = DataConfig(
            data_dir=args.data_dir,
            num_frames=args.num_frames,
            crop_size=crop,
            render_style=spec,
            seed=0,
        )
        ds = inputs.build_dataset(
            pattern, modalities, training=True, batch_size=args.batch_size, data=data
        )
        iterators[label] = (iter(ds), modalities[0])
        for _ in range(args.warmup):
            next(iterators[label][0])
    # Rounds interleave the settings (a shared machine's load hits them alike); per setting the
    # best round's clips/s, and the CPU time of the process per clip (all threads).
    rates: dict[str, list[float]] = {label: [] for label, _, _ in settings}
    cpu: dict[str, list[float]] = {label: [] for label, _, _ in settings}
    for _ in range(args.rounds):
        for label, (it, key) in iterators.items():
            wall, used = time.perf_counter(), time.process_time()
            for _ in range(args.batches):
                next(it)[key].numpy()
            clips = args.batch_size * args.batches
            rates[label].append(clips / (time.perf_counter() - wall))
            cpu[label].append((time.process_time() - used) / clips)
    results = {}
    for label in rates:
        results[label] = {
            "clips_per_second": max(rates[label]),
            "cpu_seconds_per_clip": sorted(cpu[label])[len(cpu[label]) // 2],
        }
        print(
            f"{label:40s} {results[label]['clips_per_second']:7.2f} clips/s "
            f"{results[label]['cpu_seconds_per_clip'] * 1000:7.1f} CPU ms/clip",
            flush=True,
        )
    return {"results": results, "setting": vars(args), "cpus": os.cpu_count()}


def storage(args) -> dict:
    from schemas import media_sequence as ms

    totals: dict[str, int] = {}
    files = 0
    for split in args.splits.split(","):
        for path in glob.glob(os.path.join(args.data_dir, split, "*.tfrecord")):
            files += os.path.getsize(path)
        for record in _records(args.data_dir, split):
            lists = record.feature_lists.feature_list
            for m, p in ms.MODALITY_PREFIX.items():
                key = ms.prefixed(p, ms.IMAGE_ENCODED)
                if key in lists:
                    n = sum(len(v) for s in lists[key].feature for v in s.bytes_list.value)
                    totals[m] = totals.get(m, 0) + n
            keypoints = sum(lists[k].ByteSize() for k in ms.REGION_FLOAT_LIST_KEYS if k in lists)
            totals["keypoints and boxes"] = totals.get("keypoints and boxes", 0) + keypoints
    out = {"shard_bytes": files}
    for name, n in totals.items():
        out[f"{name}_bytes"] = n
        out[f"{name}_share"] = n / files
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("measure", choices=("agreement", "throughput", "storage"))
    p.add_argument("--data_dir", default="out/demo", help="preprocessing output directory")
    p.add_argument("--splits", default=",".join(SPLITS), help="agreement, storage: splits")
    p.add_argument("--style", default="", help="render style (default: the dataset's)")
    p.add_argument("--black_style", default="black_bars_fine_ratio")
    p.add_argument("--num_frames", type=int, default=32)
    p.add_argument("--crop", default="224,224", help="crop height,width")
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--batches", type=int, default=8, help="throughput: batches per round")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3, help="throughput: interleaved rounds")
    args = p.parse_args(argv)
    result = {"agreement": agreement, "throughput": throughput, "storage": storage}[args.measure](
        args
    )
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
