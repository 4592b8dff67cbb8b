"""Manifest parsing: fields, label maps, bad rows as failures, malformed files as errors."""

import csv
import io
import json
import os
import re
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.manifests import ClipSpec, ManifestError, load_label_map, parse_manifest


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
        "/videos/sub/../y.avi,jump,,,validation,yy\n"
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
        "yy", "/videos/y.avi", None, "validation"
    )  # fmt: skip
    assert specs[2].source == "m.csv:5" and specs[2].split == "train"
    assert ClipSpec.from_json(specs[0].to_json()) == specs[0]


def test_jsonl_null_fields_and_fields_of_the_wrong_type(tmp_path):
    rows = [
        {"path": "a.mp4", "label": None},
        {"path": "b.mp4", "label": 3, "id": 0},
        {"path": "c.mp4", "label": "run", "split": None, "start": True},
        {"path": "d.mp4", "label": "run", "split": None, "id": None, "start": None, "end": 2},
    ]
    path = _write(tmp_path, "m.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    specs, failures, labels = parse_manifest(path)
    assert labels == {"run": 0}  # a null label is no class; the labels of failed rows are none
    assert [(s.media_id, s.label, s.label_index, s.split, s.end_us) for s in specs] == [
        ("d", "run", 0, "train", 2_000_000)
    ]
    assert [f.error for f in failures] == [
        "m.jsonl:1: label is empty",
        "m.jsonl:2: label=3: expected a string, found a JSON number",
        "m.jsonl:3: start=True is not a number of seconds (found a JSON boolean)",
    ]


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


# ---------------------------------------------------------------------------------------------
# Kinetics.
# ---------------------------------------------------------------------------------------------
KINETICS_CSV = (
    "label,youtube_id,time_start,time_end,split,is_cc\n"
    "abseiling,-3B32lodo2M,59,69,train,0\n"
    '"air drumming",--nQbRBEz2s,104,114,val,0\n'
    ",zzz_test_id,1,11,test,0\n"
    "abseiling,twice,0,10,validate,0\n"
    "abseiling,twice,20,30,train,0\n"
    "abseiling,rev,10,5,train,0\n"
    "abseiling,neg,-1,5,train,0\n"
    "abseiling,spl,0,10,holdout,0\n"
    "abseiling,half,0.5,10,train,0\n"
    "abseiling,,0,10,train,0\n"
)


def test_kinetics_trimmed_files_default_pattern(tmp_path):
    path = _write(tmp_path, "kinetics400_train.csv", KINETICS_CSV)
    specs, failures, labels = parse_manifest(path, "kinetics", video_root="/k400")
    assert labels == {"abseiling": 0, "air drumming": 1}
    assert specs == [
        ClipSpec(
            media_id="-3B32lodo2M", path="/k400/-3B32lodo2M_000059_000069.mp4",
            data_path="-3B32lodo2M_000059_000069.mp4", label="abseiling", label_index=0,
            start_us=0, end_us=None, split="train", source="kinetics400_train.csv:2",
        ),
        ClipSpec(
            media_id="--nQbRBEz2s", path="/k400/--nQbRBEz2s_000104_000114.mp4",
            data_path="--nQbRBEz2s_000104_000114.mp4", label="air drumming", label_index=1,
            start_us=0, end_us=None, split="validation", source="kinetics400_train.csv:3",
        ),
        ClipSpec(
            media_id="twice", path="/k400/twice_000000_000010.mp4",
            data_path="twice_000000_000010.mp4", label="abseiling", label_index=0,
            start_us=0, end_us=None, split="validation", source="kinetics400_train.csv:5",
        ),
    ]  # fmt: skip
    assert [(f.id, f.path, f.stage, f.error) for f in failures] == [
        ("zzz_test_id", "", "manifest", "kinetics400_train.csv:4: label is empty (Kinetics test "
         "rows have no public labels; a record needs a label index)"),
        ("twice", "", "manifest", "kinetics400_train.csv:6: duplicate clip id 'twice_0' (first "
         "at kinetics400_train.csv:5)"),
        ("rev", "", "manifest", "kinetics400_train.csv:7: window start=10.0s end=5.0s is empty or "
         "reversed"),
        ("neg", "", "manifest", "kinetics400_train.csv:8: time_start='-1' is negative"),
        ("spl", "", "manifest", "kinetics400_train.csv:9: split='holdout': expected one of "
         "['train', 'val', 'valid', 'validate', 'validation', 'test'] (any case)"),
        ("half", "", "manifest", "kinetics400_train.csv:10: file_pattern="
         "'{youtube_id}_{time_start:06d}_{time_end:06d}.mp4' cannot name this row: Unknown format "
         "code 'd' for object of type 'float'"),
        ("kinetics400_train.csv:11", "", "manifest", "kinetics400_train.csv:11: youtube_id='': "
         "expected a non-empty id without slashes"),
    ]  # fmt: skip
    with pytest.raises(ManifestError, match="kinetics400_train.csv' line 4: label is empty"):
        parse_manifest(path, "kinetics", strict=True)


def test_kinetics_untrimmed_videos_use_the_window(tmp_path):
    path = _write(tmp_path, "k.csv", KINETICS_CSV)
    specs, failures, _ = parse_manifest(
        path, "kinetics", video_root="gs://bucket/yt", file_pattern="{youtube_id}.mp4"
    )
    assert [(s.media_id, s.path, s.start_us, s.end_us, s.split) for s in specs] == [
        ("-3B32lodo2M", "gs://bucket/yt/-3B32lodo2M.mp4", 59_000_000, 69_000_000, "train"),
        ("--nQbRBEz2s", "gs://bucket/yt/--nQbRBEz2s.mp4", 104_000_000, 114_000_000, "validation"),
        ("twice", "gs://bucket/yt/twice.mp4", 0, 10_000_000, "validation"),
        ("twice", "gs://bucket/yt/twice.mp4", 20_000_000, 30_000_000, "train"),
        ("half", "gs://bucket/yt/half.mp4", 500_000, 10_000_000, "train"),
    ]  # fmt: skip
    assert [f.id for f in failures] == ["zzz_test_id", "rev", "neg", "spl", "k.csv:11"]


def test_kinetics_pattern_fields_label_map_and_auto(tmp_path):
    path = _write(tmp_path, "val.csv", KINETICS_CSV)
    specs, _, _ = parse_manifest(
        path, "kinetics", file_pattern="{split}/{label}/{youtube_id}_{time_start:06d}.mp4"
    )
    assert specs[1].data_path == "val/air drumming/--nQbRBEz2s_000104.mp4"
    # auto: a .csv whose header has youtube_id and no path column is a Kinetics CSV.
    auto, _, _ = parse_manifest(path)
    assert [s.data_path for s in auto] == [s.data_path for s in parse_manifest(path, "kinetics")[0]]
    # An explicit label map must hold every label used.
    specs, failures, labels = parse_manifest(path, "kinetics", label_map={"air drumming": 7})
    assert labels == {"air drumming": 7}
    assert [(s.media_id, s.label_index) for s in specs] == [("--nQbRBEz2s", 7)]
    assert failures[0].error == "val.csv:2: label 'abseiling' is not in the label map"


def test_kinetics_bad_patterns_and_files_stop_early(tmp_path):
    bad = {
        "{ytid}.mp4": "unknown field(s) ['ytid']",
        "{label}.mp4": "must use {youtube_id}",
        "{youtube_id:q}.mp4": "cannot format a row: Unknown format code 'q'",
        "{youtube_id.upper}.mp4": "unknown field(s) ['youtube_id.upper']",
        "{youtube_id": "expected '}' before end of string",
    }
    for pattern, why in bad.items():
        with pytest.raises(ValueError, match=re.escape(f"file_pattern={pattern!r}: {why}")):
            parse_manifest(str(tmp_path / "absent.csv"), "kinetics", file_pattern=pattern)
    with pytest.raises(ValueError, match="only used with manifest_format=kinetics, not 'csv'"):
        parse_manifest(_write(tmp_path, "m.csv", "path,label\nx,a\n"), file_pattern="{youtube_id}")
    no_split = _write(tmp_path, "k2.csv", "label,youtube_id,time_start,time_end\na,b,0,1\n")
    with pytest.raises(ManifestError, match=r"line 1: missing required column\(s\) \['split'\]"):
        parse_manifest(no_split, "kinetics")


# ---------------------------------------------------------------------------------------------
# UCF-101.
# ---------------------------------------------------------------------------------------------
def _ucf_folder(tmp_path):
    d = tmp_path / "ucfTrainTestlist"
    d.mkdir()
    crlf = "\r\n"  # the official files have Windows line ends
    (d / "classInd.txt").write_bytes(
        crlf.join(["1 ApplyEyeMakeup", "2 ApplyLipstick", "3 HandstandPushups", ""]).encode()
    )
    (d / "trainlist01.txt").write_bytes(crlf.join([
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1",
        "HandstandPushups/v_HandStandPushups_g08_c01.avi 3",
        "",
        "ApplyLipstick/v_ApplyLipstick_g09_c01.avi 1",
        "ApplyLipstick/v_ApplyLipstick_g09_c02.avi 4",
        "handstandpushups/v_HandStandPushups_g09_c01.avi 3",
        "Juggling/v_Juggling_g01_c01.avi",
        "v_NoFolder_g01_c01.avi 2",
        "a b c",
        "",
    ]).encode())  # fmt: skip
    (d / "testlist01.txt").write_bytes(crlf.join([
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi",
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi",
        "v_NoFolder_g02_c01.avi",
        "",
    ]).encode())  # fmt: skip
    (d / "trainlist02.txt").write_text("ApplyLipstick/v_ApplyLipstick_g01_c01.avi 2\n")
    (d / "testlist02.txt").write_text("HandstandPushups/v_HandStandPushups_g01_c01.avi\n")
    return d


def test_ucf101_official_split_files(tmp_path):
    d = _ucf_folder(tmp_path)
    specs, failures, labels = parse_manifest(str(d), "ucf101", video_root="/data/UCF-101")
    assert labels == {"ApplyEyeMakeup": 0, "ApplyLipstick": 1, "HandstandPushups": 2}
    assert specs[0] == ClipSpec(
        media_id="v_ApplyEyeMakeup_g08_c01",
        path="/data/UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi",
        data_path="ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", label="ApplyEyeMakeup",
        label_index=0, start_us=0, end_us=None, split="train", source="trainlist01.txt:1",
    )  # fmt: skip
    assert [(s.media_id, s.label_index, s.split, s.source) for s in specs] == [
        ("v_ApplyEyeMakeup_g08_c01", 0, "train", "trainlist01.txt:1"),
        ("v_HandStandPushups_g08_c01", 2, "train", "trainlist01.txt:2"),
        ("v_HandStandPushups_g09_c01", 2, "train", "trainlist01.txt:6"),
        ("v_NoFolder_g01_c01", 1, "train", "trainlist01.txt:8"),
        ("v_ApplyEyeMakeup_g01_c01", 0, "validation", "testlist01.txt:1"),
    ]  # fmt: skip
    assert [(f.id, f.path, f.error) for f in failures] == [
        ("v_ApplyLipstick_g09_c01", "ApplyLipstick/v_ApplyLipstick_g09_c01.avi",
         "trainlist01.txt:4: label number 1 (ApplyEyeMakeup) disagrees with the folder "
         "'ApplyLipstick'"),
        ("v_ApplyLipstick_g09_c02", "ApplyLipstick/v_ApplyLipstick_g09_c02.avi",
         "trainlist01.txt:5: label number '4': expected 1..3"),
        ("v_Juggling_g01_c01", "Juggling/v_Juggling_g01_c01.avi",
         "trainlist01.txt:7: class folder 'Juggling' is not in classInd.txt"),
        ("a", "a", "trainlist01.txt:9: expected '<Class>/<video>.avi [<number>]', got 'a b c'"),
        ("v_ApplyEyeMakeup_g08_c01", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi",
         "testlist01.txt:2: duplicate clip id 'v_ApplyEyeMakeup_g08_c01_0' (first at "
         "trainlist01.txt:1)"),
        ("v_NoFolder_g02_c01", "v_NoFolder_g02_c01.avi",
         "testlist01.txt:3: label is empty (no class folder or number)"),
    ]  # fmt: skip


def test_ucf101_input_forms_and_split_number(tmp_path):
    d = _ucf_folder(tmp_path)
    first = parse_manifest(str(d), "ucf101")
    assert parse_manifest(str(d / "classInd.txt"), "ucf101") == first
    assert parse_manifest(str(d) + "/", "ucf101") == first
    assert parse_manifest(str(d / "testlist01.txt")) == first  # auto
    assert parse_manifest(str(d)) == first  # auto, a folder holding classInd.txt
    specs, failures, _ = parse_manifest(str(d / "trainlist02.txt"), split_number=2)
    assert failures == []
    assert [(s.media_id, s.label, s.split, s.source) for s in specs] == [
        ("v_ApplyLipstick_g01_c01", "ApplyLipstick", "train", "trainlist02.txt:1"),
        ("v_HandStandPushups_g01_c01", "HandstandPushups", "validation", "testlist02.txt:1"),
    ]  # fmt: skip
    with pytest.raises(ValueError, match="is a file of split 2 but split_number=1"):
        parse_manifest(str(d / "trainlist02.txt"), "ucf101")
    with pytest.raises(ManifestError, match=r"testlist03.txt'.*cannot read"):
        (d / "trainlist03.txt").write_text("")
        parse_manifest(str(d), "ucf101", split_number=3)
    with pytest.raises(ValueError, match="split_number=4: expected 1, 2 or 3"):
        parse_manifest(str(d), "ucf101", split_number=4)
    (d / "classInd.txt").write_text("1 ApplyEyeMakeup\n3 ApplyLipstick\n")
    with pytest.raises(ManifestError, match="class numbers must be 1..2 without gaps"):
        parse_manifest(str(d), "ucf101")
    (d / "classInd.txt").write_text("1 ApplyEyeMakeup\nApplyLipstick\n")
    with pytest.raises(ManifestError, match="classInd.txt' line 2: expected '<number> <class"):
        parse_manifest(str(d), "ucf101")
    with pytest.raises(ManifestError, match="classInd.txt'.*cannot read"):
        parse_manifest(str(tmp_path / "elsewhere"), "ucf101")


# ---------------------------------------------------------------------------------------------
# HMDB-51.
# ---------------------------------------------------------------------------------------------
def _hmdb_folder(tmp_path):
    d = tmp_path / "testTrainMulti_7030_splits"
    d.mkdir()
    (d / "brush_hair_test_split1.txt").write_text(
        "April_09_brush_hair_u_nm_np1_ba_goo_0.avi 1 \n"
        "April_09_brush_hair_u_nm_np1_ba_goo_1.avi 2 \n"
        "April_09_brush_hair_u_nm_np1_ba_goo_2.avi 0 \n"
        "\n"
        "Brushing_my_waist_lenth_hair_brush_hair_u_nm_np1_ba_goo_0.avi 3 \n"
    )
    (d / "climb_stairs_test_split1.txt").write_text(
        "BIG_FISH_climb_stairs_f_nm_np1_fr_med_0.avi 2\n"
        "April_09_brush_hair_u_nm_np1_ba_goo_0.avi 1\n"
        "no_label.avi\n"
        "sub/dir.avi 1\n"
    )
    (d / "brush_hair_test_split2.txt").write_text("April_09_brush_hair_u_nm_np1_ba_goo_2.avi 1\n")
    return d


def test_hmdb51_official_split_files(tmp_path):
    d = _hmdb_folder(tmp_path)
    specs, failures, labels = parse_manifest(str(d), "hmdb51", video_root="gs://b/hmdb51")
    assert labels == {"brush_hair": 0, "climb_stairs": 1}
    assert specs == [
        ClipSpec(
            media_id="April_09_brush_hair_u_nm_np1_ba_goo_0",
            path="gs://b/hmdb51/brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi",
            data_path="brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi", label="brush_hair",
            label_index=0, start_us=0, end_us=None, split="train",
            source="brush_hair_test_split1.txt:1",
        ),
        ClipSpec(
            media_id="April_09_brush_hair_u_nm_np1_ba_goo_1",
            path="gs://b/hmdb51/brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_1.avi",
            data_path="brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_1.avi", label="brush_hair",
            label_index=0, start_us=0, end_us=None, split="validation",
            source="brush_hair_test_split1.txt:2",
        ),
        ClipSpec(
            media_id="BIG_FISH_climb_stairs_f_nm_np1_fr_med_0",
            path="gs://b/hmdb51/climb_stairs/BIG_FISH_climb_stairs_f_nm_np1_fr_med_0.avi",
            data_path="climb_stairs/BIG_FISH_climb_stairs_f_nm_np1_fr_med_0.avi",
            label="climb_stairs", label_index=1, start_us=0, end_us=None, split="validation",
            source="climb_stairs_test_split1.txt:1",
        ),
    ]  # fmt: skip
    assert [(f.id, f.path, f.error) for f in failures] == [
        ("Brushing_my_waist_lenth_hair_brush_hair_u_nm_np1_ba_goo_0",
         "brush_hair/Brushing_my_waist_lenth_hair_brush_hair_u_nm_np1_ba_goo_0.avi",
         "brush_hair_test_split1.txt:5: expected '<video>.avi <0|1|2>', got "
         "'Brushing_my_waist_lenth_hair_brush_hair_u_nm_np1_ba_goo_0.avi 3 '"),
        ("April_09_brush_hair_u_nm_np1_ba_goo_0",
         "climb_stairs/April_09_brush_hair_u_nm_np1_ba_goo_0.avi",
         "climb_stairs_test_split1.txt:2: duplicate clip id "
         "'April_09_brush_hair_u_nm_np1_ba_goo_0_0' (first at brush_hair_test_split1.txt:1)"),
        ("no_label", "climb_stairs/no_label.avi",
         "climb_stairs_test_split1.txt:3: expected '<video>.avi <0|1|2>', got 'no_label.avi'"),
        ("dir", "climb_stairs/sub/dir.avi",
         "climb_stairs_test_split1.txt:4: video 'sub/dir.avi': expected a file name without "
         "folders"),
    ]  # fmt: skip


def test_hmdb51_input_forms_label_map_and_errors(tmp_path):
    d = _hmdb_folder(tmp_path)
    first = parse_manifest(str(d), "hmdb51")
    assert parse_manifest(str(d / "climb_stairs_test_split1.txt")) == first  # auto, any file
    assert parse_manifest(str(d)) == first  # auto, the folder
    specs, failures, labels = parse_manifest(str(d), "hmdb51", split_number=2)
    assert labels == {"brush_hair": 0} and failures == []
    assert [(s.media_id, s.split) for s in specs] == [
        ("April_09_brush_hair_u_nm_np1_ba_goo_2", "train")
    ]
    specs, failures, _ = parse_manifest(str(d), "hmdb51", label_map={"climb_stairs": 0})
    # The climb_stairs row of a video is no duplicate once its brush_hair row failed.
    assert [s.media_id for s in specs] == [
        "BIG_FISH_climb_stairs_f_nm_np1_fr_med_0",
        "April_09_brush_hair_u_nm_np1_ba_goo_0",
    ]
    assert [f.error for f in failures[:2]] == [
        "brush_hair_test_split1.txt:1: label 'brush_hair' is not in the label map",
        "brush_hair_test_split1.txt:2: label 'brush_hair' is not in the label map",
    ]
    with pytest.raises(ManifestError, match=r"no '\*_test_split3.txt' files"):
        parse_manifest(str(d), "hmdb51", split_number=3)
    with pytest.raises(ManifestError, match="brush_hair_test_split1.txt' line 5: expected"):
        parse_manifest(str(d), "hmdb51", strict=True)


# ---------------------------------------------------------------------------------------------
# Split folders on gs://, through a real local GCS emulator.
# ---------------------------------------------------------------------------------------------
from tests.conftest import GCS_BUCKET as BUCKET  # noqa: E402


def _upload_folder(local, url):
    from apache_beam.io.filesystems import FileSystems

    for name in sorted(os.listdir(local)):
        with (
            open(os.path.join(local, name), "rb") as src,
            FileSystems.create(f"{url}/{name}") as dst,
        ):
            dst.write(src.read())


def test_split_folders_and_kinetics_csv_on_gs(tmp_path, gcs_emulator):
    ucf, hmdb = _ucf_folder(tmp_path), _hmdb_folder(tmp_path)
    _upload_folder(str(ucf), f"gs://{BUCKET}/ucfTrainTestlist")
    _upload_folder(str(hmdb), f"gs://{BUCKET}/hmdb/testTrainMulti_7030_splits")
    root = f"gs://{BUCKET}/ucfTrainTestlist"
    for where in (root, root + "/", root + "/testlist01.txt"):
        specs, failures, labels = parse_manifest(where, video_root=f"gs://{BUCKET}/UCF-101")
        assert (specs, failures, labels) == parse_manifest(
            str(ucf), "ucf101", video_root=f"gs://{BUCKET}/UCF-101"
        )
    assert specs[0].path == f"gs://{BUCKET}/UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi"
    hmdb_root = f"gs://{BUCKET}/hmdb/testTrainMulti_7030_splits"
    for where in (hmdb_root, hmdb_root + "/brush_hair_test_split1.txt"):
        assert parse_manifest(where) == parse_manifest(str(hmdb), "hmdb51")
    with pytest.raises(ManifestError, match=r"no '\*_test_split1.txt' files"):
        parse_manifest(f"gs://{BUCKET}/hmdb", "hmdb51")
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.create(f"gs://{BUCKET}/k400/train.csv") as f:
        f.write(KINETICS_CSV.encode())
    specs, failures, _ = parse_manifest(f"gs://{BUCKET}/k400/train.csv", video_root="/k")
    assert len(specs) == 3 and len(failures) == 7 and specs[0].source == "train.csv:2"


# ---------------------------------------------------------------------------------------------
# Properties: whatever the rows hold, each ends as one spec or one failure, and ids are unique.
# ---------------------------------------------------------------------------------------------
_TEXT = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\x00"),
    max_size=12,
)
_NUMBER = st.one_of(
    st.integers(-5, 40).map(str), st.floats(allow_nan=True, allow_infinity=True).map(str), _TEXT
)
_SETTINGS = settings(max_examples=60, deadline=None)


