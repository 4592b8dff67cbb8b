"""Keypoint export: Parquet rows and MMAction2 arrays read back and compared with the records."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from pipelines import assets
from pipelines.preprocess import run
from pipelines.storage import output
from pipelines.tools import export
from schemas import layout
from schemas import media_sequence as ms
from schemas.dataset_info import DatasetInfo

H, W = 120, 160


def synthetic_record(example_id, label_index, label, tracks_per_frame, seed=0) -> bytes:
    """A pose-only record; frame t holds persons with the track ids tracks_per_frame[t]."""
    rng = np.random.default_rng(seed)
    builder = ms.SequenceExampleBuilder(
        ms.ClipContext(
            example_id, "synthetic", "/v.mp4", "v", 1_000, 10_000_000, label_index, label
        ),
        {ms.MODALITY_POSE: ms.StreamInfo(H, W)},
    )
    pose = tf.io.encode_jpeg(np.zeros((H, W, 3), np.uint8)).numpy()
    for t, tracks in enumerate(tracks_per_frame):
        p = len(tracks)
        builder.add_frame(
            1_000 + 40_000 * t,
            pose_jpeg=pose,
            keypoints=rng.uniform(0.1, 0.9, (p, 17, 2)),
            keypoint_scores=rng.uniform(0, 1, (p, 17)),
            boxes=np.sort(rng.uniform(0, 1, (p, 2, 2)), axis=1).transpose(0, 2, 1).reshape(p, 4),
            box_scores=rng.uniform(0, 1, p),
            track_ids=np.asarray(tracks, np.int64),
        )
    return builder.serialize()


def write_output_dir(root, records: dict[str, list[bytes]], modalities=("pose",)) -> str:
    """An output directory in the pipeline's layout holding `records` per split, one shard each."""
    splits = {}
    for split, recs in records.items():
        shard = layout.shard_path(split, "synthetic", 0, 1)
        (root / split).mkdir(parents=True)
        output.write_tfrecords(str(root / shard), recs)
        splits[split] = {"clips": len(recs), "num_shards": 1, "shards": [shard]}
    info = {
        "schema_version": ms.SCHEMA_VERSION,
        "dataset_name": "synthetic",
        "modalities": list(modalities),
        "splits": splits,
    }
    (root / layout.DATASET_INFO).write_text(json.dumps(info))
    return str(root)


def reference_frames(data: bytes):
    """Per-frame arrays of a record, parsed with plain tf.io (independent of
    pipelines.tools.export)."""
    ctx_spec, seq_spec = ms.parse_specs([ms.MODALITY_POSE])
    ctx, seq = tf.io.parse_single_sequence_example(data, ctx_spec, seq_spec)
    counts = seq[ms.REGION_NUM_REGIONS_KEY].numpy()

    def rows(key, per):
        dense = tf.sparse.to_dense(seq[key]).numpy()
        return [dense[t, : per * n] for t, n in enumerate(counts)]

    frames = []
    xs, ys = rows(ms.POSE_POINT_X_KEY, 17), rows(ms.POSE_POINT_Y_KEY, 17)
    sc = rows(ms.POSE_CONFIDENCE_KEY, 17)
    boxes = [rows(k, 1) for k in ms.REGION_FLOAT_LIST_KEYS[:4]]
    ps, tr = rows(ms.REGION_CONFIDENCE_KEY, 1), rows(ms.REGION_TRACK_INDEX_KEY, 1)
    ts = seq[ms.REGION_TIMESTAMP_KEY].numpy()
    for t, n in enumerate(counts):
        frames.append(
            {
                "timestamp": int(ts[t]),
                "x": xs[t].reshape(n, 17),
                "y": ys[t].reshape(n, 17),
                "score": sc[t].reshape(n, 17),
                "box": np.stack([b[t] for b in boxes], axis=-1),
                "person_score": ps[t],
                "track": tr[t],
            }
        )
    meta = {
        "id": ctx[ms.EXAMPLE_ID_KEY].numpy().decode(),
        "label_index": int(ctx[ms.CLIP_LABEL_INDEX_KEY].numpy()),
        "label": ctx[ms.CLIP_LABEL_STRING_KEY].numpy().decode(),
        "h": int(ctx["POSE_RENDERED/image/height"].numpy()),
        "w": int(ctx["POSE_RENDERED/image/width"].numpy()),
    }
    return meta, frames


