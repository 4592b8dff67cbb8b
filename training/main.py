"""Command line: `python -m training {train,distill,evaluate,export,presets}` (perfnet-train).

Examples:

    # a teacher per modality
    python -m training train --preset k600_r3d50g_teacher_flow \\
        --data_dir gs://bucket/k600 --model_dir gs://bucket/runs/flow --tpu local
    # the PERF-Net student from the flow and pose teachers (SL loss)
    python -m training distill --preset k600_r3d50g_student --data_dir gs://bucket/k600 \\
        --model_dir gs://bucket/runs/student \\
        --teacher flow=gs://bucket/runs/flow --teacher pose=gs://bucket/runs/pose
    # top-1/top-5 of each model and the late-fusion table (Table 3)
    python -m training evaluate --data_dir gs://bucket/k600 \\
        --model rgb=gs://bucket/runs/rgb --model flow=gs://bucket/runs/flow \\
        --model pose=gs://bucket/runs/pose
    # EPAM-Net (RGB + skeleton heatmaps), then fused with the flow teacher
    python -m training train --preset k600_epam --data_dir gs://bucket/k600 \\
        --model_dir gs://bucket/runs/epam --tpu local
    python -m training evaluate --data_dir gs://bucket/k600 \\
        --model epam=gs://bucket/runs/epam --model flow=gs://bucket/runs/flow
    # EPAM-Net distilled from the flow teacher; an EPAM-Net teacher is given as epam=DIR
    python -m training distill --preset k600_epam_student --data_dir gs://bucket/k600 \\
        --model_dir gs://bucket/runs/epam_student --teacher flow=gs://bucket/runs/flow
    # a SavedModel of a trained model: uint8 frames of one clip in, logits and top-5 out
    python -m training export --model_dir gs://bucket/runs/perfnet --export_dir gs://bucket/serving/perfnet

A config is a preset (`presets` lists them) or a JSON file (`--config`, e.g. a model
directory's config.json), then `--set section.key=value` overrides, then the flags.
Exit status (EXIT_*): 0 done; 1 only when stopped early by SIGTERM (preempted, checkpoint
written; re-run the same command to resume); 2 bad arguments or configuration; 3 the records
cannot feed the job (a key a modality needs is missing or mistyped in the first record of a
shard, or a record fails to parse while training; the message names the key and the file); 4
any other error (the traceback is printed).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from training.config import (
    MODALITY_HEATMAP,
    MODALITY_POSE_LIVE,
    ExperimentConfig,
    apply_overrides,
    get_preset,
    preset_names,
)

log = logging.getLogger("training")

# Exit statuses of `main`; an auto-resume wrapper re-runs the command only on EXIT_PREEMPTED.
EXIT_OK = 0
EXIT_PREEMPTED = 1  # SIGTERM received, checkpoint written: re-run the same command to resume
EXIT_USAGE = 2  # bad arguments or configuration (argparse's status too)
EXIT_DATA = 3  # records lack a key or type a modality needs, or fail to parse
EXIT_ERROR = 4  # anything else, with the traceback on stderr


def _pairs(values: Sequence[str], flag: str) -> dict[str, str]:
    out = {}
    for item in values or ():
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"{flag}={item!r}: expected NAME=PATH")
        if key in out:
            raise ValueError(f"{flag}={item!r}: {key!r} given twice")
        out[key] = value
    return out


def _add_set_arg(p: argparse.ArgumentParser, text: str) -> None:
    """The repeatable `--set KEY=VALUE` config override."""
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=text)


def _add_config_args(p: argparse.ArgumentParser, need_model_dir: bool) -> None:
    p.add_argument("--preset", help="a preset name (see `presets`)")
    p.add_argument("--config", help="a JSON ExperimentConfig (e.g. a model_dir's config.json)")
    _add_set_arg(p, "override, e.g. train.train_steps=100 or data.crop_size=[112,112] (repeatable)")
    p.add_argument("--data_dir", help="preprocessing output dir (local or gs://)")
    p.add_argument("--train_data", help="glob(s) of training shards, comma separated")
    p.add_argument("--eval_data", help="glob(s) of evaluation shards, comma separated")
    p.add_argument("--tpu", help="TPU name or address (`local` on a TPU VM)")
    p.add_argument(
        "--eval_batch_per_replica",
        type=int,
        metavar="N",
        help="evaluation clips per replica (train.eval_batch_per_replica; default: as many as "
        "fit the device's memory, see docs/training.md)",
    )
    p.add_argument(
        "--device_memory_gib",
        type=float,
        metavar="G",
        help="memory of one replica's device, which the evaluation batch is fitted to "
        "(runtime.device_memory_gib; default: found out)",
    )
    if need_model_dir:
        p.add_argument("--model_dir", required=True, help="checkpoints and summaries go here")
        p.add_argument(
            "--seed",
            type=int,
            help="run seed N >= 0 (default: the config's `seed`, 0); the run's seed is "
            "derive_seed(config name, model inputs, N), recorded as data.seed in config.json",
        )
        p.add_argument(
            "--init_2d",
            metavar="PATH",
            help="ImageNet 2D weights inflated into the backbone of a run from scratch "
            "(train.init_2d_checkpoint: slim inception_v1 checkpoint for S3D-G, Keras ResNet50 "
            ".h5 for R3D50-G/STM, or .npz; see docs/training.md)",
        )


def _apply_device_flags(cfg: ExperimentConfig, args) -> None:
    """--tpu, --eval_batch_per_replica and --device_memory_gib into `cfg` (validated with it)."""
    if args.tpu:
        cfg.runtime.tpu = args.tpu
    if args.eval_batch_per_replica is not None:
        cfg.train.eval_batch_per_replica = args.eval_batch_per_replica
        cfg.train.eval_batch_size = 0
    if args.device_memory_gib is not None:
        cfg.runtime.device_memory_gib = args.device_memory_gib


def _build_config(args) -> ExperimentConfig:
    if args.preset and args.config:
        raise ValueError(f"--config={args.config!r}: give --preset or --config, not both")
    if args.config:
        import tensorflow as tf

        with tf.io.gfile.GFile(args.config) as f:
            cfg = ExperimentConfig.from_json(f.read())
    elif args.preset:
        cfg = get_preset(args.preset)
    else:
        raise ValueError("--preset: give a preset (see `python -m training presets`) or --config")
    cfg = apply_overrides(cfg, args.set)
    if args.data_dir:
        cfg.data.data_dir = args.data_dir
    if args.train_data:
        cfg.data.train_pattern = args.train_data
    if args.eval_data:
        cfg.data.eval_pattern = args.eval_data
    _apply_device_flags(cfg, args)
    if getattr(args, "model_dir", None):
        cfg.model_dir = args.model_dir
    if getattr(args, "seed", None) is not None:
        cfg.seed = args.seed
    if getattr(args, "init_checkpoint", None):
        cfg.init_checkpoint = args.init_checkpoint
    if getattr(args, "init_2d", None):
        cfg.train.init_2d_checkpoint = args.init_2d
    return cfg


def _cmd_train(args, distill: bool) -> int:
    from training.trainer import train

    cfg = _build_config(args)
    if distill:
        teachers = _pairs(args.teacher, "--teacher")
        if teachers:
            cfg.distill.teachers = teachers
        if cfg.task != "student":
            raise ValueError(f"task={cfg.task!r}: `distill` runs student configs; use `train`")
    elif cfg.task == "student":
        raise ValueError(f"task={cfg.task!r}: a student is trained with `distill`")
    result = train(cfg)
    print(f"model_dir: {result.model_dir}")
    print(f"steps: {result.start_step} -> {result.final_step}")
    if result.history:
        losses = [m["loss"] for _, m in result.history]
        k = max(1, min(5, len(losses) // 2))
        print(
            f"loss: mean of the first {k} loops {sum(losses[:k]) / k:.4f}, "
            f"of the last {k} {sum(losses[-k:]) / k:.4f}"
        )
    if result.checkpoint:
        print(f"checkpoint: {result.checkpoint}")
    if result.eval is not None:
        print(result.eval.table())
    if result.preempted:
        print("stopped early; re-run the same command to resume")
        return EXIT_PREEMPTED
    return EXIT_OK


def _cmd_evaluate(args) -> int:
    import dataclasses

    from training import distribute, inputs, memory
    from training.evaluate import evaluate_models
    from training.trainer import load_config, load_model, model_inputs, resolve_config, save_json

    named = _pairs(args.model, "--model")
    if not named:
        raise ValueError("--model: name at least one model, e.g. --model rgb=RUN_DIR")
    if args.preset or args.config:
        cfg = _build_config(args)
    else:
        first = next(iter(named.values()))
        cfg = load_config(first)
        cfg = apply_overrides(cfg, args.set)
        for flag, field in (("data_dir", "data_dir"), ("eval_data", "eval_pattern")):
            if getattr(args, flag):
                setattr(cfg.data, field, getattr(args, flag))
        _apply_device_flags(cfg, args)
    if not inputs.split_pattern(cfg.data, "eval"):
        raise ValueError("--eval_data: name the evaluation shards (or --data_dir)")
    cfg.task = "teacher"
    cfg = resolve_config(cfg)
    strategy = distribute.get_strategy(cfg.runtime)
    dtype = distribute.precision_policy(cfg.runtime, strategy)
    models = {}
    configs = []
    with strategy.scope():
        for name, path in named.items():
            model, mcfg = load_model(path, dtype=dtype)
            configs.append(mcfg)
            if mcfg.data.num_classes != cfg.data.num_classes:
                raise ValueError(
                    f"--model {name}={path}: {mcfg.data.num_classes} classes, the evaluation "
                    f"data has {cfg.data.num_classes}"
                )
            reads = model_inputs(mcfg)
            if MODALITY_HEATMAP in ((reads,) if isinstance(reads, str) else reads):
                differ = cfg.data.heatmap_differences(mcfg.data)
                if differ:
                    raise ValueError(
                        f"--model {name}={path}: reads heatmaps, which this evaluation would make "
                        f"with {', '.join(differ)}; evaluate it with its own settings (--set "
                        "data.heatmap_...) or apart from the models trained otherwise"
                    )
            if MODALITY_POSE_LIVE in ((reads,) if isinstance(reads, str) else reads):
                differ = cfg.data.modality_differences(mcfg.data, MODALITY_POSE_LIVE)
                if differ:
                    raise ValueError(
                        f"--model {name}={path}: reads pose frames drawn in the input pipeline, "
                        f"which this evaluation would draw with {', '.join(differ)}; evaluate it "
                        "with its own style (--set data.render_style=...) or apart"
                    )
            models[name] = (model, reads)
    # a one-stream model reads its modality, EPAM-Net a tuple of them
    modalities = sorted(
        {m for _, mod in models.values() for m in ((mod,) if isinstance(mod, str) else mod)}
    )
    # The records are checked before any model runs: a missing key exits EXIT_DATA, named.
    checked = inputs.check_records(inputs.split_pattern(cfg.data, "eval"), modalities)
    log.info("records checked: %s", checked)
    plan = memory.eval_batch(configs, strategy, cfg.train, cfg.runtime, data=cfg.data)
    log.info("evaluation batch %d (%d per replica): %s", *dataclasses.astuple(plan))
    ds = inputs.build_dataset(
        inputs.split_pattern(cfg.data, "eval"),
        modalities,
        training=False,
        batch_size=plan.global_size,
        data=cfg.data,
        max_clips=cfg.train.max_eval_clips,
    )
    report = evaluate_models(
        models, strategy.experimental_distribute_dataset(ds), strategy, cfg.data.num_classes
    )
    h, w = cfg.data.eval_crop_size
    if cfg.data.sampling == "segments":
        clip = f"{cfg.data.eval_num_frames} segment centres, central crop {h}x{w}"
    else:
        clip = f"central crop {cfg.data.eval_num_frames}x{h}x{w}"
    print(
        f"{clip}, {report.rows[0].clips} clips, "
        f"batch {plan.global_size} ({plan.per_replica} per replica), {report.seconds:.1f} s"
    )
    print(report.table())
    if args.output:
        save_json(args.output, report.to_json())
    return EXIT_OK


def _cmd_export(args) -> int:
    from training.export import export_model

    result = export_model(
        args.model_dir,
        args.export_dir,
        data_dir=args.data_dir or "",
        checkpoint=args.checkpoint or "",
        overrides=args.set,
        overwrite=args.overwrite,
    )
    info = result.info
    print(f"export_dir: {result.export_dir}")
    print(f"checkpoint: {result.checkpoint}")
    print(
        f"signature {info['signature']}: inputs "
        + ", ".join(f"{n} {s['dtype']} {s['shape']}" for n, s in info["inputs"].items())
        + f"; central {info['num_frames']}x{info['crop_size'][0]}x{info['crop_size'][1]}, "
        f"{info['num_classes']} classes"
    )
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perfnet-train",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log TensorFlow too")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "train", help="train a teacher (one modality), EPAM-Net (rgb + heatmap) or fine-tune"
    )
    _add_config_args(p, need_model_dir=True)
    p.add_argument("--init_checkpoint", help="fine-tuning: model dir or checkpoint to start from")
    p = sub.add_parser("distill", help="train the student (RGB, or EPAM-Net) from frozen teachers")
    _add_config_args(p, need_model_dir=True)
    p.add_argument(
        "--teacher",
        action="append",
        default=[],
        metavar="KEY=MODEL_DIR",
        help="a teacher's model directory, keyed by its modality (flow=DIR) or, an EPAM-Net "
        "teacher, by epam (epam=DIR) (repeatable); replaces the preset's teacher set",
    )
    p = sub.add_parser("evaluate", help="top-1/top-5 of each model and their late fusion")
    _add_config_args(p, need_model_dir=False)
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=MODEL_DIR",
        help="a model directory to evaluate (repeatable); NAME labels it in the table",
    )
    p.add_argument("--output", help="also write the report as JSON here")
    p = sub.add_parser(
        "export", help="a SavedModel of a trained model: frames of a clip in, top-5 classes out"
    )
    p.add_argument("--model_dir", required=True, help="the model directory to export")
    p.add_argument("--export_dir", required=True, help="where the SavedModel goes")
    p.add_argument(
        "--data_dir",
        help="a preprocessing output dir whose dataset_info.json names the classes "
        "(default: the model's training data)",
    )
    p.add_argument("--checkpoint", help="a checkpoint prefix (default: the latest)")
    _add_set_arg(
        p,
        "another clip than the model's evaluation clip: data.eval_num_frames=N, "
        "data.eval_crop_size=[H,W]",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --export_dir")
    sub.add_parser("presets", help="list the presets")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m training` and the `perfnet-train` console command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:
        import os

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.command == "presets":
        print("\n".join(preset_names()))
        return EXIT_OK
    try:
        if args.command == "evaluate":
            return _cmd_evaluate(args)
        if args.command == "export":
            return _cmd_export(args)
        return _cmd_train(args, distill=args.command == "distill")
    except ValueError as e:
        from training.inputs import DataError

        print(f"error: {e}", file=sys.stderr)
        return EXIT_DATA if isinstance(e, DataError) else EXIT_USAGE
    except Exception as e:  # noqa: BLE001 - mapped to an exit status, never to EXIT_PREEMPTED
        import traceback

        import tensorflow as tf

        if isinstance(e, (tf.errors.InvalidArgumentError, tf.errors.DataLossError)):
            print(f"error: a record failed to parse or decode: {e.message}", file=sys.stderr)
            return EXIT_DATA
        traceback.print_exc()
        print(f"error: unexpected {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
