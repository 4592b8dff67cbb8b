"""Keypoints of finished records as data for skeleton-based models: Parquet or MMAction2 pickle.

    python -m pipelines.tools.export OUTPUT_DIR --format parquet --out keypoints.parquet [--split S]
    python -m pipelines.tools.export OUTPUT_DIR --format mmaction --out skeletons.pkl [--split S]

Reads the records of OUTPUT_DIR (every split in the description, or only `--split`), one record
at a time: memory holds one record's bytes and the keypoints exported so far (MMAction2) or one
Parquet row group; no image is decoded. Requires the pose modality. OUTPUT_DIR and `--out` may be
local or `gs://`.

Coordinates. Records store keypoints and boxes normalized to [0, 1] (x by the stored width, y by
the stored height; x = 0 is the left edge of pixel column 0, x = 1 the right edge of the last
column). Pixel coordinates here are `x * width`, `y * height` in the stored frames (float, so pixel
column c spans [c, c + 1) and its centre is at c + 0.5). The stored frames are the resampled,
resized ones (shorter side 256 by default); the source video's size is not in the records.

Parquet (`--format parquet`): one row per (clip, frame, person), in record order, then frame
order, then the person's position in the frame; frames where no one was found have no row (a clip
where no one was found has none at all). Row groups of about 65536 rows. Columns:

| column | type | value |
|---|---|---|
| example_id | string | `example/id` |
| split | string | the split directory the record is in |
| label_index | int64 | `clip/label/index`, 0-based |
| label | string | `clip/label/string` |
| frame_index | int32 | 0-based index of the frame in the clip |
| num_frames | int32 | T, the clip's number of frames |
| timestamp_us | int64 | `region/timestamp`: microseconds in the source video |
| num_persons | int32 | persons in this frame (`region/num_regions`) |
| person_index | int32 | position of the person in the frame's lists, 0-based |
| track_id | int64 | `region/track/index`: the person's identity across frames, >= 0 |
| keypoint_x, keypoint_y | fixed_size_list<float32>[17] | normalized, as stored (COCO-17 order) |
| keypoint_px_x, keypoint_px_y | fixed_size_list<float32>[17] | pixels, `x * image_width` etc. |
| keypoint_score | fixed_size_list<float32>[17] | `POSE/region/label/confidence`, [0, 1] |
| bbox_ymin, bbox_xmin, bbox_ymax, bbox_xmax | float32 | person box, normalized, as stored |
| person_score | float32 | `region/label/confidence`, [0, 1] |
| image_height, image_width | int32 | stored frame size in pixels (`image/height`, `image/width`) |

The joint names are in the file's metadata (`joint_names`, JSON) and the schema's column comments.

MMAction2 (`--format mmaction`): the skeleton annotation pickle that MMAction2's `PoseDataset`
(PoseC3D, ST-GCN, ...) reads, a dict:

    {"split": {split name: [frame_dir, ...]},
     "annotations": [{"frame_dir": str,          # the example id
                      "label": int,              # clip/label/index
                      "img_shape": (h, w),       # stored frame size, pixels
                      "original_shape": (h, w),  # = img_shape, see below
                      "total_frames": int,       # T
                      "keypoint": float32 [M, T, 17, 2],    # (x, y) pixels, as above
                      "keypoint_score": float32 [M, T, 17]}, ...]}

`original_shape` is the stored size too: the records hold only the stored frames, not the
source video's size. M is the number of distinct track ids in the clip, one person per track.
Persons come main people first, longest-lived first as MMAction2's own skeleton extraction
orders its tracks for the GCN models (`person_order`): by the number of frames the track has a
person in, most first; ties (which MMAction2 leaves in order of appearance) by the track's
keypoint scores summed over its frames and joints, highest first; then by track id, smallest
first. MMAction2's `FormatGCNInput(num_person=N)` (ST-GCN, ST-GCN++, ...) keeps `keypoint[:N]`
and pads with zeros when M < N, so it keeps the N longest-lived tracks, not the N that appeared
first. A frame where a track is absent holds zeros (coordinates and scores), as PoseC3D expects.
A clip where no one was found gets M = 1, all zeros, because MMAction2's pose pipeline expects at
least one person. Pickle protocol 4.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pickle
import sys
from collections.abc import Iterator

import numpy as np

from pipelines.storage import output
from schemas import layout
from schemas import media_sequence as ms
from schemas.dataset_info import DatasetInfo

EXPORT_FORMATS = ("parquet", "mmaction")  # --format: the file kinds written
PARQUET_ROW_GROUP_ROWS = 65536
PICKLE_PROTOCOL = 4


# ---------------------------------------------------------------------------------------------
# Reading records.
# ---------------------------------------------------------------------------------------------
def read_description(output_dir: str) -> DatasetInfo:
    """The dataset description of OUTPUT_DIR (`output.read_dataset_info`): FileNotFoundError
    naming the path if missing, ValueError naming the file and field if it cannot be read."""
    return output.read_dataset_info(output_dir)


def splits_of(info: DatasetInfo, output_dir: str, split: str | None = None) -> list[str]:
    """The splits to read: all in the description's order, or `split`; ValueError if unknown."""
    return info.select_splits(split, output_dir)


