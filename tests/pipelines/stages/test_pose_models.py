"""The default pose model (MoveNet MultiPose on LiteRT), its conversion, and the pose scorer.

Real models on real frames: the MoveNet TFLite file the set-up step converted, the sample
videos, made garbage frames. No mocks.
"""

from __future__ import annotations

import io
import json
import tarfile
import zipfile

import cv2
import numpy as np
import pytest

from pipelines import assets
from pipelines.stages.movenet import MultiPoseEstimator, decode_multipose, input_shape
from pipelines.stages.pose import (
    KIND_MEDIAPIPE,
    KIND_MOVENET,
    check_pose_model,
    create_estimator,
    load_pose_model,
    pose_model_kind,
)
from pipelines.tools import pose_eval


@pytest.fixture(scope="module")
def movenet():
    try:
        path = assets.default_pose_model_path()
    except FileNotFoundError as e:
        pytest.fail(f"asset cache missing; run python -m pipelines.assets fetch: {e}")
    return load_pose_model(str(path))


def _frames(name: str, count: int, short_side: int = 384):
    cap = cv2.VideoCapture(str(assets.sample_video_path(name)))
    fps = cap.get(cv2.CAP_PROP_FPS)
    out = []
    while len(out) < count:
        ok, bgr = cap.read()
        if not ok:
            break
        h, w = bgr.shape[:2]
        s = short_side / min(h, w)
        bgr = cv2.resize(bgr, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
        out.append((cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), round(len(out) * 1e6 / fps)))
    cap.release()
    return out


# ----------------------------------------------------------------------------- the model file


def test_default_model_is_movenet_with_pinned_sha256(movenet):
    data, sha = movenet
    assert assets.DEFAULT_POSE_MODEL is assets.MOVENET_MULTIPOSE
    assert sha == assets.MOVENET_MULTIPOSE.sha256
    assert pose_model_kind(data, "default") == KIND_MOVENET
    check_pose_model(data, "default")


@pytest.mark.slow
def test_conversion_is_reproducible_and_equals_the_tfjs_graph(movenet):
    tarball = assets.cache_dir() / "npm" / assets.HUMAN_MODELS_NPM.filename
    if not tarball.is_file():
        pytest.skip(f"cached npm package {tarball} missing: run the set-up step")
    import tensorflow as tf

    from pipelines.assets import tfjs_convert

    assert assets.build_movenet_multipose(tarball) == movenet[0]
    # The converted model computes what the TensorFlow.js graph computes, run by TensorFlow.
    with tarfile.open(tarball) as tf_archive:
        model_json = tf_archive.extractfile("package/models/movenet-multipose.json").read()
        shards = {"movenet-multipose.bin": tf_archive.extractfile(
            "package/models/movenet-multipose.bin").read()}  # fmt: skip
    gd, _ = tfjs_convert.graph_def(model_json, shards)
    wrapped = tf.compat.v1.wrap_function(lambda: tf.graph_util.import_graph_def(gd, name=""), [])
    graph_fn = wrapped.prune(
        wrapped.graph.get_tensor_by_name("input:0"), wrapped.graph.get_tensor_by_name("Identity:0")
    )
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=movenet[0], num_threads=1)
    (inp,), (out,) = it.get_input_details(), it.get_output_details()
    for (rgb, _), (h, w) in zip(_frames("pose2sim_multi_cam01.mp4", 2), [(384, 224), (256, 256)]):
        x = cv2.resize(rgb, (w, h)).astype(np.int32)[None]
        it.resize_tensor_input(inp["index"], list(x.shape))
        it.allocate_tensors()
        it.set_tensor(inp["index"], x)
        it.invoke()
        np.testing.assert_allclose(
            it.get_tensor(out["index"]), graph_fn(tf.constant(x)).numpy(), atol=1e-4
        )


