"""Tests for render/: palette, RenderStyle, render_poses."""

from __future__ import annotations

import colorsys
import dataclasses
import itertools
import json
import math

import numpy as np
import pytest

from render import (
    COARSE_GROUPS,
    DEFAULT_STYLE,
    JOINT_COLORS,
    JOINT_GROUPS,
    MID_SHOULDER,
    PALETTE,
    SEGMENTS,
    TABLE2_VARIANTS,
    VARIANTS,
    RenderStyle,
    marker_sizes,
    render_poses,
    variant_name,
)
from render import palette as pal

H = W = 240
# A frontal person in pixel-centre coordinates (column, row) on a 240 x 240 frame; segments are
# long enough that a 7 px bar's midpoint is covered by no other segment.
PIXELS = np.array(
    [
        (120, 40), (132, 28), (108, 28), (146, 36), (94, 36),  # nose, eyes, ears
        (160, 80), (80, 80),  # shoulders
        (190, 120), (50, 120),  # elbows
        (200, 165), (40, 165),  # wrists
        (145, 140), (95, 140),  # hips
        (150, 180), (90, 180),  # knees
        (155, 225), (85, 225),  # ankles
    ],
    np.float64,
)  # fmt: skip
BOX = np.array([[0.05, 0.1, 0.98, 0.9]], np.float32)  # ymin, xmin, ymax, xmax


def to_normalized(pixels: np.ndarray, height: int = H, width: int = W) -> np.ndarray:
    """Pixel-centre coordinates [..., 2] -> normalized (x, y), the renderer's convention."""
    return ((pixels + 0.5) / np.array([width, height])).astype(np.float32)


def one_person(scores: float | np.ndarray = 0.9):
    kp = to_normalized(PIXELS)[None]
    sc = np.broadcast_to(np.asarray(scores, np.float32), (1, 17)).copy()
    return kp, sc, BOX.copy()


def background(height: int = H, width: int = W) -> np.ndarray:
    """A deterministic textured frame whose colors differ from every palette color."""
    rng = np.random.default_rng(0)
    return rng.integers(60, 200, (height, width, 3), dtype=np.uint8)


def pixel(point) -> tuple[int, int]:
    """(row, col) of the pixel nearest a (col, row) point."""
    return int(round(point[1])), int(round(point[0]))


UNIFORM7 = dict(thickness="uniform", uniform_px=7)


# ---------------------------------------------------------------- palette and tables


def test_segments_follow_design_table():
    assert [s.name for s in SEGMENTS] == [
        "left_upper_arm", "left_forearm", "right_upper_arm", "right_forearm",
        "left_thigh", "left_shin", "right_thigh", "right_shin",
        "shoulders", "hips", "left_flank", "right_flank", "head",
    ]  # fmt: skip
    assert [s.links for s in SEGMENTS[:12]] == [
        ((5, 7),), ((7, 9),), ((6, 8),), ((8, 10),), ((11, 13),), ((13, 15),),
        ((12, 14),), ((14, 16),), ((5, 6),), ((11, 12),), ((5, 11),), ((6, 12),),
    ]  # fmt: skip
    assert SEGMENTS[12].links == ((0, MID_SHOULDER), (0, 1), (0, 2), (1, 3), (2, 4))
    groups = [COARSE_GROUPS[s.group].name for s in SEGMENTS]
    assert groups == [
        "left_arm", "left_arm", "right_arm", "right_arm", "left_leg", "left_leg",
        "right_leg", "right_leg", "body", "body", "body", "body", "head",
    ]  # fmt: skip
    assert [g.name for g in COARSE_GROUPS] == [
        "left_arm", "right_arm", "body", "head", "left_leg", "right_leg",
    ]  # fmt: skip


