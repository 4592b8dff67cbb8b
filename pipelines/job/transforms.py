"""The job's Beam phases: named `beam.PTransform`s (each an `expand()`) and the DoFns they run.

The graph (`pipelines.job.run.run_job`) reads as its phases:

- `ProcessRows`: the rows still to do -> one part per row (its records or its failure), each row
  in a worker subprocess with a timeout; yields the count of rows processed, a barrier.
- `CollectParts`: every row of the manifest -> its clips' shard entries (main output), its
  (key, label, cost) when written (`DONE`) or its failure (`FAILED`), once the barrier has
  passed.
- `LabelMap`: the labels of the rows written -> the class index map (`info.final_label_map`).
- `WriteShards`: shard entries -> one TFRecord file per (split, shard), records in clip-id order,
  the class index set; yields one summary per shard.
- `WriteFailures`: failure rows -> `failures/failures-00000-of-00001.jsonl`.
- `WriteInfo`: the summaries -> `dataset_info.json`, written last.

The step names, of the phases and of the steps inside them, are the `STEP_*` constants here.
"""

from __future__ import annotations

import itertools
import logging
import time
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.failures import Failure
from pipelines.job.config import PreprocessConfig
from pipelines.job.info import final_label_map, write_info
from pipelines.manifests import ClipSpec
from pipelines.runtime import watchdog
from pipelines.storage import output, parts
from pipelines.storage.gcs import configure_emulator
from schemas import media_sequence as ms

if TYPE_CHECKING:
    from pipelines.stages.clip import ClipSettings

LOG = logging.getLogger("perfnet.preprocess")


# Tags of CollectParts' outputs.
FAILED = "failed"
DONE = "done"
# Step names (one place): the phases as `run_job` applies them, and the steps inside them that
# runners, users and tests see by name (`ProcessRows/ProcessVideos`, ...).
STEP_PROCESS_ROWS = "ProcessRows"
STEP_COLLECT_PARTS = "CollectParts"
STEP_LABEL_MAP = "LabelMap"
STEP_WRITE_SHARDS = "WriteShards"
STEP_MANIFEST_FAILURES = "ManifestFailures"
STEP_ALL_FAILURES = "AllFailures"
STEP_WRITE_FAILURES = "WriteFailures"
STEP_WRITE_INFO = "WriteInfo"
STEP_SPREAD = "Spread"  # in ProcessRows
STEP_PROCESS = "ProcessVideos"  # in ProcessRows: one row per worker subprocess
STEP_GROUP = "GroupShards"  # in WriteShards


# ---------------------------------------------------------------------------------------------
# DoFns.
# ---------------------------------------------------------------------------------------------
class ProcessVideoFn(beam.DoFn):
    """One manifest row -> its part (clips) or its failure row, never both.

    Writes the part itself (pipelines/storage/parts.py) and yields (DONE or FAILED, the row's key).
    Writing is idempotent: a bundle the runner retries rewrites the same part files. Runs in a
    worker subprocess (see `ProcessRows`), so that a native crash or a hang costs one row.

    Args:
      settings: the clip processor's settings, built once by the launcher
        (`PreprocessConfig.clip_settings`).
      output_dir: the job's output directory, where the parts go.
      pose_model_path, pose_sha256: the pose model as the workers read it, and its sha256.
    """

    def __init__(
        self,
        settings: ClipSettings,
        output_dir: str,
        pose_model_path: str | None,
        pose_sha256: str,
    ):
        self._settings = settings
        self._output_dir = output_dir
        self._model_path = pose_model_path
        self._model_sha = pose_sha256
        self._processor = None

    def setup(self):
        from pipelines.stages.clip import ClipProcessor

        _worker_setup()

        threads = self._settings.threads_per_worker
        if threads:
            import cv2

            cv2.setNumThreads(threads)
        model = None
        if ms.carries_keypoints(self._settings.modalities):
            from pipelines.stages.pose import load_pose_model

            model, sha = load_pose_model(self._model_path)
            if sha != self._model_sha:
                raise ValueError(
                    f"pose_model={self._model_path!r}: sha256 {sha} differs from the launcher's "
                    f"{self._model_sha}; the file changed while the job ran"
                )
        self._processor = ClipProcessor(self._settings, model)

    def process(self, spec: ClipSpec):
        from pipelines.stages.clip import CostClock

        t0 = time.perf_counter()
        key = parts.input_key(spec)
        out = self._output_dir
        clock = CostClock()  # the row's CPU time per stage, kept in its part's meta
        try:
            # Clips are written as they are made; a write error is not the input's fault and
            # propagates (the runner's dead letter records it as stage `process`).
            clips = _Processing(self._processor.iter_clips(spec, clock))
            meta = parts.write_done(out, key, spec, clips, cost=clock.cost)
        except _ProcessingError as e:  # every input ends as records or as one failure row
            failure = self._processor.failure(spec, e.cause)
            LOG.warning("failed %s at %s: %s", spec.data_path, failure.stage, failure.error)
            parts.write_failure(out, key, failure)
            yield FAILED, key, {"stage": failure.stage}
            return
        frames = sum(c["frames"] for c in meta["clips"])
        per_frame = int(1000 * (time.perf_counter() - t0) / frames) if frames else 0
        yield DONE, key, {"clips": len(meta["clips"]), "frames": frames, "ms_per_frame": per_frame}


