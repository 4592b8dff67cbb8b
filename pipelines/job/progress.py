"""What the user sees while and after the job runs: the progress line on local runners
(`Progress`, from the parts written) and the closing summary table (`summary_table`)."""

from __future__ import annotations

import logging
import sys
import threading
import time

from pipelines.storage import output, parts

LOG = logging.getLogger("perfnet.preprocess")


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
        share = f"{100 * pose['share_of_frames_with_person']:.1f} %" if pose else "-"
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
    return "\n".join(lines)
