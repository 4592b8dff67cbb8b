"""The seam between the two packages: the job's real output on sample clips is the training input
pipeline's input, read through `training`'s own API with nothing in between.

One job (the command line, DirectRunner, every modality) writes a train and a validation clip of
the sample videos; the evaluation pipeline then gives, frame for frame, the stored JPEG frames
and the stored flow (central window, central crop, the documented scaling), with the label index
that `dataset_info.json` names, and the training pipeline gives batches of the configured shape.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from schemas import media_sequence as ms

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def job_output(tmp_path_factory, assets_ready):
    from pipelines import assets

    tmp = tmp_path_factory.mktemp("seam")
    multi = assets.sample_video_path("pose2sim_multi_cam01.mp4")
    single = assets.sample_video_path("sports2d_demo.mp4")
    manifest = tmp / "manifest.csv"
    manifest.write_text(
        "path,label,start,end,split\n"
        f"{multi},walking,0.0,0.6,train\n"
        f"{single},athletics,3.0,3.4,validation\n"
    )
    out = tmp / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.preprocess",
            f"--input={manifest}",
            f"--output_dir={out}",
            "--dataset_name=seam",
            "--runner=DirectRunner",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return str(out)


def _stored(out_dir: str, split: str):
    """(context, sequence) numpy dicts of the one record of `split`, parsed with plain tf.io."""
    import tensorflow as tf

    files = tf.io.gfile.glob(os.path.join(out_dir, split, "*.tfrecord"))
    records = [r.numpy() for r in tf.data.TFRecordDataset(files)]
    assert len(records) == 1
    ctx_spec, seq_spec = ms.parse_specs(ms.DEFAULT_MODALITIES)
    ctx, seq = tf.io.parse_single_sequence_example(records[0], ctx_spec, seq_spec)
    return ctx, seq


def test_evaluation_input_is_the_stored_frames_and_flow(job_output):
    import tensorflow as tf

    from training.config import DataConfig
    from training.inputs import build_dataset, resolve_num_classes, split_pattern

    with open(os.path.join(job_output, "dataset_info.json"), encoding="utf-8") as f:
        info = json.load(f)
    ctx, seq = _stored(job_output, "validation")
    height = int(ctx[ms.prefixed(ms.RGB_PREFIX, ms.IMAGE_HEIGHT)])
    width = int(ctx[ms.prefixed(ms.RGB_PREFIX, ms.IMAGE_WIDTH)])
    frames = seq[ms.prefixed(ms.RGB_PREFIX, ms.IMAGE_ENCODED)]
    num_frames = int(frames.shape[0])
    assert (num_frames, height) == (10, 256)  # 0.4 s at 25 fps, shorter side 256
    crop = (224, 224)
    data = DataConfig(
        data_dir=job_output,
        eval_num_frames=num_frames,
        eval_crop_size=crop,
        cycle_length=1,
    )
    assert resolve_num_classes(data, ms.DEFAULT_MODALITIES) == 2 == info["num_classes"]

    ds = build_dataset(
        split_pattern(data, "eval"),
        ms.DEFAULT_MODALITIES,
        training=False,
        batch_size=2,
        data=data,
        with_ids=True,
    )
    batches = list(ds.as_numpy_iterator())
    assert len(batches) == 1
    batch = batches[0]
    assert batch["mask"].tolist() == [1.0, 0.0]
    label = int(ctx[ms.CLIP_LABEL_INDEX_KEY])
    assert info["labels"][label] == "athletics"
    assert batch["label"][0] == label
    assert batch["example_id"][0] == ctx[ms.EXAMPLE_ID_KEY].numpy()

    oy, ox = (height - crop[0]) // 2, (width - crop[1]) // 2
    for modality, prefix in ((ms.MODALITY_RGB, ms.RGB_PREFIX), ("pose", ms.POSE_RENDERED_PREFIX)):
        stored = np.stack(
            [
                tf.io.decode_jpeg(j, channels=3).numpy()
                for j in seq[ms.prefixed(prefix, ms.IMAGE_ENCODED)].numpy()
            ]
        )[:, oy : oy + crop[0], ox : ox + crop[1]]
        expected = stored.astype(np.float32) / 255.0 * 2.0 - 1.0
        got = batch[modality][0]
        assert got.shape == (num_frames, *crop, 3)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6, err_msg=modality)

    flow_jpegs = seq[ms.prefixed(ms.FORWARD_FLOW_PREFIX, ms.IMAGE_ENCODED)].numpy()
    assert len(flow_jpegs) == num_frames - 1
    saturation = float(ctx[ms.prefixed(ms.FORWARD_FLOW_PREFIX, ms.IMAGE_SATURATION)])
    assert saturation == ms.FLOW_SATURATION
    q = np.stack([tf.io.decode_jpeg(j, channels=3).numpy() for j in flow_jpegs])
    q = q[:, oy : oy + crop[0], ox : ox + crop[1], :2].astype(np.float32)
    steps = (q / 255.0 - 0.5) * (2.0 * saturation) / ms.FLOW_SATURATION
    expected_flow = np.concatenate([steps, steps[-1:]])  # the last frame repeats the last step
    np.testing.assert_allclose(batch["flow"][0], expected_flow, rtol=0, atol=1e-6)
    assert float(np.abs(expected_flow).max()) > 0.0  # the athlete moves: real flow, not zeros


def test_training_input_gives_batches_of_the_configured_shape(job_output):
    from training.config import DataConfig
    from training.inputs import build_dataset, split_pattern

    data = DataConfig(
        data_dir=job_output, num_frames=8, crop_size=(112, 160), shuffle_buffer=2, cycle_length=1
    )
    ds = build_dataset(
        split_pattern(data, "train"), ms.DEFAULT_MODALITIES, training=True, batch_size=2, data=data
    )
    batch = next(ds.as_numpy_iterator())
    ctx, _ = _stored(job_output, "train")
    label = int(ctx[ms.CLIP_LABEL_INDEX_KEY])
    assert batch["label"].tolist() == [label, label]  # one train clip, repeated
    for modality, channels in ((ms.MODALITY_RGB, 3), (ms.MODALITY_POSE, 3), (ms.MODALITY_FLOW, 2)):
        x = batch[modality]
        assert x.shape == (2, 8, 112, 160, channels), modality
        assert x.dtype == np.float32
        assert -1.0 <= x.min() <= x.max() <= 1.0, modality
