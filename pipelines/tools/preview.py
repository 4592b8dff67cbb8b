"""Pictures of a record: a contact sheet of its streams and a sheet of every rendering variant.

    python -m pipelines.tools.preview OUTPUT_DIR (--id ID | --index N) [--split S] --out DIR
        [--frames K] [--thumb_height PX] [--flow_max PX] [--full_frame]

Writes two PNGs into DIR (local or gs://) and prints their paths:

- `<id>_sheet.png`, the contact sheet: K frames sampled evenly over the clip (default 6) in
  columns; rows RGB, pose-rendered (as stored) and flow (TV-L1, frame t to t + 1, decoded from the
  stored quantized JPEG and shown with the Middlebury color wheel of `flow.visualize`), one row
  per stream the record holds, each labelled; under each column the frame index and its
  timestamp in seconds of the source video. Under the flow row's label, a legend: the color
  wheel and its scale, the rim being `--flow_max` pixels per frame (default: chosen per record,
  the 99th percentile of the shown flow's length rounded up to 1, 2, 3, 5, 10, 15 or 20 px). A
  pose tile whose frame has no person is framed in red (3 px) and labelled `no person` in white
  on red at its top left, so that frames where the pose estimator found no one stand out.
- `<id>_variants.png`, the variant sheet: the frame with the most people (the first such),
  re-rendered from its stored keypoints on its stored RGB frame in every variant of
  `render.VARIANTS` (16), as a 4 x 4 grid (rows background x marker, columns colors x
  thickness), each tile labelled with its variant name; the rows of the paper's Table 2 are
  framed in orange and labelled `T2 #row` in the paper's order. Tiles show the people's region
  (their boxes and keypoints, with a margin, at least 40 % of the frame tall) unless
  `--full_frame`.

Thumbnails are `--thumb_height` pixels tall (default 180 for the contact sheet, wide frames
shorter so that none is wider than 1.6 times that; 200 for the variant sheet); when a PNG would
exceed 1.5 MB its thumbnails are made smaller until it fits. Only the sampled frames' images are
decoded (and one frame for the variants).

The record is chosen by `--id` (its `example/id`) or `--index` (0-based, in the description's
split order and shard order, or within `--split`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import sys

import cv2
import numpy as np

from flow.tvl1 import dequantize_flow
from flow.visualize import color_wheel, flow_to_color
from pipelines.stages.codec import decode_jpeg
from pipelines.storage import output
from pipelines.tools import export
from render import TABLE2_VARIANTS, VARIANTS, render_poses
from schemas import media_sequence as ms

DEFAULT_FRAMES = 6
DEFAULT_THUMB_HEIGHT = 180
DEFAULT_VARIANT_THUMB_HEIGHT = 200
MAX_PNG_BYTES = 1_500_000
MIN_THUMB_HEIGHT = 64
MAX_THUMB_HEIGHT = 512
FLOW_SCALES = (1.0, 2.0, 3.0, 5.0, 10.0, 15.0, 20.0)  # px: the automatic legend scales

# Layout, pixels and colors (RGB).
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
MUTED = (90, 90, 90)
TILE_BORDER = (150, 150, 150)
TABLE2_BORDER = (255, 140, 0)
MARGIN = 10
GAP = 6
FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.45
TITLE_SCALE = 0.55
LINE_PX = 17  # height of one line of text at FONT_SCALE, with spacing
MAX_THUMB_ASPECT = 1.6  # contact sheet thumbnails are at most this times thumb_height wide
LEGEND_MIN_PX = 72  # the flow legend column is at least this wide
VARIANT_MIN_COL_PX = 130  # variant sheet columns are at least this wide
TABLE2_TEXT = (190, 80, 0)  # labels of the Table 2 variants
NO_PERSON = (220, 0, 0)  # frame and label background of a pose tile whose frame has no person
NO_PERSON_TEXT = (255, 255, 255)
NO_PERSON_BORDER_PX = 3
NO_PERSON_LABEL_PX = 16  # height of the label strip at the tile's top left


@dataclasses.dataclass(frozen=True)
class Tile:
    """Where one picture sits on a sheet: name, and its box in sheet pixels (y, x, h, w)."""

    name: str
    y: int
    x: int
    height: int
    width: int

    def crop(self, image: np.ndarray) -> np.ndarray:
        return image[self.y : self.y + self.height, self.x : self.x + self.width]


@dataclasses.dataclass
class Sheet:
    """A composed sheet: uint8 [H, W, 3] RGB image, its tiles, and facts about what it shows."""

    image: np.ndarray
    tiles: list[Tile]
    facts: dict


# ---------------------------------------------------------------------------------------------
# Finding a record.
# ---------------------------------------------------------------------------------------------
def find_record(
    output_dir: str,
    example_id: str | None = None,
    index: int | None = None,
    split: str | None = None,
) -> tuple[str, object]:
    """(split, parsed SequenceExample) of the record with `example_id`, or at position `index`.

    Exactly one of `example_id` and `index` (0-based, >= 0). Raises ValueError naming the id or
    index and the output directory when there is no such record.
    """
    if (example_id is None) == (index is None):
        raise ValueError("give exactly one of example_id and index")
    if index is not None and (isinstance(index, bool) or not isinstance(index, int) or index < 0):
        raise ValueError(f"index={index!r}: must be an integer >= 0")
    where = f"{output_dir}" + (f" (split {split!r})" if split else "")
    count = 0
    for name, _, data in output.iter_dataset_records(output_dir, split):
        if index is not None:
            if count == index:
                return name, export.parse_example(data)
        else:
            example = export.parse_example(data)
            if export.context_value(example, ms.EXAMPLE_ID_KEY) == example_id:
                return name, example
        count += 1
    if index is not None:
        raise ValueError(f"index={index}: out of range, {where} holds {count} records")
    raise ValueError(f"example id {example_id!r}: not found in {where} ({count} records)")


# ---------------------------------------------------------------------------------------------
# Drawing helpers (RGB uint8 canvases).
# ---------------------------------------------------------------------------------------------
def _text_width(text: str, scale: float = FONT_SCALE) -> int:
    (w, _), _ = cv2.getTextSize(text, FONT, scale, 1)
    return w


def _put(canvas, text, x, y, scale=FONT_SCALE, color=TEXT, thickness=1) -> None:
    """Draws `text` with its baseline at row y, starting at column x."""
    cv2.putText(canvas, text, (int(x), int(y)), FONT, scale, color, thickness, cv2.LINE_AA)


def _put_centered(canvas, text, cx, y, scale=FONT_SCALE, color=TEXT) -> None:
    _put(canvas, text, cx - _text_width(text, scale) / 2, y, scale, color)


def _thumb(image: np.ndarray, height: int, width: int) -> np.ndarray:
    h, w = image.shape[:2]
    interp = cv2.INTER_AREA if height < h else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interp)


def _paste(canvas, image, y, x, border=TILE_BORDER, border_px=1) -> None:
    h, w = image.shape[:2]
    if border_px:
        cv2.rectangle(
            canvas,
            (x - border_px, y - border_px),
            (x + w + border_px - 1, y + h + border_px - 1),
            border,
            border_px,
        )
    canvas[y : y + h, x : x + w] = image


def _mark_no_person(canvas, image, tile: Tile) -> None:
    """Pastes `image` into `tile` of `canvas` (both uint8 RGB) framed NO_PERSON_BORDER_PX px wide
    in NO_PERSON and labelled `no person`: white text on a NO_PERSON strip NO_PERSON_LABEL_PX
    tall at the tile's top left, as wide as the text (at most the tile)."""
    b = NO_PERSON_BORDER_PX
    canvas[tile.y - b : tile.y + tile.height + b, tile.x - b : tile.x + tile.width + b] = NO_PERSON
    _paste(canvas, image, tile.y, tile.x, border_px=0)
    text = _fit_width("no person", tile.width - 6)
    w = min(tile.width, _text_width(text) + 6)
    h = min(tile.height, NO_PERSON_LABEL_PX)
    canvas[tile.y : tile.y + h, tile.x : tile.x + w] = NO_PERSON
    _put(canvas, text, tile.x + 3, tile.y + 12, color=NO_PERSON_TEXT)


