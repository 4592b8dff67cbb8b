"""A quiet terminal: native libraries' log lines held back from stderr unless asked for.

TensorFlow, absl, gRPC and LiteRT write log lines from C++ straight to file descriptor 2, some
before any logging setting can reach them (TensorFlow's import prints "All log messages before
absl::InitializeLog() is called are written to STDERR" and its CPU notes whatever
`TF_CPP_MIN_LOG_LEVEL` says), and every Beam worker process does it again. `native_logs_filtered`
puts a pipe behind descriptor 2 for the duration of a command: a thread copies every line to the
real stderr except those of the native loggers' formats (`NATIVE_NOISE`), which go to a log file
when one is given. Child processes (Beam's workers) inherit the pipe, so their lines pass through
the same filter. Python tracebacks, warnings and the job's own messages are never held back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading

# Lines that native code writes on its own: glog/absl's "I1202 06:31:26.554833 22209 file.cc:71]"
# (info and warning levels), TensorFlow's import-time notes, LiteRT's delegate note, and CUDA
# probing on machines without a GPU.
NATIVE_NOISE = re.compile(
    r"^(?:[IW]\d{4} [\d:.]+ +\d+ [\w./-]+:\d+\] "
    r"|E\d{4} [\d:.]+ +\d+ cuda_\w+\.cc:\d+\] "
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|To enable the following instructions: "
    r"|(?:INFO: )+Created TensorFlow Lite XNNPACK delegate)"
)
# Python loggers whose INFO and WARNING lines are Beam's internals, not the job's.
CHATTY_LOGGERS = ("apache_beam", "absl")


def is_native_noise(line: str) -> bool:
    """True for a line of a native library's own logging (`NATIVE_NOISE`)."""
    return NATIVE_NOISE.match(line) is not None


@contextlib.contextmanager
def native_logs_filtered(verbose: bool = False, log_file: str | None = None):
    """For the duration: native log lines on stderr go to `log_file` (or nowhere), the rest on.

    Args:
      verbose: pass everything through unchanged (and leave Beam's loggers at their levels).
      log_file: where the held-back lines go (appended), or None to drop them.
    """
    if verbose:
        yield
        return
    saved_levels = {name: logging.getLogger(name).level for name in CHATTY_LOGGERS}
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    sys.stderr.flush()
    real_fd = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    sink = open(log_file, "a", encoding="utf-8", errors="replace") if log_file else None  # noqa: SIM115
    thread = threading.Thread(target=_copy, args=(read_fd, real_fd, sink), daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(real_fd, 2)  # closes the pipe's last write end held by this process
        thread.join(timeout=5.0)  # children still holding the pipe keep it open: do not wait
        if not thread.is_alive():  # else the thread may still write to it: leave it open
            os.close(real_fd)
        if sink is not None:
            sink.close()
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)


def _copy(read_fd: int, real_fd: int, sink) -> None:
    """Copies lines from the pipe to the real stderr, native log lines to `sink`."""
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        pending = b""
        while True:
            try:
                chunk = pipe.read(65536)
            except OSError:
                break
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                _emit(raw + b"\n", real_fd, sink)
        if pending:
            _emit(pending, real_fd, sink)


def _emit(raw: bytes, real_fd: int, sink) -> None:
    if is_native_noise(raw.decode("utf-8", "replace")):
        if sink is not None:
            sink.write(raw.decode("utf-8", "replace"))
            sink.flush()
        return
    try:
        os.write(real_fd, raw)
    except OSError:
        pass