class _ProcessingError(Exception):
    """An error raised while making an input's clips (as opposed to while writing them)."""

    def __init__(self, cause: BaseException):
        super().__init__(repr(cause))
        self.cause = cause


class _Processing:
    """Iterates a clip generator, wrapping its errors in _ProcessingError."""

    def __init__(self, clips):
        self._clips = clips

    def __iter__(self):
        while True:
            try:
                clip = next(self._clips)
            except StopIteration:
                return
            except Exception as e:  # noqa: BLE001 - classified by ClipProcessor.failure
                raise _ProcessingError(e) from e
            yield clip


def count_processed(element):
    """Beam counters for a processed row, updated in the launching worker (the row itself ran in
    a subprocess, whose counters would be lost)."""
    status, _, stats = element
    if status == DONE:
        Metrics.counter("perfnet", "inputs_written").inc()
        Metrics.counter("perfnet", "clips_written").inc(stats["clips"])
        Metrics.counter("perfnet", "frames_written").inc(stats["frames"])
        Metrics.distribution("perfnet", "ms_per_frame").update(stats["ms_per_frame"])
    else:
        Metrics.counter("perfnet", f"failed_{stats['stage']}").inc()
    return element


class RecordCrashFn(beam.DoFn):
    """(row, error) of a row whose worker process crashed, timed out, or raised outside the
    stages -> its failure row (stage `process`)."""

    def __init__(self, output_dir: str, timeout_s: float):
        self._output_dir = output_dir
        self._timeout_s = timeout_s

    def process(self, dead_letter):
        spec, (exc_type, exc_repr, _) = dead_letter[0], dead_letter[1]
        if issubclass(exc_type, TimeoutError):
            error = TimeoutError(
                f"processing took longer than {self._timeout_s:.0f} s (--video_timeout_s); "
                "the worker process was stopped"
            )
        elif issubclass(exc_type, BrokenProcessPool):
            error = RuntimeError(f"the worker process died while processing it: {exc_repr}")
        else:  # raised outside the stages, e.g. while writing the part
            error = RuntimeError(f"could not complete the row: {exc_repr}")
        failure = Failure.from_exception(
            ms.clip_id(spec.media_id, spec.start_us), spec.data_path, "process", error
        )
        LOG.warning("failed %s: %s", spec.data_path, failure.error)
        key = parts.input_key(spec)
        parts.write_failure(self._output_dir, key, failure)
        yield FAILED, key, {"stage": "process"}


def _worker_setup() -> None:
    """What every process doing the job's work does first (the DoFns' setup): end with the
    job's launcher (`pipelines.runtime.watchdog`), and skip Beam's credential lookup where a GCS
    emulator is asked for (`pipelines.storage.gcs`)."""
    watchdog.die_with_launcher()
    configure_emulator()


class WatchLauncherFn(beam.DoFn):
    """Passes elements through; its setup makes the worker process end with the job's launcher
    (`pipelines.runtime.watchdog`). Placed in the stages that read rows and before the per-row
    work, so every SDK worker process of the job is watched (the other DoFns watch from their
    setup)."""

    def setup(self):
        _worker_setup()

    def process(self, element):
        yield element


