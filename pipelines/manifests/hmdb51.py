"""The `hmdb51` format: HMDB-51's official `testTrainMulti_7030_splits` folder.

`--input` is the folder or any file in it. Files `<class>_test_split<N>.txt`, lines `<video>.avi
<id>`: id 1 -> `train`, id 2 -> `validation` (the paper's evaluation split, as for UCF-101), id 0
(not in this split) is skipped and is not a row. The video is `<class>/<video>.avi`; labels are the
class names sorted.
"""

from __future__ import annotations

import re

from pipelines.manifests.spec import (
    ClipSpec,
    ManifestError,
    _basename,
    _check_split_file,
    _checked_label,
    _folder_of,
    _join,
    _match,
    _read_text,
    _Row,
    _stem,
    _Table,
    _text_rows,
    make_spec,
)

HMDB_SPLITS = {"1": "train", "2": "validation"}  # id 0: not in this split, skipped
_HMDB_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<n>[0-9]+)\.txt$")


def hmdb51_table(path: str, text: str | None, file_pattern: str, split_number: int) -> _Table:
    """The `hmdb51` format's reader (a spec._Reader); `path` is the folder or a file in it."""
    return _hmdb_table(path, split_number)


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
        return make_spec(
            data_path=data_path,
            label=label,
            label_map=label_map,
            video_root=video_root,
            split=HMDB_SPLITS[tokens[1]],
            source=source,
            media_id=_stem(tokens[0]),
        )

    def hint(row: _Row) -> tuple[str, str]:
        video = (row.fields["text"].split() or [""])[0]
        return _stem(video), f"{row.fields['cls']}/{video}"

    return _Table(rows, sorted({cls for _, cls in files}), build, hint)
