"""A row that hangs, crashes the worker, or exceeds a resource cap costs one failure row."""

from __future__ import annotations

import faulthandler
import json
import os
import signal

import pytest

from pipelines import assets
from pipelines.preprocess import run
from pipelines.stages.clip import ClipProcessor
from pipelines.storage import output, parts
from tests.conftest import write_video

RGB = ["--runner=DirectRunner", "--modalities=rgb", "--dataset_name=iso"]


def _failures(out) -> dict[str, dict]:
    rows = []
    for path in output.list_files(f"{out}/failures/*.jsonl"):
        rows += [json.loads(line) for line in open(path)]
    return {r["id"].rsplit("_", 1)[0]: r for r in rows}


def _manifest(tmp_path, rows) -> str:
    path = tmp_path / "m.csv"
    path.write_text("path,label,start,end,id\n" + "".join(f"{r}\n" for r in rows))
    return str(path)


def test_resource_caps_are_enforced_before_decoding(tmp_path):
    ok = write_video(tmp_path / "ok.mp4", 10, 10.0, size=(64, 48))
    tiny = write_video(tmp_path / "tiny.mp4", 10, 10.0, size=(16, 16))
    big = write_video(tmp_path / "big.mp4", 3, 10.0, size=(320, 240))
    long = write_video(tmp_path / "long.mp4", 40, 10.0, size=(64, 48))  # 4 s
    manifest = _manifest(
        tmp_path,
        [f"{ok},a,,,ok", f"{tiny},a,,,tiny", f"{big},a,,,big", f"{long},a,,,long",
         f"{long},a,2,3.9,late"],
    )  # fmt: skip
    out = tmp_path / "out"
    info = run([f"--input={manifest}", f"--output_dir={out}", "--max_frame_pixels=50000",
                "--max_duration_seconds=3", "--max_decoded_frames=30", *RGB])  # fmt: skip
    assert info["inputs"] == {
        "rows": 5, "written": 1, "failed": 4, "failed_by_stage": {"decode": 4}
    }  # fmt: skip
    f = _failures(out)
    assert "16x16 are smaller than 32 pixels" in f["tiny"]["error"]
    assert "320x240 = 76800 pixels exceed the limit of 50000" in f["big"]["error"]
    assert "window of 4.0 s exceeds the limit of 3.0 s" in f["long"]["error"]
    # A 1.9 s window that starts 2 s in: frames before the window count as decoded.
    assert "more than 30 frames decoded" in f["late"]["error"]


@pytest.mark.slow
def test_a_row_that_runs_too_long_is_stopped(tmp_path, assets_ready):
    video = assets.sample_video_path("sports2d_demo.mp4")
    ok = write_video(tmp_path / "ok.mp4", 5, 10.0, size=(64, 48))
    manifest = _manifest(tmp_path, [f"{video},a,0,7,slow", f"{ok},a,,,ok"])  # slow: ~4 min
    out = tmp_path / "out"
    slow = ["--video_timeout_s=20", "--modalities=rgb,flow", "--flow_preset=reference"]
    info = run([f"--input={manifest}", f"--output_dir={out}", "--runner=DirectRunner", *slow])
    assert info["inputs"]["failed_by_stage"] == {"process": 1}
    assert info["inputs"]["written"] == 1
    assert "longer than 20 s (--video_timeout_s)" in _failures(out)["slow"]["error"]


@pytest.mark.slow
def test_a_worker_that_crashes_costs_one_row(tmp_path, monkeypatch):
    real = ClipProcessor.iter_clips

    def crash_on(self, spec, *args):
        if spec.media_id == "crash":
            faulthandler.disable()  # pytest's handler would print the crash it cannot stop
            os.kill(os.getpid(), signal.SIGSEGV)  # a native crash, mid-row
        return real(self, spec, *args)

    # The worker subprocess is forked from this process, so it runs the patched method.
    monkeypatch.setattr(ClipProcessor, "iter_clips", crash_on)
    rows = [f"{write_video(tmp_path / f'{n}.mp4', 5, 10.0)},a,,,{n}" for n in ("a", "crash", "b")]
    out = tmp_path / "out"
    info = run([f"--input={_manifest(tmp_path, rows)}", f"--output_dir={out}", *RGB])
    assert info["inputs"] == {
        "rows": 3, "written": 2, "failed": 1, "failed_by_stage": {"process": 1}
    }  # fmt: skip
    assert "worker process died" in _failures(out)["crash"]["error"]
    assert info["splits"]["train"]["clips"] == 2


