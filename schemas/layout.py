"""The output layout: every name the job gives a file or folder of its output directory.

    OUTPUT_DIR/dataset_info.json                               the description (DATASET_INFO)
    OUTPUT_DIR/<split>/<dataset_name>-SSSSS-of-NNNNN.tfrecord  the shards (shard_path)
    OUTPUT_DIR/failures/failures-SSSSS-of-NNNNN.jsonl          the failure rows (failures_file)
    OUTPUT_DIR/.parts/                                         the job's own state (STATE_DIR):
        <key>.tfrecord, <key>.meta.json, <key>.failure.json    one part per input row
        run.json                                               settings and the own-files list
        lock                                                   who runs in the directory now
    OUTPUT_DIR/.staging/                                       what is staged for remote workers

Paths here are relative to the output directory, with forward slashes; `join` puts one under an
output directory given as a local path or a `gs://` URL. Every file is first written under its
name plus TMP_SUFFIX and then renamed, so that a reader never sees half a file.

Pure names and string functions: no I/O, and nothing of the project is imported, so that the
training package reads the same layout on a TPU VM.
"""

from __future__ import annotations

import posixpath
import re

DATASET_INFO = "dataset_info.json"  # the description, `schemas.dataset_info.DatasetInfo`
TFRECORD_SUFFIX = ".tfrecord"  # shards and parts: uncompressed TFRecord files
SHARD_GLOB = "*" + TFRECORD_SUFFIX  # every shard of one split folder
TMP_SUFFIX = ".tmp"  # a file being written: renamed to its name once complete
SHARD_DIGITS = 5  # SSSSS and NNNNN: shard index and count, zero-padded (Beam's shard template)

# Failure rows: one JSON object a line, in Beam's text shards under FAILURES_DIR.
FAILURES_DIR = "failures"
FAILURES_PREFIX = "failures"
FAILURES_SUFFIX = ".jsonl"

# The job's own state.
STATE_DIR = ".parts"  # parts, settings and own-files list, lock
RUN_FILE = "run.json"  # in STATE_DIR: the settings of the run and the job's own files
LOCK_FILE = "lock"  # in STATE_DIR: the holder of the one-job-per-directory lock
PART_RECORDS_SUFFIX = TFRECORD_SUFFIX  # <key>.tfrecord: a part's clips, one record per clip
PART_META_SUFFIX = ".meta.json"  # <key>.meta.json: what the part holds; present means done
PART_FAILURE_SUFFIX = ".failure.json"  # <key>.failure.json: the row's failure
PART_KEY_HEX_DIGITS = 24  # a part's key: this many lowercase hex digits
STAGING_DIR = ".staging"  # what the launcher stages for remote workers

DATASET_NAME_MAX = 100  # characters
_DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
# A shard the job writes: <name>-SSSSS-of-NNNNN.tfrecord (and only that).
_SHARD = re.compile(
    rf"[A-Za-z0-9][A-Za-z0-9._-]*-\d{{{SHARD_DIGITS}}}-of-\d{{{SHARD_DIGITS}}}"
    rf"{re.escape(TFRECORD_SUFFIX)}\Z"
)
# A part file (or its temporary name while being written).
PART_SUFFIXES = (PART_RECORDS_SUFFIX, PART_META_SUFFIX, PART_FAILURE_SUFFIX)
_PART_FILE = re.compile(
    rf"[0-9a-f]{{{PART_KEY_HEX_DIGITS}}}"
    rf"({'|'.join(re.escape(s) for s in PART_SUFFIXES)})"
    rf"({re.escape(TMP_SUFFIX)})?\Z"
)


def join(root: str, *names: str) -> str:
    """`root/name/...` for a local directory or a `gs://` URL alike (posixpath joining: a
    trailing slash of `root` is not doubled)."""
    return posixpath.join(root, *names)


