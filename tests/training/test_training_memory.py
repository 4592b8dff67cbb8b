"""Evaluation memory (`training.memory`): the graph count, its scaling, and the batch it picks."""

from __future__ import annotations

import keras
import pytest
import tensorflow as tf

from training import memory
from training.config import ExperimentConfig, RuntimeConfig, TrainConfig, get_preset


def test_the_count_replays_the_graph_freeing_each_tensor_after_its_last_use():
    x = keras.Input((4, 8, 8, 2), name="clip")  # held by the caller: not counted
    conv = keras.layers.Conv3D(3, 1, name="conv")(x)  # 4 * 8 * 8 * 3 floats: 3072 bytes
    relu = keras.layers.ReLU(name="relu")(conv)
    out = keras.layers.Add(name="add")([relu, conv])
    model = keras.Model(x, out)
    # conv: 3072; relu: conv + relu = 6144; add: conv + relu + add = 9216, then conv and relu
    # are freed (conv after its second use).
    assert memory.activation_bytes(model) == 9216
    assert memory.activation_bytes(model, batch=3) == 3 * 9216
    half = keras.Model(x, keras.layers.Conv3D(3, 1, dtype="float16")(x))
    assert memory.activation_bytes(half) == 4 * 8 * 8 * 3 * 2
    chain = keras.Model(x, keras.layers.ReLU()(keras.layers.ReLU()(conv)))
    assert memory.activation_bytes(chain) == 2 * 3072  # a tensor freed after its one use
    with pytest.raises(ValueError, match="build the model for a fixed clip shape"):
        memory.activation_bytes(keras.Model(*_free_shape()))
    with pytest.raises(ValueError, match="batch=0"):
        memory.activation_bytes(model, batch=0)


def _free_shape():
    x = keras.Input((None, 8, 8, 2))
    return x, keras.layers.Conv3D(3, 1)(x)


@pytest.mark.parametrize(
    "preset", ["tiny_r3d50g_teacher_rgb", "tiny_s3dg_teacher_flow", "tiny_epam"]
)
def test_a_clip_costs_in_proportion_to_its_frames(preset):
    cfg = get_preset(preset)
    one = memory.clip_memory([cfg], (8, 32, 32))
    two = memory.clip_memory([cfg], (16, 32, 32))
    assert two.activation_bytes == 2 * one.activation_bytes > 0
    assert two.input_bytes == 2 * one.input_bytes
    assert two.weight_bytes == one.weight_bytes > 0
    channels = {"rgb": 3, "flow": 2}
    if cfg.model.backbone != "epam":
        assert one.input_bytes == 4 * 8 * 32 * 32 * channels[cfg.modality]
    else:  # RGB, and 17 heatmaps at a quarter of the size
        assert one.input_bytes == 4 * 8 * 32 * 32 * 3 + 4 * 8 * 8 * 8 * 17
    assert one.per_clip == one.input_bytes + int(
        -(-memory.ACTIVATION_FACTOR * one.activation_bytes // 1)
    )


def test_epam_on_the_paper_input_counts_three_heatmap_frames_per_rgb_frame():
    paper = get_preset("tiny_epam_paper")
    count = memory.clip_memory([paper], (4, 32, 32))
    assert count.input_bytes == 4 * 4 * 32 * 32 * 3 + 4 * 12 * 8 * 8 * 17
    one = memory.clip_memory([get_preset("tiny_epam")], (4, 32, 32))
    assert count.activation_bytes > one.activation_bytes


def test_models_evaluated_together_share_the_inputs_and_add_their_weights():
    rgb, flow = get_preset("tiny_r3d50g_teacher_rgb"), get_preset("tiny_r3d50g_teacher_flow")
    a, b = memory.clip_memory([rgb]), memory.clip_memory([flow])
    both = memory.clip_memory([rgb, flow, rgb])
    assert both.input_bytes == a.input_bytes + b.input_bytes  # rgb read once
    assert both.activation_bytes == max(a.activation_bytes, b.activation_bytes)
    assert both.weight_bytes == 2 * a.weight_bytes + b.weight_bytes


def test_the_paper_evaluation_clip_of_r3d50g():
    """250 x 256 x 256 RGB: the input 187.5 MiB, res2's output alone 1 GiB (256 channels at
    250 x 64 x 64); the peak is a few of those."""
    cfg = get_preset("k600_r3d50g_teacher_rgb")
    count = memory.clip_memory([cfg])
    assert count.input_bytes == 250 * 256 * 256 * 3 * 4
    assert 2 * memory.GIB < count.activation_bytes < 4 * memory.GIB


def _strategy():
    return tf.distribute.get_strategy()


def test_the_evaluation_batch_follows_the_flag_the_size_or_the_memory():
    cfg = get_preset("tiny_r3d50g_teacher_rgb")
    runtime = RuntimeConfig(device_memory_gib=0.01)
    plan = memory.eval_batch([cfg], _strategy(), TrainConfig(eval_batch_per_replica=3), runtime)
    assert (plan.global_size, plan.per_replica) == (3, 3)
    plan = memory.eval_batch([cfg], _strategy(), TrainConfig(eval_batch_size=5), runtime)
    assert (plan.global_size, plan.per_replica) == (5, 5)
    plan = memory.eval_batch([cfg], _strategy(), TrainConfig(eval_batch_size=0), runtime)
    count = memory.clip_memory([cfg])
    usable = int(0.8 * 0.01 * memory.GIB)
    assert plan.per_replica == (usable - count.weight_bytes) // count.per_clip
    assert plan.global_size == plan.per_replica >= 1
    assert "runtime.device_memory_gib" in plan.reason


def test_a_clip_larger_than_the_device_is_refused_naming_the_figures():
    cfg = get_preset("k600_r3d50g_teacher_rgb")
    with pytest.raises(ValueError, match=r"one 250x256x256 evaluation clip needs about 4\.\d GiB"):
        memory.eval_batch(
            [cfg], _strategy(), TrainConfig(eval_batch_size=0), RuntimeConfig(device_memory_gib=4.0)
        )


def test_device_memory_on_this_machine_is_its_memory():
    budget, where = memory.device_memory(_strategy(), RuntimeConfig())
    assert budget > 256 << 20 and "CPU memory" in where


def test_settings_are_checked():
    with pytest.raises(ValueError, match="not both"):
        TrainConfig(eval_batch_size=4, eval_batch_per_replica=2).validate()
    with pytest.raises(ValueError, match="eval_batch_per_replica"):
        TrainConfig(eval_batch_per_replica=-1).validate()
    with pytest.raises(ValueError, match="runtime.device_memory_gib"):
        RuntimeConfig(device_memory_gib=-2).validate()
    cfg = ExperimentConfig()
    assert cfg.train.eval_batch_size == 0 and cfg.runtime.device_memory_gib == 0
