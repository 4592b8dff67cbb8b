"""Decoding, resampling by timestamp and resizing, on videos the tests write."""

import numpy as np
import pytest

from pipelines.stages import video
from tests.conftest import write_video


def test_output_timestamps_exact():
    assert video.output_timestamps(0, 200_000, 25.0) == [0, 40_000, 80_000, 120_000, 160_000]
    assert video.output_timestamps(1_000_000, 1_100_000, 25.0) == [1_000_000, 1_040_000, 1_080_000]
    assert video.output_timestamps(0, 100_000, 30.0) == [0, 33_333, 66_667]
    assert video.output_timestamps(5, 5, 25.0) == []


def test_resample_indices_upsample_and_downsample():
    src10 = [i * 100_000 for i in range(5)]  # 10 fps, 0.5 s
    # 25 fps from 10 fps: 0.0,0.04,...,0.48 s -> the frame on screen at each time.
    assert video.resample_indices(src10, 0, None, 25.0) == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4]
    src50 = [i * 20_000 for i in range(10)]  # 50 fps, 0.2 s
    assert video.resample_indices(src50, 0, None, 25.0) == [0, 2, 4, 6, 8]
    # A window in the middle, and a window starting before the first frame.
    assert video.resample_indices(src50, 50_000, 130_000, 25.0) == [2, 4]
    assert video.resample_indices([100_000, 140_000], 0, 200_000, 25.0) == [0, 0, 0, 0, 1]
    assert video.resample_indices([], 0, None, 25.0) == []


@pytest.mark.parametrize("fps,fourcc,ext", [(10.0, "mp4v", "mp4"), (50.0, "MJPG", "avi")])
def test_iter_frames_follows_the_resampling_rule(tmp_path, fps, fourcc, ext):
    n = 20
    path = write_video(tmp_path / f"v.{ext}", n, fps, fourcc=fourcc, value=lambda i: 12 * i)
    frames = list(video.iter_frames(path, 0, None, 25.0, short_side=24))
    src = [int(round(i * 1e6 / fps)) for i in range(n)]
    expected = video.resample_indices(src, 0, None, 25.0)
    assert [f.source_index for f in frames] == expected
    assert [f.timestamp_us for f in frames] == video.output_timestamps(
        0, len(expected) * 40_000, 25
    )
    for f in frames:
        assert f.rgb.shape == (24, 32, 3) and f.rgb.dtype == np.uint8
        assert abs(int(np.median(f.rgb)) - 12 * f.source_index) <= 5


def test_iter_frames_window(tmp_path):
    path = write_video(tmp_path / "v.mp4", 30, 10.0)  # 3 s
    frames = list(video.iter_frames(path, 1_000_000, 1_500_000, 25.0, short_side=48))
    assert [f.timestamp_us for f in frames] == [1_000_000 + 40_000 * k for k in range(13)]
    assert [f.source_index for f in frames] == [10, 10, 10, 11, 11, 12, 12, 12, 13, 13, 14, 14, 14]


def test_window_past_the_end_is_an_error(tmp_path):
    path = write_video(tmp_path / "v.mp4", 10, 10.0)  # 1 s
    with pytest.raises(video.VideoError, match="holds no frame"):
        list(video.iter_frames(path, 5_000_000, 6_000_000))


def test_unreadable_files_are_errors_naming_the_file(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video at all" * 10)
    with pytest.raises(video.VideoError, match="junk.mp4"):
        list(video.iter_frames(str(junk)))
    with pytest.raises(video.VideoError, match="missing.mp4"):
        list(video.iter_frames(str(tmp_path / "missing.mp4")))


def test_resize_short_side_keeps_aspect():
    frame = np.zeros((994, 1768, 3), np.uint8)
    assert video.resize_short_side(frame, 256).shape == (256, 455, 3)
    portrait = np.zeros((1920, 1088, 3), np.uint8)
    assert video.resize_short_side(portrait, 256).shape == (452, 256, 3)
    assert video.stored_size(16, 16, 256) == (256, 256)
    with pytest.raises(ValueError, match="short_side=-1"):
        video.resize_short_side(frame, -1)


def test_pose_frames_come_from_the_decoded_frame(tmp_path):
    path = write_video(tmp_path / "v.mp4", 5, 10.0, size=(96, 64))
    full = list(video.iter_frames(path, 0, None, 25.0, short_side=16, pose_short_side=0))
    assert full[0].rgb.shape == (16, 24, 3) and full[0].pose_rgb.shape == (64, 96, 3)
    # Shown three times (10 -> 25 fps), resized once: the same arrays.
    assert full[0].rgb is full[1].rgb and full[0].pose_rgb is full[2].pose_rgb
    same = list(video.iter_frames(path, 0, None, 25.0, short_side=32, pose_short_side=32))
    assert same[0].pose_rgb is same[0].rgb
    assert list(video.iter_frames(path, 0, None, 25.0, 32))[0].pose_rgb is None


def test_pose_frames_are_never_upscaled(tmp_path):
    path = write_video(tmp_path / "v.mp4", 2, 10.0, size=(96, 64))
    (first, *_) = video.iter_frames(path, 0, None, 25.0, short_side=32, pose_short_side=512)
    assert first.pose_rgb.shape == (64, 96, 3)


def test_decoder_threads_change_nothing_but_the_threads(assets_ready):
    from pipelines import assets

    path = str(assets.cache_dir() / "videos" / "sports2d_demo.mp4")  # H.264, 1768x994

    def frames(threads):
        return [(f.timestamp_us, f.rgb.tobytes()) for f in video.iter_frames(
            path, 0, 1_000_000, 25.0, 256, threads=threads)]  # fmt: skip

    default = frames(0)
    assert len(default) == 25
    assert frames(1) == default and frames(2) == default
    with pytest.raises(ValueError, match="threads=-1"):
        next(video.iter_frames(path, threads=-1))
