"""The tf.data pipeline: shared geometry across streams, flow decoding, padding, determinism."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf
from training_records import flow_image, jpeg, serialize_clip, write_records

from schemas import layout
from schemas import media_sequence as ms
from schemas.dataset_info import DatasetInfo
from training import inputs
from training.config import DataConfig

H, W, T = 32, 40, 20


def coordinate_frame(t: int) -> np.ndarray:
    """R = 6x, G = 6y, B = 12t: every pixel tells where (and when) it came from."""
    y, x = np.mgrid[0:H, 0:W]
    return np.stack([6 * x, 6 * y, np.full_like(x, 12 * t)], -1).astype(np.uint8)


def decoded_frames() -> np.ndarray:
    """int [T, H, W, 3]: the coordinate clip's frames as a JPEG decoder returns them."""
    return np.stack(
        [tf.io.decode_jpeg(jpeg(coordinate_frame(t), quality=100)).numpy() for t in range(T)]
    ).astype(int)


@pytest.fixture(scope="module")
def coordinate_shard(tmp_path_factory) -> str:
    """16 copies of one clip whose RGB, pose and flow streams hold the *same* JPEG bytes."""
    frames = [jpeg(coordinate_frame(t), quality=100) for t in range(T)]
    records = [
        serialize_clip(f"coord{i}", 0, frames, frames, frames[: T - 1], H, W) for i in range(16)
    ]
    path = str(tmp_path_factory.mktemp("coord") / "coord-00000-of-00001.tfrecord")
    write_records(path, records)
    return path


def to_samples(rgb: np.ndarray) -> np.ndarray:
    """[-1, 1] floats back to the JPEG's [0, 255] samples."""
    return (rgb + 1.0) * 127.5


def batches(pattern, modalities, data, n, training=True, batch_size=4, **kw):
    ds = inputs.build_dataset(
        pattern, modalities, training=training, batch_size=batch_size, data=data, **kw
    )
    return [{k: v.numpy() for k, v in b.items()} for b in ds.take(n)]


def test_same_window_crop_and_flip_in_every_stream(coordinate_shard):
    data = DataConfig(
        num_frames=8,
        crop_size=(24, 24),
        brightness_max_delta=0.0,
        contrast_range=(1.0, 1.0),
        shuffle_buffer=4,
        seed=11,
    )
    out = batches(coordinate_shard, ["rgb", "pose", "flow"], data, 4)
    rgb = np.concatenate([b["rgb"] for b in out])
    pose = np.concatenate([b["pose"] for b in out])
    flow = np.concatenate([b["flow"] for b in out])
    assert rgb.shape == (16, 8, 24, 24, 3) and flow.shape == (16, 8, 24, 24, 2)
    np.testing.assert_array_equal(rgb, pose)
    frames = decoded_frames()
    flips, starts, x0s = set(), set(), set()
    for clip_rgb, clip_flow in zip(rgb, flow):
        q = np.round(to_samples(clip_rgb)).astype(int)
        # where it came from, read off the coded pixels (means average the JPEG noise out) ...
        ts = np.round(q[..., 2].mean(axis=(1, 2)) / 12).astype(int)
        xs = np.round(q[0, ..., 0].mean(axis=0) / 6).astype(int)
        ys = np.round(q[0, ..., 1].mean(axis=1) / 6).astype(int)
        flipped = xs[0] > xs[-1]
        x0, y0 = int(min(xs[0], xs[-1])), int(ys[0])
        # ... a window of 8 consecutive frames and a 24x24 crop inside the frame ...
        assert 0 <= ts[0] <= T - 8 and list(ts) == list(range(ts[0], ts[0] + 8))
        assert 0 <= x0 <= W - 24 and 0 <= y0 <= H - 24
        # ... and exactly those pixels of the stored frames.
        expected = frames[ts, y0 : y0 + 24, x0 : x0 + 24]
        np.testing.assert_array_equal(q, expected[:, :, ::-1] if flipped else expected)
        # flow step t = frame t's bytes here: y equals the image's G, x its R (negated if mirrored)
        sign = -1.0 if flipped else 1.0
        for i, t in enumerate(ts):
            src = i if t < T - 1 else i - 1  # the last frame repeats the last flow step
            np.testing.assert_allclose(clip_flow[i, ..., 1], clip_rgb[src, ..., 1], atol=1e-5)
            np.testing.assert_allclose(
                clip_flow[i, ..., 0], sign * clip_rgb[src, ..., 0], atol=1e-5
            )
        flips.add(bool(flipped))
        starts.add(int(ts[0]))
        x0s.add(int(x0))
    assert flips == {True, False}
    assert len(starts) > 1 and len(x0s) > 1


