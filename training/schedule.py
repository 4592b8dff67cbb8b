"""Learning-rate schedule: linear warm-up, then half-cosine decay (paper, section 4).

    lr(s) = peak * s / warmup                                     for s < warmup
    lr(s) = peak * 0.5 * (1 + cos(pi * min(s - warmup, decay) / decay))   afterwards

with `peak = base_learning_rate * global_batch_size / base_batch_size` (1.6 at a batch of
2048 in the paper: linear scaling). Step s counts optimizer steps from 0.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from training.config import OptimizerConfig


@keras.saving.register_keras_serializable(package="perfnet")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Args: peak_learning_rate > 0; warmup_steps >= 0; decay_steps >= 1."""

    def __init__(self, peak_learning_rate: float, warmup_steps: int, decay_steps: int):
        if peak_learning_rate <= 0:
            raise ValueError(f"peak_learning_rate={peak_learning_rate}: must be > 0")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps={warmup_steps}: must be >= 0")
        if decay_steps < 1:
            raise ValueError(f"decay_steps={decay_steps}: must be >= 1")
        self.peak_learning_rate = float(peak_learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.decay_steps = int(decay_steps)

    def __call__(self, step):
        s = tf.cast(step, tf.float32)
        peak = self.peak_learning_rate
        warm = peak * s / float(max(self.warmup_steps, 1))
        t = tf.clip_by_value(s - self.warmup_steps, 0.0, float(self.decay_steps))
        cosine = peak * 0.5 * (1.0 + tf.cos(math.pi * t / self.decay_steps))
        return tf.where(s < self.warmup_steps, warm, cosine)

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "warmup_steps": self.warmup_steps,
            "decay_steps": self.decay_steps,
        }


def build_schedule(cfg: OptimizerConfig, global_batch_size: int) -> WarmupCosine:
    """The schedule for this global batch size (linear scaling of the base rate)."""
    if global_batch_size < 1:
        raise ValueError(f"global_batch_size={global_batch_size}: must be >= 1")
    return WarmupCosine(
        cfg.peak_learning_rate(global_batch_size), cfg.warmup_steps, cfg.decay_steps
    )


def build_optimizer(cfg: OptimizerConfig, global_batch_size: int) -> keras.optimizers.SGD:
    """Momentum SGD on the schedule. Weight decay is an L2 loss term (`losses.l2_penalty`)."""
    return keras.optimizers.SGD(
        learning_rate=build_schedule(cfg, global_batch_size), momentum=cfg.momentum
    )
