"""EPAM-Net: RGB and skeleton-heatmap X-ShiftNet streams, pose-guided attention, late fusion.

Abdelkawy, Ali and Farag, "EPAM-Net: An Efficient Pose-driven Attention-guided Multimodal
Network for Video Action Recognition", Neurocomputing 2025 (arXiv 2408.05421). Building
blocks: X3D (Feichtenhofer, "X3D: Expanding Architectures for Efficient Video Recognition",
CVPR 2020), the temporal shift module (Lin, Gan and Han, "TSM: Temporal Shift Module for
Efficient Video Understanding", ICCV 2019), CBAM's channel pooling (Woo et al., ECCV 2018) and
ECA's 1-D convolution (Wang et al., CVPR 2020) for the attention.

All tensors are channels-last. Inputs: `rgb` float32 [B, T, H, W, 3] in [-1, 1] and `heatmap`
float32 [B, T', h, w, 17] in [0, 1] (one Gaussian channel per COCO-17 joint, see
`training.heatmaps`). Logits are float32 [B, num_classes] whatever the compute dtype.

X-ShiftNet (one per stream) is X3D made two-dimensional: every convolution is a 2-D one applied
to each frame (time folded into the batch), and time is modelled only by a temporal shift at the
entry of every residual block's branch. A block, for an input of C channels, inner width
E = int(C_stage * expansion), output C_stage:

    y = shift(x)                         TSM: channels [0, C/d) take frame t+1, [C/d, 2C/d)
                                         frame t-1, zeros past the ends; the rest unchanged
    y = ReLU(BN(conv1x1(y)))             C -> E
    y = BN(depthwise3x3(y, stride s))    the stage's spatial stride in the first block
    y = SE(y)                            squeeze-excitation, every other block (1st, 3rd, ...)
    y = swish(y)
    y = BN(conv1x1(y))                   E -> C_stage, batch-norm scale initialized to 0
    out = ReLU(y + shortcut)             shortcut: BN(conv1x1 stride s) in a stage's 1st block

SE: `y * sigmoid(W2 ReLU(W1 mean_{t,h,w}(y) + b1) + b2)`, bottleneck round8(E / 16) (X3D's
rounding to a multiple of 8, at least 8). Each stream: stem BN-ReLU 3x3 conv (stride s0) to
C_1 channels, the stages, then BN-ReLU 1x1 conv to int(C_last * expansion) features.

| stream | input (paper, NTU-60) | stem | stages: C_stage (blocks), each /2 | features | TSM d |
|---|---|---|---|---|---|
| RGB | 16 x 224^2 x 3 | 3x3 /2, 24 | 24 (3), 48 (5), 96 (11), 192 (7) | 16 x 7^2 x 432 | 8 |
| heatmap | 48 x 56^2 x 17 | 3x3 /1, 24 | 24 (5), 48 (11), 96 (7) | 48 x 7^2 x 216 | 4 |

(expansion 2.25 for both: the RGB stream is X3D-M's widths and depths, 2.2 x (1, 2, 5, 3)
blocks, with 1x3x3 in place of 3x3x3 depthwise kernels and no temporal stem convolution.)
Spatial padding is symmetric (k // 2 zeros each side), so a stride-2 layer maps n to
floor((n - 1) / 2) + 1 and samples the same pixels as its 1x1 stride-2 shortcut.

Spatial-temporal attention (after both backbones, on their last features): the heatmap stream's
features P [B, T', h', w', C'] guide the RGB features F [B, T, H', W', C]:

    P_t   = P[:, k t],  k = T' / T       frames 0, k, 2k, ... (T' a multiple of T; paper 48 / 16)
    S     = sigmoid(BN(conv7x7([max_c P_t, mean_c P_t])))     spatial map [B, T, h', w', 1]
    A     = sigmoid(conv1d_7(mean_{h,w} S))                   keyframe weights [B, T], over time
    M     = resize(S * A) to H' x W'     bilinear, half-pixel centres; skipped when equal
    F_att = F + F * M                    (the map re-weights F, the identity keeps it)

(both convolutions bias-free, zero-padded, 1 output channel). Heads: per stream global average
pooling over (t, h, w), dropout, dense logits (float32). Late fusion: `fused = logits_rgb +
logits_heatmap`, the sum of the two streams' logits (argmax-equivalent to their mean). The
training loss is the sum of the two streams' cross-entropies (`epam_loss`).

Model size and compute: `python -m training.epam` (see `complexity_table`; MACs counted
analytically, FLOPs = 2 x MACs as in `training.flops`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Mapping, Sequence

import keras
import tensorflow as tf
from keras import layers, ops

from training import losses

BN_EPSILON = 1e-5
# Both spatial attention and keyframe weighting use 7-wide kernels.
ATTENTION_SPATIAL_KERNEL = 7
ATTENTION_TEMPORAL_KERNEL = 7
HEATMAP_JOINTS = 17


def _conv_init():
    return keras.initializers.VarianceScaling(2.0, "fan_out", "normal")


def round_width(width: float, min_width: int = 8, divisor: int = 8) -> int:
    """X3D's channel rounding: nearest multiple of `divisor`, >= `min_width`, >= 0.9 x width."""
    rounded = max(min_width, int(width + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * width:
        rounded += divisor
    return int(rounded)


@dataclasses.dataclass(frozen=True)
class XShiftNetSpec:
    """Widths, depths and strides of one X-ShiftNet stream.

    Attributes:
      in_channels: input channels (3: RGB; 17: joint heatmaps).
      base_channels: C_1, the stem's and the first stage's width; stage i has C_1 * 2^(i-1).
      stem_stride: spatial stride of the stem's 3x3 convolution (1 or 2).
      depths: residual blocks per stage (the number of stages is its length).
      strides: spatial stride of each stage (in its first block), same length as `depths`.
      expansion: inner width of a block / its output width (X3D's gamma_b); also the final
        1x1 convolution's widening.
      shift_div: the TSM shifts C / shift_div channels forward and as many backward.
      se_ratio: squeeze-excitation bottleneck / inner width (before rounding); None: no SE.
    """

    in_channels: int
    base_channels: int = 24
    stem_stride: int = 2
    depths: tuple[int, ...] = (3, 5, 11, 7)
    strides: tuple[int, ...] = (2, 2, 2, 2)
    expansion: float = 2.25
    shift_div: int = 8
    se_ratio: float | None = 1 / 16

    def validate(self) -> None:
        if self.in_channels < 1:
            raise ValueError(f"in_channels={self.in_channels}: must be >= 1")
        if self.base_channels < 1:
            raise ValueError(f"base_channels={self.base_channels}: must be >= 1")
        if self.stem_stride not in (1, 2):
            raise ValueError(f"stem_stride={self.stem_stride}: expected 1 or 2")
        if not self.depths or min(self.depths) < 1:
            raise ValueError(f"depths={self.depths}: expected one or more stages, each >= 1")
        if len(self.strides) != len(self.depths) or any(s not in (1, 2) for s in self.strides):
            raise ValueError(
                f"strides={self.strides}: expected 1 or 2 for each of the {len(self.depths)} stages"
            )
        if self.expansion <= 0:
            raise ValueError(f"expansion={self.expansion}: must be > 0")
        if self.shift_div < 2:
            raise ValueError(f"shift_div={self.shift_div}: must be >= 2")
        if self.se_ratio is not None and self.se_ratio <= 0:
            raise ValueError(f"se_ratio={self.se_ratio}: must be > 0 or None")

    def stage_widths(self) -> tuple[int, ...]:
        """Output channels of each stage."""
        return tuple(self.base_channels * 2**i for i in range(len(self.depths)))

    def inner_width(self, stage_width: int) -> int:
        """The expanded width inside a block of a stage of `stage_width` channels."""
        return max(1, int(stage_width * self.expansion))

    @property
    def feature_channels(self) -> int:
        """Channels of the stream's last feature map."""
        return self.inner_width(self.stage_widths()[-1])

    @property
    def spatial_stride(self) -> int:
        """Total spatial downsampling of the stream (up to rounding of odd sizes)."""
        return self.stem_stride * math.prod(self.strides)

    def scaled(self, width_multiplier: float) -> XShiftNetSpec:
        """The same stream with `base_channels` scaled (rounded, >= 1): tiny test models."""
        if width_multiplier <= 0:
            raise ValueError(f"width_multiplier={width_multiplier}: must be > 0")
        base = max(1, int(round(self.base_channels * width_multiplier)))
        return dataclasses.replace(self, base_channels=base)


# The paper's streams (see the module docstring's table).
RGB_XSHIFTNET = XShiftNetSpec(
    in_channels=3, stem_stride=2, depths=(3, 5, 11, 7), strides=(2, 2, 2, 2), shift_div=8
)
HEATMAP_XSHIFTNET = XShiftNetSpec(
    in_channels=HEATMAP_JOINTS, stem_stride=1, depths=(5, 11, 7), strides=(2, 2, 2), shift_div=4
)


class TemporalShift(layers.Layer):
    """The temporal shift module: part of the channels moves one frame along time.

    Input and output `[batch, time, height, width, channels]`, same dtype. With
    `fold = channels // shift_div`: output channels [0, fold) at frame t are the input's at
    t + 1 (zero at the last frame), channels [fold, 2 fold) the input's at t - 1 (zero at the
    first frame), the others unchanged. No weights; `fold == 0` is the identity.
    """

    def __init__(self, shift_div: int = 8, **kwargs):
        super().__init__(**kwargs)
        if shift_div < 2:
            raise ValueError(f"shift_div={shift_div}: must be >= 2")
        self.shift_div = shift_div

    def call(self, inputs):
        fold = inputs.shape[-1] // self.shift_div
        if fold == 0:
            return inputs
        zeros = ops.zeros_like(inputs[:, :1, :, :, :fold])
        from_next = ops.concatenate([inputs[:, 1:, :, :, :fold], zeros], axis=1)
        from_previous = ops.concatenate([zeros, inputs[:, :-1, :, :, fold : 2 * fold]], axis=1)
        return ops.concatenate([from_next, from_previous, inputs[..., 2 * fold :]], axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "shift_div": self.shift_div}


class FrameConv(layers.Layer):
    """A 2-D convolution applied to every frame (time folded into the batch), bias-free.

    Input `[batch, time, height, width, c_in]` -> `[batch, time, height', width', c_out]`,
    `height' = floor((height + 2 (k // 2) - k) / stride) + 1` (symmetric zero padding of
    k // 2). `depthwise=True`: one k x k filter per channel (c_out = c_in).
    """

    def __init__(
        self, filters: int, kernel_size: int, strides: int = 1, depthwise: bool = False, **kwargs
    ):
        super().__init__(**kwargs)
        if filters < 1 or kernel_size < 1 or strides < 1:
            raise ValueError(
                f"filters={filters}, kernel_size={kernel_size}, strides={strides}: must be >= 1"
            )
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.depthwise = depthwise
        self.pad = kernel_size // 2
        if depthwise:
            self.conv = layers.DepthwiseConv2D(
                kernel_size,
                strides,
                padding="valid",
                use_bias=False,
                depthwise_initializer=_conv_init(),
                name="conv",
                dtype=self.dtype_policy,
            )
        else:
            self.conv = layers.Conv2D(
                filters,
                kernel_size,
                strides,
                padding="valid",
                use_bias=False,
                kernel_initializer=_conv_init(),
                name="conv",
                dtype=self.dtype_policy,
            )

    def build(self, input_shape):
        if input_shape[-1] is None:
            raise ValueError(f"input_shape={input_shape}: the channel count must be known")
        if self.depthwise and self.filters != input_shape[-1]:
            raise ValueError(
                f"filters={self.filters}: a depthwise convolution keeps its {input_shape[-1]} "
                "input channels"
            )
        padded = tuple(None if n is None else n + 2 * self.pad for n in input_shape[2:4])
        self.conv.build((None, *padded, input_shape[-1]))

    @property
    def kernel(self):
        return self.conv.kernel

    def _out(self, n):
        return None if n is None else (n + 2 * self.pad - self.kernel_size) // self.strides + 1

    def call(self, inputs):
        shape = ops.shape(inputs)
        x = ops.reshape(inputs, (-1, shape[2], shape[3], inputs.shape[-1]))
        if self.pad:
            p = self.pad
            x = ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])
        x = self.conv(x)
        out = ops.shape(x)
        return ops.reshape(x, (shape[0], shape[1], out[1], out[2], self.filters))

    def compute_output_shape(self, input_shape):
        b, t, h, w, _ = input_shape
        return (b, t, self._out(h), self._out(w), self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "depthwise": self.depthwise,
        }

    def macs_per_output(self, in_channels: int) -> int:
        """Multiply-accumulates per output position (one frame, one pixel, all channels)."""
        k2 = self.kernel_size**2
        return k2 * self.filters if self.depthwise else k2 * in_channels * self.filters


