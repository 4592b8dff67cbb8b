"""The hostile-input catalogue (issue 6): every input made here, one job over all of them.

Each case is one manifest row. One pipeline run (and one command-line run) over the whole
catalogue checks, per case, what happens: good inputs are written with the expected frames and
sizes, bad inputs end as exactly one failure row whose message a person understands. Across the
catalogue: inputs = written + failed in dataset_info.json, the failures file and the records; no
temporary copy is left; nothing is written outside --output_dir.

The MP4 inputs with a lying header (frame rate 0 or absurd, variable frame rate, rotation, audio
only, the index in front) are made by editing the boxes of a file OpenCV wrote (`_Mp4`), so no
tool beyond OpenCV is needed. `docs/robustness.md` has the catalogue as a table.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import wave
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf

from pipelines import assets
from pipelines.failures import MAX_ERROR_CHARS
from pipelines.preprocess import run
from pipelines.stages import video
from pipelines.stages.codec import decode_jpeg
from pipelines.storage import output
from schemas import media_sequence as ms
from tests.conftest import write_video

REPO = Path(__file__).resolve().parents[3]
FLAGS = ["--runner=DirectRunner", "--modalities=rgb", "--dataset_name=hostile"]
SAMPLE = "sports2d_demo.mp4"  # a real H.264 camera video, 1768x994 at 30 fps, index in front
NOT_READABLE = ("cannot open video", "not a readable video file")


# ---------------------------------------------------------------------------------------------
# MP4 box surgery: the inputs with lying headers.
# ---------------------------------------------------------------------------------------------
class _Mp4:
    """Edits the boxes of an MP4 as OpenCV writes it: ftyp, free, mdat, then moov (the index).

    Only boxes after mdat change size, so the chunk offsets (stco) stay valid.
    """

    CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf"}

    def __init__(self, data: bytes):
        self.data = data

    def boxes(self, start=0, end=None, path=()):
        """(path of box types, offset, size) of every box, depth first."""
        end = len(self.data) if end is None else end
        while start + 8 <= end:
            size, kind = struct.unpack(">I4s", self.data[start : start + 8])
            if size < 8:
                return
            yield path + (kind,), start, size
            if kind in self.CONTAINERS:
                yield from self.boxes(start + 8, start + size, path + (kind,))
            start += size

    def find(self, kind: bytes) -> tuple[tuple, int, int]:
        return next(b for b in self.boxes() if b[0][-1] == kind)

    def replace(self, kind: bytes, new: bytes) -> _Mp4:
        """The first `kind` box replaced by the whole box `new` (b"" removes it)."""
        path, off, size = self.find(kind)
        assert off > self.find(b"mdat")[1], "a box before mdat: chunk offsets would move"
        out = bytearray(self.data[:off] + new + self.data[off + size :])
        for p, o, s in self.boxes():
            if len(p) < len(path) and o < off < o + s:  # a parent: grows or shrinks with it
                struct.pack_into(">I", out, o, s + len(new) - size)
        return _Mp4(bytes(out))

    def with_sample_durations(self, durations: list[int]) -> _Mp4:
        """Frame i lasts durations[i] ticks of the track's time scale (stts); no edit list."""
        entries = b"".join(struct.pack(">II", 1, d) for d in durations)
        stts = struct.pack(">I4sII", 16 + len(entries), b"stts", 0, len(durations)) + entries
        return self.replace(b"stts", stts).replace(b"edts", b"")

    @property
    def timescale(self) -> int:
        _, off, _ = self.find(b"mdhd")
        return struct.unpack(">I", self.data[off + 20 : off + 24])[0]  # version 0

    def with_rotation(self, degrees: int) -> _Mp4:
        """Sets the track's display matrix (tkhd) to a rotation, as phones do."""
        _, off, _ = self.find(b"tkhd")
        c, s = round(math.cos(math.radians(degrees))), round(math.sin(math.radians(degrees)))
        fixed = [v * 0x10000 & 0xFFFFFFFF for v in (c, s, 0, -s, c, 0, 0, 0)] + [0x40000000]
        out = bytearray(self.data)
        struct.pack_into(">9I", out, off + 48, *fixed)  # version 0: the matrix is at byte 48
        return _Mp4(bytes(out))

    def with_handler(self, handler: bytes) -> _Mp4:
        """The track's handler type (hdlr), e.g. b"soun": an audio track."""
        _, off, _ = self.find(b"hdlr")
        out = bytearray(self.data)
        out[off + 16 : off + 20] = handler
        return _Mp4(bytes(out))

    def faststart(self) -> _Mp4:
        """The index (moov) moved in front of the media data, as web and camera files have it."""
        _, moov_off, moov_size = self.find(b"moov")
        _, mdat_off, _ = self.find(b"mdat")
        moov = _Mp4(self.data[moov_off : moov_off + moov_size])
        buf = bytearray(moov.data)
        for p, o, _ in moov.boxes():
            if p[-1] == b"stco":
                (n,) = struct.unpack(">I", buf[o + 12 : o + 16])
                for k in range(n):
                    (v,) = struct.unpack(">I", buf[o + 16 + 4 * k : o + 20 + 4 * k])
                    struct.pack_into(">I", buf, o + 16 + 4 * k, v + moov_size)
        d = self.data
        return _Mp4(d[:mdat_off] + bytes(buf) + d[mdat_off:moov_off] + d[moov_off + moov_size :])


