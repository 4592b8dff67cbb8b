"""The preprocessing job: manifest -> sharded TFRecords of RGB, pose-rendered and flow streams.

Run `perfnet-preprocess --help` or `python -m pipelines.preprocess --help`. The job flags are
`build_parser`'s (the README's table); every other flag goes to Beam (`--runner`,
`--direct_num_workers`, `--project`, `--region`, `--temp_location`, ...). The runner defaults to
DirectRunner.

This module is the command line only: flags -> a validated `PreprocessConfig` and Beam's
options, then `pipelines.job.run_job`. The job's phases are `pipelines.job.transforms`; the
work per video is `pipelines.stages.clip.ClipProcessor`.
"""

from __future__ import annotations

import argparse
import logging
import sys

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from flow import FLOW_PRESETS
from pipelines.job.config import PreprocessConfig
from pipelines.job.progress import summary_table
from pipelines.job.run import run_job
from pipelines.manifests import ManifestError
from pipelines.runtime import quiet
from schemas import media_sequence as ms


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="perfnet-preprocess",
        description=(
            "Turn videos listed in a manifest into sharded TFRecords of SequenceExamples with RGB, "
            "pose-rendered and TV-L1 flow streams plus per-frame COCO-17 keypoints. Unknown flags "
            "are Beam pipeline options (--runner, --direct_num_workers, --project, ...)."
        ),
    )
    d = PreprocessConfig.__dataclass_fields__
    p.add_argument("--input", required=True, help="manifest path, local or gs://")
    p.add_argument(
        "--manifest_format",
        default=d["manifest_format"].default,
        help="auto (by name and header), csv, jsonl, kinetics, ucf101 or hmdb51",
    )
    p.add_argument("--video_root", default=None, help="prefix for relative video paths")
    p.add_argument(
        "--file_pattern",
        default="",
        help="kinetics manifests: video file name made from a row, e.g. "
        "'{youtube_id}_{time_start:06d}_{time_end:06d}.mp4' (the default)",
    )
    p.add_argument(
        "--split_number", type=int, default=1, help="ucf101/hmdb51: official split 1, 2 or 3"
    )
    p.add_argument("--label_map", default=None, help="explicit label map JSON (list or dict)")
    p.add_argument("--output_dir", required=True, help="output directory, local or gs://")
    p.add_argument("--dataset_name", default=d["dataset_name"].default)
    p.add_argument(
        "--modalities",
        default=",".join(ms.DEFAULT_MODALITIES),
        help="what to write, comma-separated subset of rgb,pose,flow,keypoints (pose: the "
        "rendered frames and the keypoints; keypoints: the keypoints alone, e.g. to render poses "
        "at training time)",
    )
    p.add_argument(
        "--render_style",
        default="",
        help="rendering variant, e.g. background=black,marker=dots,colors=coarse,"
        "thickness=uniform,threshold=0.5 (default: fine colors, bars, ratio-aware, on RGB)",
    )
    p.add_argument(
        "--flow_preset",
        default=d["flow_preset"].default,
        choices=sorted(FLOW_PRESETS),
        help="TV-L1 preset: fast (default; OpenCV's default TV-L1 bit for bit, compiled, 7-10x "
        "per core), reference (OpenCV's own implementation, the same flow) or draft (stops "
        "sooner, ~3x faster than fast, ~0.3 px from the reference on moving pixels)",
    )
    p.add_argument(
        "--pose_model",
        default=None,
        help="pose model: movenet_multipose (default), blazepose_full or blazepose_heavy (built "
        "by the set-up step), or a path, local or gs://, of a MoveNet MultiPose .tflite or a "
        "MediaPipe pose landmarker .task bundle",
    )
    p.add_argument(
        "--pose_input_size",
        type=int,
        default=d["pose_input_size"].default,
        help="MoveNet: longer side of the model input, a multiple of 32 (default 384)",
    )
    p.add_argument(
        "--pose_min_score",
        type=float,
        default=None,
        help="person score threshold in [0, 1] (default: the model's, MoveNet 0.2, BlazePose 0.5)",
    )
    p.add_argument(
        "--num_poses", type=int, default=d["num_poses"].default, help="most persons per frame"
    )
    p.add_argument(
        "--pose_short_side",
        type=int,
        default=d["pose_short_side"].default,
        help="shorter side of the frames the pose estimator sees, from the decoded frame, never "
        "upscaled (default 384; 0: full resolution, -1: the stored frames)",
    )
    p.add_argument("--fps", type=float, default=d["fps"].default)
    p.add_argument("--short_side", type=int, default=d["short_side"].default)
    p.add_argument(
        "--jpeg_quality",
        type=int,
        default=d["jpeg_quality"].default,
        help="JPEG quality of the RGB and pose-rendered images (default 90)",
    )
    p.add_argument(
        "--flow_jpeg_quality",
        type=int,
        default=d["flow_jpeg_quality"].default,
        help="JPEG quality of the flow images (default 100: flow read back within 0.7 px)",
    )
    p.add_argument("--num_shards", type=int, default=0, help="shards per split (0: automatic)")
    p.add_argument(
        "--max_clip_seconds",
        type=float,
        default=d["max_clip_seconds"].default,
        help="cut longer windows into consecutive clips of at most this length (0: never)",
    )
    p.add_argument("--strict_manifest", action="store_true", help="stop on the first bad row")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start over: delete an earlier run's outputs and parts in output_dir",
    )
    p.add_argument(
        "--pose_model_sha256", default="", help="stop unless the pose model has this sha256"
    )
    limits = p.add_argument_group("resource caps, checked before the expensive work (0: none)")
    limits.add_argument("--max_frame_pixels", type=int, default=d["max_frame_pixels"].default)
    limits.add_argument("--min_frame_side", type=int, default=d["min_frame_side"].default)
    limits.add_argument(
        "--max_duration_seconds", type=float, default=d["max_duration_seconds"].default
    )
    limits.add_argument("--max_decoded_frames", type=int, default=d["max_decoded_frames"].default)
    limits.add_argument(
        "--video_timeout_s",
        type=float,
        default=d["video_timeout_s"].default,
        help="most seconds for one manifest row; a row that takes longer becomes a failure row",
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        help="show the native libraries' log lines (TensorFlow, absl, gRPC, LiteRT) and Beam's",
    )
    p.add_argument(
        "--log_file",
        default=None,
        help="append the native libraries' log lines here instead of dropping them",
    )
    p.add_argument(
        "--threads_per_worker",
        type=int,
        default=0,
        help="OpenCV, decoder and pose threads per worker process (0: cores / local worker "
        "processes; 1 on Dataflow)",
    )
    return p


