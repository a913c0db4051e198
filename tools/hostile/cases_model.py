"""Hostile model files (`kd3d export MODEL --torchscript OUT`) and command-line option values."""
from __future__ import annotations

import json
import pickle
import shutil
import struct
from pathlib import Path

from tools.hostile.fixtures import rewrite_model
from tools.hostile.harness import call, cli, expect_error


def _export(model: Path, work: Path):
    return expect_error(call(cli(["export", model, "--torchscript", work / "out.pt"]), timeout_s=60), work)


def _tampered(which: str, meta_fn=None, state_fn=None, header_fn=None):
    def run(work: Path, bases):
        src = bases.vit if which == "vit" else bases.fast
        return _export(rewrite_model(src, work / "bad.kd3d", meta_fn, state_fn, header_fn), work)
    return run


def _raw(content_fn):
    def run(work: Path, bases):
        path = work / "bad.kd3d"
        content = content_fn(bases)
        if content is None:
            path.mkdir()
        else:
            path.write_bytes(content)
        return _export(path, work)
    return run


def _set(key, value):
    return lambda d: d.update({key: value})


def _cfg(key, value):
    return lambda d: d["config"].update({key: value})


def _no_digest_and(state_fn):
    return dict(meta_fn=lambda d: d.update(weights_sha256=""), state_fn=state_fn)


def _drop_digest_and(state_fn):
    return dict(meta_fn=lambda d: d.pop("weights_sha256", None), state_fn=state_fn)


def _bump(name):
    def fn(state):
        state[name] = state[name] + 1e-3 if state[name].is_floating_point() else state[name] + 1
    return fn


def _huge_header(bases) -> bytes:
    return struct.pack("<Q", 10**15) + b"{}"


def _truncated(bases) -> bytes:
    return Path(bases.vit).read_bytes()[:300]


class _Evil:
    def __reduce__(self):
        return (exec, ("open('/tmp/kd3d-hostile-pwned', 'w').write('x')",))


MODEL_CASES = [
    ("vit config latent 10^6", _tampered("vit", _cfg("latent", 1_000_000))),
    ("vit input_size 100000x100000", _tampered("vit", _set("input_size", [100000, 100000]))),
    ("vit input_size 0x48", _tampered("vit", _set("input_size", [0, 48]))),
    ("vit input_size strings", _tampered("vit", _set("input_size", ["a", 1]))),
    ("vit output_stride 0", _tampered("vit", _set("output_stride", 0))),
    ("vit coord_scale NaN", _tampered("vit", _set("coord_scale", float("nan")))),
    ("vit coord_scale 0", _tampered("vit", _set("coord_scale", 0))),
    ("vit input_std 0", _tampered("vit", _set("input_std", [0, 0, 0]))),
    ("vit empty digest + tampered weights", _tampered("vit", **_no_digest_and(_bump("embed.weight")))),
    ("vit no digest + tampered weights", _tampered("vit", **_drop_digest_and(_bump("embed.weight")))),
    ("vit tampered weights", _tampered("vit", state_fn=_bump("embed.weight"))),
    ("vit metadata nested 100000 deep",
     _tampered("vit", header_fn=lambda h: h.update(kd3d="[" * 100000 + "]" * 100000))),
    ("vit metadata not JSON", _tampered("vit", header_fn=lambda h: h.update(kd3d="{oops"))),
    ("vit metadata a list", _tampered("vit", header_fn=lambda h: h.update(kd3d="[1, 2]"))),
    ("vit blocks 10^6", _tampered("vit", _cfg("blocks", 1_000_000))),
    ("vit extra tensor", _tampered("vit", state_fn=lambda s: s.update(extra=s["embed.weight"].clone()))),
    ("vit tensor as float64",
     _tampered("vit", state_fn=lambda s: s.update({"embed.weight": s["embed.weight"].double()}))),
    ("vit architecture unknown", _tampered("vit", _set("architecture", "nope"))),
    ("vit format_version 99", _tampered("vit", _set("format_version", 99))),
    ("fast knn_size 10^12", _tampered("fast", _cfg("knn_size", 10**12))),
    ("fast knn_lists 10^9", _tampered("fast", _cfg("knn_lists", 10**9))),
    ("fast feature_dim 10^6", _tampered("fast", _cfg("feature_dim", 1_000_000))),
    ("fast knn_dim 10^5 feature_dim 10^5", _tampered("fast", lambda d: d["config"].update(knn_dim=10**5,
                                                                                          feature_dim=10**5))),
    ("fast knn_size 32 (file has 64)", _tampered("fast", _cfg("knn_size", 32))),
    ("fast input_size 40000x40000", _tampered("fast", _set("input_size", [40000, 40000]))),
    ("fast empty digest + tampered keys", _tampered("fast", **_no_digest_and(_bump("head.points")))),
    ("fast stem_channels 10000 entries", _tampered("fast", _cfg("stem_channels", [8] * 10000))),
    ("fast block_dilations 10^5 entries", _tampered("fast", _cfg("block_dilations", [1] * 100000))),
    ("fast head bogus", _tampered("fast", _cfg("head", "bogus"))),
    ("fast head_blocks 10^7", _tampered("fast", _cfg("head_blocks", 10**7))),
    ("truncated model file", _raw(_truncated)),
    ("random bytes", _raw(lambda b: bytes(range(256)) * 64)),
    ("pickle file", _raw(lambda b: pickle.dumps(_Evil()))),
    ("header length 10^15", _raw(_huge_header)),
    ("empty file", _raw(lambda b: b"")),
    ("model path is a folder", _raw(lambda b: None)),
]