def _noise_video(path, num_frames: int, fps: float, size=(64, 48)) -> str:
    """Frames of random pixels, so that most of the file is media data."""
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for _ in range(num_frames):
        writer.write(rng.integers(0, 256, (size[1], size[0], 3), np.uint8))
    writer.release()
    return str(path)


def _quadrant_video(path) -> str:
    """3 frames of 64x48, black with the top-left quadrant white: shows which way is up."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[:24, :32] = 255
    for _ in range(3):
        writer.write(frame)
    writer.release()
    return str(path)


def _avi_with_rate(path, scale: int, rate: int) -> str:
    """An MJPG AVI of 20 frames whose stream header declares the frame rate rate / scale."""
    write_video(path, 20, 10.0, fourcc="MJPG")
    data = bytearray(Path(path).read_bytes())
    strh = data.find(b"strh")
    struct.pack_into("<II", data, strh + 28, scale, rate)  # dwScale, dwRate
    avih = data.find(b"avih")
    struct.pack_into("<I", data, avih + 8, 0)  # microseconds per frame: unknown
    Path(path).write_bytes(bytes(data))
    return str(path)


# VFR: 20 frames lasting 1, 2, 3, 1, 2, 3, ... tenths of a second (the time scale is 10240/s).
VFR_TENTHS = [1 + i % 3 for i in range(20)]


# ---------------------------------------------------------------------------------------------
# The catalogue.
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Case:
    """One manifest row and what must become of it.

    Attributes:
      name: the row's media id (its `id` column, or its file stem when `use_id` is False).
      make: writes the input into (videos folder, outside folder); returns the manifest path.
      start, end: the row's window, as written in the manifest.
      frames: written: the frame count of each of its clips, in time order.
      size: written: (height, width) of the stored frames.
      stage: failed: the failure row's stage.
      words: failed: words its message must hold.
      xfail: a known bug: why the case fails today (see the module's report).
    """

    name: str
    make: Callable[[Path, Path], str]
    start: str = ""
    end: str = ""
    frames: tuple[int, ...] = ()
    size: tuple[int, int] = (256, 341)
    stage: str = ""
    words: tuple[str, ...] = ()
    xfail: str = ""
    use_id: bool = True


def _file(name: str, maker: Callable[[Path], object]) -> Callable[[Path, Path], str]:
    def make(videos: Path, outside: Path) -> str:
        maker(videos / name)
        return name

    return make


def _bytes(name: str, data: Callable[[Path], bytes]) -> Callable[[Path, Path], str]:
    return _file(name, lambda p: p.write_bytes(data(p.parent)))


def _good(folder: Path) -> bytes:
    """20 frames of 64x48 at 10 fps as OpenCV writes them (index at the end)."""
    path = folder / ".good-source.mp4"
    if not path.exists():
        write_video(path, 20, 10.0)
    return path.read_bytes()


def _noise(folder: Path) -> bytes:
    """50 noise frames at 25 fps, index at the end (~110 kB, the index ~1.3 kB of it)."""
    path = folder / ".noise-source.mp4"
    if not path.exists():
        _noise_video(path, 50, 25.0)
    return path.read_bytes()


def _sample() -> bytes:
    return assets.sample_video_path(SAMPLE).read_bytes()


def _cut(data: bytes, fraction: float) -> bytes:
    return data[: int(len(data) * fraction)]


def _png(_: Path) -> bytes:
    ok, buf = cv2.imencode(".png", np.full((48, 64, 3), 120, np.uint8))
    return buf.tobytes()


def _jpeg(_: Path) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((48, 64, 3), 120, np.uint8))
    return buf.tobytes()


def _wav(path: Path) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.zeros(8000, np.int16).tobytes())  # 1 s of silence


def _outside_relative(videos: Path, outside: Path) -> str:
    write_video(outside / "outside.mp4", 10, 10.0)
    return "../outside/outside.mp4"


def _outside_absolute(videos: Path, outside: Path) -> str:
    return write_video(outside / "elsewhere.mp4", 10, 10.0)


def _long_missing(videos: Path, outside: Path) -> str:
    return "/".join(["a-folder-that-is-not-there"] * 60) + "/missing.mp4"  # ~1.6 k characters


TRUNCATED_INDEX = "index (moov) lost with the end of the file: cannot open"
CATALOGUE: list[Case] = [
    # Good inputs, written.
    Case("good", _bytes("good.mp4", _good), frames=(50,)),
    Case("sample", _bytes("sample.mp4", lambda _: _sample()), "1", "1.4", frames=(10,),
         size=(256, 455)),
    Case("one_frame", _file("one_frame.mp4", lambda p: write_video(p, 1, 10.0)), frames=(3,)),
    # 16x16 and 8K are refused by the default caps (--min_frame_side 32, --max_frame_pixels 4K
    # UHD) before any frame is decoded; test_caps_lifted decodes both.
    Case("tiny", _file("tiny.mp4", lambda p: write_video(p, 5, 10.0, size=(16, 16))),
         stage="decode", words=("16x16 are smaller than 32 pixels", "--min_frame_side")),
    Case("huge_8k", _file("huge_8k.mp4", lambda p: write_video(p, 2, 10.0, size=(7680, 4320))),
         stage="decode",
         words=("7680x4320 = 33177600 pixels exceed the limit of 8294400", "--max_frame_pixels")),
    # Missing, empty, junk.
    Case("missing", lambda v, o: "missing.mp4", stage="fetch", words=("does not exist",)),
    Case("long_missing", _long_missing, stage="fetch", words=("does not exist",)),
    Case("directory", _file("directory.mp4", lambda p: p.mkdir()), stage="decode",
         words=NOT_READABLE),
    Case("zero_bytes", _bytes("zero_bytes.mp4", lambda _: b""), stage="decode",
         words=NOT_READABLE),
    Case("random_bytes", _bytes("random_bytes.mp4",
                                lambda _: np.random.default_rng(1).bytes(20_000)),
         stage="decode", words=NOT_READABLE),
    Case("text", _bytes("text.mp4", lambda _: b"path,label\nnot a video,at all\n" * 50),
         stage="decode", words=NOT_READABLE),
    Case("png", _bytes("png.mp4", _png), stage="decode", words=("image",)),
    Case("jpeg", _bytes("jpeg.mp4", _jpeg), stage="decode", words=("image",)),
    # Audio only: a WAV file renamed, and a real MP4 whose only track is an audio track.
    Case("wav", _file("wav.mp4", _wav), stage="decode", words=NOT_READABLE),
    Case("audio_track", _bytes("audio_track.mp4",
                               lambda f: _Mp4(_good(f)).with_handler(b"soun").data),
         stage="decode", words=NOT_READABLE),
    # Truncated, index at the end (OpenCV's layout): the index is gone, nothing opens.
    Case("cut_header", _bytes("cut_header.mp4", lambda f: _noise(f)[:48]), stage="decode",
         words=NOT_READABLE),
    *[Case(f"cut_{p}", _bytes(f"cut_{p}.mp4", lambda f, p=p: _cut(_noise(f), p / 100)),
           stage="decode", words=NOT_READABLE) for p in (10, 50, 90)],
    # Truncated, index in front (web downloads): the index survives, the frames stop early.
    Case("faststart", _bytes("faststart.mp4", lambda f: _Mp4(_noise(f)).faststart().data),
         frames=(50,)),
    *[Case(f"faststart_cut_{p}",
           _bytes(f"faststart_cut_{p}.mp4",
                  lambda f, p=p: _cut(_Mp4(_noise(f)).faststart().data, p / 100)),
           stage="decode", words=("truncated",)) for p in (10, 50, 90)],
    # The real camera video cut at 10 %: its first 1 s window crosses the cut (10 of 25 frames
    # are there); cut at 90 % the window is whole and the clip is right.
    Case("sample_cut_10", _bytes("sample_cut_10.mp4", lambda _: _cut(_sample(), 0.1)),
         "0", "1", stage="decode", words=("truncated",)),
    Case("sample_cut_90", _bytes("sample_cut_90.mp4", lambda _: _cut(_sample(), 0.9)),
         "0", "1", frames=(25,), size=(256, 455)),
    # Frame rates.
    Case("fps_1000", _file("fps_1000.mp4", lambda p: write_video(p, 100, 1000.0)), frames=(3,)),
    # stts: every frame lasts 1 tick of 1/10240 s: 20 frames in 2 ms, one output frame.
    Case("fps_absurd", _bytes("fps_absurd.mp4",
                              lambda f: _Mp4(_good(f)).with_sample_durations([1] * 20).data),
         frames=(1,)),
    # stts: every frame lasts 1000 s: 20000 s declared, refused before decoding.
    Case("fps_tiny", _bytes("fps_tiny.mp4",
                            lambda f: _Mp4(_good(f)).with_sample_durations([10240000] * 20).data),
         stage="decode",
         words=("window of 20000.0 s exceeds the limit of 600.0 s", "--max_duration_seconds")),
    # AVI header rate 0/1: FFmpeg falls back to 25 fps; the 20 frames are written one each.
    Case("fps_zero_avi", _file("fps_zero_avi.avi", lambda p: _avi_with_rate(p, 1, 0)),
         frames=(20,)),
    # AVI header rate 10^6 fps: 20 frames in 20 us, one output frame.
    Case("fps_absurd_avi", _file("fps_absurd_avi.avi", lambda p: _avi_with_rate(p, 1, 10**6)),
         frames=(1,)),
    # stts: every frame lasts 0 ticks. FFmpeg guesses 0.5 fps, so the 20 frames span 40 s,
    # cut at --max_clip_seconds 30 into 750 + 250 frames (each source frame shown for 2 s).
    Case("fps_zero_mp4", _bytes("fps_zero_mp4.mp4",
                                lambda f: _Mp4(_good(f)).with_sample_durations([0] * 20).data),
         frames=(750, 250)),
    # Variable frame rate: 20 frames lasting 0.1, 0.2, 0.3, 0.1, ... s (3.9 s).
    Case("vfr", _bytes("vfr.mp4", lambda f: _Mp4(_good(f)).with_sample_durations(
        [1024 * t for t in VFR_TENTHS]).data), frames=(98,)),
    # Rotation metadata (display matrix): stored upright, portrait.
    Case("rotated_90", _bytes("rotated_90.mp4", lambda f: _Mp4(
        Path(_quadrant_video(f / ".quadrant-source.mp4")).read_bytes()).with_rotation(90).data),
         frames=(8,), size=(341, 256)),
    # Windows.
    Case("window_past_end", _bytes("window_past_end.mp4", _good), "5", "6", stage="decode",
         words=("window [5.000s, 6.000s) holds no frame", "20 frames, about 2.000s")),
    Case("window_across_end", _bytes("window_across_end.mp4", _good), "1.5", "10",
         frames=(13,)),
    Case("window_zero", _bytes("window_zero.mp4", _good), "1", "1", stage="manifest",
         words=("window start=1.0s end=1.0s is empty or reversed",)),
    # Paths.
    Case("vidéo clip 1", _bytes("vidéo clip 1.mp4", _good), frames=(50,), use_id=False),
    Case("日本", _bytes("日本.mp4", _good), frames=(50,), use_id=False),
    Case("outside_relative", _outside_relative, stage="manifest", words=("--video_root",)),
    Case("outside_absolute", _outside_absolute, stage="manifest", words=("--video_root",)),
]  # fmt: skip
BY_NAME = {c.name: c for c in CATALOGUE}
assert len(BY_NAME) == len(CATALOGUE)


# ---------------------------------------------------------------------------------------------
# One run over the catalogue.
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(repr=False)  # the records' repr takes seconds in every traceback
class Result:
    info: dict
    failures: list[dict]  # the failures file's rows
    records: dict[str, list[tf.train.SequenceExample]]  # media id -> its clips in time order
    before: dict[str, tuple]  # files outside output_dir before the run
    after: dict[str, tuple]
    out: Path
    stdout: str = ""

    def __repr__(self) -> str:
        return f"Result({self.out}: {self.info['inputs']})"


def _tree(root: Path, skip: Path) -> dict[str, tuple]:
    """(size, mtime) of every file and folder under root, except under `skip`."""
    tree = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == skip or skip in Path(dirpath).parents:
            continue
        for name in dirnames + filenames:
            if Path(dirpath, name) == skip:
                continue
            st = os.lstat(os.path.join(dirpath, name))
            tree[os.path.relpath(os.path.join(dirpath, name), root)] = (
                st.st_size if name in filenames else 0,
                st.st_mtime_ns if name in filenames else 0,
            )
    return tree


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, assets_ready) -> tuple[Path, str]:
    """Writes every input and the manifest once; returns (root, manifest path)."""
    root = tmp_path_factory.mktemp("hostile")
    videos, outside = root / "videos", root / "outside"
    videos.mkdir()
    outside.mkdir()
    rows = []
    for case in CATALOGUE:
        path = case.make(videos, outside)
        rows.append([path, "walk", case.start, case.end, case.name if case.use_id else ""])
    for source in videos.glob(".*-source.mp4"):
        source.unlink()  # the files edited into cases, not inputs themselves
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["path", "label", "start", "end", "id"], *rows])
    return root, str(manifest)


def _read(out: Path) -> tuple[dict, list[dict], dict]:
    info = output.read_json(str(out / "dataset_info.json"))
    failures = []
    for path in output.list_files(str(out / "failures" / "*.jsonl")):
        failures += [json.loads(line) for line in open(path, encoding="utf-8")]
    records: dict[str, list] = {}
    for split in info["splits"].values():
        for shard in split["shards"]:
            for data in output.read_tfrecords(str(out / shard)):
                ex = tf.train.SequenceExample.FromString(data)
                media = ex.context.feature[ms.CLIP_MEDIA_ID_KEY].bytes_list.value[0].decode()
                records.setdefault(media, []).append(ex)
    for clips in records.values():
        clips.sort(key=lambda e: e.context.feature[ms.CLIP_START_TIMESTAMP_KEY].int64_list.value[0])
    return info, failures, records


def _scratch(root: Path, name: str) -> Path:
    """An empty folder for the job's temporary files (TMPDIR), to see what is left in it."""
    tmp = root / name
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


@pytest.fixture(scope="module")
def job(inputs) -> Result:
    root, manifest = inputs
    out = root / "out"
    tmp = _scratch(root, "tmp")
    before = _tree(root, out)
    with pytest.MonkeyPatch.context() as mp:
        import tempfile

        mp.setenv("TMPDIR", str(tmp))
        mp.setattr(tempfile, "tempdir", str(tmp))
        run([f"--input={manifest}", f"--video_root={root / 'videos'}", f"--output_dir={out}",
             *FLAGS])  # fmt: skip
    return Result(*_read(out), before=before, after=_tree(root, out), out=out)


@pytest.fixture(scope="module")
def cli(inputs) -> Result:
    """The same catalogue through `python -m pipelines.preprocess`, in its own process."""
    root, manifest = inputs
    out = root / "cli-out"
    tmp = _scratch(root, "cli-tmp")
    before = _tree(root, out)
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.preprocess", f"--input={manifest}",
         f"--video_root={root / 'videos'}", f"--output_dir={out}", *FLAGS],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = Result(*_read(out), before=before, after=_tree(root, out), out=out)
    result.stdout = proc.stdout + "\n---stderr---\n" + proc.stderr
    return result


