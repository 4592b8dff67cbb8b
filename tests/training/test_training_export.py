"""`python -m training export`: SavedModels of tiny RGB, flow, EPAM-Net and `pose_live` models
(skeletons drawn on the RGB frames, and on black) trained two steps on the tiny records, loaded
in a fresh process (no `training` import, Beam/MediaPipe/OpenCV blocked) and fed the decoded
frames, keypoints and boxes of evaluation records; their logits are compared with the
in-package evaluation of the same records (`inputs.build_dataset(training=False)` + the model).

The records: the tiny validation split (6 frames of 32x40, shorter than the 8-frame window:
padded) and `odd` clips made here: 20x24 frames (smaller than the crop: resized up), 48x60
frames of 11 frames (central window and crop of a larger frame, 4:2:0 JPEGs, an offset off the
JPEG blocks), a single 36x30 frame (no flow step; portrait, resized), each with 0-2 persons'
keypoints and boxes per frame (heatmaps, pose_live). The flow model is exported through the
command line with another clip (`--set data.eval_num_frames=10 --set data.eval_crop_size=[24,28]`).
"""

from __future__ import annotations

import glob
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from training_records import (
    LABELS,
    clip_context,
    flow_image,
    run_without_pipeline_imports,
    write_records,
)

from render.style import VARIANTS, RenderStyle
from schemas import layout
from schemas import media_sequence as ms
from training import inputs
from training import main as cli
from training.config import DataConfig, apply_overrides, get_preset
from training.export import EXPORT_INFO, SIGNATURE, export_model
from training.trainer import Trainer, load_model, model_inputs

# Logits of the SavedModel against the evaluation's (float32; batch of 1 against batches of 4).
ATOL = 1e-5
FLOW_OVERRIDES = ("data.eval_num_frames=10", "data.eval_crop_size=[24,28]")

# Decodes one record as a client would, with TensorFlow alone (run here and in the fresh
# process): the frames of every stream, the keypoints, persons padded with score 0, their boxes
# (NaN where the record stores none: the keypoints' extent sizes the markers, as the pipeline
# does) and the frame size.
DECODE = """
import numpy as np
import tensorflow as tf

def decode_record(raw, keys):
    record = tf.train.SequenceExample.FromString(raw)
    lists = record.feature_lists.feature_list
    example_id = record.context.feature[keys["id"]].bytes_list.value[0].decode()

    def frames(key, channels):
        steps = [tf.io.decode_jpeg(f.bytes_list.value[0], channels=3).numpy()[..., :channels]
                 for f in lists[key].feature]
        return np.stack(steps) if steps else None

    out = {"rgb": frames(keys["rgb"], 3), "pose": frames(keys["pose"], 3)}
    flow = frames(keys["flow"], 2)
    if flow is None:
        flow = np.zeros((0, *out["rgb"].shape[1:3], 2), np.uint8)
    out["flow"] = flow
    values = [[list(f.float_list.value) for f in lists[keys[k]].feature] for k in ("x", "y", "c")]
    persons = max(len(v) for v in values[0]) // 17
    dense = np.zeros((3, len(values[0]), persons, 17), np.float32)
    for i, per_frame in enumerate(values):
        for t, v in enumerate(per_frame):
            dense[i, t, : len(v) // 17] = np.reshape(v, (-1, 17))
    out["keypoints"] = np.stack([dense[0], dense[1]], -1)
    out["keypoint_scores"] = dense[2]
    boxes = np.full((len(values[0]), persons, 4), np.nan, np.float32)
    sides = [[list(f.float_list.value) for f in lists[key].feature] for key in keys["boxes"]]
    if all(len(v) == len(values[0]) for v in sides):
        boxes[:] = 0.0  # persons padded with 0, as the pipeline's dense boxes
        for i, per_frame in enumerate(sides):
            for t, v in enumerate(per_frame):
                boxes[t, : len(v), i] = v
    out["boxes"] = boxes
    out["frame_size"] = np.array(out["rgb"].shape[1:3], np.int32)
    return example_id, out
"""
_NAMESPACE: dict = {}
exec(DECODE, _NAMESPACE)  # the same decode_record here as in the fresh process
decode_record = _NAMESPACE["decode_record"]

