"""The record contract: key sets, encoding, and parsing with plain tf.io."""

import numpy as np
import pytest
import tensorflow as tf

from schemas import media_sequence as ms

EXPECTED_CONTEXT = {
    "example/id", "example/dataset_name", "clip/data_path", "clip/media_id",
    "clip/start/timestamp", "clip/end/timestamp", "clip/label/index", "clip/label/string",
    "clip/label/text",
    "image/format", "image/channels", "image/height", "image/width", "image/frame_rate",
    "POSE_RENDERED/image/format", "POSE_RENDERED/image/channels", "POSE_RENDERED/image/height",
    "POSE_RENDERED/image/width", "POSE_RENDERED/image/frame_rate",
    "FORWARD_FLOW/image/format", "FORWARD_FLOW/image/channels", "FORWARD_FLOW/image/height",
    "FORWARD_FLOW/image/width", "FORWARD_FLOW/image/frame_rate", "FORWARD_FLOW/image/saturation",
    "POSE/region/parts",
}  # fmt: skip
EXPECTED_SEQUENCE = {
    "image/encoded", "image/timestamp",
    "POSE_RENDERED/image/encoded", "POSE_RENDERED/image/timestamp",
    "FORWARD_FLOW/image/encoded", "FORWARD_FLOW/image/timestamp",
    "region/num_regions", "region/timestamp", "region/is_annotated",
    "region/bbox/ymin", "region/bbox/xmin", "region/bbox/ymax", "region/bbox/xmax",
    "region/label/confidence", "region/track/index",
    "POSE/region/point/x", "POSE/region/point/y", "POSE/region/num_regions",
    "POSE/region/label/confidence",
}  # fmt: skip


def test_key_sets_match_the_design():
    assert ms.context_keys() == EXPECTED_CONTEXT
    assert ms.sequence_keys() == EXPECTED_SEQUENCE
    assert ms.context_keys(["rgb"]) == {
        k for k in EXPECTED_CONTEXT if not k.startswith(("POSE", "FORWARD_FLOW"))
    }
    assert ms.sequence_keys(["flow"]) == {
        "FORWARD_FLOW/image/encoded", "FORWARD_FLOW/image/timestamp"
    }  # fmt: skip
    with pytest.raises(ValueError, match="depth"):
        ms.context_keys(["depth"])


def _two_frame_example(modalities=ms.DEFAULT_MODALITIES):
    ctx = ms.ClipContext("vid_0", "demo", "a/vid.mp4", "vid", 0, 80_000, 3, "jumping")
    streams = {m: ms.StreamInfo(height=4, width=6) for m in modalities if m != "keypoints"}
    b = ms.SequenceExampleBuilder(ctx, streams, keypoints="keypoints" in modalities)
    kp = np.zeros((2, 17, 2), np.float32)
    kp[0, :, 0] = np.linspace(0, 1, 17)
    kp[1, :, 1] = 0.5
    kp[1, 0, 0] = 1.5  # outside the frame: stored clipped to 1
    scores = np.full((2, 17), 0.9, np.float32)
    boxes = np.array([[0.1, 0.2, 0.8, 0.4], [0.0, 0.5, 1.2, 0.9]], np.float32)
    for t, persons in ((0, 2), (40_000, 0)):
        b.add_frame(
            t,
            rgb_jpeg=b"rgb%d" % t if "rgb" in modalities else None,
            pose_jpeg=b"pose%d" % t if "pose" in modalities else None,
            keypoints=kp[:persons],
            keypoint_scores=scores[:persons],
            boxes=boxes[:persons],
            box_scores=np.array([0.7, 0.6], np.float32)[:persons],
            track_ids=np.array([0, 1])[:persons],
        )
    if "flow" in modalities:
        b.add_flow(0, b"flow0")
    return b.serialize()


