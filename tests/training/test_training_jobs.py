"""End to end on tiny records: teachers, preemption and resume, distillation with frozen
teachers, fine-tuning, evaluation with the late-fusion table, the command line."""

from __future__ import annotations

import glob
import json
import os
import signal

import numpy as np
import pytest
import tensorflow as tf
from training_records import tiny

from training import main as cli
from training.config import get_preset
from training.models import build_classifier
from training.trainer import Trainer, load_config, load_model, restore_backbone


def mean_loss(history, steps):
    return float(np.mean([m["loss"] for s, m in history if s in steps]))


def event_tags(folder: str) -> dict[str, list[int]]:
    """tag -> steps of the scalars in a TensorBoard folder."""
    tags: dict[str, list[int]] = {}
    for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append(event.step)
    return tags


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory):
    """Flow teacher (SIGTERM at step 6 as on a preemption, then resumed to 16), pose teacher,
    and the student distilled from both."""
    root = tmp_path_factory.mktemp("runs")
    out = {"data": tiny_data, "root": root}

    flow_cfg = tiny("tiny_r3d50g_teacher_flow", tiny_data, str(root / "flow"), train_steps=16)

    def preempt_at_6(step, metrics):
        if step == 6:  # what a preemptible VM's shutdown sends
            os.kill(os.getpid(), signal.SIGTERM)

    first = Trainer(flow_cfg, on_loop_end=preempt_at_6)
    out["flow_first"] = first.run()
    out["flow"] = Trainer(flow_cfg).run()
    out["pose"] = Trainer(
        tiny("tiny_r3d50g_teacher_pose", tiny_data, str(root / "pose"), train_steps=16)
    ).run()
    student_cfg = tiny("tiny_r3d50g_student", tiny_data, str(root / "student"), train_steps=16)
    student_cfg.distill.teachers = {"flow": str(root / "flow"), "pose": str(root / "pose")}
    out["student_trainer"] = Trainer(student_cfg)
    out["student"] = out["student_trainer"].run()
    return out


@pytest.mark.slow
def test_teacher_checkpoints_resumes_after_preemption_and_learns(runs):
    first, second = runs["flow_first"], runs["flow"]
    assert first.preempted and (first.start_step, first.final_step) == (0, 6)
    assert first.checkpoint.endswith("ckpt-6") and first.eval is None
    assert not second.preempted and (second.start_step, second.final_step) == (6, 16)
    assert [s for s, _ in second.history] == list(range(7, 17))
    assert second.checkpoint.endswith("ckpt-16")
    model_dir = second.model_dir
    assert tf.train.latest_checkpoint(model_dir).endswith("ckpt-16")
    assert os.path.exists(os.path.join(model_dir, "ckpt-10.index"))  # checkpoint_every=10
    history = first.history + second.history
    assert mean_loss(history, range(1, 6)) > mean_loss(history, range(12, 17)) + 0.1
    cfg = load_config(model_dir)
    assert (cfg.task, cfg.modality, cfg.data.num_classes) == ("teacher", "flow", 3)
    with open(os.path.join(model_dir, "run.json")) as f:
        run = json.load(f)
    assert (run["replicas"], run["per_replica_batch"], run["dtype_policy"]) == (1, 8, "float32")
    assert run["peak_learning_rate"] == pytest.approx(0.05)
    tags = event_tags(os.path.join(model_dir, "train"))
    assert sorted(tags["loss"]) == list(range(1, 17))
    assert {"ce", "learning_rate", "l2", "clips_per_second"} <= set(tags)
    assert event_tags(os.path.join(model_dir, "eval"))["top1"] == [16]
    row = second.eval.rows[0]
    assert row.models == ("flow",) and row.clips == 6 and 0.0 <= row.top1 <= row.top5 == 1.0


def test_student_learns_with_eq_1_and_its_teachers_stay_frozen(runs):
    trainer, result = runs["student_trainer"], runs["student"]
    assert set(trainer.teachers) == {"flow", "pose"}
    for modality, teacher in trainer.teachers.items():
        reloaded, _ = load_model(str(runs["root"] / modality))
        assert len(teacher.variables) == len(reloaded.variables) > 0
        for before, after in zip(reloaded.variables, teacher.variables):
            # weights and batch-norm statistics alike, after 16 student steps
            np.testing.assert_array_equal(before.numpy(), after.numpy(), err_msg=before.path)
        assert not teacher.trainable_variables
    metrics = [m for _, m in result.history]
    assert all(m["distill"] > 0 for m in metrics)
    for m in metrics:
        assert m["loss"] == pytest.approx(m["ce"] + m["distill"], rel=1e-5)
    assert mean_loss(result.history, range(1, 6)) > mean_loss(result.history, range(12, 17))
    assert tf.train.latest_checkpoint(result.model_dir).endswith("ckpt-16")
    # the student's checkpoint holds the student alone
    names = [n for n, _ in tf.train.list_variables(result.checkpoint)]
    assert any(n.startswith("model/backbone") for n in names)
    assert not any("teacher" in n for n in names)


