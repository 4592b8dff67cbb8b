"""The training jobs: teachers (one per modality), the distilled student, fine-tuning.

One loop serves all three tasks (`ExperimentConfig.task`):

- `teacher`: a classifier on one modality, softmax cross-entropy; or EPAM-Net
  (`model.backbone: epam`) on RGB and heatmaps of the same clips, the sum of its two streams'
  cross-entropies (`training.epam.epam_loss`), evaluated on its fused logits.
- `student`: an RGB classifier trained with eq. (1) of the paper against frozen teachers,
  each loaded from its model directory (`config.json` + latest checkpoint) and run in
  inference mode on its modality of the *same* clips (one input pipeline decodes every stream
  with one window, crop and flip). A teacher is keyed by its modality, or `epam` for an
  EPAM-Net teacher, which reads `rgb` and `heatmap` and gives its `fused` logits. An EPAM-Net
  student (`model.backbone: epam`) is trained with `epam_loss` (CE of both streams) plus the
  distillation term on its `fused` logits.
- `finetune`: cross-entropy only, the backbone initialized from `init_checkpoint`, a new
  classifier head.

Model directory layout (local or gs://):

    MODEL_DIR/config.json        the resolved ExperimentConfig (what `load_config` reads)
    MODEL_DIR/run.json           derived values: replicas, per-replica batch, peak rate, ...
    MODEL_DIR/ckpt-<step>.*      tf.train.Checkpoint(model, optimizer); the last few kept
    MODEL_DIR/train/, eval/      TensorBoard event files
    MODEL_DIR/eval_<step>.json   evaluation reports

Preemption: checkpoints are written every `train.checkpoint_every` steps and on SIGTERM; the
same command re-run restores the latest checkpoint (model, optimizer state and step) and
continues to `train.train_steps`. The input pipeline is re-seeded with the restored step, so a
resumed run draws new clips rather than replaying the first ones (the shuffle buffer is not
checkpointed).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import posixpath
import signal
import threading
import time
from collections.abc import Callable

import keras
import tensorflow as tf

from training import distribute, epam, inflate, inputs, losses, memory
from training.config import (
    BACKBONE_EPAM,
    CONFIG_FILENAME,
    EPAM_MODALITIES,
    MODALITY_HEATMAP,
    MODALITY_POSE_LIVE,
    TEACHER_EPAM,
    ExperimentConfig,
    ModelConfig,
    teacher_modalities,
)
from training.evaluate import FusionReport, evaluate_models
from training.models import VideoClassifier, build_classifier
from training.schedule import build_optimizer, build_schedule

log = logging.getLogger(__name__)

RUN_INFO_FILENAME = "run.json"
CHECKPOINT_NAME = "ckpt"


@dataclasses.dataclass
class TrainResult:
    """What a run did.

    Attributes:
      start_step: the optimizer step restored from a checkpoint (0 for a fresh run).
      final_step: the step reached.
      history: (step, metrics) after each loop; metrics hold `loss` (task loss without the L2
        term), `ce`, `distill`, `l2`, `learning_rate`, `clips_per_second`.
      eval: the last evaluation, if any.
      preempted: the run stopped early on request (SIGTERM) after writing a checkpoint.
      checkpoint: path of the last checkpoint written or restored.
    """

    model_dir: str
    start_step: int
    final_step: int
    history: list[tuple[int, dict[str, float]]]
    eval: FusionReport | None
    preempted: bool
    checkpoint: str | None


def save_json(path: str, value) -> None:
    tf.io.gfile.makedirs(posixpath.dirname(path) or ".")
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(value if isinstance(value, str) else json.dumps(value, indent=2, sort_keys=True))


def load_config(model_dir: str) -> ExperimentConfig:
    """The `config.json` of a model directory; raises ValueError if there is none."""
    path = posixpath.join(model_dir, CONFIG_FILENAME)
    if not tf.io.gfile.exists(path):
        raise ValueError(f"model_dir={model_dir!r}: has no {CONFIG_FILENAME}")
    with tf.io.gfile.GFile(path) as f:
        return ExperimentConfig.from_json(f.read())


def resolve_checkpoint(path: str) -> str:
    """A checkpoint prefix: `path` itself, or the latest checkpoint in directory `path`."""
    if tf.io.gfile.exists(path + ".index"):
        return path
    latest = tf.train.latest_checkpoint(path) if tf.io.gfile.isdir(path) else None
    if not latest:
        raise ValueError(f"checkpoint={path!r}: no checkpoint there")
    return latest


def resolve_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """Validates `cfg`, fills in the backbone's paper depths where `model.depths` is () and
    `data.num_classes` from dataset_info.json if it is 0."""
    cfg = ExperimentConfig.from_dict(cfg.to_dict())
    cfg.validate()
    cfg.model.depths = cfg.model.stage_depths()  # recorded in config.json as built
    cfg.data.num_classes = inputs.resolve_num_classes(cfg.data, cfg.input_modalities())
    return cfg


def epam_streams(model: ModelConfig) -> tuple[epam.XShiftNetSpec, epam.XShiftNetSpec]:
    """EPAM-Net's RGB and heatmap X-ShiftNet streams for `model` (`model.backbone: epam`): the
    paper's, with `model.depths` blocks per RGB stage, `model.depths[1:]` per heatmap stage,
    and the base width scaled by `model.width_multiplier`."""
    depths = model.stage_depths()
    rgb = dataclasses.replace(epam.RGB_XSHIFTNET, depths=depths)
    heatmap = dataclasses.replace(epam.HEATMAP_XSHIFTNET, depths=depths[1:])
    return rgb.scaled(model.width_multiplier), heatmap.scaled(model.width_multiplier)


def build_model(
    cfg: ExperimentConfig, num_classes: int, dtype=None
) -> VideoClassifier | epam.EPAMNet:
    """The classifier for `cfg.model` on `cfg.modality`'s channels, or EPAM-Net (on rgb and
    heatmap clips) for `model.backbone: epam`."""
    if cfg.model.backbone == BACKBONE_EPAM:
        rgb, heatmap = epam_streams(cfg.model)
        return epam.EPAMNet(
            num_classes,
            rgb,
            heatmap,
            dropout_rate=cfg.model.dropout_rate,
            bn_momentum=cfg.model.bn_momentum,
            dtype=dtype,
        )
    return build_classifier(cfg.model, num_classes, inputs.MODEL_CHANNELS[cfg.modality], dtype)


def model_inputs(cfg: ExperimentConfig) -> str | tuple[str, ...]:
    """What the model of `cfg` reads, as `evaluate_models` takes it: the modality of a
    one-stream classifier, or EPAM-Net's tuple `('rgb', 'heatmap')` (a dict of both in, a dict
    of logits out)."""
    if cfg.model.backbone == BACKBONE_EPAM:
        return cfg.model_modalities()
    return cfg.modality


def load_model(
    model_dir: str, dtype=None, checkpoint: str = ""
) -> tuple[VideoClassifier | epam.EPAMNet, ExperimentConfig]:
    """Rebuilds the model of a model directory and restores its weights (model only).

    Args:
      model_dir: a directory with `config.json` and checkpoints.
      dtype: the Keras dtype policy to build with (the current job's).
      checkpoint: a specific checkpoint prefix; default the directory's latest.

    Returns:
      (model, its config). Raises ValueError if some model weight is missing from the
      checkpoint (an architecture mismatch).
    """
    cfg = load_config(model_dir)
    model = build_model(cfg, cfg.data.num_classes, dtype)
    path = resolve_checkpoint(checkpoint or model_dir)
    status = tf.train.Checkpoint(model=model).read(path)
    status.expect_partial()
    try:
        status.assert_existing_objects_matched()
    except AssertionError as e:
        raise ValueError(f"checkpoint={path!r}: does not match its config.json: {e}") from e
    return model, cfg


def backbone_parts(model: VideoClassifier | epam.EPAMNet) -> dict[str, keras.Model]:
    """The parts of `model` that fine-tuning restores, by their checkpoint names (everything but
    the classifier heads): `backbone`, or EPAM-Net's `rgb_backbone`, `heatmap_backbone` and
    `attention`."""
    if isinstance(model, epam.EPAMNet):
        return {
            "rgb_backbone": model.rgb_backbone,
            "heatmap_backbone": model.heatmap_backbone,
            "attention": model.attention,
        }
    return {"backbone": model.backbone}


def restore_backbone(
    model: VideoClassifier | epam.EPAMNet, path: str, model_config: ModelConfig | None = None
) -> str:
    """Loads the backbone weights of checkpoint `path` (a model dir or prefix) into `model`.

    The classifier head is left as it is (fine-tuning to a new label set); EPAM-Net: both
    streams and the attention are restored, both heads left. `model_config`: `model`'s config
    (default `model.model_config`, which a `VideoClassifier` carries). Raises ValueError if the
    source holds another backbone or some backbone weight is missing. Returns the prefix.
    """
    if tf.io.gfile.exists(posixpath.join(path, CONFIG_FILENAME)):
        src = load_config(path).model
        dst = model_config if model_config is not None else model.model_config
        fields = ("backbone", "width_multiplier", "depths", "s3dg_blocks", "gating")
        for field in fields:
            if getattr(src, field) != getattr(dst, field):
                raise ValueError(
                    f"init_checkpoint={path!r}: its model.{field}={getattr(src, field)!r}, "
                    f"this model's is {getattr(dst, field)!r}"
                )
    prefix = resolve_checkpoint(path)
    parts = backbone_parts(model)
    status = tf.train.Checkpoint(model=tf.train.Checkpoint(**parts)).read(prefix)
    status.expect_partial()
    try:
        status.assert_existing_objects_matched()
    except AssertionError as e:
        raise ValueError(f"init_checkpoint={path!r}: backbone does not match: {e}") from e
    log.info("backbone initialized from %s", prefix)
    return prefix


class Trainer:
    """Runs one `ExperimentConfig` (teacher, student or fine-tuning) to `train.train_steps`.

    Args:
      cfg: the experiment; `model_dir` and a train split are required.
      strategy: a tf.distribute strategy; default from `cfg.runtime`.
      on_loop_end: called as `fn(step, metrics)` after every loop (tests use it to simulate a
        preemption via `request_stop`).
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        strategy: tf.distribute.Strategy | None = None,
        on_loop_end: Callable[[int, dict], None] | None = None,
    ):
        if not cfg.model_dir:
            raise ValueError(f"model_dir={cfg.model_dir!r}: set where checkpoints go")
        self.cfg = resolve_config(cfg)
        self.cfg.data.seed = self.cfg.resolved_seed()
        if not inputs.split_pattern(self.cfg.data, "train"):
            raise ValueError("data.data_dir='' and data.train_pattern='': name the training shards")
        self.strategy = strategy or distribute.get_strategy(self.cfg.runtime)
        self.on_loop_end = on_loop_end
        self._stop = threading.Event()
        self.model: VideoClassifier | epam.EPAMNet | None = None  # set by run()
        # set by run(): the frozen teachers, by their `distill.teachers` key
        self.teachers: dict[str, VideoClassifier | epam.EPAMNet] = {}
        self.per_replica_batch = distribute.per_replica_batch(
            self.cfg.train.global_batch_size, self.strategy
        )
        self.dtype = distribute.precision_policy(self.cfg.runtime, self.strategy)

    def request_stop(self) -> None:
        """Ends the run after the current loop, with a checkpoint (the SIGTERM handler)."""
        self._stop.set()

    # -- set-up ---------------------------------------------------------------------------
    def _check_existing_config(self) -> None:
        path = posixpath.join(self.cfg.model_dir, CONFIG_FILENAME)
        if not tf.io.gfile.exists(path):
            return
        old = load_config(self.cfg.model_dir)
        for field in ("task", "modality"):
            if getattr(old, field) != getattr(self.cfg, field):
                raise ValueError(
                    f"{field}={getattr(self.cfg, field)!r}: model_dir {self.cfg.model_dir!r} "
                    f"holds a run with {field}={getattr(old, field)!r}"
                )
        if old.model != self.cfg.model or old.data.num_classes != self.cfg.data.num_classes:
            raise ValueError(
                f"model={self.cfg.model}: model_dir {self.cfg.model_dir!r} holds a different "
                f"model ({old.model}, {old.data.num_classes} classes); use a new model_dir"
            )
        if old.seed != self.cfg.seed:
            raise ValueError(
                f"seed={self.cfg.seed!r}: model_dir {self.cfg.model_dir!r} holds a run with "
                f"seed={old.seed!r} (data.seed={old.data.seed!r}); resume it with --seed "
                f"{old.seed} or use a new model_dir"
            )
        # A resumed run keeps the seed recorded when it started.
        self.cfg.data.seed = old.data.seed

    def _write_config(self) -> None:
        cfg = self.cfg
        save_json(posixpath.join(cfg.model_dir, CONFIG_FILENAME), cfg.to_json())
        save_json(
            posixpath.join(cfg.model_dir, RUN_INFO_FILENAME),
            {
                "strategy": type(self.strategy).__name__,
                "replicas": distribute.replicas(self.strategy),
                "per_replica_batch": self.per_replica_batch,
                "global_batch_size": cfg.train.global_batch_size,
                "peak_learning_rate": cfg.optimizer.peak_learning_rate(cfg.train.global_batch_size),
                "dtype_policy": self.dtype,
                "input_modalities": list(cfg.input_modalities()),
                "tensorflow": tf.__version__,
            },
        )

    def _build_model(self) -> VideoClassifier | epam.EPAMNet:
        """The model of `cfg`, its weights initialized from `cfg.data.seed` (the run's resolved
        seed: Python, numpy and TensorFlow are seeded with it first, so one seed gives the same
        initial weights and dropout masks); a fresh draw if it is None."""
        if self.cfg.data.seed is not None:
            keras.utils.set_random_seed(self.cfg.data.seed)
        with self.strategy.scope():
            return build_model(self.cfg, self.cfg.data.num_classes, self.dtype)

    def initial_weights(self) -> list:
        """numpy arrays of the freshly initialized model's weights (before any checkpoint is
        restored or step taken), in `model.weights` order."""
        return [w.numpy() for w in self._build_model().weights]

    def _init_from_2d(self, model: VideoClassifier) -> inflate.InflationReport:
        """Inflates `train.init_2d_checkpoint` into the fresh model's backbone (a run from
        scratch, before the first step; outside the strategy scope, so that a Keras ResNet50
        read for its weights is a plain model); the report goes to MODEL_DIR/init_2d.json."""
        train = self.cfg.train
        report = inflate.inflate_into(model, train.init_2d_checkpoint, format=train.init_2d_format)
        path = posixpath.join(self.cfg.model_dir, inflate.REPORT_FILENAME)
        save_json(path, {"init_2d_checkpoint": train.init_2d_checkpoint, **report.to_dict()})
        return report

    def _load_teachers(self) -> dict[str, VideoClassifier | epam.EPAMNet]:
        """The frozen teachers of `distill.teachers`, by key: a one-stream teacher under its
        modality, an EPAM-Net under `epam` (`TEACHER_EPAM`). Raises ValueError naming the key
        and the setting when a teacher cannot be fed this run's clips (another modality, class
        count, heatmap or pose-rendering settings)."""
        teachers = {}
        for key, path in self.cfg.distill.teachers.items():
            where = f"distill.teachers[{key!r}]={path!r}"
            found = load_config(path)
            backbone = found.model.backbone
            if key == TEACHER_EPAM and backbone != BACKBONE_EPAM:
                raise ValueError(
                    f"{where}: holds model.backbone={backbone!r} trained on "
                    f"{found.modality!r}; key {TEACHER_EPAM!r} is for an EPAM-Net teacher, give "
                    f"this one as --teacher {found.modality}=DIR"
                )
            if key != TEACHER_EPAM and backbone == BACKBONE_EPAM:
                raise ValueError(
                    f"{where}: holds model.backbone={backbone!r}, which reads "
                    f"{list(EPAM_MODALITIES)}; give an EPAM-Net teacher as "
                    f"--teacher {TEACHER_EPAM}=DIR"
                )
            model, tcfg = load_model(path, dtype=self.dtype)
            if key != TEACHER_EPAM and tcfg.modality != key:
                raise ValueError(f"{where}: that model was trained on {tcfg.modality!r}")
            if tcfg.data.num_classes != self.cfg.data.num_classes:
                raise ValueError(
                    f"{where}: {tcfg.data.num_classes} classes, "
                    f"the student has {self.cfg.data.num_classes}"
                )
            differ = self.cfg.data.heatmap_differences(tcfg.data)
            if MODALITY_HEATMAP in teacher_modalities(key) and differ:
                raise ValueError(
                    f"{where}: this run would make its heatmaps with {', '.join(differ)}"
                )
            if key == MODALITY_POSE_LIVE:
                differ = self.cfg.data.modality_differences(tcfg.data, key)
                if differ:
                    raise ValueError(
                        f"{where}: this run would draw its pose frames with {', '.join(differ)}"
                    )
            model.trainable = False
            teachers[key] = model
        return teachers

    def teacher_logits(self, batch) -> dict[str, tf.Tensor]:
        """Each frozen teacher's float32 [B, classes] logits on `batch` (inference mode), by
        key: a one-stream teacher on its modality, an EPAM-Net teacher on `rgb` and `heatmap`
        (its `fused` logits)."""
        out = {}
        for key, teacher in self.teachers.items():
            if key == TEACHER_EPAM:
                out[key] = teacher({m: batch[m] for m in EPAM_MODALITIES}, training=False)["fused"]
            else:
                out[key] = teacher(batch[key], training=False)
        return out

    def step_losses(self, batch, training: bool = True, global_batch_size: int | None = None):
        """(task loss, ce, distill), float32 scalars, of `self.model` on `batch` (a dict of the
        input modalities and `label`), sums over its clips divided by `global_batch_size`
        (default `train.global_batch_size`; the training step's):

        - ce: cross-entropy of the logits; EPAM-Net: `epam_loss`, CE(rgb) + CE(heatmap).
        - distill (task `student`, else 0): `losses.distillation_loss` of the student's logits
          (EPAM-Net: `fused`) against `teacher_logits(batch)`, `distill.loss` SL or UL.
        - task loss: ce + `distill.distill_weight` * distill (no weight decay).
        """
        cfg, model = self.cfg, self.model
        gb = global_batch_size or cfg.train.global_batch_size
        labels = batch["label"]
        if isinstance(model, epam.EPAMNet):
            outputs = model({m: batch[m] for m in EPAM_MODALITIES}, training=training)
            ce = epam.epam_loss(labels, outputs, gb)
            logits = outputs["fused"]
        else:
            logits = model(batch[cfg.modality], training=training)
            ce = losses.cross_entropy(labels, logits, gb)
        if cfg.task != "student":
            return ce, ce, tf.constant(0.0)
        return losses.with_distillation(
            ce,
            logits,
            self.teacher_logits(batch),
            cfg.distill.loss,
            cfg.distill.distill_weight,
            gb,
        )

    @functools.cached_property
    def _eval_batch(self) -> int:
        """The global evaluation batch (`memory.eval_batch`), planned once per run: the plan
        builds the model's graph to count its memory."""
        cfg = self.cfg
        plan = memory.eval_batch([cfg], self.strategy, cfg.train, cfg.runtime)
        log.info("evaluation batch %d (%d per replica): %s", *dataclasses.astuple(plan))
        return plan.global_size

    def _eval_dataset(self):
        pattern = inputs.split_pattern(self.cfg.data, "eval")
        batch = self._eval_batch
        ds = inputs.build_dataset(
            pattern,
            list(self.cfg.model_modalities()),
            training=False,
            batch_size=batch,
            data=self.cfg.data,
            max_clips=self.cfg.train.max_eval_clips,
        )
        return self.strategy.experimental_distribute_dataset(ds)

    # -- the run --------------------------------------------------------------------------
    def check_data(self) -> list[str]:
        """Checks the first record of the training shards (every input modality) and of the
        evaluation shards (the model's modalities; when this run evaluates) before any step.
        Raises `inputs.DataError` naming the missing or mistyped key and the file; returns the
        files checked."""
        cfg = self.cfg
        checked = [
            inputs.check_records(inputs.split_pattern(cfg.data, "train"), cfg.input_modalities())
        ]
        evaluates = cfg.train.eval_at_end or cfg.train.eval_every
        if evaluates and inputs.split_pattern(cfg.data, "eval"):
            checked.append(
                inputs.check_records(inputs.split_pattern(cfg.data, "eval"), cfg.model_modalities())
            )
        return checked

    def run(self) -> TrainResult:
        cfg = self.cfg
        self._check_existing_config()
        self.check_data()
        tf.io.gfile.makedirs(cfg.model_dir)
        self._write_config()
        student = cfg.task == "student"
        global_batch = cfg.train.global_batch_size
        num_replicas = distribute.replicas(self.strategy)

        model = self._build_model()
        with self.strategy.scope():
            optimizer = build_optimizer(cfg.optimizer, global_batch)
            schedule = build_schedule(cfg.optimizer, global_batch)
            optimizer.build(model.trainable_variables)
            teachers = self._load_teachers() if student else {}
            checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
            manager = tf.train.CheckpointManager(
                checkpoint,
                cfg.model_dir,
                max_to_keep=cfg.train.max_checkpoints,
                checkpoint_name=CHECKPOINT_NAME,
            )
            last_ckpt = manager.latest_checkpoint
            if last_ckpt:
                checkpoint.restore(last_ckpt).assert_existing_objects_matched()
                log.info("resumed from %s", last_ckpt)
            elif cfg.task == "finetune":
                restore_backbone(model, cfg.init_checkpoint, cfg.model)
        if not last_ckpt and cfg.train.init_2d_checkpoint:
            self._init_from_2d(model)
        self.model, self.teachers = model, teachers
        start_step = int(optimizer.iterations.numpy())
        kernels = model.kernels()

        def dataset_fn(ctx):
            return inputs.build_dataset(
                inputs.split_pattern(cfg.data, "train"),
                cfg.input_modalities(),
                training=True,
                batch_size=ctx.get_per_replica_batch_size(global_batch),
                data=cfg.data,
                input_context=ctx,
                seed_offset=start_step,
            )

        streams = cfg.model_modalities()

        def step_fn(batch):
            with tf.GradientTape() as tape:
                # ce: EPAM-Net's is CE(rgb logits) + CE(heatmap logits); distill: 0 unless student
                task_loss, ce, distill = self.step_losses(batch, True, global_batch)
                l2 = losses.l2_penalty(kernels, cfg.optimizer.weight_decay) / num_replicas
                total = task_loss + l2
            grads = tape.gradient(total, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return {"loss": task_loss, "ce": ce, "distill": distill, "l2": l2}

        keys = ("loss", "ce", "distill", "l2")

        @tf.function
        def train_loop(iterator, num_steps):
            sums = tf.zeros([len(keys)])
            for _ in tf.range(num_steps):
                out = self.strategy.run(step_fn, args=(next(iterator),))
                sums += tf.stack(
                    [
                        self.strategy.reduce(tf.distribute.ReduceOp.SUM, out[k], axis=None)
                        for k in keys
                    ]
                )
            means = sums / tf.cast(num_steps, tf.float32)
            return {k: means[i] for i, k in enumerate(keys)}

        history: list[tuple[int, dict[str, float]]] = []
        report = None
        step = start_step
        preempted = False
        writer = tf.summary.create_file_writer(posixpath.join(cfg.model_dir, "train"))
        previous_handler = self._install_sigterm()
        try:
            if step < cfg.train.train_steps:
                dist_ds = self.strategy.distribute_datasets_from_function(dataset_fn)
                iterator = iter(dist_ds)
            log.info(
                "%s %s: steps %d -> %d, global batch %d on %d replica(s), %s",
                cfg.task,
                "+".join(streams),
                step,
                cfg.train.train_steps,
                global_batch,
                num_replicas,
                self.dtype,
            )
            while step < cfg.train.train_steps:
                n = min(cfg.train.steps_per_loop, cfg.train.train_steps - step)
                t0 = time.perf_counter()
                try:
                    out = train_loop(iterator, tf.constant(n))
                except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
                    raise inputs.DataError(
                        f"{inputs.split_pattern(cfg.data, 'train')}: a record failed to parse or "
                        f"decode at step {step}: {e.message.splitlines()[0]}"
                    ) from e
                metrics = {k: float(v) for k, v in out.items()}
                elapsed = time.perf_counter() - t0
                prev, step = step, step + n
                metrics["learning_rate"] = float(schedule(step - 1))
                metrics["clips_per_second"] = global_batch * n / max(elapsed, 1e-9)
                history.append((step, metrics))
                if _crossed(prev, step, cfg.train.summary_every) or step == cfg.train.train_steps:
                    with writer.as_default(step=step):
                        for k, v in metrics.items():
                            write_scalar(k, v, step)
                    writer.flush()
                    log.info(
                        "step %d loss %.4f ce %.4f distill %.4f lr %.4g %.1f clips/s",
                        step,
                        metrics["loss"],
                        metrics["ce"],
                        metrics["distill"],
                        metrics["learning_rate"],
                        metrics["clips_per_second"],
                    )
                if self.on_loop_end is not None:
                    self.on_loop_end(step, metrics)
                if _crossed(prev, step, cfg.train.checkpoint_every) or self._stop.is_set():
                    last_ckpt = manager.save(checkpoint_number=step)
                if self._stop.is_set() and step < cfg.train.train_steps:
                    preempted = True
                    log.warning("stop requested: checkpoint %s written at step %d", last_ckpt, step)
                    break
                if (
                    cfg.train.eval_every
                    and _crossed(prev, step, cfg.train.eval_every)
                    and step < cfg.train.train_steps
                ):
                    report = self._evaluate(model, step)
            if not preempted:
                if step > start_step and (not last_ckpt or not last_ckpt.endswith(f"-{step}")):
                    last_ckpt = manager.save(checkpoint_number=step)
                if cfg.train.eval_at_end and inputs.split_pattern(cfg.data, "eval"):
                    report = self._evaluate(model, step)
        finally:
            self._restore_sigterm(previous_handler)
            writer.close()
        return TrainResult(cfg.model_dir, start_step, step, history, report, preempted, last_ckpt)

    def _evaluate(self, model: VideoClassifier | epam.EPAMNet, step: int) -> FusionReport:
        """Top-1/top-5 of `model` (EPAM-Net: its fused logits, named `epam` (a student:
        `epam_student`), and each stream alone: `epam:rgb`, `epam:heatmap`, also as TensorBoard
        scalars `top1_<modality>`)."""
        name = BACKBONE_EPAM if self.cfg.model.backbone == BACKBONE_EPAM else self.cfg.modality
        if self.cfg.task == "student":
            name += "_student"
        report = evaluate_models(
            {name: (model, model_inputs(self.cfg))},
            self._eval_dataset(),
            self.strategy,
            self.cfg.data.num_classes,
        )
        row = report.rows[0]
        log.info(
            "eval step %d: top-1 %.4f top-%d %.4f on %d clips",
            step,
            row.top1,
            report.top5_k,
            row.top5,
            row.clips,
        )
        for stream in report.streams:
            log.info("eval step %d: %s top-1 %.4f", step, stream.label, stream.top1)
        writer = tf.summary.create_file_writer(posixpath.join(self.cfg.model_dir, "eval"))
        with writer.as_default(step=step):
            write_scalar("top1", row.top1, step)
            write_scalar("top5", row.top5, step)
            for stream in report.streams:
                write_scalar(f"top1_{stream.label.partition(':')[2]}", stream.top1, step)
        writer.close()
        save_json(posixpath.join(self.cfg.model_dir, f"eval_{step}.json"), report.to_json())
        return report

    def _install_sigterm(self):
        if threading.current_thread() is not threading.main_thread():
            return None
        return signal.signal(signal.SIGTERM, lambda signum, frame: self.request_stop())

    @staticmethod
    def _restore_sigterm(previous) -> None:
        if previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)


def write_scalar(name: str, value: float, step: int) -> None:
    """A TensorBoard scalar in the default summary writer, without the tensorboard package.

    Writes the same event as `tf.summary.scalar` (plugin `scalars`), which needs tensorboard
    installed; TensorBoard reads these files as scalars.
    """
    tf.summary.write(
        name, tf.constant(float(value), tf.float32), step=step, metadata=_SCALAR_METADATA
    )


_SCALAR_METADATA = tf.compat.v1.SummaryMetadata(
    plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="scalars")
)


def _crossed(prev: int, step: int, every: int) -> bool:
    """True if a multiple of `every` lies in (prev, step]."""
    return step // every > prev // every


def train(cfg: ExperimentConfig, strategy=None) -> TrainResult:
    """Runs `cfg` (any task) and returns what it did."""
    return Trainer(cfg, strategy).run()