def iter_records(output_dir: str, split: str | None = None) -> Iterator[tuple[str, bytes]]:
    """Yields (split, serialized SequenceExample) for every record, shard by shard, one at a time
    (`output.iter_dataset_records`).

    Args:
      output_dir: a finished output directory (local or gs://) with its dataset_info.json.
      split: only this split; None for every split, in the description's order.
    """
    for record in output.iter_dataset_records(output_dir, split):
        yield record.split, record.data


@dataclasses.dataclass(frozen=True)
class ClipPoses:
    """The keypoints of one record, per frame (T frames, P_t persons in frame t).

    Attributes:
      example_id, label_index, label: the clip's id and class.
      height, width: stored frame size in pixels.
      timestamps_us: int64 [T], microseconds in the source.
      keypoints: T arrays float32 [P_t, 17, 2], normalized (x, y) as stored.
      scores: T arrays float32 [P_t, 17], keypoint scores in [0, 1].
      boxes: T arrays float32 [P_t, 4], (ymin, xmin, ymax, xmax) normalized.
      box_scores: T arrays float32 [P_t], person scores in [0, 1].
      track_ids: T arrays int64 [P_t], >= 0.
    """

    example_id: str
    label_index: int
    label: str
    height: int
    width: int
    timestamps_us: np.ndarray
    keypoints: list[np.ndarray]
    scores: list[np.ndarray]
    boxes: list[np.ndarray]
    box_scores: list[np.ndarray]
    track_ids: list[np.ndarray]

    @property
    def num_frames(self) -> int:
        return len(self.timestamps_us)

    @property
    def num_persons(self) -> np.ndarray:
        """int64 [T]: persons per frame."""
        return np.array([len(s) for s in self.box_scores], np.int64)


def parse_example(data: bytes):
    """Serialized bytes -> `tf.train.SequenceExample` (no image is decoded)."""
    import tensorflow as tf

    return tf.train.SequenceExample.FromString(data)


def context_value(example, key: str):
    """The one value of context feature `key` of a parsed record (bytes decoded as UTF-8);
    ValueError naming the key if the record lacks it or holds other than one value."""
    feature = example.context.feature.get(key)
    if feature is None:
        raise ValueError(f"record has no context feature {key!r}")
    kind = feature.WhichOneof("kind")
    values = getattr(feature, kind).value if kind else []
    if len(values) != 1:
        raise ValueError(f"context feature {key!r}: expected one value, got {len(values)}")
    v = values[0]
    return v.decode("utf-8") if isinstance(v, bytes) else v


