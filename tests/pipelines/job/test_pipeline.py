"""End to end on real sample video with DirectRunner: records read back with plain tf.io."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from pipelines import assets
from pipelines.preprocess import run
from pipelines.stages.codec import decode_jpeg
from pipelines.storage import output
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


@pytest.mark.slow
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
    assert info["pose_model"]["sha256"] == assets.DEFAULT_POSE_MODEL.sha256
    assert info["software"]["apache-beam"].startswith("2.77")
    rows = [
        json.loads(line)
        for path in output.list_files(f"{out}/failures/*.jsonl")
        for line in open(path)
    ]
    assert sorted(r["stage"] for r in rows) == ["fetch", "manifest"]
    fetch = next(r for r in rows if r["stage"] == "fetch")
    assert fetch["path"].endswith("missing.mp4") and "does not exist" in fetch["error"]
    # What the rows written cost: every stage's figures, >= 0, adding up to the total, over the
    # clip-seconds written (frames / frame rate); the summary says it in one line.
    from pipelines.job.progress import cost_line, summary_table
    from schemas.dataset_info import COST_STAGES, DatasetInfo

    cost = DatasetInfo.from_json(info).cost
    assert (cost.rows, cost.rows_without_cost) == (2, 0)
    frames = sum(s["frames"] for s in info["splits"].values())
    assert cost.clip_seconds == round(frames / info["frame_rate"], 3)
    assert set(cost.stages) == set(COST_STAGES)
    for stage in cost.stages.values():
        assert stage.core_seconds >= 0 and stage.core_seconds_per_clip_second >= 0
    assert cost.core_seconds == pytest.approx(sum(s.core_seconds for s in cost.stages.values()))
    assert cost.core_seconds > 0
    rate = cost.core_seconds / cost.clip_seconds  # from the rounded figures: 0.01 off at most
    assert cost.core_seconds_per_clip_second == pytest.approx(rate, abs=0.01)
    assert cost_line(cost) in summary_table(info, str(out)).splitlines()


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
    # People: the multi-person clip shows three (two walking, one standing at the left edge).
    persons = seq["region/num_regions"].numpy()
    assert persons.max() == 3
    assert (seq["POSE/region/num_regions"].numpy() == 17 * persons).all()
    x = tf.sparse.to_dense(seq["POSE/region/point/x"]).numpy()
    conf = tf.sparse.to_dense(seq["POSE/region/label/confidence"]).numpy()
    t = int(np.argmax(persons))
    assert x.shape[1] >= 34 and 0.0 <= x[t, :34].min() and x[t, :34].max() <= 1.0
    assert conf[t, :34].mean() > 0.5
    tracks = tf.sparse.to_dense(seq["region/track/index"], default_value=-1).numpy()
    assert sorted(tracks[t, :3].tolist()) == [0, 1, 2]
    # The people keep their ids over the whole clip: no id beyond 0, 1 and 2 ever appears, and
    # track 0 stays the same person (its mean x moves less than a tenth of the frame a step).
    assert set(tracks[tracks >= 0].tolist()) == {0, 1, 2}
    x0 = [x[i, 17 * p : 17 * p + 17].mean() for i in range(len(persons))
          for p in range(persons[i]) if tracks[i, p] == 0]  # fmt: skip
    assert np.abs(np.diff(x0)).max() < 0.1


def test_description_gives_the_pose_coverage_of_the_records_written(demo_run):
    """dataset_info.json's pose coverage per split equals the persons counted in the shards."""
    from pipelines.job.progress import summary_table
    from pipelines.tools import validate

    info, out = demo_run
    assert set(info["pose"]) == set(info["splits"]) == {"train", "validation"}
    key = ms.REGION_NUM_REGIONS_KEY
    spec = {key: tf.io.FixedLenSequenceFeature([], tf.int64)}

    def persons_per_frame(rec):
        return tf.io.parse_single_sequence_example(rec, sequence_features=spec)[1][key].numpy()

    for split, desc in info["splits"].items():
        counts = np.concatenate([persons_per_frame(r) for r in _records(out, split)[1]])
        frames, with_person, persons = len(counts), int((counts > 0).sum()), int(counts.sum())
        assert info["pose"][split] == {
            "frames": frames,
            "frames_with_person": with_person,
            "persons": persons,
            "share_of_frames_with_person": round(with_person / frames, 4),
            "persons_per_frame": round(persons / frames, 4),
        }
        assert (desc["frames"], desc["persons"]) == (frames, persons)
        share = f"{100 * with_person / frames:.1f} %"
        assert (
            f"{split:<12}{desc['clips']:>7}{frames:>9}{share:>22}" in validate.validate(str(out))[1]
        )
        assert f"{desc['num_shards']:>8}{share:>22}" in summary_table(info, str(out))
    assert info["pose"]["train"]["persons"] > 0


