"""Skeleton rendering for the pose stream: pure functions on numpy arrays.

- `RenderStyle`: frozen, validated variant config; `parse`/`to_spec`/`to_dict`/`from_dict`.
- `DEFAULT_STYLE`: the paper's best variant: RGB background, fine-colored, ratio-aware bars.
- `VARIANTS`: every background x marker x colors x thickness combination, by short name.
- `TABLE2_VARIANTS`: the names of the paper's Table 2 rows, in its order.
- `variant_name`: the short name of a style's variant.
- `style_from_text`: a style from a variant name or a `RenderStyle.parse` spec.
- `render_poses`: draws P people's COCO-17 skeletons onto a uint8 [H, W, 3] RGB frame.
- `marker_sizes`: bar thickness or dot radius per person in px, for a style.
- `PALETTE`: the 13 fine colors (name -> RGB).
- `COARSE_GROUPS`: the 6 coarse groups (name, RGB).
- `SEGMENTS`: the 13 limb segments (name, joint links, coarse group, fine color name).
- `JOINT_COLORS`, `JOINT_GROUPS`: fine dot color name and coarse group per COCO joint.
- `MID_SHOULDER`: the virtual joint index (17) of the shoulder midpoint.

`render.style` and `render.palette` do not import OpenCV, and neither does importing this
package: `render_poses` and `marker_sizes` (`render.skeleton`, which draws with OpenCV) are
loaded on first use, so that the training package may use the styles and the palette where
OpenCV is not installed.
"""

from __future__ import annotations

import importlib
from typing import Any

from render.palette import (
    COARSE_GROUPS,
    JOINT_COLORS,
    JOINT_GROUPS,
    MID_SHOULDER,
    PALETTE,
    SEGMENTS,
)
from render.style import (
    DEFAULT_STYLE,
    TABLE2_VARIANTS,
    VARIANTS,
    RenderStyle,
    style_from_text,
    variant_name,
)

# Names of `render.skeleton` (OpenCV), imported on first access.
_SKELETON_NAMES = ("marker_sizes", "render_poses")

__all__ = [
    "COARSE_GROUPS",
    "DEFAULT_STYLE",
    "JOINT_COLORS",
    "JOINT_GROUPS",
    "MID_SHOULDER",
    "PALETTE",
    "SEGMENTS",
    "TABLE2_VARIANTS",
    "VARIANTS",
    "RenderStyle",
    "marker_sizes",
    "render_poses",
    "style_from_text",
    "variant_name",
]


def __getattr__(name: str) -> Any:
    if name in _SKELETON_NAMES:
        value = getattr(importlib.import_module("render.skeleton"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
