"""Student architectures: output contract, configs, registry."""
import pytest
import torch

from kd3d_core.errors import ConfigError
from kd3d_core.students import config_from_dict, config_to_dict, get_architecture, list_architectures
from kd3d_core.students.cnn import CNNConfig
from kd3d_core.students.mobilenetv3 import MobileNetV3Config, Variant
from kd3d_core.students.registry import cell_centres, parse_arch_options
from kd3d_core.students.vit import ViTConfig

TINY = {
    "cnn": CNNConfig(channels=(8, 16, 16, 32), head_channels=16, head_layers=1),
    "mobilenetv3": MobileNetV3Config(variant=Variant.SMALL, head_channels=16),
    "vit": ViTConfig(patch=32, blocks=1, decoder_blocks=1, heads=2, latent=16, head_channels=8),
}


@pytest.mark.parametrize("name", ["cnn", "mobilenetv3", "vit"])
def test_output_contract(name):
    net = get_architecture(name).build(TINY[name], (96, 48))
    points, conf = net(torch.randn(2, 3, 48, 96))
    assert net.output_stride == 8
    assert points.shape == (2, 3, 6, 12) and conf.shape == (2, 6, 12)
    assert float(conf.detach().min()) >= 0 and float(conf.detach().max()) <= 1
    (points.sum() + conf.sum()).backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_defaults_are_the_papers():
    assert get_architecture("vit").default_config() == ViTConfig(patch=16, blocks=6, heads=4, latent=256)
    assert get_architecture("cnn").default_config().channels[-1] == 512
    assert {"cnn", "mobilenetv3", "vit"} <= set(list_architectures())


@pytest.mark.parametrize("patch,blocks,heads,latent", [(16, 4, 4, 64), (32, 6, 8, 128), (64, 8, 8, 256)])
def test_vit_ablation_grid_builds(patch, blocks, heads, latent):
    cfg = ViTConfig(patch=patch, blocks=blocks, heads=heads, latent=latent, decoder_blocks=1, head_channels=8)
    net = get_architecture("vit").build(cfg, (80, 56))  # not multiples of the patch: padded then cropped
    points, conf = net(torch.zeros(1, 3, 56, 80))
    assert points.shape == (1, 3, 7, 10)


def test_config_round_trip_and_errors():
    cfg = MobileNetV3Config(variant=Variant.SMALL, freeze_backbone=True)
    d = config_to_dict(cfg)
    assert d["variant"] == "small"
    assert config_from_dict(MobileNetV3Config, d) == cfg
    opts = parse_arch_options(["channels=8,16,32", "head-layers=1"])
    assert config_from_dict(CNNConfig, opts, partial=True) == CNNConfig(channels=(8, 16, 32), head_layers=1)
    with pytest.raises(ConfigError, match="no option"):
        config_from_dict(CNNConfig, {"nope": 1}, partial=True)
    with pytest.raises(ConfigError, match="missing"):
        config_from_dict(CNNConfig, {})
    with pytest.raises(ConfigError, match="must divide"):
        ViTConfig(heads=3)
    with pytest.raises(ConfigError, match="multiples of the output stride"):
        get_architecture("cnn").build(CNNConfig(), (100, 60))
    with pytest.raises(ConfigError, match="unknown student"):
        get_architecture("resnet")


def test_cell_centres():
    c = cell_centres((32, 16), 8)
    assert c.shape == (2, 4, 2)
    assert c[0, 0].tolist() == [4, 4] and c[1, 3].tolist() == [28, 12]
