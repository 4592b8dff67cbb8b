"""The `kinetics` format: the official Kinetics-400/600/700 CSV.

Columns `label,youtube_id,time_start,time_end,split` (`youtube_id`, `time_start`, `time_end` and
`split` required; `label` may be absent, as in the test CSVs; other columns such as `is_cc` are
ignored). Splits `train`; `val`, `validate`, `validation`; `test` (any case) -> train, validation,
test. The video is `video_root / file_pattern.format(youtube_id, time_start, time_end, label,
split)`, with `time_start`/`time_end` as int seconds when whole and `split` as written in the CSV
(e.g. `val`); the default pattern `{youtube_id}_{time_start:06d}_{time_end:06d}.mp4` is the layout
of the common downloaders (e.g. `-abc_000010_000020.mp4`). A pattern that uses `time_start` or
`time_end` names files already cut to the window: the clip is the whole file. A pattern that uses
neither (e.g. `{youtube_id}.mp4`) names full, untrimmed videos: the clip is the window `[time_start,
time_end)` of the file. `media_id` is the youtube_id, so example ids are `<youtube_id>_<start_us>`
(`_0` for trimmed files; two rows of one video with trimmed files therefore collide, and the second
is a duplicate). A row without a label (the test split has no public labels) is a failure row: a
record needs exactly one label index >= 0.
"""

from __future__ import annotations

import csv
import io
import string

from pipelines.manifests.spec import (
    _EXTRA,
    SPLIT_NAMES,
    ClipSpec,
    _checked_label,
    _read_text,
    _Row,
    _rows_csv,
    _seconds,
    _split,
    _Table,
    _window,
    make_spec,
)

KINETICS_DEFAULT_PATTERN = "{youtube_id}_{time_start:06d}_{time_end:06d}.mp4"
KINETICS_FIELDS = ("youtube_id", "time_start", "time_end", "label", "split")
KINETICS_COLUMNS = ("youtube_id", "time_start", "time_end", "split")  # required
KINETICS_SPLITS = SPLIT_NAMES  # the name earlier code used


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


def kinetics_table(path: str, text: str | None, file_pattern: str, split_number: int) -> _Table:
    """The `kinetics` format's reader (a spec._Reader)."""
    return _kinetics_table(path, text if text is not None else _read_text(path), file_pattern)


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
        return make_spec(
            data_path=data_path,
            label=label,
            label_map=label_map,
            video_root=video_root,
            split=split,
            source=source,
            media_id=youtube_id,
            start_us=start_us,
            end_us=end_us,
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
