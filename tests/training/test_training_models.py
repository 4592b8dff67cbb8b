"""Backbones: R3D50-G against Table 1, S3D-G, STM (shapes, modules, counts by hand), feature
gating, parameter and FLOP counts."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from training_records import run_without_pipeline_imports

from training import flops, models
from training.config import TINY_R3D50G, TINY_S3DG, TINY_STM, ModelConfig

# Table 1 of the paper, output T x S^2 x C for a 64x224x224x3 input.
TABLE_1 = {
    "conv1": (64, 112, 112, 64),
    "pool1": (64, 56, 56, 64),
    "res2": (64, 56, 56, 256),
    "res3": (64, 28, 28, 512),
    "res4": (64, 14, 14, 1024),
    "res5": (64, 7, 7, 2048),
}


@pytest.fixture(scope="module")
def r3d50g():
    """The full R3D50-G, built symbolically for 64x224x224 clips (no forward pass)."""
    return models.build_backbone(ModelConfig(), (64, 224, 224, 3), endpoints=True)


def test_r3d50g_matches_table_1_block_by_block(r3d50g):
    shapes = {k: tuple(v.shape[1:]) for k, v in r3d50g.output.items()}
    for block, shape in TABLE_1.items():
        assert shapes[block] == shape, block
    # every residual cell keeps its stage's output size: no temporal downsampling anywhere
    for stage, depth in zip((2, 3, 4, 5), (3, 4, 6, 3)):
        for i in range(1, depth + 1):
            assert shapes[f"res{stage}_cell{i}"] == TABLE_1[f"res{stage}"]
    assert len(shapes) == len(TABLE_1) + 3 + 4 + 6 + 3


def test_r3d50g_kernels_strides_and_gating_follow_table_1(r3d50g):
    layer = {lyr.name: lyr for lyr in r3d50g.layers}
    conv1 = layer["conv1_conv"]
    assert conv1.kernel_size == (5, 7, 7) and conv1.strides == (1, 2, 2)
    pool1 = layer["pool1"]
    assert pool1.pool_size == (1, 3, 3) and pool1.strides == (1, 2, 2)
    expected_t = {2: [3, 3, 3], 3: [3, 1, 3, 1], 4: [3, 1, 3, 1, 3, 1], 5: [3, 1, 3]}
    for stage, ts in expected_t.items():
        got = [layer[f"res{stage}_cell{i}_a_conv"].kernel_size for i in range(1, len(ts) + 1)]
        assert got == [(t, 1, 1) for t in ts], stage
        for i in range(1, len(ts) + 1):
            assert layer[f"res{stage}_cell{i}_b_conv"].kernel_size == (1, 3, 3)
            assert layer[f"res{stage}_cell{i}_c_conv"].kernel_size == (1, 1, 1)
        stride = 1 if stage == 2 else 2
        assert layer[f"res{stage}_cell1_b_conv"].strides == (1, stride, stride)
    assert all(lyr.strides[0] == 1 for lyr in r3d50g.layers if isinstance(lyr, keras.layers.Conv3D))
    gates = [lyr.name for lyr in r3d50g.layers if isinstance(lyr, models.FeatureGating)]
    assert gates == ["res2_gating", "res3_gating", "res4_gating", "res5_gating"]
    assert models.temporal_kernel_sizes(4, 6) == (3, 1, 3, 1, 3, 1)


def r3d50g_parameters(num_classes: int, in_channels: int = 3) -> int:
    """Table 1 counted by hand: conv kernels, 4 batch-norm values per channel, gating, head."""

    def conv_bn(kt, kh, kw, cin, cout):
        return kt * kh * kw * cin * cout + 4 * cout

    total = conv_bn(5, 7, 7, in_channels, 64)
    cin = 64
    for inner, ts in (
        (64, [3, 3, 3]),
        (128, [3, 1, 3, 1]),
        (256, [3, 1, 3, 1, 3, 1]),
        (512, [3, 1, 3]),
    ):
        out = 4 * inner
        total += conv_bn(1, 1, 1, cin, out)  # projection shortcut of the first cell
        for i, t in enumerate(ts):
            total += conv_bn(t, 1, 1, cin if i == 0 else out, inner)
            total += conv_bn(1, 3, 3, inner, inner) + conv_bn(1, 1, 1, inner, out)
        total += out * out + out  # feature gating
        cin = out
    return total + 2048 * num_classes + num_classes


def test_r3d50g_parameter_count_is_table_1_by_hand():
    assert flops.parameter_count(ModelConfig(), 600) == r3d50g_parameters(600) == 35_129_368


def test_s3dg_endpoints_for_a_64x224x224_clip():
    net = models.build_backbone(ModelConfig(backbone="s3dg"), (64, 224, 224, 3), endpoints=True)
    shapes = {k: tuple(v.shape[1:]) for k, v in net.output.items()}
    assert shapes["Conv3d_1a"] == (32, 112, 112, 64)
    assert shapes["Conv3d_2c"] == (32, 56, 56, 192)
    assert shapes["Mixed_3b"] == (32, 28, 28, 256)
    assert shapes["Mixed_3c"] == (32, 28, 28, 480)
    assert shapes["Mixed_4b"] == (16, 14, 14, 512)
    assert shapes["Mixed_4e"] == (16, 14, 14, 528)
    assert shapes["Mixed_4f"] == (16, 14, 14, 832)
    assert shapes["Mixed_5c"] == (8, 7, 7, 1024)
    layer = {lyr.name: lyr for lyr in net.layers}
    assert layer["Conv3d_1a_spatial_conv"].kernel_size == (1, 7, 7)
    assert layer["Conv3d_1a_temporal_conv"].kernel_size == (7, 1, 1)
    assert layer["Conv3d_1a_temporal_conv"].strides == (2, 1, 1)
    gates = [lyr.name for lyr in net.layers if isinstance(lyr, models.FeatureGating)]
    assert len(gates) == 1 + 4 * 9  # Conv3d_2c and every branch of the nine Inception blocks


def test_feature_gating_is_sigmoid_of_the_pooled_context():
    gating = models.FeatureGating()
    x = np.arange(2 * 2 * 1 * 1 * 3, dtype=np.float32).reshape(2, 2, 1, 1, 3) / 10
    gating.build(x.shape)
    w = np.array([[0.5, 0, 0], [0, -1, 0], [0, 0, 2]], np.float32)
    gating.kernel.assign(w)
    gating.bias.assign([0.1, 0.0, -0.2])
    context = x.mean(axis=(1, 2, 3))  # [2, 3]
    gate = 1 / (1 + np.exp(-(context @ w + [0.1, 0.0, -0.2])))
    np.testing.assert_allclose(gating(x).numpy(), x * gate[:, None, None, None, :], rtol=1e-6)


@pytest.mark.parametrize("cfg", [TINY_R3D50G, TINY_S3DG], ids=["r3d50g", "s3dg"])
def test_tiny_classifiers_give_float32_logits_for_any_clip_size(cfg):
    model = models.build_classifier(cfg, num_classes=5, in_channels=2)
    for shape in ((2, 8, 32, 32, 2), (1, 5, 24, 40, 2)):
        logits = model(tf.zeros(shape), training=False)
        assert logits.shape == (shape[0], 5) and logits.dtype == tf.float32


def test_bfloat16_policy_computes_in_bfloat16_with_float32_weights_and_logits():
    model = models.build_classifier(TINY_R3D50G, 3, 3, dtype="mixed_bfloat16")
    conv = model.backbone.get_layer("conv1_conv")
    assert conv.compute_dtype == "bfloat16" and conv.kernel.dtype == "float32"
    assert model(tf.zeros((1, 4, 32, 32, 3))).dtype == tf.float32


def test_analytic_flops_equal_the_tf_profiler_count_of_convolutions_and_matmuls():
    cfg = TINY_R3D50G
    shape = (8, 32, 32)
    macs = flops.analytic_macs(cfg, shape, num_classes=7)
    profiled = flops.profiled_flops(cfg, shape, 7, op_types=("Conv3D", "MatMul"))
    assert profiled == 2 * macs
    # Gating (C x C per stage, C = 16, 32, 64, 128 at 1/16 width) and the 128 x 7 head do not
    # grow with time; every convolution grows linearly (no temporal stride anywhere).
    constant = 16**2 + 32**2 + 64**2 + 128**2 + 128 * 7
    assert flops.analytic_macs(cfg, (16, 32, 32), 7) - constant == 2 * (macs - constant)
    # conv1 by hand: 8 x 16 x 16 outputs x 4 channels x (5 x 7 x 7 x 3) weights
    assert macs - constant > 8 * 16 * 16 * 4 * 5 * 7 * 7 * 3


def test_errors_name_the_parameter():
    with pytest.raises(ValueError, match="backbone='c3d'"):
        models.build_backbone(ModelConfig(backbone="c3d"))
    with pytest.raises(ValueError, match="num_classes=0"):
        models.build_classifier(TINY_R3D50G, 0, 3)
    with pytest.raises(ValueError, match="input_shape="):
        models.build_backbone(TINY_R3D50G, (32, 32, 3))
    with pytest.raises(ValueError, match="stage=6"):
        models.temporal_kernel_sizes(6, 3)


# ---------------------------------------------------------------------------------------------
# STM (Jiang et al., ICCV 2019): ResNet-50 with STM blocks, TSN-style segments.
# ---------------------------------------------------------------------------------------------
STM = ModelConfig(backbone="stm")
STM_BLOCKS = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # inner channels, depth, stride


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@pytest.mark.parametrize("segments", [8, 16])
def test_stm_output_shapes_for_8_and_16_segments(segments):
    net = models.build_backbone(STM, (segments, 224, 224, 3), endpoints=True)
    shapes = {k: tuple(v.shape[1:]) for k, v in net.output.items()}
    assert shapes["conv1"] == (segments, 112, 112, 64)
    assert shapes["pool1"] == (segments, 56, 56, 64)
    size = 56
    for stage, (inner, depth, stride) in enumerate(STM_BLOCKS, start=2):
        size //= stride
        for i in range(1, depth + 1):
            block = f"conv{stage}_block{i}"
            assert shapes[block] == (segments, size, size, 4 * inner), block
            assert shapes[f"{block}_cstm"] == (segments, size, size, inner), block
            assert shapes[f"{block}_cmm"] == (segments, size, size, inner), block
        assert shapes[f"conv{stage}"] == (segments, size, size, 4 * inner)
    assert shapes["conv5"] == (segments, 7, 7, 2048)  # no temporal stride anywhere
    layer = {lyr.name: lyr for lyr in net.layers}
    assert layer["conv1_conv"].kernel_size == (1, 7, 7)
    assert layer["conv3_block1_2_conv"].strides == (1, 2, 2)
    assert layer["conv3_block1_0_conv"].strides == (1, 2, 2)
    assert layer["conv3_block1_cmm_pool"].pool_size == (1, 2, 2)
    assert tuple(layer["conv4_block2_cstm_temporal"].kernel.shape) == (3, 256)
    assert tuple(layer["conv4_block2_cmm_channelwise"].kernel.shape) == (3, 3, 16)
    assert all(
        lyr.kernel_size[0] == 1 for lyr in net.layers if isinstance(lyr, keras.layers.Conv3D)
    )
    model = models.build_classifier(TINY_STM, num_classes=5, in_channels=3)
    logits = model(tf.zeros((2, segments, 32, 32, 3)), training=False)
    assert logits.shape == (2, 5) and logits.dtype == tf.float32


def stm_parameters(num_classes: int, in_channels: int = 3, trainable_only: bool = False) -> int:
    """ResNet-50 with STM blocks counted by hand from the layer shapes (see training.models)."""
    bn = 2 if trainable_only else 4  # gamma, beta (+ moving mean and variance)

    def conv_bn(kh, kw, cin, cout):
        return kh * kw * cin * cout + bn * cout

    total = conv_bn(7, 7, in_channels, 64)
    cin = 64
    for inner, depth, _ in STM_BLOCKS:
        out, reduced = 4 * inner, inner // 16
        total += conv_bn(1, 1, cin, out)  # projection shortcut of the first block
        for i in range(depth):
            total += conv_bn(1, 1, cin if i == 0 else out, inner)  # 1x1 reduction
            total += 3 * inner + conv_bn(3, 3, inner, inner)  # CSTM: temporal taps, 3x3
            total += conv_bn(1, 1, inner, reduced) + 9 * reduced + reduced * inner  # CMM
            total += conv_bn(1, 1, inner, out)  # 1x1 expansion
        cin = out
    return total + 2048 * num_classes + num_classes


def test_stm_parameter_count_is_the_layer_shapes_by_hand():
    assert flops.parameter_count(STM, 600) == stm_parameters(600) == 24_962_132
    assert flops.trainable_parameter_count(STM, 400) == stm_parameters(400, trainable_only=True)
    assert stm_parameters(400, trainable_only=True) == 24_498_740
    # The paper's 24.0 M: PyTorch's count (no moving statistics) with a 174-class head.
    assert flops.trainable_parameter_count(STM, 174) == stm_parameters(174, 3, True) == 24_035_666
    # flow: conv1 sees 2 channels
    assert flops.parameter_count(STM, 600, 2) == stm_parameters(600, 2) == 24_962_132 - 7 * 7 * 64


def stm_macs(frames: int, height: int, width: int, num_classes: int, in_channels: int = 3):
    """MACs of one clip by hand: every frame through the 2D network, channel-wise convolutions
    as taps x outputs, the CMM at its input's size (pooled after), scores for every frame."""
    h, w = ceil_div(height, 2), ceil_div(width, 2)
    macs = h * w * 7 * 7 * in_channels * 64
    h, w = ceil_div(h, 2), ceil_div(w, 2)
    cin = 64
    for inner, depth, stride in STM_BLOCKS:
        out, reduced = 4 * inner, inner // 16
        for i in range(depth):
            s = stride if i == 0 else 1
            ho, wo = ceil_div(h, s), ceil_div(w, s)
            if i == 0:
                macs += ho * wo * cin * out  # projection
            macs += h * w * cin * inner  # 1x1 reduction
            macs += h * w * inner * 3 + ho * wo * 9 * inner * inner  # CSTM
            macs += h * w * (inner * reduced + 9 * reduced + reduced * inner)  # CMM
            macs += ho * wo * inner * out  # 1x1 expansion
            h, w, cin = ho, wo, out
    return frames * (macs + 2048 * num_classes)


