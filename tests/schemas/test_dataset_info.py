"""The dataset description: parsed once, typed, written back as it was read."""

import copy
import json

import pytest

from schemas import layout
from schemas import media_sequence as ms
from schemas.dataset_info import DatasetInfo, FlowInfo, InputCounts, PoseCoverage, SplitInfo


def written_description() -> dict:
    """A description with every field the job writes, as `pipelines.preprocess` builds it."""
    splits = {
        "train": {
            "bytes": 36092820, "clips": 6, "duration_seconds": 16.08, "frames": 402,
            "num_shards": 1, "persons": 651,
            "shards": ["train/demo-00000-of-00001.tfrecord"],
        },
        "validation": {
            "bytes": 7000000, "clips": 2, "duration_seconds": 3.36, "frames": 84,
            "num_shards": 2, "persons": 126,
            "shards": [
                "validation/demo-00000-of-00002.tfrecord",
                "validation/demo-00001-of-00002.tfrecord",
            ],
        },
    }  # fmt: skip
    return {
        "config": {"dataset_name": "demo", "label_map": None, "modalities": ["rgb", "pose"]},
        "dataset_name": "demo",
        "failures": "failures/failures-*.jsonl",
        "flow": {
            "computed_from": "stored_rgb",
            "jpeg_quality": 100,
            "params": {"solver": "compiled", "tau": 0.25, "warps": 5},
            "preset": "fast",
            "saturation": 20.0,
        },
        "frame_rate": 25.0,
        "inputs": {"failed": 1, "failed_by_stage": {"decode": 1}, "rows": 9, "written": 8},
        "jpeg_quality": 90,
        "labels": ["athletics", "balancing", "walking"],
        "modalities": ["rgb", "pose", "flow"],
        "num_classes": 3,
        "pose": {
            "train": {
                "frames": 402,
                "frames_with_person": 399,
                "persons": 651,
                "persons_per_frame": 1.6194,
                "share_of_frames_with_person": 0.9925,
            },
            "validation": {
                "frames": 84,
                "frames_with_person": 84,
                "persons": 126,
                "persons_per_frame": 1.5,
                "share_of_frames_with_person": 1.0,
            },
        },  # fmt: skip
        "pose_model": {"kind": "movenet_multipose", "name": "movenet_multipose", "path": ""},
        "render_style": {"background": "rgb", "marker": "bars", "ratio_k": 0.04},
        "schema_version": ms.SCHEMA_VERSION,
        "software": {"python": "3.11.7", "tensorflow": "2.21.0"},
        "splits": splits,
    }


def test_a_written_description_round_trips():
    data = written_description()
    before = copy.deepcopy(data)
    info = DatasetInfo.from_json(data)
    assert data == before  # the input is not changed
    assert info.to_json() == data
    # Written back as the job writes it: indented by 2, keys sorted.
    assert info.to_text() == json.dumps(data, indent=2, sort_keys=True)
    assert DatasetInfo.from_text(info.to_text()) == info
    # Typed views.
    assert info.modalities == ("rgb", "pose", "flow") and info.num_classes == 3
    assert info.split_names == ("train", "validation")
    assert info.splits["validation"] == SplitInfo(
        shards=(
            "validation/demo-00000-of-00002.tfrecord",
            "validation/demo-00001-of-00002.tfrecord",
        ),
        clips=2,
        frames=84,
        persons=126,
        duration_seconds=3.36,
        bytes=7000000,
        num_shards=2,
    )
    assert info.inputs == InputCounts(rows=9, written=8, failed=1, failed_by_stage={"decode": 1})
    assert info.flow.saturation == 20.0 and isinstance(info.flow, FlowInfo)
    assert info.pose["train"] == PoseCoverage.of(402, 399, 651)
    assert info.shards("validation") == [
        ("validation", "validation/demo-00000-of-00002.tfrecord"),
        ("validation", "validation/demo-00001-of-00002.tfrecord"),
    ]
    assert [s for _, s in info.shards()][0] == layout.shard_path("train", "demo", 0, 1)


