"""Skeleton heatmap volumes from the records' keypoints (PoseC3D-style), pure TensorFlow.

The `heatmap` training modality: per frame, one channel per COCO-17 joint holding a Gaussian
around that joint of every person, scaled by the keypoint's score, the maximum over persons:

    H[t, i, j, k] = max_p c[t, p, k] * exp(-((j - x[t, p, k])^2 + (i - y[t, p, k])^2) / (2 s^2))

with (x, y) the joint's position in heatmap cells (column, row), c its score (0 when below the
score threshold: the joint is dropped) and s = sigma, in heatmap cells. With `limbs=True`,
channel l instead holds, for limb l = (a, b) of `LIMBS`, `min(c_a, c_b) * exp(-d^2 / (2 s^2))`,
d the distance from the cell centre to the segment from joint a to joint b (Duan et al.,
"Revisiting Skeleton-based Action Recognition", 2022). Values are float32 in [0, 1].

Geometry. Keypoints are stored normalized to the stored frame (x = 0 the left edge of pixel
column 0, x = 1 the right edge of column W - 1; likewise y), the convention of the skeleton
renderer. The pipeline's frames are resized (bilinear, half-pixel centres: normalized positions
stay where they are) to `resized_hw` when smaller than the crop, then cropped at `offset`
(pixels, y then x) to `crop_hw`. The heatmap grid divides that crop into `grid_hw` =
(ceil(crop_h / stride), ceil(crop_w / stride)) cells; cell (i, j) has its centre at crop pixel
position ((i + 0.5) * crop_h / grid_h, (j + 0.5) * crop_w / grid_w) in edge coordinates, i.e.
cells are `stride` pixels wide when `stride` divides the crop. A keypoint at crop edge
coordinate u (pixels from the crop's left edge, `u = x * resized_w - offset_x`) lies at
heatmap column `u * grid_w / crop_w - 0.5`. Sigma is in heatmap cells.

Mirroring follows the images, which are reversed along the width axis (crop column c becomes
column crop_w - 1 - c): u becomes crop_w - u (pixel centre c + 0.5 goes to crop_w - 1 - c +
0.5), i.e. heatmap column j becomes grid_w - 1 - j, and left and right joints swap
(`JOINT_FLIP`; limbs follow, `LIMB_FLIP`). The heatmaps of the mirrored keypoints are so the
mirrored heatmaps of the keypoints, channels permuted, up to float rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import tensorflow as tf

from schemas import media_sequence as ms


def _mirror_joint(name: str) -> str:
    """The joint that `name` becomes in a mirrored image: left_* <-> right_*, others alike."""
    for a, b in (("left_", "right_"), ("right_", "left_")):
        if name.startswith(a):
            return b + name[len(a) :]
    return name


# Joint k of a mirrored clip is joint JOINT_FLIP[k] of the clip (COCO-17 order, from the
# contract's joint names: left and right swap, the nose stays).
JOINT_FLIP: tuple[int, ...] = tuple(
    ms.COCO17_JOINT_NAMES.index(_mirror_joint(n)) for n in ms.COCO17_JOINT_NAMES
)

# PoseC3D's 17 COCO-17 limbs (joint index pairs): head, arms, torso sides, legs, hips.
LIMBS: tuple[tuple[int, int], ...] = (
    (0, 1), (0, 2), (1, 3), (2, 4), (0, 5), (5, 7), (7, 9), (0, 6), (6, 8), (8, 10),
    (5, 11), (11, 13), (13, 15), (6, 12), (12, 14), (14, 16), (11, 12),
)  # fmt: skip


def _limb_flip() -> tuple[int, ...]:
    index = {frozenset(limb): i for i, limb in enumerate(LIMBS)}
    return tuple(index[frozenset((JOINT_FLIP[a], JOINT_FLIP[b]))] for a, b in LIMBS)


# Limb l of a mirrored clip is limb LIMB_FLIP[l] of the clip.
LIMB_FLIP: tuple[int, ...] = _limb_flip()

# Channels of a heatmap volume: one per joint, or one per limb (both 17).
NUM_CHANNELS = ms.NUM_JOINTS
if len(LIMBS) != NUM_CHANNELS:
    raise AssertionError(f"{len(LIMBS)} limbs: the limb variant needs {NUM_CHANNELS} channels")


def grid_size(crop_hw: Sequence[int], stride: int) -> tuple[int, int]:
    """(ceil(crop_h / stride), ceil(crop_w / stride)): the heatmap size of a crop, in cells.

    Raises ValueError naming `stride` (< 1) or `crop_hw` (not two sizes >= 1).
    """
    if stride < 1:
        raise ValueError(f"stride={stride}: must be >= 1")
    if len(crop_hw) != 2 or min(crop_hw) < 1:
        raise ValueError(f"crop_hw={tuple(crop_hw)}: expected (height, width) >= 1")
    return math.ceil(crop_hw[0] / stride), math.ceil(crop_hw[1] / stride)


def to_grid(x, y, *, resized_hw, offset, crop_hw, grid_hw, flip):
    """Normalized keypoints -> heatmap cell coordinates of the crop (cell centres at integers).

    Args:
      x, y: float32 [..., 17] normalized to the stored frame (see the module doc).
      resized_hw: int32 [2] the frame size the crop is taken from (pixels).
      offset: int32 [2] (y, x) of the crop in that frame (pixels).
      crop_hw: python (crop_h, crop_w) pixels.
      grid_hw: python (grid_h, grid_w) cells (`grid_size`).
      flip: bool scalar: mirror (x only; joints are not permuted here).

    Returns:
      (gx, gy) float32 [..., 17]: column and row in heatmap cells.
    """
    ch, cw = crop_hw
    gh, gw = grid_hw
    resized = tf.cast(resized_hw, tf.float32)
    offset = tf.cast(offset, tf.float32)
    u = x * resized[1] - offset[1]  # crop pixels from the crop's left edge
    v = y * resized[0] - offset[0]
    u = tf.where(flip, cw - u, u)
    return u * (gw / cw) - 0.5, v * (gh / ch) - 0.5


def _gaussian(d2, sigma: float):
    return tf.exp(d2 * (-0.5 / (sigma * sigma)))


def keypoint_heatmaps(gx, gy, scores, grid_hw, sigma: float):
    """float32 [T, grid_h, grid_w, 17] in [0, 1]: the joints' Gaussians, maximum over persons.

    Args:
      gx, gy: float32 [T, P, 17] positions in heatmap cells (`to_grid`); P may be 0.
      scores: float32 [T, P, 17] in [0, 1]; 0 for dropped joints and padding.
      grid_hw: python (grid_h, grid_w).
      sigma: Gaussian standard deviation in heatmap cells, > 0.
    """
    gh, gw = grid_hw
    cols = tf.range(gw, dtype=tf.float32)
    rows = tf.range(gh, dtype=tf.float32)
    # separable: exp(-(dx^2 + dy^2) / 2s^2) = exp(-dx^2 / 2s^2) * exp(-dy^2 / 2s^2)
    ex = _gaussian(tf.square(cols[:, None] - gx[:, :, None, :]), sigma)  # [T, P, W, 17]
    ey = _gaussian(tf.square(rows[:, None] - gy[:, :, None, :]), sigma) * scores[:, :, None, :]

    def person(acc, p):
        return tf.maximum(acc, ey[:, p, :, None, :] * ex[:, p, None, :, :])

    return _over_persons(person, tf.shape(gx), grid_hw)


def limb_heatmaps(gx, gy, scores, grid_hw, sigma: float):
    """float32 [T, grid_h, grid_w, 17] in [0, 1]: per limb of `LIMBS`, a Gaussian of the
    distance to the segment between its joints, times the lower of their scores, maximum over
    persons. A limb whose joints coincide is a Gaussian around that point.

    Args: as in `keypoint_heatmaps`.
    """
    gh, gw = grid_hw
    a = tf.constant([i for i, _ in LIMBS])
    b = tf.constant([j for _, j in LIMBS])
    ax, ay = tf.gather(gx, a, axis=-1), tf.gather(gy, a, axis=-1)  # [T, P, L]
    ex, ey = tf.gather(gx, b, axis=-1) - ax, tf.gather(gy, b, axis=-1) - ay
    length2 = tf.square(ex) + tf.square(ey)
    weight = tf.minimum(tf.gather(scores, a, axis=-1), tf.gather(scores, b, axis=-1))
    cols = tf.range(gw, dtype=tf.float32)[None, :, None]  # [1, W, 1]
    rows = tf.range(gh, dtype=tf.float32)[:, None, None]  # [H, 1, 1]

    def person(acc, p):
        dx = cols - ax[:, p, None, None, :]  # [T, 1, W, L]
        dy = rows - ay[:, p, None, None, :]  # [T, H, 1, L]
        px, py = ex[:, p, None, None, :], ey[:, p, None, None, :]
        t = tf.clip_by_value(
            tf.math.divide_no_nan(dx * px + dy * py, length2[:, p, None, None, :]), 0.0, 1.0
        )
        d2 = tf.square(dx - t * px) + tf.square(dy - t * py)
        return tf.maximum(acc, _gaussian(d2, sigma) * weight[:, p, None, None, :])

    return _over_persons(person, tf.shape(gx), grid_hw)


def _over_persons(person, shape, grid_hw):
    """Folds `person(acc, p)` over p in [0, P) from zeros [T, grid_h, grid_w, 17]: one
    person's volume in memory at a time."""
    gh, gw = grid_hw
    acc = tf.zeros(tf.stack([shape[0], gh, gw, NUM_CHANNELS]), tf.float32)
    _, acc = tf.while_loop(
        lambda p, _: p < shape[1],
        lambda p, acc: (p + 1, person(acc, p)),
        (tf.constant(0), acc),
        shape_invariants=(tf.TensorShape([]), tf.TensorShape([None, gh, gw, NUM_CHANNELS])),
    )
    return acc


