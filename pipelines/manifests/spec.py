"""The clip spec type and what every manifest format shares.

`ClipSpec` (one manifest row, resolved) and `ManifestError`; `_Row` (a row as read) and `_Table`
(a format's rows and how to resolve one); reading files through Beam's FileSystems (so
manifests and split folders may be on `gs://`) and splitting them into rows; the field checks
of a row (times, windows, splits, labels, `resolve_path` with its symbolic link checks); the
label maps (`load_label_map`, `default_label_map`, `label_names`); and the refusal of rows whose
clips would repeat an example id (`clip_starts`, `refuse_colliding_clips`).

The format modules (`generic`, `kinetics`, `ucf101`, `hmdb51`) import this one; it imports none
of them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import posixpath
import re
from collections.abc import Callable, Iterable, Sequence

from pipelines.failures import Failure
from schemas import media_sequence as ms
from schemas.media_sequence import MICROS

MAX_SECONDS = 1e9  # larger times (about 32 years) are refused: their microseconds lose precision
SPLITS = ("train", "validation", "test")
# The split names every format accepts (any case), in one place: csv, jsonl and kinetics.
SPLIT_NAMES = {
    "train": "train",
    "val": "validation",
    "valid": "validation",
    "validate": "validation",
    "validation": "validation",
    "test": "test",
}
# A time as text: plain ASCII decimal notation (optional sign, digits, fraction, exponent); not
# what float() also takes (`1_0`, full-width or other Unicode digits, `inf`, `nan`).
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_EXTRA = ("extra",)  # key of a CSV row's cells beyond the header: not a string, so no JSON key
_JSON_TYPES = ((bool, "boolean"), (str, "string"), ((int, float), "number"), (list, "array"))


class ManifestError(ValueError):
    """The manifest as a whole cannot be used; the message names the file and line."""


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """One manifest row, resolved.

    Attributes:
      media_id: the video's id (`id` column, the youtube_id, or the file name without extension).
      path: where the video is read from (local path or `gs://` URL), `video_root` applied.
      data_path: the path as written in (or, for kinetics, made from) the manifest.
      label: class name; label_index: its 0-based index in the label map.
      start_us, end_us: window in the source, microseconds; end_us None for the end of the video.
      split: one of SPLITS.
      source: `file:line` of the manifest row.
    """

    media_id: str
    path: str
    data_path: str
    label: str
    label_index: int
    start_us: int
    end_us: int | None
    split: str
    source: str

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> ClipSpec:
        return cls(**json.loads(line))


@dataclasses.dataclass(frozen=True)
class _Row:
    """A row as read: its 1-based line in `file` and its fields (format-specific keys)."""

    line: int
    fields: dict
    file: str = ""


@dataclasses.dataclass(frozen=True)
class _Table:
    """A format's rows, the labels of its default label map, and how to resolve one row.

    labels: the dataset's own class list (ucf101, hmdb51), whose indices do not depend on which
    rows fail; None: the default map is made from the labels of the rows kept (csv, jsonl,
    kinetics). build(row, source, label_map, video_root) -> ClipSpec raises ValueError for a bad
    row; with label_map None it checks only that the label is non-empty and leaves the index -1.
    hint(row) -> (id, path) names a bad row in its failure.
    """

    rows: list[_Row]
    labels: list[str] | None
    build: Callable[[_Row, str, dict | None, str | None], ClipSpec]
    hint: Callable[[_Row], tuple[str, str]]


# A format's reader: (path, text, file_pattern, split_number) -> its _Table. `text` is the
# manifest's text when parse_manifest has already read it (csv, kinetics), else None;
# file_pattern is for kinetics only, split_number for ucf101 and hmdb51 only.
_Reader = Callable[[str, str | None, str, int], _Table]


# ---------------------------------------------------------------------------------------------
# Reading.
# ---------------------------------------------------------------------------------------------
def _read_text(path: str) -> str:
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(path) as f:
            data = f.read()
    except Exception as e:  # FileSystems wraps every backend's error type
        raise ManifestError(f"manifest {path!r}: cannot read: {e}") from e
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ManifestError(f"manifest {path!r}: not UTF-8 text ({e})") from e


def _match(pattern: str) -> list[str]:
    """Paths matching a glob (local or gs://), sorted; [] when nothing matches or on errors."""
    from apache_beam.io.filesystems import FileSystems

    try:
        return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    except Exception:  # a missing folder raises on some filesystems
        return []


def _join(folder: str, name: str) -> str:
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.join(folder, name)


def _basename(path: str) -> str:
    return posixpath.basename(path.rstrip("/").replace("\\", "/"))


def _parent(path: str) -> str:
    """The folder holding `path` (local or URL); a bucket root stays itself."""
    if "://" in path:
        scheme, rest = path.split("://", 1)
        return f"{scheme}://{rest.rsplit('/', 1)[0]}" if "/" in rest else path
    return os.path.dirname(path) or "."


def _folder_of(path: str, marker: str) -> str:
    """The folder `path` names: itself if it ends in '/' or holds files matching `marker` (a
    glob), else its parent (`path` is then a file in the folder)."""
    if path.endswith("/"):
        return path.rstrip("/") or path
    if _match(_join(path, marker)):
        return path
    return _parent(path)


def _check_split_file(path: str, number: str | None, split_number: int) -> None:
    """A split file named as the input must be of the split asked for."""
    if number is not None and number.isdigit() and int(number) != split_number:
        raise ValueError(
            f"input {path!r} is a file of split {int(number)} but split_number={split_number}; "
            "pass --split_number or the folder"
        )


def _rows_csv(path: str, text: str, required: Sequence[str] = ("path", "label")) -> list[_Row]:
    reader = csv.DictReader(io.StringIO(text))
    try:
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in required if c not in header]
        if missing:
            raise ManifestError(
                f"manifest {path!r} line 1: missing required column(s) {missing}; "
                f"header is {header}"
            )
        reader.fieldnames = header
        rows = []
        for rec in reader:
            extra = [v for v in rec.get(None) or [] if (v or "").strip()]
            if not extra and not any((v or "").strip() for k, v in rec.items() if k is not None):
                continue  # blank line
            fields = {k: (v or "").strip() for k, v in rec.items() if k is not None}
            if None in rec:
                fields[_EXTRA] = rec[None]
            rows.append(_Row(line=reader.line_num, fields=fields, file=path))
    except csv.Error as e:
        raise ManifestError(f"manifest {path!r} line {reader.line_num}: not CSV ({e})") from e
    return rows


