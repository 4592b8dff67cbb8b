"""The output layout's names: shards, failures, parts, and joining under local and gs:// roots."""

import pytest

from schemas import layout


def test_shard_names_and_paths():
    assert layout.shard_name("k600", 3, 16) == "k600-00003-of-00016.tfrecord"
    assert layout.shard_path("train", "k600", 0, 1) == "train/k600-00000-of-00001.tfrecord"
    assert layout.split_shard_glob("validation") == "validation/*.tfrecord"
    assert layout.is_shard_name("k600-00003-of-00016.tfrecord")
    for name in (
        "k600-3-of-16.tfrecord",
        "k600-00003-of-00016.tfrecord.tmp",
        "train/k600-00003-of-00016.tfrecord",
        "-00003-of-00016.tfrecord",
        "notes.txt",
    ):
        assert not layout.is_shard_name(name), name
    with pytest.raises(ValueError, match="index=2: must be in \\[0, num_shards=2\\)"):
        layout.shard_name("k600", 2, 2)
    with pytest.raises(ValueError, match="dataset_name='a b'"):
        layout.shard_name("a b", 0, 1)
    with pytest.raises(ValueError, match="split='a/b'"):
        layout.shard_path("a/b", "k600", 0, 1)


def test_dataset_names():
    assert layout.check_dataset_name("kinetics-600_v1.2") == "kinetics-600_v1.2"
    for bad in ("", ".hidden", "a*", "a/b", "x" * (layout.DATASET_NAME_MAX + 1)):
        with pytest.raises(ValueError, match="dataset_name="):
            layout.check_dataset_name(bad)


def test_failures_and_state_names():
    assert layout.DATASET_INFO == "dataset_info.json"
    assert layout.failures_file() == "failures/failures-00000-of-00001.jsonl"
    assert layout.FAILURES_PATTERN == "failures/failures-*.jsonl"
    assert layout.FAILURES_SHARD_PREFIX == "failures/failures"
    assert layout.FAILURES_READ_GLOB == "failures/*.jsonl"
    assert layout.state_file(layout.LOCK_FILE) == ".parts/lock"
    assert layout.state_file(layout.RUN_FILE) == ".parts/run.json"
    key = "0123456789abcdef01234567"
    assert layout.part_file(key, layout.PART_META_SUFFIX) == f".parts/{key}.meta.json"
    for suffix in (".tfrecord", ".meta.json", ".failure.json", ".tfrecord.tmp"):
        assert layout.is_part_file_name(key + suffix), suffix
    for name in (key[:-1] + ".meta.json", key.upper() + ".tfrecord", "run.json", "lock"):
        assert not layout.is_part_file_name(name), name
    with pytest.raises(ValueError, match="suffix='.json'"):
        layout.part_file(key, ".json")
    assert layout.tmp_name("a/b.tfrecord") == "a/b.tfrecord.tmp"


@pytest.mark.parametrize("root", ["/data/out", "/data/out/", "gs://bucket/out", "gs://bucket/out/"])
def test_join_under_local_and_gs_roots(root):
    base = root.rstrip("/")
    assert layout.join(root, layout.DATASET_INFO) == f"{base}/dataset_info.json"
    assert layout.join(root, "train", layout.SHARD_GLOB) == f"{base}/train/*.tfrecord"