def all_records(out_dir):
    return [(r.split, r.data) for r in output.iter_dataset_records(out_dir)]


def check_parquet(path, out_dir):
    table = pq.read_table(path)
    assert table.schema.equals(export.parquet_schema(), check_metadata=False)
    assert json.loads(table.schema.metadata[b"joint_names"]) == list(ms.COCO17_JOINT_NAMES)
    rows = table.to_pylist()
    i = 0
    for split, data in all_records(out_dir):
        meta, frames = reference_frames(data)
        for t, f in enumerate(frames):
            for p in range(len(f["track"])):
                row = rows[i]
                i += 1
                assert (row["example_id"], row["split"], row["label"]) == (
                    meta["id"],
                    split,
                    meta["label"],
                )
                assert (row["label_index"], row["frame_index"], row["person_index"]) == (
                    meta["label_index"],
                    t,
                    p,
                )
                assert (row["num_frames"], row["num_persons"]) == (len(frames), len(f["track"]))
                assert row["timestamp_us"] == f["timestamp"]
                assert row["track_id"] == f["track"][p]
                assert (row["image_height"], row["image_width"]) == (meta["h"], meta["w"])
                np.testing.assert_array_equal(np.float32(row["keypoint_x"]), f["x"][p])
                np.testing.assert_array_equal(np.float32(row["keypoint_y"]), f["y"][p])
                np.testing.assert_array_equal(np.float32(row["keypoint_score"]), f["score"][p])
                np.testing.assert_array_equal(
                    np.float32(row["keypoint_px_x"]), f["x"][p] * np.float32(meta["w"])
                )
                np.testing.assert_array_equal(
                    np.float32(row["keypoint_px_y"]), f["y"][p] * np.float32(meta["h"])
                )
                box = [row[f"bbox_{k}"] for k in ("ymin", "xmin", "ymax", "xmax")]
                np.testing.assert_array_equal(np.float32(box), f["box"][p])
                assert np.float32(row["person_score"]) == f["person_score"][p]
    assert i == len(rows)
    return rows


def main_people_first(frames) -> list[int]:
    """The clip's track ids by frames present (most first), summed keypoint score (highest
    first), track id: counted here from the parsed frames, independently of
    pipelines.tools.export."""
    count: dict[int, int] = {}
    total: dict[int, float] = {}
    for f in frames:
        for p, track in enumerate(f["track"].tolist()):
            count[track] = count.get(track, 0) + 1
            total[track] = total.get(track, 0.0) + float(np.sum(f["score"][p], dtype=np.float64))
    return sorted(count, key=lambda k: (-count[k], -total[k], k))


def check_mmaction(path, out_dir):
    with open(path, "rb") as fh:
        data = pickle.load(fh)
    assert set(data) == {"split", "annotations"}
    records = all_records(out_dir)
    assert len(data["annotations"]) == len(records)
    by_split: dict[str, list[str]] = {}
    for ann, (split, rec) in zip(data["annotations"], records):
        meta, frames = reference_frames(rec)
        by_split.setdefault(split, []).append(meta["id"])
        assert ann["frame_dir"] == meta["id"] and ann["label"] == meta["label_index"]
        assert ann["img_shape"] == ann["original_shape"] == (meta["h"], meta["w"])
        assert ann["total_frames"] == len(frames)
        tracks = main_people_first(frames)
        m = max(1, len(tracks))
        kp, sc = ann["keypoint"], ann["keypoint_score"]
        assert kp.dtype == sc.dtype == np.float32
        assert kp.shape == (m, len(frames), 17, 2) and sc.shape == (m, len(frames), 17)
        seen = np.zeros((m, len(frames)), bool)
        for t, f in enumerate(frames):
            for p, track in enumerate(f["track"]):
                k = tracks.index(int(track))
                seen[k, t] = True
                np.testing.assert_array_equal(kp[k, t, :, 0], f["x"][p] * np.float32(meta["w"]))
                np.testing.assert_array_equal(kp[k, t, :, 1], f["y"][p] * np.float32(meta["h"]))
                np.testing.assert_array_equal(sc[k, t], f["score"][p])
        assert not kp[~seen].any() and not sc[~seen].any()  # absent tracks are zeros
    assert data["split"] == by_split
    return data


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("export_synthetic")
    records = {
        "train": [
            # Tracks 0 and 2 (not contiguous); frame 2 empty; frame 3 lists track 2 first.
            synthetic_record("a_0", 1, "jump", [[0], [0, 2], [], [2, 0], [2]], seed=1),
            synthetic_record("b_0", 0, "run", [[], [], []], seed=2),  # nobody at all
        ],
        "validation": [synthetic_record("c_0", 1, "jump", [[0], [0]], seed=3)],
    }
    return write_output_dir(root, records)


