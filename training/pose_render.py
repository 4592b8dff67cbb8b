"""Pose rendering at training time: the skeleton styles of `render.style`, drawn in TensorFlow.

The `pose_live` training modality: the pose-rendered frames drawn in the input pipeline from
the records' keypoints onto the clip's (cropped, resized, mirrored) RGB frames, in any variant
of the paper's section 3.1 (`render.style.RenderStyle`, `VARIANTS`, `TABLE2_VARIANTS`), so
that the Table 2 ablation needs one preprocessing run and the records need no pose-rendered
stream. Pure TensorFlow ops (no OpenCV): it runs inside a `tf.data` map, on T frames and P
people at once.

What is drawn is what `render.skeleton.render_poses` (OpenCV) draws onto the stored frame:

- the same colors (`render.palette`: fine or coarse; segments or joints), people in record
  order and, per person, segments in `palette.LINKS` order (later on top); the head's
  nose-to-shoulder-midpoint bar needs the nose and both shoulders;
- a keypoint is used if finite and its score >= the style's threshold;
- a bar of thickness t px is a capsule whose coverage falls linearly from 1 to 0 over the
  pixel at its edge: `coverage = clip(t / 2 + 0.5 - d, 0, 1)`, d the distance from the pixel
  centre to the segment, so the coverage across the bar sums to t px, as OpenCV's
  anti-aliased fill does (a bar under 1.5 px, which OpenCV draws as a 1 px anti-aliased line,
  gets `THIN_LINE_PX`); a dot of radius r px is the capsule of a zero-length segment, t = 2r;
- each marker is alpha-blended over what is below by its coverage, in drawing order;
- sizes: ratio-aware t = max(1, round(k * sqrt(w * h))) (round half up, at most max(H, W)), w,
  h the person's box in px of the stored frame (a box with a non-positive side: the extent of
  the person's usable keypoints), or the uniform size; `marker_sizes` in `render.skeleton`.

Sizes are computed at the stored frame size, as offline, and multiplied by the resize factor
of the clip (1 unless the frame is smaller than the crop), so a skeleton drawn here looks as if
rendered offline and then cropped and resized like the frames: an offline-rendered frame and
this renderer's drawing of the same keypoints on the same frame agree within the tolerances
the tests state (anti-aliasing differs at the edges), not bit for bit.

Mirroring (`flip`): x -> crop_w - x, and left and right joints swap (`training.heatmaps.
JOINT_FLIP`), so that a left arm is drawn in the left-arm color after mirroring too: mirroring
an offline-rendered frame would instead paint the (now right-hand) arm in the left-arm color.

Geometry follows `training.heatmaps`: keypoints are normalized to the stored frame (x = 0 the
left edge of column 0, x = 1 the right edge of column W - 1); the clip's frame is resized to
`resized_hw`, then cropped at `offset`; pixel column c of the crop has its centre at
`x * resized_w - offset_x - 0.5 = c`.

Work is culled to tiles of `TILE` x `TILE` pixels: a tile draws only the markers that reach
it, so the cost grows with the area the skeletons cover, not with people x segments x pixels.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from render import palette
from render.style import RenderStyle
from training.heatmaps import JOINT_FLIP

# Coverage width of a bar thinner than 1.5 px: OpenCV draws it as a 1 px anti-aliased line,
# whose coverage across the line sums to about 1.4 px (render.skeleton's docstring).
THIN_LINE_PX = 1.4
# Side of the square tiles markers are culled to, in pixels.
TILE = 8

_NUM_JOINTS = palette.NUM_JOINTS
_BAR_LINKS = np.asarray(palette.LINKS, np.int32)  # [L, 2], joint 17 = MID_SHOULDER
_DOT_LINKS = np.stack([np.arange(_NUM_JOINTS)] * 2, axis=1).astype(np.int32)  # [17, 2]


def _links_and_colors(style: RenderStyle) -> tuple[np.ndarray, np.ndarray]:
    """(int32 [L, 2] joint pairs in drawing order, float32 [L, 3] RGB) of one person."""
    if style.marker == "bars":
        rgb = palette.SEGMENT_FINE_RGB if style.colors == "fine" else palette.SEGMENT_COARSE_RGB
        return _BAR_LINKS, rgb[palette.LINK_SEGMENT].astype(np.float32)
    rgb = palette.JOINT_FINE_RGB if style.colors == "fine" else palette.JOINT_COARSE_RGB
    return _DOT_LINKS, rgb.astype(np.float32)


def marker_sizes(boxes, px, usable, frame_hw, style: RenderStyle):
    """float32 [T, P]: bar thickness or dot radius in px of the stored frame, per person.

    Args:
      boxes: float32 [T, P, 4] normalized (ymin, xmin, ymax, xmax), or None (no boxes stored).
      px: float32 [T, P, 17, 2] keypoints in px of the stored frame (x, y).
      usable: bool [T, P, 17].
      frame_hw: int32 [2] the stored frame size (H, W).
      style: the variant.

    As `render.skeleton.marker_sizes` with `render_poses`'s fallback: ratio-aware
    max(1, round(k * sqrt(w * h))) rounding half up, at most max(H, W), w, h the box in px; a
    box with a non-finite or non-positive side (or none) is replaced by the extent of the
    person's usable keypoints. Uniform: the style's fixed size.
    """
    dots = style.marker == "dots"
    shape = tf.shape(px)[:2]
    if style.thickness == "uniform":
        return tf.fill(shape, float(style.dot_uniform_px if dots else style.uniform_px))
    k = style.dot_ratio_k if dots else style.ratio_k
    hw = tf.cast(frame_hw, tf.float32)
    big = tf.float32.max
    lo = tf.reduce_min(tf.where(usable[..., None], px, big), axis=2)  # [T, P, 2]
    hi = tf.reduce_max(tf.where(usable[..., None], px, -big), axis=2)
    ext = tf.where(hi >= lo, hi - lo, 0.0)
    ext_area = ext[..., 0] * ext[..., 1]
    if boxes is None:
        area = ext_area
    else:
        w = (boxes[..., 3] - boxes[..., 1]) * hw[1]
        h = (boxes[..., 2] - boxes[..., 0]) * hw[0]
        box_ok = tf.math.is_finite(w * h) & (w > 0) & (h > 0)
        area = tf.where(box_ok, w * h, ext_area)
    size = tf.floor(k * tf.sqrt(tf.maximum(area, 0.0)) + 0.5)
    return tf.clip_by_value(size, 1.0, tf.reduce_max(hw))


def render_clip(
    frames,
    x,
    y,
    scores,
    boxes,
    *,
    style: RenderStyle,
    frame_hw,
    resized_hw,
    offset,
    crop_hw,
    flip,
):
    """Draws the skeletons of a clip window onto its frames (see the module docstring).

    Args:
      frames: float32 [T, crop_h, crop_w, 3], values in [0, 255]: the clip's RGB frames after
        crop, resize and mirroring (unread under a black background: pass None).
      x, y: float32 [T, P, 17] keypoints normalized to the stored frame; P may be 0; persons
        padded with score 0 are not drawn.
      scores: float32 [T, P, 17] keypoint scores.
      boxes: float32 [T, P, 4] normalized (ymin, xmin, ymax, xmax) person boxes, or None.
      style: the variant (`render.style.RenderStyle`).
      frame_hw: int32 [2] the stored frame size (H, W), which sizes the markers.
      resized_hw: int32 [2] the frame size the crop is taken from (the stored size unless the
        frame is smaller than the crop).
      offset: int32 [2] (y, x) of the crop in that frame.
      crop_hw: python (crop_h, crop_w).
      flip: bool scalar: the frames are mirrored; keypoints follow, left and right swapped.

    Returns:
      float32 [T, crop_h, crop_w, 3] in [0, 255] (not rounded).
    """
    ch, cw = int(crop_hw[0]), int(crop_hw[1])
    x, y, scores = (tf.convert_to_tensor(v, tf.float32) for v in (x, y, scores))
    num_frames = tf.shape(x)[0]
    if style.background == "rgb":
        if frames is None:
            raise ValueError("frames: a style with background 'rgb' draws on the frames")
        canvas = tf.convert_to_tensor(frames, tf.float32)
    else:
        canvas = tf.zeros(tf.stack([num_frames, ch, cw, 3]), tf.float32)
    frame_hw = tf.cast(frame_hw, tf.float32)
    resized = tf.cast(resized_hw, tf.float32)
    offset = tf.cast(offset, tf.float32)

    # Sizes at the stored frame, from the stored keypoints (before any flip).
    stored_px = tf.stack([x * frame_hw[1] - 0.5, y * frame_hw[0] - 0.5], axis=-1)
    usable = tf.reduce_all(tf.math.is_finite(stored_px), axis=-1) & (
        scores >= style.score_threshold
    )
    if boxes is not None:
        boxes = tf.convert_to_tensor(boxes, tf.float32)
    size = marker_sizes(boxes, stored_px, usable, frame_hw, style)  # [T, P]
    scale = tf.sqrt((resized[0] / frame_hw[0]) * (resized[1] / frame_hw[1]))
    width = size * scale * (2.0 if style.marker == "dots" else 1.0)
    width = tf.where(width < 1.5, tf.maximum(width, THIN_LINE_PX), width)

    # Crop pixel coordinates (pixel centres at integers), mirrored with left and right swapped.
    u = x * resized[1] - offset[1] - 0.5
    v = y * resized[0] - offset[0] - 0.5
    u = tf.where(flip, (cw - 1.0) - u, u)
    perm = list(JOINT_FLIP)
    u, v, usable = (tf.where(flip, tf.gather(a, perm, axis=-1), a) for a in (u, v, usable))
    pts = tf.stack([u, v], axis=-1)  # [T, P, 17, 2]
    links, colors = _links_and_colors(style)
    if style.marker == "bars":
        mid = (pts[:, :, 5] + pts[:, :, 6]) / 2.0
        pts = tf.concat([pts, mid[:, :, None]], axis=2)
        usable = tf.concat([usable, (usable[:, :, 5] & usable[:, :, 6])[:, :, None]], axis=2)
    a = tf.gather(pts, links[:, 0], axis=2)  # [T, P, L, 2]
    b = tf.gather(pts, links[:, 1], axis=2)
    draw = tf.gather(usable, links[:, 0], axis=2) & tf.gather(usable, links[:, 1], axis=2)
    reach = tf.broadcast_to(width[:, :, None] / 2.0 + 0.5, tf.shape(draw))  # coverage > 0 inside
    num_people = tf.shape(x)[1]
    num_links = links.shape[0]
    # Markers in drawing order (person-major), plus one never drawn so that there is one.
    count = num_people * num_links
    a = tf.concat([tf.reshape(a, [num_frames, count, 2]), tf.zeros([num_frames, 1, 2])], 1)
    b = tf.concat([tf.reshape(b, [num_frames, count, 2]), tf.zeros([num_frames, 1, 2])], 1)
    draw = tf.concat([tf.reshape(draw, [num_frames, count]), tf.zeros([num_frames, 1], tf.bool)], 1)
    reach = tf.concat([tf.reshape(reach, [num_frames, count]), tf.zeros([num_frames, 1])], 1)
    rgb = tf.concat([tf.tile(tf.constant(colors), [num_people, 1]), tf.zeros([1, 3])], 0)
    return _composite(canvas, a, b, reach, draw, rgb, (ch, cw))


def _capsule_frames(a, b):
    """Per segment a-b ([..., 2] px): unit direction u [..., 2] ((1, 0) for a point), the
    along-offset of the segment's midpoint and its half length (see `_distance`)."""
    d = b - a
    length = tf.norm(d, axis=-1)
    unit = tf.where(
        (length > 0)[..., None], d / tf.maximum(length, 1e-12)[..., None], tf.constant([1.0, 0.0])
    )
    mid = (a + b) / 2.0
    return unit, mid, length / 2.0