def _steps(example, key: str) -> list:
    """The values of every step of sequence feature `key`, read from the list of the key's type
    (the key table)."""
    if key not in example.feature_lists.feature_list:
        raise ValueError(f"record has no sequence feature {key!r} (was pose written?)")
    field = ms.key_info(key).feature_field
    return [list(getattr(f, field).value) for f in example.feature_lists.feature_list[key].feature]


def clip_poses(example) -> ClipPoses:
    """The keypoints of a parsed record; ValueError naming the key on an inconsistent record."""
    example_id = context_value(example, ms.EXAMPLE_ID_KEY)
    if ms.IMAGE_HEIGHT in example.context.feature:
        prefix = ms.RGB_PREFIX
    else:
        prefix = ms.POSE_RENDERED_PREFIX
    height = int(context_value(example, ms.prefixed(prefix, ms.IMAGE_HEIGHT)))
    width = int(context_value(example, ms.prefixed(prefix, ms.IMAGE_WIDTH)))
    ts = [v[0] for v in _steps(example, ms.REGION_TIMESTAMP_KEY)]
    counts = [v[0] for v in _steps(example, ms.REGION_NUM_REGIONS_KEY)]
    if len(counts) != len(ts):
        raise ValueError(
            f"{example_id}: {ms.REGION_NUM_REGIONS_KEY} has {len(counts)} steps, T={len(ts)}"
        )

    def per_frame(key):
        """T arrays of the key's values (dtype and values per person from the key table)."""
        info = ms.key_info(key)
        per_person = info.values_per_person
        steps = _steps(example, key)
        if [len(s) for s in steps] != [per_person * n for n in counts]:
            raise ValueError(f"{example_id}: {key}: lengths do not match {per_person} x persons")
        return [np.asarray(s, info.np_dtype) for s in steps]

    x = per_frame(ms.POSE_POINT_X_KEY)
    y = per_frame(ms.POSE_POINT_Y_KEY)
    conf = per_frame(ms.POSE_CONFIDENCE_KEY)
    box = [
        per_frame(k)
        for k in (
            ms.REGION_BBOX_YMIN_KEY,
            ms.REGION_BBOX_XMIN_KEY,
            ms.REGION_BBOX_YMAX_KEY,
            ms.REGION_BBOX_XMAX_KEY,
        )
    ]
    box_scores = per_frame(ms.REGION_CONFIDENCE_KEY)
    tracks = per_frame(ms.REGION_TRACK_INDEX_KEY)
    j = ms.NUM_JOINTS
    return ClipPoses(
        example_id=example_id,
        label_index=int(context_value(example, ms.CLIP_LABEL_INDEX_KEY)),
        label=context_value(example, ms.CLIP_LABEL_STRING_KEY),
        height=height,
        width=width,
        timestamps_us=np.asarray(ts, np.int64),
        keypoints=[np.stack([x[t], y[t]], axis=-1).reshape(n, j, 2) for t, n in enumerate(counts)],
        scores=[conf[t].reshape(n, j) for t, n in enumerate(counts)],
        boxes=[np.stack([b[t] for b in box], axis=-1).reshape(n, 4) for t, n in enumerate(counts)],
        box_scores=box_scores,
        track_ids=tracks,
    )


def _check_pose_modality(info: DatasetInfo, output_dir: str) -> None:
    modalities = info.modalities or ()
    if not ms.carries_keypoints(modalities):
        raise ValueError(
            f"output_dir={output_dir!r}: no keypoints to export: its modalities are "
            f"{list(modalities)}, without {ms.MODALITY_POSE!r} or {ms.MODALITY_KEYPOINTS!r}"
        )


