"""Optical flow as color: the Middlebury color wheel of Baker et al. (pure numpy functions).

Baker, Scharstein, Lewis, Roth, Black, Szeliski, "A Database and Evaluation Methodology for
Optical Flow", IJCV 2011 (the Middlebury flow benchmark) codes a flow vector's direction as hue
and its length as saturation. This module implements that coding:

- `COLOR_WHEEL`: the 55 reference hues, uint8 [55, 3] RGB, in six ramps going around the wheel:
  red -> yellow (15 steps), yellow -> green (6), green -> cyan (4), cyan -> blue (11),
  blue -> magenta (13), magenta -> red (6). Each ramp raises or lowers one channel linearly,
  `floor(255 * i / n)` for step i of n.
- `flow_to_color(flow, max_magnitude)`: flow [H, W, 2] -> uint8 [H, W, 3] RGB.
- `color_wheel(diameter, max_magnitude)`: a legend disc, the coding applied to a grid of vectors.

Conventions (image coordinates: x to the right, y down, as the flow streams store them):

- direction: the angle `a = atan2(dy, dx)` taken in [0, 2 pi) indexes the wheel at
  `k = a / (2 pi) * 55`, interpolating linearly between neighbouring hues and from the last hue
  back to the first, so the coding is continuous all around. (The Middlebury reference code
  scales by 54 instead of 55, which leaves a seam just below +x: a horizontal flow with a tiny
  upward component, such as the quantization noise of the stored flow, jumps from red to
  (255, 0, 43). Elsewhere the two differ by less than one of the 55 hue steps.) Rightward
  (+x) is red (255, 0, 0); downward (+y) orange-yellow (255, 233, 0); leftward (-x) azure
  (0, 197, 255); upward (-y) violet (102, 0, 255).
- length: `r = |flow| / max_magnitude`. For r <= 1 the hue is blended towards white,
  `c = 255 - r * (255 - hue)`: zero flow is white (255, 255, 255), a vector of length
  `max_magnitude` has the full hue. Vectors longer than `max_magnitude` keep their hue at 75 %
  brightness (`c = 0.75 * hue`), which marks saturation in the picture.
- non-finite flow (NaN, inf: unknown) is black (0, 0, 0).
- channel values are floored to uint8, as the reference code does.
"""

from __future__ import annotations

import math

import numpy as np

# Steps of the six ramps around the wheel: red-yellow, yellow-green, green-cyan, cyan-blue,
# blue-magenta, magenta-red (Baker et al.'s choice, perceptually spaced hues).
_RAMPS = (15, 6, 4, 11, 13, 6)
# (channel, +1 rising / -1 falling) per ramp; the other channels are held where the last ramp
# left them.
_RAMP_CHANNEL = ((1, +1), (0, -1), (2, +1), (1, -1), (0, +1), (2, -1))


def _make_color_wheel() -> np.ndarray:
    rows = []
    color = [255, 0, 0]
    for steps, (channel, sign) in zip(_RAMPS, _RAMP_CHANNEL):
        for i in range(steps):
            ramp = (255 * i) // steps
            color[channel] = ramp if sign > 0 else 255 - ramp
            rows.append(tuple(color))
        color[channel] = 255 if sign > 0 else 0
    wheel = np.array(rows, np.uint8)
    wheel.setflags(write=False)
    return wheel


# uint8 [55, 3] RGB: the Middlebury hues in angle order, starting at +x (red) and turning towards
# +y (down in the image).
COLOR_WHEEL = _make_color_wheel()
NUM_HUES = len(COLOR_WHEEL)  # 55


def _check_max_magnitude(max_magnitude) -> float:
    if (
        isinstance(max_magnitude, bool)
        or not isinstance(max_magnitude, (int, float, np.integer, np.floating))
        or not math.isfinite(max_magnitude)
        or not max_magnitude > 0
    ):
        raise ValueError(f"max_magnitude={max_magnitude!r}: must be a finite number > 0 (pixels)")
    return float(max_magnitude)


