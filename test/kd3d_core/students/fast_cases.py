"""A small fast student and its model file, shared by the student tests."""
from __future__ import annotations

from pathlib import Path

import torch

from kd3d_core.students.fast import FastConfig, FastStudent, HeadKind
from kd3d_core.students.model_file import ModelMeta, save_scene_model
from kd3d_core.students.registry import config_to_dict

SMALL = FastConfig(stem_channels=(8, 8, 16), block_dilations=(1, 2), feature_dim=16, head_width=16, head_blocks=1,
                   head=HeadKind.MLP, knn_dim=8, knn_pq=0)


def save_small_fast(folder: Path) -> tuple[FastStudent, Path]:
    """A seeded SMALL student (64x48 input, coordinates shifted by (1, 2, 0.5)) saved as folder/m.kd3d."""
    torch.manual_seed(0)
    net = FastStudent(SMALL).eval()
    meta = ModelMeta(architecture="fast", config=config_to_dict(SMALL), input_size=(64, 48), output_stride=8,
                     coord_mean=(1.0, 2.0, 0.5), coord_scale=1.0, world_frame="map")
    path = folder / "m.kd3d"
    save_scene_model(path, net, meta)
    return net, path