def _check_outcome(specs, failures, expected_lines, name):
    lines = [int(s.source.rsplit(":", 1)[1]) for s in specs]
    lines += [int(f.error.split(": ", 1)[0].rsplit(":", 1)[1]) for f in failures]
    assert sorted(lines) == sorted(expected_lines)
    assert all(f.stage == "manifest" and f.error.startswith(name) for f in failures)
    ids = [f"{s.media_id}_{s.start_us}" for s in specs]
    assert len(ids) == len(set(ids))
    for s in specs:
        assert s.end_us is None or s.end_us > s.start_us >= 0
        assert s.split in ("train", "validation", "test")


def _csv_text(header, rows):
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


@_SETTINGS
@given(
    st.lists(
        st.tuples(
            st.one_of(st.sampled_from(["a.mp4", "b/c.avi", ""]), _TEXT),
            st.one_of(st.sampled_from(["run", "jump", ""]), _TEXT),
            _NUMBER,
            _NUMBER,
            st.one_of(st.sampled_from(["train", "validation", "test", ""]), _TEXT),
            st.one_of(st.just(""), _TEXT),
        ),
        max_size=12,
    )
)
def test_csv_rows_never_crash_the_parser(rows):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.csv")
        with open(path, "w", encoding="utf-8") as f:
            f.write(_csv_text(["path", "label", "start", "end", "split", "id"], rows))
        specs, failures, labels = parse_manifest(path)
    expected = [i + 2 for i, row in enumerate(rows) if any(v.strip() for v in row)]
    _check_outcome(specs, failures, expected, "m.csv:")
    assert sorted(labels.values()) == list(range(len(labels)))


