"""The generic formats, `csv` and `jsonl`: one row per clip, with the fields named.

- `csv`: header row; `path` and `label` required; `start`, `end` (seconds), `split` (default
  `train`) and `id` optional.
- `jsonl`: one JSON object a line with the same fields.

`media_id` is the `id` field, else the video's file name without extension. With no label map
given, the default one is made from the labels of the rows kept.
"""

from __future__ import annotations

import json

from pipelines.manifests.spec import (
    _EXTRA,
    ClipSpec,
    ManifestError,
    _checked_label,
    _json_type,
    _read_text,
    _Row,
    _rows_csv,
    _seconds,
    _split,
    _Table,
    _window,
    make_spec,
)


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


def csv_table(path: str, text: str | None, file_pattern: str, split_number: int) -> _Table:
    """The `csv` format's reader (a spec._Reader)."""
    return _generic_table(path, text if text is not None else _read_text(path), "csv")


def jsonl_table(path: str, text: str | None, file_pattern: str, split_number: int) -> _Table:
    """The `jsonl` format's reader (a spec._Reader)."""
    return _generic_table(path, text if text is not None else _read_text(path), "jsonl")


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
    return make_spec(
        data_path=data_path,
        label=label,
        label_map=label_map,
        video_root=video_root,
        split=split,
        source=source,
        media_id=media_id or None,
        start_us=start_us,
        end_us=end_us,
    )
