"""Checks an output directory against the record contract; prints a summary table.

    python -m pipelines.tools.validate OUTPUT_DIR [--max_violations N] [--check_flow N]

Every record is checked against the record contract (`schemas.media_sequence`, whose key table
gives the expected keys, their types, counts and ranges): the exact key set for the modalities
the description lists, value types, one value where one is expected, stream
lengths (flow T - 1), timestamps increasing and equal across streams, region lists consistent with
the person counts, keypoints and boxes in [0, 1], the first image of each stream decodable at the
declared size; and the counts per split against the description (clips, frames, and with the
pose modality frames with a person and persons). The summary table gives per split the clips,
frames, the share of frames with at least one person and the persons per frame (pose modality;
`-` without it), and KB per clip-second. With --check_flow N, the flow of the first N records is
recomputed from their stored RGB frames (`check_flow`). Exits 1 on any violation.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import numpy as np

from pipelines.storage import output
from schemas import media_sequence as ms
from schemas.dataset_info import DatasetInfo, FlowInfo

# A `tf.train.Feature`'s oneof field -> the key table's type name (bytes, int64, float).
_KIND = {field: dtype for dtype, field in ms.FEATURE_FIELD.items()}


@dataclasses.dataclass
class Stats:
    """One split's totals over its records: persons and frames_with_person (frames with at least
    one person) count only with the pose modality."""

    clips: int = 0
    frames: int = 0
    persons: int = 0
    frames_with_person: int = 0
    seconds: float = 0.0
    bytes: int = 0


def _values(feature):
    kind = feature.WhichOneof("kind")
    if kind is None:
        return None, []
    return _KIND[kind], list(getattr(feature, kind).value)


def check_record(data: bytes, modalities, num_classes: int | None) -> tuple[list[str], dict]:
    """Violations of one serialized record, and its facts (id, frames, persons summed over
    frames, frames_with_person, seconds)."""
    import tensorflow as tf

    errors: list[str] = []
    try:
        ex = tf.train.SequenceExample.FromString(data)
    except Exception as e:  # noqa: BLE001 - a corrupt record is a violation, not a crash
        return [f"not a SequenceExample: {e}"], {}
    ctx = ex.context.feature
    lists = ex.feature_lists.feature_list
    keys = ms.record_keys(modalities)  # name -> type, count and range, from the key table
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
        want, n = keys[key].dtype, keys[key].num_values
        if kind != want or len(vals) != n:
            errors.append(f"{key}: expected {n} {want} value(s), got {len(vals)} {kind}")
            continue
        c[key] = vals if n > 1 else vals[0]
    ex_id = c.get(ms.EXAMPLE_ID_KEY, b"?").decode("utf-8", "replace")
    facts = {"id": ex_id, "frames": 0, "persons": 0, "frames_with_person": 0, "seconds": 0.0}
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

    def steps(key):
        kind = keys[key].dtype
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
        if m not in ms.IMAGE_MODALITIES:
            continue
        p = ms.MODALITY_PREFIX[m]
        enc = steps(ms.prefixed(p, ms.IMAGE_ENCODED))
        ts = [v[0] if len(v) == 1 else None for v in steps(ms.prefixed(p, ms.IMAGE_TIMESTAMP))]
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
    with_keypoints = ms.carries_keypoints(modalities)
    if timestamps is None and with_keypoints:  # keypoints without an RGB or pose stream
        region_ts = steps(ms.REGION_TIMESTAMP_KEY)
        if any(len(v) != 1 for v in region_ts):
            errors.append("region/timestamp: expected one timestamp per step")
        else:
            timestamps = [v[0] for v in region_ts]
            if any(b <= a for a, b in zip(timestamps, timestamps[1:])):
                errors.append("region/timestamp: not strictly increasing")
            if timestamps and not (start <= timestamps[0] and timestamps[-1] < end):
                errors.append(f"region/timestamp: outside the clip window [{start}, {end})")
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
    if with_keypoints and timestamps is not None:
        counts = _check_regions(errors, steps, keys, timestamps)
        facts["persons"] = sum(counts)
        facts["frames_with_person"] = sum(1 for n in counts if n > 0)
    facts["frames"] = frames
    facts["seconds"] = (end - start) / 1e6
    return errors, facts


def _check_image(errors, modality, data, c, prefix) -> None:
    if data is None:
        return
    from pipelines.stages.codec import decode_jpeg

    try:
        img = decode_jpeg(data)
    except ValueError:
        errors.append(f"{modality}: the first image is not a decodable JPEG")
        return
    h, w = c[ms.prefixed(prefix, ms.IMAGE_HEIGHT)], c[ms.prefixed(prefix, ms.IMAGE_WIDTH)]
    if img.shape[:2] != (h, w):
        errors.append(f"{modality}: image is {img.shape[1]}x{img.shape[0]}, context says {w}x{h}")


def _check_regions(errors, steps, keys, timestamps) -> list[int]:
    """Appends the region lists' violations to `errors`; returns the persons per frame ([] when
    `region/num_regions` is not one count per frame). The per-person lists, their lengths per
    person and their ranges are the key table's (`keys`: `ms.record_keys`)."""
    n = steps(ms.REGION_NUM_REGIONS_KEY)
    if len(n) != len(timestamps) or any(len(v) != 1 for v in n):
        errors.append("region/num_regions: expected one count per frame")
        return []
    persons = [v[0] for v in n]
    if steps(ms.REGION_TIMESTAMP_KEY) != [[t] for t in timestamps]:
        errors.append("region/timestamp differs from image/timestamp")
    if steps(ms.POSE_NUM_REGIONS_KEY) != [[ms.NUM_JOINTS * p] for p in persons]:
        errors.append(f"POSE/region/num_regions != {ms.NUM_JOINTS} * region/num_regions")
    for name, key in keys.items():
        if not key.per_person:
            continue
        k = key.values_per_person
        vals = steps(name)
        if [len(v) for v in vals] != [k * p for p in persons]:
            errors.append(f"{name}: lengths do not match {k} x persons per frame")
            continue
        flat = np.asarray([x for v in vals for x in v], np.float64)
        if flat.size and key.bounds is not None:
            problem = _out_of_bounds(key, flat)
            if problem:
                errors.append(f"{name}: {problem}")
    return persons