@_SETTINGS
@given(
    st.lists(
        st.tuples(
            st.one_of(st.sampled_from(["abseiling", "air drumming", ""]), _TEXT),
            st.one_of(st.sampled_from(["vid1", "vid2", "-x_Y", ""]), _TEXT),
            _NUMBER,
            _NUMBER,
            st.one_of(st.sampled_from(["train", "val", "validate", "test", ""]), _TEXT),
        ),
        max_size=12,
    ),
    st.sampled_from(["", "{youtube_id}.mp4", "{split}/{label}/{youtube_id}_{time_end}.mkv"]),
)
def test_kinetics_rows_never_crash_the_parser(rows, pattern):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.csv")
        with open(path, "w", encoding="utf-8") as f:
            f.write(_csv_text(["label", "youtube_id", "time_start", "time_end", "split"], rows))
        specs, failures, _ = parse_manifest(path, "kinetics", file_pattern=pattern)
    expected = [i + 2 for i, row in enumerate(rows) if any(v.strip() for v in row)]
    _check_outcome(specs, failures, expected, "k.csv:")


_LINE = st.lists(
    st.one_of(
        st.sampled_from(["Run/v_Run_g01_c01.avi", "Jump/v_Jump_g01_c01.avi", "x.avi", "0", "1"]),
        st.sampled_from(["2", "3", "7", "-1", "run/v_a.avi", "a/b/c.avi"]),
        _TEXT.filter(lambda t: t.strip() == t and t and not any(c.isspace() for c in t)),
    ),
    max_size=3,
).map(" ".join)


