"""EPAM-Net: stream shapes at the paper's sizes, the temporal shift, the pose-guided attention
by hand, parameter and FLOP counts, late fusion, overfitting a batch, no Beam/MediaPipe/OpenCV."""

from __future__ import annotations

import os
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from training_records import run_without_pipeline_imports

from training import epam

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Tiny streams for CPU tests: the paper's strides and shifts, 4 base channels, 1-2 blocks.
TINY_RGB = epam.XShiftNetSpec(in_channels=3, base_channels=4, depths=(1, 2, 1, 1), shift_div=8)
TINY_HEATMAP = epam.XShiftNetSpec(
    in_channels=17, base_channels=4, stem_stride=1, depths=(2, 1, 1), strides=(2, 2, 2), shift_div=4
)


def tiny_model(num_classes=5, **kwargs) -> epam.EPAMNet:
    return epam.EPAMNet(num_classes, TINY_RGB, TINY_HEATMAP, **kwargs)


def test_streams_at_the_paper_input_sizes():
    """NTU-60: RGB 16x224x224 -> 16x7x7x432, heatmaps 48x56x56x17 -> 48x7x7x216 (symbolic)."""
    rgb = epam.build_rgb_xshiftnet(input_shape=(16, 224, 224, 3), endpoints=True)
    shapes = {k: tuple(v.shape[1:]) for k, v in rgb.output.items()}
    assert shapes == {
        "stem": (16, 112, 112, 24),
        "stage1": (16, 56, 56, 24),
        "stage2": (16, 28, 28, 48),
        "stage3": (16, 14, 14, 96),
        "stage4": (16, 7, 7, 192),
        "features": (16, 7, 7, 432),
    }
    pose = epam.build_heatmap_xshiftnet(input_shape=(48, 56, 56, 17), endpoints=True)
    shapes = {k: tuple(v.shape[1:]) for k, v in pose.output.items()}
    assert shapes == {
        "stem": (48, 56, 56, 24),
        "stage1": (48, 28, 28, 24),
        "stage2": (48, 14, 14, 48),
        "stage3": (48, 7, 7, 96),
        "features": (48, 7, 7, 216),
    }
    for net, blocks, shift_div, se_blocks in ((rgb, 26, 8, 15), (pose, 23, 4, 13)):
        shifts = [lyr for lyr in net.layers if isinstance(lyr, epam.TemporalShift)]
        assert len(shifts) == blocks and {s.shift_div for s in shifts} == {shift_div}
        se = [lyr.name for lyr in net.layers if isinstance(lyr, epam.SqueezeExcitation)]
        assert len(se) == se_blocks  # the 1st, 3rd, 5th, ... block of each stage
        assert "stage3_block1_se" in se and "stage3_block2_se" not in se
        convs = {lyr.name: lyr for lyr in net.layers if isinstance(lyr, epam.FrameConv)}
        assert convs["stage1_block1_conv2_conv"].depthwise
        assert convs["stage1_block1_conv2_conv"].strides == 2
        assert convs["stage1_block2_conv2_conv"].strides == 1
        assert convs["stage1_block1_proj_conv"].kernel_size == 1
        assert "stage1_block2_proj_conv" not in convs


