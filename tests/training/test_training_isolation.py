"""The training package imports and trains where Beam, MediaPipe and OpenCV cannot be imported
(a TPU VM), and its multi-replica path runs on two logical CPU devices. Both in subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from training_records import run_without_pipeline_imports

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BLOCKED_RUN = textwrap.dedent(
    """
    import importlib, pkgutil
    for name in BLOCKED:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
        else:
            raise SystemExit(f"the blocker let {name} through")

    import training
    names = [f"training.{m.name}" for m in pkgutil.iter_modules(training.__path__)]
    for name in names:
        if name != "training.__main__":  # runs the command line
            importlib.import_module(name)
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not leaked, leaked
    # The styles come from render's OpenCV-free modules, never from render.skeleton (OpenCV).
    assert "render.style" in sys.modules and "render.skeleton" not in sys.modules

    import tensorflow as tf
    from render.style import VARIANTS
    from training.pose_render import render_clip

    drawn = render_clip(
        tf.zeros([1, 16, 16, 3]), tf.fill([1, 1, 17], 0.5), tf.fill([1, 1, 17], 0.5),
        tf.ones([1, 1, 17]), tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        style=VARIANTS["rgb_dots_fine_ratio"], frame_hw=[16, 16], resized_hw=[16, 16],
        offset=[0, 0], crop_hw=(16, 16), flip=tf.constant(False),
    )
    assert float(tf.reduce_max(drawn)) > 0

    from training.config import get_preset
    from training.trainer import Trainer

    cfg = get_preset("tiny_r3d50g_teacher_rgb")
    cfg.data.data_dir, cfg.model_dir = sys.argv[1], sys.argv[2]
    cfg.train.train_steps, cfg.train.eval_at_end = 1, False
    result = Trainer(cfg).run()
    assert result.final_step == 1 and result.checkpoint.endswith("ckpt-1"), result
    print("imported", len(names), "modules; trained 1 step")
    """
)

TWO_REPLICAS = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
    import keras
    from training import distribute, losses
    from training.config import RuntimeConfig, get_preset
    from training.trainer import Trainer

    strategy = distribute.get_strategy(RuntimeConfig(distribution="mirrored"))
    assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync

    # 1. One SGD step on 2 replicas (each with half the batch, loss / global batch, gradients
    #    summed across replicas) equals the step on one device with the whole batch.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 5)).astype("float32")
    y = np.array([0, 1, 2, 1], "int32")
    w0 = rng.normal(size=(5, 3)).astype("float32")

    def step(model, optimizer, xb, yb):
        with tf.GradientTape() as tape:
            loss = losses.cross_entropy(yb, model(xb), global_batch_size=4)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    def make():
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, use_bias=False)])
        model.layers[0].kernel.assign(w0)
        return model, keras.optimizers.SGD(0.5)

    with strategy.scope():
        dist_model, dist_opt = make()
    batch = next(iter(strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((x, y)).batch(4))))
    per_replica = strategy.run(
        tf.function(lambda xb, yb: step(dist_model, dist_opt, xb, yb)), args=batch
    )
    dist_loss = strategy.reduce("SUM", per_replica, axis=None)
    local_model, local_opt = make()
    local_loss = step(local_model, local_opt, x, y)
    np.testing.assert_allclose(float(dist_loss), float(local_loss), rtol=1e-6)
    np.testing.assert_allclose(
        dist_model.layers[0].kernel.numpy(), local_model.layers[0].kernel.numpy(), rtol=1e-5
    )
    assert not np.allclose(local_model.layers[0].kernel.numpy(), w0)

    # 2. A teacher and a student job on the two replicas, evaluation included.
    data, root = sys.argv[1], sys.argv[2]
    teacher = get_preset("tiny_r3d50g_teacher_flow")
    teacher.data.data_dir, teacher.model_dir = data, os.path.join(root, "flow")
    teacher.runtime.distribution = "mirrored"
    teacher.train.train_steps = 3
    t = Trainer(teacher, strategy).run()  # one strategy per process: collective keys
    student = get_preset("tiny_r3d50g_d3d")
    student.data.data_dir, student.model_dir = data, os.path.join(root, "student")
    student.runtime.distribution = "mirrored"
    student.train.train_steps = 2
    student.distill.teachers = {"flow": teacher.model_dir}
    s = Trainer(student, strategy).run()
    for result in (t, s):
        with open(os.path.join(result.model_dir, "run.json")) as f:
            run = json.load(f)
        assert (run["strategy"], run["replicas"], run["per_replica_batch"]) == (
            "MirroredStrategy", 2, 4), run
        assert all(np.isfinite(m["loss"]) for _, m in result.history)
        assert result.eval.rows[0].clips == 6, result.eval.rows
    assert t.final_step == 3 and s.final_step == 2
    assert s.history[0][1]["distill"] > 0
    print("two replicas OK")
    """
)


def run_python(script: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_training_imports_and_trains_without_beam_mediapipe_or_opencv(tiny_data, tmp_path):
    proc = run_without_pipeline_imports(BLOCKED_RUN, tiny_data, str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "trained 1 step" in proc.stdout


@pytest.mark.slow
def test_two_logical_cpu_replicas(tiny_data, tmp_path):
    proc = run_python(TWO_REPLICAS, tiny_data, str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr[-6000:]
    assert "two replicas OK" in proc.stdout
