"""Skeleton rendering for the pose stream: pure functions on numpy arrays.

- `RenderStyle`: frozen, validated variant config; `parse`/`to_spec`/`to_dict`/`from_dict`.
- `DEFAULT_STYLE`: the paper's best variant: RGB background, fine-colored, ratio-aware bars.
- `VARIANTS`: every background x marker x colors x thickness combination, by short name.
- `TABLE2_VARIANTS`: the names of the paper's Table 2 rows, in its order.
- `variant_name`: the short name of a style's variant.
- `render_poses`: draws P people's COCO-17 skeletons onto a uint8 [H, W, 3] RGB frame.
- `marker_sizes`: bar thickness or dot radius per person in px, for a style.
- `PALETTE`: the 13 fine colors (name -> RGB).
- `COARSE_GROUPS`: the 6 coarse groups (name, RGB).
- `SEGMENTS`: the 13 limb segments (name, joint links, coarse group, fine color name).
- `JOINT_COLORS`, `JOINT_GROUPS`: fine dot color name and coarse group per COCO joint.
- `MID_SHOULDER`: the virtual joint index (17) of the shoulder midpoint.
"""

from render.palette import (
    COARSE_GROUPS,
    JOINT_COLORS,
    JOINT_GROUPS,
    MID_SHOULDER,
    PALETTE,
    SEGMENTS,
)
from render.skeleton import (
    DEFAULT_STYLE,
    TABLE2_VARIANTS,
    VARIANTS,
    RenderStyle,
    marker_sizes,
    render_poses,
    variant_name,
)

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
    "variant_name",
]
