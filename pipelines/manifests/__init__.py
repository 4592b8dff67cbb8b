"""Manifests -> clip specs, with a deterministic label map and a failure row for each bad row.

The package, in reading order:

- `spec`: the `ClipSpec` type, `ManifestError`, and what every format shares: reading files and
  rows, the checks of a row's fields (times, splits, labels, paths under `--video_root`), label
  maps, and the refusal of rows whose clips would repeat an example id.
- `generic`: the `csv` and `jsonl` formats.
- `kinetics`, `ucf101`, `hmdb51`: one module per dataset's official files.
- this module: `FORMATS` (`--manifest_format`), format detection and `parse_manifest`, which
  dispatches to the format modules through `_READERS`; it also re-exports the public names of
  the modules above, so callers import them from `pipelines.manifests`.

`auto` picks the format from the path: `.jsonl`/`.json` -> jsonl; `classInd.txt`,
`trainlist0N.txt`, `testlist0N.txt` or a folder holding `classInd.txt` -> ucf101;
`*_test_splitN.txt` or a folder holding such files -> hmdb51; otherwise a CSV, read as kinetics
when its header has `youtube_id` and no `path`, else as csv.

A malformed file (unreadable, missing required columns or files, undecodable text, a bad
`classInd.txt`) raises ManifestError naming the file (and line). A bad row (unknown split,
duplicate clip id, empty label or a label absent from a given label map, a negative, empty or
reversed window, an unparsable line) becomes a `Failure` with stage `manifest` and its `file:line`,
and the good rows go on; with `strict=True` the first bad row raises instead. Every row ends up
either as a spec or as exactly one failure. All files are read through Beam's FileSystems, so
manifests and split folders may be on `gs://`.
"""

from __future__ import annotations

import dataclasses
import posixpath

from pipelines.failures import Failure
from pipelines.manifests.generic import csv_table, jsonl_table
from pipelines.manifests.hmdb51 import _HMDB_FILE, HMDB_SPLITS, hmdb51_table
from pipelines.manifests.kinetics import (
    KINETICS_COLUMNS,
    KINETICS_DEFAULT_PATTERN,
    KINETICS_FIELDS,
    KINETICS_SPLITS,
    _looks_like_kinetics,
    kinetics_pattern_fields,
    kinetics_table,
)
from pipelines.manifests.spec import (
    MAX_SECONDS,
    SPLIT_NAMES,
    SPLITS,
    ClipSpec,
    ManifestError,
    _basename,
    _collisions,
    _join,
    _match,
    _read_text,
    _Reader,
    _Row,
    clip_starts,
    default_label_map,
    label_names,
    load_label_map,
    refuse_colliding_clips,
    resolve_path,
    splits_of,
)
from pipelines.manifests.ucf101 import _UCF_FILE, UCF_CLASS_IND, UCF_LISTS, ucf101_table

__all__ = [
    "DEFAULT_FPS",
    "DEFAULT_MAX_CLIP_FRAMES",
    "FORMATS",
    "HMDB_SPLITS",
    "KINETICS_COLUMNS",
    "KINETICS_DEFAULT_PATTERN",
    "KINETICS_FIELDS",
    "KINETICS_SPLITS",
    "MAX_SECONDS",
    "SPLITS",
    "SPLIT_NAMES",
    "UCF_CLASS_IND",
    "UCF_LISTS",
    "ClipSpec",
    "ManifestError",
    "clip_starts",
    "default_label_map",
    "detect_format",
    "kinetics_pattern_fields",
    "label_names",
    "load_label_map",
    "parse_manifest",
    "refuse_colliding_clips",
    "resolve_path",
    "splits_of",
]

# The formats, in one place: name -> reader (spec._Reader). `auto` is not a format but a choice
# among them (detect_format, then the CSV header).
_READERS: dict[str, _Reader] = {
    "csv": csv_table,
    "jsonl": jsonl_table,
    "kinetics": kinetics_table,
    "ucf101": ucf101_table,
    "hmdb51": hmdb51_table,
}
FORMATS = ("auto", *_READERS)


def detect_format(path: str) -> str:
    """The format `auto` picks from the name (and, for folders, the files in them).

    CSV files are told apart from Kinetics CSVs only by their header, in parse_manifest.
    """
    name = _basename(path).lower()
    if name.endswith((".jsonl", ".json")):
        return "jsonl"
    if _UCF_FILE.match(name):
        return "ucf101"
    if _HMDB_FILE.match(name):
        return "hmdb51"
    if path.endswith("/") or not posixpath.splitext(name)[1]:  # a folder?
        if _match(_join(path.rstrip("/"), UCF_CLASS_IND)):
            return "ucf101"
        if _match(_join(path.rstrip("/"), "*_test_split[0-9].txt")):
            return "hmdb51"
    return "csv"