def test_fine_palette_13_distinct_saturated():
    colors = list(PALETTE.values())
    assert len(colors) == 13 and len(set(colors)) == 13
    assert len({s.color for s in SEGMENTS}) == 13  # each segment its own color
    for c in colors:
        assert all(0 <= v <= 255 and isinstance(v, int) for v in c)
        assert max(c) - min(c) >= 200, c
    seg = pal.SEGMENT_FINE_RGB
    assert seg.dtype == np.uint8 and seg.shape == (13, 3)
    assert len(np.unique(seg, axis=0)) == 13
    d = np.linalg.norm(seg[:, None].astype(float) - seg[None].astype(float), axis=-1)
    assert d[~np.eye(13, dtype=bool)].min() > 80


def test_coarse_palette_6_distinct_saturated():
    colors = [g.color for g in COARSE_GROUPS]
    assert len(colors) == 6 and len(set(colors)) == 6
    for c in colors:
        assert max(c) - min(c) == 255
    assert len(np.unique(pal.SEGMENT_COARSE_RGB, axis=0)) == 6


def _hue_degrees(rgb) -> float:
    return colorsys.rgb_to_hsv(*(v / 255 for v in rgb))[0] * 360


def _hue_gap(c1, c2) -> float:
    d = abs(_hue_degrees(c1) - _hue_degrees(c2)) % 360
    return min(d, 360 - d)


def test_touching_segments_have_far_hues():
    def joints(s):
        return {a for link in s.links for a in link}

    for s1, s2 in itertools.combinations(SEGMENTS, 2):
        if s1.name == "head" or s2.name == "head":
            other = s2 if s1.name == "head" else s1
            touching = other.name == "shoulders"
        else:
            touching = bool(joints(s1) & joints(s2))
        if touching:
            assert _hue_gap(PALETTE[s1.color], PALETTE[s2.color]) > 80, (s1.name, s2.name)


def test_joint_colors_and_groups():
    assert len(JOINT_COLORS) == 17 and len(JOINT_GROUPS) == 17
    head = SEGMENTS[pal.HEAD_SEGMENT].color
    assert JOINT_COLORS[:5] == (head,) * 5
    assert len(set(JOINT_COLORS[5:])) == 12 and head not in JOINT_COLORS[5:]
    assert set(JOINT_COLORS) == set(PALETTE)  # 13 dot colors, the fine palette
    names = [COARSE_GROUPS[g].name for g in JOINT_GROUPS]
    assert names == [
        "head", "head", "head", "head", "head", "body", "body", "left_arm", "right_arm",
        "left_arm", "right_arm", "body", "body", "left_leg", "right_leg", "left_leg", "right_leg",
    ]  # fmt: skip
    assert not pal.JOINT_FINE_RGB.flags.writeable and not pal.SEGMENT_FINE_RGB.flags.writeable


# ---------------------------------------------------------------- golden colors


def _segment_midpoints():
    """(segment index, link, (col, row) midpoint) for every link of every segment."""
    pts = np.vstack([PIXELS, (PIXELS[5] + PIXELS[6]) / 2])
    for i, s in enumerate(SEGMENTS):
        for a, b in s.links:
            yield i, (a, b), (pts[a] + pts[b]) / 2


@pytest.mark.parametrize("colors", ["fine", "coarse"])
def test_bar_midpoints_have_exact_segment_color(colors):
    style = RenderStyle(background="black", colors=colors, **UNIFORM7)
    out = render_poses(np.zeros((H, W, 3), np.uint8), *one_person(), style)
    table = pal.SEGMENT_FINE_RGB if colors == "fine" else pal.SEGMENT_COARSE_RGB
    for i, link, mid in _segment_midpoints():
        assert out[pixel(mid)].tolist() == table[i].tolist(), (SEGMENTS[i].name, link)


def test_fine_bar_colors_are_the_palette_entries():
    style = RenderStyle(background="rgb", **UNIFORM7)
    out = render_poses(background(), *one_person(), style)
    for i, _, mid in _segment_midpoints():
        assert tuple(out[pixel(mid)].tolist()) == PALETTE[SEGMENTS[i].color]


