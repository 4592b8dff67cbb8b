"""Backbones: R3D50-G against Table 1, S3D-G, feature gating, parameter and FLOP counts."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from training import flops, models
from training.config import TINY_R3D50G, TINY_S3DG, ModelConfig

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
