"""Launch checks and preparations, before any video is read.

The inputs exist (`check_inputs_exist`); the pose model loads (`resolve_pose_model`); remote
runners can read every video (`check_remote_paths`); the output directory is prepared under the
job's lock (`prepare_output`: a rerun with the same settings resumes, other settings are refused
unless --overwrite); the rows and the model are staged where the workers read them. `plan_job`
does all of it and returns the `JobPlan` the graph is built from; `finish` checks the result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import posixpath
import re

from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    StandardOptions,
    TestOptions,
)

from pipelines.job.config import PreprocessConfig
from pipelines.job.info import record_settings, static_description
from pipelines.manifests import (
    ClipSpec,
    detect_format,
    load_label_map,
    parse_manifest,
    splits_of,
)
from pipelines.storage import output, parts
from schemas import media_sequence as ms

LOG = logging.getLogger("perfnet.preprocess")


STAGING_DIR = ".staging"


LOCAL_RUNNERS = ("DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner")


def resolve_pose_model(config: PreprocessConfig) -> tuple[str | None, dict]:
    """(path, description) of the pose model, checked by loading it once; before any video.

    The description is what `dataset_info.json` records: name, version, kind, sha256, path.
    """
    if not ms.carries_keypoints(config.modalities):
        return None, {"name": "", "sha256": "", "path": ""}
    from pipelines import assets
    from pipelines.stages.pose import check_pose_model, load_pose_model, pose_model_kind

    name = config.pose_model or assets.DEFAULT_POSE_MODEL.name
    built = assets.POSE_MODELS.get(name)
    if built is not None:
        path = str(assets.pose_model_path(name))
    elif "://" not in name and not os.path.exists(name):
        raise ValueError(
            f"pose_model={name!r}: neither a pose model name ({', '.join(assets.POSE_MODELS)}) "
            "nor an existing file"
        )
    else:
        path = name
        stem, ext = posixpath.splitext(path.rstrip("/").rsplit("/", 1)[-1])
        name = stem if ext in (".task", ".tflite") else stem + ext
    model, sha = load_pose_model(path)
    if built is not None and sha != built.sha256:
        raise ValueError(
            f"pose model {path!r}: sha256 is {sha}, the set-up step pins {built.sha256}; "
            "rebuild it with `python -m pipelines.assets fetch`"
        )
    if config.pose_model_sha256 and sha != config.pose_model_sha256:
        raise ValueError(
            f"pose_model={path!r}: sha256 is {sha}, --pose_model_sha256 says "
            f"{config.pose_model_sha256}"
        )
    check_pose_model(model, path)
    known = next((m for m in assets.POSE_MODELS.values() if m.sha256 == sha), None)
    description = {
        "name": name,
        "version": known.version if known else "",
        "kind": pose_model_kind(model, path),
        "sha256": sha,
        "path": config.pose_model or "",
    }
    return path, description


def prepare_output(
    config: PreprocessConfig, settings: dict, num_shards: dict[str, int], lock: output.OutputLock
) -> bool:
    """Takes the lock and readies output_dir; True when it resumes earlier parts made with the
    same settings.

    The job deletes only files it wrote itself: those `.parts/run.json` lists (recorded there
    before the job writes them) and its part files. A file it did not write, at a name it would
    write (a shard, the failures file, dataset_info.json), is refused rather than replaced.
    """
    lock.acquire()  # one job per directory: refused here, before anything is changed
    out = config.output_dir
    info = output.join(out, output.DATASET_INFO)
    failures = posixpath.join(output.FAILURES_DIR, f"{output.FAILURES_PREFIX}-00000-of-00001.jsonl")
    planned = {output.DATASET_INFO, failures} | {
        posixpath.join(split, output.shard_name(config.dataset_name, i, n))
        for split, n in num_shards.items()
        for i in range(n)
    }
    own = parts.read_own_files(out)
    if own is None:
        own = _own_files_before_the_list(out, planned)
    if config.overwrite:
        old = output.existing(out, own) + parts.own_part_files(out)
        if old:
            output.FileSystems.delete(old)
        own, resume = set(), False
    else:
        resume = parts.check_run(out, settings)
        if not resume and output.FileSystems.exists(info):
            raise FileExistsError(
                f"output_dir={out!r} already holds a finished run without its "
                "parts (.parts/); pass --overwrite to replace it or choose another directory"
            )
    foreign = [output.relative(out, p) for p in output.existing(out, planned - own)]
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise FileExistsError(
            f"output_dir={out!r} holds {foreign[0]!r}{more}, which this job would write but did "
            "not write; move it away or choose another directory"
        )
    parts.start_run(out, settings, own | planned)
    if output.FileSystems.exists(info):
        output.FileSystems.delete([info])  # present again only when this run completes
    return resume


def _own_files_before_the_list(out: str, planned: set[str]) -> set[str]:
    """The job's files in a directory written before the own-files list existed: the shards and
    failures its dataset_info.json names, and, where it holds a run's parts, the shards and
    failures file at the names this run writes."""
    own: set[str] = set()
    info = output.join(out, output.DATASET_INFO)
    if output.FileSystems.exists(info):
        try:
            desc = output.read_json(info)
            own = {name for split in desc["splits"].values() for name in split["shards"]}
            own |= {
                output.relative(out, p)
                for p in output.list_files(output.join(out, desc["failures"]))
            }
            own.add(output.DATASET_INFO)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            LOG.warning("%s: not a dataset description (%s); none of its files deleted", info, e)
    if output.FileSystems.exists(output.join(parts.parts_dir(out), parts.RUN_FILE)):
        own |= {n for n in planned if n != output.DATASET_INFO}
    return {n for n in own if isinstance(n, str) and ".." not in n.split("/")}


def stage_specs(config: PreprocessConfig, specs: list[ClipSpec], name: str) -> str:
    """Writes clip specs as JSON lines for the pipeline to read; returns the path."""
    text = "".join(s.to_json() + "\n" for s in specs)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = output.join(config.output_dir, STAGING_DIR, f"{name}-{digest}.jsonl")
    output.write_text(path, text)
    return path


def stage_model(config, options, path: str | None, sha: str) -> str | None:
    """Copies a local pose model next to the outputs when workers run elsewhere (Dataflow)."""
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    if path is None or "://" in path or runner in LOCAL_RUNNERS:
        return path
    suffix = os.path.splitext(path)[1] or ".bin"  # .tflite or .task
    staged = output.join(config.output_dir, STAGING_DIR, f"pose-{sha[:16]}{suffix}")
    if not output.FileSystems.exists(staged):
        with open(path, "rb") as src, output.FileSystems.create(staged) as dst:
            dst.write(src.read())
    return staged


def check_remote_paths(config: PreprocessConfig, specs: list[ClipSpec], options) -> None:
    """Dataflow workers see only gs://: refuses a local output_dir or local videos, up front."""
    runner = (options.view_as(StandardOptions).runner or "").rsplit(".", 1)[-1].lower()
    if runner not in ("dataflowrunner", "dataflow"):
        return
    if not config.output_dir.startswith("gs://"):
        raise ValueError(
            f"output_dir={config.output_dir!r}: Dataflow workers cannot write a local path; "
            "use a gs:// folder"
        )
    local = next((s for s in specs if not s.path.startswith("gs://")), None)
    if local is not None:
        raise ValueError(
            f"video {local.path!r} ({local.source}): Dataflow workers cannot read a local path; "
            "pass --video_root gs://... or gs:// paths in the manifest"
        )


