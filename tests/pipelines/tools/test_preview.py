"""Flow colors (exact), contact and variant sheets of synthetic records, the preview command."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from flow.tvl1 import dequantize_flow, quantize_flow
from flow.visualize import COLOR_WHEEL, color_wheel, flow_to_color
from pipelines.stages.codec import decode_jpeg, encode_jpeg
from pipelines.storage import output
from pipelines.tools import preview
from render import TABLE2_VARIANTS, VARIANTS, render_poses
from schemas import layout
from schemas import media_sequence as ms

H, W = 120, 160
# Flow of step t (uniform, pixels): right, down, left, up, none.
FLOWS = [(4.0, 0.0), (0.0, 4.0), (-4.0, 0.0), (0.0, -4.0), (0.0, 0.0)]
PERSONS = [1, 2, 2, 1, 0, 1]  # persons per frame; frame 1 is the first with the most


def _color(dx, dy, max_magnitude=1.0):
    return tuple(flow_to_color(np.array([[[dx, dy]]]), max_magnitude)[0, 0].tolist())


# ---------------------------------------------------------------------------------------------
# flow_to_color and the wheel.
# ---------------------------------------------------------------------------------------------
def test_axis_aligned_flow_colors_are_exact():
    assert _color(1, 0) == (255, 0, 0)  # right: red
    assert _color(0, 1) == (255, 233, 0)  # down: orange-yellow, hue 13.75 of 55
    assert _color(-1, 0) == (0, 197, 255)  # left: azure, hue 27.5
    assert _color(0, -1) == (102, 0, 255)  # up: violet, hue 41.25
    # No seam at +x: a tiny upward component stays red, not the last hue (255, 0, 43).
    assert _color(0.9, -1e-6) == (255, 25, 25)
    assert _color(np.cos(0.01), -np.sin(0.01)) == (255, 0, 3)  # 0.0875 hue from red
    assert _color(5, 0, max_magnitude=5.0) == (255, 0, 0)  # scale invariance
    assert _color(0, -20, max_magnitude=20.0) == (102, 0, 255)


def test_magnitude_zero_saturation_and_unknown():
    assert _color(0, 0) == (255, 255, 255)  # zero flow: white
    assert _color(0.5, 0) == (255, 127, 127)  # half way to the rim: floor(255 - 0.5 * 255)
    assert _color(2, 0) == (191, 0, 0)  # past the rim: 75 % of the hue
    assert _color(np.nan, 0) == (0, 0, 0) and _color(0, np.inf) == (0, 0, 0)  # unknown: black
    diag = _color(np.sqrt(0.5), np.sqrt(0.5))  # down-right, hue 6.875: between red and yellow
    assert diag[0] == 255 and 100 < diag[1] < 130 and diag[2] == 0


def test_color_wheel_table_and_shapes():
    assert COLOR_WHEEL.shape == (55, 3) and COLOR_WHEEL.dtype == np.uint8
    assert COLOR_WHEEL[[0, 15, 21, 25, 36, 49]].tolist() == [
        [255, 0, 0],
        [255, 255, 0],
        [0, 255, 0],
        [0, 255, 255],
        [0, 0, 255],
        [255, 0, 255],
    ]
    out = flow_to_color(np.zeros((3, 5, 2), np.float32), 1.0)
    assert out.shape == (3, 5, 3) and out.dtype == np.uint8
    legend = color_wheel(40, 5.0, background=(10, 20, 30))
    assert legend.shape == (40, 40, 3)
    assert legend[0, 0].tolist() == [10, 20, 30]  # corner: background
    assert legend[20, 20].min() > 230  # centre: nearly zero flow, white
    assert legend[20, 38].tolist() == list(_color(4.625, 0.125, 5.0))  # right: red, inside
    with pytest.raises(ValueError, match="max_magnitude=0"):
        flow_to_color(np.zeros((1, 1, 2)), 0)
    with pytest.raises(ValueError, match=r"flow.shape=\(2, 2\)"):
        flow_to_color(np.zeros((2, 2)), 1.0)
    with pytest.raises(ValueError, match="diameter=4"):
        color_wheel(4)


# ---------------------------------------------------------------------------------------------
# Synthetic records.
# ---------------------------------------------------------------------------------------------
def _person(rng, cx):
    """A standing person around x = cx: COCO-17 keypoints [17, 2], scores [17], box [4]."""
    y = np.array([0.2, 0.18, 0.18, 0.19, 0.19, 0.3, 0.3, 0.45, 0.45, 0.58, 0.58] + [0.6] * 2)
    y = np.concatenate([y, [0.75, 0.75, 0.9, 0.9]])
    dx = np.array([0, 0.01, -0.01, 0.02, -0.02, 0.06, -0.06, 0.08, -0.08, 0.09, -0.09])
    dx = np.concatenate([dx, [0.04, -0.04, 0.05, -0.05, 0.05, -0.05]])
    kp = np.stack([cx + dx + rng.uniform(-0.005, 0.005, 17), y], axis=-1)
    box = np.array([0.15, cx - 0.12, 0.95, cx + 0.12])
    return kp, np.full(17, 0.9), box


def synthetic_record(example_id="clip_0", seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    streams = {m: ms.StreamInfo(H, W) for m in ms.DEFAULT_MODALITIES}
    builder = ms.SequenceExampleBuilder(
        ms.ClipContext(example_id, "synthetic", "/v.mp4", "v", 0, 240_000, 3, "wave"), streams
    )
    yy, xx = np.mgrid[0:H, 0:W]
    for t, n in enumerate(PERSONS):
        rgb = np.stack([xx * 255 // W, yy * 255 // H, np.full_like(xx, 40 * t)], -1)
        rgb = rgb.astype(np.uint8)
        people = [_person(rng, 0.3 + 0.4 * p) for p in range(n)]
        kp = np.array([p[0] for p in people]).reshape(n, 17, 2)
        sc = np.array([p[1] for p in people]).reshape(n, 17)
        boxes = np.array([p[2] for p in people]).reshape(n, 4)
        builder.add_frame(
            40_000 * t,
            rgb_jpeg=encode_jpeg(rgb, 95),
            pose_jpeg=encode_jpeg(render_poses(rgb, kp, sc, boxes), 95),
            keypoints=kp,
            keypoint_scores=sc,
            boxes=boxes,
            box_scores=np.full(n, 0.8),
            track_ids=np.arange(n),
        )
        if t < len(FLOWS):
            flow = np.broadcast_to(np.array(FLOWS[t], np.float32), (H, W, 2))
            builder.add_flow(40_000 * t, encode_jpeg(quantize_flow(flow), 100, full_chroma=True))
    return builder.serialize()


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("preview")
    splits = {}
    for split, ids in (("train", ["clip_0", "clip_1"]), ("validation", ["clip_2"])):
        (root / split).mkdir()
        shard = layout.shard_path(split, "synthetic", 0, 1)
        output.write_tfrecords(str(root / shard), [synthetic_record(i) for i in ids])
        splits[split] = {"clips": len(ids), "num_shards": 1, "shards": [shard]}
    info = {
        "schema_version": ms.SCHEMA_VERSION,
        "modalities": list(ms.DEFAULT_MODALITIES),
        "splits": splits,
    }
    (root / layout.DATASET_INFO).write_text(json.dumps(info))
    return str(root)


# ---------------------------------------------------------------------------------------------
# Sheets.
# ---------------------------------------------------------------------------------------------
def test_find_record_by_id_and_index(out_dir):
    split, ex = preview.find_record(out_dir, example_id="clip_2")
    assert split == "validation"
    assert ex.context.feature[ms.EXAMPLE_ID_KEY].bytes_list.value[0] == b"clip_2"
    assert preview.find_record(out_dir, index=1)[1].context.feature[
        ms.EXAMPLE_ID_KEY
    ].bytes_list.value[0] == (b"clip_1")
    split, _ = preview.find_record(out_dir, index=0, split="validation")
    assert split == "validation"
    with pytest.raises(ValueError, match=rf"example id 'nope': not found in {out_dir}"):
        preview.find_record(out_dir, example_id="nope")
    with pytest.raises(ValueError, match=rf"index=3: out of range, {out_dir} holds 3 records"):
        preview.find_record(out_dir, index=3)
    with pytest.raises(ValueError, match=r"index=1: out of range, .*'validation'.* holds 1"):
        preview.find_record(out_dir, index=1, split="validation")


def test_contact_sheet_layout_and_flow_colors(out_dir):
    _, ex = preview.find_record(out_dir, index=0)
    sheet = preview.contact_sheet(ex, "train", num_frames=6, thumb_height=96, flow_max=5.0)
    # 6 frames, 5 flows: columns sample frames 0..4 so that each has its flow t -> t + 1.
    assert sheet.facts["frames"] == [0, 1, 2, 3, 4]
    assert sheet.facts["timestamps_us"] == [0, 40_000, 80_000, 120_000, 160_000]
    assert sheet.facts["rows"] == ["rgb", "pose", "flow"]
    names = [t.name for t in sheet.tiles]
    assert names == [f"{r}/{c}" for r in ("rgb", "pose", "flow") for c in range(5)] + ["legend"]
    img = sheet.image
    for tile in sheet.tiles[:-1]:
        assert (tile.height, tile.width) == (96, 128)  # 160 x 120 at 96 px tall
        assert tile.y + tile.height <= img.shape[0] and tile.x + tile.width <= img.shape[1]
    assert img.shape[0] < 96 * 3 + 150 and img.shape[1] < 5 * 140 + 200
    # The colors of the stored flow: quantized, so 0 reads back as -0.08 px.
    stored = [dequantize_flow(quantize_flow(np.array([[v]], np.float32)))[0, 0] for v in FLOWS]
    want = [_color(*v, 5.0) for v in stored]
    assert want[0] == (255, 50, 56) and min(want[4]) >= 245  # 0.08 px up: a touch of rose
    for c, color in enumerate(want):
        got = sheet.tiles[10 + c].crop(img)[20:-20, 20:-20].reshape(-1, 3).astype(int)
        assert np.abs(got - color).max() <= 8, (c, got.mean(0), color)
    rgb = sheet.tiles[0].crop(img).astype(int)
    assert abs(rgb[:, -1, 0].mean() - 255) < 20 and rgb[:, 0, 0].mean() < 20  # x gradient in R
    assert sheet.tiles[-1].height >= 16  # the wheel legend


def test_contact_sheet_marks_the_pose_tile_of_a_frame_without_people(out_dir):
    _, ex = preview.find_record(out_dir, index=0)
    sheet = preview.contact_sheet(ex, "train", num_frames=6, thumb_height=96, flow_max=5.0)
    assert sheet.facts["persons"] == PERSONS[:5] == [1, 2, 2, 1, 0]
    assert sheet.facts["no_person"] == [4]
    img = sheet.image
    tiles = {t.name: t for t in sheet.tiles}
    pose_jpegs = ex.feature_lists.feature_list["POSE_RENDERED/image/encoded"].feature
    red, gray = list(preview.NO_PERSON), list(preview.TILE_BORDER)
    for c in range(5):
        tile = tiles[f"pose/{c}"]
        thumb = preview._thumb(decode_jpeg(pose_jpegs[c].bytes_list.value[0]), 96, 128)
        if c == 4:  # frame 4: nobody; a 3 px red frame and a red label strip at the top left
            for d in (1, 2, 3):
                assert img[tile.y - d, tile.x + 40].tolist() == red
                assert img[tile.y + 40, tile.x - d].tolist() == red
                assert img[tile.y + 40, tile.x + tile.width - 1 + d].tolist() == red
                assert img[tile.y + tile.height - 1 + d, tile.x + 40].tolist() == red
            assert img[tile.y - 4, tile.x + 40].tolist() == list(preview.BACKGROUND)
            assert img[tile.y + 1, tile.x + 1].tolist() == red
            assert img[tile.y + 15, tile.x + 1].tolist() == red
            label = tile.crop(img)[:16]
            assert (label == [255, 255, 255]).all(axis=-1).any()  # the white text
            # Below the strip the tile is the thumbnail, untouched.
            np.testing.assert_array_equal(tile.crop(img)[16:], thumb[16:])
        else:  # a gray 1 px frame and the thumbnail itself
            assert img[tile.y - 1, tile.x + 40].tolist() == gray
            assert img[tile.y - 2, tile.x + 40].tolist() == list(preview.BACKGROUND)
            np.testing.assert_array_equal(tile.crop(img), thumb)
    # Only the pose row is marked: the RGB and flow tiles of frame 4 keep their gray frames.
    for name in ("rgb/4", "flow/4"):
        tile = tiles[name]
        assert img[tile.y - 1, tile.x + 40].tolist() == gray
        assert img[tile.y - 2, tile.x + 40].tolist() == list(preview.BACKGROUND)
    assert not (tiles["rgb/4"].crop(img) == red).all(axis=-1).any()


def test_contact_sheet_auto_scale_and_fewer_columns(out_dir):
    _, ex = preview.find_record(out_dir, example_id="clip_1")
    sheet = preview.contact_sheet(ex, num_frames=3, thumb_height=64)
    assert sheet.facts["frames"] == [0, 2, 4]
    assert sheet.facts["flow_max"] == 5.0  # 4 px rounded up to the next scale
    with pytest.raises(ValueError, match="thumb_height=10"):
        preview.contact_sheet(ex, thumb_height=10)
    with pytest.raises(ValueError, match="num_frames=0"):
        preview.contact_sheet(ex, num_frames=0)


def test_variant_sheet_has_one_tile_per_variant(out_dir):
    _, ex = preview.find_record(out_dir, index=0)
    sheet = preview.variant_sheet(ex, "train", thumb_height=100)
    assert [t.name for t in sheet.tiles] == list(VARIANTS) and len(sheet.tiles) == 16
    assert sheet.facts["frame"] == 1 and sheet.facts["persons"] == 2
    assert sheet.facts["table2"] == {n: i + 1 for i, n in enumerate(TABLE2_VARIANTS)}
    boxes = {(t.y, t.x) for t in sheet.tiles}
    assert len(boxes) == 16  # distinct places
    # Each tile is the stored RGB frame re-rendered from the stored keypoints, cropped, shrunk.
    frame = decode_jpeg(
        ex.feature_lists.feature_list["image/encoded"].feature[1].bytes_list.value[0]
    )
    clip = preview.export.clip_poses(ex)
    y0, x0, y1, x1 = sheet.facts["crop"]
    for tile in sheet.tiles:
        r = render_poses(
            frame, clip.keypoints[1], clip.scores[1], clip.boxes[1], VARIANTS[tile.name]
        )
        want = cv2.resize(r[y0:y1, x0:x1], (tile.width, tile.height), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(tile.crop(sheet.image), want)
    black = sheet.tiles[list(VARIANTS).index("black_bars_fine_ratio")].crop(sheet.image)
    assert (black.max(axis=-1) == 0).mean() > 0.5 and black.max() > 200  # skeletons on black
    # Table 2 tiles are framed in orange (3 px), the others in gray (1 px).
    t2 = sheet.tiles[list(VARIANTS).index(TABLE2_VARIANTS[0])]
    assert sheet.image[t2.y - 2, t2.x + 5].tolist() == list(preview.TABLE2_BORDER)
    other = sheet.tiles[list(VARIANTS).index("black_bars_coarse_ratio")]
    assert sheet.image[other.y - 1, other.x + 5].tolist() == list(preview.TILE_BORDER)
    full = preview.variant_sheet(ex, thumb_height=100, full_frame=True)
    assert full.facts["crop"] == (0, 0, H, W)
    assert (full.tiles[0].height, full.tiles[0].width) == (100, 133)


def test_preview_command_writes_small_pngs(out_dir, tmp_path, capsys):
    dest = tmp_path / "sheets"
    assert preview.main([out_dir, "--id", "clip_1", "--out", str(dest)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(dest / "clip_1_sheet.png"), str(dest / "clip_1_variants.png")]
    for path in printed:
        img = cv2.imread(path)
        assert img is not None and img.shape[0] > 300
        assert len(open(path, "rb").read()) < 1_500_000
    sheet = cv2.imread(printed[0])
    assert (
        sheet.shape[0]
        == preview.contact_sheet(
            preview.find_record(out_dir, example_id="clip_1")[1], "train"
        ).image.shape[0]
    )
    assert preview.main([out_dir, "--index", "7", "--out", str(dest)]) == 2
    err = capsys.readouterr().err
    assert "index=7" in err and out_dir in err


def test_sheets_shrink_to_fit_the_byte_budget(out_dir):
    _, ex = preview.find_record(out_dir, index=0)
    big, _ = preview._small_png(lambda h: preview.contact_sheet(ex, thumb_height=h), 180, 10**9)
    png, sheet = preview._small_png(
        lambda h: preview.contact_sheet(ex, thumb_height=h), 180, len(big) // 2
    )
    assert len(png) <= len(big) // 2 and sheet.facts["thumb_height"] < 180


def test_rgb_only_record_gets_a_contact_sheet_only(tmp_path):
    builder = ms.SequenceExampleBuilder(
        ms.ClipContext("rgb_0", "synthetic", "/v.mp4", "v", 0, 80_000, 0, "x"),
        {ms.MODALITY_RGB: ms.StreamInfo(H, W)},
    )
    for t in range(2):
        builder.add_frame(40_000 * t, rgb_jpeg=encode_jpeg(np.full((H, W, 3), 99, np.uint8), 90))
    (tmp_path / "train").mkdir()
    output.write_tfrecords(str(tmp_path / "train/s-00000-of-00001.tfrecord"), [builder.serialize()])
    info = {
        "schema_version": ms.SCHEMA_VERSION,
        "modalities": ["rgb"],
        "splits": {"train": {"shards": ["train/s-00000-of-00001.tfrecord"]}},
    }
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    paths = preview.preview(str(tmp_path), str(tmp_path / "png"), index=0)
    assert paths == [str(tmp_path / "png" / "rgb_0_sheet.png")]
    sheet = preview.contact_sheet(preview.find_record(str(tmp_path), index=0)[1])
    assert sheet.facts["rows"] == ["rgb"] and sheet.facts["frames"] == [0, 1]
    assert sheet.facts["flow_max"] is None and len(sheet.tiles) == 2
