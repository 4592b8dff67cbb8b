"""Distribution strategy and numeric precision.

`auto` picks TPUStrategy when a TPU is named, MirroredStrategy when GPUs are visible, and the
default (single-device) strategy on CPU. `mirrored` without GPUs mirrors over every logical
CPU device, which is how the tests exercise the multi-replica path on a CPU
(`tf.config.set_logical_device_configuration`). Precision `auto` is `mixed_bfloat16` on TPU
(bfloat16 compute, float32 variables; paper section 4) and float32 elsewhere.
"""

from __future__ import annotations

import logging

import tensorflow as tf

from training.config import RuntimeConfig

log = logging.getLogger(__name__)


def get_strategy(runtime: RuntimeConfig) -> tf.distribute.Strategy:
    """The strategy for `runtime` (see module doc). Connects to and initializes a named TPU."""
    runtime.validate()
    kind = runtime.distribution
    if kind == "auto":
        if runtime.tpu:
            kind = "tpu"
        elif tf.config.list_logical_devices("GPU"):
            kind = "mirrored"
        else:
            kind = "default"
    if kind == "tpu":
        if not runtime.tpu:
            raise ValueError(f"runtime.tpu={runtime.tpu!r}: TPUStrategy needs a TPU name")
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=runtime.tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
    elif kind == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        strategy = tf.distribute.MirroredStrategy(devices=devices)
    else:
        strategy = tf.distribute.get_strategy()
    log.info("strategy %s with %d replica(s)", type(strategy).__name__, replicas(strategy))
    return strategy


def replicas(strategy: tf.distribute.Strategy) -> int:
    return int(strategy.num_replicas_in_sync)


def is_tpu(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.TPUStrategy)


def precision_policy(runtime: RuntimeConfig, strategy: tf.distribute.Strategy) -> str:
    """A Keras dtype policy name: the configured one, or `auto`'s choice for `strategy`."""
    if runtime.precision != "auto":
        return runtime.precision
    return "mixed_bfloat16" if is_tpu(strategy) else "float32"


def per_replica_batch(global_batch_size: int, strategy: tf.distribute.Strategy) -> int:
    """`global_batch_size / replicas`; raises ValueError naming both if it does not divide."""
    n = replicas(strategy)
    if global_batch_size % n:
        raise ValueError(
            f"global_batch_size={global_batch_size}: must be divisible by the {n} replicas"
        )
    return global_batch_size // n
