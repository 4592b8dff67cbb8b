"""What the rows cost: summed from their parts into dataset_info.json, told in the summary."""

import json

from apache_beam.pvalue import TaggedOutput

from pipelines.job.info import write_info
from pipelines.job.progress import KINETICS_600_CLIP_SECONDS, cost_line, summary_table
from pipelines.job.transforms import DONE, CollectPartFn
from pipelines.manifests import ClipSpec
from pipelines.storage import parts
from schemas import media_sequence as ms
from schemas.dataset_info import COST_STAGES, CostInfo, RowCost


def _spec(media_id):
    return ClipSpec(media_id, f"/v/{media_id}.mp4", f"{media_id}.mp4", "run", 0, 0, None, "train",
                    "m.csv:2")  # fmt: skip


def _row(clip_seconds, *seconds):
    return RowCost(dict(zip(COST_STAGES, seconds, strict=True)), clip_seconds)


def test_the_description_sums_the_parts_costs_and_counts_an_old_part_as_unknown(tmp_path):
    out = str(tmp_path)
    # Made-up figures (binary fractions: the sums are exact); stages in COST_STAGES order.
    costs = {
        "a": _row(2.0, 0.25, 1.5, 0.125, 0.5, 8.0, 0.5, 0.125),
        "b": _row(2.0, 0.25, 0.5, 0.125, 0.5, 4.0, 0.5, 0.125),
        "old": None,  # a part of an older version: no figures
    }
    done = []
    for media_id, cost in costs.items():
        spec = _spec(media_id)
        parts.write_done(
            out, parts.input_key(spec), spec, [], None if cost is None else (lambda c=cost: c)
        )
        outputs = list(CollectPartFn(out, {"train": 1}).process(spec, 3))
        done += [o.value for o in outputs if isinstance(o, TaggedOutput) and o.tag == DONE]
    assert [d[2] for d in done] == list(costs.values())
    static = {"modalities": [ms.MODALITY_RGB], "inputs": {"rows": 3}, "schema_version": 1}
    (info,) = write_info(None, [], done, [], {"run": 0}, static, out, {}, "x")
    per_stage = {
        "decode": (0.5, 0.125), "pose": (2.0, 0.5), "tracking": (0.25, 0.0625),
        "render": (1.0, 0.25), "flow": (12.0, 3.0), "jpeg": (1.0, 0.25),
        "other": (0.25, 0.0625),
    }  # fmt: skip
    expected = {
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
    assert info["cost"] == expected
    assert json.loads(open(f"{out}/dataset_info.json").read())["cost"] == expected
    assert info["inputs"]["written"] == 3


def test_the_summary_gives_the_cost_per_clip_second_and_at_kinetics_size():
    assert KINETICS_600_CLIP_SECONDS == 5_000_000.0
    one = CostInfo.of([_row(1.0, 0.2, 0.6, 0.01, 0.1, 4.8, 0.2, 0.02)])  # 5.93 core-s
    assert cost_line(one) == (
        "cost: 5.9 core-s per clip-second (decode 0.2, pose 0.6, tracking 0.0, render 0.1, "
        "flow 4.8, jpeg 0.2, other 0.0) over 1 row, 1.0 clip-s; "
        "Kinetics-600 at this rate: ~8,200 core-hours"  # 5.93 * 5e6 / 3600 = 8236.1
    )
    some = CostInfo.of(
        [_row(0.5, 0, 0.125, 0, 0, 0, 0, 0), None, _row(0.75, 0, 0.125, 0, 0, 0, 0, 0), None]
    )  # 0.25 core-s over 1.25 clip-s: 0.2 per clip-second
    assert cost_line(some) == (
        "cost: 0.2 core-s per clip-second (decode 0.0, pose 0.2, tracking 0.0, render 0.0, "
        "flow 0.0, jpeg 0.0, other 0.0) over 2 rows, 1.2 clip-s (2 rows of an older version "
        "without figures not counted); Kinetics-600 at this rate: ~280 core-hours"
    )
    tiny = CostInfo.of([_row(3600.0, 0, 0, 0, 0, 0, 0, 0.36)])  # 0.0001 per clip-second
    assert cost_line(tiny).endswith("at this rate: ~0.14 core-hours")
    assert cost_line(CostInfo.of([None])) == (
        "cost: unknown (1 row of an older version without figures)"
    )
    assert cost_line(CostInfo.of([])) == "cost: unknown (no row written)"
    info = {
        "schema_version": 1,
        "splits": {},
        "inputs": {"rows": 1, "written": 1, "failed": 0, "failed_by_stage": {}},
        "cost": one.to_json(),
    }
    assert summary_table(info, "out").splitlines()[-1] == cost_line(one)
    del info["cost"]  # a description without the cost: no line about it
    assert "cost" not in summary_table(info, "out")
