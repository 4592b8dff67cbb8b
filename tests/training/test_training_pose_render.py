"""Pose rendering at training time (`training.pose_render`, the `pose_live` modality).

The comparisons with the offline renderer (`render.skeleton.render_poses`) need OpenCV and are
skipped without it; the rest runs where only TensorFlow is installed.
"""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from training_records import clip_context, jpeg, write_records

from render import palette
from render.style import TABLE2_VARIANTS, VARIANTS
from schemas import layout
from schemas import media_sequence as ms
from training import inputs
from training.config import DataConfig, get_preset
from training.heatmaps import JOINT_FLIP
from training.pose_render import render_clip
from training.trainer import Trainer

needs_cv2 = pytest.mark.skipif(
    importlib.util.find_spec("cv2") is None, reason="the offline renderer needs OpenCV"
)

# A frontal person, pixel-centre coordinates (column, row) on a 240 x 240 frame.
PERSON = np.array(
    [
        (120, 40), (132, 28), (108, 28), (146, 36), (94, 36),  # nose, eyes, ears
        (160, 80), (80, 80),  # shoulders
        (190, 120), (50, 120),  # elbows
        (200, 165), (40, 165),  # wrists
        (145, 140), (95, 140),  # hips
        (150, 180), (90, 180),  # knees
        (155, 225), (85, 225),  # ankles
    ],
    np.float64,
)  # fmt: skip
H, W = 240, 320

# Agreement with the offline renderer on unflipped frames, per Table 2 variant, on `scene()`
# (measured: image mean 0.31-0.44 levels; skeleton mean 3.1-7.6; > 64 levels: 0.01-0.19 %).
MAX_MEAN_DIFF = 1.0  # mean |TF - OpenCV| over every pixel and channel, levels of 255
MAX_REGION_DIFF = 10.0  # the same over the pixels either renderer drew on
MAX_FAR_OFF = 0.005  # fraction of pixels off by more than 64 levels in some channel


def scene(height=H, width=W, seed=0):
    """uint8 frame [H, W, 3], keypoints [2, 17, 2], scores [2, 17], boxes [2, 4]: two persons,
    the second smaller, one of its joints below the threshold."""
    rng = np.random.default_rng(seed)
    frame = np.clip(rng.normal(90, 20, (height, width, 3)), 0, 255).astype(np.uint8)
    pixels = np.stack([PERSON, PERSON * 0.5 + [190, 100]])
    kp = ((pixels + 0.5) / [width, height]).astype(np.float32)
    scores = np.full((2, 17), 0.9, np.float32)
    scores[1, 9] = 0.1  # a left wrist the renderers leave out
    boxes = np.array([[0.05, 0.1, 0.98, 0.7], [0.4, 0.55, 0.95, 0.95]], np.float32)
    return frame, kp, scores, boxes


def draw(frame, kp, scores, boxes, style, *, flip=False, offset=(0, 0), crop=None, resized=None):
    """`render_clip` of one frame (T = 1): float32 [crop_h, crop_w, 3]."""
    height, width = frame.shape[:2] if frame is not None else (H, W)
    crop = crop or (height, width)
    out = render_clip(
        None if frame is None else tf.constant(frame[None], tf.float32),
        kp[None, ..., 0],
        kp[None, ..., 1],
        scores[None],
        boxes[None],
        style=style,
        frame_hw=[height, width],
        resized_hw=resized or [height, width],
        offset=list(offset),
        crop_hw=crop,
        flip=tf.constant(flip),
    )
    return out.numpy()[0]


def crop_frame(frame, offset, crop):
    return frame[offset[0] : offset[0] + crop[0], offset[1] : offset[1] + crop[1]]


@needs_cv2
@pytest.mark.parametrize("name", TABLE2_VARIANTS)
def test_every_table2_variant_matches_the_offline_renderer(name):
    from render import render_poses

    style = VARIANTS[name]
    frame, kp, scores, boxes = scene()
    want = render_poses(frame, kp, scores, boxes, style).astype(np.float32)
    got = draw(frame if style.background == "rgb" else None, kp, scores, boxes, style)
    base = frame if style.background == "rgb" else np.zeros_like(frame)
    diff = np.abs(got - want)
    drawn = (np.abs(want - base).max(-1) > 0) | (np.abs(got - base).max(-1) > 0)
    assert diff.mean() <= MAX_MEAN_DIFF, diff.mean()
    assert diff.mean(-1)[drawn].mean() <= MAX_REGION_DIFF, diff.mean(-1)[drawn].mean()
    assert (diff.max(-1) > 64).mean() <= MAX_FAR_OFF
    # The same pixels are drawn on (anti-aliased fringes aside) ...
    strong_cv = np.abs(want - base).max(-1) > 128
    strong_tf = np.abs(got - base).max(-1) > 128
    assert (strong_cv & strong_tf).sum() / (strong_cv | strong_tf).sum() > 0.85
    # ... and elsewhere the background is untouched.
    np.testing.assert_array_equal(got[~drawn], base[~drawn])
    if style.background == "black":  # coverage: the drawn area agrees within 10 %
        ratio = got.max(-1).sum() / want.max(-1).sum()
        assert 0.9 < ratio < 1.1, ratio


