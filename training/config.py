"""Typed experiment configuration: dataclasses, presets, validation, JSON round trip.

Every job (teacher training, distillation, fine-tuning, evaluation) is described by one
`ExperimentConfig`. Presets reproduce the paper's runs (PERF-Net, sections 3.2, 3.3
and 4) and provide tiny variants that train on a CPU in seconds. The resolved
config (preset + overrides + values derived at run time) is written as `config.json` beside the
checkpoints; a teacher's `config.json` is how the distillation and evaluation jobs rebuild it.

Units: frames are counts at the stored 25 fps; sizes are pixels (height, width); learning rates
are per step; batch sizes are global (summed over all replicas) unless named per-replica.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from render.style import RenderStyle, style_from_text
from schemas import media_sequence as ms

BACKBONES = ("r3d50g", "s3dg", "stm", "epam")
# How a clip's frames are chosen (`training.inputs`): consecutive frames, or one per segment.
SAMPLINGS = ("window", "segments")
TASKS = ("teacher", "student", "finetune")
DISTILL_LOSSES = ("sl", "ul")
PRECISIONS = ("auto", "float32", "mixed_bfloat16")
DISTRIBUTIONS = ("auto", "default", "mirrored", "tpu")
CONFIG_FILENAME = "config.json"
# Formats of `train.init_2d_checkpoint` (`training.inflate.FORMATS`).
INIT_2D_FORMATS = ("auto", "tf_checkpoint", "keras", "npz")
# The training modalities: the records' three image streams and the skeleton heatmap volumes
# that the input pipeline builds from the records' keypoints (`training.heatmaps`; records of
# the `pose` or the `keypoints` modality carry them).
MODALITY_HEATMAP = "heatmap"
# DataConfig fields that shape the `heatmap` modality: a model is fed heatmaps made as in training.
HEATMAP_SETTINGS = (
    "heatmap_stride",
    "heatmap_sigma",
    "heatmap_score_threshold",
    "heatmap_limbs",
    "heatmap_frame_ratio",
)
# Pose-rendered frames drawn by the input pipeline from the records' keypoints onto their RGB
# frames, in the style `data.render_style` (`training.pose_render`): a pose teacher's input that
# needs no pose-rendered stream in the records, in any variant of the paper's Table 2.
MODALITY_POSE_LIVE = "pose_live"
# DataConfig fields that shape the `pose_live` modality.
POSE_LIVE_SETTINGS = ("render_style",)
MODALITIES = (*ms.IMAGE_MODALITIES, MODALITY_HEATMAP, MODALITY_POSE_LIVE)
# The record modality (schemas.media_sequence) each training modality is read from (`pose_live`:
# the RGB frames it draws on; its keypoints are `heatmap`'s, see `record_modalities`).
RECORD_MODALITY = {
    **{m: m for m in ms.IMAGE_MODALITIES},
    MODALITY_HEATMAP: ms.MODALITY_KEYPOINTS,
    MODALITY_POSE_LIVE: ms.MODALITY_RGB,
}


def record_modalities(modality: str) -> tuple[str, ...]:
    """Every record modality a training modality reads: `RECORD_MODALITY[modality]`, and for
    `pose_live` the keypoints' (`RECORD_MODALITY['heatmap']`) as well."""
    if modality == MODALITY_POSE_LIVE:
        return (RECORD_MODALITY[modality], RECORD_MODALITY[MODALITY_HEATMAP])
    return (RECORD_MODALITY[modality],)


# EPAM-Net (`training.epam`): one model on two modalities of a clip, RGB frames and skeleton
# heatmaps of the same frames (`ExperimentConfig.modality` is its RGB stream's, `rgb`).
BACKBONE_EPAM = "epam"
EPAM_MODALITIES = (ms.MODALITY_RGB, MODALITY_HEATMAP)
# EPAM-Net's RGB X-ShiftNet stages (`training.epam.RGB_XSHIFTNET`); its heatmap stream has the
# last three (5, 11, 7: `training.epam.HEATMAP_XSHIFTNET`).
EPAM_DEPTHS = (3, 5, 11, 7)
# ResNet-50 residual cells per stage: R3D50-G (Table 1) and STM.
RESNET50_DEPTHS = (3, 4, 6, 3)
# The `distill.teachers` key of an EPAM-Net teacher (`--teacher epam=DIR`, as `evaluate --model
# epam=DIR`): it reads two modalities, `EPAM_MODALITIES`; every other teacher is keyed by its one
# modality.
TEACHER_EPAM = BACKBONE_EPAM
TEACHER_KEYS = (*MODALITIES, TEACHER_EPAM)


def teacher_modalities(key: str) -> tuple[str, ...]:
    """The modalities a `distill.teachers` key reads: `EPAM_MODALITIES` for `epam`, else
    `(key,)`."""
    return EPAM_MODALITIES if key == TEACHER_EPAM else (key,)


