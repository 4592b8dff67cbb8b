"""The per-video processor without Beam: cutting long windows, flow length, failures by stage."""

import numpy as np
import pytest
import tensorflow as tf

from pipelines.job.config import PreprocessConfig
from pipelines.manifests import ClipSpec
from pipelines.stages.clip import ClipProcessor, StageError
from pipelines.stages.codec import decode_jpeg, encode_jpeg
from schemas import media_sequence as ms
from tests.conftest import write_video


def _spec(path, start_us=0, end_us=None, media_id="v"):
    return ClipSpec(media_id, path, "rel/v.mp4", "run", 2, start_us, end_us, "train", "m.csv:2")


def _config(**kw):
    return PreprocessConfig(input="m.csv", output_dir="/tmp/unused", **kw)


def _settings(**kw):
    return _config(**kw).clip_settings()


def test_long_windows_are_cut_into_consecutive_clips(tmp_path):
    path = write_video(tmp_path / "v.mp4", 20, 20.0, size=(64, 48))  # 1 s
    proc = ClipProcessor(_settings(modalities=("rgb", "flow"), max_clip_seconds=0.4), None)
    clips = proc.process(_spec(path))
    assert [c.example_id for c in clips] == ["v_0", "v_400000", "v_800000"]
    assert [c.num_frames for c in clips] == [10, 10, 5]
    assert [c.duration_us for c in clips] == [400_000, 400_000, 200_000]
    for c, start in zip(clips, (0, 400_000, 800_000)):
        ex = tf.train.SequenceExample.FromString(c.serialized)
        ctx = ex.context.feature
        assert ctx[ms.CLIP_START_TIMESTAMP_KEY].int64_list.value == [start]
        assert ctx[ms.CLIP_END_TIMESTAMP_KEY].int64_list.value == [start + c.duration_us]
        lists = ex.feature_lists.feature_list
        ts = [f.int64_list.value[0] for f in lists["image/timestamp"].feature]
        assert ts == [start + 40_000 * k for k in range(c.num_frames)]
        flow_ts = [f.int64_list.value[0] for f in lists["FORWARD_FLOW/image/timestamp"].feature]
        assert flow_ts == ts[:-1]
        img = decode_jpeg(lists["image/encoded"].feature[0].bytes_list.value[0])
        assert img.shape == (256, 341, 3)


def test_window_end_is_the_clip_end(tmp_path):
    path = write_video(tmp_path / "v.mp4", 20, 20.0)
    (clip,) = ClipProcessor(_settings(modalities=("rgb",)), None).process(
        _spec(path, 100_000, 330_000)
    )
    assert clip.example_id == "v_100000" and clip.num_frames == 6  # 0.10 .. 0.30 s
    assert clip.duration_us == 230_000


def test_failures_name_the_stage(tmp_path):
    proc = ClipProcessor(_settings(modalities=("rgb",)), None)
    with pytest.raises(StageError) as err:
        proc.process(_spec(str(tmp_path / "nope.mp4")))
    assert err.value.stage == "fetch"
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 100)
    spec = _spec(str(junk))
    with pytest.raises(StageError) as err:
        proc.process(spec)
    failure = proc.failure(spec, err.value)
    assert failure.stage == "decode" and failure.id == "v_0" and "junk.mp4" in failure.error
    assert failure.path == "rel/v.mp4"


def test_pose_needs_a_model():
    with pytest.raises(ValueError, match="pose_model_bytes"):
        ClipProcessor(_settings(), None)


def test_jpeg_round_trip_and_full_chroma():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    out = decode_jpeg(encode_jpeg(img, 100, full_chroma=True))
    assert out.shape == img.shape and np.abs(out.astype(int) - img).mean() < 3


