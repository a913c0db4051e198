"""`kd3d localize` and `kd3d replay` with a real (tiny, untrained) .kd3d model: the command plumbing."""
from __future__ import annotations

import json

import torch

from kd3d_core.bags import open_bag, write_scene_bag
from kd3d_core.cli import main
from kd3d_core.scene import Split, open_scene
from kd3d_core.students import get_architecture
from kd3d_core.students.model_file import ModelMeta, save_scene_model
from kd3d_core.students.registry import config_to_dict
from kd3d_core.students.vit import ViTConfig
from kd3d_core.synth import SynthConfig, render_scene


def _tiny_model(path):
    cfg = ViTConfig(patch=16, blocks=1, decoder_blocks=1, heads=2, latent=16, head_channels=8)
    torch.manual_seed(0)
    net = get_architecture("vit").build(cfg, (64, 48))
    save_scene_model(path, net, ModelMeta("vit", config_to_dict(cfg), (64, 48), 8, (0.0, 0.0, 1.0), 1.0, "map"))


def test_localize_and_replay_commands(tmp_path, capsys):
    _tiny_model(tmp_path / "m.kd3d")
    render_scene(SynthConfig(preset="tiny", seed=1, mapping_frames=1, query_frames=3, size_wh=(96, 72)),
                 tmp_path / "scene", progress=False)
    code = main(["localize", str(tmp_path / "m.kd3d"), str(tmp_path / "scene"), "--out", str(tmp_path / "p.txt"),
                 "--format", "tum", "--json", str(tmp_path / "r.json"), "--device", "cpu", "--quiet"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "of 3 frames localized" in out.err and "recall 2cm/2deg" in out.out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["frames"] == 3 and "timing_total_ms" in report
    assert (tmp_path / "p.txt").read_text().startswith("# timestamp")

    write_scene_bag(open_scene(tmp_path / "scene"), tmp_path / "bag", split=Split.QUERY, progress=False)
    code = main(["replay", str(tmp_path / "m.kd3d"), str(tmp_path / "bag"), str(tmp_path / "out"),
                 "--image-topic", "/camera/color/image_raw", "--device", "cpu", "--quiet", "--min-inliers", "4"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "of 3 frames localized" in out.err
    with open_bag(tmp_path / "out") as bag:
        assert bag.path.exists()