class SqueezeExcitation(layers.Layer):
    """Squeeze-excitation over a clip: `x * sigmoid(W2 ReLU(W1 mean_{t,h,w}(x) + b1) + b2)`.

    Input and output `[batch, time, height, width, channels]`; W1 `[channels, bottleneck]`,
    W2 `[bottleneck, channels]`; one gate in (0, 1) per (clip, channel).
    """

    def __init__(self, bottleneck: int, **kwargs):
        super().__init__(**kwargs)
        if bottleneck < 1:
            raise ValueError(f"bottleneck={bottleneck}: must be >= 1")
        self.bottleneck = bottleneck
        self.squeeze = layers.Dense(
            bottleneck, kernel_initializer=_conv_init(), name="squeeze", dtype=self.dtype_policy
        )
        self.excite = None

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"input_shape={input_shape}: the channel count must be known")
        self.squeeze.build((None, channels))
        self.excite = layers.Dense(
            channels, kernel_initializer=_conv_init(), name="excite", dtype=self.dtype_policy
        )
        self.excite.build((None, self.bottleneck))

    def call(self, inputs):
        context = ops.mean(inputs, axis=(1, 2, 3))
        gate = ops.sigmoid(self.excite(ops.relu(self.squeeze(context))))
        return inputs * gate[:, None, None, None, :]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "bottleneck": self.bottleneck}