def test_round_trip_through_plain_tf_parse():
    data = _two_frame_example()
    ex = tf.train.SequenceExample.FromString(data)
    assert set(ex.context.feature) == EXPECTED_CONTEXT
    assert set(ex.feature_lists.feature_list) == EXPECTED_SEQUENCE
    ctx, seq = ms.parse_specs()
    c, s = tf.io.parse_single_sequence_example(data, ctx, seq)
    assert c["example/id"].numpy() == b"vid_0"
    assert c["clip/label/index"].numpy() == 3
    assert c["clip/label/string"].numpy() == c["clip/label/text"].numpy() == b"jumping"
    assert c["clip/end/timestamp"].numpy() == 80_000
    assert c["FORWARD_FLOW/image/saturation"].numpy() == 20.0
    assert c["image/frame_rate"].numpy() == 25.0
    assert [p.decode() for p in c["POSE/region/parts"].numpy()] == list(ms.COCO17_JOINT_NAMES)
    assert s["image/encoded"].numpy().tolist() == [b"rgb0", b"rgb40000"]
    assert s["image/timestamp"].numpy().tolist() == [0, 40_000]
    assert s["FORWARD_FLOW/image/encoded"].numpy().tolist() == [b"flow0"]
    assert s["FORWARD_FLOW/image/timestamp"].numpy().tolist() == [0]
    assert s["region/num_regions"].numpy().tolist() == [2, 0]
    assert s["POSE/region/num_regions"].numpy().tolist() == [34, 0]
    x = tf.sparse.to_dense(s["POSE/region/point/x"]).numpy()
    assert x.shape == (2, 34)
    np.testing.assert_allclose(x[0, :17], np.linspace(0, 1, 17), atol=1e-6)
    assert x[0, 17] == 1.0  # person 1, joint 0: clipped from 1.5
    ymax = tf.sparse.to_dense(s["region/bbox/ymax"]).numpy()
    np.testing.assert_allclose(ymax[0], [0.8, 1.0])  # clipped to [0, 1]
    assert tf.sparse.to_dense(s["region/track/index"]).numpy()[0].tolist() == [0, 1]


def test_subset_of_modalities_carries_only_its_keys():
    data = _two_frame_example(("rgb",))
    ex = tf.train.SequenceExample.FromString(data)
    assert set(ex.feature_lists.feature_list) == {"image/encoded", "image/timestamp"}
    ctx, seq = ms.parse_specs(("rgb",))
    tf.io.parse_single_sequence_example(data, ctx, seq)


def test_builder_rejects_bad_input():
    ctx = ms.ClipContext("v_0", "d", "p", "v", 0, 10, 0, "a")
    b = ms.SequenceExampleBuilder(ctx, {"rgb": ms.StreamInfo(4, 4)})
    b.add_frame(10, rgb_jpeg=b"x")
    with pytest.raises(ValueError, match="timestamp_us=10"):
        b.add_frame(10, rgb_jpeg=b"x")
    with pytest.raises(ValueError, match="end_us=-5"):
        ms.ClipContext("v_0", "d", "p", "v", 0, -5, 0, "a")
    b2 = ms.SequenceExampleBuilder(ctx, {"flow": ms.StreamInfo(4, 4)})
    b2.add_frame(0)
    b2.add_frame(40_000)
    with pytest.raises(ValueError, match="flow steps=0"):
        b2.build()


def test_schema_version_check():
    assert ms.check_schema_version(ms.SCHEMA_VERSION) == ms.SCHEMA_VERSION
    with pytest.raises(ValueError, match="schema_version=99"):
        ms.check_schema_version(99)


@pytest.mark.parametrize(
    "modalities", [ms.DEFAULT_MODALITIES, ("rgb",), ("flow",), ("pose",), ("rgb", "flow")]
)
def test_builder_bytes_are_protobufs_deterministic_serialization(modalities):
    data = _two_frame_example(modalities)
    ex = tf.train.SequenceExample.FromString(data)
    assert ex.SerializeToString(deterministic=True) == data


def test_one_frame_clip_has_empty_lists_and_a_released_builder_is_used_up():
    ctx = ms.ClipContext("v_0", "demo", "v.mp4", "v", 0, 40_000, 0, "a")
    b = ms.SequenceExampleBuilder(ctx, {m: ms.StreamInfo(4, 6) for m in ("rgb", "flow")})
    b.add_frame(0, rgb_jpeg=b"x" * 300)  # a step longer than 127 bytes: two-byte lengths
    data = b.serialize(end_us=40_000, release=True)
    ex = tf.train.SequenceExample.FromString(data)
    assert ex.SerializeToString(deterministic=True) == data
    lists = ex.feature_lists.feature_list
    assert len(lists["FORWARD_FLOW/image/encoded"].feature) == 0
    assert "FORWARD_FLOW/image/encoded" in lists
    assert lists["image/encoded"].feature[0].bytes_list.value == [b"x" * 300]
    with pytest.raises(ValueError, match="released"):
        b.serialize()


