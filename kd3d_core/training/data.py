"""Training data: a scene's labelled mapping frames at the network input size, held in memory.

Frames are read once (RGB resized with its K, label maps resized by nearest neighbour so every label stays a
real world point), then batches are cut from memory: random label-consistent warps, then the label maps are
sampled at the output cells' pixels (`registry.cell_centres`), exactly the pixels `SceneModel` reports.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np
import torch
from tqdm import tqdm

from kd3d_core.errors import Kd3dError
from kd3d_core.geometry import invert_pose, resize_with_intrinsics, scale_intrinsics
from kd3d_core.labels import LabelsMeta, LabelStore
from kd3d_core.scene import Scene, Split
from kd3d_core.training.augment import LabelledView, random_warp
from kd3d_core.training.config import AugmentConfig


@dataclass(frozen=True)
class CoordNorm:
    """world = normalised * scale + mean (stored in the model file)."""

    mean: tuple[float, float, float]
    scale: float


class Batch(NamedTuple):
    """One training batch (CPU tensors)."""

    images_B3HW: torch.Tensor      # float RGB in [0, 1]
    targets_B3hw: torch.Tensor     # normalised label coordinates at the output cells
    weights_Bhw: torch.Tensor      # teacher confidence, 0 = no label
    K_B33: torch.Tensor            # intrinsics of the (warped) input image
    cam_T_world_B44: torch.Tensor


@dataclass
class LabelledFrames:
    """Labelled frames of one scene at one input size (see module docstring)."""

    names: list[str]
    views: list[LabelledView]
    labels_meta: LabelsMeta

    def __len__(self) -> int:
        return len(self.views)


def labelled_names(scene: Scene, store: LabelStore, meta: LabelsMeta) -> list[str]:
    """Mapping frames that have a label on disk and were not flagged as failed by the teacher."""
    on_disk = set(store.names())
    failed = set(meta.failed_frames)
    names = [f.name for f in scene.split(Split.MAPPING) if f.name in on_disk and f.name not in failed]
    if not names:
        raise Kd3dError(f"no labelled mapping frames in {store.root} for scene {scene.root}; run `kd3d teach`")
    return names


def load_view(scene: Scene, store: LabelStore, name: str, size_wh: tuple[int, int]) -> LabelledView:
    """One frame's image and labels at the input size."""
    frame = scene.frame(name)
    rgb, _ = resize_with_intrinsics(frame.load_rgb(), frame.K, size_wh)
    label = store.read(name)
    lh, lw = label.conf_HW.shape
    points = cv2.resize(label.points_HW3.astype(np.float32), size_wh, interpolation=cv2.INTER_NEAREST)
    conf = cv2.resize(label.conf_HW.astype(np.float32), size_wh, interpolation=cv2.INTER_NEAREST)
    bad = ~np.isfinite(points).all(axis=-1) | ~np.isfinite(conf) | (conf < 0)
    points[bad] = 0.0
    conf[bad] = 0.0
    K = scale_intrinsics(label.K, size_wh[0] / lw, size_wh[1] / lh)
    return LabelledView(np.ascontiguousarray(rgb), points, conf, K, np.asarray(label.world_T_cam, np.float64))


def load_frames(scene: Scene, store: LabelStore, size_wh: tuple[int, int], progress: bool = True) -> LabelledFrames:
    """Read every labelled mapping frame into memory (progress bar)."""
    meta = store.read_meta()
    names = labelled_names(scene, store, meta)
    views = [load_view(scene, store, n, size_wh)
             for n in tqdm(names, desc="load labels", unit="frame", disable=not progress, leave=False)]
    return LabelledFrames(names, views, meta)


def split_indices(n: int, val_fraction: float) -> tuple[list[int], list[int]]:
    """Held-out split: every k-th frame (k = 1 / val_fraction), so it spans the whole trajectory."""
    if val_fraction <= 0 or n < 2:
        return list(range(n)), []
    k = max(2, round(1 / val_fraction))
    val = list(range(k // 2, n, k))
    return [i for i in range(n) if i not in set(val)], val


def coordinate_norm(views: list[LabelledView]) -> CoordNorm:
    """Confidence-weighted mean and RMS radius of the label points."""
    total, wsum = np.zeros(3), 0.0
    for v in views:
        w = v.conf_HW.astype(np.float64)
        total += (v.points_HW3 * w[..., None]).reshape(-1, 3).sum(0)
        wsum += w.sum()
    if wsum <= 0:
        raise Kd3dError("labels hold no confident points (all confidences are 0)")
    mean = total / wsum
    sq = sum(float((((v.points_HW3 - mean) ** 2).sum(-1) * v.conf_HW).sum()) for v in views)
    return CoordNorm(tuple(float(x) for x in mean), max(float(np.sqrt(sq / wsum)), 1e-6))


def make_batch(views: list[LabelledView], stride: int, norm: CoordNorm, augment: AugmentConfig | None,
               rng: np.random.Generator | None) -> Batch:
    """Stack views into tensors: warps (when `augment`), then labels sampled at the output cells."""
    o = stride // 2
    imgs, tgts, wts, Ks, poses = [], [], [], [], []
    mean = np.asarray(norm.mean, np.float32)
    for v in views:
        if augment is not None and rng is not None:
            v = random_warp(v, augment, rng)
        imgs.append(v.rgb_HW3)
        tgts.append((v.points_HW3[o::stride, o::stride] - mean) / np.float32(norm.scale))
        wts.append(v.conf_HW[o::stride, o::stride])
        Ks.append(v.K)
        poses.append(invert_pose(v.world_T_cam))
    images = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float().div_(255.0)
    return Batch(images, torch.from_numpy(np.stack(tgts)).permute(0, 3, 1, 2).contiguous(),
                 torch.from_numpy(np.stack(wts)), torch.from_numpy(np.stack(Ks)).float(),
                 torch.from_numpy(np.stack(poses)).float())
