"""Manifests -> clip specs, with a deterministic label map and a failure row for each bad row.

Formats (`--manifest_format`):

- `csv`: header row; `path` and `label` required; `start`, `end` (seconds), `split` (default
  `train`) and `id` optional.
- `jsonl`: one JSON object a line with the same fields.
- `kinetics`: the official Kinetics-400/600/700 CSV, `label,youtube_id,time_start,time_end,split`
  (`youtube_id`, `time_start`, `time_end` and `split` required; `label` may be absent, as in the
  test CSVs; other columns such as `is_cc` are ignored). Splits `train`; `val`, `validate`,
  `validation`; `test` (any case) -> train, validation, test. The video is
  `video_root / file_pattern.format(youtube_id, time_start, time_end, label, split)`, with
  `time_start`/`time_end` as int seconds when whole and `split` as written in the CSV (e.g.
  `val`); the default pattern `{youtube_id}_{time_start:06d}_{time_end:06d}.mp4` is the layout of
  the common downloaders (e.g. `-abc_000010_000020.mp4`). A pattern that uses `time_start` or
  `time_end` names files already cut to the window: the clip is the whole file. A pattern that
  uses neither (e.g. `{youtube_id}.mp4`) names full, untrimmed videos: the clip is the window
  `[time_start, time_end)` of the file. `media_id` is the youtube_id, so example ids are
  `<youtube_id>_<start_us>` (`_0` for trimmed files; two rows of one video with trimmed files
  therefore collide, and the second is a duplicate). A row without a label (the test split has
  no public labels) is a failure row: a record needs exactly one label index >= 0.
- `ucf101`: the official `ucfTrainTestlist` folder; `--input` is the folder or any file in it.
  `classInd.txt` (`1 ApplyEyeMakeup` ... `101 YoYo`) gives the label map (index = number - 1);
  `trainlist0N.txt` rows `Class/v_Class_gXX_cYY.avi N` (N 1-based) go to `train`, and
  `testlist0N.txt` rows `Class/v_Class_gXX_cYY.avi` (class from the folder) go to `validation`,
  the split the paper evaluates on. With both a folder and a number, they must agree; the folder
  is matched to classInd exactly, else ignoring case. `N` is `split_number`.
- `hmdb51`: the official `testTrainMulti_7030_splits` folder; `--input` is the folder or any file
  in it. Files `<class>_test_split<N>.txt`, lines `<video>.avi <id>`: id 1 -> `train`, id 2 ->
  `validation` (the paper's evaluation split, as for UCF-101), id 0 (not in this split) is
  skipped and is not a row. The video is `<class>/<video>.avi`; labels are the class names
  sorted.
- `auto`: `.jsonl`/`.json` -> jsonl; `classInd.txt`, `trainlist0N.txt`, `testlist0N.txt` or a
  folder holding `classInd.txt` -> ucf101; `*_test_splitN.txt` or a folder holding such files ->
  hmdb51; otherwise a CSV, read as kinetics when its header has `youtube_id` and no `path`, else
  as csv.

A malformed file (unreadable, missing required columns or files, undecodable text, a bad
`classInd.txt`) raises ManifestError naming the file (and line). A bad row (unknown split,
duplicate clip id, empty label or a label absent from a given label map, a negative, empty or
reversed window, an unparsable line) becomes a `Failure` with stage `manifest` and its `file:line`,
and the good rows go on; with `strict=True` the first bad row raises instead. Every row ends up
either as a spec or as exactly one failure. All files are read through Beam's FileSystems, so
manifests and split folders may be on `gs://`.
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
import string
from collections.abc import Callable, Iterable, Sequence

from pipelines.failures import Failure
from schemas import media_sequence as ms

MICROS = ms.MICROS
MAX_SECONDS = 1e9  # larger times (about 32 years) are refused: their microseconds lose precision
SPLITS = ("train", "validation", "test")
FORMATS = ("auto", "csv", "jsonl", "kinetics", "ucf101", "hmdb51")

KINETICS_DEFAULT_PATTERN = "{youtube_id}_{time_start:06d}_{time_end:06d}.mp4"
KINETICS_FIELDS = ("youtube_id", "time_start", "time_end", "label", "split")
KINETICS_COLUMNS = ("youtube_id", "time_start", "time_end", "split")  # required
# The split names every format accepts (any case), in one place: csv, jsonl and kinetics.
SPLIT_NAMES = {
    "train": "train",
    "val": "validation",
    "valid": "validation",
    "validate": "validation",
    "validation": "validation",
    "test": "test",
}
KINETICS_SPLITS = SPLIT_NAMES  # the name earlier code used
# A time as text: plain ASCII decimal notation (optional sign, digits, fraction, exponent); not
# what float() also takes (`1_0`, full-width or other Unicode digits, `inf`, `nan`).
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_EXTRA = ("extra",)  # key of a CSV row's cells beyond the header: not a string, so no JSON key
_JSON_TYPES = ((bool, "boolean"), (str, "string"), ((int, float), "number"), (list, "array"))
UCF_CLASS_IND = "classInd.txt"
UCF_LISTS = (("trainlist", "train"), ("testlist", "validation"))  # (file prefix, split)
HMDB_SPLITS = {"1": "train", "2": "validation"}  # id 0: not in this split, skipped
_HMDB_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<n>[0-9]+)\.txt$")
_UCF_FILE = re.compile(r"^(classind|(train|test)list0(?P<n>[0-9]))\.txt$", re.IGNORECASE)


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


def _rows_jsonl(path: str, text: str) -> list[_Row]:
    rows = []
    # JSON Lines end lines with "\n" only: str.splitlines would also split at U+2028 and other
    # separators that JSON strings may hold unescaped.
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ManifestError(f"manifest {path!r} line {n}: not JSON ({e.msg})") from e
        except ValueError as e:  # e.g. an integer longer than Python's digit limit
            raise ManifestError(f"manifest {path!r} line {n}: not usable JSON ({e})") from e
        if not isinstance(obj, dict):
            raise ManifestError(f"manifest {path!r} line {n}: expected a JSON object")
        rows.append(_Row(line=n, fields=obj, file=path))
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


# ---------------------------------------------------------------------------------------------
# csv / jsonl.
# ---------------------------------------------------------------------------------------------
def _text(value) -> str:
    """A field as text, for naming a row: None (JSON null, or absent) is empty; anything else
    its str, stripped."""
    return "" if value is None else str(value).strip()


def _string(fields: dict, name: str) -> str:
    """A text field, stripped: a string, or "" when absent or JSON null. Another JSON type (a
    number, a boolean, an array, an object) is refused, naming the field and the type found:
    `["a"]` is no class name and `123` no path."""
    value = fields.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{name}={value!r}: expected a string, found a JSON {_json_type(value)}")
    return value.strip()


def _generic_table(path: str, text: str, fmt: str) -> _Table:
    rows = _rows_jsonl(path, text) if fmt == "jsonl" else _rows_csv(path, text)

    def hint(row: _Row) -> tuple[str, str]:
        data_path = _text(row.fields.get("path"))
        return _text(row.fields.get("id")) or data_path, data_path

    return _Table(rows, None, _generic_spec, hint)


def _generic_spec(row: _Row, source: str, label_map, video_root) -> ClipSpec:
    f = row.fields
    if _EXTRA in f:
        raise ValueError(f"more fields than the header has: {f[_EXTRA]!r}")
    data_path = _string(f, "path")
    label = _checked_label(_string(f, "label"), label_map)
    split = _split(_string(f, "split") or "train")
    media_id = _string(f, "id")
    start = _seconds(f.get("start"), "start") or 0.0
    start_us, end_us = _window(start, _seconds(f.get("end"), "end"))
    path = resolve_path(data_path, video_root)
    media_id = media_id or _stem(path)
    return ClipSpec(
        media_id=media_id,
        path=path,
        data_path=data_path,
        label=label,
        label_index=_index(label, label_map),
        start_us=start_us,
        end_us=end_us,
        split=split,
        source=source,
    )


# ---------------------------------------------------------------------------------------------
# Kinetics.
# ---------------------------------------------------------------------------------------------
def kinetics_pattern_fields(pattern: str) -> set[str]:
    """The fields a Kinetics file name pattern uses; raises ValueError naming a bad pattern.

    A pattern is a `str.format` template over KINETICS_FIELDS; it must use `{youtube_id}`.
    """
    where = f"file_pattern={pattern!r}"
    try:
        parsed = list(string.Formatter().parse(pattern))
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    names = {name for _, name, _, _ in parsed if name is not None}
    bad = sorted(n for n in names if n not in KINETICS_FIELDS)
    if bad:
        raise ValueError(
            f"{where}: unknown field(s) {bad}; expected some of {list(KINETICS_FIELDS)}"
        )
    if "youtube_id" not in names:
        raise ValueError(f"{where}: must use {{youtube_id}} (else every row names the same file)")
    try:  # a row of the official files, to catch bad format specs such as {time_start:06q}
        pattern.format(youtube_id="abc", time_start=10, time_end=20, label="a", split="train")
    except (ValueError, KeyError, IndexError, AttributeError) as e:
        raise ValueError(f"{where}: cannot format a row: {e}") from None
    return names


def _whole(x: float) -> int | float:
    return int(x) if x == int(x) else x


def _kinetics_table(path: str, text: str, pattern: str) -> _Table:
    pattern = pattern or KINETICS_DEFAULT_PATTERN
    names = kinetics_pattern_fields(pattern)
    trimmed = bool(names & {"time_start", "time_end"})
    rows = _rows_csv(path, text, required=KINETICS_COLUMNS)

    def build(row: _Row, source: str, label_map, video_root) -> ClipSpec:
        f = row.fields
        if _EXTRA in f:
            raise ValueError(f"more fields than the header has: {f[_EXTRA]!r}")
        youtube_id = f.get("youtube_id", "")
        if not youtube_id or "/" in youtube_id or "\\" in youtube_id:
            raise ValueError(f"youtube_id={youtube_id!r}: expected a non-empty id without slashes")
        raw_split = f.get("split", "")
        split = _split(raw_split)
        start = _seconds(f.get("time_start"), "time_start")
        end = _seconds(f.get("time_end"), "time_end")
        if start is None or end is None:
            raise ValueError("time_start and time_end are required")
        window = _window(start, end)
        label = _checked_label(
            f.get("label", ""),
            label_map,
            " (Kinetics test rows have no public labels; a record needs a label index)",
        )
        try:
            data_path = pattern.format(
                youtube_id=youtube_id,
                time_start=_whole(start),
                time_end=_whole(end),
                label=label,
                split=raw_split,
            )
        except (ValueError, KeyError, IndexError, AttributeError) as e:
            raise ValueError(f"file_pattern={pattern!r} cannot name this row: {e}") from None
        start_us, end_us = (0, None) if trimmed else window
        return ClipSpec(
            media_id=youtube_id,
            path=resolve_path(data_path, video_root),
            data_path=data_path,
            label=label,
            label_index=_index(label, label_map),
            start_us=start_us,
            end_us=end_us,
            split=split,
            source=source,
        )

    def hint(row: _Row) -> tuple[str, str]:
        return str(row.fields.get("youtube_id", "")), ""

    return _Table(rows, None, build, hint)


def _looks_like_kinetics(text: str) -> bool:
    try:
        header = {h.strip() for h in next(csv.reader(io.StringIO(text)), [])}
    except csv.Error:
        return False
    return "youtube_id" in header and "path" not in header


# ---------------------------------------------------------------------------------------------
# UCF-101.
# ---------------------------------------------------------------------------------------------
def _ucf_classes(path: str) -> list[str]:
    """classInd.txt -> class names by 0-based index; ManifestError for a malformed file."""
    by_number: dict[int, str] = {}
    for n, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        tokens = line.split()
        if len(tokens) != 2 or not (tokens[0].isascii() and tokens[0].isdigit()):
            raise ManifestError(
                f"manifest {path!r} line {n}: expected '<number> <class name>', got {line!r}"
            )
        number, name = int(tokens[0]), tokens[1]
        if number in by_number or name in by_number.values():
            raise ManifestError(f"manifest {path!r} line {n}: class {number} {name!r} repeated")
        by_number[number] = name
    if sorted(by_number) != list(range(1, len(by_number) + 1)):
        raise ManifestError(
            f"manifest {path!r}: class numbers must be 1..{len(by_number)} without gaps"
        )
    return [by_number[i] for i in range(1, len(by_number) + 1)]


def _ucf_table(path: str, split_number: int) -> _Table:
    named = _UCF_FILE.match(_basename(path))
    _check_split_file(path, named.group("n") if named else None, split_number)
    folder = _folder_of(path, UCF_CLASS_IND)
    classes = _ucf_classes(_join(folder, UCF_CLASS_IND))
    folded: dict[str, list[str]] = {}
    for name in classes:
        folded.setdefault(name.lower(), []).append(name)
    rows: list[_Row] = []
    for prefix, split in UCF_LISTS:
        list_path = _join(folder, f"{prefix}{split_number:02d}.txt")
        rows += _text_rows(list_path, _read_text(list_path), split=split)

    def class_of_folder(data_path: str) -> str | None:
        parts = data_path.replace("\\", "/").split("/")
        if len(parts) < 2 or not parts[-2]:
            return None
        name = parts[-2]
        if name in classes:
            return name
        candidates = folded.get(name.lower(), [])
        if len(candidates) != 1:
            raise ValueError(f"class folder {name!r} is not in classInd.txt")
        return candidates[0]

    def build(row: _Row, source: str, label_map, video_root) -> ClipSpec:
        tokens = row.fields["text"].split()
        if len(tokens) not in (1, 2):
            raise ValueError(
                f"expected '<Class>/<video>.avi [<number>]', got {row.fields['text']!r}"
            )
        data_path = tokens[0]
        by_folder = class_of_folder(data_path)
        by_number = None
        if len(tokens) == 2:
            number = tokens[1]
            if not (number.isascii() and number.isdigit() and 1 <= int(number) <= len(classes)):
                raise ValueError(f"label number {tokens[1]!r}: expected 1..{len(classes)}")
            by_number = classes[int(tokens[1]) - 1]
        if by_folder and by_number and by_folder != by_number:
            raise ValueError(
                f"label number {tokens[1]} ({by_number}) disagrees with the folder {by_folder!r}"
            )
        label = _checked_label(
            by_number or by_folder or "", label_map, " (no class folder or number)"
        )
        return ClipSpec(
            media_id=_stem(data_path),
            path=resolve_path(data_path, video_root),
            data_path=data_path,
            label=label,
            label_index=_index(label, label_map),
            start_us=0,
            end_us=None,
            split=row.fields["split"],
            source=source,
        )

    def hint(row: _Row) -> tuple[str, str]:
        data_path = (row.fields["text"].split() or [""])[0]
        return _stem(data_path), data_path

    return _Table(rows, list(classes), build, hint)


# ---------------------------------------------------------------------------------------------
# HMDB-51.
# ---------------------------------------------------------------------------------------------
def _hmdb_table(path: str, split_number: int) -> _Table:
    named = _HMDB_FILE.match(_basename(path))
    _check_split_file(path, named.group("n") if named else None, split_number)
    marker = f"*_test_split{split_number}.txt"
    folder = _folder_of(path, marker)
    files = [(f, _HMDB_FILE.match(_basename(f))) for f in _match(_join(folder, marker))]
    files = [(f, m.group("cls")) for f, m in files if m and m.group("n") == str(split_number)]
    if not files:
        raise ManifestError(
            f"manifest {folder!r}: no {marker!r} files (expected HMDB-51's "
            "testTrainMulti_7030_splits folder)"
        )
    rows: list[_Row] = []
    for list_path, cls in files:
        for row in _text_rows(list_path, _read_text(list_path), cls=cls):
            tokens = row.fields["text"].split()
            if len(tokens) == 2 and tokens[1] == "0":
                continue  # not in this split
            rows.append(row)

    def build(row: _Row, source: str, label_map, video_root) -> ClipSpec:
        tokens = row.fields["text"].split()
        if len(tokens) != 2 or tokens[1] not in HMDB_SPLITS:
            raise ValueError(f"expected '<video>.avi <0|1|2>', got {row.fields['text']!r}")
        if "/" in tokens[0] or "\\" in tokens[0]:
            raise ValueError(f"video {tokens[0]!r}: expected a file name without folders")
        label = _checked_label(row.fields["cls"], label_map)
        data_path = f"{row.fields['cls']}/{tokens[0]}"
        return ClipSpec(
            media_id=_stem(tokens[0]),
            path=resolve_path(data_path, video_root),
            data_path=data_path,
            label=label,
            label_index=_index(label, label_map),
            start_us=0,
            end_us=None,
            split=HMDB_SPLITS[tokens[1]],
            source=source,
        )

    def hint(row: _Row) -> tuple[str, str]:
        video = (row.fields["text"].split() or [""])[0]
        return _stem(video), f"{row.fields['cls']}/{video}"

    return _Table(rows, sorted({cls for _, cls in files}), build, hint)


# ---------------------------------------------------------------------------------------------
# Entry point.
# ---------------------------------------------------------------------------------------------
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
        KINETICS_DEFAULT_PATTERN); see the module docstring for trimmed versus full videos.
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
    if fmt == "ucf101":
        table = _ucf_table(path, split_number)
    elif fmt == "hmdb51":
        table = _hmdb_table(path, split_number)
    elif fmt == "kinetics":
        table = _kinetics_table(path, text, file_pattern)
    else:
        table = _generic_table(path, text if text is not None else _read_text(path), fmt)
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