def test_temporal_shift_moves_one_eighth_forward_and_one_eighth_backward():
    # x[b, t, 0, 0, c] = 10 t + c, and the second clip negated (clips must not mix).
    x = (10 * np.arange(3)[:, None] + np.arange(8)[None, :]).astype(np.float32)
    x = np.stack([x, -x])[:, :, None, None, :]  # [2, 3, 1, 1, 8]
    out = epam.TemporalShift(8)(x).numpy()
    expected = np.array(
        [
            [10, 0, 2, 3, 4, 5, 6, 7],  # channel 0 from frame 1, channel 1 zero (no frame -1)
            [20, 1, 12, 13, 14, 15, 16, 17],
            [0, 11, 22, 23, 24, 25, 26, 27],  # channel 0 zero (no frame 3)
        ],
        np.float32,
    )
    np.testing.assert_array_equal(out[0, :, 0, 0], expected)
    np.testing.assert_array_equal(out[1, :, 0, 0], -expected)
    quarter = epam.TemporalShift(4)(x).numpy()[0, :, 0, 0]
    np.testing.assert_array_equal(
        quarter,
        [
            [10, 11, 0, 0, 4, 5, 6, 7],
            [20, 21, 2, 3, 14, 15, 16, 17],
            [0, 0, 12, 13, 24, 25, 26, 27],
        ],
    )
    np.testing.assert_array_equal(epam.TemporalShift(16)(x).numpy(), x)  # fold 0: identity


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_attention_multiplies_the_rgb_features_by_the_maps_computed_by_hand():
    rng = np.random.default_rng(0)
    pose = rng.normal(size=(2, 6, 3, 3, 4)).astype(np.float32)  # T' = 6 = 3 x T
    rgb = rng.normal(size=(2, 2, 3, 3, 5)).astype(np.float32)
    layer = epam.PoseGuidedAttention()
    layer.build((pose.shape, rgb.shape))
    kernel = np.zeros((7, 7, 2, 1), np.float32)
    kernel[3, 3, 0, 0], kernel[3, 3, 1, 0], kernel[2, 3, 0, 0] = 1.0, 0.5, -0.25
    layer.spatial.kernel.assign(kernel)
    bn = layer.spatial_bn
    for var, value in (
        (bn.gamma, 2.0),
        (bn.beta, -1.0),
        (bn.moving_mean, 0.5),
        (bn.moving_variance, 3.0),
    ):
        var.assign([value])
    layer.temporal.kernel.assign(np.array([0, 0, 0.5, 1, -1, 0, 0], np.float32).reshape(7, 1, 1))
    out = layer([pose, rgb], training=False).numpy()

    p = pose[:, [0, 3]].astype(np.float64)  # frames 0 and 3 guide RGB frames 0 and 1
    mx, mean = p.max(-1), p.mean(-1)  # [2, 2, 3, 3]
    z = mx + 0.5 * mean
    z[:, :, 1:, :] += -0.25 * mx[:, :, :-1, :]  # tap (2, 3): the row above, zero padded
    spatial = _sigmoid((z - 0.5) / np.sqrt(3.0 + epam.BN_EPSILON) * 2.0 - 1.0)
    g = spatial.mean(axis=(2, 3))  # [2, T]
    g_prev = np.pad(g, ((0, 0), (1, 0)))[:, :-1]
    g_next = np.pad(g, ((0, 0), (0, 1)))[:, 1:]
    temporal = _sigmoid(0.5 * g_prev + g - g_next)
    maps = spatial * temporal[:, :, None, None]
    expected = rgb + rgb * maps[..., None]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    s, a = layer.maps(pose, 2)
    np.testing.assert_allclose(s.numpy()[..., 0], spatial, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.numpy(), temporal, rtol=1e-5, atol=1e-6)


def test_attention_map_is_resized_to_the_rgb_features():
    layer = epam.PoseGuidedAttention()
    pose = np.zeros((1, 2, 2, 2, 3), np.float32)  # max = mean = 0: S = sigmoid(BN(0))
    rgb = np.full((1, 2, 4, 6, 2), 3.0, np.float32)
    out = layer([pose, rgb], training=False).numpy()
    s, a = layer.maps(pose, 2)
    assert s.shape == (1, 2, 2, 2, 1) and out.shape == rgb.shape
    m = s.numpy()[0, :, 0, 0, 0] * a.numpy()[0]  # constant over space, one value per frame
    np.testing.assert_allclose(
        out, 3.0 + 3.0 * np.broadcast_to(m[None, :, None, None, None], out.shape), rtol=1e-6
    )
    with pytest.raises(ValueError, match="heatmap frames=3"):
        layer([np.zeros((1, 3, 2, 2, 3), np.float32), rgb])


