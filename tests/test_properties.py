"""Property tests (hypothesis): the manifest parsers, the flow quantization, the record codec.

Every property runs under the `perfnet-properties` settings profile (no deadline, a modest
number of examples, so the file takes seconds); `tests/pipelines/manifests/test_manifest.py` has
more manifest
properties per format. Bugs they found are pinned by regression examples at the end.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from flow import dequantize_flow, quantize_flow
from pipelines.manifests import MAX_SECONDS, SPLITS, ClipSpec, ManifestError, parse_manifest
from schemas import media_sequence as ms

settings.register_profile(
    "perfnet-properties",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
PROFILE = settings.get_profile("perfnet-properties")


# ---------------------------------------------------------------------------------------------
# Manifest parsers: every row is exactly one spec or one failure; only ManifestError escapes.
# ---------------------------------------------------------------------------------------------
_HOSTILE_CELLS = [
    "", " ", "a.mp4", "dir/b.avi", "vidéo clip 1.mp4", "日本.mp4", "../up.mp4", "/abs/c.mp4",
    "gs://bucket/d.mp4", "run", "jump", "train", "validation", "test", "val", "TRAIN",
    "0", "1.5", " 2 ", "-1", "-0", "1e9", "1000000000.5", "1e308", "1e400", "9" * 40, "nan",
    "NaN", "inf", "-inf", "Infinity", "0x10", "1_000", "１２", "true", "\u2028", "\ufeff",
    "a\nb", "a\r\nb", 'q"uote', "comma,inside", "\x00", "🎬",
]  # fmt: skip
CELL = st.one_of(
    st.sampled_from(_HOSTILE_CELLS),
    st.text(max_size=10),
    st.floats().map(repr),
    st.integers().map(str),
)
COLUMNS = ["path", "label", "start", "end", "split", "id"]


def _csv_text(header: list[str], rows: list[list[str]], newline: str = "\n") -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator=newline)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _parse_file(name: str, text: str, **kwargs):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, name)
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        return parse_manifest(path, **kwargs)


def _check_accounted(specs, failures, labels, expected_lines: list[int], name: str) -> None:
    """Each expected line is exactly one spec or one failure, and the specs are well formed."""
    lines = [int(s.source.rsplit(":", 1)[1]) for s in specs]
    for f in failures:
        assert f.stage == "manifest"
        assert f.error.startswith(f"{name}:"), f.error
        lines.append(int(f.error.split(": ", 1)[0].rsplit(":", 1)[1]))
    assert sorted(lines) == sorted(expected_lines)
    assert sorted(labels.values()) == list(range(len(labels)))
    ids = [f"{s.media_id}_{s.start_us}" for s in specs]
    assert len(set(ids)) == len(ids)
    for s in specs:
        assert isinstance(s.start_us, int) and 0 <= s.start_us <= MAX_SECONDS * 1e6
        assert s.end_us is None or (isinstance(s.end_us, int) and s.end_us > s.start_us)
        assert s.split in SPLITS
        assert s.label and labels[s.label] == s.label_index
        assert s.path and s.media_id
        assert ClipSpec.from_json(s.to_json()) == s


@PROFILE
@given(
    st.permutations(COLUMNS).flatmap(
        lambda cols: st.tuples(st.just(cols), st.integers(2, len(cols)))
    ),
    st.lists(st.lists(CELL, max_size=8), max_size=10),
    st.sampled_from(["\n", "\r\n"]),
)
def test_csv_rows_are_specs_or_failures(columns, rows, newline):
    """Random CSV rows (any order of columns, missing and extra fields, unicode, huge numbers,
    NaN, quotes and line breaks inside fields): one spec or one failure per non-blank row, or
    a ManifestError where Python's csv module cannot read the file."""
    cols, n = columns
    header = [c for c in cols[:n]] + [c for c in ("path", "label") if c not in cols[:n]]
    text = _csv_text(header, rows, newline)
    # The rows as Python's csv module reads them: (last physical line, cells).
    reader = csv.reader(io.StringIO(text))
    try:
        records = [(reader.line_num, cells) for cells in reader][1:]
    except csv.Error:  # e.g. a bare carriage return inside a field ("\n" files only)
        with pytest.raises(ManifestError, match="not CSV"):
            _parse_file("m.csv", text)
        return
    # Rows with data only beyond the header's columns: test_extra_fields_only_row_is_a_failure.
    assume(not any(_blank(c[: len(header)]) and not _blank(c) for _, c in records))
    specs, failures, labels = _parse_file("m.csv", text)
    expected = [line for line, cells in records if not _blank(cells)]
    _check_accounted(specs, failures, labels, expected, "m.csv")
    if failures:
        with pytest.raises(ManifestError):
            _parse_file("m.csv", text, strict=True)
    else:
        assert _parse_file("m.csv", text, strict=True)[0] == specs


