"""tf.data input pipeline over the preprocessed shards (local or gs://).

Records are `tf.train.SequenceExample`s in the layout of `schemas.media_sequence` (the record
contract); the shards and the description are where `schemas.layout` puts them
(`<data_dir>/<split>/*.tfrecord`, `<data_dir>/dataset_info.json`, read as
`schemas.dataset_info.DatasetInfo`). For every clip the pipeline takes one time window, one crop
and one mirroring decision and applies them to every requested modality, so that a student and
its teachers see the same clip.

Element of the batched dataset, a dict:

| key | dtype | shape | range / meaning |
|---|---|---|---|
| `rgb` | float32 | [B, T, H, W, 3] | RGB in [-1, 1]: `q / 127.5 - 1`, q the JPEG sample, jittered |
| `pose` | float32 | [B, T, H, W, 3] | pose-rendered frames, same scaling and jitter as `rgb` |
| `flow` | float32 | [B, T, H, W, 2] | (x, y) displacement / 20 in [-1, 1]; see below |
| `heatmap` | float32 | [B, T, H/s, W/s, 17] | skeleton heatmaps in [0, 1]; see below |
| `pose_live` | float32 | [B, T, H, W, 3] | skeletons drawn on the `rgb` clip (`pose_render`) |
| `label` | int32 | [B] | class index in [0, num_classes) |
| `mask` | float32 | [B] | evaluation only: 1 for a real clip, 0 for padding of the last batch |
| `example_id` | string | [B] | only with `with_ids=True` (strings cannot go to a TPU) |

T, H, W are the requested clip length and crop size. Flow: the stored 3-channel JPEG holds
x in R and y in G quantized as `q = floor(255 * clip((v + 20) / 40, 0, 1))`; the pipeline
inverts it, `v = (q / 255 - 0.5) * 2 * s` with s the record's `FORWARD_FLOW/image/saturation`
(20), giving pixels per frame at the stored resolution (x to the right, y down), then divides
by `FLOW_SATURATION` = 20 so the model sees [-1, 1] - the same scale as the images. Flow step t
is the motion from frame t to t+1; window frame t uses flow step t, and the last frame of a
clip (which has no successor) repeats the last flow step. Mirroring reverses the width axis
of every stream and negates flow x. When a frame is smaller than the crop (a portrait video
under a 224x298 crop), the frames are first resized up, preserving the aspect ratio, and
flow displacements are multiplied by the same scale factors.

Heatmaps (`training.heatmaps`): per frame, 17 channels in COCO-17 joint order (or 17 limbs with
`heatmap_limbs`), each the maximum over persons of `score * exp(-d^2 / (2 sigma^2))`, d the
distance in heatmap cells from the cell centre to the joint; H/s, W/s stand for
ceil(H / heatmap_stride), ceil(W / heatmap_stride). They are built from the records' keypoints
(`POSE/region/point/x|y`, `POSE/region/label/confidence`, the pose modality) of the same window
frames, under the same crop, resize and mirroring as the images; mirroring also swaps left and
right joints. Joints scoring below `heatmap_score_threshold` are left out. No photometric
jitter.

Time window: frame indices `clip(start + arange(T), 0, n - 1)` for a clip of n frames. Train:
start is uniform in [min(0, n - T), max(0, n - T)], so a short clip is padded by repeating its
first and/or last frame. Evaluation: start = floor((n - T) / 2), the central window, a short
clip padded equally at both ends (the extra frame, if any, at the end).

Segments (`DataConfig.sampling="segments"`, TSN-style, `segment_indices`): the n frames are
split into T equal segments at floor(i * n / T), i = 0..T, and each segment gives one frame: a
uniformly random one in training, its centre in evaluation; a clip shorter than T repeats its
frames in order. Crop, mirroring and jitter are drawn as for a window.

Randomness is stateless: every random choice of a clip derives from (seed, clip position in
the stream), so a seeded pipeline yields the same batches on every run regardless of
parallelism.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Sequence

import tensorflow as tf

from render.style import DEFAULT_STYLE, RenderStyle
from schemas import layout
from schemas import media_sequence as ms
from schemas.dataset_info import DatasetInfo
from training import heatmaps, pose_render
from training.config import (
    MODALITIES,
    MODALITY_HEATMAP,
    MODALITY_POSE_LIVE,
    RECORD_MODALITY,
    SAMPLINGS,
    DataConfig,
    record_modalities,
)

# Input channels of a model per training modality (`training.config.MODALITIES`).
MODEL_CHANNELS = {
    ms.MODALITY_RGB: 3,
    ms.MODALITY_POSE: 3,
    ms.MODALITY_FLOW: 2,
    MODALITY_HEATMAP: heatmaps.NUM_CHANNELS,
    MODALITY_POSE_LIVE: 3,
}
# The record keys the heatmap modality is built from (the keypoints, which records of the
# `pose` and of the `keypoints` modality carry).
HEATMAP_KEYS = (
    ms.REGION_NUM_REGIONS_KEY,
    ms.POSE_POINT_X_KEY,
    ms.POSE_POINT_Y_KEY,
    ms.POSE_CONFIDENCE_KEY,
)
DATASET_INFO = layout.DATASET_INFO
SHARD_GLOB = layout.SHARD_GLOB
_READ_BUFFER_BYTES = 8 << 20


def list_shards(pattern: str) -> list[str]:
    """Sorted files matching comma-separated glob(s) `pattern` (local or gs://)."""
    if not pattern:
        raise ValueError(f"pattern={pattern!r}: must name TFRecord shards")
    files: set[str] = set()
    for part in pattern.split(","):
        part = part.strip()
        if part:
            files.update(tf.io.gfile.glob(part))
    if not files:
        raise ValueError(f"pattern={pattern!r}: matches no file")
    return sorted(files)


class DataError(ValueError):
    """The records cannot feed the job: a shard lacks a key a requested modality reads, holds
    it with another type, or does not parse. The message names the key (if known) and the file."""


_FEATURE_KIND = {tf.string: "bytes_list", tf.int64: "int64_list", tf.float32: "float_list"}


def _required(spec) -> bool:
    """False for a parse spec that tolerates a missing key (a default or allow_missing)."""
    if isinstance(spec, tf.io.FixedLenFeature):
        return spec.default_value is None
    if isinstance(spec, tf.io.FixedLenSequenceFeature):
        return not spec.allow_missing
    return True


# The person boxes `pose_live` sizes ratio-aware markers by; records without them are read
# (the markers are then sized by the extent of each person's keypoints, as offline).
POSE_LIVE_BOX_KEYS = (
    ms.REGION_BBOX_YMIN_KEY,
    ms.REGION_BBOX_XMIN_KEY,
    ms.REGION_BBOX_YMAX_KEY,
    ms.REGION_BBOX_XMAX_KEY,
)


def check_records(pattern: str, modalities: Sequence[str]) -> str:
    """Checks the first record of the first shard of `pattern` against what `modalities` read.

    The record is parsed as a plain `tf.train.SequenceExample` (no TensorFlow parse op): every
    context and sequence key of the pipeline's parse specs for `modalities` (training
    modalities: `rgb`, `flow`, `pose`, `heatmap`, which reads the pose keypoints `HEATMAP_KEYS`)
    must be present, and hold bytes_list / int64_list / float_list values as
    `schemas.media_sequence.KEYS` declares (sequence keys: checked on their first step).

    Args:
      pattern: comma-separated shard glob(s), local or gs://.
      modalities: the training modalities the job decodes.

    Returns:
      the path of the shard checked. Raises DataError naming the first missing or mistyped key
      and the file (and ValueError if `pattern` matches nothing).
    """
    path = list_shards(pattern)[0]
    try:
        first = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
    except tf.errors.OpError as e:
        raise DataError(f"{path}: cannot read a record: {e.message}") from e
    if first is None:
        raise DataError(f"{path}: holds no record")
    record = tf.train.SequenceExample()
    try:
        record.ParseFromString(first.numpy())
    except Exception as e:  # google.protobuf.message.DecodeError
        raise DataError(f"{path}: first record is no tf.train.SequenceExample: {e}") from e
    ctx_spec, seq_spec = _parse_specs(modalities)
    context = record.context.feature
    lists = record.feature_lists.feature_list
    wanted = ", ".join(modalities)
    for part, spec, where in (("context", ctx_spec, context), ("sequence", seq_spec, lists)):
        for key, feature_spec in spec.items():
            kind = _FEATURE_KIND[feature_spec.dtype]
            if key not in where:
                if not _required(feature_spec) or key in POSE_LIVE_BOX_KEYS:
                    continue
                raise DataError(
                    f"{path}: first record has no {part} key {key!r} ({kind}), which modalities "
                    f"[{wanted}] read; were the records made with those modalities?"
                )
            if part == "context":
                found = where[key].WhichOneof("kind")
            else:
                steps = where[key].feature
                found = steps[0].WhichOneof("kind") if len(steps) else None
            if found is not None and found != kind:  # None: no values to tell
                raise DataError(
                    f"{path}: first record holds {part} key {key!r} as {found}, expected {kind}"
                )
    return path


def split_pattern(data: DataConfig, split: str) -> str:
    """The shard glob of `split` ('train' or 'eval'): the explicit pattern or the data_dir's."""
    if split not in ("train", "eval"):
        raise ValueError(f"split={split!r}: expected 'train' or 'eval'")
    explicit = data.train_pattern if split == "train" else data.eval_pattern
    if explicit:
        return explicit
    if not data.data_dir:
        return ""
    folder = data.train_split if split == "train" else data.eval_split
    return layout.join(data.data_dir, folder, layout.SHARD_GLOB)


def read_dataset_info(data_dir: str) -> DatasetInfo | None:
    """`dataset_info.json` of a preprocessing output directory, or None if there is none.

    Raises ValueError naming the file and field if it is no description this code can read
    (`DatasetInfo.from_text`), its schema version included.
    """
    if not data_dir:
        return None
    path = layout.join(data_dir, layout.DATASET_INFO)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return DatasetInfo.from_text(f.read(), path)


def find_dataset_info(data: DataConfig) -> DatasetInfo | None:
    """The dataset description beside the shards: in `data_dir`, or one level above the
    folder of the first train (else eval) shard pattern."""
    info = read_dataset_info(data.data_dir)
    if info is not None:
        return info
    for pattern in (data.train_pattern, data.eval_pattern):
        if pattern:
            first = pattern.split(",")[0].strip()
            info = read_dataset_info(posixpath.dirname(posixpath.dirname(first)))
            if info is not None:
                return info
    return None


def resolve_num_classes(data: DataConfig, modalities: Sequence[str] = ()) -> int:
    """The class count: the config's, checked against dataset_info.json when present.

    Also checks that the records hold every modality in `modalities` (training modalities:
    `heatmap` needs the records' pose modality). Raises DataError (a ValueError) naming the
    missing modalities (and, for `heatmap`, the missing keys); ValueError for a class count
    mismatch.
    """
    info = find_dataset_info(data)
    if info is not None:
        held = info.modalities if info.modalities is not None else ms.ALL_MODALITIES
        missing = [
            m
            for m in modalities
            if not all(
                _holds(held, r) for r in (record_modalities(m) if m in RECORD_MODALITY else (m,))
            )
        ]
        if missing:
            needs = ""
            if MODALITY_HEATMAP in missing:
                needs = (
                    f"; {MODALITY_HEATMAP!r} is built from the records' keypoints (their "
                    f"{ms.MODALITY_POSE!r} or {ms.MODALITY_KEYPOINTS!r} modality), keys "
                    f"{list(HEATMAP_KEYS)}"
                )
            if MODALITY_POSE_LIVE in missing:
                needs += (
                    f"; {MODALITY_POSE_LIVE!r} draws the records' keypoints (their "
                    f"{ms.MODALITY_POSE!r} or {ms.MODALITY_KEYPOINTS!r} modality) onto their "
                    f"{ms.MODALITY_RGB!r} frames"
                )
            raise DataError(
                f"modalities={list(modalities)}: the records hold only {list(held)}, not "
                f"{missing} ({layout.DATASET_INFO} of "
                f"{data.data_dir or split_pattern(data, 'train')!r}){needs}"
            )
        n = int(info.num_classes or 0)
        if data.num_classes and n and n != data.num_classes:
            raise ValueError(
                f"num_classes={data.num_classes}: {layout.DATASET_INFO} says {n} classes"
            )
        if not data.num_classes:
            return n
    if data.num_classes < 1:
        raise ValueError(
            f"num_classes={data.num_classes}: set data.num_classes (no dataset_info.json with "
            "num_classes was found beside the shards)"
        )
    return data.num_classes


def _holds(held: Sequence[str], record_modality: str) -> bool:
    """Whether records of modalities `held` carry `record_modality` (`pose` carries keypoints)."""
    if record_modality == ms.MODALITY_KEYPOINTS:
        return ms.carries_keypoints(held)
    return record_modality in held


def window_indices(num_steps, length, start):
    """int32 [length]: `clip(start + arange(length), 0, num_steps - 1)`; num_steps >= 1."""
    idx = tf.range(length, dtype=tf.int32) + tf.cast(start, tf.int32)
    return tf.clip_by_value(idx, 0, tf.maximum(tf.cast(num_steps, tf.int32) - 1, 0))


def central_start(num_steps, length):
    """int32: floor((num_steps - length) / 2), the evaluation window start."""
    return tf.math.floordiv(tf.cast(num_steps, tf.int32) - length, 2)


def segment_indices(num_steps, num_segments: int, seed=None):
    """int32 [num_segments]: one frame of each of T = num_segments equal segments (TSN).

    A clip of n = num_steps frames (n >= 1) is split at s_i = floor(i * n / T), i = 0..T;
    segment i holds frames [s_i, s_{i+1}), L_i = s_{i+1} - s_i of them (>= 1 when n >= T).
    With `seed` (int [2], training): frame s_i + floor(u_i * L_i), u_i uniform in [0, 1) drawn
    statelessly from the seed, i.e. any frame of the segment with probability 1 / L_i.
    Without (evaluation): the centre s_i + floor(L_i / 2) (of an even segment's two middle
    frames the later). A segment with no frame (n < T) takes frame s_i, so a short clip repeats
    its frames in order.
    """
    if num_segments < 1:
        raise ValueError(f"num_segments={num_segments}: must be >= 1")
    n = tf.maximum(tf.cast(num_steps, tf.int64), 1)
    bounds = tf.cast(tf.range(num_segments + 1, dtype=tf.int64) * n // num_segments, tf.int32)
    first, length = bounds[:-1], bounds[1:] - bounds[:-1]
    if seed is None:
        offset = length // 2
    else:
        u = tf.random.stateless_uniform([num_segments], seed, dtype=tf.float32)
        offset = tf.cast(tf.floor(u * tf.cast(length, tf.float32)), tf.int32)
        offset = tf.minimum(offset, tf.maximum(length - 1, 0))  # u * L may round up to L
    return first + offset


def _prefix(modality: str) -> str:
    """The image-stream prefix of a training modality with an image stream."""
    return ms.MODALITY_PREFIX[RECORD_MODALITY[modality]]


# The streams whose frame size is the size the keypoints are normalized to (every image stream
# of a record has the RGB frames' size), in the order the heatmaps' geometry takes them.
_KEYPOINT_FRAME_PREFIXES = tuple(
    ms.MODALITY_PREFIX[m] for m in (ms.MODALITY_POSE, ms.MODALITY_RGB, ms.MODALITY_FLOW)
)


def _frame_size(ctx, modality: str):
    """(height, width) int32 scalars of the frames a training modality's geometry refers to:
    its stream's; for `heatmap` the first image stream the record has (pose-rendered, RGB,
    flow: all of the size the keypoints are normalized to), or -1 when it has none."""
    if modality != MODALITY_HEATMAP:
        p = _prefix(modality)
        return tuple(
            tf.cast(ctx[ms.prefixed(p, key)], tf.int32) for key in (ms.IMAGE_HEIGHT, ms.IMAGE_WIDTH)
        )
    height = width = tf.constant(-1, tf.int32)
    for p in reversed(_KEYPOINT_FRAME_PREFIXES):
        h = tf.cast(ctx[ms.prefixed(p, ms.IMAGE_HEIGHT)], tf.int32)
        w = tf.cast(ctx[ms.prefixed(p, ms.IMAGE_WIDTH)], tf.int32)
        found = tf.logical_and(h > 0, w > 0)
        height, width = tf.where(found, h, height), tf.where(found, w, width)
    return height, width


def _parse_specs(modalities: Sequence[str]):
    """The subset of `schemas.media_sequence.parse_specs` the pipeline reads.

    For `heatmap`, `region/num_regions` may be missing, and the image streams' sizes (any of
    which gives the keypoints' frame size) parse with a default of -1, so that records without
    the keypoints, or without a stream to size them, reach the parser's check, which names
    the missing keys.
    """
    ctx_all, seq_all = ms.parse_specs(
        tuple(dict.fromkeys(r for m in modalities for r in record_modalities(m)))
    )
    ctx_keys = [ms.CLIP_LABEL_INDEX_KEY, ms.EXAMPLE_ID_KEY]
    seq_keys = []
    for m in modalities:
        if m == MODALITY_HEATMAP:
            seq_keys += HEATMAP_KEYS
            continue
        p = _prefix(m)
        ctx_keys += [ms.prefixed(p, ms.IMAGE_HEIGHT), ms.prefixed(p, ms.IMAGE_WIDTH)]
        seq_keys.append(ms.prefixed(p, ms.IMAGE_ENCODED))
        if m == MODALITY_POSE_LIVE:  # the RGB frames, their keypoints and boxes
            seq_keys += [*HEATMAP_KEYS, *POSE_LIVE_BOX_KEYS]
    if ms.MODALITY_FLOW in modalities:
        ctx_keys.append(ms.prefixed(ms.FORWARD_FLOW_PREFIX, ms.IMAGE_SATURATION))
    ctx = {k: ctx_all[k] for k in ctx_keys}
    seq = {k: seq_all[k] for k in seq_keys}
    if MODALITY_HEATMAP in modalities:
        seq[ms.REGION_NUM_REGIONS_KEY] = tf.io.FixedLenSequenceFeature(
            [], tf.int64, allow_missing=True
        )
        for p in _KEYPOINT_FRAME_PREFIXES:
            for key in (ms.IMAGE_HEIGHT, ms.IMAGE_WIDTH):
                name = ms.prefixed(p, key)
                if name not in ctx:
                    ctx[name] = tf.io.FixedLenFeature([], tf.int64, default_value=-1)
    if MODALITY_POSE_LIVE in modalities:  # missing keypoints: the parser's check names them
        seq[ms.REGION_NUM_REGIONS_KEY] = tf.io.FixedLenSequenceFeature(
            [], tf.int64, allow_missing=True
        )
    return ctx, seq


# Columns decoded on either side of a crop and cut off: decoding the crop alone leaves the
# chroma upsampling of its first and last columns without their neighbours, and with
# subsampled chroma (4:2:0 JPEGs) they differ from the fully decoded frame's (by up to ~30
# levels). Two chroma samples of 4x-subsampled chroma suffice; the decode and crop of
# `_decode_window` so equals `crop_frames` of the decoded frames exactly.
_CROP_MARGIN = 8


def _decode_window(encoded, indices, height, width, crop_hw, offset, resized_hw):
    """Decodes frames `encoded[indices]` and crops them.

    Args:
      encoded: string [n] JPEG frames of `height` x `width`.
      indices: int32 [T] in [0, n).
      crop_hw: python (crop_h, crop_w).
      offset: int32 [2] (y, x) of the crop in the (possibly resized) frame.
      resized_hw: int32 [2]: the frame size the crop is taken from; equal to (height, width)
        unless the frame is smaller than the crop, in which case frames are resized to it.

    Returns:
      float32 [T, crop_h, crop_w, 3], values in [0, 255]: the samples of the fully decoded
      JPEG (`tf.io.decode_jpeg`), though only the crop and `_CROP_MARGIN` columns either side
      of it are decoded.
    """
    ch, cw = crop_hw
    frames = tf.gather(encoded, indices)
    needs_resize = tf.logical_or(
        tf.not_equal(resized_hw[0], tf.cast(height, tf.int32)),
        tf.not_equal(resized_hw[1], tf.cast(width, tf.int32)),
    )
    x0 = tf.maximum(offset[1] - _CROP_MARGIN, 0)
    x1 = tf.minimum(offset[1] + cw + _CROP_MARGIN, tf.cast(width, tf.int32))
    window = tf.stack([offset[0], x0, ch, x1 - x0])
    spec = tf.TensorSpec([ch, cw, 3], tf.float32)

    def crop_only():
        def one(jpeg):
            img = tf.io.decode_and_crop_jpeg(jpeg, window, channels=3)
            img = img[:, offset[1] - x0 : offset[1] - x0 + cw]
            return tf.cast(tf.ensure_shape(img, [ch, cw, 3]), tf.float32)

        return tf.map_fn(one, frames, fn_output_signature=spec, parallel_iterations=16)

    def resize_then_crop():
        def one(jpeg):
            return resize_and_crop(tf.io.decode_jpeg(jpeg, channels=3), resized_hw, offset, crop_hw)

        return tf.map_fn(one, frames, fn_output_signature=spec, parallel_iterations=16)

    return tf.cond(needs_resize, resize_then_crop, crop_only)


# The rules of a clip's geometry and values, shared by the pipeline (`RecordParser`, on JPEG
# records) and by `RecordParser.decoded_clip` (decoded frames: `training.export`'s serving
# function), so that both feed a model the same numbers.
def resize_target(height, width, crop_hw):
    """int32 [2]: the frame size a crop of `crop_hw` is taken from. (height, width) when the
    frame covers the crop; else the frame resized up with its aspect ratio kept,
    `max(crop, ceil(size * s))` per axis, s = max(crop_h / height, crop_w / width)."""
    ch, cw = crop_hw
    height, width = tf.cast(height, tf.int32), tf.cast(width, tf.int32)
    scale = tf.maximum(
        1.0,
        tf.maximum(
            ch / tf.cast(height, tf.float32),
            cw / tf.cast(width, tf.float32),
        ),
    )
    resized = tf.stack(
        [
            tf.maximum(ch, tf.cast(tf.math.ceil(tf.cast(height, tf.float32) * scale), tf.int32)),
            tf.maximum(cw, tf.cast(tf.math.ceil(tf.cast(width, tf.float32) * scale), tf.int32)),
        ]
    )
    return tf.where(scale > 1.0, resized, tf.stack([height, width]))


def central_offset(resized_hw, crop_hw):
    """int32 [2]: (y, x) of the evaluation's central crop, floor((resized - crop) / 2)."""
    return (resized_hw - tf.constant([int(crop_hw[0]), int(crop_hw[1])])) // 2


def clip_frame_indices(num_steps, num_frames: int, sampling: str, start=None, seed=None):
    """int32 [num_frames]: the frames of a clip of `num_steps` frames that feed the model.

    `window`: `window_indices` from `start` (None: `central_start`, the evaluation's window);
    `segments`: `segment_indices` with `seed` (None: the segments' centres, evaluation).
    """
    if sampling == "segments":
        return segment_indices(num_steps, num_frames, seed)
    if start is None:
        start = central_start(num_steps, num_frames)
    return window_indices(num_steps, num_frames, start)


def resize_and_crop(images, resized_hw, offset, crop_hw):
    """float32 [..., crop_h, crop_w, C]: decoded frames [..., H, W, C] resized (bilinear
    `tf.image.resize`) to `resized_hw`, then cropped at `offset` (y, x) to `crop_hw`."""
    ch, cw = crop_hw
    img = tf.image.resize(images, resized_hw)
    img = img[..., offset[0] : offset[0] + ch, offset[1] : offset[1] + cw, :]
    return tf.ensure_shape(img, [*images.shape[:-3], ch, cw, images.shape[-1]])


def crop_frames(frames, resized_hw, offset, crop_hw):
    """`_decode_window` on decoded frames: float32 [T, crop_h, crop_w, C] of uint8
    [T, H, W, C]: the crop at `offset`, after `resize_and_crop`'s resize when `resized_hw` is
    not (H, W)."""
    ch, cw = crop_hw
    size = tf.shape(frames)[1:3]
    needs_resize = tf.reduce_any(tf.not_equal(tf.cast(resized_hw, tf.int32), size))

    def crop_only():
        q = frames[:, offset[0] : offset[0] + ch, offset[1] : offset[1] + cw, :]
        return tf.ensure_shape(tf.cast(q, tf.float32), [frames.shape[0], ch, cw, frames.shape[-1]])

    return tf.cond(
        needs_resize, lambda: resize_and_crop(frames, resized_hw, offset, crop_hw), crop_only
    )


def scale_image(q, delta=None, factor=None):
    """uint8-valued float [..., 3] -> float32 in [-1, 1]: `x * 2 - 1`, x = q / 255 after the
    brightness shift `delta` and contrast `factor` (training jitter; None: none), clipped."""
    x = q / 255.0
    if delta is not None:
        x = tf.image.adjust_brightness(x, delta)
    if factor is not None:
        x = tf.image.adjust_contrast(x, factor)
    if delta is not None or factor is not None:
        x = tf.clip_by_value(x, 0.0, 1.0)
    return x * 2.0 - 1.0


def flow_window(
    crop_steps, num_flows, frame_indices, saturation, height, width, resized_hw, crop_hw
):
    """float32 [T, crop_h, crop_w, 2]: the flow of a clip's window frames in pixels per frame of
    the resized frames (not yet divided by FLOW_SATURATION, not mirrored).

    Window frame t takes flow step min(frame_indices[t], num_flows - 1) (the last frame repeats
    the last step); a clip without flow steps gets zeros.

    Args:
      crop_steps: fn(int32 [T] step indices) -> float [T, crop_h, crop_w, >= 2] the quantized
        samples of those steps' images (x in channel 0, y in 1), cropped as the frames.
      num_flows: int32 scalar, the clip's flow steps (its frames - 1).
      frame_indices: int32 [T], the window's frames.
      saturation: float32 scalar, the quantization bound s in pixels:
        v = (q / 255 - 0.5) * 2 * s, then times the resize factors (x: resized_w / width,
        y: resized_h / height).
      height, width, resized_hw, crop_hw: the clip's geometry.
    """
    ch, cw = crop_hw

    def decode():
        q = crop_steps(tf.minimum(frame_indices, num_flows - 1))
        v = (q[..., :2] / 255.0 - 0.5) * (2.0 * saturation)
        scale = tf.stack(
            [
                tf.cast(resized_hw[1], tf.float32) / tf.cast(width, tf.float32),
                tf.cast(resized_hw[0], tf.float32) / tf.cast(height, tf.float32),
            ]
        )
        return v * scale

    return tf.cond(
        num_flows > 0,
        decode,
        lambda: tf.zeros([frame_indices.shape[0], ch, cw, 2], tf.float32),
    )


class RecordParser:
    """Parses one serialized record and returns the model inputs of one clip.

    Args:
      modalities: streams to decode, a subset of ('rgb', 'pose', 'flow', 'heatmap', 'pose_live').
      num_frames: T, frames per clip, >= 1.
      crop_size: (height, width) of the crop in pixels.
      training: random window/crop/flip/photometric jitter if True; central window and crop,
        no jitter, if False.
      random_flip, brightness_max_delta, contrast_range: training augmentation (DataConfig).
      with_ids: also return the record's `example_id` (string).
      sampling: `window` (T consecutive frames) or `segments` (one frame of each of T equal
        segments, `segment_indices`); the same frames for every stream.
      heatmap_stride, heatmap_sigma, heatmap_score_threshold, heatmap_limbs: the heatmap
        volumes (DataConfig, `training.heatmaps.clip_heatmaps`).
      render_style: the `pose_live` skeletons (`render.style.RenderStyle`, or a variant name
        or spec, `DataConfig.render_style`; `training.pose_render.render_clip`).
      heatmap_frame_ratio: k >= 1, with `heatmap` only: the clip spans k x `num_frames` stored
        frames (its window, or k x T segments); the heatmaps take every one of them, the other
        streams every k-th (frames 0, k, 2k, ... of the span: EPAM-Net's 48 heatmap frames
        against 16 RGB frames at k = 3). 1: all streams the same T frames.
    """

    @classmethod
    def for_data(
        cls, modalities: Sequence[str], data: DataConfig, training: bool, with_ids: bool = False
    ) -> RecordParser:
        """The parser of `data`'s settings, training (`num_frames`, `crop_size`) or evaluation
        (`eval_num_frames`, `eval_crop_size`): the one `build_dataset` and the export use."""
        return cls(
            modalities,
            data.num_frames if training else data.eval_num_frames,
            data.crop_size if training else data.eval_crop_size,
            training=training,
            random_flip=data.random_flip,
            brightness_max_delta=data.brightness_max_delta,
            contrast_range=data.contrast_range,
            with_ids=with_ids,
            sampling=data.sampling,
            heatmap_stride=data.heatmap_stride,
            heatmap_sigma=data.heatmap_sigma,
            heatmap_score_threshold=data.heatmap_score_threshold,
            heatmap_limbs=data.heatmap_limbs,
            render_style=data.pose_live_style(),
            heatmap_frame_ratio=data.heatmap_frame_ratio,
        )

    def __init__(
        self,
        modalities: Sequence[str],
        num_frames: int,
        crop_size: Sequence[int],
        training: bool,
        random_flip: bool = True,
        brightness_max_delta: float = 0.0,
        contrast_range: Sequence[float] = (1.0, 1.0),
        with_ids: bool = False,
        sampling: str = "window",
        heatmap_stride: int = DataConfig.heatmap_stride,
        heatmap_sigma: float = DataConfig.heatmap_sigma,
        heatmap_score_threshold: float = DataConfig.heatmap_score_threshold,
        heatmap_limbs: bool = DataConfig.heatmap_limbs,
        render_style: RenderStyle | str = DEFAULT_STYLE,
        heatmap_frame_ratio: int = 1,
    ):
        self.modalities = tuple(m for m in MODALITIES if m in set(modalities))
        if not self.modalities or len(self.modalities) != len(set(modalities)):
            raise ValueError(
                f"modalities={list(modalities)}: expected a non-empty subset of {list(MODALITIES)}"
            )
        if num_frames < 1:
            raise ValueError(f"num_frames={num_frames}: must be >= 1")
        if len(crop_size) != 2 or min(crop_size) < 1:
            raise ValueError(f"crop_size={tuple(crop_size)}: expected (height, width) >= 1")
        self.num_frames = int(num_frames)
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.training = training
        self.random_flip = random_flip and training
        self.brightness = float(brightness_max_delta) if training else 0.0
        self.contrast = tuple(float(c) for c in contrast_range) if training else (1.0, 1.0)
        self.with_ids = with_ids
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling={sampling!r}: expected one of {list(SAMPLINGS)}")
        self.sampling = sampling
        if MODALITY_HEATMAP in self.modalities:
            if heatmap_stride < 1:
                raise ValueError(f"heatmap_stride={heatmap_stride}: must be >= 1")
            if not heatmap_sigma > 0:
                raise ValueError(f"heatmap_sigma={heatmap_sigma}: must be > 0")
            if not 0.0 <= heatmap_score_threshold <= 1.0:
                raise ValueError(
                    f"heatmap_score_threshold={heatmap_score_threshold}: must be in [0, 1]"
                )
        self.heatmap_stride = int(heatmap_stride)
        self.heatmap_sigma = float(heatmap_sigma)
        self.heatmap_score_threshold = float(heatmap_score_threshold)
        self.heatmap_limbs = bool(heatmap_limbs)
        if isinstance(heatmap_frame_ratio, bool) or not 1 <= int(heatmap_frame_ratio) <= 16:
            raise ValueError(f"heatmap_frame_ratio={heatmap_frame_ratio}: must be in 1..16")
        # Stored frames a clip spans, and the step between the image streams' frames.
        self.frame_step = int(heatmap_frame_ratio) if MODALITY_HEATMAP in self.modalities else 1
        self.span = self.num_frames * self.frame_step
        if isinstance(render_style, str):
            render_style = DataConfig(render_style=render_style).pose_live_style()
        self.render_style = render_style
        self.context_spec, self.sequence_spec = _parse_specs(self.modalities)

    def _geometry(self, ctx, seq, seed):
        """Window start, crop offset, resized frame size and flip, shared by all streams."""
        ref = self.modalities[0]
        height, width = _frame_size(ctx, ref)
        checks = []
        if ref == ms.MODALITY_FLOW:
            num_steps = tf.shape(seq[ms.prefixed(_prefix(ref), ms.IMAGE_ENCODED)])[0] + 1
        elif ref == MODALITY_HEATMAP:
            num_steps = tf.shape(seq[ms.REGION_NUM_REGIONS_KEY])[0]
        else:
            num_steps = tf.shape(seq[ms.prefixed(_prefix(ref), ms.IMAGE_ENCODED)])[0]
        if MODALITY_HEATMAP in self.modalities:
            # A record without the keypoints has none of their keys, and one without an image
            # stream no size for them (-1 with the lenient spec of `_parse_specs`): fail on it
            # before anything uses the geometry.
            regions = tf.shape(seq[ms.REGION_NUM_REGIONS_KEY])[0]
            pose_size = _frame_size(ctx, MODALITY_HEATMAP)
            has_pose = tf.reduce_all(
                [tf.equal(regions, num_steps), num_steps > 0, pose_size[0] > 0, pose_size[1] > 0]
            )
            check = tf.debugging.Assert(
                has_pose,
                [
                    f"modality {MODALITY_HEATMAP!r} needs the records' keypoints (their "
                    f"{ms.MODALITY_POSE!r} or {ms.MODALITY_KEYPOINTS!r} modality): keys "
                    f"{list(HEATMAP_KEYS)} (one {ms.REGION_NUM_REGIONS_KEY} per frame) and an "
                    "image stream's image/height and image/width; record",
                    ctx[ms.EXAMPLE_ID_KEY],
                    "frames, region/num_regions steps, pose frame size:",
                    num_steps,
                    regions,
                    pose_size[0],
                    pose_size[1],
                ],
            )
            with tf.control_dependencies([check]):
                height, width, num_steps = (tf.identity(v) for v in (height, width, num_steps))
        if MODALITY_POSE_LIVE in self.modalities:
            # Records without the keypoints (the `pose` or `keypoints` modality): name the keys.
            regions = tf.shape(seq[ms.REGION_NUM_REGIONS_KEY])[0]
            check = tf.debugging.Assert(
                tf.logical_and(tf.equal(regions, num_steps), num_steps > 0),
                [
                    f"modality {MODALITY_POSE_LIVE!r} needs the records' keypoints (their "
                    f"{ms.MODALITY_POSE!r} or {ms.MODALITY_KEYPOINTS!r} modality): keys "
                    f"{list(HEATMAP_KEYS)} (one {ms.REGION_NUM_REGIONS_KEY} per frame); record",
                    ctx[ms.EXAMPLE_ID_KEY],
                    "frames, region/num_regions steps:",
                    num_steps,
                    regions,
                ],
            )
            with tf.control_dependencies([check]):
                height, width, num_steps = (tf.identity(v) for v in (height, width, num_steps))
        for m in self.modalities[1:]:
            for key, value, ref_value in zip(
                (ms.IMAGE_HEIGHT, ms.IMAGE_WIDTH), _frame_size(ctx, m), (height, width)
            ):
                checks.append(
                    tf.debugging.assert_equal(
                        value,
                        ref_value,
                        message=f"stream {m!r} {key} differs from stream {ref!r}",
                    )
                )
        ch, cw = self.crop_size
        resized = resize_target(height, width, self.crop_size)
        slack = resized - tf.constant([ch, cw])
        seeds = tf.random.experimental.stateless_split(seed, num=6)
        if self.training:
            lo = tf.minimum(0, num_steps - self.span)
            hi = tf.maximum(0, num_steps - self.span)
            start = tf.random.stateless_uniform(
                [], seeds[0], minval=lo, maxval=hi + 1, dtype=tf.int32
            )
            oy = tf.random.stateless_uniform(
                [], seeds[1], minval=0, maxval=slack[0] + 1, dtype=tf.int32
            )
            ox = tf.random.stateless_uniform(
                [], seeds[2], minval=0, maxval=slack[1] + 1, dtype=tf.int32
            )
            offset = tf.stack([oy, ox])
        else:
            start = central_start(num_steps, self.span)
            offset = central_offset(resized, self.crop_size)
        if self.random_flip:
            flip = tf.random.stateless_uniform([], seeds[3]) < 0.5
        else:
            flip = tf.constant(False)
        with tf.control_dependencies(checks):
            height = tf.identity(height)
        return {
            "height": height,
            "width": width,
            "num_steps": num_steps,
            "start": start,
            "frame_seed": seeds[0],
            "offset": offset,
            "resized": resized,
            "flip": flip,
            "photometric_seeds": seeds[4:],
        }

    def __call__(self, index, serialized, base_seed):
        """Args: index int64 scalar (clip position), serialized string scalar, base_seed int64.

        Returns the dict of one clip (no batch axis).
        """
        ctx, seq = tf.io.parse_single_sequence_example(
            serialized, context_features=self.context_spec, sequence_features=self.sequence_spec
        )
        seed = tf.stack([tf.cast(base_seed, tf.int64), tf.cast(index, tf.int64)])
        g = self._geometry(ctx, seq, seed)
        frame_seed = g["frame_seed"] if self.training else None
        span = clip_frame_indices(g["num_steps"], self.span, self.sampling, g["start"], frame_seed)
        indices = span[:: self.frame_step]
        out = {}
        if self.brightness > 0:
            delta = tf.random.stateless_uniform(
                [], g["photometric_seeds"][0], -self.brightness, self.brightness
            )
        else:
            delta = None
        lo, hi = self.contrast
        if (lo, hi) != (1.0, 1.0):
            factor = tf.random.stateless_uniform([], g["photometric_seeds"][1], lo, hi)
        else:
            factor = None
        frames = {}  # record modality -> its cropped, mirrored window, before jitter
        for m in self.modalities:
            if m == MODALITY_HEATMAP:
                out[m] = self._heatmap(seq, span, g)
                continue
            if m == MODALITY_POSE_LIVE and self.render_style.background != "rgb":
                out[m] = self._image(self._pose_live(seq, None, indices, g), delta, factor)
                continue
            r = RECORD_MODALITY[m]
            p = ms.MODALITY_PREFIX[r]
            encoded = seq[ms.prefixed(p, ms.IMAGE_ENCODED)]
            if m == ms.MODALITY_FLOW:
                out[m] = self._flow(encoded, ctx, indices, g)
                continue
            if r not in frames:
                q = _decode_window(
                    encoded,
                    indices,
                    g["height"],
                    g["width"],
                    self.crop_size,
                    g["offset"],
                    g["resized"],
                )
                frames[r] = tf.cond(g["flip"], lambda q=q: tf.reverse(q, axis=[2]), lambda q=q: q)
            q = frames[r]
            if m == MODALITY_POSE_LIVE:
                q = self._pose_live(seq, q, indices, g)
            out[m] = self._image(q, delta, factor)
        out["label"] = tf.cast(ctx[ms.CLIP_LABEL_INDEX_KEY], tf.int32)
        if self.with_ids:
            out["example_id"] = ctx[ms.EXAMPLE_ID_KEY]
        return out

    @staticmethod
    def _image(q, delta, factor):
        """uint8-valued float [T, H, W, 3] -> jittered float32 in [-1, 1] (`scale_image`)."""
        return scale_image(q, delta, factor)

    def _pose_live(self, seq, frames, frame_indices, g):
        """float32 [T, crop_h, crop_w, 3] in [0, 255]: the window's skeletons drawn in the
        parser's render style onto `frames` (the cropped, mirrored RGB window; None under a
        black background), under the clip's geometry (`training.pose_render.render_clip`)."""
        num_steps = g["num_steps"]

        def dense(key, width):
            v = tf.sparse.to_dense(seq[key])  # [n, width * P_max], persons padded with 0
            return tf.reshape(tf.gather(v, frame_indices), [self.num_frames, -1, width])

        x = dense(ms.POSE_POINT_X_KEY, ms.NUM_JOINTS)
        people = tf.shape(x)[1]
        sides = [tf.sparse.to_dense(seq[key]) for key in POSE_LIVE_BOX_KEYS]  # [n, P] each
        stored = tf.reduce_all(
            [tf.equal(tf.shape(v)[0], num_steps) & tf.equal(tf.shape(v)[1], people) for v in sides]
        )
        boxes = tf.cond(
            stored,
            lambda: tf.gather(tf.stack(sides, axis=-1), frame_indices),
            lambda: tf.fill(tf.stack([self.num_frames, people, 4]), float("nan")),
        )  # no boxes: NaN, the keypoints' extent sizes the markers
        y = dense(ms.POSE_POINT_Y_KEY, ms.NUM_JOINTS)
        scores = dense(ms.POSE_CONFIDENCE_KEY, ms.NUM_JOINTS)
        return self._render_pose_live(frames, x, y, scores, boxes, g)

    def _render_pose_live(self, frames, x, y, scores, boxes, g):
        """`pose_render.render_clip` of the window's keypoints x, y, scores [T, P, 17] and
        boxes [T, P, 4] onto `frames` (None: black) under the clip's geometry `g`, in this
        parser's render style."""
        return pose_render.render_clip(
            frames,
            x,
            y,
            scores,
            boxes,
            style=self.render_style,
            frame_hw=tf.stack([g["height"], g["width"]]),
            resized_hw=g["resized"],
            offset=g["offset"],
            crop_hw=self.crop_size,
            flip=g["flip"],
        )

    def _heatmap(self, seq, frame_indices, g):
        """float32 [k T, ceil(H / stride), ceil(W / stride), 17] in [0, 1]: the heatmap volume
        of the span's keypoints (k = `heatmap_frame_ratio`) under the clip's geometry
        (`training.heatmaps`)."""

        def dense(key):
            v = tf.sparse.to_dense(seq[key])  # [n, 17 * P_max], persons padded with 0
            v = tf.gather(v, frame_indices)
            return tf.reshape(v, [self.span, -1, ms.NUM_JOINTS])

        return self._clip_heatmaps(
            dense(ms.POSE_POINT_X_KEY),
            dense(ms.POSE_POINT_Y_KEY),
            dense(ms.POSE_CONFIDENCE_KEY),
            g,
        )

    def _clip_heatmaps(self, x, y, scores, g):
        """`heatmaps.clip_heatmaps` of the window's keypoints x, y, scores [T, P, 17] under the
        clip's geometry `g`, with this parser's heatmap settings."""
        return heatmaps.clip_heatmaps(
            x,
            y,
            scores,
            resized_hw=g["resized"],
            offset=g["offset"],
            crop_hw=self.crop_size,
            flip=g["flip"],
            stride=self.heatmap_stride,
            sigma=self.heatmap_sigma,
            score_threshold=self.heatmap_score_threshold,
            limbs=self.heatmap_limbs,
        )

    def _flow(self, encoded, ctx, frame_indices, g):
        """float32 [T, H, W, 2]: dequantized, geometry-transformed flow / FLOW_SATURATION."""

        def crop_steps(idx):
            return _decode_window(
                encoded, idx, g["height"], g["width"], self.crop_size, g["offset"], g["resized"]
            )

        v = flow_window(
            crop_steps,
            tf.shape(encoded)[0],
            frame_indices,
            ctx[ms.prefixed(ms.FORWARD_FLOW_PREFIX, ms.IMAGE_SATURATION)],
            g["height"],
            g["width"],
            g["resized"],
            self.crop_size,
        )
        v = tf.cond(
            g["flip"],
            lambda: tf.reverse(v, axis=[2]) * tf.constant([-1.0, 1.0]),
            lambda: v,
        )
        return v / ms.FLOW_SATURATION

    def decoded_clip(self, streams, frame_size=None, flow_saturation=ms.FLOW_SATURATION):
        """Evaluation on decoded frames: the model inputs `__call__` returns (training=False) for
        a record whose frames are these, without the record (`training.export`'s serving
        function).

        Args:
          streams: modality -> the whole clip of n frames as a record holds it, decoded:
            `rgb`, `pose`: uint8 [n, H, W, 3]; `flow`: uint8 [n - 1, H, W, 2], the quantized
            samples of the flow steps (the R = x and G = y channels of the stored JPEGs);
            `heatmap`: (x, y, scores), float32 [n, P, 17] each, keypoints normalized to the
            H x W frames (as the records store them), padding persons with score 0;
            `pose_live`: (frames, x, y, scores, boxes): the RGB frames uint8 [n, H, W, 3] the
            skeletons are drawn on (None under a style with a black background), the keypoints
            as for `heatmap`, and the person boxes float32 [n, P, 4], normalized (ymin, xmin,
            ymax, xmax) as stored (None: none stored; a box with a NaN or non-positive side
            sizes its person's markers by the keypoints' extent, as the pipeline does).
          frame_size: int32 [2] (H, W): the frames' size when no stream has frames (keypoints
            alone: heatmaps, `pose_live` on black); else ignored.
          flow_saturation: the flow's quantization bound s (the records'
            `FORWARD_FLOW/image/saturation`).

        Returns:
          modality -> float32 model input of one clip (no batch axis).
        """
        if self.training:
            raise ValueError("decoded_clip: evaluation only (a parser with training=False)")
        if set(streams) != set(self.modalities):
            raise ValueError(f"streams={sorted(streams)}: expected {list(self.modalities)}")
        on_rgb = self.render_style.background == "rgb"
        framed = {}  # modality -> its frames; the first one's size and length give the geometry
        keypoints = {}  # modality -> (x, y, scores [, boxes])
        for m in self.modalities:
            if m == MODALITY_HEATMAP:
                keypoints[m] = tuple(streams[m])
            elif m == MODALITY_POSE_LIVE:
                frames, x, y, scores, boxes = streams[m]
                keypoints[m] = (x, y, scores, boxes)
                if frames is not None:
                    framed[m] = frames
                elif on_rgb:
                    raise ValueError(
                        f"streams[{m!r}]: the RGB frames are needed, the style draws on them"
                    )
            else:
                framed[m] = streams[m]
        images = list(framed)
        checks = []
        if images:
            shape = tf.shape(framed[images[0]])
            height, width = shape[1], shape[2]
            num_steps = shape[0] + (1 if images[0] == ms.MODALITY_FLOW else 0)
            for m in images[1:]:
                checks.append(
                    tf.debugging.assert_equal(
                        tf.shape(framed[m])[1:3],
                        shape[1:3],
                        message=f"stream {m!r} frame size differs from stream {images[0]!r}",
                    )
                )
        else:
            if frame_size is None:
                raise ValueError("frame_size: needed for keypoints without image frames")
            height, width = tf.cast(frame_size[0], tf.int32), tf.cast(frame_size[1], tf.int32)
            num_steps = tf.shape(next(iter(keypoints.values()))[0])[0]
        checks.append(tf.debugging.assert_positive(num_steps, message="a clip of no frame"))
        for m, (x, *rest) in keypoints.items():
            boxes = rest[2] if m == MODALITY_POSE_LIVE else None
            checks.append(
                tf.debugging.assert_equal(
                    tf.shape(x)[0], num_steps, message="keypoints: one step per frame expected"
                )
            )
            if boxes is not None:
                checks.append(
                    tf.debugging.assert_equal(
                        tf.shape(boxes)[:2],
                        tf.shape(x)[:2],
                        message="boxes: one per person and frame of the keypoints expected",
                    )
                )
        with tf.control_dependencies(checks):
            num_steps = tf.identity(num_steps)
        resized = resize_target(height, width, self.crop_size)
        g = {
            "height": height,
            "width": width,
            "offset": central_offset(resized, self.crop_size),
            "resized": resized,
            "flip": tf.constant(False),
        }
        span = clip_frame_indices(num_steps, self.span, self.sampling)
        indices = span[:: self.frame_step]
        out = {}
        for m in self.modalities:
            if m == MODALITY_HEATMAP:
                x, y, scores = (tf.gather(v, span) for v in streams[m])
                out[m] = self._clip_heatmaps(x, y, scores, g)
            elif m == MODALITY_POSE_LIVE:
                x, y, scores, boxes = keypoints[m]
                x, y, scores = (tf.gather(tf.cast(v, tf.float32), indices) for v in (x, y, scores))
                if boxes is None:  # as the pipeline: NaN, the keypoints' extent sizes the markers
                    boxes = tf.fill(tf.concat([tf.shape(x)[:2], [4]], 0), float("nan"))
                else:
                    boxes = tf.gather(tf.cast(boxes, tf.float32), indices)
                q = None
                if on_rgb:
                    q = crop_frames(
                        tf.gather(framed[m], indices), resized, g["offset"], self.crop_size
                    )
                out[m] = scale_image(self._render_pose_live(q, x, y, scores, boxes, g))
            elif m == ms.MODALITY_FLOW:
                flows = streams[m]
                out[m] = (
                    flow_window(
                        lambda idx, f=flows: crop_frames(
                            tf.gather(f, idx), resized, g["offset"], self.crop_size
                        ),
                        tf.shape(flows)[0],
                        indices,
                        tf.constant(flow_saturation, tf.float32),
                        height,
                        width,
                        resized,
                        self.crop_size,
                    )
                    / ms.FLOW_SATURATION
                )
            else:
                q = crop_frames(
                    tf.gather(streams[m], indices), resized, g["offset"], self.crop_size
                )
                out[m] = scale_image(q)
        return out


def _pad_batch(batch, batch_size):
    """Pads a final partial batch to `batch_size` along axis 0 and adds `mask`."""
    n = tf.shape(batch["label"])[0]
    out = {}
    for key, value in batch.items():
        pad_shape = tf.concat([[batch_size - n], tf.shape(value)[1:]], axis=0)
        filler = tf.fill(pad_shape, tf.constant("" if value.dtype == tf.string else 0, value.dtype))
        padded = tf.concat([value, filler], axis=0)
        out[key] = tf.ensure_shape(padded, [batch_size, *value.shape[1:]])
    out["mask"] = tf.cast(tf.range(batch_size) < n, tf.float32)
    return out


def build_dataset(
    pattern: str,
    modalities: Sequence[str],
    *,
    training: bool,
    batch_size: int,
    data: DataConfig,
    input_context: tf.distribute.InputContext | None = None,
    seed_offset: int = 0,
    with_ids: bool = False,
    max_clips: int = 0,
) -> tf.data.Dataset:
    """The batched dataset of the shards matching `pattern`.

    Args:
      pattern: comma-separated glob(s) of TFRecord shards, local or gs://.
      modalities: streams to decode.
      training: infinite, shuffled, randomly augmented clips of `data.num_frames` x
        `data.crop_size`, batches of exactly `batch_size`; else one pass in file order, central
        `data.eval_num_frames` x `data.eval_crop_size` clips, the last batch padded (see `mask`).
      batch_size: clips per batch of this pipeline (per replica when `input_context` is given).
      data: sampling, augmentation and reading options.
      input_context: from `strategy.distribute_datasets_from_function`: this pipeline reads
        every n-th shard (or every n-th record when there are fewer shards than pipelines).
      seed_offset: added to the seed (a resumed run passes its start step so that it does not
        replay the first run's clips).
      with_ids: add `example_id`.
      max_clips: evaluation: stop after this many clips (0: all).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be >= 1")
    files = list_shards(pattern)
    deterministic = data.seed is not None
    if data.seed is None:
        base_seed = int.from_bytes(os.urandom(4), "little")
    else:
        base_seed = int(data.seed)
    num_pipelines, pipeline_id = 1, 0
    if input_context is not None:
        num_pipelines = input_context.num_input_pipelines
        pipeline_id = input_context.input_pipeline_id
    base_seed = (base_seed + 1_000_003 * pipeline_id + 7919 * int(seed_offset)) % (2**31 - 1)

    ds = tf.data.Dataset.from_tensor_slices(files)
    shard_records = False
    if num_pipelines > 1:
        if len(files) >= num_pipelines:
            ds = ds.shard(num_pipelines, pipeline_id)
        else:
            shard_records = True
    if training:
        ds = ds.shuffle(len(files), seed=base_seed, reshuffle_each_iteration=True).repeat()
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, buffer_size=_READ_BUFFER_BYTES),
        cycle_length=max(1, min(data.cycle_length, len(files))),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic if training else True,
    )
    if shard_records:
        ds = ds.shard(num_pipelines, pipeline_id)
    if training:
        ds = ds.shuffle(data.shuffle_buffer, seed=base_seed + 1, reshuffle_each_iteration=True)
    elif max_clips:
        ds = ds.take(max_clips)
    processor = RecordParser.for_data(modalities, data, training, with_ids=with_ids)
    seed_t = tf.constant(base_seed + 2, tf.int64)
    ds = ds.enumerate().map(
        lambda i, rec: processor(i, rec, seed_t),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic if training else True,
    )
    if training:
        ds = ds.batch(batch_size, drop_remainder=True)
    else:
        ds = ds.batch(batch_size, drop_remainder=False).map(
            lambda b: _pad_batch(b, batch_size), num_parallel_calls=tf.data.AUTOTUNE
        )
    options = tf.data.Options()
    options.deterministic = deterministic or not training
    options.autotune.enabled = True
    if input_context is None:
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
    ds = ds.with_options(options)
    return ds.prefetch(tf.data.AUTOTUNE)
