"""Configs: the paper's presets (STM's too), validation errors, JSON round trip, overrides, and
the TSN-style segment sampling that the STM presets select."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from training_records import jpeg, serialize_clip, write_records

from training import distribute, inputs
from training.config import (
    TINY_STM,
    DataConfig,
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
    assert cfg.model.stage_depths() == (3, 4, 6, 3) and cfg.model.width_multiplier == 1.0
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


# ---------------------------------------------------------------------------------------------
# STM presets and TSN-style segment sampling.
# ---------------------------------------------------------------------------------------------
def test_stm_presets_are_segment_clips_for_teachers_students_and_fine_tuning():
    names = set(preset_names())
    for segments in (8, 16):
        tag = f"stm{segments}"
        for prefix in ("k600", "tiny"):
            for job in ("teacher_rgb", "teacher_flow", "teacher_pose", "student", "student_ul"):
                assert f"{prefix}_{tag}_{job}" in names
            assert f"{prefix}_{tag}_d3d" in names
        for dataset in ("ucf101", "hmdb51", "tiny"):
            assert f"{dataset}_{tag}_finetune" in names
        teacher = get_preset(f"k600_{tag}_teacher_flow")
        assert (teacher.task, teacher.modality, teacher.model.backbone) == (
            "teacher",
            "flow",
            "stm",
        )
        assert teacher.model.stage_depths() == (3, 4, 6, 3)
        assert teacher.model.width_multiplier == 1.0
        data = teacher.data
        assert (data.sampling, data.num_frames, data.eval_num_frames) == (
            "segments",
            segments,
            segments,
        )
        assert (data.crop_size, data.eval_crop_size, data.num_classes) == (
            (224, 224),
            (256, 256),
            600,
        )
        assert teacher.train.global_batch_size == 1024 and teacher.model.dropout_rate == 0.5
        student = get_preset(f"k600_{tag}_student")
        assert (student.task, student.modality, student.model.backbone) == ("student", "rgb", "stm")
        assert set(student.distill.teachers) == {"flow", "pose"} and student.distill.loss == "sl"
        assert student.input_modalities() == ("rgb", "pose", "flow")
        assert student.data.sampling == "segments" and student.data.num_frames == segments
        assert get_preset(f"k600_{tag}_student_ul").distill.loss == "ul"
        assert set(get_preset(f"tiny_{tag}_d3d").distill.teachers) == {"flow"}
        tiny = get_preset(f"tiny_{tag}_teacher_pose")
        assert tiny.model == TINY_STM and tiny.data.crop_size == (32, 32)
        assert (tiny.data.sampling, tiny.data.num_frames) == ("segments", segments)
        ucf = get_preset(f"ucf101_{tag}_finetune")
        assert (ucf.task, ucf.model.backbone, ucf.data.num_classes) == ("finetune", "stm", 101)
        assert (ucf.data.sampling, ucf.data.eval_num_frames) == ("segments", segments)
    # the clip-of-consecutive-frames presets keep their window
    assert get_preset("k600_r3d50g_student").data.sampling == "window"


def test_sampling_is_validated_and_named_in_errors():
    with pytest.raises(ValueError, match="sampling='tsn'"):
        apply_overrides(filled("tiny_stm8_teacher_rgb"), ["data.sampling=tsn"]).validate()
    cfg = apply_overrides(get_preset("tiny_r3d50g_teacher_rgb"), ["data.sampling=segments"])
    assert cfg.validate().data.sampling == "segments"
    with pytest.raises(ValueError, match="sampling='tsn'"):
        inputs.RecordParser(["rgb"], 8, (24, 24), training=True, sampling="tsn")
    with pytest.raises(ValueError, match="num_segments=0"):
        inputs.segment_indices(10, 0)
    with pytest.raises(ValueError, match="backbone='stm3'"):
        apply_overrides(filled("tiny_stm8_teacher_rgb"), ["model.backbone=stm3"]).validate()


# (frames n, segments T) -> the centre frames: segment i is [floor(i n / T), floor((i+1) n / T))
SEGMENT_CENTRES = {
    (16, 8): [1, 3, 5, 7, 9, 11, 13, 15],
    (8, 8): [0, 1, 2, 3, 4, 5, 6, 7],
    (11, 8): [0, 1, 3, 4, 5, 7, 8, 10],  # bounds 0 1 2 4 5 6 8 9 11
    (12, 8): [0, 2, 3, 5, 6, 8, 9, 11],  # bounds 0 1 3 4 6 7 9 10 12
    (10, 4): [1, 3, 6, 8],  # bounds 0 2 5 7 10
    (6, 8): [0, 0, 1, 2, 3, 3, 4, 5],  # shorter than T: frames repeated in order
    (3, 8): [0, 0, 0, 1, 1, 1, 2, 2],
    (1, 8): [0] * 8,
    (250, 16): [7, 23, 38, 54, 70, 85, 101, 117, 132, 148, 163, 179, 195, 210, 226, 242],
}


@pytest.mark.parametrize(("frames", "segments"), sorted(SEGMENT_CENTRES))
def test_segment_sampling_takes_the_centres_in_evaluation(frames, segments):
    got = inputs.segment_indices(frames, segments).numpy().tolist()
    assert got == SEGMENT_CENTRES[(frames, segments)]


@pytest.mark.parametrize(("frames", "segments"), [(16, 8), (11, 8), (12, 8), (250, 16), (6, 8)])
def test_segment_sampling_draws_one_frame_of_each_segment_in_training(frames, segments):
    bounds = [i * frames // segments for i in range(segments + 1)]
    seen = [set() for _ in range(segments)]
    for s in range(256):
        seed = tf.constant([7, s], tf.int64)
        idx = inputs.segment_indices(frames, segments, seed).numpy().tolist()
        assert idx == inputs.segment_indices(frames, segments, seed).numpy().tolist()  # stateless
        for i, t in enumerate(idx):
            lo, hi = bounds[i], bounds[i + 1]
            assert (lo <= t < hi) if hi > lo else t == lo, (s, i, t, lo, hi)
            seen[i].add(t)
    # every frame of every segment is drawn (256 draws, segments of at most 16 frames)
    assert [len(s) for s in seen] == [max(1, bounds[i + 1] - bounds[i]) for i in range(segments)]
    assert (
        inputs.segment_indices(3, 8, tf.constant([1, 2], tf.int64)).numpy().tolist()
        == (SEGMENT_CENTRES[(3, 8)])
    )


N_FRAMES = 11


@pytest.fixture(scope="module")
def numbered_shard(tmp_path_factory) -> str:
    """8 copies of an 11-frame clip whose frame t is flat gray 20 t + 10 in RGB, pose and flow
    (flow step t holds frame t's bytes), so every decoded pixel tells its frame."""
    frames = [
        jpeg(np.full((32, 40, 3), 20 * t + 10, np.uint8), quality=100) for t in range(N_FRAMES)
    ]
    records = [
        serialize_clip(f"n{i}", 0, frames, frames, frames[: N_FRAMES - 1], 32, 40) for i in range(8)
    ]
    path = str(tmp_path_factory.mktemp("numbered") / "numbered-00000-of-00001.tfrecord")
    write_records(path, records)
    return path


def frame_numbers(batch) -> dict[str, np.ndarray]:
    """int [B, T] per stream: the frame each sampled image came from."""
    rgb = np.round((batch["rgb"].mean(axis=(2, 3, 4)) + 1) * 127.5)
    pose = np.round((batch["pose"].mean(axis=(2, 3, 4)) + 1) * 127.5)
    flow = np.round((batch["flow"][..., 1].mean(axis=(2, 3)) / 2 + 0.5) * 255)
    return {
        k: np.round((v - 10) / 20).astype(int)
        for k, v in (("rgb", rgb), ("pose", pose), ("flow", flow))
    }


def test_segment_sampling_in_the_pipeline_gives_every_stream_the_same_frames(numbered_shard):
    data = DataConfig(
        sampling="segments",
        num_frames=8,
        crop_size=(16, 16),
        eval_num_frames=8,
        eval_crop_size=(16, 16),
        random_flip=False,
        brightness_max_delta=0.0,
        contrast_range=(1.0, 1.0),
        shuffle_buffer=4,
        seed=3,
    )
    modalities = ["rgb", "pose", "flow"]
    bounds = [i * N_FRAMES // 8 for i in range(9)]
    last_flow = N_FRAMES - 2  # the last frame has no flow step of its own: it repeats the last
    ds = inputs.build_dataset(numbered_shard, modalities, training=False, batch_size=8, data=data)
    got = frame_numbers({k: v.numpy() for k, v in next(iter(ds)).items()})
    centres = SEGMENT_CENTRES[(N_FRAMES, 8)]
    np.testing.assert_array_equal(got["rgb"], [centres] * 8)
    np.testing.assert_array_equal(got["pose"], got["rgb"])
    np.testing.assert_array_equal(got["flow"], np.minimum(got["rgb"], last_flow))
    ds = inputs.build_dataset(numbered_shard, modalities, training=True, batch_size=8, data=data)
    got = frame_numbers({k: v.numpy() for k, v in next(iter(ds)).items()})
    np.testing.assert_array_equal(got["pose"], got["rgb"])
    np.testing.assert_array_equal(got["flow"], np.minimum(got["rgb"], last_flow))
    for clip in got["rgb"]:
        assert all(bounds[i] <= t < bounds[i + 1] for i, t in enumerate(clip)), clip
    assert len({tuple(clip) for clip in got["rgb"]}) > 1  # a fresh draw per clip


def test_default_depths_are_the_backbones_own_and_recorded_when_resolved(tiny_data):
    """depths () means the backbone's paper depths, so switching the backbone does not keep
    another backbone's depths; a resolved config (what config.json records) holds them."""
    from training.config import EPAM_DEPTHS, ModelConfig
    from training.trainer import resolve_config

    assert ModelConfig().stage_depths() == (3, 4, 6, 3)
    assert ModelConfig(backbone="epam").stage_depths() == EPAM_DEPTHS == (3, 5, 11, 7)
    assert ModelConfig(backbone="epam", depths=(1, 1, 1, 1)).stage_depths() == (1, 1, 1, 1)
    cfg = apply_overrides(get_preset("k600_r3d50g_teacher_rgb"), ['model.backbone="epam"'])
    assert cfg.model.stage_depths() == EPAM_DEPTHS
    cfg.data.data_dir = tiny_data
    cfg.data.num_classes = 0
    assert resolve_config(cfg).model.depths == EPAM_DEPTHS
    with pytest.raises(ValueError, match=r"depths=\(1, 2\)"):
        ModelConfig(depths=(1, 2)).validate()
