"""Person identities across frames: boxes predicted at constant velocity, matched optimally.

`IouTracker` gives each person box of a frame a track id. The job (`pipelines/stages/clip.py`) calls
`suppress_duplicates` on a frame's poses, then `IouTracker.update` with the kept boxes (and,
optionally, their keypoints), one tracker per clip, one call per frame in time order.
"""

from __future__ import annotations

import numbers

import numpy as np

from pipelines.stages.pose_types import COCO_SIGMAS, NUM_KEYPOINTS


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection over union.

    Args:
      a: float [N, 4], b: float [M, 4]; boxes as (ymin, xmin, ymax, xmax), any consistent unit.

    Returns:
      float32 [N, M] in [0, 1]; 0 where a box has no area.
    """
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ymin = np.maximum(a[:, None, 0], b[None, :, 0])
    xmin = np.maximum(a[:, None, 1], b[None, :, 1])
    ymax = np.minimum(a[:, None, 2], b[None, :, 2])
    xmax = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ymax - ymin, 0, None) * np.clip(xmax - xmin, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou.astype(np.float32)


def suppress_duplicates(boxes: np.ndarray, scores: np.ndarray, max_iou: float = 0.7) -> np.ndarray:
    """Indices of the people to keep when two detections are one person (non-maximum suppression).

    The pose estimator now and then returns one person twice (a tracked and a re-detected pose,
    boxes overlapping up to IoU 0.95). Going from the highest score down, a box is dropped when it
    overlaps a kept box by more than `max_iou`.

    Args:
      boxes: float [P, 4] (ymin, xmin, ymax, xmax); scores: float [P]; max_iou in (0, 1].

    Returns:
      int64 [K] indices into the inputs, K <= P, in increasing order.
    """
    if not 0.0 < max_iou <= 1.0:
        raise ValueError(f"max_iou={max_iou!r}: must be in (0, 1]")
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(f"boxes has {len(boxes)} rows but scores has {len(scores)}")
    iou = box_iou(boxes, boxes)
    keep: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if all(iou[i, k] <= max_iou for k in keep):
            keep.append(int(i))
    return np.asarray(sorted(keep), np.int64)


def max_weight_assignment(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pairs (row, column) of largest summed weight, each row and each column used at most once.

    Exact: the Hungarian method (Kuhn-Munkres with potentials), O(n^2 m) for n = min(N, M) and
    m = max(N, M); about 50 microseconds for 10 x 10. A weight <= 0 means "may not
    be paired": such pairs are never returned.

    Args:
      weights: float [N, M], finite, N, M >= 0.

    Returns:
      (rows, cols): int64 [K] each, K <= min(N, M), rows increasing; deterministic (the same
      weights give the same pairs).

    Raises:
      ValueError: `weights` is not 2-D or holds NaN or infinity.
    """
    w = np.asarray(weights, np.float64)
    if w.ndim != 2:
        raise ValueError(f"weights: expected a 2-D array [N, M], got shape {list(w.shape)}")
    if not np.all(np.isfinite(w)):
        raise ValueError("weights: expected finite values, got NaN or infinity")
    empty = np.zeros((0,), np.int64)
    if w.size == 0 or not np.any(w > 0):
        return empty, empty
    transposed = w.shape[0] > w.shape[1]
    # Minimize cost = -weight over pairs; forbidden pairs cost 0 and are dropped at the end.
    cost = (-np.where(w > 0, w, 0.0)).T if transposed else -np.where(w > 0, w, 0.0)
    n, m = cost.shape
    c = cost.tolist()
    inf = float("inf")
    u = [0.0] * (n + 1)
    v = [0.0] * (m + 1)
    p = [0] * (m + 1)  # p[j]: the row (1-based) assigned to column j; 0: none
    way = [0] * (m + 1)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = [inf] * (m + 1)
        used = [False] * (m + 1)
        while True:
            used[j0] = True
            i0 = p[j0]
            row = c[i0 - 1]
            ui0 = u[i0]
            delta = inf
            j1 = 0
            for j in range(1, m + 1):
                if not used[j]:
                    cur = row[j - 1] - ui0 - v[j]
                    if cur < minv[j]:
                        minv[j] = cur
                        way[j] = j0
                    if minv[j] < delta:
                        delta = minv[j]
                        j1 = j
            for j in range(m + 1):
                if used[j]:
                    u[p[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    pairs = [(p[j] - 1, j - 1) for j in range(1, m + 1) if p[j]]
    if transposed:
        pairs = [(b, a) for a, b in pairs]
    pairs = sorted((a, b) for a, b in pairs if w[a, b] > 0)
    if not pairs:
        return empty, empty
    rows, cols = zip(*pairs)
    return np.asarray(rows, np.int64), np.asarray(cols, np.int64)


def keypoint_similarity(
    keypoints_a: np.ndarray,
    scores_a: np.ndarray,
    keypoints_b: np.ndarray,
    scores_b: np.ndarray,
    area_b: np.ndarray,
    min_score: float = 0.3,
) -> np.ndarray:
    """OKS-like similarity of every pose of `a` to every pose of `b`.

    For a pair, the mean over the keypoints whose score is >= `min_score` in both poses of
    exp(-d^2 / (2 * area * (2 * sigma)^2)): d is the keypoint's distance, area the area of b's
    box and sigma the keypoint's COCO sigma (`COCO_SIGMAS`), as in COCO's OKS.

    Args:
      keypoints_a: float [N, 17, 2] (x, y), normalized as the boxes; scores_a: float [N, 17].
      keypoints_b: float [M, 17, 2]; scores_b: float [M, 17]; area_b: float [M] >= 0, the area
        of each b pose's box in the same normalized units.
      min_score: keypoint score threshold, in [0, 1].

    Returns:
      float32 [N, M] in [0, 1]; NaN where a pair has no keypoint confident in both.
    """
    ka = np.asarray(keypoints_a, np.float64).reshape(-1, NUM_KEYPOINTS, 2)
    kb = np.asarray(keypoints_b, np.float64).reshape(-1, NUM_KEYPOINTS, 2)
    sa = np.asarray(scores_a, np.float64).reshape(-1, NUM_KEYPOINTS)
    sb = np.asarray(scores_b, np.float64).reshape(-1, NUM_KEYPOINTS)
    area = np.asarray(area_b, np.float64).reshape(-1)
    d2 = np.sum((ka[:, None] - kb[None, :]) ** 2, axis=3)  # [N, M, 17]
    var = 2.0 * np.maximum(area, 1e-9)[None, :, None] * (2.0 * COCO_SIGMAS) ** 2
    both = (sa[:, None] >= min_score) & (sb[None, :] >= min_score)
    n = both.sum(axis=2)
    total = np.where(both, np.exp(-d2 / var), 0.0).sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / n, np.nan).astype(np.float32)


def _real(name: str, value, lo: float, hi: float = float("inf"), lo_open: bool = False) -> float:
    """`value` as a float, or ValueError naming the parameter when it is not in its range."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{']' if np.isfinite(hi) else ')'}"
        raise ValueError(f"{name}={value!r}: must be a number in {interval}")
    return float(value)


def _centers(boxes: np.ndarray) -> np.ndarray:
    """[N, 2] (y, x) centres of float [N, 4] (ymin, xmin, ymax, xmax) boxes."""
    return (boxes[:, :2] + boxes[:, 2:]) / 2.0


class IouTracker:
    """Assigns track ids to the person boxes of a clip, frame by frame.

    Each track remembers its person's last box and keypoints, and the velocity of the box's
    centre (per frame, smoothed). Per frame:

    1. Predict: a track last seen k frames ago is expected where its last box was, moved by its
       velocity times min(k, `max_coast_s` * fps) frames (constant velocity), so that two people
       who cross, or one who walks on behind another, keep their ids.
    2. Score every (box, track) pair. IoU of the box with the predicted box when that is
       >= `min_iou`; else, when the box's centre lies within the gate of the track, a score in
       [0, min_iou), the nearer the higher, so that any overlapping pair outranks any merely
       near one. The distance is to the predicted or to the last centre, whichever is nearer (a
       person may stop while hidden), in diagonals of the track's last box or of the new box,
       whichever is larger; the gate is `max_center_shift` + `gate_growth` * (seconds lost), at
       most `max_gate`: the longer a person is gone, the farther from where they were they may
       come back. With keypoints, plus `keypoint_weight` * `keypoint_similarity` (OKS-like) of
       the box's keypoints and the track's last ones, moved with the prediction.
    3. Match: the assignment of largest summed score (`max_weight_assignment`, exact).
    4. Unmatched boxes start new tracks at once (a person has an id in the first frame they are
       seen); tracks unseen for more than round(`max_lost_s` * fps) frames are forgotten.

    A box whose height or width changed by more than a factor of 1.25 since the track's last one
    (a box cut to the upper body, or whole again) moves the track but not its velocity.

    Ids are 0, 1, 2, ... in order of first appearance (within a frame, in box order). One tracker
    serves one clip; deterministic; not thread-safe.

    Defaults, measured with `benchmarks/track_bench.py`: on the sample clips (MoveNet) each
    visible person keeps one id (25 ids for 25 people; the previous tracker, greedy IoU on the
    last boxes with a 10-frame memory, used 30); on 200 made scenes with known identities (2-4
    people crossing, hidden, leaving), identity switches fall from 622 to 450, ids per person
    from 1.53 to 1.27, and IDF1 rises from 0.823 to 0.864.

    Args:
      fps: the rate of `update` calls (the clip's frame rate), frames per second, > 0.
      max_lost_s: how long a track that is not seen is remembered, seconds, >= 0: a person
        missed, hidden or out of the frame for at most round(max_lost_s * fps) frames keeps
        their id. 2 s: MoveNet misses the sports2d sample's athlete for 1.93 s during a flip,
        and a person standing at the edge of pose2sim_multi_cam01 for 0.35 s.
      min_iou: IoU with the predicted box at which a pair counts as overlapping, in (0, 1].
      max_center_shift: the gate of a track seen in the previous frame, diagonals, >= 0. 0.5:
        MoveNet's boxes of one person move by at most 0.07 diagonals frame to frame on the
        sample clips; the sports2d athlete comes back 0.49 diagonals from where they were lost.
      gate_growth: how fast the gate widens while a track is lost, diagonals per second, >= 0.
      max_gate: the widest gate, diagonals, >= `max_center_shift`; reached after 2 s.
      velocity_smoothing: weight of the previous velocity when a new centre comes in, in
        [0, 1); 0 uses the last displacement alone.
      max_coast_s: how long a lost track keeps moving at its velocity, seconds, >= 0.
      keypoint_weight: weight of the keypoint similarity in a pair's score, >= 0; used only when
        `update` is given keypoints.

    Raises:
      ValueError: a parameter is out of range; the message names it and its value.
    """

    # The matching step; class attributes so that a benchmark can swap in others.
    _assign = staticmethod(max_weight_assignment)
    # Largest frame-to-frame change of a box's height or width (a factor) that still moves the
    # track's velocity. On the sample clips MoveNet's box of a person changed by more than that
    # in 8 of 1638 pairs of consecutive frames (at most by 1.41).
    _size_change = 1.25

    def __init__(
        self,
        fps: float = 25.0,
        max_lost_s: float = 2.0,
        min_iou: float = 0.1,
        max_center_shift: float = 0.5,
        gate_growth: float = 0.25,
        max_gate: float = 1.0,
        velocity_smoothing: float = 0.5,
        max_coast_s: float = 1.0,
        keypoint_weight: float = 0.5,
    ):
        self._fps = _real("fps", fps, 0.0, lo_open=True)
        self._max_lost = int(round(_real("max_lost_s", max_lost_s, 0.0) * self._fps))
        self._min_iou = _real("min_iou", min_iou, 0.0, 1.0, lo_open=True)
        self._shift = _real("max_center_shift", max_center_shift, 0.0)
        self._growth = _real("gate_growth", gate_growth, 0.0)
        self._max_gate = _real("max_gate", max_gate, 0.0)
        if self._max_gate < self._shift:
            raise ValueError(
                f"max_gate={max_gate!r}: must be >= max_center_shift={max_center_shift!r}"
            )
        self._alpha = _real("velocity_smoothing", velocity_smoothing, 0.0, 1.0)
        if self._alpha >= 1.0:
            raise ValueError(f"velocity_smoothing={velocity_smoothing!r}: must be in [0, 1)")
        self._coast = int(round(_real("max_coast_s", max_coast_s, 0.0) * self._fps))
        self._kp_weight = _real("keypoint_weight", keypoint_weight, 0.0)
        self._ids = np.zeros((0,), np.int64)
        self._boxes = np.zeros((0, 4), np.float64)  # last box of each track
        self._vel = np.zeros((0, 2), np.float64)  # (dy, dx) of the centre per frame
        self._last_seen = np.zeros((0,), np.int64)  # frame index
        self._hits = np.zeros((0,), np.int64)  # frames matched
        self._kps = np.zeros((0, NUM_KEYPOINTS, 2), np.float64)  # last keypoints, (x, y)
        self._kp_scores = np.zeros((0, NUM_KEYPOINTS), np.float64)  # 0 where none were given
        self._frame = 0
        self._next_id = 0

    @property
    def num_tracks(self) -> int:
        """Tracks remembered now (seen within the last `max_lost_s`)."""
        return len(self._ids)

    def _similarity(
        self, boxes: np.ndarray, keypoints: np.ndarray | None, scores: np.ndarray | None
    ) -> np.ndarray:
        """float64 [P, T] pair scores, > 0 where a pair may be matched, 0 where not."""
        lost = self._frame - self._last_seen  # >= 1
        disp = self._vel * np.minimum(lost, self._coast)[:, None]  # (dy, dx)
        pred = self._boxes + np.concatenate([disp, disp], axis=1)
        iou = box_iou(boxes, pred).astype(np.float64)
        centers = _centers(boxes)[:, None, :]
        last = _centers(self._boxes)[None]
        shift = np.minimum(
            np.linalg.norm(centers - last - disp[None], axis=2),
            np.linalg.norm(centers - last, axis=2),
        )
        # In diagonals of the track's last box or of the new box, whichever is larger: a box cut
        # to the upper body (a small diagonal) is still near its person.
        diag = np.maximum(
            np.linalg.norm(self._boxes[:, 2:] - self._boxes[:, :2], axis=1)[None, :],
            np.linalg.norm(boxes[:, 2:] - boxes[:, :2], axis=1)[:, None],
        )
        shift = shift / np.maximum(diag, 1e-9)
        gate = np.minimum(self._shift + self._growth * (lost - 1) / self._fps, self._max_gate)
        within = shift <= gate[None, :]
        # IoU >= min_iou: the IoU; else, within the gate: a score in [0, min_iou), the nearer the
        # higher, so that any overlapping pair outranks any merely near one.
        with np.errstate(invalid="ignore", divide="ignore"):
            close = np.where(gate[None, :] > 0, np.clip(1.0 - shift / gate[None, :], 0, 1), 0.0)
        strong = iou >= self._min_iou
        score = np.where(strong, iou, 0.999 * self._min_iou * close)
        if keypoints is not None and self._kp_weight > 0:
            moved = self._kps + disp[:, None, ::-1]  # keypoints are (x, y)
            area = np.prod(self._boxes[:, 2:] - self._boxes[:, :2], axis=1)
            oks = keypoint_similarity(keypoints, scores, moved, self._kp_scores, area)
            score = score + self._kp_weight * np.nan_to_num(oks.astype(np.float64), nan=0.0)
        valid = strong | within
        # + 1e-6: a valid pair scores > 0 even at the edge of its gate.
        return np.where(valid, score + 1e-6, 0.0)

    def update(
        self,
        boxes: np.ndarray,
        keypoints: np.ndarray | None = None,
        scores: np.ndarray | None = None,
    ) -> np.ndarray:
        """Track ids for the people of the next frame.

        Args:
          boxes: float [P, 4] (ymin, xmin, ymax, xmax), normalized by the frame's height and
            width (any consistent unit works), P >= 0; an empty array of any shape is P = 0.
          keypoints: optional float [P, 17, 2] (x, y) in the boxes' units (`FramePoses`); with
            it, pair scores include keypoint similarity.
          scores: float [P, 17] keypoint scores in [0, 1]; required with `keypoints`.

        Returns:
          int64 [P] track ids, >= 0, distinct within the frame.

        Raises:
          ValueError: a shape does not fit, a value is not finite, or `keypoints` comes
            without `scores` (or the other way round); the message names the argument.
        """
        boxes = np.asarray(boxes, np.float64)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"boxes: expected shape [P, 4], got {list(boxes.shape)}")
        if not np.all(np.isfinite(boxes)):
            raise ValueError("boxes: expected finite values, got NaN or infinity")
        p = len(boxes)
        if (keypoints is None) != (scores is None):
            raise ValueError(
                "keypoints and scores: pass both or neither, got "
                f"keypoints={'None' if keypoints is None else 'an array'}, "
                f"scores={'None' if scores is None else 'an array'}"
            )
        if keypoints is not None:
            keypoints = np.asarray(keypoints, np.float64)
            scores = np.asarray(scores, np.float64)
            if keypoints.size == 0 and p == 0:
                keypoints = keypoints.reshape(0, NUM_KEYPOINTS, 2)
                scores = scores.reshape(0, NUM_KEYPOINTS)
            if keypoints.shape != (p, NUM_KEYPOINTS, 2):
                raise ValueError(
                    f"keypoints: expected shape {[p, NUM_KEYPOINTS, 2]} for {p} boxes, "
                    f"got {list(keypoints.shape)}"
                )
            if scores.shape != (p, NUM_KEYPOINTS):
                raise ValueError(
                    f"scores: expected shape {[p, NUM_KEYPOINTS]} for {p} boxes, "
                    f"got {list(scores.shape)}"
                )
            if not (np.all(np.isfinite(keypoints)) and np.all(np.isfinite(scores))):
                raise ValueError("keypoints, scores: expected finite values, got NaN or infinity")
        ids = np.full(p, -1, np.int64)
        if p and len(self._ids):
            rows, cols = self._assign(self._similarity(boxes, keypoints, scores))
            for i, t in zip(rows.tolist(), cols.tolist()):
                ids[i] = self._ids[t]
                self._observe(t, boxes[i], keypoints, scores, i)
        new = np.flatnonzero(ids < 0)
        if len(new):
            ids[new] = np.arange(self._next_id, self._next_id + len(new))
            self._next_id += len(new)
            self._ids = np.concatenate([self._ids, ids[new]])
            self._boxes = np.concatenate([self._boxes, boxes[new]])
            self._vel = np.concatenate([self._vel, np.zeros((len(new), 2))])
            self._last_seen = np.concatenate(
                [self._last_seen, np.full(len(new), self._frame, np.int64)]
            )
            self._hits = np.concatenate([self._hits, np.ones(len(new), np.int64)])
            if keypoints is not None:
                kps, kp_scores = keypoints[new], scores[new]
            else:
                kps = np.zeros((len(new), NUM_KEYPOINTS, 2))
                kp_scores = np.zeros((len(new), NUM_KEYPOINTS))
            self._kps = np.concatenate([self._kps, kps])
            self._kp_scores = np.concatenate([self._kp_scores, kp_scores])
        keep = self._frame - self._last_seen <= self._max_lost
        if not np.all(keep):
            for name in ("_ids", "_boxes", "_vel", "_last_seen", "_hits", "_kps", "_kp_scores"):
                setattr(self, name, getattr(self, name)[keep])
        self._frame += 1
        return ids

    def _observe(self, t: int, box: np.ndarray, keypoints, scores, i: int) -> None:
        """Track t was seen as `box` (and keypoints[i]) in this frame."""
        lost = self._frame - self._last_seen[t]
        old = self._boxes[t]
        step = (_centers(box[None])[0] - _centers(old[None])[0]) / lost
        # A box that grew or shrank by more than `_size_change` in a frame is most likely a part
        # of the person (the upper body, the legs hidden) or the whole again: its centre jumped
        # without the person moving, so the velocity is kept as it was.
        ratio = (box[2:] - box[:2]) / np.maximum(old[2:] - old[:2], 1e-9)
        steady = np.all((ratio >= 1 / self._size_change) & (ratio <= self._size_change))
        if steady:
            if self._hits[t] == 1:
                self._vel[t] = step
            else:
                self._vel[t] = self._alpha * self._vel[t] + (1.0 - self._alpha) * step
        self._boxes[t] = box
        self._last_seen[t] = self._frame
        self._hits[t] += 1
        if keypoints is not None:
            self._kps[t] = keypoints[i]
            self._kp_scores[t] = scores[i]
        else:
            self._kp_scores[t] = 0.0
