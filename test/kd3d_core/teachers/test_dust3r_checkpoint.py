"""Safe DUSt3R checkpoint loading: official .pth, HF folders, refusal of code and of unknown arguments."""
from __future__ import annotations

import argparse
import json
import os

import pytest
import torch

from kd3d_core.errors import ModelError
from kd3d_core.teachers import checkpoint as ck
TINY_MODEL = ("AsymmetricCroCo3DStereo(pos_embed='RoPE100', patch_embed_cls='ManyAR_PatchEmbed', img_size=(224, 224), "
              "head_type='linear', output_mode='pts3d', depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, inf), "
              "enc_embed_dim=64, enc_depth=2, enc_num_heads=2, dec_embed_dim=64, dec_depth=2, dec_num_heads=2)")


def test_parse_official_model_string_normalises_like_dust3r():
    kw = ck.parse_model_string(TINY_MODEL)
    assert kw["patch_embed_cls"] == "PatchEmbedDust3R" and kw["landscape_only"] is False
    assert kw["depth_mode"] == ("exp", float("-inf"), float("inf")) and kw["img_size"] == (224, 224)


@pytest.mark.parametrize("text, match", [
    ("__import__('os').system('touch x')", "must be a call"),
    ("AsymmetricCroCo3DStereo(head_type=__import__('os').system('x'))", "non-literal"),
    ("AsymmetricCroCo3DStereo(head_type='linear', evil=1)", "unknown model arguments"),
    ("AsymmetricCroCo3DStereo(head_type='mlp')", "not acceptable"),
    ("AsymmetricCroCo3DStereo(**{'a': 1})", "keyword arguments"),
    ("AsymmetricCroCo3DStereo(", "syntax"),
])
def test_model_string_refuses_code_and_unknown_keys(text, match):
    with pytest.raises(ModelError, match=match):
        ck.parse_model_string(text)


def test_official_checkpoint_roundtrip(tiny_checkpoint):
    t = ck.load_teacher(tiny_checkpoint, "cpu")
    ref = torch.load(tiny_checkpoint, weights_only=False)["model"]
    state = t.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in ref.items())
    assert t.digest.startswith("sha256:") and not t.model.training


def test_hf_folder(tiny_checkpoint, tmp_path):
    from safetensors.torch import save_file

    kw, state = ck.read_official_checkpoint(tiny_checkpoint)
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items()}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    t = ck.load_teacher(tmp_path, "cpu")
    assert t.kwargs["enc_embed_dim"] == 64


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("where", ["args", "model"])
def test_malicious_pickle_is_refused_not_executed(tmp_path, where):
    marker = tmp_path / "pwned"
    ckpt = {"args": argparse.Namespace(model=TINY_MODEL), "model": {}}
    ckpt[where] = _Payload(marker)
    torch.save(ckpt, tmp_path / "evil.pth")
    with pytest.raises(ModelError, match="refusing to load"):
        ck.load_teacher(tmp_path / "evil.pth", "cpu")
    assert not marker.exists()


def test_missing_checkpoint_and_weights_messages(tmp_path, tiny_checkpoint):
    with pytest.raises(ModelError, match="needs a checkpoint.*download"):
        ck.load_teacher(None, "cpu")
    with pytest.raises(ModelError, match="does not exist"):
        ck.load_teacher(tmp_path / "nope.pth", "cpu")
    kw, state = ck.read_official_checkpoint(tiny_checkpoint)
    state = {k: v for k, v in state.items() if not k.startswith("downstream_head1")}
    ck.save_official_checkpoint(tmp_path / "partial.pth", TINY_MODEL, state)
    with pytest.raises(ModelError, match="lacks"):
        ck.load_teacher(tmp_path / "partial.pth", "cpu")


def test_hub_name_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="cannot fetch 'naver/no-such-model'"):
        ck.load_teacher("naver/no-such-model", "cpu")


def test_missing_dust3r_names_what_to_install(monkeypatch):
    import builtins

    real = builtins.__import__

    def fake(name, *a, **k):
        if name.split(".")[0] in ("dust3r", "mini_dust3r"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    monkeypatch.setattr(ck.importlib, "import_module", lambda n: fake(n))
    with pytest.raises(ModelError, match="pip install --no-deps mini-dust3r"):
        ck.import_model_class()
