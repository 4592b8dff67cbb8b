"""gs:// input, pose model and output through a real local GCS emulator (no mocks)."""

from __future__ import annotations

import glob
import json
import os
import socket
import tempfile

import pytest
import tensorflow as tf

from tests.conftest import GCS_BUCKET as BUCKET


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _upload(local: str, url: str) -> None:
    from apache_beam.io.filesystems import FileSystems

    with open(local, "rb") as src, FileSystems.create(url) as dst:
        dst.write(src.read())


@pytest.mark.slow
def test_gs_round_trip(gcs_emulator, assets_ready):
    from pipelines import assets
    from pipelines.preprocess import run
    from pipelines.storage import output
    from pipelines.tools import validate

    root = f"gs://{BUCKET}/run1"
    _upload(str(assets_ready["model"]), f"{root}/models/pose.tflite")
    _upload(str(assets.sample_video_path("pose2sim_multi_cam03.mp4")), f"{root}/videos/a b.mp4")
    manifest = f"{root}/manifest.csv"
    with output.FileSystems.create(manifest) as f:
        f.write(b"path,label,start,end\na b.mp4,walk,0,0.4\nmissing.mp4,walk,0,1\n")
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "perfnet-*")))
    info = run([
        f"--input={manifest}", f"--video_root={root}/videos", f"--output_dir={root}/out",
        f"--pose_model={root}/models/pose.tflite", "--runner=DirectRunner", "--dataset_name=gcs",
    ])  # fmt: skip
    assert info["inputs"] == {
        "rows": 2, "written": 1, "failed": 1, "failed_by_stage": {"fetch": 1}
    }  # fmt: skip
    assert info["pose_model"]["name"] == "pose"
    assert info["pose_model"]["sha256"] == assets.DEFAULT_POSE_MODEL.sha256
    # The local copy of the gs:// video was removed.
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "perfnet-*"))) == before
    shards = output.list_files(f"{root}/out/train/*.tfrecord")
    assert shards == [f"{root}/out/train/gcs-00000-of-00001.tfrecord"]
    (record,) = list(output.read_tfrecords(shards[0]))
    ex = tf.train.SequenceExample.FromString(record)
    assert ex.context.feature["clip/data_path"].bytes_list.value[0] == b"a b.mp4"
    assert len(ex.feature_lists.feature_list["image/encoded"].feature) == 10
    violations, table = validate.validate(f"{root}/out")
    assert violations == [] and "violations: 0" in table
    (failures,) = output.list_files(f"{root}/out/failures/*.jsonl")
    with output.FileSystems.open(failures) as f:
        (row,) = [json.loads(line) for line in f.read().decode().splitlines()]
    assert row["stage"] == "fetch" and row["path"] == "missing.mp4"
    assert f"{root}/videos/missing.mp4' does not exist" in row["error"]


def test_a_second_job_on_gs_is_refused_while_the_first_holds_the_lock(gcs_emulator):
    """The gs:// lock against the emulator: held, refused to a second holder naming the first,
    released at exit, then free (the emulator ignores generation preconditions, so this checks
    the sequential case; the precondition guards a race on real Cloud Storage)."""
    import pytest

    from pipelines.storage import output

    out = f"gs://{BUCKET}/locked"
    with output.OutputLock(out) as first:
        first.acquire()
        second = output.OutputLock(out)
        with pytest.raises(ValueError, match=f"pid {os.getpid()}"):
            second.acquire()
    third = output.OutputLock(out)
    third.acquire()
    third.__exit__(None, None, None)
    assert not output.FileSystems.exists(f"{out}/.parts/lock")
