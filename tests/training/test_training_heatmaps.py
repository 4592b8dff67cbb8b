"""The `heatmap` modality: skeleton heatmap volumes built from the records' keypoints, checked
frame by frame against heatmaps built here in numpy from the same keypoints, under the RGB
stream's window, crop and mirroring; records without keypoints; training on heatmaps."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from training_records import jpeg, write_records

from schemas import layout
from schemas import media_sequence as ms
from training import heatmaps, inputs, models
from training.config import (
    MODALITIES,
    TINY_S3DG,
    DataConfig,
    apply_overrides,
    get_preset,
)
from training.trainer import Trainer, load_config

H, W, N = 32, 40, 20  # stored frame size and frames of the test clip
EMPTY_FRAME = 7  # nobody in it
SECOND_PERSON = range(10, N)  # frames with a second person overlapping the first
LOW = 9  # left wrist: the first person's low-score joint
LOW_SCORE = 0.1
SECOND_SCORE = 0.95
# COCO-17 mirrored by hand: nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles.
HAND_FLIP = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]
NO_JITTER = dict(brightness_max_delta=0.0, contrast_range=(1.0, 1.0))


def coordinate_frame(t: int) -> np.ndarray:
    """R = 6x, G = 6y, B = 12t: every pixel tells where (and when) it came from."""
    y, x = np.mgrid[0:H, 0:W]
    return np.stack([6 * x, 6 * y, np.full_like(x, 12 * t)], -1).astype(np.uint8)


def first_person(t: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel (column, row) [17, 2] of the first person's joints in frame t, and their scores:
    joint k at column 2 + k + t, row 6 + k (pixel centres), score 0.5 + 0.025 k but LOW."""
    k = np.arange(ms.NUM_JOINTS)
    pixels = np.stack([2 + k + t, 6 + k], -1)
    scores = 0.5 + 0.025 * k
    scores[LOW] = LOW_SCORE
    return pixels, scores


