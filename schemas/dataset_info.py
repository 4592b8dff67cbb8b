"""The dataset description, `OUTPUT_DIR/dataset_info.json`, as a typed value.

One parser (`DatasetInfo.from_json`) for every reader, and one shape for the writer
(`DatasetInfo.to_json`, `to_text`): `from_json(d).to_json() == d` for every description the job
writes. The fields, all optional but `schema_version` (hand-made and older descriptions carry
fewer):

| field | type | meaning |
|---|---|---|
| schema_version | int | version of the record contract (`media_sequence.SCHEMA_VERSION`) |
| dataset_name | str | the shards' name prefix (`layout.shard_name`) |
| labels | [str] | class names, class index order |
| num_classes | int >= 0 | len(labels) |
| modalities | [str] | what the records carry: rgb, pose, flow, keypoints (keypoints, no frames) |
| frame_rate | number > 0 | frames per second of every stored stream |
| jpeg_quality | int in [1, 100] | JPEG quality of the RGB and pose-rendered frames |
| flow | FlowInfo | how the flow stream was made |
| pose_model | object | the pose model: kind, name, path, sha256, version |
| render_style | object | the pose rendering's settings |
| config | object | the job's settings as given |
| software | object | package name -> version |
| inputs | InputCounts | manifest rows: in all, written, failed (and failed by stage) |
| failures | str | glob of the failure files, relative (`layout.FAILURES_PATTERN`) |
| splits | {split: SplitInfo} | per split: counts and the shards, relative paths |
| pose | {split: PoseCoverage} | with keypoints only: frames with a person, persons per frame |
| cost | CostInfo | CPU time of the rows written per stage: core-seconds, and per clip-second |

Fields this module does not know are kept (`extra`) and written back unchanged. Free-form
objects (config, pose_model, ...) are plain dicts: treat them as read-only.

Pure: no I/O and no project imports beyond `schemas`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

from schemas import layout
from schemas import media_sequence as ms


# ---------------------------------------------------------------------------------------------
# Field parsers: (JSON value, where) -> the typed value; ValueError naming `where` otherwise.
# ---------------------------------------------------------------------------------------------
class _Bad(ValueError):
    """A field's value is not what the description allows; `where` is the field's path."""

    def __init__(self, where: str, expected: str, value):
        super().__init__(f"{where}: expected {expected}, got {value!r}")


def _int(lo: int = 0, hi: int | None = None) -> Callable[[Any, str], int]:
    what = f"an integer in [{lo}, {hi}]" if hi is not None else f"an integer >= {lo}"

    def parse(value, where):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(where, what, value)
        if value < lo or (hi is not None and value > hi):
            raise _Bad(where, what, value)
        return value

    return parse


def _number(lo: float = 0.0, hi: float | None = None, open_lo: bool = False):
    low = f"> {lo:g}" if open_lo else f">= {lo:g}"
    what = f"a number in [{lo:g}, {hi:g}]" if hi is not None else f"a number {low}"

    def parse(value, where):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Bad(where, what, value)
        if not math.isfinite(value) or value < lo or (open_lo and value == lo):
            raise _Bad(where, what, value)
        if hi is not None and value > hi:
            raise _Bad(where, what, value)
        return value  # as written: an int stays an int, so that to_json gives it back

    return parse


def _str(value, where) -> str:
    if not isinstance(value, str):
        raise _Bad(where, "a string", value)
    return value


def _strings(value, where) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Bad(where, "a list of strings", value)
    return tuple(value)


def _object(value, where) -> dict:
    if not isinstance(value, dict):
        raise _Bad(where, "an object", value)
    return copy.deepcopy(value)


def _counts(value, where) -> dict[str, int]:
    value = _object(value, where)
    for k, v in value.items():
        _int()(v, f"{where}.{k}")
    return value


def _modalities(value, where) -> tuple[str, ...]:
    names = _strings(value, where)
    try:
        return ms.check_written_modalities(names)
    except ValueError:
        raise _Bad(
            where,
            f"a non-empty list of distinct names of {list(ms.ALL_MODALITIES)}, not both "
            f"{ms.MODALITY_POSE!r} and {ms.MODALITY_KEYPOINTS!r}",
            value,
        ) from None


def _per_stage(cls) -> Callable[[Any, str], dict]:
    def parse(value, where):
        if not isinstance(value, dict) or not all(isinstance(k, str) and k for k in value):
            raise _Bad(where, "an object of stage name -> cost", value)
        return {stage: cls._parse(desc, f"{where}.{stage}") for stage, desc in value.items()}

    return parse


def _nested(cls) -> Callable[[Any, str], Any]:
    return lambda value, where: cls._parse(value, where)


def _per_split(cls) -> Callable[[Any, str], dict]:
    def parse(value, where):
        if not isinstance(value, dict):
            raise _Bad(where, "an object of split name -> description", value)
        out = {}
        for split, desc in value.items():
            try:
                layout.split_dir(split)
            except ValueError:
                raise _Bad(where, "split names that are folder names", split) from None
            out[split] = cls._parse(desc, f"{where}.{split}")
        return out

    return parse


def _to_json(value):
    if isinstance(value, _Record):
        return value.to_json()
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    return copy.deepcopy(value)


class _Record:
    """A JSON object with known fields (`_FIELDS`: name -> parser; `_REQUIRED`) and the rest
    kept in `extra`. Subclasses are frozen dataclasses whose fields are named as in the JSON."""

    _FIELDS: ClassVar[dict[str, Callable[[Any, str], Any]]] = {}
    _REQUIRED: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def _parse(cls, data, where: str):
        if not isinstance(data, dict):
            if not where:
                raise ValueError(f"expected a JSON object, got {data!r}")
            raise _Bad(where, "a JSON object", data)
        prefix = f"{where}." if where else ""
        for name in cls._REQUIRED:
            if name not in data:
                raise ValueError(f"{prefix}{name}: missing")
        fields = {n: parse(data[n], prefix + n) for n, parse in cls._FIELDS.items() if n in data}
        extra = {k: copy.deepcopy(v) for k, v in data.items() if k not in cls._FIELDS}
        return cls(**fields, extra=extra)

    def to_json(self) -> dict:
        """The JSON object: the fields that are set (not None), then `extra`."""
        out = {n: _to_json(getattr(self, n)) for n in self._FIELDS if getattr(self, n) is not None}
        out.update(copy.deepcopy(dict(self.extra)))
        return out


# ---------------------------------------------------------------------------------------------
# The description.
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SplitInfo(_Record):
    """One split: its shards (paths relative to the output directory, `layout.shard_path`) and
    its counts: clips, frames (summed over clips), persons (summed over frames), seconds of clip
    (rounded to 3 places), bytes of the records (framing not counted), shards."""

    shards: tuple[str, ...] = ()
    clips: int | None = None
    frames: int | None = None
    persons: int | None = None
    duration_seconds: float | None = None
    bytes: int | None = None
    num_shards: int | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    _FIELDS = {
        "shards": _strings,
        "clips": _int(),
        "frames": _int(),
        "persons": _int(),
        "duration_seconds": _number(),
        "bytes": _int(),
        "num_shards": _int(),
    }
    _REQUIRED = ("shards",)


@dataclasses.dataclass(frozen=True)
class PoseCoverage(_Record):
    """One split's pose coverage: frames, frames with at least one person, persons summed over
    frames; the share of frames with a person in [0, 1] and persons per frame (4 places)."""

    frames: int | None = None
    frames_with_person: int | None = None
    persons: int | None = None
    share_of_frames_with_person: float | None = None
    persons_per_frame: float | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    _FIELDS = {
        "frames": _int(),
        "frames_with_person": _int(),
        "persons": _int(),
        "share_of_frames_with_person": _number(0.0, 1.0),
        "persons_per_frame": _number(),
    }

    @classmethod
    def of(cls, frames: int, frames_with_person: int, persons: int) -> PoseCoverage:
        """The coverage of `frames` frames (>= 0), `frames_with_person` of them with a person,
        `persons` persons over them; shares rounded to 4 places, 0.0 without frames."""
        for name, value in (
            ("frames", frames),
            ("frames_with_person", frames_with_person),
            ("persons", persons),
        ):
            _int()(value, name)
        return cls(
            frames=frames,
            frames_with_person=frames_with_person,
            persons=persons,
            share_of_frames_with_person=round(frames_with_person / frames, 4) if frames else 0.0,
            persons_per_frame=round(persons / frames, 4) if frames else 0.0,
        )


@dataclasses.dataclass(frozen=True)
class InputCounts(_Record):
    """The manifest's rows: in all, written (a part with clips), failed (a failure row each),
    and failed rows per stage (stage -> count)."""

    rows: int | None = None
    written: int | None = None
    failed: int | None = None
    failed_by_stage: dict[str, int] | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    _FIELDS = {
        "rows": _int(),
        "written": _int(),
        "failed": _int(),
        "failed_by_stage": _counts,
    }


@dataclasses.dataclass(frozen=True)
class FlowInfo(_Record):
    """How the flow stream was made: TV-L1 preset and its parameters, the quantization bound in
    pixels (> 0), the flow JPEGs' quality, and what it is computed from (`stored_rgb`)."""

    preset: str | None = None
    params: dict | None = None
    saturation: float | None = None
    jpeg_quality: int | None = None
    computed_from: str | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    _FIELDS = {
        "preset": _str,
        "params": _object,
        "saturation": _number(0.0, open_lo=True),
        "jpeg_quality": _int(1, 100),
        "computed_from": _str,
    }


