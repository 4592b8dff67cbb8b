"""The record contract: every key of a clip's `tf.train.SequenceExample`.

This module owns every feature key the project writes or reads. Keys follow
MediaPipe's MediaSequence conventions so that MediaSequence, DMVR and TF Model Garden readers parse
our records unchanged; extra image streams reuse the image keys under an ALL_CAPS prefix
(`PREFIX/image/encoded`).

Units: timestamps are int64 microseconds in the source video's time base; coordinates are
normalized to [0, 1] (x by width, y by height); scores are float in [0, 1].

Nothing here depends on Beam, MediaPipe or OpenCV: `training/` imports this module on TPU VMs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

# Version of the record contract. Bump on any change of keys, types or meaning; readers refuse
# versions they do not know (see `check_schema_version`).
SCHEMA_VERSION = 1
KNOWN_SCHEMA_VERSIONS = (1,)
MICROS = 1_000_000  # microseconds per second: every time in the records is in microseconds


def clip_id(media_id: str, start_us: int) -> str:
    """`<media_id>_<start_us>`: a clip's example id (`EXAMPLE_ID_KEY`), made here only."""
    return f"{media_id}_{start_us}"


# ---------------------------------------------------------------------------------------------
# Stream prefixes. The RGB stream has no prefix.
# ---------------------------------------------------------------------------------------------
RGB_PREFIX = ""
POSE_RENDERED_PREFIX = "POSE_RENDERED"
FORWARD_FLOW_PREFIX = "FORWARD_FLOW"
POSE_PREFIX = "POSE"

# Modality names as the command line and the training package spell them.
MODALITY_RGB = "rgb"
MODALITY_POSE = "pose"
MODALITY_FLOW = "flow"
ALL_MODALITIES = (MODALITY_RGB, MODALITY_POSE, MODALITY_FLOW)
# Image stream prefix per modality.
MODALITY_PREFIX = {
    MODALITY_RGB: RGB_PREFIX,
    MODALITY_POSE: POSE_RENDERED_PREFIX,
    MODALITY_FLOW: FORWARD_FLOW_PREFIX,
}


def prefixed(prefix: str, key: str) -> str:
    """Returns `prefix/key`, or `key` itself for the empty prefix."""
    return f"{prefix}/{key}" if prefix else key


# ---------------------------------------------------------------------------------------------
# Context keys.
# ---------------------------------------------------------------------------------------------
EXAMPLE_ID_KEY = "example/id"  # bytes: unique clip id, `<media_id>_<start_us>`.
DATASET_NAME_KEY = "example/dataset_name"  # bytes: e.g. `kinetics600`.
CLIP_DATA_PATH_KEY = "clip/data_path"  # bytes: source video path as given in the manifest.
CLIP_MEDIA_ID_KEY = "clip/media_id"  # bytes: video id (YouTube id for Kinetics).
CLIP_START_TIMESTAMP_KEY = "clip/start/timestamp"  # int64: clip start, microseconds in source.
CLIP_END_TIMESTAMP_KEY = "clip/end/timestamp"  # int64: clip end (exclusive), microseconds.
CLIP_LABEL_INDEX_KEY = "clip/label/index"  # int64, exactly one: 0-based class index.
CLIP_LABEL_STRING_KEY = "clip/label/string"  # bytes: class name (MediaSequence reads this).
CLIP_LABEL_TEXT_KEY = "clip/label/text"  # bytes: class name again (DMVR reads this).

# Image stream metadata, per prefix (`image/format`, `POSE_RENDERED/image/format`, ...).
IMAGE_FORMAT = "image/format"  # bytes: `JPEG`.
IMAGE_CHANNELS = "image/channels"  # int64: 3.
IMAGE_HEIGHT = "image/height"  # int64: stored frame height, pixels.
IMAGE_WIDTH = "image/width"  # int64: stored frame width, pixels.
IMAGE_FRAME_RATE = "image/frame_rate"  # float: frames per second of the stored stream.
IMAGE_SATURATION = "image/saturation"  # float: flow only, the clipping bound in pixels (20.0).
# Sequence keys per prefix.
IMAGE_ENCODED = "image/encoded"  # bytes per step: the encoded image.
IMAGE_TIMESTAMP = "image/timestamp"  # int64 per step: microseconds in the source.

