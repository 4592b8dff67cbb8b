"""Manifests -> clip specs, with a deterministic label map and a failure row for each bad row.

Formats (DESIGN.md section 10):
- `csv`: header row; `path` and `label` required; `start`, `end` (seconds), `split` (default
  `train`) and `id` optional.
- `jsonl`: one JSON object a line with the same fields.
- `auto`: by extension (`.jsonl`/`.json` -> jsonl, else csv).

A malformed file (unreadable, missing required columns, undecodable text) raises ManifestError
naming the file (and line). A bad row becomes a `Failure` with stage `manifest`, file and line, and
the good rows go on; with `strict=True` the first bad row raises instead.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import posixpath
from collections.abc import Iterable, Sequence

from pipelines.failures import Failure

MICROS = 1_000_000
SPLITS = ("train", "validation", "test")
FORMATS = ("auto", "csv", "jsonl")


class ManifestError(ValueError):
    """The manifest as a whole cannot be used; the message names the file and line."""


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """One manifest row, resolved.

    Attributes:
      media_id: the video's id (`id` column, or the file name without extension).
      path: where the video is read from (local path or `gs://` URL), `video_root` applied.
      data_path: the path as written in the manifest.
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
    line: int
    fields: dict


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


def _rows_csv(path: str, text: str) -> list[_Row]:
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in ("path", "label") if c not in header]
    if missing:
        raise ManifestError(
            f"manifest {path!r} line 1: missing required column(s) {missing}; header is {header}"
        )
    reader.fieldnames = header
    rows = []
    for rec in reader:
        if not any((v or "").strip() for k, v in rec.items() if k is not None):
            continue  # blank line
        fields = {k: (v or "").strip() for k, v in rec.items() if k is not None}
        if None in rec:
            fields["__extra__"] = rec[None]
        rows.append(_Row(line=reader.line_num, fields=fields))
    return rows


def _rows_jsonl(path: str, text: str) -> list[_Row]:
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ManifestError(f"manifest {path!r} line {n}: not JSON ({e.msg})") from e
        if not isinstance(obj, dict):
            raise ManifestError(f"manifest {path!r} line {n}: expected a JSON object")
        rows.append(_Row(line=n, fields=obj))
    return rows


def _seconds(value, name: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} is not a number of seconds") from None
    if not math.isfinite(x):
        raise ValueError(f"{name}={value!r} is not finite")
    if x < 0:
        raise ValueError(f"{name}={value!r} is negative")
    return x


def resolve_path(data_path: str, video_root: str | None) -> str:
    """Joins a relative manifest path to `video_root` (local or gs://); absolute paths stay."""
    if not data_path:
        raise ValueError("path is empty")
    if data_path.startswith("gs://") or os.path.isabs(data_path) or not video_root:
        return data_path
    if video_root.startswith("gs://"):
        return posixpath.join(video_root, data_path)
    return os.path.join(video_root, data_path)


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


def parse_manifest(
    path: str,
    manifest_format: str = "auto",
    video_root: str | None = None,
    label_map: dict[str, int] | None = None,
    strict: bool = False,
    file_pattern: str = "",
    split_number: int = 1,
) -> tuple[list[ClipSpec], list[Failure], dict[str, int]]:
    """Reads a manifest into clip specs.

    Args:
      path: manifest file, local or gs://.
      manifest_format: one of FORMATS.
      video_root: prefix for relative video paths.
      label_map: explicit {label: index}; None builds one from the manifest's labels, sorted by
        name (the same classes give the same indices on every run and machine).
      strict: raise ManifestError on the first bad row instead of recording it.
      file_pattern: Kinetics only: video file name from a row's fields ("" for the default).
      split_number: UCF-101 and HMDB-51 only: which official split (1, 2 or 3).

    Returns:
      (specs in manifest order, failures for bad rows, the label map used).
    """
    if manifest_format not in FORMATS:
        raise ValueError(f"manifest_format={manifest_format!r}: expected one of {list(FORMATS)}")
    if manifest_format == "auto":
        manifest_format = "jsonl" if path.lower().endswith((".jsonl", ".json")) else "csv"
    text = _read_text(path)
    rows = _rows_jsonl(path, text) if manifest_format == "jsonl" else _rows_csv(path, text)
    name = posixpath.basename(path)
    if label_map is None:
        labels = sorted({str(r.fields.get("label", "")).strip() for r in rows} - {""})
        label_map = {label: i for i, label in enumerate(labels)}
    specs: list[ClipSpec] = []
    failures: list[Failure] = []
    seen: dict[str, str] = {}
    for row in rows:
        source = f"{name}:{row.line}"
        data_path = str(row.fields.get("path", "") or "").strip()
        try:
            spec = _spec(row, source, data_path, video_root, label_map)
            key = f"{spec.media_id}_{spec.start_us}"
            if key in seen:
                raise ValueError(f"duplicate clip id {key!r} (first at {seen[key]})")
            seen[key] = source
        except ValueError as e:
            if strict:
                raise ManifestError(f"manifest {path!r} line {row.line}: {e}") from e
            failures.append(
                Failure(
                    id=str(row.fields.get("id") or data_path or source),
                    path=data_path,
                    stage="manifest",
                    error=f"{source}: {e}",
                )
            )
            continue
        specs.append(spec)
    return specs, failures, label_map


def _spec(row: _Row, source: str, data_path: str, video_root, label_map) -> ClipSpec:
    f = row.fields
    if "__extra__" in f:
        raise ValueError(f"more fields than the header has: {f['__extra__']!r}")
    label = str(f.get("label", "") or "").strip()
    if not label:
        raise ValueError("label is empty")
    if label not in label_map:
        raise ValueError(f"label {label!r} is not in the label map")
    split = str(f.get("split", "") or "train").strip()
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {list(SPLITS)}")
    start = _seconds(f.get("start"), "start") or 0.0
    end = _seconds(f.get("end"), "end")
    if end is not None and end <= start:
        raise ValueError(f"window start={start}s end={end}s is empty or reversed")
    path = resolve_path(data_path, video_root)
    media_id = str(f.get("id") or "").strip() or posixpath.splitext(posixpath.basename(path))[0]
    return ClipSpec(
        media_id=media_id,
        path=path,
        data_path=data_path,
        label=label,
        label_index=label_map[label],
        start_us=int(round(start * MICROS)),
        end_us=None if end is None else int(round(end * MICROS)),
        split=split,
        source=source,
    )


def splits_of(specs: Iterable[ClipSpec]) -> dict[str, int]:
    """Number of specs per split, in SPLITS order."""
    counts: dict[str, int] = {}
    for s in specs:
        counts[s.split] = counts.get(s.split, 0) + 1
    return {k: counts[k] for k in SPLITS if k in counts}


def label_names(label_map: dict[str, int]) -> Sequence[str]:
    """Label names ordered by index."""
    return [name for name, _ in sorted(label_map.items(), key=lambda kv: kv[1])]
