"""Decode catalogue: trimmed, spliced, re-timed, mirrored and non-regular inputs.

Every input is made here with the static FFmpeg of the `imageio-ffmpeg` wheel (test extra), each
bad input beside a good one. A good input must be written with the frames FFmpeg shows, timed by
their presentation timestamps; a bad one must end in exactly one `VideoError` naming the input
and the reason. The rules are in the docstring of `pipelines/stages/video.py`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import pytest

from pipelines.stages import video

REPO = Path(__file__).resolve().parents[3]

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
SRC = ["-f", "lavfi", "-i"]
X264 = ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-bf", "0"]


def _ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def _setpts(path: Path, expr: str, n: int = 30) -> str:
    """n frames of testsrc at 30 fps whose timestamps are setpts's `expr` (frames N), as-is."""
    _ffmpeg(*SRC, "testsrc=size=64x48:rate=30", "-frames:v", str(n), "-vf",
            f"setpts='{expr}/30/TB'", "-fps_mode", "passthrough", *X264, str(path))  # fmt: skip
    return str(path)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("decode")
    m = {}
    m["long"] = str(d / "long.mp4")  # 4 s at 24 fps, a key frame every 2 s
    _ffmpeg(*SRC, "testsrc=size=64x48:rate=24", "-t", "4", *X264, "-g", "48", m["long"])
    m["cut"] = str(d / "cut.mp4")  # stream copy from 1.3 s: the pre-roll is hidden by an edit list
    _ffmpeg("-ss", "1.3", "-i", m["long"], "-t", "1", "-c", "copy", m["cut"])
    m["cut_remux"] = str(d / "cut_remux.mkv")
    _ffmpeg("-i", m["cut"], "-c", "copy", m["cut_remux"])
    m["offset"] = str(d / "offset.mkv")  # starts at 100 s
    _ffmpeg(*SRC, "testsrc=size=64x48:rate=30", "-frames:v", "30", *X264,
            "-output_ts_offset", "100", m["offset"])  # fmt: skip
    m["vfr_gap"] = _setpts(d / "vfr_gap.mkv", "if(lt(N,15),N,N+15)")  # a 0.5 s gap
    m["jump"] = _setpts(d / "jump.mkv", "if(lt(N,15),N,N+12000)")  # +400 s after frame 14
    m["back"] = _setpts(d / "back.mkv", "if(lt(N,15),N+30,N-15)")  # back by 1 s at frame 15
    ts = d / "half.ts"
    _ffmpeg(*SRC, "testsrc=size=64x48:rate=30", "-frames:v", "15", *X264, str(ts))
    m["joined"] = str(d / "joined.ts")  # cat a.ts b.ts: the timestamps start again
    Path(m["joined"]).write_bytes(ts.read_bytes() * 2)
    data = Path(m["offset"]).read_bytes()
    m["offset_cut"] = str(d / "offset_cut.mkv")  # the offset mkv, truncated at 90 %
    Path(m["offset_cut"]).write_bytes(data[: int(len(data) * 0.9)])
    m["audio_longer"] = str(d / "audio_longer.mp4")  # 1 s of video, 1.5 s of audio, moov first
    _ffmpeg(*SRC, "testsrc=size=64x48:rate=30:duration=1", *SRC,
            "sine=frequency=440:duration=1.5", *X264, "-c:a", "aac", "-movflags", "+faststart",
            m["audio_longer"])  # fmt: skip
    data = Path(m["audio_longer"]).read_bytes()
    m["audio_longer_cut"] = str(d / "audio_longer_cut.mp4")  # the same, truncated at 60 %
    Path(m["audio_longer_cut"]).write_bytes(data[: int(len(data) * 0.6)])
    return m


def _cv_timestamps(path: str) -> list[int]:
    """Presentation timestamps (us) of the frames OpenCV decodes, as FFmpeg shows them."""
    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    out = []
    while cap.read()[0]:
        out.append(int(round(cap.get(cv2.CAP_PROP_POS_MSEC) * 1000)))
    cap.release()
    return out