def clip_persons(t: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel positions [P, 17, 2] and scores [P, 17] of frame t: one person, none in
    EMPTY_FRAME, and in SECOND_PERSON a second one one pixel to the right, scoring higher."""
    if t == EMPTY_FRAME:
        return np.zeros((0, ms.NUM_JOINTS, 2)), np.zeros((0, ms.NUM_JOINTS))
    pixels, scores = first_person(t)
    if t in SECOND_PERSON:
        pixels = np.stack([pixels, pixels + [1, 0]])
        scores = np.stack([scores, np.full(ms.NUM_JOINTS, SECOND_SCORE)])
    else:
        pixels, scores = pixels[None], scores[None]
    return pixels, scores


def normalized(pixels: np.ndarray) -> np.ndarray:
    """Pixel centres -> the record's normalized (x, y) of the stored frame."""
    return (pixels + 0.5) / np.array([W, H])


def keypoint_clip(
    example_id: str,
    label: int = 0,
    pose: bool = True,
    persons=clip_persons,
    rendered: bool = True,
    rgb: bool = True,
):
    """A record of N coordinate frames (RGB and pose-rendered) with `persons(t)`'s keypoints;
    `pose=False`: RGB only, no keypoints; `rendered=False`: the keypoints without the
    pose-rendered frames (the `keypoints` modality); `rgb=False`: no RGB stream."""
    streams = {ms.MODALITY_RGB: ms.StreamInfo(H, W)} if rgb else {}
    if pose and rendered:
        streams[ms.MODALITY_POSE] = ms.StreamInfo(H, W)
    ctx = ms.ClipContext(example_id, "kp", f"/v/{example_id}.mp4", example_id, 0, N * 40_000,
                         label, f"c{label}")  # fmt: skip
    builder = ms.SequenceExampleBuilder(ctx, streams, keypoints=pose and not rendered)
    for t in range(N):
        frame = jpeg(coordinate_frame(t), quality=100)
        kwargs = {}
        if pose:
            pixels, scores = persons(t)
            num = len(scores)
            kwargs = dict(
                pose_jpeg=frame if rendered else None,
                keypoints=normalized(pixels),
                keypoint_scores=scores,
                boxes=np.tile([0.1, 0.1, 0.9, 0.9], (num, 1)),
                box_scores=np.full(num, 0.9),
                track_ids=np.arange(num),
            )
        builder.add_frame(t * 40_000, rgb_jpeg=frame if rgb else None, **kwargs)
    return builder.serialize()


@pytest.fixture(scope="module")
def keypoint_shard(tmp_path_factory) -> str:
    """16 copies of the keypoint clip."""
    path = str(tmp_path_factory.mktemp("kp") / "kp-00000-of-00001.tfrecord")
    write_records(path, [keypoint_clip(f"kp{i}") for i in range(16)])
    return path


def reference(
    ts,
    *,
    crop=(H, W),
    offset=(0, 0),
    resized=(H, W),
    flip=False,
    stride=1,
    sigma=0.6,
    threshold=0.3,
    limbs=False,
):
    """float64 [T, ceil(ch / stride), ceil(cw / stride), 17]: the heatmaps of frames `ts` of
    the keypoint clip, built here: keypoints to crop pixels (mirrored and swapped by hand),
    to heatmap cells, a Gaussian per joint (or limb) and person, the maximum over persons."""
    ch, cw = crop
    gh, gw = math.ceil(ch / stride), math.ceil(cw / stride)
    rows, cols = np.mgrid[0:gh, 0:gw].astype(np.float64)
    out = np.zeros((len(ts), gh, gw, ms.NUM_JOINTS))
    for i, t in enumerate(ts):
        pixels, scores = clip_persons(int(t))
        xy = normalized(pixels).astype(np.float32).astype(np.float64)  # as stored
        for p in range(len(scores)):
            u = xy[p, :, 0] * resized[1] - offset[1]  # pixels from the crop's left edge
            v = xy[p, :, 1] * resized[0] - offset[0]
            s = np.where(scores[p] >= threshold, scores[p], 0.0)
            if flip:  # mirror the crop, then left is right
                u = (cw - u)[HAND_FLIP]
                v, s = v[HAND_FLIP], s[HAND_FLIP]
            gx, gy = u * gw / cw - 0.5, v * gh / ch - 0.5
            for c in range(ms.NUM_JOINTS):
                if limbs:
                    a, b = heatmaps.LIMBS[c]
                    d2 = segment_distance2(cols, rows, (gx[a], gy[a]), (gx[b], gy[b]))
                    heat = min(s[a], s[b]) * np.exp(-d2 / (2 * sigma**2))
                else:
                    d2 = (cols - gx[c]) ** 2 + (rows - gy[c]) ** 2
                    heat = s[c] * np.exp(-d2 / (2 * sigma**2))
                out[i, ..., c] = np.maximum(out[i, ..., c], heat)
    return out


def segment_distance2(px, py, a, b):
    """Squared distance of points (px, py) to the segment a-b."""
    ex, ey = b[0] - a[0], b[1] - a[1]
    length2 = ex * ex + ey * ey
    t = 0.0 if length2 == 0 else np.clip(((px - a[0]) * ex + (py - a[1]) * ey) / length2, 0, 1)
    return (px - a[0] - t * ex) ** 2 + (py - a[1] - t * ey) ** 2


def batches(pattern, modalities, data, n, training=True, batch_size=4):
    ds = inputs.build_dataset(
        pattern, modalities, training=training, batch_size=batch_size, data=data
    )
    return [{k: v.numpy() for k, v in b.items()} for b in ds.take(n)]


def rgb_geometry(clip_rgb: np.ndarray, crop_w: int):
    """(frame indices, (y0, x0), flipped) of a clip, read off its coordinate-coded RGB (means
    over the crop average the JPEG noise out)."""
    q = (clip_rgb.astype(np.float64) + 1.0) * 127.5
    ts = np.round(q[..., 2].mean(axis=(1, 2)) / 12).astype(int)
    xs = q[..., 0].mean(axis=(0, 1)) / 6  # per crop column
    ys = q[..., 1].mean(axis=(0, 2)) / 6  # per crop row
    flipped = bool(xs[0] > xs[-1])
    columns = np.arange(crop_w)[::-1] if flipped else np.arange(crop_w)
    x0 = np.round(np.mean(xs - columns))
    y0 = np.round(np.mean(ys - np.arange(len(ys))))
    assert np.abs(xs - columns - x0).max() < 1 and np.abs(ys - np.arange(len(ys)) - y0).max() < 1
    return ts, (int(y0), int(x0)), flipped


def test_the_flip_permutation_and_the_limbs_swap_left_and_right():
    assert list(heatmaps.JOINT_FLIP) == HAND_FLIP
    for limb, mirrored in zip(heatmaps.LIMBS, heatmaps.LIMB_FLIP):
        a, b = heatmaps.LIMBS[mirrored]
        assert {HAND_FLIP[limb[0]], HAND_FLIP[limb[1]]} == {a, b}
    assert inputs.MODEL_CHANNELS["heatmap"] == 17 == len(heatmaps.LIMBS)
    assert heatmaps.grid_size((224, 224), 4) == (56, 56)
    assert heatmaps.grid_size((224, 298), 4) == (56, 75)


def test_peaks_sit_on_the_keypoints_with_their_scores(keypoint_shard):
    # the whole clip, uncropped, at full resolution: every keypoint is a pixel centre
    data = DataConfig(eval_num_frames=N, eval_crop_size=(H, W), heatmap_stride=1)
    heat = batches(keypoint_shard, ["heatmap"], data, 1, training=False, batch_size=1)[0]
    heat = heat["heatmap"][0]
    assert heat.shape == (N, H, W, 17) and heat.dtype == np.float32
    assert heat.min() >= 0.0 and heat.max() <= 1.0
    np.testing.assert_allclose(heat, reference(range(N)), rtol=0, atol=2e-5)
    for t in range(N):
        if t == EMPTY_FRAME:
            assert heat[t].max() == 0.0
            continue
        pixels, scores = first_person(t)
        for k in range(17):
            channel = heat[t, ..., k]
            if t in SECOND_PERSON:  # the higher score wins: the second person, 1 px right
                (col, row), score = pixels[k] + [1, 0], SECOND_SCORE
                # the maximum over persons, not their sum: the first person's peak stays
                first = max(scores[k] if k != LOW else 0.0, SECOND_SCORE * math.exp(-1 / 0.72))
                assert channel[pixels[k][1], pixels[k][0]] == pytest.approx(first, rel=1e-6)
            elif k == LOW:  # below the default threshold 0.3: left out
                assert channel.max() == 0.0
                continue
            else:
                (col, row), score = pixels[k], scores[k]
            assert np.unravel_index(channel.argmax(), channel.shape) == (row, col), (t, k)
            assert channel.max() == pytest.approx(score, rel=1e-6), (t, k)
    # with no threshold the low-score joint is there, its peak its score
    low = batches(
        keypoint_shard,
        ["heatmap"],
        dataclasses.replace(data, heatmap_score_threshold=0.0),
        1,
        training=False,
        batch_size=1,
    )[0]["heatmap"][0, 0, ..., LOW]
    col, row = first_person(0)[0][LOW]
    assert np.unravel_index(low.argmax(), low.shape) == (row, col)
    assert low.max() == pytest.approx(LOW_SCORE, rel=1e-6)


def test_training_heatmaps_take_the_rgb_window_crop_and_flip(keypoint_shard):
    data = DataConfig(
        num_frames=8, crop_size=(24, 24), heatmap_stride=1, shuffle_buffer=4, seed=3, **NO_JITTER
    )
    out = batches(keypoint_shard, ["rgb", "heatmap"], data, 4)
    flips, offsets, starts = set(), set(), set()
    for b in out:
        for clip_rgb, heat in zip(b["rgb"], b["heatmap"]):
            ts, (y0, x0), flipped = rgb_geometry(clip_rgb, 24)
            assert list(ts) == list(range(ts[0], ts[0] + 8))
            expected = reference(ts, crop=(24, 24), offset=(y0, x0), flip=flipped)
            np.testing.assert_allclose(heat, expected, rtol=0, atol=2e-5)
            # the crop offset moves the peaks by the offset (mirrored: from the right edge)
            for i, t in enumerate(ts):
                if t == EMPTY_FRAME or t in SECOND_PERSON:
                    continue
                pixels, scores = first_person(int(t))
                for k in (5, 6, 12):  # shoulders and the right hip (high scores)
                    col, row = pixels[k][0] - x0, pixels[k][1] - y0
                    if not (0 <= col < 24 and 0 <= row < 24):
                        continue
                    channel = heat[i, ..., HAND_FLIP[k] if flipped else k]
                    at = (row, 23 - col) if flipped else (row, col)
                    assert np.unravel_index(channel.argmax(), channel.shape) == at
                    assert channel.max() == pytest.approx(scores[k], rel=1e-6)
            flips.add(flipped)
            offsets.add((y0, x0))
            starts.add(int(ts[0]))
    assert flips == {True, False} and len(offsets) > 1 and len(starts) > 1


@pytest.mark.parametrize("limbs", [False, True], ids=["joints", "limbs"])
def test_strided_heatmaps_follow_the_crop_flip_and_resize(keypoint_shard, limbs):
    data = DataConfig(
        num_frames=6, crop_size=(24, 24), shuffle_buffer=4, seed=9, heatmap_limbs=limbs,
        **NO_JITTER,
    )  # fmt: skip
    b = batches(keypoint_shard, ["rgb", "heatmap"], data, 1)[0]
    assert b["heatmap"].shape == (4, 6, 6, 6, 17)  # stride 4
    for clip_rgb, heat in zip(b["rgb"], b["heatmap"]):
        ts, offset, flipped = rgb_geometry(clip_rgb, 24)
        expected = reference(ts, crop=(24, 24), offset=offset, flip=flipped, stride=4, limbs=limbs)
        np.testing.assert_allclose(heat, expected, rtol=0, atol=2e-5)
    # frames smaller than the crop: 32x40 resized to 36x45 for a 36x36 crop (central: x0 = 4)
    data = DataConfig(
        eval_num_frames=4, eval_crop_size=(36, 36), heatmap_stride=3, heatmap_limbs=limbs
    )
    b = batches(keypoint_shard, ["rgb", "heatmap"], data, 1, training=False, batch_size=1)[0]
    ts = range(8, 12)  # the central window of 4 of 20 frames
    expected = reference(ts, crop=(36, 36), offset=(0, 4), resized=(36, 45), stride=3, limbs=limbs)
    assert b["heatmap"].shape == (1, 4, 12, 12, 17)
    np.testing.assert_allclose(b["heatmap"][0], expected, rtol=0, atol=2e-5)


@pytest.mark.parametrize("limbs", [False, True], ids=["joints", "limbs"])
@pytest.mark.parametrize(("crop", "stride"), [((24, 24), 1), ((24, 30), 4), ((20, 31), 3)])
def test_heatmaps_of_mirrored_keypoints_are_the_mirrored_heatmaps(crop, stride, limbs):
    rng = np.random.default_rng(stride)
    x = rng.uniform(0, 1, (3, 2, 17)).astype(np.float32)
    y = rng.uniform(0, 1, (3, 2, 17)).astype(np.float32)
    scores = rng.uniform(0, 1, (3, 2, 17)).astype(np.float32)
    kw = dict(
        resized_hw=tf.constant([26, 33]),
        offset=tf.constant([1, 2]),
        crop_hw=crop,
        stride=stride,
        sigma=0.8,
        score_threshold=0.2,
        limbs=limbs,
    )
    plain = heatmaps.clip_heatmaps(x, y, scores, flip=tf.constant(False), **kw).numpy()
    mirrored = heatmaps.clip_heatmaps(x, y, scores, flip=tf.constant(True), **kw).numpy()
    perm = heatmaps.LIMB_FLIP if limbs else heatmaps.JOINT_FLIP
    assert plain.max() > 0.1
    # reversed along the width axis, exactly as the images are, channels swapped
    np.testing.assert_allclose(mirrored, plain[:, :, ::-1][..., list(perm)], rtol=0, atol=2e-5)


def test_evaluation_heatmaps_are_central_and_deterministic(keypoint_shard):
    data = DataConfig(eval_num_frames=8, eval_crop_size=(24, 24), **NO_JITTER)
    a = batches(keypoint_shard, ["rgb", "heatmap"], data, 2, training=False)
    b = batches(keypoint_shard, ["heatmap"], data, 2, training=False)
    expected = reference(range(6, 14), crop=(24, 24), offset=(4, 8), stride=4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["heatmap"], y["heatmap"])
        for clip_rgb, heat in zip(x["rgb"], x["heatmap"]):
            ts, offset, flipped = rgb_geometry(clip_rgb, 24)
            assert (list(ts), offset, flipped) == (list(range(6, 14)), (4, 8), False)
            np.testing.assert_allclose(heat, expected, rtol=0, atol=2e-5)


def test_keypoints_without_rendered_frames_give_the_same_heatmaps(tmp_path):
    """Records of `rgb,keypoints` (no pose-rendered frames) feed the heatmaps exactly as records
    of `rgb,pose` do, in training (same seed) and evaluation, with or without the RGB stream
    read; records with no image stream at all cannot size the heatmaps and fail naming why."""
    both = str(tmp_path / "pose.tfrecord")
    write_records(both, [keypoint_clip(f"kp{i}") for i in range(4)])
    alone = str(tmp_path / "keypoints.tfrecord")
    write_records(alone, [keypoint_clip(f"kp{i}", rendered=False) for i in range(4)])
    data = DataConfig(
        num_frames=8, crop_size=(24, 24), eval_num_frames=8, eval_crop_size=(24, 24), seed=3
    )
    for training in (True, False):
        for modalities in (["rgb", "heatmap"], ["heatmap"]):
            a = batches(both, modalities, data, 1, training=training)
            b = batches(alone, modalities, data, 1, training=training)
            for m in modalities:
                np.testing.assert_array_equal(a[0][m], b[0][m])
            assert a[0]["heatmap"].max() > 0.4  # the peaks are there
    bare = str(tmp_path / "bare.tfrecord")
    write_records(bare, [keypoint_clip("bare", rendered=False, rgb=False)])
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r"image/height and image/width; record\] \[bare\].* \[-1\] \[-1\]",
    ):
        batches(bare, ["heatmap"], data, 1, batch_size=1)
    root = str(tmp_path / "out")
    write_records(
        os.path.join(root, layout.shard_path("train", "kp", 0, 1)),
        [keypoint_clip("kp", rendered=False)],
    )
    write_info(root, ["rgb", "keypoints"])
    data = DataConfig(data_dir=root, num_frames=4, crop_size=(24, 24))
    assert inputs.resolve_num_classes(data, ["rgb", "heatmap"]) == 2
    with pytest.raises(ValueError, match=r"not \['pose'\]"):
        inputs.resolve_num_classes(data, ["pose"])