def test_stm_macs_are_counted_by_hand_and_by_the_profiler():
    for frames, classes in ((8, 400), (16, 600)):
        assert flops.analytic_macs(STM, (frames, 224, 224), classes) == stm_macs(
            frames, 224, 224, classes
        )
    # the paper's 33.3 and 66.5 G multiply-adds; ours: 33.08 and 66.16 (-0.7%, -0.5%)
    assert round(stm_macs(8, 224, 224, 400) / 1e9, 2) == 33.08
    assert round(stm_macs(16, 224, 224, 400) / 1e9, 2) == 66.16
    # every counted op of the tiny model's graph, TF's count = 2 x MACs
    for shape in ((8, 32, 32), (5, 24, 40)):
        macs = flops.analytic_macs(TINY_STM, shape, 7)
        ops = ("Conv3D", "DepthwiseConv2dNative", "MatMul", "BatchMatMulV2")
        assert flops.profiled_flops(TINY_STM, shape, 7, op_types=ops) == 2 * macs


def test_cstm_and_cmm_output_shapes():
    for stride, (h, w), (ho, wo) in ((1, (14, 14), (14, 14)), (2, (7, 9), (4, 5))):
        cstm = models.build_cstm((6, h, w, 32), filters=32, stride=stride)
        cmm = models.build_cmm((6, h, w, 32), filters=32, stride=stride)
        x = tf.random.normal((2, 6, h, w, 32))
        assert tuple(cstm(x).shape) == (2, 6, ho, wo, 32)
        assert tuple(cmm(x).shape) == (2, 6, ho, wo, 32)
    names = [lyr.name for lyr in models.build_cmm((4, 8, 8, 32), 32).layers]
    assert names[1:] == [
        "stm_cmm_reduce_conv",
        "stm_cmm_reduce_bn",
        "stm_cmm_channelwise",
        "stm_cmm_motion",
        "stm_cmm_restore_conv",
    ]


