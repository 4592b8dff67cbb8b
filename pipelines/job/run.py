"""`run_job(config, options)`: the launch checks, then the Beam graph of the job's phases.

The phases are `pipelines.job.transforms`' PTransforms; the checks and preparations before the
graph (inputs, pose model, output directory and its lock, staging) are `pipelines.job.launch`'s;
the description written last is `pipelines.job.info`'s.
"""

from __future__ import annotations

import logging
import os

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    PipelineOptions,
    StandardOptions,
    TestOptions,
)

from pipelines.job.config import PreprocessConfig
from pipelines.job.launch import LOCAL_RUNNERS, check_inputs_exist, finish, plan_job
from pipelines.job.progress import Progress
from pipelines.job.transforms import (
    DONE,
    FAILED,
    STEP_ALL_FAILURES,
    STEP_COLLECT_PARTS,
    STEP_LABEL_MAP,
    STEP_MANIFEST_FAILURES,
    STEP_PROCESS_ROWS,
    STEP_WRITE_FAILURES,
    STEP_WRITE_INFO,
    STEP_WRITE_SHARDS,
    CollectParts,
    LabelMap,
    ProcessRows,
    WriteFailures,
    WriteInfo,
    WriteShards,
)
from pipelines.runtime import watchdog
from pipelines.storage import output
from pipelines.storage.gcs import configure_emulator

LOG = logging.getLogger("perfnet.preprocess")


def run_job(config: PreprocessConfig, options: PipelineOptions) -> dict:
    """Runs the job; returns the dataset description it wrote.

    Rows whose part is already in output_dir (from an interrupted or earlier run with the same
    settings) are not processed again; the shards are rebuilt from the parts of every row.
    """
    configure_emulator()  # only with STORAGE_EMULATOR_HOST set (tests, local trials)
    check_inputs_exist(config)  # a typo in a path is reported before anything heavy runs
    # Processes started under this job (Beam's SDK workers in multi_processing mode, the row
    # workers) end with it (`pipelines.runtime.watchdog`).
    before = os.environ.get(watchdog.LAUNCHER_ENV)
    os.environ[watchdog.LAUNCHER_ENV] = str(os.getpid())
    try:
        # One job per output directory, from before any work until the end, however it ends.
        dry_run = options.view_as(TestOptions).dry_run
        with output.OutputLock(config.output_dir, enabled=not dry_run) as lock:
            return _run(config, options, lock)
    finally:
        if before is None:
            os.environ.pop(watchdog.LAUNCHER_ENV, None)
        else:
            os.environ[watchdog.LAUNCHER_ENV] = before


def _run(config: PreprocessConfig, options: PipelineOptions, lock: output.OutputLock) -> dict:
    plan = plan_job(config, options, lock)
    config = plan.config
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    with Progress(config.output_dir, plan.todo_keys, enabled=runner in LOCAL_RUNNERS):
        with beam.Pipeline(options=options) as p:
            processed = p | STEP_PROCESS_ROWS >> ProcessRows(
                plan.todo_rows, config, plan.pose_path, plan.pose_sha
            )
            collected = p | STEP_COLLECT_PARTS >> CollectParts(
                plan.all_rows, config.output_dir, plan.num_shards, processed
            )
            done = collected[DONE]
            labels = done | STEP_LABEL_MAP >> LabelMap(plan.fixed_labels)
            shards = collected.entries | STEP_WRITE_SHARDS >> WriteShards(
                config.output_dir, config.dataset_name, plan.num_shards, labels
            )
            failures = (
                collected[FAILED],
                p | STEP_MANIFEST_FAILURES >> beam.Create(plan.manifest_failures),
            ) | STEP_ALL_FAILURES >> beam.Flatten()
            _ = failures | STEP_WRITE_FAILURES >> WriteFailures(config.output_dir)
            _ = p | STEP_WRITE_INFO >> WriteInfo(
                shards,
                done,
                labels,
                failures,
                static_info=plan.static_info,
                output_dir=config.output_dir,
                num_shards=plan.num_shards,
                dataset_name=config.dataset_name,
            )
    return finish(plan)