def flow_to_color(flow: np.ndarray, max_magnitude: float) -> np.ndarray:
    """Codes a flow field as colors with the Middlebury wheel (see the module docstring).

    Args:
      flow: float [H, W, 2], (dx, dy) displacement in pixels, x to the right and y down.
      max_magnitude: the flow length in pixels that gets the full hue (the wheel's rim), > 0.
        Longer vectors are drawn at 75 % brightness.

    Returns:
      uint8 [H, W, 3] RGB. Zero flow is white; non-finite flow is black. Examples at
      `max_magnitude` length: (+m, 0) -> (255, 0, 0); (0, +m) -> (255, 233, 0);
      (-m, 0) -> (0, 197, 255); (0, -m) -> (102, 0, 255).

    Raises:
      ValueError: naming the parameter, on a wrong shape or a bad `max_magnitude`.
    """
    scale = _check_max_magnitude(max_magnitude)
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow.shape={flow.shape}: expected [H, W, 2]")
    if flow.size and not np.issubdtype(flow.dtype, np.number):
        raise ValueError(f"flow.dtype={flow.dtype}: expected a numeric type")
    dx = flow[..., 0].astype(np.float64)
    dy = flow[..., 1].astype(np.float64)
    finite = np.isfinite(dx) & np.isfinite(dy)
    dx = np.where(finite, dx, 0.0)
    dy = np.where(finite, dy, 0.0)
    angle = np.mod(np.arctan2(dy, dx), 2 * np.pi)  # [0, 2 pi]; 2 pi only by rounding
    position = angle / (2 * np.pi) * NUM_HUES
    k0 = np.floor(position).astype(np.int64)
    frac = (position - k0)[..., None]
    k0 = np.mod(k0, NUM_HUES)
    k1 = np.mod(k0 + 1, NUM_HUES)
    wheel = COLOR_WHEEL.astype(np.float64)
    hue = (1.0 - frac) * wheel[k0] + frac * wheel[k1]  # [H, W, 3] in [0, 255]
    radius = (np.hypot(dx, dy) / scale)[..., None]
    inside = radius <= 1.0
    color = np.where(inside, 255.0 - radius * (255.0 - hue), 0.75 * hue)
    # Floor, as the reference code; the epsilon keeps values that are integers in exact arithmetic
    # from flooring one step down through rounding error.
    out = np.floor(np.clip(color, 0.0, 255.0) + 1e-7).astype(np.uint8)
    out[~finite] = 0
    return out


def color_wheel(
    diameter: int, max_magnitude: float = 1.0, background: tuple[int, int, int] = (255, 255, 255)
) -> np.ndarray:
    """A legend for `flow_to_color`: the coding applied to the vectors of a disc.

    The pixel at offset (dx, dy) px from the disc's centre shows the flow
    `(dx, dy) / R * max_magnitude`, R = diameter / 2, so the rim shows flow of length
    `max_magnitude` pixels and the centre zero flow; rightward flow is to the right of the centre,
    downward flow below it. Pixels outside the disc are `background`; the rim is anti-aliased
    into it.

    Args:
      diameter: the disc's diameter in pixels, an integer in [8, 4096].
      max_magnitude: the flow length in pixels at the rim, > 0.
      background: uint8 RGB of the pixels outside the disc.

    Returns:
      uint8 [diameter, diameter, 3] RGB.
    """
    if isinstance(diameter, bool) or not isinstance(diameter, (int, np.integer)):
        raise ValueError(f"diameter={diameter!r}: must be an integer in [8, 4096]")
    if not 8 <= diameter <= 4096:
        raise ValueError(f"diameter={diameter!r}: must be an integer in [8, 4096]")
    scale = _check_max_magnitude(max_magnitude)
    radius = diameter / 2.0
    centres = np.arange(diameter, dtype=np.float64) + 0.5 - radius  # pixel centres, from centre
    dx, dy = np.meshgrid(centres, centres)
    distance = np.hypot(dx, dy)
    # Vectors past the rim are shortened to the rim's length: the coding would darken them
    # (saturation), but the anti-aliased edge should blend the rim's full hue into the background.
    shrink = np.maximum(distance / radius, 1.0)[..., None]
    # (1 - 1e-12): rounding must not push rim vectors past `scale`, into the darkened range.
    vectors = np.stack([dx, dy], axis=-1) / shrink / radius * (scale * (1 - 1e-12))
    disc = flow_to_color(vectors, scale).astype(np.float64)
    # Coverage of each pixel by the disc, anti-aliased over one pixel at the rim.
    coverage = np.clip(radius - distance + 0.5, 0.0, 1.0)[..., None]
    bg = np.asarray(background, np.float64).reshape(1, 1, 3)
    return np.rint(coverage * disc + (1.0 - coverage) * bg).astype(np.uint8)
