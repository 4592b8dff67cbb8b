"""One video in, its clips' SequenceExamples out: decode -> pose -> render -> flow -> encode.

No Beam here: `pipelines.job.transforms.ProcessVideoFn` wraps `ClipProcessor`, which takes the
few settings it reads as a `ClipSettings`, not the job's config. The JPEG codec is
`pipelines.stages.codec`. Frames are streamed; per clip the processor holds the previous
grayscale frame and the encoded output, nothing more. The CPU time of each row is charged to its
stages as it runs (`CostClock`; the stages: `schemas.dataset_info.COST_STAGES`).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections.abc import Iterator

import numpy as np

from flow import TVL1Params, compute_flow, quantize_flow, to_gray
from pipelines.failures import Failure
from pipelines.manifests import ClipSpec
from pipelines.stages import video
from pipelines.stages.codec import decode_jpeg, encode_jpeg
from pipelines.stages.pose import FramePoses, create_estimator
from pipelines.stages.tracking import IouTracker, suppress_duplicates
from render import RenderStyle, render_poses
from schemas import dataset_info as di
from schemas import media_sequence as ms


class StageError(Exception):
    """An error tagged with the pipeline stage it happened in."""

    def __init__(self, stage: str, cause: BaseException):
        super().__init__(str(cause))
        self.stage = stage
        self.cause = cause


@dataclasses.dataclass(frozen=True)
class ClipRecord:
    """One written clip: its id, split, frame count and serialized SequenceExample.

    The record is kept as `pieces` (`SequenceExampleBuilder.serialize_pieces`) whose
    concatenation is the serialized SequenceExample: `output.write_tfrecords` writes them without
    joining them, so a clip is held in memory once. `serialized` joins them (a copy).
    """

    example_id: str
    split: str
    num_frames: int
    num_persons: int  # persons summed over frames
    duration_us: int
    pieces: tuple[bytes, ...]

    @property
    def size(self) -> int:
        """Bytes of the serialized SequenceExample."""
        return sum(len(p) for p in self.pieces)

    @property
    def serialized(self) -> bytes:
        return b"".join(self.pieces)


@dataclasses.dataclass(frozen=True)
class ClipSettings:
    """What the clip processor needs of the job's settings, typed, parsed once at the edge
    (`pipelines.job.config.PreprocessConfig.clip_settings`).

    Attributes:
      dataset_name: written into every record (`example/dataset_name`).
      modalities: what is written, a subset of ('rgb', 'pose', 'flow', 'keypoints'), not both
        'pose' and 'keypoints' (`schemas.media_sequence.check_written_modalities`).
      fps: frames per second of the stored streams (> 0).
      short_side: shorter side of the stored frames, pixels.
      pose_frame_side: shorter side of the pose estimator's frames, pixels (0: full resolution).
      limits: the decoder's limits (`pipelines.stages.video.Limits`).
      max_clip_frames: frames per clip before a window is cut (0: never).
      jpeg_quality, flow_jpeg_quality: JPEG qualities (1..100) of the image and flow streams.
      style: the skeleton render style.
      flow: the TV-L1 parameters of the flow preset, or None when flow is not written.
      num_poses, pose_input_size, pose_min_score: the pose estimator's settings.
      threads_per_worker: OpenCV, decoder and pose threads of this worker (0: the libraries'
        defaults).
    """

    dataset_name: str
    modalities: tuple[str, ...]
    fps: float
    short_side: int
    pose_frame_side: int
    limits: video.Limits
    max_clip_frames: int
    jpeg_quality: int
    flow_jpeg_quality: int
    style: RenderStyle
    flow: TVL1Params | None
    num_poses: int
    pose_input_size: int
    pose_min_score: float | None
    threads_per_worker: int


class CostClock:
    """Charges the CPU time of one row to its stages (`schemas.dataset_info.COST_STAGES`).

    The clock is process CPU time (`time.process_time`: every thread of the process), not the
    calling thread's (`time.thread_time`): the pose estimator, OpenCV and the decoder work in
    threads of their own, and the job runs one row at a time in each worker process
    (`pipelines.job.transforms.ProcessRows`), so the process's time is the row's. CPU time, not
    wall time: processes sharing the cores do not inflate it. Each call reads the clock once
    (about half a microsecond); `ClipProcessor` makes about ten per frame.

    Attributes:
      core_seconds: stage -> CPU seconds charged to it so far (core-seconds).
      clip_seconds: seconds of clip made so far (frames / frame rate, summed over clips).
    """

    def __init__(self):
        self.core_seconds = dict.fromkeys(di.COST_STAGES, 0.0)
        self.clip_seconds = 0.0
        self._mark = time.process_time()

    def charge(self, stage: str) -> None:
        """Charges the CPU time since the last mark to `stage` (a name of `COST_STAGES`), and
        marks now."""
        now = time.process_time()
        self.core_seconds[stage] += now - self._mark
        self._mark = now

    def resume(self) -> None:
        """Marks now without charging: the time since the last mark was not the row's (the
        caller's work on a clip handed out)."""
        self._mark = time.process_time()

    def cost(self) -> di.RowCost:
        """What was charged so far, as the row's `RowCost`."""
        return di.RowCost(dict(self.core_seconds), self.clip_seconds)