@pytest.mark.parametrize("colors", ["fine", "coarse"])
def test_dot_centres_have_exact_joint_color(colors):
    style = RenderStyle(background="black", marker="dots", colors=colors, thickness="uniform",
                        dot_uniform_px=4)  # fmt: skip
    out = render_poses(np.zeros((H, W, 3), np.uint8), *one_person(), style)
    for j in range(17):
        if colors == "fine":
            expected = PALETTE[JOINT_COLORS[j]]
        else:
            expected = COARSE_GROUPS[JOINT_GROUPS[j]].color
        assert tuple(out[pixel(PIXELS[j])].tolist()) == expected, j
        # The dot is a disc: 3 px off the centre is still the color, 7 px off is not.
        r, c = pixel(PIXELS[j])
        assert tuple(out[r, c + 3].tolist()) == expected
    assert out[pixel(PIXELS[0])].tolist() != [0, 0, 0]


def test_dots_draw_nothing_between_joints():
    style = RenderStyle(background="black", marker="dots", thickness="uniform", dot_uniform_px=3)
    out = render_poses(np.zeros((H, W, 3), np.uint8), *one_person(), style)
    for i, _, mid in list(_segment_midpoints())[:12]:
        assert out[pixel(mid)].tolist() == [0, 0, 0], SEGMENTS[i].name


# ---------------------------------------------------------------- backgrounds


def _drawn_mask(kp, sc, bx, style) -> np.ndarray:
    """Pixels drawing can touch: nonzero on black (every color has a 255 channel), grown 1 px."""
    black = dataclasses.replace(style, background="black")
    out = render_poses(np.zeros((H, W, 3), np.uint8), kp, sc, bx, black)
    touched = out.any(axis=2).astype(np.uint8)
    grown = np.zeros_like(touched)
    for dr, dc in itertools.product((-1, 0, 1), repeat=2):
        grown |= np.roll(touched, (dr, dc), axis=(0, 1))
    return grown.astype(bool)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_far_pixels_keep_background(name):
    style = VARIANTS[name]
    frame = background()
    kp, sc, bx = one_person()
    out = render_poses(frame, kp, sc, bx, style)
    assert out.dtype == np.uint8 and out.shape == frame.shape
    mask = _drawn_mask(kp, sc, bx, style)
    assert 0.005 < mask.mean() < 0.5
    expected = frame if style.background == "rgb" else np.zeros_like(frame)
    np.testing.assert_array_equal(out[~mask], expected[~mask])
    np.testing.assert_array_equal(out[:15, :], expected[:15, :])  # top band: nothing there
    assert (out[mask] != expected[mask]).any()


def test_input_not_mutated_and_readonly_input_ok():
    frame = background()
    frame.setflags(write=False)
    before = frame.copy()
    kp, sc, bx = one_person()
    kp.setflags(write=False)
    out = render_poses(frame, kp, sc, bx)
    np.testing.assert_array_equal(frame, before)
    assert out is not frame and not np.shares_memory(out, frame)
    assert out.flags.writeable and out.flags.c_contiguous


def test_non_contiguous_frame():
    big = background(H, 2 * W)
    frame = big[:, ::2]
    out = render_poses(frame, *one_person())
    expected = render_poses(np.ascontiguousarray(frame), *one_person())
    np.testing.assert_array_equal(out, expected)


# ---------------------------------------------------------------- sizes


def _expected_size(k: float, box_w_px: float, box_h_px: float) -> int:
    return max(1, math.floor(k * math.sqrt(box_w_px * box_h_px) + 0.5))


