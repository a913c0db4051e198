"""Shared fixtures: a tiny synthetic room scene and a tiny randomly initialised DUSt3R in the official format."""
from __future__ import annotations

from pathlib import Path

import pytest

TINY_MODEL = ("AsymmetricCroCo3DStereo(pos_embed='RoPE100', patch_embed_cls='ManyAR_PatchEmbed', img_size=(224, 224), "
              "head_type='linear', output_mode='pts3d', depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, inf), "
              "enc_embed_dim=64, enc_depth=2, enc_num_heads=2, dec_embed_dim=64, dec_depth=2, dec_num_heads=2)")


@pytest.fixture(scope="session")
def synth_scene(tmp_path_factory) -> Path:
    """Six mapping frames of the 'tiny' synthetic room at 64x48 with exact depth and poses."""
    from kd3d_core.synth import SynthConfig, render_scene

    out = tmp_path_factory.mktemp("scene") / "room"
    render_scene(SynthConfig(preset="tiny", seed=3, mapping_frames=6, query_frames=2, size_wh=(64, 48)), out,
                 progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny AsymmetricCroCo3DStereo (linear head, dim 64, depth 2) saved as an official .pth."""
    torch = pytest.importorskip("torch")
    from kd3d_core.teachers.checkpoint import import_model_class, parse_model_string, save_official_checkpoint

    cls, _ = import_model_class()
    torch.manual_seed(0)
    model = cls(**parse_model_string(TINY_MODEL))
    path = tmp_path_factory.mktemp("ckpt") / "tiny_224_linear.pth"
    save_official_checkpoint(path, TINY_MODEL, model.state_dict())
    return path