def _train(extra: list[str]):
    def run(work: Path, bases):
        scene = work / "scene"
        shutil.copytree(bases.scene, scene)
        argv = ["train", scene, "--out", work / "m.kd3d", "--size", "64x48", *extra]
        return expect_error(call(cli(argv), timeout_s=60), work)
    return run


def _cnn(*flags: str) -> list[str]:
    # No --quiet/--no-progress: older kd3d train had neither, and progress bars are not counted as lines.
    return ["--student", "cnn", "--arch-opt", "channels=8,8,8,8,8,8", "--arch-opt", "head_channels=8", "--epochs", "1",
            *flags]


def _localize(extra: list[str]):
    def run(work: Path, bases):
        argv = ["localize", bases.vit, bases.scene, "--out", work / "poses.txt", "--quiet", *extra]
        return expect_error(call(cli(argv), timeout_s=60), work)
    return run


def _evaluate(extra: list[str]):
    def run(work: Path, bases):
        argv = ["evaluate", "--estimates", bases.tum, "--reference", bases.tum, "--json", work / "r.json", *extra]
        return expect_error(call(cli(argv), timeout_s=60), work)
    return run


OPTION_CASES = [
    ("train --threads 0", _train(["--threads", "0"])),
    ("train --threads -3", _train(["--threads", "-3"])),
    ("train --threads abc", _train(["--threads", "abc"])),
    ("train --lr nan", _train(_cnn("--lr", "nan"))),
    ("train --lr inf", _train(_cnn("--lr", "inf"))),
    ("train --lr -1", _train(_cnn("--lr", "-1"))),
    ("train --device tpu7", _train(_cnn("--device", "tpu7"))),
    ("train --device cuda:9", _train(_cnn("--device", "cuda:9"))),
    ("train --device cuda (no GPU)", _train(_cnn("--device", "cuda"))),
    ("train --device tpu7 (fast student)", _train(["--student", "fast", "--device", "tpu7"])),
    ("train --device cuda:9 (fast student)", _train(["--student", "fast", "--device", "cuda:9"])),
    ("train --epochs 0", _train(_cnn("--epochs", "0"))),
    ("train --size 0x0", _train(["--size", "0x0"])),
    ("train --val-fraction nan", _train(_cnn("--val-fraction", "nan"))),
    ("localize --device tpu7", _localize(["--device", "tpu7"])),
    ("localize --device cuda:9", _localize(["--device", "cuda:9"])),
    ("evaluate --max-dt nan", _evaluate(["--max-dt", "nan"])),
    ("evaluate --max-dt -1", _evaluate(["--max-dt", "-1"])),
]


def json_report(path: Path) -> dict:
    """A report written by `kd3d evaluate --json`."""
    return json.loads(path.read_text())