@dataclasses.dataclass
class _OpenClip:
    builder: ms.SequenceExampleBuilder
    start_us: int
    tracker: IouTracker
    prev_gray: np.ndarray | None = None
    prev_ts: int | None = None
    last_ts: int | None = None
    persons: int = 0


class ClipProcessor:
    """Turns one manifest row into its clips. One instance per worker; not thread-safe.

    Args:
      settings: the few settings of the job it needs (`ClipSettings`).
      pose_model_bytes: the pose model (read once per worker;
      `pipelines.stages.pose.load_pose_model`).
    """

    def __init__(self, settings: ClipSettings, pose_model_bytes: bytes | None):
        self.settings = settings
        self.modalities = tuple(settings.modalities)
        self.style = settings.style
        self._pose_model = pose_model_bytes
        if ms.MODALITY_FLOW in self.modalities and settings.flow is None:
            raise ValueError("settings.flow: the flow parameters are required to write flow")
        self._flow_algo = settings.flow.create() if ms.MODALITY_FLOW in self.modalities else None
        ms.check_written_modalities(self.modalities)
        self._keypoints = ms.carries_keypoints(self.modalities)
        self._render = ms.MODALITY_POSE in self.modalities
        if self._keypoints and not pose_model_bytes:
            raise ValueError(
                "pose_model_bytes are required when the keypoints are written (pose, keypoints)"
            )

    def process(self, spec: ClipSpec) -> list[ClipRecord]:
        """All clips of one manifest row, or StageError naming the stage that failed.

        The whole row succeeds or fails: no clip of a failed row is returned.
        """
        return list(self.iter_clips(spec))

    def iter_clips(self, spec: ClipSpec, clock: CostClock | None = None) -> Iterator[ClipRecord]:
        """The clips of one manifest row, each as soon as it is complete, so that a long video
        holds one clip in memory, not all of them. Raises StageError naming the stage that
        failed; clips yielded before a failure belong to a failed row and must be discarded.

        Args:
          spec: the row.
          clock: charged with the row's CPU time per stage and its clip-seconds (complete once
            the clips are exhausted); the time the caller spends while holding a clip is not
            charged. None: the row is timed on a clock of its own, not handed out.
        """
        clock = CostClock() if clock is None else clock
        clock.resume()
        with _local_copy(spec.path) as local:
            for record in self._clips(spec, local, clock):
                clock.clip_seconds += record.num_frames / self.settings.fps
                clock.charge(di.COST_OTHER)
                yield record
                clock.resume()
        clock.charge(di.COST_OTHER)

    def failure(self, spec: ClipSpec, err: BaseException) -> Failure:
        stage = err.stage if isinstance(err, StageError) else "decode"
        cause = err.cause if isinstance(err, StageError) else err
        return Failure.from_exception(
            ms.clip_id(spec.media_id, spec.start_us), spec.data_path, stage, cause
        )

    def _clips(self, spec: ClipSpec, local_path: str, clock: CostClock) -> Iterator[ClipRecord]:
        clock.charge(di.COST_OTHER)  # the fetch: a local copy of a remote video
        cfg = self.settings
        pose_side = cfg.pose_frame_side if self._keypoints else None
        frames = video.iter_frames(
            local_path,
            spec.start_us,
            spec.end_us,
            cfg.fps,
            cfg.short_side,
            pose_side,
            cfg.limits,
            threads=cfg.threads_per_worker,
        )
        estimator = None
        if self._keypoints:
            try:
                estimator = create_estimator(
                    self._pose_model,
                    num_poses=cfg.num_poses,
                    input_size=cfg.pose_input_size,
                    min_person_score=cfg.pose_min_score,
                    num_threads=max(1, cfg.threads_per_worker),
                )
            except Exception as e:
                raise StageError("pose", e) from e
            clock.charge(di.COST_POSE)
        period = int(round(1e6 / cfg.fps))
        current: _OpenClip | None = None
        try:
            while True:
                try:
                    frame = next(frames)
                except StopIteration:
                    break
                except video.VideoError as e:
                    raise StageError("decode", e) from e
                except Exception as e:
                    raise StageError("decode", e) from e
                clock.charge(di.COST_DECODE)
                if current is None:
                    current = self._open(spec, frame)
                    clock.charge(di.COST_OTHER)
                elif cfg.max_clip_frames and current.builder.num_frames >= cfg.max_clip_frames:
                    yield self._close(spec, current, frame.timestamp_us)
                    current = self._open(spec, frame)
                    clock.charge(di.COST_OTHER)
                self._add(current, frame, estimator, clock)
            if current is not None:
                end = current.last_ts + period
                if spec.end_us is not None:
                    end = min(end, spec.end_us)
                yield self._close(spec, current, max(end, current.last_ts + 1))
        finally:
            frames.close()
            if estimator is not None:
                estimator.close()

    def _open(self, spec: ClipSpec, frame: video.Frame) -> _OpenClip:
        h, w = frame.rgb.shape[:2]
        streams = {
            m: ms.StreamInfo(height=h, width=w, frame_rate=self.settings.fps)
            for m in self.modalities
            if m in ms.IMAGE_MODALITIES
        }
        ctx = ms.ClipContext(
            example_id=ms.clip_id(spec.media_id, frame.timestamp_us),
            dataset_name=self.settings.dataset_name,
            data_path=spec.data_path,
            media_id=spec.media_id,
            start_us=frame.timestamp_us,
            end_us=frame.timestamp_us + 1,  # replaced by the real end in _close
            label_index=spec.label_index,
            label=spec.label,
        )
        return _OpenClip(
            builder=ms.SequenceExampleBuilder(
                ctx, streams, keypoints=ms.MODALITY_KEYPOINTS in self.modalities
            ),
            start_us=frame.timestamp_us,
            tracker=IouTracker(fps=self.settings.fps),
        )

    def _add(self, clip: _OpenClip, frame: video.Frame, estimator, clock: CostClock) -> None:
        """Adds a frame to the clip; its CPU time is charged to its stages on `clock`."""
        q = self.settings.jpeg_quality
        rgb_jpeg = pose_jpeg = None
        poses = FramePoses.empty()
        track_ids = np.zeros((0,), np.int64)
        if estimator is not None:
            try:
                poses = estimator.detect(frame.pose_rgb, frame.timestamp_us)
            except Exception as e:
                raise StageError("pose", e) from e
            clock.charge(di.COST_POSE)
            keep = suppress_duplicates(poses.boxes, poses.box_scores)
            track_ids = np.full(poses.num_people, -1, np.int64)
            track_ids[keep] = clip.tracker.update(poses.boxes[keep])
            # Persons ordered by track id; duplicates (-1) dropped.
            order = keep[np.argsort(track_ids[keep], kind="stable")]
            poses = dataclasses.replace(
                poses,
                keypoints=poses.keypoints[order],
                scores=poses.scores[order],
                boxes=poses.boxes[order],
                box_scores=poses.box_scores[order],
            )
            track_ids = track_ids[order]
            clock.charge(di.COST_TRACKING)
            if self._render:
                try:
                    rendered = render_poses(
                        frame.rgb, poses.keypoints, poses.scores, poses.boxes, self.style
                    )
                except Exception as e:
                    raise StageError("render", e) from e
                clock.charge(di.COST_RENDER)
            clip.persons += len(track_ids)
        try:
            if ms.MODALITY_RGB in self.modalities or self._flow_algo is not None:
                rgb_jpeg = encode_jpeg(frame.rgb, q)
            if self._render:
                pose_jpeg = encode_jpeg(rendered, q)
            # Flow is computed from the RGB frame as stored (whether or not RGB is written), so
            # that TV-L1 on a record's decoded RGB frames gives back the record's flow.
            gray = to_gray(decode_jpeg(rgb_jpeg)) if self._flow_algo is not None else None
        except Exception as e:
            raise StageError("encode", e) from e
        clock.charge(di.COST_JPEG)
        if ms.MODALITY_RGB not in self.modalities:
            rgb_jpeg = None
        if gray is not None:
            if clip.prev_gray is not None:
                try:
                    flow = compute_flow(self._flow_algo, clip.prev_gray, gray)
                    clock.charge(di.COST_FLOW)
                    quantized = quantize_flow(flow)
                    clock.charge(di.COST_OTHER)
                    flow_jpeg = encode_jpeg(
                        quantized, self.settings.flow_jpeg_quality, full_chroma=True
                    )
                    clock.charge(di.COST_JPEG)
                    clip.builder.add_flow(clip.prev_ts, flow_jpeg)
                except Exception as e:
                    raise StageError("flow", e) from e
            clip.prev_gray, clip.prev_ts = gray, frame.timestamp_us
        clip.builder.add_frame(
            frame.timestamp_us,
            rgb_jpeg=rgb_jpeg,
            pose_jpeg=pose_jpeg,
            keypoints=poses.keypoints if estimator is not None else None,
            keypoint_scores=poses.scores if estimator is not None else None,
            boxes=poses.boxes if estimator is not None else None,
            box_scores=poses.box_scores if estimator is not None else None,
            track_ids=track_ids if estimator is not None else None,
        )
        clip.last_ts = frame.timestamp_us
        clock.charge(di.COST_OTHER)

    def _close(self, spec: ClipSpec, clip: _OpenClip, end_us: int) -> ClipRecord:
        try:
            pieces = clip.builder.serialize_pieces(end_us=end_us, release=True)
        except Exception as e:
            raise StageError("encode", e) from e
        return ClipRecord(
            example_id=ms.clip_id(spec.media_id, clip.start_us),
            split=spec.split,
            num_frames=clip.builder.num_frames,
            num_persons=clip.persons,
            duration_us=end_us - clip.start_us,
            pieces=tuple(pieces),
        )