@pytest.mark.parametrize(
    "rgb_shape, heatmap_shape",
    [((2, 4, 32, 32), (2, 8, 8, 8)), ((1, 6, 64, 48), (1, 6, 16, 12))],
    ids=["T'=2T", "T'=T"],
)
def test_both_streams_and_the_fusion_for_two_clip_sizes(rgb_shape, heatmap_shape):
    model = tiny_model(num_classes=5)
    rgb = tf.random.uniform((*rgb_shape, 3), -1, 1, seed=1)
    heatmap = tf.random.uniform((*heatmap_shape, 17), 0, 1, seed=2)
    out = model({"rgb": rgb, "heatmap": heatmap}, training=False)
    assert set(out) == {"rgb", "heatmap", "fused"}
    for logits in out.values():
        assert logits.shape == (rgb_shape[0], 5) and logits.dtype == tf.float32
    np.testing.assert_allclose(out["fused"], out["rgb"] + out["heatmap"], rtol=1e-6)
    b, t, h, w = rgb_shape
    features = model.rgb_backbone(rgb).shape
    assert features == (b, t, -(-h // 32), -(-w // 32), TINY_RGB.feature_channels)
    b, t, h, w = heatmap_shape
    features = model.heatmap_backbone(heatmap).shape
    assert features == (b, t, -(-h // 8), -(-w // 8), TINY_HEATMAP.feature_channels)


def xshiftnet_parameters(spec: epam.XShiftNetSpec, se_bottlenecks) -> tuple[int, int]:
    """(weights, batch-norm channels) of a stream by hand; se_bottlenecks: one per stage."""

    def conv(k, c_in, c_out):
        return k * k * c_in * c_out

    weights, bn = conv(3, spec.in_channels, spec.base_channels), spec.base_channels
    c = spec.base_channels
    for stage, (depth, se) in enumerate(zip(spec.depths, se_bottlenecks)):
        width = spec.base_channels * 2**stage
        inner = int(width * spec.expansion)
        for i in range(depth):
            weights += conv(1, c, inner) + 3 * 3 * inner + conv(1, inner, width)
            bn += inner + inner + width
            if i % 2 == 0:  # squeeze-excitation: two dense layers with biases
                weights += inner * se + se + se * inner + inner
            if i == 0:  # stride 2: projection shortcut
                weights += conv(1, c, width)
                bn += width
            c = width
    feature = int(c * spec.expansion)
    return weights + conv(1, c, feature), bn + feature


def epam_parameters(rgb, heatmap, rgb_se, heatmap_se, num_classes) -> tuple[int, int]:
    """(all weights, trainable weights): 4 batch-norm values per channel, 2 of them trainable."""
    rgb_w, rgb_bn = xshiftnet_parameters(rgb, rgb_se)
    pose_w, pose_bn = xshiftnet_parameters(heatmap, heatmap_se)
    attention_w, attention_bn = 7 * 7 * 2 * 1 + 7, 1  # spatial 7x7 2 -> 1, temporal 7 taps
    heads = (rgb.feature_channels + 1 + heatmap.feature_channels + 1) * num_classes
    weights = rgb_w + pose_w + attention_w + heads
    bn = rgb_bn + pose_bn + attention_bn
    return weights + 4 * bn, weights + 2 * bn


def test_parameter_count_is_the_layer_shapes_counted_by_hand():
    # Inner widths 9, 18, 36, 72 (heatmap 9, 18, 36): X3D's rounding gives the minimum of 8.
    expected = epam_parameters(TINY_RGB, TINY_HEATMAP, (8, 8, 8, 8), (8, 8, 8), 5)
    counts = epam.parameter_counts(tiny_model(num_classes=5))
    assert (counts["total"], counts["trainable"]) == expected
    # The paper's model, 60 classes: SE bottlenecks round8(54, 108, 216, 432 / 16) = 8, 8, 16, 32.
    full = epam.parameter_counts(epam.build_epam(60))
    expected = epam_parameters(
        epam.RGB_XSHIFTNET, epam.HEATMAP_XSHIFTNET, (8, 8, 16, 32), (8, 8, 16), 60
    )
    assert (full["total"], full["trainable"]) == expected == (2_585_519, 2_538_717)
    assert full["attention"] == 7 * 7 * 2 + 4 + 7


def test_analytic_macs_equal_the_tf_profiler_count_of_convolutions_and_matmuls():
    model = tiny_model(num_classes=7)
    rgb_shape, heatmap_shape = (4, 32, 32), (8, 8, 8)
    macs = epam.analytic_macs(7, rgb_shape, heatmap_shape, TINY_RGB, TINY_HEATMAP)
    ops = ("Conv2D", "DepthwiseConv2dNative", "MatMul")
    assert epam.profiled_flops(model, rgb_shape, heatmap_shape, ops) == 2 * macs["total"]
    # the stem of the RGB stream by hand: 4 x 16 x 16 outputs x 4 channels x 3 x 3 x 3 weights
    assert macs["rgb"] > 4 * 16 * 16 * 4 * 27
    # attention: 7x7 2 -> 1 at the heatmap features' 1 x 1 on 4 frames, 7 taps on 4 frames
    assert macs["attention"] == 4 * 1 * 1 * 49 * 2 + 4 * 7
    assert macs["heads"] == (TINY_RGB.feature_channels + TINY_HEATMAP.feature_channels) * 7


def test_loss_goes_down_when_overfitting_one_batch():
    keras.utils.set_random_seed(0)
    model = tiny_model(num_classes=4, dropout_rate=0.0)
    inputs = {
        "rgb": tf.random.uniform((4, 2, 32, 32, 3), -1, 1, seed=3),
        "heatmap": tf.random.uniform((4, 2, 8, 8, 17), 0, 1, seed=4),
    }
    labels = tf.constant([0, 1, 2, 3])
    optimizer = keras.optimizers.Adam(0.02)

    def step():  # eager: tracing the gradient graph would cost more than the 8 steps
        with tf.GradientTape() as tape:
            loss = epam.epam_loss(labels, model(inputs, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    history = [float(step()) for _ in range(8)]
    assert np.isfinite(history).all()
    assert history[-1] < 0.5 * history[0], history


def test_bfloat16_policy_computes_in_bfloat16_with_float32_weights_and_logits():
    model = tiny_model(num_classes=3, dtype="mixed_bfloat16")
    conv = model.rgb_backbone.get_layer("stem_conv")
    assert conv.compute_dtype == "bfloat16" and conv.kernel.dtype == "float32"
    out = model({"rgb": tf.zeros((1, 2, 32, 32, 3)), "heatmap": tf.zeros((1, 2, 8, 8, 17))})
    assert all(v.dtype == tf.float32 for v in out.values())


def test_errors_name_the_parameter():
    with pytest.raises(ValueError, match="num_classes=0"):
        tiny_model(num_classes=0)
    with pytest.raises(ValueError, match="shift_div=1"):
        epam.TemporalShift(1)
    with pytest.raises(ValueError, match="width_multiplier=0"):
        epam.build_epam(60, width_multiplier=0)
    with pytest.raises(ValueError, match="input_shape="):
        epam.build_xshiftnet(TINY_RGB, (4, 32, 32, 17))
    with pytest.raises(ValueError, match="strides="):
        epam.build_xshiftnet(epam.XShiftNetSpec(3, depths=(1, 1), strides=(2,)))
    with pytest.raises(ValueError, match="heatmap_shape="):
        epam.analytic_macs(60, (16, 224, 224), (20, 56, 56))


ISOLATED = textwrap.dedent(
    """
    import tensorflow as tf
    from training import epam

    model = epam.EPAMNet(3, epam.RGB_XSHIFTNET.scaled(1 / 6), epam.HEATMAP_XSHIFTNET.scaled(1 / 6))
    out = model({"rgb": tf.zeros((1, 2, 32, 32, 3)), "heatmap": tf.zeros((1, 2, 8, 8, 17))})
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not leaked, leaked
    print("epam ran", out["fused"].shape)
    """
)


def test_epam_imports_and_runs_without_beam_mediapipe_or_opencv():
    proc = run_without_pipeline_imports(ISOLATED)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    assert "epam ran (1, 3)" in proc.stdout
