"""What the user sees while and after the job runs: the progress line on local runners
(`Progress`, from the parts written) and the closing summary table (`summary_table`), which ends
with what the rows cost (`cost_line`)."""

from __future__ import annotations

import logging
import math
import sys
import threading
import time

from pipelines.storage import output, parts
from schemas.dataset_info import COST_STAGES, CostInfo, DatasetInfo

LOG = logging.getLogger("perfnet.preprocess")

# Kinetics-600's size, for the extrapolations of the cost (the summary, docs/cost.md and
# benchmarks/stage_costs.py): about 480,000 clips of 10 s across its training, validation and
# test splits, rounded up.
KINETICS_600_CLIPS = 500_000
KINETICS_600_CLIP_SECONDS = KINETICS_600_CLIPS * 10.0


class Progress:
    """A progress line every `every_s` seconds on local runs: inputs done of total, frames/s,
    ETA. Counts the parts of this run's rows (`keys`) that appear in output_dir, each row once,
    so it needs nothing from the runner and never counts an earlier run's parts."""

    def __init__(self, output_dir: str, keys: set[str], enabled: bool, every_s: float = 15.0):
        self._dir = parts.parts_dir(output_dir)
        self._keys = set(keys)
        self._total = len(self._keys)
        self._enabled = enabled and self._total > 0
        self._every = every_s
        self._stop = threading.Event()
        self._thread = None
        self._seen: set[str] = set()
        self._frames = 0
        self._failed = 0

    def __enter__(self):
        if self._enabled:
            self._start = time.monotonic()
            self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
        return False

    def _loop(self):
        while not self._stop.wait(self._every):
            try:
                print(self.line(), file=sys.stderr, flush=True)
            except Exception as e:  # noqa: BLE001 - progress must never fail the job
                LOG.debug("progress: %s", e)

    def line(self) -> str:
        for path in output.list_files(output.join(self._dir, "*.json")):
            key, suffix = parts.key_of(path)
            if key not in self._keys or key in self._seen:
                continue  # another run's part, run.json, or a row already counted
            self._seen.add(key)
            if suffix == parts.FAILURE_SUFFIX:
                self._failed += 1
            else:
                self._frames += sum(c["frames"] for c in output.read_json(path)["clips"])
        done = len(self._seen)
        elapsed = time.monotonic() - self._start
        rate = self._frames / elapsed if elapsed > 0 else 0.0
        eta = max(0.0, elapsed / done * (self._total - done)) if done else float("nan")
        eta_text = "?" if eta != eta else f"{int(eta // 60)}m{int(eta % 60):02d}s"
        return (
            f"progress: {done}/{self._total} inputs ({self._failed} failed), "
            f"{rate:.1f} frames/s, elapsed {int(elapsed // 60)}m{int(elapsed % 60):02d}s, "
            f"ETA {eta_text}"
        )


def summary_table(info: dict, output_dir: str) -> str:
    """A short human-readable summary of a dataset description."""
    lines = [
        f"output: {output_dir}",
        f"{'split':<12}{'clips':>7}{'frames':>9}{'persons/frame':>15}{'MB':>9}{'shards':>8}"
        f"{'frames with a person':>22}",
    ]
    for split, s in info["splits"].items():
        ppf = s["persons"] / s["frames"] if s["frames"] else 0.0
        pose = info.get("pose", {}).get(split)
        # From the counts, as the validator does (the stored share is rounded to 4 places).
        share = "-"
        if pose:
            with_person = pose["frames_with_person"] / pose["frames"] if pose["frames"] else 0.0
            share = f"{100 * with_person:.1f} %"
        lines.append(
            f"{split:<12}{s['clips']:>7}{s['frames']:>9}{ppf:>15.2f}"
            f"{s['bytes'] / 1e6:>9.1f}{s['num_shards']:>8}{share:>22}"
        )
    inputs = info["inputs"]
    lines.append(
        f"inputs: {inputs['rows']} rows, {inputs['written']} written, {inputs['failed']} failed"
        + (f" {inputs['failed_by_stage']}" if inputs["failed"] else "")
    )
    if inputs["failed"]:
        lines.append(f"failures: {output.join(output_dir, info['failures'])}")
    cost = DatasetInfo.from_json(info).cost
    if cost is not None:
        lines.append(cost_line(cost))
    return "\n".join(lines)


def cost_line(cost: CostInfo) -> str:
    """The summary's line on what the rows written cost: core-seconds per clip-second in all and
    per stage (1 place, in `COST_STAGES` order), the rows and clip-seconds measured, the rows
    whose cost is unknown, and Kinetics-600 at this rate (`KINETICS_600_CLIP_SECONDS`) in
    core-hours (2 significant digits)."""
    unknown = cost.rows_without_cost or 0
    without = f"{_count(unknown, 'row')} of an older version without figures"
    rate = cost.core_seconds_per_clip_second
    if not cost.rows or rate is None:
        why = without if unknown else ("no clip-second measured" if cost.rows else "no row written")
        return f"cost: unknown ({why})"
    stages = cost.stages or {}
    names = [s for s in COST_STAGES if s in stages] + sorted(set(stages) - set(COST_STAGES))
    per_stage = ", ".join(
        f"{s} {stages[s].core_seconds_per_clip_second:.1f}"
        for s in names
        if stages[s].core_seconds_per_clip_second is not None
    )
    hours = rate * KINETICS_600_CLIP_SECONDS / 3600
    return (
        f"cost: {rate:.1f} core-s per clip-second ({per_stage}) over {_count(cost.rows, 'row')}, "
        f"{cost.clip_seconds:,.1f} clip-s"
        + (f" ({without} not counted)" if unknown else "")
        + f"; Kinetics-600 at this rate: ~{_two_digits(hours)} core-hours"
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _two_digits(value: float) -> str:
    """`value` (>= 0) rounded to 2 significant digits, with thousands separators: 6883 ->
    '6,900', 0.573 -> '0.57'."""
    if value <= 0:
        return "0"
    places = 1 - math.floor(math.log10(value))
    return f"{round(value, places):,.{max(0, places)}f}"
