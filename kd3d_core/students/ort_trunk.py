"""The fast encoder's convolutions on ONNX Runtime, for scene models that run on a CPU.

The encoder is frozen, so its convolutions can run on any engine that computes the same function. ONNX Runtime's
CPU kernels (MLAS) ran them faster than PyTorch's on our 2-core AVX2 machine, side by side in one process on the
same 320x240 frames: 0.77-0.79x the time with one thread; outputs within 3e-6 of PyTorch's (features of magnitude
~4; every cell of 20 office frames found the same memory point, the poses were identical). The whole predict() of
the fast student took 0.89-0.91x the time at one torch thread (kd3d's default). At two threads predict() was no
faster (1.00x; with ONNX Runtime's spinning worker threads 1.6x slower, as they compete with torch's for the kNN
scan), so "auto" runs the convolutions in PyTorch whenever torch has more than one thread. The input
normalisation before them is not exported (FastEncoder.normalise runs it with OpenCV's filters on a CPU). What runs is
exported from the loaded weights when a model is loaded, so a model file never holds a second copy of the encoder.

Choice (`load_scene_model(..., encoder_backend=...)`, node parameter `encoder_backend`, environment variable
KD3D_ENCODER_BACKEND for the command-line tools): "auto" uses ONNX Runtime on a CPU at one torch thread when it is
installed, else PyTorch; "torch" always PyTorch; "onnxruntime" always ONNX Runtime (ConfigError when it is missing
or the model is on a GPU). Exports of the scene model (ONNX / TorchScript) always trace the PyTorch modules.
"""
from __future__ import annotations

import importlib.util
import io
import logging
import os
import threading
import warnings
from collections.abc import Callable
from enum import Enum

import torch
from torch import nn

from kd3d_core.errors import ConfigError

ENV_VAR = "KD3D_ENCODER_BACKEND"
_LOG = logging.getLogger(__name__)


class EncoderBackend(str, Enum):
    """What runs the fast encoder's convolutions (see module docstring)."""

    AUTO = "auto"
    TORCH = "torch"
    ONNXRUNTIME = "onnxruntime"


def onnxruntime_available() -> bool:
    """True when onnxruntime (runs the graph) and onnx (torch's exporter writes the graph with it) are installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def requested_backend(backend: EncoderBackend | str | None) -> EncoderBackend:
    """The backend asked for; None reads KD3D_ENCODER_BACKEND (default auto). ConfigError for an unknown name."""
    what = "encoder backend"
    if backend is None:
        backend, what = os.environ.get(ENV_VAR, "").strip() or EncoderBackend.AUTO, ENV_VAR
    try:
        return EncoderBackend(backend)
    except ValueError:
        choices = ", ".join(b.value for b in EncoderBackend)
        raise ConfigError(f"{what} must be one of {choices}, got {backend!r}") from None


def resolve_backend(backend: EncoderBackend | str | None, device: torch.device) -> EncoderBackend:
    """TORCH or ONNXRUNTIME for a model on `device` (see requested_backend for None and names).

    ConfigError for onnxruntime when it is not installed or the device is not the CPU."""
    backend = requested_backend(backend)
    if backend is EncoderBackend.TORCH:
        return backend
    usable = device.type == "cpu" and onnxruntime_available()
    if backend is EncoderBackend.ONNXRUNTIME and not usable:
        why = ("needs the onnxruntime and onnx packages (pip install onnxruntime onnx)" if device.type == "cpu"
               else f"runs on the CPU, not {device}")
        raise ConfigError(f"encoder backend onnxruntime {why}")
    return EncoderBackend.ONNXRUNTIME if usable else EncoderBackend.TORCH


class OrtTrunk:
    """Callable like `FastEncoder.trunk`: float32 B x C x H x W (CPU) -> features B x feature_dim x H/8 x W/8.

    One ONNX Runtime session per input size and torch thread count (torch.get_num_threads() at the time of the
    call; sessions use that many intra-op threads, without spinning idle threads on a shared robot CPU), exported
    on first use (~1 s) from the encoder's current weights; `prepare` does it ahead of the first frame. With
    `single_thread_only` (the "auto" choice) calls made while torch has more than one thread run PyTorch's trunk,
    and a failure to export or run the graph (an exporter that cannot handle this torch version, say) is logged
    once and leaves PyTorch in charge for good; with "onnxruntime" asked for explicitly it raises.
    """

    def __init__(self, encoder: nn.Module, single_thread_only: bool = False) -> None:
        self._trunk = _Trunk(encoder)
        self.single_thread_only = single_thread_only
        self.failed: str | None = None  # why ONNX Runtime was given up (auto only)
        self._sessions: dict[tuple[int, int, int], object] = {}
        self._lock = threading.Lock()

    def prepare(self, size_hw: tuple[int, int]) -> None:
        """Build the session for input size (H, W) at the current thread count (if it will be used)."""
        if not self.torch_instead():
            self._guarded(lambda: self._session(size_hw))

    def torch_instead(self) -> bool:
        """True when calls now go to PyTorch's trunk (auto with more than one torch thread, or after a failure)."""
        return self.failed is not None or (self.single_thread_only and torch.get_num_threads() > 1)

    def __call__(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        if not self.torch_instead():
            out = self._guarded(lambda: self._run(x_BCHW))
            if out is not None:
                return out
        return self._trunk(x_BCHW)

    def _run(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        session = self._session(tuple(x_BCHW.shape[-2:]))
        x = x_BCHW.detach().contiguous().numpy()
        return torch.from_numpy(session.run(None, {"x": x})[0])

    def _guarded(self, step: Callable[[], torch.Tensor | object]) -> torch.Tensor | object | None:
        """step(), or (auto only) None after recording why ONNX Runtime cannot be used."""
        if not self.single_thread_only:
            return step()
        try:
            return step()
        except Exception as err:  # noqa: BLE001 - auto: PyTorch computes the same features
            self.failed = f"{type(err).__name__}: {err}"
            _LOG.warning("kd3d: the fast encoder stays on PyTorch (ONNX Runtime failed: %s)", self.failed)
            return None

    def _session(self, size_hw: tuple[int, int]) -> object:
        key = (int(size_hw[0]), int(size_hw[1]), torch.get_num_threads())
        session = self._sessions.get(key)
        if session is None:
            with self._lock:
                session = self._sessions.get(key)
                if session is None:
                    session = self._sessions[key] = self._build(key)
        return session

    def _build(self, key: tuple[int, int, int]) -> object:
        import onnxruntime as ort

        h, w, threads = key
        buffer = io.BytesIO()
        # Called from inside inference mode (predict): the exporter traces, which needs ordinary tensors.
        # The exporter's warnings (constant folding of a slice, the legacy exporter) concern the graph, not the
        # user; the outputs are checked against PyTorch's in the tests.
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(self._trunk, (torch.zeros(1, 3, h, w),), buffer, input_names=["x"],
                              output_names=["features"], dynamic_axes={"x": {0: "batch"}, "features": {0: "batch"}},
                              opset_version=17, dynamo=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])


class _Trunk(nn.Module):
    """The encoder's convolutions alone (what `FastEncoder.trunk` computes), as a module to export."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.encoder.trunk(x_BCHW)
