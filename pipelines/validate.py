"""Checks an output directory against the record contract; prints a summary table.

    python -m pipelines.validate OUTPUT_DIR [--max_violations N]

Every record is checked against DESIGN.md section 3 (`schemas.media_sequence`): the exact key set
for the modalities the description lists, value types, one value where one is expected, stream
lengths (flow T - 1), timestamps increasing and equal across streams, region lists consistent with
the person counts, keypoints and boxes in [0, 1], the first image of each stream decodable at the
declared size; and the counts per split against the description. Exits 1 on any violation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import numpy as np

from pipelines import output
from schemas import media_sequence as ms

_KIND = {"bytes_list": "bytes", "int64_list": "int64", "float_list": "float"}
_CONTEXT_KINDS = {
    ms.EXAMPLE_ID_KEY: "bytes",
    ms.DATASET_NAME_KEY: "bytes",
    ms.CLIP_DATA_PATH_KEY: "bytes",
    ms.CLIP_MEDIA_ID_KEY: "bytes",
    ms.CLIP_START_TIMESTAMP_KEY: "int64",
    ms.CLIP_END_TIMESTAMP_KEY: "int64",
    ms.CLIP_LABEL_INDEX_KEY: "int64",
    ms.CLIP_LABEL_STRING_KEY: "bytes",
    ms.CLIP_LABEL_TEXT_KEY: "bytes",
    ms.POSE_PARTS_KEY: "bytes",
    ms.IMAGE_FORMAT: "bytes",
    ms.IMAGE_CHANNELS: "int64",
    ms.IMAGE_HEIGHT: "int64",
    ms.IMAGE_WIDTH: "int64",
    ms.IMAGE_FRAME_RATE: "float",
    ms.IMAGE_SATURATION: "float",
}


@dataclasses.dataclass
class Stats:
    clips: int = 0
    frames: int = 0
    persons: int = 0
    seconds: float = 0.0
    bytes: int = 0


def _values(feature):
    kind = feature.WhichOneof("kind")
    if kind is None:
        return None, []
    return _KIND[kind], list(getattr(feature, kind).value)


def _context_kind(key: str) -> str:
    if key in _CONTEXT_KINDS:
        return _CONTEXT_KINDS[key]
    return _CONTEXT_KINDS[key.split("/", 1)[1]]  # PREFIX/image/...


def check_record(data: bytes, modalities, num_classes: int | None) -> tuple[list[str], dict]:
    """Violations of one serialized record, and its facts (id, frames, persons, seconds)."""
    import tensorflow as tf

    errors: list[str] = []
    try:
        ex = tf.train.SequenceExample.FromString(data)
    except Exception as e:  # noqa: BLE001 - a corrupt record is a violation, not a crash
        return [f"not a SequenceExample: {e}"], {}
    ctx = ex.context.feature
    lists = ex.feature_lists.feature_list
    want_ctx, want_seq = ms.context_keys(modalities), ms.sequence_keys(modalities)
    if set(ctx) != want_ctx:
        errors.append(
            f"context keys: missing {sorted(want_ctx - set(ctx))}, "
            f"extra {sorted(set(ctx) - want_ctx)}"
        )
    if set(lists) != want_seq:
        errors.append(
            f"sequence keys: missing {sorted(want_seq - set(lists))}, "
            f"extra {sorted(set(lists) - want_seq)}"
        )
    c = {}
    for key in want_ctx & set(ctx):
        kind, vals = _values(ctx[key])
        want = _context_kind(key)
        n = ms.NUM_JOINTS if key == ms.POSE_PARTS_KEY else 1
        if kind != want or len(vals) != n:
            errors.append(f"{key}: expected {n} {want} value(s), got {len(vals)} {kind}")
            continue
        c[key] = vals if n > 1 else vals[0]
    ex_id = c.get(ms.EXAMPLE_ID_KEY, b"?").decode("utf-8", "replace")
    facts = {"id": ex_id, "frames": 0, "persons": 0, "seconds": 0.0}
    if errors:
        return errors, facts
    start, end = c[ms.CLIP_START_TIMESTAMP_KEY], c[ms.CLIP_END_TIMESTAMP_KEY]
    if end <= start:
        errors.append(f"clip window [{start}, {end}) is empty")
    label = c[ms.CLIP_LABEL_INDEX_KEY]
    if label < 0 or (num_classes is not None and label >= num_classes):
        errors.append(f"clip/label/index={label} outside [0, {num_classes})")
    if c[ms.CLIP_LABEL_STRING_KEY] != c[ms.CLIP_LABEL_TEXT_KEY]:
        errors.append("clip/label/string != clip/label/text")
    if ms.POSE_PARTS_KEY in c and tuple(p.decode() for p in c[ms.POSE_PARTS_KEY]) != (
        ms.COCO17_JOINT_NAMES
    ):
        errors.append("POSE/region/parts is not the COCO-17 joint list")

    def steps(key, kind):
        got = []
        for i, f in enumerate(lists[key].feature):
            k, vals = _values(f)
            if vals and k != kind:
                errors.append(f"{key}[{i}]: expected {kind}, got {k}")
                return []
            got.append(vals)
        return got

    timestamps = flow_ts = None
    for m in modalities:
        p = ms.MODALITY_PREFIX[m]
        enc = steps(ms.prefixed(p, ms.IMAGE_ENCODED), "bytes")
        ts = [
            v[0] if len(v) == 1 else None
            for v in steps(ms.prefixed(p, ms.IMAGE_TIMESTAMP), "int64")
        ]
        if any(len(v) != 1 for v in enc) or None in ts or len(enc) != len(ts):
            errors.append(f"{m}: expected one image and one timestamp per step")
            continue
        if any(b <= a for a, b in zip(ts, ts[1:])):
            errors.append(f"{m}: timestamps not strictly increasing")
        if m == ms.MODALITY_FLOW:
            flow_ts = ts
        else:
            if timestamps is not None and ts != timestamps:
                errors.append(f"{m}: timestamps differ from another image stream's")
            timestamps = ts
        if ts and not (start <= ts[0] and ts[-1] < end):
            errors.append(f"{m}: timestamps outside the clip window [{start}, {end})")
        _check_image(errors, m, enc[0][0] if enc else None, c, p)
    if timestamps is not None and flow_ts is not None and flow_ts != timestamps[:-1]:
        errors.append(
            f"flow: expected T-1={len(timestamps) - 1} steps stamped as frames 0..T-2, "
            f"got {len(flow_ts)}"
        )
    if timestamps is not None:
        frames = len(timestamps)
    else:  # flow only: T = flow steps + 1
        frames = len(flow_ts) + 1 if flow_ts is not None else 0
    if frames == 0:
        errors.append("no frames")
    if ms.MODALITY_POSE in modalities and timestamps is not None:
        facts["persons"] = _check_regions(errors, steps, timestamps)
    facts["frames"] = frames
    facts["seconds"] = (end - start) / 1e6
    return errors, facts


def _check_image(errors, modality, data, c, prefix) -> None:
    if data is None:
        return
    from pipelines.clip import decode_jpeg

    try:
        img = decode_jpeg(data)
    except ValueError:
        errors.append(f"{modality}: the first image is not a decodable JPEG")
        return
    h, w = c[ms.prefixed(prefix, ms.IMAGE_HEIGHT)], c[ms.prefixed(prefix, ms.IMAGE_WIDTH)]
    if img.shape[:2] != (h, w):
        errors.append(f"{modality}: image is {img.shape[1]}x{img.shape[0]}, context says {w}x{h}")


def _check_regions(errors, steps, timestamps) -> int:
    n = steps(ms.REGION_NUM_REGIONS_KEY, "int64")
    if len(n) != len(timestamps) or any(len(v) != 1 for v in n):
        errors.append("region/num_regions: expected one count per frame")
        return 0
    persons = [v[0] for v in n]
    if steps(ms.REGION_TIMESTAMP_KEY, "int64") != [[t] for t in timestamps]:
        errors.append("region/timestamp differs from image/timestamp")
    if steps(ms.POSE_NUM_REGIONS_KEY, "int64") != [[ms.NUM_JOINTS * p] for p in persons]:
        errors.append("POSE/region/num_regions != 17 * region/num_regions")
    per_person = {
        ms.REGION_BBOX_YMIN_KEY: 1,
        ms.REGION_BBOX_XMIN_KEY: 1,
        ms.REGION_BBOX_YMAX_KEY: 1,
        ms.REGION_BBOX_XMAX_KEY: 1,
        ms.REGION_CONFIDENCE_KEY: 1,
        ms.REGION_TRACK_INDEX_KEY: 1,
        ms.POSE_POINT_X_KEY: ms.NUM_JOINTS,
        ms.POSE_POINT_Y_KEY: ms.NUM_JOINTS,
        ms.POSE_CONFIDENCE_KEY: ms.NUM_JOINTS,
    }
    for key, k in per_person.items():
        kind = "int64" if key == ms.REGION_TRACK_INDEX_KEY else "float"
        vals = steps(key, kind)
        if [len(v) for v in vals] != [k * p for p in persons]:
            errors.append(f"{key}: lengths do not match {k} x persons per frame")
            continue
        flat = np.asarray([x for v in vals for x in v], np.float64)
        if (
            kind == "float"
            and flat.size
            and (not np.isfinite(flat).all() or flat.min() < 0 or flat.max() > 1)
        ):
            errors.append(f"{key}: values outside [0, 1]")
        if kind == "int64" and flat.size and flat.min() < 0:
            errors.append(f"{key}: negative track index")
    return sum(persons)


def validate(output_dir: str, max_violations: int = 20) -> tuple[list[str], str]:
    """All violations in an output directory (at most `max_violations` listed) and a summary."""
    violations: list[str] = []
    info_path = output.join(output_dir, output.DATASET_INFO)
    try:
        info = output.read_json(info_path)
    except Exception as e:  # noqa: BLE001
        return [f"{info_path}: cannot read the description: {e}"], ""
    try:
        ms.check_schema_version(info.get("schema_version"))
    except ValueError as e:
        return [f"{info_path}: {e}"], ""
    modalities = tuple(info["modalities"])
    num_classes = info.get("num_classes")
    stats: dict[str, Stats] = {}
    seen: dict[str, str] = {}
    for split, desc in info["splits"].items():
        s = stats.setdefault(split, Stats())
        for shard in desc["shards"]:
            path = output.join(output_dir, shard)
            try:
                for data in output.read_tfrecords(path):
                    errs, facts = check_record(data, modalities, num_classes)
                    where = f"{shard} record {s.clips} ({facts.get('id', '?')})"
                    violations += [f"{where}: {e}" for e in errs]
                    if facts.get("id") in seen:
                        violations.append(f"{where}: duplicate id, also in {seen[facts['id']]}")
                    seen[facts.get("id", "")] = shard
                    s.clips += 1
                    s.frames += facts.get("frames", 0)
                    s.persons += facts.get("persons", 0)
                    s.seconds += facts.get("seconds", 0.0)
                    s.bytes += len(data)
            except (OSError, ValueError) as e:
                violations.append(f"{shard}: {e}")
        for field in ("clips", "frames"):
            if getattr(s, field) != desc[field]:
                violations.append(
                    f"{split}: {getattr(s, field)} {field} in the shards, "
                    f"the description says {desc[field]}"
                )
    failures = _failures(output_dir)
    if len(failures) != info["inputs"]["failed"]:
        violations.append(
            f"failures: {len(failures)} rows, the description says {info['inputs']['failed']}"
        )
    return violations, _table(stats, failures, len(violations))


def _failures(output_dir: str) -> list[dict]:
    rows = []
    for path in output.list_files(output.join(output_dir, output.FAILURES_DIR, "*.jsonl")):
        with output.FileSystems.open(path) as f:
            rows += [json.loads(line) for line in f.read().decode().splitlines() if line.strip()]
    return rows


def _table(stats: dict[str, Stats], failures: list[dict], num_violations: int) -> str:
    lines = [
        f"{'split':<12}{'clips':>7}{'frames':>9}{'persons/frame':>15}{'KB/clip-second':>16}",
    ]
    for split, s in stats.items():
        ppf = s.persons / s.frames if s.frames else 0.0
        kbps = s.bytes / 1e3 / s.seconds if s.seconds else 0.0
        lines.append(f"{split:<12}{s.clips:>7}{s.frames:>9}{ppf:>15.2f}{kbps:>16.1f}")
    by_reason: dict[str, int] = {}
    for row in failures:
        reason = f"{row.get('stage')}: {str(row.get('error', '')).split(':', 1)[0]}"
        by_reason[reason] = by_reason.get(reason, 0) + 1
    lines.append(f"failures: {len(failures)}")
    lines += [f"  {n:>5}  {reason}" for reason, n in sorted(by_reason.items())]
    lines.append(f"violations: {num_violations}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="perfnet-validate", description=__doc__.split("\n")[0])
    parser.add_argument("output_dir")
    parser.add_argument("--max_violations", type=int, default=20, help="violations to print")
    args = parser.parse_args(argv)
    violations, table = validate(args.output_dir.rstrip("/"))
    if table:
        print(table)
    for v in violations[: args.max_violations]:
        print(f"VIOLATION {v}")
    if len(violations) > args.max_violations:
        print(f"... and {len(violations) - args.max_violations} more")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