@pytest.mark.slow
def test_a_failed_run_reruns_without_duplicates(tmp_path, monkeypatch):
    rows = [f"{write_video(tmp_path / f'{n}.mp4', 8, 10.0)},a,,,{n}" for n in "abcd"]
    manifest = _manifest(tmp_path, rows)
    reference = tmp_path / "reference"
    run([f"--input={manifest}", f"--output_dir={reference}", *RGB])
    # The third part write fails once: the run dies after some rows were done.
    real, calls = parts.write_done, []

    def fail_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(parts, "write_done", fail_once)
    out = tmp_path / "out"
    info = run([f"--input={manifest}", f"--output_dir={out}", *RGB])
    # A failing write is a failure row for that input, not a lost or doubled one ...
    assert info["inputs"]["failed_by_stage"] == {"process": 1}
    (row,) = _failures(out).values()
    assert "could not complete the row: OSError('disk went away')" in row["error"]
    monkeypatch.setattr(parts, "write_done", real)
    # ... and the next run retries it: same shards as a run that never failed.
    info = run([f"--input={manifest}", f"--output_dir={out}", *RGB])
    assert info["inputs"] == {"rows": 4, "written": 4, "failed": 0, "failed_by_stage": {}}
    assert not output.list_files(f"{out}/.parts/*.failure.json")
    for name in ("iso-00000-of-00001.tfrecord",):
        assert (out / "train" / name).read_bytes() == (reference / "train" / name).read_bytes()


def test_pose_model_checksum(tmp_path, assets_ready):
    video = write_video(tmp_path / "v.mp4", 5, 10.0)
    manifest = _manifest(tmp_path, [f"{video},a,,,v"])
    with pytest.raises(ValueError, match="--pose_model_sha256 says 0000"):
        run([f"--input={manifest}", f"--output_dir={tmp_path / 'o'}", "--runner=DirectRunner",
             "--pose_model_sha256=" + "0" * 64])  # fmt: skip
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_pose_model_by_name_is_recorded_and_a_wrong_name_refused(tmp_path, assets_ready):
    from pipelines import assets

    video = write_video(tmp_path / "v.mp4", 5, 10.0)
    manifest = _manifest(tmp_path, [f"{video},a,,,v"])
    info = run([f"--input={manifest}", f"--output_dir={tmp_path / 'o'}", "--runner=DirectRunner",
                "--modalities=rgb,pose", "--pose_model=blazepose_heavy"])  # fmt: skip
    heavy = assets.BLAZEPOSE_HEAVY
    assert info["pose_model"] == {
        "name": "blazepose_heavy", "version": heavy.version, "kind": "mediapipe_pose_landmarker",
        "sha256": heavy.sha256, "path": "blazepose_heavy",
    }  # fmt: skip
    assert info["pose"]["train"]["frames_with_person"] == 0  # gray frames: nobody
    with pytest.raises(ValueError, match="pose_model='movenet': neither a pose model name"):
        run([f"--input={manifest}", f"--output_dir={tmp_path / 'p'}", "--runner=DirectRunner",
             "--pose_model=movenet"])  # fmt: skip
    assert not (tmp_path / "p").exists()


def test_a_row_failing_after_some_clips_leaves_nothing_but_its_failure(tmp_path, assets_ready):
    """Clips are written as they are made; a row that fails later is a failure row only."""
    from pipelines.job.config import PreprocessConfig
    from pipelines.manifests import ClipSpec
    from pipelines.stages.clip import StageError
    from tests.pipelines.job.test_hostile import _cut, _sample

    video = tmp_path / "cut.mp4"
    video.write_bytes(_cut(_sample(), 0.1))  # the window [0, 1) s stops after 10 of 25 frames
    config = PreprocessConfig(
        input="m.csv", output_dir=str(tmp_path), modalities=("rgb",), max_clip_seconds=0.2
    )
    clips = ClipProcessor(config.clip_settings(), None).iter_clips(
        ClipSpec("cut", str(video), "cut.mp4", "a", 0, 0, 1_000_000, "train", "m.csv:2")
    )
    assert next(clips).num_frames == 5  # a whole clip comes out before the error
    with pytest.raises(StageError, match="truncated"):
        list(clips)
    manifest = _manifest(tmp_path, [f"{video},a,0,1,cut"])
    out = tmp_path / "out"
    # 0.2 s clips: the first clip (5 frames) is complete, and written, before decoding fails.
    info = run([f"--input={manifest}", f"--output_dir={out}", "--max_clip_seconds=0.2", *RGB])
    assert info["inputs"]["failed_by_stage"] == {"decode": 1}
    assert "truncated" in _failures(out)["cut"]["error"]
    assert sum(s["clips"] for s in info["splits"].values()) == 0
    left = sorted(os.listdir(out / ".parts"))
    assert [p for p in left if not p.endswith((".failure.json", parts.RUN_FILE))] == []