def _failure_of(result: Result, case: Case) -> list[dict]:
    """The failure rows of a case: a manifest row's failure id is its `id`; a processed row's
    is its clip id, `<media id>_<start us>`."""
    start = int(round(float(case.start or 0) * 1e6))
    ids = {case.name, f"{case.name}_{start}"}
    return [f for f in result.failures if f["id"] in ids]


def _check_case(result: Result, case: Case) -> None:
    failures = _failure_of(result, case)
    clips = result.records.get(case.name, [])
    if case.stage:
        assert not clips, f"{case.name}: expected a failure row, got {len(clips)} clip(s)"
        assert len(failures) == 1, failures
        (failure,) = failures
        assert failure["stage"] == case.stage, failure
        for word in case.words:
            assert word in failure["error"], failure
        assert len(failure["error"]) <= MAX_ERROR_CHARS
        return
    assert not failures, failures
    assert tuple(_num_frames(c) for c in clips) == case.frames
    for clip in clips:
        ctx = clip.context.feature
        size = (ctx[ms.IMAGE_HEIGHT].int64_list.value[0], ctx[ms.IMAGE_WIDTH].int64_list.value[0])
        assert size == case.size
        first = decode_jpeg(clip.feature_lists.feature_list[ms.IMAGE_ENCODED].feature[0]
                            .bytes_list.value[0])  # fmt: skip
        assert first.shape[:2] == case.size
        stamps = _timestamps(clip)
        assert stamps == list(range(stamps[0], stamps[0] + 40_000 * len(stamps), 40_000))