@pytest.mark.slow
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
    assert "model.task" in proc.stderr and "not a pose model" in proc.stderr
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


@pytest.mark.slow
def test_keypoints_without_rendered_frames(demo_run, tmp_path):
    """`--modalities=flow,keypoints`: the flow and the keypoints of the full job, to the value,
    without RGB or pose-rendered frames; the validator and the description agree."""
    from pipelines.tools import validate

    full_info, full_out = demo_run
    single = assets.sample_video_path("sports2d_demo.mp4")
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,label,start,end,split\n{single},athletics,3.0,3.5,validation\n")
    out = tmp_path / "out"
    info = run(
        [f"--input={manifest}", f"--output_dir={out}", "--dataset_name=e2e",
         "--runner=DirectRunner", "--modalities=flow,keypoints"]
    )  # fmt: skip
    assert info["modalities"] == ["flow", "keypoints"]
    assert info["pose"]["validation"] == full_info["pose"]["validation"]
    (rec,) = _records(out, "validation")[1]
    (full,) = _records(full_out, "validation")[1]
    ex = tf.train.SequenceExample.FromString(rec)
    want = tf.train.SequenceExample.FromString(full)
    lists = ex.feature_lists.feature_list
    assert set(lists) == ms.sequence_keys(("flow", "keypoints"))
    assert not any(k.startswith(ms.POSE_RENDERED_PREFIX) or k.startswith("image/") for k in lists)
    for key in lists:
        assert lists[key] == want.feature_lists.feature_list[key], key
    assert ex.context.feature[ms.POSE_PARTS_KEY] == want.context.feature[ms.POSE_PARTS_KEY]
    assert validate.validate(str(out))[0] == []


def _transcode(src, dst, fourcc, fps, num_frames, size=None, step=1, start=0):
    """Writes frames start, start+step, ... of a real video into a new container at `fps`."""
    import cv2

    cap = cv2.VideoCapture(str(src))
    frames = []
    index = 0
    while len(frames) < num_frames:
        ok, frame = cap.read()
        assert ok, f"{src} ended early"
        if index >= start and (index - start) % step == 0:
            frames.append(cv2.resize(frame, size) if size else frame)
        index += 1
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    for f in frames:
        writer.write(f)
    writer.release()
    return str(dst)


@pytest.mark.slow
def test_other_containers_rates_and_shapes(tmp_path, assets_ready):
    """avi and mp4, portrait and landscape, 6 to 60 fps, odd sizes: exact frame times."""
    sports = assets.sample_video_path("sports2d_demo.mp4")
    multi = assets.sample_video_path("pose2sim_multi_cam02.mp4")
    clips = {
        # name: (path, expected stored (h, w), expected frame count)
        "avi6": (_transcode(sports, tmp_path / "a6.avi", "MJPG", 6, 6, (640, 360), 5, 60),
                 (256, 455), 25),  # 1 s at 6 fps -> 25 frames
        "mp460": (_transcode(multi, tmp_path / "p60.mp4", "mp4v", 60, 30, None, 1, 48),
                  (452, 256), 13),  # 0.5 s at 60 fps, portrait
        "odd2997": (_transcode(sports, tmp_path / "o.mp4", "mp4v", 30000 / 1001, 15, (300, 166)),
                    (256, 463), 13),  # 15 frames = 0.5005 s; 300x166 -> 463x256
    }  # fmt: skip
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,label,id\n" + "".join(f"{p},x,{name}\n" for name, (p, _, _) in clips.items())
    )
    out = tmp_path / "out"
    info = run([f"--input={manifest}", f"--output_dir={out}", "--runner=DirectRunner"])
    assert info["inputs"]["failed"] == 0, info["inputs"]
    _, recs = _records(out, "train")
    ctx_spec, seq_spec = ms.parse_specs()
    seen = {}
    for rec in recs:
        ctx, seq = tf.io.parse_single_sequence_example(rec, ctx_spec, seq_spec)
        name = ctx["clip/media_id"].numpy().decode()
        _, (h, w), n = clips[name]
        assert (ctx["image/height"].numpy(), ctx["image/width"].numpy()) == (h, w), name
        assert seq["image/timestamp"].numpy().tolist() == [40_000 * k for k in range(n)], name
        assert len(seq["FORWARD_FLOW/image/encoded"].numpy()) == n - 1
        seen[name] = int(seq["region/num_regions"].numpy().max())
    assert sorted(seen) == sorted(clips)
    assert seen["mp460"] == 2  # both people of the two-person scene