def _text_rows(path: str, text: str, **fields) -> list[_Row]:
    """Non-blank lines of a split list, each as a row with `text` and the given fields."""
    return [
        _Row(line=n, fields={"text": line, **fields}, file=path)
        for n, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]


# ---------------------------------------------------------------------------------------------
# Field checks shared by the formats.
# ---------------------------------------------------------------------------------------------
def _json_type(value) -> str:
    """The JSON name of a value's type: string, number, boolean, array, object or null."""
    if value is None:
        return "null"
    return next((name for t, name in _JSON_TYPES if isinstance(value, t)), "object")


def _seconds(value, name: str) -> float | None:
    """A time in seconds: a JSON number, or text in plain ASCII decimal notation (CSV cells and
    JSON strings); None when absent (null, empty). Anything else is refused, naming the type."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(
            f"{name}={value!r} is not a number of seconds (found a JSON {_json_type(value)})"
        )
    if isinstance(value, str) and not _DECIMAL.fullmatch(value.strip()):
        raise ValueError(
            f"{name}={value!r} is not a number of seconds (expected ASCII decimal notation)"
        )
    try:
        x = float(value)
    except OverflowError:  # a JSON integer beyond the float range
        raise ValueError(f"{name}={value!r} is more than {MAX_SECONDS:g} seconds") from None
    if not math.isfinite(x):
        raise ValueError(f"{name}={value!r} is not finite")
    if x < 0:
        raise ValueError(f"{name}={value!r} is negative")
    if x > MAX_SECONDS:
        raise ValueError(f"{name}={value!r} is more than {MAX_SECONDS:g} seconds")
    return x


def _window(start: float, end: float | None) -> tuple[int, int | None]:
    """Seconds -> (start_us, end_us); raises for an empty or reversed window."""
    start_us = int(round(start * MICROS))
    end_us = None if end is None else int(round(end * MICROS))
    if end_us is not None and end_us <= start_us:
        raise ValueError(f"window start={start}s end={end}s is empty or reversed")
    return start_us, end_us


def _split(raw: str) -> str:
    """A split as written (any case; `val`, `valid`, `validate` are `validation`) -> SPLITS."""
    split = SPLIT_NAMES.get(raw.strip().lower())
    if split is None:
        raise ValueError(f"split={raw!r}: expected one of {list(SPLIT_NAMES)} (any case)")
    return split


def _checked_label(label: str, label_map: dict[str, int] | None, empty_hint: str = "") -> str:
    """A non-empty label in `label_map`; None: the map is made later from the rows kept."""
    if not label:
        raise ValueError("label is empty" + empty_hint)
    if label_map is not None and label not in label_map:
        raise ValueError(f"label {label!r} is not in the label map")
    return label


def _index(label: str, label_map: dict[str, int] | None) -> int:
    """The label's index, or -1 until the map is made from the rows kept (parse_manifest)."""
    return -1 if label_map is None else label_map[label]


