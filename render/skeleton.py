"""Rendering COCO-17 skeletons onto frames, every variant of the paper's section 3.1.

Pure functions on numpy arrays; OpenCV draws. `RenderStyle` selects the variant (background,
marker, colors, thickness rule); `render_poses` draws all people of one frame. The style, the
variant tables and `AA_WIDENING_PX` are defined in `render.style` (no OpenCV) and re-exported
here; `training.pose_render` draws the same styles in TensorFlow.

Geometry conventions:

- Normalized coordinates span the image: x = 0 is the left edge of column 0, x = 1 the right
  edge of column W - 1 (likewise y with rows), so pixel column c covers [c / W, (c + 1) / W) and
  its centre is at x = (c + 0.5) / W. Coordinates may lie outside [0, 1].
- A bar of thickness t px is a capsule (a segment with round caps) whose anti-aliased coverage
  across the bar sums to t px within 0.25 px (t >= 2; a t = 1 bar is one anti-aliased line,
  about 1.4 px of coverage); a dot of radius r px is a disc of diameter 2r px (about 0.25 px
  less). OpenCV's anti-aliased polygon fill adds about 1.54 px of fringe to any width
  (`AA_WIDENING_PX`, measured on OpenCV 5.0 and checked by the tests), so polygons are drawn that
  much narrower. Placement is sub-pixel: 1/16 px coordinates (OpenCV's `shift` = 4); a bar's
  centroid follows its keypoints to within 0.16 px.
- Ratio-aware sizes follow the person's box in pixels: t = max(1, round(k * sqrt(w * h))),
  rounding half up, at most max(H, W).
"""

from __future__ import annotations

import cv2
import numpy as np

from render import palette
from render.style import (  # noqa: F401  (re-exported: the style's one definition is render.style)
    AA_WIDENING_PX,
    BACKGROUNDS,
    COLOR_SCHEMES,
    DEFAULT_STYLE,
    MARKERS,
    TABLE2_VARIANTS,
    THICKNESS_RULES,
    VARIANTS,
    RenderStyle,
    variant_name,
)

SHIFT = 4  # fractional bits of OpenCV's fixed-point coordinates: 1/16 px
_ONE = 1 << SHIFT
_ARC_STEPS = 8  # polygon edges per semicircular cap (outline within 2 % of the radius)
_LINE_AA = cv2.LINE_AA


def _check_inputs(frame, keypoints, scores, boxes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        got = frame.dtype if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ValueError(f"frame: must be a uint8 numpy array [H, W, 3], got {got}")
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 1 or frame.shape[1] < 1:
        raise ValueError(f"frame: must have shape [H, W, 3], got {frame.shape}")
    arrays = []
    for name, value, tail in (
        ("keypoints", keypoints, (palette.NUM_JOINTS, 2)),
        ("scores", scores, (palette.NUM_JOINTS,)),
        ("boxes", boxes, (4,)),
    ):
        a = np.asarray(value)
        dims = ", ".join(["P", *map(str, tail)])
        if a.ndim != 1 + len(tail) or a.shape[1:] != tail:
            raise ValueError(f"{name}: must have shape [{dims}], got {a.shape}")
        if a.size and not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"{name}: must be floating point [{dims}], got dtype {a.dtype}")
        arrays.append(a.astype(np.float64, copy=False))
    kp, sc, bx = arrays
    if not kp.shape[0] == sc.shape[0] == bx.shape[0]:
        raise ValueError(
            f"keypoints, scores, boxes: person counts differ: keypoints {kp.shape}, "
            f"scores {sc.shape}, boxes {bx.shape}"
        )
    return kp, sc, bx


def _to_pixels(keypoints: np.ndarray, height: int, width: int) -> np.ndarray:
    """float64 [P, 17, 2] normalized x, y -> float64 [P, 17, 2] OpenCV pixel coordinates."""
    with np.errstate(over="ignore", invalid="ignore"):
        return keypoints * np.array([width, height], np.float64) - 0.5