def test_pieces_are_the_serialized_record_and_hold_the_steps_without_copies():
    ctx = ms.ClipContext("v_0", "demo", "v.mp4", "v", 0, 80_000, 0, "a")
    b = ms.SequenceExampleBuilder(ctx, {"rgb": ms.StreamInfo(4, 6)})
    frames = [bytes([65 + t]) * 5000 for t in range(2)]
    for t, jpeg in enumerate(frames):
        b.add_frame(40_000 * t, rgb_jpeg=jpeg)
    steps = list(b._lists["image/encoded"])
    pieces = b.serialize_pieces()
    assert b"".join(pieces) == b.serialize()
    # Each image step is handed over as the very object the builder kept (no second copy).
    assert sum(any(p is s for p in pieces) for s in steps) == 2
    ex = tf.train.SequenceExample.FromString(b"".join(pieces))
    lists = ex.feature_lists.feature_list
    assert [f.bytes_list.value[0] for f in lists["image/encoded"].feature] == frames


def test_int64_steps_reads_one_key_from_the_wire_format():
    data = _two_frame_example()
    assert ms.int64_steps(data, ms.REGION_NUM_REGIONS_KEY) == [[2], [0]]
    assert ms.int64_steps(data, ms.REGION_TRACK_INDEX_KEY) == [[0, 1], []]
    assert ms.int64_steps(data, ms.REGION_TIMESTAMP_KEY) == [[0], [40_000]]
    assert ms.int64_steps(data, "FORWARD_FLOW/image/timestamp") == [[0]]
    assert ms.int64_steps(data, "no/such/key") == []
    assert ms.int64_steps(_two_frame_example(("rgb",)), ms.REGION_NUM_REGIONS_KEY) == []
    # Every int64 key agrees with protobuf's own parse; negative and 64-bit values too.
    ex = tf.train.SequenceExample.FromString(data)
    lists = ex.feature_lists.feature_list
    lists["region/track/index"].feature[1].int64_list.value.extend([-3, 2**62 + 1])
    data = ex.SerializeToString()
    for key, steps in lists.items():
        if steps.feature and steps.feature[0].WhichOneof("kind") == "int64_list":
            want = [list(f.int64_list.value) for f in steps.feature]
            assert ms.int64_steps(data, key) == want, key
    assert ms.int64_steps(data, ms.REGION_TRACK_INDEX_KEY) == [[0, 1], [-3, 2**62 + 1]]
    with pytest.raises(ValueError, match="POSE/region/point/x: a step holds a bytes or float"):
        ms.int64_steps(data, ms.POSE_POINT_X_KEY)
    with pytest.raises(ValueError, match="truncated"):
        ms.int64_steps(data[:-3], ms.REGION_NUM_REGIONS_KEY)


# The records' bytes before the key table: sha256 of `_two_frame_example(modalities)`.
GOLDEN_SHA256 = {
    ms.DEFAULT_MODALITIES: "de2a88d8eab22b8aa36910696aa556c117b96ad39de98d38d407a72d4924b2ea",
    ("rgb",): "eeebcd4a399ca08c9ca57d8fc2914b5fd053a893f049518ab1809c37883fd5e8",
    ("flow",): "1d7ff1bc1ab9dd350c8a4bf8a9629a2b808ddf7f1e1a8f28e9f35d608e7bae96",
    ("pose",): "892d298afcf22ebabc49fe2b451ebd7e5542f73454cd4e1ca1f66d6d29f6a29d",
    ("rgb", "flow"): "6f04e045be730f44347d38af234fe4c794a09dae0333e0fe6f8db97f6df24b67",
    ("pose", "flow"): "8eb3e6a94acfd47e8436692a358b87c6100173e1a49f9be1018a7d483de912b0",
}


@pytest.mark.parametrize("modalities", list(GOLDEN_SHA256))
def test_records_are_byte_for_byte_those_of_before_the_key_table(modalities):
    import hashlib

    assert hashlib.sha256(_two_frame_example(modalities)).hexdigest() == GOLDEN_SHA256[modalities]