def test_parquet_rows_equal_the_records(synthetic_dir, tmp_path):
    path = str(tmp_path / "kp.parquet")
    assert export.main([synthetic_dir, "--format", "parquet", "--out", path]) == 0
    rows = check_parquet(path, synthetic_dir)
    assert len(rows) == 1 + 2 + 0 + 2 + 1 + 1 + 1  # persons summed over frames
    assert [r["track_id"] for r in rows[3:5]] == [2, 0]
    assert not (tmp_path / "kp.parquet.tmp").exists()


def test_parquet_split_filter_and_empty_result(synthetic_dir, tmp_path):
    path = str(tmp_path / "val.parquet")
    assert export.export(synthetic_dir, "parquet", path, split="validation") == {
        "clips": 1,
        "rows": 2,
    }
    assert set(pq.read_table(path).column("split").to_pylist()) == {"validation"}
    root = tmp_path / "empty"
    empty = write_output_dir(root, {"train": [synthetic_record("e_0", 0, "x", [[]])]})
    assert export.export(empty, "parquet", str(tmp_path / "e.parquet")) == {"clips": 1, "rows": 0}
    table = pq.read_table(str(tmp_path / "e.parquet"))
    assert table.num_rows == 0 and table.schema.equals(export.parquet_schema(), False)


def test_mmaction_arrays_equal_the_records(synthetic_dir, tmp_path):
    path = str(tmp_path / "skeleton.pkl")
    assert export.main([synthetic_dir, "--format", "mmaction", "--out", path]) == 0
    data = check_mmaction(path, synthetic_dir)
    assert data["split"] == {"train": ["a_0", "b_0"], "validation": ["c_0"]}
    a, b, _ = data["annotations"]
    # Tracks 0 and 2, 3 frames each: persons 0 and 1, track 0's keypoint scores summing higher.
    assert a["keypoint"].shape == (2, 5, 17, 2)
    assert not a["keypoint_score"][1, 0].any() and a["keypoint_score"][1, 1].any()
    assert b["keypoint"].shape == (1, 3, 17, 2) and not b["keypoint"].any()


# Frame t's persons as (track id, keypoint score): track 5 in all 6 frames; tracks 1 and 2 in 3
# frames each, track 2 with the higher scores; track 0, the first seen, in 2; tracks 3 and 4 in
# one frame each with equal scores. By track id, a GCN keeping 2 persons would get 0 and 1.
MAIN_PEOPLE_FRAMES = [
    [(0, 0.75), (5, 0.5)],
    [(5, 0.5), (0, 0.75)],
    [(1, 0.25), (5, 0.5)],
    [(2, 0.5), (1, 0.25), (5, 0.5)],
    [(5, 0.5), (2, 0.5), (1, 0.25)],
    [(4, 0.75), (3, 0.75), (5, 0.5), (2, 0.5)],
]


