"""Held-out scene-coordinate error (the paper's metric: mean / median L2 distance in metres)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from kd3d_core.students.model_file import IMAGENET_MEAN, IMAGENET_STD
from kd3d_core.training.augment import LabelledView
from kd3d_core.training.data import CoordNorm, make_batch
from kd3d_core.training.losses import l2_errors_m


def heldout_errors(net: nn.Module, views: list[LabelledView], norm: CoordNorm, device: torch.device,
                   batch_size: int = 8) -> np.ndarray:
    """Per-cell L2 errors (m) of `net` against the labels of `views` (labelled cells only, no augmentation).

    The network is put in eval mode for the evaluation and restored to its previous mode afterwards.
    """
    was_training = net.training
    net.eval()
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    errors = []
    try:
        with torch.inference_mode():
            for i in range(0, len(views), batch_size):
                batch = make_batch(views[i:i + batch_size], net.output_stride, norm, None, None)
                points, _ = net((batch.images_B3HW.to(device) - mean) / std)
                errors.append(l2_errors_m(points, batch.targets_B3hw.to(device), batch.weights_Bhw.to(device),
                                          norm.scale).cpu())
    finally:
        net.train(was_training)
    return torch.cat(errors).numpy() if errors else np.zeros(0, np.float32)