class _StreamBuilder:
    def __init__(self, spec: XShiftNetSpec, bn_momentum: float, dtype):
        self.spec = spec
        self.bn_momentum = bn_momentum
        self.dtype = dtype

    def conv_bn(self, x, filters, kernel, stride, name, act=None, depthwise=False, zero=False):
        x = FrameConv(filters, kernel, stride, depthwise, name=f"{name}_conv", dtype=self.dtype)(x)
        x = layers.BatchNormalization(
            momentum=self.bn_momentum,
            epsilon=BN_EPSILON,
            gamma_initializer="zeros" if zero else "ones",
            name=f"{name}_bn",
            dtype=self.dtype,
        )(x)
        if act is not None:
            x = layers.Activation(act, name=f"{name}_{act}", dtype=self.dtype)(x)
        return x

    def block(self, x, width, stride, use_se, name):
        spec = self.spec
        inner = spec.inner_width(width)
        shortcut = x
        y = TemporalShift(spec.shift_div, name=f"{name}_shift", dtype=self.dtype)(x)
        y = self.conv_bn(y, inner, 1, 1, f"{name}_conv1", act="relu")
        y = self.conv_bn(y, inner, 3, stride, f"{name}_conv2", depthwise=True)
        if use_se:
            bottleneck = round_width(inner * spec.se_ratio)
            y = SqueezeExcitation(bottleneck, name=f"{name}_se", dtype=self.dtype)(y)
        y = layers.Activation("swish", name=f"{name}_swish", dtype=self.dtype)(y)
        y = self.conv_bn(y, width, 1, 1, f"{name}_conv3", zero=True)
        if stride != 1 or x.shape[-1] != width:
            shortcut = self.conv_bn(x, width, 1, stride, f"{name}_proj")
        x = layers.Add(name=f"{name}_add", dtype=self.dtype)([shortcut, y])
        return layers.ReLU(name=f"{name}_out", dtype=self.dtype)(x)