def main_people_clip(frames=MAIN_PEOPLE_FRAMES) -> export.ClipPoses:
    """`frames` (per frame, (track id, keypoint score) per person) as a clip of 160 x 120 frames;
    track k at frame t has every joint at x = (k + 1) / 16, y = (t + 1) / 16, i.e. at pixels
    (10 (k + 1), 7.5 (t + 1)), exactly."""

    def per_frame(value, shape, dtype):
        return [np.array([value(k, t, s) for k, s in f], dtype).reshape(shape(len(f)))
                for t, f in enumerate(frames)]  # fmt: skip

    return export.ClipPoses(
        example_id="main_0",
        label_index=0,
        label="x",
        height=120,
        width=160,
        timestamps_us=40_000 * np.arange(len(frames), dtype=np.int64),
        keypoints=per_frame(
            lambda k, t, s: [[(k + 1) / 16, (t + 1) / 16]] * 17, lambda p: (p, 17, 2), np.float32
        ),
        scores=per_frame(lambda k, t, s: [s] * 17, lambda p: (p, 17), np.float32),
        boxes=per_frame(lambda k, t, s: [0, 0, 1, 1], lambda p: (p, 4), np.float32),
        box_scores=per_frame(lambda k, t, s: s, lambda p: (p,), np.float32),
        track_ids=per_frame(lambda k, t, s: k, lambda p: (p,), np.int64),
    )


def gcn_persons(keypoint: np.ndarray, num_person: int) -> np.ndarray:
    """What MMAction2's FormatGCNInput(num_person, mode='zero') keeps: the first num_person
    persons, zeros for the missing ones."""
    kept = keypoint[:num_person]
    pad = np.zeros((num_person - len(kept),) + keypoint.shape[1:], keypoint.dtype)
    return np.concatenate([kept, pad])


def test_person_order_is_longest_lived_then_score_then_id():
    clip = main_people_clip()
    order = export.person_order(clip.track_ids, clip.scores)
    assert order.dtype == np.int64 and order.tolist() == [5, 2, 1, 0, 3, 4]
    empty = export.person_order([np.zeros(0, np.int64)] * 2, [np.zeros((0, 17), np.float32)] * 2)
    assert empty.dtype == np.int64 and empty.shape == (0,)
    assert export.person_order([], []).shape == (0,)
    with pytest.raises(ValueError, match="scores: 1 persons in all, track_ids: 2"):
        export.person_order([np.array([0, 1])], [np.zeros((1, 17), np.float32)])


def test_mmaction_keeps_the_longest_lived_tracks_for_gcn_models():
    ann = export.mmaction_annotation(main_people_clip())
    kp, sc = ann["keypoint"], ann["keypoint_score"]
    assert kp.shape == (6, 6, 17, 2) and sc.shape == (6, 6, 17)
    # num_person=1: track 5, in every frame.
    want = np.zeros((1, 6, 17, 2), np.float32)
    want[0, :, :, 0] = 60.0
    want[0, :, :, 1] = 7.5 * np.arange(1, 7)[:, None]
    np.testing.assert_array_equal(gcn_persons(kp, 1), want)
    np.testing.assert_array_equal(gcn_persons(sc, 1), np.full((1, 6, 17), 0.5, np.float32))
    # num_person=2: tracks 5 and 2; track 2 only in frames 3, 4, 5, zeros before.
    want2 = np.zeros((2, 6, 17, 2), np.float32)
    want2[0] = want[0]
    want2[1, 3:, :, 0] = 30.0
    want2[1, 3:, :, 1] = 7.5 * np.arange(4, 7)[:, None]
    np.testing.assert_array_equal(gcn_persons(kp, 2), want2)
    want_sc = np.zeros((2, 6, 17), np.float32)
    want_sc[0] = 0.5
    want_sc[1, 3:] = 0.5
    np.testing.assert_array_equal(gcn_persons(sc, 2), want_sc)
    # The rest in order: track 1 (frames 2-4), 0 (frames 0-1), 3 and 4 (frame 5).
    for m, (track, present) in enumerate([(1, [2, 3, 4]), (0, [0, 1]), (3, [5]), (4, [5])], 2):
        assert np.flatnonzero(sc[m, :, 0]).tolist() == present
        assert set(kp[m, present, :, 0].reshape(-1).tolist()) == {10.0 * (track + 1)}
    # One track, num_person=2: the track, then a person of zeros, as FormatGCNInput pads.
    one = export.mmaction_annotation(main_people_clip([[], [(7, 0.5)], [(7, 0.5)]]))
    want = np.zeros((2, 3, 17, 2), np.float32)
    want[0, 1:, :, 0] = 80.0
    want[0, 1:, :, 1] = 7.5 * np.arange(2, 4)[:, None]
    np.testing.assert_array_equal(gcn_persons(one["keypoint"], 2), want)