def _out_of_bounds(key: ms.Key, flat: np.ndarray) -> str | None:
    """What is wrong with a non-empty float64 [N] of `key`'s values against its bounds, or None.

    Floats must be finite and in [low, high]; integers (the track index) at least `low`.
    """
    lo, hi = key.bounds
    below = lo is not None and flat.min() < lo
    above = hi is not None and flat.max() > hi
    if key.dtype == ms.FLOAT and (not np.isfinite(flat).all() or below or above):
        low, high = ("-inf" if lo is None else f"{lo:g}"), ("inf" if hi is None else f"{hi:g}")
        return f"values outside [{low}, {high}]"
    if key.dtype == ms.INT64 and below:
        return "negative track index" if lo == 0 else f"values below {lo}"
    return None


def validate(output_dir: str, max_violations: int = 20) -> tuple[list[str], str]:
    """All violations in an output directory (at most `max_violations` listed) and a summary."""
    violations: list[str] = []
    info_path = output.dataset_info_path(output_dir)
    try:
        data = output.read_json(info_path)
    except Exception as e:  # noqa: BLE001
        return [f"{info_path}: cannot read the description: {e}"], ""
    try:
        info = DatasetInfo.from_json(data, info_path)
    except ValueError as e:
        return [str(e)], ""
    missing = _missing_fields(info)
    if missing:
        return [f"{info_path}: the description lacks {', '.join(missing)}"], ""
    modalities = info.modalities
    num_classes = info.num_classes
    stats: dict[str, Stats] = {}
    seen: dict[str, str] = {}
    for split in info.split_names:
        desc = info.splits[split]
        s = stats.setdefault(split, Stats())
        for shard in output.dataset_shards(output_dir, info, split):
            try:
                for data in output.read_tfrecords(shard.path):
                    errs, facts = check_record(data, modalities, num_classes)
                    where = f"{shard.name} record {s.clips} ({facts.get('id', '?')})"
                    violations += [f"{where}: {e}" for e in errs]
                    if facts.get("id") in seen:
                        violations.append(f"{where}: duplicate id, also in {seen[facts['id']]}")
                    seen[facts.get("id", "")] = shard.name
                    s.clips += 1
                    s.frames += facts.get("frames", 0)
                    s.persons += facts.get("persons", 0)
                    s.frames_with_person += facts.get("frames_with_person", 0)
                    s.seconds += facts.get("seconds", 0.0)
                    s.bytes += len(data)
            except (OSError, ValueError) as e:
                violations.append(f"{shard.name}: {e}")
        for field in ("clips", "frames"):
            if getattr(s, field) != getattr(desc, field):
                violations.append(
                    f"{split}: {getattr(s, field)} {field} in the shards, "
                    f"the description says {getattr(desc, field)}"
                )
        pose = (info.pose or {}).get(split)
        for field in ("frames_with_person", "persons"):
            want = getattr(pose, field) if pose is not None else None
            if want is not None and getattr(s, field) != want:
                violations.append(
                    f"{split}: {getattr(s, field)} {field} in the shards, "
                    f"the description's pose coverage says {want}"
                )
    failures = _failures(output_dir)
    if len(failures) != info.inputs.failed:
        violations.append(
            f"failures: {len(failures)} rows, the description says {info.inputs.failed}"
        )
    return violations, _table(stats, failures, len(violations), ms.carries_keypoints(modalities))


