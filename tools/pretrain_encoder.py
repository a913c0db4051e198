#!/usr/bin/env python3
"""Pretrain the fast student's scene-agnostic encoder on many procedural rooms (ACE-style).

One shared encoder, one small head per room: every step runs a few augmented views from random rooms through
the encoder, each room's head regresses its scene coordinates (exact, from the renderer's depth and pose), and
the encoder learns features from which *any* room's head can regress coordinates quickly. The result is a
drop-in encoder file (+ a JSON describing the run) for `kd3d train --student fast --encoder FILE`; kd3d ships no
pretrained encoder (the default is the untrained, seeded one: kd3d_core/assets/README.md says why).

    python tools/pretrain_encoder.py render --out /tmp/kd3d_pretrain --rooms 30 --frames 80
    python tools/pretrain_encoder.py train --data /tmp/kd3d_pretrain --minutes 20 \\
        --out /tmp/kd3d_pretrain/fast_encoder.safetensors

Rooms use seeds from 1000 on, so they never coincide with demo or test rooms (small seeds).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kd3d_core.geometry import transform_points  # noqa: E402
from kd3d_core.io_utils import atomic_file, atomic_write_text  # noqa: E402
from kd3d_core.students.fast import FastConfig, FastEncoder, FastHead  # noqa: E402
from kd3d_core.training.fast_buffer import (STRIDE, AugmentConfig, augment_image, cell_pixels,  # noqa: E402
                                            normalise_images, random_affine)
from kd3d_core.synth import SynthConfig, make_room, render_view, synth_intrinsics, synth_poses  # noqa: E402

PRESETS = ("office", "kitchen", "living", "bedroom", "lab")


def render_rooms(out: Path, presets: list[str], seeds: list[int], frames: int, size_wh: tuple[int, int]) -> None:
    """Render `frames` views of each (preset, seed) room into out/PRESET_SEED.npz (skips rooms already there).

    Each file holds rgb_NHW3 uint8, depth_NHW float16 (z metres), K (3x3) and world_T_cam_N44.
    """
    out.mkdir(parents=True, exist_ok=True)
    for preset, seed in zip(presets, seeds):
        path = out / f"{preset}_{seed}.npz"
        if path.is_file():
            continue
        n_query = frames // 4
        config = SynthConfig(preset=preset, seed=seed, mapping_frames=frames - n_query, query_frames=n_query,
                             size_wh=size_wh)
        room = make_room(config)
        mapping, query = synth_poses(config)
        K = synth_intrinsics(size_wh)
        start = time.perf_counter()
        views = [render_view(room, K, pose, size_wh) for pose in tqdm(mapping + query, desc=path.stem)]
        with atomic_file(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, rgb_NHW3=np.stack([v.rgb for v in views]),
                     depth_NHW=np.stack([v.depth for v in views]).astype(np.float16), K=K,
                     world_T_cam_N44=np.stack(mapping + query))
        print(f"{path.name}: {len(views)} views in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)


class Objective(str, Enum):
    """What trains the encoder.

    REGRESSION: ACE's recipe, one scene-coordinate head per room (needs far more steps than a CPU budget gives:
    measured, the loss did not move in 300 steps because each room's head sees a room only every few steps).
    CONTRASTIVE: cells of two overlapping views that see the same 3D point (within `match_m`, known exactly
    from depth and poses) must have the most similar features among all cells of the batch (InfoNCE). Every
    step trains the encoder directly, so features become view-invariant and distinctive within minutes.
    """

    REGRESSION = "regression"
    CONTRASTIVE = "contrastive"


@dataclass(frozen=True)
class PretrainConfig:
    """Encoder pretraining settings.

    Attributes:
        minutes: wall-clock budget (the learning-rate schedule follows elapsed time, so any budget finishes
            its schedule).
        crop_wh: training crop (network input) size; crops of augmented full views keep the inference scale
            while costing a fraction of a full image.
        batch_views: views (from random rooms) per step.
        lr: peak learning rate (encoder and heads).
        seed: seeds everything.
        threads: torch CPU threads.
        checkpoint_minutes: write the encoder every this many minutes (a cut-short run still leaves weights).
        rooms: use only the first this many rooms (by seed); fewer rooms converge faster in a short budget.
        objective: see Objective.
        temperature: InfoNCE temperature (contrastive).
        match_m: two cells are the same point when their world points are closer than this (contrastive).
        max_frame_gap: contrastive pairs are views at most this many frames apart on a walk.
    """

    minutes: float = 20.0
    crop_wh: tuple[int, int] = (160, 120)
    batch_views: int = 8
    lr: float = 1e-3
    seed: int = 0
    threads: int = 1
    checkpoint_minutes: float = 3.0
    rooms: int | None = None
    objective: Objective = Objective.CONTRASTIVE
    temperature: float = 0.07
    match_m: float = 0.04
    max_frame_gap: int = 4


@dataclass
class Room:
    """One rendered room in memory."""

    name: str
    rgb_NHW3: np.ndarray
    depth_NHW: np.ndarray
    K: np.ndarray
    world_T_cam_N44: np.ndarray
    mean_3: np.ndarray


def load_rooms(data: Path, limit: int | None = None) -> list[Room]:
    """Room files of a render cache (the first `limit` by seed), with their mean camera centre (head offset)."""
    rooms = []
    paths = sorted(data.glob("*.npz"), key=lambda p: int(p.stem.split("_")[-1]))[:limit]
    for path in paths:
        with np.load(path) as z:
            rgb, depth, K, poses = z["rgb_NHW3"], z["depth_NHW"], z["K"], z["world_T_cam_N44"]
        centres = poses[:, :3, 3]
        rooms.append(Room(path.stem, rgb, depth, K, poses, centres.mean(axis=0)))
    if not rooms:
        raise SystemExit(f"no rooms in {data}; run the render stage first")
    return rooms


def crop_affine(size_wh: tuple[int, int], crop_wh: tuple[int, int], aug: AugmentConfig,
                rng: np.random.Generator) -> np.ndarray:
    """Random zoom/rotation about the view centre, then a random crop window (as one 2x3 affine)."""
    A = random_affine(size_wh, aug, rng)
    ox = rng.uniform(0, size_wh[0] - crop_wh[0])
    oy = rng.uniform(0, size_wh[1] - crop_wh[1])
    A[:, 2] -= (ox, oy)
    return A


def view_sample(room: Room, i: int, A: np.ndarray, crop_wh: tuple[int, int], aug: AugmentConfig,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Augmented crop (uint8), valid mask and room-centred world points of its output cells."""
    rgb = room.rgb_NHW3[i]
    image = augment_image(cv2.warpAffine(rgb, A, crop_wh, flags=cv2.INTER_LINEAR), np.eye(2, 3), aug, rng)
    cells_wh = (crop_wh[0] // STRIDE, crop_wh[1] // STRIDE)
    uv = cell_pixels(cells_wh) @ cv2.invertAffineTransform(A)[:, :2].T + cv2.invertAffineTransform(A)[:, 2]
    H, W = rgb.shape[:2]
    u, v = np.rint(uv[:, 0]).astype(int), np.rint(uv[:, 1]).astype(int)
    inside = (u >= 0) & (u < W) & (v >= 0) & (v < H)
    u, v = np.clip(u, 0, W - 1), np.clip(v, 0, H - 1)
    d = room.depth_NHW[i][v, u].astype(np.float64)
    valid = inside & (d > 0.05) & np.isfinite(d)
    K = room.K
    cam = np.stack([(u - K[0, 2]) / K[0, 0] * d, (v - K[1, 2]) / K[1, 1] * d, d], axis=-1)
    world = transform_points(room.world_T_cam_N44[i], cam) - room.mean_3
    return image, valid, world.astype(np.float32)


class _RoomHead(nn.Module):
    """A room's head during pretraining: parameter-free batch standardisation of the features, then a FastHead
    (mapping standardises the buffer the same way, so the encoder's absolute feature scale never matters)."""

    def __init__(self, config: FastConfig) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(config.feature_dim, affine=False)
        self.head = FastHead(config)

    def forward_flat(self, features_NC: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head.forward_flat(self.norm(features_NC))


def pretrain_encoder(data: Path, out: Path, config: PretrainConfig, command: str) -> None:
    """Train the shared encoder with one head per room for `config.minutes`; write it (fp16) and a JSON."""
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    rooms = load_rooms(data, config.rooms)
    fast = FastConfig()
    encoder = FastEncoder(fast)
    heads = nn.ModuleList(_RoomHead(fast) for _ in rooms)
    # Heads start from scratch every room and must keep up with the encoder: give them a larger step.
    opt = torch.optim.AdamW([{"params": encoder.parameters(), "scale": 1.0},
                             {"params": heads.parameters(), "scale": 3.0}], lr=config.lr, weight_decay=0.0)
    aug = AugmentConfig(scale=1.5, rotation_deg=15.0, brightness=0.15, contrast=0.15)
    budget = config.minutes * 60
    start = last_ckpt = time.perf_counter()
    step, log = 0, []
    while (elapsed := time.perf_counter() - start) < budget:
        frac = elapsed / budget
        lr = config.lr * min(1.0, frac / 0.05) * 0.5 * (1 + math.cos(math.pi * frac))
        for g in opt.param_groups:
            g["lr"] = max(lr, config.lr * 0.01) * g["scale"]
        if config.objective is Objective.CONTRASTIVE:
            loss, med = _contrastive_step(encoder, rooms, opt, config, aug, rng)
        else:
            loss, med = _step(encoder, heads, rooms, opt, config, aug, rng)
        step += 1
        log.append((loss, med))
        if step % 25 == 0:
            l, m = np.mean(log[-25:], axis=0)
            print(f"step {step} t={elapsed:.0f}s lr={lr:.2e} loss={l:.3f} metric={m:.3f}", flush=True)
        if time.perf_counter() - last_ckpt > config.checkpoint_minutes * 60:
            _save(encoder, out, config, command, step, elapsed, log, rooms)
            last_ckpt = time.perf_counter()
    _save(encoder, out, config, command, step, time.perf_counter() - start, log, rooms)


def _step(encoder: nn.Module, heads: nn.ModuleList, rooms: list[Room], opt: torch.optim.Optimizer,
          config: PretrainConfig, aug: AugmentConfig, rng: np.random.Generator) -> tuple[float, float]:
    picks = [(int(rng.integers(len(rooms))), 0) for _ in range(config.batch_views)]
    picks = [(r, int(rng.integers(len(rooms[r].rgb_NHW3)))) for r, _ in picks]
    images, valids, targets = [], [], []
    for r, i in picks:
        H, W = rooms[r].rgb_NHW3.shape[1:3]
        A = crop_affine((W, H), config.crop_wh, aug, rng)
        image, valid, world = view_sample(rooms[r], i, A, config.crop_wh, aug, rng)
        images.append(image)
        valids.append(valid)
        targets.append(world)
    feats_BChw = encoder(normalise_images(np.stack(images)))
    B, C, h, w = feats_BChw.shape
    feats_BNC = feats_BChw.permute(0, 2, 3, 1).reshape(B, h * w, C)
    errs = []
    for b, (r, _) in enumerate(picks):
        sel = torch.from_numpy(np.flatnonzero(valids[b]))
        if len(sel) == 0:
            continue
        pred, _ = heads[r].forward_flat(feats_BNC[b].index_select(0, sel))
        errs.append((pred - torch.from_numpy(targets[b][valids[b]])).norm(dim=-1))
    err = torch.cat(errs)
    loss = err.mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach()), float(err.detach().median())


def _contrastive_step(encoder: nn.Module, rooms: list[Room], opt: torch.optim.Optimizer, config: PretrainConfig,
                      aug: AugmentConfig, rng: np.random.Generator) -> tuple[float, float]:
    """One InfoNCE step on pairs of nearby views; returns (loss, top-1 matching accuracy)."""
    images, valids, worlds = [], [], []
    for _ in range(max(1, config.batch_views // 2)):
        r = int(rng.integers(len(rooms)))
        n = len(rooms[r].rgb_NHW3)
        i = int(rng.integers(n))
        j = int(np.clip(i + rng.integers(-config.max_frame_gap, config.max_frame_gap + 1), 0, n - 1))
        for k in (i, j):
            H, W = rooms[r].rgb_NHW3.shape[1:3]
            A = crop_affine((W, H), config.crop_wh, aug, rng)
            image, valid, world = view_sample(rooms[r], k, A, config.crop_wh, aug, rng)
            images.append(image)
            valids.append(valid)
            worlds.append(world + rooms[r].mean_3.astype(np.float32) + 1000.0 * r)  # rooms never match each other
    feats = encoder(normalise_images(np.stack(images)))
    B, C, h, w = feats.shape
    feats = F.normalize(feats.permute(0, 2, 3, 1).reshape(B, h * w, C), dim=-1)
    valid = torch.from_numpy(np.stack(valids))
    world = torch.from_numpy(np.stack(worlds))
    losses, hits = [], []
    for src, dst in ((0, 1), (1, 0)):
        bank, bank_xyz = feats[dst::2][valid[dst::2]], world[dst::2][valid[dst::2]]
        query, query_xyz = feats[src::2][valid[src::2]], world[src::2][valid[src::2]]
        dist, target = torch.cdist(query_xyz, bank_xyz).min(dim=1)
        pos = dist < config.match_m
        if pos.sum() == 0:
            continue
        logits = query[pos] @ bank.T / config.temperature
        losses.append(F.cross_entropy(logits, target[pos]))
        hits.append((logits.argmax(dim=1) == target[pos]).float().mean())
    if not losses:
        return float("nan"), float("nan")
    loss = torch.stack(losses).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach()), float(torch.stack(hits).mean())


def _save(encoder: nn.Module, out: Path, config: PretrainConfig, command: str, step: int, seconds: float,
          log: list, rooms: list[Room]) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().half().contiguous() for k, v in encoder.state_dict().items()}
    with atomic_file(out, suffix=".safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "kd3d-fast-encoder", "config": json.dumps(FastConfig().__dict__)})
    tail = np.mean(log[-100:], axis=0) if log else (float("nan"), float("nan"))
    info = {"what": "kd3d fast student encoder (kd3d_core.students.fast.FastEncoder), fp16 safetensors",
            "encoder_config": {k: list(v) if isinstance(v, tuple) else v for k, v in FastConfig().__dict__.items()},
            "recipe": Objective.__doc__.split("\n\n", 1)[1].replace("\n", " ").replace("    ", ""),
            "data": {"rooms": [r.name for r in rooms], "views_per_room": int(rooms[0].rgb_NHW3.shape[0]),
                     "render_size": [int(rooms[0].rgb_NHW3.shape[2]), int(rooms[0].rgb_NHW3.shape[1])],
                     "generator": "kd3d_core.synth (make_room, synth_poses, render_view)"},
            "config": {k: (list(v) if isinstance(v, tuple) else v.value if isinstance(v, Enum) else v)
                       for k, v in config.__dict__.items()},
            "command": command, "steps": step, "wall_seconds": round(seconds, 1),
            "final_loss": float(tail[0]),
            "final_metric": float(tail[1]), "metric": "top-1 match accuracy" if config.objective is
            Objective.CONTRASTIVE else "median scene-coordinate error (m)",
            "torch": torch.__version__}
    atomic_write_text(out.with_suffix(".json"), json.dumps(info, indent=1) + "\n")
    print(f"saved {out} (step {step}, {seconds:.0f} s)", flush=True)


def _size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one stage."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="stage", required=True)
    r = sub.add_parser("render", help="render pretraining rooms into a cache folder (one .npz per room)")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--rooms", type=int, default=30)
    r.add_argument("--frames", type=int, default=80, help="views per room (3/4 mapping walk, 1/4 query walk)")
    r.add_argument("--size", type=_size, default=(320, 240))
    r.add_argument("--first-seed", type=int, default=1000)
    t = sub.add_parser("train", help="train the shared encoder with one head per room")
    t.add_argument("--data", type=Path, required=True)
    t.add_argument("--out", type=Path, required=True, help="encoder .safetensors (a .json is written beside it)")
    t.add_argument("--minutes", type=float, default=20.0)
    t.add_argument("--crop", type=_size, default=(160, 120), help="training crop WxH (multiples of 8)")
    t.add_argument("--batch", type=int, default=8, help="views per step")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--rooms", type=int, default=None, help="use only the first N rooms (by seed)")
    t.add_argument("--objective", default="contrastive", choices=[o.value for o in Objective])
    args = parser.parse_args(argv)
    if args.stage == "render":
        presets = [PRESETS[i % len(PRESETS)] for i in range(args.rooms)]
        seeds = [args.first_seed + i for i in range(args.rooms)]
        render_rooms(args.out, presets, seeds, args.frames, args.size)
        return 0
    config = PretrainConfig(minutes=args.minutes, crop_wh=args.crop, batch_views=args.batch, lr=args.lr,
                            seed=args.seed, threads=args.threads, rooms=args.rooms,
                            objective=Objective(args.objective))
    pretrain_encoder(args.data, args.out, config, command=" ".join([Path(sys.argv[0]).name] + sys.argv[1:]))
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=3, suppress=True)
    sys.exit(main())