def test_a_crop_draws_what_the_whole_frame_draws_there_and_sizes_scale_with_the_resize():
    style = VARIANTS["rgb_bars_fine_ratio"]
    frame, kp, scores, boxes = scene()
    whole = draw(frame, kp, scores, boxes, style)
    offset, crop = (17, 40), (200, 232)
    part = render_clip(
        tf.constant(crop_frame(frame, offset, crop)[None], tf.float32),
        kp[None, ..., 0],
        kp[None, ..., 1],
        scores[None],
        boxes[None],
        style=style,
        frame_hw=[H, W],
        resized_hw=[H, W],
        offset=list(offset),
        crop_hw=crop,
        flip=tf.constant(False),
    ).numpy()[0]
    np.testing.assert_allclose(part, crop_frame(whole, offset, crop), atol=1e-3)
    # Resized to twice the size, the bars are twice as thick: twice the covered area, 4x.
    black = VARIANTS["black_bars_fine_ratio"]
    small = draw(None, kp, scores, boxes, black).max(-1).sum()
    big = render_clip(
        None,
        kp[None, ..., 0],
        kp[None, ..., 1],
        scores[None],
        boxes[None],
        style=black,
        frame_hw=[H, W],
        resized_hw=[2 * H, 2 * W],
        offset=[0, 0],
        crop_hw=(2 * H, 2 * W),
        flip=tf.constant(False),
    ).numpy()[0]
    assert 3.6 < big.max(-1).sum() / small < 4.4


@pytest.mark.parametrize("name", ["rgb_bars_fine_ratio", "black_dots_fine_ratio"])
def test_mirroring_swaps_left_and_right_so_colours_keep_their_side(name):
    style = VARIANTS[name]
    frame, kp, scores, boxes = scene()
    # The pipeline's flip: mirrored frames, keypoints mirrored with left and right swapped ...
    mirrored = draw(frame[:, ::-1].copy(), kp, scores, boxes, style, flip=True)
    # ... is the mirror image of drawing the swapped skeleton on the frame.
    swapped = draw(frame, kp[:, list(JOINT_FLIP)], scores[:, list(JOINT_FLIP)], boxes, style)
    np.testing.assert_allclose(mirrored, swapped[:, ::-1], atol=1e-2)
    if style.marker == "bars":
        # The person's right upper arm (joints 6 - 8) is the left one of the mirrored person:
        # mirrored, its middle is drawn in the left upper arm's colour, not the right one's.
        middle = (PERSON[6] + PERSON[8]) / 2
        column, row = int(round(W - 1 - middle[0])), int(round(middle[1]))
        left = palette.PALETTE[palette.SEGMENTS[0].color]  # left_upper_arm
        right = palette.PALETTE[palette.SEGMENTS[2].color]  # right_upper_arm
        assert tuple(np.round(mirrored[row, column]).astype(int)) == left != right
    else:
        # The person's right wrist (joint 10), mirrored, is a left wrist: the left wrist's dot.
        column, row = int(round(W - 1 - PERSON[10][0])), int(round(PERSON[10][1]))
        left_wrist = palette.PALETTE[palette.JOINT_COLORS[9]]
        assert tuple(np.round(mirrored[row, column]).astype(int)) == left_wrist


@needs_cv2
def test_mirroring_matches_the_offline_render_of_the_swapped_skeleton():
    from render import render_poses

    style = VARIANTS["rgb_bars_coarse_ratio"]
    frame, kp, scores, boxes = scene()
    mirrored = draw(frame[:, ::-1].copy(), kp, scores, boxes, style, flip=True)
    flip = list(JOINT_FLIP)
    offline = render_poses(frame, kp[:, flip], scores[:, flip], boxes, style)[:, ::-1]
    assert np.abs(mirrored - offline).mean() <= MAX_MEAN_DIFF


# ---------------------------------------------------------------------------------------------
# The `pose_live` modality in the input pipeline.
# ---------------------------------------------------------------------------------------------
FH, FW = 60, 80  # stored frames of the pipeline tests
CROP = (48, 64)


