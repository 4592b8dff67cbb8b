"""Eq. (1) by hand, the unified-loss ablation, L2, the schedule, top-k and late fusion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from training import losses
from training.config import OptimizerConfig
from training.evaluate import FusionAccumulator, combinations, correct_at_k
from training.schedule import build_schedule

S = [[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]]  # student logits, 2 clips x 3 classes
LABELS = [0, 1]
T_FLOW = [[1.0, 1.0, 1.0], [0.0, 2.0, 0.0]]
T_POSE = [[3.0, -1.0, 0.0], [1.0, 1.0, 1.0]]


def hand_cross_entropy() -> float:
    ce0 = math.log(math.exp(2) + math.exp(0) + math.exp(-1)) - 2.0
    ce1 = math.log(math.exp(0.5) + math.exp(1.5) + math.exp(0)) - 1.5
    return (ce0 + ce1) / 2


def test_separate_loss_is_equation_1_by_hand():
    # MSE(T_flow, S): squared differences (1 + 1 + 4) + (0.25 + 0.25 + 0) over 6 entries
    # MSE(T_pose, S): (1 + 1 + 1) + (0.25 + 0.25 + 1) over 6 entries
    expected = hand_cross_entropy() + 6.5 / 6 + 4.5 / 6
    total, ce, distill = losses.student_loss(
        tf.constant(LABELS), tf.constant(S), {"flow": tf.constant(T_FLOW), "pose": T_POSE}, "sl"
    )
    assert float(ce) == pytest.approx(hand_cross_entropy(), rel=1e-6)
    assert float(distill) == pytest.approx(11.0 / 6, rel=1e-6)
    assert float(total) == pytest.approx(expected, rel=1e-6)


def test_unified_loss_regresses_the_sum_of_teacher_logits():
    # sum of teachers [[4, 0, 1], [1, 3, 1]]: (4 + 0 + 4) + (0.25 + 2.25 + 1) over 6 entries
    total, _, distill = losses.student_loss(
        tf.constant(LABELS), tf.constant(S), [tf.constant(T_FLOW), tf.constant(T_POSE)], "ul"
    )
    assert float(distill) == pytest.approx(11.5 / 6, rel=1e-6)
    assert float(total) == pytest.approx(hand_cross_entropy() + 11.5 / 6, rel=1e-6)


def test_d3d_single_teacher_and_distill_weight():
    total, ce, distill = losses.student_loss(
        LABELS, tf.constant(S), {"flow": tf.constant(T_FLOW)}, "sl", distill_weight=0.5
    )
    assert float(distill) == pytest.approx(6.5 / 6, rel=1e-6)
    assert float(total) == pytest.approx(float(ce) + 0.5 * 6.5 / 6, rel=1e-6)


def test_per_replica_losses_sum_to_the_global_mean():
    s, t = tf.constant(S), tf.constant(T_FLOW)
    halves = [
        losses.student_loss(LABELS[i : i + 1], s[i : i + 1], [t[i : i + 1]], "sl", 1.0, 2)[0]
        for i in range(2)
    ]
    full = losses.student_loss(LABELS, s, [t], "sl")[0]
    assert float(halves[0] + halves[1]) == pytest.approx(float(full), rel=1e-6)


def test_no_gradient_reaches_the_teachers():
    s, t = tf.Variable(S), tf.Variable(T_FLOW)
    with tf.GradientTape(persistent=True) as tape:
        total, _, _ = losses.student_loss(LABELS, s, [t], "sl")
        ce = losses.cross_entropy(LABELS, s)
    assert tape.gradient(total, t) is None
    # d MSE / d S = 2 (S - T) / (B * C)
    expected_distill_grad = 2 * (np.array(S) - np.array(T_FLOW)) / 6
    ce_grad = tape.gradient(ce, s).numpy()
    np.testing.assert_allclose(
        tape.gradient(total, s).numpy(), ce_grad + expected_distill_grad, rtol=1e-5
    )


def test_l2_penalty_is_half_wd_times_the_squared_norm():
    kernels = [tf.constant([[1.0, -2.0]]), tf.constant([3.0])]
    assert float(losses.l2_penalty(kernels, 1e-4)) == pytest.approx(0.5e-4 * 14, rel=1e-6)
    assert float(losses.l2_penalty(kernels, 0.0)) == 0.0


def test_loss_errors_name_the_parameter():
    with pytest.raises(ValueError, match="mode='kl'"):
        losses.distillation_loss(tf.constant(S), [tf.constant(T_FLOW)], "kl")
    with pytest.raises(ValueError, match="logits.shape="):
        losses.cross_entropy(LABELS, tf.constant([1.0, 2.0]))
    with pytest.raises(ValueError, match="teacher_logits"):
        losses.distillation_loss(tf.constant(S), [], "sl")


@pytest.mark.parametrize(
    ("step", "rate"),
    [(0, 0.0), (1000, 0.8), (2000, 1.6), (12000, 0.8), (22000, 0.0), (30000, 0.0)],
)
def test_schedule_warms_up_to_1_6_at_batch_2048_then_decays_by_cosine(step, rate):
    schedule = build_schedule(OptimizerConfig(), global_batch_size=2048)
    assert float(schedule(step)) == pytest.approx(rate, abs=1e-6)


def test_schedule_scales_linearly_with_the_global_batch():
    assert float(build_schedule(OptimizerConfig(), 256)(2000)) == pytest.approx(0.2)
    assert float(build_schedule(OptimizerConfig(), 306)(2000)) == pytest.approx(1.6 * 306 / 2048)
    with pytest.raises(ValueError, match="global_batch_size=0"):
        build_schedule(OptimizerConfig(), 0)


def test_top_k_counts_ties_for_the_true_class():
    logits = np.array([[3.0, 1.0, 2.0], [1.0, 1.0, 0.0], [0.0, 1.0, 2.0]])
    labels = np.array([0, 1, 0])
    np.testing.assert_array_equal(correct_at_k(logits, labels, 1), [True, True, False])
    np.testing.assert_array_equal(correct_at_k(logits, labels, 2), [True, True, False])
    np.testing.assert_array_equal(correct_at_k(logits, labels, 3), [True, True, True])


def test_late_fusion_sums_logits_over_every_combination():
    assert combinations(["rgb", "flow", "pose"]) == [
        ("rgb",),
        ("flow",),
        ("pose",),
        ("rgb", "flow"),
        ("rgb", "pose"),
        ("flow", "pose"),
        ("rgb", "flow", "pose"),
    ]
    acc = FusionAccumulator(["rgb", "flow"], num_classes=3)
    rgb = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 5.0, 0.0]])
    flow = np.array([[0.0, 3.0, 0.0], [0.0, 2.0, 0.0], [9.0, 0.0, 0.0]])
    # labels 0, 1, and a padded third clip (mask 0) that must not count
    acc.update({"rgb": rgb, "flow": flow}, [0, 1, 2], [1.0, 1.0, 0.0])
    report = acc.report()
    assert report.row("rgb").top1 == 0.5  # clip 0 right, clip 1 wrong
    assert report.row("flow").top1 == 0.5  # clip 0 wrong, clip 1 right
    assert report.row("rgb", "flow").top1 == 0.5  # fused [2, 3, 0] wrong, [0, 2, 1] right
    assert report.row("rgb").top5 == 1.0 and report.top5_k == 3
    assert report.row("rgb", "flow").clips == 2
    table = report.table()
    assert "| rgb+flow" in table and "top-3 (%)" in table and "50.00" in table
