"""The validator's summary table and pose coverage check, on made records of known person counts."""

from __future__ import annotations

import json

import numpy as np

from pipelines.stages.codec import encode_jpeg
from pipelines.storage import output
from pipelines.tools import validate
from schemas import layout
from schemas import media_sequence as ms

H, W = 48, 64
# Persons per frame of each made record, per split.
PERSONS = {
    "train": {"a_0": [0, 1, 2, 0], "b_0": [3, 0]},  # 6 frames, 3 with a person, 6 persons
    "validation": {"c_0": [1, 1, 0, 0, 0]},  # 5 frames, 2 with a person, 2 persons
}


def made_record(example_id: str, persons: list[int], modalities=("pose",)) -> bytes:
    """A record of len(persons) frames over a 1 s window; frame t holds persons[t] people."""
    streams = {m: ms.StreamInfo(H, W) for m in modalities}
    builder = ms.SequenceExampleBuilder(
        ms.ClipContext(example_id, "made", "/v.mp4", "v", 0, 1_000_000, 0, "x"), streams
    )
    jpeg = encode_jpeg(np.zeros((H, W, 3), np.uint8), 90)
    for t, n in enumerate(persons):
        pose = ms.MODALITY_POSE in modalities
        builder.add_frame(
            40_000 * t,
            rgb_jpeg=jpeg if ms.MODALITY_RGB in modalities else None,
            pose_jpeg=jpeg if pose else None,
            keypoints=np.full((n, 17, 2), 0.5) if pose else None,
            keypoint_scores=np.full((n, 17), 0.9) if pose else None,
            boxes=np.tile([0.1, 0.1, 0.9, 0.9], (n, 1)) if pose else None,
            box_scores=np.full(n, 0.8) if pose else None,
            track_ids=np.arange(n) if pose else None,
        )
    return builder.serialize()


def made_dir(root, modalities=("pose",), pose_info=None) -> tuple[str, dict[str, int]]:
    """An output directory holding PERSONS' records, one shard per split; returns it and the
    bytes of each split's records."""
    splits, sizes = {}, {}
    for split, clips in PERSONS.items():
        records = [made_record(i, n, modalities) for i, n in clips.items()]
        shard = layout.shard_path(split, "made", 0, 1)
        (root / split).mkdir(parents=True)
        output.write_tfrecords(str(root / shard), records)
        frames = sum(len(n) for n in clips.values())
        splits[split] = {"clips": len(clips), "frames": frames, "shards": [shard]}
        sizes[split] = sum(len(r) for r in records)
    info = {
        "schema_version": ms.SCHEMA_VERSION,
        "modalities": list(modalities),
        "num_classes": 1,
        "splits": splits,
        "inputs": {"failed": 0},
    }
    if pose_info is not None:
        info["pose"] = pose_info
    (root / layout.DATASET_INFO).write_text(json.dumps(info))
    return str(root), sizes


def test_table_shows_frames_with_a_person_and_persons_per_frame(tmp_path):
    out, sizes = made_dir(tmp_path)
    violations, table = validate.validate(out)
    assert violations == []
    lines = table.splitlines()
    assert lines[0] == (
        f"{'split':<12}{'clips':>7}{'frames':>9}{'frames with a person':>22}"
        f"{'persons/frame':>15}{'KB/clip-second':>16}"
    )
    # KB per clip-second: each clip's window is 1 s.
    kbps = {split: f"{sizes[split] / 1e3 / len(PERSONS[split]):>16.1f}" for split in PERSONS}
    assert lines[1] == f"{'train':<12}{2:>7}{6:>9}{'50.0 %':>22}{'1.00':>15}" + kbps["train"]
    assert (
        lines[2] == f"{'validation':<12}{1:>7}{5:>9}{'40.0 %':>22}{'0.40':>15}" + kbps["validation"]
    )
    assert lines[3:] == ["failures: 0", "violations: 0"]


def test_facts_of_one_record_count_frames_with_a_person():
    errors, facts = validate.check_record(made_record("a_0", [0, 1, 2, 0]), ("pose",), 1)
    assert errors == []
    assert facts == {"id": "a_0", "frames": 4, "persons": 3, "frames_with_person": 2, "seconds": 1}


def test_without_the_pose_modality_the_pose_columns_are_dashes(tmp_path):
    out, sizes = made_dir(tmp_path, modalities=("rgb",))
    violations, table = validate.validate(out)
    assert violations == []
    row = f"{'train':<12}{2:>7}{6:>9}{'-':>22}{'-':>15}{sizes['train'] / 1e3 / 2:>16.1f}"
    assert table.splitlines()[1] == row


def test_pose_coverage_of_the_description_is_checked(tmp_path):
    good = {"frames_with_person": 3, "persons": 6}
    out, _ = made_dir(tmp_path / "good", pose_info={"train": good})
    assert validate.validate(out)[0] == []
    bad = {"train": {"frames_with_person": 4, "persons": 6}, "validation": {"persons": 1}}
    out, _ = made_dir(tmp_path / "bad", pose_info=bad)
    violations, _ = validate.validate(out)
    assert violations == [
        "train: 3 frames_with_person in the shards, the description's pose coverage says 4",
        "validation: 2 persons in the shards, the description's pose coverage says 1",
    ]


def test_a_description_it_cannot_check_against_is_one_violation(tmp_path):
    out, _ = made_dir(tmp_path)
    path = tmp_path / layout.DATASET_INFO
    info = json.loads(path.read_text())
    path.write_text(json.dumps({**info, "schema_version": 99}))
    assert validate.validate(out) == (
        [f"{out}/dataset_info.json: schema_version=99: this reader knows [1]; upgrade the "
         "package to read these records"],
        "",
    )  # fmt: skip
    del info["splits"]["train"]["frames"], info["inputs"]
    path.write_text(json.dumps(info))
    assert validate.validate(out) == (
        [f"{out}/dataset_info.json: the description lacks inputs, splits.train.frames"],
        "",
    )
    path.write_text(json.dumps({**info, "num_classes": "one"}))
    violations, _ = validate.validate(out)
    assert violations == [
        f"{out}/dataset_info.json: num_classes: expected an integer >= 0, got 'one'"
    ]


def test_per_person_lists_are_checked_against_the_key_table():
    import tensorflow as tf

    ex = tf.train.SequenceExample.FromString(made_record("a_0", [0, 1, 2, 0]))
    lists = ex.feature_lists.feature_list
    lists[ms.POSE_POINT_X_KEY].feature[1].float_list.value[3] = 1.5
    lists[ms.REGION_TRACK_INDEX_KEY].feature[2].int64_list.value[0] = -1
    lists[ms.REGION_BBOX_XMAX_KEY].feature[2].float_list.value.append(0.5)
    errors, _ = validate.check_record(ex.SerializeToString(), ("pose",), 1)
    assert errors == [
        "region/bbox/xmax: lengths do not match 1 x persons per frame",
        "region/track/index: negative track index",
        "POSE/region/point/x: values outside [0, 1]",
    ]