POSE_PARTS_KEY = "POSE/region/parts"  # bytes list: the 17 COCO joint names in order.

# ---------------------------------------------------------------------------------------------
# Sequence keys: person regions (one step per RGB frame).
# ---------------------------------------------------------------------------------------------
REGION_NUM_REGIONS_KEY = "region/num_regions"  # int64 per step: persons in the frame.
REGION_TIMESTAMP_KEY = "region/timestamp"  # int64 per step: microseconds, = image/timestamp.
REGION_IS_ANNOTATED_KEY = "region/is_annotated"  # int64 per step: 1 (pose ran on every frame).
REGION_BBOX_YMIN_KEY = "region/bbox/ymin"  # float list per step: person box top, normalized.
REGION_BBOX_XMIN_KEY = "region/bbox/xmin"  # float list per step: person box left, normalized.
REGION_BBOX_YMAX_KEY = "region/bbox/ymax"  # float list per step: person box bottom, normalized.
REGION_BBOX_XMAX_KEY = "region/bbox/xmax"  # float list per step: person box right, normalized.
REGION_CONFIDENCE_KEY = "region/label/confidence"  # float list per step: person score in [0,1].
REGION_TRACK_INDEX_KEY = "region/track/index"  # int64 list per step: person track id, >= 0.
# Keypoints: person-major, 17 per person (person p, joint j at 17 * p + j); person p is box p.
POSE_POINT_X_KEY = "POSE/region/point/x"  # float list per step: normalized x in [0, 1].
POSE_POINT_Y_KEY = "POSE/region/point/y"  # float list per step: normalized y in [0, 1].
POSE_NUM_REGIONS_KEY = "POSE/region/num_regions"  # int64 per step: 17 * persons.
POSE_CONFIDENCE_KEY = "POSE/region/label/confidence"  # float list per step: keypoint scores.

# The COCO-17 joints, in COCO order.
COCO17_JOINT_NAMES = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
NUM_JOINTS = len(COCO17_JOINT_NAMES)

# Flow quantization (MediaPipe's): q = floor(255 * clip((v + bound) / (2 * bound), 0, 1)).
FLOW_SATURATION = 20.0  # pixels: flow components are clipped to [-20, 20] before quantizing.

IMAGE_FORMAT_JPEG = "JPEG"
FRAME_RATE = 25.0  # frames per second of every stored stream.

REGION_FLOAT_LIST_KEYS = (
    REGION_BBOX_YMIN_KEY,
    REGION_BBOX_XMIN_KEY,
    REGION_BBOX_YMAX_KEY,
    REGION_BBOX_XMAX_KEY,
    REGION_CONFIDENCE_KEY,
    POSE_POINT_X_KEY,
    POSE_POINT_Y_KEY,
    POSE_CONFIDENCE_KEY,
)
REGION_INT_PER_STEP_KEYS = (
    REGION_NUM_REGIONS_KEY,
    REGION_TIMESTAMP_KEY,
    REGION_IS_ANNOTATED_KEY,
    POSE_NUM_REGIONS_KEY,
)


def _check_modalities(modalities: Sequence[str]) -> tuple[str, ...]:
    modalities = tuple(modalities)
    unknown = [m for m in modalities if m not in ALL_MODALITIES]
    if unknown or not modalities:
        raise ValueError(
            f"modalities={list(modalities)!r}: "
            f"expected a non-empty subset of {list(ALL_MODALITIES)}"
        )
    return modalities