def test_marker_sizes_formula():
    boxes = np.array(
        [
            [0.0, 0.0, 1.0, 0.5],  # 256 x 128 px on 256 x 256: sqrt 181.02 -> 7.24 -> 7
            [0.0, 0.0, 100 / 256, 50 / 256],  # 100 x 50: 70.7 -> 2.83 -> 3
            [0.0, 0.0, 10 / 256, 10 / 256],  # 10 x 10: 0.4 -> 1 (floor at 1)
            [0.0, 0.0, 25 / 256, 25 / 256],  # 25 x 25: exactly 1.0
            [0.0, 0.0, 62.5 / 256, 62.5 / 256],  # 62.5 x 62.5: 2.5 -> 3 (half up)
            [-1.0, -1.0, 2.0, 2.0],  # 768 x 768 px: 30.72 -> 31
            [0.0, 0.0, 1e9, 1e9],  # huge: capped at max(H, W)
            [np.nan, 0.0, 1.0, 1.0],  # missing: 1
            [0.5, 0.5, 0.2, 0.2],  # inverted: 1
        ],
        np.float32,
    )
    got = marker_sizes(boxes, (256, 256))
    assert got.dtype == np.int64
    assert got.tolist() == [7, 3, 1, 1, 3, 31, 256, 1, 1]
    dots = marker_sizes(boxes[:2], (256, 256), RenderStyle(marker="dots"))
    assert dots.tolist() == [5, 2]  # 0.03 * 181.02 = 5.43; 0.03 * 70.7 = 2.12
    uniform = marker_sizes(boxes, (256, 256), RenderStyle(thickness="uniform", uniform_px=4))
    assert uniform.tolist() == [4] * len(boxes)
    assert marker_sizes(np.zeros((0, 4), np.float32), (10, 10)).shape == (0,)
    with pytest.raises(ValueError, match=r"boxes.*\(3,\)"):
        marker_sizes(np.zeros(3), (10, 10))


def _shoulder_bar(box_hw_px, style, size=256, y=128.0):
    """Renders only the shoulders (a horizontal bar from x=60 to x=196 px at row y) on black."""
    pts = PIXELS.copy()
    pts[5] = (196, y)
    pts[6] = (60, y)
    kp = to_normalized(pts, size, size)[None]
    sc = np.zeros((1, 17), np.float32)
    sc[0, [5, 6]] = 1.0
    h, w = box_hw_px
    bx = np.array([[0.1, 0.1, 0.1 + h / size, 0.1 + w / size]], np.float32)
    return render_poses(np.zeros((size, size, 3), np.uint8), kp, sc, bx, style)


def _bar_width(out: np.ndarray, col: int = 128) -> tuple[float, int]:
    """(coverage sum, count of at-least-half-covered pixels) down one column, via blue = 255."""
    column = out[:, col, 2].astype(np.float64) / 255
    return float(column.sum()), int((column >= 0.5).sum())


@pytest.mark.parametrize("box_hw", [(50, 25), (100, 50), (180, 90), (256, 128), (250, 250)])
def test_ratio_bar_width_follows_formula(box_hw):
    style = RenderStyle(background="black")
    expected = _expected_size(style.ratio_k, box_hw[1], box_hw[0])
    out = _shoulder_bar(box_hw, style)
    coverage, solid = _bar_width(out)
    if expected >= 2:
        assert tuple(out[128, 128].tolist()) == PALETTE["sky"]
    assert abs(coverage - expected) <= 0.5, (coverage, expected)
    assert abs(solid - expected) <= 1, (solid, expected)


def test_ratio_bar_grows_with_box_uniform_does_not():
    ratio = RenderStyle(background="black")
    small, _ = _bar_width(_shoulder_bar((60, 30), ratio))
    large, _ = _bar_width(_shoulder_bar((240, 120), ratio))
    assert (round(small), round(large)) == (2, 7)  # 0.04 * 42.4 = 1.70; 0.04 * 169.7 = 6.79
    uniform = RenderStyle(background="black", thickness="uniform", uniform_px=5)
    a = _shoulder_bar((60, 30), uniform)
    b = _shoulder_bar((240, 120), uniform)
    np.testing.assert_array_equal(a, b)
    assert abs(_bar_width(a)[0] - 5) <= 0.5


@pytest.mark.parametrize("t", [1, 2, 3, 4, 6, 9, 15])
def test_uniform_bar_width_exact(t):
    style = RenderStyle(background="black", thickness="uniform", uniform_px=t)
    for y in (128.0, 128.25, 128.5):
        coverage = _shoulder_bar((100, 50), style, y=y)[:, 128, 2].sum() / 255
        assert abs(coverage - t) <= 0.5, (t, y, coverage)


