"""TFRecord framing (read back by TensorFlow), shard names and deterministic shard assignment."""

import pytest
import tensorflow as tf

from pipelines.storage import output


def test_tfrecords_we_write_are_read_by_tensorflow(tmp_path):
    path = str(tmp_path / "x.tfrecord")
    records = [b"", b"a", b"hello" * 1000]
    assert output.write_tfrecords(path, records) == 3
    assert [r.numpy() for r in tf.data.TFRecordDataset(path)] == records
    assert list(output.read_tfrecords(path)) == records
    assert not (tmp_path / "x.tfrecord.tmp").exists()


def test_records_given_as_pieces_are_written_as_their_concatenation(tmp_path):
    records = [b"abc" * 4000, b"", b"z"]
    as_pieces = [[r[:5], r[5:7000], r[7000:]] for r in records[:1]] + [(), (b"z",)]
    joined, pieced = str(tmp_path / "a.tfrecord"), str(tmp_path / "b.tfrecord")
    assert output.write_tfrecords(joined, records) == 3
    assert output.write_tfrecords(pieced, as_pieces) == 3
    with open(joined, "rb") as a, open(pieced, "rb") as b:
        assert a.read() == b.read()
    # Records back to back: each one starts 16 bytes of framing after the previous one's data.
    offsets = [0, 16 + 12000, 16 + 12000 + 16]
    assert [output.record_size(len(r)) for r in records] == [12016, 16, 17]
    assert list(output.read_tfrecords_at(pieced, [offsets[2], offsets[0]])) == [b"z", records[0]]
    with pytest.raises(ValueError, match="no record at offset 12049"):
        list(output.read_tfrecords_at(pieced, [12049]))
    with pytest.raises(ValueError, match="corrupt record length"):
        list(output.read_tfrecords_at(pieced, [1]))


def test_shard_names_and_assignment():
    assert output.shard_name("k600", 3, 16) == "k600-00003-of-00016.tfrecord"
    # CRC-32 of the id, so the same on every machine and run.
    assert output.shard_of("abc_0", 7) == 6  # zlib.crc32(b"abc_0") = 2721354278
    assert {output.shard_of(f"v{i}_0", 4) for i in range(100)} == {0, 1, 2, 3}


def _made_dir(root) -> str:
    """An output directory of two splits, three shards, the description listing them."""
    import json

    from schemas import layout

    shards = {"train": [[b"t0", b"t1"], [b"t2"]], "validation": [[b"v0"]]}
    splits = {}
    for split, records in shards.items():
        (root / split).mkdir()
        names = [layout.shard_path(split, "m", i, len(records)) for i in range(len(records))]
        for name, recs in zip(names, records):
            output.write_tfrecords(str(root / name), recs)
        splits[split] = {"shards": names}
    info = {"schema_version": 1, "modalities": ["rgb"], "splits": splits}
    (root / layout.DATASET_INFO).write_text(json.dumps(info))
    return str(root)


def test_the_records_of_an_output_directory_are_read_in_the_descriptions_order(tmp_path):
    out = _made_dir(tmp_path)
    info = output.read_dataset_info(out)
    assert info.split_names == ("train", "validation")
    shards = output.dataset_shards(out, info)
    assert [(s.split, s.name) for s in shards] == [
        ("train", "train/m-00000-of-00002.tfrecord"),
        ("train", "train/m-00001-of-00002.tfrecord"),
        ("validation", "validation/m-00000-of-00001.tfrecord"),
    ]
    assert shards[0].path == output.join(out, "train", "m-00000-of-00002.tfrecord")
    records = list(output.iter_dataset_records(out))
    assert [r.data for r in records] == [b"t0", b"t1", b"t2", b"v0"]
    assert records[2] == ("train", "train/m-00001-of-00002.tfrecord", b"t2")
    assert [r.data for r in output.iter_dataset_records(out, "validation", info)] == [b"v0"]
    with pytest.raises(ValueError, match=r"split='test': not in .* \(splits there: \['train'"):
        list(output.iter_dataset_records(out, "test"))


def test_a_missing_or_bad_description_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no dataset_info.json"):
        output.read_dataset_info(str(tmp_path))
    (tmp_path / "dataset_info.json").write_text('{"schema_version": 7}')
    with pytest.raises(ValueError, match=r"dataset_info.json: schema_version=7"):
        list(output.iter_dataset_records(str(tmp_path)))


def test_write_bytes_replaces_atomically(tmp_path):
    path = str(tmp_path / "a.bin")
    output.write_bytes(path, b"one")
    output.write_bytes(path, b"two")
    assert (tmp_path / "a.bin").read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]
