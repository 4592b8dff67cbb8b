"""Parameter counts and compute per clip, counted analytically and with TensorFlow's profiler.

Conventions: a multiply-accumulate (MAC) is one multiplication and one addition; FLOPs =
2 x MACs (TensorFlow's profiler registers Conv3D and MatMul as 2 FLOPs per MAC). The analytic
count covers the convolutions, the gating matrix products and the classifier (the layers that
hold >99% of the compute); the profiler count covers every op of the inference graph that TF
registers a FLOP statistic for (also batch-norm, pooling and elementwise ops).

`python -m training.flops` prints the table of docs/training.md (no forward pass is run: the
graph is traced for a batch of one clip and never executed).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

import keras

from training.config import ModelConfig
from training.models import FeatureGating, build_backbone, build_classifier

# The paper's input sizes (frames, height, width): training crop, and the three central eval
# crops (Kinetics-600, UCF-101, HMDB-51; PERF-Net section 4).
PAPER_INPUTS = {
    "train 64x224x224": (64, 224, 224),
    "K600 eval 250x256x256": (250, 256, 256),
    "UCF-101 eval 128x224x298": (128, 224, 298),
    "HMDB-51 eval 64x224x298": (64, 224, 298),
}


def analytic_macs(
    cfg: ModelConfig, clip_shape: Sequence[int], num_classes: int, in_channels: int = 3
) -> int:
    """MACs for one clip of `clip_shape` = (frames, height, width).

    Counted: every Conv3D (output voxels x kernel volume x input channels x output channels),
    every gating matrix product (C x C), and the classifier (features x classes).
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
        elif isinstance(layer, FeatureGating):
            channels = layer.kernel.shape[0]
            total += channels * channels
    total += backbone.output.shape[-1] * num_classes
    return int(total)


def parameter_count(cfg: ModelConfig, num_classes: int, in_channels: int = 3) -> int:
    """Weights of the classifier (trainable and batch-norm moving statistics)."""
    return int(build_classifier(cfg, num_classes, in_channels).count_params())


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
    spec = tf.TensorSpec((1, *clip_shape, in_channels), tf.float32)

    @tf.function(autograph=False)
    def infer(x):
        return model(x, training=False)

    graph = infer.get_concrete_function(spec).graph
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_classes", type=int, default=600)
    parser.add_argument("--no_profile", action="store_true", help="skip the TF profiler column")
    args = parser.parse_args(argv)
    print(complexity_table(args.num_classes, profile=not args.no_profile))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