class _local_copy:
    """Context manager: a local path for `path`; gs:// objects are copied to a temp file first."""

    def __init__(self, path: str):
        self.path = path
        self._tmp: str | None = None

    def __enter__(self) -> str:
        if "://" not in self.path:
            if not os.path.exists(self.path):
                raise StageError("fetch", FileNotFoundError(f"video {self.path!r} does not exist"))
            return self.path
        from apache_beam.io.filesystems import FileSystems

        suffix = os.path.splitext(self.path)[1]
        fd, self._tmp = tempfile.mkstemp(prefix="perfnet-", suffix=suffix)
        try:
            with os.fdopen(fd, "wb") as out, FileSystems.open(self.path) as src:
                while chunk := src.read(1 << 22):
                    out.write(chunk)
        except Exception as e:
            self.__exit__(None, None, None)
            missing = FileNotFoundError(f"video {self.path!r} does not exist")
            raise StageError("fetch", e if _exists(self.path) else missing) from e
        return self._tmp

    def __exit__(self, *exc):
        if self._tmp and os.path.exists(self._tmp):
            os.remove(self._tmp)
        return False


def _exists(path: str) -> bool:
    from apache_beam.io.filesystems import FileSystems

    try:
        return FileSystems.exists(path)
    except Exception:  # the store itself is unreachable: report the original error
        return True