def test_read_weights_dequantizes_float16_and_uint8():
    manifest = [
        {
            "paths": ["a.bin"],
            "weights": [
                {"name": "h", "shape": [2], "dtype": "float32",
                 "quantization": {"dtype": "float16", "original_dtype": "float32"}},
                {"name": "q", "shape": [3], "dtype": "float32",
                 "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.0}},
                {"name": "i", "shape": [], "dtype": "int32"},
            ],
        }
    ]  # fmt: skip
    from pipelines.assets import tfjs_convert

    data = np.float16([1.5, -2.0]).tobytes() + bytes([0, 2, 255]) + np.int32(7).tobytes()
    w = tfjs_convert.read_weights(manifest, {"a.bin": data})
    np.testing.assert_array_equal(w["h"], np.float32([1.5, -2.0]))
    np.testing.assert_array_equal(w["q"], np.float32([-1.0, 0.0, 126.5]))
    assert w["i"].shape == () and int(w["i"]) == 7
    with pytest.raises(tfjs_convert.ConversionError, match="'i': the shards end"):
        tfjs_convert.read_weights(manifest, {"a.bin": data[:-1]})
    with pytest.raises(tfjs_convert.ConversionError, match="shard 'a.bin' is missing"):
        tfjs_convert.read_weights(manifest, {})


# ----------------------------------------------------------------------------- decoding


def test_input_shape_keeps_aspect_in_multiples_of_32():
    assert input_shape(384, 683, 384) == (224, 384, 384 / 683)
    assert input_shape(256, 340, 384) == (320, 384, 384 / 340)  # Kinetics 340x256
    assert input_shape(683, 384, 256) == (256, 160, 256 / 683)
    assert input_shape(100, 100, 320) == (320, 320, 3.2)


def test_decode_multipose_exact_values():
    out = np.zeros((6, 56), np.float32)
    out[0, :51] = np.tile([0.25, 0.5, 0.9], 17)  # y, x, score of every joint
    out[0, 51:] = [0.1, 0.2, 0.5, 0.75, 0.8]  # box and person score
    out[1, 51:] = [0.0, 0.0, 1.2, 0.5, 0.3]  # a second, lower-scored person; box past the input
    out[2, 55] = 0.1  # below the threshold
    # A 200x400 frame scaled by 0.5 into a 128x224 input (pads 28 columns and 28 rows).
    poses = decode_multipose(out, (200, 400), (128, 224), 0.5, 0.2, 6)
    assert poses.num_people == 2
    np.testing.assert_allclose(poses.box_scores, [0.8, 0.3])
    # x: 0.5 * 224 / (400 * 0.5) = 0.56; y: 0.25 * 128 / (200 * 0.5) = 0.32.
    np.testing.assert_allclose(poses.keypoints[0], np.tile([0.56, 0.32], (17, 1)), rtol=1e-6)
    np.testing.assert_allclose(poses.scores[0], np.full(17, 0.9), rtol=1e-6)
    np.testing.assert_allclose(poses.boxes[0], [0.128, 0.224, 0.64, 0.84], rtol=1e-6)
    np.testing.assert_allclose(poses.boxes[1], [0.0, 0.0, 1.0, 0.56], rtol=1e-6)  # clipped
    assert decode_multipose(out, (200, 400), (128, 224), 0.5, 0.2, 1).num_people == 1
    assert decode_multipose(out, (200, 400), (128, 224), 0.5, 0.9, 6).num_people == 0


# ----------------------------------------------------------------------------- real frames


def test_two_people_on_the_multi_person_sample(movenet):
    counts = []
    with MultiPoseEstimator(movenet[0]) as estimator:
        for rgb, ts in _frames("pose2sim_multi_cam02.mp4", 20):
            poses = estimator.detect(rgb, ts)
            counts.append(poses.num_people)
            assert np.all(np.diff(poses.box_scores) <= 0)  # highest person score first
            assert np.all((poses.boxes >= 0) & (poses.boxes <= 1))
            ymin, xmin, ymax, xmax = poses.boxes.T
            assert np.all(ymax - ymin > 0.1) and np.all(xmax - xmin > 0.02)
            confident = poses.keypoints[poses.scores > 0.5]
            assert np.all((confident > -0.02) & (confident < 1.02))
    assert counts == [2] * 20


def test_found_people_do_not_depend_on_the_frame_size(movenet):
    """The same frame at two sizes gives the same people, in the frame's normalized units."""
    (rgb, _), *_ = _frames("pose2sim_multi_cam02.mp4", 1, short_side=384)
    small = cv2.resize(rgb, (rgb.shape[1] // 2, rgb.shape[0] // 2), interpolation=cv2.INTER_AREA)
    with MultiPoseEstimator(movenet[0]) as est:
        a = est.detect(rgb, 0)
        b = est.detect(small, 1)
    assert a.num_people == b.num_people == 2
    confident = (a.scores > 0.5) & (b.scores > 0.5)
    assert np.abs(a.keypoints - b.keypoints)[confident].max() < 0.02


def test_nobody_on_garbage_frames(movenet):
    frames = pose_eval.garbage_frames()
    assert len(frames) == 8
    for size in (256, 384):
        with MultiPoseEstimator(movenet[0], input_size=size) as est:
            found = {
                name: est.detect(f, i).num_people for i, (name, f) in enumerate(frames.items())
            }
        assert found == dict.fromkeys(frames, 0), size


def test_parameters_and_inputs_are_checked(movenet):
    data = movenet[0]
    for kwargs, message in [
        ({"num_poses": 0}, "num_poses=0"),
        ({"input_size": 300}, "input_size=300: expected a multiple of 32"),
        ({"input_size": 2048}, "input_size=2048"),
        ({"min_person_score": 1.5}, "min_person_score=1.5"),
        ({"num_threads": 0}, "num_threads=0"),
    ]:
        with pytest.raises(ValueError, match=message):
            MultiPoseEstimator(data, **kwargs)
    frame = np.zeros((64, 96, 3), np.uint8)
    with MultiPoseEstimator(data, num_poses=1) as est:
        with pytest.raises(ValueError, match="frame_rgb"):
            est.detect(frame.astype(np.float32), 0)
        assert est.detect(frame, 10).num_people == 0
        with pytest.raises(ValueError, match="timestamp_us=10"):
            est.detect(frame, 10)
    with pytest.raises(RuntimeError, match="close"):
        est.detect(frame, 20)


def test_a_tflite_file_that_is_not_movenet_is_refused(tmp_path):
    """BlazePose's detector is a real TFLite model with the wrong contract."""
    bundle, _ = load_pose_model(str(assets.pose_model_path(assets.BLAZEPOSE_FULL.name)))
    assert pose_model_kind(bundle, "bundle") == KIND_MEDIAPIPE
    detector = zipfile.ZipFile(io.BytesIO(bundle)).read("pose_detector.tflite")
    path = tmp_path / "detector.tflite"
    path.write_bytes(detector)
    data, _ = load_pose_model(str(path))
    assert pose_model_kind(data, str(path)) == KIND_MOVENET  # by its container
    with pytest.raises(ValueError, match="expected one input and one output"):
        create_estimator(data)
    with pytest.raises(ValueError, match=f"pose model '{path}': LiteRT cannot use it"):
        check_pose_model(data, str(path))


# ----------------------------------------------------------------------------- the scorer


def _set(tmp_path, names, people):
    """A one-image COCO-format set with the given joint names and people (lists of triples)."""
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((100, 200, 3), np.uint8))
    anns = [
        {"id": i + 1, "image_id": 7, "category_id": 1, "iscrowd": 0,
         "bbox": [0, 0, 40, 80], "keypoints": kp, "num_keypoints": sum(v > 0 for v in kp[2::3])}
        for i, kp in enumerate(people)
    ]  # fmt: skip
    data = {
        "images": [{"id": 7, "file_name": "set/a.jpg", "width": 200, "height": 100}],
        "annotations": anns,
        "categories": [{"id": 1, "keypoints": names}],
    }
    path = tmp_path / "set.json"
    path.write_text(json.dumps(data))
    return pose_eval.load_coco_keypoints(str(path))


def test_scorer_exact_values(tmp_path):
    rng = np.random.default_rng(1)
    people = [np.c_[rng.uniform(0, 100, (17, 2)), np.full(17, 2.0)] for _ in range(2)]
    kset = _set(tmp_path, list(pose_eval.COCO17), [p.reshape(-1).tolist() for p in people])
    assert kset.num_people == 2 and kset.images[0].path == str(tmp_path / "a.jpg")
    exact = [pose_eval.detection(7, p[:, :2], np.ones(17), 0.9) for p in people]
    assert pose_eval.score(kset, exact) == {
        "n": 2, "found": 1.0, "pck": 1.0, "AP": 1.0, "AP50": 1.0, "recall50": 1.0
    }  # fmt: skip
    # One person only, every joint 10 px off (PCK threshold 0.2 * 80 = 16 px): found, PCK 1.
    shifted = pose_eval.detection(7, people[0][:, :2] + [6, 8], np.ones(17), 0.9)
    r = pose_eval.score(kset, [shifted])
    assert (r["n"], r["found"], r["pck"]) == (2, 0.5, 1.0)
    ann = kset.annotations[0]
    expected_oks = np.mean(np.exp(-100 / (2 * pose_eval.OKS_SIGMAS) ** 2 / ann["area"] / 2))
    assert pose_eval.oks(people[0][:, :2] + [6, 8], ann) == pytest.approx(expected_oks)
    assert pose_eval.score(kset, [])["found"] == 0.0


def test_joint_sets_map_to_coco_by_name():
    aic = ["Right Shoulder", "Right Elbow", "Right Wrist", "Left Shoulder", "Left Elbow",
           "Left Wrist", "Right Hip", "Right Knee", "Right Ankle", "Left Hip", "Left Knee",
           "Left Ankle", "Head top", "Neck"]  # fmt: skip
    kp = np.arange(14 * 3, dtype=float).reshape(14, 3) + 1
    out = pose_eval.to_coco17(kp.reshape(-1), aic)
    assert np.all(out[:5] == 0)  # nose, eyes, ears: not in the set, unannotated
    np.testing.assert_array_equal(out[5], kp[3])  # left shoulder
    np.testing.assert_array_equal(out[6], kp[0])  # right shoulder
    np.testing.assert_array_equal(out[16], kp[8])  # right ankle
    with pytest.raises(ValueError, match="15 joints"):
        pose_eval.to_coco17(np.zeros(45), aic)
