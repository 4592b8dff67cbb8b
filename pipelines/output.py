"""The output layout: shard names, deterministic shard assignment, TFRecord files, description.

OUTPUT_DIR/dataset_info.json
OUTPUT_DIR/<split>/<dataset_name>-SSSSS-of-NNNNN.tfrecord
OUTPUT_DIR/failures/failures-SSSSS-of-NNNNN.jsonl
"""

from __future__ import annotations

import json
import posixpath
import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence

import google_crc32c
from apache_beam.io.filesystems import FileSystems

from pipelines.gcs import configure_emulator

configure_emulator()  # only with STORAGE_EMULATOR_HOST set: see pipelines/gcs.py

DATASET_INFO = "dataset_info.json"
FAILURES_DIR = "failures"
FAILURES_PREFIX = "failures"
RECORD_OVERHEAD = 16  # TFRecord framing per record: length (8), its CRC (4), the data's CRC (4)


def join(*parts: str) -> str:
    """Joins path parts for local paths and gs:// URLs alike."""
    return FileSystems.join(*parts)


def shard_name(dataset_name: str, index: int, num_shards: int) -> str:
    """`<dataset_name>-SSSSS-of-NNNNN.tfrecord` (Beam's default shard template)."""
    if not 0 <= index < num_shards:
        raise ValueError(f"index={index}: must be in [0, num_shards={num_shards})")
    return f"{dataset_name}-{index:05d}-of-{num_shards:05d}.tfrecord"


def shard_path(output_dir: str, split: str, dataset_name: str, index: int, num_shards: int) -> str:
    return join(output_dir, split, shard_name(dataset_name, index, num_shards))


def shard_of(example_id: str, num_shards: int) -> int:
    """The shard a clip goes to: CRC-32 of its id modulo `num_shards` (same on every machine)."""
    if num_shards < 1:
        raise ValueError(f"num_shards={num_shards}: must be >= 1")
    return zlib.crc32(example_id.encode("utf-8")) % num_shards


def _mask(crc: int) -> int:
    """TFRecord's masking of a CRC-32C."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    return _mask(google_crc32c.value(data))


def _record_frame(pieces: Sequence[bytes]) -> tuple[bytes, bytes]:
    """The bytes before and after the record made of `pieces` in its TFRecord: the length, the
    masked CRC-32C of the length; then the masked CRC-32C of the data."""
    length = struct.pack("<Q", sum(len(p) for p in pieces))
    crc = 0
    for p in pieces:
        crc = google_crc32c.extend(crc, p)
    return length + struct.pack("<I", _masked_crc(length)), struct.pack("<I", _mask(crc))


def record_size(data_len: int) -> int:
    """Bytes a record of `data_len` bytes takes in a TFRecord file (12 before, 4 after)."""
    return RECORD_OVERHEAD + data_len


def write_tfrecords(path: str, records: Iterable[bytes | Sequence[bytes]]) -> int:
    """Writes uncompressed TFRecords to `path` (local or gs://) atomically; returns the count.

    A record is its bytes, or a list or tuple of pieces whose concatenation is the record
    (`SequenceExampleBuilder.serialize_pieces`): the pieces are written one after the other, never
    joined, so a record of tens of MB is not copied. The file appears under its name only when
    complete: it is written as `path.tmp` first, and removed if `records` raises. `records` may be
    a generator; each record is written and let go.
    """
    tmp = path + ".tmp"
    count = 0
    try:
        with FileSystems.create(tmp) as f:
            for rec in records:
                pieces = rec if isinstance(rec, (list, tuple)) else (rec,)
                header, footer = _record_frame(pieces)
                f.write(header)
                for p in pieces:
                    f.write(p)
                f.write(footer)
                count += 1
    except BaseException:
        if FileSystems.exists(tmp):
            FileSystems.delete([tmp])
        raise
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])
    return count


def _read_record(f, path: str, check_crc: bool) -> bytes | None:
    """The record at `f`'s position, or None at the end of the file; ValueError if corrupt."""
    header = f.read(12)
    if not header:
        return None
    if len(header) != 12:
        raise ValueError(f"{path}: truncated record header")
    (length,) = struct.unpack("<Q", header[:8])
    if check_crc and struct.unpack("<I", header[8:])[0] != _masked_crc(header[:8]):
        raise ValueError(f"{path}: corrupt record length")
    data = f.read(length)
    footer = f.read(4)
    if len(data) != length or len(footer) != 4:
        raise ValueError(f"{path}: truncated record")
    if check_crc and struct.unpack("<I", footer)[0] != _masked_crc(data):
        raise ValueError(f"{path}: corrupt record data")
    return data


def read_tfrecords(path: str, check_crc: bool = True) -> Iterator[bytes]:
    """Yields the records of an uncompressed TFRecord file; ValueError on a corrupt file."""
    with FileSystems.open(path) as f:
        while (data := _read_record(f, path, check_crc)) is not None:
            yield data


def read_tfrecords_at(path: str, offsets: Iterable[int], check_crc: bool = True) -> Iterator[bytes]:
    """Yields the records starting at byte `offsets` of a TFRecord file, in the order given,
    one at a time (the file is opened once and read by seeking). ValueError on a corrupt record
    or an offset at the end of the file."""
    with FileSystems.open(path) as f:
        for offset in offsets:
            f.seek(offset)
            data = _read_record(f, path, check_crc)
            if data is None:
                raise ValueError(f"{path}: no record at offset {offset}")
            yield data


def write_text(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with FileSystems.create(tmp) as f:
        f.write(text.encode("utf-8"))
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


def read_json(path: str) -> dict:
    with FileSystems.open(path) as f:
        return json.loads(f.read().decode("utf-8"))


def list_files(pattern: str) -> list[str]:
    """Paths matching a glob pattern, sorted."""
    result = FileSystems.match([pattern])[0]
    return sorted(m.path for m in result.metadata_list)


def relative(output_dir: str, path: str) -> str:
    """`path` relative to `output_dir`, with forward slashes."""
    base = output_dir.rstrip("/")
    if path.startswith(base + "/"):
        return path[len(base) + 1 :]
    return posixpath.relpath(path, base)
