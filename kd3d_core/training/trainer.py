"""End-to-end distillation training of a student on a scene's labels -> one `.kd3d` file.

One call: `train_student(scene, store, config, out, generator=None) -> TrainResult`. Per epoch: shuffled
label-consistent batches (a torch.Generator drives shuffling and augmentation; a seeded, forked global RNG
drives weight init and dropout, so runs are reproducible without touching the caller's RNG state), AdamW with
warm-up + cosine schedule, AMP on CUDA, DDP under torchrun; then the held-out mean/median L2 error (m), early
stopping, a resumable checkpoint and the logs. The best held-out weights go into the model file.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from kd3d_core.errors import ConfigError
from kd3d_core.geometry import invert_pose
from kd3d_core.io_utils import check_output
from kd3d_core.labels import LabelStore
from kd3d_core.localization.roll import mapping_up
from kd3d_core.scene import Scene
from kd3d_core.students.model_file import IMAGENET_MEAN, IMAGENET_STD, ModelMeta, save_scene_model
from kd3d_core.students.registry import cell_centres, config_to_dict, get_architecture
from kd3d_core.students.scene_model import resolve_device
from kd3d_core.training.checkpoint import TrainState, load_checkpoint, save_checkpoint
from kd3d_core.training.config import TrainConfig
from kd3d_core.training.data import CoordNorm, LabelledFrames, coordinate_norm, load_frames, make_batch, split_indices
from kd3d_core.distributed import DistContext, broadcast, device_for_rank, init_distributed
from kd3d_core.training.evaluate import heldout_errors
from kd3d_core.training.losses import distillation_loss
from kd3d_core.training.records import EpochRecord, TrainingLog


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""

    model_path: Path | None
    meta: ModelMeta
    history: list[EpochRecord]
    seconds: float
    stop_reason: str


@dataclass
class _Run:
    """The live objects of one run (internal)."""

    cfg: TrainConfig
    ctx: DistContext
    device: torch.device
    net: nn.Module
    model: nn.Module            # net, or net wrapped in DDP
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    generator: torch.Generator
    frames: LabelledFrames
    train_idx: list[int]
    val_idx: list[int]
    norm: CoordNorm
    arch_config: object
    state: TrainState

    @property
    def stride(self) -> int:
        return self.net.output_stride


def train_student(scene: Scene, store: LabelStore, cfg: TrainConfig, out: Path | str | None,
                  generator: torch.Generator | None = None) -> TrainResult:
    """Train `cfg.student` on the labelled mapping frames of `scene` and write the model to `out` (rank 0).

    Args:
        scene: the scene whose mapping frames (and their images) are used.
        store: the labels (points, confidence, K, pose per frame).
        cfg: training settings.
        out: `.kd3d` output path (None: do not write, e.g. for benchmarks).
        generator: drives shuffling and augmentation; a generator seeded with `cfg.seed` when None.
    """
    if out:  # before the whole run, not after it: an unwritable or full output fails in a second
        check_output(out)
    device = device_for_rank(resolve_device(cfg.device))
    ctx = init_distributed(device)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(cfg.seed)
            run = _setup(scene, store, cfg, ctx, device, generator)
            reason = _train_loop(run)
            return _finish(run, store, reason, Path(out) if out else None)
    finally:
        ctx.close()


def _identity(cfg: TrainConfig, arch_config: object, n_frames: int, world_size: int) -> dict:
    """What must match for a checkpoint to be resumed."""
    return {"student": cfg.student, "arch": config_to_dict(arch_config), "input_size": list(cfg.input_size),
            "frames": n_frames, "world_size": world_size, "batch_size": cfg.batch_size}


def _build_net(cfg: TrainConfig) -> tuple[nn.Module, object]:
    arch = get_architecture(cfg.student)
    arch_config = cfg.arch if cfg.arch is not None else arch.default_config()
    net = arch.build(arch_config, cfg.input_size)
    if cfg.pretrained is not None:
        if cfg.student != "mobilenetv3":
            raise ConfigError(f"--pretrained weights are supported for mobilenetv3, not {cfg.student}")
        from kd3d_core.students.mobilenetv3 import load_backbone_weights

        load_backbone_weights(net, cfg.pretrained)
    return net, arch_config


def _setup(scene: Scene, store: LabelStore, cfg: TrainConfig, ctx: DistContext, device: torch.device,
           generator: torch.Generator | None) -> _Run:
    frames = load_frames(scene, store, cfg.input_size, progress=cfg.progress and ctx.is_main)
    train_idx, val_idx = split_indices(len(frames), cfg.val_fraction)
    if len(train_idx) < ctx.world_size:
        raise ConfigError(f"{len(train_idx)} training frames cannot be shared by {ctx.world_size} processes")
    norm = coordinate_norm([frames.views[i] for i in train_idx])
    net, arch_config = _build_net(cfg)
    net.to(device)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    gen = generator if generator is not None else torch.Generator().manual_seed(cfg.seed)
    state = TrainState()
    identity = _identity(cfg, arch_config, len(frames), ctx.world_size)
    if cfg.resume and cfg.checkpoint is not None and Path(cfg.checkpoint).is_file():
        state = load_checkpoint(Path(cfg.checkpoint), identity=identity, net=net, optimizer=optimizer,
                                scaler=scaler, generator=gen)
    model: nn.Module = net
    if ctx.enabled:
        model = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    return _Run(cfg, ctx, device, net, model, optimizer, scaler, gen, frames, train_idx, val_idx, norm, arch_config,
                state)


def _steps_per_epoch(run: _Run) -> int:
    per_rank = len(run.train_idx) // run.ctx.world_size
    return max(1, math.ceil(per_rank / run.cfg.batch_size))


def _lr_factor(progress: float) -> float:
    """Linear warm-up over the first 5 %, then cosine decay to 5 % of the base rate."""
    if progress < 0.05:
        return 0.1 + 0.9 * progress / 0.05
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - 0.05) / 0.95)))


def _epoch_batches(run: _Run) -> list[list[int]]:
    """This rank's batches of frame indices for one epoch (same count on every rank)."""
    perm = torch.randperm(len(run.train_idx), generator=run.generator).tolist()
    per_rank = len(perm) // run.ctx.world_size
    mine = [run.train_idx[i] for i in perm[run.ctx.rank::run.ctx.world_size][:per_rank]]
    bs = run.cfg.batch_size
    return [mine[i:i + bs] for i in range(0, len(mine), bs)]