def _usable(px: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """bool [P, 17]: finite coordinates and a score >= threshold (NaN scores fail)."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(px).all(axis=-1) & (scores >= threshold)


def _marker_sizes(
    boxes: np.ndarray, px: np.ndarray, ok: np.ndarray, height: int, width: int, style: RenderStyle
) -> np.ndarray:
    count = boxes.shape[0]
    dots = style.marker == "dots"
    if style.thickness == "uniform":
        return np.full(count, style.dot_uniform_px if dots else style.uniform_px, np.int64)
    k = style.dot_ratio_k if dots else style.ratio_k
    with np.errstate(over="ignore", invalid="ignore"):
        w = (boxes[:, 3] - boxes[:, 1]) * width
        h = (boxes[:, 2] - boxes[:, 0]) * height
        area = w * h
        missing = ~(np.isfinite(area) & (w > 0) & (h > 0))
    if missing.any():
        # Missing boxes: the extent of the person's usable keypoints instead.
        lo = np.where(ok[..., None], px, np.inf).min(axis=1)
        hi = np.where(ok[..., None], px, -np.inf).max(axis=1)
        with np.errstate(invalid="ignore"):
            ext = np.nan_to_num(np.clip(hi - lo, 0, None), nan=0.0, posinf=0.0)
        area = np.where(missing, ext[:, 0] * ext[:, 1], area)
    with np.errstate(invalid="ignore"):
        size = np.floor(k * np.sqrt(np.clip(area, 0, None)) + 0.5)
    size = np.nan_to_num(size, nan=1.0, posinf=float(max(height, width)))
    return np.clip(size, 1, max(height, width)).astype(np.int64)


def marker_sizes(
    boxes: np.ndarray, image_size: tuple[int, int], style: RenderStyle = DEFAULT_STYLE
) -> np.ndarray:
    """Bar thickness (marker "bars") or dot radius ("dots") per person, in px.

    Args:
      boxes: float [P, 4] normalized (ymin, xmin, ymax, xmax), may exceed [0, 1].
      image_size: (H, W) of the frame in px.
      style: the rendering style.

    Returns:
      int64 [P], each in [1, max(H, W)]. Ratio-aware: max(1, round(k * sqrt(w * h))), w, h the
      box size in px (round half up); a box with a non-finite or non-positive side gives 1 here
      (`render_poses` uses the keypoints' extent instead). Uniform: the style's fixed size.
    """
    bx = np.asarray(boxes, np.float64)
    if bx.ndim != 2 or bx.shape[1] != 4:
        raise ValueError(f"boxes: must have shape [P, 4], got {bx.shape}")
    height, width = int(image_size[0]), int(image_size[1])
    if height < 1 or width < 1:
        raise ValueError(f"image_size: must be positive (H, W), got {image_size}")
    none = np.zeros((bx.shape[0], palette.NUM_JOINTS), bool)
    px = np.zeros((bx.shape[0], palette.NUM_JOINTS, 2))
    return _marker_sizes(bx, px, none, height, width, style)


def _clip_segments(
    a: np.ndarray, b: np.ndarray, margin: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Liang-Barsky clipping of segments a-b ([N, 2] px) to the frame grown by `margin` [N].

    Returns the clipped a, b and a bool [N] mask of segments that touch the grown frame. Zero
    length segments (dots) are kept when inside.
    """
    lo = -margin
    hi_x = width - 1 + margin
    hi_y = height - 1 + margin
    d = b - a
    t0 = np.zeros(len(a))
    t1 = np.ones(len(a))
    keep = np.ones(len(a), bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        for p, q in (
            (-d[:, 0], a[:, 0] - lo),
            (d[:, 0], hi_x - a[:, 0]),
            (-d[:, 1], a[:, 1] - lo),
            (d[:, 1], hi_y - a[:, 1]),
        ):
            r = q / p
            keep &= ~((p == 0) & (q < 0))
            t0 = np.where(p < 0, np.maximum(t0, r), t0)
            t1 = np.where(p > 0, np.minimum(t1, r), t1)
    keep &= t0 <= t1
    return a + t0[:, None] * d, a + t1[:, None] * d, keep


_ARC = np.linspace(-np.pi / 2, np.pi / 2, _ARC_STEPS + 1)
# float64 [V, 2]: (along, across) unit offsets of a capsule outline; cap at b, then cap at a.
_CAPSULE = np.concatenate(
    [
        np.stack([np.cos(_ARC), np.sin(_ARC)], axis=1),
        np.stack([-np.cos(_ARC), -np.sin(_ARC)], axis=1),
    ]
)


def _draw_capsules(
    out: np.ndarray, a: np.ndarray, b: np.ndarray, width: np.ndarray, colors: np.ndarray
) -> None:
    """Draws N anti-aliased capsules a-b ([N, 2] px) of coverage width `width` [N] px, in order."""
    height, w_img = out.shape[:2]
    a, b, keep = _clip_segments(a, b, width / 2 + 2, height, w_img)
    if not keep.any():
        return
    a, b, width, colors = a[keep], b[keep], width[keep], colors[keep]
    d = b - a
    length = np.hypot(d[:, 0], d[:, 1])
    unit = np.where(length[:, None] > 0, d / np.where(length > 0, length, 1)[:, None], [1.0, 0.0])
    normal = np.stack([-unit[:, 1], unit[:, 0]], axis=1)
    half = np.maximum(width - AA_WIDENING_PX, 0) / 2
    along = _CAPSULE[None, :, 0:1] * unit[:, None, :] + _CAPSULE[None, :, 1:2] * normal[:, None, :]
    ends = np.where((_CAPSULE[:, 0] >= 0)[None, :, None], b[:, None, :], a[:, None, :])
    polys = np.rint((ends + half[:, None, None] * along) * _ONE).astype(np.int32)
    ends_fixed = np.rint(np.stack([a, b], axis=1) * _ONE).astype(np.int32)
    thin = width < 1.5
    for poly, end, color, is_thin in zip(polys, ends_fixed, colors.tolist(), thin.tolist()):
        if is_thin:
            cv2.line(out, end[0], end[1], color, 1, _LINE_AA, SHIFT)
        else:
            cv2.fillConvexPoly(out, poly, color, _LINE_AA, SHIFT)


def render_poses(
    frame: np.ndarray,
    keypoints: np.ndarray,
    scores: np.ndarray,
    boxes: np.ndarray,
    style: RenderStyle = DEFAULT_STYLE,
) -> np.ndarray:
    """Draws the skeletons of P people onto a frame; returns a new frame (the input is untouched).

    Args:
      frame: uint8 [H, W, 3] RGB.
      keypoints: float [P, 17, 2] normalized (x, y) of the COCO-17 joints (see the module
        docstring for the convention); may lie outside [0, 1]; NaN or inf means missing.
      scores: float [P, 17] keypoint scores, usually in [0, 1]; NaN means missing.
      boxes: float [P, 4] normalized (ymin, xmin, ymax, xmax) person boxes; they size ratio-aware
        markers. A box with a non-finite or non-positive side is replaced by the extent of the
        person's usable keypoints.
      style: the variant.

    Returns:
      uint8 [H, W, 3] RGB: the frame (or black) with the skeletons drawn, people in order (later
      on top). Bars: a segment is drawn when both its joints are usable (finite, score >=
      threshold); the head's nose-to-shoulder-midpoint bar needs the nose and both shoulders.
      Dots: a joint is drawn when usable.

    Raises:
      ValueError: naming the parameter, on a wrong type, dtype or shape.
    """
    kp, sc, bx = _check_inputs(frame, keypoints, scores, boxes)
    height, width = frame.shape[:2]
    if style.background == "rgb":
        out = np.array(frame, dtype=np.uint8, order="C", copy=True)
    else:
        out = np.zeros((height, width, 3), np.uint8)
    count = kp.shape[0]
    if count == 0:
        return out
    px = _to_pixels(kp, height, width)
    ok = _usable(px, sc, style.score_threshold)
    size = _marker_sizes(bx, px, ok, height, width, style).astype(np.float64)
    if style.marker == "bars":
        mid = (px[:, 5:6] + px[:, 6:7]) / 2
        px = np.concatenate([px, mid], axis=1)
        ok = np.concatenate([ok, ok[:, 5:6] & ok[:, 6:7]], axis=1)
        links = palette.LINKS
        draw = ok[:, links[:, 0]] & ok[:, links[:, 1]]  # [P, L]
        a, b = px[:, links[:, 0]], px[:, links[:, 1]]
        rgb = palette.SEGMENT_FINE_RGB if style.colors == "fine" else palette.SEGMENT_COARSE_RGB
        colors = np.broadcast_to(rgb[palette.LINK_SEGMENT], (count, *links.shape[:1], 3))
        widths = np.broadcast_to(size[:, None], draw.shape)
    else:
        draw = ok
        a = b = px
        rgb = palette.JOINT_FINE_RGB if style.colors == "fine" else palette.JOINT_COARSE_RGB
        colors = np.broadcast_to(rgb, (count, palette.NUM_JOINTS, 3))
        widths = np.broadcast_to(2 * size[:, None], draw.shape)
    if draw.any():
        _draw_capsules(out, a[draw], b[draw], widths[draw], colors[draw])
    return out