def test_evaluate_prints_top1_top5_and_the_fusion_table(runs, capsys):
    root = runs["root"]
    argv = ["evaluate", "--data_dir", runs["data"], "--output", str(root / "fusion.json")]
    for name in ("flow", "pose", "student"):
        argv += ["--model", f"{name}={root / name}"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "central crop 8x32x32, 6 clips, batch 4 (4 per replica)" in printed
    assert "| streams" in printed and "top-1 (%)" in printed and "top-3 (%)" in printed
    with open(root / "fusion.json") as f:
        report = json.load(f)
    labels = ["+".join(r["models"]) for r in report["rows"]]
    assert labels == [
        "flow",
        "pose",
        "student",
        "flow+pose",
        "flow+student",
        "pose+student",
        "flow+pose+student",
    ]
    for label in labels:
        assert f"| {label} " in printed
    # the single-model rows are the numbers the training jobs reported
    assert report["rows"][0]["top1"] == pytest.approx(runs["flow"].eval.rows[0].top1)
    assert report["rows"][2]["top1"] == pytest.approx(runs["student"].eval.rows[0].top1)
    # The batch changes nothing but the batch: one per replica, or what fits a memory made for
    # 3 clips (the weights and 3.5 clips in 80 % of it).
    from training import memory
    from training.trainer import load_config

    flow = str(root / "flow")
    count = memory.clip_memory([load_config(flow)])
    gib = (count.weight_bytes + 3.5 * count.per_clip) / 0.8 / memory.GIB
    for flags, batch in (
        (["--eval_batch_per_replica", "1"], "batch 1 (1 per replica)"),
        (["--set", "train.eval_batch_size=0", "--device_memory_gib", f"{gib:.9f}"], None),
    ):
        out = str(root / "one.json")
        argv = ["evaluate", "--data_dir", runs["data"], "--model", f"flow={flow}", "--output", out]
        assert cli.main(argv + flags) == 0
        printed = capsys.readouterr().out
        if batch is None:
            batch = "batch 3 (3 per replica)"
        assert f"6 clips, {batch}" in printed
        with open(out) as f:
            assert json.load(f)["rows"][0]["top1"] == report["rows"][0]["top1"]


def test_finetuning_restores_the_backbone_and_not_the_head(runs):
    source, _ = load_model(str(runs["root"] / "student"))
    cfg = get_preset("tiny_r3d50g_finetune")
    model = build_classifier(cfg.model, num_classes=5, in_channels=3)
    restore_backbone(model, str(runs["root"] / "student"))
    for a, b in zip(source.backbone.variables, model.backbone.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert model.head.kernel.shape == (128, 5)
    with pytest.raises(ValueError, match="model.backbone='r3d50g'"):
        restore_backbone(
            build_classifier(get_preset("tiny_s3dg_finetune").model, 5, 3),
            str(runs["root"] / "student"),
        )


@pytest.mark.slow
def test_command_line_jobs(runs, capsys):
    root, data = runs["root"], runs["data"]
    small = ["--set", "train.train_steps=2", "--set", "train.eval_at_end=false"]
    # D3D: the student with the flow teacher alone
    argv = ["distill", "--preset", "tiny_r3d50g_d3d", "--data_dir", data]
    argv += ["--model_dir", str(root / "d3d"), "--teacher", f"flow={root / 'flow'}", *small]
    assert cli.main(argv) == 0
    assert "steps: 0 -> 2" in capsys.readouterr().out
    assert load_config(str(root / "d3d")).distill.teachers == {"flow": str(root / "flow")}
    # fine-tuning from the student's checkpoint
    argv = ["train", "--preset", "tiny_r3d50g_finetune", "--data_dir", data]
    argv += ["--model_dir", str(root / "ft"), "--init_checkpoint", str(root / "student"), *small]
    assert cli.main(argv) == 0
    assert tf.train.latest_checkpoint(str(root / "ft")).endswith("ckpt-2")
    # mistakes are reported with the parameter, exit status 2
    argv = ["train", "--preset", "tiny_r3d50g_student", "--data_dir", data, "--model_dir", "x"]
    assert cli.main(argv) == 2
    argv = ["train", "--preset", "tiny_r3d50g_teacher_rgb", "--data_dir", data]
    argv += ["--model_dir", str(root / "flow")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "task='student'" in err and "modality='rgb'" in err
    assert cli.main(["presets"]) == 0
    assert "k600_r3d50g_student" in capsys.readouterr().out.split()