def build_xshiftnet(
    spec: XShiftNetSpec,
    input_shape=(None, None, None, None),
    bn_momentum: float = 0.9,
    dtype=None,
    name: str = "xshiftnet",
    endpoints: bool = False,
) -> keras.Model:
    """An X-ShiftNet stream as a functional Keras model (built symbolically; no forward pass).

    Args:
      spec: widths, depths, strides (`RGB_XSHIFTNET`, `HEATMAP_XSHIFTNET` or a variant).
      input_shape: `(time, height, width, channels)`, None for any size; the channel count
        defaults to `spec.in_channels` and must equal it.
      bn_momentum: moving-average momentum of batch normalization, in (0, 1).
      dtype: a Keras dtype policy name or None (global).
      endpoints: if True the model outputs a dict of `stem`, `stage{i}` (1-based), `features`;
        else the last feature map `[batch, T, H / s, W / s, spec.feature_channels]`, s =
        `spec.spatial_stride` (odd sizes round up), the time axis untouched.
    """
    spec.validate()
    if not 0.0 < bn_momentum < 1.0:
        raise ValueError(f"bn_momentum={bn_momentum}: must be in (0, 1)")
    if len(input_shape) != 4:
        raise ValueError(f"input_shape={input_shape}: expected (time, height, width, channels)")
    channels = input_shape[3] if input_shape[3] is not None else spec.in_channels
    if channels != spec.in_channels:
        raise ValueError(f"input_shape={input_shape}: expected {spec.in_channels} channels")
    b = _StreamBuilder(spec, bn_momentum, dtype)
    inputs = keras.Input(shape=(*tuple(input_shape[:3]), channels), name="frames")
    ends = {}
    x = b.conv_bn(inputs, spec.base_channels, 3, spec.stem_stride, "stem", act="relu")
    ends["stem"] = x
    for stage, (width, depth, stride) in enumerate(
        zip(spec.stage_widths(), spec.depths, spec.strides), start=1
    ):
        for i in range(depth):
            use_se = spec.se_ratio is not None and i % 2 == 0
            x = b.block(x, width, stride if i == 0 else 1, use_se, f"stage{stage}_block{i + 1}")
        ends[f"stage{stage}"] = x
    x = b.conv_bn(x, spec.feature_channels, 1, 1, "features", act="relu")
    ends["features"] = x
    return keras.Model(inputs, ends if endpoints else x, name=name)


