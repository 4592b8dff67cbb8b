"""The skeleton table: COCO-17 limb segments, their coarse groups and colors.

One constant table holds every color the renderer uses:

- `PALETTE`: the 13 fine colors, named, fully saturated RGB (HSV hues `k * 360 / 13`,
  S = V = 1, rounded to uint8), so any two differ by at least 27.7 degrees of hue;
- `SEGMENTS`: the 13 limb segments (numbered 1-13 in the docs, 0-based index here), each
  with its joint links, its coarse group and its fine color (a `PALETTE` name). Fine colors are
  assigned so that segments sharing a joint are at least 3 hue steps (83 degrees) apart;
- `JOINT_COLORS`: the 13 dot colors per COCO joint: the five head joints share the head's
  color, the 12 body joints have one `PALETTE` color each, assigned so that joints joined by a
  segment are at least 4 hue steps (111 degrees) apart;
- `COARSE_GROUPS`: the 6 coarse groups of the paper (left arm, right arm, body, head, left leg,
  right leg), each with its color: the 6 primary and secondary RGB colors;
- `JOINT_GROUPS`: the coarse group of each joint for coarse dots (shoulders and hips in body).

Colors are RGB (frames in this project are RGB; OpenCV draws the tuple as given). COCO joint
indices: 0 nose, 1 left eye, 2 right eye, 3 left ear, 4 right ear, 5 left shoulder, 6 right
shoulder, 7 left elbow, 8 right elbow, 9 left wrist, 10 right wrist, 11 left hip, 12 right hip,
13 left knee, 14 right knee, 15 left ankle, 16 right ankle. `MID_SHOULDER` (17) is a virtual joint,
the midpoint of the shoulders, present where both shoulders are.
"""

from __future__ import annotations

import types
from typing import NamedTuple

import numpy as np

from schemas.media_sequence import NUM_JOINTS  # COCO-17 keypoints per person

MID_SHOULDER = NUM_JOINTS  # virtual joint: midpoint of joints 5 and 6 (both past the threshold)

RGB = tuple[int, int, int]

# The 13 fine colors, in hue order (HSV hue k * 360 / 13, S = V = 1). Name -> RGB uint8.
PALETTE: types.MappingProxyType[str, RGB] = types.MappingProxyType(
    {
        "red": (255, 0, 0),  # hue 0.0
        "orange": (255, 118, 0),  # hue 27.7
        "yellow": (255, 235, 0),  # hue 55.4
        "lime": (157, 255, 0),  # hue 83.1
        "green": (39, 255, 0),  # hue 110.8
        "spring": (0, 255, 78),  # hue 138.5
        "aquamarine": (0, 255, 196),  # hue 166.2
        "sky": (0, 196, 255),  # hue 193.8
        "blue": (0, 78, 255),  # hue 221.5
        "ultramarine": (39, 0, 255),  # hue 249.2
        "violet": (157, 0, 255),  # hue 276.9
        "magenta": (255, 0, 235),  # hue 304.6
        "rose": (255, 0, 118),  # hue 332.3
    }
)


class CoarseGroup(NamedTuple):
    """One of the 6 coarse color groups: name and RGB uint8 color."""

    name: str
    color: RGB


# The paper's 6 coarse groups, in the paper's order; index = group id.
COARSE_GROUPS: tuple[CoarseGroup, ...] = (
    CoarseGroup("left_arm", (255, 0, 0)),  # red
    CoarseGroup("right_arm", (0, 0, 255)),  # blue
    CoarseGroup("body", (0, 255, 0)),  # green
    CoarseGroup("head", (255, 255, 0)),  # yellow
    CoarseGroup("left_leg", (255, 0, 255)),  # magenta
    CoarseGroup("right_leg", (0, 255, 255)),  # cyan
)
LEFT_ARM, RIGHT_ARM, BODY, HEAD, LEFT_LEG, RIGHT_LEG = range(6)


class Segment(NamedTuple):
    """One fine limb segment: name, joint links (pairs of joint indices), coarse group, color.

    `links` holds one pair for a limb; the head has five: nose to `MID_SHOULDER` and the face links.
    `group` indexes `COARSE_GROUPS`; `color` names a `PALETTE` entry.
    """

    name: str
    links: tuple[tuple[int, int], ...]
    group: int
    color: str


