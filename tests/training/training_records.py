"""Tiny records for the training tests, built in-process (no Beam, OpenCV or MediaPipe).

Imported by the tests as `training_records` (a unique top-level name: tests/ is no package).

`write_dataset` lays out a preprocessing-style output directory:

    ROOT/dataset_info.json
    ROOT/train/tiny-0000S-of-00002.tfrecord      12 clips of 12 frames, 32x40 pixels
    ROOT/validation/tiny-00000-of-00001.tfrecord  6 clips of 6 frames (shorter than 8: padded)

Class c in {0, 1, 2} is visible in every modality: RGB and pose-rendered frames are tinted
towards channel c, and the flow field moves (c - 1) * 8 pixels per frame along x.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from schemas import layout  # noqa: E402
from schemas import media_sequence as ms  # noqa: E402

# What a TPU VM lacks: a script run by `run_without_pipeline_imports` fails to import these.
BLOCKED_IMPORTS = ("apache_beam", "mediapipe", "cv2")
_BLOCKER = f"""
import importlib.abc, sys

BLOCKED = {BLOCKED_IMPORTS!r}

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is not installed on a TPU VM")
        return None

sys.meta_path.insert(0, Blocker())
"""


def run_without_pipeline_imports(script: str, *args: str):
    """Runs `script` (Python source; `BLOCKED` and `sys` are defined for it) in a fresh process
    where importing Beam, MediaPipe or OpenCV fails; returns the `subprocess.CompletedProcess`
    (stdout and stderr as text), with the repository on the path and `args` as sys.argv[1:]."""
    import subprocess
    import textwrap

    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return subprocess.run(
        [sys.executable, "-c", _BLOCKER + textwrap.dedent(script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


HEIGHT, WIDTH = 32, 40
NUM_CLASSES = 3
LABELS = ("alpha", "beta", "gamma")


def jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    """uint8 [H, W, 3] -> JPEG bytes (4:4:4 chroma, so colors survive)."""
    return tf.io.encode_jpeg(
        np.asarray(image, np.uint8), quality=quality, chroma_downsampling=False
    ).numpy()


def quantize_flow(v: np.ndarray) -> np.ndarray:
    """The contract's flow quantization: q = floor(255 * clip((v + 20) / 40, 0, 1)), uint8."""
    return np.floor(255 * np.clip((np.asarray(v, np.float64) + 20) / 40, 0, 1)).astype(np.uint8)


def flow_image(vx: np.ndarray, vy: np.ndarray) -> np.ndarray:
    """Flow components (pixels) -> the stored 3-channel image: R = x, G = y, B = 0."""
    return np.stack([quantize_flow(vx), quantize_flow(vy), np.zeros_like(quantize_flow(vx))], -1)


def clip_context(
    example_id: str, label: int, num_frames: int, dataset_name: str = "tiny", name: str = ""
) -> ms.ClipContext:
    """The context of a test clip of `num_frames` frames at 25 fps from 0 (`/videos/<id>.mp4`),
    class `label` named `name` (default `LABELS[label]`)."""
    return ms.ClipContext(
        example_id=example_id,
        dataset_name=dataset_name,
        data_path=f"/videos/{example_id}.mp4",
        media_id=example_id,
        start_us=0,
        end_us=num_frames * 40_000,
        label_index=label,
        label=name or LABELS[label],
    )


def serialize_clip(
    example_id: str,
    label: int,
    rgb: list[bytes],
    pose: list[bytes] | None = None,
    flow: list[bytes] | None = None,
    height: int = HEIGHT,
    width: int = WIDTH,
) -> bytes:
    """One SequenceExample with the given encoded frames (flow: len(rgb) - 1 steps)."""
    streams = {ms.MODALITY_RGB: ms.StreamInfo(height, width)}
    if pose is not None:
        streams[ms.MODALITY_POSE] = ms.StreamInfo(height, width)
    if flow is not None:
        streams[ms.MODALITY_FLOW] = ms.StreamInfo(height, width)
    n = len(rgb)
    builder = ms.SequenceExampleBuilder(clip_context(example_id, label, n), streams)
    empty = dict(
        keypoints=np.zeros((0, ms.NUM_JOINTS, 2)),
        keypoint_scores=np.zeros((0, ms.NUM_JOINTS)),
        boxes=np.zeros((0, 4)),
        box_scores=np.zeros((0,)),
    )
    for t in range(n):
        kwargs = dict(empty) if pose is not None else {}
        builder.add_frame(
            t * 40_000, rgb_jpeg=rgb[t], pose_jpeg=pose[t] if pose is not None else None, **kwargs
        )
        if flow is not None and t < n - 1:
            builder.add_flow(t * 40_000, flow[t])
    return builder.serialize()


def class_clip(example_id: str, label: int, num_frames: int, rng: np.random.Generator) -> bytes:
    """A clip whose class shows in every stream (see module doc)."""
    rgb, pose, flow = [], [], []
    for t in range(num_frames):
        img = np.full((HEIGHT, WIDTH, 3), 60.0)
        img[..., label] = 180.0
        img += rng.normal(0, 12, img.shape)
        x0 = (3 * t) % (WIDTH - 8)
        img[8:16, x0 : x0 + 8] = 230.0
        img = np.clip(img, 0, 255).astype(np.uint8)
        rendered = img.copy()
        rendered[20:22, 4 : WIDTH - 4] = (255, 255, 0)
        rgb.append(jpeg(img))
        pose.append(jpeg(rendered))
        vx = np.full((HEIGHT, WIDTH), (label - 1) * 8.0) + rng.normal(0, 1, (HEIGHT, WIDTH))
        vy = rng.normal(0, 1, (HEIGHT, WIDTH))
        flow.append(jpeg(flow_image(vx, vy), quality=100))
    return serialize_clip(example_id, label, rgb, pose, flow[:-1])


def write_records(path: str, records: list[bytes]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as w:
        for r in records:
            w.write(r)


def write_dataset(root: str, seed: int = 0) -> str:
    """Writes the tiny dataset under `root` (see module doc); returns `root`."""
    rng = np.random.default_rng(seed)
    train = [class_clip(f"train{i:02d}", i % NUM_CLASSES, 12, rng) for i in range(12)]
    write_records(os.path.join(root, layout.shard_path("train", "tiny", 0, 2)), train[0::2])
    write_records(os.path.join(root, layout.shard_path("train", "tiny", 1, 2)), train[1::2])
    evals = [class_clip(f"val{i:02d}", i % NUM_CLASSES, 6, rng) for i in range(6)]
    write_records(os.path.join(root, layout.shard_path("validation", "tiny", 0, 1)), evals)
    info = {
        "schema_version": ms.SCHEMA_VERSION,
        "dataset_name": "tiny",
        "num_classes": NUM_CLASSES,
        "labels": list(LABELS),
        "modalities": list(ms.DEFAULT_MODALITIES),
    }
    with open(os.path.join(root, layout.DATASET_INFO), "w") as f:
        json.dump(info, f)
    return root


def tiny(name: str, data_dir: str, model_dir: str, **train):
    """Preset `name` on `data_dir`, writing to `model_dir`, with `train.<key>=value` overrides."""
    from training.config import get_preset

    cfg = get_preset(name)
    cfg.data.data_dir = data_dir
    cfg.model_dir = model_dir
    for key, value in train.items():
        setattr(cfg.train, key, value)
    return cfg