def _stem(path: str) -> str:
    return posixpath.splitext(_basename(path))[0]


def make_spec(
    *,
    data_path: str,
    label: str,
    label_map: dict[str, int] | None,
    video_root: str | None,
    split: str,
    source: str,
    media_id: str | None = None,
    start_us: int = 0,
    end_us: int | None = None,
) -> ClipSpec:
    """The `ClipSpec` of a checked row: its path joined to `video_root` (`resolve_path`), its
    label index from `label_map` (-1 while the map is made from the rows kept), and its media id
    (default: the video file's name without extension). Times are microseconds in the source."""
    path = resolve_path(data_path, video_root)
    return ClipSpec(
        media_id=_stem(path) if media_id is None else media_id,
        path=path,
        data_path=data_path,
        label=label,
        label_index=_index(label, label_map),
        start_us=start_us,
        end_us=end_us,
        split=split,
        source=source,
    )


def resolve_path(data_path: str, video_root: str | None) -> str:
    """Joins a relative manifest path to `video_root` (local or gs://).

    Without a video root, paths stay as written. With one, every video must lie inside it:
    `..` that climbs out of it, an absolute path or URL elsewhere, or (local roots) a symbolic
    link under the root whose target, all links followed, lies outside it, is an error naming
    --video_root (a manifest cannot make the job read files the run was not pointed at). The
    path returned is the one written, joined and normalized, not the link's target.
    """
    if not data_path:
        raise ValueError("path is empty")
    if not video_root:
        return data_path
    if video_root.startswith("gs://"):
        bucket_root = video_root[len("gs://") :].rstrip("/")
        if data_path.startswith("gs://"):
            joined = data_path[len("gs://") :]
        else:
            joined = posixpath.join(bucket_root, data_path)
        norm = posixpath.normpath(joined)
        inside = norm == bucket_root or norm.startswith(bucket_root + "/")
        path = "gs://" + norm
    elif data_path.startswith("gs://"):
        inside, path = False, data_path
    else:
        root = os.path.normpath(os.path.abspath(video_root))
        path = os.path.normpath(os.path.join(root, data_path))
        inside = path.startswith(root + os.sep)
        if inside:
            # Symbolic links inside the root are followed as the decoder would follow them: the
            # file they lead to must be inside the root too (the root's own links are fine).
            real, real_root = os.path.realpath(path), os.path.realpath(root)
            if not real.startswith(real_root.rstrip(os.sep) + os.sep):
                raise ValueError(
                    f"path {data_path!r} leads outside --video_root {video_root!r} through a "
                    f"symbolic link (to {real!r})"
                )
    if not inside:
        raise ValueError(f"path {data_path!r} points outside --video_root {video_root!r}")
    return path


def load_label_map(path: str) -> dict[str, int]:
    """Reads an explicit label map: a JSON list of names (index = position) or {name: index}."""
    try:
        obj = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise ManifestError(f"label map {path!r}: not JSON ({e.msg})") from e
    if isinstance(obj, list) and all(isinstance(x, str) for x in obj):
        mapping = {name: i for i, name in enumerate(obj)}
    elif isinstance(obj, dict) and all(isinstance(v, int) for v in obj.values()):
        mapping = {str(k): int(v) for k, v in obj.items()}
    else:
        raise ManifestError(f"label map {path!r}: expected a list of names or {{name: index}}")
    if len(mapping) != len(obj) or len(set(mapping.values())) != len(mapping):
        raise ManifestError(f"label map {path!r}: duplicate names or indices")
    return mapping


def default_label_map(labels: Iterable[str]) -> dict[str, int]:
    """The default label map of a set of labels: sorted by name, indices from 0."""
    return {label: i for i, label in enumerate(sorted(set(labels)))}


