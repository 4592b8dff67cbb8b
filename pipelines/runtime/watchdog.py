"""Processes a job starts end with the job: a launcher killed with SIGKILL leaves no worker.

`pipelines.preprocess.run` names itself in the environment (`LAUNCHER_ENV`), which every process
it starts inherits: Beam's SDK worker processes (multi_processing mode, started through
`/bin/sh`) and the row workers (`use_subprocess=True`). The job's DoFns call `die_with_launcher`
in their setup, and from then on a daemon thread ends that process within about a second of the
launcher. Nothing happens at import.
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
    """The start time of process `pid` (clock ticks since boot, from /proc), None if it is gone
    or a zombie (killed, not yet reaped: where the container's init does not reap, for ever).
    With the pid it names one process, even after the pid is reused."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return fields[19]


def die_with_launcher() -> None:
    """From now on, ends this process soon after the job's launcher ends (SIGKILL to itself).

    Called in the setup of the job's DoFns, so it runs in every process that does the job's work:
    a row worker (`use_subprocess=True`, a subprocess of the launcher or, in multi_processing
    mode, of one of Beam's SDK worker processes, which the runner starts through `/bin/sh`) and
    the SDK workers themselves. A launcher killed with SIGKILL would leave them running, and then
    blocked on their pipes forever. A daemon thread checks every 0.5 s that the launcher named by
    `LAUNCHER_ENV` is still there (the same pid with the same start time, so a reused pid does not
    count). Does nothing in the launcher itself, outside a job (no launcher named), or a second
    time in one process. (Linux's PR_SET_PDEATHSIG is not used: it fires when the *thread* that
    started the process ends, and the runner's threads come and go, and it does not reach
    through `/bin/sh`.)
    """
    global _WATCHING
    named = os.environ.get(LAUNCHER_ENV, "")
    if _WATCHING == os.getpid() or not named.isdigit() or int(named) == os.getpid():
        return
    launcher = int(named)
    started = _start_time(launcher)

    def alive() -> bool:
        return started is not None and _start_time(launcher) == started

    if not alive():
        os.kill(os.getpid(), signal.SIGKILL)

    def watch():
        while alive():
            time.sleep(0.5)
        try:  # stderr may be a pipe the dead launcher read: a broken pipe must not stop us
            print(
                f"perfnet-preprocess: worker {os.getpid()}: the job's launcher {launcher} is "
                "gone; exiting",
                file=sys.stderr,
                flush=True,
            )
        except Exception:  # noqa: BLE001
            pass
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="die-with-launcher", daemon=True).start()
    _WATCHING = os.getpid()