def numpy_cmm(cmm: keras.Model, x: np.ndarray) -> np.ndarray:
    """CMM in inference mode by hand: 1x1 to C/16 + BN, K * F_{t+1} - F_t, zeros last, 1x1."""
    layer = {lyr.name: lyr for lyr in cmm.layers}
    reduce_w = layer["stm_cmm_reduce_conv"].kernel.numpy()[0, 0, 0]  # [C, C/16]
    bn = layer["stm_cmm_reduce_bn"]
    gamma, beta, mean, var = (
        v.numpy() for v in (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance)
    )
    k = layer["stm_cmm_channelwise"].kernel.numpy()  # [3, 3, C/16]
    restore_w = layer["stm_cmm_restore_conv"].kernel.numpy()[0, 0, 0]  # [C/16, C]
    f = (x @ reduce_w - mean) / np.sqrt(var + models.BN_EPSILON) * gamma + beta
    pad = np.pad(f, ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)))
    h, w = f.shape[2:4]
    kf = sum(k[i, j] * pad[:, :, i : i + h, j : j + w] for i in range(3) for j in range(3))
    motion = np.zeros_like(f)
    motion[:, :-1] = kf[:, 1:] - f[:, :-1]
    return motion @ restore_w


def test_cmm_is_the_motion_of_adjacent_frames_and_zero_for_a_still_clip():
    cmm = models.build_cmm((5, 6, 7, 32), filters=32)
    rng = np.random.default_rng(0)
    still = np.repeat(rng.normal(size=(2, 1, 6, 7, 32)).astype(np.float32), 5, axis=1)
    # K starts as the identity, so a clip of identical frames has no motion: exactly zero
    # (the response to a zero difference; the restoring 1x1 convolution has no bias).
    np.testing.assert_array_equal(cmm(still, training=False).numpy(), 0.0)
    layer = {lyr.name: lyr for lyr in cmm.layers}
    layer["stm_cmm_channelwise"].kernel.assign(rng.normal(size=(3, 3, 2)).astype(np.float32))
    layer["stm_cmm_reduce_bn"].moving_mean.assign(rng.normal(size=2).astype(np.float32))
    out = cmm(still, training=False).numpy()
    # any K: the same response K * F - F at every step of a still clip, zero at the last one
    for t in range(1, 4):
        np.testing.assert_array_equal(out[:, t], out[:, 0])
    np.testing.assert_array_equal(out[:, -1], 0.0)
    assert np.abs(out[:, 0]).max() > 0.01
    np.testing.assert_allclose(out, numpy_cmm(cmm, still), rtol=1e-4, atol=1e-4)
    moving = rng.normal(size=(2, 5, 6, 7, 32)).astype(np.float32)
    np.testing.assert_allclose(
        cmm(moving, training=False).numpy(), numpy_cmm(cmm, moving), rtol=1e-4, atol=1e-4
    )


