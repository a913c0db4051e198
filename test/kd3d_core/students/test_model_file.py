"""The .kd3d file: round trip, SceneModel.predict, and refusal of bad/tampered files."""
import dataclasses
import json
import pickle

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from kd3d_core.errors import ModelError
from kd3d_core.prediction import ScenePredictor
from kd3d_core.students import get_architecture
from kd3d_core.students.model_file import ModelMeta, read_model_meta, save_scene_model
from kd3d_core.students.registry import config_to_dict
from kd3d_core.students.scene_model import load_scene_model
from kd3d_core.students.vit import ViTConfig

SIZE = (64, 48)


def _save_tiny_vit(path, seed=0):
    cfg = ViTConfig(patch=16, blocks=1, decoder_blocks=1, heads=2, latent=16, head_channels=8)
    torch.manual_seed(seed)
    net = get_architecture("vit").build(cfg, SIZE)
    meta = ModelMeta("vit", config_to_dict(cfg), SIZE, 8, (1.0, -2.0, 0.5), 3.0, "map",
                     training={"epochs": 1}, teacher={"teacher": "depth"})
    return net, save_scene_model(path, net, meta)


def test_round_trip_and_predict(tmp_path):
    path = tmp_path / "m.kd3d"
    net, meta = _save_tiny_vit(path)
    assert read_model_meta(path) == meta and len(meta.weights_sha256) == 64
    model = load_scene_model(path, device="cpu")
    assert isinstance(model, ScenePredictor) and model.world_frame == "map"
    rgb = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    pred = model.predict(rgb)
    assert pred.points_hw3.shape == (6, 8, 3) and pred.conf_hw.shape == (6, 8)
    np.testing.assert_allclose(pred.uv_hw2[0, 0], [8.5, 8.5])   # cell centre 4 at half size -> 8.5
    np.testing.assert_allclose(pred.uv_hw2[-1, -1], [120.5, 88.5])
    # Same numbers as the raw network + the stored normalisation.
    small = torch.from_numpy(np.ascontiguousarray(
        __import__("cv2").resize(rgb, SIZE, interpolation=__import__("cv2").INTER_AREA))).permute(2, 0, 1)[None]
    x = (small.float() / 255 - torch.tensor(meta.input_mean).view(1, 3, 1, 1)) / torch.tensor(
        meta.input_std).view(1, 3, 1, 1)
    with torch.no_grad():
        p, c = net.eval()(x)
    ref = (p[0].permute(1, 2, 0) * 3.0 + torch.tensor([1.0, -2.0, 0.5])).numpy()
    np.testing.assert_allclose(pred.points_hw3, ref, atol=1e-4)
    np.testing.assert_allclose(pred.conf_hw, c[0].numpy(), atol=1e-5)
    pts, conf = model.forward_batch(small.repeat(2, 1, 1, 1))
    np.testing.assert_allclose(pts[1].permute(1, 2, 0).numpy(), ref, atol=1e-4)
    with pytest.raises(Exception, match="RGB uint8"):
        model.predict(rgb.astype(np.float32))


def _rewrite(path, out, meta_fn=None, state_fn=None):
    with safe_open(str(path), framework="pt") as fh:
        header = dict(fh.metadata())
    state = load_file(str(path))
    d = json.loads(header["kd3d"])
    if meta_fn:
        meta_fn(d)
    if state_fn:
        state_fn(state)
    header["kd3d"] = json.dumps(d)
    save_file(state, str(out), metadata=header)
    return out


def test_tampered_files_refused(tmp_path):
    path = tmp_path / "m.kd3d"
    _save_tiny_vit(path)
    cases = [
        (lambda d: d.update(format_version=99), None, "unsupported model format version 99"),
        (lambda d: d.pop("coord_scale"), None, "missing coord_scale"),
        (lambda d: d["config"].update(latent=32), None, "has shape .* needs"),
        (lambda d: d["config"].update(bogus=1), None, "no option"),
        (lambda d: d.update(architecture="nope"), None, "unknown student 'nope'"),
        (None, lambda s: s.pop("embed.weight"), "missing 1 tensor"),
        (None, lambda s: s.update(extra=torch.zeros(2)), "unexpected tensor"),
        (None, lambda s: s["embed.weight"].add_(1e-3), "SHA-256"),
        (None, lambda s: s.update({"embed.weight": torch.zeros(16, 10)}), "shape"),
        (lambda d: d.update(mapping_up=[0.0, 0.0, 2.0]), None, "mapping_up must be null or a unit vector"),
        (lambda d: d.update(mapping_up=[0.0, 1.0]), None, "mapping_up must be null or a unit vector"),
        (lambda d: d.update(mapping_up=[float("nan"), 0.0, 1.0]), None, "mapping_up"),
        (lambda d: d.update(mapping_up="up"), None, "invalid metadata"),
    ]
    for i, (meta_fn, state_fn, match) in enumerate(cases):
        bad = _rewrite(path, tmp_path / f"bad{i}.kd3d", meta_fn, state_fn)
        with pytest.raises(ModelError, match=match):
            load_scene_model(bad, device="cpu")


def test_not_a_model_and_pickle_never_loaded(tmp_path):
    truncated = tmp_path / "t.kd3d"
    _save_tiny_vit(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(ModelError, match="not a valid safetensors"):
        load_scene_model(truncated, device="cpu")
    plain = tmp_path / "plain.kd3d"
    save_file({"a": torch.zeros(1)}, str(plain))
    with pytest.raises(ModelError, match="not a kd3d scene model"):
        load_scene_model(plain, device="cpu")

    class Evil:
        def __reduce__(self):
            return (exec, ("open('%s', 'w').write('x')" % (tmp_path / "pwned"),))

    evil = tmp_path / "evil.kd3d"
    evil.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ModelError):
        load_scene_model(evil, device="cpu")
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(ModelError, match="does not exist"):
        load_scene_model(tmp_path / "missing.kd3d", device="cpu")


def test_meta_is_plain_json(tmp_path):
    _, meta = _save_tiny_vit(tmp_path / "m.kd3d")
    d = dataclasses.asdict(meta)
    assert json.loads(json.dumps(d))["architecture"] == "vit"


def test_mapping_up_round_trips_and_older_files_have_none(tmp_path):
    """A model file records the mapping cameras' up; one written before the field existed loads with None."""
    path = tmp_path / "m.kd3d"
    net, meta = _save_tiny_vit(path)
    assert meta.mapping_up is None and load_scene_model(path, device="cpu").mapping_up is None
    up = (0.0, 0.6, 0.8)
    meta = save_scene_model(tmp_path / "up.kd3d", net, dataclasses.replace(meta, mapping_up=up))
    assert read_model_meta(tmp_path / "up.kd3d").mapping_up == up
    np.testing.assert_array_equal(load_scene_model(tmp_path / "up.kd3d", device="cpu").mapping_up, up)
    older = _rewrite(path, tmp_path / "older.kd3d", lambda d: d.pop("mapping_up"))
    assert read_model_meta(older).mapping_up is None