def _distance(px, py, unit, mid, half):
    """Distance from pixel centres (px, py) to capsule axes (broadcast): with the along and
    across coordinates of the pixel relative to the segment's midpoint, the distance is
    hypot(across, max(|along| - half length, 0))."""
    along = (px - mid[..., 0]) * unit[..., 0] + (py - mid[..., 1]) * unit[..., 1]
    across = (px - mid[..., 0]) * unit[..., 1] - (py - mid[..., 1]) * unit[..., 0]
    excess = tf.nn.relu(tf.abs(along) - half)
    return tf.sqrt(tf.square(across) + tf.square(excess))


def _composite(canvas, a, b, reach, draw, rgb, crop_hw):
    """Alpha-blends N capsules, in order, over `canvas` [T, H, W, 3], culled to tiles.

    a, b: [T, N, 2] segment ends (x, y) in pixels; reach: [T, N] half width + 0.5 (coverage
    is clip(reach - distance, 0, 1)); draw: bool [T, N]; rgb: [N, 3].
    """
    ch, cw = crop_hw
    tile = TILE
    th, tw = math.ceil(ch / tile), math.ceil(cw / tile)
    num_frames = tf.shape(canvas)[0]
    n = tf.shape(a)[1]
    unit, mid, half = _capsule_frames(a, b)  # [T, N, 2], [T, N, 2], [T, N]
    reach = tf.where(draw, reach, -1.0)  # never reaches a pixel
    # Which markers reach which tile: distance from the tile centre within reach + half diagonal.
    cy = tf.constant(np.arange(th, dtype=np.float32) * tile + (tile - 1) / 2.0)
    cx = tf.constant(np.arange(tw, dtype=np.float32) * tile + (tile - 1) / 2.0)
    per_tile = [v[:, None, None] for v in (unit, mid)] + [half[:, None, None]]
    d = _distance(cx[None, None, :, None], cy[None, :, None, None], *per_tile)  # [T, th, tw, N]
    hits = d < (reach + tile * math.sqrt(0.5))[:, None, None, :]
    hits = tf.reshape(hits, tf.stack([num_frames, th * tw, n]))
    counts = tf.reduce_sum(tf.cast(hits, tf.int32), axis=-1)  # [T, tiles]
    pairs = tf.cast(tf.where(counts > 0), tf.int32)  # [Q, 2] (frame, tile)
    k = tf.maximum(tf.reduce_max(counts), 1)
    # The first k markers reaching each tile, in drawing order (top_k of n - index).
    order = tf.where(tf.gather_nd(hits, pairs), n - tf.range(n), 0)  # [Q, N]
    top, idx = tf.math.top_k(order, k=k, sorted=True)  # descending n - index: ascending index
    at = tf.stack([tf.broadcast_to(pairs[:, :1], tf.shape(idx)), idx], -1)  # [Q, K, 2]
    pr = tf.where(top > 0, tf.gather_nd(reach, at), -1.0)[:, :, None, None]  # [Q, K, 1, 1]
    pu, pm = (tf.gather_nd(v, at)[:, :, None, None, :] for v in (unit, mid))
    ph = tf.gather_nd(half, at)[:, :, None, None]
    color = tf.gather(rgb, idx)  # [Q, K, 3]
    # Pixel centres of the pair's tile: x [Q, 1, 1, S], y [Q, 1, S, 1] (S = tile).
    tile_y = tf.cast(pairs[:, 1] // tw * tile, tf.float32)[:, None, None, None]
    tile_x = tf.cast(pairs[:, 1] % tw * tile, tf.float32)[:, None, None, None]
    local = tf.range(tile, dtype=tf.float32)
    dist = _distance(tile_x + local, tile_y + local[:, None], pu, pm, ph)  # [Q, K, S, S]
    alpha = tf.reshape(tf.clip_by_value(pr - dist, 0.0, 1.0), tf.stack([-1, k, tile * tile]))
    # Later markers on top: out = bg * prod(1 - a_k) + sum_k c_k a_k prod_{j > k} (1 - a_j).
    keep = 1.0 - alpha
    above = tf.math.cumprod(keep, axis=1, exclusive=True, reverse=True)  # [Q, K, S * S]
    paint = tf.einsum("qks,qkc->qsc", alpha * above, color)
    behind = tf.reduce_prod(keep, axis=1)[..., None]  # [Q, S * S, 1]
    # The canvas as tiles [T, tiles, S * S, 3], padded to whole tiles.
    hp, wp = th * tile, tw * tile
    tiled = tf.pad(canvas, [[0, 0], [0, hp - ch], [0, wp - cw], [0, 0]])
    tiled = tf.reshape(tiled, tf.stack([num_frames, th, tile, tw, tile, 3]))
    tiled = tf.reshape(tf.transpose(tiled, [0, 1, 3, 2, 4, 5]), [-1, th * tw, tile * tile, 3])
    bg = tf.gather_nd(tiled, pairs)  # [Q, S * S, 3]
    tiled = tf.tensor_scatter_nd_update(tiled, pairs, bg * behind + paint)
    out = tf.reshape(tiled, tf.stack([num_frames, th, tw, tile, tile, 3]))
    out = tf.reshape(tf.transpose(out, [0, 1, 3, 2, 4, 5]), tf.stack([num_frames, hp, wp, 3]))
    return out[:, :ch, :cw, :]
