"""Video decoding: stream frames of a clip window, resampled to a fixed rate and resized.

Frames are decoded one at a time with OpenCV's FFmpeg backend (rotation metadata applied) and
yielded as soon as they are selected, so memory holds one or two decoded frames, never the clip.
PyAV (`av`) reads what OpenCV does not expose: the container's duration and start time, and the
display matrix of the first frame (to see a mirror).

Resampling rule (by timestamp): output frame k of a window starting at `start_us` has the time
`t_k = start_us + round(k * 1e6 / fps)`, and shows the source frame on screen at `t_k`, i.e. the
last source frame whose presentation timestamp is <= t_k (the first frame if t_k precedes every
frame).
Output frames run while `t_k < end_us`, where `end_us` defaults to the end of the last source frame.

Timing rules (nothing lost, nothing destroyed, nothing silent):

- Every frame FFmpeg decodes and would show is kept and timed by its presentation timestamp,
  relative to the stream's start (a 100 s start offset is time 0). Frames hidden by an edit list
  (the pre-roll of a stream-copy cut) are not shown by FFmpeg and are not counted.
- Timestamps that go back (or repeat): the frames are kept in decode order, as FFmpeg shows them;
  each frame whose timestamp is not after the previous frame's is re-timed to one declared frame
  interval after it, and the frames that follow keep their spacing (an offset, as FFmpeg applies
  to the discontinuities of MPEG-TS). A warning names the video and the first such frame.
- Timestamps that jump forward by more than `MAX_GAP_US` (10 s) or 10 declared frame intervals,
  whichever is longer, where the gap reaches into the window: `VideoError` ("timestamps jump
  forward by 400.0 s after frame 14"). Filling such a gap would repeat one frame for minutes.
- Truncation: when the stream ends before the window does, the end of the last frame (its
  timestamp plus one frame interval) is compared with the container's duration (for Matroska,
  whose duration counts from time 0, the duration less the start offset where that is shorter;
  the video stream's own duration where the container declares a shorter one for it, since an
  audio track may run on after the last frame); more than max(2 frame intervals, 1 %) short
  is `VideoError` "... (truncated or corrupt)". A trimmed file (edit list, start offset,
  variable rate with gaps) is not a truncated file. Only where the container declares no
  duration is the frame count compared, with the same slack.
- Paths that are not regular files (a named pipe, a device, a socket) are refused before they are
  opened, so a FIFO cannot hold a worker; a directory is "not a readable video file".
- A display matrix with a mirror (negative determinant): OpenCV would apply only its rotation
  part (an upside-down frame for a horizontal flip with 90 or 180 degrees); the frames are
  transformed as FFmpeg's own autorotation does (transpose, flip) instead.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import stat
from collections.abc import Iterator, Sequence

import av
import cv2
import numpy as np

from schemas.media_sequence import MICROS

MAX_GAP_US = 10 * MICROS  # longest forward jump between consecutive timestamps (see above)
_log = logging.getLogger(__name__)


class VideoError(Exception):
    """The video cannot be decoded or its window holds no frame. The message says why."""


class LimitError(VideoError):
    """The video exceeds a resource limit; found before the expensive work where possible."""


@dataclasses.dataclass(frozen=True)
class Limits:
    """Resource caps, checked before decoding (size, duration) and while decoding (frames).

    Attributes:
      max_frame_pixels: most pixels per decoded frame (width * height); 0: no limit.
      min_frame_side: fewest pixels on the shorter side of a decoded frame.
      max_duration_us: longest window to process, microseconds; 0: no limit. A window without an
        end is as long as the video's declared duration.
      max_decoded_frames: most source frames to decode for one window (frames before the window
        start count too); 0: no limit.
    """

    max_frame_pixels: int = 3840 * 2160
    min_frame_side: int = 32
    max_duration_us: int = 600 * MICROS
    max_decoded_frames: int = 50_000

    def check_info(self, info: VideoInfo, path: str, start_us: int, end_us: int | None) -> None:
        """Raises LimitError naming the video, the limit and the value."""
        pixels = info.width * info.height
        if self.max_frame_pixels and pixels > self.max_frame_pixels:
            raise LimitError(
                f"video {path!r}: frames of {info.width}x{info.height} = {pixels} pixels exceed "
                f"the limit of {self.max_frame_pixels} (--max_frame_pixels)"
            )
        if min(info.width, info.height) < self.min_frame_side:
            raise LimitError(
                f"video {path!r}: frames of {info.width}x{info.height} are smaller than "
                f"{self.min_frame_side} pixels on the shorter side (--min_frame_side)"
            )
        end = end_us if end_us is not None else info.duration_us
        if self.max_duration_us and end is not None and end - start_us > self.max_duration_us:
            raise LimitError(
                f"video {path!r}: the window of {(end - start_us) / MICROS:.1f} s exceeds the "
                f"limit of {self.max_duration_us / MICROS:.1f} s (--max_duration_seconds)"
            )


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What the container declares: frame size in pixels, fps, frame count.

    OpenCV applies rotation metadata to the decoded frames (CAP_PROP_ORIENTATION_AUTO is on by
    default) and reports the size of the rotated frame.
    """

    width: int
    height: int
    fps: float
    frame_count: int

    @property
    def duration_us(self) -> int | None:
        if self.fps > 0 and self.frame_count > 0:
            return int(round(self.frame_count * MICROS / self.fps))
        return None