def test_ratio_dot_radius_grows_with_box():
    style = RenderStyle(background="black", marker="dots")
    small = _shoulder_bar((60, 30), style)  # radius max(1, round(1.27)) = 1
    large = _shoulder_bar((240, 120), style)  # radius round(5.09) = 5
    for out, radius in ((small, 1), (large, 5)):
        column = out[:, 196, 2].astype(float) / 255  # left shoulder dot, magenta: blue 235
        assert abs(column.sum() * 255 / 235 - 2 * radius) <= 1, (radius, column.sum())


def test_subpixel_placement():
    """The bar's coverage centroid follows the keypoint to within 0.16 px, in 1/16 px steps."""
    style = RenderStyle(background="black", thickness="uniform", uniform_px=5)
    rows = np.arange(256)
    ys = 128 + np.arange(17) / 16
    centroids = []
    for y in ys:
        col = _shoulder_bar((100, 50), style, y=y)[:, 128, 2].astype(float)
        centroids.append((col * rows).sum() / col.sum())
    np.testing.assert_allclose(centroids, ys, atol=0.16)
    assert centroids[-1] - centroids[0] == pytest.approx(1.0, abs=0.02)


# ---------------------------------------------------------------- threshold


@pytest.mark.parametrize("name", list(VARIANTS))
def test_nothing_drawn_below_threshold(name):
    style = VARIANTS[name]
    frame = background()
    kp, sc, bx = one_person(scores=style.score_threshold - 0.01)
    out = render_poses(frame, kp, sc, bx, style)
    expected = frame if style.background == "rgb" else np.zeros_like(frame)
    np.testing.assert_array_equal(out, expected)


def test_threshold_is_inclusive_and_configurable():
    frame = background()
    kp, sc, bx = one_person(scores=0.5)
    at = render_poses(frame, kp, sc, bx, RenderStyle(score_threshold=0.5))
    above = render_poses(frame, kp, sc, bx, RenderStyle(score_threshold=0.51))
    assert (at != frame).any()
    np.testing.assert_array_equal(above, frame)


def test_segment_needs_both_joints():
    style = RenderStyle(background="black", **UNIFORM7)
    frame = np.zeros((H, W, 3), np.uint8)
    scores = np.zeros(17, np.float32)
    scores[[5, 7]] = 1.0  # only the left upper arm
    out = render_poses(frame, *one_person(scores), style)
    colors = {tuple(c) for c in out.reshape(-1, 3).tolist()}
    assert PALETTE["green"] in colors  # left upper arm
    full = {tuple(c) for c in colors if 255 in c}
    assert full == {PALETTE["green"]}


def test_head_bar_needs_nose_and_both_shoulders():
    style = RenderStyle(background="black", **UNIFORM7)
    frame = np.zeros((H, W, 3), np.uint8)
    head_mid = pixel((PIXELS[0] + (PIXELS[5] + PIXELS[6]) / 2) / 2)
    scores = np.zeros(17, np.float32)
    scores[[0, 5]] = 1.0  # nose and one shoulder: nothing at all
    np.testing.assert_array_equal(render_poses(frame, *one_person(scores), style), frame)
    scores[6] = 1.0  # and the other: the head bar and the shoulders
    out = render_poses(frame, *one_person(scores), style)
    assert tuple(out[head_mid].tolist()) == PALETTE["yellow"]
    scores[0] = 0.0
    out = render_poses(frame, *one_person(scores), style)
    assert out[head_mid].tolist() == [0, 0, 0]
    assert tuple(out[pixel((PIXELS[5] + PIXELS[6]) / 2)].tolist()) == PALETTE["sky"]


# ---------------------------------------------------------------- robustness