def _num_frames(clip) -> int:
    return len(clip.feature_lists.feature_list[ms.IMAGE_ENCODED].feature)


def _timestamps(clip) -> list[int]:
    return [f.int64_list.value[0] for f in clip.feature_lists.feature_list[ms.IMAGE_TIMESTAMP]
            .feature]  # fmt: skip


def _params():
    for case in CATALOGUE:
        marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
        yield pytest.param(case, id=case.name.encode("ascii", "backslashreplace").decode(),
                           marks=marks)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("case", _params())
def test_case(job, case):
    _check_case(job, case)


def test_every_input_is_written_or_failed_once(job):
    _accounts(job)


def _accounts(result: Result) -> None:
    n = len(CATALOGUE)
    inputs = result.info["inputs"]
    assert inputs["rows"] == n
    assert inputs["written"] + inputs["failed"] == n
    assert len(result.failures) == inputs["failed"]
    assert sum(inputs["failed_by_stage"].values()) == inputs["failed"]
    by_stage: dict[str, int] = {}
    for f in result.failures:
        by_stage[f["stage"]] = by_stage.get(f["stage"], 0) + 1
    assert by_stage == inputs["failed_by_stage"]
    # Every row is in exactly one of: the records (by media id), the failure rows.
    owners = [c.name for c in CATALOGUE for _ in _failure_of(result, c)]
    assert sorted(owners) == sorted(set(owners)) and len(owners) == len(result.failures)
    written = {c.name for c in CATALOGUE if c.name in result.records}
    assert written.isdisjoint(owners) and len(written) == inputs["written"]
    assert written | set(owners) == set(BY_NAME)
    split = result.info["splits"]["train"]
    clips = [c for name in written for c in result.records[name]]
    assert split["clips"] == len(clips)
    assert split["frames"] == sum(_num_frames(c) for c in clips)
    ids = [c.context.feature[ms.EXAMPLE_ID_KEY].bytes_list.value[0] for c in clips]
    assert len(set(ids)) == len(ids)


