"""The output directory's files: TFRecord files (written and read: the one set of record readers
of the pipeline side), the description, the failure rows, deterministic shard assignment and the
one-job-per-directory lock. Paths are local or gs:// (Beam's FileSystems).

The names in the directory are `schemas.layout`'s (re-exported here under their old names):

OUTPUT_DIR/dataset_info.json
OUTPUT_DIR/<split>/<dataset_name>-SSSSS-of-NNNNN.tfrecord
OUTPUT_DIR/failures/failures-SSSSS-of-NNNNN.jsonl
OUTPUT_DIR/.parts/lock        who runs in the directory now (host, pid, start time)
"""

from __future__ import annotations

import datetime
import errno
import json
import logging
import os
import posixpath
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

import google_crc32c
from apache_beam.io.filesystems import FileSystems

from schemas import layout
from schemas.dataset_info import DatasetInfo

LOG = logging.getLogger("perfnet.output")
DATASET_INFO = layout.DATASET_INFO
FAILURES_DIR = layout.FAILURES_DIR
FAILURES_PREFIX = layout.FAILURES_PREFIX
RECORD_OVERHEAD = 16  # TFRecord framing per record: length (8), its CRC (4), the data's CRC (4)
STATE_DIR = layout.STATE_DIR  # the job's own state: parts, settings and own-files list, lock
LOCK_FILE = layout.LOCK_FILE
DATASET_NAME_MAX = layout.DATASET_NAME_MAX
# The one rule for dataset names (`PreprocessConfig.validate` checks it, `shard_name` again),
# the shards' names and which file names are shards: `schemas.layout`.
check_dataset_name = layout.check_dataset_name
is_shard_name = layout.is_shard_name
shard_name = layout.shard_name


def join(*parts: str) -> str:
    """Joins path parts for local paths and gs:// URLs alike."""
    return FileSystems.join(*parts)


def shard_path(output_dir: str, split: str, dataset_name: str, index: int, num_shards: int) -> str:
    """OUTPUT_DIR/<split>/<dataset_name>-SSSSS-of-NNNNN.tfrecord (`layout.shard_path`)."""
    return join(output_dir, layout.shard_path(split, dataset_name, index, num_shards))


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
    tmp = layout.tmp_name(path)
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


def write_bytes(path: str, data: bytes) -> None:
    """Writes `data` to `path` (local or gs://) atomically: as `path.tmp` first, then renamed
    (an older `path` is replaced)."""
    tmp = layout.tmp_name(path)
    with FileSystems.create(tmp) as f:
        f.write(data)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


def write_text(path: str, text: str) -> None:
    """Writes `text` (UTF-8) to `path` atomically, as `write_bytes`."""
    write_bytes(path, text.encode("utf-8"))


def read_json(path: str) -> dict:
    with FileSystems.open(path) as f:
        return json.loads(f.read().decode("utf-8"))


# ---------------------------------------------------------------------------------------------
# A finished output directory: its description and its records.
# ---------------------------------------------------------------------------------------------
def dataset_info_path(output_dir: str) -> str:
    """OUTPUT_DIR/dataset_info.json."""
    return join(output_dir, layout.DATASET_INFO)


def read_dataset_info(output_dir: str) -> DatasetInfo:
    """The description of a finished output directory (local or gs://), parsed and its schema
    version checked (`DatasetInfo.from_json`).

    Raises:
      FileNotFoundError: naming output_dir, which has no dataset_info.json.
      ValueError: naming the file and the field, on a description this code cannot read.
    """
    path = dataset_info_path(output_dir)
    if not FileSystems.exists(path):
        raise FileNotFoundError(
            f"output_dir={output_dir!r}: no {layout.DATASET_INFO} (not a finished output directory)"
        )
    return DatasetInfo.from_json(read_json(path), path)


class Shard(NamedTuple):
    """One shard of a description: its split, its path relative to the output directory (as
    the description lists it) and its full path."""

    split: str
    name: str
    path: str