KEYS = {
    "id": ms.EXAMPLE_ID_KEY,
    "rgb": ms.prefixed(ms.RGB_PREFIX, ms.IMAGE_ENCODED),
    "pose": ms.prefixed(ms.POSE_RENDERED_PREFIX, ms.IMAGE_ENCODED),
    "flow": ms.prefixed(ms.FORWARD_FLOW_PREFIX, ms.IMAGE_ENCODED),
    "x": ms.POSE_POINT_X_KEY,
    "y": ms.POSE_POINT_Y_KEY,
    "c": ms.POSE_CONFIDENCE_KEY,
    "boxes": list(inputs.POSE_LIVE_BOX_KEYS),
}
# The `pose_live` models: name -> render style.
LIVE_STYLES = {"live": "rgb_bars_fine_ratio", "live_black": "black_dots_fine_ratio"}

# The fresh process: loads each SavedModel, feeds every record what its signature asks for,
# writes {model: {example_id: outputs}} as JSON.
SERVE = (
    DECODE
    + """
import json
request = json.load(open(sys.argv[1]))
records = [r.numpy() for r in tf.data.TFRecordDataset(request["shards"])]
result = {"signatures": {}, "outputs": {}}
for name, path in request["models"].items():
    serve = tf.saved_model.load(path).signatures[request["signature"]]
    given = serve.structured_input_signature[1]
    result["signatures"][name] = {
        part: {k: [s.dtype.name, s.shape.as_list()] for k, s in specs.items()}
        for part, specs in (("inputs", given), ("outputs", serve.structured_outputs))
    }
    out = result["outputs"][name] = {}
    for raw in records:
        example_id, streams = decode_record(raw, request["keys"])
        got = serve(**{k: tf.constant(streams[k]) for k in given})
        out[example_id] = {
            k: ([s.decode() for s in v.numpy()] if v.dtype == tf.string else v.numpy().tolist())
            for k, v in got.items()
        }
assert not [m for m in sys.modules if m.split(".")[0] == "training"], "training was imported"
json.dump(result, open(sys.argv[2], "w"))
"""
)


def odd_clip(example_id, label, num_frames, height, width, rng, subsampling=False) -> bytes:
    """A clip of rgb, pose-rendered and flow frames of height x width, and keypoints of
    t % 3 persons in frame t (scores in [0.1, 1): some under the 0.3 threshold) and their
    boxes (half the keypoints' extent: in 48x60 frames 1 px bars, not the extent's 2 px)."""
    streams = {m: ms.StreamInfo(height, width) for m in ms.IMAGE_MODALITIES}
    builder = ms.SequenceExampleBuilder(clip_context(example_id, label, num_frames), streams)

    def encode(img, quality=95):
        img = np.clip(img, 0, 255).astype(np.uint8)
        return tf.io.encode_jpeg(img, quality=quality, chroma_downsampling=subsampling).numpy()

    for t in range(num_frames):
        img = rng.normal(90, 40, (height, width, 3))
        img[..., label] += 80
        persons = t % 3
        xy = rng.uniform(0.05, 0.95, (persons, ms.NUM_JOINTS, 2))
        scores = rng.uniform(0.1, 1.0, (persons, ms.NUM_JOINTS))
        # boxes of half the keypoints' extent: ratio-aware bars thinner than the extent sizes
        centre, half = (xy.min(1) + xy.max(1)) / 2, (xy.max(1) - xy.min(1)) / 4
        boxes = np.concatenate([(centre - half)[:, ::-1], (centre + half)[:, ::-1]], -1)
        builder.add_frame(
            t * 40_000,
            rgb_jpeg=encode(img),
            pose_jpeg=encode(255 - img),
            keypoints=xy,
            keypoint_scores=scores,
            boxes=boxes,
            box_scores=np.full(persons, 0.9),
        )
        if t < num_frames - 1:
            vx = rng.normal((label - 1) * 6.0, 4.0, (height, width))
            vy = rng.normal(0.0, 4.0, (height, width))
            builder.add_flow(t * 40_000, encode(flow_image(vx, vy), quality=100))
    return builder.serialize()


def write_odd_shard(path: str) -> str:
    rng = np.random.default_rng(7)
    write_records(
        path,
        [
            odd_clip("odd_small", 0, 5, 20, 24, rng),
            odd_clip("odd_large", 1, 11, 48, 60, rng, subsampling=True),
            odd_clip("odd_single", 2, 1, 36, 30, rng),
        ],
    )
    return path