DEFAULT_FPS = 25.0  # PreprocessConfig's defaults: frames per second, and the cut (30 s)
DEFAULT_MAX_CLIP_FRAMES = 750


def parse_manifest(
    path: str,
    manifest_format: str = "auto",
    video_root: str | None = None,
    label_map: dict[str, int] | None = None,
    strict: bool = False,
    file_pattern: str = "",
    split_number: int = 1,
    max_clip_frames: int = DEFAULT_MAX_CLIP_FRAMES,
    fps: float = DEFAULT_FPS,
) -> tuple[list[ClipSpec], list[Failure], dict[str, int]]:
    """Reads a manifest into clip specs.

    Args:
      path: manifest file, local or gs://; for ucf101 and hmdb51 the split folder or any file
        in it.
      manifest_format: one of FORMATS.
      video_root: prefix for relative video paths.
      label_map: explicit {label: index}; every label a row uses must be in it (else that row
        fails). None builds one: for csv, jsonl and kinetics the labels of the rows kept (not of
        the rows that fail here), sorted by name; for ucf101 classInd.txt and for hmdb51 the
        class names of the split files, sorted (the datasets' own class lists, whatever rows
        fail). The same rows give the same indices on every run and machine.
      strict: raise ManifestError on the first bad row instead of recording it.
      file_pattern: kinetics only: the video file name made from a row ("" for
        KINETICS_DEFAULT_PATTERN); see `pipelines.manifests.kinetics` for trimmed versus full
        videos.
      split_number: ucf101 and hmdb51 only: which official split (1, 2 or 3).
      max_clip_frames, fps: how the job cuts windows into clips (`PreprocessConfig`'s
        `max_clip_frames` and `fps`; 0 frames: never cut), for `refuse_colliding_clips`: a row
        whose clips would share an example id with an earlier row's is a failure.

    Returns:
      (specs in manifest order, failures for bad rows in manifest order, the label map used).

    Raises:
      ValueError: a bad argument (format, file_pattern, split_number), naming it.
      ManifestError: a malformed or missing file, or with `strict` the first bad row.
    """
    if manifest_format not in FORMATS:
        raise ValueError(f"manifest_format={manifest_format!r}: expected one of {list(FORMATS)}")
    if split_number not in (1, 2, 3):
        raise ValueError(f"split_number={split_number!r}: expected 1, 2 or 3")
    fmt = detect_format(path) if manifest_format == "auto" else manifest_format
    text = None
    if fmt in ("csv", "kinetics"):
        if fmt == "kinetics":
            kinetics_pattern_fields(file_pattern or KINETICS_DEFAULT_PATTERN)  # before reading
        text = _read_text(path)
        if manifest_format == "auto" and _looks_like_kinetics(text):
            fmt = "kinetics"
    if file_pattern and fmt != "kinetics":
        raise ValueError(
            f"file_pattern={file_pattern!r}: only used with manifest_format=kinetics, not {fmt!r}"
        )
    table = _READERS[fmt](path, text, file_pattern, split_number)
    if label_map is None and table.labels is not None:
        label_map = default_label_map(table.labels)
    # Each row: its spec or its error, in manifest order.
    built: list[tuple[_Row, ClipSpec | None, str]] = []
    for row in table.rows:
        source = f"{_basename(row.file)}:{row.line}"
        try:
            built.append((row, table.build(row, source, label_map, video_root), ""))
        except ValueError as e:
            built.append((row, None, str(e)))
    clashes = _collisions([spec for _, spec, _ in built if spec], max_clip_frames, fps)
    specs: list[ClipSpec] = []
    failures: list[Failure] = []
    for row, spec, error in built:
        error = error or clashes.get(id(spec), "")
        if error:
            if strict:
                raise ManifestError(f"manifest {row.file!r} line {row.line}: {error}")
            source = f"{_basename(row.file)}:{row.line}"
            row_id, data_path = table.hint(row)
            failures.append(
                Failure(
                    id=row_id or source,
                    path=data_path,
                    stage="manifest",
                    error=f"{source}: {error}",
                )
            )
            continue
        specs.append(spec)
    if label_map is None:  # labels of the rows kept only
        label_map = default_label_map({s.label for s in specs})
        specs = [dataclasses.replace(s, label_index=label_map[s.label]) for s in specs]
    return specs, failures, label_map
