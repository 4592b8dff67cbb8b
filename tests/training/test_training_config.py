"""Configs: the paper's presets, validation errors, JSON round trip and overrides."""

from __future__ import annotations

import pytest
import tensorflow as tf

from training import distribute
from training.config import (
    ExperimentConfig,
    RuntimeConfig,
    apply_overrides,
    get_preset,
    preset_names,
)


def filled(name: str) -> ExperimentConfig:
    """A preset with its run-time paths (teacher dirs, init checkpoint) filled in."""
    cfg = get_preset(name)
    cfg.distill.teachers = {m: f"/runs/{m}" for m in cfg.distill.teachers}
    if cfg.task == "finetune":
        cfg.init_checkpoint = "/runs/k600"
    return cfg


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_validates_and_round_trips_through_json(name):
    cfg = filled(name).validate()
    again = ExperimentConfig.from_json(cfg.to_json())
    assert again == cfg
    assert isinstance(again.data.crop_size, tuple)


def test_kinetics_presets_are_the_papers_runs():
    cfg = get_preset("k600_r3d50g_teacher_flow")
    assert (cfg.task, cfg.modality, cfg.model.backbone) == ("teacher", "flow", "r3d50g")
    assert cfg.model.depths == (3, 4, 6, 3) and cfg.model.width_multiplier == 1.0
    assert (cfg.data.num_classes, cfg.data.num_frames, cfg.data.crop_size) == (600, 64, (224, 224))
    assert (cfg.data.eval_num_frames, cfg.data.eval_crop_size) == (250, (256, 256))
    assert cfg.train.global_batch_size == 2048
    opt = cfg.optimizer
    assert (opt.momentum, opt.weight_decay, opt.warmup_steps, opt.decay_steps) == (
        0.9,
        1e-4,
        2000,
        20000,
    )
    assert opt.peak_learning_rate(2048) == 1.6
    assert get_preset("k600_s3dg_teacher_rgb").train.global_batch_size == 306
    student = get_preset("k600_r3d50g_student")
    assert set(student.distill.teachers) == {"flow", "pose"} and student.distill.loss == "sl"
    assert student.input_modalities() == ("rgb", "pose", "flow")
    assert get_preset("k600_r3d50g_student_ul").distill.loss == "ul"
    d3d = get_preset("k600_s3dg_d3d")
    assert set(d3d.distill.teachers) == {"flow"} and d3d.input_modalities() == ("rgb", "flow")


@pytest.mark.parametrize(
    ("name", "classes", "frames"),
    [("ucf101_s3dg_finetune", 101, 128), ("hmdb51_s3dg_finetune", 51, 64)],
)
def test_fine_tuning_presets_use_the_papers_eval_crops(name, classes, frames):
    cfg = get_preset(name)
    assert cfg.task == "finetune" and cfg.data.num_classes == classes
    assert cfg.data.crop_size == (224, 298)
    assert (cfg.data.eval_num_frames, cfg.data.eval_crop_size) == (frames, (224, 298))
    with pytest.raises(ValueError, match="init_checkpoint=''"):
        cfg.validate()


def test_validation_names_the_field_and_value():
    cfg = get_preset("tiny_r3d50g_student")
    with pytest.raises(ValueError, match=r"distill.teachers\['flow'\]=''"):
        cfg.validate()
    cases = {
        "data.num_frames=0": "num_frames=0",
        "data.crop_size=[0,5]": r"crop_size=\(0, 5\)",
        "model.backbone=i3d": "backbone='i3d'",
        "optimizer.momentum=1.5": "momentum=1.5",
        "train.global_batch_size=0": "global_batch_size=0",
        "runtime.precision=float16": "runtime.precision='float16'",
        "modality=depth": "modality='depth'",
    }
    for override, message in cases.items():
        with pytest.raises(ValueError, match=message):
            apply_overrides(filled("tiny_r3d50g_teacher_rgb"), [override]).validate()


def test_overrides_are_typed_and_unknown_keys_rejected():
    cfg = apply_overrides(
        get_preset("tiny_s3dg_teacher_pose"),
        ["train.train_steps=7", "data.crop_size=[16,24]", "data.seed=null", "distill.loss=ul"],
    )
    assert cfg.train.train_steps == 7 and cfg.data.crop_size == (16, 24)
    assert cfg.data.seed is None and cfg.distill.loss == "ul"
    with pytest.raises(ValueError, match="unknown key 'train.steps'"):
        apply_overrides(cfg, ["train.steps=3"])
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        apply_overrides(cfg, ["train.train_steps"])
    with pytest.raises(ValueError, match="train_steps='many'"):
        apply_overrides(cfg, ["train.train_steps=many"])
    with pytest.raises(ValueError, match="preset='k700'"):
        get_preset("k700")


def test_runtime_picks_the_default_strategy_and_float32_on_a_cpu():
    strategy = distribute.get_strategy(RuntimeConfig())
    assert strategy is tf.distribute.get_strategy() and distribute.replicas(strategy) == 1
    assert distribute.precision_policy(RuntimeConfig(), strategy) == "float32"
    bf16 = RuntimeConfig(precision="mixed_bfloat16")
    assert distribute.precision_policy(bf16, strategy) == "mixed_bfloat16"
    assert distribute.per_replica_batch(8, strategy) == 8
    with pytest.raises(ValueError, match="runtime.tpu=''"):
        distribute.get_strategy(RuntimeConfig(distribution="tpu"))
