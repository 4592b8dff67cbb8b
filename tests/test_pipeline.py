"""End to end on real sample video with DirectRunner: records read back with plain tf.io."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from pipelines import assets, output
from pipelines.clip import decode_jpeg
from pipelines.preprocess import run
from schemas import media_sequence as ms

REPO = __file__.rsplit("/tests/", 1)[0]


def _records(out_dir, split):
    info = output.read_json(f"{out_dir}/dataset_info.json")
    recs = []
    for shard in info["splits"][split]["shards"]:
        recs += [r.numpy() for r in tf.data.TFRecordDataset(f"{out_dir}/{shard}")]
    return info, recs


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, assets_ready):
    tmp = tmp_path_factory.mktemp("e2e")
    multi = assets.sample_video_path("pose2sim_multi_cam01.mp4")
    single = assets.sample_video_path("sports2d_demo.mp4")
    manifest = tmp / "manifest.csv"
    manifest.write_text(
        "path,label,start,end,split\n"
        f"{multi},walking,0.2,1.0,train\n"
        f"{single},athletics,3.0,3.5,validation\n"
        f"{tmp}/missing.mp4,walking,0,1,train\n"
        f"{single},athletics,2,1,train\n"
    )
    out = tmp / "out"
    info = run(
        [
            f"--input={manifest}",
            f"--output_dir={out}",
            "--dataset_name=e2e",
            "--runner=DirectRunner",
            "--num_shards=2",
        ]
    )
    return info, out


def test_description_accounts_for_every_input(demo_run):
    info, out = demo_run
    assert info["schema_version"] == ms.SCHEMA_VERSION
    assert info["labels"] == ["athletics", "walking"]
    assert info["inputs"] == {
        "rows": 4,
        "written": 2,
        "failed": 2,
        "failed_by_stage": {"fetch": 1, "manifest": 1},
    }
    assert info["splits"]["train"]["clips"] == 1 and info["splits"]["validation"]["clips"] == 1
    assert info["splits"]["train"]["shards"] == [
        "train/e2e-00000-of-00002.tfrecord",
        "train/e2e-00001-of-00002.tfrecord",
    ]
    assert info["pose_model"]["sha256"] == assets.DEFAULT_POSE_MODEL_SHA256
    assert info["software"]["apache-beam"].startswith("2.77")
    rows = [
        json.loads(line)
        for path in output.list_files(f"{out}/failures/*.jsonl")
        for line in open(path)
    ]
    assert sorted(r["stage"] for r in rows) == ["fetch", "manifest"]
    fetch = next(r for r in rows if r["stage"] == "fetch")
    assert fetch["path"].endswith("missing.mp4") and "does not exist" in fetch["error"]


def test_records_parse_with_plain_tf_and_hold_all_streams(demo_run):
    info, out = demo_run
    _, recs = _records(out, "train")
    assert len(recs) == 1
    ctx_spec, seq_spec = ms.parse_specs()
    ctx, seq = tf.io.parse_single_sequence_example(recs[0], ctx_spec, seq_spec)
    # 0.2 s to 1.0 s at 25 fps: 20 frames stamped 200000 + 40000 k microseconds.
    ts = seq["image/timestamp"].numpy().tolist()
    assert ts == [200_000 + 40_000 * k for k in range(20)]
    assert seq["POSE_RENDERED/image/timestamp"].numpy().tolist() == ts
    assert seq["FORWARD_FLOW/image/timestamp"].numpy().tolist() == ts[:-1]
    assert seq["region/timestamp"].numpy().tolist() == ts
    assert ctx["clip/start/timestamp"].numpy() == 200_000
    assert ctx["clip/end/timestamp"].numpy() == 1_000_000
    assert ctx["example/id"].numpy().decode() == "pose2sim_multi_cam01_200000"
    assert ctx["clip/label/index"].numpy() == 1
    assert ctx["clip/label/text"].numpy() == b"walking"
    # Portrait 1088x1920 stored with the shorter side 256.
    assert (ctx["image/height"].numpy(), ctx["image/width"].numpy()) == (452, 256)
    rgb = decode_jpeg(seq["image/encoded"].numpy()[0])
    assert rgb.shape == (452, 256, 3)
    pose = decode_jpeg(seq["POSE_RENDERED/image/encoded"].numpy()[0])
    flow = decode_jpeg(seq["FORWARD_FLOW/image/encoded"].numpy()[0])
    assert pose.shape == flow.shape == (452, 256, 3)
    assert np.abs(pose.astype(int) - rgb.astype(int)).max() > 100  # skeletons drawn
    assert flow[..., 2].mean() < 1.0 and flow[..., 2].max() <= 8  # B = 0, up to JPEG error
    # People: the multi-person clip shows two.
    persons = seq["region/num_regions"].numpy()
    assert persons.max() == 2
    assert (seq["POSE/region/num_regions"].numpy() == 17 * persons).all()
    x = tf.sparse.to_dense(seq["POSE/region/point/x"]).numpy()
    conf = tf.sparse.to_dense(seq["POSE/region/label/confidence"]).numpy()
    t = int(np.argmax(persons))
    assert x.shape[1] >= 34 and 0.0 <= x[t, :34].min() and x[t, :34].max() <= 1.0
    assert conf[t, :34].mean() > 0.5
    tracks = tf.sparse.to_dense(seq["region/track/index"], default_value=-1).numpy()
    assert sorted(tracks[t, :2].tolist()) == [0, 1]


def test_cli_runs_and_refuses_a_bad_model_before_any_video(tmp_path, assets_ready):
    manifest = tmp_path / "m.csv"
    video = assets.sample_video_path("sports2d_demo.mp4")
    manifest.write_text(f"path,label,start,end\n{video},x,0,0.2\n")
    bad_model = tmp_path / "model.task"
    bad_model.write_text("not a model")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.preprocess", f"--input={manifest}",
         f"--output_dir={out}", f"--pose_model={bad_model}"],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "model.task" in proc.stderr and "not a MediaPipe pose landmarker bundle" in proc.stderr
    assert not out.exists()
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.preprocess", f"--input={manifest}",
         f"--output_dir={out}", "--modalities=rgb,pose", "--render_style=background=black"],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "inputs: 1 rows, 1 written, 0 failed" in proc.stdout
    info, recs = _records(out, "train")
    ex = tf.train.SequenceExample.FromString(recs[0])
    assert set(ex.feature_lists.feature_list) == ms.sequence_keys(("rgb", "pose"))
    assert len(ex.feature_lists.feature_list["image/encoded"].feature) == 5
    assert info["render_style"]["background"] == "black"
    # A second run into the same directory is refused without --overwrite.
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.preprocess", f"--input={manifest}",
         f"--output_dir={out}", "--modalities=rgb"],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
