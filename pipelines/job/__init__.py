"""The preprocessing job behind the command line (`pipelines.preprocess`).

- `config`: the typed job config (`PreprocessConfig`), the command line parsed once; it hands
  the clip processor its few settings (`PreprocessConfig.clip_settings`).
- `launch`: the checks and preparations before the graph (inputs, pose model, output directory
  and its lock, staging, remote paths, threads per worker), gathered in a `JobPlan`.
- `transforms`: the DoFns and the named PTransforms of the job's phases.
- `run`: `run_job(config, options)`, the graph of those phases.
- `info`: the dataset description (`dataset_info.json`).
- `progress`: the progress line and the closing summary table.

`run_job` is exported here. It loads on first use, so that importing `pipelines.job.config`
does not import Beam's pipeline machinery.
"""

from __future__ import annotations

__all__ = ["run_job"]


def __getattr__(name: str):
    if name == "run_job":
        from pipelines.job.run import run_job

        return run_job
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