def _persons(example) -> list[int] | None:
    """Persons per frame (`region/num_regions`), or None for a record without the pose modality."""
    lists = example.feature_lists.feature_list
    if ms.REGION_NUM_REGIONS_KEY not in lists:
        return None
    return [int(f.int64_list.value[0]) for f in lists[ms.REGION_NUM_REGIONS_KEY].feature]


def _fit_width(text: str, width: int, scale: float = FONT_SCALE) -> str:
    """`text`, shortened with '..' to fit `width` px."""
    if _text_width(text, scale) <= width:
        return text
    while text and _text_width(text + "..", scale) > width:
        text = text[:-1]
    return text + ".."


def _sample(count: int, k: int) -> list[int]:
    """Up to k indices spread evenly over range(count), first and last included."""
    if count <= k:
        return list(range(count))
    return sorted({int(round(i * (count - 1) / (k - 1))) for i in range(k)} if k > 1 else {0})


def _seconds(us: int) -> str:
    return f"{us / 1e6:.2f} s"


def _auto_flow_scale(flows: list[np.ndarray]) -> float:
    if not flows:
        return FLOW_SCALES[0]
    mags = np.concatenate([np.hypot(f[..., 0], f[..., 1]).reshape(-1) for f in flows])
    p99 = float(np.percentile(mags, 99)) if mags.size else 0.0
    for s in FLOW_SCALES:
        if p99 <= s:
            return s
    return FLOW_SCALES[-1]


