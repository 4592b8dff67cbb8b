"""Deterministic shards, resumable and incremental runs: a killed run loses and repeats nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from pipelines import assets
from pipelines.storage import output

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
ARGS = ["--runner=DirectRunner", "--modalities=rgb,pose", "--num_shards=2", "--dataset_name=r"]


def _manifest(path, rows: int) -> str:
    video = assets.sample_video_path("pose2sim_multi_cam01.mp4")
    lines = ["path,label,start,end,split,id"]
    for i in range(rows):
        split = "validation" if i % 3 == 2 else "train"
        lines.append(f"{video},walk{i % 2},{0.1 * i:.1f},{0.1 * i + 0.5:.1f},{split},v{i}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _shards(out) -> dict[str, bytes]:
    files = output.list_files(f"{out}/*/r-*.tfrecord")
    return {os.path.relpath(f, out): open(f, "rb").read() for f in files}


def _cli(*args, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.preprocess", *args, *ARGS],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw,
    )  # fmt: skip


@pytest.fixture(scope="module")
def reference(tmp_path_factory, assets_ready):
    from pipelines.preprocess import run

    tmp = tmp_path_factory.mktemp("resume")
    manifest = _manifest(tmp / "m.csv", 6)
    run([f"--input={manifest}", f"--output_dir={tmp / 'a'}", *ARGS])
    return tmp, manifest, _shards(tmp / "a")


@pytest.mark.slow
def test_two_runs_give_the_same_shards_byte_for_byte(reference):
    from pipelines.preprocess import run

    tmp, manifest, shards = reference
    assert sorted(shards) == [
        "train/r-00000-of-00002.tfrecord", "train/r-00001-of-00002.tfrecord",
        "validation/r-00000-of-00002.tfrecord", "validation/r-00001-of-00002.tfrecord",
    ]  # fmt: skip
    run([f"--input={manifest}", f"--output_dir={tmp / 'b'}", *ARGS])
    assert _shards(tmp / "b") == shards


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_shards(reference):
    tmp, manifest, shards = reference
    out = tmp / "killed"
    proc = _cli(f"--input={manifest}", f"--output_dir={out}", start_new_session=True)
    deadline = time.monotonic() + 300
    while not output.list_files(f"{out}/.parts/*.meta.json"):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = output.list_files(f"{out}/.parts/*.meta.json")
    assert 1 <= len(done_before) < 6
    assert not os.path.exists(out / "dataset_info.json")
    mtimes = {p: os.stat(p).st_mtime_ns for p in done_before}
    proc = _cli(f"--input={manifest}", f"--output_dir={out}")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert f"{6 - len(done_before)} to process, {len(done_before)} done by an earlier run" in err
    # The parts of the killed run were kept as they were, and the shards are the same.
    assert {p: os.stat(p).st_mtime_ns for p in done_before} == mtimes
    assert _shards(out) == shards


@pytest.mark.slow
def test_an_incremental_run_processes_only_new_rows(reference, tmp_path):
    from pipelines.preprocess import run

    tmp, _, _ = reference
    out = tmp_path / "grow"
    small = _manifest(tmp_path / "small.csv", 4)
    run([f"--input={small}", f"--output_dir={out}", *ARGS])
    metas = output.list_files(f"{out}/.parts/*.meta.json")
    mtimes = {p: os.stat(p).st_mtime_ns for p in metas}
    info = run([f"--input={_manifest(tmp_path / 'big.csv', 6)}", f"--output_dir={out}", *ARGS])
    assert {p: os.stat(p).st_mtime_ns for p in metas} == mtimes
    assert len(output.list_files(f"{out}/.parts/*.meta.json")) == 6
    assert info["inputs"] == {"rows": 6, "written": 6, "failed": 0, "failed_by_stage": {}}
    # The pose coverage is counted from the records written, reused parts included.
    assert info["pose"] == output.read_json(f"{tmp}/a/dataset_info.json")["pose"]
    # Other settings are refused rather than mixed into the same records.
    with pytest.raises(ValueError, match="jpeg_quality: 90 -> 50"):
        run([f"--input={small}", f"--output_dir={out}", "--jpeg_quality=50", *ARGS])
