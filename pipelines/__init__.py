"""Beam wiring: manifests, decoding, the per-video DoFn and the `run()` entry point."""

import os as _os

# A process started under a job (named in its environment) ends with the job's launcher.
if _os.environ.get("PERFNET_LAUNCHER_PID", str(_os.getpid())) != str(_os.getpid()):
    from pipelines import watchdog as _watchdog

    _watchdog.die_with_launcher()
