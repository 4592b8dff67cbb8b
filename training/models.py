"""Video backbones and the classifier: R3D50-G (PERF-Net Table 1) and S3D-G (Xie et al. 2018).

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

Both classifiers end with global average pooling over time and space, dropout and one dense
layer, so they evaluate at any clip size (the paper's 250x256x256 and 128x224x298 crops).
"""

from __future__ import annotations

import keras
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
        zip(R3D50G_STAGE_FILTERS, cfg.depths, R3D50G_STAGE_STRIDES), start=2
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


def build_backbone(
    cfg: ModelConfig, input_shape=(None, None, None, 3), dtype=None, endpoints: bool = False
) -> keras.Model:
    """The backbone as a functional Keras model (built symbolically; no forward pass).

    Args:
      cfg: the model config (backbone name, width, depths).
      input_shape: `(time, height, width, channels)`; None for any size.
      dtype: a Keras dtype policy name (`float32`, `mixed_bfloat16`, ...) or None (global).
      endpoints: if True the model outputs a dict of every block's output (R3D50-G: `conv1`,
        `pool1`, `res{s}_cell{i}`, `res{s}`; S3D-G: `Conv3d_1a` ... `Mixed_5c`); else the last
        feature map `[batch, T', H', W', C']`.
    """
    cfg.validate()
    if len(input_shape) != 4:
        raise ValueError(f"input_shape={input_shape}: expected (time, height, width, channels)")
    b = _Builder(cfg, dtype)
    inputs = keras.Input(shape=tuple(input_shape), name="frames")
    x = _r3d50g(b, inputs) if cfg.backbone == "r3d50g" else _s3dg(b, inputs)
    outputs = dict(b.endpoints) if endpoints else x
    return keras.Model(inputs, outputs, name=cfg.backbone)


class VideoClassifier(keras.Model):
    """Backbone, global average pooling, dropout, dense logits.

    Call: `model(clips, training=...)` with clips `[batch, T, H, W, in_channels]` -> float32
    logits `[batch, num_classes]`. Weights are created at construction (symbolically). Tracked
    attributes `backbone` and `head` give checkpoints the paths `model/backbone/...` and
    `model/head/...`, so a fine-tuning job can restore the backbone alone.
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