def _missing_fields(info: DatasetInfo) -> list[str]:
    """The fields `validate` compares the shards with that the description lacks."""
    missing = [f for f in ("modalities", "splits", "inputs") if getattr(info, f) is None]
    if info.inputs is not None and info.inputs.failed is None:
        missing.append("inputs.failed")
    for split, desc in (info.splits or {}).items():
        missing += [f"splits.{split}.{f}" for f in ("clips", "frames") if getattr(desc, f) is None]
    return missing


@dataclasses.dataclass
class FlowCheck:
    """Stored flow against TV-L1 recomputed from the same records' stored RGB frames."""

    records: int = 0
    pairs: int = 0
    identical: int = 0  # pairs whose stored flow JPEG equals the recomputed one byte for byte
    pixels: int = 0
    epe_sum: float = 0.0
    moving_pixels: int = 0
    moving_epe_sum: float = 0.0
    max_epe: float = 0.0

    @property
    def epe(self) -> float:
        return self.epe_sum / self.pixels if self.pixels else 0.0

    @property
    def moving_epe(self) -> float:
        return self.moving_epe_sum / self.moving_pixels if self.moving_pixels else 0.0

    def summary(self, preset: str) -> str:
        return (
            f"flow check ({preset} TV-L1 on the stored RGB frames): {self.records} records, "
            f"{self.pairs} pairs, {self.identical} stored byte for byte as recomputed; "
            f"end-point difference mean {self.epe:.3f} px, moving pixels {self.moving_epe:.3f} "
            f"px, max {self.max_epe:.2f} px"
        )


def check_flow(
    output_dir: str, records: int, preset: str = "reference", tolerance: float = 1.0
) -> tuple[list[str], FlowCheck]:
    """Recomputes the flow of the first `records` records from their stored RGB frames.

    For each record with RGB and flow streams: decodes the RGB JPEGs, computes TV-L1 with
    `preset` (default: OpenCV's implementation and default parameters, independent of the
    pipeline's solver), quantizes and JPEG-encodes it as the description says, and compares it
    with the stored flow: byte for byte, and as the end-point difference in pixels between the
    dequantized stored flow and the recomputed flow clipped to the saturation. Moving pixels are
    those whose recomputed flow is longer than 1 px. A record with a frame pair whose mean
    difference over moving pixels exceeds `tolerance` pixels is a violation.
    """
    import tensorflow as tf

    from flow import compute_flow, dequantize_flow, flow_params, quantize_flow, to_gray
    from pipelines.stages.codec import decode_jpeg, encode_jpeg

    info = output.read_dataset_info(output_dir)
    modalities = list(info.modalities or ())
    if not {ms.MODALITY_RGB, ms.MODALITY_FLOW} <= set(modalities):
        need = f"flow check: needs the rgb and flow streams, got {modalities}"
        return [need], FlowCheck()
    flow_info = info.flow or FlowInfo()
    quality = flow_info.jpeg_quality
    if quality is None:
        quality = info.jpeg_quality if info.jpeg_quality is not None else 90
    bound = float(flow_info.saturation if flow_info.saturation is not None else ms.FLOW_SATURATION)
    algo = flow_params(preset).create()
    rgb_key = ms.prefixed(ms.RGB_PREFIX, ms.IMAGE_ENCODED)
    flow_key = ms.prefixed(ms.FORWARD_FLOW_PREFIX, ms.IMAGE_ENCODED)
    violations: list[str] = []
    check = FlowCheck()
    for _, shard, data in output.iter_dataset_records(output_dir, info=info):
        if check.records >= records:
            return violations, check
        ex = tf.train.SequenceExample.FromString(data)
        ex_id = ex.context.feature[ms.EXAMPLE_ID_KEY].bytes_list.value[0].decode()
        lists = ex.feature_lists.feature_list
        rgbs = [f.bytes_list.value[0] for f in lists[rgb_key].feature]
        flows = [f.bytes_list.value[0] for f in lists[flow_key].feature]
        grays = [to_gray(decode_jpeg(j)) for j in rgbs]
        bad: list[tuple[float, int]] = []  # (moving-pixel difference, step) over tolerance
        for t, stored in enumerate(flows):
            flow = compute_flow(algo, grays[t], grays[t + 1])
            again = encode_jpeg(quantize_flow(flow, bound), quality, full_chroma=True)
            check.identical += again == stored
            d = np.linalg.norm(
                dequantize_flow(decode_jpeg(stored), bound) - np.clip(flow, -bound, bound),
                axis=-1,
            )
            moving = np.linalg.norm(flow, axis=-1) > 1.0
            check.pairs += 1
            check.pixels += d.size
            check.epe_sum += float(d.sum())
            check.max_epe = max(check.max_epe, float(d.max()))
            check.moving_epe_sum += float(d[moving].sum())
            check.moving_pixels += int(moving.sum())
            if moving.any() and d[moving].mean() > tolerance:
                bad.append((float(d[moving].mean()), t))
        check.records += 1
        if bad:
            worst, step = max(bad)
            violations.append(
                f"{shard} ({ex_id}): stored flow differs from TV-L1 on the stored frames in "
                f"{len(bad)} of {len(flows)} pairs, worst {worst:.2f} px on moving pixels at "
                f"step {step} (tolerance {tolerance} px)"
            )
    return violations, check


