"""Losses: cross-entropy, the PERF-Net distillation loss (eq. 1) and its unified ablation.

Equation (1) of the paper, for a student's logits S and N teachers' logits T_i:

    L = L_c(S) + sum_i MSE(T_i, S)                                   (separate loss, "SL")

and the ablation (Table 4, "UL"), regression towards the late-fusion logits:

    L = L_c(S) + MSE(sum_i T_i, S)

L_c is the softmax cross-entropy with the ground-truth label, averaged over the batch (an
EPAM-Net student: the sum of its two streams' cross-entropies, `epam.epam_loss`, with S its
fused logits; `with_distillation`). MSE is
the mean over the batch and the classes of the squared difference of logits (Keras's
`mean_squared_error` averaged over the batch). Logits are float32 `[batch, classes]`.

Distributed training: each replica computes its loss on its share of the global batch and
divides sums by the *global* batch size, so that the gradients summed over replicas are the
gradients of the global mean (`reduce="global"` below).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import tensorflow as tf

from training.config import DISTILL_LOSSES


def _check_logits(name: str, logits) -> None:
    if logits.shape.rank != 2:
        raise ValueError(f"{name}.shape={logits.shape}: expected [batch, classes]")


def cross_entropy(labels, logits, global_batch_size: int | None = None, weights=None):
    """Softmax cross-entropy with integer labels.

    Args:
      labels: int [B] in [0, classes).
      logits: float32 [B, classes].
      global_batch_size: if given, the sum over this replica's examples divided by it; else
        the mean over the examples.
      weights: optional float [B] per-example weights (e.g. an evaluation mask).

    Returns:
      float32 scalar, nats.
    """
    _check_logits("logits", logits)
    per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int32), logits=tf.cast(logits, tf.float32)
    )
    return _reduce(per_example, global_batch_size, weights)


def mse(target, prediction, global_batch_size: int | None = None):
    """Mean over classes of (target - prediction)^2, then over the batch (see module doc).

    Args: float [B, classes] each. Returns float32 scalar.
    """
    _check_logits("target", target)
    _check_logits("prediction", prediction)
    per_example = tf.reduce_mean(
        tf.math.squared_difference(tf.cast(target, tf.float32), tf.cast(prediction, tf.float32)),
        axis=-1,
    )
    return _reduce(per_example, global_batch_size, None)


def _reduce(per_example, global_batch_size, weights):
    if weights is not None:
        per_example = per_example * tf.cast(weights, per_example.dtype)
    if global_batch_size is None:
        return tf.reduce_mean(per_example)
    if global_batch_size < 1:
        raise ValueError(f"global_batch_size={global_batch_size}: must be >= 1")
    return tf.reduce_sum(per_example) / float(global_batch_size)


def distillation_loss(
    student_logits,
    teacher_logits: Mapping[str, tf.Tensor] | Sequence[tf.Tensor],
    mode: str = "sl",
    global_batch_size: int | None = None,
):
    """The distillation term of eq. (1).

    Args:
      student_logits: float32 [B, classes].
      teacher_logits: the teachers' float32 [B, classes] logits (a mapping or a sequence),
        computed on the same clips; gradients never flow into them.
      mode: `sl`: sum_i MSE(T_i, S); `ul`: MSE(sum_i T_i, S).
      global_batch_size: see `cross_entropy`.

    Returns:
      float32 scalar.
    """
    if mode not in DISTILL_LOSSES:
        raise ValueError(f"mode={mode!r}: expected one of {list(DISTILL_LOSSES)}")
    teachers = list(
        teacher_logits.values() if isinstance(teacher_logits, Mapping) else teacher_logits
    )
    if not teachers:
        raise ValueError("teacher_logits: at least one teacher is needed")
    teachers = [tf.stop_gradient(t) for t in teachers]
    if mode == "sl":
        return tf.add_n([mse(t, student_logits, global_batch_size) for t in teachers])
    return mse(tf.add_n(teachers), student_logits, global_batch_size)


def student_loss(
    labels,
    student_logits,
    teacher_logits,
    mode: str = "sl",
    distill_weight: float = 1.0,
    global_batch_size: int | None = None,
):
    """Eq. (1): returns (total, cross_entropy, distillation), float32 scalars."""
    ce = cross_entropy(labels, student_logits, global_batch_size)
    return with_distillation(
        ce, student_logits, teacher_logits, mode, distill_weight, global_batch_size
    )


def with_distillation(
    ce,
    student_logits,
    teacher_logits,
    mode: str = "sl",
    distill_weight: float = 1.0,
    global_batch_size: int | None = None,
):
    """Eq. (1) on a student's own classification loss `ce` (a float32 scalar): returns
    (ce + distill_weight * distillation, ce, distillation).

    `student_loss` is this with `ce` = `cross_entropy(labels, student_logits)`; an EPAM-Net
    student passes `training.epam.epam_loss` (CE of its rgb stream + CE of its heatmap stream)
    and its `fused` logits as `student_logits`.
    """
    distill = distillation_loss(student_logits, teacher_logits, mode, global_batch_size)
    return ce + distill_weight * distill, ce, distill


def l2_penalty(kernels, weight_decay: float):
    """`weight_decay / 2 * sum(w**2)` over `kernels` (float32 scalar); gradient `wd * w`."""
    if weight_decay < 0:
        raise ValueError(f"weight_decay={weight_decay}: must be >= 0")
    if not kernels or weight_decay == 0:
        return tf.constant(0.0)
    return (
        0.5
        * weight_decay
        * tf.add_n([tf.reduce_sum(tf.square(tf.cast(k, tf.float32))) for k in kernels])
    )
