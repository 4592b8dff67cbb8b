"""Shared fixtures: synthetic videos made by the tests, and the cached real sample assets."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_video(path, num_frames: int, fps: float, size=(64, 48), fourcc="mp4v", value=None):
    """Writes a video whose frame i is a solid gray of level `value(i)` (default 10 * i % 250).

    size is (width, height) in pixels. Returns the path.
    """
    import cv2  # here, not at the top: the training tests run where OpenCV is absent

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened(), f"cannot write {path}"
    for i in range(num_frames):
        level = (10 * i) % 250 if value is None else value(i)
        writer.write(np.full((size[1], size[0], 3), level, np.uint8))
    writer.release()
    return str(path)


@pytest.fixture(scope="session")
def assets_ready():
    """The cached sample videos and pose model, as the set-up step leaves them."""
    from pipelines import assets

    try:
        model = assets.default_pose_model_path()
        manifest = assets.sample_manifest_path()
    except FileNotFoundError as e:
        pytest.fail(f"run the set-up step first (python -m pipelines.assets fetch): {e}")
    return {"model": model, "manifest": manifest}