# ---------------------------------------------------------------------------------------------
# Parquet.
# ---------------------------------------------------------------------------------------------
def parquet_schema():
    """The Parquet table's `pyarrow.Schema` (see the module docstring)."""
    import pyarrow as pa

    joints = pa.list_(pa.float32(), ms.NUM_JOINTS)
    meta = {"joint_names": json.dumps(list(ms.COCO17_JOINT_NAMES))}
    fields = [
        ("example_id", pa.string(), "example/id"),
        ("split", pa.string(), "split directory"),
        ("label_index", pa.int64(), "clip/label/index, 0-based"),
        ("label", pa.string(), "clip/label/string"),
        ("frame_index", pa.int32(), "0-based frame index in the clip"),
        ("num_frames", pa.int32(), "frames in the clip, T"),
        ("timestamp_us", pa.int64(), "microseconds in the source video"),
        ("num_persons", pa.int32(), "persons in the frame"),
        ("person_index", pa.int32(), "position of the person in the frame, 0-based"),
        ("track_id", pa.int64(), "region/track/index, identity across frames"),
        ("keypoint_x", joints, "normalized x in [0, 1], COCO-17 order"),
        ("keypoint_y", joints, "normalized y in [0, 1], COCO-17 order"),
        ("keypoint_px_x", joints, "x * image_width, pixels"),
        ("keypoint_px_y", joints, "y * image_height, pixels"),
        ("keypoint_score", joints, "keypoint scores in [0, 1]"),
        ("bbox_ymin", pa.float32(), "normalized"),
        ("bbox_xmin", pa.float32(), "normalized"),
        ("bbox_ymax", pa.float32(), "normalized"),
        ("bbox_xmax", pa.float32(), "normalized"),
        ("person_score", pa.float32(), "region/label/confidence in [0, 1]"),
        ("image_height", pa.int32(), "stored frame height, pixels"),
        ("image_width", pa.int32(), "stored frame width, pixels"),
    ]
    return pa.schema(
        [pa.field(n, t, metadata={"description": d}) for n, t, d in fields], metadata=meta
    )


def parquet_columns(split: str, clip: ClipPoses) -> dict[str, np.ndarray]:
    """One record's rows as numpy columns: name -> array [R] (or [R, 17] for joint columns)."""
    counts = clip.num_persons
    rows = int(counts.sum())
    j = ms.NUM_JOINTS
    frame = np.repeat(np.arange(clip.num_frames, dtype=np.int32), counts)
    if rows:
        kp = np.concatenate(clip.keypoints).astype(np.float32)
        sc = np.concatenate(clip.scores).astype(np.float32)
        bx = np.concatenate(clip.boxes).astype(np.float32)
        bs = np.concatenate(clip.box_scores).astype(np.float32)
        tr = np.concatenate(clip.track_ids).astype(np.int64)
    else:
        kp = np.zeros((0, j, 2), np.float32)
        sc = np.zeros((0, j), np.float32)
        bx = np.zeros((0, 4), np.float32)
        bs = np.zeros((0,), np.float32)
        tr = np.zeros((0,), np.int64)
    person = np.zeros(0, np.int32)
    if len(counts):
        person = np.concatenate([np.arange(n, dtype=np.int32) for n in counts])
    return {
        "example_id": np.full(rows, clip.example_id, object),
        "split": np.full(rows, split, object),
        "label_index": np.full(rows, clip.label_index, np.int64),
        "label": np.full(rows, clip.label, object),
        "frame_index": frame,
        "num_frames": np.full(rows, clip.num_frames, np.int32),
        "timestamp_us": clip.timestamps_us[frame],
        "num_persons": counts[frame].astype(np.int32),
        "person_index": person,
        "track_id": tr,
        "keypoint_x": kp[..., 0],
        "keypoint_y": kp[..., 1],
        "keypoint_px_x": (kp[..., 0] * np.float32(clip.width)).astype(np.float32),
        "keypoint_px_y": (kp[..., 1] * np.float32(clip.height)).astype(np.float32),
        "keypoint_score": sc,
        "bbox_ymin": bx[:, 0],
        "bbox_xmin": bx[:, 1],
        "bbox_ymax": bx[:, 2],
        "bbox_xmax": bx[:, 3],
        "person_score": bs,
        "image_height": np.full(rows, clip.height, np.int32),
        "image_width": np.full(rows, clip.width, np.int32),
    }