def parse_args(argv: list[str] | None) -> tuple[PreprocessConfig, PipelineOptions]:
    """Splits argv into the job's config (validated) and Beam's pipeline options."""
    return config_from_args(*build_parser().parse_known_args(argv))


def config_from_args(
    args: argparse.Namespace, beam_args: list[str]
) -> tuple[PreprocessConfig, PipelineOptions]:
    """The job's config (validated) and Beam's options from `build_parser`'s parse."""
    config = PreprocessConfig(
        input=args.input,
        output_dir=args.output_dir.rstrip("/") or args.output_dir,
        manifest_format=args.manifest_format,
        video_root=args.video_root,
        file_pattern=args.file_pattern,
        split_number=args.split_number,
        label_map=args.label_map,
        dataset_name=args.dataset_name,
        modalities=tuple(m.strip() for m in args.modalities.split(",") if m.strip()),
        render_style=args.render_style,
        flow_preset=args.flow_preset,
        pose_model=args.pose_model,
        num_poses=args.num_poses,
        pose_input_size=args.pose_input_size,
        pose_min_score=args.pose_min_score,
        pose_short_side=args.pose_short_side,
        fps=args.fps,
        short_side=args.short_side,
        jpeg_quality=args.jpeg_quality,
        flow_jpeg_quality=args.flow_jpeg_quality,
        num_shards=args.num_shards,
        max_clip_seconds=args.max_clip_seconds,
        strict_manifest=args.strict_manifest,
        overwrite=args.overwrite,
        threads_per_worker=args.threads_per_worker,
        pose_model_sha256=args.pose_model_sha256.lower(),
        max_frame_pixels=args.max_frame_pixels,
        min_frame_side=args.min_frame_side,
        max_duration_seconds=args.max_duration_seconds,
        max_decoded_frames=args.max_decoded_frames,
        video_timeout_s=args.video_timeout_s,
    )
    options = PipelineOptions(beam_args)
    std = options.view_as(StandardOptions)
    if not std.runner:
        std.runner = "DirectRunner"  # named, so Beam does not try to fetch another runner
    return config, options


def run(argv: list[str] | None = None) -> dict:
    """Runs the job from its command line (`parse_args`); see `run_job`."""
    return run_job(*parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    # Dataflow: the job id, the console link and the job's state changes.
    logging.getLogger("apache_beam.runners.dataflow").setLevel(logging.INFO)
    argv = sys.argv[1:] if argv is None else argv
    args, beam_args = build_parser().parse_known_args(argv)  # parsed once, here
    try:
        with quiet.native_logs_filtered(args.verbose, args.log_file):
            config, options = config_from_args(args, beam_args)
            info = run_job(config, options)
    except (ValueError, FileNotFoundError, FileExistsError, ManifestError) as e:
        print(f"perfnet-preprocess: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a read-only or vanished directory: the job's, not a row's
        where = f"{e.filename!r}: " if e.filename else ""
        print(f"perfnet-preprocess: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    if info.get("dry_run"):
        print(f"dry run: the job was built and translated, not run; output_dir {config.output_dir}")
        return 0
    print(summary_table(info, config.output_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