def _written_specs(modalities):
    """The parse specs as written out by hand before the key table derived them."""
    ctx = {
        "example/id": tf.io.FixedLenFeature([], tf.string),
        "example/dataset_name": tf.io.FixedLenFeature([], tf.string),
        "clip/data_path": tf.io.FixedLenFeature([], tf.string),
        "clip/media_id": tf.io.FixedLenFeature([], tf.string),
        "clip/start/timestamp": tf.io.FixedLenFeature([], tf.int64),
        "clip/end/timestamp": tf.io.FixedLenFeature([], tf.int64),
        "clip/label/index": tf.io.FixedLenFeature([], tf.int64),
        "clip/label/string": tf.io.FixedLenFeature([], tf.string),
        "clip/label/text": tf.io.FixedLenFeature([], tf.string),
    }
    seq = {}
    for m in modalities:
        p = {"rgb": "", "pose": "POSE_RENDERED/", "flow": "FORWARD_FLOW/"}[m]
        ctx[p + "image/format"] = tf.io.FixedLenFeature([], tf.string)
        ctx[p + "image/channels"] = tf.io.FixedLenFeature([], tf.int64)
        ctx[p + "image/height"] = tf.io.FixedLenFeature([], tf.int64)
        ctx[p + "image/width"] = tf.io.FixedLenFeature([], tf.int64)
        ctx[p + "image/frame_rate"] = tf.io.FixedLenFeature([], tf.float32)
        seq[p + "image/encoded"] = tf.io.FixedLenSequenceFeature([], tf.string)
        seq[p + "image/timestamp"] = tf.io.FixedLenSequenceFeature([], tf.int64)
    if "flow" in modalities:
        ctx["FORWARD_FLOW/image/saturation"] = tf.io.FixedLenFeature([], tf.float32)
    if "pose" in modalities:
        ctx["POSE/region/parts"] = tf.io.FixedLenFeature([17], tf.string)
        for key in ("region/num_regions", "region/timestamp", "region/is_annotated"):
            seq[key] = tf.io.FixedLenSequenceFeature([], tf.int64)
        seq["POSE/region/num_regions"] = tf.io.FixedLenSequenceFeature([], tf.int64)
        for key in (
            "region/bbox/ymin", "region/bbox/xmin", "region/bbox/ymax", "region/bbox/xmax",
            "region/label/confidence", "POSE/region/point/x", "POSE/region/point/y",
            "POSE/region/label/confidence",
        ):  # fmt: skip
            seq[key] = tf.io.VarLenFeature(tf.float32)
        seq["region/track/index"] = tf.io.VarLenFeature(tf.int64)
    return ctx, seq


@pytest.mark.parametrize("modalities", list(GOLDEN_SHA256))
def test_parse_specs_from_the_key_table_are_the_written_ones(modalities):
    assert ms.parse_specs(modalities) == _written_specs(modalities)


def test_the_key_table_types_every_value_the_builder_writes():
    data = _two_frame_example()
    ex = tf.train.SequenceExample.FromString(data)
    keys = ms.record_keys()
    assert set(keys) == EXPECTED_CONTEXT | EXPECTED_SEQUENCE
    assert len({k.name for k in ms.KEYS}) == len(ms.KEYS)
    for name, feature in ex.context.feature.items():
        key = keys[name]
        assert key.part == ms.CONTEXT and feature.WhichOneof("kind") == key.feature_field, name
        assert len(getattr(feature, key.feature_field).value) == key.num_values, name
    persons = [2, 0]
    for name, steps in ex.feature_lists.feature_list.items():
        key = keys[name]
        assert key.part == ms.SEQUENCE, name
        want_steps = 1 if name.startswith(ms.FORWARD_FLOW_PREFIX) else 2  # flow: T - 1
        assert len(steps.feature) == want_steps, name
        for t, f in enumerate(steps.feature):
            values = getattr(f, key.feature_field).value
            n = key.values_per_person * persons[t] if key.per_person else key.num_values
            assert len(values) == n, (name, t)
            if values and key.bounds is not None:
                lo, hi = key.bounds
                assert (lo is None or min(values) >= lo) and (hi is None or max(values) <= hi)
    # Stream keys come once per stream under its prefix, with the stream's modality.
    assert keys["POSE_RENDERED/image/height"].modality == ms.MODALITY_POSE
    assert keys["FORWARD_FLOW/image/saturation"].stream
    assert ms.key_info("region/track/index").dtype == ms.INT64
    with pytest.raises(KeyError, match="image/saturation"):
        ms.key_info("image/saturation")  # the RGB stream has none


