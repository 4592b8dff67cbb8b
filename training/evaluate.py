"""Evaluation: top-1/top-5 per model and late fusion over every combination of models.

Late fusion (paper, section 4.2.2): the fused prediction of a set of models is the sum of
their logits, each model run on its own modality of the same clip (the same central window
and crop). `evaluate_models` runs every model on every evaluation batch once and scores all
2^n - 1 non-empty combinations, the layout of Table 3. A multi-stream model (EPAM-Net, reading
several modalities of the clip) takes part with its fused logits; its streams' own logits are
scored alone too (`FusionReport.streams`, rows `NAME:STREAM`), not fused with other models.

Top-k: a clip counts as correct at k when fewer than k classes have a fused logit strictly
greater than the true class's (ties count in its favour, as `tf.math.in_top_k`); k is capped
at the number of classes. Accuracies are fractions in [0, 1] over the clips evaluated.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from collections.abc import Iterable, Mapping

import keras
import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class FusionRow:
    """One combination: the model names fused, top-1 and top-5 accuracy in [0, 1], clips."""

    models: tuple[str, ...]
    top1: float
    top5: float
    clips: int

    @property
    def label(self) -> str:
        return "+".join(self.models)


@dataclasses.dataclass
class FusionReport:
    """Rows in Table-3 order: single models first, then pairs, ..., then all models.

    `streams`: the single streams of multi-stream models, scored alone (models `NAME:STREAM`).
    """

    rows: list[FusionRow]
    top5_k: int
    seconds: float = 0.0
    streams: list[FusionRow] = dataclasses.field(default_factory=list)

    def row(self, *models: str) -> FusionRow:
        for r in self.rows:
            if r.models == tuple(models):
                return r
        raise KeyError(f"models={models}: not in {[r.models for r in self.rows]}")

    def table(self) -> str:
        """Markdown table: streams | top-1 (%) | top-5 (%) | clips; the fusion rows, then the
        streams of multi-stream models alone."""
        width = max([len("streams")] + [len(r.label) for r in self.rows + self.streams])
        top5 = "top-5" if self.top5_k == 5 else f"top-{self.top5_k}"
        lines = [
            f"| {'streams'.ljust(width)} | top-1 (%) | {top5} (%) | clips |",
            f"|{'-' * (width + 2)}|-----------|-----------|-------|",
        ]
        for r in self.rows + self.streams:
            lines.append(
                f"| {r.label.ljust(width)} | {100 * r.top1:9.2f} | {100 * r.top5:9.2f} "
                f"| {r.clips:5d} |"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "top5_k": self.top5_k,
            "seconds": self.seconds,
            "rows": [
                {"models": list(r.models), "top1": r.top1, "top5": r.top5, "clips": r.clips}
                for r in self.rows
            ],
            "streams": [
                {"models": list(r.models), "top1": r.top1, "top5": r.top5, "clips": r.clips}
                for r in self.streams
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def combinations(names: Iterable[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset of `names`, by size then in the given order."""
    names = tuple(names)
    return [c for r in range(1, len(names) + 1) for c in itertools.combinations(names, r)]


def correct_at_k(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """bool [B]: fewer than k classes score strictly above the label (see module doc).

    Args: logits float [B, C]; labels int [B] in [0, C); k >= 1.
    """
    if k < 1:
        raise ValueError(f"k={k}: must be >= 1")
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels, np.int64)
    target = logits[np.arange(len(labels)), labels]
    return (logits > target[:, None]).sum(axis=1) < k


class FusionAccumulator:
    """Accumulates correct counts of every combination over batches of logits.

    Args:
      names: the models fused in every combination.
      num_classes: C, for top-5's cap.
      singles: further logits scored alone, never fused (a multi-stream model's streams).
    """

    def __init__(self, names: Iterable[str], num_classes: int, singles: Iterable[str] = ()):
        self.names = tuple(names)
        if not self.names:
            raise ValueError("names: at least one model is needed")
        self.k5 = min(5, int(num_classes))
        self.combos = combinations(self.names)
        self.singles = [(s,) for s in singles]
        self.top1 = {c: 0.0 for c in self.combos + self.singles}
        self.top5 = {c: 0.0 for c in self.combos + self.singles}
        self.clips = 0.0

    def update(self, logits: Mapping[str, np.ndarray], labels, mask=None) -> None:
        """logits: name -> float [B, C] (every name and single); labels int [B]; mask float [B]
        (1 real, 0 padding)."""
        labels = np.asarray(labels)
        mask = np.ones(len(labels)) if mask is None else np.asarray(mask, np.float64)
        self.clips += float(mask.sum())
        for combo in self.combos + self.singles:
            fused = np.sum([np.asarray(logits[n], np.float64) for n in combo], axis=0)
            self.top1[combo] += float((correct_at_k(fused, labels, 1) * mask).sum())
            self.top5[combo] += float((correct_at_k(fused, labels, self.k5) * mask).sum())

    def report(self, seconds: float = 0.0) -> FusionReport:
        n = max(self.clips, 1.0)
        rows, streams = [
            [
                FusionRow(c, self.top1[c] / n, self.top5[c] / n, int(round(self.clips)))
                for c in combos
            ]
            for combos in (self.combos, self.singles)
        ]
        return FusionReport(rows, self.k5, seconds, streams)


def evaluate_models(
    models: Mapping[str, tuple[keras.Model, str | tuple[str, ...]]],
    dataset,
    strategy: tf.distribute.Strategy,
    num_classes: int,
) -> FusionReport:
    """Runs every model on every batch and scores all combinations.

    Args:
      models: name -> (model, modality). A model given one modality (a `VideoClassifier`)
        reads `batch[modality]` and returns float32 logits [B, C]. A model given a tuple of
        modalities (an `EPAMNet`: `('rgb', 'heatmap')`) reads the dict `{m: batch[m]}` and
        returns a dict of float32 logits [B, C]: `fused`, fused with the other models, and one
        entry per modality (that stream's logits), scored alone as `NAME:MODALITY`
        (`FusionReport.streams`).
      dataset: a distributed dataset (from `strategy.experimental_distribute_dataset`) of
        evaluation batches with `label`, `mask` and the modalities (see `training.inputs`).
      strategy: the strategy the models were built under.
      num_classes: C, for top-5's cap.
    """
    names = tuple(models)
    singles = []
    for n, (_, mod) in models.items():
        if not isinstance(mod, str):
            singles += [f"{n}:{s}" for s in mod]
    acc = FusionAccumulator(names, num_classes, singles)

    def step_fn(batch):
        out = {}
        for n, (m, mod) in models.items():
            if isinstance(mod, str):
                out[n] = m(batch[mod], training=False)
                continue
            logits = m({k: batch[k] for k in mod}, training=False)
            out[n] = logits["fused"]
            out.update({f"{n}:{s}": logits[s] for s in mod})
        out["label"] = batch["label"]
        out["mask"] = batch["mask"]
        return out

    @tf.function
    def eval_step(batch):
        per_replica = strategy.run(step_fn, args=(batch,))
        return {k: strategy.gather(v, axis=0) for k, v in per_replica.items()}

    start = time.perf_counter()
    for batch in dataset:
        out = {k: v.numpy() for k, v in eval_step(batch).items()}
        acc.update({n: out[n] for n in names + tuple(singles)}, out["label"], out["mask"])
    return acc.report(time.perf_counter() - start)
