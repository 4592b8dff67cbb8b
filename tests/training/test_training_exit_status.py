"""Exit statuses of `python -m training` and the record check before training: records that
lack a key a requested modality reads fail with EXIT_DATA, naming the key and the file."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import tensorflow as tf
from training_records import class_clip, serialize_clip, write_records

from schemas import media_sequence as ms
from training import inputs
from training import main as cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def strip_pose(record: bytes) -> bytes:
    """The record without any key of the pose modality (as if made with rgb and flow only)."""
    seq = tf.train.SequenceExample.FromString(record)
    pose_keys = set(ms.record_keys([ms.MODALITY_POSE])) - set(
        ms.record_keys([ms.MODALITY_RGB, ms.MODALITY_FLOW])
    )
    for key in pose_keys:
        if key in seq.context.feature:
            del seq.context.feature[key]
        if key in seq.feature_lists.feature_list:
            del seq.feature_lists.feature_list[key]
    return seq.SerializeToString()


@pytest.fixture(scope="module")
def no_pose(tmp_path_factory) -> str:
    """A shard of 4 clips with rgb and flow but no pose modality; returns its path."""
    rng = np.random.default_rng(0)
    path = str(tmp_path_factory.mktemp("no_pose") / "train" / "x-00000-of-00001.tfrecord")
    write_records(path, [strip_pose(class_clip(f"c{i}", i % 3, 10, rng)) for i in range(4)])
    return path


def run(capsys, preset: str, train_data: str, model_dir: str, *extra: str):
    argv = ["train", "--preset", preset, "--train_data", train_data, "--model_dir", model_dir]
    argv += ["--set", "data.num_classes=3", "--set", "train.train_steps=2", *extra]
    status = cli.main(argv)
    out = capsys.readouterr()
    return status, out.out, out.err


@pytest.mark.parametrize(
    "preset, key",
    [
        ("tiny_r3d50g_teacher_pose", ms.prefixed(ms.POSE_RENDERED_PREFIX, ms.IMAGE_HEIGHT)),
        ("tiny_r3d50g_teacher_heatmap", ms.POSE_POINT_X_KEY),
    ],
)
def test_missing_modality_exits_with_the_data_status(no_pose, tmp_path, capsys, preset, key):
    model_dir = tmp_path / "run"
    status, out, err = run(capsys, preset, no_pose, str(model_dir))
    assert status == cli.EXIT_DATA == 3
    assert repr(key) in err and no_pose in err
    assert "Traceback" not in err and "steps:" not in out
    assert not model_dir.exists()  # nothing trained, nothing written


def test_evaluation_checks_its_records_first(no_pose, tmp_path, capsys):
    """`evaluate` on records without the model's modality exits EXIT_DATA naming the key and
    the file, before any model runs; on records with it the model evaluates."""
    from training_records import write_dataset

    model_dir = str(tmp_path / "pose")
    data = write_dataset(str(tmp_path / "data"))
    argv = ["train", "--preset", "tiny_r3d50g_teacher_pose", "--data_dir", data]
    argv += ["--model_dir", model_dir, "--set", "train.train_steps=1"]
    assert cli.main(argv) == cli.EXIT_OK
    capsys.readouterr()
    argv = ["evaluate", "--model", f"pose={model_dir}", "--eval_data", no_pose]
    assert cli.main(argv) == cli.EXIT_DATA
    err = capsys.readouterr().err
    key = ms.prefixed(ms.POSE_RENDERED_PREFIX, ms.IMAGE_HEIGHT)
    assert repr(key) in err and no_pose in err and "Traceback" not in err
    assert cli.main(["evaluate", "--model", f"pose={model_dir}", "--data_dir", data]) == 0
    assert "central crop 8x32x32, 6 clips" in capsys.readouterr().out


def test_check_records_names_a_mistyped_key(tmp_path):
    seq = tf.train.SequenceExample.FromString(
        serialize_clip("c", 0, [inputs_jpeg()] * 3, pose=[inputs_jpeg()] * 3)
    )
    key = ms.prefixed(ms.POSE_RENDERED_PREFIX, ms.IMAGE_WIDTH)
    seq.context.feature[key].Clear()
    seq.context.feature[key].float_list.value.append(40.0)
    path = str(tmp_path / "bad.tfrecord")
    write_records(path, [seq.SerializeToString()])
    assert inputs.check_records(path, ["rgb"]) == path
    with pytest.raises(inputs.DataError, match=re.escape(f"{path}: ") + ".*" + re.escape(key)):
        inputs.check_records(path, ["rgb", "pose"])


def inputs_jpeg() -> bytes:
    return tf.io.encode_jpeg(np.zeros((32, 40, 3), np.uint8)).numpy()


def test_unexpected_errors_do_not_exit_as_preempted(monkeypatch, capsys):
    def boom(args, distill):
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "_cmd_train", boom)
    status = cli.main(["train", "--preset", "tiny_r3d50g_teacher_rgb", "--model_dir", "x"])
    assert status == cli.EXIT_ERROR == 4
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: boom" in err


def test_exit_statuses_are_documented():
    assert (cli.EXIT_OK, cli.EXIT_PREEMPTED, cli.EXIT_USAGE) == (0, 1, 2)
    assert (
        len({cli.EXIT_OK, cli.EXIT_PREEMPTED, cli.EXIT_USAGE, cli.EXIT_DATA, cli.EXIT_ERROR}) == 5
    )
    with open(os.path.join(ROOT, "docs", "training.md")) as f:
        doc = f.read()
    for status, word in ((1, "SIGTERM"), (3, "key"), (4, "traceback")):
        line = next(x for x in doc.splitlines() if x.startswith(f"| {status} |"))
        assert word in line