@pytest.mark.parametrize("name", list(VARIANTS))
def test_no_people(name):
    style = VARIANTS[name]
    frame = background()
    empty = (np.zeros((0, 17, 2), np.float32), np.zeros((0, 17), np.float32),
             np.zeros((0, 4), np.float32))  # fmt: skip
    out = render_poses(frame, *empty, style)
    expected = frame if style.background == "rgb" else np.zeros_like(frame)
    np.testing.assert_array_equal(out, expected)
    assert out is not frame


@pytest.mark.parametrize("name", list(VARIANTS))
def test_wild_coordinates(name):
    style = VARIANTS[name]
    frame = background()
    kp, sc, bx = one_person()
    kp = np.repeat(kp, 4, axis=0)
    sc = np.repeat(sc, 4, axis=0)
    bx = np.repeat(bx, 4, axis=0)
    kp[1, :, 0] += 1e7  # far right
    kp[2, ::2] = np.nan  # every other joint missing
    kp[2, 1::4, 1] = np.inf
    sc[2, 3::4] = np.nan
    kp[3, :, 0] = -3e30  # far outside, finite
    kp[3, 8:, 1] = 3e30
    bx[3] = np.nan
    out = render_poses(frame, kp, sc, bx, style)
    assert out.shape == frame.shape and out.dtype == np.uint8
    # Person 0 alone draws the same as people 0-3 (1-3 draw nothing inside the frame) except
    # where person 2's surviving segments are drawn.
    alone = render_poses(frame, kp[:1], sc[:1], bx[:1], style)
    mask2 = _drawn_mask(kp[2:3], sc[2:3], bx[2:3], style)
    np.testing.assert_array_equal(out[~mask2], alone[~mask2])