def _train_step(run: _Run, indices: list[int], uv_hw2: torch.Tensor, coord_mean: torch.Tensor,
                lr: float) -> tuple[float, float]:
    cfg, dev = run.cfg, run.device
    seed = int(torch.randint(0, 2**62, (1,), generator=run.generator))
    batch = make_batch([run.frames.views[i] for i in indices], run.stride, run.norm,
                       cfg.augment if cfg.augment.enabled else None, np.random.default_rng(seed))
    images = batch.images_B3HW
    if cfg.augment.enabled:
        from kd3d_core.training.augment import colour_jitter_

        colour_jitter_(images, cfg.augment, run.generator)
    images = _normalise(images.to(dev))
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=run.scaler.is_enabled()):
        points, conf = run.model(images)
    parts = distillation_loss(points, conf, batch.targets_B3hw.to(dev), batch.weights_Bhw.to(dev), cfg,
                              run.norm.scale, coord_mean, uv_hw2, batch.K_B33.to(dev),
                              batch.cam_T_world_B44.to(dev))
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(parts.total).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    return float(parts.total.detach()), float(parts.points)


def _normalise(images_B3HW: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=images_B3HW.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images_B3HW.device).view(1, 3, 1, 1)
    return (images_B3HW - mean) / std


def _progress(run: _Run, t_start: float, total_steps: int) -> float:
    p = run.state.step / total_steps
    if run.cfg.max_minutes is not None:
        p = max(p, (run.state.elapsed_s + time.perf_counter() - t_start) / (60 * run.cfg.max_minutes))
    return min(p, 1.0)


def _train_loop(run: _Run) -> str:
    """Epochs until the epoch limit, early stopping or the time budget; returns why it stopped."""
    cfg, state = run.cfg, run.state
    steps = _steps_per_epoch(run)
    total = steps * cfg.epochs
    uv = torch.from_numpy(cell_centres(cfg.input_size, run.stride)).to(run.device)
    coord_mean = torch.tensor(run.norm.mean, device=run.device, dtype=torch.float32)
    log = TrainingLog(cfg.log_dir if run.ctx.is_main else None)
    bar = tqdm(total=total, initial=state.step, desc=f"train {cfg.student}", unit="step",
               disable=not (cfg.progress and run.ctx.is_main), dynamic_ncols=True)
    reason = "epochs"
    try:
        while state.epoch < cfg.epochs:
            t0 = time.perf_counter()
            run.model.train()
            losses, point_losses = [], []
            for indices in _epoch_batches(run):
                lr = cfg.lr * _lr_factor(_progress(run, t0, total))
                loss, pts = _train_step(run, indices, uv, coord_mean, lr)
                losses.append(loss)
                point_losses.append(pts)
                state.step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4g}")
                if not run.ctx.enabled and cfg.max_minutes and \
                        state.elapsed_s + time.perf_counter() - t0 > 60 * cfg.max_minutes:
                    break
            reason = _end_epoch(run, log, t0, float(np.mean(losses)), float(np.mean(point_losses)), lr)
            bar.set_postfix(loss=f"{np.mean(losses):.4g}", val=f"{state.history[-1]['val_mean_m']:.3g} m")
            if reason != "continue":
                break
        return "epochs" if reason == "continue" else reason
    finally:
        bar.close()
        log.close()