def _to_table(columns: list[dict[str, np.ndarray]], schema):
    import pyarrow as pa

    arrays = []
    for field in schema:
        values = np.concatenate([c[field.name] for c in columns])
        if pa.types.is_fixed_size_list(field.type):
            flat = pa.array(values.reshape(-1).astype(np.float32), pa.float32())
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, ms.NUM_JOINTS))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def export_parquet(output_dir: str, out: str, split: str | None = None) -> dict[str, int]:
    """Writes the Parquet table of OUTPUT_DIR's keypoints to `out`; returns clips and rows.

    `out` (local or gs://) appears only when complete (written as `out.tmp`, then renamed).
    """
    import pyarrow.parquet as pq

    info = read_description(output_dir)
    _check_pose_modality(info, output_dir)
    splits_of(info, output_dir, split)
    schema = parquet_schema()
    tmp = layout.tmp_name(out)
    clips = rows = 0
    pending: list[dict[str, np.ndarray]] = []
    pending_rows = 0
    with output.FileSystems.create(tmp) as f:
        with pq.ParquetWriter(f, schema) as writer:
            for name, _, data in output.iter_dataset_records(output_dir, split, info):
                cols = parquet_columns(name, clip_poses(parse_example(data)))
                n = len(cols["example_id"])
                clips += 1
                rows += n
                pending.append(cols)
                pending_rows += n
                if pending_rows >= PARQUET_ROW_GROUP_ROWS:
                    writer.write_table(_to_table(pending, schema))
                    pending, pending_rows = [], 0
            if pending_rows or not rows:
                writer.write_table(_to_table(pending or [parquet_columns("", _EMPTY)], schema))
    _replace(tmp, out)
    return {"clips": clips, "rows": rows}


_EMPTY = ClipPoses("", 0, "", 1, 1, np.zeros(0, np.int64), [], [], [], [], [])


def _replace(tmp: str, path: str) -> None:
    """Renames the complete `tmp` to `path`, replacing an older `path`."""
    if output.FileSystems.exists(path):
        output.FileSystems.delete([path])
    output.FileSystems.rename([tmp], [path])


# ---------------------------------------------------------------------------------------------
# MMAction2.
# ---------------------------------------------------------------------------------------------
def person_order(track_ids: list[np.ndarray], scores: list[np.ndarray]) -> np.ndarray:
    """The distinct track ids of a clip, main people first: MMAction2's person order.

    Args:
      track_ids: T arrays int64 [P_t], frame t's track ids (>= 0), each at most once a frame.
      scores: T arrays float32 [P_t, 17], the keypoint scores in [0, 1] of the same persons.

    Returns:
      int64 [M], the M distinct track ids sorted by frames with that track, most first; then
      by the track's keypoint scores summed over its frames and joints (float64), highest first;
      then by track id, smallest first. Empty for a clip where no one was found.
    """
    ids = np.concatenate(track_ids).astype(np.int64) if track_ids else np.zeros(0, np.int64)
    if not len(ids):
        return ids
    score = np.concatenate([s.sum(axis=-1, dtype=np.float64) for s in scores])
    if score.shape != ids.shape:
        raise ValueError(f"scores: {len(score)} persons in all, track_ids: {len(ids)}")
    tracks, person_track = np.unique(ids, return_inverse=True)
    frames = np.bincount(person_track, minlength=len(tracks))
    total = np.bincount(person_track, weights=score, minlength=len(tracks))
    return tracks[np.lexsort((tracks, -total, -frames))]