# ---------------------------------------------------------------------------------------------
# Clip ids: unique by refusing the rows that would repeat one.
# ---------------------------------------------------------------------------------------------
def clip_starts(spec: ClipSpec, max_clip_frames: int, fps: float) -> tuple[int, int | None]:
    """How the job cuts a row's window into clips: (step, count).

    Output frame k of a window has the time `start_us + round(k * 1e6 / fps)`
    (pipelines.stages.video),
    and a clip is closed after `max_clip_frames` frames (pipelines.stages.clip), so clip j starts at
    `start_us + round(j * max_clip_frames * 1e6 / fps)` and its example id is
    `<media_id>_<that time>`. `count` is the number of clips of a window with a known end (at
    most: a video that ends early makes fewer), None for a window to the end of the video (not
    known before decoding); with max_clip_frames 0 (never cut) there is one clip, at the start.
    `step` is the number of frames per clip (0: never cut).
    """
    if not max_clip_frames:
        return 0, 1
    if spec.end_us is None:
        return max_clip_frames, None
    period = MICROS / fps
    length = spec.end_us - spec.start_us
    frames = max(1, math.ceil(length / period))
    while frames > 1 and int(round((frames - 1) * period)) >= length:
        frames -= 1
    while int(round(frames * period)) < length:
        frames += 1
    return max_clip_frames, -(-frames // max_clip_frames)


def _clash(first: ClipSpec, later: ClipSpec, max_clip_frames: int, fps: float) -> str:
    """Why `later`'s clips would repeat an example id of `first`'s (same media id), or ""."""
    early, late = sorted((first, later), key=_start)
    step, count_a = clip_starts(early, max_clip_frames, fps)
    d = late.start_us - early.start_us
    cid = ms.clip_id(late.media_id, late.start_us)
    if d == 0:
        return f"duplicate clip id {cid!r} (first at {first.source})"
    if not step:
        return ""
    period = MICROS / fps
    span = step * period  # microseconds between clip starts
    # Clip n of `early` starts at late.start_us when round(n * step * period) == d; when `span`
    # is a whole number of microseconds that offset is the same for every later pair of clips,
    # so clip 0 of `late` decides. Otherwise rounding can move an offset by up to 1 us: refuse
    # when some clip could land within 1 us (conservative).
    exact = abs(span - round(span)) < 1e-6
    for n in {math.floor(d / span), math.ceil(d / span)}:
        if n < 1 or (count_a is not None and n >= count_a):
            continue
        if int(round(n * step * period)) == d:
            return (
                f"duplicate clip id {cid!r} (first at {first.source}): the windows of "
                f"{late.media_id!r} starting at {early.start_us / MICROS:g} s and "
                f"{late.start_us / MICROS:g} s are both cut into clips every {span / MICROS:g} s "
                "(--max_clip_seconds), and clip ids are the media id and the clip start"
            )
        if not exact and abs(n * span - d) <= 1:
            return (
                f"clip ids may repeat those of {first.source}: the windows of "
                f"{late.media_id!r} starting at {early.start_us / MICROS:g} s and "
                f"{late.start_us / MICROS:g} s are both cut into clips every {span / MICROS:g} s "
                "(--max_clip_seconds), whose starts come within 1 us of each other"
            )
    return ""  # (clip 0 of `late` always exists: a window holds at least one frame)


def _start(spec: ClipSpec) -> int:
    return spec.start_us


def _collisions(specs: Sequence[ClipSpec], max_clip_frames: int, fps: float) -> dict[int, str]:
    """{id(spec): reason} for each spec whose clips would repeat an example id of an earlier
    kept spec (manifest order); the first of two colliding rows is kept."""
    kept: dict[str, list[ClipSpec]] = {}
    refused: dict[int, str] = {}
    for spec in specs:
        others = kept.setdefault(spec.media_id, [])
        reason = next((r for o in others if (r := _clash(o, spec, max_clip_frames, fps))), "")
        if reason:
            refused[id(spec)] = reason
        else:
            others.append(spec)
    return refused


def refuse_colliding_clips(
    specs: Sequence[ClipSpec], max_clip_frames: int, fps: float
) -> tuple[list[ClipSpec], list[Failure]]:
    """Specs whose clips all have example ids no earlier spec's clips have, and a `manifest`
    failure (naming the earlier row) for each of the others, both in the order given.

    Clip ids are `<media_id>_<clip start>`; a window is cut every `max_clip_frames` frames at
    `fps` (`clip_starts`), so two rows of one media collide when one's clip starts include the
    other's first clip start: e.g. 0-60 s and 30-40 s with 30 s clips, 0-1 s and 0.4-0.8 s with
    0.4 s clips, 0 s to the end and 60-70 s. Decided for every pair, with or without an end time,
    before any video is read. `parse_manifest` applies it (with its max_clip_frames and fps).
    """
    refused = _collisions(specs, max_clip_frames, fps)
    kept = [s for s in specs if id(s) not in refused]
    failures = [
        Failure(id=s.media_id, path=s.data_path, stage="manifest", error=f"{s.source}: {r}")
        for s in specs
        if (r := refused.get(id(s)))
    ]
    return kept, failures


def splits_of(specs: Iterable[ClipSpec]) -> dict[str, int]:
    """Number of specs per split, in SPLITS order."""
    counts: dict[str, int] = {}
    for s in specs:
        counts[s.split] = counts.get(s.split, 0) + 1
    return {k: counts[k] for k in SPLITS if k in counts}


def label_names(label_map: dict[str, int]) -> Sequence[str]:
    """Label names ordered by index."""
    return [name for name, _ in sorted(label_map.items(), key=lambda kv: kv[1])]