@dataclasses.dataclass(frozen=True)
class Frame:
    """One output frame.

    Attributes:
      rgb: uint8 [H, W, 3], the stored frame (shorter side `short_side`).
      timestamp_us: its time in the source, microseconds.
      source_index: index of the decoded source frame it shows.
      pose_rgb: uint8 [H', W', 3], the same frame at the pose estimator's resolution; `rgb`
        itself when both resolutions are the same.
    """

    rgb: np.ndarray
    timestamp_us: int
    source_index: int
    pose_rgb: np.ndarray | None = None


def output_timestamps(start_us: int, end_us: int, fps: float) -> list[int]:
    """Times of the output frames of a window: `start_us + round(k * 1e6 / fps)` while < end_us."""
    if fps <= 0:
        raise ValueError(f"fps={fps!r}: must be > 0")
    if end_us <= start_us:
        return []
    n = math.ceil((end_us - start_us) * fps / MICROS - 1e-9)
    times = [start_us + int(round(k * MICROS / fps)) for k in range(n)]
    return [t for t in times if t < end_us]


def resample_indices(
    source_timestamps_us: Sequence[int], start_us: int, end_us: int | None, fps: float
) -> list[int]:
    """Source frame index shown at each output time (the rule in the module docstring).

    Args:
      source_timestamps_us: presentation timestamps of the source frames, increasing, microseconds.
      start_us: window start, microseconds.
      end_us: window end (exclusive), microseconds; None for the end of the last frame, taken as
        its timestamp plus the median frame interval.
      fps: output rate, frames per second, > 0.

    Returns:
      One source index per output frame; empty if the window holds no frame.
    """
    ts = list(source_timestamps_us)
    if not ts:
        return []
    if end_us is None:
        end_us = ts[-1] + _median_interval(ts)
    end_us = min(end_us, ts[-1] + _median_interval(ts))
    out, i = [], 0
    for t in output_timestamps(start_us, end_us, fps):
        while i + 1 < len(ts) and ts[i + 1] <= t:
            i += 1
        out.append(i)
    return out


def _median_interval(ts: Sequence[int]) -> int:
    if len(ts) < 2:
        return MICROS // 25
    return int(np.median(np.diff(np.asarray(ts, np.int64))))


def resize_short_side(frame: np.ndarray, short_side: int) -> np.ndarray:
    """Resizes so the shorter side is `short_side` pixels, keeping the aspect ratio.

    Args:
      frame: uint8 [H, W, C].
      short_side: target shorter side in pixels, >= 1; 0 keeps the frame as it is.

    Returns:
      uint8 [H', W', C] with min(H', W') == short_side and the longer side rounded to the nearest
      pixel. Downscaling uses area averaging, upscaling bilinear interpolation.
    """
    if short_side < 0:
        raise ValueError(f"short_side={short_side!r}: must be >= 0")
    h, w = frame.shape[:2]
    if short_side == 0 or min(h, w) == short_side:
        return frame
    new_h, new_w = stored_size(h, w, short_side)
    interp = cv2.INTER_AREA if short_side < min(h, w) else cv2.INTER_LINEAR
    return cv2.resize(frame, (new_w, new_h), interpolation=interp)


def stored_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) after `resize_short_side`; 0 keeps the size."""
    if short_side == 0:
        return height, width
    scale = short_side / min(height, width)
    if height <= width:
        return short_side, max(1, int(round(width * scale)))
    return max(1, int(round(height * scale))), short_side


def probe(path: str) -> VideoInfo:
    """Reads the container's declared size, fps and frame count; VideoError if it cannot open."""
    cap = _open(path)
    try:
        return _info(cap, path)
    finally:
        cap.release()


