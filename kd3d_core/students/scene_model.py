"""A loaded scene model: the `ScenePredictor` the relocalizer runs on every camera frame.

`DeployModule` wraps a student with its input normalisation and coordinate de-normalisation, so one module
maps raw RGB (float 0..255) to world metres. The same module is what `kd3d export` writes to ONNX/TorchScript,
so exported and in-process predictions agree by construction.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from kd3d_core.errors import Kd3dError
from kd3d_core.prediction import ScenePrediction
from kd3d_core.students.model_file import ModelMeta, load_network
from kd3d_core.students.ort_trunk import EncoderBackend, OrtTrunk, requested_backend, resolve_backend
from kd3d_core.students.registry import cell_centres


class DeployModule(nn.Module):
    """Student + normalisation: image_B3HW float RGB in [0, 255] -> (points_B3hw world metres, conf_Bhw)."""

    def __init__(self, net: nn.Module, meta: ModelMeta) -> None:
        super().__init__()
        self.net = net
        mean = torch.tensor(meta.input_mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(meta.input_std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("in_scale", 1.0 / (255.0 * std), persistent=False)
        self.register_buffer("in_shift", mean / std, persistent=False)
        self.register_buffer("coord_mean", torch.tensor(meta.coord_mean, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self.coord_scale = float(meta.coord_scale)

    def forward(self, image_B3HW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        points, conf = self.net(image_B3HW * self.in_scale - self.in_shift)
        return points.float() * self.coord_scale + self.coord_mean, conf.float()


class SceneModel:
    """A trained student ready to predict scene coordinates for camera images (see `load_scene_model`).

    Attributes:
        world_frame: frame id of the predicted coordinates.
        mapping_up: the mapping cameras' mean image-up direction in the world (3,), or None (ModelMeta.mapping_up).
        meta: the model file's metadata.
        device: where the network runs.
        module: the DeployModule (eval mode).
    """

    def __init__(self, net: nn.Module, meta: ModelMeta, device: str | torch.device = "cpu",
                 encoder_backend: EncoderBackend | str | None = EncoderBackend.TORCH) -> None:
        self.meta = meta
        self.world_frame = meta.world_frame
        self.mapping_up = None if meta.mapping_up is None else np.asarray(meta.mapping_up, np.float64)
        self.device = torch.device(device)
        self.module = DeployModule(net, meta).to(self.device).eval()
        w, h = meta.input_size
        self.encoder_backend = self._use_encoder_backend(encoder_backend, (h, w))
        self._size_wh = (w, h)
        self._resized_HW3 = np.empty((h, w, 3), np.uint8)
        with torch.inference_mode():
            self._input_13HW = torch.empty((1, 3, h, w), dtype=torch.float32, device=self.device)
        self._cells_hw2 = cell_centres((w, h), meta.output_stride)
        self._uv_cache: dict[tuple[int, int], np.ndarray] = {}
        self._knn_head: nn.Module | None | bool = False  # found on first use
        # memory_candidates' last answer: (the query it was for, k, points, similarities)
        self._candidates: tuple[torch.Tensor, int, np.ndarray, np.ndarray] | None = None

    def _use_encoder_backend(self, backend: EncoderBackend | str | None, size_hw: tuple[int, int]) -> EncoderBackend:
        """Give the fast encoder (if any) its runner; the backend in use (TORCH for other students)."""
        from kd3d_core.students.fast import FastEncoder  # here: fast.py registers itself through the registry

        self._runners: list[OrtTrunk] = []
        asked = requested_backend(backend)
        resolved = resolve_backend(asked, self.device)
        encoders = [m for m in self.module.modules() if isinstance(m, FastEncoder)]
        if resolved is not EncoderBackend.ONNXRUNTIME or not encoders:
            return EncoderBackend.TORCH
        for encoder in encoders:
            encoder.trunk_runner = OrtTrunk(encoder, single_thread_only=asked is EncoderBackend.AUTO)
            encoder.trunk_runner.prepare(size_hw)
        self._runners = [encoder.trunk_runner for encoder in encoders]
        return resolved

    @property
    def encoder_runtime(self) -> str:
        """What runs the encoder's convolutions at torch's current thread count: "onnxruntime" or "torch" (for
        reports; "auto" leaves multi-threaded calls to PyTorch)."""
        return "onnxruntime" if self._runners and not self._runners[0].torch_instead() else "torch"

    def uv_grid(self, image_size_wh: tuple[int, int]) -> np.ndarray:
        """Input-image pixel (u, v) of every output cell, for an image of (w, h); cached, read-only."""
        uv = self._uv_cache.get(image_size_wh)
        if uv is None:
            sx, sy = image_size_wh[0] / self._size_wh[0], image_size_wh[1] / self._size_wh[1]
            uv = (self._cells_hw2 + 0.5) * np.array([sx, sy], np.float32) - 0.5
            uv = uv.astype(np.float32)
            uv.setflags(write=False)
            self._uv_cache[image_size_wh] = uv
        return uv

    def predict(self, rgb_HW3: np.ndarray) -> ScenePrediction:
        """Scene coordinates for one RGB uint8 image of any size (resized to the model's input size)."""
        if rgb_HW3.ndim != 3 or rgb_HW3.shape[2] != 3 or rgb_HW3.dtype != np.uint8:
            raise Kd3dError(f"predict needs an RGB uint8 HxWx3 image, got {rgb_HW3.dtype} {rgb_HW3.shape}")
        h, w = rgb_HW3.shape[:2]
        if (w, h) == self._size_wh:
            # torch.from_numpy on a read-only view (an image decoded from a message's bytes) warns of undefined
            # behaviour; a writable contiguous copy costs well under a millisecond
            resized = rgb_HW3 if rgb_HW3.flags.c_contiguous and rgb_HW3.flags.writeable else np.array(rgb_HW3)
        else:
            interp = cv2.INTER_AREA if w > self._size_wh[0] else cv2.INTER_LINEAR
            resized = cv2.resize(rgb_HW3, self._size_wh, dst=self._resized_HW3, interpolation=interp)
        with torch.inference_mode():
            self._input_13HW[0].copy_(torch.from_numpy(resized).permute(2, 0, 1))
            points, conf = self.module(self._input_13HW)
            out_hw4 = torch.cat([points[0], conf], dim=0).permute(1, 2, 0).cpu().numpy()
        return ScenePrediction(points_hw3=out_hw4[..., :3], conf_hw=out_hw4[..., 3], uv_hw2=self.uv_grid((w, h)))

    def memory_candidates(self, k: int) -> tuple[np.ndarray, np.ndarray] | None:
        """For the cells of the last `predict`: the k most similar memory cells' world points (h*w, k, 3) and
        their cosine similarities (h*w, k), best first (similarity -2: no candidate). None when the model has
        no feature memory (a regression head) or has not predicted yet. Not for concurrent use: it reads the
        memory's record of the last query. Asked again for the same query and k (a weak pose's confirmation, then
        the guided chance of the same frame), it returns the same read-only arrays instead of searching again."""
        head = self._memory_head()
        if head is None or head.last_query is None:
            return None
        cached = self._candidates
        if cached is not None and cached[0] is head.last_query and cached[1] == k:
            return cached[2], cached[3]
        with torch.inference_mode():
            points, sims = head.candidates(head.last_query, k)
            world = points.float() * self.module.coord_scale + self.module.coord_mean.view(1, 1, 3)
        world_np, sims_np = world.cpu().numpy(), sims.cpu().numpy()
        world_np.setflags(write=False)
        sims_np.setflags(write=False)
        self._candidates = (head.last_query, k, world_np, sims_np)
        return world_np, sims_np

    def _memory_head(self) -> nn.Module | None:
        from kd3d_core.students.fast import KnnHead  # here: fast.py registers itself through the registry

        if self._knn_head is False:
            self._knn_head = next((m for m in self.module.modules() if isinstance(m, KnnHead)), None)
        return self._knn_head

    def forward_batch(self, images_B3HW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Batched forward for evaluation: uint8 or float (0..255) RGB at the input size -> world points, conf."""
        if images_B3HW.ndim != 4 or tuple(images_B3HW.shape[1:]) != (3, self._size_wh[1], self._size_wh[0]):
            raise Kd3dError(f"forward_batch needs (B, 3, {self._size_wh[1]}, {self._size_wh[0]}) images, got "
                            f"{tuple(images_B3HW.shape)}")
        with torch.inference_mode():
            return self.module(images_B3HW.to(self.device, torch.float32))


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'auto'/None -> CUDA when present, else CPU; ConfigError for a device that is misspelt or not present."""
    from kd3d_core.config_utils import check_device

    return torch.device(check_device("auto" if device is None else str(device)))


def load_scene_model(path: Path | str, device: str | torch.device | None = "auto",
                     encoder_backend: EncoderBackend | str | None = None) -> SceneModel:
    """Load a `.kd3d` file as a SceneModel (never unpickles; ModelError on bad files).

    encoder_backend: what runs the fast student's encoder (kd3d_core.students.ort_trunk): auto (ONNX Runtime on a
    CPU when installed), torch or onnxruntime; None reads KD3D_ENCODER_BACKEND, else auto."""
    dev = resolve_device(device)
    backend = resolve_backend(encoder_backend, dev)  # a bad choice fails before the file is read
    net, meta = load_network(path, dev)
    return SceneModel(net, meta, dev, backend)
