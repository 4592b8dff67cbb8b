"""The builder's own protobuf encoder against TensorFlow's protobuf classes: the same bytes.

The builder writes records without TensorFlow (`schemas.media_sequence`'s wire-format encoder);
here every record it makes is compared with the `tf.train.SequenceExample` built from the same
inputs by TensorFlow's classes and serialized deterministically, and parsed back field by field.
"""

import numpy as np
import pytest
import tensorflow as tf

from schemas import media_sequence as ms

SUBSETS = [
    ms.DEFAULT_MODALITIES,
    ("rgb",),
    ("pose",),
    ("flow",),
    ("rgb", "flow"),
    ("pose", "flow"),
    ("flow", "pose", "rgb"),
]


def _tf_feature(dtype, values):
    """The reference: `values` as a `tf.train.Feature` of `dtype`, by TensorFlow's classes."""
    if dtype == ms.BYTES:
        values = [v.encode() if isinstance(v, str) else v for v in values]
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
    if dtype == ms.INT64:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))
    return tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(values, np.float32)))


FEATURE_CASES = [
    (ms.BYTES, []),
    (ms.BYTES, [b""]),
    (ms.BYTES, [b"x" * 127, b"y" * 128, "sauté ☃", b"\x00\xff" * 40_000]),
    (ms.BYTES, list(ms.COCO17_JOINT_NAMES)),
    (ms.INT64, []),
    (ms.INT64, [0]),
    (ms.INT64, [1, 127, 128, 300, 2**31, 2**62 + 1, 2**63 - 1]),
    (ms.INT64, [-1, -128, -(2**63), np.int64(-7), np.int32(5), True]),
    (ms.FLOAT, []),
    (ms.FLOAT, [25.0]),
    (ms.FLOAT, [29.97, 1e-3, -0.0, 0.0, 1.0, 1e-40, 3.4e38]),
    (ms.FLOAT, np.array([np.inf, -np.inf, np.nan, 0.5], np.float64)),
    (ms.FLOAT, np.linspace(0, 1, 170, dtype=np.float32)),
]


@pytest.mark.parametrize("dtype, values", FEATURE_CASES)
def test_each_feature_is_protobufs_serialization(dtype, values):
    key = ms.Key("x/y", ms.CONTEXT, dtype)
    data = ms.feature(key, values)
    assert isinstance(data, bytes)
    assert data == _tf_feature(dtype, values).SerializeToString(deterministic=True)
    parsed = tf.train.Feature.FromString(data)
    assert parsed.WhichOneof("kind") == key.feature_field
    got = list(getattr(parsed, key.feature_field).value)
    if dtype == ms.FLOAT:
        want = np.asarray(values, np.float32)
        assert np.asarray(got, np.float32).tobytes() == want.tobytes()  # NaN and -0.0 too
    else:
        want = [v.encode() if isinstance(v, str) else v for v in values]
        assert got == [int(v) for v in want] if dtype == ms.INT64 else got == want


def test_bad_values_are_refused_naming_them():
    ints = ms.Key("x/i", ms.CONTEXT, ms.INT64)
    with pytest.raises(ValueError, match=f"value {2**63}: outside the int64 range"):
        ms.feature(ints, [2**63])
    with pytest.raises(ValueError, match="outside the int64 range"):
        ms.feature(ints, [-(2**63) - 1])
    with pytest.raises(TypeError, match=r"values\[1\]: a int, expected bytes or str"):
        ms.feature(ms.Key("x/b", ms.CONTEXT, ms.BYTES), [b"a", 3])
    with pytest.raises(ValueError, match=r"values.shape=\(2, 2\)"):
        ms.feature(ms.Key("x/f", ms.CONTEXT, ms.FLOAT), np.zeros((2, 2)))