@pytest.mark.parametrize("sampling", ["window", "segments"])
def test_three_heatmap_frames_per_rgb_frame(keypoint_shard, sampling):
    """heatmap_frame_ratio 3: the clip spans 3T stored frames, the heatmaps take all of them and
    the RGB frames every third (0, 3, 6, ... of the span), under the same crop and flip; in
    evaluation the span is central (window) or the 3T segments' centres."""
    data = DataConfig(
        num_frames=4, crop_size=(24, 24), eval_num_frames=4, eval_crop_size=(24, 24),
        heatmap_stride=1, heatmap_frame_ratio=3, sampling=sampling, seed=5, **NO_JITTER,
    )  # fmt: skip
    starts = set()
    for training in (True, False):
        for b in batches(keypoint_shard, ["rgb", "heatmap"], data, 2, training=training):
            assert b["rgb"].shape[1] == 4 and b["heatmap"].shape[1] == 12
            for clip_rgb, heat in zip(b["rgb"], b["heatmap"]):
                ts, offset, flipped = rgb_geometry(clip_rgb, 24)
                # the heatmaps of the RGB frames are every third one of the span
                np.testing.assert_allclose(
                    heat[::3],
                    reference(ts, crop=(24, 24), offset=offset, flip=flipped),
                    rtol=0,
                    atol=2e-5,
                )
                if sampling == "window":
                    span = range(ts[0], ts[0] + 12)
                    assert list(ts) == list(span[::3])
                    np.testing.assert_allclose(
                        heat,
                        reference(span, crop=(24, 24), offset=offset, flip=flipped),
                        rtol=0,
                        atol=2e-5,
                    )
                    if not training:
                        assert ts[0] == (N - 12) // 2  # the central 12 of 20 frames
                else:  # 12 segments of 20 frames; the RGB frames in segments 0, 3, 6, 9
                    bounds = [(20 * i) // 12 for i in range(13)]
                    for i, t in enumerate(ts):
                        assert bounds[3 * i] <= t < bounds[3 * i + 1]
                starts.add(int(ts[0]))
    # random spans; (the 4 RGB segments of 20 frames in 12 hold one frame each: no choice)
    assert len(starts) > 1 or sampling == "segments"
    with pytest.raises(ValueError, match="heatmap_frame_ratio=0"):
        DataConfig(heatmap_frame_ratio=0).validate()
    paper = get_preset("k600_epam_paper")
    paper.validate()
    assert (paper.data.num_frames, paper.data.heatmap_frame_ratio) == (16, 3)
    assert paper.data.sampling == "segments"


def write_info(root: str, modalities) -> None:
    info = {"schema_version": ms.SCHEMA_VERSION, "num_classes": 2, "modalities": modalities}
    with open(os.path.join(root, layout.DATASET_INFO), "w") as f:
        json.dump(info, f)


def test_records_without_keypoints_fail_before_training_naming_the_keys(tmp_path):
    root = str(tmp_path)
    write_records(
        os.path.join(root, layout.shard_path("train", "rgb", 0, 1)),
        [keypoint_clip("nopose", pose=False)],
    )
    write_info(root, ["rgb"])
    data = DataConfig(data_dir=root, num_frames=4, crop_size=(24, 24))
    assert inputs.resolve_num_classes(data, ["rgb"]) == 2
    with pytest.raises(ValueError, match=r"not \['heatmap'\].*POSE/region/point/x"):
        inputs.resolve_num_classes(data, ["rgb", "heatmap"])
    cfg = get_preset("tiny_r3d50g_teacher_heatmap")
    cfg.data.data_dir, cfg.model_dir = root, str(tmp_path / "run")
    with pytest.raises(ValueError, match="POSE/region/label/confidence"):
        Trainer(cfg)
    # without a description the pipeline itself refuses, naming the keys
    os.remove(os.path.join(root, layout.DATASET_INFO))
    pattern = inputs.split_pattern(data, "train")
    for modalities in (["heatmap"], ["rgb", "heatmap"]):
        with pytest.raises(tf.errors.InvalidArgumentError, match="POSE/region/point/x"):
            batches(pattern, modalities, data, 1, batch_size=1)


def class_persons(label: int):
    """One person whose joints sit at a class-dependent column band."""

    def persons(t):
        pixels, scores = first_person(t % 3)
        pixels = np.stack([4 + 12 * label + pixels[:, 0] % 8, pixels[:, 1]], -1)
        return pixels[None], np.maximum(scores, 0.6)[None]

    return persons


@pytest.fixture(scope="module")
def heatmap_data(tmp_path_factory) -> str:
    """A tiny preprocessing output whose classes differ by where the person stands."""
    root = str(tmp_path_factory.mktemp("heatmap_data"))
    for split, count in (("train", 8), ("validation", 4)):
        records = [
            keypoint_clip(f"{split}{i}", i % 2, persons=class_persons(i % 2)) for i in range(count)
        ]
        write_records(os.path.join(root, layout.shard_path(split, "kp", 0, 1)), records)
    write_info(root, list(ms.DEFAULT_MODALITIES))
    return root


def test_a_preset_selects_the_heatmap_teacher():
    for backbone in ("r3d50g", "s3dg"):
        for size in ("k600", "tiny"):
            cfg = get_preset(f"{size}_{backbone}_teacher_heatmap").validate()
            assert (cfg.task, cfg.modality) == ("teacher", "heatmap")
            assert cfg.input_modalities() == ("heatmap",)
    k600 = get_preset("k600_r3d50g_teacher_heatmap").data
    assert (k600.crop_size, k600.heatmap_stride, k600.heatmap_sigma) == ((224, 224), 4, 0.6)
    assert k600.heatmap_score_threshold == 0.3 and not k600.heatmap_limbs
    cfg = apply_overrides(
        get_preset("tiny_r3d50g_teacher_rgb"),
        ["modality=heatmap", "data.heatmap_stride=2", "data.heatmap_limbs=true"],
    ).validate()
    assert (cfg.modality, cfg.data.heatmap_stride, cfg.data.heatmap_limbs) == ("heatmap", 2, True)
    student = get_preset("tiny_r3d50g_student")
    student.distill.teachers = {"heatmap": "/runs/heatmap", "flow": "/runs/flow"}
    assert student.validate().input_modalities() == ("rgb", "flow", "heatmap")
    assert MODALITIES == ("rgb", "pose", "flow", "heatmap", "pose_live")
    cases = {
        "data.heatmap_stride=0": "heatmap_stride=0",
        "data.heatmap_sigma=0": "heatmap_sigma=0.0",
        "data.heatmap_score_threshold=1.5": "heatmap_score_threshold=1.5",
        "modality=skeleton": "modality='skeleton'",
    }
    for override, message in cases.items():
        with pytest.raises(ValueError, match=message):
            apply_overrides(get_preset("tiny_r3d50g_teacher_heatmap"), [override]).validate()
    with pytest.raises(ValueError, match="heatmap_stride=0"):
        inputs.RecordParser(["heatmap"], 8, (24, 24), training=True, heatmap_stride=0)


def test_the_heatmap_teacher_trains_and_evaluates(heatmap_data, tmp_path, capsys):
    cfg = get_preset("tiny_r3d50g_teacher_heatmap")
    cfg.data.data_dir, cfg.model_dir = heatmap_data, str(tmp_path / "heatmap")
    cfg.train.train_steps = 2
    result = Trainer(cfg).run()
    assert result.final_step == 2 and result.checkpoint.endswith("ckpt-2")
    assert all(np.isfinite(m["loss"]) for _, m in result.history)
    row = result.eval.rows[0]
    assert row.models == ("heatmap",) and row.clips == 4
    saved = load_config(cfg.model_dir)
    assert saved.modality == "heatmap" and saved.data.heatmap_stride == 4

    # Fed heatmaps made otherwise, the model is refused, naming the settings that differ.
    from training.main import main

    status = main(["evaluate", "--model", f"hm={cfg.model_dir}", "--data_dir", heatmap_data,
                   "--set", "data.heatmap_stride=2", "--set",
                   "data.heatmap_limbs=true"])  # fmt: skip
    assert status == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --model hm={cfg.model_dir}: reads heatmaps, which this evaluation would make "
        "with heatmap_stride=2 (trained with 4), heatmap_limbs=True (trained with False); "
        "evaluate it with its own settings (--set data.heatmap_...) or apart from the models "
        "trained otherwise"
    )
    student = get_preset("tiny_r3d50g_student")
    student.data.data_dir, student.model_dir = heatmap_data, str(tmp_path / "student")
    student.data.heatmap_sigma = 1.5
    student.distill.teachers = {"heatmap": cfg.model_dir}
    with pytest.raises(ValueError, match=r"this run would make its heatmaps with "
                       r"heatmap_sigma=1\.5 \(trained with 0\.6\)"):  # fmt: skip
        Trainer(student).run()


def test_s3dg_takes_a_step_on_17_heatmap_channels(heatmap_data):
    data = DataConfig(data_dir=heatmap_data, num_frames=8, crop_size=(32, 32), heatmap_stride=1)
    batch = batches(inputs.split_pattern(data, "train"), ["heatmap"], data, 1)[0]
    assert batch["heatmap"].shape == (4, 8, 32, 32, 17)
    model = models.build_classifier(TINY_S3DG, 2, inputs.MODEL_CHANNELS["heatmap"])
    optimizer = keras.optimizers.SGD(0.1)
    with tf.GradientTape() as tape:
        logits = model(batch["heatmap"], training=True)
        loss = tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(batch["label"], logits, from_logits=True)
        )
    before = [v.numpy() for v in model.trainable_variables]
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                  model.trainable_variables))  # fmt: skip
    assert np.isfinite(loss.numpy())
    changed = [not np.array_equal(a, v.numpy()) for a, v in zip(before, model.trainable_variables)]
    assert sum(changed) > len(changed) // 2