def threads_per_worker(config: PreprocessConfig, options) -> int:
    """OpenCV threads per worker process: the cores shared out among the worker processes."""
    if config.threads_per_worker:
        return config.threads_per_worker
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    if runner not in LOCAL_RUNNERS:
        return 1  # Dataflow runs one SDK process per vCPU
    direct = options.view_as(DirectOptions)
    workers = direct.direct_num_workers or 1
    if workers <= 0:
        workers = os.cpu_count() or 1  # Beam's "0: as many as cores"
    if workers == 1 or direct.direct_running_mode == "in_memory":
        return 0  # one process: OpenCV's own default (all cores)
    return max(1, (os.cpu_count() or 1) // workers)


def check_inputs_exist(config: PreprocessConfig) -> None:
    """Raises FileNotFoundError or ValueError naming the flag when the manifest or the label map
    is missing or a directory, or the output directory is a file."""
    for flag, path in (("input", config.input), ("label_map", config.label_map)):
        if path and not output.FileSystems.exists(path):
            raise FileNotFoundError(f"--{flag}={path!r}: no such file")
        if path and "://" not in path and os.path.isdir(path):
            raise ValueError(f"--{flag}={path!r}: a directory, expected a file")
    out = config.output_dir
    if "://" not in out and os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--output_dir={out!r}: a file, expected a directory (or a new path)")


# Write errors that are the output directory's, not an input's: the job ends with exit status 2.
_OUTPUT_ERRORS = re.compile(
    r"No space left on device|Disk quota exceeded|Read-only file system|Permission denied"
)


def raise_on_output_errors(output_dir: str) -> None:
    """Raises OSError when rows failed because the output could not be written (a full disk, a
    read-only directory): a job-level problem, reported as such; the rows written are kept and
    the failed ones are tried again by the next run."""
    rows = output.read_failure_rows(output_dir)
    hit = [r for r in rows if r.get("stage") == "process" and _OUTPUT_ERRORS.search(r["error"])]
    if hit:
        reason = _OUTPUT_ERRORS.search(hit[0]["error"]).group(0)
        raise OSError(
            f"{len(hit)} of the rows could not be written to --output_dir={output_dir!r} "
            f"({reason}); the rows written are kept: fix it and run the same command again"
        )


@dataclasses.dataclass(frozen=True)
class JobPlan:
    """What `plan_job` prepared for the graph.

    Attributes:
      config: the job's config, `threads_per_worker` resolved for this runner.
      manifest_failures: the rows the manifest refused, one `manifest` failure each.
      fixed_labels: the class map kept whatever rows fail (official lists, --label_map), or None
        (the classes are the labels of the rows written).
      num_shards: shards per split.
      todo_keys: the part keys of the rows to process (the others are done).
      all_rows, todo_rows: the staged JSON-lines files of every row and of the rows to do.
      pose_path, pose_sha: the pose model as the workers read it (staged for remote runners).
      static_info: the description's fields known before any row runs (`info.static_description`).
      dry_run: the runner only builds and translates the job.
    """

    config: PreprocessConfig
    manifest_failures: list
    fixed_labels: dict[str, int] | None
    num_shards: dict[str, int]
    todo_keys: frozenset[str]
    all_rows: str
    todo_rows: str
    pose_path: str | None
    pose_sha: str
    static_info: dict
    dry_run: bool


def plan_job(
    config: PreprocessConfig, options: PipelineOptions, lock: output.OutputLock
) -> JobPlan:
    """Everything the graph needs, checked and prepared before it runs: the manifest parsed,
    the pose model resolved (and staged), remote paths checked, the output directory prepared
    under `lock` (a resumed run keeps the parts of rows already done), the rows staged."""
    config = dataclasses.replace(config, threads_per_worker=threads_per_worker(config, options))
    label_map = load_label_map(config.label_map) if config.label_map else None
    pose_path, pose_info = resolve_pose_model(config)
    pose_sha = pose_info["sha256"]
    specs, manifest_failures, label_map = parse_manifest(
        config.input,
        config.manifest_format,
        config.video_root,
        label_map=label_map,
        strict=config.strict_manifest,
        file_pattern=config.file_pattern,
        split_number=config.split_number,
        max_clip_frames=config.max_clip_frames,
        fps=config.fps,
    )
    check_remote_paths(config, specs, options)
    # Official class lists and explicit maps are kept whatever rows fail; otherwise the classes
    # are the labels of the rows written (`final_label_map`, once every row is processed).
    fmt = (
        detect_format(config.input) if config.manifest_format == "auto" else config.manifest_format
    )
    fixed_labels = label_map if (config.label_map or fmt in ("ucf101", "hmdb51")) else None
    dry_run = options.view_as(TestOptions).dry_run
    # A dry run builds and translates the job only: it leaves output_dir as it is.
    per_split = splits_of(specs)
    num_shards = {split: config.shards_for(n) for split, n in per_split.items()}
    settings = record_settings(config, pose_sha)
    resumed = not dry_run and prepare_output(config, settings, num_shards, lock)
    done = parts.done_keys(config.output_dir) if resumed else set()
    todo = [s for s in specs if parts.input_key(s) not in done]
    all_rows = stage_specs(config, specs, "rows")
    todo_rows = stage_specs(config, todo, "todo")
    pose_path = stage_model(config, options, pose_path, pose_sha)
    static_info = static_description(
        config, label_map, pose_info, rows=len(specs) + len(manifest_failures)
    )
    LOG.info(
        "%d rows (%d bad in the manifest), splits %s; %d to process, %d done by an earlier run",
        len(specs) + len(manifest_failures),
        len(manifest_failures),
        per_split,
        len(todo),
        len(specs) - len(todo),
    )
    return JobPlan(
        config=config,
        manifest_failures=manifest_failures,
        fixed_labels=fixed_labels,
        num_shards=num_shards,
        todo_keys=frozenset(parts.input_key(s) for s in todo),
        all_rows=all_rows,
        todo_rows=todo_rows,
        pose_path=pose_path,
        pose_sha=pose_sha,
        static_info=static_info,
        dry_run=dry_run,
    )


def finish(plan: JobPlan) -> dict:
    """After the graph: the staged rows removed, the description read back and checked (every
    input written or failed), output-directory errors raised; returns the description."""
    config = plan.config
    if plan.dry_run:
        # The runner built and translated the job without running it (DataflowRunner
        # --dry_run=True): nothing was processed and there is no dataset_info.json to read.
        output.FileSystems.delete([plan.all_rows, plan.todo_rows])
        LOG.info("dry run: the job was built and translated, not run")
        return {**plan.static_info, "dry_run": True}
    info = output.read_json(output.join(config.output_dir, output.DATASET_INFO))
    output.FileSystems.delete([plan.all_rows, plan.todo_rows])
    if info["inputs"]["written"] + info["inputs"]["failed"] != info["inputs"]["rows"]:
        raise RuntimeError(f"inputs do not add up: {info['inputs']}")
    raise_on_output_errors(config.output_dir)
    return info