# ---------------------------------------------------------------------------------------------
# Cost: the CPU time spent per stage, per row (`RowCost`) and over the rows written (`CostInfo`).
# ---------------------------------------------------------------------------------------------
# The stages a row's CPU time is charged to, in report order; every moment of a row's processing
# is charged to exactly one of them.
COST_DECODE = "decode"  # decoding, resampling to the frame rate, resizing
COST_POSE = "pose"  # the pose estimator: made once per row, then called on every frame
COST_TRACKING = "tracking"  # duplicate suppression, track ids, persons put in track order
COST_RENDER = "render"  # the skeletons drawn
COST_FLOW = "flow"  # TV-L1 alone
COST_JPEG = "jpeg"  # every JPEG encode; the stored frame decoded (to gray) for flow
COST_OTHER = "other"  # the rest: fetching, flow quantization, building the records
COST_STAGES = (
    COST_DECODE, COST_POSE, COST_TRACKING, COST_RENDER, COST_FLOW, COST_JPEG, COST_OTHER
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class RowCost:
    """What one manifest row cost: CPU time per stage and the seconds of clip it made.

    Kept in the row's part (`<key>.meta.json`, field `cost`, `to_json`), so that a resumed run
    keeps the figures of the rows done earlier; summed over the rows by `CostInfo.of`.

    Attributes:
      core_seconds: stage -> CPU time in seconds, summed over the process's threads
        (core-seconds), finite and >= 0; exactly the stages of `COST_STAGES`.
      clip_seconds: seconds of clip made, frames / frame rate summed over the row's clips, >= 0.
    """

    core_seconds: Mapping[str, float]
    clip_seconds: float

    def __post_init__(self):
        _row_cost_fields(dict(self.core_seconds), self.clip_seconds, "")

    @property
    def total(self) -> float:
        """The row's CPU time over all stages, core-seconds."""
        return sum(self.core_seconds.values())

    def to_json(self) -> dict:
        """`{"clip_seconds": s, "core_seconds": {stage: s}}`, seconds rounded to 6 places."""
        return {
            "clip_seconds": round(self.clip_seconds, 6),
            "core_seconds": {s: round(self.core_seconds[s], 6) for s in COST_STAGES},
        }

    @classmethod
    def from_json(cls, data, where: str = "cost") -> RowCost:
        """Parses `to_json`'s object; ValueError naming `where` and the bad field otherwise."""
        if not isinstance(data, dict):
            raise _Bad(where, "a JSON object", data)
        for name in ("clip_seconds", "core_seconds"):
            if name not in data:
                raise ValueError(f"{where}.{name}: missing")
        seconds = _object(data["core_seconds"], f"{where}.core_seconds")
        return cls(*_row_cost_fields(seconds, data["clip_seconds"], where))


def _row_cost_fields(core_seconds: dict, clip_seconds, where: str) -> tuple[dict, float]:
    """(core_seconds, clip_seconds) checked: exactly the stages of `COST_STAGES`, every value a
    finite number >= 0; ValueError naming the field (under `where`) and its value otherwise."""
    prefix = f"{where}." if where else ""
    if set(core_seconds) != set(COST_STAGES):
        raise _Bad(f"{prefix}core_seconds", f"the stages {list(COST_STAGES)}", core_seconds)
    for stage in COST_STAGES:
        _number()(core_seconds[stage], f"{prefix}core_seconds.{stage}")
    _number()(clip_seconds, f"{prefix}clip_seconds")
    return {s: core_seconds[s] for s in COST_STAGES}, clip_seconds


@dataclasses.dataclass(frozen=True)
class StageCost(_Record):
    """One stage's CPU time over the rows counted: core-seconds (3 places) and core-seconds per
    clip-second (4 places), both >= 0."""

    core_seconds: float | None = None
    core_seconds_per_clip_second: float | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    _FIELDS = {
        "core_seconds": _number(),
        "core_seconds_per_clip_second": _number(),
    }


@dataclasses.dataclass(frozen=True)
class CostInfo(_Record):
    """The CPU time spent on the rows written (process CPU time, summed over threads: core-
    seconds), per stage (`COST_STAGES`) and in all, and per clip-second (frames / frame rate).

    `rows` rows are counted, holding `clip_seconds` seconds of clip (3 places); the
    `rows_without_cost` rows written whose part holds no figures (written by an older version)
    are not: their cost is unknown, not zero. `core_seconds` is the sum of the stages' (3
    places); the figures per clip-second are rounded to 4 places. Without a row counted only
    the two row counts are given; without a clip-second counted, no figure per clip-second.
    """

    rows: int | None = None
    rows_without_cost: int | None = None
    clip_seconds: float | None = None
    core_seconds: float | None = None
    core_seconds_per_clip_second: float | None = None
    stages: dict[str, StageCost] | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    _FIELDS = {
        "rows": _int(),
        "rows_without_cost": _int(),
        "clip_seconds": _number(),
        "core_seconds": _number(),
        "core_seconds_per_clip_second": _number(),
        "stages": _per_stage(StageCost),
    }

    @classmethod
    def of(cls, costs: Iterable[RowCost | None]) -> CostInfo:
        """The cost of the rows written: one `RowCost` per row, or None for a row whose cost is
        unknown (counted in `rows_without_cost`)."""
        known = []
        unknown = 0
        for cost in costs:
            if cost is None:
                unknown += 1
            else:
                known.append(cost)
        if not known:
            return cls(rows=0, rows_without_cost=unknown)
        clip_s = sum(c.clip_seconds for c in known)
        seconds = {s: sum(c.core_seconds[s] for c in known) for s in COST_STAGES}
        total = sum(seconds.values())

        def per_clip_second(value: float) -> float | None:
            return round(value / clip_s, 4) if clip_s > 0 else None

        stages = {
            s: StageCost(core_seconds=round(v, 3), core_seconds_per_clip_second=per_clip_second(v))
            for s, v in seconds.items()
        }
        return cls(
            rows=len(known),
            rows_without_cost=unknown,
            clip_seconds=round(clip_s, 3),
            # The sum of the stages as written, so that they add up to it in the file.
            core_seconds=round(sum(st.core_seconds for st in stages.values()), 3),
            core_seconds_per_clip_second=per_clip_second(total),
            stages=stages,
        )


@dataclasses.dataclass(frozen=True)
class DatasetInfo(_Record):
    """The dataset description (see the module docstring); None: the field is absent."""

    schema_version: int = ms.SCHEMA_VERSION
    dataset_name: str | None = None
    labels: tuple[str, ...] | None = None
    num_classes: int | None = None
    modalities: tuple[str, ...] | None = None
    frame_rate: float | None = None
    jpeg_quality: int | None = None
    flow: FlowInfo | None = None
    pose_model: dict | None = None
    render_style: dict | None = None
    config: dict | None = None
    software: dict | None = None
    inputs: InputCounts | None = None
    failures: str | None = None
    splits: dict[str, SplitInfo] | None = None
    pose: dict[str, PoseCoverage] | None = None
    cost: CostInfo | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    _FIELDS = {
        "schema_version": _int(),
        "dataset_name": _str,
        "labels": _strings,
        "num_classes": _int(),
        "modalities": _modalities,
        "frame_rate": _number(0.0, open_lo=True),
        "jpeg_quality": _int(1, 100),
        "flow": _nested(FlowInfo),
        "pose_model": _object,
        "render_style": _object,
        "config": _object,
        "software": _object,
        "inputs": _nested(InputCounts),
        "failures": _str,
        "splits": _per_split(SplitInfo),
        "pose": _per_split(PoseCoverage),
        "cost": _nested(CostInfo),
    }
    _REQUIRED = ("schema_version",)

    @classmethod
    def from_json(cls, data: Mapping, source: str = layout.DATASET_INFO) -> DatasetInfo:
        """Parses a description (the object `json.load` gives) and checks its schema version.

        Args:
          data: the JSON object.
          source: the file it was read from, for the messages.

        Raises:
          ValueError: `{source}: {field}: ...` naming the first bad field, or the schema
            version this code cannot read (`media_sequence.check_schema_version`).
        """
        try:
            if isinstance(data, dict) and "schema_version" in data:
                # First: a newer writer's description may differ in any other field.
                ms.check_schema_version(data["schema_version"])
            info = cls._parse(data, "")
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None
        return info

    @classmethod
    def from_text(cls, text: str, source: str = layout.DATASET_INFO) -> DatasetInfo:
        """Parses the file's text; ValueError naming `source` on bad JSON or a bad field."""
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ValueError(f"{source}: not JSON: {e}") from None
        return cls.from_json(data, source)

    def to_text(self) -> str:
        """The file's text as the job writes it: indented by 2, keys sorted."""
        return json.dumps(self.to_json(), indent=2, sort_keys=True)

    # Readers' views ---------------------------------------------------------------------
    @property
    def split_names(self) -> tuple[str, ...]:
        """The splits in the description's order; () without `splits`."""
        return tuple(self.splits or ())

    def shards(self, split: str | None = None) -> list[tuple[str, str]]:
        """(split, shard path relative to the output directory) of every shard, in the
        description's split order and shard order; only `split`'s when given.

        Raises:
          ValueError: `split` is not in the description, naming it and the splits there.
        """
        return [
            (name, shard)
            for name in self.select_splits(split)
            for shard in self.splits[name].shards
        ]

    def select_splits(self, split: str | None = None, where: str = "") -> list[str]:
        """All splits in order, or `[split]`; ValueError naming `split`, `where` (the output
        directory) and the splits there if it is not in the description."""
        known = list(self.split_names)
        if split is None:
            return known
        if split not in known:
            place = f" {where}" if where else " the description"
            raise ValueError(f"split={split!r}: not in{place} (splits there: {known})")
        return [split]
