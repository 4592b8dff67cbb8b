"""Processes a job starts end with the job: a launcher killed with SIGKILL leaves no worker.

`pipelines.preprocess.run` names itself in the environment (`LAUNCHER_ENV`), which every process
it starts inherits: Beam's SDK worker processes (multi_processing mode, started through
`/bin/sh`) and the row workers (`use_subprocess=True`). Such a process calls `die_with_launcher`
when it first imports any `pipelines` module (`pipelines/__init__.py`) and again when a row
worker sets up, and from then on a daemon thread ends it within about a second of the launcher.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

LAUNCHER_ENV = "PERFNET_LAUNCHER_PID"  # set by `run`; inherited by every process it starts
_WATCHING = 0  # the pid of the process whose watchdog runs (a fork inherits the module)


def _start_time(pid: int) -> str | None:
    """The start time of process `pid` (clock ticks since boot, from /proc), None if gone: with
    the pid it names one process, even after the pid is reused."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def die_with_launcher() -> None:
    """Ends this worker process soon after the job's launcher (or, outside a job, its parent).

    A worker runs one row at a time in a subprocess (`use_subprocess=True`), of the launcher or,
    in multi_processing mode, of one of Beam's SDK worker processes, which the runner starts
    through `/bin/sh`; a launcher killed with SIGKILL would leave them running, and then blocked
    on their pipes forever. A daemon thread checks every 0.5 s that the launcher named by
    `LAUNCHER_ENV` (the same pid with the same start time) is still there, or where no launcher
    is named, that this process was not re-parented, and if not kills this process. (Linux's
    PR_SET_PDEATHSIG is not used: it fires when the *thread* that started the worker ends, and
    the runner's threads come and go, and it does not reach through `/bin/sh`.)
    """
    global _WATCHING
    if _WATCHING == os.getpid():
        return
    named = os.environ.get(LAUNCHER_ENV, "")
    launcher = int(named) if named.isdigit() and int(named) != os.getpid() else None
    parent = os.getppid()
    started = _start_time(launcher) if launcher else None

    def alive() -> bool:
        if launcher is not None:
            return started is not None and _start_time(launcher) == started
        return os.getppid() == parent and parent != 1

    if not alive():
        os.kill(os.getpid(), signal.SIGKILL)

    def watch():
        while alive():
            time.sleep(0.5)
        gone = f"the job's launcher {launcher}" if launcher else f"its parent {parent}"
        print(
            f"perfnet-preprocess: worker {os.getpid()}: {gone} is gone; exiting",
            file=sys.stderr,
            flush=True,
        )
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()
    _WATCHING = os.getpid()
