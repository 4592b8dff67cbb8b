"""The record contract: every key of a clip's `tf.train.SequenceExample`.

This module owns every feature key the project writes or reads, each declared once in the key
table (`KEYS`: part, type, count per person, modality, range) from which the key sets, the parse
specs, the builder's feature types and the validator's expectations are derived. Keys follow
MediaPipe's MediaSequence conventions so that MediaSequence, DMVR and TF Model Garden readers parse
our records unchanged; extra image streams reuse the image keys under an ALL_CAPS prefix
(`PREFIX/image/encoded`).

Units: timestamps are int64 microseconds in the source video's time base; coordinates are
normalized to [0, 1] (x by width, y by height); scores are float in [0, 1].

Nothing here depends on Beam, MediaPipe or OpenCV: `training/` imports this module on TPU VMs.
Records are written and relabeled by this module's own protocol-buffer encoder, without
TensorFlow, so that the job's workers never import it; only the parse specs (`parse_specs`,
`Key.parse_spec`) and `SequenceExampleBuilder.build` import TensorFlow, when called.
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
# The keypoints without the pose-rendered frames (the `pose` modality writes both): for skeleton
# models and for rendering poses at training time.
MODALITY_KEYPOINTS = "keypoints"
# The modalities with an image stream, and every modality a record can carry.
IMAGE_MODALITIES = (MODALITY_RGB, MODALITY_POSE, MODALITY_FLOW)
ALL_MODALITIES = (*IMAGE_MODALITIES, MODALITY_KEYPOINTS)
# What a job writes unless told otherwise.
DEFAULT_MODALITIES = IMAGE_MODALITIES
# The modalities whose records carry the keypoints (the keys of modality MODALITY_KEYPOINTS).
KEYPOINT_MODALITIES = (MODALITY_POSE, MODALITY_KEYPOINTS)
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
# The key table: every key of the record, declared once with its part, type, count and modality.
# ---------------------------------------------------------------------------------------------
# The part of the SequenceExample a key is in.
CONTEXT = "context"  # `SequenceExample.context`: one value list per record
SEQUENCE = "sequence"  # `SequenceExample.feature_lists`: one value list per step (frame)
# The value type: which list of a `tf.train.Feature` holds the values.
BYTES = "bytes"
INT64 = "int64"
FLOAT = "float"  # float32
FEATURE_FIELD = {BYTES: "bytes_list", INT64: "int64_list", FLOAT: "float_list"}
# How many values a key holds.
ONE = "one"  # context: exactly one value; sequence: exactly one value per step
JOINTS = "joints"  # context: NUM_JOINTS values, in COCO-17 order
PER_PERSON = "per_person"  # sequence: one value per person of the step (`region/num_regions`)
PER_JOINT = "per_joint"  # sequence: NUM_JOINTS values per person, person-major (17 * p + j)
_COUNTS = {CONTEXT: (ONE, JOINTS), SEQUENCE: (ONE, PER_PERSON, PER_JOINT)}


@dataclasses.dataclass(frozen=True)
class Key:
    """One key of the record contract.

    Attributes:
      name: the key as written, e.g. `region/track/index`; for a stream key (`stream`) the name
        under the stream's prefix (`image/height`; written `POSE_RENDERED/image/height`, ...).
      part: CONTEXT or SEQUENCE.
      dtype: BYTES, INT64 or FLOAT (float32): the `tf.train.Feature` list of its values.
      count: ONE; JOINTS (context: NUM_JOINTS values); PER_PERSON or PER_JOINT (sequence: 1 or
        NUM_JOINTS values per person of the step).
      modality: the modality whose records carry the key; None: every record. For a stream key,
        None means every image stream of the record, a modality that modality's stream only.
        The keypoints' keys have MODALITY_KEYPOINTS: records of `pose` carry them too
        (KEYPOINT_MODALITIES).
      stream: an image-stream key, written once per stream under its prefix (MODALITY_PREFIX).
      bounds: (low, high) of every value, inclusive, either None for unbounded; None: no range.
      doc: what the value means, with its unit.
    """

    name: str
    part: str
    dtype: str
    count: str = ONE
    modality: str | None = None
    stream: bool = False
    bounds: tuple[float | None, float | None] | None = None
    doc: str = ""

    def __post_init__(self):
        if self.part not in _COUNTS:
            raise ValueError(f"{self.name}: part={self.part!r}: expected one of {list(_COUNTS)}")
        if self.dtype not in FEATURE_FIELD:
            raise ValueError(f"{self.name}: dtype={self.dtype!r}: expected {list(FEATURE_FIELD)}")
        if self.count not in _COUNTS[self.part]:
            raise ValueError(
                f"{self.name}: count={self.count!r}: a {self.part} key's is one of "
                f"{list(_COUNTS[self.part])}"
            )
        if self.modality is not None and self.modality not in ALL_MODALITIES:
            raise ValueError(f"{self.name}: modality={self.modality!r}: not in {ALL_MODALITIES}")
        if self.count in (PER_PERSON, PER_JOINT) and self.modality != MODALITY_KEYPOINTS:
            raise ValueError(f"{self.name}: per-person values need modality={MODALITY_KEYPOINTS!r}")
        if self.stream and self.modality not in (None, *IMAGE_MODALITIES):
            raise ValueError(f"{self.name}: modality={self.modality!r} has no image stream")
        if self.bounds is not None and len(self.bounds) != 2:
            raise ValueError(f"{self.name}: bounds={self.bounds!r}: expected (low, high)")

    @property
    def feature_field(self) -> str:
        """The `tf.train.Feature` field of the values: bytes_list, int64_list or float_list."""
        return FEATURE_FIELD[self.dtype]

    @property
    def np_dtype(self):
        """numpy dtype of the values: object (bytes), int64 or float32."""
        return {BYTES: np.object_, INT64: np.int64, FLOAT: np.float32}[self.dtype]

    @property
    def num_values(self) -> int:
        """Values of a count-ONE or JOINTS key (per step for a sequence key): 1 or NUM_JOINTS."""
        if self.count not in (ONE, JOINTS):
            raise ValueError(f"{self.name}: {self.count} values vary with the persons of a step")
        return NUM_JOINTS if self.count == JOINTS else 1

    @property
    def per_person(self) -> bool:
        """True for a sequence key with values per person of the step (PER_PERSON, PER_JOINT)."""
        return self.count in (PER_PERSON, PER_JOINT)

    @property
    def values_per_person(self) -> int:
        """Values per person of a PER_PERSON (1) or PER_JOINT (NUM_JOINTS) key."""
        if not self.per_person:
            raise ValueError(f"{self.name}: count={self.count!r} is not per person")
        return NUM_JOINTS if self.count == PER_JOINT else 1

    def parse_spec(self):
        """The key's `tf.io` feature spec: context `FixedLenFeature` ([] or [NUM_JOINTS]); per
        step `FixedLenSequenceFeature([])` for one value a step, else `VarLenFeature`."""
        import tensorflow as tf

        dtype = {BYTES: tf.string, INT64: tf.int64, FLOAT: tf.float32}[self.dtype]
        if self.part == CONTEXT:
            return tf.io.FixedLenFeature([self.num_values] if self.count == JOINTS else [], dtype)
        if self.count == ONE:
            return tf.io.FixedLenSequenceFeature([], dtype)
        return tf.io.VarLenFeature(dtype)


_TABLE: list[Key] = []


def _declare(name: str, part: str, dtype: str, count: str = ONE, **fields) -> str:
    """Adds a key to the table (KEYS) and returns its name."""
    if any(k.name == name for k in _TABLE):
        raise ValueError(f"key {name!r} declared twice")
    _TABLE.append(Key(name, part, dtype, count, **fields))
    return name


_UNIT = (0.0, 1.0)  # normalized coordinates and scores

# Context keys of every record.
EXAMPLE_ID_KEY = _declare(
    "example/id", CONTEXT, BYTES, doc="unique clip id, `<media_id>_<start_us>` (`clip_id`)"
)
DATASET_NAME_KEY = _declare("example/dataset_name", CONTEXT, BYTES, doc="e.g. `kinetics600`")
CLIP_DATA_PATH_KEY = _declare(
    "clip/data_path", CONTEXT, BYTES, doc="source video path as given in the manifest"
)
CLIP_MEDIA_ID_KEY = _declare(
    "clip/media_id", CONTEXT, BYTES, doc="video id (YouTube id for Kinetics)"
)
CLIP_START_TIMESTAMP_KEY = _declare(
    "clip/start/timestamp", CONTEXT, INT64, doc="clip start, microseconds in the source"
)
CLIP_END_TIMESTAMP_KEY = _declare(
    "clip/end/timestamp", CONTEXT, INT64, doc="clip end (exclusive), microseconds in the source"
)
CLIP_LABEL_INDEX_KEY = _declare(
    "clip/label/index", CONTEXT, INT64, bounds=(0, None), doc="0-based class index"
)
CLIP_LABEL_STRING_KEY = _declare(
    "clip/label/string", CONTEXT, BYTES, doc="class name (MediaSequence reads this)"
)
CLIP_LABEL_TEXT_KEY = _declare(
    "clip/label/text", CONTEXT, BYTES, doc="class name again (DMVR reads this)"
)

# Image stream metadata, per prefix (`image/format`, `POSE_RENDERED/image/format`, ...).
IMAGE_FORMAT = _declare("image/format", CONTEXT, BYTES, stream=True, doc="`JPEG`")
IMAGE_CHANNELS = _declare("image/channels", CONTEXT, INT64, stream=True, doc="3")
IMAGE_HEIGHT = _declare(
    "image/height", CONTEXT, INT64, stream=True, doc="stored frame height, pixels"
)
IMAGE_WIDTH = _declare("image/width", CONTEXT, INT64, stream=True, doc="stored frame width, pixels")
IMAGE_FRAME_RATE = _declare(
    "image/frame_rate", CONTEXT, FLOAT, stream=True, doc="frames per second of the stored stream"
)
IMAGE_SATURATION = _declare(
    "image/saturation",
    CONTEXT,
    FLOAT,
    modality=MODALITY_FLOW,
    stream=True,
    doc="flow only: the clipping bound of the quantized flow, pixels (FLOW_SATURATION)",
)
# Sequence keys per prefix.
IMAGE_ENCODED = _declare("image/encoded", SEQUENCE, BYTES, stream=True, doc="the encoded image")
IMAGE_TIMESTAMP = _declare(
    "image/timestamp", SEQUENCE, INT64, stream=True, doc="microseconds in the source"
)

POSE_PARTS_KEY = _declare(
    "POSE/region/parts",
    CONTEXT,
    BYTES,
    JOINTS,
    modality=MODALITY_KEYPOINTS,
    doc="the COCO-17 joint names in order (COCO17_JOINT_NAMES)",
)

# Sequence keys: person regions (one step per RGB frame). Person p of a step is box p; its
# keypoints are person-major, NUM_JOINTS per person (person p, joint j at 17 * p + j).
_POSE = MODALITY_KEYPOINTS
REGION_NUM_REGIONS_KEY = _declare(
    "region/num_regions", SEQUENCE, INT64, modality=_POSE, doc="persons in the frame"
)
REGION_TIMESTAMP_KEY = _declare(
    "region/timestamp", SEQUENCE, INT64, modality=_POSE, doc="microseconds, = image/timestamp"
)
REGION_IS_ANNOTATED_KEY = _declare(
    "region/is_annotated", SEQUENCE, INT64, modality=_POSE, doc="1: pose ran on every frame"
)
REGION_BBOX_YMIN_KEY = _declare(
    "region/bbox/ymin", SEQUENCE, FLOAT, PER_PERSON, modality=_POSE, bounds=_UNIT,
    doc="person box top, normalized",
)  # fmt: skip
REGION_BBOX_XMIN_KEY = _declare(
    "region/bbox/xmin", SEQUENCE, FLOAT, PER_PERSON, modality=_POSE, bounds=_UNIT,
    doc="person box left, normalized",
)  # fmt: skip
REGION_BBOX_YMAX_KEY = _declare(
    "region/bbox/ymax", SEQUENCE, FLOAT, PER_PERSON, modality=_POSE, bounds=_UNIT,
    doc="person box bottom, normalized",
)  # fmt: skip
REGION_BBOX_XMAX_KEY = _declare(
    "region/bbox/xmax", SEQUENCE, FLOAT, PER_PERSON, modality=_POSE, bounds=_UNIT,
    doc="person box right, normalized",
)  # fmt: skip
REGION_CONFIDENCE_KEY = _declare(
    "region/label/confidence", SEQUENCE, FLOAT, PER_PERSON, modality=_POSE, bounds=_UNIT,
    doc="person score",
)  # fmt: skip
REGION_TRACK_INDEX_KEY = _declare(
    "region/track/index", SEQUENCE, INT64, PER_PERSON, modality=_POSE, bounds=(0, None),
    doc="person track id: the person's identity across the clip's frames",
)  # fmt: skip
POSE_POINT_X_KEY = _declare(
    "POSE/region/point/x", SEQUENCE, FLOAT, PER_JOINT, modality=_POSE, bounds=_UNIT,
    doc="keypoint x, normalized by the frame width",
)  # fmt: skip
POSE_POINT_Y_KEY = _declare(
    "POSE/region/point/y", SEQUENCE, FLOAT, PER_JOINT, modality=_POSE, bounds=_UNIT,
    doc="keypoint y, normalized by the frame height",
)  # fmt: skip
POSE_NUM_REGIONS_KEY = _declare(
    "POSE/region/num_regions", SEQUENCE, INT64, modality=_POSE, doc="NUM_JOINTS * persons"
)
POSE_CONFIDENCE_KEY = _declare(
    "POSE/region/label/confidence", SEQUENCE, FLOAT, PER_JOINT, modality=_POSE, bounds=_UNIT,
    doc="keypoint scores",
)  # fmt: skip

# Every key of the contract, in declaration order.
KEYS: tuple[Key, ...] = tuple(_TABLE)

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


def _check_modalities(modalities: Sequence[str]) -> tuple[str, ...]:
    modalities = tuple(modalities)
    unknown = [m for m in modalities if m not in ALL_MODALITIES]
    if unknown or not modalities:
        raise ValueError(
            f"modalities={list(modalities)!r}: "
            f"expected a non-empty subset of {list(ALL_MODALITIES)}"
        )
    return modalities


def check_written_modalities(modalities: Sequence[str]) -> tuple[str, ...]:
    """The modalities of the records a job writes, checked: a non-empty subset of
    ALL_MODALITIES, each once, and not both `pose` and `keypoints` (`pose` carries the keypoints
    already).

    Raises:
      ValueError: naming `modalities` and the reason.
    """
    modalities = _check_modalities(modalities)
    if len(set(modalities)) != len(modalities):
        raise ValueError(f"modalities={list(modalities)!r}: a modality is named twice")
    if MODALITY_POSE in modalities and MODALITY_KEYPOINTS in modalities:
        raise ValueError(
            f"modalities={list(modalities)!r}: {MODALITY_POSE!r} writes the keypoints with the "
            f"rendered frames; name {MODALITY_KEYPOINTS!r} only to write the keypoints without them"
        )
    return modalities


def carries_keypoints(modalities: Sequence[str]) -> bool:
    """Whether records of these modalities carry the keypoints (`pose` or `keypoints`)."""
    return any(m in KEYPOINT_MODALITIES for m in modalities)


def record_keys(modalities: Sequence[str] = ALL_MODALITIES) -> dict[str, Key]:
    """Every key a record with these modalities carries: full name -> its Key, in table order
    (a stream key once per stream, in the order of `modalities`).

    A stream key comes with its full name (`POSE_RENDERED/image/height`) and the stream's
    modality; the other keys as declared in KEYS. The keypoints' keys come with `pose` as well as
    with `keypoints`.

    Raises:
      ValueError: `modalities` is empty or names an unknown modality.
    """
    modalities = _check_modalities(modalities)
    keys: dict[str, Key] = {}
    with_keypoints = carries_keypoints(modalities)
    for key in KEYS:
        if not key.stream:
            if (
                key.modality is None
                or key.modality in modalities
                or (key.modality == MODALITY_KEYPOINTS and with_keypoints)
            ):
                keys[key.name] = key
            continue
        for m in modalities:
            if m in MODALITY_PREFIX and key.modality in (None, m):
                name = prefixed(MODALITY_PREFIX[m], key.name)
                keys[name] = dataclasses.replace(key, name=name, modality=m)
    return keys


_ALL_KEYS = record_keys(ALL_MODALITIES)


def key_info(name: str) -> Key:
    """The Key of a full key name (`region/track/index`, `FORWARD_FLOW/image/encoded`, ...).

    Raises:
      KeyError: naming `name`, which is no key of the contract.
    """
    try:
        return _ALL_KEYS[name]
    except KeyError:
        raise KeyError(f"key {name!r}: not in the record contract") from None


def context_keys(modalities: Sequence[str] = ALL_MODALITIES) -> frozenset[str]:
    """All context keys a record with these modalities carries."""
    return frozenset(n for n, k in record_keys(modalities).items() if k.part == CONTEXT)


def sequence_keys(modalities: Sequence[str] = ALL_MODALITIES) -> frozenset[str]:
    """All sequence (feature_list) keys a record with these modalities carries."""
    return frozenset(n for n, k in record_keys(modalities).items() if k.part == SEQUENCE)


def _region_keys(dtype: str, per_person: bool) -> tuple[str, ...]:
    return tuple(
        k.name
        for k in KEYS
        if k.part == SEQUENCE
        and not k.stream
        and k.modality == MODALITY_KEYPOINTS
        and k.dtype == dtype
        and k.per_person == per_person
    )


# The keypoints' float lists per person (boxes and scores, then keypoints), and its int64
# values of one per step, in table order.
REGION_FLOAT_LIST_KEYS = _region_keys(FLOAT, per_person=True)
REGION_INT_PER_STEP_KEYS = _region_keys(INT64, per_person=False)


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


# The records are written by the wire-format encoder below, not by TensorFlow's protobuf
# classes, so that a worker writing records does not import TensorFlow (hundreds of MB). The
# messages (tensorflow/core/example/{feature,example}.proto), with their field numbers:
#   Feature        {BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3}
#                  (a oneof: exactly one is written, empty or not)
#   BytesList      {repeated bytes value = 1}
#   FloatList      {repeated float value = 1 [packed]}   little-endian float32
#   Int64List      {repeated int64 value = 1 [packed]}   varints, negatives as 2**64 + v
#   Features       {map<string, Feature> feature = 1}
#   FeatureList    {repeated Feature feature = 1}
#   FeatureLists   {map<string, FeatureList> feature_list = 1}
#   SequenceExample {Features context = 1; FeatureLists feature_lists = 2}
# A map is a repeated message {key = 1; value = 2}, both always written; protobuf's deterministic
# serialization writes the entries sorted by key. The bytes are exactly those of protobuf's
# deterministic serialization (tests/schemas/test_wire_format.py compares them with TensorFlow's).
_FEATURE_BYTES, _FEATURE_FLOAT, _FEATURE_INT64 = 1, 2, 3  # Feature's fields
_INT64_MIN, _INT64_END = -(1 << 63), 1 << 63
_UINT64_MASK = (1 << 64) - 1


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


def _feature_of(number: int, values: bytes) -> bytes:
    """A serialized `Feature` whose list `number` (1 bytes, 2 float, 3 int64) holds the
    serialized values field `values` (b"" for an empty list)."""
    return _field(number, len(values)) + values


def _bytes(values: Sequence[bytes | str]) -> bytes:
    """The serialized `Feature` of a BytesList of `values` (str is UTF-8 encoded)."""
    parts = []
    for i, v in enumerate(values):
        if isinstance(v, str):
            v = v.encode()
        elif not isinstance(v, bytes):
            raise TypeError(f"values[{i}]: a {type(v).__name__}, expected bytes or str")
        parts += (_field(1, len(v)), v)
    size = sum(len(p) for p in parts)
    return b"".join((_field(_FEATURE_BYTES, size), *parts))


def _ints(values) -> bytes:
    """The serialized `Feature` of an Int64List of `values` (each `int(v)`, int64)."""
    packed = []
    for v in values:
        v = int(v)
        if not _INT64_MIN <= v < _INT64_END:
            raise ValueError(f"value {v}: outside the int64 range")
        packed.append(_varint(v & _UINT64_MASK))
    data = b"".join(packed)
    return _feature_of(_FEATURE_INT64, _field(1, len(data)) + data if data else b"")


def _floats(values) -> bytes:
    """The serialized `Feature` of a FloatList of `values` (`np.asarray(values, np.float32)`,
    one dimension)."""
    values = np.asarray(values, np.float32)
    if values.ndim != 1:
        raise ValueError(f"values.shape={values.shape}: expected one dimension")
    data = values.astype("<f4", copy=False).tobytes()
    return _feature_of(_FEATURE_FLOAT, _field(1, len(data)) + data if data else b"")


_ENCODERS = {BYTES: _bytes, INT64: _ints, FLOAT: _floats}


def feature(key: Key, values) -> bytes:
    """`values` as the serialized `tf.train.Feature` of `key`'s type: bytes (str is UTF-8
    encoded), int64 (each `int(v)`) or float32 (`np.asarray(values, np.float32)`)."""
    return _ENCODERS[key.dtype](values)


def _map_entry(key: str, value: bytes) -> bytes:
    """One entry of a string-keyed map field 1 (Features, FeatureLists) whose value is the
    serialized message `value`."""
    name = key.encode()
    entry = _field(1, len(name)) + name + _field(2, len(value))
    return _field(1, len(entry) + len(value)) + entry + value


def _features(features: dict[str, bytes]) -> bytes:
    """The serialized `Features` of key -> serialized `Feature`, entries sorted by key."""
    return b"".join(_map_entry(k, features[k]) for k in sorted(features))


class SequenceExampleBuilder:
    """Builds one clip's SequenceExample step by step, holding only encoded bytes.

    Usage: create with the clip context, the stream metadata of the image streams written and
    whether the keypoints are written without the rendered frames (`keypoints`); call
    `add_frame` once per stored frame (in time order) and `add_flow` once per consecutive frame
    pair; then `serialize()` (or `build()` for the proto). Each step is kept as its serialized
    `Feature` (`feature`: the wire format written here, no TensorFlow), and the builder writes
    the SequenceExample's framing around them itself, so memory is the size of the encoded output
    while the clip grows. `serialize_pieces()` hands the record over as the kept steps and the
    framing between them, so that a writer can write it with no second copy; `serialize()` joins
    them (twice the record while it does). The bytes are exactly protobuf's deterministic
    serialization of the same SequenceExample (tests/schemas/test_wire_format.py).
    """

    def __init__(
        self,
        context: ClipContext,
        streams: dict[str, StreamInfo],
        keypoints: bool = False,
    ):
        """Args:
        context: the clip's context values.
        streams: image modality (IMAGE_MODALITIES) -> its stream's metadata; may be empty with
          `keypoints`.
        keypoints: write the keypoints without the pose-rendered frames (the `keypoints`
          modality); with a `pose` stream the keypoints are written anyway.
        """
        no_stream = [m for m in streams if m not in IMAGE_MODALITIES]
        if no_stream:
            raise ValueError(
                f"streams: {no_stream} have no image stream; expected a subset of "
                f"{list(IMAGE_MODALITIES)} (pass keypoints=True for the keypoints)"
            )
        self._modalities = check_written_modalities(
            (*streams, MODALITY_KEYPOINTS) if keypoints else tuple(streams)
        )
        # The keys of these modalities, with their types (the key table).
        self._keys = record_keys(self._modalities)
        # Context key -> its serialized `Feature`.
        self._context: dict[str, bytes] = {}
        self._start_us = context.start_us
        self._set(EXAMPLE_ID_KEY, [context.example_id])
        self._set(DATASET_NAME_KEY, [context.dataset_name])
        self._set(CLIP_DATA_PATH_KEY, [context.data_path])
        self._set(CLIP_MEDIA_ID_KEY, [context.media_id])
        self._set(CLIP_START_TIMESTAMP_KEY, [context.start_us])
        self._set(CLIP_END_TIMESTAMP_KEY, [context.end_us])
        self._set(CLIP_LABEL_INDEX_KEY, [context.label_index])
        self._set(CLIP_LABEL_STRING_KEY, [context.label])
        self._set(CLIP_LABEL_TEXT_KEY, [context.label])
        for modality, info in streams.items():
            p = MODALITY_PREFIX[modality]
            self._set(prefixed(p, IMAGE_FORMAT), [info.format])
            self._set(prefixed(p, IMAGE_CHANNELS), [info.channels])
            self._set(prefixed(p, IMAGE_HEIGHT), [info.height])
            self._set(prefixed(p, IMAGE_WIDTH), [info.width])
            self._set(prefixed(p, IMAGE_FRAME_RATE), [info.frame_rate])
        if MODALITY_FLOW in streams:
            self._set(prefixed(FORWARD_FLOW_PREFIX, IMAGE_SATURATION), [FLOW_SATURATION])
        if carries_keypoints(self._modalities):
            self._set(POSE_PARTS_KEY, COCO17_JOINT_NAMES)
        unset = {n for n, k in self._keys.items() if k.part == CONTEXT} - set(self._context)
        if unset:  # a key of the table that the builder does not fill
            raise AssertionError(f"context keys not set: {sorted(unset)}")
        # Sequence key -> its steps, each a serialized `Feature`.
        self._lists: dict[str, list[bytes]] = {
            n: [] for n, k in self._keys.items() if k.part == SEQUENCE
        }
        self._num_frames = 0
        self._num_flows = 0
        self._last_timestamp: int | None = None

    @property
    def num_frames(self) -> int:
        return self._num_frames

    def _set(self, key: str, values) -> None:
        """Sets context key `key` to `values`, encoded as the key table types it."""
        info = self._keys[key]
        if info.part != CONTEXT:
            raise ValueError(f"{key}: a {info.part} key, not a context key")
        self._context[key] = feature(info, values)

    def _append(self, key: str, values) -> None:
        """Appends one step of `values` to sequence key `key`, encoded as the table types it."""
        self._lists[key].append(feature(self._keys[key], values))

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
          The pose arrays are required iff the keypoints are written (`pose` or `keypoints`).
        """
        if self._last_timestamp is not None and timestamp_us <= self._last_timestamp:
            raise ValueError(
                f"timestamp_us={timestamp_us}: must be > the previous step's {self._last_timestamp}"
            )
        self._last_timestamp = timestamp_us
        ts = [timestamp_us]
        for modality, data in ((MODALITY_RGB, rgb_jpeg), (MODALITY_POSE, pose_jpeg)):
            if modality not in self._modalities:
                continue
            if data is None:
                raise ValueError(f"{modality} image missing at timestamp_us={timestamp_us}")
            p = MODALITY_PREFIX[modality]
            self._append(prefixed(p, IMAGE_ENCODED), [data])
            self._append(prefixed(p, IMAGE_TIMESTAMP), ts)
        if carries_keypoints(self._modalities):
            self._add_regions(ts, keypoints, keypoint_scores, boxes, box_scores, track_ids)
        self._num_frames += 1

    def _add_regions(self, ts, keypoints, keypoint_scores, boxes, box_scores, track_ids) -> None:
        if keypoints is None or keypoint_scores is None or boxes is None or box_scores is None:
            raise ValueError("keypoints, keypoint_scores, boxes and box_scores are required")
        keypoints = np.asarray(keypoints, np.float32)
        num = keypoints.shape[0]
        if keypoints.shape != (num, NUM_JOINTS, 2):
            raise ValueError(f"keypoints.shape={keypoints.shape}: expected [P, {NUM_JOINTS}, 2]")
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
        self._append(REGION_NUM_REGIONS_KEY, [num])
        self._append(REGION_TIMESTAMP_KEY, ts)
        self._append(REGION_IS_ANNOTATED_KEY, [1])
        for i, key in enumerate(
            (REGION_BBOX_YMIN_KEY, REGION_BBOX_XMIN_KEY, REGION_BBOX_YMAX_KEY, REGION_BBOX_XMAX_KEY)
        ):
            self._append(key, boxes[:, i])
        self._append(REGION_CONFIDENCE_KEY, np.clip(box_scores, 0.0, 1.0))
        self._append(REGION_TRACK_INDEX_KEY, track_ids)
        self._append(POSE_POINT_X_KEY, keypoints[:, :, 0].reshape(-1))
        self._append(POSE_POINT_Y_KEY, keypoints[:, :, 1].reshape(-1))
        self._append(POSE_NUM_REGIONS_KEY, [num * NUM_JOINTS])
        self._append(
            POSE_CONFIDENCE_KEY, np.clip(np.nan_to_num(keypoint_scores, nan=0.0), 0, 1).reshape(-1)
        )

    def add_flow(self, timestamp_us: int, flow_jpeg: bytes) -> None:
        """Appends the flow from the frame stamped `timestamp_us` to the next frame (JPEG)."""
        if MODALITY_FLOW not in self._modalities:
            raise ValueError("add_flow called but the flow modality is not written")
        self._append(prefixed(FORWARD_FLOW_PREFIX, IMAGE_ENCODED), [flow_jpeg])
        self._append(prefixed(FORWARD_FLOW_PREFIX, IMAGE_TIMESTAMP), [timestamp_us])
        self._num_flows += 1

    def _finish(self, end_us: int | None) -> None:
        """Sets the clip end if given and checks the clip is complete."""
        if self._lists is None:
            raise ValueError("the builder's steps were released by serialize(release=True)")
        if end_us is not None:
            if end_us <= self._start_us:
                raise ValueError(f"end_us={end_us}: must be > the clip start {self._start_us}")
            self._set(CLIP_END_TIMESTAMP_KEY, [end_us])
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
        context = _features(self._context)
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
    """Feature specs for `tf.io.parse_single_sequence_example`, from the key table.

    Returns:
      (context_features, sequence_features): dicts of key -> tf.io feature spec (`Key.parse_spec`).
      Context keys parse as `FixedLenFeature([])` (`POSE/region/parts` as [NUM_JOINTS]); sequence
      keys with one value a step (images, timestamps, counts) as `FixedLenSequenceFeature([])`,
      per-person lists as `VarLenFeature`.
    """
    keys = record_keys(modalities)
    ctx = {n: k.parse_spec() for n, k in keys.items() if k.part == CONTEXT}
    seq = {n: k.parse_spec() for n, k in keys.items() if k.part == SEQUENCE}
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
    that index. Only the context (field 1, first and small) is rewritten, its entries sorted by
    key as protobuf's deterministic serialization writes them; the feature lists are copied as
    they are. Lets the job set class indices when it builds the shards, so that a part (made once
    per row) does not depend on the other rows' labels. Reads and writes the wire format itself,
    without TensorFlow.

    Args:
      record: a serialized SequenceExample whose context comes first (the builder's).
      label_index: the 0-based class index, int64.

    Raises:
      ValueError: `record` is not a SequenceExample whose context comes first, or its context
        is not a map of features.
    """
    buf = memoryview(record)
    fields = list(_wire_fields(buf, 0, len(buf)))
    if not fields or fields[0][:2] != (1, 2):
        raise ValueError("not a SequenceExample with its context first")
    start, end = fields[0][2]
    # Features.feature (1): map entries {key (1), Feature (2)}; a later entry of a key wins.
    context: dict[str, bytes] = {}
    for number, wire, entry in _wire_fields(buf, start, end):
        if (number, wire) != (1, 2):
            raise ValueError(f"context field {number} (wire type {wire}): not a feature entry")
        parts = {n: bytes(buf[slice(*v)]) for n, w, v in _wire_fields(buf, *entry) if w == 2}
        context[parts.get(1, b"").decode()] = parts.get(2, b"")
    label = _ints([label_index])
    if context.get(CLIP_LABEL_INDEX_KEY) == label:
        return record
    context[CLIP_LABEL_INDEX_KEY] = label
    new = _features(context)
    return _field(1, len(new)) + new + bytes(buf[end:])
