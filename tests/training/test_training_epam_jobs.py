"""EPAM-Net as a job on the tiny records: the `tiny_epam` preset trains (SIGTERM at step 3,
resumed from the command line to step 8), checkpoints, evaluates its fused logits and each
stream; `evaluate` fuses it with a one-stream teacher; fine-tuning restores its streams; its
presets and the combinations that are refused (distillation: test_training_epam_distill.py)."""

from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import signal

import numpy as np
import pytest
import tensorflow as tf
from training_records import tiny

from training import epam, inputs
from training import main as cli
from training.config import EPAM_DEPTHS, apply_overrides, get_preset
from training.models import build_classifier
from training.trainer import (
    Trainer,
    build_model,
    epam_streams,
    load_config,
    load_model,
    restore_backbone,
)


def scalars(folder: str) -> dict[str, dict[int, float]]:
    """tag -> {step: value} of the scalars in a TensorBoard folder."""
    out: dict[str, dict[int, float]] = {}
    for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                out.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
    return out


@pytest.fixture(scope="module")
def epam_runs(tiny_data, tmp_path_factory):
    """`tiny_epam`: SIGTERM at step 3, then the `train` command resumes it to step 8; and a
    tiny R3D50-G RGB teacher (2 steps) to fuse with."""
    root = tmp_path_factory.mktemp("epam_runs")
    out = {"data": tiny_data, "root": root, "epam": str(root / "epam")}

    def preempt_at_3(step, metrics):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    cfg = tiny("tiny_epam", tiny_data, out["epam"], train_steps=8)
    out["first"] = Trainer(cfg, on_loop_end=preempt_at_3).run()
    argv = ["train", "--preset", "tiny_epam", "--data_dir", tiny_data]
    argv += ["--model_dir", out["epam"], "--set", "train.train_steps=8"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        out["status"] = cli.main(argv)
    out["printed"] = printed.getvalue()
    rgb = tiny("tiny_r3d50g_teacher_rgb", tiny_data, str(root / "rgb"), train_steps=2)
    rgb.train.eval_at_end = False
    Trainer(rgb).run()
    return out


def test_epam_trains_checkpoints_resumes_and_records_its_modalities(epam_runs):
    first, model_dir = epam_runs["first"], epam_runs["epam"]
    assert first.preempted and (first.start_step, first.final_step) == (0, 3)
    assert first.checkpoint.endswith("ckpt-3") and first.eval is None
    printed = epam_runs["printed"]
    assert epam_runs["status"] == 0 and "steps: 3 -> 8" in printed
    assert tf.train.latest_checkpoint(model_dir).endswith("ckpt-8")
    # the loss (CE of both streams) over all 8 steps: finite and falling
    loss = scalars(os.path.join(model_dir, "train"))["loss"]
    assert sorted(loss) == list(range(1, 9)) and np.all(np.isfinite(list(loss.values())))
    assert np.mean([loss[s] for s in (1, 2, 3)]) > np.mean([loss[s] for s in (6, 7, 8)])
    cfg = load_config(model_dir)
    assert (cfg.task, cfg.modality, cfg.model.backbone) == ("teacher", "rgb", "epam")
    assert cfg.input_modalities() == ("rgb", "heatmap") and cfg.data.heatmap_stride == 4
    with open(os.path.join(model_dir, "run.json")) as f:
        assert json.load(f)["input_modalities"] == ["rgb", "heatmap"]
    names = [n for n, _ in tf.train.list_variables(tf.train.latest_checkpoint(model_dir))]
    for part in ("rgb_backbone", "heatmap_backbone", "attention", "rgb_head", "heatmap_head"):
        assert any(n.startswith(f"model/{part}/") for n in names), part
    # evaluation: the fused logits, then each stream alone
    with open(os.path.join(model_dir, "eval_8.json")) as f:
        report = json.load(f)
    assert [r["models"] for r in report["rows"]] == [["epam"]]
    assert [r["models"] for r in report["streams"]] == [["epam:rgb"], ["epam:heatmap"]]
    assert all(r["clips"] == 6 for r in report["rows"] + report["streams"])
    assert "| epam " in printed and "| epam:rgb " in printed and "| epam:heatmap " in printed
    evals = scalars(os.path.join(model_dir, "eval"))
    assert {t: list(v) for t, v in evals.items()} == {
        "top1": [8],
        "top5": [8],
        "top1_rgb": [8],
        "top1_heatmap": [8],
    }


def test_evaluate_fuses_epam_with_a_one_stream_teacher(epam_runs, capsys):
    root = epam_runs["root"]
    argv = ["evaluate", "--data_dir", epam_runs["data"], "--output", str(root / "fusion.json")]
    argv += ["--model", f"epam={root / 'epam'}", "--model", f"rgb={root / 'rgb'}"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "central crop 8x32x32, 6 clips" in printed
    for label in ("epam", "rgb", "epam+rgb", "epam:rgb", "epam:heatmap"):
        assert f"| {label} " in printed
    with open(root / "fusion.json") as f:
        report = json.load(f)
    assert [r["models"] for r in report["rows"]] == [["epam"], ["rgb"], ["epam", "rgb"]]
    assert [r["models"] for r in report["streams"]] == [["epam:rgb"], ["epam:heatmap"]]
    with open(root / "epam" / "eval_8.json") as f:
        trained = json.load(f)
    assert report["rows"][0]["top1"] == pytest.approx(trained["rows"][0]["top1"])
    assert report["streams"][1]["top1"] == pytest.approx(trained["streams"][1]["top1"])


def test_epam_fine_tunes_from_its_streams_and_not_its_heads(epam_runs):
    source, _ = load_model(epam_runs["epam"])
    cfg = get_preset("tiny_epam_finetune")
    model = build_model(cfg, num_classes=5)
    restore_backbone(model, epam_runs["epam"], cfg.model)
    for part in ("rgb_backbone", "heatmap_backbone", "attention"):
        a, b = getattr(source, part).variables, getattr(model, part).variables
        assert len(a) == len(b) > 0
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x.numpy(), y.numpy())
    assert model.rgb_head.kernel.shape[-1] == model.heatmap_head.kernel.shape[-1] == 5
    r3d = get_preset("tiny_r3d50g_finetune").model
    with pytest.raises(ValueError, match="model.backbone='epam'"):
        restore_backbone(build_classifier(r3d, 5, 3), epam_runs["epam"])
    with pytest.raises(ValueError, match="model.backbone='r3d50g'"):
        restore_backbone(model, str(epam_runs["root"] / "rgb"), cfg.model)


def test_epam_presets_build_the_papers_streams():
    cfg = get_preset("k600_epam").validate()
    assert (cfg.task, cfg.modality, cfg.model.backbone) == ("teacher", "rgb", "epam")
    assert cfg.input_modalities() == ("rgb", "heatmap")
    assert (cfg.data.num_classes, cfg.data.num_frames, cfg.data.crop_size) == (600, 16, (224, 224))
    assert (cfg.data.eval_num_frames, cfg.data.eval_crop_size) == (250, (256, 256))
    assert (cfg.data.heatmap_stride, cfg.data.sampling) == (4, "window")
    assert cfg.train.global_batch_size == 1024 and cfg.model.width_multiplier == 1.0
    assert EPAM_DEPTHS == epam.RGB_XSHIFTNET.depths
    assert EPAM_DEPTHS[1:] == epam.HEATMAP_XSHIFTNET.depths
    assert epam_streams(cfg.model) == (epam.RGB_XSHIFTNET, epam.HEATMAP_XSHIFTNET)
    small = get_preset("tiny_epam").validate()
    assert (small.data.num_frames, small.data.crop_size, small.train.global_batch_size) == (
        8,
        (32, 32),
        8,
    )
    rgb, heatmap = epam_streams(small.model)
    assert (rgb.base_channels, rgb.depths, heatmap.depths) == (6, (1, 1, 1, 1), (1, 1, 1))
    for name, classes in (("ucf101_epam_finetune", 101), ("hmdb51_epam_finetune", 51)):
        ft = get_preset(name)
        assert (ft.task, ft.model.backbone, ft.data.num_classes) == ("finetune", "epam", classes)
        assert (ft.data.num_frames, ft.data.crop_size) == (16, (224, 298))


def test_epam_refuses_other_modalities_and_teacher_keys_but_its_own(epam_runs, capsys):
    cases = {
        "modality=flow": r"modality='flow': model.backbone='epam' reads \['rgb', 'heatmap'\]",
        "modality=heatmap": "modality='heatmap'",
    }
    for override, message in cases.items():
        for task in ("teacher", "student"):
            cfg = apply_overrides(get_preset("tiny_epam"), [override, f"task={task}"])
            cfg.distill.teachers = {"flow": "/runs/flow"}
            with pytest.raises(ValueError, match=message):
                cfg.validate()
    # an EPAM-Net student is valid (distillation: tests/training/test_training_epam_distill.py)
    cfg = apply_overrides(get_preset("tiny_epam"), ["task=student"])
    cfg.distill.teachers = {"flow": "/runs/flow"}
    assert cfg.validate().input_modalities() == ("rgb", "flow", "heatmap")
    with pytest.raises(ValueError, match="backbone='epam'"):
        build_classifier(get_preset("tiny_epam").model, 3, 3)
    # on the command line: exit status 2, the parameter named
    data, root = epam_runs["data"], epam_runs["root"]
    argv = ["train", "--preset", "tiny_epam", "--data_dir", data, "--model_dir", "x"]
    assert cli.main([*argv, "--set", "modality=pose"]) == 2
    assert "modality='pose'" in capsys.readouterr().err
    # an EPAM-Net teacher reads two modalities: it is keyed `epam`, not by a modality
    argv = ["distill", "--preset", "tiny_r3d50g_d3d", "--data_dir", data]
    argv += ["--model_dir", str(root / "d3d"), "--teacher", f"rgb={root / 'epam'}"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "distill.teachers['rgb']=" in err and "--teacher epam=DIR" in err


def test_the_paper_input_trains_on_three_heatmap_frames_per_rgb_frame(tiny_data, tmp_path):
    """`tiny_epam_paper`: 4 RGB frames and 12 heatmap frames per clip, TSN segments; two steps
    train and evaluate (the attention reads heatmap frames 0, 3, 6, 9)."""
    cfg = tiny("tiny_epam_paper", tiny_data, str(tmp_path / "paper"), train_steps=2)
    pattern = inputs.split_pattern(cfg.data, "train")
    ds = inputs.build_dataset(
        pattern, ["rgb", "heatmap"], training=True, batch_size=2, data=cfg.data
    )
    batch = next(iter(ds))
    assert batch["rgb"].shape[1] == 4 and batch["heatmap"].shape[1] == 12
    result = Trainer(cfg).run()
    assert result.eval is not None and result.eval.rows[0].clips == 6
    assert all(np.isfinite(m["loss"]) for _, m in result.history)
    assert load_config(str(tmp_path / "paper")).data.heatmap_frame_ratio == 3
