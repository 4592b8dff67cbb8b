"""Throughput of the training input pipeline alone (no model): clips per second.

Reads the shards of a preprocessing output directory (local or gs://) through
`training.inputs.build_dataset` exactly as a training job does (interleaved reads, parallel
parse/decode/crop, prefetch) and times `--batches` batches after `--warmup` batches.

    python benchmarks/input_pipeline.py --data_dir /tmp/train_demo
    python benchmarks/input_pipeline.py --data_dir gs://bucket/k600 --modalities rgb \\
        --batch_size 32 --batches 50
    python benchmarks/input_pipeline.py --data_dir /tmp/train_demo \\
        --modalities rgb,pose,flow,heatmap --each

`heatmap` is the skeleton heatmap volume built from the keypoints (`training.heatmaps`, at
1/`--heatmap_stride` of the crop); `--each` times every modality alone, one after the other, on
the same records. Prints one line per setting: clips/s, frames/s (per modality) and output
MB/s (float32 tensors).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def measure(pattern, modalities, data, batch_size, batches, warmup, training) -> dict:
    from training import inputs

    ds = inputs.build_dataset(
        pattern, modalities, training=training, batch_size=batch_size, data=data
    )
    if not training:
        ds = ds.repeat()
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    nbytes = 0
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(it)
        nbytes += sum(int(batch[m].numpy().nbytes) for m in modalities)
    seconds = time.perf_counter() - start
    clips = batch_size * batches
    frames = data.num_frames if training else data.eval_num_frames
    return {
        "clips_per_second": clips / seconds,
        "frames_per_second": clips * frames * len(modalities) / seconds,
        "mb_per_second": nbytes / seconds / 1e6,
        "seconds": seconds,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_dir", help="preprocessing output directory")
    p.add_argument("--pattern", help="shard glob(s), instead of --data_dir/<split>/*.tfrecord")
    p.add_argument("--split", default="train", help="split folder under --data_dir")
    p.add_argument(
        "--modalities", default="rgb,pose,flow", help="comma-separated: rgb, pose, flow, heatmap"
    )
    p.add_argument("--each", action="store_true", help="time each modality alone, in turn")
    p.add_argument("--heatmap_stride", type=int, default=4, help="crop pixels per heatmap cell")
    p.add_argument("--heatmap_sigma", type=float, default=0.6, help="in heatmap cells")
    p.add_argument("--heatmap_limbs", action="store_true", help="limb instead of joint heatmaps")
    p.add_argument(
        "--heatmap_score_threshold", type=float, default=0.3, help="joints scoring less: left out"
    )
    p.add_argument("--batch_size", type=int, default=8, help="clips per batch")
    p.add_argument("--num_frames", type=int, default=64, help="frames per clip")
    p.add_argument("--crop", default="224,224", help="crop height,width in pixels")
    p.add_argument("--batches", type=int, default=20, help="batches timed")
    p.add_argument("--warmup", type=int, default=3, help="batches before timing")
    p.add_argument("--eval", action="store_true", help="time the central-crop eval pipeline")
    args = p.parse_args(argv)

    from training.config import DataConfig

    if args.pattern:
        pattern = args.pattern
    elif args.data_dir:
        pattern = os.path.join(args.data_dir, args.split, "*.tfrecord")
    else:
        p.error("give --data_dir or --pattern")
    crop = tuple(int(v) for v in args.crop.split(","))
    modalities = [m for m in args.modalities.split(",") if m]
    data = DataConfig(
        num_frames=args.num_frames,
        crop_size=crop,
        eval_num_frames=args.num_frames,
        eval_crop_size=crop,
        shuffle_buffer=16,
        heatmap_stride=args.heatmap_stride,
        heatmap_sigma=args.heatmap_sigma,
        heatmap_limbs=args.heatmap_limbs,
        heatmap_score_threshold=args.heatmap_score_threshold,
    )
    data.validate()
    for group in [[m] for m in modalities] if args.each else [modalities]:
        result = measure(
            pattern, group, data, args.batch_size, args.batches, args.warmup, not args.eval
        )
        print(
            f"{'eval' if args.eval else 'train'} {'+'.join(group)} "
            f"{args.num_frames}x{crop[0]}x{crop[1]} batch {args.batch_size} on {os.cpu_count()} "
            f"CPUs: {result['clips_per_second']:.2f} clips/s, "
            f"{result['frames_per_second']:.0f} frames/s, {result['mb_per_second']:.0f} MB/s "
            f"({args.batches} batches in {result['seconds']:.1f} s)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