def test_nothing_left_behind_or_written_elsewhere(job):
    _confined(job, "tmp")


def _confined(result: Result, scratch: str) -> None:
    assert result.after == result.before  # the inputs untouched, nothing new beside them
    assert not any((result.out.parent / scratch).iterdir())  # no temp copy, nothing left
    leftovers = [
        os.path.relpath(os.path.join(d, n), result.out)
        for d, dirs, files in os.walk(result.out)
        for n in dirs + files
        if n.endswith(".tmp") or n.startswith("beam-temp") or n.startswith("perfnet-")
    ]
    assert not leftovers
    assert not list((result.out / ".staging").glob("*"))  # the staged rows are removed
    top = sorted(p.name for p in result.out.iterdir())
    assert top == [".parts", ".staging", "dataset_info.json", "failures", "train"]


def test_rotation_is_applied(job):
    """The stored frame is the source turned 90 degrees clockwise: the white top-left quadrant
    of the 64x48 source is the top-right quadrant of the 256x341 (w x h) stored frame."""
    (clip,) = job.records["rotated_90"]
    encoded = clip.feature_lists.feature_list[ms.IMAGE_ENCODED].feature[0].bytes_list.value[0]
    white = decode_jpeg(encoded)[..., 0] > 128
    h, w = white.shape
    assert white[: h // 2 - 8, w // 2 + 8 :].all()  # top right
    assert not white[h // 2 + 8 :].any() and not white[:, : w // 2 - 8].any()


def test_variable_frame_rate_follows_the_timestamps(job):
    """Each 25 fps output frame shows the source frame on screen at its time: frame i starts at
    the sum of the earlier frames' durations (0.1, 0.2 or 0.3 s)."""
    (clip,) = job.records["vfr"]
    starts = np.cumsum([0] + VFR_TENTHS[:-1]) * 100_000
    for t, feature in zip(
        _timestamps(clip), clip.feature_lists.feature_list[ms.IMAGE_ENCODED].feature
    ):
        shown = int(np.searchsorted(starts, t, side="right")) - 1
        level = decode_jpeg(feature.bytes_list.value[0]).mean()  # frame i is gray 10 * i
        assert round(level / 10) == shown, (t, shown, level)
    assert _timestamps(clip)[-1] >= starts[-1]  # the last frame is shown too


def test_error_excerpt_is_bounded(job):
    (failure,) = _failure_of(job, BY_NAME["long_missing"])
    assert len(failure["error"]) == MAX_ERROR_CHARS  # of a ~1700-character message


# ---------------------------------------------------------------------------------------------
# The command line.
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_command_line(cli, job):
    """Exit 0, the summary table, the failures listed; the same outcome as the in-process run."""
    inputs = cli.info["inputs"]
    summary = (
        f"inputs: {inputs['rows']} rows, {inputs['written']} written, {inputs['failed']} failed "
        f"{inputs['failed_by_stage']}"
    )
    assert summary in cli.stdout
    assert f"failures: {cli.out}/failures/failures-*.jsonl" in cli.stdout
    assert "split" in cli.stdout and "persons/frame" in cli.stdout
    train = cli.info["splits"]["train"]
    assert f"{'train':<12}{train['clips']:>7}{train['frames']:>9}" in cli.stdout
    manifest = [f for f in cli.failures if f["stage"] == "manifest"]
    assert f"{len(CATALOGUE)} rows ({len(manifest)} bad in the manifest)" in cli.stdout
    for failure in cli.failures:  # each processed row's failure is logged with its reason
        if failure["stage"] != "manifest":
            assert f"at {failure['stage']}: {failure['error'][:80]}" in cli.stdout, failure
    _accounts(cli)
    _confined(cli, "cli-tmp")
    assert cli.info["inputs"] == job.info["inputs"]
    by_id = lambda rows: sorted(rows, key=lambda f: f["id"])  # noqa: E731
    assert by_id(cli.failures) == by_id(job.failures)
    for name, clips in job.records.items():
        assert [c.SerializeToString(deterministic=True) for c in cli.records[name]] == [
            c.SerializeToString(deterministic=True) for c in clips
        ]


# ---------------------------------------------------------------------------------------------
# The same inputs from gs://: each is copied to a temporary file, which must go in every case.
# ---------------------------------------------------------------------------------------------
GS_CASES = ["good", "日本", "missing", "zero_bytes", "random_bytes", "cut_50", "fps_tiny",
            "window_past_end", "rotated_90"]  # fmt: skip


def test_gs_inputs_leave_no_temporary_copies(inputs, gcs_emulator):
    from tests.conftest import GCS_BUCKET

    root, manifest = inputs
    bucket = f"gs://{GCS_BUCKET}/hostile"
    rows = []
    with open(manifest, encoding="utf-8") as f:
        for row in csv.DictReader(f):
            name = row["id"] or Path(row["path"]).stem
            if name not in GS_CASES:
                continue
            local = root / "videos" / row["path"]
            if local.exists():
                with (
                    open(local, "rb") as src,
                    output.FileSystems.create(f"{bucket}/videos/{row['path']}") as dst,
                ):
                    dst.write(src.read())
            rows.append([row["path"], "walk", row["start"], row["end"], row["id"]])
    assert len(rows) == len(GS_CASES)
    gs_manifest = root / "gs-manifest.csv"
    with open(gs_manifest, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["path", "label", "start", "end", "id"], *rows])
    out, tmp = root / "gs-out", _scratch(root, "gs-tmp")
    with pytest.MonkeyPatch.context() as mp:
        import tempfile

        mp.setenv("TMPDIR", str(tmp))
        mp.setattr(tempfile, "tempdir", str(tmp))
        run([f"--input={gs_manifest}", f"--video_root={bucket}/videos", f"--output_dir={out}",
             *FLAGS])  # fmt: skip
    result = Result(*_read(out), before={}, after={}, out=out)
    for name in GS_CASES:
        _check_case(result, BY_NAME[name])
    assert result.info["inputs"]["rows"] == len(GS_CASES)
    assert not any(tmp.iterdir())  # every temporary copy removed, good input or bad


# ---------------------------------------------------------------------------------------------
# Caps lifted: 16x16 and 8K decode, in bounded memory and time.
# ---------------------------------------------------------------------------------------------
CAPS_LIFTED = """
def peak_bytes():
    # VmHWM belongs to this process's own address space; getrusage's ru_maxrss would carry the
    # peak of the (large) test process that spawned it across exec.
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))

import json, sys, time
from pipelines.stages import video
t = time.monotonic()
frames = list(video.iter_frames(sys.argv[1], short_side=256, pose_short_side=384,
                                limits=video.Limits(max_frame_pixels=0, min_frame_side=1)))
print(json.dumps({"frames": len(frames), "stored": frames[0].rgb.shape,
                  "pose": frames[0].pose_rgb.shape, "seconds": time.monotonic() - t,
                  "peak_bytes": peak_bytes()}))
"""


@pytest.mark.parametrize(
    "name, frames, stored, pose",
    [("tiny", 13, [256, 256, 3], [16, 16, 3]), ("huge_8k", 5, [256, 455, 3], [384, 683, 3])],
)
def test_caps_lifted(inputs, name, frames, stored, pose):
    """With --max_frame_pixels 0 and --min_frame_side 1 the 16x16 video is upscaled (the pose
    frames never are) and two 8K frames (100 MB each decoded) pass in well under 1.5 GB."""
    root, _ = inputs
    proc = subprocess.run(
        [sys.executable, "-c", CAPS_LIFTED, str(root / "videos" / f"{name}.mp4")],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (got["frames"], got["stored"], got["pose"]) == (frames, stored, pose)
    assert got["seconds"] < 60
    assert got["peak_bytes"] < 1.5 * 2**30


# ---------------------------------------------------------------------------------------------
# Timestamps past what the container declares (found by fuzz/fuzz_decode.py).
# ---------------------------------------------------------------------------------------------
def _stretched_mkv(path) -> str:
    """20 MJPG frames in Matroska with a TimecodeScale of 16.7 ms per tick (frames 1.68 s
    apart) and the Duration zeroed, so the container declares no duration (frame count 0)."""
    write_video(path, 20, 10.0, fourcc="MJPG")
    data = bytearray(Path(path).read_bytes())
    scale = data.find(bytes.fromhex("2ad7b183"))  # TimecodeScale, 3 bytes (1000000 ns)
    duration = data.find(bytes.fromhex("448988"))  # Duration, an 8-byte float
    assert scale > 0 and duration > 0
    data[scale + 4 : scale + 7] = (2**24 - 1).to_bytes(3, "big")
    data[duration + 3 : duration + 11] = bytes(8)
    Path(path).write_bytes(bytes(data))
    return str(path)


def test_timestamps_past_the_duration_cap_are_refused(tmp_path):
    path = _stretched_mkv(tmp_path / "stretched.mkv")
    assert video.probe(path).frame_count == 0  # no declared duration: check_info cannot tell
    limits = video.Limits(max_duration_us=10 * ms.MICROS)
    frames = 0
    with pytest.raises(video.LimitError, match="--max_duration_seconds"):
        for _ in video.iter_frames(path, limits=limits):
            frames += 1
    assert frames <= 250  # nothing past 10 s at 25 fps


# ---------------------------------------------------------------------------------------------
# Safety: nothing the project runs on inputs can execute code from them.
# ---------------------------------------------------------------------------------------------
UNSAFE = {
    ("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("cloudpickle", "load"),
    ("cloudpickle", "loads"), ("dill", "load"), ("dill", "loads"), ("joblib", "load"),
    ("marshal", "load"), ("marshal", "loads"), ("shelve", "open"), ("yaml", "load"),
    ("yaml", "unsafe_load"), ("torch", "load"),
}  # fmt: skip


def test_no_code_loads_pickles():
    """No module of the package deserializes with pickle-like loaders (the MMAction2 export
    writes a pickle, nothing reads one), and numpy never loads with allow_pickle."""
    found = []
    for package in ("pipelines", "schemas", "render", "flow", "training"):
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                    if (node.value.id, node.attr) in UNSAFE:
                        found.append(f"{where}: {node.value.id}.{node.attr}")
                if isinstance(node, ast.ImportFrom) and node.module:
                    found += [f"{where}: from {node.module} import {a.name}" for a in node.names
                              if (node.module.split(".")[0], a.name) in UNSAFE]  # fmt: skip
                if isinstance(node, ast.keyword) and node.arg == "allow_pickle":
                    found.append(f"{where}: allow_pickle")
    assert found == []