def test_config_errors_name_the_field():
    for kw, field in [
        ({"fps": 0}, "fps=0"),
        ({"short_side": 8}, "short_side=8"),
        ({"jpeg_quality": 101}, "jpeg_quality=101"),
        ({"modalities": ("rgb", "depth")}, "modalities="),
        ({"modalities": ("rgb", "pose", "keypoints")}, "'pose' writes the keypoints with"),
        ({"modalities": ("rgb", "rgb")}, "named twice"),
        ({"flow_preset": "turbo"}, "flow_preset='turbo'"),
        ({"dataset_name": "a/b"}, "dataset_name='a/b'"),
        ({"max_clip_seconds": -1}, "max_clip_seconds=-1"),
        ({"num_poses": 0}, "num_poses=0"),
        # Bounds a real job stays inside (a 3e9-person or 100,000-shard run is a typo).
        ({"num_poses": 3_000_000_000}, r"num_poses=3000000000: must be in 1..100"),
        ({"num_shards": 100_000}, r"num_shards=100000: must be in 0..10000"),
        ({"max_clip_seconds": 0.04}, r"max_clip_seconds=0.04: must hold at least 2 frames"),
        ({"dataset_name": "*"}, r"dataset_name='\*': must be 1-100 of"),
        ({"dataset_name": "-x"}, "dataset_name='-x'"),
        ({"dataset_name": "a" * 101}, "dataset_name='aaaa"),
        ({"pose_input_size": 300}, "pose_input_size=300"),
        ({"pose_min_score": 1.5}, "pose_min_score=1.5"),
    ]:
        with pytest.raises(ValueError, match=field):
            _config(**kw)
    for name in ("k600", "ucf-101_split1", "A.b"):  # what users name datasets
        assert _config(dataset_name=name).dataset_name == name
    assert _config(num_poses=100, num_shards=10_000, max_clip_seconds=0.08).num_shards == 10_000
    with pytest.raises(ValueError, match="marker"):
        _config(render_style="marker=stars")


def test_a_parts_clips_are_read_back_one_by_one_at_their_offsets(tmp_path):
    from pipelines.storage import output, parts

    path = write_video(tmp_path / "v.mp4", 20, 20.0, size=(64, 48))  # 1 s -> 3 clips
    proc = ClipProcessor(_settings(modalities=("rgb", "flow"), max_clip_seconds=0.4), None)
    spec = _spec(path)
    expected = [c.serialized for c in proc.process(spec)]
    meta = parts.write_done(str(tmp_path), "k", spec, proc.iter_clips(spec))
    assert [c["bytes"] for c in meta["clips"]] == [len(r) for r in expected]
    offsets = parts.record_offsets(meta)
    assert offsets == [0, len(expected[0]) + 16, len(expected[0]) + len(expected[1]) + 32]
    got = output.read_tfrecords_at(parts.records_path(str(tmp_path), "k"), offsets[::-1])
    assert list(got) == expected[::-1]


def test_a_rows_cpu_time_is_charged_to_its_stages_and_not_the_callers(tmp_path):
    import time

    from pipelines.stages.clip import CostClock
    from schemas.dataset_info import COST_STAGES

    path = write_video(tmp_path / "v.mp4", 20, 20.0, size=(64, 48))  # 1 s -> 3 clips at 25 fps
    proc = ClipProcessor(_settings(modalities=("rgb", "flow"), max_clip_seconds=0.4), None)
    clock = CostClock()
    caller = 0.0  # CPU time the caller spends holding each clip: not the row's
    start = time.process_time()
    for clip in proc.iter_clips(_spec(path), clock):
        t0 = time.process_time()
        _ = sum(range(200_000)) + len(clip.serialized)
        caller += time.process_time() - t0
    elapsed = time.process_time() - start
    cost = clock.cost()
    assert list(cost.core_seconds) == list(COST_STAGES)
    assert cost.clip_seconds == (10 + 10 + 5) / 25
    assert all(s >= 0 for s in cost.core_seconds.values())
    # Without a pose stream nothing is charged to pose, tracking or render.
    assert [cost.core_seconds[s] for s in ("pose", "tracking", "render")] == [0.0, 0.0, 0.0]
    # Every moment is charged to one stage at most; the caller's moments to none.
    assert cost.total <= elapsed - caller + 1e-9  # (1e-9: float rounding of the sums)