def test_segment_crossing_the_whole_frame_is_clipped_correctly():
    kp, sc, bx = one_person(scores=0.0)
    kp[0, 5] = (-1e6, 0.5)
    kp[0, 6] = (1e6, 0.5)
    sc[0, [5, 6]] = 1.0
    style = RenderStyle(background="black", **UNIFORM7)
    out = render_poses(np.zeros((H, W, 3), np.uint8), kp, sc, bx, style)
    sky = list(PALETTE["sky"])
    for col in (0, 1, W // 2, W - 2, W - 1):
        assert out[H // 2, col].tolist() == sky
        assert out[H // 2 - 2 : H // 2 + 2, col].tolist() == [sky] * 4
    assert not out[: H // 2 - 6].any() and not out[H // 2 + 6 :].any()


def test_person_half_outside_frame():
    kp, sc, bx = one_person()
    shift = np.array([-0.5, 0.0], np.float32)
    kp = kp + shift  # the person's left half stays in, the right half is off the left edge
    bx = bx - np.array([0, 0.5, 0, 0.5], np.float32)
    style = RenderStyle(background="black", **UNIFORM7)
    out = render_poses(np.zeros((H, W, 3), np.uint8), kp, sc, bx, style)
    # Left upper arm, x from 160 - 120 = 40 to 70: fully inside; shoulders cross the edge.
    mid = pixel((PIXELS[5] + PIXELS[7]) / 2 - (120, 0))
    assert tuple(out[mid].tolist()) == PALETTE["green"]
    assert tuple(out[80, 0].tolist()) == PALETTE["sky"]
    assert not out[:, W // 2 :].any()
    # Same size as fully inside: ratio thickness uses the box, not its visible part.
    np.testing.assert_array_equal(marker_sizes(bx, (H, W)), marker_sizes(one_person()[2], (H, W)))


def test_missing_box_uses_keypoint_extent():
    kp, sc, _ = one_person()
    extent = PIXELS.max(axis=0) - PIXELS.min(axis=0)  # 160 x 197 px
    nan_box = np.full((1, 4), np.nan, np.float32)
    ext_box = np.array([[0, 0, extent[1] / H, extent[0] / W]], np.float32)
    style = RenderStyle(background="black")
    np.testing.assert_array_equal(
        render_poses(np.zeros((H, W, 3), np.uint8), kp, sc, nan_box, style),
        render_poses(np.zeros((H, W, 3), np.uint8), kp, sc, ext_box, style),
    )


def test_overlapping_people_later_on_top():
    kp, sc, bx = one_person()
    second = kp + np.array([0.03, 0.0], np.float32)
    kp2 = np.concatenate([kp, second])
    sc2 = np.concatenate([sc, sc])
    bx2 = np.concatenate([bx, bx])
    style = RenderStyle(background="black", colors="coarse", **UNIFORM7)
    out = render_poses(np.zeros((H, W, 3), np.uint8), kp2, sc2, bx2, style)
    last = render_poses(np.zeros((H, W, 3), np.uint8), kp2[1:], sc2[1:], bx2[1:], style)
    table = pal.SEGMENT_COARSE_RGB
    for i, _, mid in _segment_midpoints():
        r, c = pixel(mid + (0.03 * W, 0))
        assert out[r, c].tolist() == table[i].tolist() == last[r, c].tolist()


def test_float64_inputs_accepted():
    kp, sc, bx = one_person()
    a = render_poses(background(), kp, sc, bx)
    b = render_poses(background(), kp.astype(np.float64), sc.astype(np.float64), bx.astype(float))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "frame, kp, sc, bx, pattern",
    [
        (np.zeros((H, W, 3), np.float32), None, None, None, "frame.*float32"),
        (np.zeros((H, W), np.uint8), None, None, None, r"frame.*\(240, 240\)"),
        (np.zeros((H, W, 4), np.uint8), None, None, None, r"frame.*\(240, 240, 4\)"),
        (np.zeros((0, W, 3), np.uint8), None, None, None, "frame"),
        ([[0]], None, None, None, "frame.*list"),
        (None, np.zeros((1, 17), np.float32), None, None, r"keypoints.*\(1, 17\)"),
        (None, np.zeros((1, 18, 2), np.float32), None, None, r"keypoints.*\(1, 18, 2\)"),
        (None, np.zeros((1, 17, 2), np.int32), None, None, "keypoints.*int32"),
        (None, None, np.zeros((1, 17, 1), np.float32), None, r"scores.*\(1, 17, 1\)"),
        (None, None, None, np.zeros((1, 5), np.float32), r"boxes.*\(1, 5\)"),
        (None, None, np.zeros((2, 17), np.float32), None, "person counts"),
    ],
)
def test_bad_inputs_raise(frame, kp, sc, bx, pattern):
    d_kp, d_sc, d_bx = one_person()
    with pytest.raises(ValueError, match=pattern):
        render_poses(
            background() if frame is None else frame,
            d_kp if kp is None else kp,
            d_sc if sc is None else sc,
            d_bx if bx is None else bx,
        )


# ---------------------------------------------------------------- RenderStyle


def test_style_defaults():
    s = RenderStyle()
    assert s == DEFAULT_STYLE == RenderStyle.parse("") == RenderStyle.parse(" , ")
    assert (s.background, s.marker, s.colors, s.thickness) == ("rgb", "bars", "fine", "ratio")
    assert s.name == "rgb_bars_fine_ratio"
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.marker = "dots"


def test_style_parse_example():
    s = RenderStyle.parse(
        "background=black,marker=dots,colors=coarse,thickness=uniform,threshold=0.5"
    )
    assert s == RenderStyle(background="black", marker="dots", colors="coarse",
                            thickness="uniform", score_threshold=0.5)  # fmt: skip
    assert RenderStyle.parse(" marker = dots , score_threshold=0.25 ") == RenderStyle(
        marker="dots", score_threshold=0.25
    )
    assert RenderStyle.parse("variant=black_dots_fine_ratio,threshold=0.2") == RenderStyle(
        background="black", marker="dots", score_threshold=0.2
    )
    assert RenderStyle.parse("marker=bars,variant=rgb_dots_coarse_uniform").marker == "bars"


@pytest.mark.parametrize(
    "style",
    [
        *VARIANTS.values(),
        RenderStyle(score_threshold=0.0, ratio_k=0.1, uniform_px=1, dot_ratio_k=1e-3),
        RenderStyle(score_threshold=1.0, dot_uniform_px=7, ratio_k=0.123456789012345),
        RenderStyle(score_threshold=1 / 3),
    ],
)
def test_style_round_trips(style):
    spec = style.to_spec()
    assert RenderStyle.parse(spec) == style
    assert RenderStyle.parse(spec).to_spec() == spec
    d = json.loads(json.dumps(style.to_dict()))
    assert RenderStyle.from_dict(d) == style
    assert set(d) == {f.name for f in dataclasses.fields(RenderStyle)}


def test_to_spec_exact():
    assert DEFAULT_STYLE.to_spec() == (
        "background=rgb,marker=bars,colors=fine,thickness=ratio,threshold=0.3,"
        "ratio_k=0.04,uniform_px=3,dot_ratio_k=0.03,dot_uniform_px=2"
    )


@pytest.mark.parametrize(
    "spec, words",
    [
        ("colour=fine", ["colour"]),
        ("marker=lines", ["marker", "lines"]),
        ("background=white", ["background", "white"]),
        ("colors=13", ["colors", "13"]),
        ("thickness=ratio_aware", ["thickness", "ratio_aware"]),
        ("threshold=abc", ["threshold", "abc"]),
        ("threshold=1.5", ["threshold", "1.5"]),
        ("threshold=nan", ["threshold", "nan"]),
        ("ratio_k=0", ["ratio_k", "0"]),
        ("ratio_k=inf", ["ratio_k", "inf"]),
        ("uniform_px=0", ["uniform_px", "0"]),
        ("uniform_px=2.5", ["uniform_px", "2.5"]),
        ("dot_uniform_px=x", ["dot_uniform_px", "x"]),
        ("marker", ["marker"]),
        ("=dots", ["=dots"]),
        ("marker=dots,marker=bars", ["marker", "twice"]),
        ("threshold=0.2,score_threshold=0.3", ["score_threshold", "twice"]),
        ("variant=rgb_bars", ["variant", "rgb_bars"]),
    ],
)
def test_style_parse_errors_name_the_culprit(spec, words):
    with pytest.raises(ValueError) as info:
        RenderStyle.parse(spec)
    for w in words:
        assert w in str(info.value), (spec, str(info.value))


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(background="white"), "background"),
        (dict(marker=None), "marker"),
        (dict(colors="Fine"), "colors"),
        (dict(thickness=1), "thickness"),
        (dict(score_threshold=-0.1), "score_threshold"),
        (dict(score_threshold=True), "score_threshold"),
        (dict(score_threshold="0.3"), "score_threshold"),
        (dict(ratio_k=-1.0), "ratio_k"),
        (dict(dot_ratio_k=float("nan")), "dot_ratio_k"),
        (dict(uniform_px=3.0), "uniform_px"),
        (dict(uniform_px=True), "uniform_px"),
        (dict(dot_uniform_px=0), "dot_uniform_px"),
        (dict(dot_uniform_px=5000), "dot_uniform_px"),
    ],
)
def test_style_validation_names_field(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}="):
        RenderStyle(**kwargs)


def test_from_dict_unknown_key():
    with pytest.raises(ValueError, match="colour"):
        RenderStyle.from_dict({"colour": "fine"})


def test_variants():
    assert len(VARIANTS) == 16
    combos = {(s.background, s.marker, s.colors, s.thickness) for s in VARIANTS.values()}
    assert len(combos) == 16
    for name, s in VARIANTS.items():
        assert variant_name(s) == name == s.name
        assert dataclasses.replace(s, background="rgb", marker="bars", colors="fine",
                                   thickness="ratio") == DEFAULT_STYLE  # fmt: skip
    assert next(iter(VARIANTS)) == DEFAULT_STYLE.name
    assert len(TABLE2_VARIANTS) == 7 == len(set(TABLE2_VARIANTS))
    assert set(TABLE2_VARIANTS) <= set(VARIANTS)
    assert TABLE2_VARIANTS[-1] == DEFAULT_STYLE.name  # the paper's best row
