"""Pose quality against COCO-format keypoint annotations: COCO OKS AP and a few plain measures.

Used by `benchmarks/pose_quality.py`; usable on any COCO-format keypoint set. Scores:

- `AP`, `AP50`: COCO keypoint average precision (OKS thresholds 0.50:0.95, and 0.50), computed by
  pycocotools' own `COCOeval` (the reference implementation), 20 detections per image.
- `recall50`: share of annotated people matched at OKS >= 0.5 (COCOeval's recall, IoU 0.5).
- `found`: share of annotated people that some prediction matches with OKS > 0.3 (greedy,
  one-to-one, highest prediction score first): is the person there at all.
- `pck`: over the people `found`, the share of their annotated joints predicted within 0.2 of
  the longer side of the person's annotated box (PCK@0.2).

Annotations with other joint sets are mapped to COCO-17 by joint name (`to_coco17`): the COCO
joints a set lacks are marked unannotated (visibility 0), so OKS and PCK score only the joints
that correspond. An annotation without `area` gets its box area (w * h) as the OKS scale.
People with no annotated joint and crowd regions are not counted (as COCOeval ignores them).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import json
import os

import numpy as np

from pipelines.stages.pose_types import COCO_SIGMAS
from schemas import media_sequence as ms

COCO17 = ms.COCO17_JOINT_NAMES
OKS_SIGMAS = COCO_SIGMAS  # COCO's per-joint OKS constants, in COCO-17 order
FOUND_OKS = 0.3  # a prediction this close (OKS) to an annotated person has found them
PCK_FRACTION = 0.2  # PCK threshold, as a fraction of the longer side of the person's box


@dataclasses.dataclass(frozen=True)
class Image:
    """One annotated image: its id, file path and size in pixels."""

    id: int
    path: str
    width: int
    height: int


@dataclasses.dataclass
class KeypointSet:
    """A COCO-format keypoint set mapped to COCO-17: images and annotations (COCO dicts)."""

    name: str
    images: list[Image]
    annotations: list[dict]  # COCO annotation dicts, keypoints as 17 x (x, y, v)

    @property
    def num_people(self) -> int:
        """Annotated people that count: not crowd, at least one annotated joint."""
        return sum(1 for a in self.annotations if _counts(a))


def _counts(ann: dict) -> bool:
    return not ann.get("iscrowd", 0) and ann["num_keypoints"] > 0


def _joint_key(name: str) -> str:
    return name.strip().lower().replace(" ", "_")


def to_coco17(keypoints, names) -> np.ndarray:
    """A person's keypoints in another joint set -> float64 [17, 3] (x, y, v) in COCO-17 order.

    Args:
      keypoints: flat (x, y, v) triples for the first len(keypoints) / 3 names of `names`.
      names: the set's joint names ("Right Shoulder" and "right_shoulder" are the same joint).

    Returns:
      COCO-17 (x, y, v); a COCO joint the set does not have is (0, 0, 0), unannotated.
    """
    kp = np.asarray(keypoints, np.float64).reshape(-1, 3)
    if len(kp) > len(names):
        raise ValueError(f"keypoints: {len(kp)} joints, but the set names only {len(names)}")
    names = names[: len(kp)]  # sets that list extra joints stored apart (Human-Art's 21)
    index = {_joint_key(n): i for i, n in enumerate(names)}
    out = np.zeros((len(COCO17), 3))
    for j, name in enumerate(COCO17):
        if name in index:
            out[j] = kp[index[name]]
    return out


def load_coco_keypoints(json_path: str, name: str | None = None) -> KeypointSet:
    """Reads a COCO-format keypoint JSON; images are looked up beside it.

    An image whose `file_name` is not found as given is looked up by its path below the JSON's
    folder with leading folders dropped one at a time (sets that keep their dataset's own
    prefix, e.g. `HumanArt/images/real_human/...`).

    Raises:
      ValueError: no `categories[0].keypoints`, or an image file is missing (named).
    """
    with open(json_path, encoding="utf-8") as f:
        data = json.load(f)
    try:
        names = data["categories"][0]["keypoints"]
    except (KeyError, IndexError) as e:
        raise ValueError(f"{json_path}: no categories[0].keypoints ({e})") from None
    root = os.path.dirname(os.path.abspath(json_path))
    images = []
    for im in data["images"]:
        parts = im["file_name"].replace("\\", "/").split("/")
        candidates = [os.path.join(root, *parts[k:]) for k in range(len(parts))]
        path = next((p for p in candidates if os.path.isfile(p)), None)
        if path is None:
            raise ValueError(f"{json_path}: image {im['file_name']!r} not found under {root}")
        images.append(Image(int(im["id"]), path, int(im["width"]), int(im["height"])))
    annotations = []
    for a in data["annotations"]:
        kp = to_coco17(a["keypoints"], names)
        annotations.append(
            {
                "id": int(a["id"]),
                "image_id": int(a["image_id"]),
                "category_id": 1,
                "iscrowd": int(a.get("iscrowd") or 0),
                "bbox": [float(v) for v in a["bbox"]],
                "area": float(a.get("area") or a["bbox"][2] * a["bbox"][3]),
                "keypoints": kp.reshape(-1).tolist(),
                "num_keypoints": int((kp[:, 2] > 0).sum()),
            }
        )
    stem = os.path.basename(os.path.dirname(os.path.abspath(json_path)))
    return KeypointSet(name or stem, images, annotations)


def detection(image_id: int, keypoints_xy: np.ndarray, scores: np.ndarray, score: float) -> dict:
    """A COCO keypoint result: 17 joints in pixels (x, y), their scores, and the person score."""
    kp = np.concatenate(
        [np.asarray(keypoints_xy, np.float64).reshape(17, 2), np.reshape(scores, (17, 1))], axis=1
    )
    return {
        "image_id": int(image_id),
        "category_id": 1,
        "keypoints": kp.reshape(-1).tolist(),
        "score": float(score),
    }


def oks(pred_xy: np.ndarray, ann: dict) -> float:
    """COCO object keypoint similarity of predicted (x, y) [17, 2] pixels with one annotation."""
    gt = np.asarray(ann["keypoints"], np.float64).reshape(17, 3)
    visible = gt[:, 2] > 0
    if not visible.any():
        return 0.0
    d2 = ((np.asarray(pred_xy, np.float64)[:, :2] - gt[:, :2]) ** 2).sum(axis=1)
    e = d2 / (2 * OKS_SIGMAS) ** 2 / (ann["area"] + np.spacing(1)) / 2
    return float(np.exp(-e[visible]).mean())


def merge(sets: list[KeypointSet], detections: list[list[dict]]) -> tuple[KeypointSet, list]:
    """One pooled set (and its detections) from several, image and annotation ids made unique."""
    images, annotations, dets = [], [], []
    for k, (s, ds) in enumerate(zip(sets, detections, strict=True)):
        ids = {im.id: len(images) + i + 1 for i, im in enumerate(s.images)}
        images += [dataclasses.replace(im, id=ids[im.id]) for im in s.images]
        for a in s.annotations:
            annotations.append(dict(a, image_id=ids[a["image_id"]], id=(k + 1) * 10**9 + a["id"]))
        dets += [dict(d, image_id=ids[d["image_id"]]) for d in ds]
    return KeypointSet("pooled", images, annotations), dets


def score(kset: KeypointSet, dets: list[dict]) -> dict[str, float]:
    """AP, AP50, recall50, found, pck (module docstring) and n, the people counted."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    n = kset.num_people
    found, hits, joints = 0, 0, 0
    for im in kset.images:
        gts = [a for a in kset.annotations if a["image_id"] == im.id and _counts(a)]
        preds = sorted((d for d in dets if d["image_id"] == im.id), key=lambda d: -d["score"])
        used: set[int] = set()
        for d in preds:
            xy = np.asarray(d["keypoints"]).reshape(17, 3)[:, :2]
            best, best_j = FOUND_OKS, -1
            for j, a in enumerate(gts):
                similarity = oks(xy, a)
                if j not in used and similarity > best:
                    best, best_j = similarity, j
            if best_j < 0:
                continue
            used.add(best_j)
            found += 1
            gt = np.asarray(gts[best_j]["keypoints"]).reshape(17, 3)
            visible = gt[:, 2] > 0
            side = max(gts[best_j]["bbox"][2], gts[best_j]["bbox"][3])
            dist = np.linalg.norm(xy[visible] - gt[visible, :2], axis=1)
            hits += int((dist < PCK_FRACTION * side).sum())
            joints += int(visible.sum())
    out = {
        "n": n,
        "found": found / n if n else float("nan"),
        "pck": hits / joints if joints else float("nan"),
        "AP": 0.0,
        "AP50": 0.0,
        "recall50": 0.0,
    }
    if not dets or not n:
        return out
    gt = {
        "images": [{"id": im.id, "width": im.width, "height": im.height} for im in kset.images],
        "annotations": copy.deepcopy(kset.annotations),
        "categories": [{"id": 1, "name": "person", "keypoints": list(COCO17)}],
    }
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its progress
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(copy.deepcopy(dets)), "keypoints")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    out["AP"], out["AP50"] = float(evaluator.stats[0]), float(evaluator.stats[1])
    out["recall50"] = max(0.0, float(evaluator.eval["recall"][0, 0, 0, -1]))
    return out


def garbage_frames(seed: int = 0) -> dict[str, np.ndarray]:
    """Frames with no person on them, uint8 [360, 640, 3] RGB each, by name: uniform black,
    gray and white, uniform noise, a blocky decoding glitch (16 px blocks of noise), a frame
    decoded half (glitch above, the green of missing chroma below), a gradient and stripes. A
    pose estimator must report nobody on any of them. Reproducible for a given `seed`."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = 360, 640
    frames = {f"uniform {v}": np.full((h, w, 3), v, np.uint8) for v in (0, 128, 255)}
    frames["noise"] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    blocks = rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8)
    frames["blocky glitch"] = cv2.resize(blocks, (w, h), interpolation=cv2.INTER_NEAREST)
    green = np.zeros((h, w, 3), np.uint8)
    green[..., 1] = 135
    green[: h // 2] = frames["blocky glitch"][: h // 2]
    frames["half-decoded (green)"] = green
    frames["gradient"] = np.dstack([np.tile(np.linspace(0, 255, w).astype(np.uint8), (h, 1))] * 3)
    stripes = ((np.arange(w) // 16) % 2 * 255).astype(np.uint8)
    frames["stripes"] = np.dstack([np.tile(stripes, (h, 1))] * 3)
    return frames
