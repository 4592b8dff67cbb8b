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