def context_keys(modalities: Sequence[str] = ALL_MODALITIES) -> frozenset[str]:
    """All context keys a record with these modalities carries."""
    modalities = _check_modalities(modalities)
    keys = {
        EXAMPLE_ID_KEY,
        DATASET_NAME_KEY,
        CLIP_DATA_PATH_KEY,
        CLIP_MEDIA_ID_KEY,
        CLIP_START_TIMESTAMP_KEY,
        CLIP_END_TIMESTAMP_KEY,
        CLIP_LABEL_INDEX_KEY,
        CLIP_LABEL_STRING_KEY,
        CLIP_LABEL_TEXT_KEY,
    }
    for m in modalities:
        p = MODALITY_PREFIX[m]
        keys |= {prefixed(p, k) for k in (IMAGE_FORMAT, IMAGE_CHANNELS, IMAGE_HEIGHT, IMAGE_WIDTH)}
        keys.add(prefixed(p, IMAGE_FRAME_RATE))
    if MODALITY_FLOW in modalities:
        keys.add(prefixed(FORWARD_FLOW_PREFIX, IMAGE_SATURATION))
    if MODALITY_POSE in modalities:
        keys.add(POSE_PARTS_KEY)
    return frozenset(keys)


def sequence_keys(modalities: Sequence[str] = ALL_MODALITIES) -> frozenset[str]:
    """All sequence (feature_list) keys a record with these modalities carries."""
    modalities = _check_modalities(modalities)
    keys: set[str] = set()
    for m in modalities:
        p = MODALITY_PREFIX[m]
        keys |= {prefixed(p, IMAGE_ENCODED), prefixed(p, IMAGE_TIMESTAMP)}
    if MODALITY_POSE in modalities:
        keys |= set(REGION_FLOAT_LIST_KEYS) | set(REGION_INT_PER_STEP_KEYS)
        keys.add(REGION_TRACK_INDEX_KEY)
    return frozenset(keys)


# ---------------------------------------------------------------------------------------------
# Encoding.
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ClipContext:
    """The per-clip values of the context features.

    Attributes:
      example_id: unique clip id, `<media_id>_<start_us>`.
      dataset_name: e.g. `kinetics600`.
      data_path: source video path as given in the manifest.
      media_id: video id.
      start_us, end_us: the clip window in the source, int microseconds, start < end.
      label_index: 0-based class index, >= 0.
      label: class name.
    """

    example_id: str
    dataset_name: str
    data_path: str
    media_id: str
    start_us: int
    end_us: int
    label_index: int
    label: str

    def __post_init__(self):
        if not self.example_id:
            raise ValueError(f"example_id={self.example_id!r}: must be non-empty")
        if self.label_index < 0:
            raise ValueError(f"label_index={self.label_index}: must be >= 0")
        if self.end_us <= self.start_us:
            raise ValueError(f"end_us={self.end_us}: must be > start_us={self.start_us}")


@dataclasses.dataclass(frozen=True)
class StreamInfo:
    """Metadata of one stored image stream: stored size in pixels and frame rate (Hz)."""

    height: int
    width: int
    frame_rate: float = FRAME_RATE
    channels: int = 3
    format: str = IMAGE_FORMAT_JPEG


def _bytes(values: Sequence[bytes | str]):
    import tensorflow as tf

    return tf.train.Feature(
        bytes_list=tf.train.BytesList(
            value=[v.encode() if isinstance(v, str) else v for v in values]
        )
    )


def _ints(values):
    import tensorflow as tf

    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _floats(values):
    import tensorflow as tf

    return tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(values, np.float32)))


