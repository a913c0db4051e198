"""DUSt3R's image preprocessing, reproduced exactly, with the intrinsics carried through every step.

As dust3r.utils.image.load_images: size 512 resizes the long side to 512 (PIL LANCZOS when shrinking, BICUBIC
otherwise) and centre-crops each side down to a multiple of 16 (a square image becomes 4:3); size 224 resizes
the short side to 224 and centre-crops a 224x224 square. Pixels are normalised to [-1, 1].
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from kd3d_core.errors import ConfigError
from kd3d_core.geometry import scale_intrinsics

PATCH = 16


@dataclass(frozen=True)
class CropGeometry:
    """How one input size maps to DUSt3R's input: resize to `resized_wh`, then crop `box` (l, t, r, b)."""

    input_wh: tuple[int, int]
    resized_wh: tuple[int, int]
    box: tuple[int, int, int, int]

    @property
    def output_wh(self) -> tuple[int, int]:
        """Width and height of the network input."""
        return self.box[2] - self.box[0], self.box[3] - self.box[1]

    def intrinsics(self, K: np.ndarray) -> np.ndarray:
        """K of the network input from K of the original image."""
        (w, h), (rw, rh) = self.input_wh, self.resized_wh
        K2 = scale_intrinsics(K, rw / w, rh / h)
        K2[0, 2] -= self.box[0]
        K2[1, 2] -= self.box[1]
        return K2


def crop_geometry(input_wh: tuple[int, int], size: int, square_ok: bool = False) -> CropGeometry:
    """DUSt3R's resize and crop for an image of `input_wh` at network size 512 or 224."""
    if size not in (224, 512):
        raise ConfigError(f"DUSt3R input size must be 224 or 512, not {size}")
    w1, h1 = input_wh
    long_edge = round(size * max(w1 / h1, h1 / w1)) if size == 224 else size
    s = max(w1, h1)
    w, h = (int(round(x * long_edge / s)) for x in (w1, h1))
    cx, cy = w // 2, h // 2
    if size == 224:
        half = min(cx, cy)
        box = (cx - half, cy - half, cx + half, cy + half)
    else:
        halfw = ((2 * cx) // PATCH) * PATCH // 2
        halfh = ((2 * cy) // PATCH) * PATCH // 2
        if not square_ok and w == h:
            halfh = 3 * halfw // 4
        box = (cx - halfw, cy - halfh, cx + halfw, cy + halfh)
    return CropGeometry((w1, h1), (w, h), box)


def preprocess_rgb(rgb: np.ndarray, geom: CropGeometry) -> np.ndarray:
    """Resized and cropped uint8 RGB (h, w, 3), resampled with PIL exactly as DUSt3R does."""
    img = Image.fromarray(rgb)
    if img.size != geom.input_wh:
        raise ConfigError(f"image is {img.size}, the scene's frames are {geom.input_wh}")
    interp = Image.LANCZOS if max(img.size) > max(geom.resized_wh) else Image.BICUBIC
    return np.asarray(img.resize(geom.resized_wh, interp).crop(geom.box))


def normalise(batch_BHW3: np.ndarray):
    """uint8 RGB batch -> float tensor (B, 3, H, W) in [-1, 1] (ToTensor then Normalize(0.5, 0.5))."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(batch_BHW3)).permute(0, 3, 1, 2).float() / 255.0
    return (x - 0.5) / 0.5


def default_label_size(net_wh: tuple[int, int], width: int = 160) -> tuple[int, int]:
    """Label size with the network input's aspect ratio and the given width."""
    return width, max(1, int(round(net_wh[1] * width / net_wh[0])))


def depth_to_network(depth: np.ndarray, geom: CropGeometry) -> np.ndarray:
    """Sensor depth (colour grid) resampled (nearest) onto the network input grid."""
    return cv2.resize(depth, geom.resized_wh, interpolation=cv2.INTER_NEAREST)[
        geom.box[1]:geom.box[3], geom.box[0]:geom.box[2]]
