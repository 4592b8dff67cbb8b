"""Manifest parsing: fields, label maps, bad rows as failures, malformed files as errors."""

import json

import pytest

from pipelines.manifest import ClipSpec, ManifestError, load_label_map, parse_manifest


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def test_csv_rows_resolve_paths_windows_and_labels(tmp_path):
    path = _write(
        tmp_path,
        "m.csv",
        "path,label,start,end,split,id\n"
        "a/x.mp4,run,1.5,3,train,\n"
        "/abs/y.avi,jump,,,validation,yy\n"
        "\n"
        "z.mp4,run,0,,,\n",
    )
    specs, failures, labels = parse_manifest(path, video_root="/videos")
    assert failures == []
    assert labels == {"jump": 0, "run": 1}
    assert specs[0] == ClipSpec(
        media_id="x", path="/videos/a/x.mp4", data_path="a/x.mp4", label="run", label_index=1,
        start_us=1_500_000, end_us=3_000_000, split="train", source="m.csv:2",
    )  # fmt: skip
    assert (specs[1].media_id, specs[1].path, specs[1].end_us, specs[1].split) == (
        "yy", "/abs/y.avi", None, "validation"
    )  # fmt: skip
    assert specs[2].source == "m.csv:5" and specs[2].split == "train"
    assert ClipSpec.from_json(specs[0].to_json()) == specs[0]


def test_jsonl_and_gs_video_root(tmp_path):
    path = _write(tmp_path, "m.jsonl", json.dumps({"path": "v.mp4", "label": "a", "end": 2}) + "\n")
    specs, failures, _ = parse_manifest(path, video_root="gs://bucket/videos")
    assert failures == [] and specs[0].path == "gs://bucket/videos/v.mp4"
    assert specs[0].end_us == 2_000_000


def test_bad_rows_become_failures_and_good_rows_go_on(tmp_path):
    path = _write(
        tmp_path,
        "m.csv",
        "path,label,start,end,split\n"
        "ok.mp4,a,0,1,train\n"
        "neg.mp4,a,-1,2,train\n"
        "rev.mp4,a,3,2,train\n"
        "empty.mp4,a,2,2,train\n"
        "split.mp4,a,0,1,holdout\n"
        "ok.mp4,a,0,5,train\n"
        ",a,0,1,train\n"
        "nolabel.mp4,,0,1,train\n"
        "nan.mp4,a,abc,1,train\n",
    )
    specs, failures, _ = parse_manifest(path)
    assert [s.data_path for s in specs] == ["ok.mp4"]
    reasons = {f.error.split(": ", 1)[0]: f.error for f in failures}
    assert all(f.stage == "manifest" for f in failures)
    assert "negative" in reasons["m.csv:3"]
    assert "reversed" in reasons["m.csv:4"] and "reversed" in reasons["m.csv:5"]
    assert "holdout" in reasons["m.csv:6"]
    assert "duplicate clip id 'ok_0'" in reasons["m.csv:7"]
    assert "path is empty" in reasons["m.csv:8"]
    assert "label is empty" in reasons["m.csv:9"]
    assert "not a number" in reasons["m.csv:10"]
    with pytest.raises(ManifestError, match="line 3"):
        parse_manifest(path, strict=True)


def test_label_map_given_explicitly(tmp_path):
    lm = _write(tmp_path, "labels.json", json.dumps(["walk", "run"]))
    path = _write(tmp_path, "m.csv", "path,label\nx.mp4,run\ny.mp4,swim\n")
    specs, failures, labels = parse_manifest(path, label_map=load_label_map(lm))
    assert labels == {"walk": 0, "run": 1}
    assert specs[0].label_index == 1
    assert "'swim' is not in the label map" in failures[0].error


def test_malformed_files_stop_with_file_and_line(tmp_path):
    with pytest.raises(ManifestError, match="missing required column"):
        parse_manifest(_write(tmp_path, "m.csv", "file,class\nx.mp4,a\n"))
    with pytest.raises(ManifestError, match="line 2: not JSON"):
        parse_manifest(_write(tmp_path, "m.jsonl", '{"path": "x", "label": "a"}\n{oops\n'))
    with pytest.raises(ManifestError, match="cannot read"):
        parse_manifest(str(tmp_path / "absent.csv"))
    bad = tmp_path / "latin.csv"
    bad.write_bytes(b"path,label\n\xff\xfe.mp4,a\n")
    with pytest.raises(ManifestError, match="not UTF-8"):
        parse_manifest(str(bad))