def test_the_writer_can_build_the_description():
    data = written_description()
    built = DatasetInfo(
        dataset_name="demo",
        labels=("athletics", "balancing", "walking"),
        num_classes=3,
        modalities=("rgb", "pose", "flow"),
        frame_rate=25.0,
        jpeg_quality=90,
        flow=FlowInfo(**{k: v for k, v in data["flow"].items()}),
        pose_model=data["pose_model"],
        render_style=data["render_style"],
        config=data["config"],
        software=data["software"],
        inputs=InputCounts(**data["inputs"]),
        failures=layout.FAILURES_PATTERN,
        splits={
            split: SplitInfo(**{**desc, "shards": tuple(desc["shards"])})
            for split, desc in data["splits"].items()
        },
        pose={
            "train": PoseCoverage.of(402, 399, 651),
            "validation": PoseCoverage.of(84, 84, 126),
        },
    )
    assert built.to_json() == data
    assert PoseCoverage.of(0, 0, 0).to_json() == {
        "frames": 0, "frames_with_person": 0, "persons": 0,
        "share_of_frames_with_person": 0.0, "persons_per_frame": 0.0,
    }  # fmt: skip


def test_hand_made_and_newer_descriptions_keep_what_they_hold():
    small = {"schema_version": 1, "modalities": ["rgb"], "splits": {"train": {"shards": ["a"]}}}
    info = DatasetInfo.from_json(small)
    assert info.to_json() == small
    assert info.num_classes is None and info.inputs is None and info.splits["train"].clips is None
    # Fields this code does not know are kept and written back.
    newer = {**written_description(), "notes": {"by": "someone"}}
    newer["splits"]["train"]["checksum"] = "abc"
    assert DatasetInfo.from_json(newer).to_json() == newer


@pytest.mark.parametrize(
    "change, message",
    [
        ({"schema_version": 99}, "schema_version=99: this reader knows"),
        ({"schema_version": None}, "schema_version=None"),
        ({"num_classes": -1}, "num_classes: expected an integer >= 0, got -1"),
        ({"num_classes": True}, "num_classes: expected an integer >= 0, got True"),
        ({"modalities": ["depth"]}, "modalities: expected a non-empty list"),
        ({"modalities": []}, "modalities: expected a non-empty list"),
        ({"labels": "abc"}, "labels: expected a list of strings"),
        ({"frame_rate": 0}, "frame_rate: expected a number > 0, got 0"),
        ({"splits": {"train": {"clips": 1}}}, "splits.train.shards: missing"),
        ({"splits": {"train": {"shards": ["a"], "frames": 1.5}}}, "splits.train.frames"),
        ({"splits": {"a/b": {"shards": []}}}, "splits: expected split names"),
        ({"pose": {"train": {"share_of_frames_with_person": 2}}}, "pose.train.share_of_frames"),
        ({"inputs": {"failed_by_stage": {"decode": -1}}}, "inputs.failed_by_stage.decode"),
        ({"flow": {"jpeg_quality": 101}}, "flow.jpeg_quality: expected an integer in \\[1, 100\\]"),
        ({"config": []}, "config: expected an object"),
    ],
)
def test_bad_descriptions_are_refused_naming_the_file_and_field(change, message):
    data = {**written_description(), **change}
    with pytest.raises(ValueError, match=f"^out/dataset_info.json: {message}"):
        DatasetInfo.from_json(data, "out/dataset_info.json")


def test_bad_files_are_refused_naming_them():
    with pytest.raises(ValueError, match="^d/dataset_info.json: schema_version: missing"):
        DatasetInfo.from_json({}, "d/dataset_info.json")
    with pytest.raises(ValueError, match="^d/dataset_info.json: expected a JSON object"):
        DatasetInfo.from_json([], "d/dataset_info.json")
    with pytest.raises(ValueError, match="^d/dataset_info.json: not JSON"):
        DatasetInfo.from_text("{", "d/dataset_info.json")


def test_split_selection_names_the_unknown_split():
    info = DatasetInfo.from_json(written_description())
    assert info.select_splits() == ["train", "validation"]
    assert info.select_splits("validation") == ["validation"]
    with pytest.raises(ValueError, match=r"split='test': not in /out \(splits there: \['train'"):
        info.select_splits("test", "/out")
    with pytest.raises(ValueError, match="split='test'"):
        info.shards("test")
