"""ImageNet 2D -> 3D inflation (`training.inflate`) on synthetic 2D weights made here: a
TF-Slim-named inception_v1 checkpoint for S3D-G, a keras.applications.ResNet50 `.weights.h5`
for R3D50-G and STM (random values, no download), the errors, and the train command."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from training import inflate
from training import main as cli
from training.config import ExperimentConfig, ModelConfig, get_preset
from training.models import BN_EPSILON, build_backbone, build_classifier
from training.trainer import load_model

# TF-Slim inception_v1 (tensorflow/models research/slim/nets/inception_v1.py), written out
# here independently of training.inflate: (scope under InceptionV1/, kernel size, cin, cout).
STEM = (("Conv2d_1a_7x7", 7, 3, 64), ("Conv2d_2b_1x1", 1, 64, 64), ("Conv2d_2c_3x3", 3, 64, 192))
# block: (input channels, b0, b1 reduce, b1 3x3, b2 reduce, b2 3x3, b3 pool projection)
BLOCKS = {
    "3b": (192, 64, 96, 128, 16, 32, 32),
    "3c": (256, 128, 128, 192, 32, 96, 64),
    "4b": (480, 192, 96, 208, 16, 48, 64),
    "4c": (512, 160, 112, 224, 24, 64, 64),
    "4d": (512, 128, 128, 256, 24, 64, 64),
    "4e": (512, 112, 144, 288, 32, 64, 64),
    "4f": (528, 256, 160, 320, 32, 128, 128),
    "5b": (832, 256, 160, 320, 32, 128, 128),
    "5c": (832, 384, 192, 384, 48, 128, 128),
}


def slim_convs() -> list[tuple[str, str, int, int, int]]:
    """(our 3D prefix, slim scope, k, cin, cout) of every convolution of inception_v1."""
    rows = [
        (p, s, k, i, o) for p, (s, k, i, o) in zip(("Conv3d_1a", "Conv3d_2b", "Conv3d_2c"), STEM)
    ]
    for block, (cin, c0, c1a, c1b, c2a, c2b, c3) in BLOCKS.items():
        m = f"Mixed_{block}"
        b2 = "Conv2d_0a_3x3" if block == "5b" else "Conv2d_0b_3x3"  # slim's name in Mixed_5b
        rows += [
            (f"{m}_b0", f"{m}/Branch_0/Conv2d_0a_1x1", 1, cin, c0),
            (f"{m}_b1a", f"{m}/Branch_1/Conv2d_0a_1x1", 1, cin, c1a),
            (f"{m}_b1b", f"{m}/Branch_1/Conv2d_0b_3x3", 3, c1a, c1b),
            (f"{m}_b2a", f"{m}/Branch_2/Conv2d_0a_1x1", 1, cin, c2a),
            (f"{m}_b2b", f"{m}/Branch_2/{b2}", 3, c2a, c2b),
            (f"{m}_b3", f"{m}/Branch_3/Conv2d_0b_1x1", 1, cin, c3),
        ]
    return rows


def random_bn(rng, prefix: str, c: int, gamma: bool) -> dict[str, np.ndarray]:
    out = {
        f"{prefix}/beta": rng.normal(0, 0.1, c),
        f"{prefix}/moving_mean": rng.normal(0, 0.1, c),
        f"{prefix}/moving_variance": rng.uniform(0.5, 1.5, c),
    }
    if gamma:
        out[f"{prefix}/gamma"] = rng.uniform(0.5, 1.5, c)
    return {k: v.astype(np.float32) for k, v in out.items()}


def save_v2(prefix: str, arrays: dict[str, np.ndarray]) -> str:
    """A TF checkpoint whose keys are exactly `arrays`' names (as slim's Saver wrote them)."""
    names = sorted(arrays)
    tf.raw_ops.SaveV2(
        prefix=prefix,
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tf.constant(arrays[n]) for n in names],
    )
    return prefix


def slim_arrays(rng) -> dict[str, np.ndarray]:
    """Random values for every variable of slim's inception_v1 (no BN gamma, as slim's), plus
    the logits and global step that the mapping leaves unused."""
    arrays = {}
    for _, scope, k, cin, cout in slim_convs():
        base = f"InceptionV1/{scope}"
        arrays[f"{base}/weights"] = rng.normal(0, 0.1, (k, k, cin, cout)).astype(np.float32)
        arrays.update(random_bn(rng, f"{base}/BatchNorm", cout, gamma=False))
    arrays["InceptionV1/Logits/Conv2d_0c_1x1/weights"] = np.zeros((1, 1, 1024, 1001), np.float32)
    arrays["global_step"] = np.array(0, np.int64)
    return arrays


def weights(model, layer: str) -> dict[str, np.ndarray]:
    return {w.name: w.numpy() for w in model.get_layer(layer).weights}


@pytest.fixture(scope="module")
def s3dg(tmp_path_factory):
    rng = np.random.default_rng(0)
    arrays = slim_arrays(rng)
    prefix = save_v2(str(tmp_path_factory.mktemp("slim") / "inception_v1.ckpt"), arrays)
    backbone = build_backbone(ModelConfig(backbone="s3dg"))
    report = inflate.inflate_into(backbone, prefix)  # auto: a TF checkpoint
    return {"backbone": backbone, "arrays": arrays, "report": report, "prefix": prefix}


def test_s3dg_from_slim_inception_v1_checkpoint(s3dg):
    backbone, arrays, report = s3dg["backbone"], s3dg["arrays"], s3dg["report"]
    rows = slim_convs()
    assert len(rows) == 57 and len(report.loaded) == 2 * 57 and len(report.identity) == 20
    for prefix, scope, k, _, _ in rows:
        sep = k > 1
        part = f"{prefix}_spatial" if sep else prefix
        kernel = weights(backbone, f"{part}_conv")["kernel"]
        base = f"InceptionV1/{scope}"
        np.testing.assert_array_equal(kernel, arrays[f"{base}/weights"][None])
        bn = weights(backbone, f"{part}_bn")
        np.testing.assert_array_equal(bn["gamma"], 1.0)  # slim's batch norm has no scale
        np.testing.assert_array_equal(bn["beta"], arrays[f"{base}/BatchNorm/beta"])
        np.testing.assert_array_equal(bn["moving_mean"], arrays[f"{base}/BatchNorm/moving_mean"])
        np.testing.assert_allclose(
            bn["moving_variance"],
            arrays[f"{base}/BatchNorm/moving_variance"] + inflate.SLIM_BN_EPSILON - BN_EPSILON,
            rtol=1e-6,
        )
        if sep:  # the temporal part: identity kernel, batch norm as built
            temporal = weights(backbone, f"{prefix}_temporal_conv")["kernel"]
            c = temporal.shape[-1]
            expected = np.zeros((k, 1, 1, c, c), np.float32)
            expected[k // 2, 0, 0] = np.eye(c)
            np.testing.assert_array_equal(temporal, expected)
            tbn = weights(backbone, f"{prefix}_temporal_bn")
            for name, value in (("gamma", 1), ("beta", 0), ("moving_mean", 0)):
                np.testing.assert_array_equal(tbn[name], value)
            np.testing.assert_array_equal(tbn["moving_variance"], 1)
    left = set(report.left_at_init)
    assert len(left) == 37 + 20 and left == {
        layer.name for layer in backbone.layers if layer.name.endswith(("_gating", "_temporal_bn"))
    }
    assert report.unused_2d == ["InceptionV1/Logits/Conv2d_0c_1x1/weights", "global_step"]
    assert not report.missing and not report.not_in_model
    assert any("gamma = 1" in note for note in report.notes)


def test_s3dg_static_clip_gives_the_2d_convolution(s3dg):
    """A clip of one frame repeated: Conv3d_1a's spatial part equals the 2D convolution + batch
    norm (slim's epsilon) + ReLU of the frame, and its identity temporal part passes it on
    (times 1 / sqrt(1 + eps) of the fresh batch norm)."""
    backbone, arrays = s3dg["backbone"], s3dg["arrays"]
    probe = keras.Model(
        backbone.input,
        [
            backbone.get_layer(n).output
            for n in ("Conv3d_1a_spatial_relu", "Conv3d_1a_temporal_relu")
        ],
    )
    frame = np.random.default_rng(1).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    clip = np.repeat(frame[:, None], 8, axis=1)
    spatial, temporal = (np.asarray(x) for x in probe(clip, training=False))
    base = "InceptionV1/Conv2d_1a_7x7"
    conv = tf.nn.conv2d(frame, arrays[f"{base}/weights"], 2, "SAME").numpy()
    mean, var = arrays[f"{base}/BatchNorm/moving_mean"], arrays[f"{base}/BatchNorm/moving_variance"]
    expected = np.maximum(
        (conv - mean) / np.sqrt(var + inflate.SLIM_BN_EPSILON) + arrays[f"{base}/BatchNorm/beta"], 0
    )
    assert spatial.shape == (1, 8, 16, 16, 64) and temporal.shape == (1, 4, 16, 16, 64)
    for t in range(8):
        np.testing.assert_allclose(spatial[0, t], expected[0], atol=1e-5)
    for t in range(4):
        np.testing.assert_allclose(temporal[0, t], expected[0] / np.sqrt(1 + BN_EPSILON), atol=1e-5)


@pytest.fixture(scope="module")
def resnet50(tmp_path_factory):
    """keras.applications.ResNet50 (no top, no download) with random weights, saved as
    `.weights.h5`; its arrays by `<layer>/<weight>`."""
    net = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(32, 32, 3))
    rng = np.random.default_rng(2)
    for w in net.weights:
        low, high = (0.5, 1.5) if w.name in ("moving_variance", "gamma") else (-0.1, 0.1)
        w.assign(rng.uniform(low, high, w.shape).astype("float32"))
    path = str(tmp_path_factory.mktemp("keras") / "resnet50_notop.weights.h5")
    net.save_weights(path)
    arrays = {f"{layer.name}/{w.name}": w.numpy() for layer in net.layers for w in layer.weights}
    return {"path": path, "arrays": arrays}


def expected_bn(arrays, prefix_2d: str, layer) -> dict[str, np.ndarray]:
    return {
        "gamma": arrays[f"{prefix_2d}_bn/gamma"],
        "beta": arrays[f"{prefix_2d}_bn/beta"],
        "moving_mean": arrays[f"{prefix_2d}_bn/moving_mean"] - arrays[f"{prefix_2d}_conv/bias"],
        "moving_variance": arrays[f"{prefix_2d}_bn/moving_variance"]
        + inflate.KERAS_RESNET50_BN_EPSILON
        - layer.epsilon,
    }


def check_keras_layers(backbone, arrays, pairs):
    """Every (3D prefix, Keras prefix): kernel = 2D kernel repeated over t / t; batch norm
    copied, the 2D bias folded into the mean, the epsilon kept."""
    times = set()
    for ours, theirs in pairs:
        kernel = weights(backbone, f"{ours}_conv")["kernel"]
        t = kernel.shape[0]
        times.add(t)
        k2 = arrays[f"{theirs}_conv/kernel"]
        np.testing.assert_allclose(kernel, np.repeat(k2[None], t, 0) / t, rtol=1e-6)
        bn = weights(backbone, f"{ours}_bn")
        for name, value in expected_bn(arrays, theirs, backbone.get_layer(f"{ours}_bn")).items():
            np.testing.assert_allclose(bn[name], value, rtol=1e-6, atol=1e-7, err_msg=ours)
    return times


def test_r3d50g_from_keras_resnet50(resnet50):
    backbone = build_backbone(ModelConfig(backbone="r3d50g"))
    report = inflate.inflate_into(backbone, resnet50["path"])  # auto: Keras weights
    arrays = resnet50["arrays"]
    pairs = []
    for stage, depth in zip((2, 3, 4, 5), (3, 4, 6, 3)):
        for i in range(1, depth + 1):
            pairs += [
                (f"res{stage}_cell{i}_{a}", f"conv{stage}_block{i}_{b}")
                for a, b in (("a", 1), ("b", 2), ("c", 3))
            ]
            if i == 1:
                pairs.append((f"res{stage}_cell{i}_proj", f"conv{stage}_block{i}_0"))
    assert len(pairs) == 52 and len(report.loaded) == 106
    assert check_keras_layers(backbone, arrays, pairs) == {1, 3}  # t_i = 3 or 1
    assert report.left_at_init == [f"res{s}_gating" for s in (2, 3, 4, 5)]
    assert not report.unused_2d and not report.missing and not report.identity

    # conv1 (5x7x7) reads our RGB in [-1, 1], Keras' caffe BGR pixels minus the mean: the
    # kernel's input channels reversed, x 127.5, / 5 at every tap; the mean's response folded.
    k2 = arrays["conv1_conv/kernel"]
    kernel = weights(backbone, "conv1_conv")["kernel"]
    np.testing.assert_allclose(kernel, np.repeat(127.5 * k2[None, :, :, ::-1], 5, 0) / 5, rtol=1e-6)
    offset = k2.astype(np.float64).sum(axis=(0, 1)).T @ (
        127.5 - np.array([103.939, 116.779, 123.68])
    )
    bn = expected_bn(arrays, "conv1", backbone.get_layer("conv1_bn"))
    bn["moving_mean"] = bn["moving_mean"] - offset
    for name, value in bn.items():
        np.testing.assert_allclose(weights(backbone, "conv1_bn")[name], value, rtol=1e-5, atol=1e-5)
    assert any("caffe" in note for note in report.notes)

    # A static clip through conv1 + batch norm + ReLU gives the 2D network's conv1_relu of the
    # frame preprocessed as Keras' ResNet50 expects, at the steps whose 5-frame window lies in
    # the clip, away from the zero-padded borders (values of order 10: rtol 1e-5).
    probe = keras.Model(backbone.input, backbone.get_layer("conv1_relu").output)
    frame = np.random.default_rng(3).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    out = np.asarray(probe(np.repeat(frame[:, None], 8, axis=1), training=False))
    pixels = (127.5 * (frame + 1))[..., ::-1] - np.float32([103.939, 116.779, 123.68])
    conv = tf.nn.conv2d(pixels, k2, 2, "SAME").numpy() + arrays["conv1_conv/bias"]
    bn = {k: arrays[f"conv1_bn/{k}"] for k in ("gamma", "beta", "moving_mean", "moving_variance")}
    expected = (conv - bn["moving_mean"]) / np.sqrt(
        bn["moving_variance"] + inflate.KERAS_RESNET50_BN_EPSILON
    )
    expected = np.maximum(bn["gamma"] * expected + bn["beta"], 0)[0, 1:14, 1:14]
    assert expected.max() > 10
    for t in range(2, 6):
        np.testing.assert_allclose(out[0, t, 1:14, 1:14], expected, rtol=1e-5, atol=1e-4)
    assert not np.allclose(out[0, 0, 1:14, 1:14], expected, atol=1e-2)  # zero-padded in time


def test_stm_flow_from_keras_resnet50_arrays(resnet50):
    """STM carries Keras' names; a 2-channel (flow) model gets the RGB kernel averaged over its
    3 channels and repeated (TSN); layers of blocks the model lacks are reported."""
    arrays = resnet50["arrays"]
    model = build_classifier(
        ModelConfig(backbone="stm", depths=(1, 1, 1, 1)), num_classes=5, in_channels=2
    )
    head = model.head.kernel.numpy()
    report = inflate.inflate_into(model, arrays)  # a VideoClassifier, a dict of arrays
    np.testing.assert_array_equal(model.head.kernel.numpy(), head)  # the head stays
    kernel = weights(model.backbone, "conv1_conv")["kernel"]
    rgb = arrays["conv1_conv/kernel"]
    assert kernel.shape == (1, 7, 7, 2, 64)
    for c in range(2):  # the caffe rewriting (x 127.5, BGR -> RGB), then the channel mean
        np.testing.assert_allclose(kernel[0, :, :, c], 127.5 * rgb.mean(axis=2), atol=1e-6)
    assert any("TSN" in note and "conv1_conv" in note for note in report.notes)
    mean = weights(model.backbone, "conv1_bn")["moving_mean"]  # no RGB mean offset for flow
    np.testing.assert_allclose(mean, arrays["conv1_bn/moving_mean"] - arrays["conv1_conv/bias"])
    pairs = [(f"conv{s}_block1_{j}", f"conv{s}_block1_{j}") for s in (2, 3, 4, 5) for j in range(4)]
    assert check_keras_layers(model.backbone, arrays, pairs) == {1}
    assert len(report.loaded) == 2 * (1 + 16)
    assert "conv2_block2_1_conv" in report.not_in_model
    assert "conv2_block2_1_conv/kernel" in report.unused_2d
    left = set(report.left_at_init)
    assert "conv2_block1_cstm_temporal" in left and "conv2_block1_cmm_reduce_conv" in left


def test_shape_mismatch_names_layer_shapes_and_width(s3dg):
    tiny = build_backbone(ModelConfig(backbone="s3dg", width_multiplier=1 / 16))
    before = [w.numpy() for w in tiny.weights]
    with pytest.raises(ValueError) as e:
        inflate.inflate_into(tiny, s3dg["arrays"])
    msg = str(e.value)
    assert (
        "Conv3d_1a_spatial_conv: 2D InceptionV1/Conv2d_1a_7x7/weights has shape (7, 7, 3, 64)"
        in msg
    )
    assert "(1, 7, 7, 3, 4)" in msg
    assert "width_multiplier (about 0.0625 here) does not fit" in msg
    assert "weights fit width_multiplier=1.0" in msg
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, tiny.weights))  # untouched
    # Inception blocks left out in the middle: the next block reads other channels.
    gap = build_backbone(ModelConfig(backbone="s3dg", s3dg_blocks=("3b", "4b")))
    with pytest.raises(ValueError, match="s3dg_blocks") as e:
        inflate.inflate_into(gap, s3dg["arrays"])
    assert "Mixed_4b_b0_conv reads 256 channels where the 2D network's reads 480" in str(e.value)


def test_missing_names_are_listed_or_left_at_init(s3dg):
    arrays = dict(s3dg["arrays"])
    gone = [
        "InceptionV1/Mixed_3b/Branch_0/Conv2d_0a_1x1/weights",
        "InceptionV1/Mixed_3c/Branch_3/Conv2d_0b_1x1/BatchNorm/moving_mean",
    ]
    for name in gone:
        del arrays[name]
    backbone = build_backbone(ModelConfig(backbone="s3dg", s3dg_blocks=("3b", "3c")))
    with pytest.raises(ValueError, match="lacks 2 variables") as e:
        inflate.inflate_into(backbone, arrays)
    assert all(name in str(e.value) for name in gone)
    before = weights(backbone, "Mixed_3b_b0_conv")["kernel"]
    report = inflate.inflate_into(backbone, arrays, allow_missing=True)
    assert report.missing == {"Mixed_3b_b0_conv": [gone[0]], "Mixed_3c_b3_bn": [gone[1]]}
    assert {"Mixed_3b_b0_conv", "Mixed_3c_b3_bn"} <= set(report.left_at_init)
    np.testing.assert_array_equal(weights(backbone, "Mixed_3b_b0_conv")["kernel"], before)
    assert len(report.loaded) == 2 * 15 - 2
    assert "Mixed_4b_b0_conv" in report.not_in_model
    assert "Mixed_5b_b2b_temporal_conv" in report.not_in_model
    assert "InceptionV1/Mixed_4b/Branch_0/Conv2d_0a_1x1/weights" in report.unused_2d


def test_wrong_mapping_and_config_are_refused(s3dg):
    backbone = s3dg["backbone"]
    with pytest.raises(ValueError, match="none of its layers"):
        inflate.inflate_into(backbone, s3dg["arrays"], "r3d50g_resnet50")
    with pytest.raises(ValueError, match="format"):
        inflate.open_source("x.npz", "onnx")
    cfg = get_preset("tiny_s3dg_finetune")
    cfg.init_checkpoint, cfg.train.init_2d_checkpoint = "/some/run", "/x/inception_v1.ckpt"
    with pytest.raises(ValueError, match="train.init_2d_checkpoint"):
        cfg.validate()
    cfg = get_preset("tiny_epam")
    cfg.train.init_2d_checkpoint = "/x/resnet50.h5"
    with pytest.raises(ValueError, match="train.init_2d_checkpoint"):
        cfg.validate()
    cfg = get_preset("tiny_s3dg_teacher_rgb")
    cfg.train.init_2d_format = "onnx"
    with pytest.raises(ValueError, match="init_2d_format"):
        cfg.validate()


def test_npz_source(tmp_path, resnet50):
    path = str(tmp_path / "r50.npz")
    np.savez(path, **{k: v for k, v in resnet50["arrays"].items() if k.startswith("conv1_")})
    source = inflate.open_source(path)
    assert source.shapes["conv1_conv/kernel"] == (7, 7, 3, 64)
    np.testing.assert_array_equal(source.get("conv1_bn/beta"), resnet50["arrays"]["conv1_bn/beta"])


def test_train_command_inflates_a_run_from_scratch_only(tiny_data, tmp_path):
    """`train --init_2d` on the tiny S3D-G: the step-1 checkpoint holds the inflated kernels
    (the warm-up's rate is 0 at step 0, so the first step moves no weight), init_2d.json
    reports, config.json records the path; a resumed run does not inflate again."""
    cfg = get_preset("tiny_s3dg_teacher_rgb")
    backbone = build_backbone(cfg.model)
    rng = np.random.default_rng(4)
    arrays = {}
    for layer, names in inflate.s3dg_inception_v1().entries.items():
        if layer not in [x.name for x in backbone.layers]:
            continue
        shape = backbone.get_layer(layer).weights[0].shape
        for w, name in names.items():
            if w == "kernel":
                arrays[name] = rng.normal(0, 0.1, tuple(shape)[1:]).astype(np.float32)
            elif w != "gamma":
                arrays[name] = rng.uniform(0.5, 1.5, tuple(shape)).astype(np.float32)
    prefix = save_v2(str(tmp_path / "inception_v1.ckpt"), arrays)
    model_dir = str(tmp_path / "run")
    argv = [
        "train", "--preset", "tiny_s3dg_teacher_rgb", "--data_dir", tiny_data,
        "--model_dir", model_dir, "--init_2d", prefix,
        "--set", "train.train_steps=1", "--set", "train.eval_at_end=false",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    with open(os.path.join(model_dir, "config.json")) as f:
        assert json.load(f)["train"]["init_2d_checkpoint"] == prefix
    with open(os.path.join(model_dir, inflate.REPORT_FILENAME)) as f:
        report = json.load(f)
    assert report["mapping"] == "s3dg_inception_v1" and len(report["loaded"]) == 2 * 21
    model, _ = load_model(model_dir)
    for layer in report["loaded"]:
        if layer.endswith("_conv"):
            name = inflate.s3dg_inception_v1().entries[layer]["kernel"]
            np.testing.assert_array_equal(
                weights(model.backbone, layer)["kernel"], arrays[name][None]
            )
        else:
            bn = weights(model.backbone, layer)
            np.testing.assert_array_equal(bn["gamma"], 1)
            name = inflate.s3dg_inception_v1().entries[layer]["beta"]
            np.testing.assert_array_equal(bn["beta"], arrays[name])
    mtime = os.path.getmtime(os.path.join(model_dir, inflate.REPORT_FILENAME))
    os.remove(prefix + ".index")  # a resumed run must not read it
    argv[argv.index("train.train_steps=1")] = "train.train_steps=2"
    assert cli.main(argv) == 0
    assert os.path.getmtime(os.path.join(model_dir, inflate.REPORT_FILENAME)) == mtime
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = ExperimentConfig.from_json(f.read())
    assert cfg.train.init_2d_checkpoint == prefix