# Still-image formats that FFmpeg would open as a one-frame "video".
_IMAGE_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def _image_kind(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return next((kind for sig, kind in _IMAGE_SIGNATURES if head.startswith(sig)), None)


_FILE_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _check_regular(path: str) -> None:
    """Refuses paths that are not regular files before anything opens them (opening a FIFO
    blocks until a writer comes). A directory gets the 'not a readable video file' message."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # OpenCV reports it
    if stat.S_ISDIR(mode):
        raise VideoError(f"cannot open video {path!r}: not a readable video file (a directory)")
    if not stat.S_ISREG(mode):
        kind = next((k for test, k in _FILE_KINDS if test(mode)), "not a regular file")
        raise VideoError(f"video {path!r} is {kind}, not a regular file: refused unread")


def _open(path: str, threads: int = 0):
    """An opened OpenCV FFmpeg reader of `path`; `threads` > 0 caps its decoding threads (FFmpeg's
    default is one per core, each with its own frame buffers). The frames are the same."""
    _check_regular(path)
    kind = _image_kind(path)
    if kind is not None:
        raise VideoError(f"file {path!r} is a {kind} image, not a video")
    if threads > 0:
        cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, int(threads)])
    else:
        cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"cannot open video {path!r}: not a readable video file")
    return cap


@dataclasses.dataclass(frozen=True)
class _Container:
    """What PyAV reads of the container: duration and video stream start, microseconds (None
    where unknown), and the 2x2 part of the first frame's display matrix (None: none)."""

    duration_us: int | None = None
    start_us: int = 0
    matrix: tuple[int, int, int, int] | None = None
    stream_duration_us: int | None = None  # the video stream's own, where the container says it

    @property
    def mirrored(self) -> bool:
        if self.matrix is None:
            return False
        a, b, c, d = self.matrix
        return a * d - b * c < 0

    def expected_end_us(self) -> int | None:
        """The stream's end relative to its first timestamp, where the container knows it: the
        container's duration, or the video stream's own where that is shorter (an audio track
        that runs on after the last frame lengthens the container, not the video)."""
        d = self.duration_us
        if d is None or d <= 0:
            return None
        if 0 < d - self.start_us < d:  # Matroska: the duration counts from time 0
            d -= self.start_us
        if self.stream_duration_us is not None and 0 < self.stream_duration_us < d:
            return self.stream_duration_us
        return d


def _container(path: str) -> _Container:
    """Reads the container with PyAV; anything PyAV cannot read stays unknown."""
    try:
        with av.open(path) as c:
            if not c.streams.video:
                return _Container()
            s = c.streams.video[0]
            start = 0
            if s.start_time is not None and s.time_base is not None:
                start = max(0, int(round(s.start_time * s.time_base * MICROS)))
            duration = c.duration if c.duration and c.duration > 0 else None
            stream_duration = None
            if s.duration and s.duration > 0 and s.time_base is not None:
                stream_duration = int(round(s.duration * s.time_base * MICROS))
            matrix = None
            for frame in c.decode(s):
                for sd in frame.side_data:
                    if sd.type.name == "DISPLAYMATRIX" and len(bytes(sd)) >= 36:
                        m = np.frombuffer(bytes(sd)[:36], "<i4")
                        matrix = (int(m[0]), int(m[1]), int(m[3]), int(m[4]))
                break
            return _Container(
                duration_us=duration,
                start_us=start,
                matrix=matrix,
                stream_duration_us=stream_duration,
            )
    except Exception:  # noqa: BLE001 - PyAV's errors are many; OpenCV's reading still applies
        return _Container()


def _mirror_transform(matrix: tuple[int, int, int, int]):
    """The transform of a decoded (unrotated) frame for a display matrix, as FFmpeg's
    autorotation inserts it (fftools: transpose, hflip, vflip by the matrix's rotation)."""
    a, b, c, d = matrix  # m[0], m[1], m[3], m[4]
    s0, s1 = math.hypot(a, c), math.hypot(b, d)
    theta = round(math.degrees(math.atan2(b / s1, a / s0))) % 360 if s0 and s1 else 0
    if abs(theta - 90) < 1:
        if c > 0:
            return lambda f: np.ascontiguousarray(f.transpose(1, 0, 2))  # cclock_flip
        return lambda f: cv2.rotate(f, cv2.ROTATE_90_CLOCKWISE)
    if abs(theta - 270) < 1:
        if c < 0:
            return lambda f: np.ascontiguousarray(f[::-1, ::-1].transpose(1, 0, 2))  # clock_flip
        return lambda f: cv2.rotate(f, cv2.ROTATE_90_COUNTERCLOCKWISE)
    if abs(theta - 180) < 1:
        ops = (1 if a < 0 else None, 0 if d < 0 else None)
    else:
        ops = (None, 0 if d < 0 else None)
    axes = tuple(x for x in ops if x is not None)
    if not axes:
        return None
    return lambda f: np.ascontiguousarray(np.flip(f, axes))


def _info(cap, path: str) -> VideoInfo:
    w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    if w <= 0 or h <= 0:
        raise VideoError(f"video {path!r} has no video stream (frame size {w}x{h})")
    return VideoInfo(width=w, height=h, fps=fps, frame_count=max(count, 0))


def iter_frames(
    path: str,
    start_us: int = 0,
    end_us: int | None = None,
    fps: float = 25.0,
    short_side: int = 256,
    pose_short_side: int | None = None,
    limits: Limits | None = None,
    threads: int = 0,
) -> Iterator[Frame]:
    """Streams the window [start_us, end_us) of a video, resampled to `fps` and resized.

    Args:
      path: local video file.
      start_us: window start in the source, microseconds, >= 0.
      end_us: window end (exclusive), microseconds; None for the end of the video.
      fps: output frame rate, frames per second, > 0.
      short_side: shorter side of the output frames in pixels (0 keeps the source size).
      pose_short_side: if given, each frame also carries `pose_rgb` with this shorter side
        (0: the source size), made from the decoded frame, not from the stored one, and never
        larger than the decoded frame.
      limits: resource caps; None for none.
      threads: decoding threads, >= 0 (0: FFmpeg's default, one per core). A worker process
        sharing the machine with others passes its share: each thread holds frame buffers.

    Yields:
      `Frame`s in time order: RGB uint8 [H, W, 3], timestamps `start_us + round(k * 1e6 / fps)`.

    Raises:
      VideoError: the file cannot be opened or decoded, or the window holds no frame.
      LimitError: the video exceeds `limits` (before any frame is decoded where possible).
    """
    if fps <= 0:
        raise ValueError(f"fps={fps!r}: must be > 0")
    if start_us < 0:
        raise ValueError(f"start_us={start_us!r}: must be >= 0")
    if end_us is not None and end_us <= start_us:
        raise ValueError(f"end_us={end_us!r}: must be > start_us={start_us}")
    if threads < 0:
        raise ValueError(f"threads={threads!r}: must be >= 0")
    cap = _open(path, threads)
    try:
        info = _info(cap, path)
        if limits is not None:
            limits.check_info(info, path, start_us, end_us)
        max_frames = limits.max_decoded_frames if limits is not None else 0
        max_us = limits.max_duration_us if limits is not None else 0
        sizes = (short_side, pose_short_side)
        meta = _container(path)
        turn = None
        if meta.mirrored:  # OpenCV would apply the rotation part only
            cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)
            turn = _mirror_transform(meta.matrix)
        yield from _stream(
            cap, info, meta, turn, path, start_us, end_us, fps, sizes, max_frames, max_us
        )
    finally:
        cap.release()