def build_rgb_xshiftnet(
    width_multiplier: float = 1.0, input_shape=(None, None, None, 3), **kwargs
) -> keras.Model:
    """The RGB stream (X3D-M widths and depths, TSM 1/8 + 1/8): 3 channels in [-1, 1].

    Other arguments as `build_xshiftnet` (`bn_momentum`, `dtype`, `name`, `endpoints`).
    """
    spec = RGB_XSHIFTNET.scaled(width_multiplier)
    return build_xshiftnet(spec, input_shape, name=kwargs.pop("name", "rgb_xshiftnet"), **kwargs)


def build_heatmap_xshiftnet(
    width_multiplier: float = 1.0, input_shape=(None, None, None, HEATMAP_JOINTS), **kwargs
) -> keras.Model:
    """The skeleton stream (3 stages, stem stride 1, TSM 1/4 + 1/4): 17 heatmaps in [0, 1].

    Other arguments as `build_xshiftnet` (`bn_momentum`, `dtype`, `name`, `endpoints`).
    """
    spec = HEATMAP_XSHIFTNET.scaled(width_multiplier)
    return build_xshiftnet(
        spec, input_shape, name=kwargs.pop("name", "heatmap_xshiftnet"), **kwargs
    )


class PoseGuidedAttention(layers.Layer):
    """EPAM-Net's spatial-temporal attention block (see the module docstring).

    Call: `layer([heatmap_features, rgb_features], training=...)` with heatmap features
    `[B, T', h, w, C']` and RGB features `[B, T, H, W, C]`, T' a multiple of T (frames 0, k,
    2k, ... with k = T' / T guide the T RGB frames) -> `F + F * M`, the RGB features' shape and
    dtype. Weights: the 7x7 2 -> 1 spatial kernel with its batch norm, the 7-tap temporal
    kernel. `maps(...)` returns S and A.
    """

    def __init__(self, bn_momentum: float = 0.9, **kwargs):
        super().__init__(**kwargs)
        self.bn_momentum = bn_momentum
        self.spatial = FrameConv(
            1, ATTENTION_SPATIAL_KERNEL, name="spatial", dtype=self.dtype_policy
        )
        self.spatial_bn = layers.BatchNormalization(
            momentum=bn_momentum, epsilon=BN_EPSILON, name="spatial_bn", dtype=self.dtype_policy
        )
        self.temporal = layers.Conv1D(
            1,
            ATTENTION_TEMPORAL_KERNEL,
            padding="same",
            use_bias=False,
            kernel_initializer=_conv_init(),
            name="temporal",
            dtype=self.dtype_policy,
        )

    def build(self, input_shape):
        heatmap_shape, _ = input_shape
        self.spatial.build((None, None, heatmap_shape[2], heatmap_shape[3], 2))
        self.spatial_bn.build((None, None, None, None, 1))
        self.temporal.build((None, None, 1))

    @staticmethod
    def select_frames(heatmap_features, rgb_frames):
        """Heatmap frames 0, k, 2k, ... (k = T' / T): `[B, T, h, w, C']`."""
        frames = heatmap_features.shape[1]
        if isinstance(rgb_frames, int) and frames is not None:
            if rgb_frames < 1 or frames % rgb_frames:
                raise ValueError(
                    f"heatmap frames={frames}: must be a multiple of the RGB frames ({rgb_frames})"
                )
            if frames == rgb_frames:
                return heatmap_features
        step = ops.shape(heatmap_features)[1] // rgb_frames
        return ops.take(heatmap_features, ops.arange(rgb_frames) * step, axis=1)

    def maps(self, heatmap_features, rgb_frames, training=False):
        """S `[B, T, h, w, 1]` in (0, 1) and A `[B, T]` in (0, 1), at the heatmap resolution."""
        p = self.select_frames(heatmap_features, rgb_frames)
        pooled = ops.concatenate(
            [ops.max(p, axis=-1, keepdims=True), ops.mean(p, axis=-1, keepdims=True)], axis=-1
        )
        spatial = ops.sigmoid(self.spatial_bn(self.spatial(pooled), training=training))
        context = ops.mean(spatial, axis=(2, 3))  # [B, T, 1]
        temporal = ops.sigmoid(self.temporal(context))[..., 0]
        return spatial, temporal

    def call(self, inputs, training=False):
        heatmap_features, rgb = inputs
        rgb_frames = rgb.shape[1] if rgb.shape[1] is not None else ops.shape(rgb)[1]
        spatial, temporal = self.maps(heatmap_features, rgb_frames, training=training)
        m = spatial * temporal[:, :, None, None, None]
        rgb_hw = tuple(rgb.shape)[2:4]
        same = tuple(spatial.shape)[2:4] == rgb_hw and None not in rgb_hw
        if not same:
            shape = ops.shape(m)
            size = ops.shape(rgb)[2:4]
            flat = ops.reshape(m, (-1, shape[2], shape[3], 1))
            flat = tf.image.resize(flat, size, method="bilinear")
            m = ops.reshape(ops.cast(flat, m.dtype), (shape[0], shape[1], size[0], size[1], 1))
        return rgb + rgb * m

    def compute_output_shape(self, input_shape):
        return input_shape[1]

    def get_config(self):
        return {**super().get_config(), "bn_momentum": self.bn_momentum}


