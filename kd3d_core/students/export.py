"""Deployment exports of a scene model: ONNX (TensorRT / onnxruntime on Jetson-class robots) and TorchScript.

The exported graph is `DeployModule`: input `image` float32 (B, 3, H, W) RGB in [0, 255] at the model's input
size; outputs `points` (B, 3, H/s, W/s) world metres and `conf` (B, H/s, W/s) in [0, 1]. Output cell (i, j)
stands for input pixel (j*s + s//2, i*s + s//2). The model file's metadata is copied into the ONNX
metadata_props (key "kd3d") so the deployment keeps the world frame and stride.
"""
from __future__ import annotations

import dataclasses
import io
import json
import warnings
from pathlib import Path

import torch

from kd3d_core.errors import ModelError
from kd3d_core.io_utils import atomic_file, check_output
from kd3d_core.students.model_file import load_network
from kd3d_core.students.scene_model import DeployModule


def _deploy_module(model_path: Path) -> tuple[DeployModule, torch.Tensor, dict]:
    net, meta = load_network(model_path, "cpu")
    module = DeployModule(net, meta).eval()
    w, h = meta.input_size
    example = torch.rand(1, 3, h, w) * 255
    return module, example, dataclasses.asdict(meta)


def export_onnx(model_path: Path | str, onnx_path: Path | str, opset: int = 17, dynamic_batch: bool = True) -> Path:
    """Write the model as one ONNX file (weights embedded) with its kd3d metadata."""
    import onnx

    module, example, meta = _deploy_module(Path(model_path))
    check_output(onnx_path, need_bytes=_weights_bytes(module))
    axes = {"image": {0: "batch"}, "points": {0: "batch"}, "conf": {0: "batch"}} if dynamic_batch else None
    try:
        buffer = io.BytesIO()  # in memory first: native writers may abort on a full disk (see export_torchscript)
        with torch.no_grad(), warnings.catch_warnings():
            # Strided slices (the stride-8 cell grid) cannot be constant-folded; the exporter says so three times
            # per export although the graph is correct (checked against PyTorch in test_fast_mapping).
            warnings.filterwarnings("ignore", message="Constant folding - Only steps=1", category=UserWarning)
            torch.onnx.export(module, (example,), buffer, input_names=["image"],
                              output_names=["points", "conf"], dynamic_axes=axes, opset_version=opset,
                              dynamo=False)
        proto = onnx.load_from_string(buffer.getvalue())
    except Exception as err:  # noqa: BLE001 - exporter failures come in many types
        raise ModelError(f"ONNX export of {model_path} failed: {err}") from err
    entry = proto.metadata_props.add()
    entry.key, entry.value = "kd3d", json.dumps(meta)
    with atomic_file(onnx_path, suffix=".onnx") as tmp:
        tmp.write_bytes(proto.SerializeToString())
    return Path(onnx_path)


def export_torchscript(model_path: Path | str, ts_path: Path | str) -> Path:
    """Write the model as a traced TorchScript file (metadata in its extra files as kd3d.json)."""
    module, example, meta = _deploy_module(Path(model_path))
    check_output(ts_path, need_bytes=_weights_bytes(module))
    try:
        with torch.no_grad():
            traced = torch.jit.trace(module, (example,), check_trace=False)
        # Serialised in memory, then written by Python: torch's own file writer aborts the whole process
        # (SIGABRT) when the disk fills up; Python raises OSError, which the CLI reports as one line.
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer, _extra_files={"kd3d.json": json.dumps(meta)})
    except Exception as err:  # noqa: BLE001
        raise ModelError(f"TorchScript export of {model_path} failed: {err}") from err
    with atomic_file(ts_path, suffix=".pt") as tmp:
        tmp.write_bytes(buffer.getbuffer())
    return Path(ts_path)


def _weights_bytes(module: torch.nn.Module) -> int:
    """Bytes of the module's parameters and buffers: a lower bound on any export's size."""
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