def _blank(cells: list[str]) -> bool:
    return not any(c.strip() for c in cells)


@PROFILE
@given(st.text(max_size=200))
def test_any_text_is_rows_or_a_manifest_error(text):
    """Whatever follows a valid header, the parser returns or raises ManifestError."""
    try:
        specs, failures, labels = _parse_file("m.csv", "path,label\n" + text)
    except ManifestError as e:
        assert "m.csv" in str(e)
        return
    assert len(specs) + len(failures) <= text.count("\n") + text.count("\r") + 1


JSON_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**300), 10**300),  # larger ones: test_jsonl_huge_integers below
    st.floats(),
    CELL,
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
JSON_OBJECT = st.dictionaries(st.sampled_from([*COLUMNS, "other", ""]), JSON_VALUE, max_size=7)


@PROFILE
@given(
    st.lists(
        st.one_of(
            JSON_OBJECT.map(lambda o: ("object", o)),
            st.sampled_from(["[]", "3", '"text"', "null", "{", "not json", "{}{}"]).map(
                lambda t: ("bad", t)
            ),
            st.just(("blank", "  ")),
        ),
        max_size=8,
    ),
    st.booleans(),
)
def test_jsonl_lines_are_specs_failures_or_a_manifest_error(lines, ascii_only):
    """A line that is not a JSON object makes the file malformed (ManifestError naming the
    line); otherwise every object is one spec or one failure."""
    text = "".join(
        (json.dumps(v, ensure_ascii=ascii_only) if kind == "object" else v) + "\n"
        for kind, v in lines
    )
    bad = [i + 1 for i, (kind, _) in enumerate(lines) if kind == "bad"]
    if bad:
        with pytest.raises(ManifestError, match=f"line {bad[0]}:"):
            _parse_file("m.jsonl", text)
        return
    specs, failures, labels = _parse_file("m.jsonl", text)
    expected = [i + 1 for i, (kind, _) in enumerate(lines) if kind == "object"]
    _check_accounted(specs, failures, labels, expected, "m.jsonl")


# ---------------------------------------------------------------------------------------------
# Flow quantization.
# ---------------------------------------------------------------------------------------------
BOUND = st.floats(0.01, 1000.0)
FLOW = hnp.arrays(
    np.float64,
    hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=5).map(lambda s: (s[0], s[1], 2)),
    elements=st.floats(-1e6, 1e6),
)


@PROFILE
@given(FLOW, FLOW, BOUND)
def test_quantization_is_monotone(a, b, bound):
    b = b[: a.shape[0], : a.shape[1]]
    a = a[: b.shape[0], : b.shape[1]]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    qlo, qhi = quantize_flow(lo, bound), quantize_flow(hi, bound)
    assert qlo.dtype == np.uint8 and qlo.shape == lo.shape[:2] + (3,)
    assert (qlo[..., :2] <= qhi[..., :2]).all()
    assert (qlo[..., 2] == 0).all()


@PROFILE
@given(FLOW, BOUND)
def test_dequantize_inverts_within_one_step_inside_the_bound(flow, bound):
    inside = np.clip(flow, -bound, bound)
    back = dequantize_flow(quantize_flow(inside, bound), bound).astype(np.float64)
    step = 2 * bound / 255
    eps = 1e-5 * bound  # float32 dequantization
    err = inside - back  # the floor of quantize_flow: the value is at most one step above
    assert (err >= -eps).all() and (err <= step + eps).all()


