"""Skeleton render styles: the variants of the paper's section 3.1, without OpenCV.

The one definition of how skeletons are drawn, shared by the offline renderer
(`render.skeleton`, OpenCV) and the training-time renderer (`training.pose_render`, TensorFlow),
which may not import OpenCV: `RenderStyle` (validated, with its command-line spec), the variant
tables `VARIANTS` and `TABLE2_VARIANTS`, `style_from_text`, and `AA_WIDENING_PX`. Importing this
module (or `render.palette`) does not import OpenCV.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping
from typing import Any

BACKGROUNDS = ("rgb", "black")  # the RGB frame itself, or a black frame of the same size
MARKERS = ("bars", "dots")  # limb segments, or joints
COLOR_SCHEMES = ("fine", "coarse")  # 13 colors (one per segment / joint), or 6 groups
THICKNESS_RULES = ("ratio", "uniform")  # proportional to the person's box, or a fixed size


# Coverage OpenCV's LINE_AA polygon fill adds to a width (OpenCV 4.x-5.0): the offline renderer
# draws polygons this much narrower so that a bar's coverage sums to its thickness.
AA_WIDENING_PX = 1.54

# Spec keys accepted by `RenderStyle.parse` -> field names. `to_spec` writes the first of each.
_SPEC_KEYS: dict[str, str] = {
    "background": "background",
    "marker": "marker",
    "colors": "colors",
    "thickness": "thickness",
    "threshold": "score_threshold",
    "score_threshold": "score_threshold",
    "ratio_k": "ratio_k",
    "uniform_px": "uniform_px",
    "dot_ratio_k": "dot_ratio_k",
    "dot_uniform_px": "dot_uniform_px",
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "background": BACKGROUNDS,
    "marker": MARKERS,
    "colors": COLOR_SCHEMES,
    "thickness": THICKNESS_RULES,
}


@dataclasses.dataclass(frozen=True)
class RenderStyle:
    """How skeletons are drawn (the default is the paper's best variant).

    Attributes:
      background: "rgb" (draw on the frame) or "black" (draw on zeros of the frame's shape).
      marker: "bars" (the 13 limb segments) or "dots" (the 17 joints).
      colors: "fine" (13 colors: one per segment, or per joint with the 5 head joints sharing one)
        or "coarse" (6 group colors: left arm, right arm, body, head, left leg, right leg).
      thickness: "ratio" (size proportional to the person's box) or "uniform" (fixed size).
        Governs bar thickness and dot radius alike.
      score_threshold: a keypoint is used if its score >= this, in [0, 1]. Default 0.3.
      ratio_k: ratio-aware bar thickness in px is max(1, round(ratio_k * sqrt(w * h))), w, h the
        box size in px. Default 0.04: a standing person filling a 256 px tall frame (box about
        256 x 128 px, sqrt = 181) gets a 7 px bar; a 100 x 50 px person 3 px; under 20 x 10, 1 px.
      uniform_px: bar thickness in px under "uniform", >= 1. Default 3.
      dot_ratio_k: ratio-aware dot radius in px is max(1, round(dot_ratio_k * sqrt(w * h))).
        Default 0.03: radius 5 px (a 10 px disc) for the 256 x 128 px person above.
      dot_uniform_px: dot radius in px under "uniform", >= 1. Default 2 (a 4 px disc).
    """

    background: str = "rgb"
    marker: str = "bars"
    colors: str = "fine"
    thickness: str = "ratio"
    score_threshold: float = 0.3
    ratio_k: float = 0.04
    uniform_px: int = 3
    dot_ratio_k: float = 0.03
    dot_uniform_px: int = 2

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raises ValueError naming the first invalid field and its value."""
        for name, choices in _CHOICES.items():
            value = getattr(self, name)
            if not isinstance(value, str) or value not in choices:
                raise ValueError(f"{name}={value!r}: must be one of {', '.join(choices)}")
        t = self.score_threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= t <= 1.0:
            raise ValueError(f"score_threshold={t!r}: must be a number in [0, 1]")
        for name in ("ratio_k", "dot_ratio_k"):
            k = getattr(self, name)
            if (
                isinstance(k, bool)
                or not isinstance(k, (int, float))
                or not math.isfinite(k)
                or not k > 0
            ):
                raise ValueError(f"{name}={k!r}: must be a finite number > 0")
        for name in ("uniform_px", "dot_uniform_px"):
            px = getattr(self, name)
            if isinstance(px, bool) or not isinstance(px, int) or not 1 <= px <= 1000:
                raise ValueError(f"{name}={px!r}: must be an integer in [1, 1000]")

    @classmethod
    def parse(cls, spec: str) -> RenderStyle:
        """Parses a command-line spec, e.g. "background=black,marker=dots,threshold=0.5".

        Comma-separated key=value items; "" gives the defaults. Keys: background, marker, colors,
        thickness, threshold (or score_threshold), ratio_k, uniform_px, dot_ratio_k,
        dot_uniform_px, and variant=NAME (a `VARIANTS` name, setting background, marker, colors
        and thickness; explicit keys override it). Raises ValueError naming the bad item, key or
        value.
        """
        if not isinstance(spec, str):
            raise ValueError(f"spec={spec!r}: must be a string")
        values: dict[str, Any] = {}
        variant = None
        seen = set()
        for item in spec.split(","):
            item = item.strip()
            if not item:
                continue
            key, sep, raw = item.partition("=")
            key, raw = key.strip(), raw.strip()
            if not sep or not key:
                raise ValueError(f"render style item {item!r}: must be key=value")
            if key != "variant" and key not in _SPEC_KEYS:
                known = ", ".join(["variant", *_SPEC_KEYS])
                raise ValueError(f"render style key {key!r}: unknown; known keys: {known}")
            name = _SPEC_KEYS.get(key, key)
            if name in seen:
                raise ValueError(f"render style key {key!r}: given twice")
            seen.add(name)
            if key == "variant":
                if raw not in VARIANTS:
                    raise ValueError(
                        f"variant={raw!r}: unknown; known variants: {', '.join(VARIANTS)}"
                    )
                variant = VARIANTS[raw]
            elif name in _CHOICES:
                if raw not in _CHOICES[name]:
                    raise ValueError(f"{key}={raw!r}: must be one of {', '.join(_CHOICES[name])}")
                values[name] = raw
            elif name in ("uniform_px", "dot_uniform_px"):
                try:
                    values[name] = int(raw)
                except ValueError:
                    raise ValueError(f"{key}={raw!r}: must be an integer") from None
            else:
                try:
                    values[name] = float(raw)
                except ValueError:
                    raise ValueError(f"{key}={raw!r}: must be a number") from None
        base = variant if variant is not None else cls()
        try:
            return dataclasses.replace(base, **values)
        except ValueError as e:
            raise ValueError(f"render style {spec!r}: {e}") from None

    def to_spec(self) -> str:
        """The full spec string of this style, every field, parseable by `parse`."""
        items = []
        for f in dataclasses.fields(self):
            key = "threshold" if f.name == "score_threshold" else f.name
            value = getattr(self, f.name)
            items.append(f"{key}={value if isinstance(value, str) else repr(value)}")
        return ",".join(items)

    def to_dict(self) -> dict[str, Any]:
        """Every field by name, JSON-serializable, for the dataset description."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RenderStyle:
        """Inverse of `to_dict`; raises ValueError naming unknown keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"render style keys {unknown}: unknown; known: {sorted(names)}")
        return cls(**d)

    @property
    def name(self) -> str:
        """The short variant name, e.g. "rgb_bars_fine_ratio" (see `variant_name`)."""
        return variant_name(self)


DEFAULT_STYLE = RenderStyle()


def variant_name(style: RenderStyle) -> str:
    """The short name of a style's variant: "<background>_<marker>_<colors>_<thickness>"."""
    return f"{style.background}_{style.marker}_{style.colors}_{style.thickness}"


# Every variant combination (background x marker x colors x thickness), 16, name -> style with
# default sizes and threshold; the first is the default.
VARIANTS: Mapping[str, RenderStyle] = {
    variant_name(s): s
    for s in (
        RenderStyle(background=b, marker=m, colors=c, thickness=t)
        for b, m, c, t in itertools.product(BACKGROUNDS, MARKERS, COLOR_SCHEMES, THICKNESS_RULES)
    )
}

# The rows of the paper's Table 2 (background, marker, colors, ratio-aware), in its order.
TABLE2_VARIANTS: tuple[str, ...] = (
    "rgb_bars_coarse_uniform",
    "rgb_bars_coarse_ratio",
    "rgb_bars_fine_uniform",
    "black_dots_fine_ratio",
    "black_bars_fine_ratio",
    "rgb_dots_fine_ratio",
    "rgb_bars_fine_ratio",
)


def style_from_text(text: str) -> RenderStyle:
    """A style from a `VARIANTS` name (e.g. "rgb_dots_fine_ratio") or a `RenderStyle.parse`
    spec (e.g. "variant=rgb_dots_fine_ratio,threshold=0.5"; "" gives `DEFAULT_STYLE`).

    Raises ValueError naming the bad item, key or value (`RenderStyle.parse`).
    """
    if isinstance(text, str) and text.strip() in VARIANTS:
        return VARIANTS[text.strip()]
    return RenderStyle.parse(text)