def test_photometric_jitter_is_shared_by_rgb_and_pose(coordinate_shard):
    base = DataConfig(num_frames=4, crop_size=(24, 24), shuffle_buffer=4, seed=5)
    plain = dataclasses.replace(base, brightness_max_delta=0.0, contrast_range=(1.0, 1.0))
    jitter = dataclasses.replace(base, brightness_max_delta=0.3, contrast_range=(0.5, 1.5))
    a = batches(coordinate_shard, ["rgb", "pose"], jitter, 1)[0]
    b = batches(coordinate_shard, ["rgb", "pose"], plain, 1)[0]
    np.testing.assert_array_equal(a["rgb"], a["pose"])
    assert np.abs(a["rgb"] - b["rgb"]).max() > 0.05
    assert a["rgb"].min() >= -1.0 and a["rgb"].max() <= 1.0


def test_window_indices_pad_by_repeating_edge_frames():
    np.testing.assert_array_equal(
        inputs.window_indices(20, 26, inputs.central_start(20, 26)).numpy(),
        [0] * 4 + list(range(1, 19)) + [19] * 4,
    )
    np.testing.assert_array_equal(
        inputs.window_indices(20, 25, inputs.central_start(20, 25)).numpy(),
        [0] * 4 + list(range(1, 19)) + [19] * 3,
    )
    np.testing.assert_array_equal(
        inputs.window_indices(20, 8, inputs.central_start(20, 8)).numpy(), range(6, 14)
    )
    np.testing.assert_array_equal(inputs.window_indices(1, 3, 0).numpy(), [0, 0, 0])


def test_eval_is_one_central_crop_with_padding(coordinate_shard):
    data = DataConfig(eval_num_frames=26, eval_crop_size=(24, 24))
    out = batches(coordinate_shard, ["rgb", "flow"], data, 1, training=False, batch_size=2)[0]
    q = np.round(to_samples(out["rgb"][0])).astype(int)
    ts = [0] * 4 + list(range(1, 19)) + [19] * 4
    np.testing.assert_array_equal(q, decoded_frames()[ts, 4:28, 8:32])  # y0 = 4, x0 = 8
    np.testing.assert_array_equal(out["rgb"][0], out["rgb"][1])  # no randomness
    np.testing.assert_array_equal(out["mask"], [1.0, 1.0])


@pytest.fixture(scope="module")
def constant_flow_shard(tmp_path_factory):
    """4 frames; flow +8 px in x, -4 px in y everywhere; returns (path, decoded q_x, q_y)."""
    rgb = [jpeg(np.full((H, W, 3), 100, np.uint8))] * 4
    flow_jpeg = jpeg(flow_image(np.full((H, W), 8.0), np.full((H, W), -4.0)), quality=100)
    q = tf.io.decode_jpeg(flow_jpeg).numpy().astype(np.float64)
    assert np.ptp(q[..., 0]) == 0 and np.ptp(q[..., 1]) == 0
    path = str(tmp_path_factory.mktemp("flow") / "flow-00000-of-00001.tfrecord")
    write_records(path, [serialize_clip("f", 0, rgb, None, [flow_jpeg] * 3, H, W)])
    return path, q[0, 0, 0], q[0, 0, 1]


def test_flow_is_dequantized_then_divided_by_the_saturation(constant_flow_shard):
    path, qx, qy = constant_flow_shard
    vx, vy = (qx / 255 - 0.5) * 40, (qy / 255 - 0.5) * 40  # the quantization's inverse
    assert abs(vx - 8.0) < 0.35 and abs(vy + 4.0) < 0.35  # floor + JPEG: 2 levels
    data = DataConfig(eval_num_frames=4, eval_crop_size=(24, 24))
    flow = batches(path, ["flow"], data, 1, training=False, batch_size=1)[0]["flow"][0]
    assert flow.shape == (4, 24, 24, 2)
    np.testing.assert_allclose(flow[..., 0], vx / 20, atol=1e-6)
    np.testing.assert_allclose(flow[..., 1], vy / 20, atol=1e-6)


