"""TFRecord framing (read back by TensorFlow), shard names and deterministic shard assignment."""

import tensorflow as tf

from pipelines import output


def test_tfrecords_we_write_are_read_by_tensorflow(tmp_path):
    path = str(tmp_path / "x.tfrecord")
    records = [b"", b"a", b"hello" * 1000]
    assert output.write_tfrecords(path, records) == 3
    assert [r.numpy() for r in tf.data.TFRecordDataset(path)] == records
    assert list(output.read_tfrecords(path)) == records
    assert not (tmp_path / "x.tfrecord.tmp").exists()


def test_shard_names_and_assignment():
    assert output.shard_name("k600", 3, 16) == "k600-00003-of-00016.tfrecord"
    # CRC-32 of the id, so the same on every machine and run.
    assert output.shard_of("abc_0", 7) == 6  # zlib.crc32(b"abc_0") = 2721354278
    assert {output.shard_of(f"v{i}_0", 4) for i in range(100)} == {0, 1, 2, 3}
