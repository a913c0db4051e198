"""Augmentation keeps labels consistent with K and pose; losses and data helpers behave as documented."""
import numpy as np
import pytest
import torch

from kd3d_core.geometry import invert_pose, project_points
from kd3d_core.training.augment import colour_jitter_, warp_view
from kd3d_core.training.config import AugmentConfig, LossKind, TrainConfig
from kd3d_core.training.data import coordinate_norm, load_frames, make_batch, split_indices
from kd3d_core.training.losses import distillation_loss, point_loss, reprojection_loss


def _reprojection_px(view):
    valid = view.conf_HW > 0
    v, u = np.nonzero(valid)
    uv, z = project_points(view.K, invert_pose(view.world_T_cam), view.points_HW3[valid].astype(np.float64))
    assert np.all(z > 0)
    return np.linalg.norm(uv - np.stack([u, v], -1), axis=1), valid.mean()


def test_warp_keeps_labels_consistent(tiny_scene):
    scene, store = tiny_scene
    view = load_frames(scene, store, (64, 48), progress=False).views[3]
    err0, _ = _reprojection_px(view)
    assert err0.max() < 0.01  # exact depth labels reproject onto their pixels
    warped = warp_view(view, 1.2, np.radians(8.0), (2.0, -1.0))
    err, frac = _reprojection_px(warped)
    # Nearest-neighbour resampling (never blends across depth edges): each label is its source pixel's point,
    # so it lies within scale * sqrt(0.5) px of the pixel it now labels.
    assert frac > 0.5 and np.median(err) < 0.6 and err.max() < 1.2 * 0.7072
    assert not np.allclose(warped.world_T_cam, view.world_T_cam)
    # A wrong K or pose would not reproject: the test can fail.
    wrong = warped._replace(world_T_cam=view.world_T_cam)
    assert np.median(_reprojection_px(wrong)[0]) > 1.0


def test_colour_jitter_is_seeded_and_bounded():
    images = torch.rand(4, 3, 8, 8)
    a = colour_jitter_(images.clone(), AugmentConfig(), torch.Generator().manual_seed(1))
    b = colour_jitter_(images.clone(), AugmentConfig(), torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, images)
    assert float(a.min()) >= 0 and float(a.max()) <= 1


def test_point_losses():
    pred = torch.zeros(1, 3, 1, 2)
    target = torch.tensor([[[[3.0, 0.0]], [[4.0, 0.0]], [[0.0, 0.0]]]])  # errors 5 and 0
    w = torch.tensor([[[1.0, 1.0]]])
    assert point_loss(pred, target, w, LossKind.MSE, 1.0).item() == pytest.approx(12.5)
    assert point_loss(pred, target, w, LossKind.L1, 1.0).item() == pytest.approx(2.5)
    assert point_loss(pred, target, w, LossKind.HUBER, 1.0).item() == pytest.approx(4.5 / 2)
    assert point_loss(pred, target, torch.tensor([[[0.0, 1.0]]]), LossKind.MSE, 1.0).item() == 0.0


def test_reprojection_loss_zero_for_exact_points(tiny_scene):
    scene, store = tiny_scene
    frames = load_frames(scene, store, (64, 48), progress=False)
    batch = make_batch(frames.views[:2], 8, coordinate_norm(frames.views), None, None)
    norm = coordinate_norm(frames.views)
    world = batch.targets_B3hw * norm.scale + torch.tensor(norm.mean).view(1, 3, 1, 1)
    uv = torch.from_numpy(np.stack(np.meshgrid(np.arange(8) * 8 + 4.0, np.arange(6) * 8 + 4.0), -1)).float()
    exact = reprojection_loss(world, uv, batch.K_B33, batch.cam_T_world_B44, batch.weights_Bhw, 10.0)
    shifted = reprojection_loss(world + 0.2, uv, batch.K_B33, batch.cam_T_world_B44, batch.weights_Bhw, 10.0)
    assert exact.item() < 1e-3 < shifted.item()
    parts = distillation_loss(batch.targets_B3hw, torch.full((2, 6, 8), 0.5), batch.targets_B3hw,
                              batch.weights_Bhw, TrainConfig(reproj_weight=1.0), norm.scale,
                              torch.tensor(norm.mean), uv, batch.K_B33, batch.cam_T_world_B44)
    assert parts.points.item() == 0.0 and parts.reproj.item() < 1e-3 and parts.conf.item() > 0


def test_split_and_norm(tiny_scene):
    train, val = split_indices(20, 0.1)
    assert val == [5, 15] and len(train) == 18
    assert split_indices(5, 0.0) == ([0, 1, 2, 3, 4], [])
    scene, store = tiny_scene
    frames = load_frames(scene, store, (64, 48), progress=False)
    norm = coordinate_norm(frames.views)
    batch = make_batch(frames.views, 8, norm, None, None)
    w = batch.weights_Bhw.unsqueeze(1)
    mean = (batch.targets_B3hw * w).sum((0, 2, 3)) / w.sum()
    assert mean.abs().max() < 0.2 and 0.5 < norm.scale < 3.0  # room-sized scale, roughly centred
