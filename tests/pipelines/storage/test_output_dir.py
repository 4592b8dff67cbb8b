"""The output directory is the job's and the user's: one job at a time, only the job's own files
deleted, no worker left behind by a killed launcher."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from pipelines.preprocess import main, run
from pipelines.storage import output, parts
from tests.conftest import write_video

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
RGB = ["--runner=DirectRunner", "--modalities=rgb", "--dataset_name=x"]
# A row that takes several seconds: reference TV-L1 flow on 60 frames of 320x240.
SLOW = ["--runner=DirectRunner", "--modalities=rgb,flow", "--flow_preset=reference"]


def _manifest(tmp_path, names, frames=5, size=(64, 48), name="m.csv") -> str:
    rows = []
    for n in names:
        video = write_video(tmp_path / f"{n}.mp4", frames, 10.0, size, value=lambda i: i * 37 % 250)
        rows.append(f"{video},a,,,{n}\n")
    path = tmp_path / name
    path.write_text("path,label,start,end,id\n" + "".join(rows))
    return str(path)


def _cli(*args):
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.preprocess", *args],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip


def _wait(cond, proc, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    """The pids of the live (not zombie) processes whose parent is `pid`, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _state(int(entry)) not in (None, "Z"):
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _state(pid: int) -> str | None:
    """The process state letter, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def _tree(root) -> dict[str, bytes]:
    return {
        os.path.relpath(os.path.join(d, n), root): open(os.path.join(d, n), "rb").read()
        for d, _, names in os.walk(root)
        for n in names
    }


@pytest.mark.slow
def test_a_second_job_is_refused_and_a_killed_jobs_lock_is_taken_over(tmp_path, capsys, caplog):
    manifest = _manifest(tmp_path, ["slow"], frames=60, size=(320, 240))
    out = tmp_path / "out"
    args = [f"--input={manifest}", f"--output_dir={out}", *SLOW]
    first = _cli(*args)
    lock = out / ".parts" / "lock"
    try:
        _wait(lambda: lock.exists() and lock.stat().st_size > 0, first)
        # A second job into the same directory: refused before any work, naming the holder.
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "is in use by another job" in err and f"pid {first.pid}," in err, err
        assert "host " in err and "started " in err
        assert first.poll() is None
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # a killed job: its lock is left behind
        first.wait()
    assert lock.stat().st_size > 0
    with caplog.at_level(logging.WARNING, logger="perfnet.output"):
        info = run(args)
    assert f"taking over the lock of a job that is gone (host {os.uname().nodename}" in caplog.text
    assert f"pid {first.pid}," in caplog.text
    assert info["inputs"]["written"] == 1
    assert not lock.exists()  # released on a normal exit
    # No row holds both a part and a failure.
    metas = {p[: -len(parts.META_SUFFIX)] for p in output.list_files(f"{out}/.parts/*.meta.json")}
    fails = output.list_files(f"{out}/.parts/*{parts.FAILURE_SUFFIX}")
    assert not metas & {p[: -len(parts.FAILURE_SUFFIX)] for p in fails}
    # Released on an error too: the next job neither waits nor takes anything over.
    with pytest.raises(ValueError, match="jpeg_quality"):
        run([*args, "--jpeg_quality=50"])
    assert not lock.exists()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="perfnet.output"):
        run(args)
    assert "taking over" not in caplog.text


@pytest.mark.slow
def test_the_users_files_survive_runs_reruns_and_overwrite(tmp_path):
    out = tmp_path / "out"
    mine = {
        "backup/x-00000-of-00001.tfrecord": b"my backup",
        "notes/x-plan.txt": b"my plan",
        "photos/x-001.jpg": b"\xff\xd8 a photo",
        "train/other-file.txt": b"my notes on train",
        "failures/x-notes.txt": b"my failure notes",
    }
    for name, data in mine.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)

    def users_files():
        tree = _tree(out)
        return {n: tree.get(n) for n in mine}

    manifest = _manifest(tmp_path, ["a", "b", "c"])
    args = [f"--input={manifest}", f"--output_dir={out}", *RGB]
    run([*args, "--num_shards=1"])
    assert users_files() == mine
    assert (out / "train/x-00000-of-00001.tfrecord").exists()
    # Another shard count: the job's old shard goes, the user's look-alike stays.
    info = run([*args, "--num_shards=2"])
    assert users_files() == mine
    assert not (out / "train/x-00000-of-00001.tfrecord").exists()
    assert info["splits"]["train"]["shards"] == [
        "train/x-00000-of-00002.tfrecord", "train/x-00001-of-00002.tfrecord"
    ]  # fmt: skip
    # --overwrite starts over: every file of the job's replaced, none of the user's touched.
    before = {p: os.stat(p).st_mtime_ns for p in output.list_files(f"{out}/train/x-*.tfrecord")}
    run([*args, "--num_shards=3", "--overwrite"])
    assert users_files() == mine
    assert output.list_files(f"{out}/train/x-*") == [
        f"{out}/train/x-0000{i}-of-00003.tfrecord" for i in range(3)
    ]
    assert not set(before) & set(output.list_files(f"{out}/train/*"))
    assert len(output.list_files(f"{out}/.parts/*.meta.json")) == 3
    assert output.list_files(f"{out}/failures/*") == [
        f"{out}/failures/failures-00000-of-00001.jsonl", f"{out}/failures/x-notes.txt"
    ]  # fmt: skip


def test_a_users_file_at_a_name_the_job_writes_is_refused(tmp_path):
    out = tmp_path / "out"
    (out / "train").mkdir(parents=True)
    theirs = out / "train" / "x-00000-of-00001.tfrecord"
    theirs.write_bytes(b"not the job's")
    args = [f"--input={_manifest(tmp_path, ['a'])}", f"--output_dir={out}", "--num_shards=1"]
    for extra in ([], ["--overwrite"]):
        with pytest.raises(FileExistsError, match="train/x-00000-of-00001.tfrecord"):
            run([*args, *RGB, *extra])
        assert theirs.read_bytes() == b"not the job's"


def test_an_unsafe_dataset_name_is_refused(tmp_path):
    out = tmp_path / "out"
    manifest = _manifest(tmp_path, ["a"])
    run([f"--input={manifest}", f"--output_dir={out}", *RGB, "--num_shards=1"])
    shards = _tree(out / "train")
    for name in ("*", "x*", "a?b", "-x", "x[0]", "x" * 101):
        args = [f"--input={manifest}", f"--output_dir={out}", "--modalities=rgb"]
        with pytest.raises(ValueError, match="dataset_name"):
            run([*args, f"--dataset_name={name}", "--overwrite"])
    assert _tree(out / "train") == shards


def _descendants(pid: int) -> list[int]:
    """The live processes below `pid`, children first."""
    out, todo = [], [pid]
    while todo:
        kids = _children(todo.pop())
        out += kids
        todo += kids
    return out


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["in_memory", "multi_processing"])
def test_a_worker_dies_with_its_launcher(tmp_path, mode):
    """Row workers, and in multi_processing mode Beam's SDK worker processes too."""
    manifest = _manifest(tmp_path, ["slow"], frames=60, size=(320, 240))
    extra = [] if mode == "in_memory" else [
        "--direct_running_mode=multi_processing", "--direct_num_workers=2"]  # fmt: skip
    launcher = _cli(f"--input={manifest}", f"--output_dir={tmp_path / 'out'}", *SLOW, *extra)
    workers: list[int] = []
    try:

        def worker_started():  # a row worker: the launcher's child, or in multi_processing
            workers[:] = _descendants(launcher.pid)  # mode the child of an SDK worker process
            if not extra:
                return bool(workers)
            sdk = [w for w in workers if _cmdline(w).startswith(sys.executable)]
            return any(_children(w) for w in sdk)

        _wait(worker_started, launcher)
        time.sleep(1.0)  # into the row
        workers[:] = _descendants(launcher.pid)
        os.kill(launcher.pid, signal.SIGKILL)  # the launcher only, not its process group
        launcher.wait()
        deadline = time.monotonic() + 5
        while any(_state(w) not in (None, "Z") for w in workers):
            assert time.monotonic() < deadline, f"worker {workers} outlived its launcher"
            time.sleep(0.1)
    finally:
        for w in workers:
            if _state(w) not in (None, "Z"):
                os.kill(w, signal.SIGKILL)
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