def _ffmpeg_frame_count(path: str) -> int:
    """Frames FFmpeg itself decodes and shows (its CLI, timestamps passed through)."""
    run = subprocess.run([FFMPEG, "-hide_banner", "-i", path, "-fps_mode", "passthrough", "-f",
                          "null", "-"], capture_output=True, text=True, check=True)  # fmt: skip
    line = [x for x in run.stderr.replace("\r", "\n").splitlines() if x.startswith("frame=")][-1]
    return int(line.split("=")[1].split()[0])


# ---------------------------------------------------------------------------------------------
# 1. Trimmed files are not truncated files.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["long", "cut", "cut_remux", "offset", "vfr_gap"])
def test_trimmed_files_are_written_whole(media, name):
    path = media[name]
    frames = list(video.iter_frames(path, short_side=0))
    ts = _cv_timestamps(path)
    assert len(ts) == _ffmpeg_frame_count(path)  # OpenCV decodes what FFmpeg shows
    assert ts[0] == 0  # relative to the stream's start (the offset mkv starts at 100 s)
    expected = video.resample_indices(ts, 0, None, 25.0)
    # The last frame lasts one declared interval (here) or the median one (resample_indices):
    # the two ends may differ by one output frame.
    assert len(frames) - len(expected) in (0, 1)
    assert [f.source_index for f in frames][: len(expected)] == expected
    assert [f.timestamp_us for f in frames] == [40_000 * k for k in range(len(frames))]
    if name in ("long", "cut"):  # 24 fps: every decoded frame is shown at 25 fps
        assert sorted(set(expected)) == list(range(len(ts)))


def test_audio_that_runs_on_after_the_last_frame_is_not_truncation(media):
    """The container's duration is the audio's 1.5 s; the video stream declares its own 1 s."""
    import av

    with av.open(media["audio_longer"]) as c:
        assert c.duration > 1_400_000  # the container counts the audio
    frames = list(video.iter_frames(media["audio_longer"]))
    assert [f.timestamp_us for f in frames] == [40_000 * k for k in range(25)]
    with pytest.raises(video.VideoError, match="truncated or corrupt") as e:
        list(video.iter_frames(media["audio_longer_cut"]))  # a cut one still fails
    assert "audio_longer_cut.mp4" in str(e.value)


def test_a_truncated_file_with_a_start_offset_is_still_truncated(media):
    with pytest.raises(video.VideoError, match="truncated or corrupt") as e:
        list(video.iter_frames(media["offset_cut"]))
    assert "offset_cut.mkv" in str(e.value)
    assert len(list(video.iter_frames(media["offset"]))) in (25, 26)  # the whole file beside it


# ---------------------------------------------------------------------------------------------
# 2. A forward jump is a failure, not thousands of copies of a frame.
# ---------------------------------------------------------------------------------------------
def test_a_forward_jump_fails_with_its_size(media):
    yielded = 0
    with pytest.raises(video.VideoError) as e:
        for _ in video.iter_frames(media["jump"]):
            yielded += 1
    msg = str(e.value)
    assert "jump.mkv" in msg and "timestamps jump forward by 400.0 s after frame 14" in msg
    assert yielded <= 13  # the 0.5 s before the jump, nothing of the gap
    # A window that ends before the jump is whole; the 0.5 s gap of the VFR file is kept.
    assert len(list(video.iter_frames(media["jump"], 0, 400_000))) == 10
    assert len(list(video.iter_frames(media["vfr_gap"]))) == 38  # 1.5 s at 25 fps


# ---------------------------------------------------------------------------------------------
# 3. Timestamps that go back: every frame kept, in decode order, with a warning.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["back", "joined"])
def test_backward_timestamps_keep_every_frame_in_decode_order(media, name, caplog):
    path = media[name]
    assert _ffmpeg_frame_count(path) == 30
    with caplog.at_level("WARNING", logger="pipelines.stages.video"):
        frames = list(video.iter_frames(path, short_side=0))
    shown = [f.source_index for f in frames]
    # 30 frames, re-timed one interval apart, at 25 fps: 25 (or 26) outputs, at most one frame
    # in a row skipped by the resampling, in decode order, to the end.
    assert len(frames) in (25, 26) and len(set(shown)) >= 25
    assert shown == sorted(shown) and shown[-1] >= 28
    assert max(np.diff(shown)) <= 2
    assert [f.timestamp_us for f in frames] == [40_000 * k for k in range(len(frames))]
    assert [r for r in caplog.records if "timestamps go back" in r.getMessage()]
    assert len([r for r in caplog.records if name in r.getMessage()]) == 1  # once per video
    # Decode order: the stored images are the decoded frames, one by one.
    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    decoded = [cv2.cvtColor(cap.read()[1], cv2.COLOR_BGR2RGB) for _ in range(30)]
    cap.release()
    for f in frames:
        np.testing.assert_array_equal(f.rgb, decoded[f.source_index])


