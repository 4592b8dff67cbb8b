"""The dataset description (`dataset_info.json`): its fields known at launch
(`static_description`), the settings a resumed run must share (`record_settings`), and the
writer run last by the graph (`write_info`: counts, shards and pose coverage per split, failures
by stage, the class list of the rows written, their CPU time per stage)."""

from __future__ import annotations

import dataclasses
import json
import platform

from pipelines.job.config import PreprocessConfig
from pipelines.manifests import (
    default_label_map,
    label_names,
)
from pipelines.storage import output, parts
from schemas import media_sequence as ms
from schemas.dataset_info import CostInfo


def final_label_map(labels: list[str], fixed: dict[str, int] | None) -> dict[str, int]:
    """The label map of the records: `fixed` (an explicit map, or a dataset's official class
    list) if given, else the labels of the rows written, sorted by name (`default_label_map`):
    a label whose every row failed is not a class."""
    return dict(fixed) if fixed is not None else default_label_map(labels)


def write_info(
    _, shards, done, failures, label_map, static_info, output_dir, num_shards, dataset_name
):
    """Writes dataset_info.json once every shard is written; fills in empty shards and removes
    shards of an earlier run that the current shard count no longer names.

    `done` holds (key, label, cost) of every row written, the cost its part's `RowCost` or None
    (`CollectPartFn`); `failures` the stage of every failed row."""
    splits = {}
    for split, n in sorted(num_shards.items()):
        names = [
            output.relative(output_dir, output.shard_path(output_dir, split, dataset_name, i, n))
            for i in range(n)
        ]
        written = {s["shard"] for s in shards if s["split"] == split}
        for name in names:
            if name not in written:  # a shard no clip hashed to: still written, empty
                output.write_tfrecords(output.join(output_dir, name), [])
        mine = [s for s in shards if s["split"] == split]
        splits[split] = {
            "clips": sum(s["clips"] for s in mine),
            "frames": sum(s["frames"] for s in mine),
            "persons": sum(s["persons"] for s in mine),
            "duration_seconds": round(sum(s["duration_us"] for s in mine) / 1e6, 3),
            "bytes": sum(s["bytes"] for s in mine),
            "num_shards": n,
            "shards": names,
        }
    # Shards of an earlier run of this job that the current shard count does not name: only
    # those the own-files list names, never a file the job did not write.
    keep = {output.join(output_dir, name) for s in splits.values() for name in s["shards"]}
    own = parts.read_own_files(output_dir) or set()
    stale = [
        name
        for name in sorted(own)
        if "/" in name
        and output.is_shard_name(name.rsplit("/", 1)[-1])
        and output.join(output_dir, name) not in keep
    ]
    if stale:
        paths = output.existing(output_dir, stale)
        if paths:
            output.FileSystems.delete(paths)
        parts.write_own_files(output_dir, own - set(stale))
    by_stage: dict[str, int] = {}
    for stage in failures:
        by_stage[stage] = by_stage.get(stage, 0) + 1
    info = dict(static_info)
    info["labels"] = label_names(label_map)
    info["num_classes"] = len(label_map)
    info["splits"] = splits
    if ms.carries_keypoints(static_info["modalities"]):
        info["pose"] = {
            split: pose_coverage(
                desc["frames"],
                sum(s["frames_with_person"] for s in shards if s["split"] == split),
                desc["persons"],
            )
            for split, desc in splits.items()
        }
    info["inputs"] = {
        "rows": static_info["inputs"]["rows"],
        "written": len(done),
        "failed": len(failures),
        "failed_by_stage": dict(sorted(by_stage.items())),
    }
    info["cost"] = CostInfo.of(cost for _, _, cost in done).to_json()
    output.write_text(
        output.join(output_dir, output.DATASET_INFO), json.dumps(info, indent=2, sort_keys=True)
    )
    yield info


def pose_coverage(frames: int, frames_with_person: int, persons: int) -> dict:
    """A split's pose coverage for dataset_info.json: its frame count, frames with at least one
    person, persons summed over frames, and the share of frames with a person and the persons
    per frame (rounded to 4 places; 0.0 for a split without frames)."""
    return {
        "frames": frames,
        "frames_with_person": frames_with_person,
        "persons": persons,
        "share_of_frames_with_person": round(frames_with_person / frames, 4) if frames else 0.0,
        "persons_per_frame": round(persons / frames, 4) if frames else 0.0,
    }


# ---------------------------------------------------------------------------------------------
# Launcher.
# ---------------------------------------------------------------------------------------------
def software_versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for dist in (
        "perfnet-data",
        "apache-beam",
        "tensorflow",
        "mediapipe",
        "opencv-contrib-python",
        "numpy",
        "pyarrow",
    ):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def flow_description(config: PreprocessConfig) -> dict:
    """How the flow stream was made, for the description and the resume check."""
    return {
        "preset": config.flow_preset,
        "params": dataclasses.asdict(config.flow),
        "saturation": ms.FLOW_SATURATION,
        "jpeg_quality": config.flow_jpeg_quality,
        # Flow is computed from the RGB frames as stored: JPEG at `jpeg_quality`, decoded.
        "computed_from": "stored_rgb",
    }


def record_settings(config: PreprocessConfig, pose_sha256: str) -> dict:
    """The settings that decide the records: parts made under other settings are not reused."""
    keys = (
        "dataset_name", "modalities", "flow_preset", "num_poses", "pose_short_side", "fps",
        "short_side", "jpeg_quality", "flow_jpeg_quality", "max_clip_seconds",
    )  # fmt: skip
    settings = {k: getattr(config, k) for k in keys}
    # What the preset means, not only its name, and what the flow is computed from.
    settings["flow"] = flow_description(config)
    settings["modalities"] = list(config.modalities)
    settings["render_style"] = config.style.to_spec()
    settings["pose_model_sha256"] = pose_sha256
    return settings


def static_description(
    config: PreprocessConfig, label_map: dict[str, int], pose_info: dict, rows: int
) -> dict:
    """The fields of dataset_info.json known before any row runs; `rows`: the manifest's rows."""
    return {
        "schema_version": ms.SCHEMA_VERSION,
        "dataset_name": config.dataset_name,
        "labels": label_names(label_map),
        "num_classes": len(label_map),
        "modalities": list(config.modalities),
        "frame_rate": config.fps,
        "jpeg_quality": config.jpeg_quality,
        "flow": flow_description(config),
        "pose_model": pose_info,
        "render_style": config.style.to_dict(),
        "config": config.to_dict(),
        "software": software_versions(),
        "inputs": {"rows": rows},
        "failures": output.join(output.FAILURES_DIR, output.FAILURES_PREFIX + "-*.jsonl"),
    }