def dataset_shards(output_dir: str, info: DatasetInfo, split: str | None = None) -> list[Shard]:
    """The shards `info` lists, in its split order and shard order; only `split`'s when given
    (ValueError naming it and the splits there if the description has no such split)."""
    info.select_splits(split, output_dir)
    return [Shard(s, name, join(output_dir, name)) for s, name in info.shards(split)]


class DatasetRecord(NamedTuple):
    """One record of an output directory: its split, its shard (relative, as listed) and its
    bytes (a serialized `tf.train.SequenceExample`)."""

    split: str
    shard: str
    data: bytes


def iter_dataset_records(
    output_dir: str, split: str | None = None, info: DatasetInfo | None = None
) -> Iterator[DatasetRecord]:
    """Yields every record of a finished output directory, shard by shard in the description's
    order, one at a time (memory holds one record).

    Args:
      output_dir: local or gs://, with its dataset_info.json.
      split: only this split; None for every split.
      info: the directory's description, if already read (else it is read here).

    Raises:
      FileNotFoundError, ValueError: as `read_dataset_info`, `dataset_shards` and
        `read_tfrecords` (a corrupt shard, naming it).
    """
    info = read_dataset_info(output_dir) if info is None else info
    for shard in dataset_shards(output_dir, info, split):
        for data in read_tfrecords(shard.path):
            yield DatasetRecord(shard.split, shard.name, data)


def read_failure_rows(output_dir: str) -> list[dict]:
    """The failure rows (`failures/*.jsonl`) of a finished output directory, in file order."""
    rows = []
    for path in list_files(join(output_dir, layout.FAILURES_READ_GLOB)):
        with FileSystems.open(path) as f:
            rows += [json.loads(line) for line in f.read().decode().splitlines() if line.strip()]
    return rows


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


def existing(output_dir: str, names: Iterable[str]) -> list[str]:
    """The full paths of those of `names` (relative) that exist, sorted."""
    paths = (join(output_dir, n) for n in sorted(set(names)))
    return [p for p in paths if FileSystems.exists(p)]


# ---------------------------------------------------------------------------------------------
# One job per output directory.
# ---------------------------------------------------------------------------------------------
GCS_LOCK_EXPIRY_S = 600.0  # a gs:// lock not refreshed for this long is a dead job's
GCS_LOCK_HEARTBEAT_S = 60.0


def _holder() -> dict:
    now = datetime.datetime.now(datetime.UTC)
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": now.isoformat(timespec="seconds"),
    }


def _describe(holder: dict) -> str:
    return (
        f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, "
        f"started {holder.get('started', '?')}"
    )


