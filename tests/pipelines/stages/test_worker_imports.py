"""A job worker writes a row without importing TensorFlow or MediaPipe (hundreds of MB each): in
a subprocess where importing them fails, the worker's DoFn processes a clip with every modality
and the default pose model (MoveNet, run by LiteRT), and the shards' class index is set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from pipelines import assets

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

WORKER_RUN = textwrap.dedent(
    """
    import importlib.abc, json, sys

    BLOCKED = ("tensorflow", "mediapipe", "keras")

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name}: a worker does not need it")
            return None

    sys.meta_path.insert(0, Blocker())
    try:
        import tensorflow
    except ImportError:
        pass
    else:
        raise SystemExit("the blocker let tensorflow through")

    from pipelines.job.config import PreprocessConfig
    from pipelines.job.transforms import DONE, ProcessVideoFn
    from pipelines.manifests import ClipSpec
    from pipelines.stages.pose import load_pose_model
    from pipelines.storage import output, parts
    from schemas import media_sequence as ms

    video, model_path, out = sys.argv[1:4]
    config = PreprocessConfig(input="m.csv", output_dir=out, threads_per_worker=1)
    assert config.modalities == ms.DEFAULT_MODALITIES, config.modalities
    _, sha = load_pose_model(model_path)
    fn = ProcessVideoFn(config.clip_settings(), out, model_path, sha)
    fn.setup()
    spec = ClipSpec("v", video, "v.mp4", "walk", 0, 0, 240_000, "train", "m.csv:2")
    (status, key, stats), = fn.process(spec)
    assert status == DONE, stats
    meta = parts.read_meta(out, key)
    (record,) = output.read_tfrecords(parts.records_path(out, key))
    assert len(record) == meta["clips"][0]["bytes"], (len(record), meta)
    relabeled = ms.with_label_index(record, 7)
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not leaked, leaked
    result = {"frames": stats["frames"], "record": record.hex(), "relabeled": relabeled.hex()}
    print(json.dumps(result))
    """
)


def test_a_worker_writes_a_row_without_tensorflow(assets_ready, tmp_path):
    video = str(assets.sample_video_path("pose2sim_multi_cam01.mp4"))
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run(
        [sys.executable, "-c", WORKER_RUN, video, str(assets_ready["model"]), str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-6000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["frames"] == 6  # 0.24 s at 25 fps

    # What it wrote parses with TensorFlow, here: every modality, persons found, and the class
    # index set without TensorFlow is the one protobuf writes.
    import tensorflow as tf

    from schemas import media_sequence as ms

    record = bytes.fromhex(result["record"])
    ex = tf.train.SequenceExample.FromString(record)
    assert ex.SerializeToString(deterministic=True) == record
    assert set(ex.feature_lists.feature_list) == ms.sequence_keys()
    lists = ex.feature_lists.feature_list
    assert len(lists["FORWARD_FLOW/image/encoded"].feature) == 5
    assert sum(f.int64_list.value[0] for f in lists[ms.REGION_NUM_REGIONS_KEY].feature) > 0
    ex.context.feature[ms.CLIP_LABEL_INDEX_KEY].int64_list.value[:] = [7]
    assert bytes.fromhex(result["relabeled"]) == ex.SerializeToString(deterministic=True)
