"""A row's part keeps what the row cost, and a part written without it still reads."""

import json

import pytest

from pipelines.manifests import ClipSpec
from pipelines.storage import output, parts
from schemas.dataset_info import COST_STAGES, RowCost

SPEC = ClipSpec("v", "/videos/v.mp4", "v.mp4", "run", 0, 0, None, "train", "m.csv:2")
# Made-up figures, stages in COST_STAGES order.
ROW = RowCost(dict(zip(COST_STAGES, (0.25, 1.5, 0.125, 0.5, 8.0, 0.5, 0.000001))), 2.04)


def test_the_meta_keeps_the_rows_cost_and_reads_it_back(tmp_path):
    out = str(tmp_path)
    written = []

    def records():  # no clip: the meta's cost does not depend on them
        written.append("all")
        yield from ()

    def cost():
        assert written == ["all"], "asked before every record was written"
        return ROW

    meta = parts.write_done(out, "k", SPEC, records(), cost=cost)
    on_disk = json.loads(open(f"{out}/.parts/k{parts.META_SUFFIX}").read())
    assert on_disk == meta == {
        "key": "k",
        "split": "train",
        "clips": [],
        parts.META_COST: {
            "clip_seconds": 2.04,
            "core_seconds": {
                "decode": 0.25, "pose": 1.5, "tracking": 0.125, "render": 0.5, "flow": 8.0,
                "jpeg": 0.5, "other": 0.000001,
            },
        },
    }  # fmt: skip
    assert parts.read_cost(parts.read_meta(out, "k")) == ROW


def test_a_part_written_without_its_cost_reads_as_unknown(tmp_path):
    out = str(tmp_path)
    meta = parts.write_done(out, "old", SPEC, [])  # as an older version wrote it
    assert parts.META_COST not in meta
    assert parts.read_cost(parts.read_meta(out, "old")) is None
    assert parts.read_meta(out, "old")["clips"] == []


def test_a_malformed_cost_names_the_part(tmp_path):
    path = output.join(str(tmp_path), ".parts", "bad" + parts.META_SUFFIX)
    output.write_text(path, json.dumps({"key": "bad", "clips": [], "cost": {"clip_seconds": 1}}))
    with pytest.raises(ValueError, match="^part 'bad': cost.core_seconds: missing"):
        parts.read_cost(parts.read_meta(str(tmp_path), "bad"))