def clip_record(example_id, label, num_frames, rng, *, pose_stream):
    """A clip with one or two moving persons: RGB frames and keypoints, plus the offline
    pose-rendered frames when `pose_stream` (OpenCV), else the keypoints alone."""
    streams = {ms.MODALITY_RGB: ms.StreamInfo(FH, FW)}
    if pose_stream:
        from render import render_poses

        streams[ms.MODALITY_POSE] = ms.StreamInfo(FH, FW)
    context = clip_context(example_id, label, num_frames, "live", str(label))
    builder = ms.SequenceExampleBuilder(context, streams, keypoints=not pose_stream)
    for t in range(num_frames):
        frame = np.clip(rng.normal(100 + 40 * label, 15, (FH, FW, 3)), 0, 255).astype(np.uint8)
        people = 1 + (t % 2)
        pixels = np.stack([PERSON * 0.22 + [8 + t, 2], PERSON * 0.15 + [48, 20 - t]])[:people]
        kp = ((pixels + 0.5) / [FW, FH]).astype(np.float32)
        scores = np.full((people, 17), 0.9, np.float32)
        boxes = np.array([[0.0, 0.1, 0.95, 0.7], [0.3, 0.6, 0.9, 0.95]], np.float32)[:people]
        pose_jpeg = None
        if pose_stream:
            pose_jpeg = jpeg(render_poses(frame, kp, scores, boxes))
        builder.add_frame(
            t * 40_000,
            rgb_jpeg=jpeg(frame),
            pose_jpeg=pose_jpeg,
            keypoints=kp,
            keypoint_scores=scores,
            boxes=boxes,
            box_scores=np.full(people, 0.9, np.float32),
        )
    return builder.serialize()


def write_live_dataset(root, *, pose_stream):
    rng = np.random.default_rng(1)
    train = [clip_record(f"t{i}", i % 3, 10, rng, pose_stream=pose_stream) for i in range(6)]
    evals = [clip_record(f"v{i}", i % 3, 8, rng, pose_stream=pose_stream) for i in range(3)]
    write_records(os.path.join(root, layout.shard_path("train", "live", 0, 1)), train)
    write_records(os.path.join(root, layout.shard_path("validation", "live", 0, 1)), evals)
    held = ["rgb", "pose"] if pose_stream else ["rgb", "keypoints"]
    info = {
        "schema_version": ms.SCHEMA_VERSION,
        "dataset_name": "live",
        "num_classes": 3,
        "labels": ["0", "1", "2"],
        "modalities": held,
    }
    with open(os.path.join(root, layout.DATASET_INFO), "w") as f:
        json.dump(info, f)
    return root


@pytest.fixture(scope="module")
def keypoint_data(tmp_path_factory):
    """RGB frames and keypoints, no pose-rendered stream."""
    return write_live_dataset(str(tmp_path_factory.mktemp("live")), pose_stream=False)


def one_batch(data, modalities, training, batch_size=6):
    pattern = inputs.split_pattern(data, "train" if training else "eval")
    ds = inputs.build_dataset(
        pattern, modalities, training=training, batch_size=batch_size, data=data
    )
    return {k: v.numpy() for k, v in next(iter(ds)).items()}


def test_pose_live_draws_on_the_rgb_clip_of_records_without_pose_frames(keypoint_data):
    # Brightness jitter shifts both alike; contrast jitter scales about each clip's own mean.
    data = DataConfig(data_dir=keypoint_data, num_frames=6, crop_size=CROP, seed=3)
    data.brightness_max_delta, data.contrast_range = 0.1, (1.0, 1.0)
    assert inputs.resolve_num_classes(data, ["rgb", "pose_live"]) == 3
    inputs.check_records(inputs.split_pattern(data, "train"), ["rgb", "pose_live"])
    batch = one_batch(data, ["rgb", "pose_live"], training=True)
    rgb, live = batch["rgb"], batch["pose_live"]
    assert live.shape == rgb.shape == (6, 6, *CROP, 3) and live.dtype == np.float32
    assert live.min() >= -1 and live.max() <= 1
    changed = np.abs(live - rgb).max(-1) > 1e-6
    # The same crop, flip and jitter as `rgb`: equal outside the skeletons, which are drawn.
    assert 0.02 < changed.mean() < 0.5
    assert changed.reshape(6, -1).any(axis=1).all()
    # A black background draws the same skeletons on zeros (-1 after scaling, no jitter).
    data.brightness_max_delta = 0.0
    plain = one_batch(data, ["rgb", "pose_live"], training=True)
    changed = np.abs(plain["pose_live"] - plain["rgb"]).max(-1) > 1e-6
    data.render_style = "black_bars_fine_ratio"
    black = one_batch(data, ["pose_live"], training=True)["pose_live"]
    lit = black.max(-1) > -1 + 1e-6
    assert (lit == changed).mean() > 0.97


