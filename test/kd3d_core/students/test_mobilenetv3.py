"""MobileNetV3 backbone: torchvision parameter names/shapes, weight loading, freezing."""
import pickle

import pytest
import torch

from kd3d_core.errors import ModelError
from kd3d_core.students.mobilenetv3 import (MobileNetV3Config, MobileNetV3Student, Variant, load_backbone_weights)

# Written down from torchvision's mobilenetv3.py definition (Conv2dNormActivation = Sequential(conv, bn, act),
# InvertedResidual.block, SqueezeExcitation fc1/fc2 with squeeze = _make_divisible(expanded // 4, 8)).
TV_LARGE = {
    "features.0.0.weight": (16, 3, 3, 3), "features.0.1.weight": (16,), "features.0.1.running_var": (16,),
    "features.1.block.0.0.weight": (16, 1, 3, 3), "features.1.block.1.0.weight": (16, 16, 1, 1),
    "features.2.block.0.0.weight": (64, 16, 1, 1), "features.2.block.1.0.weight": (64, 1, 3, 3),
    "features.2.block.2.0.weight": (24, 64, 1, 1), "features.2.block.2.1.num_batches_tracked": (),
    "features.4.block.1.0.weight": (72, 1, 5, 5), "features.4.block.2.fc1.weight": (24, 72, 1, 1),
    "features.4.block.2.fc1.bias": (24,), "features.4.block.2.fc2.weight": (72, 24, 1, 1),
    "features.4.block.3.0.weight": (40, 72, 1, 1), "features.5.block.2.fc1.weight": (32, 120, 1, 1),
    "features.7.block.0.0.weight": (240, 40, 1, 1), "features.8.block.0.0.weight": (200, 80, 1, 1),
    "features.11.block.2.fc1.weight": (120, 480, 1, 1), "features.11.block.3.0.weight": (112, 480, 1, 1),
    "features.13.block.1.0.weight": (672, 1, 5, 5), "features.13.block.2.fc1.weight": (168, 672, 1, 1),
    "features.13.block.3.0.weight": (160, 672, 1, 1), "features.15.block.2.fc1.weight": (240, 960, 1, 1),
    "features.15.block.2.fc2.bias": (960,), "features.16.0.weight": (960, 160, 1, 1),
    "features.16.1.bias": (960,),
}
TV_SMALL = {
    "features.0.0.weight": (16, 3, 3, 3), "features.1.block.0.0.weight": (16, 1, 3, 3),
    "features.1.block.1.fc1.weight": (8, 16, 1, 1), "features.1.block.2.0.weight": (16, 16, 1, 1),
    "features.2.block.0.0.weight": (72, 16, 1, 1), "features.3.block.0.0.weight": (88, 24, 1, 1),
    "features.4.block.1.0.weight": (96, 1, 5, 5), "features.4.block.2.fc1.weight": (24, 96, 1, 1),
    "features.5.block.2.fc1.weight": (64, 240, 1, 1), "features.8.block.2.fc1.weight": (40, 144, 1, 1),
    "features.7.block.3.0.weight": (48, 120, 1, 1), "features.9.block.2.fc1.weight": (72, 288, 1, 1),
    "features.11.block.2.fc1.weight": (144, 576, 1, 1), "features.12.0.weight": (576, 96, 1, 1),
}
# torchvision: 312 state_dict entries for large (308 features + 4 classifier), 244 for small (240 + 4).
TV_FEATURE_COUNT = {Variant.LARGE: 308, Variant.SMALL: 240}


@pytest.mark.parametrize("variant,expected", [(Variant.LARGE, TV_LARGE), (Variant.SMALL, TV_SMALL)])
def test_names_and_shapes_match_torchvision(variant, expected):
    state = MobileNetV3Student(MobileNetV3Config(variant=variant)).features.state_dict()
    full = {f"features.{k}": tuple(v.shape) for k, v in state.items()}
    assert len(full) == TV_FEATURE_COUNT[variant]
    for key, shape in expected.items():
        assert full.get(key) == shape, key


def _torchvision_like_state(variant: Variant) -> dict:
    src = MobileNetV3Student(MobileNetV3Config(variant=variant))
    state = {f"features.{k}": v.clone() for k, v in src.features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(1280, 960)
    state["classifier.3.bias"] = torch.zeros(1000)
    return state


def test_load_torchvision_pth_and_freeze(tmp_path):
    state = _torchvision_like_state(Variant.LARGE)
    path = tmp_path / "mobilenet_v3_large.pth"
    torch.save(state, path)
    net = MobileNetV3Student(MobileNetV3Config(freeze_backbone=True))
    assert load_backbone_weights(net, path) == 308
    for k, v in net.features.state_dict().items():
        assert torch.equal(v, state[f"features.{k}"]), k
    assert not any(p.requires_grad for p in net.features.parameters())
    assert all(p.requires_grad for p in net.head.parameters())
    net.train()
    assert not net.features.training and net.head.training  # frozen BN statistics


def test_wrong_variant_and_pickle_payload_refused(tmp_path):
    small = tmp_path / "small.pth"
    torch.save(_torchvision_like_state(Variant.SMALL), small)
    with pytest.raises(ModelError, match="not a torchvision MobileNetV3-Large"):
        load_backbone_weights(MobileNetV3Student(MobileNetV3Config()), small)

    class Evil:
        def __reduce__(self):
            return (exec, ("open('%s', 'w').write('pwned')" % (tmp_path / "pwned"),))

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"features.0.0.weight": Evil()}))
    with pytest.raises(ModelError, match="cannot read pretrained weights"):
        load_backbone_weights(MobileNetV3Student(MobileNetV3Config()), evil)
    assert not (tmp_path / "pwned").exists()
