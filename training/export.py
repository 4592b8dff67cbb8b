"""Export: a trained model as a SavedModel that classifies one clip of decoded frames.

`python -m training export --model_dir RUN --export_dir OUT` (`export_model`) rebuilds the model
of a model directory (its `config.json` and latest checkpoint, as `evaluate` does) and writes
`OUT/` (a TensorFlow SavedModel) and `OUT/export_info.json`. The SavedModel's one signature,
`serving_default`, takes one clip of any length and frame size and applies the evaluation's
preprocessing in the graph: the central window of `data.eval_num_frames` frames (short clips
padded by repeating their first and last frames; `segments` sampling: the segments' centre
frames), frames smaller than the crop resized up (aspect ratio kept), the central
`data.eval_crop_size` crop, the records' value scaling; heatmaps built from the keypoints as in
training (`training.heatmaps`, the model's `data.heatmap_*`); `pose_live` skeletons drawn from
the keypoints and boxes onto the cropped RGB frames (or black) as in training
(`training.pose_render`, the model's `data.render_style`, recorded in `export_info.json`;
marker sizes from the given frame size). The rules are the input pipeline's own
(`training.inputs.RecordParser.decoded_clip`), so the logits equal the evaluation's on the same
clip (measured: docs/training.md, "Export").

Inputs (by the model's modalities; T frames, H x W pixels, P persons, any of them):

- `rgb` uint8 [T, H, W, 3]: RGB frames (the decoded JPEGs of `image/encoded`); also the
  frames a `pose_live` model's skeletons are drawn on (a style with the `rgb` background);
- `pose` uint8 [T, H, W, 3]: pose-rendered frames (`POSE_RENDERED/image/encoded`);
- `flow` uint8 [T - 1, H, W, 2]: the flow steps quantized as stored, the R (x) and G (y)
  channels of the decoded `FORWARD_FLOW/image/encoded` JPEGs (T - 1 may be 0);
- heatmap and `pose_live` models (a heatmap or pose_live teacher, EPAM-Net): `keypoints`
  float32 [T, P, 17, 2], COCO-17 (x, y) normalized to the frame (`POSE/region/point/x|y`), and
  `keypoint_scores` float32 [T, P, 17] in [0, 1] (`POSE/region/label/confidence`), 0 for
  padding persons;
- `pose_live` models also `boxes` float32 [T, P, 4]: the persons' boxes (ymin, xmin, ymax,
  xmax) normalized to the frame (`region/bbox/*`), which size ratio-aware markers; a box
  with a NaN or non-positive side (records without boxes: all NaN) sizes them by the extent of
  the person's keypoints, as the input pipeline does;
- keypoints without any frame input (heatmaps alone, `pose_live` on a black background): also
  `frame_size` int32 [2], the (H, W) the keypoints are normalized to (it sizes the crop and the
  markers).

Outputs: `logits` float32 [C]; `probabilities` float32 [C] (softmax of the logits);
`top5_indices` int32 [k] and `top5_classes` string [k], k = min(5, C), best first (class names
from the dataset's `dataset_info.json` labels, stored in the SavedModel; the index as text when
there is none). EPAM-Net: `logits` are its fused logits; `logits_rgb` and `logits_heatmap` its
streams' too.
"""

from __future__ import annotations

import dataclasses
import logging
import posixpath
from collections.abc import Sequence

import tensorflow as tf

from schemas import layout
from schemas import media_sequence as ms
from training import inputs
from training.config import (
    MODALITY_HEATMAP,
    MODALITY_POSE_LIVE,
    ExperimentConfig,
    apply_overrides,
)
from training.trainer import load_config, load_model, model_inputs, resolve_checkpoint, save_json

log = logging.getLogger(__name__)

SIGNATURE = "serving_default"
EXPORT_INFO = "export_info.json"
TOP_K = 5
# The config keys an export may override (`--set`): the clip the signature cuts, as `evaluate`.
OVERRIDABLE = ("data.eval_num_frames", "data.eval_crop_size")
# Serving input names of the keypoint modalities (`heatmap`, `pose_live`).
KEYPOINTS, KEYPOINT_SCORES, FRAME_SIZE = "keypoints", "keypoint_scores", "frame_size"
BOXES = "boxes"


@dataclasses.dataclass
class ExportResult:
    """What `export_model` wrote: the SavedModel directory, its checkpoint and description."""

    export_dir: str
    checkpoint: str
    info: dict