def _end_epoch(run: _Run, log: TrainingLog, t0: float, loss: float, pts: float, lr: float) -> str:
    """Held-out errors, best weights, early stopping, checkpoint and logs; 'continue' or a stop reason."""
    cfg, state = run.cfg, run.state
    mean_m = median_m = float("nan")
    if run.ctx.is_main and run.val_idx:
        errors = heldout_errors(run.net, [run.frames.views[i] for i in run.val_idx], run.norm, run.device)
        mean_m, median_m = float(errors.mean()), float(np.median(errors))
    mean_m, median_m = broadcast((mean_m, median_m), run.ctx)
    state.epoch += 1
    state.elapsed_s += time.perf_counter() - t0
    score = mean_m if run.val_idx else -state.epoch  # without held-out frames the last epoch is "best"
    if score < state.best_val:
        state.best_val, state.bad_epochs = score, 0
        state.best_state = {k: v.detach().cpu().clone() for k, v in run.net.state_dict().items()}
    else:
        state.bad_epochs += 1
    state.history.append(asdict(EpochRecord(state.epoch, state.step, loss, pts, mean_m, median_m, lr,
                                            state.elapsed_s)))
    if run.ctx.is_main:
        if cfg.checkpoint is not None:
            ident = _identity(cfg, run.arch_config, len(run.frames), run.ctx.world_size)
            save_checkpoint(Path(cfg.checkpoint), identity=ident, net=run.net, optimizer=run.optimizer,
                            scaler=run.scaler, generator=run.generator, state=state)
        log.write([EpochRecord(**h) for h in state.history])
    reason = "continue"
    if cfg.patience and run.val_idx and state.bad_epochs >= cfg.patience:
        reason = "early_stopping"
    elif cfg.max_minutes and state.elapsed_s >= 60 * cfg.max_minutes:
        reason = "time_budget"
    return broadcast(reason, run.ctx)


def _finish(run: _Run, store: LabelStore, reason: str, out: Path | None) -> TrainResult:
    """Best weights + metadata -> the model file (rank 0)."""
    cfg, state = run.cfg, run.state
    net = copy.deepcopy(run.net).cpu()
    if state.best_state is not None:
        net.load_state_dict(state.best_state)
    best = min(state.history, key=lambda h: h["val_mean_m"] if run.val_idx else -h["epoch"])
    lm = run.frames.labels_meta
    training = {
        "epochs": state.epoch, "steps": state.step, "seconds": round(state.elapsed_s, 2), "stop_reason": reason,
        "best_epoch": best["epoch"], "val_mean_m": best["val_mean_m"], "val_median_m": best["val_median_m"],
        "frames_train": len(run.train_idx), "frames_val": len(run.val_idx), "batch_size": cfg.batch_size,
        "lr": cfg.lr, "loss": cfg.loss.value, "reproj_weight": cfg.reproj_weight,
        "augment": cfg.augment.enabled, "seed": cfg.seed, "world_size": run.ctx.world_size,
        "device": str(run.device), "pretrained": str(cfg.pretrained) if cfg.pretrained else None,
    }
    teacher = {"teacher": lm.teacher, "scale_source": lm.scale_source.value, "label_size": list(lm.label_size),
               "checkpoint_digest": lm.checkpoint_digest, "labels_dir": str(store.root),
               "frames_labelled": len(run.frames)}
    meta = ModelMeta(cfg.student, config_to_dict(run.arch_config), tuple(cfg.input_size), run.stride,
                     run.norm.mean, run.norm.scale, lm.world_frame, training=training, teacher=teacher,
                     mapping_up=mapping_up(invert_pose(run.frames.views[i].world_T_cam) for i in run.train_idx))
    if run.ctx.is_main and out is not None:
        meta = save_scene_model(out, net, meta)
    history = [EpochRecord(**h) for h in state.history]
    return TrainResult(out if run.ctx.is_main else None, meta, history, state.elapsed_s, reason)
