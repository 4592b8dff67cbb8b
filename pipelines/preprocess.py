"""The preprocessing job: manifest -> sharded TFRecords of RGB, pose-rendered and flow streams.

Run `perfnet-preprocess --help` or `python -m pipelines.preprocess --help`. The job flags are
`build_parser`'s (the README's table); every other flag goes to Beam (`--runner`,
`--direct_num_workers`, `--project`, `--region`, `--temp_location`, ...). The runner defaults to
DirectRunner.

Wiring only: the work per video is `pipelines.stages.clip.ClipProcessor`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import logging
import os
import platform
import posixpath
import re
import sys
import threading
import time
from concurrent.futures.process import BrokenProcessPool

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    StandardOptions,
    TestOptions,
)

from flow import FLOW_PRESETS, flow_params
from pipelines.config import PreprocessConfig
from pipelines.failures import Failure
from pipelines.manifests import (
    ClipSpec,
    ManifestError,
    default_label_map,
    detect_format,
    label_names,
    load_label_map,
    parse_manifest,
    splits_of,
)
from pipelines.runtime import quiet, watchdog
from pipelines.storage import output, parts
from pipelines.storage.gcs import configure_emulator
from schemas import media_sequence as ms

LOG = logging.getLogger("perfnet.preprocess")
FAILED = "failed"
DONE = "done"
STAGING_DIR = ".staging"
LOCAL_RUNNERS = ("DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner")


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
        default=",".join(ms.ALL_MODALITIES),
        help="image streams to write, comma-separated subset of rgb,pose,flow",
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
        help="OpenCV threads per worker process (0: cores / local worker processes; 1 on Dataflow)",
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


# ---------------------------------------------------------------------------------------------
# DoFns.
# ---------------------------------------------------------------------------------------------
class ProcessVideoFn(beam.DoFn):
    """One manifest row -> its part (clips) or its failure row, never both.

    Writes the part itself (pipelines/storage/parts.py) and yields (DONE or FAILED, the row's key).
    Writing is idempotent: a bundle the runner retries rewrites the same part files. Runs in a
    worker subprocess (see `run`), so that a native crash or a hang costs one row.
    """

    def __init__(self, config: PreprocessConfig, pose_model_path: str | None, pose_sha256: str):
        self._config = config
        self._model_path = pose_model_path
        self._model_sha = pose_sha256
        self._processor = None

    def setup(self):
        from pipelines.stages.clip import ClipProcessor

        _worker_setup()

        threads = self._config.threads_per_worker
        if threads:
            import cv2

            cv2.setNumThreads(threads)
        model = None
        if ms.MODALITY_POSE in self._config.modalities:
            from pipelines.stages.pose import load_pose_model

            model, sha = load_pose_model(self._model_path)
            if sha != self._model_sha:
                raise ValueError(
                    f"pose_model={self._model_path!r}: sha256 {sha} differs from the launcher's "
                    f"{self._model_sha}; the file changed while the job ran"
                )
        self._processor = ClipProcessor(self._config, model)

    def process(self, spec: ClipSpec):
        t0 = time.perf_counter()
        key = parts.input_key(spec)
        out = self._config.output_dir
        try:
            # Clips are written as they are made; a write error is not the input's fault and
            # propagates (the runner's dead letter records it as stage `process`).
            meta = parts.write_done(out, key, spec, _Processing(self._processor.iter_clips(spec)))
        except _ProcessingError as e:  # every input ends as records or as one failure row
            failure = self._processor.failure(spec, e.cause)
            LOG.warning("failed %s at %s: %s", spec.data_path, failure.stage, failure.error)
            parts.write_failure(out, key, failure)
            yield FAILED, key, {"stage": failure.stage}
            return
        frames = sum(c["frames"] for c in meta["clips"])
        ms = int(1000 * (time.perf_counter() - t0) / frames) if frames else 0
        yield DONE, key, {"clips": len(meta["clips"]), "frames": frames, "ms_per_frame": ms}


class _ProcessingError(Exception):
    """An error raised while making an input's clips (as opposed to while writing them)."""

    def __init__(self, cause: BaseException):
        super().__init__(repr(cause))
        self.cause = cause


class _Processing:
    """Iterates a clip generator, wrapping its errors in _ProcessingError."""

    def __init__(self, clips):
        self._clips = clips

    def __iter__(self):
        while True:
            try:
                clip = next(self._clips)
            except StopIteration:
                return
            except Exception as e:  # noqa: BLE001 - classified by ClipProcessor.failure
                raise _ProcessingError(e) from e
            yield clip


def count_processed(element):
    """Beam counters for a processed row, updated in the launching worker (the row itself ran in
    a subprocess, whose counters would be lost)."""
    status, _, stats = element
    if status == DONE:
        Metrics.counter("perfnet", "inputs_written").inc()
        Metrics.counter("perfnet", "clips_written").inc(stats["clips"])
        Metrics.counter("perfnet", "frames_written").inc(stats["frames"])
        Metrics.distribution("perfnet", "ms_per_frame").update(stats["ms_per_frame"])
    else:
        Metrics.counter("perfnet", f"failed_{stats['stage']}").inc()
    return element


class RecordCrashFn(beam.DoFn):
    """(row, error) of a row whose worker process crashed, timed out, or raised outside the
    stages -> its failure row (stage `process`)."""

    def __init__(self, output_dir: str, timeout_s: float):
        self._output_dir = output_dir
        self._timeout_s = timeout_s

    def process(self, dead_letter):
        spec, (exc_type, exc_repr, _) = dead_letter[0], dead_letter[1]
        if issubclass(exc_type, TimeoutError):
            error = TimeoutError(
                f"processing took longer than {self._timeout_s:.0f} s (--video_timeout_s); "
                "the worker process was stopped"
            )
        elif issubclass(exc_type, BrokenProcessPool):
            error = RuntimeError(f"the worker process died while processing it: {exc_repr}")
        else:  # raised outside the stages, e.g. while writing the part
            error = RuntimeError(f"could not complete the row: {exc_repr}")
        failure = Failure.from_exception(
            ms.clip_id(spec.media_id, spec.start_us), spec.data_path, "process", error
        )
        LOG.warning("failed %s: %s", spec.data_path, failure.error)
        key = parts.input_key(spec)
        parts.write_failure(self._output_dir, key, failure)
        yield FAILED, key, {"stage": "process"}


def _worker_setup() -> None:
    """What every process doing the job's work does first (the DoFns' setup): end with the
    job's launcher (`pipelines.runtime.watchdog`), and skip Beam's credential lookup where a GCS
    emulator
    is asked for (`pipelines.storage.gcs`)."""
    watchdog.die_with_launcher()
    configure_emulator()


class WatchLauncherFn(beam.DoFn):
    """Passes elements through; its setup makes the worker process end with the job's launcher
    (`pipelines.runtime.watchdog`). Placed in the stages that read rows and before the per-row
    work, so
    every SDK worker process of the job is watched (the other DoFns watch from their setup)."""

    def setup(self):
        _worker_setup()

    def process(self, element):
        yield element


class CollectPartFn(beam.DoFn):
    """A manifest row -> its clips' shard entries (main) or its failure row (FAILED)."""

    def __init__(self, output_dir: str, num_shards: dict[str, int]):
        self._output_dir = output_dir
        self._num_shards = num_shards

    def setup(self):
        _worker_setup()

    def process(self, spec: ClipSpec, processed: int):
        del processed  # a barrier: this runs once every row is processed
        key = parts.input_key(spec)
        meta = parts.read_meta(self._output_dir, key)
        if meta is None:
            failure = parts.read_failure(self._output_dir, key)
            if failure is None:
                raise RuntimeError(f"row {spec.source} ({spec.data_path}) has no part: not run")
            yield beam.pvalue.TaggedOutput(FAILED, failure)
            return
        yield beam.pvalue.TaggedOutput(DONE, (key, spec.label))
        n = self._num_shards[spec.split]
        for offset, clip in zip(parts.record_offsets(meta), meta["clips"]):
            entry = (clip["id"], key, offset, clip, spec.label)
            yield (spec.split, output.shard_of(clip["id"], n)), entry


class WriteShardFn(beam.DoFn):
    """((split, shard), entries) -> one TFRecord file, records in id order; yields a summary."""

    def __init__(self, output_dir: str, dataset_name: str, num_shards: dict[str, int]):
        self._output_dir = output_dir
        self._dataset_name = dataset_name
        self._num_shards = num_shards

    def setup(self):
        _worker_setup()

    def process(self, element, label_map: dict[str, int]):
        (split, shard), entries = element
        entries = sorted(entries)  # by clip id: the same file on every run and runner
        path = output.shard_path(
            self._output_dir, split, self._dataset_name, shard, self._num_shards[split]
        )

        frames_with_person = 0
        written = 0

        def records():
            # One record in memory at a time, read by its offset in its part; a row's clips are
            # usually adjacent (their ids share a prefix), so each part file is opened once. The
            # class index is set here: a part does not depend on the other rows' labels.
            nonlocal frames_with_person, written
            for key, run in itertools.groupby(entries, key=lambda e: e[1]):
                run = list(run)
                path = parts.records_path(self._output_dir, key)
                offsets = [e[2] for e in run]
                for entry, data in zip(run, output.read_tfrecords_at(path, offsets), strict=True):
                    data = ms.with_label_index(data, label_map[entry[4]])
                    written += len(data)
                    # Counted from the record as written: the same on a resumed run.
                    steps = ms.int64_steps(data, ms.REGION_NUM_REGIONS_KEY)
                    frames_with_person += sum(1 for n in steps if n and n[0] > 0)
                    yield data

        output.write_tfrecords(path, records())
        clips = [e[3] for e in entries]
        yield {
            "split": split,
            "shard": output.relative(self._output_dir, path),
            "clips": len(clips),
            "frames": sum(c["frames"] for c in clips),
            "persons": sum(c["persons"] for c in clips),
            "frames_with_person": frames_with_person,
            "duration_us": sum(c["duration_us"] for c in clips),
            "bytes": written,
        }


def final_label_map(labels: list[str], fixed: dict[str, int] | None) -> dict[str, int]:
    """The label map of the records: `fixed` (an explicit map, or a dataset's official class
    list) if given, else the labels of the rows written, sorted by name (`default_label_map`):
    a label whose every row failed is not a class."""
    return dict(fixed) if fixed is not None else default_label_map(labels)


def _write_info(
    _, shards, done, failures, label_map, static_info, output_dir, num_shards, dataset_name
):
    """Writes dataset_info.json once every shard is written; fills in empty shards and removes
    shards of an earlier run that the current shard count no longer names."""
    splits = {}
    for split, n in sorted(num_shards.items()):
        names = [
            output.relative(output_dir, output.shard_path(output_dir, split, dataset_name, i, n))
            for i in range(n)
        ]
        written = {s["shard"] for s in shards if s["split"] == split}
        for name in names:
            if name not in written:  # a shard no clip hashed to: still written, empty
                output.write_tfrecords(output.join(output_dir, name), [])
        mine = [s for s in shards if s["split"] == split]
        splits[split] = {
            "clips": sum(s["clips"] for s in mine),
            "frames": sum(s["frames"] for s in mine),
            "persons": sum(s["persons"] for s in mine),
            "duration_seconds": round(sum(s["duration_us"] for s in mine) / 1e6, 3),
            "bytes": sum(s["bytes"] for s in mine),
            "num_shards": n,
            "shards": names,
        }
    # Shards of an earlier run of this job that the current shard count does not name: only
    # those the own-files list names, never a file the job did not write.
    keep = {output.join(output_dir, name) for s in splits.values() for name in s["shards"]}
    own = parts.read_own_files(output_dir) or set()
    stale = [
        name
        for name in sorted(own)
        if "/" in name
        and output.is_shard_name(name.rsplit("/", 1)[-1])
        and output.join(output_dir, name) not in keep
    ]
    if stale:
        paths = output.existing(output_dir, stale)
        if paths:
            output.FileSystems.delete(paths)
        parts.write_own_files(output_dir, own - set(stale))
    by_stage: dict[str, int] = {}
    for stage in failures:
        by_stage[stage] = by_stage.get(stage, 0) + 1
    info = dict(static_info)
    info["labels"] = label_names(label_map)
    info["num_classes"] = len(label_map)
    info["splits"] = splits
    if ms.MODALITY_POSE in static_info["modalities"]:
        info["pose"] = {
            split: pose_coverage(
                desc["frames"],
                sum(s["frames_with_person"] for s in shards if s["split"] == split),
                desc["persons"],
            )
            for split, desc in splits.items()
        }
    info["inputs"] = {
        "rows": static_info["inputs"]["rows"],
        "written": len(done),
        "failed": len(failures),
        "failed_by_stage": dict(sorted(by_stage.items())),
    }
    output.write_text(
        output.join(output_dir, output.DATASET_INFO), json.dumps(info, indent=2, sort_keys=True)
    )
    yield info


def pose_coverage(frames: int, frames_with_person: int, persons: int) -> dict:
    """A split's pose coverage for dataset_info.json: its frame count, frames with at least one
    person, persons summed over frames, and the share of frames with a person and the persons
    per frame (rounded to 4 places; 0.0 for a split without frames)."""
    return {
        "frames": frames,
        "frames_with_person": frames_with_person,
        "persons": persons,
        "share_of_frames_with_person": round(frames_with_person / frames, 4) if frames else 0.0,
        "persons_per_frame": round(persons / frames, 4) if frames else 0.0,
    }


# ---------------------------------------------------------------------------------------------
# Launcher.
# ---------------------------------------------------------------------------------------------
def software_versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for dist in (
        "perfnet-data",
        "apache-beam",
        "tensorflow",
        "mediapipe",
        "opencv-contrib-python",
        "numpy",
        "pyarrow",
    ):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def _resolve_pose_model(config: PreprocessConfig) -> tuple[str | None, dict]:
    """(path, description) of the pose model, checked by loading it once; before any video.

    The description is what `dataset_info.json` records: name, version, kind, sha256, path.
    """
    if ms.MODALITY_POSE not in config.modalities:
        return None, {"name": "", "sha256": "", "path": ""}
    from pipelines import assets
    from pipelines.stages.pose import check_pose_model, load_pose_model, pose_model_kind

    name = config.pose_model or assets.DEFAULT_POSE_MODEL.name
    built = assets.POSE_MODELS.get(name)
    if built is not None:
        path = str(assets.pose_model_path(name))
    elif "://" not in name and not os.path.exists(name):
        raise ValueError(
            f"pose_model={name!r}: neither a pose model name ({', '.join(assets.POSE_MODELS)}) "
            "nor an existing file"
        )
    else:
        path = name
        stem, ext = posixpath.splitext(path.rstrip("/").rsplit("/", 1)[-1])
        name = stem if ext in (".task", ".tflite") else stem + ext
    model, sha = load_pose_model(path)
    if built is not None and sha != built.sha256:
        raise ValueError(
            f"pose model {path!r}: sha256 is {sha}, the set-up step pins {built.sha256}; "
            "rebuild it with `python -m pipelines.assets fetch`"
        )
    if config.pose_model_sha256 and sha != config.pose_model_sha256:
        raise ValueError(
            f"pose_model={path!r}: sha256 is {sha}, --pose_model_sha256 says "
            f"{config.pose_model_sha256}"
        )
    check_pose_model(model, path)
    known = next((m for m in assets.POSE_MODELS.values() if m.sha256 == sha), None)
    description = {
        "name": name,
        "version": known.version if known else "",
        "kind": pose_model_kind(model, path),
        "sha256": sha,
        "path": config.pose_model or "",
    }
    return path, description


def flow_description(config: PreprocessConfig) -> dict:
    """How the flow stream was made, for the description and the resume check."""
    return {
        "preset": config.flow_preset,
        "params": dataclasses.asdict(flow_params(config.flow_preset)),
        "saturation": ms.FLOW_SATURATION,
        "jpeg_quality": config.flow_jpeg_quality,
        # Flow is computed from the RGB frames as stored: JPEG at `jpeg_quality`, decoded.
        "computed_from": "stored_rgb",
    }


def record_settings(config: PreprocessConfig, pose_sha256: str) -> dict:
    """The settings that decide the records: parts made under other settings are not reused."""
    keys = (
        "dataset_name", "modalities", "flow_preset", "num_poses", "pose_short_side", "fps",
        "short_side", "jpeg_quality", "flow_jpeg_quality", "max_clip_seconds",
    )  # fmt: skip
    settings = {k: getattr(config, k) for k in keys}
    # What the preset means, not only its name, and what the flow is computed from.
    settings["flow"] = flow_description(config)
    settings["modalities"] = list(config.modalities)
    settings["render_style"] = config.style.to_spec()
    settings["pose_model_sha256"] = pose_sha256
    return settings


def _prepare_output(
    config: PreprocessConfig, settings: dict, num_shards: dict[str, int], lock: output.OutputLock
) -> bool:
    """Takes the lock and readies output_dir; True when it resumes earlier parts made with the
    same settings.

    The job deletes only files it wrote itself: those `.parts/run.json` lists (recorded there
    before the job writes them) and its part files. A file it did not write, at a name it would
    write (a shard, the failures file, dataset_info.json), is refused rather than replaced.
    """
    lock.acquire()  # one job per directory: refused here, before anything is changed
    out = config.output_dir
    info = output.join(out, output.DATASET_INFO)
    failures = posixpath.join(output.FAILURES_DIR, f"{output.FAILURES_PREFIX}-00000-of-00001.jsonl")
    planned = {output.DATASET_INFO, failures} | {
        posixpath.join(split, output.shard_name(config.dataset_name, i, n))
        for split, n in num_shards.items()
        for i in range(n)
    }
    own = parts.read_own_files(out)
    if own is None:
        own = _own_files_before_the_list(out, planned)
    if config.overwrite:
        old = output.existing(out, own) + parts.own_part_files(out)
        if old:
            output.FileSystems.delete(old)
        own, resume = set(), False
    else:
        resume = parts.check_run(out, settings)
        if not resume and output.FileSystems.exists(info):
            raise FileExistsError(
                f"output_dir={out!r} already holds a finished run without its "
                "parts (.parts/); pass --overwrite to replace it or choose another directory"
            )
    foreign = [output.relative(out, p) for p in output.existing(out, planned - own)]
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise FileExistsError(
            f"output_dir={out!r} holds {foreign[0]!r}{more}, which this job would write but did "
            "not write; move it away or choose another directory"
        )
    parts.start_run(out, settings, own | planned)
    if output.FileSystems.exists(info):
        output.FileSystems.delete([info])  # present again only when this run completes
    return resume


def _own_files_before_the_list(out: str, planned: set[str]) -> set[str]:
    """The job's files in a directory written before the own-files list existed: the shards and
    failures its dataset_info.json names, and, where it holds a run's parts, the shards and
    failures file at the names this run writes."""
    own: set[str] = set()
    info = output.join(out, output.DATASET_INFO)
    if output.FileSystems.exists(info):
        try:
            desc = output.read_json(info)
            own = {name for split in desc["splits"].values() for name in split["shards"]}
            own |= {
                output.relative(out, p)
                for p in output.list_files(output.join(out, desc["failures"]))
            }
            own.add(output.DATASET_INFO)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            LOG.warning("%s: not a dataset description (%s); none of its files deleted", info, e)
    if output.FileSystems.exists(output.join(parts.parts_dir(out), parts.RUN_FILE)):
        own |= {n for n in planned if n != output.DATASET_INFO}
    return {n for n in own if isinstance(n, str) and ".." not in n.split("/")}


def _stage_specs(config: PreprocessConfig, specs: list[ClipSpec], name: str) -> str:
    """Writes clip specs as JSON lines for the pipeline to read; returns the path."""
    text = "".join(s.to_json() + "\n" for s in specs)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = output.join(config.output_dir, STAGING_DIR, f"{name}-{digest}.jsonl")
    output.write_text(path, text)
    return path


def _stage_model(config, options, path: str | None, sha: str) -> str | None:
    """Copies a local pose model next to the outputs when workers run elsewhere (Dataflow)."""
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    if path is None or "://" in path or runner in LOCAL_RUNNERS:
        return path
    suffix = os.path.splitext(path)[1] or ".bin"  # .tflite or .task
    staged = output.join(config.output_dir, STAGING_DIR, f"pose-{sha[:16]}{suffix}")
    if not output.FileSystems.exists(staged):
        with open(path, "rb") as src, output.FileSystems.create(staged) as dst:
            dst.write(src.read())
    return staged


def _check_remote_paths(config: PreprocessConfig, specs: list[ClipSpec], options) -> None:
    """Dataflow workers see only gs://: refuses a local output_dir or local videos, up front."""
    runner = (options.view_as(StandardOptions).runner or "").rsplit(".", 1)[-1].lower()
    if runner not in ("dataflowrunner", "dataflow"):
        return
    if not config.output_dir.startswith("gs://"):
        raise ValueError(
            f"output_dir={config.output_dir!r}: Dataflow workers cannot write a local path; "
            "use a gs:// folder"
        )
    local = next((s for s in specs if not s.path.startswith("gs://")), None)
    if local is not None:
        raise ValueError(
            f"video {local.path!r} ({local.source}): Dataflow workers cannot read a local path; "
            "pass --video_root gs://... or gs:// paths in the manifest"
        )


def _threads_per_worker(config: PreprocessConfig, options) -> int:
    """OpenCV threads per worker process: the cores shared out among the worker processes."""
    if config.threads_per_worker:
        return config.threads_per_worker
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    if runner not in LOCAL_RUNNERS:
        return 1  # Dataflow runs one SDK process per vCPU
    direct = options.view_as(DirectOptions)
    workers = direct.direct_num_workers or 1
    if workers <= 0:
        workers = os.cpu_count() or 1  # Beam's "0: as many as cores"
    if workers == 1 or direct.direct_running_mode == "in_memory":
        return 0  # one process: OpenCV's own default (all cores)
    return max(1, (os.cpu_count() or 1) // workers)


def run(argv: list[str] | None = None) -> dict:
    """Runs the job from its command line (`parse_args`); see `run_job`."""
    return run_job(*parse_args(argv))


def run_job(config: PreprocessConfig, options: PipelineOptions) -> dict:
    """Runs the job; returns the dataset description it wrote.

    Rows whose part is already in output_dir (from an interrupted or earlier run with the same
    settings) are not processed again; the shards are rebuilt from the parts of every row.
    """
    configure_emulator()  # only with STORAGE_EMULATOR_HOST set (tests, local trials)
    _check_inputs_exist(config)  # a typo in a path is reported before anything heavy runs
    # Processes started under this job (Beam's SDK workers in multi_processing mode, the row
    # workers) end with it (`pipelines.runtime.watchdog`).
    before = os.environ.get(watchdog.LAUNCHER_ENV)
    os.environ[watchdog.LAUNCHER_ENV] = str(os.getpid())
    try:
        # One job per output directory, from before any work until the end, however it ends.
        dry_run = options.view_as(TestOptions).dry_run
        with output.OutputLock(config.output_dir, enabled=not dry_run) as lock:
            return _run(config, options, lock)
    finally:
        if before is None:
            os.environ.pop(watchdog.LAUNCHER_ENV, None)
        else:
            os.environ[watchdog.LAUNCHER_ENV] = before


def _check_inputs_exist(config: PreprocessConfig) -> None:
    """Raises FileNotFoundError or ValueError naming the flag when the manifest or the label map
    is missing or a directory, or the output directory is a file."""
    for flag, path in (("input", config.input), ("label_map", config.label_map)):
        if path and not output.FileSystems.exists(path):
            raise FileNotFoundError(f"--{flag}={path!r}: no such file")
        if path and "://" not in path and os.path.isdir(path):
            raise ValueError(f"--{flag}={path!r}: a directory, expected a file")
    out = config.output_dir
    if "://" not in out and os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--output_dir={out!r}: a file, expected a directory (or a new path)")


def _run(config: PreprocessConfig, options: PipelineOptions, lock: output.OutputLock) -> dict:
    config = dataclasses.replace(config, threads_per_worker=_threads_per_worker(config, options))
    label_map = load_label_map(config.label_map) if config.label_map else None
    pose_path, pose_info = _resolve_pose_model(config)
    pose_sha = pose_info["sha256"]
    specs, manifest_failures, label_map = parse_manifest(
        config.input,
        config.manifest_format,
        config.video_root,
        label_map=label_map,
        strict=config.strict_manifest,
        file_pattern=config.file_pattern,
        split_number=config.split_number,
        max_clip_frames=config.max_clip_frames,
        fps=config.fps,
    )
    _check_remote_paths(config, specs, options)
    # Official class lists and explicit maps are kept whatever rows fail; otherwise the classes
    # are the labels of the rows written (`final_label_map`, once every row is processed).
    fmt = (
        detect_format(config.input) if config.manifest_format == "auto" else config.manifest_format
    )
    fixed_labels = label_map if (config.label_map or fmt in ("ucf101", "hmdb51")) else None
    dry_run = options.view_as(TestOptions).dry_run
    # A dry run builds and translates the job only: it leaves output_dir as it is.
    per_split = splits_of(specs)
    num_shards = {split: config.shards_for(n) for split, n in per_split.items()}
    settings = record_settings(config, pose_sha)
    resumed = not dry_run and _prepare_output(config, settings, num_shards, lock)
    done = parts.done_keys(config.output_dir) if resumed else set()
    todo = [s for s in specs if parts.input_key(s) not in done]
    all_rows = _stage_specs(config, specs, "rows")
    todo_rows = _stage_specs(config, todo, "todo")
    pose_path = _stage_model(config, options, pose_path, pose_sha)
    static_info = {
        "schema_version": ms.SCHEMA_VERSION,
        "dataset_name": config.dataset_name,
        "labels": label_names(label_map),
        "num_classes": len(label_map),
        "modalities": list(config.modalities),
        "frame_rate": config.fps,
        "jpeg_quality": config.jpeg_quality,
        "flow": flow_description(config),
        "pose_model": pose_info,
        "render_style": config.style.to_dict(),
        "config": config.to_dict(),
        "software": software_versions(),
        "inputs": {"rows": len(specs) + len(manifest_failures)},
        "failures": output.join(output.FAILURES_DIR, output.FAILURES_PREFIX + "-*.jsonl"),
    }
    LOG.info(
        "%d rows (%d bad in the manifest), splits %s; %d to process, %d done by an earlier run",
        len(specs) + len(manifest_failures),
        len(manifest_failures),
        per_split,
        len(todo),
        len(specs) - len(todo),
    )

    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    todo_keys = {parts.input_key(s) for s in todo}
    with _Progress(config.output_dir, todo_keys, enabled=runner in LOCAL_RUNNERS):
        with beam.Pipeline(options=options) as p:
            processed, dead = (
                p
                | "ReadTodo" >> beam.io.ReadFromText(todo_rows)
                | "WatchReading" >> beam.ParDo(WatchLauncherFn())
                | "ParseTodo" >> beam.Map(ClipSpec.from_json)
                | "Spread" >> beam.Reshuffle()
                | "WatchLauncher" >> beam.ParDo(WatchLauncherFn())
                | "ProcessVideos"
                >> beam.ParDo(ProcessVideoFn(config, pose_path, pose_sha)).with_exception_handling(
                    use_subprocess=True, timeout=config.video_timeout_s
                )
            )
            crashed = dead | "RecordCrashes" >> beam.ParDo(
                RecordCrashFn(config.output_dir, config.video_timeout_s)
            )
            count = (
                (processed, crashed)
                | "Processed" >> beam.Flatten()
                | "Counters" >> beam.Map(count_processed)
                | "CountProcessed" >> beam.combiners.Count.Globally()
            )
            collected = (
                p
                | "ReadRows" >> beam.io.ReadFromText(all_rows)
                | "ParseRows" >> beam.Map(ClipSpec.from_json)
                | "CollectParts"
                >> beam.ParDo(
                    CollectPartFn(config.output_dir, num_shards),
                    processed=beam.pvalue.AsSingleton(count),
                ).with_outputs(FAILED, DONE, main="entries")
            )
            labels = (
                collected[DONE]
                | "DoneLabels" >> beam.Map(lambda key_label: key_label[1])
                | "LabelList" >> beam.combiners.ToList()
                | "LabelMap" >> beam.Map(final_label_map, fixed=fixed_labels)
            )
            shards = (
                collected.entries
                | "GroupShards" >> beam.GroupByKey()
                | "WriteShards"
                >> beam.ParDo(
                    WriteShardFn(config.output_dir, config.dataset_name, num_shards),
                    label_map=beam.pvalue.AsSingleton(labels),
                )
            )
            failures = (
                collected[FAILED],
                p | "ManifestFailures" >> beam.Create(manifest_failures),
            ) | "AllFailures" >> beam.Flatten()
            _ = (
                failures
                | "FailureJson" >> beam.Map(Failure.to_json)
                | "WriteFailures"
                >> beam.io.WriteToText(
                    output.join(config.output_dir, output.FAILURES_DIR, output.FAILURES_PREFIX),
                    file_name_suffix=".jsonl",
                    num_shards=1,
                )
            )
            _ = (
                p
                | "InfoTrigger" >> beam.Create([None])
                | "WriteInfo"
                >> beam.FlatMap(
                    _write_info,
                    shards=beam.pvalue.AsList(shards),
                    done=beam.pvalue.AsList(collected[DONE]),
                    label_map=beam.pvalue.AsSingleton(labels),
                    failures=beam.pvalue.AsList(failures | "Stages" >> beam.Map(lambda f: f.stage)),
                    static_info=static_info,
                    output_dir=config.output_dir,
                    num_shards=num_shards,
                    dataset_name=config.dataset_name,
                )
            )
    if dry_run:
        # The runner built and translated the job without running it (DataflowRunner
        # --dry_run=True): nothing was processed and there is no dataset_info.json to read.
        output.FileSystems.delete([all_rows, todo_rows])
        LOG.info("dry run: the job was built and translated, not run")
        return {**static_info, "dry_run": True}
    info = output.read_json(output.join(config.output_dir, output.DATASET_INFO))
    output.FileSystems.delete([all_rows, todo_rows])
    if info["inputs"]["written"] + info["inputs"]["failed"] != info["inputs"]["rows"]:
        raise RuntimeError(f"inputs do not add up: {info['inputs']}")
    _raise_on_output_errors(config.output_dir)
    return info


# Write errors that are the output directory's, not an input's: the job ends with exit status 2.
_OUTPUT_ERRORS = re.compile(
    r"No space left on device|Disk quota exceeded|Read-only file system|Permission denied"
)


def _raise_on_output_errors(output_dir: str) -> None:
    """Raises OSError when rows failed because the output could not be written (a full disk, a
    read-only directory): a job-level problem, reported as such; the rows written are kept and
    the failed ones are tried again by the next run."""
    rows = output.read_failure_rows(output_dir)
    hit = [r for r in rows if r.get("stage") == "process" and _OUTPUT_ERRORS.search(r["error"])]
    if hit:
        reason = _OUTPUT_ERRORS.search(hit[0]["error"]).group(0)
        raise OSError(
            f"{len(hit)} of the rows could not be written to --output_dir={output_dir!r} "
            f"({reason}); the rows written are kept: fix it and run the same command again"
        )


class _Progress:
    """A progress line every `every_s` seconds on local runs: inputs done of total, frames/s,
    ETA. Counts the parts of this run's rows (`keys`) that appear in output_dir, each row once,
    so it needs nothing from the runner and never counts an earlier run's parts."""

    def __init__(self, output_dir: str, keys: set[str], enabled: bool, every_s: float = 15.0):
        self._dir = parts.parts_dir(output_dir)
        self._keys = set(keys)
        self._total = len(self._keys)
        self._enabled = enabled and self._total > 0
        self._every = every_s
        self._stop = threading.Event()
        self._thread = None
        self._seen: set[str] = set()
        self._frames = 0
        self._failed = 0

    def __enter__(self):
        if self._enabled:
            self._start = time.monotonic()
            self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
        return False

    def _loop(self):
        while not self._stop.wait(self._every):
            try:
                print(self.line(), file=sys.stderr, flush=True)
            except Exception as e:  # noqa: BLE001 - progress must never fail the job
                LOG.debug("progress: %s", e)

    def line(self) -> str:
        for path in output.list_files(output.join(self._dir, "*.json")):
            key, suffix = parts.key_of(path)
            if key not in self._keys or key in self._seen:
                continue  # another run's part, run.json, or a row already counted
            self._seen.add(key)
            if suffix == parts.FAILURE_SUFFIX:
                self._failed += 1
            else:
                self._frames += sum(c["frames"] for c in output.read_json(path)["clips"])
        done = len(self._seen)
        elapsed = time.monotonic() - self._start
        rate = self._frames / elapsed if elapsed > 0 else 0.0
        eta = max(0.0, elapsed / done * (self._total - done)) if done else float("nan")
        eta_text = "?" if eta != eta else f"{int(eta // 60)}m{int(eta % 60):02d}s"
        return (
            f"progress: {done}/{self._total} inputs ({self._failed} failed), "
            f"{rate:.1f} frames/s, elapsed {int(elapsed // 60)}m{int(elapsed % 60):02d}s, "
            f"ETA {eta_text}"
        )


def summary_table(info: dict, output_dir: str) -> str:
    """A short human-readable summary of a dataset description."""
    lines = [
        f"output: {output_dir}",
        f"{'split':<12}{'clips':>7}{'frames':>9}{'persons/frame':>15}{'MB':>9}{'shards':>8}"
        f"{'frames with a person':>22}",
    ]
    for split, s in info["splits"].items():
        ppf = s["persons"] / s["frames"] if s["frames"] else 0.0
        pose = info.get("pose", {}).get(split)
        share = f"{100 * pose['share_of_frames_with_person']:.1f} %" if pose else "-"
        lines.append(
            f"{split:<12}{s['clips']:>7}{s['frames']:>9}{ppf:>15.2f}"
            f"{s['bytes'] / 1e6:>9.1f}{s['num_shards']:>8}{share:>22}"
        )
    inputs = info["inputs"]
    lines.append(
        f"inputs: {inputs['rows']} rows, {inputs['written']} written, {inputs['failed']} failed"
        + (f" {inputs['failed_by_stage']}" if inputs["failed"] else "")
    )
    if inputs["failed"]:
        lines.append(f"failures: {output.join(output_dir, info['failures'])}")
    return "\n".join(lines)


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