def _clip(rng, modalities, case: int):
    """Random inputs of one clip: (context, streams, frames, flows, end_us). Frames are the
    kwargs of `add_frame`; every third frame has no person, some have NaN and out-of-frame
    values, some 40-bit track ids; image sizes cross the one-, two- and three-byte lengths."""
    label = ("jumping", "sauté ☃", "", "x" * 300)[case % 4]
    start = case * 2**33
    ctx = ms.ClipContext(
        f"vid_{start}", ("demo", "", "kinetics600")[case % 3], "a/ü/vid.mp4" * (1 + case % 20),
        "vid", start, start + 1, (0, 3, 2**40, 599)[case % 4], label,
    )  # fmt: skip
    rate = (25.0, 29.97, 1e-3, 60.0)[case % 4]
    streams = {
        m: ms.StreamInfo(int(rng.integers(1, 3000)), int(rng.integers(1, 3000)), rate)
        for m in modalities
    }
    frames, flows, t = [], [], start
    for f in range(int(rng.integers(1, 12))):
        p = int(rng.integers(0, 7)) if f % 3 else 0
        kp = rng.uniform(-0.3, 1.3, (p, ms.NUM_JOINTS, 2)).astype(np.float32)
        scores = rng.uniform(0, 1, (p, ms.NUM_JOINTS)).astype(np.float32)
        boxes = rng.uniform(-0.2, 1.2, (p, 4)).astype(np.float32)
        box_scores = rng.uniform(0, 1, (p,)).astype(np.float32)
        if p and f % 4 == 1:
            kp[0, 3, 0] = scores[0, 5] = box_scores[0] = np.nan
            boxes[0, 0] = -0.0
        ids = rng.integers(0, 2**40, p) if f % 5 == 2 else (np.arange(p) if f % 2 else None)
        size = (0, 5, 127, 128, 300, 20_000, 200_000)[int(rng.integers(0, 7))]
        frames.append(
            dict(
                timestamp_us=t,
                rgb_jpeg=rng.bytes(size) if "rgb" in modalities else None,
                pose_jpeg=rng.bytes(size // 2) if "pose" in modalities else None,
                keypoints=kp, keypoint_scores=scores, boxes=boxes, box_scores=box_scores,
                track_ids=ids,
            )
        )  # fmt: skip
        if "flow" in modalities and f:
            flows.append((frames[-2]["timestamp_us"], rng.bytes(size // 3)))
        t += int(rng.integers(1, 2**20))
    return ctx, streams, frames, flows, t + 5 if case % 2 else None


def _reference(ctx, streams, frames, flows, end_us) -> tf.train.SequenceExample:
    """The clip as TensorFlow's classes build it, the contract's values put in one by one."""
    ex = tf.train.SequenceExample()
    keys = ms.record_keys(tuple(streams))

    def put(key, values):
        ex.context.feature[key].CopyFrom(_tf_feature(keys[key].dtype, values))

    def step(key, values):
        ex.feature_lists.feature_list[key].feature.add().CopyFrom(
            _tf_feature(keys[key].dtype, values)
        )

    for key, value in (
        (ms.EXAMPLE_ID_KEY, ctx.example_id), (ms.DATASET_NAME_KEY, ctx.dataset_name),
        (ms.CLIP_DATA_PATH_KEY, ctx.data_path), (ms.CLIP_MEDIA_ID_KEY, ctx.media_id),
        (ms.CLIP_START_TIMESTAMP_KEY, ctx.start_us),
        (ms.CLIP_END_TIMESTAMP_KEY, ctx.end_us if end_us is None else end_us),
        (ms.CLIP_LABEL_INDEX_KEY, ctx.label_index), (ms.CLIP_LABEL_STRING_KEY, ctx.label),
        (ms.CLIP_LABEL_TEXT_KEY, ctx.label),
    ):  # fmt: skip
        put(key, [value])
    for m, info in streams.items():
        p = ms.MODALITY_PREFIX[m]
        put(ms.prefixed(p, ms.IMAGE_FORMAT), [info.format])
        put(ms.prefixed(p, ms.IMAGE_CHANNELS), [info.channels])
        put(ms.prefixed(p, ms.IMAGE_HEIGHT), [info.height])
        put(ms.prefixed(p, ms.IMAGE_WIDTH), [info.width])
        put(ms.prefixed(p, ms.IMAGE_FRAME_RATE), [info.frame_rate])
    if "flow" in streams:
        put("FORWARD_FLOW/image/saturation", [ms.FLOW_SATURATION])
    if "pose" in streams:
        put(ms.POSE_PARTS_KEY, ms.COCO17_JOINT_NAMES)
    for key in keys:  # every sequence key is present, a one-frame clip's flow list empty
        if keys[key].part == ms.SEQUENCE:
            ex.feature_lists.feature_list[key].SetInParent()
    for fr in frames:
        ts = [fr["timestamp_us"]]
        for m, image in (("rgb", fr["rgb_jpeg"]), ("pose", fr["pose_jpeg"])):
            if m in streams:
                step(ms.prefixed(ms.MODALITY_PREFIX[m], ms.IMAGE_ENCODED), [image])
                step(ms.prefixed(ms.MODALITY_PREFIX[m], ms.IMAGE_TIMESTAMP), ts)
        if "pose" not in streams:
            continue
        kp = np.clip(np.nan_to_num(fr["keypoints"], nan=0.0), 0, 1)
        boxes = np.clip(fr["boxes"], 0, 1)
        n = len(kp)
        ids = np.arange(n) if fr["track_ids"] is None else fr["track_ids"]
        step(ms.REGION_NUM_REGIONS_KEY, [n])
        step(ms.REGION_TIMESTAMP_KEY, ts)
        step(ms.REGION_IS_ANNOTATED_KEY, [1])
        for i, key in enumerate(ms.REGION_FLOAT_LIST_KEYS[:4]):
            step(key, boxes[:, i])
        step(ms.REGION_CONFIDENCE_KEY, np.clip(fr["box_scores"], 0, 1))
        step(ms.REGION_TRACK_INDEX_KEY, ids)
        step(ms.POSE_POINT_X_KEY, kp[:, :, 0].reshape(-1))
        step(ms.POSE_POINT_Y_KEY, kp[:, :, 1].reshape(-1))
        step(ms.POSE_NUM_REGIONS_KEY, [n * ms.NUM_JOINTS])
        scores = np.clip(np.nan_to_num(fr["keypoint_scores"], nan=0.0), 0, 1)
        step(ms.POSE_CONFIDENCE_KEY, scores.reshape(-1))
    for ts, image in flows:
        step("FORWARD_FLOW/image/encoded", [image])
        step("FORWARD_FLOW/image/timestamp", [ts])
    return ex


def _build(ctx, streams, frames, flows, end_us, pieces: bool) -> bytes:
    b = ms.SequenceExampleBuilder(ctx, streams)
    for fr in frames:
        b.add_frame(**fr)
    for ts, image in flows:
        b.add_flow(ts, image)
    if pieces:
        return b"".join(b.serialize_pieces(end_us, release=True))
    return b.serialize(end_us)


@pytest.mark.parametrize("case", range(21))
def test_records_are_tensorflows_bytes(case):
    rng = np.random.default_rng(case)
    clip = _clip(rng, SUBSETS[case % len(SUBSETS)], case)
    data = _build(*clip, pieces=bool(case % 2))
    reference = _reference(*clip)
    assert data == reference.SerializeToString(deterministic=True)
    # Parsed back by TensorFlow: field by field what was put in, and re-serialized the same.
    parsed = tf.train.SequenceExample.FromString(data)
    assert parsed.SerializeToString(deterministic=True) == data
    assert set(parsed.context.feature) == set(reference.context.feature)
    for key, want in reference.context.feature.items():
        assert parsed.context.feature[key] == want, key
    lists, want_lists = parsed.feature_lists.feature_list, reference.feature_lists.feature_list
    assert set(lists) == set(want_lists) == ms.sequence_keys(SUBSETS[case % len(SUBSETS)])
    for key, want in want_lists.items():
        assert len(lists[key].feature) == len(want.feature), key
        for got_step, want_step in zip(lists[key].feature, want.feature):
            # Compared as bytes: NaN != NaN in a proto comparison.
            assert got_step.SerializeToString() == want_step.SerializeToString(), key
    _, streams, frames, flows, _ = clip
    if "rgb" in streams:
        images = [f.bytes_list.value[0] for f in lists["image/encoded"].feature]
        assert images == [fr["rgb_jpeg"] for fr in frames]
    if "pose" in streams:
        persons = [f.int64_list.value[0] for f in lists[ms.REGION_NUM_REGIONS_KEY].feature]
        assert persons == [len(fr["keypoints"]) for fr in frames]
    if "flow" in streams:
        assert len(lists["FORWARD_FLOW/image/encoded"].feature) == len(frames) - 1


def _tf_with_label_index(record: bytes, label_index: int) -> bytes:
    """The reference: the context re-serialized by TensorFlow's classes."""
    ex = tf.train.SequenceExample.FromString(record)
    ex.context.feature[ms.CLIP_LABEL_INDEX_KEY].CopyFrom(_tf_feature(ms.INT64, [label_index]))
    return ex.SerializeToString(deterministic=True)


@pytest.mark.parametrize("case", range(0, 21, 4))
def test_with_label_index_is_tensorflows_bytes(case):
    rng = np.random.default_rng(case)
    data = _build(*_clip(rng, SUBSETS[case % len(SUBSETS)], case), pieces=False)
    for index in (0, 3, 127, 128, 2**40, 2**63 - 1):
        assert ms.with_label_index(data, index) == _tf_with_label_index(data, index), index
    label = tf.train.SequenceExample.FromString(data).context.feature[ms.CLIP_LABEL_INDEX_KEY]
    assert ms.with_label_index(data, label.int64_list.value[0]) is data  # unchanged: no copy
    # A record without the key gets it, in key order.
    ex = tf.train.SequenceExample.FromString(data)
    del ex.context.feature[ms.CLIP_LABEL_INDEX_KEY]
    without = ex.SerializeToString(deterministic=True)
    assert ms.with_label_index(without, 5) == _tf_with_label_index(without, 5)
    with pytest.raises(ValueError, match="context first"):
        ms.with_label_index(b"\x12\x00" + data, 1)  # the feature lists first