def test_cstm_temporal_taps_start_as_a_temporal_shift():
    layer = models.ChannelwiseTemporalConv(name="taps")
    t = np.arange(1, 6, dtype=np.float32)  # frame t holds the value t (1..5) in every channel
    x = np.broadcast_to(t[None, :, None, None, None], (1, 5, 2, 3, 8)).copy()
    y = layer(x).numpy()[0, :, 0, 0]  # [T, 8]
    np.testing.assert_array_equal(y[:, :2], [[0], [1], [2], [3], [4]] * np.ones(2))  # t - 1
    np.testing.assert_array_equal(y[:, 2:6], t[:, None] * np.ones(4))  # t
    np.testing.assert_array_equal(y[:, 6:], [[2], [3], [4], [5], [0]] * np.ones(2))  # t + 1
    assert layer.kernel.shape == (3, 8)


def test_stm_scores_every_segment_and_averages():
    model = models.build_classifier(TINY_STM, num_classes=4, in_channels=2)
    x = tf.random.normal((3, 8, 32, 32, 2), seed=1)
    features = model.backbone(x, training=False)  # [3, 8, 2, 2, 128]
    per_segment = model.head(tf.reduce_mean(features, axis=(2, 3)))  # [3, 8, 4]
    logits = model(x, training=False)
    np.testing.assert_allclose(logits, tf.reduce_mean(per_segment, axis=1), rtol=1e-5, atol=1e-6)
    # TSN's consensus over the scores = the head on the averaged features (the head is affine)
    pooled = model.head(tf.reduce_mean(features, axis=(1, 2, 3)))
    np.testing.assert_allclose(logits, pooled, rtol=1e-4, atol=1e-5)


