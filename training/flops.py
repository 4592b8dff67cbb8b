"""Parameter counts and compute per clip, counted analytically and with TensorFlow's profiler.

Conventions: a multiply-accumulate (MAC) is one multiplication and one addition; FLOPs =
2 x MACs (TensorFlow's profiler registers Conv3D, DepthwiseConv2dNative and MatMul as 2 FLOPs
per MAC). The analytic count covers the convolutions (STM's channel-wise ones included), the
gating matrix products and the classifier (the layers that hold >99% of the compute); the
profiler count covers every op of the inference graph that TF registers a FLOP statistic for
(also batch-norm, pooling and elementwise ops, e.g. STM's frame differences).

Papers on 2D video networks (TSN, TSM, STM) quote multiply-adds under the name "FLOPs": STM's
33.3 G (8 frames) and 66.5 G (16 frames) are, in this module's terms, GMACs; compare them with
the GMACs column. Their parameter counts are PyTorch's (trainable weights only: no batch-norm
moving statistics); compare them with `trainable_parameter_count`.

`python -m training.flops` prints the table of docs/training.md (no forward pass is run: the
graph is traced for a batch of one clip and never executed).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

import keras

from training.config import ModelConfig
from training.models import (
    ChannelwiseSpatialConv,
    ChannelwiseTemporalConv,
    FeatureGating,
    build_backbone,
    build_classifier,
    segment_consensus,
)

# The paper's input sizes (frames, height, width): training crop, and the three central eval
# crops (Kinetics-600, UCF-101, HMDB-51; PERF-Net section 4).
PAPER_INPUTS = {
    "train 64x224x224": (64, 224, 224),
    "K600 eval 250x256x256": (250, 256, 256),
    "UCF-101 eval 128x224x298": (128, 224, 298),
    "HMDB-51 eval 64x224x298": (64, 224, 298),
}

# STM (Jiang et al., ICCV 2019): its paper's inputs, 8 and 16 segments of 224x224, and the
# evaluation crops of the Kinetics-600 presets; the paper's figures for ResNet-50 STM (GMACs,
# quoted as "FLOPs", and millions of PyTorch parameters, which match a 174-class head, i.e.
# Something-Something; the parameter count does not depend on the clip size).
STM_INPUTS = {
    "8x224x224": (8, 224, 224),
    "16x224x224": (16, 224, 224),
    "K600 eval 8x256x256": (8, 256, 256),
    "K600 eval 16x256x256": (16, 256, 256),
}
STM_PAPER = {8: (33.3, 24.0), 16: (66.5, 24.0)}


def analytic_macs(
    cfg: ModelConfig, clip_shape: Sequence[int], num_classes: int, in_channels: int = 3
) -> int:
    """MACs for one clip of `clip_shape` = (frames, height, width).

    Counted: every Conv3D (output voxels x kernel volume x input channels x output channels),
    every channel-wise convolution (output voxels x kernel taps), every gating matrix product
    (C x C), and the classifier (features x classes; once per frame with segment consensus).
    """
    if len(clip_shape) != 3 or min(clip_shape) < 1:
        raise ValueError(f"clip_shape={tuple(clip_shape)}: expected (frames, height, width) >= 1")
    backbone = build_backbone(cfg, (*clip_shape, in_channels))
    total = 0
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.Conv3D):
            out_shape = layer.output.shape
            kernel = layer.kernel.shape  # (kt, kh, kw, c_in, c_out)
            total += math.prod(out_shape[1:]) * math.prod(kernel[:4])
        elif isinstance(layer, ChannelwiseTemporalConv | ChannelwiseSpatialConv):
            total += math.prod(layer.output.shape[1:]) * math.prod(layer.kernel.shape[:-1])
        elif isinstance(layer, FeatureGating):
            channels = layer.kernel.shape[0]
            total += channels * channels
    scored = backbone.output.shape[1] if segment_consensus(cfg) else 1
    total += scored * backbone.output.shape[-1] * num_classes
    return int(total)


def parameter_count(cfg: ModelConfig, num_classes: int, in_channels: int = 3) -> int:
    """Weights of the classifier (trainable and batch-norm moving statistics)."""
    return int(build_classifier(cfg, num_classes, in_channels).count_params())


def trainable_parameter_count(cfg: ModelConfig, num_classes: int, in_channels: int = 3) -> int:
    """Trainable weights of the classifier (PyTorch's count: no batch-norm moving statistics)."""
    model = build_classifier(cfg, num_classes, in_channels)
    return int(sum(math.prod(v.shape) for v in model.trainable_weights))


def profiled_flops(
    cfg: ModelConfig,
    clip_shape: Sequence[int],
    num_classes: int,
    in_channels: int = 3,
    op_types: Sequence[str] | None = None,
) -> int:
    """FLOPs of the inference graph for one clip, from `tf.compat.v1.profiler`.

    Args:
      op_types: count only these op types (e.g. `("Conv3D", "MatMul")`); None counts all.
    """
    import tensorflow as tf

    model = build_classifier(cfg, num_classes, in_channels)
    return graph_flops(model, tf.TensorSpec((1, *clip_shape, in_channels), tf.float32), op_types)


def graph_flops(model, input_spec, op_types: Sequence[str] | None = None) -> int:
    """FLOPs of `model`'s inference graph for inputs of `input_spec` (a `tf.TensorSpec` or a
    structure of them), from `tf.compat.v1.profiler`.

    Args:
      op_types: count only these op types (e.g. `("Conv3D", "MatMul")`); None counts every op
        TensorFlow registers a FLOP statistic for.
    """
    import tensorflow as tf

    @tf.function(autograph=False)
    def infer(x):
        return model(x, training=False)

    graph = infer.get_concrete_function(input_spec).graph
    opts = (
        tf.compat.v1.profiler.ProfileOptionBuilder(
            tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        )
        .with_empty_output()
        .build()
    )
    result = tf.compat.v1.profiler.profile(graph, cmd="op", options=opts)
    if op_types is None:
        return int(result.total_float_ops)
    # The `op` view is a chain of op types, each node holding its own count in `float_ops`.
    wanted, total, stack = set(op_types), 0, [result]
    while stack:
        node = stack.pop()
        total += node.float_ops if node.name in wanted else 0
        stack.extend(node.children)
    return int(total)


def complexity_table(num_classes: int = 600, profile: bool = True) -> str:
    """A markdown table: params and GFLOPs per clip for both backbones at the paper's sizes."""
    rows = [
        "| backbone | input | params (M) | GMACs (analytic) | GFLOPs (2 x MACs) "
        "| GFLOPs (TF profiler, all ops) |",
        "|---|---|---|---|---|---|",
    ]
    for backbone in ("r3d50g", "s3dg"):
        cfg = ModelConfig(backbone=backbone)
        for modality, channels in (("RGB/pose", 3), ("flow", 2)):
            params = parameter_count(cfg, num_classes, channels) / 1e6
            for label, shape in PAPER_INPUTS.items():
                if channels == 2 and not label.startswith(("train", "K600")):
                    continue
                macs = analytic_macs(cfg, shape, num_classes, channels) / 1e9
                prof = (
                    f"{profiled_flops(cfg, shape, num_classes, channels) / 1e9:.1f}"
                    if profile
                    else "-"
                )
                rows.append(
                    f"| {backbone} {modality} | {label} | {params:.2f} | {macs:.1f} "
                    f"| {2 * macs:.1f} | {prof} |"
                )
    return "\n".join(rows)


def stm_table(num_classes: Sequence[int] = (400, 600), profile: bool = True) -> str:
    """A markdown table: STM's parameters and compute per clip beside its paper's figures."""
    rows = [
        "| backbone | classes | input | params (M) | trainable params (M) | GMACs (analytic) "
        '| GFLOPs (2 x MACs) | GFLOPs (TF profiler, all ops) | paper: "GFLOPs" (GMACs), '
        "params (M) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    cfg = ModelConfig(backbone="stm")
    for classes in num_classes:
        for modality, channels in (("RGB/pose", 3), ("flow", 2)):
            params = parameter_count(cfg, classes, channels) / 1e6
            trainable = trainable_parameter_count(cfg, classes, channels) / 1e6
            for label, shape in STM_INPUTS.items():
                if label.startswith("K600") and classes != 600:
                    continue
                macs = analytic_macs(cfg, shape, classes, channels) / 1e9
                prof = (
                    f"{profiled_flops(cfg, shape, classes, channels) / 1e9:.1f}" if profile else "-"
                )
                paper = STM_PAPER.get(shape[0]) if shape[1:] == (224, 224) else None
                quoted = f"{paper[0]}, {paper[1]}" if paper and channels == 3 else "-"
                rows.append(
                    f"| stm {modality} | {classes} | {label} | {params:.2f} | {trainable:.2f} "
                    f"| {macs:.2f} | {2 * macs:.2f} | {prof} | {quoted} |"
                )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_classes", type=int, default=600)
    parser.add_argument("--no_profile", action="store_true", help="skip the TF profiler column")
    parser.add_argument(
        "--stm_only", action="store_true", help="print only STM's table (400 and 600 classes)"
    )
    args = parser.parse_args(argv)
    if not args.stm_only:
        print(complexity_table(args.num_classes, profile=not args.no_profile))
        print()
    print(stm_table(profile=not args.no_profile))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