# ---------------------------------------------------------------------------------------------
# 4. A named pipe is refused at once, not waited on.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call", ["list(video.iter_frames(p))", "video.probe(p)"])
def test_a_fifo_is_refused_quickly(tmp_path, media, call):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    code = (
        "import sys; from pipelines.stages import video; p = sys.argv[1]\n"
        f"try:\n    {call}\nexcept video.VideoError as e:\n    print(e)"
    )
    t0 = time.monotonic()
    try:  # in a child process: a reader blocked in open() is killed, not left behind
        run = subprocess.run([sys.executable, "-c", code, str(fifo)], capture_output=True,
                             text=True, timeout=20, cwd=REPO)  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("opening a FIFO blocked")
    assert time.monotonic() - t0 < 15
    msg = run.stdout.strip()
    assert "pipe.mp4" in msg and "named pipe (FIFO), not a regular file" in msg, run.stderr
    assert os.listdir(tmp_path) == ["pipe.mp4"]  # nothing written beside it
    assert len(list(video.iter_frames(media["long"]))) == 100  # the good file beside it


# ---------------------------------------------------------------------------------------------
# 5. A mirrored display matrix: the frames as FFmpeg's autorotation shows them.
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def marked(tmp_path_factory) -> str:
    """Lossless 64x48: the top-left quadrant white, a red block in the top-right corner (no two
    of the eight turns and flips look alike)."""
    d = tmp_path_factory.mktemp("mirror")
    img = np.zeros((48, 64, 3), np.uint8)
    img[:24, :32] = 255
    img[:8, 48:] = (0, 0, 255)  # BGR red
    cv2.imwrite(str(d / "marked.png"), img)
    out = str(d / "marked.mp4")
    _ffmpeg("-loop", "1", "-i", str(d / "marked.png"), "-frames:v", "3", "-r", "10",
            "-c:v", "libx264", "-pix_fmt", "yuv444p", "-crf", "0", out)  # fmt: skip
    return out


@pytest.mark.parametrize(
    "flags",
    [
        (),  # good: no matrix
        ("-display_rotation", "90"),  # good: a plain rotation (OpenCV applies it)
        ("-display_hflip",),
        ("-display_vflip",),
        ("-display_rotation", "90", "-display_hflip"),
        ("-display_rotation", "-90", "-display_hflip"),
        ("-display_rotation", "180", "-display_hflip"),
    ],
    ids=["none", "rot90", "hflip", "vflip", "rot90_hflip", "rot-90_hflip", "rot180_hflip"],
)
def test_display_matrix_as_ffmpeg_shows_it(tmp_path, marked, flags):
    path = str(tmp_path / "t.mp4")
    _ffmpeg(*flags, "-i", marked, "-c", "copy", path)
    frames = list(video.iter_frames(path, short_side=0))
    info = video.probe(path)
    raw = subprocess.run(
        [
            FFMPEG,
            "-v",
            "error",
            "-i",
            path,
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ],
        capture_output=True,
        check=True,
    ).stdout
    h, w = frames[0].rgb.shape[:2]
    assert (w, h) == (info.width, info.height)
    expected = np.frombuffer(raw, np.uint8).reshape(h, w, 3)  # FFmpeg's autorotated frame
    diff = np.abs(frames[0].rgb.astype(int) - expected.astype(int))
    assert diff.mean() < 4, f"{flags}: mean difference {diff.mean():.1f} from FFmpeg's frame"