def clip_heatmaps(
    x,
    y,
    scores,
    *,
    resized_hw,
    offset,
    crop_hw: Sequence[int],
    flip,
    stride: int,
    sigma: float,
    score_threshold: float,
    limbs: bool = False,
):
    """The heatmap volume of one clip window under the clip's crop and mirroring.

    Args:
      x, y: float32 [T, P, 17] keypoints normalized to the stored frame; P persons (padding
        persons have score 0), P may be 0.
      scores: float32 [T, P, 17] keypoint scores in [0, 1].
      resized_hw, offset, crop_hw: the clip's geometry, as the images use it (`to_grid`).
      flip: bool scalar: mirror (x -> crop_w - x, left and right joints swapped).
      stride: crop pixels per heatmap cell (`grid_size`), >= 1.
      sigma: Gaussian standard deviation in heatmap cells, > 0.
      score_threshold: joints scoring below it are dropped, in [0, 1].
      limbs: limb heatmaps (`limb_heatmaps`) instead of joint heatmaps.

    Returns:
      float32 [T, ceil(crop_h / stride), ceil(crop_w / stride), 17] in [0, 1].
    """
    if not sigma > 0:
        raise ValueError(f"sigma={sigma}: must be > 0")
    grid_hw = grid_size(crop_hw, stride)
    scores = tf.where(scores >= score_threshold, scores, tf.zeros_like(scores))
    gx, gy = to_grid(
        x, y, resized_hw=resized_hw, offset=offset, crop_hw=crop_hw, grid_hw=grid_hw, flip=flip
    )
    perm = list(JOINT_FLIP)
    gx, gy, scores = (tf.where(flip, tf.gather(v, perm, axis=-1), v) for v in (gx, gy, scores))
    build = limb_heatmaps if limbs else keypoint_heatmaps
    return build(gx, gy, scores, grid_hw, float(sigma))
