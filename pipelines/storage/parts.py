"""Per-input results, kept so that runs resume and grow instead of starting over.

Each manifest row (an input) is processed once into a *part* under `OUTPUT_DIR/.parts/`:

    <key>.tfrecord     the input's clips (one record per clip), written first
    <key>.meta.json    what the part holds (ids, frames, ...) and what it cost (CPU time per
                       stage): its presence means "done"
    <key>.failure.json the input's failure row, when it failed (retried by the next run)

`key` is a digest of everything in the row that decides its records (path, window, label,
split, ids), so a changed row is a new input. Every file is written under a temporary name and
renamed, so a killed run leaves only whole parts. The shards are then built from the parts of the
manifest's rows, sorted by clip id: re-running after a kill redoes only the inputs without a part,
and the final shards are byte for byte those of an uninterrupted run.

`.parts/run.json` records the settings that decide the records (sizes, rates, modalities, pose
model, rendering, flow); a run with other settings is refused instead of mixing records.
`run.json` also lists the files outside `.parts/` the job wrote (`own_files`), recorded before it
writes them: the only ones it ever deletes; in `.parts/` it deletes only `own_part_files`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable

from pipelines.failures import Failure
from pipelines.manifests import ClipSpec
from pipelines.storage import output
from schemas import layout
from schemas.dataset_info import RowCost

# The names of `.parts/` and its files: `schemas.layout`.
PARTS_DIR = layout.STATE_DIR
RUN_FILE = layout.RUN_FILE
META_SUFFIX = layout.PART_META_SUFFIX
FAILURE_SUFFIX = layout.PART_FAILURE_SUFFIX
RECORDS_SUFFIX = layout.PART_RECORDS_SUFFIX
# The key in a part's meta of the row's cost (`RowCost.to_json`); parts of older versions lack it.
META_COST = "cost"


def input_key(spec: ClipSpec) -> str:
    """A 24-hex-digit digest of the row's own fields that decide its records: media id, paths,
    label *name*, window, split. Not its line, and not its label index: the index depends on
    the other rows (a new class shifts the sorted map), so it is set in each record when the
    shards are built, and a row keeps its part when unrelated rows change."""
    fields = dataclasses.asdict(spec)
    fields.pop("source")
    fields.pop("label_index")
    text = json.dumps(fields, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[: layout.PART_KEY_HEX_DIGITS]


def parts_dir(output_dir: str) -> str:
    return output.join(output_dir, PARTS_DIR)


def _path(output_dir: str, key: str, suffix: str) -> str:
    return output.join(output_dir, layout.part_file(key, suffix))


def records_path(output_dir: str, key: str) -> str:
    return _path(output_dir, key, RECORDS_SUFFIX)


def key_of(path: str) -> tuple[str, str]:
    """(row key, suffix) of a meta or failure file's path, e.g. ('<key>', '.meta.json');
    ('', '') for any other file (run.json, the lock, records, temporary names)."""
    name = path.rsplit("/", 1)[-1]
    for suffix in (META_SUFFIX, FAILURE_SUFFIX):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], suffix
    return "", ""


def own_part_files(output_dir: str) -> list[str]:
    """The files of `.parts/` the job writes: parts and `run.json` (not the own-files list nor
    the lock, nor anything else found there)."""
    paths = output.list_files(output.join(parts_dir(output_dir), "*"))
    names = {p.rsplit("/", 1)[-1]: p for p in paths}
    return sorted(p for n, p in names.items() if layout.is_part_file_name(n) or n == RUN_FILE)


def write_done(
    output_dir: str,
    key: str,
    spec: ClipSpec,
    records,
    cost: Callable[[], RowCost] | None = None,
) -> dict:
    """Writes an input's clips, then its meta file; removes an old failure. Returns the meta.

    `records` may be a generator: each record is written as it comes and then let go, so memory
    holds one record at a time. If it raises, the exception propagates and nothing of the input
    is visible (the records file appears only when complete, and the meta file after it).
    `cost`, called once every record is written, gives the row's cost for the meta
    (`META_COST`, read back by `read_cost`); None: the meta holds no cost.
    """
    clips = []

    def pieces():
        for r in records:
            clips.append(
                {
                    "id": r.example_id,
                    "frames": r.num_frames,
                    "persons": r.num_persons,
                    "duration_us": r.duration_us,
                    "bytes": r.size,
                }
            )
            yield r.pieces

    output.write_tfrecords(records_path(output_dir, key), pieces())
    meta = {"key": key, "split": spec.split, "clips": clips}
    if cost is not None:
        meta[META_COST] = cost().to_json()
    output.write_text(_path(output_dir, key, META_SUFFIX), json.dumps(meta, sort_keys=True))
    failure = _path(output_dir, key, FAILURE_SUFFIX)
    if output.FileSystems.exists(failure):
        output.FileSystems.delete([failure])
    return meta


def record_offsets(meta: dict) -> list[int]:
    """Byte offset of each clip's record in the part's records file, from the sizes in `meta`
    (records are written back to back in clip order)."""
    offsets, at = [], 0
    for clip in meta["clips"]:
        offsets.append(at)
        at += output.record_size(clip["bytes"])
    return offsets


def read_cost(meta: dict) -> RowCost | None:
    """The row's cost kept in its part's meta (`write_done`); None for a part that holds none
    (written by an older version): its cost is unknown, not zero.

    Raises:
      ValueError: the meta's cost is malformed, naming the part's key and the field.
    """
    if META_COST not in meta:
        return None
    return RowCost.from_json(meta[META_COST], f"part {meta.get('key')!r}: {META_COST}")


def write_failure(output_dir: str, key: str, failure: Failure) -> None:
    output.write_text(_path(output_dir, key, FAILURE_SUFFIX), failure.to_json())


def read_meta(output_dir: str, key: str) -> dict | None:
    path = _path(output_dir, key, META_SUFFIX)
    if not output.FileSystems.exists(path):
        return None
    return output.read_json(path)


def read_failure(output_dir: str, key: str) -> Failure | None:
    path = _path(output_dir, key, FAILURE_SUFFIX)
    if not output.FileSystems.exists(path):
        return None
    return Failure(**output.read_json(path))


def done_keys(output_dir: str) -> set[str]:
    """Keys of the inputs whose part is complete (one listing of `.parts/`)."""
    names = output.list_files(output.join(parts_dir(output_dir), "*" + META_SUFFIX))
    return {key_of(n)[0] for n in names}


OWN_FILES = "own_files"  # the key in run.json of the job's own files (not a setting)


def read_own_files(output_dir: str) -> set[str] | None:
    """The relative paths of the files the job recorded as its own; None without a list."""
    path = output.join(parts_dir(output_dir), RUN_FILE)
    if not output.FileSystems.exists(path):
        return None
    own = output.read_json(path).get(OWN_FILES)
    return None if own is None else set(own)


def write_own_files(output_dir: str, names) -> None:
    """Replaces the list in run.json (atomically: written under a temporary name, renamed)."""
    path = output.join(parts_dir(output_dir), RUN_FILE)
    run = output.read_json(path)
    run[OWN_FILES] = sorted(set(names))
    output.write_text(path, json.dumps(run, sort_keys=True))


def check_run(output_dir: str, settings: dict) -> bool:
    """True if `.parts/` holds parts made with these settings; False if it holds none.

    Raises:
      ValueError: the parts were made with other settings; the message names them.
    """
    path = output.join(parts_dir(output_dir), RUN_FILE)
    if not output.FileSystems.exists(path):
        return False
    old = output.read_json(path)
    old.pop(OWN_FILES, None)
    changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
    if changed:
        diffs = ", ".join(f"{k}: {old.get(k)!r} -> {settings.get(k)!r}" for k in changed)
        raise ValueError(
            f"output_dir={output_dir!r} holds the parts of a run with other settings ({diffs}); "
            "pass --overwrite to start over, or choose another directory"
        )
    return True


def start_run(output_dir: str, settings: dict, own_files=()) -> None:
    """Writes run.json: the settings, and the files the job has written or is about to write."""
    run = {**settings, OWN_FILES: sorted(set(own_files))}
    output.write_text(output.join(parts_dir(output_dir), RUN_FILE), json.dumps(run, sort_keys=True))