def derive_seed(name: str, modalities: Sequence[str], seed: int) -> int:
    """A run's seed from its config name, model inputs and run seed; stable across processes.

    `int.from_bytes(sha256(f"{name}/{'+'.join(modalities)}/{seed}".encode()).digest()[:4],
    "big") & 0x7FFFFFFF`, an int in [0, 2**31 - 1] (not Python's per-process `hash()`); e.g.
    `derive_seed("tiny_r3d50g_teacher_rgb", ["rgb"], 0)` hashes "tiny_r3d50g_teacher_rgb/rgb/0"
    to 1341559807.

    Args:
      name: the preset (or config) name, e.g. `k600_r3d50g_teacher_pose`.
      modalities: what the model reads, in order (`ExperimentConfig.model_modalities()`), e.g.
        `("pose",)` or EPAM-Net's `("rgb", "heatmap")`.
      seed: the run seed N (`--seed N`), >= 0.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r}: expected an integer >= 0")
    text = f"{name}/{'+'.join(modalities)}/{seed}"
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "big") & 0x7FFFFFFF


def _fail(name: str, value: Any, expected: str) -> None:
    raise ValueError(f"{name}={value!r}: {expected}")


@dataclasses.dataclass
class DataConfig:
    """Where the records are and how clips are sampled and augmented.

    Attributes:
      data_dir: the preprocessing output directory (local or gs://); when set, shards are read
        from `<data_dir>/<split>/*.tfrecord` and `dataset_info.json` is checked.
      train_pattern, eval_pattern: explicit comma-separated glob(s) of TFRecord shards; override
        the `data_dir` layout.
      train_split, eval_split: split folder names under `data_dir`.
      num_classes: classes of the classifier; 0 means "take it from dataset_info.json".
      num_frames: training clip length in frames (25 fps), > 0; with `sampling="segments"` the
        number of segments T.
      crop_size: training crop (height, width) in pixels.
      eval_num_frames, eval_crop_size: the single central evaluation crop.
      sampling: `window` (num_frames consecutive frames: a random window in training, the
        central one in evaluation) or `segments` (TSN: the clip split into num_frames equal
        segments, one frame of each: a random one in training, the centre in evaluation;
        `training.inputs.segment_indices`). Every stream of a clip gets the same frames.
      random_flip: mirror half of the training clips (flow x changes sign).
      brightness_max_delta: training brightness shift drawn from [-d, d], in units of the
        [0, 1] image range; 0 disables. Applied to RGB and pose-rendered frames alike.
      contrast_range: training contrast factor drawn from [lo, hi]; (1, 1) disables.
      heatmap_stride: the `heatmap` modality: crop pixels per heatmap cell, >= 1; the volumes
        are ceil(crop_h / stride) x ceil(crop_w / stride) (4: 56x56 for a 224x224 crop).
      heatmap_sigma: standard deviation of the joints' Gaussians in heatmap cells, > 0 (0.6,
        PoseC3D's).
      heatmap_score_threshold: keypoints scoring below it are left out of the heatmaps, in
        [0, 1] (0.3, the skeleton renderer's default for the pose-rendered frames).
      heatmap_limbs: one channel per limb (17, `training.heatmaps.LIMBS`) instead of per joint.
      heatmap_frame_ratio: k in 1..16. With `heatmap` read, a clip spans k x num_frames stored
        frames: the heatmaps take them all, the other streams every k-th (EPAM-Net's paper
        input, 48 heatmap frames against 16 RGB frames, is k = 3). 1: the same T frames for all.
      render_style: the `pose_live` modality's skeleton style: a variant name of
        `render.style.VARIANTS` (e.g. `rgb_dots_fine_ratio`, a Table 2 row) or a
        `RenderStyle.parse` spec (e.g. `variant=black_bars_fine_ratio,threshold=0.5`); "" is
        the paper's best variant, `rgb_bars_fine_ratio` (`pose_live_style()`).
      shuffle_buffer: clips in the training shuffle buffer (memory: encoded clips), >= 1.
      cycle_length: shards read concurrently, >= 1.
      seed: seed of every random choice (file order, shuffle, window, crop, flip, photometric)
        and of the weight initialization, an int in [0, 2**31 - 1]. The train and distill jobs
        replace it by the run's resolved seed, `derive_seed(name, model_modalities(), seed)`
        of the ExperimentConfig (change it with `ExperimentConfig.seed`, `--seed N`); None
        draws a fresh seed per run (non-deterministic) and is kept.
    """

    data_dir: str = ""
    train_pattern: str = ""
    eval_pattern: str = ""
    train_split: str = "train"
    eval_split: str = "validation"
    num_classes: int = 0
    num_frames: int = 64
    crop_size: tuple[int, int] = (224, 224)
    eval_num_frames: int = 250
    eval_crop_size: tuple[int, int] = (256, 256)
    sampling: str = "window"
    random_flip: bool = True
    brightness_max_delta: float = 0.125
    contrast_range: tuple[float, float] = (0.8, 1.25)
    heatmap_stride: int = 4
    heatmap_sigma: float = 0.6
    heatmap_score_threshold: float = 0.3
    heatmap_limbs: bool = False
    heatmap_frame_ratio: int = 1
    render_style: str = ""
    shuffle_buffer: int = 64
    cycle_length: int = 8
    seed: int | None = 0

    def validate(self) -> None:
        for name in (
            "num_frames",
            "eval_num_frames",
            "shuffle_buffer",
            "cycle_length",
            "heatmap_stride",
        ):
            if getattr(self, name) < 1:
                _fail(name, getattr(self, name), "must be >= 1")
        for name in ("crop_size", "eval_crop_size"):
            size = getattr(self, name)
            if len(size) != 2 or min(size) < 1:
                _fail(name, size, "expected (height, width), both >= 1")
        if self.num_classes < 0:
            _fail("num_classes", self.num_classes, "must be >= 0 (0: from dataset_info.json)")
        if not 0.0 <= self.brightness_max_delta <= 1.0:
            _fail("brightness_max_delta", self.brightness_max_delta, "must be in [0, 1]")
        lo, hi = self.contrast_range
        if not 0.0 < lo <= hi:
            _fail("contrast_range", self.contrast_range, "expected 0 < lo <= hi")
        if self.sampling not in SAMPLINGS:
            _fail("sampling", self.sampling, f"expected one of {list(SAMPLINGS)}")
        if not 0.0 < self.heatmap_sigma < float("inf"):
            _fail("heatmap_sigma", self.heatmap_sigma, "must be > 0 (heatmap cells)")
        if not 0.0 <= self.heatmap_score_threshold <= 1.0:
            _fail("heatmap_score_threshold", self.heatmap_score_threshold, "must be in [0, 1]")
        k = self.heatmap_frame_ratio
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 16:
            _fail("heatmap_frame_ratio", k, "must be an integer in 1..16")
        try:
            self.pose_live_style()
        except ValueError as e:
            _fail("data.render_style", self.render_style, f"not a render style: {e}")

    def pose_live_style(self) -> RenderStyle:
        """The `pose_live` modality's style, from `render_style` (`render.style.style_from_text`);
        raises ValueError naming the bad item."""
        return style_from_text(self.render_style)

    def modality_differences(self, other: DataConfig, modality: str) -> list[str]:
        """The settings shaping `modality` in which `other` differs from this config, as
        `name=mine (trained with theirs)`: `heatmap_differences` for `heatmap`, the resolved
        render style for `pose_live` (a variant name and its spec are the same style), none
        for the records' streams."""
        if modality == MODALITY_HEATMAP:
            return self.heatmap_differences(other)
        if modality == MODALITY_POSE_LIVE and self.pose_live_style() != other.pose_live_style():
            return [f"render_style={self.render_style!r} (trained with {other.render_style!r})"]
        return []

    def heatmap_differences(self, other: DataConfig) -> list[str]:
        """The `heatmap_*` settings in which `other` differs from this config, as
        `name=mine (other: theirs)`: a model that reads heatmaps must be fed the heatmaps it was
        trained on."""
        return [
            f"{name}={getattr(self, name)!r} (trained with {getattr(other, name)!r})"
            for name in HEATMAP_SETTINGS
            if getattr(self, name) != getattr(other, name)
        ]


@dataclasses.dataclass
class ModelConfig:
    """The backbone and classifier head.

    Attributes:
      backbone: `r3d50g` (Table 1 of the paper), `s3dg` (Xie et al. 2018), `stm` (Jiang et
        al., ICCV 2019: ResNet-50 with STM blocks, per-segment scores averaged) or `epam`
        (EPAM-Net, `training.epam`: RGB and skeleton-heatmap streams, pose-guided attention,
        fused logits; reads `rgb` and `heatmap`).
      width_multiplier: scales every channel count (1.0 = the paper), > 0.
      depths: R3D50-G, STM: residual cells (blocks) per stage res2..res5 (conv2..conv5 in STM;
        paper: 3, 4, 6, 3). EPAM-Net: blocks per stage of its RGB stream (paper: 3, 5, 11, 7,
        `EPAM_DEPTHS`); its heatmap stream takes the last three. S3D-G: ignored. () (the
        default): the backbone's paper depths (`stage_depths()`; a job's `config.json` records
        them), so that switching `backbone` does not keep another backbone's depths.
      s3dg_blocks: S3D-G: the Inception blocks kept, in order (paper: all nine).
      gating: feature gating after each residual stage (R3D50-G) / inception branch (S3D-G);
        STM and EPAM-Net have none (ignored).
      dropout_rate: before the classifier, in [0, 1).
      bn_momentum: moving-average momentum of batch normalization, in (0, 1).
    """

    backbone: str = "r3d50g"
    width_multiplier: float = 1.0
    depths: tuple[int, ...] = ()
    s3dg_blocks: tuple[str, ...] = (
        "3b",
        "3c",
        "4b",
        "4c",
        "4d",
        "4e",
        "4f",
        "5b",
        "5c",
    )
    gating: bool = True
    dropout_rate: float = 0.5
    bn_momentum: float = 0.9

    def stage_depths(self) -> tuple[int, ...]:
        """`depths`, or the backbone's paper depths when it is () (EPAM-Net: `EPAM_DEPTHS`;
        R3D50-G and STM: `RESNET50_DEPTHS`)."""
        if self.depths:
            return tuple(self.depths)
        return EPAM_DEPTHS if self.backbone == BACKBONE_EPAM else RESNET50_DEPTHS

    def validate(self) -> None:
        if self.backbone not in BACKBONES:
            _fail("backbone", self.backbone, f"expected one of {list(BACKBONES)}")
        if self.width_multiplier <= 0:
            _fail("width_multiplier", self.width_multiplier, "must be > 0")
        if self.depths and (len(self.depths) != 4 or min(self.depths) < 1):
            _fail("depths", self.depths, "expected 4 stage depths >= 1, or () for the paper's")
        known = ModelConfig().s3dg_blocks
        unknown = [b for b in self.s3dg_blocks if b not in known]
        if unknown or not self.s3dg_blocks:
            _fail("s3dg_blocks", self.s3dg_blocks, f"expected a non-empty subset of {known}")
        if not 0.0 <= self.dropout_rate < 1.0:
            _fail("dropout_rate", self.dropout_rate, "must be in [0, 1)")
        if not 0.0 < self.bn_momentum < 1.0:
            _fail("bn_momentum", self.bn_momentum, "must be in (0, 1)")


@dataclasses.dataclass
class OptimizerConfig:
    """Momentum SGD with linear warm-up and cosine decay (paper, section 4).

    The peak rate is `base_learning_rate * global_batch_size / base_batch_size` (linear
    scaling); it is reached after `warmup_steps` and decays to 0 along a half cosine over the
    following `decay_steps`.

    Attributes:
      base_learning_rate: rate at `base_batch_size` (paper: 1.6 at 2048), > 0.
      base_batch_size: the batch the base rate is quoted for, >= 1.
      momentum: in [0, 1).
      weight_decay: L2 coefficient; the loss gets `weight_decay / 2 * sum(w**2)` over kernels
        (not biases or batch-norm parameters), i.e. a gradient of `weight_decay * w`.
      warmup_steps: linear warm-up from 0, >= 0.
      decay_steps: cosine decay length after the warm-up, >= 1.
    """

    base_learning_rate: float = 1.6
    base_batch_size: int = 2048
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 2000
    decay_steps: int = 20000

    def validate(self) -> None:
        if self.base_learning_rate <= 0:
            _fail("base_learning_rate", self.base_learning_rate, "must be > 0")
        if self.base_batch_size < 1:
            _fail("base_batch_size", self.base_batch_size, "must be >= 1")
        if not 0.0 <= self.momentum < 1.0:
            _fail("momentum", self.momentum, "must be in [0, 1)")
        if self.weight_decay < 0:
            _fail("weight_decay", self.weight_decay, "must be >= 0")
        if self.warmup_steps < 0:
            _fail("warmup_steps", self.warmup_steps, "must be >= 0")
        if self.decay_steps < 1:
            _fail("decay_steps", self.decay_steps, "must be >= 1")

    def peak_learning_rate(self, global_batch_size: int) -> float:
        """The rate after warm-up for this global batch, linear in the batch size."""
        return self.base_learning_rate * global_batch_size / self.base_batch_size


@dataclasses.dataclass
class TrainConfig:
    """The training loop.

    Attributes:
      global_batch_size: clips per step over all replicas; divisible by the replica count.
      train_steps: total optimizer steps; a resumed run stops at the same total.
      steps_per_loop: steps run inside one compiled loop between host round trips (TPU
        efficiency); summaries and checkpoints fall on loop boundaries.
      checkpoint_every: steps between checkpoints (rounded up to a loop boundary).
      max_checkpoints: checkpoints kept.
      summary_every: steps between TensorBoard scalars (rounded up to a loop boundary).
      eval_batch_size: global clips per evaluation step, divisible by the replicas; 0 (the
        default): as many as fit the device's memory (`training.memory.eval_batch`).
      eval_batch_per_replica: clips per replica and evaluation step (the global batch is this
        times the replicas); 0: `eval_batch_size` decides. Set one or the other.
      eval_every: steps between evaluations during training; 0 evaluates only at the end.
      eval_at_end: evaluate after the last step when an eval split is given.
      max_eval_clips: stop evaluating after this many clips; 0 evaluates every clip.
      init_2d_checkpoint: ImageNet-pretrained 2D weights (Inception-v1 for S3D-G, ResNet50
        for R3D50-G and STM) inflated into the backbone when a run starts from scratch (not on
        resume, not in fine-tuning); `training.inflate`. Empty: no 2D initialization.
      init_2d_format: the file's format, `auto` (by its name), `tf_checkpoint`, `keras`
        (keras.applications.ResNet50 weights) or `npz` (`INIT_2D_FORMATS`).
    """

    global_batch_size: int = 2048
    train_steps: int = 22000
    steps_per_loop: int = 100
    checkpoint_every: int = 1000
    max_checkpoints: int = 3
    summary_every: int = 100
    eval_batch_size: int = 0
    eval_batch_per_replica: int = 0
    eval_every: int = 0
    eval_at_end: bool = True
    max_eval_clips: int = 0
    init_2d_checkpoint: str = ""
    init_2d_format: str = "auto"

    def validate(self) -> None:
        for name in (
            "global_batch_size",
            "train_steps",
            "steps_per_loop",
            "checkpoint_every",
            "max_checkpoints",
            "summary_every",
        ):
            if getattr(self, name) < 1:
                _fail(name, getattr(self, name), "must be >= 1")
        if self.init_2d_format not in INIT_2D_FORMATS:
            _fail("train.init_2d_format", self.init_2d_format, f"expected {list(INIT_2D_FORMATS)}")
        for name in ("eval_every", "max_eval_clips", "eval_batch_size", "eval_batch_per_replica"):
            if getattr(self, name) < 0:
                _fail(name, getattr(self, name), "must be >= 0")
        if self.eval_batch_size and self.eval_batch_per_replica:
            _fail(
                "train.eval_batch_per_replica",
                self.eval_batch_per_replica,
                f"set it or train.eval_batch_size (={self.eval_batch_size}), not both",
            )


@dataclasses.dataclass
class DistillConfig:
    """Distillation of the student from frozen teachers (paper, eq. 1).

    Attributes:
      teachers: key -> teacher model directory (its `config.json` and checkpoints). A one-stream
        teacher is keyed by its modality (`rgb`, `flow`, `pose`, `heatmap`, `pose_live`), an
        EPAM-Net teacher (`model.backbone: epam`, reads `rgb` + `heatmap`; its fused logits
        are the teacher logits) by `epam` (`TEACHER_KEYS`). The keys say which teachers take
        part (PERF-Net: flow and pose; D3D: flow only); the directories are filled in at run
        time (`--teacher flow=DIR`, `--teacher epam=DIR`).
      loss: `sl` (separate loss: sum over teachers of MSE(teacher, student), the paper's) or
        `ul` (unified loss: MSE(sum of teacher logits, student), the ablation).
      distill_weight: factor on the distillation term (paper: 1), >= 0.
    """

    teachers: dict[str, str] = dataclasses.field(default_factory=dict)
    loss: str = "sl"
    distill_weight: float = 1.0

    def validate(self) -> None:
        if not self.teachers:
            _fail("distill.teachers", self.teachers, "a student needs at least one teacher")
        for key, path in self.teachers.items():
            if key not in TEACHER_KEYS:
                _fail(
                    "distill.teachers",
                    key,
                    f"expected keys in {TEACHER_KEYS} (a modality, or {TEACHER_EPAM!r} for an "
                    "EPAM-Net teacher)",
                )
            if not path:
                _fail(
                    f"distill.teachers[{key!r}]",
                    path,
                    f"set the teacher's model directory (--teacher {key}=DIR)",
                )
        if self.loss not in DISTILL_LOSSES:
            _fail("distill.loss", self.loss, f"expected one of {list(DISTILL_LOSSES)}")
        if self.distill_weight < 0:
            _fail("distill.distill_weight", self.distill_weight, "must be >= 0")


@dataclasses.dataclass
class RuntimeConfig:
    """Where and how the job runs.

    Attributes:
      tpu: TPU name or address (`local` on a TPU VM); set -> TPUStrategy.
      distribution: `auto` (TPU if named, MirroredStrategy on GPUs, else default), `default`,
        `mirrored` (all GPUs, or all logical CPUs when there is no GPU), `tpu`.
      precision: `auto` (mixed_bfloat16 on TPU, float32 elsewhere) or a Keras dtype policy.
      device_memory_gib: memory of one replica's device in GiB, which the evaluation batch is
        fitted to; 0: found out (`training.memory.device_memory`).
    """

    tpu: str = ""
    distribution: str = "auto"
    precision: str = "auto"
    device_memory_gib: float = 0.0

    def validate(self) -> None:
        if self.distribution not in DISTRIBUTIONS:
            _fail("runtime.distribution", self.distribution, f"expected {list(DISTRIBUTIONS)}")
        if self.distribution == "tpu" and not self.tpu:
            _fail("runtime.tpu", self.tpu, "distribution='tpu' needs a TPU name")
        if self.precision not in PRECISIONS:
            _fail("runtime.precision", self.precision, f"expected one of {list(PRECISIONS)}")
        m = self.device_memory_gib
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 <= m < 1e6:
            _fail("runtime.device_memory_gib", m, "must be a number of GiB >= 0 (0: found out)")


@dataclasses.dataclass
class ExperimentConfig:
    """One job.

    Attributes:
      name: the preset or a free label.
      task: `teacher` (one modality, cross-entropy; EPAM-Net: rgb + heatmap, the sum of its two
        streams' cross-entropies), `student` (RGB, distilled from teachers; EPAM-Net: its
        two cross-entropies plus the distillation term on its fused logits),
        `finetune` (cross-entropy from `init_checkpoint`'s backbone, new classifier).
      modality: the model's input (`rgb`, `flow`, `pose`, `heatmap`: MODALITIES); a student's
        is `rgb`, and so is EPAM-Net's (`model.backbone: epam`), which also reads `heatmap`
        (`model_modalities()`).
      model_dir: checkpoints, summaries and the resolved config (local or gs://).
      init_checkpoint: fine-tuning: a model directory or checkpoint path whose backbone
        initializes this model (the classifier is new).
      seed: the run seed N (`--seed N`), an int >= 0; with `name` and the model's inputs it
        gives `data.seed` (`resolved_seed()`), so runs of one preset with different N, and
        models of different modalities with the same N, start from different weights.
    """

    name: str = "custom"
    task: str = "teacher"
    modality: str = ms.MODALITY_RGB
    model_dir: str = ""
    init_checkpoint: str = ""
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    distill: DistillConfig = dataclasses.field(default_factory=DistillConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)
    seed: int = 0

    def validate(self) -> ExperimentConfig:
        """Checks every field; raises ValueError naming the first bad one. Returns self."""
        if self.seed < 0:
            _fail("seed", self.seed, "must be >= 0")
        if self.task not in TASKS:
            _fail("task", self.task, f"expected one of {list(TASKS)}")
        if self.modality not in MODALITIES:
            _fail("modality", self.modality, f"expected one of {list(MODALITIES)}")
        self.data.validate()
        self.model.validate()
        self.optimizer.validate()
        self.train.validate()
        self.runtime.validate()
        if self.model.backbone == BACKBONE_EPAM:
            if self.modality != ms.MODALITY_RGB:
                _fail(
                    "modality",
                    self.modality,
                    f"model.backbone={BACKBONE_EPAM!r} reads {list(EPAM_MODALITIES)}: "
                    f"set modality={ms.MODALITY_RGB!r}",
                )
        if self.task == "student":
            self.distill.validate()
        if self.task == "finetune" and not self.init_checkpoint:
            _fail("init_checkpoint", self.init_checkpoint, "fine-tuning needs a checkpoint")
        if self.train.init_2d_checkpoint and (
            self.task == "finetune" or self.model.backbone == BACKBONE_EPAM
        ):
            _fail(
                "train.init_2d_checkpoint",
                self.train.init_2d_checkpoint,
                "2D initialization is for R3D50-G, S3D-G and STM runs from scratch (fine-tuning "
                "starts from init_checkpoint; EPAM-Net has no 2D mapping)",
            )
        return self

    def model_modalities(self) -> tuple[str, ...]:
        """The streams the model reads: `(modality,)`, or EPAM-Net's `('rgb', 'heatmap')`."""
        if self.model.backbone == BACKBONE_EPAM:
            return EPAM_MODALITIES
        return (self.modality,)

    def resolved_seed(self) -> int | None:
        """The seed of this run's input pipeline and weight initialization:
        `derive_seed(name, model_modalities(), seed)`, or None if `data.seed` is None (a fresh
        seed per run)."""
        if self.data.seed is None:
            return None
        return derive_seed(self.name, self.model_modalities(), self.seed)

    def input_modalities(self) -> tuple[str, ...]:
        """The streams the training input must decode: the model's, plus every teacher's (an
        EPAM-Net teacher, key `epam`: `rgb` and `heatmap`), in `MODALITIES` order."""
        mods = list(self.model_modalities())
        if self.task == "student":
            for key in self.distill.teachers:
                mods += [m for m in teacher_modalities(key) if m not in mods]
        return tuple(m for m in MODALITIES if m in mods)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ExperimentConfig:
        return _from_dict(cls, values, "")

    @classmethod
    def from_json(cls, text: str) -> ExperimentConfig:
        return cls.from_dict(json.loads(text))


def _coerce(tp, value, name: str):
    """Converts a JSON value to the annotated type `tp` (tuples from lists, ints to floats)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            _fail(name, value, f"expected a mapping for {tp.__name__}")
        return _from_dict(tp, value, name + ".")
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, name)
    if origin is tuple:
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            _fail(name, value, "expected a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, name) for v in value)
        if len(value) != len(args):
            _fail(name, value, f"expected {len(args)} values")
        return tuple(_coerce(a, v, name) for a, v in zip(args, value))
    if origin is dict:
        if not isinstance(value, Mapping):
            _fail(name, value, "expected a mapping")
        return {str(k): _coerce(args[1], v, name) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        if not isinstance(value, bool):
            _fail(name, value, "expected true or false")
        return value
    if tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            _fail(name, value, f"expected {'an integer' if tp is int else 'a number'}")
        try:
            converted = tp(value)
        except ValueError:
            _fail(name, value, f"expected {'an integer' if tp is int else 'a number'}")
        if tp is int and isinstance(value, float) and converted != value:
            _fail(name, value, "expected an integer")
        return converted
    if tp is str:
        if not isinstance(value, str):
            _fail(name, value, "expected a string")
        return value
    return value


def _from_dict(cls, values: Mapping[str, Any], prefix: str):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        _fail(prefix + unknown[0], values[unknown[0]], f"unknown field; known: {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, prefix + k) for k, v in values.items()}
    return cls(**kwargs)


def apply_overrides(config: ExperimentConfig, overrides: Sequence[str]) -> ExperimentConfig:
    """Returns a copy with `dotted.key=value` overrides applied (value parsed as JSON, or text).

    Example: `train.train_steps=100`, `data.crop_size=[112,112]`, `distill.loss=ul`.
    """
    values = config.to_dict()
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            _fail("override", item, "expected KEY=VALUE, e.g. train.train_steps=100")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        node = values
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                _fail("override", item, f"{part!r} is not a config section")
            node = node[part]
        if parts[-1] not in node:
            _fail("override", item, f"unknown key {key!r}")
        node[parts[-1]] = value
    return ExperimentConfig.from_dict(values)


# ---------------------------------------------------------------------------------------------
# Presets.
# ---------------------------------------------------------------------------------------------
TINY_R3D50G = ModelConfig(
    backbone="r3d50g", width_multiplier=1 / 16, depths=(1, 1, 1, 1), dropout_rate=0.0
)
TINY_S3DG = ModelConfig(
    backbone="s3dg", width_multiplier=1 / 16, s3dg_blocks=("3b", "4b", "5b"), dropout_rate=0.0
)
TINY_STM = ModelConfig(
    backbone="stm", width_multiplier=1 / 16, depths=(1, 1, 1, 1), dropout_rate=0.0
)
# EPAM-Net at 1/4 width (6 base channels), one block per stage of both streams.
TINY_EPAM = ModelConfig(
    backbone=BACKBONE_EPAM, width_multiplier=0.25, depths=(1, 1, 1, 1), dropout_rate=0.0
)
# STM presets: TSN-style clips of 8 or 16 segments (`k600_stm8_*`, `k600_stm16_*`, ...).
STM_SEGMENTS = (8, 16)


def _kinetics600(backbone: str, task: str, modality: str, teachers=(), loss="sl"):
    cfg = ExperimentConfig(task=task, modality=modality)
    cfg.data = DataConfig(
        num_classes=600,
        num_frames=64,
        crop_size=(224, 224),
        eval_num_frames=250,
        eval_crop_size=(256, 256),
        shuffle_buffer=64,
    )
    cfg.model = ModelConfig(backbone=backbone)
    if backbone == "r3d50g":
        # 2048 clips on 256 TPU v3 cores, 8 per core, bfloat16 (paper, section 4).
        cfg.train = TrainConfig(global_batch_size=2048, train_steps=22000)
    else:
        # 51 GPUs x 6 clips (paper, section 4); the rate scales linearly from 1.6 at 2048.
        cfg.train = TrainConfig(global_batch_size=306, train_steps=22000)
        cfg.model.dropout_rate = 0.5
    if task == "student":
        cfg.distill = DistillConfig(teachers={t: "" for t in teachers}, loss=loss)
    return cfg


def _finetune(dataset: str, backbone: str):
    num_classes, train_clips, eval_frames = {
        "ucf101": (101, 9537, 128),
        "hmdb51": (51, 3570, 64),
    }[dataset]
    cfg = ExperimentConfig(task="finetune", modality=ms.MODALITY_RGB)
    cfg.data = DataConfig(
        num_classes=num_classes,
        num_frames=64,
        crop_size=(224, 298),
        eval_num_frames=eval_frames,
        eval_crop_size=(224, 298),
        train_split="train",
        eval_split="test",
    )
    cfg.model = ModelConfig(backbone=backbone)
    batch = 64
    steps = 30 * train_clips // batch  # 30 epochs (paper, section 4.4.1)
    cfg.train = TrainConfig(
        global_batch_size=batch,
        train_steps=steps,
        steps_per_loop=50,
        checkpoint_every=500,
        summary_every=50,
    )
    cfg.optimizer = OptimizerConfig(warmup_steps=steps // 20, decay_steps=steps - steps // 20)
    return cfg


def _tiny(backbone: str, task: str, modality: str, teachers=(), loss="sl"):
    """CPU-sized: 8 frames of 32x32 crops, 1/16 width, one cell per stage; trains in seconds."""
    cfg = ExperimentConfig(task=task, modality=modality)
    cfg.data = DataConfig(
        num_classes=0,
        num_frames=8,
        crop_size=(32, 32),
        eval_num_frames=8,
        eval_crop_size=(32, 32),
        shuffle_buffer=16,
        cycle_length=2,
    )
    tiny_models = {"r3d50g": TINY_R3D50G, BACKBONE_EPAM: TINY_EPAM}
    cfg.model = dataclasses.replace(tiny_models.get(backbone, TINY_S3DG))
    cfg.optimizer = OptimizerConfig(
        base_learning_rate=0.05, base_batch_size=8, warmup_steps=2, decay_steps=100
    )
    cfg.train = TrainConfig(
        global_batch_size=8,
        train_steps=20,
        steps_per_loop=1,
        checkpoint_every=10,
        summary_every=1,
        eval_batch_size=4,
    )
    if task == "student":
        cfg.distill = DistillConfig(teachers={t: "" for t in teachers}, loss=loss)
    if task == "finetune":
        cfg.init_checkpoint = ""
    return cfg


def _stm(segments: int, prefix: str, *job):
    """An STM preset: the job of `_kinetics600` / `_tiny` (prefix `k600` / `tiny`, `job` =
    task, modality[, teachers, loss]) or `_finetune` (prefix `ucf101` / `hmdb51`) on TSN-style
    clips of `segments` frames, one per segment, in training and evaluation (crops as there)."""
    if prefix == "k600":
        cfg = _kinetics600("stm", *job)
        # 1024 clips (8192 or 16384 frames) per step, e.g. 8 clips on each of 128 TPU v3 cores.
        cfg.train = TrainConfig(global_batch_size=1024, train_steps=22000)
    elif prefix == "tiny":
        cfg = _tiny("stm", *job)
        cfg.model = dataclasses.replace(TINY_STM)
    else:
        cfg = _finetune(prefix, "stm")
    cfg.data.sampling = "segments"
    cfg.data.num_frames = cfg.data.eval_num_frames = segments
    return cfg


def _stm_presets() -> dict[str, Callable[[], ExperimentConfig]]:
    """`{k600,tiny}_stm{8,16}_{teacher_<modality>,student,student_ul,d3d}`,
    `{ucf101,hmdb51,tiny}_stm{8,16}_finetune`."""
    presets: dict[str, Callable[[], ExperimentConfig]] = {}
    students = (
        ("student", ("flow", "pose"), "sl"),
        ("student_ul", ("flow", "pose"), "ul"),
        ("d3d", ("flow",), "sl"),
    )
    for segments in STM_SEGMENTS:
        tag = f"stm{segments}"
        for prefix in ("k600", "tiny"):
            for modality in MODALITIES:
                presets[f"{prefix}_{tag}_teacher_{modality}"] = (
                    lambda s=segments, p=prefix, m=modality: _stm(s, p, "teacher", m)
                )
            for job, teachers, loss in students:
                job_args = ("student", "rgb", teachers, loss)
                presets[f"{prefix}_{tag}_{job}"] = lambda s=segments, p=prefix, a=job_args: _stm(
                    s, p, *a
                )
        for dataset in ("ucf101", "hmdb51"):
            presets[f"{dataset}_{tag}_finetune"] = lambda s=segments, d=dataset: _stm(s, d)
        presets[f"tiny_{tag}_finetune"] = lambda s=segments: _stm(s, "tiny", "finetune", "rgb")
    return presets


def _epam(prefix: str, task: str = "teacher", teachers: Sequence[str] = ()) -> ExperimentConfig:
    """An EPAM-Net preset on RGB + heatmap clips (`modality` rgb, `model.backbone` epam):
    `k600` (16 frames of 224x224, heatmaps 56x56 at `data.heatmap_stride` 4; evaluated on
    the central 250x256x256 as the other Kinetics-600 presets), `tiny` (the CPU size of
    `_tiny`), or fine-tuning (`ucf101`, `hmdb51`, `tiny_finetune`: `_finetune`'s crops, 16
    training frames). Heatmaps cover the RGB frames one to one (T' = T). `task` `student`
    (k600, tiny): EPAM-Net distilled from `teachers` (SL) on the same clips."""
    if prefix == "k600":
        cfg = _kinetics600(BACKBONE_EPAM, task, ms.MODALITY_RGB, teachers)
        # 1024 clips of 16 frames per step, as the 16-segment STM presets.
        cfg.train = TrainConfig(global_batch_size=1024, train_steps=22000)
    elif prefix == "tiny":
        return _tiny(BACKBONE_EPAM, task, ms.MODALITY_RGB, teachers)
    elif prefix == "tiny_finetune":
        return _tiny(BACKBONE_EPAM, "finetune", ms.MODALITY_RGB)
    else:
        cfg = _finetune(prefix, BACKBONE_EPAM)
    cfg.model.depths = EPAM_DEPTHS
    cfg.data.num_frames = 16
    return cfg


def _epam_paper(prefix: str) -> ExperimentConfig:
    """EPAM-Net on the paper's input: T RGB frames and 3T heatmap frames sampled uniformly over
    the whole clip (TSN segments, `data.heatmap_frame_ratio` 3): k600 16 + 48 frames, in
    training and in evaluation (the segments' centres); tiny 4 + 12."""
    cfg = _epam(prefix)
    cfg.data.sampling = "segments"
    cfg.data.heatmap_frame_ratio = 3
    frames = 16 if prefix == "k600" else 4
    cfg.data.num_frames = cfg.data.eval_num_frames = frames
    return cfg


def _build_presets() -> dict[str, Callable[[], ExperimentConfig]]:
    presets: dict[str, Callable[[], ExperimentConfig]] = {}
    for backbone in ("r3d50g", "s3dg"):  # clips of consecutive frames; STM: _stm_presets
        for prefix, factory in (("k600", _kinetics600), ("tiny", _tiny)):
            for modality in MODALITIES:
                presets[f"{prefix}_{backbone}_teacher_{modality}"] = (
                    lambda f=factory, b=backbone, m=modality: f(b, "teacher", m)
                )
            presets[f"{prefix}_{backbone}_student"] = lambda f=factory, b=backbone: f(
                b, "student", "rgb", ("flow", "pose"), "sl"
            )
            presets[f"{prefix}_{backbone}_student_ul"] = lambda f=factory, b=backbone: f(
                b, "student", "rgb", ("flow", "pose"), "ul"
            )
            presets[f"{prefix}_{backbone}_d3d"] = lambda f=factory, b=backbone: f(
                b, "student", "rgb", ("flow",), "sl"
            )
        for dataset in ("ucf101", "hmdb51"):
            presets[f"{dataset}_{backbone}_finetune"] = lambda d=dataset, b=backbone: _finetune(
                d, b
            )
        presets[f"tiny_{backbone}_finetune"] = lambda b=backbone: _tiny(b, "finetune", "rgb")
    presets.update(_stm_presets())
    presets["k600_epam"] = lambda: _epam("k600")
    presets["tiny_epam"] = lambda: _epam("tiny")
    # PERF-Net x EPAM-Net: EPAM-Net distilled from the flow teacher (RGB + skeleton at test
    # time, flow knowledge from training).
    for prefix in ("k600", "tiny"):
        presets[f"{prefix}_epam_student"] = lambda p=prefix: _epam(p, "student", ("flow",))
    for dataset in ("ucf101", "hmdb51"):
        presets[f"{dataset}_epam_finetune"] = lambda d=dataset: _epam(d)
    presets["tiny_epam_finetune"] = lambda: _epam("tiny_finetune")
    presets["k600_epam_paper"] = lambda: _epam_paper("k600")
    presets["tiny_epam_paper"] = lambda: _epam_paper("tiny")
    return presets


_PRESETS = _build_presets()


def preset_names() -> list[str]:
    return sorted(_PRESETS)


def get_preset(name: str) -> ExperimentConfig:
    """A fresh config for preset `name` (see `preset_names()`); not yet validated."""
    if name not in _PRESETS:
        _fail("preset", name, f"expected one of {preset_names()}")
    cfg = _PRESETS[name]()
    cfg.name = name
    return cfg
