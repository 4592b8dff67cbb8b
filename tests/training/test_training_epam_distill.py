"""EPAM-Net in distillation (eq. (1) of PERF-Net) on the tiny records, in both roles: a tiny
EPAM-Net teacher (key `epam`, its fused logits on the rgb + heatmap streams of the student's
clips) distils a tiny RGB student, and the `tiny_epam_student` preset (EPAM-Net distilled from a
tiny flow teacher) trains with `epam_loss` + the distillation term on its fused logits; the
losses are checked by hand on one batch, the teachers stay frozen, and the teachers that cannot
be fed the run's clips are refused with the setting named."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
from training_records import tiny

from training import epam, inputs
from training import main as cli
from training.config import get_preset
from training.models import VideoClassifier
from training.trainer import Trainer, load_config, load_model

DISTILL_WEIGHT = 0.5  # of the EPAM-Net student, to see the weight in its loss


@pytest.fixture(scope="module")
def distill_runs(tiny_data, tmp_path_factory):
    """Two-step tiny teachers (EPAM-Net, R3D50-G flow), a two-step RGB student of the EPAM-Net
    teacher, and a three-step EPAM-Net student of the flow teacher (evaluated at the end)."""
    root = tmp_path_factory.mktemp("epam_distill")
    out = {"data": tiny_data, "root": root}
    for name, preset in (("epam", "tiny_epam"), ("flow", "tiny_r3d50g_teacher_flow")):
        cfg = tiny(preset, tiny_data, str(root / name), train_steps=2, eval_at_end=False)
        Trainer(cfg).run()
        out[name] = str(root / name)
    cfg = tiny("tiny_r3d50g_d3d", tiny_data, str(root / "rgb_student"), train_steps=2)
    cfg.train.eval_at_end = False
    cfg.distill.teachers = {"epam": out["epam"]}
    out["rgb_student_trainer"] = Trainer(cfg)
    out["rgb_student"] = out["rgb_student_trainer"].run()
    cfg = tiny("tiny_epam_student", tiny_data, str(root / "epam_student"), train_steps=3)
    cfg.distill.teachers = {"flow": out["flow"]}
    cfg.distill.distill_weight = DISTILL_WEIGHT
    out["epam_student_trainer"] = Trainer(cfg)
    out["epam_student"] = out["epam_student_trainer"].run()
    return out


def one_batch(cfg, size: int = 4) -> dict:
    """The first `size` training clips of `cfg`'s input modalities, without augmentation."""
    pattern = inputs.split_pattern(cfg.data, "train")
    ds = inputs.build_dataset(
        pattern, cfg.input_modalities(), training=False, batch_size=size, data=cfg.data
    )
    return next(iter(ds))


