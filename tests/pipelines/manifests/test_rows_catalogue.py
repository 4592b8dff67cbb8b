"""A catalogue of bad manifest rows, each beside a good row: the good row is kept, the bad one is
exactly one `manifest` failure that names the row and says why. Nothing lost, nothing destroyed,
nothing silent: clip ids that would repeat, wrong JSON types, splits, links out of the video root,
and part keys that stay put when unrelated rows change."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.manifests import (
    ClipSpec,
    clip_starts,
    default_label_map,
    parse_manifest,
    refuse_colliding_clips,
)
from pipelines.storage.parts import input_key

MICROS = 1_000_000


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def _jsonl(tmp_path, rows):
    return _write(tmp_path, "m.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def _one_failure(failures, source):
    """The failure of row `source` (e.g. 'm.csv:3'), checked to be its only one."""
    mine = [f for f in failures if f.error.startswith(source + ": ")]
    assert len(mine) == 1, failures
    assert mine[0].stage == "manifest"
    return mine[0]


def _spec(media, start_s, end_s=None, source="m.csv:2"):
    return ClipSpec(
        media_id=media, path=f"/v/{media}.mp4", data_path=f"{media}.mp4", label="a",
        label_index=0, start_us=int(round(start_s * MICROS)),
        end_us=None if end_s is None else int(round(end_s * MICROS)), split="train",
        source=source,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# 1. Clip ids are unique: a row whose clips would repeat an earlier row's id is refused.
# ---------------------------------------------------------------------------------------------
def test_overlapping_windows_cut_into_clips_are_refused_naming_the_first_row(tmp_path):
    # --max_clip_seconds 0.4 at 25 fps: 10 frames a clip; 0-1 s has clips at 0, 0.4, 0.8 s.
    path = _write(tmp_path, "m.csv", "path,label,start,end\nv.mp4,a,0,1\nv.mp4,a,0.4,0.8\n")
    specs, failures, labels = parse_manifest(path, max_clip_frames=10, fps=25)
    assert [s.source for s in specs] == ["m.csv:2"] and labels == {"a": 0}
    f = _one_failure(failures, "m.csv:3")
    assert (f.id, f.path) == ("v.mp4", "v.mp4")  # a row without an id column: named by path
    assert f.error.startswith("m.csv:3: duplicate clip id 'v_400000' (first at m.csv:2)")
    assert "every 0.4 s" in f.error
    # The default cut, 30 s: 0-60 s has clips at 0 and 30 s, as has 30-40 s.
    path = _write(tmp_path, "d.csv", "path,label,start,end\nv.mp4,a,0,60\nv.mp4,b,30,40\n")
    specs, failures, labels = parse_manifest(path)
    assert [s.source for s in specs] == ["d.csv:2"] and labels == {"a": 0}
    assert (
        "duplicate clip id 'v_30000000' (first at d.csv:2)"
        in _one_failure(failures, "d.csv:3").error
    )
    # The later row is refused even when it is the one that starts first.
    path = _write(tmp_path, "r.csv", "path,label,start,end\nv.mp4,a,30,40\nv.mp4,a,0,60\n")
    specs, failures, _ = parse_manifest(path)
    assert [s.source for s in specs] == ["r.csv:2"]
    assert "duplicate clip id 'v_30000000' (first at r.csv:2)" in failures[0].error
    with pytest.raises(Exception, match="line 3: duplicate clip id 'v_30000000'"):
        parse_manifest(path, strict=True)


def test_windows_that_share_no_clip_start_are_all_kept(tmp_path):
    path = _write(
        tmp_path,
        "m.csv",
        "path,label,start,end\n"
        "v.mp4,a,0,20\n"  # one clip, at 0
        "v.mp4,a,30,40\n"  # one clip, at 30 s
        "v.mp4,a,10,70\n"  # clips at 10, 40, 70 s... (40 and 70 are no one's start)
        "w.mp4,a,30,40\n",  # another video
    )
    specs, failures, _ = parse_manifest(path)
    assert failures == [] and len(specs) == 4
    # Never cut (--max_clip_seconds 0): only equal starts collide.
    path = _write(tmp_path, "n.csv", "path,label,start,end\nv.mp4,a,0,60\nv.mp4,a,30,40\n")
    assert parse_manifest(path, max_clip_frames=0)[1] == []


def test_rows_without_an_end_collide_when_their_cuts_align():
    # Clips of a window to the end of the video start at 0, 30, 60 s, ... from its start.
    rows = [
        _spec("v", 0, None, "m.csv:2"),
        _spec("v", 60, 70, "m.csv:3"),  # 60 s is clip 2 of row 2
        _spec("v", 61, 70, "m.csv:4"),  # not aligned: kept
        _spec("v", 90, None, "m.csv:5"),  # aligned with row 2: refused
        _spec("v", 45, None, "m.csv:6"),  # not aligned with row 2 nor with row 4's cut
        _spec("v", 75, None, "m.csv:7"),  # aligned with row 6 (45 + 30)
        _spec("w", 60, None, "m.csv:8"),  # another video
    ]
    kept, failures = refuse_colliding_clips(rows, max_clip_frames=750, fps=25)
    assert [s.source for s in kept] == ["m.csv:2", "m.csv:4", "m.csv:6", "m.csv:8"]
    assert [f.error.split(" (first")[0] for f in failures] == [
        "m.csv:3: duplicate clip id 'v_60000000'",
        "m.csv:5: duplicate clip id 'v_90000000'",
        "m.csv:7: duplicate clip id 'v_75000000'",
    ]
    assert [f.error.split("(first at ")[1][:7] for f in failures] == [
        "m.csv:2",
        "m.csv:2",
        "m.csv:6",
    ]
    assert all(f.stage == "manifest" and f.id == "v" for f in failures)


def test_clip_starts_follow_the_cutting_rule_of_the_processor():
    from pipelines.job.config import PreprocessConfig

    # The cut the job uses: PreprocessConfig.max_clip_frames.
    config = PreprocessConfig(input="m.csv", output_dir="/o", max_clip_seconds=0.4)
    assert config.max_clip_frames == 10
    assert clip_starts(_spec("v", 0, 1), config.max_clip_frames, config.fps) == (10, 3)
    assert clip_starts(_spec("v", 0, 0.8), 10, 25) == (10, 2)  # 20 frames: 2 clips
    assert clip_starts(_spec("v", 0, 0.81), 10, 25) == (10, 3)  # a 21st frame at 0.8 s
    assert clip_starts(_spec("v", 5, None), 10, 25) == (10, None)
    assert clip_starts(_spec("v", 5, 6), 0, 25) == (0, 1)


def _frame_times(start_us, end_us, fps, horizon_us):
    """Times of a window's output frames, as pipelines.stages.video makes them (to `horizon_us` for
    a
    window to the end of the video)."""
    period = MICROS / fps
    stop = horizon_us if end_us is None else end_us
    times, k = [], 0
    while (t := start_us + int(round(k * period))) < stop:
        times.append(t)
        k += 1
    return times


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["v", "w"]),
            st.integers(0, 40).map(lambda k: k * 200_000),
            st.one_of(st.none(), st.integers(1, 30).map(lambda k: k * 200_000)),
        ),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from([(0, 25.0), (1, 25.0), (5, 25.0), (10, 25.0), (3, 30.0), (7, 29.97)]),
)
def test_refused_rows_are_exactly_those_whose_clip_ids_would_repeat(rows, cut):
    max_clip_frames, fps = cut
    specs = [
        _spec(m, s / MICROS, None if n is None else (s + n) / MICROS, f"m.csv:{i + 2}")
        for i, (m, s, n) in enumerate(rows)
    ]
    horizon = 20 * MICROS
    kept, failures = refuse_colliding_clips(specs, max_clip_frames, fps)
    assert len(kept) + len(failures) == len(specs)

    def ids(spec):
        times = _frame_times(spec.start_us, spec.end_us, fps, horizon)
        step = max_clip_frames or len(times)
        return {f"{spec.media_id}_{t}" for t in times[::step]}

    seen: set[str] = set()
    span = max_clip_frames * MICROS / fps
    exact = abs(span - round(span)) < 1e-6
    for spec in specs:
        mine = ids(spec)
        if spec in kept:
            assert not mine & seen, spec  # never a repeated id
            seen |= mine
        elif exact:  # a refused row does repeat an id (within the horizon)
            assert mine & seen, spec


# ---------------------------------------------------------------------------------------------
# 2. Labels: the map comes from the rows kept; part keys do not depend on the other rows.
# ---------------------------------------------------------------------------------------------
def test_labels_of_failed_rows_are_not_classes(tmp_path):
    path = _write(
        tmp_path,
        "m.csv",
        "path,label,start,end\n"
        "a.mp4,walk,0,1\n"
        "b.mp4,zzz,3,2\n"  # reversed window: fails, and zzz is no class
        "a.mp4,aaa,0,2\n",  # duplicate id: fails, and aaa is no class
    )
    specs, failures, labels = parse_manifest(path)
    assert labels == {"walk": 0} and [s.label_index for s in specs] == [0]
    assert len(failures) == 2
    assert default_label_map(["b", "a", "b"]) == {"a": 0, "b": 1}


def test_a_row_with_a_new_label_leaves_the_other_rows_keys_as_they_were(tmp_path):
    old = _write(tmp_path, "old.csv", "path,label\nx.mp4,walk\ny.mp4,run\n")
    new = _write(tmp_path, "new.csv", "path,label\nx.mp4,walk\ny.mp4,run\nz.mp4,jump\n")
    before, _, labels_before = parse_manifest(old)
    after, _, labels_after = parse_manifest(new)
    assert labels_before != labels_after  # jump sorts first: every index moved
    assert [input_key(s) for s in before] == [input_key(s) for s in after[:2]]
    # What does decide a row's records still changes its key.
    assert input_key(after[0]) != input_key(after[1])
    relabelled = ClipSpec(**{**after[0].__dict__, "label": "stroll"})
    assert input_key(relabelled) != input_key(after[0])


# ---------------------------------------------------------------------------------------------
# 3. JSON values of the wrong type, and times that are not plain ASCII decimals.
# ---------------------------------------------------------------------------------------------
_STRING = "expected a string, found a JSON"
_SECONDS = "is not a number of seconds"
_ASCII = f"{_SECONDS} (expected ASCII decimal notation)"


@pytest.mark.parametrize(
    "bad, reason",
    [
        ({"label": ["a"]}, f"label=['a']: {_STRING} array"),
        ({"label": True}, f"label=True: {_STRING} boolean"),
        ({"label": {"x": 1}}, f"label={{'x': 1}}: {_STRING} object"),
        ({"path": 123}, f"path=123: {_STRING} number"),
        ({"id": [1]}, f"id=[1]: {_STRING} array"),
        ({"split": 1}, f"split=1: {_STRING} number"),
        ({"start": [1]}, f"start=[1] {_SECONDS} (found a JSON array)"),
        ({"end": {}}, f"end={{}} {_SECONDS} (found a JSON object)"),
        ({"end": False}, f"end=False {_SECONDS} (found a JSON boolean)"),
        ({"start": "1_0"}, f"start='1_0' {_ASCII}"),
        ({"start": "\uff11\uff12"}, f"start='\uff11\uff12' {_ASCII}"),
        ({"start": "\u0661"}, f"start='\u0661' {_ASCII}"),
        ({"end": "inf"}, f"end='inf' {_ASCII}"),
        ({"__extra__": "x"}, None),  # an unknown key: ignored
    ],
)
def test_jsonl_fields_of_the_wrong_type_are_refused(tmp_path, bad, reason):
    bad = {"path": "b.mp4", "label": "a", **bad}
    path = _jsonl(tmp_path, [{"path": "a.mp4", "label": "a", "start": 0.5, "end": "1.5"}, bad])
    specs, failures, labels = parse_manifest(path)
    assert specs[0].data_path == "a.mp4" and (specs[0].start_us, specs[0].end_us) == (
        500_000,
        1_500_000,
    )
    if reason is None:
        assert failures == [] and len(specs) == 2
        return
    assert len(specs) == 1 and labels == {"a": 0}
    assert reason in _one_failure(failures, "m.jsonl:2").error


def test_csv_times_must_be_ascii_decimals(tmp_path):
    text = (
        "path,label,start,end\n"
        "a.mp4,a,1.5,2e0\nb.mp4,a,1_0,\nc.mp4,a,\uff11\uff12,\nd.mp4,a,+.5,1.\n"
    )
    specs, failures, _ = parse_manifest(_write(tmp_path, "m.csv", text))
    assert [(s.data_path, s.start_us, s.end_us) for s in specs] == [
        ("a.mp4", 1_500_000, 2_000_000),
        ("d.mp4", 500_000, 1_000_000),
    ]
    assert [f.error for f in failures] == [
        "m.csv:3: start='1_0' is not a number of seconds (expected ASCII decimal notation)",
        "m.csv:4: start='１２' is not a number of seconds (expected ASCII decimal notation)",
    ]


# ---------------------------------------------------------------------------------------------
# 4. One set of split names for every format.
# ---------------------------------------------------------------------------------------------
def test_val_and_valid_are_validation_in_every_format(tmp_path):
    csv_path = _write(
        tmp_path,
        "m.csv",
        "path,label,split\na.mp4,x,val\nb.mp4,x,valid\nc.mp4,x,VALIDATION\nd.mp4,x,Train\n"
        "e.mp4,x,holdout\n",
    )
    specs, failures, _ = parse_manifest(csv_path)
    assert [s.split for s in specs] == ["validation", "validation", "validation", "train"]
    assert "split='holdout': expected one of" in _one_failure(failures, "m.csv:6").error
    jsonl_path = _jsonl(tmp_path, [{"path": "a.mp4", "label": "x", "split": "val"}])
    assert parse_manifest(jsonl_path)[0][0].split == "validation"
    kinetics = _write(
        tmp_path, "k.csv", "label,youtube_id,time_start,time_end,split\nx,abc,0,10,valid\n"
    )
    assert parse_manifest(kinetics)[0][0].split == "validation"


# ---------------------------------------------------------------------------------------------
# 5. Symbolic links under --video_root must not lead out of it.
# ---------------------------------------------------------------------------------------------
def test_links_that_leave_the_video_root_are_refused(tmp_path):
    root = tmp_path / "videos"
    (root / "sub").mkdir(parents=True)
    (root / "ok.mp4").write_bytes(b"")
    (tmp_path / "secret.mp4").write_bytes(b"")
    os.symlink("/dev/zero", root / "zero.mp4")
    os.symlink("../secret.mp4", root / "up.mp4")
    os.symlink(str(tmp_path), root / "sub" / "out")  # a folder link out of the root
    os.symlink("../ok.mp4", root / "sub" / "in.mp4")  # a link that stays inside: fine
    path = _write(
        tmp_path,
        "m.csv",
        "path,label\nok.mp4,a\nzero.mp4,a\nup.mp4,a\nsub/out/secret.mp4,a\nsub/in.mp4,a\n",
    )
    specs, failures, _ = parse_manifest(path, video_root=str(root))
    assert [s.path for s in specs] == [str(root / "ok.mp4"), str(root / "sub" / "in.mp4")]
    for line, target in [
        (3, "/dev/zero"),
        (4, tmp_path / "secret.mp4"),
        (5, tmp_path / "secret.mp4"),
    ]:
        error = _one_failure(failures, f"m.csv:{line}").error
        assert "leads outside --video_root" in error and f"(to {str(target)!r})" in error
    # A root that is itself a link is followed once, as a whole: its files are inside it.
    os.symlink(str(root), tmp_path / "alias")
    specs, failures, _ = parse_manifest(path, video_root=str(tmp_path / "alias"))
    assert [s.path for s in specs] == [
        str(tmp_path / "alias" / "ok.mp4"),
        str(tmp_path / "alias" / "sub" / "in.mp4"),
    ]
    assert len(failures) == 3


@pytest.mark.slow
def test_a_new_class_processes_only_its_row_and_reindexes_the_shards(tmp_path, assets_ready):
    """The job end to end: a grown manifest whose new label sorts first reuses every old part,
    and the shards carry the new indices (the same bytes as a fresh run's)."""
    import tensorflow as tf

    from pipelines.preprocess import run
    from pipelines.storage import output, parts
    from tests.conftest import write_video

    videos = [write_video(tmp_path / f"{n}.mp4", 4, 25.0, value=lambda i, n=n: 40 * n)
              for n in range(3)]  # fmt: skip
    flags = ["--runner=DirectRunner", "--modalities=rgb", "--dataset_name=grow"]
    rows = f"path,label\n{videos[1]},b\n{videos[2]},c\n"
    manifest = _write(tmp_path, "m.csv", rows)
    out = tmp_path / "out"
    run([f"--input={manifest}", f"--output_dir={out}", *flags])
    before = {p: os.stat(p).st_mtime_ns for p in output.list_files(f"{out}/.parts/*.tfrecord")}
    assert len(before) == 2
    manifest = _write(tmp_path, "m.csv", rows + f"{videos[0]},a\n")  # 'a' shifts b and c by one
    info = run([f"--input={manifest}", f"--output_dir={out}", *flags])
    after = {p: os.stat(p).st_mtime_ns for p in output.list_files(f"{out}/.parts/*.tfrecord")}
    assert {p: after[p] for p in before} == before  # the old parts were not made again
    assert len(after) == 3 and info["labels"] == ["a", "b", "c"]
    labels = {}
    for shard in info["splits"]["train"]["shards"]:
        for rec in tf.data.TFRecordDataset(str(out / shard)):
            ctx = tf.train.SequenceExample.FromString(rec.numpy()).context.feature
            labels[ctx["clip/label/text"].bytes_list.value[0].decode()] = ctx[
                "clip/label/index"
            ].int64_list.value[0]
    assert labels == {"a": 0, "b": 1, "c": 2}
    fresh = tmp_path / "fresh"
    run([f"--input={manifest}", f"--output_dir={fresh}", *flags])
    for shard in info["splits"]["train"]["shards"]:
        assert (out / shard).read_bytes() == (fresh / shard).read_bytes()
    assert parts.done_keys(str(out)) == parts.done_keys(str(fresh))


@pytest.mark.slow
def test_a_label_whose_every_row_fails_in_processing_is_not_a_class(tmp_path, assets_ready):
    from pipelines.preprocess import run
    from tests.conftest import write_video

    good = write_video(tmp_path / "good.mp4", 4, 25.0)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    manifest = _write(tmp_path, "m.csv", f"path,label\n{broken},aaa\n{good},b\n")
    info = run([f"--input={manifest}", f"--output_dir={tmp_path / 'o'}",
                "--runner=DirectRunner", "--modalities=rgb"])  # fmt: skip
    assert info["inputs"]["written"] == 1 and info["inputs"]["failed"] == 1
    assert (info["labels"], info["num_classes"]) == (["b"], 1)
    # An explicit label map is kept whatever fails.
    label_map = _write(tmp_path, "labels.json", json.dumps(["aaa", "b"]))
    info = run([f"--input={manifest}", f"--output_dir={tmp_path / 'p'}", f"--label_map={label_map}",
                "--runner=DirectRunner", "--modalities=rgb"])  # fmt: skip
    assert (info["labels"], info["num_classes"]) == (["aaa", "b"], 2)