@needs_cv2
def test_pose_live_matches_the_stored_pose_stream_under_the_same_crop(tmp_path):
    root = write_live_dataset(str(tmp_path), pose_stream=True)
    data = DataConfig(data_dir=root, num_frames=6, crop_size=CROP, random_flip=True, seed=5)
    data.eval_num_frames, data.eval_crop_size = 6, CROP
    data.brightness_max_delta, data.contrast_range = 0.0, (1.0, 1.0)
    evals = one_batch(data, ["rgb", "pose", "pose_live"], training=False, batch_size=3)
    # Unflipped: the offline frames (drawn, then JPEG-coded) within the renderer's tolerance.
    diff = np.abs(evals["pose"] - evals["pose_live"]) * 127.5
    noise = np.abs(evals["pose"] - evals["rgb"]) * 127.5
    assert diff.mean() < noise.mean()  # the stored pose-rendered frames differ more from RGB
    assert diff.mean() < 4.0, diff.mean()
    # Training crops and flips: the skeletons are where the stored stream has them.
    train = one_batch(data, ["rgb", "pose", "pose_live"], training=True)
    stored = np.abs(train["pose"] - train["rgb"]).max(-1) * 127.5 > 40
    drawn = np.abs(train["pose_live"] - train["rgb"]).max(-1) * 127.5 > 40
    assert (stored & drawn).sum() / (stored | drawn).sum() > 0.6


def test_pose_live_names_the_missing_keypoints(tiny_data, tmp_path):
    data = DataConfig(data_dir=tiny_data, num_frames=4, crop_size=(32, 32))
    info = {
        "schema_version": ms.SCHEMA_VERSION,
        "dataset_name": "tiny",
        "num_classes": 3,
        "labels": ["a", "b", "c"],
        "modalities": ["rgb", "flow"],
    }
    os.makedirs(tmp_path / "train")
    with open(tmp_path / layout.DATASET_INFO, "w") as f:
        json.dump(info, f)
    with pytest.raises(inputs.DataError, match="'pose_live' draws the records' keypoints"):
        inputs.resolve_num_classes(DataConfig(data_dir=str(tmp_path)), ["pose_live"])
    assert inputs.resolve_num_classes(data, ["pose_live"]) == 3


def test_render_style_is_validated_naming_the_field():
    data = DataConfig(render_style="rgb_dots_fine_ratio")
    data.validate()
    assert data.pose_live_style() == VARIANTS["rgb_dots_fine_ratio"]
    same = DataConfig(render_style="variant=rgb_dots_fine_ratio")
    assert data.modality_differences(same, "pose_live") == []
    other = DataConfig(render_style="rgb_dots_fine_ratio,threshold=0.5")
    with pytest.raises(ValueError, match="must be key=value"):
        other.validate()  # a bare variant name is no spec item
    other = DataConfig(render_style="variant=rgb_dots_fine_ratio,threshold=0.5")
    assert data.modality_differences(other, "pose_live") == [
        "render_style='rgb_dots_fine_ratio' "
        "(trained with 'variant=rgb_dots_fine_ratio,threshold=0.5')"
    ]
    with pytest.raises(ValueError, match=r"data\.render_style='marker=lines'"):
        DataConfig(render_style="marker=lines").validate()


def test_a_pose_live_teacher_trains_and_a_student_refuses_it_with_another_style(
    keypoint_data, tmp_path
):
    cfg = get_preset("tiny_r3d50g_teacher_pose_live")
    cfg.data.data_dir, cfg.model_dir = keypoint_data, str(tmp_path / "live")
    cfg.data.render_style = "black_bars_fine_ratio"
    cfg.data.crop_size = cfg.data.eval_crop_size = CROP
    cfg.train.train_steps, cfg.train.global_batch_size, cfg.train.eval_batch_size = 1, 4, 3
    result = Trainer(cfg).run()
    assert result.final_step == 1 and np.isfinite(result.history[0][1]["loss"])
    assert result.eval.rows[0].clips == 3
    student = get_preset("tiny_r3d50g_student")
    student.data.data_dir, student.model_dir = keypoint_data, str(tmp_path / "student")
    student.distill.teachers = {"pose_live": cfg.model_dir}
    with pytest.raises(ValueError, match="would draw its pose frames with render_style=''"):
        Trainer(student).run()