def _varint(n: int) -> bytes:
    """Protocol-buffer base-128 varint of a non-negative int."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload_len: int) -> bytes:
    """Tag and length of a length-delimited protocol-buffer field."""
    return _varint(number << 3 | 2) + _varint(payload_len)


class SequenceExampleBuilder:
    """Builds one clip's SequenceExample step by step, holding only encoded bytes.

    Usage: create with the clip context and the stream metadata of the modalities written; call
    `add_frame` once per stored frame (in time order) and `add_flow` once per consecutive frame
    pair; then `serialize()` (or `build()` for the proto). Each step is kept as its serialized
    `Feature`, and the builder writes the SequenceExample's framing around them itself, so memory
    is the size of the encoded output while the clip grows. `serialize_pieces()` hands the record
    over as the kept steps and the framing between them, so that a writer can write it with no
    second copy; `serialize()` joins them (twice the record while it does). The bytes are exactly
    protobuf's deterministic serialization of the same SequenceExample (tested).
    """

    def __init__(
        self,
        context: ClipContext,
        streams: dict[str, StreamInfo],
    ):
        self._modalities = _check_modalities(tuple(streams))
        import tensorflow as tf

        self._context = tf.train.Features()
        ctx = self._context.feature
        ctx[EXAMPLE_ID_KEY].CopyFrom(_bytes([context.example_id]))
        ctx[DATASET_NAME_KEY].CopyFrom(_bytes([context.dataset_name]))
        ctx[CLIP_DATA_PATH_KEY].CopyFrom(_bytes([context.data_path]))
        ctx[CLIP_MEDIA_ID_KEY].CopyFrom(_bytes([context.media_id]))
        ctx[CLIP_START_TIMESTAMP_KEY].CopyFrom(_ints([context.start_us]))
        ctx[CLIP_END_TIMESTAMP_KEY].CopyFrom(_ints([context.end_us]))
        ctx[CLIP_LABEL_INDEX_KEY].CopyFrom(_ints([context.label_index]))
        ctx[CLIP_LABEL_STRING_KEY].CopyFrom(_bytes([context.label]))
        ctx[CLIP_LABEL_TEXT_KEY].CopyFrom(_bytes([context.label]))
        for modality, info in streams.items():
            p = MODALITY_PREFIX[modality]
            ctx[prefixed(p, IMAGE_FORMAT)].CopyFrom(_bytes([info.format]))
            ctx[prefixed(p, IMAGE_CHANNELS)].CopyFrom(_ints([info.channels]))
            ctx[prefixed(p, IMAGE_HEIGHT)].CopyFrom(_ints([info.height]))
            ctx[prefixed(p, IMAGE_WIDTH)].CopyFrom(_ints([info.width]))
            ctx[prefixed(p, IMAGE_FRAME_RATE)].CopyFrom(_floats([info.frame_rate]))
        if MODALITY_FLOW in streams:
            ctx[prefixed(FORWARD_FLOW_PREFIX, IMAGE_SATURATION)].CopyFrom(
                _floats([FLOW_SATURATION])
            )
        if MODALITY_POSE in streams:
            ctx[POSE_PARTS_KEY].CopyFrom(_bytes(COCO17_JOINT_NAMES))
        # Sequence key -> its steps, each a serialized `Feature`.
        self._lists: dict[str, list[bytes]] = {k: [] for k in sequence_keys(self._modalities)}
        self._num_frames = 0
        self._num_flows = 0
        self._last_timestamp: int | None = None

    @property
    def num_frames(self) -> int:
        return self._num_frames

    def _append(self, key: str, feature) -> None:
        self._lists[key].append(feature.SerializeToString())

    def add_frame(
        self,
        timestamp_us: int,
        rgb_jpeg: bytes | None = None,
        pose_jpeg: bytes | None = None,
        keypoints: np.ndarray | None = None,
        keypoint_scores: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        box_scores: np.ndarray | None = None,
        track_ids: np.ndarray | None = None,
    ) -> None:
        """Appends one time step.

        Args:
          timestamp_us: int microseconds, strictly increasing from call to call.
          rgb_jpeg: JPEG bytes of the RGB frame; required iff `rgb` is written.
          pose_jpeg: JPEG bytes of the pose-rendered frame; required iff `pose` is written.
          keypoints: float [P, 17, 2], (x, y) normalized; clipped to [0, 1] when stored.
          keypoint_scores: float [P, 17] in [0, 1].
          boxes: float [P, 4], (ymin, xmin, ymax, xmax) normalized; clipped to [0, 1].
          box_scores: float [P] in [0, 1].
          track_ids: int [P], >= 0.
          The pose arrays are required iff `pose` is written.
        """
        if self._last_timestamp is not None and timestamp_us <= self._last_timestamp:
            raise ValueError(
                f"timestamp_us={timestamp_us}: must be > the previous step's {self._last_timestamp}"
            )
        self._last_timestamp = timestamp_us
        ts = _ints([timestamp_us])
        for modality, data in ((MODALITY_RGB, rgb_jpeg), (MODALITY_POSE, pose_jpeg)):
            if modality not in self._modalities:
                continue
            if data is None:
                raise ValueError(f"{modality} image missing at timestamp_us={timestamp_us}")
            p = MODALITY_PREFIX[modality]
            self._append(prefixed(p, IMAGE_ENCODED), _bytes([data]))
            self._append(prefixed(p, IMAGE_TIMESTAMP), ts)
        if MODALITY_POSE in self._modalities:
            self._add_regions(ts, keypoints, keypoint_scores, boxes, box_scores, track_ids)
        self._num_frames += 1

    def _add_regions(self, ts, keypoints, keypoint_scores, boxes, box_scores, track_ids) -> None:
        if keypoints is None or keypoint_scores is None or boxes is None or box_scores is None:
            raise ValueError("keypoints, keypoint_scores, boxes and box_scores are required")
        keypoints = np.asarray(keypoints, np.float32)
        num = keypoints.shape[0]
        if keypoints.shape != (num, NUM_JOINTS, 2):
            raise ValueError(f"keypoints.shape={keypoints.shape}: expected [P, 17, 2]")
        keypoint_scores = np.asarray(keypoint_scores, np.float32)
        boxes = np.asarray(boxes, np.float32)
        box_scores = np.asarray(box_scores, np.float32)
        if track_ids is None:
            track_ids = np.arange(num)
        track_ids = np.asarray(track_ids, np.int64)
        for name, arr, shape in (
            ("keypoint_scores", keypoint_scores, (num, NUM_JOINTS)),
            ("boxes", boxes, (num, 4)),
            ("box_scores", box_scores, (num,)),
            ("track_ids", track_ids, (num,)),
        ):
            if arr.shape != shape:
                raise ValueError(f"{name}.shape={arr.shape}: expected {shape} for P={num}")
        keypoints = np.clip(np.nan_to_num(keypoints, nan=0.0), 0.0, 1.0)
        boxes = np.clip(boxes, 0.0, 1.0)
        self._append(REGION_NUM_REGIONS_KEY, _ints([num]))
        self._append(REGION_TIMESTAMP_KEY, ts)
        self._append(REGION_IS_ANNOTATED_KEY, _ints([1]))
        for i, key in enumerate(
            (REGION_BBOX_YMIN_KEY, REGION_BBOX_XMIN_KEY, REGION_BBOX_YMAX_KEY, REGION_BBOX_XMAX_KEY)
        ):
            self._append(key, _floats(boxes[:, i]))
        self._append(REGION_CONFIDENCE_KEY, _floats(np.clip(box_scores, 0.0, 1.0)))
        self._append(REGION_TRACK_INDEX_KEY, _ints(track_ids))
        self._append(POSE_POINT_X_KEY, _floats(keypoints[:, :, 0].reshape(-1)))
        self._append(POSE_POINT_Y_KEY, _floats(keypoints[:, :, 1].reshape(-1)))
        self._append(POSE_NUM_REGIONS_KEY, _ints([num * NUM_JOINTS]))
        self._append(
            POSE_CONFIDENCE_KEY,
            _floats(np.clip(np.nan_to_num(keypoint_scores, nan=0.0), 0, 1).reshape(-1)),
        )

    def add_flow(self, timestamp_us: int, flow_jpeg: bytes) -> None:
        """Appends the flow from the frame stamped `timestamp_us` to the next frame (JPEG)."""
        if MODALITY_FLOW not in self._modalities:
            raise ValueError("add_flow called but the flow modality is not written")
        self._append(prefixed(FORWARD_FLOW_PREFIX, IMAGE_ENCODED), _bytes([flow_jpeg]))
        self._append(prefixed(FORWARD_FLOW_PREFIX, IMAGE_TIMESTAMP), _ints([timestamp_us]))
        self._num_flows += 1

    def _finish(self, end_us: int | None) -> None:
        """Sets the clip end if given and checks the clip is complete."""
        if self._lists is None:
            raise ValueError("the builder's steps were released by serialize(release=True)")
        if end_us is not None:
            ctx = self._context.feature
            start = ctx[CLIP_START_TIMESTAMP_KEY].int64_list.value[0]
            if end_us <= start:
                raise ValueError(f"end_us={end_us}: must be > the clip start {start}")
            ctx[CLIP_END_TIMESTAMP_KEY].CopyFrom(_ints([end_us]))
        if self._num_frames == 0:
            raise ValueError("a clip needs at least one frame")
        if MODALITY_FLOW in self._modalities and self._num_flows != self._num_frames - 1:
            raise ValueError(
                f"flow steps={self._num_flows}: expected frames - 1 = {self._num_frames - 1}"
            )

    def serialize(self, end_us: int | None = None, release: bool = False) -> bytes:
        """The record's bytes: protobuf's deterministic serialization (map keys sorted), the same
        in every process. Every sequence key of the modalities is present (a 1-frame clip has an
        empty flow list).

        Args:
          end_us: if given, replaces the clip end (for clips whose end is known only once their
            last frame is in), microseconds, > the clip start.
          release: let the steps go once the record is made; the builder is then used up.
        """
        return b"".join(self.serialize_pieces(end_us, release))

    def serialize_pieces(self, end_us: int | None = None, release: bool = False) -> list[bytes]:
        """The record as pieces whose concatenation is `serialize`'s bytes, without copying the
        steps: the pieces are the kept steps and the framing between them. A writer that takes
        pieces (`pipelines.storage.output.write_tfrecords`) so holds the clip once, not twice.

        Args: as in `serialize`.
        """
        self._finish(end_us)
        context = self._context.SerializeToString(deterministic=True)
        # FeatureLists: one map entry per key in key order: {1: key, 2: FeatureList}, where a
        # FeatureList is its steps, each a length-delimited field 1.
        pieces: list[bytes] = []
        lists_len = 0
        for key in sorted(self._lists):
            steps = self._lists[key]
            list_len = sum(len(f) for f in steps) + sum(len(_field(1, len(f))) for f in steps)
            name = key.encode()
            entry_head = _field(1, len(name)) + name + _field(2, list_len)
            entry_len = len(entry_head) + list_len
            pieces.append(_field(1, entry_len) + entry_head)
            lists_len += len(pieces[-1]) + list_len
            for f in steps:
                pieces.append(_field(1, len(f)))
                pieces.append(f)
        if release:
            self._lists = None
        return [_field(1, len(context)) + context + _field(2, lists_len), *pieces]

    def build(self, end_us: int | None = None):
        """The clip as a `tf.train.SequenceExample` (parsed from `serialize`'s bytes).

        Args:
          end_us: as in `serialize`.
        """
        import tensorflow as tf

        return tf.train.SequenceExample.FromString(self.serialize(end_us))


# ---------------------------------------------------------------------------------------------
# Parsing.
# ---------------------------------------------------------------------------------------------
def parse_specs(modalities: Sequence[str] = ALL_MODALITIES):
    """Feature specs for `tf.io.parse_single_sequence_example`.

    Returns:
      (context_features, sequence_features): dicts of key -> tf.io feature spec. Image streams
      parse as `FixedLenSequenceFeature([], tf.string)`, per-step lists as `VarLenFeature`.
    """
    import tensorflow as tf

    modalities = _check_modalities(modalities)
    ctx = {
        EXAMPLE_ID_KEY: tf.io.FixedLenFeature([], tf.string),
        DATASET_NAME_KEY: tf.io.FixedLenFeature([], tf.string),
        CLIP_DATA_PATH_KEY: tf.io.FixedLenFeature([], tf.string),
        CLIP_MEDIA_ID_KEY: tf.io.FixedLenFeature([], tf.string),
        CLIP_START_TIMESTAMP_KEY: tf.io.FixedLenFeature([], tf.int64),
        CLIP_END_TIMESTAMP_KEY: tf.io.FixedLenFeature([], tf.int64),
        CLIP_LABEL_INDEX_KEY: tf.io.FixedLenFeature([], tf.int64),
        CLIP_LABEL_STRING_KEY: tf.io.FixedLenFeature([], tf.string),
        CLIP_LABEL_TEXT_KEY: tf.io.FixedLenFeature([], tf.string),
    }
    seq = {}
    for m in modalities:
        p = MODALITY_PREFIX[m]
        ctx[prefixed(p, IMAGE_FORMAT)] = tf.io.FixedLenFeature([], tf.string)
        ctx[prefixed(p, IMAGE_CHANNELS)] = tf.io.FixedLenFeature([], tf.int64)
        ctx[prefixed(p, IMAGE_HEIGHT)] = tf.io.FixedLenFeature([], tf.int64)
        ctx[prefixed(p, IMAGE_WIDTH)] = tf.io.FixedLenFeature([], tf.int64)
        ctx[prefixed(p, IMAGE_FRAME_RATE)] = tf.io.FixedLenFeature([], tf.float32)
        seq[prefixed(p, IMAGE_ENCODED)] = tf.io.FixedLenSequenceFeature([], tf.string)
        seq[prefixed(p, IMAGE_TIMESTAMP)] = tf.io.FixedLenSequenceFeature([], tf.int64)
    if MODALITY_FLOW in modalities:
        ctx[prefixed(FORWARD_FLOW_PREFIX, IMAGE_SATURATION)] = tf.io.FixedLenFeature([], tf.float32)
    if MODALITY_POSE in modalities:
        ctx[POSE_PARTS_KEY] = tf.io.FixedLenFeature([NUM_JOINTS], tf.string)
        for key in REGION_INT_PER_STEP_KEYS:
            seq[key] = tf.io.FixedLenSequenceFeature([], tf.int64)
        for key in REGION_FLOAT_LIST_KEYS:
            seq[key] = tf.io.VarLenFeature(tf.float32)
        seq[REGION_TRACK_INDEX_KEY] = tf.io.VarLenFeature(tf.int64)
    return ctx, seq


def _read_varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    """(value, position after it) of the varint at `pos`; ValueError if it runs past `end`."""
    value = shift = 0
    while pos < end:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise ValueError("truncated protocol-buffer varint")


def _wire_fields(buf: memoryview, start: int, end: int):
    """Yields (field number, wire type, value) of the message in buf[start:end]: the value of a
    varint field, or (start, end) of a length-delimited one; fixed-width fields are skipped."""
    pos = start
    while pos < end:
        tag, pos = _read_varint(buf, pos, end)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos, end)
        elif wire == 2:
            length, pos = _read_varint(buf, pos, end)
            value, pos = (pos, pos + length), pos + length
        elif wire in (1, 5):
            value, pos = None, pos + (8 if wire == 1 else 4)
        else:
            raise ValueError(f"protocol-buffer wire type {wire} not supported")
        if pos > end:
            raise ValueError("truncated protocol-buffer field")
        yield number, wire, value


def int64_steps(record: bytes, key: str) -> list[list[int]]:
    """The int64 values of every step of sequence feature `key` in a serialized SequenceExample.

    Reads the record's wire format directly, without TensorFlow and without copying or parsing
    anything but `key`'s steps (images are skipped by their lengths), so that the job can count
    e.g. `region/num_regions` in records of tens of MB cheaply.

    Args:
      record: a serialized `tf.train.SequenceExample`.
      key: a sequence key whose steps are int64 lists (`region/num_regions`, ...).

    Returns:
      one list of ints per step, in step order; [] when the record has no such key.

    Raises:
      ValueError: the record is not a valid protocol buffer, or a step of `key` is not int64.
    """
    buf = memoryview(record)
    name = key.encode("utf-8")
    steps: list[list[int]] = []
    # SequenceExample.feature_lists (2) -> FeatureLists.feature_list (1): map entries of
    # key (1) and FeatureList (2) -> FeatureList.feature (1) -> Feature.int64_list (3).
    for number, wire, lists in _wire_fields(buf, 0, len(buf)):
        if (number, wire) != (2, 2):
            continue
        for number, wire, entry in _wire_fields(buf, *lists):
            if (number, wire) != (1, 2):
                continue
            fields = {n: v for n, w, v in _wire_fields(buf, *entry) if w == 2}
            if 1 not in fields or buf[slice(*fields[1])] != name:
                continue
            steps = [
                _int64_values(buf, feature, key)
                for n, w, feature in _wire_fields(buf, *fields.get(2, (0, 0)))
                if (n, w) == (1, 2)
            ]
    return steps


def _int64_values(buf: memoryview, feature: tuple[int, int], key: str) -> list[int]:
    values: list[int] = []
    for number, wire, value in _wire_fields(buf, *feature):
        if number in (1, 2):
            raise ValueError(f"{key}: a step holds a bytes or float list, not int64")
        if (number, wire) != (3, 2):
            continue
        for n, w, v in _wire_fields(buf, *value):
            if n != 1:
                continue
            if w == 0:
                values.append(v)
            else:  # packed
                pos, end = v
                while pos < end:
                    item, pos = _read_varint(buf, pos, end)
                    values.append(item)
    return [v - (1 << 64) if v >= 1 << 63 else v for v in values]


def check_schema_version(version) -> int:
    """Returns `version` if this code can read it; raises ValueError naming it otherwise."""
    if version not in KNOWN_SCHEMA_VERSIONS:
        raise ValueError(
            f"schema_version={version!r}: this reader knows {list(KNOWN_SCHEMA_VERSIONS)}; "
            "upgrade the package to read these records"
        )
    return version


def with_label_index(record: bytes, label_index: int) -> bytes:
    """`record` with `clip/label/index` set to `label_index`: the bytes the builder makes with
    that index. Only the context (field 1, first and small) is re-serialized; the feature lists
    are copied as they are. Lets the job set class indices when it builds the shards, so that a
    part (made once per row) does not depend on the other rows' labels.

    Raises:
      ValueError: `record` is not a SequenceExample whose context comes first.
    """
    import tensorflow as tf

    buf = memoryview(record)
    fields = list(_wire_fields(buf, 0, len(buf)))
    if not fields or fields[0][:2] != (1, 2):
        raise ValueError("not a SequenceExample with its context first")
    start, end = fields[0][2]
    context = tf.train.Features.FromString(bytes(buf[start:end]))
    if list(context.feature[CLIP_LABEL_INDEX_KEY].int64_list.value) == [label_index]:
        return record
    context.feature[CLIP_LABEL_INDEX_KEY].CopyFrom(_ints([label_index]))
    new = context.SerializeToString(deterministic=True)
    return _field(1, len(new)) + new + bytes(buf[end:])