def _context(example, key, default=None):
    try:
        return export.context_value(example, key)
    except ValueError:
        return default


def _images(example, prefix: str) -> list[bytes]:
    lists = example.feature_lists.feature_list
    key = ms.prefixed(prefix, ms.IMAGE_ENCODED)
    if key not in lists:
        return []
    return [f.bytes_list.value[0] for f in lists[key].feature]


def _timestamps(example, prefix: str) -> list[int]:
    lists = example.feature_lists.feature_list
    key = ms.prefixed(prefix, ms.IMAGE_TIMESTAMP)
    if key not in lists:
        return []
    return [f.int64_list.value[0] for f in lists[key].feature]


def _title(example, split: str) -> str:
    eid = _context(example, ms.EXAMPLE_ID_KEY, "?")
    label = _context(example, ms.CLIP_LABEL_STRING_KEY, "?")
    index = _context(example, ms.CLIP_LABEL_INDEX_KEY, "?")
    return f"{eid}   label {label} ({index})   split {split}"


def _check_thumb_height(thumb_height) -> int:
    if (
        isinstance(thumb_height, bool)
        or not isinstance(thumb_height, (int, np.integer))
        or not MIN_THUMB_HEIGHT <= thumb_height <= MAX_THUMB_HEIGHT
    ):
        raise ValueError(
            f"thumb_height={thumb_height!r}: must be an integer in "
            f"[{MIN_THUMB_HEIGHT}, {MAX_THUMB_HEIGHT}]"
        )
    return int(thumb_height)