def _stream(
    cap, info: VideoInfo, meta: _Container, turn, path, start_us, end_us, fps, sizes, max_frames,
    max_us,
) -> Iterator[Frame]:  # fmt: skip
    period = MICROS / fps
    src_period = MICROS / info.fps if info.fps > 0 else period
    step = max(1, int(round(src_period)))  # re-timing step after a backward jump
    max_gap = max(MAX_GAP_US, 10 * step)
    k = 0  # next output frame
    prev: list | None = None  # [bgr, pts_us, index, made frames] of the last frame read
    index = -1
    emitted = 0
    offset = 0  # added to the timestamps after a backward jump (see the module docstring)
    warned = False

    def target(k: int) -> int:
        t = start_us + int(round(k * period))
        if max_us and t - start_us >= max_us:
            # The declared duration was short or absent, but the timestamps run on.
            raise LimitError(
                f"video {path!r}: its frames run past {max_us / MICROS:.1f} s from the window "
                "start (--max_duration_seconds)"
            )
        return t

    window_ended = False
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        index += 1
        if max_frames and index >= max_frames:
            raise LimitError(
                f"video {path!r}: more than {max_frames} frames decoded for one window "
                "(--max_decoded_frames)"
            )
        if min(bgr.shape[:2]) < 1 or bgr.ndim != 3:
            raise VideoError(f"video {path!r}: frame {index} has no pixels ({bgr.shape})")
        if turn is not None:
            bgr = turn(bgr)
        pts_ms = cap.get(cv2.CAP_PROP_POS_MSEC)
        raw = int(round(pts_ms * 1000)) if pts_ms > 0 or index == 0 else int(index * src_period)
        pts = raw + offset
        if prev is not None and pts <= prev[1]:
            # Back (or repeated): kept in decode order, one frame interval after the previous.
            if not warned:
                _log.warning(
                    "video %r: timestamps go back at frame %d (%.3f s after %.3f s); the frames "
                    "are kept in decode order and re-timed to follow each other",
                    path, index, pts / MICROS, prev[1] / MICROS,
                )  # fmt: skip
                warned = True
            offset += prev[1] + step - pts
            pts = prev[1] + step
        elif prev is not None and pts - prev[1] > max_gap:
            gap_start, gap_end = prev[1], pts
            if gap_end > start_us and (end_us is None or gap_start < end_us):
                gap, frm, to = (gap_end - gap_start) / MICROS, gap_start / MICROS, gap_end / MICROS
                raise VideoError(
                    f"video {path!r}: timestamps jump forward by {gap:.1f} s after frame "
                    f"{index - 1} (from {frm:.3f} s to {to:.3f} s; at most "
                    f"{max_gap / MICROS:.1f} s between frames can be timed): a spliced or live "
                    "recording, not resampled"
                )
        # Output frames whose time falls before this frame's pts show the previous frame.
        while prev is not None and target(k) < pts and (end_us is None or target(k) < end_us):
            yield _make_frame(prev, target(k), sizes)
            emitted += 1
            k += 1
        if end_us is not None and target(k) >= end_us:
            window_ended = True
            break
        prev = [bgr, pts, index, None]
    if prev is not None:
        # The last frame read is shown until its end (pts + one source frame period).
        stop = prev[1] + int(round(src_period))
        if end_us is not None:
            stop = min(stop, end_us)
        while target(k) < stop:
            yield _make_frame(prev, target(k), sizes)
            emitted += 1
            k += 1
    if index < 0:
        raise VideoError(f"video {path!r}: no frame could be decoded")
    if not window_ended:
        _check_complete(path, info, meta, index + 1, prev[1] + int(round(src_period)), src_period)
    if emitted == 0:
        raise VideoError(
            f"video {path!r}: the window [{start_us / MICROS:.3f}s, "
            f"{'end' if end_us is None else f'{end_us / MICROS:.3f}s'}) holds no frame "
            f"(the video has {index + 1} frames, about {(prev[1] + src_period) / MICROS:.3f}s)"
        )


