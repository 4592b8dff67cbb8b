"""Shared fixtures: synthetic videos made by the tests, and the cached real sample assets."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

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


GCS_BUCKET = "perfnet-test"  # the GCS emulator's bucket, shared by the tests that use gs://


@pytest.fixture(scope="session")
def gcs_emulator():
    """A real local GCS emulator (gcp-storage-emulator) with STORAGE_EMULATOR_HOST pointing at
    it and bucket GCS_BUCKET; yields its URL. Tests keep to their own folders in the bucket."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    exe = os.path.join(os.path.dirname(sys.executable), "gcp-storage-emulator")
    proc = subprocess.Popen(
        [exe, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory",
         "--default-bucket", GCS_BUCKET, "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    host = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{host}/storage/v1/b/{GCS_BUCKET}", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("the GCS emulator did not start")
    old = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = host
    from pipelines.storage.gcs import configure_emulator

    configure_emulator()
    yield host
    proc.kill()
    proc.wait()
    if old is None:
        os.environ.pop("STORAGE_EMULATOR_HOST")
    else:
        os.environ["STORAGE_EMULATOR_HOST"] = old
