"""The dataset description: parsed once, typed, written back as it was read."""

import copy
import json

import pytest

from schemas import layout
from schemas import media_sequence as ms
from schemas.dataset_info import (
    COST_STAGES,
    CostInfo,
    DatasetInfo,
    FlowInfo,
    InputCounts,
    PoseCoverage,
    RowCost,
    SplitInfo,
    StageCost,
)


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
    stage_costs = {
        "decode": (0.5, 0.0257), "pose": (2.25, 0.1157), "tracking": (0.011, 0.0006),
        "render": (0.75, 0.0386), "flow": (80.5, 4.1409), "jpeg": (2.0, 0.1029),
        "other": (0.1, 0.0051),
    }  # fmt: skip
    cost = {
        "clip_seconds": 19.44,
        "core_seconds": 86.111,
        "core_seconds_per_clip_second": 4.4296,
        "rows": 7,
        "rows_without_cost": 1,
        "stages": {
            stage: {"core_seconds": total, "core_seconds_per_clip_second": per}
            for stage, (total, per) in stage_costs.items()
        },
    }
    return {
        "config": {"dataset_name": "demo", "label_map": None, "modalities": ["rgb", "pose"]},
        "cost": cost,
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
    assert info.cost.rows == 7 and info.cost.rows_without_cost == 1
    assert info.cost.stages["flow"] == StageCost(80.5, 4.1409)
    assert list(info.cost.stages) == list(COST_STAGES)
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
        cost=CostInfo(
            **{k: v for k, v in data["cost"].items() if k != "stages"},
            stages={s: StageCost(**c) for s, c in data["cost"]["stages"].items()},
        ),
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
    # A description written before the cost was measured reads as one without it.
    older = written_description()
    del older["cost"]
    assert DatasetInfo.from_json(older).cost is None
    assert DatasetInfo.from_json(older).to_json() == older
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
        ({"cost": 5}, "cost: expected a JSON object, got 5"),
        ({"cost": {"rows": -1}}, "cost.rows: expected an integer >= 0, got -1"),
        ({"cost": {"rows_without_cost": 1.5}}, "cost.rows_without_cost: expected an integer"),
        ({"cost": {"clip_seconds": float("nan")}}, "cost.clip_seconds: expected a number >= 0"),
        ({"cost": {"core_seconds": -0.5}}, "cost.core_seconds: expected a number >= 0, got -0.5"),
        ({"cost": {"stages": []}}, "cost.stages: expected an object of stage name -> cost"),
        ({"cost": {"stages": {"": {}}}}, "cost.stages: expected an object of stage name"),
        (
            {"cost": {"stages": {"flow": {"core_seconds_per_clip_second": "4"}}}},
            "cost.stages.flow.core_seconds_per_clip_second: expected a number >= 0, got '4'",
        ),
        ({"cost": {"stages": {"flow": {"core_seconds": True}}}}, "cost.stages.flow.core_seconds"),
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


def _row(clip_seconds, *seconds):
    return RowCost(dict(zip(COST_STAGES, seconds, strict=True)), clip_seconds)


def test_the_cost_of_the_rows_is_summed_per_stage_and_per_clip_second():
    # Made-up figures (binary fractions: the sums are exact), stages in COST_STAGES order.
    a = _row(2.0, 0.25, 1.5, 0.125, 0.5, 8.0, 0.5, 0.125)  # 11 core-s
    b = _row(2.0, 0.25, 0.5, 0.125, 0.5, 4.0, 0.5, 0.125)  # 6 core-s
    cost = CostInfo.of([a, None, b])  # None: a row whose part holds no figures
    per_stage = {
        "decode": (0.5, 0.125), "pose": (2.0, 0.5), "tracking": (0.25, 0.0625),
        "render": (1.0, 0.25), "flow": (12.0, 3.0), "jpeg": (1.0, 0.25),
        "other": (0.25, 0.0625),
    }  # fmt: skip
    assert cost.to_json() == {
        "rows": 2,
        "rows_without_cost": 1,
        "clip_seconds": 4.0,
        "core_seconds": 17.0,
        "core_seconds_per_clip_second": 4.25,
        "stages": {
            s: {"core_seconds": t, "core_seconds_per_clip_second": p}
            for s, (t, p) in per_stage.items()
        },
    }
    assert DatasetInfo.from_json({"schema_version": 1, "cost": cost.to_json()}).cost == cost
    # Rounded as written: core-seconds to 3 places, per clip-second to 4; the total is the sum
    # of the stages as written.
    third = CostInfo.of([_row(3.0, 1 / 3, 1 / 3, 0, 0, 0, 0, 0)])
    assert third.stages["pose"] == StageCost(0.333, 0.1111)
    assert (third.core_seconds, third.core_seconds_per_clip_second) == (0.666, 0.2222)
    # Unknown is not zero: without a row measured, no figure at all.
    assert CostInfo.of([None, None]).to_json() == {"rows": 0, "rows_without_cost": 2}
    assert CostInfo.of([]).to_json() == {"rows": 0, "rows_without_cost": 0}
    assert CostInfo.of([_row(0.0, 0, 0, 0, 0, 0, 0, 0.5)]).to_json() == {
        "rows": 1, "rows_without_cost": 0, "clip_seconds": 0.0, "core_seconds": 0.5,
        "stages": {s: {"core_seconds": 0.5 if s == "other" else 0.0} for s in COST_STAGES},
    }  # fmt: skip


def test_a_rows_cost_round_trips_and_bad_figures_are_refused():
    row = _row(1.04, 0.0123456789, 0.5, 0.0, 0.25, 3.0, 0.125, 0.0625)
    data = row.to_json()
    assert data == {
        "clip_seconds": 1.04,
        "core_seconds": {
            "decode": 0.012346, "pose": 0.5, "tracking": 0.0, "render": 0.25, "flow": 3.0,
            "jpeg": 0.125, "other": 0.0625,
        },
    }  # fmt: skip
    assert RowCost.from_json(data) == _row(1.04, 0.012346, 0.5, 0.0, 0.25, 3.0, 0.125, 0.0625)
    assert RowCost.from_json(data).total == 3.949846
    seconds = data["core_seconds"]
    for bad, message in [
        ([], "part 'k': cost: expected a JSON object, got \\[\\]"),
        ({"core_seconds": seconds}, "part 'k': cost.clip_seconds: missing"),
        ({"clip_seconds": 1}, "part 'k': cost.core_seconds: missing"),
        (
            {"clip_seconds": -1, "core_seconds": seconds},
            "part 'k': cost.clip_seconds: expected a number >= 0, got -1",
        ),
        (
            {"clip_seconds": 1, "core_seconds": {"flow": 1.0}},
            "part 'k': cost.core_seconds: expected the stages \\['decode', 'pose'",
        ),
        (
            {"clip_seconds": 1, "core_seconds": {**seconds, "flow": "3"}},
            "part 'k': cost.core_seconds.flow: expected a number >= 0, got '3'",
        ),
    ]:
        with pytest.raises(ValueError, match=f"^{message}"):
            RowCost.from_json(bad, "part 'k': cost")
    with pytest.raises(ValueError, match="^core_seconds.jpeg: expected a number >= 0, got -0.1"):
        _row(1.0, 0, 0, 0, 0, 0, -0.1, 0)
