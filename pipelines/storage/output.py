"""The output layout: shard names, deterministic shard assignment, TFRecord files, description,
the job's own-files list and the one-job-per-directory lock.

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
import re
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence

import google_crc32c
from apache_beam.io.filesystems import FileSystems

LOG = logging.getLogger("perfnet.output")
DATASET_INFO = "dataset_info.json"
FAILURES_DIR = "failures"
FAILURES_PREFIX = "failures"
RECORD_OVERHEAD = 16  # TFRecord framing per record: length (8), its CRC (4), the data's CRC (4)
STATE_DIR = ".parts"  # the job's own state: parts, settings and own-files list, lock
LOCK_FILE = "lock"
DATASET_NAME_MAX = 100
_DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
# A shard the job writes: <name>-SSSSS-of-NNNNN.tfrecord (and only that).
_SHARD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*-\d{5}-of-\d{5}\.tfrecord\Z")


def join(*parts: str) -> str:
    """Joins path parts for local paths and gs:// URLs alike."""
    return FileSystems.join(*parts)


def check_dataset_name(dataset_name: str) -> str:
    """`dataset_name` if it is safe in a file name and a glob; ValueError naming it otherwise.
    The one rule: `PreprocessConfig.validate` checks it, and `shard_name` again."""
    if len(dataset_name) > DATASET_NAME_MAX or not _DATASET_NAME.match(dataset_name):
        raise ValueError(
            f"dataset_name={dataset_name!r}: must be 1-{DATASET_NAME_MAX} of A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit (it names files and is matched against them)"
        )
    return dataset_name


def is_shard_name(name: str) -> bool:
    """True for a file name of the form the job gives its shards."""
    return bool(_SHARD.match(name))


def shard_name(dataset_name: str, index: int, num_shards: int) -> str:
    """`<dataset_name>-SSSSS-of-NNNNN.tfrecord` (Beam's default shard template)."""
    check_dataset_name(dataset_name)
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


def read_failure_rows(output_dir: str) -> list[dict]:
    """The failure rows (`failures/*.jsonl`) of a finished output directory, in file order."""
    rows = []
    for path in list_files(join(output_dir, FAILURES_DIR, "*.jsonl")):
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
