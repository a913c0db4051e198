"""Mapping views and the feature buffer of the fast student (ACE's idea, sized for a CPU).

The frozen encoder runs once per (augmented) mapping view; every output cell with a label becomes one buffer
row: its feature vector, the label's world point, and (for the reprojection loss) the view it came from and the
label pixel it stands for. Head training then draws random rows across all views, so every step sees
thousands of viewpoints instead of one image's correlated pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from tqdm import tqdm

from kd3d_core.errors import Kd3dError
from kd3d_core.students.model_file import IMAGENET_MEAN, IMAGENET_STD

STRIDE = 8


@dataclass(frozen=True)
class MappingView:
    """One mapping frame, ready for the encoder.

    Attributes:
        name: frame name.
        rgb_HW3: RGB uint8 at the network's input size.
        points_hw3: label world points (float32) at label resolution.
        valid_hw: where the label exists (confidence > 0 and finite points).
        K_label: intrinsics of the label grid.
        cam_T_world: 4x4 (inverse of the label's world_T_cam).
        K_image: intrinsics of rgb_HW3; cells find their label pixel through K_label @ inv(K_image), which also
            holds when the label grid is a crop (DUSt3R's centre crop). None: the label grid covers the whole
            image (plain rescaling).
    """

    name: str
    rgb_HW3: np.ndarray
    points_hw3: np.ndarray
    valid_hw: np.ndarray
    K_label: np.ndarray
    cam_T_world: np.ndarray
    K_image: np.ndarray | None = None


@dataclass(frozen=True)
class AugmentConfig:
    """Geometric and photometric augmentation used while filling the buffer.

    Attributes:
        enabled: augment at all (without it one pass over the views fills the buffer).
        scale: zoom factors are drawn log-uniformly from [1/scale, scale].
        rotation_deg: in-plane rotations drawn uniformly from [-rotation_deg, rotation_deg].
        brightness: multiplicative brightness jitter, drawn from [1 - b, 1 + b].
        contrast: contrast jitter around the image mean, drawn from [1 - c, 1 + c].
    """

    enabled: bool = True
    scale: float = 1.5
    rotation_deg: float = 15.0
    brightness: float = 0.1
    contrast: float = 0.1


@dataclass
class FeatureBuffer:
    """Rows of (feature, world point, view index, label pixel); points are relative to `mean_3`."""

    features_NC: torch.Tensor
    points_N3: torch.Tensor
    view_N: torch.Tensor
    px_N2: torch.Tensor
    cam_T_world_V34: torch.Tensor
    K_V33: torch.Tensor
    mean_3: torch.Tensor
    passes: int

    def __len__(self) -> int:
        return int(self.features_NC.shape[0])


def normalise_images(rgb_BHW3: np.ndarray) -> torch.Tensor:
    """RGB uint8 (B, H, W, 3) -> normalised float B3HW, as the model file's DeployModule does."""
    x = torch.from_numpy(np.ascontiguousarray(rgb_BHW3)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def cell_pixels(cells_wh: tuple[int, int]) -> np.ndarray:
    """Input pixel (u, v) of each output cell, (h*w, 2) float64 in row-major cell order."""
    w, h = cells_wh
    u, v = np.meshgrid(np.arange(w) * STRIDE + STRIDE // 2, np.arange(h) * STRIDE + STRIDE // 2)
    return np.stack([u.ravel(), v.ravel()], axis=-1).astype(np.float64)


def random_affine(size_wh: tuple[int, int], aug: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """2x3 affine (zoom and in-plane rotation about the image centre) mapping original to augmented pixels."""
    if not aug.enabled:
        return np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    s = math.exp(rng.uniform(-math.log(aug.scale), math.log(aug.scale))) if aug.scale > 1 else 1.0
    a = math.radians(rng.uniform(-aug.rotation_deg, aug.rotation_deg))
    c = np.array([(size_wh[0] - 1) / 2, (size_wh[1] - 1) / 2])
    R = s * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return np.concatenate([R, (c - R @ c)[:, None]], axis=1)


def augment_image(rgb_HW3: np.ndarray, A_23: np.ndarray, aug: AugmentConfig,
                  rng: np.random.Generator) -> np.ndarray:
    """Warp an image by A (black outside) and jitter brightness/contrast."""
    h, w = rgb_HW3.shape[:2]
    out = rgb_HW3
    if not np.allclose(A_23, [[1, 0, 0], [0, 1, 0]]):
        out = cv2.warpAffine(rgb_HW3, A_23, (w, h), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    if aug.enabled and (aug.brightness > 0 or aug.contrast > 0):
        b = rng.uniform(1 - aug.brightness, 1 + aug.brightness)
        c = rng.uniform(1 - aug.contrast, 1 + aug.contrast)
        f = out.astype(np.float32)
        out = np.clip((f - f.mean()) * c + f.mean() * b, 0, 255).astype(np.uint8)
    return out


def cell_labels(view: MappingView, A_23: np.ndarray, cells_wh: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """Label of every output cell of the augmented view.

    Returns:
        valid (h*w,) bool, world points (h*w, 3), label pixel (h*w, 2) float (the label pixel centre the point
        belongs to, for the reprojection loss).
    """
    H, W = view.rgb_HW3.shape[:2]
    lh, lw = view.valid_hw.shape
    A_inv = cv2.invertAffineTransform(A_23)
    uv = cell_pixels(cells_wh) @ A_inv[:, :2].T + A_inv[:, 2]
    if view.K_image is not None:
        M = view.K_label @ np.linalg.inv(view.K_image)  # image pixel -> label pixel (same camera, no skew)
        lu = np.rint(M[0, 0] * uv[:, 0] + M[0, 1] * uv[:, 1] + M[0, 2]).astype(np.int64)
        lv = np.rint(M[1, 1] * uv[:, 1] + M[1, 2]).astype(np.int64)
    else:
        lu = np.rint((uv[:, 0] + 0.5) * (lw / W) - 0.5).astype(np.int64)
        lv = np.rint((uv[:, 1] + 0.5) * (lh / H) - 0.5).astype(np.int64)
    inside = (lu >= 0) & (lu < lw) & (lv >= 0) & (lv < lh)
    lu_c, lv_c = np.clip(lu, 0, lw - 1), np.clip(lv, 0, lh - 1)
    valid = inside & view.valid_hw[lv_c, lu_c]
    return valid, view.points_hw3[lv_c, lu_c], np.stack([lu_c, lv_c], axis=-1).astype(np.float32)


@torch.no_grad()
def fill_buffer(encoder: torch.nn.Module, views: list[MappingView], size: int, aug: AugmentConfig,
                rng: np.random.Generator, batch_views: int = 8, max_passes: int = 20,
                progress: bool = True) -> FeatureBuffer:
    """Encode augmented mapping views until `size` labelled cells are collected (or max_passes are done).

    Without augmentation every view is encoded once, whatever `size`; when that gives more than `size` cells,
    `balanced_choice` keeps `size` of them spread over the whole scene (stopping early would drop whole views).
    """
    if not views:
        raise Kd3dError("no mapping views with labels to train on")
    rows: list[tuple[np.ndarray, ...]] = []
    count, passes = 0, 0
    stop_at = size if aug.enabled else np.inf
    bar = tqdm(total=size if aug.enabled else len(views), desc="feature buffer", disable=not progress,
               unit="cell" if aug.enabled else "view", unit_scale=aug.enabled)
    while count < size and passes < (max_passes if aug.enabled else 1):
        passes += 1
        order = rng.permutation(len(views))
        for start in range(0, len(order), batch_views):
            idx = order[start:start + batch_views]
            got = _encode_batch(encoder, [views[i] for i in idx], idx, aug, rng)
            rows.append(got)
            count += len(got[1])
            bar.update(len(got[1]) if aug.enabled else len(idx))
            if count >= stop_at:
                break
    bar.total = bar.n  # one pass over the views may hold fewer cells than `size`: end the bar at 100 %
    bar.refresh()
    bar.close()
    return _assemble(rows, views, size, rng, passes)


def _encode_batch(encoder: torch.nn.Module, batch: list[MappingView], idx: np.ndarray, aug: AugmentConfig,
                  rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    H, W = batch[0].rgb_HW3.shape[:2]
    affines = [random_affine((W, H), aug, rng) for _ in batch]
    images = np.stack([augment_image(v.rgb_HW3, A, aug, rng) for v, A in zip(batch, affines)])
    param = next(encoder.parameters())
    feats_BChw = encoder(normalise_images(images).to(param.device, param.dtype))
    B, C, h, w = feats_BChw.shape
    feats_BNC = feats_BChw.permute(0, 2, 3, 1).reshape(B, h * w, C).to("cpu", torch.bfloat16)
    out_f, out_p, out_v, out_px = [], [], [], []
    for b, (view, A) in enumerate(zip(batch, affines)):
        valid, points, px = cell_labels(view, A, (w, h))
        sel = torch.from_numpy(np.flatnonzero(valid))
        out_f.append(feats_BNC[b].index_select(0, sel))
        out_p.append(points[valid])
        out_v.append(np.full(int(valid.sum()), idx[b], np.int32))
        out_px.append(px[valid])
    return torch.cat(out_f), np.concatenate(out_p), np.concatenate(out_v), np.concatenate(out_px)


def balanced_choice(points_N3: np.ndarray, size: int, rng: np.random.Generator, voxel_m: float = 0.03) -> np.ndarray:
    """`size` row indices (sorted) spread evenly over the scene: one random cell of every occupied voxel first, then
    a second one of every voxel, and so on. A uniform random subset keeps the surfaces every view sees (floor,
    nearby walls) many times over and thins out the rarely seen ones; this keeps every seen surface."""
    order = rng.permutation(len(points_N3))
    vox = np.floor(points_N3[order] / voxel_m).astype(np.int64)
    _, voxel_id = np.unique(vox, axis=0, return_inverse=True)
    voxel_id = voxel_id.reshape(-1)
    by_voxel = np.argsort(voxel_id, kind="stable")
    starts = np.searchsorted(voxel_id[by_voxel], voxel_id[by_voxel])
    rank = np.empty(len(order), np.int64)
    rank[by_voxel] = np.arange(len(order)) - starts  # 0 for a voxel's first (random) cell, 1 for its second...
    chosen = order[np.argsort(rank, kind="stable")[:size]]
    return np.sort(chosen)


def _assemble(rows: list[tuple], views: list[MappingView], size: int, rng: np.random.Generator,
              passes: int) -> FeatureBuffer:
    features = torch.cat([r[0] for r in rows])
    points = np.concatenate([r[1] for r in rows]).astype(np.float32)
    view_ids = np.concatenate([r[2] for r in rows])
    px = np.concatenate([r[3] for r in rows])
    if len(points) == 0:
        raise Kd3dError("the labels cover no output cell of any mapping view")
    if len(points) > size:
        keep = balanced_choice(points, size, rng)
        features, points, view_ids, px = features[torch.from_numpy(keep)], points[keep], view_ids[keep], px[keep]
    mean = points.mean(axis=0)
    return FeatureBuffer(
        features_NC=features.contiguous(), points_N3=torch.from_numpy(points - mean),
        view_N=torch.from_numpy(view_ids.astype(np.int64)), px_N2=torch.from_numpy(px),
        cam_T_world_V34=torch.from_numpy(np.stack([v.cam_T_world[:3] for v in views]).astype(np.float32)),
        K_V33=torch.from_numpy(np.stack([v.K_label for v in views]).astype(np.float32)),
        mean_3=torch.from_numpy(mean.astype(np.float64)), passes=passes)