# The 13 limb segments, rows 1-13 (index = row - 1).
SEGMENTS: tuple[Segment, ...] = (
    Segment("left_upper_arm", ((5, 7),), LEFT_ARM, "green"),
    Segment("left_forearm", ((7, 9),), LEFT_ARM, "violet"),
    Segment("right_upper_arm", ((6, 8),), RIGHT_ARM, "orange"),
    Segment("right_forearm", ((8, 10),), RIGHT_ARM, "blue"),
    Segment("left_thigh", ((11, 13),), LEFT_LEG, "ultramarine"),
    Segment("left_shin", ((13, 15),), LEFT_LEG, "spring"),
    Segment("right_thigh", ((12, 14),), RIGHT_LEG, "aquamarine"),
    Segment("right_shin", ((14, 16),), RIGHT_LEG, "red"),
    Segment("shoulders", ((5, 6),), BODY, "sky"),
    Segment("hips", ((11, 12),), BODY, "lime"),
    Segment("left_flank", ((5, 11),), BODY, "rose"),
    Segment("right_flank", ((6, 12),), BODY, "magenta"),
    Segment("head", ((0, MID_SHOULDER), (0, 1), (0, 2), (1, 3), (2, 4)), HEAD, "yellow"),
)
HEAD_SEGMENT = 12  # index of the head in SEGMENTS

# Dot color (a PALETTE name) per COCO joint, fine mode.
JOINT_COLORS: tuple[str, ...] = (
    "yellow", "yellow", "yellow", "yellow", "yellow",  # 0-4 head: the head's color
    "magenta", "sky",  # 5, 6 shoulders
    "green", "orange",  # 7, 8 elbows
    "violet", "blue",  # 9, 10 wrists
    "lime", "rose",  # 11, 12 hips
    "ultramarine", "aquamarine",  # 13, 14 knees
    "spring", "red",  # 15, 16 ankles
)  # fmt: skip

# Coarse group per COCO joint, coarse dots.
JOINT_GROUPS: tuple[int, ...] = (
    HEAD, HEAD, HEAD, HEAD, HEAD,  # 0-4
    BODY, BODY,  # 5, 6 shoulders
    LEFT_ARM, RIGHT_ARM,  # 7, 8 elbows
    LEFT_ARM, RIGHT_ARM,  # 9, 10 wrists
    BODY, BODY,  # 11, 12 hips
    LEFT_LEG, RIGHT_LEG,  # 13, 14 knees
    LEFT_LEG, RIGHT_LEG,  # 15, 16 ankles
)  # fmt: skip

# Order in which a person's segments are drawn (later on top): head, torso, legs, arms.
DRAW_ORDER: tuple[int, ...] = (12, 10, 11, 9, 8, 4, 5, 6, 7, 0, 1, 2, 3)


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


# Derived arrays (read-only), for vectorized rendering and for tests.
# uint8 [13, 3]: fine color of each segment, in SEGMENTS order.
SEGMENT_FINE_RGB = _frozen(np.array([PALETTE[s.color] for s in SEGMENTS], np.uint8))
# uint8 [13, 3]: coarse color of each segment, in SEGMENTS order.
SEGMENT_COARSE_RGB = _frozen(np.array([COARSE_GROUPS[s.group].color for s in SEGMENTS], np.uint8))
# uint8 [17, 3]: fine dot color per joint.
JOINT_FINE_RGB = _frozen(np.array([PALETTE[c] for c in JOINT_COLORS], np.uint8))
# uint8 [17, 3]: coarse dot color per joint.
JOINT_COARSE_RGB = _frozen(np.array([COARSE_GROUPS[g].color for g in JOINT_GROUPS], np.uint8))
# int64 [L, 2]: every link to draw (L = 17), in DRAW_ORDER; joint 17 is MID_SHOULDER.
LINKS = _frozen(np.array([ln for i in DRAW_ORDER for ln in SEGMENTS[i].links], np.int64))
# int64 [L]: the segment index of each link in LINKS.
LINK_SEGMENT = _frozen(np.array([i for i in DRAW_ORDER for _ in SEGMENTS[i].links], np.int64))