@PROFILE
@given(FLOW, BOUND)
def test_values_outside_the_bound_saturate(flow, bound):
    outside = np.where(flow >= 0, bound + np.abs(flow), -bound - np.abs(flow))
    outside[0, 0] = [np.inf, -np.inf]
    q = quantize_flow(outside, bound)[..., :2]
    assert ((q == 255) == (outside > 0)).all() and ((q == 0) == (outside < 0)).all()
    back = dequantize_flow(quantize_flow(outside, bound), bound)
    np.testing.assert_allclose(np.abs(back), bound, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Record encoder -> tf.io parser round trip.
# ---------------------------------------------------------------------------------------------
UNIT = st.floats(-0.5, 1.5, width=32)
UNIT_OR_NAN = UNIT | st.just(np.nan)  # the pose model may give NaN keypoints and scores


@st.composite
def clips(draw):
    modalities = draw(st.lists(st.sampled_from(ms.DEFAULT_MODALITIES), min_size=1, unique=True))
    n = draw(st.integers(1, 5))
    start = draw(st.integers(0, 2**40))
    gaps = draw(st.lists(st.integers(1, 2**30), min_size=n - 1, max_size=n - 1))
    stamps = [start + sum(gaps[:i]) for i in range(n)]
    frames = []
    for _ in range(n):
        p = draw(st.integers(0, 4))
        frames.append(
            {
                "keypoints": draw(hnp.arrays(np.float32, (p, 17, 2), elements=UNIT_OR_NAN)),
                "scores": draw(hnp.arrays(np.float32, (p, 17), elements=UNIT_OR_NAN)),
                "boxes": draw(hnp.arrays(np.float32, (p, 4), elements=UNIT)),
                "box_scores": draw(hnp.arrays(np.float32, (p,), elements=UNIT)),
                "track_ids": draw(hnp.arrays(np.int64, (p,), elements=st.integers(0, 2**62))),
                "rgb": draw(st.binary(max_size=12)),
                "pose": draw(st.binary(max_size=12)),
                "flow": draw(st.binary(max_size=12)),
            }
        )
    text = st.text(min_size=1, max_size=12)
    context = ms.ClipContext(
        example_id=draw(text),
        dataset_name=draw(text),
        data_path=draw(st.text(max_size=20)),
        media_id=draw(text),
        start_us=start,
        end_us=stamps[-1] + draw(st.integers(1, 10**6)),
        label_index=draw(st.integers(0, 10**6)),
        label=draw(text),
    )
    streams = {
        m: ms.StreamInfo(
            height=draw(st.integers(1, 8192)),
            width=draw(st.integers(1, 8192)),
            frame_rate=draw(st.floats(0.5, 1000.0, width=32)),
        )
        for m in modalities
    }
    return context, streams, stamps, frames


def _dense(sparse) -> list[list]:
    """A VarLenFeature's SparseTensor [T, None] -> one Python list per step."""
    rows = [[] for _ in range(int(sparse.dense_shape[0]))]
    for (t, _), v in zip(sparse.indices.numpy(), sparse.values.numpy()):
        rows[t].append(v)
    return rows


@PROFILE
@given(clips())
def test_records_round_trip_through_tf_io(clip):
    context, streams, stamps, frames = clip
    modalities = tuple(streams)
    builder = ms.SequenceExampleBuilder(context, streams)
    pose = ms.MODALITY_POSE in modalities
    for t, f in zip(stamps, frames):
        builder.add_frame(
            t,
            rgb_jpeg=f["rgb"] if ms.MODALITY_RGB in modalities else None,
            pose_jpeg=f["pose"] if pose else None,
            keypoints=f["keypoints"] if pose else None,
            keypoint_scores=f["scores"] if pose else None,
            boxes=f["boxes"] if pose else None,
            box_scores=f["box_scores"] if pose else None,
            track_ids=f["track_ids"] if pose else None,
        )
    if ms.MODALITY_FLOW in modalities:
        for t, f in zip(stamps[:-1], frames[:-1]):
            builder.add_flow(t, f["flow"])
    data = builder.serialize()
    assert data == builder.serialize()  # deterministic
    ctx, seq = tf.io.parse_single_sequence_example(data, *ms.parse_specs(modalities))
    assert set(ctx) == ms.context_keys(modalities)
    assert set(seq) == ms.sequence_keys(modalities)

    def text(key):
        return ctx[key].numpy().decode("utf-8")

    assert text(ms.EXAMPLE_ID_KEY) == context.example_id
    assert text(ms.DATASET_NAME_KEY) == context.dataset_name
    assert text(ms.CLIP_DATA_PATH_KEY) == context.data_path
    assert text(ms.CLIP_MEDIA_ID_KEY) == context.media_id
    assert text(ms.CLIP_LABEL_STRING_KEY) == text(ms.CLIP_LABEL_TEXT_KEY) == context.label
    assert int(ctx[ms.CLIP_LABEL_INDEX_KEY]) == context.label_index
    assert int(ctx[ms.CLIP_START_TIMESTAMP_KEY]) == context.start_us
    assert int(ctx[ms.CLIP_END_TIMESTAMP_KEY]) == context.end_us
    for m, info in streams.items():
        p = ms.MODALITY_PREFIX[m]
        assert int(ctx[ms.prefixed(p, ms.IMAGE_HEIGHT)]) == info.height
        assert int(ctx[ms.prefixed(p, ms.IMAGE_WIDTH)]) == info.width
        assert float(ctx[ms.prefixed(p, ms.IMAGE_FRAME_RATE)]) == np.float32(info.frame_rate)
        steps = stamps if m != ms.MODALITY_FLOW else stamps[:-1]
        assert seq[ms.prefixed(p, ms.IMAGE_TIMESTAMP)].numpy().tolist() == steps
        images = [f[{"rgb": "rgb", "pose": "pose", "flow": "flow"}[m]] for f in frames]
        assert seq[ms.prefixed(p, ms.IMAGE_ENCODED)].numpy().tolist() == images[: len(steps)]
    if not pose:
        return
    persons = [len(f["track_ids"]) for f in frames]
    assert seq[ms.REGION_NUM_REGIONS_KEY].numpy().tolist() == persons
    assert seq[ms.POSE_NUM_REGIONS_KEY].numpy().tolist() == [17 * p for p in persons]
    assert seq[ms.REGION_TIMESTAMP_KEY].numpy().tolist() == stamps
    assert seq[ms.REGION_IS_ANNOTATED_KEY].numpy().tolist() == [1] * len(stamps)

    def stored(x):  # what the builder promises: NaN -> 0, clipped to [0, 1], float32
        return np.clip(np.nan_to_num(np.asarray(x, np.float32), nan=0.0), 0, 1).tolist()

    expect = {
        ms.POSE_POINT_X_KEY: [stored(f["keypoints"][:, :, 0].reshape(-1)) for f in frames],
        ms.POSE_POINT_Y_KEY: [stored(f["keypoints"][:, :, 1].reshape(-1)) for f in frames],
        ms.POSE_CONFIDENCE_KEY: [stored(f["scores"].reshape(-1)) for f in frames],
        ms.REGION_CONFIDENCE_KEY: [stored(f["box_scores"]) for f in frames],
        ms.REGION_TRACK_INDEX_KEY: [f["track_ids"].tolist() for f in frames],
    }
    for i, key in enumerate(
        (ms.REGION_BBOX_YMIN_KEY, ms.REGION_BBOX_XMIN_KEY, ms.REGION_BBOX_YMAX_KEY,
         ms.REGION_BBOX_XMAX_KEY)
    ):  # fmt: skip
        expect[key] = [stored(f["boxes"][:, i]) for f in frames]
    for key, rows in expect.items():
        got = _dense(seq[key])
        assert [[float(v) if key != ms.REGION_TRACK_INDEX_KEY else int(v) for v in r]
                for r in got] == rows, key  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Bugs found by these properties, fixed; the examples stay as regression tests.
# ---------------------------------------------------------------------------------------------
def test_jsonl_huge_integer_is_a_failure_row():
    text = json.dumps({"path": "a.mp4", "label": "a", "start": 10**400}) + "\n"
    specs, failures, _ = _parse_file("m.jsonl", text)
    assert specs == [] and len(failures) == 1
    assert failures[0].error.startswith("m.jsonl:1: start=")


def test_jsonl_integer_beyond_pythons_digit_limit_is_a_manifest_error():
    text = '{"path": "a.mp4", "label": "a", "start": 1' + "0" * 5000 + "}\n"
    with pytest.raises(ManifestError, match="line 1"):
        _parse_file("m.jsonl", text)


def test_extra_fields_only_row_is_a_failure():
    specs, failures, _ = _parse_file("m.csv", "path,label\n,,x.mp4,run\n")
    assert specs == []
    assert [f.error for f in failures] == [
        "m.csv:2: more fields than the header has: ['x.mp4', 'run']"
    ]


def test_times_are_ascii_decimals():
    text = "path,label,start\na.mp4,a,1_0\nb.mp4,a,１２\nc.mp4,a,1e400\nd.mp4,a,1e1\n"
    specs, failures, _ = _parse_file("m.csv", text)
    assert [s.start_us for s in specs] == [10_000_000]
    assert [f.error for f in failures] == [
        "m.csv:2: start='1_0' is not a number of seconds (expected ASCII decimal notation)",
        "m.csv:3: start='１２' is not a number of seconds (expected ASCII decimal notation)",
        "m.csv:4: start='1e400' is not finite",
    ]