@_SETTINGS
@given(st.lists(_LINE, max_size=8), st.lists(_LINE, max_size=8))
def test_ucf101_lines_never_crash_the_parser(train, test):
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "classInd.txt"), "w") as f:
            f.write("1 Jump\n2 Run\n")
        for name, lines in (("trainlist01.txt", train), ("testlist01.txt", test)):
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
        specs, failures, labels = parse_manifest(tmp, "ucf101")
    assert labels == {"Jump": 0, "Run": 1}
    train_lines = [i + 1 for i, line in enumerate(train) if line.strip()]
    test_lines = [i + 1 for i, line in enumerate(test) if line.strip()]
    got = [s.source for s in specs] + [f.error.split(": ", 1)[0] for f in failures]
    assert sorted(got) == sorted(
        [f"trainlist01.txt:{n}" for n in train_lines] + [f"testlist01.txt:{n}" for n in test_lines]
    )
    ids = [f"{s.media_id}_{s.start_us}" for s in specs]
    assert len(ids) == len(set(ids))


@_SETTINGS
@given(st.lists(_LINE, max_size=8), st.lists(_LINE, max_size=8))
def test_hmdb51_lines_never_crash_the_parser(first, second):
    with tempfile.TemporaryDirectory() as tmp:
        for name, lines in (("run_test_split1.txt", first), ("jump_far_test_split1.txt", second)):
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
        specs, failures, labels = parse_manifest(tmp, "hmdb51")
    assert labels == {"jump_far": 0, "run": 1}

    def rows(name, lines):
        return [
            f"{name}:{i + 1}"
            for i, line in enumerate(lines)
            if line.strip() and not (len(line.split()) == 2 and line.split()[1] == "0")
        ]

    got = [s.source for s in specs] + [f.error.split(": ", 1)[0] for f in failures]
    assert sorted(got) == sorted(
        rows("run_test_split1.txt", first) + rows("jump_far_test_split1.txt", second)
    )
    ids = [f"{s.media_id}_{s.start_us}" for s in specs]
    assert len(ids) == len(set(ids))


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _TEXT,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(_TEXT, inner, max_size=2),
    max_leaves=4,
)