def test_frames_smaller_than_the_crop_are_resized_and_flow_scaled(constant_flow_shard):
    path, qx, qy = constant_flow_shard
    vx, vy = (qx / 255 - 0.5) * 40, (qy / 255 - 0.5) * 40
    # 36x36 crop of 32x40 frames: resized to 36x45 (scale 1.125 in y and 45/40 in x).
    data = DataConfig(eval_num_frames=4, eval_crop_size=(36, 36))
    out = batches(path, ["rgb", "flow"], data, 1, training=False, batch_size=1)[0]
    assert out["rgb"].shape == (1, 4, 36, 36, 3)
    np.testing.assert_allclose(out["flow"][0, ..., 0], vx * (45 / 40) / 20, atol=1e-5)
    np.testing.assert_allclose(out["flow"][0, ..., 1], vy * (36 / 32) / 20, atol=1e-5)


def test_seeded_pipeline_is_deterministic(tiny_data):
    data = DataConfig(data_dir=tiny_data, num_frames=8, crop_size=(24, 24), seed=7)
    pattern = inputs.split_pattern(data, "train")
    a = batches(pattern, ["rgb", "flow"], data, 2)
    b = batches(pattern, ["rgb", "flow"], data, 2)
    c = batches(pattern, ["rgb", "flow"], dataclasses.replace(data, seed=8), 2)
    for x, y in zip(a, b):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    assert any(not np.array_equal(x["rgb"], z["rgb"]) for x, z in zip(a, c))


def test_eval_batches_are_padded_and_masked(tiny_data):
    data = DataConfig(data_dir=tiny_data, eval_num_frames=8, eval_crop_size=(32, 32))
    out = batches(
        inputs.split_pattern(data, "eval"), ["pose"], data, 5, training=False, with_ids=True
    )
    assert len(out) == 2  # 6 clips in batches of 4
    np.testing.assert_array_equal(out[1]["mask"], [1, 1, 0, 0])
    np.testing.assert_array_equal(out[0]["label"], [0, 1, 2, 0])
    assert [i.decode() for i in out[1]["example_id"]] == ["val04", "val05", "", ""]
    assert out[0]["pose"].shape == (4, 8, 32, 32, 3)


def test_class_count_comes_from_and_is_checked_against_dataset_info(tiny_data):
    assert inputs.resolve_num_classes(DataConfig(data_dir=tiny_data)) == 3
    with pytest.raises(ValueError, match="num_classes=600"):
        inputs.resolve_num_classes(DataConfig(data_dir=tiny_data, num_classes=600))
    pattern = os.path.join(tiny_data, "train", "*.tfrecord")
    assert inputs.resolve_num_classes(DataConfig(train_pattern=pattern)) == 3
    with pytest.raises(ValueError, match="num_classes=0"):
        inputs.resolve_num_classes(DataConfig())


def test_the_description_is_read_typed_and_checked(tiny_data, tmp_path):
    info = inputs.read_dataset_info(tiny_data)
    assert isinstance(info, DatasetInfo)
    assert info.num_classes == 3 and info.modalities == tuple(ms.DEFAULT_MODALITIES)
    assert inputs.read_dataset_info(str(tmp_path)) is None
    assert inputs.split_pattern(DataConfig(data_dir="gs://b/d/"), "eval") == (
        "gs://b/d/validation/*.tfrecord"
    )
    (tmp_path / layout.DATASET_INFO).write_text('{"schema_version": 1, "num_classes": "3"}')
    with pytest.raises(ValueError, match="dataset_info.json: num_classes: expected an integer"):
        inputs.resolve_num_classes(DataConfig(data_dir=str(tmp_path)))
    (tmp_path / layout.DATASET_INFO).write_text('{"schema_version": 2}')
    with pytest.raises(ValueError, match="dataset_info.json: schema_version=2"):
        inputs.read_dataset_info(str(tmp_path))


def test_errors_name_the_parameter(tmp_path):
    with pytest.raises(ValueError, match="pattern='.*nothing.*': matches no file"):
        inputs.list_shards(str(tmp_path / "nothing-*.tfrecord"))
    with pytest.raises(ValueError, match="modalities="):
        inputs.RecordParser(["depth"], 8, (24, 24), training=True)
    with pytest.raises(ValueError, match="num_frames=0"):
        inputs.RecordParser(["rgb"], 0, (24, 24), training=True)
    with pytest.raises(ValueError, match="crop_size="):
        inputs.RecordParser(["rgb"], 8, (24,), training=True)
