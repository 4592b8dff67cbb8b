"""The `ucf101` format: UCF-101's official `ucfTrainTestlist` folder.

`--input` is the folder or any file in it. `classInd.txt` (`1 ApplyEyeMakeup` ... `101 YoYo`) gives
the label map (index = number - 1); `trainlist0N.txt` rows `Class/v_Class_gXX_cYY.avi N` (N 1-based)
go to `train`, and `testlist0N.txt` rows `Class/v_Class_gXX_cYY.avi` (class from the folder) go to
`validation`, the split the paper evaluates on. With both a folder and a number, they must agree;
the folder is matched to classInd exactly, else ignoring case. `N` is `split_number`.
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
    _read_text,
    _Row,
    _stem,
    _Table,
    _text_rows,
    make_spec,
)

UCF_CLASS_IND = "classInd.txt"
UCF_LISTS = (("trainlist", "train"), ("testlist", "validation"))  # (file prefix, split)
_UCF_FILE = re.compile(r"^(classind|(train|test)list0(?P<n>[0-9]))\.txt$", re.IGNORECASE)


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


def ucf101_table(path: str, text: str | None, file_pattern: str, split_number: int) -> _Table:
    """The `ucf101` format's reader (a spec._Reader); `path` is the folder or a file in it."""
    return _ucf_table(path, split_number)


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
        return make_spec(
            data_path=data_path,
            label=label,
            label_map=label_map,
            video_root=video_root,
            split=row.fields["split"],
            source=source,
            media_id=_stem(data_path),
        )

    def hint(row: _Row) -> tuple[str, str]:
        data_path = (row.fields["text"].split() or [""])[0]
        return _stem(data_path), data_path

    return _Table(rows, list(classes), build, hint)