def _head(num_classes: int, name: str, features: int) -> layers.Dense:
    # float32 whatever the policy, so that logits are float32 under mixed precision.
    head = layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        name=name,
        dtype="float32",
    )
    head.build((None, features))
    return head


class EPAMNet(keras.Model):
    """EPAM-Net: two X-ShiftNet streams, pose-guided attention on the RGB stream, late fusion.

    Call: `model({"rgb": rgb, "heatmap": heatmap}, training=...)` with rgb float32
    `[B, T, H, W, 3]` in [-1, 1] and heatmap float32 `[B, T', h, w, 17]` in [0, 1], T' a
    multiple of T (the paper: T = 16, T' = 48, 224^2 and 56^2; T' = T works alike) and
    h, w = H / 4, W / 4 (other sizes work: the attention map is resized to the RGB features)
    -> a dict of float32 logits `[B, num_classes]`: `rgb` (the attention-guided RGB stream),
    `heatmap` (the skeleton stream) and `fused` = rgb + heatmap. Weights are created at
    construction. Tracked attributes `rgb_backbone`, `heatmap_backbone`, `attention`,
    `rgb_head`, `heatmap_head`.
    """

    def __init__(
        self,
        num_classes: int,
        rgb: XShiftNetSpec = RGB_XSHIFTNET,
        heatmap: XShiftNetSpec = HEATMAP_XSHIFTNET,
        dropout_rate: float = 0.5,
        bn_momentum: float = 0.9,
        dtype=None,
        name: str = "epam_net",
    ):
        if num_classes < 1:
            raise ValueError(f"num_classes={num_classes}: must be >= 1")
        if not 0.0 <= dropout_rate < 1.0:
            raise ValueError(f"dropout_rate={dropout_rate}: must be in [0, 1)")
        super().__init__(name=name, dtype=dtype)
        self.num_classes = num_classes
        self.rgb_spec = rgb
        self.heatmap_spec = heatmap
        self.rgb_backbone = build_xshiftnet(
            rgb, bn_momentum=bn_momentum, dtype=dtype, name="rgb_xshiftnet"
        )
        self.heatmap_backbone = build_xshiftnet(
            heatmap, bn_momentum=bn_momentum, dtype=dtype, name="heatmap_xshiftnet"
        )
        self.attention = PoseGuidedAttention(bn_momentum, name="attention", dtype=dtype)
        self.attention.build(
            (
                (None, None, None, None, heatmap.feature_channels),
                (None,) * 4 + (rgb.feature_channels,),
            )
        )
        self.rgb_pool = layers.GlobalAveragePooling3D(name="rgb_pool", dtype=dtype)
        self.heatmap_pool = layers.GlobalAveragePooling3D(name="heatmap_pool", dtype=dtype)
        self.rgb_dropout = layers.Dropout(dropout_rate, name="rgb_dropout", dtype=dtype)
        self.heatmap_dropout = layers.Dropout(dropout_rate, name="heatmap_dropout", dtype=dtype)
        self.rgb_head = _head(num_classes, "rgb_logits", rgb.feature_channels)
        self.heatmap_head = _head(num_classes, "heatmap_logits", heatmap.feature_channels)
        self.built = True

    def call(self, inputs, training=False):
        if not isinstance(inputs, Mapping) or {"rgb", "heatmap"} - set(inputs):
            raise ValueError(f"inputs={type(inputs).__name__}: expected a dict with rgb, heatmap")
        rgb = self.rgb_backbone(inputs["rgb"], training=training)
        heatmap = self.heatmap_backbone(inputs["heatmap"], training=training)
        guided = self.attention([heatmap, rgb], training=training)
        rgb_logits = self.rgb_head(
            ops.cast(self.rgb_dropout(self.rgb_pool(guided), training=training), "float32")
        )
        heatmap_logits = self.heatmap_head(
            ops.cast(self.heatmap_dropout(self.heatmap_pool(heatmap), training=training), "float32")
        )
        return {"rgb": rgb_logits, "heatmap": heatmap_logits, "fused": rgb_logits + heatmap_logits}

    def kernels(self) -> list:
        """The weights that get weight decay: convolution, squeeze-excitation and dense kernels."""
        return [v for v in self.trainable_variables if v.name == "kernel"]