# ---------------------------------------------------------------------------------------------
# The contact sheet.
# ---------------------------------------------------------------------------------------------
def contact_sheet(
    example,
    split: str = "",
    num_frames: int = DEFAULT_FRAMES,
    thumb_height: int = DEFAULT_THUMB_HEIGHT,
    flow_max: float | None = None,
) -> Sheet:
    """The contact sheet of a parsed record (see the module docstring).

    Args:
      example: a `tf.train.SequenceExample` of the record contract.
      split: the record's split, for the title.
      num_frames: K, columns, >= 1; fewer when the clip has fewer frames.
      thumb_height: thumbnail height in pixels, in [64, 512]; widths keep the frame's aspect,
        and wide frames get shorter thumbnails so that none is wider than 1.6 x thumb_height.
      flow_max: flow length in pixels at the legend wheel's rim, > 0; None to choose it.

    Returns:
      a `Sheet`; tiles named `<row>/<column>` with row in rgb, pose, flow and column 0..K'-1, plus
      `legend` (the color wheel). facts: frames (the sampled frame indices), timestamps_us,
      flow_max (None without flow), rows, thumb_height, thumb_width, persons (persons in each
      sampled frame; None without the pose modality), no_person (the columns whose pose tile is
      marked: no person in that frame).
    """
    thumb_height = _check_thumb_height(thumb_height)
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames={num_frames!r}: must be an integer >= 1")
    if flow_max is not None and not (math.isfinite(flow_max) and flow_max > 0):
        raise ValueError(f"flow_max={flow_max!r}: must be a finite number > 0 (pixels)")
    streams = [
        ("rgb", "RGB", ms.RGB_PREFIX),
        ("pose", "pose", ms.POSE_RENDERED_PREFIX),
        ("flow", "flow", ms.FORWARD_FLOW_PREFIX),
    ]
    encoded = {name: _images(example, prefix) for name, _, prefix in streams}
    rows = [(name, label) for name, label, _ in streams if encoded[name]]
    if not rows:
        raise ValueError("the record holds no image stream")
    persons = _persons(example)
    image_streams = [n for n in ("rgb", "pose") if encoded[n]]
    if image_streams:
        ts = _timestamps(example, ms.MODALITY_PREFIX[image_streams[0]])
        frame_count = len(ts)
    else:  # flow only: T = flow steps + 1
        ts = _timestamps(example, ms.FORWARD_FLOW_PREFIX)
        frame_count = len(ts) + 1
    # With flow, sample among frames 0..T-2 so that every column has its flow t -> t + 1.
    span = len(encoded["flow"]) if encoded["flow"] else frame_count
    frames = _sample(max(span, 1), num_frames)
    prefix = ms.MODALITY_PREFIX[image_streams[0]] if image_streams else ms.FORWARD_FLOW_PREFIX
    height = int(_context(example, ms.prefixed(prefix, ms.IMAGE_HEIGHT)))
    width = int(_context(example, ms.prefixed(prefix, ms.IMAGE_WIDTH)))
    th = thumb_height
    tw = max(1, int(round(width * th / height)))
    if tw > MAX_THUMB_ASPECT * thumb_height:
        tw = int(MAX_THUMB_ASPECT * thumb_height)
        th = max(1, int(round(height * tw / width)))
    saturation = float(
        _context(
            example, ms.prefixed(ms.FORWARD_FLOW_PREFIX, ms.IMAGE_SATURATION), ms.FLOW_SATURATION
        )
    )

    pictures: dict[str, list[np.ndarray]] = {}
    flows = []
    for name, _ in rows:
        if name == "flow":
            flows = [dequantize_flow(decode_jpeg(encoded["flow"][t]), saturation) for t in frames]
        else:
            pictures[name] = [_thumb(decode_jpeg(encoded[name][t]), th, tw) for t in frames]
    scale = float(flow_max) if flow_max is not None else _auto_flow_scale(flows)
    rim = f"rim {scale:g} px"
    if flows:
        # Color at full resolution, then shrink: the colors of small flow survive the averaging.
        pictures["flow"] = [_thumb(flow_to_color(f, scale), th, tw) for f in flows]

    label_w = max(_text_width(label) for _, label in rows)
    if flows:
        label_w = max(label_w, _text_width(rim), LEGEND_MIN_PX)
    label_w += 2 * GAP
    col_w = max(tw, _text_width("#000  00.00 s") + GAP)
    header_h = MARGIN + 2 * LINE_PX + GAP
    grid_x = MARGIN + label_w
    sheet_w = grid_x + len(frames) * (col_w + GAP) - GAP + MARGIN
    sheet_h = header_h + len(rows) * (th + GAP) + 2 * LINE_PX + MARGIN
    canvas = np.full((sheet_h, sheet_w, 3), BACKGROUND, np.uint8)

    title = _fit_width(_title(example, split), sheet_w - 2 * MARGIN, TITLE_SCALE)
    _put(canvas, title, MARGIN, MARGIN + 13, TITLE_SCALE)
    sub = f"{frame_count} frames {width}x{height}"
    if flows:
        sub += f"; TV-L1 flow from frame t to t+1 in Middlebury colors: white = still, {rim}"
    _put(canvas, _fit_width(sub, sheet_w - 2 * MARGIN), MARGIN, MARGIN + 13 + LINE_PX, color=MUTED)

    no_person = []
    if persons is not None and "pose" in pictures:
        no_person = [c for c, t in enumerate(frames) if t < len(persons) and persons[t] == 0]
    tiles: list[Tile] = []
    for r, (name, label) in enumerate(rows):
        y = header_h + r * (th + GAP)
        _put(canvas, label, MARGIN, y + 13)
        for c, pic in enumerate(pictures[name]):
            x = grid_x + c * (col_w + GAP) + (col_w - tw) // 2
            tiles.append(Tile(f"{name}/{c}", y, x, th, tw))
            if name == "pose" and c in no_person:
                _mark_no_person(canvas, pic, tiles[-1])
            else:
                _paste(canvas, pic, y, x)
        if name == "flow":  # the legend, under the row's label: the wheel and its scale
            diameter = max(LEGEND_MIN_PX // 2, min(label_w - 2 * GAP, th - 2 * LINE_PX - GAP))
            wy = y + LINE_PX + 2
            wx = MARGIN + (label_w - GAP - diameter) // 2
            canvas[wy : wy + diameter, wx : wx + diameter] = color_wheel(
                diameter, scale, BACKGROUND
            )
            tiles.append(Tile("legend", wy, wx, diameter, diameter))
            _put_centered(canvas, rim, wx + diameter / 2, wy + diameter + 14)
    y = header_h + len(rows) * (th + GAP) + 13
    for c, t in enumerate(frames):
        cx = grid_x + c * (col_w + GAP) + col_w / 2
        stamp = ts[t] if t < len(ts) else None
        text = f"#{t}" + (f"  {_seconds(stamp)}" if stamp is not None else "")
        _put_centered(canvas, text, cx, y)
    _put(canvas, "frame index and time in the source video", grid_x, y + LINE_PX, color=MUTED)
    facts = {
        "frames": frames,
        "timestamps_us": [ts[t] for t in frames if t < len(ts)],
        "flow_max": scale if flows else None,
        "rows": [name for name, _ in rows],
        "thumb_height": th,
        "thumb_width": tw,
        "persons": None if persons is None else [persons[t] for t in frames if t < len(persons)],
        "no_person": no_person,
    }
    return Sheet(canvas, tiles, facts)


# ---------------------------------------------------------------------------------------------
# The variant sheet.
# ---------------------------------------------------------------------------------------------
def _people_crop(clip: export.ClipPoses, t: int, height: int, width: int) -> tuple[int, ...]:
    """(y0, x0, y1, x1) px: frame t's people (boxes and keypoints) with a margin of 15 % of their
    extent, at least 40 % of the frame tall and 0.6 times as wide as tall where the frame allows."""
    boxes = clip.boxes[t]
    if not len(boxes):
        return 0, 0, height, width
    kp = clip.keypoints[t]
    ymin = min(boxes[:, 0].min(), kp[..., 1].min()) * height
    xmin = min(boxes[:, 1].min(), kp[..., 0].min()) * width
    ymax = max(boxes[:, 2].max(), kp[..., 1].max()) * height
    xmax = max(boxes[:, 3].max(), kp[..., 0].max()) * width
    pad = 0.15 * max(ymax - ymin, xmax - xmin)
    y0, y1 = _grow(ymin - pad, ymax + pad, 0.4 * height, height)
    x0, x1 = _grow(xmin - pad, xmax + pad, 0.6 * (y1 - y0), width)
    return y0, x0, y1, x1


def _grow(lo: float, hi: float, least: float, size: int) -> tuple[int, int]:
    """[lo, hi) widened about its centre to at least `least` px, then clipped to [0, size)."""
    if hi - lo < least:
        mid = (lo + hi) / 2
        lo, hi = mid - least / 2, mid + least / 2
    if lo < 0:
        lo, hi = 0, hi - lo
    if hi > size:
        lo, hi = lo - (hi - size), size
    return max(0, int(math.floor(lo))), min(size, int(math.ceil(hi)))


def variant_sheet(
    example,
    split: str = "",
    thumb_height: int = DEFAULT_VARIANT_THUMB_HEIGHT,
    full_frame: bool = False,
) -> Sheet:
    """One frame rendered in every `render.VARIANTS` variant (see the module docstring).

    Args:
      example: a `tf.train.SequenceExample` with the pose modality.
      split: the record's split, for the title.
      thumb_height: tile height in pixels, in [64, 512].
      full_frame: show the whole frame instead of the people's region.

    Returns:
      a `Sheet` with one tile per variant, named by the variant, in `VARIANTS` order. facts:
      frame (index), timestamp_us, persons, crop (y0, x0, y1, x1 in stored pixels), table2
      (variant name -> its row number in the paper's Table 2, 1-based).
    """
    thumb_height = _check_thumb_height(thumb_height)
    clip = export.clip_poses(example)
    if clip.num_frames == 0:
        raise ValueError(f"{clip.example_id}: the record has no frames")
    counts = clip.num_persons
    t = int(np.argmax(counts))
    rgb_jpegs = _images(example, ms.RGB_PREFIX)
    if rgb_jpegs:
        frame = decode_jpeg(rgb_jpegs[t])
    else:
        frame = np.zeros((clip.height, clip.width, 3), np.uint8)
    height, width = frame.shape[:2]
    y0, x0, y1, x1 = (0, 0, height, width) if full_frame else _people_crop(clip, t, height, width)
    th = thumb_height
    tw = max(1, int(round((x1 - x0) * th / (y1 - y0))))
    names = list(VARIANTS)
    table2 = {name: i + 1 for i, name in enumerate(TABLE2_VARIANTS)}
    # Grid: rows background x marker, columns colors x thickness (VARIANTS' product order).
    ncols = 4
    nrows = math.ceil(len(names) / ncols)
    col_w = max(tw, VARIANT_MIN_COL_PX)
    cell_h = th + GAP + 3 * LINE_PX
    header_h = MARGIN + 4 * LINE_PX + GAP
    sheet_w = 2 * MARGIN + ncols * (col_w + 2 * GAP) - 2 * GAP
    sheet_h = header_h + nrows * (cell_h + GAP) + MARGIN
    canvas = np.full((sheet_h, sheet_w, 3), BACKGROUND, np.uint8)

    lines = [
        f"frame #{t} at {_seconds(int(clip.timestamps_us[t]))}: {int(counts[t])} people, "
        "stored keypoints re-rendered",
        "orange: the paper's Table 2 rows (T2 #row)",
    ]
    if not rgb_jpegs:
        lines.append("no RGB stream: a black frame instead")
    elif (y0, x0, y1, x1) != (0, 0, height, width):
        lines.append(f"crop x {x0}-{x1}, y {y0}-{y1} of {width}x{height}")
    else:
        lines.append(f"full frame {width}x{height}")
    title = _fit_width(_title(example, split), sheet_w - 2 * MARGIN, TITLE_SCALE)
    _put(canvas, title, MARGIN, MARGIN + 13, TITLE_SCALE)
    for i, line in enumerate(lines):
        y = MARGIN + 13 + (i + 1) * LINE_PX
        _put(canvas, _fit_width(line, sheet_w - 2 * MARGIN), MARGIN, y, color=MUTED)

    tiles = []
    for i, name in enumerate(names):
        r, c = divmod(i, ncols)
        y = header_h + r * (cell_h + GAP)
        cell_x = MARGIN + c * (col_w + 2 * GAP)
        x = cell_x + (col_w - tw) // 2
        rendered = render_poses(
            frame, clip.keypoints[t], clip.scores[t], clip.boxes[t], VARIANTS[name]
        )
        tile = _thumb(rendered[y0:y1, x0:x1], th, tw)
        if name in table2:
            _paste(canvas, tile, y, x, TABLE2_BORDER, 3)
        else:
            _paste(canvas, tile, y, x)
        tiles.append(Tile(name, y, x, th, tw))
        background, marker, colors, thickness = name.split("_")
        cx = cell_x + col_w / 2
        ly = y + th + GAP + 12
        _put_centered(canvas, f"{background} {marker}", cx, ly)
        _put_centered(canvas, f"{colors} {thickness}", cx, ly + LINE_PX)
        marks = [f"T2 #{table2[name]}"] if name in table2 else []
        if name == names[0]:
            marks.append("default")
        if marks:
            _put_centered(canvas, ", ".join(marks), cx, ly + 2 * LINE_PX, color=TABLE2_TEXT)
    facts = {
        "frame": t,
        "timestamp_us": int(clip.timestamps_us[t]),
        "persons": int(counts[t]),
        "crop": (y0, x0, y1, x1),
        "table2": table2,
    }
    return Sheet(canvas, tiles, facts)


# ---------------------------------------------------------------------------------------------
# Writing.
# ---------------------------------------------------------------------------------------------
def encode_png(image: np.ndarray) -> bytes:
    """uint8 [H, W, 3] RGB -> PNG bytes (zlib level 6: level 9 is up to 10x slower on smooth
    images for under 1 % smaller files)."""
    ok, buf = cv2.imencode(
        ".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 6]
    )
    if not ok:
        raise ValueError(f"cannot encode a {image.shape} image as PNG")
    return buf.tobytes()


def _small_png(make, thumb_height: int, max_bytes: int) -> tuple[bytes, Sheet]:
    """Encodes `make(thumb_height)`; while over `max_bytes`, remakes it with smaller thumbnails.

    Bytes grow about with the thumbnails' area, so each retry scales thumb_height by
    0.95 * sqrt(max_bytes / bytes), and by at least 10 %, down to MIN_THUMB_HEIGHT.
    """
    while True:
        sheet = make(thumb_height)
        png = encode_png(sheet.image)
        if len(png) <= max_bytes or thumb_height <= MIN_THUMB_HEIGHT:
            return png, sheet
        factor = min(0.9, 0.95 * math.sqrt(max_bytes / len(png)))
        thumb_height = max(MIN_THUMB_HEIGHT, int(thumb_height * factor))


def safe_name(example_id: str) -> str:
    """`example_id` as a file name: characters other than [A-Za-z0-9._-] become '_'."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", example_id) or "record"


def preview(
    output_dir: str,
    out_dir: str,
    example_id: str | None = None,
    index: int | None = None,
    split: str | None = None,
    num_frames: int = DEFAULT_FRAMES,
    thumb_height: int | None = None,
    flow_max: float | None = None,
    full_frame: bool = False,
    max_bytes: int = MAX_PNG_BYTES,
) -> list[str]:
    """Writes the record's sheets into `out_dir`; returns their paths (the variant sheet only
    where the record holds keypoints)."""
    output_dir = output_dir.rstrip("/")
    name, example = find_record(output_dir, example_id, index, split)
    eid = export.context_value(example, ms.EXAMPLE_ID_KEY)
    if "://" not in out_dir:
        import os

        os.makedirs(out_dir, exist_ok=True)
    paths = []
    png, _ = _small_png(
        lambda h: contact_sheet(example, name, num_frames, h, flow_max),
        thumb_height or DEFAULT_THUMB_HEIGHT,
        max_bytes,
    )
    path = output.join(out_dir, f"{safe_name(eid)}_sheet.png")
    output.write_bytes(path, png)
    paths.append(path)
    if ms.REGION_NUM_REGIONS_KEY in example.feature_lists.feature_list:
        png, _ = _small_png(
            lambda h: variant_sheet(example, name, h, full_frame),
            thumb_height or DEFAULT_VARIANT_THUMB_HEIGHT,
            max_bytes,
        )
        path = output.join(out_dir, f"{safe_name(eid)}_variants.png")
        output.write_bytes(path, png)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    """The command line; native libraries' log lines are held back (`pipelines.runtime.quiet`), and
    Beam's credential lookup is skipped where a GCS emulator is asked for
    (`pipelines.storage.gcs`)."""
    from pipelines.runtime import quiet
    from pipelines.storage.gcs import configure_emulator

    configure_emulator()  # only with STORAGE_EMULATOR_HOST set (tests, local trials)
    with quiet.native_logs_filtered(verbose=os.environ.get("PERFNET_VERBOSE") == "1"):
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="perfnet-preview",
        description="Writes PNG contact sheets of one record: its streams and every variant.",
    )
    parser.add_argument("output_dir", help="a finished output directory (local or gs://)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", dest="example_id", help="the record's example/id")
    which.add_argument("--index", type=int, help="0-based position of the record")
    parser.add_argument("--split", default=None, help="only look in this split")
    parser.add_argument("--out", required=True, help="directory for the PNGs (local or gs://)")
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help="columns, K")
    parser.add_argument("--thumb_height", type=int, default=None, help="thumbnail height, px")
    parser.add_argument("--flow_max", type=float, default=None, help="flow at the rim, px")
    parser.add_argument("--full_frame", action="store_true", help="variants: no crop")
    args = parser.parse_args(argv)
    try:
        paths = preview(
            args.output_dir,
            args.out,
            example_id=args.example_id,
            index=args.index,
            split=args.split,
            num_frames=args.frames,
            thumb_height=args.thumb_height,
            flow_max=args.flow_max,
            full_frame=args.full_frame,
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"perfnet-preview: error: {e}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