class CollectPartFn(beam.DoFn):
    """A manifest row -> its clips' shard entries (main) and (key, label, cost) (DONE), or its
    failure row (FAILED). The cost is the part's `RowCost`, None for a part without one."""

    def __init__(self, output_dir: str, num_shards: dict[str, int]):
        self._output_dir = output_dir
        self._num_shards = num_shards

    def setup(self):
        _worker_setup()

    def process(self, spec: ClipSpec, processed: int):
        del processed  # a barrier: this runs once every row is processed
        key = parts.input_key(spec)
        meta = parts.read_meta(self._output_dir, key)
        if meta is None:
            failure = parts.read_failure(self._output_dir, key)
            if failure is None:
                raise RuntimeError(f"row {spec.source} ({spec.data_path}) has no part: not run")
            yield beam.pvalue.TaggedOutput(FAILED, failure)
            return
        yield beam.pvalue.TaggedOutput(DONE, (key, spec.label, parts.read_cost(meta)))
        n = self._num_shards[spec.split]
        for offset, clip in zip(parts.record_offsets(meta), meta["clips"]):
            entry = (clip["id"], key, offset, clip, spec.label)
            yield (spec.split, output.shard_of(clip["id"], n)), entry


class WriteShardFn(beam.DoFn):
    """((split, shard), entries) -> one TFRecord file, records in id order; yields a summary."""

    def __init__(self, output_dir: str, dataset_name: str, num_shards: dict[str, int]):
        self._output_dir = output_dir
        self._dataset_name = dataset_name
        self._num_shards = num_shards

    def setup(self):
        _worker_setup()

    def process(self, element, label_map: dict[str, int]):
        (split, shard), entries = element
        entries = sorted(entries)  # by clip id: the same file on every run and runner
        path = output.shard_path(
            self._output_dir, split, self._dataset_name, shard, self._num_shards[split]
        )

        frames_with_person = 0
        written = 0

        def records():
            # One record in memory at a time, read by its offset in its part; a row's clips are
            # usually adjacent (their ids share a prefix), so each part file is opened once. The
            # class index is set here: a part does not depend on the other rows' labels.
            nonlocal frames_with_person, written
            for key, run in itertools.groupby(entries, key=lambda e: e[1]):
                run = list(run)
                path = parts.records_path(self._output_dir, key)
                offsets = [e[2] for e in run]
                for entry, data in zip(run, output.read_tfrecords_at(path, offsets), strict=True):
                    data = ms.with_label_index(data, label_map[entry[4]])
                    written += len(data)
                    # Counted from the record as written: the same on a resumed run.
                    steps = ms.int64_steps(data, ms.REGION_NUM_REGIONS_KEY)
                    frames_with_person += sum(1 for n in steps if n and n[0] > 0)
                    yield data

        output.write_tfrecords(path, records())
        clips = [e[3] for e in entries]
        yield {
            "split": split,
            "shard": output.relative(self._output_dir, path),
            "clips": len(clips),
            "frames": sum(c["frames"] for c in clips),
            "persons": sum(c["persons"] for c in clips),
            "frames_with_person": frames_with_person,
            "duration_us": sum(c["duration_us"] for c in clips),
            "bytes": written,
        }


# ---------------------------------------------------------------------------------------------
# The phases.
# ---------------------------------------------------------------------------------------------
class ProcessRows(beam.PTransform):
    """PBegin -> PCollection of one int: the rows processed (a barrier for `CollectParts`).

    Reads the staged rows still to do (`todo_rows`, JSON lines of `ClipSpec`), spreads them over
    the workers and runs `ProcessVideoFn` on each in a worker subprocess with a timeout of
    `config.video_timeout_s`; a row whose worker crashed or hung is recorded as its failure.
    """

    def __init__(self, todo_rows: str, config: PreprocessConfig, pose_path, pose_sha: str):
        super().__init__()
        self._todo_rows = todo_rows
        self._config = config
        self._pose_path = pose_path
        self._pose_sha = pose_sha

    def expand(self, pbegin):
        config = self._config
        processed, dead = (
            pbegin
            | "ReadTodo" >> beam.io.ReadFromText(self._todo_rows)
            | "WatchReading" >> beam.ParDo(WatchLauncherFn())
            | "ParseTodo" >> beam.Map(ClipSpec.from_json)
            | STEP_SPREAD >> beam.Reshuffle()
            | "WatchLauncher" >> beam.ParDo(WatchLauncherFn())
            | STEP_PROCESS
            >> beam.ParDo(
                ProcessVideoFn(
                    config.clip_settings(), config.output_dir, self._pose_path, self._pose_sha
                )
            ).with_exception_handling(use_subprocess=True, timeout=config.video_timeout_s)
        )
        crashed = dead | "RecordCrashes" >> beam.ParDo(
            RecordCrashFn(config.output_dir, config.video_timeout_s)
        )
        return (
            (processed, crashed)
            | "Processed" >> beam.Flatten()
            | "Counters" >> beam.Map(count_processed)
            | "CountProcessed" >> beam.combiners.Count.Globally()
        )