def build_epam(
    num_classes: int,
    width_multiplier: float = 1.0,
    rgb: XShiftNetSpec = RGB_XSHIFTNET,
    heatmap: XShiftNetSpec = HEATMAP_XSHIFTNET,
    dropout_rate: float = 0.5,
    bn_momentum: float = 0.9,
    dtype=None,
) -> EPAMNet:
    """EPAM-Net for `num_classes` classes; `width_multiplier` scales both streams' widths."""
    return EPAMNet(
        num_classes,
        rgb.scaled(width_multiplier),
        heatmap.scaled(width_multiplier),
        dropout_rate=dropout_rate,
        bn_momentum=bn_momentum,
        dtype=dtype,
    )


def epam_loss(labels, outputs: Mapping, global_batch_size: int | None = None):
    """Training loss: CE(rgb logits) + CE(heatmap logits), float32 scalar in nats.

    Args: labels int [B]; outputs an `EPAMNet` output dict; global_batch_size as in
    `losses.cross_entropy`.
    """
    return losses.cross_entropy(labels, outputs["rgb"], global_batch_size) + losses.cross_entropy(
        labels, outputs["heatmap"], global_batch_size
    )


# ---------------------------------------------------------------------------------------------
# Model size and compute.

# (RGB frames, height, width), (heatmap frames, height, width).
PAPER_INPUTS = {
    "NTU-60: RGB 16x224x224, heatmaps 48x56x56": ((16, 224, 224), (48, 56, 56)),
    "same window: RGB 16x224x224, heatmaps 16x56x56": ((16, 224, 224), (16, 56, 56)),
}


def _stream_macs(spec: XShiftNetSpec, clip_shape: Sequence[int]) -> tuple[int, tuple[int, ...]]:
    """MACs of one stream for one clip, and its feature map's shape (T, H, W, C)."""
    net = build_xshiftnet(spec, (*clip_shape, spec.in_channels))
    total = 0
    for layer in net.layers:
        if isinstance(layer, FrameConv):
            t, h, w, _ = layer.output.shape[1:]
            total += t * h * w * layer.macs_per_output(layer.input.shape[-1])
        elif isinstance(layer, SqueezeExcitation):
            total += 2 * layer.squeeze.kernel.shape[0] * layer.bottleneck
    return int(total), tuple(net.output.shape[1:])