def test_tiny_stm_overfits_one_batch():
    keras.utils.set_random_seed(3)
    model = models.build_classifier(TINY_STM, num_classes=3, in_channels=3)
    x = tf.random.normal((6, 8, 32, 32, 3), seed=4)
    y = tf.constant([0, 1, 2, 0, 1, 2])
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    losses = [float(step()) for _ in range(30)]
    assert losses[-1] < 0.25 * losses[0], losses
    assert float(loss_fn(y, model(x, training=True))) < 0.25 * losses[0]


STM_WITHOUT_BEAM_MEDIAPIPE_OPENCV = """
import keras, tensorflow as tf
from training import config, flops, inputs, models, trainer

cfg = config.get_preset("tiny_stm8_student").model
model = models.build_classifier(cfg, 3, inputs.MODEL_CHANNELS["rgb"])
x, y = tf.random.normal((2, 8, 32, 32, 3)), tf.constant([0, 2])
with tf.GradientTape() as tape:
    loss = keras.losses.sparse_categorical_crossentropy(y, model(x, training=True), True)
grads = tape.gradient(loss, model.trainable_variables)
assert all(g is not None for g in grads)
assert inputs.segment_indices(16, 8).numpy().tolist() == [1, 3, 5, 7, 9, 11, 13, 15]
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not leaked, leaked
print("stm ok")
"""


def test_stm_imports_and_trains_without_beam_mediapipe_or_opencv():
    proc = run_without_pipeline_imports(STM_WITHOUT_BEAM_MEDIAPIPE_OPENCV)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    assert "stm ok" in proc.stdout