def mmaction_annotation(clip: ClipPoses) -> dict:
    """One clip as an MMAction2 skeleton annotation (see the module docstring).

    Returns:
      dict with frame_dir (str), label (int), img_shape and original_shape ((h, w) ints),
      total_frames (int), keypoint (float32 [M, T, 17, 2], pixels), keypoint_score
      (float32 [M, T, 17]); person m is the track `person_order(...)[m]` (longest-lived first);
      absent is zero.

    Raises:
      ValueError: naming the clip and frame where one track id appears twice in a frame.
    """
    t_count = clip.num_frames
    for t, ids in enumerate(clip.track_ids):
        if len(np.unique(ids)) != len(ids):
            raise ValueError(
                f"{clip.example_id}: frame {t} holds track ids {ids.tolist()}, one twice"
            )
    order = person_order(clip.track_ids, clip.scores)
    row = {int(track): m for m, track in enumerate(order)}
    m_count = max(1, len(order))
    keypoint = np.zeros((m_count, t_count, ms.NUM_JOINTS, 2), np.float32)
    score = np.zeros((m_count, t_count, ms.NUM_JOINTS), np.float32)
    scale = np.array([clip.width, clip.height], np.float32)
    for t in range(t_count):
        m = [row[int(track)] for track in clip.track_ids[t]]
        keypoint[m, t] = clip.keypoints[t] * scale
        score[m, t] = clip.scores[t]
    shape = (int(clip.height), int(clip.width))
    return {
        "frame_dir": clip.example_id,
        "label": int(clip.label_index),
        "img_shape": shape,
        "original_shape": shape,
        "total_frames": int(t_count),
        "keypoint": keypoint,
        "keypoint_score": score,
    }


def export_mmaction(output_dir: str, out: str, split: str | None = None) -> dict[str, int]:
    """Writes OUTPUT_DIR's keypoints as an MMAction2 annotation pickle to `out`; returns counts.

    `out` (local or gs://) appears only when complete (written as `out.tmp`, then renamed).
    """
    info = read_description(output_dir)
    _check_pose_modality(info, output_dir)
    split_lists: dict[str, list[str]] = {s: [] for s in splits_of(info, output_dir, split)}
    annotations = []
    for name, _, data in output.iter_dataset_records(output_dir, split, info):
        ann = mmaction_annotation(clip_poses(parse_example(data)))
        split_lists[name].append(ann["frame_dir"])
        annotations.append(ann)
    blob = pickle.dumps({"split": split_lists, "annotations": annotations}, PICKLE_PROTOCOL)
    output.write_bytes(out, blob)
    return {"clips": len(annotations), "persons": sum(a["keypoint"].shape[0] for a in annotations)}


# ---------------------------------------------------------------------------------------------
# Command line.
# ---------------------------------------------------------------------------------------------
def export(output_dir: str, fmt: str, out: str, split: str | None = None) -> dict[str, int]:
    """Runs one export; `fmt` is one of EXPORT_FORMATS."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"format={fmt!r}: must be one of {', '.join(EXPORT_FORMATS)}")
    output_dir = output_dir.rstrip("/")
    if fmt == "parquet":
        return export_parquet(output_dir, out, split)
    return export_mmaction(output_dir, out, split)


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
    parser = argparse.ArgumentParser(
        prog="perfnet-export",
        description="Exports the keypoints of finished records as Parquet or MMAction2 pickle.",
    )
    parser.add_argument("output_dir", help="a finished output directory (local or gs://)")
    parser.add_argument(
        "--format",
        required=True,
        choices=EXPORT_FORMATS,
        dest="fmt",
        help="parquet: one row per clip, frame and person; mmaction: MMAction2's skeleton pickle, "
        "persons longest-lived track first (then highest summed keypoint score, then track id), "
        "so that FormatGCNInput(num_person=N) keeps the N main people",
    )
    parser.add_argument("--out", required=True, help="the file to write (local or gs://)")
    parser.add_argument("--split", default=None, help="only this split (default: all)")
    args = parser.parse_args(argv)
    try:
        counts = export(args.output_dir, args.fmt, args.out, args.split)
    except (ValueError, FileNotFoundError) as e:
        print(f"perfnet-export: error: {e}", file=sys.stderr)
        return 2
    summary = ", ".join(f"{v} {k}" for k, v in counts.items())
    print(f"wrote {args.out} ({args.fmt}): {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