def analytic_macs(
    num_classes: int,
    rgb_shape: Sequence[int] = (16, 224, 224),
    heatmap_shape: Sequence[int] = (48, 56, 56),
    rgb: XShiftNetSpec = RGB_XSHIFTNET,
    heatmap: XShiftNetSpec = HEATMAP_XSHIFTNET,
) -> dict[str, int]:
    """MACs for one clip: `rgb`, `heatmap` (the backbones), `attention`, `heads`, `total`.

    Counted: every convolution (output positions x kernel taps x input channels x output
    channels; depthwise: x 1 input channel), the squeeze-excitation and classifier matrix
    products, the attention's two convolutions (on the T selected frames at the heatmap
    features' resolution). Not counted: batch norm, activations, pooling, the shift, products
    with the maps, resizing.
    """
    for name, shape in (("rgb_shape", rgb_shape), ("heatmap_shape", heatmap_shape)):
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"{name}={tuple(shape)}: expected (frames, height, width) >= 1")
    if heatmap_shape[0] % rgb_shape[0]:
        raise ValueError(
            f"heatmap_shape={tuple(heatmap_shape)}: frames must be a multiple of {rgb_shape[0]}"
        )
    rgb_macs, rgb_features = _stream_macs(rgb, rgb_shape)
    heatmap_macs, heatmap_features = _stream_macs(heatmap, heatmap_shape)
    t = rgb_features[0]
    _, h, w, _ = heatmap_features
    attention = t * h * w * ATTENTION_SPATIAL_KERNEL**2 * 2 + t * ATTENTION_TEMPORAL_KERNEL
    heads = (rgb.feature_channels + heatmap.feature_channels) * num_classes
    parts = {"rgb": rgb_macs, "heatmap": heatmap_macs, "attention": attention, "heads": heads}
    return {**parts, "total": sum(parts.values())}


def parameter_counts(model: EPAMNet) -> dict[str, int]:
    """`total` (every weight, batch-norm moving statistics included, as `training.flops`) and
    `trainable` (what a PyTorch parameter count reports); also per part (total)."""
    return {
        "total": int(model.count_params()),
        "trainable": int(sum(math.prod(v.shape) for v in model.trainable_variables)),
        "rgb": int(model.rgb_backbone.count_params() + model.rgb_head.count_params()),
        "heatmap": int(model.heatmap_backbone.count_params() + model.heatmap_head.count_params()),
        "attention": int(model.attention.count_params()),
    }


def profiled_flops(
    model: EPAMNet,
    rgb_shape: Sequence[int],
    heatmap_shape: Sequence[int],
    op_types: Sequence[str] | None = None,
) -> int:
    """FLOPs of the inference graph for one clip, from `tf.compat.v1.profiler`.

    Args:
      op_types: count only these op types (e.g. `("Conv2D", "DepthwiseConv2dNative",
        "MatMul")`); None counts every op TensorFlow registers a FLOP statistic for.
    """
    from training.flops import graph_flops

    specs = {
        "rgb": tf.TensorSpec((1, *rgb_shape, model.rgb_spec.in_channels), tf.float32),
        "heatmap": tf.TensorSpec((1, *heatmap_shape, model.heatmap_spec.in_channels), tf.float32),
    }
    return graph_flops(model, specs, op_types)


def complexity_table(num_classes: int = 60, profile: bool = True) -> str:
    """A markdown table: parameters and compute per clip of EPAM-Net at the paper's inputs."""
    model = build_epam(num_classes)
    params = parameter_counts(model)
    rows = [
        f"EPAM-Net, {num_classes} classes: {params['total'] / 1e6:.3f} M weights "
        f"({params['trainable'] / 1e6:.3f} M trainable; RGB stream {params['rgb'] / 1e6:.3f} M, "
        f"heatmap stream {params['heatmap'] / 1e6:.3f} M, attention {params['attention']})",
        "",
        "| input | GMACs RGB | GMACs heatmap | GMACs attention + heads | GMACs total "
        "| GFLOPs (2 x MACs) | GFLOPs (TF profiler, all ops) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, (rgb_shape, heatmap_shape) in PAPER_INPUTS.items():
        m = analytic_macs(num_classes, rgb_shape, heatmap_shape)
        prof = f"{profiled_flops(model, rgb_shape, heatmap_shape) / 1e9:.2f}" if profile else "-"
        rows.append(
            f"| {label} | {m['rgb'] / 1e9:.3f} | {m['heatmap'] / 1e9:.3f} "
            f"| {(m['attention'] + m['heads']) / 1e9:.5f} | {m['total'] / 1e9:.3f} "
            f"| {2 * m['total'] / 1e9:.3f} | {prof} |"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="EPAM-Net parameters and compute per clip")
    parser.add_argument("--num_classes", type=int, default=60)
    parser.add_argument("--no_profile", action="store_true", help="skip the TF profiler column")
    args = parser.parse_args(argv)
    print(complexity_table(args.num_classes, profile=not args.no_profile))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
