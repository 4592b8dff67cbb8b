"""The memory of evaluation: what one clip costs a device in inference, and the batch that fits.

Evaluation reads long clips (the paper's R3D50-G: 250 frames of 256 x 256), so its batch is not
the training batch: one R3D50-G clip of that size holds about 4 GiB of activations at its peak
in float32. `eval_batch` turns a device's memory into a batch:

  per-replica batch = floor((budget - weights) / per-clip bytes), at least 1,

with the budget `MEMORY_FRACTION` of the device's memory (`device_memory`: GPUs as TensorFlow
reports them, the TPU generation's HBM per replica, the machine's memory on CPU, or
`runtime.device_memory_gib`) and the per-clip bytes `ClipMemory.per_clip`: the input clips as
the model reads them plus the peak of its live activations, times `ACTIVATION_FACTOR`.

`activation_bytes` replays a functional Keras model's graph in its execution order on ONE clip
of a fixed shape: each operation's outputs are allocated when it runs and every tensor is freed
after its last consumer, so the peak is the most bytes alive at once (the input clip apart).
Shapes come from the symbolic graph, so a 250 x 256 x 256 clip costs nothing to count. The peak
grows linearly with T x H x W; `benchmarks/eval_memory.py` measures the real peak on CPU at
reduced sizes and holds it against this count (docs/training.md, "Evaluation batch and memory")."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from collections.abc import Sequence

import keras
import tensorflow as tf

from training.config import (
    BACKBONE_EPAM,
    MODALITY_HEATMAP,
    DataConfig,
    ExperimentConfig,
    RuntimeConfig,
    TrainConfig,
)

log = logging.getLogger(__name__)

GIB = 1 << 30
# The share of a device's memory evaluation plans to use: the rest is the runtime's own, the
# allocator's fragmentation and the input pipeline's prefetched batch.
MEMORY_FRACTION = 0.8
# Measured peak over counted activations, with headroom: convolution workspaces and fused
# kernels' temporaries that the graph count does not see (`benchmarks/eval_memory.py` on CPU:
# 1.01-1.22 at the full evaluation clip, single points up to 1.26).
ACTIVATION_FACTOR = 1.5
# HBM per replica (one TPU core, or one chip where a chip is one device), GiB, by the
# generation in TPU_ACCELERATOR_TYPE (e.g. `v4-8`); a TPU of unknown generation gets the least.
TPU_HBM_GIB = {"v2": 8, "v3": 16, "v4": 32, "v5litepod": 16, "v5e": 16, "v5p": 95, "v6e": 32}
TPU_DEFAULT_GIB = 8


@dataclasses.dataclass(frozen=True)
class ClipMemory:
    """Bytes one evaluation clip and the models' weights take on one replica.

    Attributes:
      input_bytes: the clip of every modality the models read, as the input pipeline hands it
        over (float32 [T, H, W, C] each).
      activation_bytes: the peak of live activations of one clip, the largest over the models
        (they run one after the other on a batch).
      weight_bytes: every model's weights (held once, not per clip).
    """

    input_bytes: int
    activation_bytes: int
    weight_bytes: int

    @property
    def per_clip(self) -> int:
        """What one more clip in the batch costs: its inputs and its activations, with the
        headroom of `ACTIVATION_FACTOR`."""
        return self.input_bytes + int(math.ceil(ACTIVATION_FACTOR * self.activation_bytes))


def activation_bytes(model: keras.Model, batch: int = 1) -> int:
    """The peak bytes of live activations of a functional model's inference on `batch` clips.

    Args:
      model: a functional Keras model built for a fixed input shape (every tensor's shape known
        but the batch); its tensors' dtypes give their sizes.
      batch: clips in the batch, >= 1.

    Returns:
      int bytes: the largest sum of the tensors alive at once when the operations run in
      Keras' order (deepest first), each operation's outputs alive from its run until its last
      consumer has run, the model's outputs to the end. The model's inputs are not counted: the
      caller holds them throughout (`ClipMemory.input_bytes`).

    Raises:
      ValueError: naming the tensor whose shape is not fully known.
    """
    if batch < 1:
        raise ValueError(f"batch={batch}: must be >= 1")

    def size(t) -> int:
        dims = tuple(t.shape)[1:]
        if any(d is None for d in dims):
            raise ValueError(
                f"tensor {t.name!r} of {model.name!r} has shape {tuple(t.shape)}: build the "
                "model for a fixed clip shape"
            )
        return batch * math.prod(dims) * tf.as_dtype(t.dtype).size

    nodes = [
        node
        for depth in sorted(model._nodes_by_depth, reverse=True)
        for node in model._nodes_by_depth[depth]
    ]
    consumers: dict[int, int] = {}
    for node in nodes:
        for t in node.input_tensors:
            consumers[id(t)] = consumers.get(id(t), 0) + 1
    outputs = {id(t) for t in tf.nest.flatten(model.outputs)}
    for t in tf.nest.flatten(model.inputs):
        size(t)  # its shape must be known too
    live: dict[int, int] = {}  # tensor -> its bytes, while it is alive
    total = peak = 0  # total == sum(live.values())
    for node in nodes:
        if node.is_input:
            continue
        for t in node.outputs:
            live[id(t)] = size(t)
            total += live[id(t)]
        peak = max(peak, total)
        for t in node.input_tensors:
            consumers[id(t)] -= 1
            if consumers[id(t)] == 0 and id(t) not in outputs:
                total -= live.pop(id(t), 0)
    return peak


def _backbones(
    cfg: ExperimentConfig, clip_shape: Sequence[int], data: DataConfig
) -> list[keras.Model]:
    """The functional backbones of `cfg`'s model, built for clips [T, H, W] (symbolically;
    EPAM-Net's heatmap stream at `data.heatmap_stride`)."""
    from training import epam, inputs
    from training.models import build_backbone
    from training.trainer import epam_streams

    t, h, w = (int(v) for v in clip_shape)
    if cfg.model.backbone == BACKBONE_EPAM:
        from training import heatmaps

        rgb, heat = epam_streams(cfg.model)
        stride = data.heatmap_stride
        hh, hw = -(-h // stride), -(-w // stride)
        return [
            epam.build_xshiftnet(rgb, (t, h, w, 3), name="rgb"),
            epam.build_xshiftnet(
                heat, (t * data.heatmap_frame_ratio, hh, hw, heatmaps.NUM_CHANNELS), name="heatmap"
            ),
        ]
    channels = inputs.MODEL_CHANNELS[cfg.modality]
    if cfg.modality == MODALITY_HEATMAP:  # a heatmap teacher reads the strided volumes
        h, w = -(-h // data.heatmap_stride), -(-w // data.heatmap_stride)
    return [build_backbone(cfg.model, (t, h, w, channels))]


def input_bytes(modalities: Sequence[str], data: DataConfig, clip_shape: Sequence[int]) -> int:
    """Bytes of one clip of each of `modalities` as the input pipeline hands it over: float32
    [T, H, W, C], heatmaps [k T, ...] at `data.heatmap_stride` (k = `data.heatmap_frame_ratio`)."""
    from training import inputs

    t, h, w = (int(v) for v in clip_shape)
    total = 0
    for m in modalities:
        mt, mh, mw = t, h, w
        if m == MODALITY_HEATMAP:  # k T frames (`heatmap_frame_ratio`) at the heatmap stride
            mt = t * data.heatmap_frame_ratio
            mh, mw = -(-h // data.heatmap_stride), -(-w // data.heatmap_stride)
        total += 4 * mt * mh * mw * inputs.MODEL_CHANNELS[m]
    return total


def clip_memory(
    configs: Sequence[ExperimentConfig],
    clip_shape: Sequence[int] | None = None,
    data: DataConfig | None = None,
) -> ClipMemory:
    """What one evaluation clip costs when the models of `configs` are evaluated together on it
    (weights in float32).

    Args:
      configs: the models' configs (a model directory's `config.json`).
      clip_shape: (T, H, W); default `data.eval_num_frames` x `data.eval_crop_size`.
      data: the evaluation's data config; default the first model's.
    """
    if not configs:
        raise ValueError("configs: at least one model's config is needed")
    data = data or configs[0].data
    if clip_shape is None:
        clip_shape = (data.eval_num_frames, *data.eval_crop_size)
    clip_shape = tuple(int(v) for v in clip_shape)
    if len(clip_shape) != 3 or min(clip_shape) < 1:
        raise ValueError(f"clip_shape={clip_shape}: expected positive (T, H, W)")
    peak = weights = 0
    modalities: list[str] = []
    for cfg in configs:
        backbones = _backbones(cfg, clip_shape, data)
        # EPAM-Net's streams run one after the other, the first one's features kept: count both.
        peak = max(peak, sum(activation_bytes(b) for b in backbones))
        features = sum(int(b.output.shape[-1]) for b in backbones)
        params = sum(b.count_params() for b in backbones)
        weights += 4 * (params + (features + 1) * cfg.data.num_classes)
        modalities += [m for m in cfg.model_modalities() if m not in modalities]
    return ClipMemory(input_bytes(modalities, data, clip_shape), peak, weights)


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < (1 << 60):
            return int(text)
    return None


def device_memory(strategy: tf.distribute.Strategy, runtime: RuntimeConfig) -> tuple[int, str]:
    """(bytes of memory per replica, where the figure comes from).

    `runtime.device_memory_gib` when set; else a GPU's memory as TensorFlow gives it to the
    process, a TPU replica's HBM by the generation in `TPU_ACCELERATOR_TYPE` (`TPU_HBM_GIB`),
    or on CPU the machine's memory (its cgroup limit if lower) shared by the replicas.
    """
    from training import distribute

    replicas = distribute.replicas(strategy)
    if runtime.device_memory_gib:
        return int(runtime.device_memory_gib * GIB), "runtime.device_memory_gib"
    if distribute.is_tpu(strategy):
        kind = os.environ.get("TPU_ACCELERATOR_TYPE", "")
        generation = re.match(r"(v\d+[a-z]*)", kind)
        gib = TPU_HBM_GIB.get(generation.group(1) if generation else "", TPU_DEFAULT_GIB)
        return gib * GIB, f"TPU {kind or 'of unknown generation'}: {gib} GiB per replica"
    if tf.config.list_logical_devices("GPU"):
        from tensorflow.python.client import device_lib

        limits = [d.memory_limit for d in device_lib.list_local_devices() if d.device_type == "GPU"]
        if limits:
            return min(limits), f"GPU memory TensorFlow holds, {min(limits) / GIB:.1f} GiB"
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = _cgroup_limit()
    if limit is not None:
        total = min(total, limit)
    return total // replicas, f"CPU memory {total / GIB:.1f} GiB over {replicas} replica(s)"


def fit_batch(budget: int, memory: ClipMemory) -> int:
    """Clips per replica that fit `budget` bytes: floor((budget - weights) / per clip), >= 1."""
    return max(1, (budget - memory.weight_bytes) // max(1, memory.per_clip))


@dataclasses.dataclass(frozen=True)
class EvalBatch:
    """The evaluation batch of a run and why.

    Attributes:
      global_size: clips per evaluation step over all replicas.
      per_replica: clips per replica.
      reason: where the figure comes from, for the log.
    """

    global_size: int
    per_replica: int
    reason: str


def eval_batch(
    configs: Sequence[ExperimentConfig],
    strategy: tf.distribute.Strategy,
    train: TrainConfig,
    runtime: RuntimeConfig,
    data: DataConfig | None = None,
) -> EvalBatch:
    """The evaluation batch: `train.eval_batch_per_replica` x replicas when set, else
    `train.eval_batch_size` when set (divisible by the replicas), else (0, the default) the
    clips that fit a replica's memory (`device_memory`, `clip_memory`, `fit_batch`) times the
    replicas. Raises ValueError when a set batch does not divide or one clip is more than the
    memory (naming the figures and what to change)."""
    from training import distribute

    replicas = distribute.replicas(strategy)
    if train.eval_batch_per_replica:
        n = train.eval_batch_per_replica
        return EvalBatch(n * replicas, n, "train.eval_batch_per_replica")
    if train.eval_batch_size:
        n = distribute.per_replica_batch(train.eval_batch_size, strategy)
        return EvalBatch(train.eval_batch_size, n, "train.eval_batch_size")
    data = data or configs[0].data
    budget, where = device_memory(strategy, runtime)
    memory = clip_memory(configs, data=data)
    usable = int(MEMORY_FRACTION * budget)
    shape = f"{data.eval_num_frames}x{data.eval_crop_size[0]}x{data.eval_crop_size[1]}"
    if memory.weight_bytes + memory.per_clip > usable:
        raise ValueError(
            f"one {shape} evaluation clip needs about {memory.per_clip / GIB:.1f} GiB and the "
            f"weights {memory.weight_bytes / GIB:.2f} GiB, more than {usable / GIB:.1f} GiB "
            f"({MEMORY_FRACTION:.0%} of {where}): evaluate shorter or smaller clips "
            "(--set data.eval_num_frames=N or data.eval_crop_size=[H,W]), on a larger device, "
            "or set the memory (--set runtime.device_memory_gib=G)"
        )
    n = fit_batch(usable, memory)
    return EvalBatch(
        n * replicas,
        n,
        f"fits {MEMORY_FRACTION:.0%} of {where}: {memory.per_clip / GIB:.2f} GiB per {shape} "
        f"clip, weights {memory.weight_bytes / GIB:.2f} GiB",
    )