def evaluation_outputs(model_dir: str, pattern: str, overrides=()) -> dict[str, dict]:
    """example_id -> {logits[, logits_<stream>]} of the in-package evaluation: the evaluation
    dataset of the model's config (eval batches, padded) through the model in inference mode."""
    model, cfg = load_model(model_dir)
    cfg = apply_overrides(cfg, overrides)
    reads = model_inputs(cfg)
    ds = inputs.build_dataset(
        pattern,
        list(cfg.model_modalities()),
        training=False,
        batch_size=cfg.train.eval_batch_size,
        data=cfg.data,
        with_ids=True,
    )

    @tf.function
    def step(batch):
        if isinstance(reads, str):
            return {"logits": model(batch[reads], training=False)}
        out = model({m: batch[m] for m in reads}, training=False)
        return {"logits": out["fused"], **{f"logits_{m}": out[m] for m in reads}}

    result = {}
    for batch in ds:
        out = {k: v.numpy() for k, v in step(batch).items()}
        for i, (eid, real) in enumerate(zip(batch["example_id"].numpy(), batch["mask"].numpy())):
            if real:
                result[eid.decode()] = {k: v[i] for k, v in out.items()}
    return result


@pytest.fixture(scope="module")
def exported(tiny_data, tmp_path_factory):
    """Three models trained two steps, exported, served in a fresh process; their evaluation."""
    root = tmp_path_factory.mktemp("export")
    odd = write_odd_shard(str(root / "odd" / "odd-00000-of-00001.tfrecord"))
    shards = sorted(glob.glob(os.path.join(tiny_data, "validation", "*.tfrecord"))) + [odd]
    out = {"root": root, "data": tiny_data, "shards": shards}
    for name, preset in (
        ("rgb", "tiny_r3d50g_teacher_rgb"),
        ("flow", "tiny_r3d50g_teacher_flow"),
        ("epam", "tiny_epam"),
        ("live", "tiny_r3d50g_teacher_pose_live"),
    ):
        cfg = get_preset(preset)
        cfg.data.data_dir, cfg.model_dir = tiny_data, str(root / "runs" / name)
        # two steps at a high rate: logits of order 0.1-5 that tell the clips apart
        cfg.train.train_steps = cfg.train.steps_per_loop = cfg.train.summary_every = 2
        cfg.train.eval_at_end = False
        cfg.optimizer.warmup_steps, cfg.optimizer.base_learning_rate = 0, 0.5
        if name in ("epam", "live"):
            cfg.data.train_pattern = odd  # clips with persons: keypoints that are seen
        cfg.data.render_style = LIVE_STYLES.get(name, "")
        Trainer(cfg).run()
    runs = root / "runs"
    # live_black: the live model's weights under a black-background style (no second training)
    shutil.copytree(runs / "live", runs / "live_black")
    with open(runs / "live_black" / "config.json") as f:
        config = json.load(f)
    config["data"]["render_style"] = LIVE_STYLES["live_black"]
    with open(runs / "live_black" / "config.json", "w") as f:
        json.dump(config, f)
    out["results"] = {
        m: export_model(str(runs / m), str(root / "sm" / m)) for m in ("rgb", "epam", *LIVE_STYLES)
    }
    argv = ["export", "--model_dir", str(runs / "flow"), "--export_dir", str(root / "sm" / "flow")]
    for item in FLOW_OVERRIDES:
        argv += ["--set", item]
    out["flow_status"] = cli.main(argv)
    request = {
        "models": {m: str(root / "sm" / m) for m in ("rgb", "flow", "epam", *LIVE_STYLES)},
        "shards": shards,
        "keys": KEYS,
        "signature": SIGNATURE,
    }
    with open(root / "request.json", "w") as f:
        json.dump(request, f)
    proc = run_without_pipeline_imports(
        SERVE, str(root / "request.json"), str(root / "served.json")
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(root / "served.json") as f:
        out["served"] = json.load(f)
    pattern = ",".join(shards)
    out["evaluated"] = {
        "rgb": evaluation_outputs(str(runs / "rgb"), pattern),
        "flow": evaluation_outputs(str(runs / "flow"), pattern, FLOW_OVERRIDES),
        "epam": evaluation_outputs(str(runs / "epam"), pattern),
        **{m: evaluation_outputs(str(runs / m), pattern) for m in LIVE_STYLES},
    }
    return out


def max_difference(exported, name: str, key: str = "logits") -> float:
    """The largest |served - evaluated| logit over the clips; checks first that the logits of
    different clips differ by far more than ATOL (so a wrong window or crop would show)."""
    served, evaluated = exported["served"]["outputs"][name], exported["evaluated"][name]
    assert sorted(served) == sorted(evaluated)
    assert {"odd_small", "odd_large", "odd_single", "val00"} <= set(served)
    logits = np.array([served[eid][key] for eid in served])
    assert (logits.max(0) - logits.min(0)).max() > 100 * ATOL
    return max(
        float(np.abs(np.asarray(served[eid][key]) - evaluated[eid][key]).max()) for eid in served
    )


def test_rgb_savedmodel_in_a_fresh_process_gives_the_evaluation_logits(exported):
    # padded 6-frame clips, resized 20x24 and 36x30 frames, a central crop of 48x60 frames
    assert max_difference(exported, "rgb") <= ATOL
    sig = exported["served"]["signatures"]["rgb"]
    assert sig["inputs"] == {"rgb": ["uint8", [None, None, None, 3]]}
    assert sig["outputs"] == {
        "logits": ["float32", [3]],
        "probabilities": ["float32", [3]],
        "top5_indices": ["int32", [3]],
        "top5_classes": ["string", [3]],
    }


def test_flow_savedmodel_exported_from_the_command_line_with_another_clip(exported):
    assert exported["flow_status"] == cli.EXIT_OK
    # 10 frames of 24x28: clips padded, frames resized (flow scaled) or cropped, no flow step
    assert max_difference(exported, "flow") <= ATOL
    sig = exported["served"]["signatures"]["flow"]
    assert sig["inputs"] == {"flow": ["uint8", [None, None, None, 2]]}
    with open(exported["root"] / "sm" / "flow" / EXPORT_INFO) as f:
        info = json.load(f)
    assert (info["num_frames"], info["crop_size"], info["flow_saturation"]) == (10, [24, 28], 20.0)


def test_epam_savedmodel_builds_the_heatmaps_in_the_graph(exported):
    for key in ("logits", "logits_rgb", "logits_heatmap"):
        assert max_difference(exported, "epam", key) <= ATOL, key
    # the heatmap stream sees the keypoints: 0-2 persons per frame of the odd clips
    logits = exported["served"]["outputs"]["epam"]
    assert logits["odd_small"]["logits_heatmap"] != logits["val00"]["logits_heatmap"]
    inputs_ = exported["served"]["signatures"]["epam"]["inputs"]
    assert inputs_ == {
        "rgb": ["uint8", [None, None, None, 3]],
        "keypoints": ["float32", [None, None, 17, 2]],
        "keypoint_scores": ["float32", [None, None, 17]],
    }


KEYPOINT_INPUTS = {
    "keypoints": ["float32", [None, None, 17, 2]],
    "keypoint_scores": ["float32", [None, None, 17]],
    "boxes": ["float32", [None, None, 4]],
}


def test_pose_live_savedmodels_draw_the_skeletons_in_the_graph(exported):
    # on the RGB frames (the paper's best variant) and on black (frame size given)
    for name in LIVE_STYLES:
        assert max_difference(exported, name) <= ATOL, name
    sigs = exported["served"]["signatures"]
    assert sigs["live"]["inputs"] == {"rgb": ["uint8", [None, None, None, 3]], **KEYPOINT_INPUTS}
    assert sigs["live_black"]["inputs"] == {"frame_size": ["int32", [2]], **KEYPOINT_INPUTS}
    for name, variant in LIVE_STYLES.items():
        info = exported["results"][name].info
        assert info["modalities"] == ["pose_live"]
        assert info["render_style"]["variant"] == variant
        assert RenderStyle.parse(info["render_style"]["spec"]) == VARIANTS[variant]
        with open(exported["root"] / "sm" / name / EXPORT_INFO) as f:
            assert json.load(f)["render_style"] == info["render_style"]
    # the skeletons reach the model: without them (scores 0) the logits change
    serve = tf.saved_model.load(str(exported["root"] / "sm" / "live")).signatures[SIGNATURE]
    raw = next(r for r in tf.data.TFRecordDataset(exported["shards"][-1:]))
    example_id, streams = decode_record(raw.numpy(), KEYS)
    given = {k: tf.constant(streams[k]) for k in sigs["live"]["inputs"]}
    plain = serve(**{**given, "keypoint_scores": tf.zeros_like(given["keypoint_scores"])})
    served = exported["served"]["outputs"]["live"][example_id]["logits"]
    assert np.abs(plain["logits"].numpy() - served).max() > 100 * ATOL


def test_outputs_are_softmax_and_top_classes_by_name_and_the_info_file(exported):
    for name in ("rgb", "flow", "epam", *LIVE_STYLES):
        for out in exported["served"]["outputs"][name].values():
            logits = np.asarray(out["logits"], np.float64)
            p = np.exp(logits - logits.max())
            np.testing.assert_allclose(out["probabilities"], p / p.sum(), rtol=1e-5, atol=1e-6)
            order = np.argsort(-logits, kind="stable")
            assert sorted(out["top5_indices"]) == [0, 1, 2]
            assert logits[out["top5_indices"]].tolist() == logits[order].tolist()
            assert out["top5_classes"] == [LABELS[i] for i in out["top5_indices"]]
    info = exported["results"]["epam"].info
    assert info["classes"] == list(LABELS) and info["num_classes"] == 3
    assert info["class_names_from"] == layout.join(exported["data"], layout.DATASET_INFO)
    assert (info["num_frames"], info["crop_size"], info["modalities"]) == (
        8,
        [32, 32],
        ["rgb", "heatmap"],
    )
    assert info["heatmap"] == {"stride": 4, "sigma": 0.6, "score_threshold": 0.3, "limbs": False}
    with open(exported["root"] / "sm" / "epam" / EXPORT_INFO) as f:
        assert json.load(f) == info
    assert info["checkpoint"].endswith("ckpt-2")


def test_decoded_clip_equals_the_pipeline_exactly(exported):
    """The preprocessing alone, in-process: `RecordParser.decoded_clip` on decoded frames and
    the pipeline on the records give identical model inputs, stream by stream."""
    data = DataConfig(eval_num_frames=8, eval_crop_size=(32, 32), heatmap_score_threshold=0.3)
    cases = (
        (["rgb", "pose", "flow", "heatmap"], "", {}),  # the RGB stream's geometry
        (["flow"], "", {}),  # the flow stream's: frames = flow steps + 1
        (["heatmap"], "", {}),  # keypoints alone: frame_size given
        (["heatmap", "pose_live"], "rgb_dots_coarse_uniform", {}),  # drawn on the RGB frames
        (["pose_live"], "black_bars_fine_ratio", {}),  # keypoints and boxes alone
        # EPAM-Net's paper input: 3 heatmap frames per RGB frame over 3 x 8 segments
        (["rgb", "heatmap"], "", {"heatmap_frame_ratio": 3, "sampling": "segments"}),
    )
    for modalities, style, extra in cases:
        parser = inputs.RecordParser(
            modalities,
            8,
            (32, 32),
            training=False,
            heatmap_stride=data.heatmap_stride,
            render_style=style,
            **extra,
        )
        for raw in tf.data.TFRecordDataset(exported["shards"]):
            piped = parser(tf.constant(0, tf.int64), raw, tf.constant(0, tf.int64))
            _, streams = decode_record(raw.numpy(), KEYS)
            given = {}
            for m in modalities:
                xy = streams["keypoints"]
                if m == "heatmap":
                    given[m] = (xy[..., 0], xy[..., 1], streams["keypoint_scores"])
                elif m == "pose_live":
                    frames = tf.constant(streams["rgb"]) if "black" not in style else None
                    given[m] = (frames, xy[..., 0], xy[..., 1], streams["keypoint_scores"])
                    given[m] += (streams["boxes"],)
                else:
                    given[m] = tf.constant(streams[m])
            size = tf.constant(streams["rgb"].shape[1:3], tf.int32)
            decoded = parser.decoded_clip(given, frame_size=size)
            for m in modalities:
                np.testing.assert_array_equal(decoded[m].numpy(), piped[m].numpy(), err_msg=m)


def test_export_errors_name_the_path_and_exit_with_the_usage_status(exported, tmp_path, capsys):
    runs = exported["root"] / "runs"
    missing = str(tmp_path / "no_such_run")
    assert cli.main(["export", "--model_dir", missing, "--export_dir", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert missing in err and "config.json" in err
    no_ckpt = tmp_path / "no_ckpt"
    no_ckpt.mkdir()
    shutil.copy(runs / "rgb" / "config.json", no_ckpt / "config.json")
    assert (
        cli.main(["export", "--model_dir", str(no_ckpt), "--export_dir", str(tmp_path / "b")]) == 2
    )
    err = capsys.readouterr().err
    assert str(no_ckpt) in err and "no checkpoint" in err
    used = str(exported["root"] / "sm" / "rgb")
    assert cli.main(["export", "--model_dir", str(runs / "rgb"), "--export_dir", used]) == 2
    err = capsys.readouterr().err
    assert used in err and "--overwrite" in err
    argv = ["export", "--model_dir", str(runs / "rgb"), "--export_dir", str(tmp_path / "c")]
    assert cli.main(argv + ["--set", "train.train_steps=3"]) == 2
    assert "data.eval_num_frames" in capsys.readouterr().err
    other = tmp_path / "other_labels"
    other.mkdir()
    info = {"schema_version": ms.SCHEMA_VERSION, "num_classes": 4, "labels": list("abcd")}
    (other / layout.DATASET_INFO).write_text(json.dumps(info))
    assert cli.main(argv + ["--data_dir", str(other)]) == 2
    err = capsys.readouterr().err
    assert "4 labels" in err and str(other) in err
    assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "c")
