"""Distillation losses and the paper's held-out metric.

All losses run in float32 outside autocast. Coordinates are in the normalised frame (world = x * scale +
mean) for conditioning; thresholds given in metres are converted with the scale.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from kd3d_core.training.config import LossKind, TrainConfig


class LossParts(NamedTuple):
    """Total loss and its terms (floats for logging are taken by the caller)."""

    total: torch.Tensor
    points: torch.Tensor
    conf: torch.Tensor
    reproj: torch.Tensor


def point_loss(pred_B3hw: torch.Tensor, target_B3hw: torch.Tensor, weight_Bhw: torch.Tensor, kind: LossKind,
               delta: float) -> torch.Tensor:
    """Teacher-confidence-weighted robust distance between predicted and label coordinates.

    MSE is the paper's loss (squared L2 per cell); L1 uses the L2 norm; Huber is quadratic below `delta`
    (normalised units) and linear above. Cells with weight 0 have no label.
    """
    err2 = ((pred_B3hw - target_B3hw) ** 2).sum(dim=1)
    if kind is LossKind.MSE:
        rho = err2
    else:
        d = torch.sqrt(err2 + 1e-12)
        rho = d if kind is LossKind.L1 else torch.where(d < delta, 0.5 * err2 / delta, d - 0.5 * delta)
    return (weight_Bhw * rho).sum() / weight_Bhw.sum().clamp_min(1e-6)


def confidence_loss(conf_Bhw: torch.Tensor, error_m_Bhw: torch.Tensor, valid_Bhw: torch.Tensor,
                    tau_m: float) -> torch.Tensor:
    """Teach the confidence head to predict exp(-error / tau): ~1 for accurate cells, ~0 for bad ones.

    The target is detached, so this term never pulls the coordinates; the relocalizer uses the confidence to
    weight 2D-3D matches.
    """
    target = torch.exp(-error_m_Bhw.detach() / tau_m)
    bce = F.binary_cross_entropy(conf_Bhw.clamp(1e-6, 1 - 1e-6), target, reduction="none")
    return (bce * valid_Bhw).sum() / valid_Bhw.sum().clamp_min(1.0)


def reprojection_loss(world_B3hw: torch.Tensor, uv_hw2: torch.Tensor, K_B33: torch.Tensor,
                      cam_T_world_B44: torch.Tensor, valid_Bhw: torch.Tensor, tau_px: float) -> torch.Tensor:
    """Robust reprojection error of predicted world points into the labelled camera (ACE-style tanh).

    Points behind or too close to the camera (z < 0.1 m) are pulled to 0.1 m in front instead.
    """
    b = world_B3hw.shape[0]
    pts = world_B3hw.reshape(b, 3, -1)
    cam = cam_T_world_B44[:, :3, :3] @ pts + cam_T_world_B44[:, :3, 3:]
    z = cam[:, 2]
    proj = K_B33 @ (cam / z.clamp_min(0.1).unsqueeze(1))
    err = torch.linalg.vector_norm(proj[:, :2] - uv_hw2.reshape(-1, 2).T.unsqueeze(0), dim=1)
    valid = valid_Bhw.reshape(b, -1)
    front = (z > 0.1).float() * valid
    robust = torch.tanh(err / tau_px)  # ~err/tau near 0, saturates at 1 for outliers
    behind = (0.1 - z).clamp_min(0) * (1 - (z > 0.1).float()) * valid
    return ((robust * front).sum() + behind.sum()) / valid.sum().clamp_min(1.0)


def distillation_loss(points_B3hw: torch.Tensor, conf_Bhw: torch.Tensor, targets_B3hw: torch.Tensor,
                      weights_Bhw: torch.Tensor, cfg: TrainConfig, coord_scale: float,
                      coord_mean_13: torch.Tensor, uv_hw2: torch.Tensor | None = None,
                      K_B33: torch.Tensor | None = None, cam_T_world_B44: torch.Tensor | None = None) -> LossParts:
    """Total training loss: points (paper) + confidence head + optional reprojection."""
    points_B3hw, conf_Bhw = points_B3hw.float(), conf_Bhw.float()
    pts = point_loss(points_B3hw, targets_B3hw, weights_Bhw, cfg.loss, cfg.huber_delta_m / coord_scale)
    valid = (weights_Bhw > 0).float()
    err_m = torch.linalg.vector_norm(points_B3hw - targets_B3hw, dim=1) * coord_scale
    conf = confidence_loss(conf_Bhw, err_m, valid, cfg.conf_tau_m) if cfg.conf_weight > 0 else pts.new_zeros(())
    reproj = pts.new_zeros(())
    if cfg.reproj_weight > 0 and uv_hw2 is not None and K_B33 is not None and cam_T_world_B44 is not None:
        world = points_B3hw * coord_scale + coord_mean_13.view(1, 3, 1, 1)
        reproj = reprojection_loss(world, uv_hw2, K_B33, cam_T_world_B44, valid, cfg.reproj_tau_px)
    total = pts + cfg.conf_weight * conf + cfg.reproj_weight * reproj
    return LossParts(total, pts.detach(), conf.detach(), reproj.detach())


def l2_errors_m(points_B3hw: torch.Tensor, targets_B3hw: torch.Tensor, weights_Bhw: torch.Tensor,
                coord_scale: float) -> torch.Tensor:
    """The paper's metric: per-cell L2 distance in metres, for labelled cells only (flat tensor)."""
    err = torch.linalg.vector_norm(points_B3hw.float() - targets_B3hw, dim=1) * coord_scale
    return err[weights_Bhw > 0]
