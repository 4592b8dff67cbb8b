"""The command line a person meets: a quiet terminal, fast clear errors, honest progress."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from pipelines import assets
from pipelines.job.progress import Progress
from pipelines.preprocess import run
from pipelines.runtime import quiet
from pipelines.storage import output, parts
from tests.conftest import write_video

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def _cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "pipelines.preprocess", *args],
        capture_output=True, text=True, cwd=REPO, env=env,
    )  # fmt: skip


def test_native_noise_patterns():
    noise = [
        "I0000 00:00:1796193379.380195   25231 port.cc:153] oneDNN custom operations are on.",
        "W0000 00:00:1796192361.399837   15855 inference_feedback_manager.cc:121] Feedback",
        "I1202 06:31:26.554833   22209 fork_posix.cc:71] Other threads are currently calling",
        "E0000 00:00:1796190411.922871    3989 cuda_platform.cc:52] failed call to cuInit",
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "To enable the following instructions: AVX2 AVX512F, in other operations, rebuild",
        "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
        "INFO: INFO: Created TensorFlow Lite XNNPACK delegate for CPU.Created TensorFlow Lite",
    ]
    kept = [
        "perfnet-preprocess: error: --input='x.csv': no such file",
        "Traceback (most recent call last):",
        "E0000 00:00:1796190411.922871    3989 subprocess.cc:12] a real native error",
        "progress: 1/9 inputs (0 failed), 2.8 frames/s, elapsed 0m15s, ETA 2m00s",
    ]
    assert [quiet.is_native_noise(line) for line in noise] == [True] * len(noise)
    assert [quiet.is_native_noise(line) for line in kept] == [False] * len(kept)


@pytest.mark.slow
def test_a_job_keeps_the_terminal_quiet_and_verbose_shows_it_all(tmp_path, assets_ready):
    video = write_video(tmp_path / "v.mp4", 6, 25.0)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,label\n{video},a\n")
    log = tmp_path / "native.log"
    proc = _cli(f"--input={manifest}", f"--output_dir={tmp_path / 'o'}", "--modalities=rgb,pose",
                f"--log_file={log}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    noisy = [line for line in proc.stderr.splitlines() if quiet.is_native_noise(line)]
    assert noisy == []
    assert "Worker: severity: WARN" not in proc.stderr  # Beam's worker chatter
    held = log.read_text().splitlines()
    assert held and all(quiet.is_native_noise(line) for line in held)
    assert "inputs: 1 rows, 1 written, 0 failed" in proc.stdout
    proc = _cli(f"--input={manifest}", f"--output_dir={tmp_path / 'v'}", "--modalities=rgb,pose",
                "--verbose")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert any(quiet.is_native_noise(line) for line in proc.stderr.splitlines())


@pytest.mark.slow
def test_missing_inputs_and_bad_flags_are_one_line_exit_2_before_any_work(tmp_path):
    for args, message in [
        ([f"--input={tmp_path / 'nope.csv'}"], f"--input='{tmp_path / 'nope.csv'}': no such file"),
        (["--input=m.csv", "--num_poses=3000000000"], "num_poses=3000000000: must be in 1..100"),
        (["--input=m.csv", "--dataset_name=*"], "dataset_name='*': must be 1-100 of"),
        ([f"--input={tmp_path}"], "a directory, expected a file"),
    ]:
        _check_one_line_exit_2(args + [f"--output_dir={tmp_path / 'o'}"], message)
        assert not (tmp_path / "o").exists()
    (tmp_path / "afile").write_text("mine")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\nv.mp4,a\n")
    _check_one_line_exit_2(
        [f"--input={manifest}", f"--output_dir={tmp_path / 'afile'}"],
        "a file, expected a directory",
    )
    assert (tmp_path / "afile").read_text() == "mine"


def _check_one_line_exit_2(args, message):
    """The job refuses `args` with exit status 2 and one line of stderr holding `message`."""
    t0 = time.monotonic()
    proc = _cli(*args)
    assert proc.returncode == 2, (args, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("perfnet-preprocess: error: "), lines
    assert message in lines[0], lines
    print(f"{args}: {time.monotonic() - t0:.2f} s")  # about 2 s here; not asserted


def test_a_built_model_that_differs_from_its_pin_is_refused(tmp_path, monkeypatch, assets_ready):
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    src = assets.default_pose_model_path()
    bad = cache / "models" / src.name
    shutil.copyfile(src, bad)
    with open(bad, "r+b") as f:  # one byte of a weight changed: still a loadable TFLite file
        f.seek(len(src.read_bytes()) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 1]))
    monkeypatch.setenv(assets.CACHE_ENV, str(cache))
    video = write_video(tmp_path / "v.mp4", 3, 25.0)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,label\n{video},a\n")
    with pytest.raises(ValueError, match="the set-up step pins " + assets.MOVENET_MULTIPOSE.sha256):
        run([f"--input={manifest}", f"--output_dir={tmp_path / 'o'}", "--runner=DirectRunner"])
    assert not (tmp_path / "o").exists()


def test_progress_counts_this_runs_rows_once(tmp_path):
    out = str(tmp_path)
    mine, earlier = {"a" * 16, "b" * 16}, "c" * 16
    pdir = parts.parts_dir(out)
    os.makedirs(pdir)
    meta = '{"clips": [{"frames": 7}]}'
    for key in (*mine, earlier):
        output.write_text(output.join(pdir, key + parts.META_SUFFIX), meta)
    output.write_text(output.join(pdir, "a" * 16 + parts.FAILURE_SUFFIX), "{}")  # a race's twin
    output.write_text(output.join(pdir, parts.RUN_FILE), "{}")
    progress = Progress(out, mine, enabled=False)
    progress._start = time.monotonic() - 10
    line = progress.line()
    assert line.startswith("progress: 2/2 inputs (")
    assert "ETA 0m00s" in line and "-" not in line.split("ETA")[1]


@pytest.mark.slow
def test_a_full_disk_ends_the_job_with_one_line_and_keeps_the_record(tmp_path, assets_ready):
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(tiny)],
                             capture_output=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        video = assets.sample_video_path("sports2d_demo.mp4")
        manifest = tmp_path / "m.csv"
        manifest.write_text(f"path,label,start,end\n{video},a,0,0.4\n")
        proc = _cli(f"--input={manifest}", f"--output_dir={tiny / 'out'}", "--modalities=rgb")
        assert proc.returncode == 2, proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last == (
            f"perfnet-preprocess: error: 1 of the rows could not be written to "
            f"--output_dir='{tiny / 'out'}' (No space left on device); the rows written are "
            "kept: fix it and run the same command again"
        )
        assert "Traceback" not in proc.stderr
        rows = output.read_failure_rows(str(tiny / "out"))
        assert [r["stage"] for r in rows] == ["process"]  # recorded: the next run retries it
    finally:
        subprocess.run(["umount", str(tiny)], capture_output=True)