def test_validator_passes_our_output_and_catches_violations(demo_run, tmp_path):
    import shutil

    from pipelines.tools import validate

    info, out = demo_run
    violations, table = validate.validate(str(out))
    assert violations == []
    assert "train" in table and "violations: 0" in table
    # Break one record: drop its last flow step, and claim one more clip than written.
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    shard = next(s for s in info["splits"]["train"]["shards"] if (broken / s).stat().st_size)
    ex = tf.train.SequenceExample.FromString(next(output.read_tfrecords(str(broken / shard))))
    del ex.feature_lists.feature_list["FORWARD_FLOW/image/encoded"].feature[-1]
    del ex.feature_lists.feature_list["FORWARD_FLOW/image/timestamp"].feature[-1]
    output.write_tfrecords(str(broken / shard), [ex.SerializeToString()])
    desc = json.loads((broken / "dataset_info.json").read_text())
    desc["splits"]["train"]["clips"] += 1
    (broken / "dataset_info.json").write_text(json.dumps(desc))
    violations, _ = validate.validate(str(broken))
    assert any("flow: expected T-1=19 steps" in v for v in violations), violations
    assert any("1 clips in the shards, the description says 2" in v for v in violations)
    assert validate.main([str(broken)]) == 1
    desc["schema_version"] = 99
    (broken / "dataset_info.json").write_text(json.dumps(desc))
    violations, _ = validate.validate(str(broken))
    assert len(violations) == 1 and "schema_version=99" in violations[0]


@pytest.mark.slow
def test_stored_flow_is_tvl1_of_the_stored_rgb_frames(demo_run, tmp_path):
    """The flow in a record is TV-L1 of the record's own decoded RGB frames, byte for byte.

    Recomputed here with the default preset; tests/flow/test_flow_solver.py shows it gives OpenCV's
    reference flow bit for bit, and `perfnet-validate --check_flow` recomputes with OpenCV.
    """
    import shutil

    from pipelines.tools import validate

    info, out = demo_run
    frames = sum(desc["frames"] for desc in info["splits"].values())
    clips = sum(desc["clips"] for desc in info["splits"].values())
    violations, check = validate.check_flow(str(out), records=10, preset="fast")
    assert violations == []
    assert (check.records, check.pairs) == (clips, frames - clips)
    assert check.identical == check.pairs
    # Only quantization and JPEG (quality 100) stand between stored and computed flow.
    assert info["flow"]["jpeg_quality"] == 100 and info["flow"]["computed_from"] == "stored_rgb"
    assert check.epe < 0.15 and check.moving_epe < 0.25 and check.max_epe < 1.0
    # Flow from the wrong frames is caught: swap two flow steps of the first record.
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    shard = next(s for s in info["splits"]["train"]["shards"] if (broken / s).stat().st_size)
    ex = tf.train.SequenceExample.FromString(next(output.read_tfrecords(str(broken / shard))))
    steps = ex.feature_lists.feature_list["FORWARD_FLOW/image/encoded"].feature
    first, last = steps[0].bytes_list.value[0], steps[-1].bytes_list.value[0]
    steps[0].bytes_list.value[0], steps[-1].bytes_list.value[0] = last, first
    output.write_tfrecords(str(broken / shard), [ex.SerializeToString()])
    violations, check = validate.check_flow(str(broken), records=1, preset="fast")
    assert check.identical == check.pairs - 2
    assert len(violations) == 1, violations
    assert f"in 2 of {check.pairs} pairs" in violations[0] and "(tolerance 1.0 px)" in violations[0]


@pytest.mark.slow
def test_flow_without_the_rgb_stream_is_the_same_flow(demo_run, tmp_path):
    """Flow is computed from the RGB frame as it would be stored, whether or not RGB is written."""
    info, out = demo_run
    single = assets.sample_video_path("sports2d_demo.mp4")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"path,label,start,end,split\n{single},athletics,3.0,3.5,validation\n")
    flow_only = tmp_path / "flow_only"
    run([f"--input={manifest}", f"--output_dir={flow_only}", "--dataset_name=e2e",
         "--modalities=flow"])  # fmt: skip
    key = "FORWARD_FLOW/image/encoded"

    def flows(d):
        (rec,) = _records(d, "validation")[1]
        ex = tf.train.SequenceExample.FromString(rec)
        return [f.bytes_list.value[0] for f in ex.feature_lists.feature_list[key].feature]

    assert len(flows(flow_only)) == 12
    assert flows(flow_only) == flows(out)