def input_specs(cfg: ExperimentConfig) -> dict[str, tf.TensorSpec]:
    """The serving signature's inputs for the model of `cfg` (see the module doc)."""
    mods = cfg.model_modalities()
    specs = {}

    def frames(m):
        specs[m] = tf.TensorSpec([None, None, None, inputs.MODEL_CHANNELS[m]], tf.uint8, m)

    for m in mods:
        if m not in (MODALITY_HEATMAP, MODALITY_POSE_LIVE):
            frames(m)
            continue
        if m == MODALITY_POSE_LIVE and cfg.data.pose_live_style().background == "rgb":
            frames(ms.MODALITY_RGB)  # the frames the skeletons are drawn on
        specs[KEYPOINTS] = tf.TensorSpec([None, None, ms.NUM_JOINTS, 2], tf.float32, KEYPOINTS)
        specs[KEYPOINT_SCORES] = tf.TensorSpec(
            [None, None, ms.NUM_JOINTS], tf.float32, KEYPOINT_SCORES
        )
        if m == MODALITY_POSE_LIVE:
            specs[BOXES] = tf.TensorSpec([None, None, 4], tf.float32, BOXES)
    if not set(specs) & set(ms.IMAGE_MODALITIES):  # keypoints alone: their frame size
        specs[FRAME_SIZE] = tf.TensorSpec([2], tf.int32, FRAME_SIZE)
    return specs


def eval_parser(cfg: ExperimentConfig) -> inputs.RecordParser:
    """The evaluation's parser of the model's modalities, as `inputs.build_dataset` makes it."""
    return inputs.RecordParser.for_data(cfg.model_modalities(), cfg.data, training=False)


def class_names(cfg: ExperimentConfig, data_dir: str = "") -> tuple[list[str], str]:
    """The model's class names, class index order, and where they come from.

    From the `labels` of `dataset_info.json` in `data_dir`, else beside the model's training
    data (`config.json`'s `data.data_dir` or shard patterns); the index as text ("0", "1", ...)
    when no description with labels is found. Raises ValueError if the labels are not
    `data.num_classes` many (another label set), or `data_dir` has no description.
    """
    n = cfg.data.num_classes
    source = ""
    if data_dir:
        info = inputs.read_dataset_info(data_dir)
        if info is None:
            raise ValueError(f"data_dir={data_dir!r}: has no {layout.DATASET_INFO}")
        source = layout.join(data_dir, layout.DATASET_INFO)
    else:
        try:
            info = inputs.find_dataset_info(cfg.data)
        except tf.errors.OpError as e:  # e.g. a gs:// path this host cannot read
            log.warning("no class names: cannot read the training data's description: %s", e)
            info = None
        if info is not None:
            source = "dataset_info.json beside the model's training data"
            if cfg.data.data_dir:
                source = layout.join(cfg.data.data_dir, layout.DATASET_INFO)
    if info is None or not info.labels:
        return [str(i) for i in range(n)], ""
    if len(info.labels) != n:
        raise ValueError(
            f"data_dir={data_dir or cfg.data.data_dir!r}: {layout.DATASET_INFO} has "
            f"{len(info.labels)} labels, the model {n} classes"
        )
    return list(info.labels), source


def flow_saturation(cfg: ExperimentConfig, data_dir: str = "") -> float:
    """The flow's quantization bound (`dataset_info.json`'s `flow.saturation`, else the
    contract's `FLOW_SATURATION`)."""
    try:
        info = (
            inputs.read_dataset_info(data_dir) if data_dir else inputs.find_dataset_info(cfg.data)
        )
    except tf.errors.OpError:
        info = None
    if info is not None and info.flow is not None and info.flow.saturation:
        return float(info.flow.saturation)
    return float(ms.FLOW_SATURATION)


def serving_module(model, cfg: ExperimentConfig, classes: Sequence[str], saturation: float):
    """A `tf.Module` holding `model` and the concrete serving function (see the module doc)."""
    parser = eval_parser(cfg)
    reads = model_inputs(cfg)
    mods = cfg.model_modalities()
    names = tf.constant(list(classes), tf.string)
    k = min(TOP_K, cfg.data.num_classes)
    module = tf.Module()
    module.model = model

    @tf.function
    def serve(**given):
        streams = {}
        for m in mods:
            if m in (MODALITY_HEATMAP, MODALITY_POSE_LIVE):
                xy = given[KEYPOINTS]
                streams[m] = (xy[..., 0], xy[..., 1], given[KEYPOINT_SCORES])
                if m == MODALITY_POSE_LIVE:  # the RGB frames: None under a black background
                    streams[m] = (given.get(ms.MODALITY_RGB), *streams[m], given[BOXES])
            else:
                streams[m] = given[m]
        clip = parser.decoded_clip(streams, given.get(FRAME_SIZE), saturation)
        out = {}
        if isinstance(reads, str):
            logits = model(clip[reads][None], training=False)[0]
        else:
            both = model({m: clip[m][None] for m in reads}, training=False)
            logits = both["fused"][0]
            out.update({f"logits_{m}": tf.cast(both[m][0], tf.float32) for m in reads})
        logits = tf.cast(logits, tf.float32)
        top = tf.math.top_k(logits, k=k)
        out.update(
            logits=logits,
            probabilities=tf.nn.softmax(logits),
            top5_indices=top.indices,
            top5_classes=tf.gather(names, top.indices),
        )
        return out

    module.serve = serve.get_concrete_function(**input_specs(cfg))
    return module