class CollectParts(beam.PTransform):
    """PBegin -> tagged outputs: `entries` ((split, shard), entry), `DONE` (key, label, cost:
    `RowCost` or None) and `FAILED` (Failure), for every row of the staged `all_rows`, after
    `processed` is ready."""

    def __init__(self, all_rows: str, output_dir: str, num_shards: dict[str, int], processed):
        super().__init__()
        self._all_rows = all_rows
        self._output_dir = output_dir
        self._num_shards = num_shards
        self._processed = processed

    def expand(self, pbegin):
        return (
            pbegin
            | "ReadRows" >> beam.io.ReadFromText(self._all_rows)
            | "ParseRows" >> beam.Map(ClipSpec.from_json)
            | "Collect"
            >> beam.ParDo(
                CollectPartFn(self._output_dir, self._num_shards),
                processed=beam.pvalue.AsSingleton(self._processed),
            ).with_outputs(FAILED, DONE, main="entries")
        )


class LabelMap(beam.PTransform):
    """PCollection of (key, label, cost) of the rows written -> one dict label -> class index."""

    def __init__(self, fixed: dict[str, int] | None):
        super().__init__()
        self._fixed = fixed

    def expand(self, done):
        return (
            done
            | "DoneLabels" >> beam.Map(lambda done: done[1])
            | "LabelList" >> beam.combiners.ToList()
            | "FinalMap" >> beam.Map(final_label_map, fixed=self._fixed)
        )


class WriteShards(beam.PTransform):
    """PCollection of ((split, shard), entry) -> one summary dict per shard file written."""

    def __init__(self, output_dir: str, dataset_name: str, num_shards: dict[str, int], labels):
        super().__init__()
        self._fn = WriteShardFn(output_dir, dataset_name, num_shards)
        self._labels = labels

    def expand(self, entries):
        return (
            entries
            | STEP_GROUP >> beam.GroupByKey()
            | "Write" >> beam.ParDo(self._fn, label_map=beam.pvalue.AsSingleton(self._labels))
        )


class WriteFailures(beam.PTransform):
    """PCollection of Failure -> the failures file of `output_dir` (one JSON object a line)."""

    def __init__(self, output_dir: str):
        super().__init__()
        self._output_dir = output_dir

    def expand(self, failures):
        return (
            failures
            | "FailureJson" >> beam.Map(Failure.to_json)
            | "Write"
            >> beam.io.WriteToText(
                output.join(self._output_dir, output.FAILURES_DIR, output.FAILURES_PREFIX),
                file_name_suffix=".jsonl",
                num_shards=1,
            )
        )


class WriteInfo(beam.PTransform):
    """PBegin -> `dataset_info.json` (`info.write_info`), once the shards, the rows written, the
    class map and the failures' stages are all known."""

    def __init__(self, shards, done, labels, failures, **info_args):
        super().__init__()
        self._inputs = (shards, done, labels, failures)
        self._info_args = info_args

    def expand(self, pbegin):
        shards, done, labels, failures = self._inputs
        return (
            pbegin
            | "Trigger" >> beam.Create([None])
            | "Write"
            >> beam.FlatMap(
                write_info,
                shards=beam.pvalue.AsList(shards),
                done=beam.pvalue.AsList(done),
                label_map=beam.pvalue.AsSingleton(labels),
                failures=beam.pvalue.AsList(failures | "Stages" >> beam.Map(lambda f: f.stage)),
                **self._info_args,
            )
        )
