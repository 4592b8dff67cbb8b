"""Video backbones and the classifier: R3D50-G (PERF-Net Table 1), S3D-G (Xie et al. 2018), STM.

All tensors are channels-last, `[batch, time, height, width, channels]`. Inputs are float32
(or the compute dtype of the dtype policy): RGB and pose-rendered frames in [-1, 1], flow as
displacement / 20 in [-1, 1] with 2 channels (see `training.inputs`). Logits are float32
`[batch, num_classes]` whatever the compute dtype.

R3D50-G, exactly as Table 1 of the paper (output sizes for a 64x224x224 input):

| block | layers | output T x S^2 x C |
|---|---|---|
| conv1 | 5x7^2, stride 1x2^2 | 64 x 112^2 x 64 |
| pool1 | max 1x3^2, stride 1x2^2 | 64 x 56^2 x 64 |
| res2 | [3x1^2, 1x3^2, 1x1^2] x 3, feature gating | 64 x 56^2 x 256 |
| res3 | [t_i x1^2, 1x3^2, 1x1^2] x 4, feature gating | 64 x 28^2 x 512 |
| res4 | [t_i x1^2, 1x3^2, 1x1^2] x 6, feature gating | 64 x 14^2 x 1024 |
| res5 | [t_i x1^2, 1x3^2, 1x1^2] x 3, feature gating | 64 x 7^2 x 2048 |

with t_i = 3 for odd (1-based) cells i and 1 for even ones, no temporal stride or pooling
anywhere, the spatial stride 2 of res3-res5 in the first cell's 1x3^2 convolution (and its
1x1^2 projection shortcut), and one feature gating module after each residual block (stage).
Feature gating (S3D-G's self-gating): `y = x * sigmoid(W mean_{t,h,w}(x) + b)`, W: C x C.

S3D-G: Inception-v1 inflated with separable convolutions (1xkxk spatial then kx1x1 temporal,
each with batch norm and ReLU) and feature gating on Conv3d_2c and on every Inception branch;
temporal downsampling by 8 (Conv3d_1a, MaxPool_4a, MaxPool_5a).

STM (Jiang et al., "STM: SpatioTemporal and Motion Encoding for Action Recognition", ICCV
2019): a 2D ResNet-50 (3-4-6-3 bottlenecks, ResNet v1.5: the stride in the 3x3 convolution)
run on every frame of a TSN-style clip of T segments (one frame each, `training.inputs`),
whose bottlenecks are STM blocks. After the block's 1x1 reduction to C channels (with batch
norm and ReLU) two branches replace the 3x3 convolution, and their sum goes to the 1x1
expansion to 4C (batch norm), plus the identity or projection shortcut, then ReLU:

- CSTM (channel-wise spatiotemporal module): a channel-wise (depthwise) temporal convolution,
  kernel 3, zero-padded at the clip's ends, no bias, initialized as a temporal shift (the
  first quarter of the channels takes frame t-1, the last quarter frame t+1, the rest frame t);
  then the 3x3 spatial convolution (stride s) with batch norm and ReLU.
- CMM (channel-wise motion module): a 1x1 convolution to C/16 channels with batch norm; a
  channel-wise 3x3 spatial convolution K (no bias, initialized to the identity, a centred
  delta); the motion `H_t = K * F_{t+1} - F_t` of adjacent frames for t < T-1 and zeros for the
  last frame; a 1x1 convolution back to C channels (no bias, no batch norm); in the first
  block of conv3-conv5 a 2x2 max pooling (stride 2) to the CSTM's output size.

No temporal stride anywhere. Every 2D layer is a Conv3D with a 1 x k x k kernel (per frame),
named as Keras' ImageNet ResNet50 names its layers (`conv1_conv`, `conv2_block1_1_conv`,
`conv2_block1_2_conv` (the 3x3 in CSTM), `conv2_block1_3_conv`, `conv2_block1_0_conv` (the
projection), each `_bn` alike), so ImageNet kernels map by name with a leading time axis of 1
(Keras' ResNet50 also has convolution biases, which fold into the following batch norm's moving
mean, and strides the 1x1 reduction where this model strides the 3x3).

R3D50-G and S3D-G end with global average pooling over time and space, dropout and one dense
layer; STM pools each frame over space, applies dropout and the dense layer to every frame
(segment) and averages the segment scores (TSN's consensus; at inference equal to the dense
layer on the clip-averaged features). All evaluate at any clip size (the paper's 250x256x256
and 128x224x298 crops).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from training.config import ModelConfig

# Output channels of the four residual stages' bottleneck (the 1x1x1 expansion is 4x).
R3D50G_STAGE_FILTERS = (64, 128, 256, 512)
R3D50G_STAGE_STRIDES = (1, 2, 2, 2)

# S3D-G Inception blocks: (b0 1x1, b1 1x1 reduce, b1 3x3, b2 1x1 reduce, b2 3x3, b3 pool proj).
S3DG_INCEPTION = {
    "3b": (64, 96, 128, 16, 32, 32),
    "3c": (128, 128, 192, 32, 96, 64),
    "4b": (192, 96, 208, 16, 48, 64),
    "4c": (160, 112, 224, 24, 64, 64),
    "4d": (128, 128, 256, 24, 64, 64),
    "4e": (112, 144, 288, 32, 64, 64),
    "4f": (256, 160, 320, 32, 128, 128),
    "5b": (256, 160, 320, 32, 128, 128),
    "5c": (384, 192, 384, 48, 128, 128),
}

BN_EPSILON = 1e-5

# STM: ResNet-50's bottleneck widths and strides; the CMM reduces the channels by 16.
STM_STAGE_FILTERS = (64, 128, 256, 512)
STM_STAGE_STRIDES = (1, 2, 2, 2)
STM_CMM_REDUCTION = 16
STM_TEMPORAL_KERNEL = 3
STM_CMM_KERNEL = 3


def temporal_kernel_sizes(stage: int, depth: int) -> tuple[int, ...]:
    """Temporal kernel of the first convolution of each cell of stage `stage` (2..5).

    res2: 3 in every cell; res3-res5: 3 in odd (1-based) cells, 1 in even ones (Table 1).
    """
    if stage not in (2, 3, 4, 5):
        raise ValueError(f"stage={stage}: expected 2, 3, 4 or 5")
    if depth < 1:
        raise ValueError(f"depth={depth}: must be >= 1")
    if stage == 2:
        return (3,) * depth
    return tuple(3 if i % 2 == 1 else 1 for i in range(1, depth + 1))


class FeatureGating(layers.Layer):
    """Feature (self-)gating: re-weights channels by their spatio-temporal context.

    Input and output: `[batch, time, height, width, channels]`, same dtype. The gate is
    `sigmoid(W mean_{t,h,w}(x) + b)` in (0, 1), one value per (batch, channel); W is
    `[channels, channels]`, b is `[channels]`.
    """

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"input_shape={input_shape}: the channel count must be known")
        self.kernel = self.add_weight(
            name="kernel", shape=(channels, channels), initializer="glorot_uniform"
        )
        self.bias = self.add_weight(name="bias", shape=(channels,), initializer="zeros")

    def call(self, inputs):
        context = ops.mean(inputs, axis=(1, 2, 3))
        gate = ops.sigmoid(ops.matmul(context, self.kernel) + self.bias)
        return inputs * gate[:, None, None, None, :]

    def compute_output_shape(self, input_shape):
        return input_shape


def temporal_shift_init(shape, dtype=None):
    """Initial kernel `[k, channels]` of the CSTM's channel-wise temporal convolution.

    A temporal shift: the first quarter of the channels takes frame t-1 (tap 0), the last
    quarter frame t+1 (tap k-1), the others frame t (the centre tap); zeros elsewhere.
    """
    k, channels = shape
    kernel = np.zeros((k, channels), np.float32)
    quarter = channels // 4
    kernel[0, :quarter] = 1.0
    kernel[k - 1, channels - quarter :] = 1.0
    kernel[k // 2, quarter : channels - quarter] = 1.0
    return ops.convert_to_tensor(kernel, dtype=dtype or "float32")


def centred_delta_init(shape, dtype=None):
    """Initial kernel `[k, k, channels]` of the CMM's channel-wise spatial convolution: the
    identity (1 at the centre tap), so the motion starts as the plain difference of frames."""
    kh, kw, channels = shape
    kernel = np.zeros((kh, kw, channels), np.float32)
    kernel[kh // 2, kw // 2, :] = 1.0
    return ops.convert_to_tensor(kernel, dtype=dtype or "float32")


class _ChannelwiseConv(layers.Layer):
    """A channel-wise (depthwise) convolution with one `kernel` of `_kernel_shape`, no bias; the
    subclasses say how it runs over a `[batch, time, height, width, channels]` clip (`call`)."""

    DEFAULT_KERNEL_SIZE: int
    default_initializer = None

    def __init__(self, kernel_size: int | None = None, kernel_initializer=None, **kwargs):
        super().__init__(**kwargs)
        kernel_size = self.DEFAULT_KERNEL_SIZE if kernel_size is None else kernel_size
        if kernel_size < 1:
            raise ValueError(f"kernel_size={kernel_size}: must be >= 1")
        self.kernel_size = int(kernel_size)
        self.kernel_initializer = kernel_initializer or type(self).default_initializer

    def _kernel_shape(self, channels: int) -> tuple[int, ...]:
        raise NotImplementedError

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"input_shape={input_shape}: the channel count must be known")
        self.kernel = self.add_weight(
            name="kernel",
            shape=self._kernel_shape(channels),
            initializer=self.kernel_initializer,
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size}


class ChannelwiseTemporalConv(_ChannelwiseConv):
    """Channel-wise (depthwise) 1D convolution over time, zero-padded ("same"), no bias.

    Input and output: `[batch, time, height, width, channels]`, same dtype and shape. Output
    `y[b, t, h, w, c] = sum_j kernel[j, c] * x[b, t + j - k // 2, h, w, c]` (x = 0 outside the
    clip); `kernel` is `[k, channels]`. Computed as a depthwise 2D convolution with a k x 1
    kernel over `[batch, time, height * width, channels]`.
    """

    DEFAULT_KERNEL_SIZE = STM_TEMPORAL_KERNEL
    default_initializer = staticmethod(temporal_shift_init)

    def _kernel_shape(self, channels):
        return (self.kernel_size, channels)

    def call(self, inputs):
        _, t, h, w, c = ops.shape(inputs)
        x = ops.reshape(inputs, (-1, t, h * w, c))
        kernel = ops.reshape(self.kernel, (self.kernel_size, 1, c, 1))
        y = ops.depthwise_conv(x, kernel, strides=1, padding="same")
        return ops.reshape(y, (-1, t, h, w, c))


class ChannelwiseSpatialConv(_ChannelwiseConv):
    """Channel-wise (depthwise) k x k convolution of every frame, zero-padded ("same"), no bias.

    Input and output: `[batch, time, height, width, channels]`, same dtype and shape; `kernel`
    is `[k, k, channels]`. Computed as a depthwise 2D convolution over
    `[batch * time, height, width, channels]`.
    """

    DEFAULT_KERNEL_SIZE = STM_CMM_KERNEL
    default_initializer = staticmethod(centred_delta_init)

    def _kernel_shape(self, channels):
        return (self.kernel_size, self.kernel_size, channels)

    def call(self, inputs):
        _, t, h, w, c = ops.shape(inputs)
        x = ops.reshape(inputs, (-1, h, w, c))
        kernel = ops.reshape(self.kernel, (self.kernel_size, self.kernel_size, c, 1))
        y = ops.depthwise_conv(x, kernel, strides=1, padding="same")
        return ops.reshape(y, (-1, t, h, w, c))


class MotionDifference(layers.Layer):
    """The CMM's motion of adjacent frames: `H_t = K * F_{t+1} - F_t`, zeros for the last frame.

    Call on `[filtered, features]`, both `[batch, time, height, width, channels]` (filtered =
    K * F, the channel-wise convolved features); returns the same shape and dtype, with
    `out[:, t] = filtered[:, t + 1] - features[:, t]` for t < time - 1 and `out[:, -1] = 0`.
    """

    def call(self, inputs):
        filtered, features = inputs
        motion = filtered[:, 1:] - features[:, :-1]
        return ops.concatenate([motion, ops.zeros_like(features[:, :1])], axis=1)

    def compute_output_shape(self, input_shape):
        return input_shape[1]


class _Builder:
    """Creates named layers under one dtype policy and records the endpoints."""

    def __init__(self, cfg: ModelConfig, dtype):
        self.cfg = cfg
        self.dtype = dtype
        self.endpoints: dict[str, keras.KerasTensor] = {}

    def width(self, channels: int) -> int:
        return max(1, int(round(channels * self.cfg.width_multiplier)))

    def conv_bn(self, x, filters, kernel, strides, name, relu=True):
        x = layers.Conv3D(
            filters,
            kernel,
            strides=strides,
            padding="same",
            use_bias=False,
            kernel_initializer=keras.initializers.VarianceScaling(2.0, "fan_out", "normal"),
            name=f"{name}_conv",
            dtype=self.dtype,
        )(x)
        x = layers.BatchNormalization(
            momentum=self.cfg.bn_momentum, epsilon=BN_EPSILON, name=f"{name}_bn", dtype=self.dtype
        )(x)
        if relu:
            x = layers.ReLU(name=f"{name}_relu", dtype=self.dtype)(x)
        return x

    def gate(self, x, name):
        if not self.cfg.gating:
            return x
        return FeatureGating(name=f"{name}_gating", dtype=self.dtype)(x)


def _r3d50g(b: _Builder, inputs):
    cfg = b.cfg
    x = b.conv_bn(inputs, b.width(64), (5, 7, 7), (1, 2, 2), "conv1")
    b.endpoints["conv1"] = x
    x = layers.MaxPooling3D((1, 3, 3), (1, 2, 2), padding="same", name="pool1", dtype=b.dtype)(x)
    b.endpoints["pool1"] = x
    for stage, (filters, depth, stride) in enumerate(
        zip(R3D50G_STAGE_FILTERS, cfg.stage_depths(), R3D50G_STAGE_STRIDES), start=2
    ):
        inner = b.width(filters)
        out = 4 * inner
        for i, t in enumerate(temporal_kernel_sizes(stage, depth), start=1):
            name = f"res{stage}_cell{i}"
            s = stride if i == 1 else 1
            shortcut = x
            if i == 1:
                shortcut = b.conv_bn(x, out, (1, 1, 1), (1, s, s), f"{name}_proj", relu=False)
            y = b.conv_bn(x, inner, (t, 1, 1), (1, 1, 1), f"{name}_a")
            y = b.conv_bn(y, inner, (1, 3, 3), (1, s, s), f"{name}_b")
            y = b.conv_bn(y, out, (1, 1, 1), (1, 1, 1), f"{name}_c", relu=False)
            x = layers.Add(name=f"{name}_add", dtype=b.dtype)([shortcut, y])
            x = layers.ReLU(name=f"{name}_out", dtype=b.dtype)(x)
            b.endpoints[name] = x
        x = b.gate(x, f"res{stage}")
        b.endpoints[f"res{stage}"] = x
    return x


def _sep_conv(b: _Builder, x, filters, k, temporal_stride, spatial_stride, name):
    x = b.conv_bn(x, filters, (1, k, k), (1, spatial_stride, spatial_stride), f"{name}_spatial")
    return b.conv_bn(x, filters, (k, 1, 1), (temporal_stride, 1, 1), f"{name}_temporal")


def _inception(b: _Builder, x, name, channels):
    c0, c1a, c1b, c2a, c2b, c3 = (b.width(c) for c in channels)
    b0 = b.gate(b.conv_bn(x, c0, (1, 1, 1), (1, 1, 1), f"{name}_b0"), f"{name}_b0")
    b1 = b.conv_bn(x, c1a, (1, 1, 1), (1, 1, 1), f"{name}_b1a")
    b1 = b.gate(_sep_conv(b, b1, c1b, 3, 1, 1, f"{name}_b1b"), f"{name}_b1")
    b2 = b.conv_bn(x, c2a, (1, 1, 1), (1, 1, 1), f"{name}_b2a")
    b2 = b.gate(_sep_conv(b, b2, c2b, 3, 1, 1, f"{name}_b2b"), f"{name}_b2")
    b3 = layers.MaxPooling3D(3, 1, padding="same", name=f"{name}_b3pool", dtype=b.dtype)(x)
    b3 = b.gate(b.conv_bn(b3, c3, (1, 1, 1), (1, 1, 1), f"{name}_b3"), f"{name}_b3")
    return layers.Concatenate(axis=-1, name=name, dtype=b.dtype)([b0, b1, b2, b3])


def _s3dg(b: _Builder, inputs):
    x = _sep_conv(b, inputs, b.width(64), 7, 2, 2, "Conv3d_1a")
    b.endpoints["Conv3d_1a"] = x
    x = layers.MaxPooling3D((1, 3, 3), (1, 2, 2), "same", name="MaxPool_2a", dtype=b.dtype)(x)
    b.endpoints["MaxPool_2a"] = x
    x = b.conv_bn(x, b.width(64), (1, 1, 1), (1, 1, 1), "Conv3d_2b")
    b.endpoints["Conv3d_2b"] = x
    x = b.gate(_sep_conv(b, x, b.width(192), 3, 1, 1, "Conv3d_2c"), "Conv3d_2c")
    b.endpoints["Conv3d_2c"] = x
    x = layers.MaxPooling3D((1, 3, 3), (1, 2, 2), "same", name="MaxPool_3a", dtype=b.dtype)(x)
    b.endpoints["MaxPool_3a"] = x
    pooled = {"4": False, "5": False}
    for block in b.cfg.s3dg_blocks:
        group = block[0]
        if group in pooled and not pooled[group]:
            pool = (3, 3, 3) if group == "4" else (2, 2, 2)
            name = f"MaxPool_{group}a"
            x = layers.MaxPooling3D(pool, (2, 2, 2), "same", name=name, dtype=b.dtype)(x)
            b.endpoints[name] = x
            pooled[group] = True
        x = _inception(b, x, f"Mixed_{block}", S3DG_INCEPTION[block])
        b.endpoints[f"Mixed_{block}"] = x
    return x


def _cstm(b: _Builder, x, filters, stride, name):
    """CSTM on `[B, T, H, W, C]`: channel-wise temporal conv, then the 3x3 conv (stride) + BN +
    ReLU -> `[B, T, ceil(H / stride), ceil(W / stride), filters]`."""
    x = ChannelwiseTemporalConv(name=f"{name}_cstm_temporal", dtype=b.dtype)(x)
    return b.conv_bn(x, filters, (1, 3, 3), (1, stride, stride), f"{name}_2")


def _cmm(b: _Builder, x, filters, stride, name):
    """CMM on `[B, T, H, W, C]` -> `[B, T, ceil(H / stride), ceil(W / stride), filters]`."""
    reduced = b.conv_bn(
        x, max(1, filters // STM_CMM_REDUCTION), (1, 1, 1), (1, 1, 1), f"{name}_cmm_reduce", False
    )
    filtered = ChannelwiseSpatialConv(name=f"{name}_cmm_channelwise", dtype=b.dtype)(reduced)
    motion = MotionDifference(name=f"{name}_cmm_motion", dtype=b.dtype)([filtered, reduced])
    y = layers.Conv3D(
        filters,
        (1, 1, 1),
        use_bias=False,
        kernel_initializer=keras.initializers.VarianceScaling(2.0, "fan_out", "normal"),
        name=f"{name}_cmm_restore_conv",
        dtype=b.dtype,
    )(motion)
    if stride > 1:
        y = layers.MaxPooling3D(
            (1, stride, stride), (1, stride, stride), "same", name=f"{name}_cmm_pool", dtype=b.dtype
        )(y)
    return y


def _stm(b: _Builder, inputs):
    cfg = b.cfg
    x = b.conv_bn(inputs, b.width(64), (1, 7, 7), (1, 2, 2), "conv1")
    b.endpoints["conv1"] = x
    x = layers.MaxPooling3D((1, 3, 3), (1, 2, 2), "same", name="pool1_pool", dtype=b.dtype)(x)
    b.endpoints["pool1"] = x
    for stage, (filters, depth, stride) in enumerate(
        zip(STM_STAGE_FILTERS, cfg.stage_depths(), STM_STAGE_STRIDES), start=2
    ):
        inner = b.width(filters)
        out = 4 * inner
        for i in range(1, depth + 1):
            name = f"conv{stage}_block{i}"
            s = stride if i == 1 else 1
            shortcut = x
            if i == 1:
                shortcut = b.conv_bn(x, out, (1, 1, 1), (1, s, s), f"{name}_0", relu=False)
            y = b.conv_bn(x, inner, (1, 1, 1), (1, 1, 1), f"{name}_1")
            spatiotemporal = _cstm(b, y, inner, s, name)
            motion = _cmm(b, y, inner, s, name)
            b.endpoints[f"{name}_cstm"] = spatiotemporal
            b.endpoints[f"{name}_cmm"] = motion
            y = layers.Add(name=f"{name}_stm_add", dtype=b.dtype)([spatiotemporal, motion])
            y = b.conv_bn(y, out, (1, 1, 1), (1, 1, 1), f"{name}_3", relu=False)
            x = layers.Add(name=f"{name}_add", dtype=b.dtype)([shortcut, y])
            x = layers.ReLU(name=f"{name}_out", dtype=b.dtype)(x)
            b.endpoints[name] = x
        b.endpoints[f"conv{stage}"] = x
    return x


_BACKBONES = {"r3d50g": _r3d50g, "s3dg": _s3dg, "stm": _stm}


def segment_consensus(cfg: ModelConfig) -> bool:
    """True if the classifier scores every frame and averages the scores (STM, TSN-style)."""
    return cfg.backbone == "stm"


def _stm_module(kind, input_shape, filters, stride, cfg, dtype):
    if len(input_shape) != 4:
        raise ValueError(f"input_shape={input_shape}: expected (time, height, width, channels)")
    if stride < 1:
        raise ValueError(f"stride={stride}: must be >= 1")
    cfg = cfg if cfg is not None else ModelConfig(backbone="stm")
    inputs = keras.Input(shape=tuple(input_shape), name="features")
    build = _cstm if kind == "cstm" else _cmm
    outputs = build(_Builder(cfg, dtype), inputs, filters, stride, "stm")
    return keras.Model(inputs, outputs, name=kind)


def build_cstm(
    input_shape, filters: int, stride: int = 1, cfg: ModelConfig | None = None, dtype=None
) -> keras.Model:
    """STM's CSTM alone as a Keras model: `[B, T, H, W, C]` -> `[B, T, H', W', filters]`,
    H' = ceil(H / stride), W' = ceil(W / stride); layers `stm_cstm_temporal`, `stm_2_*`."""
    return _stm_module("cstm", input_shape, filters, stride, cfg, dtype)


def build_cmm(
    input_shape, filters: int, stride: int = 1, cfg: ModelConfig | None = None, dtype=None
) -> keras.Model:
    """STM's CMM alone as a Keras model: `[B, T, H, W, C]` -> `[B, T, H', W', filters]` (the
    motion of frames t, t+1 at step t, zeros at the last step); layers `stm_cmm_*`."""
    return _stm_module("cmm", input_shape, filters, stride, cfg, dtype)


def build_backbone(
    cfg: ModelConfig, input_shape=(None, None, None, 3), dtype=None, endpoints: bool = False
) -> keras.Model:
    """The backbone as a functional Keras model (built symbolically; no forward pass).

    Args:
      cfg: the model config (backbone name, width, depths).
      input_shape: `(time, height, width, channels)`; None for any size.
      dtype: a Keras dtype policy name (`float32`, `mixed_bfloat16`, ...) or None (global).
      endpoints: if True the model outputs a dict of every block's output (R3D50-G: `conv1`,
        `pool1`, `res{s}_cell{i}`, `res{s}`; S3D-G: `Conv3d_1a` ... `Mixed_5c`; STM: `conv1`,
        `pool1`, `conv{s}_block{i}` and its `_cstm` and `_cmm` branches, `conv{s}`); else the
        last feature map `[batch, T', H', W', C']`.
    """
    cfg.validate()
    if cfg.backbone not in _BACKBONES:
        raise ValueError(
            f"backbone={cfg.backbone!r}: expected one of {list(_BACKBONES)} (EPAM-Net's two "
            "streams are built by training.epam)"
        )
    if len(input_shape) != 4:
        raise ValueError(f"input_shape={input_shape}: expected (time, height, width, channels)")
    b = _Builder(cfg, dtype)
    inputs = keras.Input(shape=tuple(input_shape), name="frames")
    x = _BACKBONES[cfg.backbone](b, inputs)
    outputs = dict(b.endpoints) if endpoints else x
    return keras.Model(inputs, outputs, name=cfg.backbone)


class VideoClassifier(keras.Model):
    """Backbone, global average pooling, dropout, dense logits.

    Call: `model(clips, training=...)` with clips `[batch, T, H, W, in_channels]` -> float32
    logits `[batch, num_classes]`. Weights are created at construction (symbolically). Tracked
    attributes `backbone` and `head` give checkpoints the paths `model/backbone/...` and
    `model/head/...`, so a fine-tuning job can restore the backbone alone. With segment
    consensus (STM) the pooling is over space only, dropout and the dense layer score every
    frame `[batch, T, num_classes]`, and the logits are the mean over the T segments.
    """

    def __init__(self, cfg: ModelConfig, num_classes: int, in_channels: int, dtype=None, name=None):
        if num_classes < 1:
            raise ValueError(f"num_classes={num_classes}: must be >= 1")
        if in_channels < 1:
            raise ValueError(f"in_channels={in_channels}: must be >= 1")
        super().__init__(name=name or f"{cfg.backbone}_classifier", dtype=dtype)
        self.model_config = cfg
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.backbone = build_backbone(cfg, (None, None, None, in_channels), dtype=dtype)
        feature_channels = self.backbone.output.shape[-1]
        self.segment_consensus = segment_consensus(cfg)
        self.pool = layers.GlobalAveragePooling3D(name="pool", dtype=dtype)
        self.dropout = layers.Dropout(cfg.dropout_rate, name="dropout", dtype=dtype)
        # The head computes in float32 so that logits are float32 under mixed precision.
        self.head = layers.Dense(
            num_classes,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            name="logits",
            dtype="float32",
        )
        self.head.build((None, feature_channels))
        self.built = True

    def call(self, inputs, training=False):
        x = self.backbone(inputs, training=training)
        if self.segment_consensus:
            x = ops.mean(x, axis=(2, 3))  # [batch, T, C]: one feature vector per segment
            x = self.dropout(x, training=training)
            return ops.mean(self.head(ops.cast(x, "float32")), axis=1)
        x = self.pool(x)
        x = self.dropout(x, training=training)
        return self.head(ops.cast(x, "float32"))

    def kernels(self) -> list:
        """The weights that get weight decay: convolution, gating and dense kernels."""
        return [v for v in self.trainable_variables if v.name == "kernel"]


def build_classifier(
    cfg: ModelConfig, num_classes: int, in_channels: int, dtype=None
) -> VideoClassifier:
    """A `VideoClassifier` for `in_channels`-channel clips (3: RGB, pose; 2: flow)."""
    return VideoClassifier(cfg, num_classes, in_channels, dtype=dtype)