def _check_overrides(overrides: Sequence[str]) -> None:
    for item in overrides:
        key = item.partition("=")[0]
        if key not in OVERRIDABLE:
            raise ValueError(
                f"--set {item!r}: an export may set only {list(OVERRIDABLE)} (the clip it cuts); "
                "the rest is the model's own config"
            )


def export_model(
    model_dir: str,
    export_dir: str,
    *,
    data_dir: str = "",
    checkpoint: str = "",
    overrides: Sequence[str] = (),
    overwrite: bool = False,
) -> ExportResult:
    """Writes the SavedModel of a model directory's model to `export_dir` (module doc).

    Args:
      model_dir: a model directory (`config.json` and checkpoints), local or gs://.
      export_dir: where the SavedModel and `export_info.json` go; must be empty or absent
        unless `overwrite`.
      data_dir: a preprocessing output directory whose `dataset_info.json` names the classes
        (default: the model's training data, when its description can be found).
      checkpoint: a checkpoint prefix (default: the directory's latest).
      overrides: `data.eval_num_frames=N`, `data.eval_crop_size=[H,W]`: another clip than the
        model's evaluation clip (a fully convolutional model takes any).
      overwrite: replace what `export_dir` holds.

    Returns:
      the `ExportResult`. Raises ValueError naming the path or parameter for a model directory
      without `config.json` or checkpoint, a non-empty `export_dir`, another label count, or an
      override of another key.
    """
    _check_overrides(overrides)
    cfg = load_config(model_dir)  # raises naming model_dir if there is no config.json
    prefix = resolve_checkpoint(checkpoint or model_dir)  # ... or no checkpoint
    used = tf.io.gfile.exists(export_dir) and bool(tf.io.gfile.listdir(export_dir))
    if used and not overwrite:
        raise ValueError(
            f"export_dir={export_dir!r}: not empty; choose another or pass --overwrite"
        )
    cfg = apply_overrides(cfg, overrides)
    cfg.data.validate()
    model, _ = load_model(model_dir, checkpoint=prefix)
    classes, source = class_names(cfg, data_dir)
    mods = cfg.model_modalities()
    saturation = flow_saturation(cfg, data_dir) if ms.MODALITY_FLOW in mods else None
    module = serving_module(model, cfg, classes, saturation or ms.FLOW_SATURATION)
    if used:
        tf.io.gfile.rmtree(export_dir)
    tf.io.gfile.makedirs(export_dir)
    tf.saved_model.save(module, export_dir, signatures={SIGNATURE: module.serve})
    outputs = {
        name: {"dtype": spec.dtype.name, "shape": spec.shape.as_list()}
        for name, spec in module.serve.structured_outputs.items()
    }
    info = {
        "signature": SIGNATURE,
        "model_dir": model_dir,
        "checkpoint": prefix,
        "config_name": cfg.name,
        "task": cfg.task,
        "backbone": cfg.model.backbone,
        "modalities": list(mods),
        "inputs": {
            name: {"dtype": spec.dtype.name, "shape": spec.shape.as_list()}
            for name, spec in input_specs(cfg).items()
        },
        "outputs": outputs,
        "num_frames": cfg.data.eval_num_frames,
        "crop_size": list(cfg.data.eval_crop_size),
        "sampling": cfg.data.sampling,
        "num_classes": cfg.data.num_classes,
        "classes": classes,
        "class_names_from": source or None,
        "tensorflow": tf.__version__,
    }
    if MODALITY_HEATMAP in mods:
        info["heatmap"] = {
            "stride": cfg.data.heatmap_stride,
            "sigma": cfg.data.heatmap_sigma,
            "score_threshold": cfg.data.heatmap_score_threshold,
            "limbs": cfg.data.heatmap_limbs,
        }
    if MODALITY_POSE_LIVE in mods:
        style = cfg.data.pose_live_style()
        info["render_style"] = {"variant": style.name, "spec": style.to_spec(), **style.to_dict()}
    if saturation is not None:
        info["flow_saturation"] = saturation
    save_json(posixpath.join(export_dir, EXPORT_INFO), info)
    log.info("exported %s (%s) to %s", model_dir, prefix, export_dir)
    return ExportResult(export_dir, prefix, info)