class OutputLock:
    """Held while a job runs in `output_dir`; a second job is refused with ValueError naming the
    holder (host, pid, start time).

    Local directories: an exclusive `flock` on `.parts/lock`, which holds the holder's
    description and is removed on release. The kernel drops the lock when the holder dies,
    however it dies, so a killed job's lock is never in the way: the next job takes it over and
    logs whose it was. (On NFS, Linux maps flock to NFS byte-range locks.)

    gs://: the object `.parts/lock`, created only if absent (generation precondition) and
    rewritten every GCS_LOCK_HEARTBEAT_S seconds. One not rewritten for GCS_LOCK_EXPIRY_S
    seconds (its update time against this machine's clock) is a dead job's: it is taken over
    (again with a precondition, so of two jobs taking over one wins) with a log line. A job that
    cannot heartbeat for that long (a frozen launcher) may lose the lock; it logs an error when
    it notices.

    `acquire` takes it (once the job knows it will run: a job refused for a bad flag, model or
    manifest leaves output_dir as it is); leaving the `with` block releases it, however the job
    ends. `enabled=False` makes it do nothing (a dry run leaves output_dir as it is).
    """

    def __init__(self, output_dir: str, enabled: bool = True):
        self._dir = output_dir
        self._path = join(output_dir, STATE_DIR, LOCK_FILE)
        self._enabled = enabled
        self._fd = None
        self._blob = None
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        return self

    def acquire(self):
        if self._enabled and self._fd is None and self._blob is None:
            if self._path.startswith("gs://"):
                self._acquire_gcs()
            elif "://" in self._path:
                LOG.warning("output_dir=%r: no lock on this file system", self._dir)
            else:
                self._acquire_local()

    def __exit__(self, *exc):
        self.release()
        return False

    def _refuse(self, holder: dict):
        raise ValueError(
            f"output_dir={self._dir!r} is in use by another job ({_describe(holder)}); wait "
            "for it to end, or choose another directory"
        )

    # Local -------------------------------------------------------------------------------
    def _acquire_local(self):
        import fcntl

        os.makedirs(os.path.dirname(self._path), exist_ok=True)
        while True:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    self._refuse(_parse(text))
                LOG.warning("output_dir=%r: cannot lock it (%s); not protected", self._dir, e)
                return
            try:  # the file locked is still the lock, not one a releasing job just removed
                if os.fstat(fd).st_ino == os.stat(self._path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        old = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        if old.strip():  # its holder ended without releasing it: killed
            LOG.warning(
                "output_dir=%r: taking over the lock of a job that is gone (%s)",
                self._dir,
                _describe(_parse(old)),
            )
        data = json.dumps(_holder()).encode("utf-8")
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)
        self._fd = fd

    # gs:// -------------------------------------------------------------------------------
    def _acquire_gcs(self):
        from apache_beam.io.gcp.gcsio import GcsIO, parse_gcs_path
        from google.api_core import exceptions

        bucket, name = parse_gcs_path(self._path)
        blob = GcsIO().client.bucket(bucket).blob(name)
        data = json.dumps(_holder())
        try:
            if blob.exists():  # only for the message: the precondition below decides
                raise exceptions.PreconditionFailed("exists")
            blob.upload_from_string(data, if_generation_match=0)
        except exceptions.PreconditionFailed:
            blob.reload()
            holder = _parse(blob.download_as_bytes().decode("utf-8", "replace"))
            age = time.time() - blob.updated.timestamp()  # the bucket's time of the last beat
            if age < GCS_LOCK_EXPIRY_S:
                self._refuse(holder)
            LOG.warning(
                "output_dir=%r: taking over the lock of a job that is gone (%s; not refreshed "
                "for %.0f s)",
                self._dir,
                _describe(holder),
                age,
            )
            try:
                blob.upload_from_string(data, if_generation_match=blob.generation)
            except exceptions.PreconditionFailed:
                self._refuse(holder)  # another job took it over first
        blob.reload()
        self._blob = blob
        self._thread = threading.Thread(target=self._heartbeat, name="lock", daemon=True)
        self._thread.start()

    def _heartbeat(self):
        from google.api_core import exceptions

        while not self._stop.wait(GCS_LOCK_HEARTBEAT_S):
            try:
                data = self._blob.download_as_bytes()
                self._blob.upload_from_string(data, if_generation_match=self._blob.generation)
                self._blob.reload()
            except exceptions.PreconditionFailed:
                LOG.error("output_dir=%r: another job took over this job's lock", self._dir)
                return
            except Exception as e:  # noqa: BLE001 - retried at the next beat
                LOG.warning("output_dir=%r: lock heartbeat failed: %s", self._dir, e)

    def release(self):
        if self._fd is not None:
            import fcntl

            fd, self._fd = self._fd, None
            try:
                os.unlink(self._path)  # gone: released, not killed
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
        if self._blob is not None:
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout=10)
            blob, self._blob = self._blob, None
            try:
                blob.delete(if_generation_match=blob.generation)
            except Exception as e:  # noqa: BLE001 - taken over, or gone: not ours to delete
                LOG.warning("output_dir=%r: lock not released: %s", self._dir, e)


def _parse(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