@_SETTINGS
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["path", "label", "start", "end", "split", "id", "other"]),
            st.one_of(st.sampled_from(["a.mp4", "run", "train", "1", 2.5, -1]), _JSON),
        ),
        max_size=10,
    )
)
def test_jsonl_objects_never_crash_the_parser(objects):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            f.write("".join(json.dumps(o) + "\n" for o in objects))
        specs, failures, labels = parse_manifest(path)
    _check_outcome(specs, failures, list(range(1, len(objects) + 1)), "m.jsonl:")
    named = {str(o["label"]).strip() for o in objects if o.get("label") is not None}
    assert set(labels) <= named and sorted(labels.values()) == list(range(len(labels)))


def test_paths_must_stay_inside_the_video_root():
    from pipelines.manifests import resolve_path

    assert resolve_path("a/../b.mp4", "/v") == "/v/b.mp4"
    assert resolve_path("x.mp4", "gs://bkt/videos/") == "gs://bkt/videos/x.mp4"
    assert resolve_path("gs://bkt/videos/y.mp4", "gs://bkt/videos") == "gs://bkt/videos/y.mp4"
    assert resolve_path("/anywhere/z.mp4", None) == "/anywhere/z.mp4"
    for data_path, root in [
        ("../outside.mp4", "/v"),
        ("a/../../outside.mp4", "/v"),
        ("/etc/passwd", "/v"),
        ("/v2/x.mp4", "/v"),
        ("../x.mp4", "gs://bkt/videos"),
        ("gs://other/x.mp4", "gs://bkt/videos"),
        ("gs://bkt/x.mp4", "/v"),
    ]:
        with pytest.raises(ValueError, match="points outside --video_root"):
            resolve_path(data_path, root)