def test_errors_name_the_problem(synthetic_dir, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"split='test'.*splits there: \['train', 'validation'\]"):
        export.export(synthetic_dir, "mmaction", str(tmp_path / "x.pkl"), split="test")
    with pytest.raises(FileNotFoundError, match="nowhere.*dataset_info.json"):
        export.export(str(tmp_path / "nowhere"), "parquet", str(tmp_path / "x.parquet"))
    root = tmp_path / "rgb_only"
    root.mkdir()
    (root / layout.DATASET_INFO).write_text(
        json.dumps({"schema_version": ms.SCHEMA_VERSION, "modalities": ["rgb"], "splits": {}})
    )
    assert export.main([str(root), "--format", "parquet", "--out", str(tmp_path / "y")]) == 2
    assert export.EXPORT_FORMATS == ("parquet", "mmaction")
    with pytest.raises(ValueError, match="format='csv': must be one of parquet, mmaction"):
        export.export(str(root), "csv", str(tmp_path / "z"))
    assert "no keypoints to export" in capsys.readouterr().err
    a = tf.train.SequenceExample.FromString(synthetic_record("d_0", 0, "x", [[1]]))
    a.feature_lists.feature_list[ms.REGION_TRACK_INDEX_KEY].feature[0].int64_list.value.append(1)
    a.feature_lists.feature_list[ms.REGION_NUM_REGIONS_KEY].feature[0].int64_list.value[0] = 2
    with pytest.raises(ValueError, match="d_0: POSE/region/point/x: lengths"):
        export.clip_poses(a)


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory, assets_ready):
    """A real clip of two people (0.4 s, 10 frames) through the pipeline, RGB and pose only."""
    tmp = tmp_path_factory.mktemp("export_real")
    video = assets.sample_video_path("pose2sim_multi_cam01.mp4")
    manifest = tmp / "manifest.csv"
    manifest.write_text(f"path,label,start,end,split\n{video},walking,0.2,0.6,train\n")
    run(
        [
            f"--input={manifest}",
            f"--output_dir={tmp / 'out'}",
            "--dataset_name=real",
            "--runner=DirectRunner",
            "--modalities=rgb,pose",
        ]
    )
    return str(tmp / "out")


def test_real_clip_exports_equal_the_records(real_dir, tmp_path):
    pq_path, pkl_path = str(tmp_path / "real.parquet"), str(tmp_path / "real.pkl")
    assert export.main([real_dir, "--format", "parquet", "--out", pq_path]) == 0
    assert export.main([real_dir, "--format", "mmaction", "--out", pkl_path]) == 0
    rows = check_parquet(pq_path, real_dir)
    assert max(r["num_persons"] for r in rows) == 3  # two walking, one standing at the left edge
    data = check_mmaction(pkl_path, real_dir)
    (ann,) = data["annotations"]
    assert ann["total_frames"] == 10 and ann["img_shape"] == (452, 256)
    assert ann["keypoint"].shape[0] >= 2  # two people, tracked
    px = ann["keypoint"][ann["keypoint_score"] > 0]
    assert (px >= 0).all() and (px[:, 0] <= 256).all() and (px[:, 1] <= 452).all()


def test_the_pipelines_description_round_trips(real_dir):
    """dataset_info.json as the job wrote it parses and is written back unchanged."""
    with open(f"{real_dir}/{layout.DATASET_INFO}", encoding="utf-8") as f:
        text = f.read()
    data = json.loads(text)
    info = DatasetInfo.from_json(data)
    assert info.to_json() == data
    assert info.to_text() == text
    assert info.modalities == ("rgb", "pose") and info.split_names == ("train",)
    assert info.failures == layout.FAILURES_PATTERN
    assert info.splits["train"].shards == (layout.shard_path("train", "real", 0, 1),)