def _check_complete(path, info: VideoInfo, meta: _Container, decoded, last_end_us, src_period):
    """VideoError if the stream ended well before the container says it does (the truncation
    rule in the module docstring)."""
    expected = meta.expected_end_us()
    if expected is not None:
        slack = max(2 * src_period, expected / 100)
        if last_end_us < expected - slack:
            raise VideoError(
                f"video {path!r} ends at {last_end_us / MICROS:.3f} s after {decoded} frames, "
                f"before the {expected / MICROS:.3f} s its container declares (truncated or "
                "corrupt)"
            )
        return
    declared = info.frame_count
    if declared > 0 and decoded < declared - max(2, declared // 100):
        raise VideoError(
            f"video {path!r} ends after {decoded} of the {declared} frames its container "
            "declares (truncated or corrupt)"
        )


def _make_frame(prev: list, timestamp_us: int, sizes: tuple[int, int | None]) -> Frame:
    """The output frame of a decoded frame; resized once, however often it is shown."""
    if prev[3] is None:
        bgr, short_side, pose_side = prev[0], sizes[0], sizes[1]
        rgb = cv2.cvtColor(resize_short_side(bgr, short_side), cv2.COLOR_BGR2RGB)
        pose = rgb
        if pose_side is not None and pose_side != short_side:
            pose_side = min(pose_side, min(bgr.shape[:2])) if pose_side else 0  # never upscaled
            pose = cv2.cvtColor(resize_short_side(bgr, pose_side), cv2.COLOR_BGR2RGB)
        prev[3] = (rgb, pose if pose_side is not None else None)
    rgb, pose = prev[3]
    return Frame(rgb=rgb, timestamp_us=timestamp_us, source_index=prev[2], pose_rgb=pose)