def _failures(output_dir: str) -> list[dict]:
    return output.read_failure_rows(output_dir)


def _table(stats: dict[str, Stats], failures: list[dict], num_violations: int, pose: bool) -> str:
    """The summary: per split clips, frames, the share of frames with a person (percent) and
    persons per frame (`-` without the pose modality), KB per clip-second; failures by reason."""
    lines = [
        f"{'split':<12}{'clips':>7}{'frames':>9}{'frames with a person':>22}"
        f"{'persons/frame':>15}{'KB/clip-second':>16}",
    ]
    for split, s in stats.items():
        share = ppf = "-"
        if pose:
            share = f"{100 * s.frames_with_person / s.frames if s.frames else 0.0:.1f} %"
            ppf = f"{s.persons / s.frames if s.frames else 0.0:.2f}"
        kbps = s.bytes / 1e3 / s.seconds if s.seconds else 0.0
        lines.append(f"{split:<12}{s.clips:>7}{s.frames:>9}{share:>22}{ppf:>15}{kbps:>16.1f}")
    by_reason: dict[str, int] = {}
    for row in failures:
        reason = f"{row.get('stage')}: {str(row.get('error', '')).split(':', 1)[0]}"
        by_reason[reason] = by_reason.get(reason, 0) + 1
    lines.append(f"failures: {len(failures)}")
    lines += [f"  {n:>5}  {reason}" for reason, n in sorted(by_reason.items())]
    lines.append(f"violations: {num_violations}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The command line; native libraries' log lines are held back (`pipelines.runtime.quiet`), and
    Beam's credential lookup is skipped where a GCS emulator is asked for
    (`pipelines.storage.gcs`)."""
    from pipelines.runtime import quiet
    from pipelines.storage.gcs import configure_emulator

    configure_emulator()  # only with STORAGE_EMULATOR_HOST set (tests, local trials)
    with quiet.native_logs_filtered(verbose=os.environ.get("PERFNET_VERBOSE") == "1"):
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="perfnet-validate", description=__doc__.split("\n")[0])
    parser.add_argument("output_dir")
    parser.add_argument("--max_violations", type=int, default=20, help="violations to print")
    parser.add_argument(
        "--check_flow",
        type=int,
        default=0,
        metavar="N",
        help="also recompute TV-L1 from the stored RGB frames of the first N records and compare "
        "it with their stored flow (slow: about 2 s per frame pair with --flow_preset reference)",
    )
    parser.add_argument(
        "--flow_preset",
        default="reference",
        help="the TV-L1 preset --check_flow recomputes with (default: reference, OpenCV's own)",
    )
    parser.add_argument(
        "--flow_tolerance",
        type=float,
        default=1.0,
        help="--check_flow: most mean end-point difference on moving pixels of a pair, px",
    )
    args = parser.parse_args(argv)
    output_dir = args.output_dir.rstrip("/")
    violations, table = validate(output_dir)
    if table:
        print(table)
    if args.check_flow > 0 and table:
        flow_violations, check = check_flow(
            output_dir, args.check_flow, args.flow_preset, args.flow_tolerance
        )
        violations += flow_violations
        print(check.summary(args.flow_preset))
    for v in violations[: args.max_violations]:
        print(f"VIOLATION {v}")
    if len(violations) > args.max_violations:
        print(f"... and {len(violations) - args.max_violations} more")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
