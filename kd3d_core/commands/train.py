"""`kd3d train SCENE --student fast|cnn|mobilenetv3|vit [--epochs N] [--size WxH] --out MODEL.kd3d`.

Trains a student on the labels of a scene's mapping frames (from `kd3d teach`) and writes one `.kd3d` file.
Under `torchrun --nproc_per_node N -m kd3d_core train ...` the run is data-parallel (DDP).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kd3d_core.commands import (add_overwrite_argument, add_quiet_argument, add_threads_argument, parse_size,
                                refuse_existing, refuse_flags)
from kd3d_core.errors import ConfigError


def add_training_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared by `kd3d train` and `kd3d distill`."""
    g = p.add_argument_group("student and training")
    g.add_argument("--student", default="fast",
                   help="architecture: fast (frozen encoder + scene memory; maps in seconds), or the paper's "
                        "end-to-end students cnn, mobilenetv3, vit (default fast)")
    g.add_argument("--arch-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="architecture option, repeatable (e.g. patch=32, blocks=8, variant=small, channels=32,64)")
    g.add_argument("--freeze-backbone", action="store_true", help="mobilenetv3: keep the backbone fixed")
    g.add_argument("--pretrained", type=Path, default=None,
                   help="mobilenetv3: torchvision ImageNet weights file (.pth state_dict or .safetensors)")
    g.add_argument("--size", type=parse_size, default=(320, 240), help="network input WxH (default 320x240)")
    g.add_argument("--epochs", type=int, default=50, help="maximum epochs (default 50)")
    g.add_argument("--max-minutes", type=float, default=None, help="wall-clock training budget")
    g.add_argument("--batch-size", type=int, default=8, help="images per step and process (default 8)")
    g.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    g.add_argument("--loss", default="mse", choices=["mse", "l1", "huber"], help="3D loss (default mse, the paper's)")
    g.add_argument("--reproj-weight", type=float, default=0.0, help="weight of the reprojection term (default 0)")
    g.add_argument("--no-augment", action="store_true", help="disable colour and geometric augmentation")
    g.add_argument("--val-fraction", type=float, default=0.1, help="held-out share of mapping frames")
    g.add_argument("--patience", type=int, default=10, help="early-stopping patience in epochs (0 = off)")
    g.add_argument("--seed", type=int, default=0, help="random seed")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    g.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    g.add_argument("--resume", action="store_true", help="continue from OUT.ckpt when it exists")
    g.add_argument("--log-dir", type=Path, default=None, help="CSV/TensorBoard/PNG logs (default OUT_logs/)")
    add_threads_argument(g)
    add_quiet_argument(p)
    f = p.add_argument_group("fast student (--student fast: frozen encoder + scene memory); the options above "
                             "from --epochs to --log-dir train end-to-end students only and are refused here")
    f.add_argument("--iterations", type=int, default=None,
                   help="MLP head training steps (only with --arch-opt head=mlp; default: the trainer's)")
    f.add_argument("--buffer-size", type=int, default=None,
                   help="MLP head feature buffer rows (only with --arch-opt head=mlp; default: the trainer's)")
    f.add_argument("--encoder", type=Path, default=None, help="encoder weights (default: the shipped one)")


# Options of the end-to-end trainer that the fast student's mapping does not use: value meaning "not given".
END_TO_END_ONLY = {"epochs": 50, "max_minutes": None, "batch_size": 8, "lr": 1e-3, "loss": "mse",
                   "reproj_weight": 0.0, "no_augment": False, "val_fraction": 0.1, "patience": 10, "no_amp": False,
                   "resume": False, "log_dir": None, "freeze_backbone": False, "pretrained": None}


def training_config(args: argparse.Namespace, out: Path):
    """A frozen TrainConfig from the flags (the only place flags become a training config)."""
    from kd3d_core.students.registry import config_from_dict, get_architecture, parse_arch_options
    from kd3d_core.training.config import AugmentConfig, LossKind, TrainConfig

    arch = get_architecture(args.student)
    refuse_flags(args, {"iterations": None, "buffer_size": None, "encoder": None},
                 f"with --student {args.student} (they belong to the fast student)")
    options = parse_arch_options(args.arch_opt)
    if args.freeze_backbone:
        if "freeze_backbone" not in {f for f in arch.config_cls.__dataclass_fields__}:
            raise ConfigError(f"--freeze-backbone does not apply to student {args.student}")
        options["freeze_backbone"] = True
    arch_config = config_from_dict(arch.config_cls, options, partial=True)
    return TrainConfig(
        student=args.student, arch=arch_config, input_size=args.size, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, loss=LossKind(args.loss), reproj_weight=args.reproj_weight,
        augment=AugmentConfig(enabled=not args.no_augment), val_fraction=args.val_fraction,
        patience=args.patience, max_minutes=args.max_minutes, seed=args.seed, device=args.device,
        amp=not args.no_amp, pretrained=args.pretrained, checkpoint=Path(f"{out}.ckpt"), resume=args.resume,
        log_dir=args.log_dir or out.with_name(out.stem + "_logs"), progress=not args.quiet)


def resolve_labels_dir(scene_root: Path, labels_dir: Path | None, teacher: str | None) -> Path:
    """--labels-dir, else SCENE/labels/TEACHER, else the only folder under SCENE/labels/."""
    from kd3d_core.labels import META_FILE, default_labels_dir

    if labels_dir is not None:
        return labels_dir
    if teacher is not None:
        return default_labels_dir(scene_root, teacher)
    found = sorted(p.parent for p in (scene_root / "labels").glob(f"*/{META_FILE}"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise ConfigError(f"{scene_root} has no labels; run `kd3d teach {scene_root}` first or pass --labels-dir")
    raise ConfigError(f"{scene_root} has labels from several teachers ({', '.join(p.name for p in found)}); "
                      "choose one with --teacher or --labels-dir")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the train subcommand."""
    p = sub.add_parser("train", help="train a student on a scene's labels -> MODEL.kd3d",
                       description="Distil the teacher's labels of a scene's mapping frames into a student network "
                                   "and write one .kd3d scene model file.")
    p.add_argument("scene", type=Path, help="scene folder with labels (kd3d teach)")
    p.add_argument("--out", type=Path, required=True, help="output model file (.kd3d)")
    p.add_argument("--labels-dir", type=Path, default=None, help="labels folder (default SCENE/labels/<teacher>)")
    p.add_argument("--teacher", default=None, help="use SCENE/labels/TEACHER")
    add_overwrite_argument(p)
    add_training_arguments(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Train and report the held-out error."""
    from kd3d_core.io_utils import check_output
    from kd3d_core.labels import LabelStore
    from kd3d_core.scene import open_scene
    from kd3d_core.students.registry import get_architecture
    from kd3d_core.threads import apply_threads
    from kd3d_core.training.trainer import train_student

    refuse_existing([args.out], args.overwrite or args.resume)
    check_output(args.out)  # writable, with free space: before training, not after it
    apply_threads(args.threads)
    if get_architecture(args.student).trainer == "fast":
        return run_fast(args)
    cfg = training_config(args, args.out)
    scene = open_scene(args.scene)
    store = LabelStore(resolve_labels_dir(args.scene, args.labels_dir, args.teacher))
    result = train_student(scene, store, cfg, args.out)
    report(result)
    return 0


def fast_training_config(args: argparse.Namespace):
    """A frozen FastTrainConfig from the flags (--size gives the input height; --arch-opt the FastConfig)."""
    from dataclasses import replace

    from kd3d_core.students.fast import FastConfig, HeadKind
    from kd3d_core.students.registry import config_from_dict, parse_arch_options
    from kd3d_core.training.fast import FastTrainConfig

    refuse_flags(args, END_TO_END_ONLY, "with the fast student (it maps the scene without a training loop)")
    student = config_from_dict(FastConfig, parse_arch_options(args.arch_opt), partial=True)
    if student.head is HeadKind.KNN:
        refuse_flags(args, {"iterations": None, "buffer_size": None},
                     "with the fast student's default kNN head (it is not trained; --arch-opt head=mlp trains one)")
    # Threads are set once by the command (kd3d_core.threads); the trainer keeps them.
    cfg = FastTrainConfig(student=student, input_height=args.size[1], encoder_path=args.encoder, seed=args.seed,
                          device=args.device, threads=None)
    if args.iterations is not None:
        cfg = replace(cfg, iterations=args.iterations)
    if args.buffer_size is not None:
        cfg = replace(cfg, buffer_size=args.buffer_size, batch_size=min(cfg.batch_size, args.buffer_size))
    return cfg


def run_fast(args: argparse.Namespace) -> int:
    """`kd3d train --student fast`: map the scene with the fast trainer."""
    from kd3d_core.training.fast import train_fast

    config = fast_training_config(args)  # refuses flags the fast student ignores before anything else
    labels = resolve_labels_dir(args.scene, args.labels_dir, args.teacher)
    report_fast(train_fast(args.scene, labels, args.out, config, progress=not args.quiet), args.out)
    return 0


def config_for_student(args: argparse.Namespace, out: Path):
    """The trainer config the chosen student needs: FastTrainConfig or TrainConfig."""
    from kd3d_core.students.registry import get_architecture

    if get_architecture(args.student).trainer == "fast":
        return fast_training_config(args)
    return training_config(args, out)


def report_fast(result, out: Path) -> None:
    """One summary line on stderr for a fast-student run."""
    print(f"wrote {out}: fast student ({result.meta.config.get('head', 'knn')} head), {result.views} views, "
          f"{result.buffer_rows:,} feature rows in {result.buffer_s:.0f} s, head {result.train_s:.0f} s, "
          f"mapping {result.total_s:.0f} s in all", file=sys.stderr)


def report(result) -> None:
    """One summary line on stderr (rank 0 only)."""
    if result.model_path is None:
        return
    t = result.meta.training
    print(f"wrote {result.model_path}: {result.meta.architecture}, {t['epochs']} epochs in {t['seconds']:.0f} s "
          f"({t['stop_reason']}), held-out error mean {t['val_mean_m']:.3f} m / median {t['val_median_m']:.3f} m",
          file=sys.stderr)