def check_dataset_name(dataset_name: str) -> str:
    """`dataset_name` if it is safe in a file name and a glob; ValueError naming it otherwise.

    The one rule: 1 to DATASET_NAME_MAX characters of A-Z a-z 0-9 . _ -, starting with a letter
    or digit.
    """
    if len(dataset_name) > DATASET_NAME_MAX or not _DATASET_NAME.match(dataset_name):
        raise ValueError(
            f"dataset_name={dataset_name!r}: must be 1-{DATASET_NAME_MAX} of A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit (it names files and is matched against them)"
        )
    return dataset_name


def _shard_suffix(index: int, num_shards: int) -> str:
    """`-SSSSS-of-NNNNN`; ValueError unless 0 <= index < num_shards."""
    if not 0 <= index < num_shards:
        raise ValueError(f"index={index}: must be in [0, num_shards={num_shards})")
    return f"-{index:0{SHARD_DIGITS}d}-of-{num_shards:0{SHARD_DIGITS}d}"


def shard_name(dataset_name: str, index: int, num_shards: int) -> str:
    """`<dataset_name>-SSSSS-of-NNNNN.tfrecord`, index in [0, num_shards), 5 digits each."""
    check_dataset_name(dataset_name)
    return dataset_name + _shard_suffix(index, num_shards) + TFRECORD_SUFFIX


def is_shard_name(name: str) -> bool:
    """True for a file name (no folder) of the form the job gives its shards."""
    return bool(_SHARD.match(name))


def split_dir(split: str) -> str:
    """The folder of a split's shards: the split's name itself (`train`, `validation`, ...)."""
    if not split or "/" in split or split in (".", ".."):
        raise ValueError(f"split={split!r}: must be a non-empty folder name without '/'")
    return split


def shard_path(split: str, dataset_name: str, index: int, num_shards: int) -> str:
    """`<split>/<dataset_name>-SSSSS-of-NNNNN.tfrecord`, relative to the output directory: the
    name the description lists the shard under."""
    return posixpath.join(split_dir(split), shard_name(dataset_name, index, num_shards))


def split_shard_glob(split: str) -> str:
    """`<split>/*.tfrecord`: every shard of a split, relative to the output directory."""
    return posixpath.join(split_dir(split), SHARD_GLOB)


def failures_file(index: int = 0, num_shards: int = 1) -> str:
    """`failures/failures-SSSSS-of-NNNNN.jsonl` (the job writes one: index 0 of 1)."""
    name = FAILURES_PREFIX + _shard_suffix(index, num_shards) + FAILURES_SUFFIX
    return posixpath.join(FAILURES_DIR, name)


# The failure files as the description names them (`DatasetInfo.failures`).
FAILURES_PATTERN = posixpath.join(FAILURES_DIR, FAILURES_PREFIX + "-*" + FAILURES_SUFFIX)
# The prefix the failures' text sink writes its shards under (Beam adds -SSSSS-of-NNNNN.jsonl).
FAILURES_SHARD_PREFIX = posixpath.join(FAILURES_DIR, FAILURES_PREFIX)
# Every failure file a reader takes: any `*.jsonl` in the failures folder.
FAILURES_READ_GLOB = posixpath.join(FAILURES_DIR, "*" + FAILURES_SUFFIX)


def state_file(name: str) -> str:
    """`.parts/<name>`, relative to the output directory."""
    return posixpath.join(STATE_DIR, name)


def part_file(key: str, suffix: str) -> str:
    """`.parts/<key><suffix>`, suffix one of the PART_*_SUFFIX; ValueError naming a bad one."""
    if suffix not in PART_SUFFIXES:
        raise ValueError(f"suffix={suffix!r}: not a part file suffix")
    return state_file(key + suffix)


def is_part_file_name(name: str) -> bool:
    """True for a file name (no folder) the job gives a part file, or its temporary name."""
    return bool(_PART_FILE.match(name))


def tmp_name(path: str) -> str:
    """The name a file is written under before it is renamed to `path`."""
    return path + TMP_SUFFIX