def test_derived_key_lists_keep_their_order():
    assert ms.REGION_FLOAT_LIST_KEYS == (
        "region/bbox/ymin", "region/bbox/xmin", "region/bbox/ymax", "region/bbox/xmax",
        "region/label/confidence", "POSE/region/point/x", "POSE/region/point/y",
        "POSE/region/label/confidence",
    )  # fmt: skip
    assert ms.REGION_INT_PER_STEP_KEYS == (
        "region/num_regions", "region/timestamp", "region/is_annotated", "POSE/region/num_regions"
    )  # fmt: skip
    per_person = [k.name for k in ms.KEYS if k.per_person]
    assert per_person == [
        "region/bbox/ymin", "region/bbox/xmin", "region/bbox/ymax", "region/bbox/xmax",
        "region/label/confidence", "region/track/index", "POSE/region/point/x",
        "POSE/region/point/y", "POSE/region/label/confidence",
    ]  # fmt: skip


def test_a_bad_key_declaration_is_refused():
    with pytest.raises(ValueError, match="count='per_person'"):
        ms.Key("x/y", ms.CONTEXT, ms.FLOAT, ms.PER_PERSON)
    with pytest.raises(ValueError, match="dtype='double'"):
        ms.Key("x/y", ms.SEQUENCE, "double")
    with pytest.raises(ValueError, match="per-person values need modality='keypoints'"):
        ms.Key("x/y", ms.SEQUENCE, ms.FLOAT, ms.PER_JOINT)
    with pytest.raises(ValueError, match="modality='keypoints' has no image stream"):
        ms.Key("x/y", ms.CONTEXT, ms.INT64, modality=ms.MODALITY_KEYPOINTS, stream=True)


@pytest.mark.parametrize("modalities", [("rgb", "flow"), ("rgb",), ("flow",), (), ("flow", "rgb")])
def test_keypoints_without_rendered_frames_are_the_pose_records_less_that_stream(modalities):
    """`keypoints` writes exactly the keys of `pose` but the POSE_RENDERED stream's, with the
    same values, and what is written is protobuf's deterministic serialization."""
    data = _two_frame_example((*modalities, "keypoints"))
    ex = tf.train.SequenceExample.FromString(data)
    assert ex.SerializeToString(deterministic=True) == data
    full = tf.train.SequenceExample.FromString(_two_frame_example((*modalities, "pose")))
    for name in list(full.context.feature):
        if name.startswith("POSE_RENDERED/"):
            del full.context.feature[name]
    for name in list(full.feature_lists.feature_list):
        if name.startswith("POSE_RENDERED/"):
            del full.feature_lists.feature_list[name]
    assert ex == full
    keys = ms.record_keys((*modalities, "keypoints"))
    assert set(ex.context.feature) == {n for n, k in keys.items() if k.part == ms.CONTEXT}
    assert set(ex.feature_lists.feature_list) == {
        n for n, k in keys.items() if k.part == ms.SEQUENCE
    }
    assert "POSE/region/parts" in ex.context.feature
    assert not any(n.startswith("POSE_RENDERED/") for n in keys)
    ctx, seq = ms.parse_specs((*modalities, "keypoints"))
    _, s = tf.io.parse_single_sequence_example(data, ctx, seq)
    assert s["region/num_regions"].numpy().tolist() == [2, 0]


def test_written_modalities_are_checked():
    assert ms.check_written_modalities(["rgb", "keypoints"]) == ("rgb", "keypoints")
    assert ms.carries_keypoints(("flow", "keypoints")) and ms.carries_keypoints(("pose",))
    assert not ms.carries_keypoints(("rgb", "flow"))
    with pytest.raises(ValueError, match="'pose' writes the keypoints with the rendered frames"):
        ms.check_written_modalities(("rgb", "pose", "keypoints"))
    with pytest.raises(ValueError, match="named twice"):
        ms.check_written_modalities(("rgb", "rgb"))
    with pytest.raises(ValueError, match="expected a non-empty subset"):
        ms.check_written_modalities(("depth",))
    ctx = ms.ClipContext("v_0", "d", "p", "v", 0, 10, 0, "a")
    with pytest.raises(ValueError, match=r"streams: \['keypoints'\] have no image stream"):
        ms.SequenceExampleBuilder(ctx, {"keypoints": ms.StreamInfo(4, 4)})
    with pytest.raises(ValueError, match="'pose' writes the keypoints"):
        ms.SequenceExampleBuilder(ctx, {"pose": ms.StreamInfo(4, 4)}, keypoints=True)
    b = ms.SequenceExampleBuilder(ctx, {"rgb": ms.StreamInfo(4, 4)}, keypoints=True)
    with pytest.raises(ValueError, match="keypoints, keypoint_scores, boxes and box_scores"):
        b.add_frame(0, rgb_jpeg=b"x")
