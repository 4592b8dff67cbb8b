"""The preprocessing job's typed configuration, validated early and recorded in the description."""

from __future__ import annotations

import dataclasses
import functools
import math

from flow.tvl1 import DEFAULT_FLOW_PRESET, FLOW_PRESETS, TVL1Params
from pipelines.manifests import FORMATS
from render import RenderStyle
from schemas.media_sequence import (
    ALL_MODALITIES,
    DEFAULT_MODALITIES,
    MODALITY_FLOW,
    check_written_modalities,
)

MAX_NUM_POSES = 100  # persons per frame: far above any crowd a pose model reports (MoveNet: 6)
MAX_NUM_SHARDS = 10_000  # shards per split: 500,000 clips at 50 a shard


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """Everything that decides what the job writes: the command line, parsed once.

    Attributes:
      input: manifest path, local or gs://.
      output_dir: where records, the description and failures go, local or gs://.
      manifest_format: one of pipelines.manifests.FORMATS.
      video_root: prefix for relative video paths, or None.
      file_pattern: Kinetics manifests: the video file name made from a row ("" for the default).
      split_number: UCF-101 / HMDB-51 split files: which official split, 1, 2 or 3.
      label_map: path of an explicit label map (JSON), or None to derive it from the manifest.
      dataset_name: recorded in every example and the description.
      modalities: what is written, a subset of ("rgb", "pose", "flow", "keypoints"), not both
        "pose" and "keypoints" ("pose": the rendered frames and the keypoints).
      render_style: compact `RenderStyle` spec ("" for the defaults).
      flow_preset: a key of flow.FLOW_PRESETS.
      pose_model: a pose model: a name of `pipelines.assets.POSE_MODELS` (`movenet_multipose`,
        `blazepose_full`, `blazepose_heavy`), or a path, local or gs://, of a MoveNet MultiPose
        TFLite file or a MediaPipe pose landmarker bundle; None for the default (MoveNet).
      num_poses: most persons the pose estimator returns per frame, >= 1 (MoveNet: at most 6).
      pose_input_size: MoveNet: longer side in pixels of the model input, a multiple of 32 in
        [128, 1024]. Default 384: on annotated images it finds 91% of the people (256: 84%,
        448: 81%) at AP 0.51 (benchmarks/pose_quality.py; docs/pose.md). BlazePose ignores it.
      pose_min_score: the person score below which a candidate is not reported, in [0, 1];
        None: the model's default (MoveNet 0.2, BlazePose's detection confidence 0.5).
      pose_short_side: shorter side in pixels of the frames the pose estimator sees, made from
        the decoded frame and never upscaled (0: full resolution; -1: the stored frame). Default
        384: the estimator runs at the same speed at any input size (its models see fixed-size
        crops); at 384 it finds as many people as at 256 and its keypoints agree with the
        full-resolution run as well as at 512 (benchmarks/pose_bench.py; docs/pose.md).
      fps: stored frame rate, frames per second, > 0.
      short_side: stored shorter side in pixels, >= 16.
      jpeg_quality: JPEG quality of the stored RGB and pose-rendered images, 1..100.
      flow_jpeg_quality: JPEG quality of the stored flow images, 1..100. Default 100, as
        MediaPipe's: at 90 the flow read back is off by 0.25-0.31 px on moving pixels and up to
        4 px at motion edges; at 100 by 0.17 px and at most 0.7 px, for 5-15 KB more per frame.
      num_shards: shards per split; 0 picks about one shard per `clips_per_shard` clips.
      max_clip_seconds: longer windows are cut into consecutive clips of at most this; 0: no cut.
      strict_manifest: stop at the first bad manifest row instead of recording it.
      overwrite: replace the outputs of an earlier run in output_dir.
      threads_per_worker: OpenCV threads per worker process; 0 decides from the runner (the
        machine's cores shared among local worker processes; 1 on Dataflow).
      max_frame_pixels, min_frame_side, max_duration_seconds, max_decoded_frames: resource caps
        checked before the expensive work (see video.Limits); 0 lifts a cap.
      video_timeout_s: most seconds one manifest row may take; each row runs in a worker
        subprocess, so a decoder that hangs or crashes costs that row a failure row, not the job.
      pose_model_sha256: if given, the pose model's sha256 must equal it.
    """

    input: str
    output_dir: str
    manifest_format: str = "auto"
    video_root: str | None = None
    file_pattern: str = ""
    split_number: int = 1
    label_map: str | None = None
    dataset_name: str = "perfnet"
    modalities: tuple[str, ...] = DEFAULT_MODALITIES
    render_style: str = ""
    flow_preset: str = DEFAULT_FLOW_PRESET
    pose_model: str | None = None
    num_poses: int = 10
    pose_input_size: int = 384
    pose_min_score: float | None = None
    pose_short_side: int = 384
    fps: float = 25.0
    short_side: int = 256
    jpeg_quality: int = 90
    flow_jpeg_quality: int = 100
    num_shards: int = 0
    clips_per_shard: int = 50
    max_clip_seconds: float = 30.0
    strict_manifest: bool = False
    overwrite: bool = False
    threads_per_worker: int = 0
    max_frame_pixels: int = 3840 * 2160
    min_frame_side: int = 32
    max_duration_seconds: float = 600.0
    max_decoded_frames: int = 50_000
    video_timeout_s: float = 1800.0
    pose_model_sha256: str = ""

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raises ValueError naming the first bad field and its value."""

        def bad(field, why):
            raise ValueError(f"{field}={getattr(self, field)!r}: {why}")

        if not self.input:
            bad("input", "a manifest path is required")
        if not self.output_dir:
            bad("output_dir", "an output directory is required")
        if self.manifest_format not in FORMATS:
            bad("manifest_format", f"expected one of {list(FORMATS)}")
        if self.split_number not in (1, 2, 3):
            bad("split_number", "expected 1, 2 or 3")
        from pipelines.storage.output import check_dataset_name

        check_dataset_name(self.dataset_name)  # the names of files and the patterns they match
        mods = tuple(self.modalities)
        try:
            check_written_modalities(mods)
        except ValueError as e:
            bad("modalities", f"expected a non-empty subset of {list(ALL_MODALITIES)}: {e}")
        _ = self.style  # parsed once, here; raises naming the bad key or value
        if self.flow_preset not in FLOW_PRESETS:
            bad("flow_preset", f"expected one of {sorted(FLOW_PRESETS)}")
        if not 1 <= self.num_poses <= MAX_NUM_POSES:
            bad("num_poses", f"must be in 1..{MAX_NUM_POSES}")
        if not 128 <= self.pose_input_size <= 1024 or self.pose_input_size % 32:
            bad("pose_input_size", "must be a multiple of 32 in [128, 1024]")
        if self.pose_min_score is not None and not (
            math.isfinite(self.pose_min_score) and 0 <= self.pose_min_score <= 1
        ):
            bad("pose_min_score", "must be in [0, 1]")
        if self.pose_short_side != -1 and not (
            self.pose_short_side == 0 or self.pose_short_side >= 16
        ):
            bad("pose_short_side", "must be -1 (stored frame), 0 (full resolution) or >= 16")
        if not (math.isfinite(self.fps) and self.fps > 0):
            bad("fps", "must be > 0")
        if self.short_side < 16:
            bad("short_side", "must be >= 16 pixels")
        for name in ("jpeg_quality", "flow_jpeg_quality"):
            if not 1 <= getattr(self, name) <= 100:
                bad(name, "must be in 1..100")
        if not 0 <= self.num_shards <= MAX_NUM_SHARDS:
            bad("num_shards", f"must be in 0..{MAX_NUM_SHARDS} (0 picks automatically)")
        if self.threads_per_worker < 0:
            bad("threads_per_worker", "must be >= 0 (0: decided from the runner)")
        for name in ("max_frame_pixels", "max_decoded_frames"):
            if getattr(self, name) < 0:
                bad(name, "must be >= 0 (0: no limit)")
        if self.min_frame_side < 1:
            bad("min_frame_side", "must be >= 1")
        if not (math.isfinite(self.max_duration_seconds) and self.max_duration_seconds >= 0):
            bad("max_duration_seconds", "must be >= 0 (0: no limit)")
        if not (math.isfinite(self.video_timeout_s) and self.video_timeout_s > 0):
            bad("video_timeout_s", "must be > 0")
        if self.pose_model_sha256 and (
            len(self.pose_model_sha256) != 64
            or any(c not in "0123456789abcdef" for c in self.pose_model_sha256)
        ):
            bad("pose_model_sha256", "must be 64 lowercase hex digits")
        if self.clips_per_shard < 1:
            bad("clips_per_shard", "must be >= 1")
        if not (math.isfinite(self.max_clip_seconds) and self.max_clip_seconds >= 0):
            bad("max_clip_seconds", "must be >= 0 (0: never cut)")
        if 0 < self.max_clip_frames < 2:
            bad("max_clip_seconds", f"must hold at least 2 frames at fps={self.fps} (0: never cut)")

    @functools.cached_property
    def style(self) -> RenderStyle:
        """`render_style` parsed, once per config object (first in `validate`)."""
        return RenderStyle.parse(self.render_style)

    @functools.cached_property
    def flow(self) -> TVL1Params:
        """The TV-L1 parameters of `flow_preset` (resolved once; validated in `validate`)."""
        return FLOW_PRESETS[self.flow_preset]

    def clip_settings(self):
        """The `pipelines.stages.clip.ClipSettings` of this job: what the clip processor reads."""
        from pipelines.stages.clip import ClipSettings

        return ClipSettings(
            dataset_name=self.dataset_name,
            modalities=tuple(self.modalities),
            fps=self.fps,
            short_side=self.short_side,
            pose_frame_side=self.pose_frame_side,
            limits=self.limits,
            max_clip_frames=self.max_clip_frames,
            jpeg_quality=self.jpeg_quality,
            flow_jpeg_quality=self.flow_jpeg_quality,
            style=self.style,
            flow=self.flow if MODALITY_FLOW in self.modalities else None,
            num_poses=self.num_poses,
            pose_input_size=self.pose_input_size,
            pose_min_score=self.pose_min_score,
            threads_per_worker=self.threads_per_worker,
        )

    @property
    def limits(self):
        from pipelines.stages.video import Limits

        return Limits(
            max_frame_pixels=self.max_frame_pixels,
            min_frame_side=self.min_frame_side,
            max_duration_us=int(round(self.max_duration_seconds * 1e6)),
            max_decoded_frames=self.max_decoded_frames,
        )

    @property
    def pose_frame_side(self) -> int:
        """Shorter side of the pose estimator's frames (0: full resolution)."""
        return self.short_side if self.pose_short_side == -1 else self.pose_short_side

    @property
    def max_clip_frames(self) -> int:
        """Frames per clip before a window is cut; 0 for never."""
        return int(math.floor(self.max_clip_seconds * self.fps + 1e-9))

    def shards_for(self, num_clips: int) -> int:
        """Shards of a split holding about `num_clips` clips."""
        if self.num_shards:
            return self.num_shards
        return max(1, math.ceil(num_clips / self.clips_per_shard))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["modalities"] = list(self.modalities)
        d["render_style_resolved"] = self.style.to_dict()
        return d