def hand_ce(logits, labels) -> float:
    """Mean softmax cross-entropy, in numpy (float64)."""
    logits = np.asarray(logits, np.float64)
    top = logits.max(axis=1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return float(np.mean(log_z - logits[np.arange(len(labels)), labels]))


def hand_mse(target, prediction) -> float:
    return float(np.mean((np.asarray(target, np.float64) - np.asarray(prediction)) ** 2))


def assert_frozen(teacher, model_dir: str) -> None:
    """`teacher` holds the weights and batch-norm statistics of `model_dir`'s checkpoint."""
    reloaded, _ = load_model(model_dir)
    assert len(teacher.variables) == len(reloaded.variables) > 0
    for before, after in zip(reloaded.variables, teacher.variables):
        np.testing.assert_array_equal(before.numpy(), after.numpy(), err_msg=before.path)
    assert not teacher.trainable_variables


def test_an_epam_teacher_distils_an_rgb_student_with_its_fused_logits(distill_runs):
    trainer, result = distill_runs["rgb_student_trainer"], distill_runs["rgb_student"]
    cfg = trainer.cfg
    assert cfg.input_modalities() == ("rgb", "heatmap")
    assert load_config(result.model_dir).distill.teachers == {"epam": distill_runs["epam"]}
    assert set(trainer.teachers) == {"epam"}
    teacher = trainer.teachers["epam"]
    assert isinstance(teacher, epam.EPAMNet)
    assert_frozen(teacher, distill_runs["epam"])
    # eq. (1) in the two steps: loss = ce + distill (weight 1), distill > 0
    assert [s for s, _ in result.history] == [1, 2]
    for _, m in result.history:
        assert m["distill"] > 0 and np.isfinite(m["loss"])
        assert m["loss"] == pytest.approx(m["ce"] + m["distill"], rel=1e-5)
    names = [n for n, _ in tf.train.list_variables(result.checkpoint)]
    assert any(n.startswith("model/backbone") for n in names)
    assert not any("heatmap" in n or "attention" in n for n in names)
    # by hand on one batch: the teacher's logits are its fused ones, rgb + heatmap
    batch = one_batch(cfg)
    labels = batch["label"].numpy()
    student = trainer.model(batch["rgb"], training=False).numpy()
    outputs = teacher({"rgb": batch["rgb"], "heatmap": batch["heatmap"]}, training=False)
    fused = outputs["fused"].numpy()
    np.testing.assert_allclose(fused, outputs["rgb"] + outputs["heatmap"], rtol=1e-6)
    np.testing.assert_allclose(trainer.teacher_logits(batch)["epam"], fused, rtol=1e-6)
    total, ce, distill = trainer.step_losses(batch, training=False, global_batch_size=len(labels))
    assert float(ce) == pytest.approx(hand_ce(student, labels), rel=1e-5)
    assert float(distill) == pytest.approx(hand_mse(fused, student), rel=1e-5)
    assert float(total) == pytest.approx(float(ce) + float(distill), rel=1e-6)


def test_an_epam_student_learns_epam_loss_plus_distillation_on_its_fused_logits(distill_runs):
    trainer, result = distill_runs["epam_student_trainer"], distill_runs["epam_student"]
    cfg = trainer.cfg
    assert (cfg.task, cfg.modality, cfg.model.backbone) == ("student", "rgb", "epam")
    assert cfg.input_modalities() == ("rgb", "flow", "heatmap")
    assert isinstance(trainer.model, epam.EPAMNet) and set(trainer.teachers) == {"flow"}
    assert isinstance(trainer.teachers["flow"], VideoClassifier)
    assert_frozen(trainer.teachers["flow"], distill_runs["flow"])
    assert [s for s, _ in result.history] == [1, 2, 3]
    for _, m in result.history:
        assert m["distill"] > 0 and m["ce"] > 0
        assert m["loss"] == pytest.approx(m["ce"] + DISTILL_WEIGHT * m["distill"], rel=1e-5)
    # the checkpoint holds EPAM-Net alone, both streams and heads
    names = [n for n, _ in tf.train.list_variables(result.checkpoint)]
    for part in ("rgb_backbone", "heatmap_backbone", "attention", "rgb_head", "heatmap_head"):
        assert any(n.startswith(f"model/{part}/") for n in names), part
    assert not any(n.startswith("model/backbone") for n in names)
    # evaluated as an EPAM-Net: its fused logits, then each stream
    assert [r.models for r in result.eval.rows] == [("epam_student",)]
    labels_ = [r.models for r in result.eval.streams]
    assert labels_ == [("epam_student:rgb",), ("epam_student:heatmap",)]
    # by hand on one batch: CE(rgb) + CE(heatmap) + w * MSE(flow teacher, fused)
    batch = one_batch(cfg)
    labels = batch["label"].numpy()
    out = trainer.model({"rgb": batch["rgb"], "heatmap": batch["heatmap"]}, training=False)
    flow = trainer.teachers["flow"](batch["flow"], training=False).numpy()
    ce_rgb, ce_heatmap = hand_ce(out["rgb"], labels), hand_ce(out["heatmap"], labels)
    distill_hand = hand_mse(flow, out["fused"])
    total, ce, distill = trainer.step_losses(batch, training=False, global_batch_size=len(labels))
    assert float(ce) == pytest.approx(ce_rgb + ce_heatmap, rel=1e-5)
    assert float(distill) == pytest.approx(distill_hand, rel=1e-5)
    expected = ce_rgb + ce_heatmap + DISTILL_WEIGHT * distill_hand
    assert float(total) == pytest.approx(expected, rel=1e-5)
    assert math.isfinite(expected) and distill_hand > 0


def test_the_epam_student_presets():
    for prefix, classes, frames in (("k600", 600, 16), ("tiny", 0, 8)):
        cfg = get_preset(f"{prefix}_epam_student")
        assert (cfg.task, cfg.modality, cfg.model.backbone) == ("student", "rgb", "epam")
        assert cfg.distill.teachers == {"flow": ""} and cfg.distill.loss == "sl"
        assert (cfg.data.num_classes, cfg.data.num_frames) == (classes, frames)
        assert cfg.model == get_preset(f"{prefix}_epam").model
        assert cfg.input_modalities() == ("rgb", "flow", "heatmap")
        with pytest.raises(ValueError, match=r"distill.teachers\['flow'\]=''"):
            cfg.validate()
        cfg.distill.teachers = {"flow": "/runs/flow", "epam": "/runs/epam"}
        cfg.validate()
    # a PERF-Net student with the flow teacher and an EPAM-Net teacher decodes all three
    cfg = get_preset("tiny_r3d50g_student")
    cfg.distill.teachers = {"flow": "/runs/flow", "epam": "/runs/epam"}
    assert cfg.validate().input_modalities() == ("rgb", "flow", "heatmap")
    cfg.distill.teachers = {"skeleton": "/runs/skeleton"}
    with pytest.raises(ValueError, match=r"distill.teachers='skeleton'.*'epam' for an EPAM-Net"):
        cfg.validate()


def test_teachers_that_cannot_be_fed_are_refused_by_key_and_setting(distill_runs, tmp_path, capsys):
    data, epam_dir, flow_dir = distill_runs["data"], distill_runs["epam"], distill_runs["flow"]
    cases = [
        # another heatmap setting than the EPAM-Net teacher was trained with
        (
            {"epam": epam_dir},
            ["data.heatmap_sigma=1.0"],
            r"distill.teachers\['epam'\]=.*heatmaps with heatmap_sigma=1.0 \(trained with 0.6\)",
        ),
        # an EPAM-Net keyed by a modality, a one-stream teacher keyed `epam`
        ({"rgb": epam_dir}, [], r"distill.teachers\['rgb'\]=.*--teacher epam=DIR"),
        ({"epam": flow_dir}, [], r"distill.teachers\['epam'\]=.*--teacher flow=DIR"),
    ]
    for i, (teachers, overrides, message) in enumerate(cases):
        cfg = tiny("tiny_r3d50g_d3d", data, str(tmp_path / f"s{i}"), train_steps=1)
        for item in overrides:
            key, _, value = item.partition("=")
            section, field = key.split(".")
            setattr(getattr(cfg, section), field, float(value))
        cfg.distill.teachers = teachers
        with pytest.raises(ValueError, match=message):
            Trainer(cfg).run()
    # on the command line: exit status 2, the setting named
    argv = ["distill", "--preset", "tiny_epam_student", "--data_dir", data]
    argv += ["--model_dir", str(tmp_path / "cli"), "--teacher", f"epam={epam_dir}"]
    assert cli.main([*argv, "--set", "data.heatmap_stride=2"]) == 2
    assert "heatmap_stride=2 (trained with 4)" in capsys.readouterr().err
