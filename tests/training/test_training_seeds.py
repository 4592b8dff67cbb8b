"""Run seeds: derived from the config name, the model's inputs and `--seed N`; they seed the
input pipeline and the weight initialization, are recorded in config.json and kept on resume."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from training import main as cli
from training.config import derive_seed, get_preset
from training.trainer import Trainer


def tiny(name: str, data_dir: str, model_dir: str, seed: int = 0):
    cfg = get_preset(name)
    cfg.data.data_dir = data_dir
    cfg.model_dir = model_dir
    cfg.seed = seed
    return cfg


def weights(name: str, data_dir: str, tmp_path, seed: int = 0) -> list[np.ndarray]:
    return Trainer(tiny(name, data_dir, str(tmp_path / "unused"), seed)).initial_weights()


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(
        x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, b)
    )


def test_derive_seed_exact_values():
    # sha256("tiny_r3d50g_teacher_rgb/rgb/0")[:4] big-endian, top bit cleared
    assert derive_seed("tiny_r3d50g_teacher_rgb", ("rgb",), 0) == 1341559807
    assert derive_seed("tiny_epam", ("rgb", "heatmap"), 0) == 26179034
    assert derive_seed("k600_r3d50g_teacher_pose", ["pose"], 1) == 1176861666
    assert 0 <= derive_seed("x", ("rgb",), 2**40) < 2**31
    with pytest.raises(ValueError, match="seed=-1"):
        derive_seed("x", ("rgb",), -1)


def test_resolved_seed_follows_name_modality_and_seed():
    cfg = get_preset("tiny_r3d50g_teacher_pose")
    assert cfg.resolved_seed() == derive_seed("tiny_r3d50g_teacher_pose", ("pose",), 0)
    cfg.seed = 4
    assert cfg.resolved_seed() == derive_seed("tiny_r3d50g_teacher_pose", ("pose",), 4)
    assert get_preset("tiny_epam").resolved_seed() == 26179034  # EPAM-Net: rgb+heatmap
    cfg.data.seed = None  # a fresh seed per run stays so
    assert cfg.resolved_seed() is None


def test_same_seed_same_initial_weights(tiny_data, tmp_path):
    a = weights("tiny_r3d50g_teacher_rgb", tiny_data, tmp_path, seed=0)
    b = weights("tiny_r3d50g_teacher_rgb", tiny_data, tmp_path, seed=0)
    assert same(a, b)


def test_different_seeds_different_initial_weights(tiny_data, tmp_path):
    a = weights("tiny_r3d50g_teacher_rgb", tiny_data, tmp_path, seed=0)
    b = weights("tiny_r3d50g_teacher_rgb", tiny_data, tmp_path, seed=1)
    assert [x.shape for x in a] == [y.shape for y in b]
    assert not same(a, b)


def test_rgb_and_pose_teachers_start_apart(tiny_data, tmp_path):
    rgb = weights("tiny_r3d50g_teacher_rgb", tiny_data, tmp_path, seed=3)
    pose = weights("tiny_r3d50g_teacher_pose", tiny_data, tmp_path, seed=3)
    assert [x.shape for x in rgb] == [y.shape for y in pose]  # both read 3 channels
    assert not same(rgb, pose)


@pytest.mark.slow
def test_config_json_records_the_seed_and_resume_keeps_it(tiny_data, tmp_path, capsys):
    model_dir = str(tmp_path / "rgb")
    argv = ["train", "--preset", "tiny_r3d50g_teacher_rgb", "--data_dir", tiny_data]
    argv += ["--model_dir", model_dir, "--set", "train.eval_at_end=false"]
    assert cli.main([*argv, "--seed", "5", "--set", "train.train_steps=1"]) == 0
    with open(os.path.join(model_dir, "config.json")) as f:
        recorded = json.load(f)
    expected = derive_seed("tiny_r3d50g_teacher_rgb", ("rgb",), 5)
    assert recorded["seed"] == 5 and recorded["data"]["seed"] == expected
    # resuming with another seed is refused, naming both
    capsys.readouterr()
    assert cli.main([*argv, "--seed", "6", "--set", "train.train_steps=2"]) == 2
    err = capsys.readouterr().err
    assert "seed=6" in err and "seed=5" in err
    # the same command resumes with the recorded seed
    assert cli.main([*argv, "--seed", "5", "--set", "train.train_steps=2"]) == 0
    assert "steps: 1 -> 2" in capsys.readouterr().out
    with open(os.path.join(model_dir, "config.json")) as f:
        assert json.load(f)["data"]["seed"] == expected
