"""Small valid inputs that the hostile cases then break: a scene folder, model files, pose files.

Everything is written with plain numpy/OpenCV (the scene) or kd3d's own save function (models), so the same
fixtures work against older kd3d versions when measuring what held before a change.
"""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

SIZE = (64, 48)
K = np.array([[60.0, 0.0, 32.0], [0.0, 60.0, 24.0], [0.0, 0.0, 1.0]])


def rigid(i: int) -> np.ndarray:
    """A rigid world_T_cam for frame i (a slow turn and a step along x)."""
    a = 0.05 * i
    T = np.eye(4)
    T[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    T[:3, 3] = [0.1 * i, 0.0, 0.0]
    return T


def _matrix_line(M: np.ndarray) -> str:
    P = np.eye(4)
    P[:3, :3] = M
    return " ".join(f"{v:.10g}" for v in P.ravel())


def info_lines(**override: str) -> list[str]:
    """info.txt lines of the base scene; keyword arguments replace or add keys (value None drops a key)."""
    values = {"m_versionNumber": "4", "m_sensorName": "hostile", "m_colorWidth": str(SIZE[0]),
              "m_colorHeight": str(SIZE[1]), "m_depthWidth": str(SIZE[0]), "m_depthHeight": str(SIZE[1]),
              "m_depthShift": "1000", "m_calibrationColorIntrinsic": _matrix_line(K),
              "m_calibrationDepthIntrinsic": _matrix_line(K), "m_frames.size": "6"}
    for key, value in override.items():
        if value is None:
            values.pop(key, None)
        else:
            values[key] = value
    return [f"{k} = {v}" for k, v in values.items()]


def write_scene(root: Path, frames: int = 6, query: int = 2, seed: int = 0) -> Path:
    """A valid 12Scenes-layout scene: textured colour, uint16 depth, rigid poses, kd3d.json splits, stamps."""
    rng = np.random.default_rng(seed)
    data = root / "data"
    data.mkdir(parents=True)
    names = []
    for i in range(frames):
        name = f"frame-{i:06d}"
        names.append(name)
        rgb = cv2.resize(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8), SIZE, interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(data / f"{name}.color.png"), rgb)
        # A smooth slanted wall (1.5 .. 1.7 m): the depth teacher labels it with high confidence.
        depth = np.tile(1500 + 200 * np.arange(SIZE[0]) / SIZE[0], (SIZE[1], 1)).astype(np.uint16)
        cv2.imwrite(str(data / f"{name}.depth.png"), depth)
        (data / f"{name}.pose.txt").write_text("\n".join(" ".join(f"{v:.17g}" for v in r) for r in rigid(i)) + "\n")
    (root / "info.txt").write_text("\n".join(info_lines()) + "\n")
    splits = {"query": names[:query], "mapping": names[query:]}
    (root / "kd3d.json").write_text(json.dumps({"format": "kd3d-scene", "version": 1, "world_frame": "map",
                                                "splits": splits}))
    (root / "timestamps.txt").write_text("".join(f"{n} {1_700_000_000_000_000_000 + i * 10**8}\n"
                                                 for i, n in enumerate(names)))
    return root


def png_with_header(width: int, height: int, bit_depth: int = 8, colour_type: int = 2) -> bytes:
    """A PNG whose IHDR claims width x height, followed by a tiny (wrong) IDAT: a lying header."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def save_vit(path: Path) -> Path:
    """A tiny ViT scene model (64x48 input)."""
    import torch

    from kd3d_core.students import get_architecture
    from kd3d_core.students.model_file import ModelMeta, save_scene_model
    from kd3d_core.students.registry import config_to_dict
    from kd3d_core.students.vit import ViTConfig

    cfg = ViTConfig(patch=16, blocks=1, decoder_blocks=1, heads=2, latent=16, head_channels=8)
    torch.manual_seed(0)
    net = get_architecture("vit").build(cfg, SIZE)
    save_scene_model(path, net, ModelMeta("vit", config_to_dict(cfg), SIZE, 8, (0.0, 0.0, 2.0), 1.0, "map"))
    return path


def save_fast(path: Path) -> Path:
    """A tiny fast student (kNN head with 64 stored cells in 4 lists) with consistent buffers."""
    import torch

    from kd3d_core.students.fast import FastConfig, FastStudent
    from kd3d_core.students.model_file import ModelMeta, save_scene_model
    from kd3d_core.students.registry import config_to_dict

    cfg = FastConfig(stem_channels=(8, 8, 8), block_dilations=(1,), feature_dim=16, head_width=8, head_blocks=0,
                     knn_size=64, knn_dim=8, knn_lists=4, knn_probe=2, knn_pq=4)
    torch.manual_seed(0)
    net = FastStudent(cfg)
    head = net.head
    head.proj.copy_(torch.randn_like(head.proj))
    head.store(torch.nn.functional.normalize(torch.randn(64, 8), dim=1), torch.randn(64, 3),
               torch.Generator().manual_seed(0))
    head.centroids.copy_(torch.randn(4, 8))
    head.offsets.copy_(torch.arange(0, 65, 16))
    save_scene_model(path, net, ModelMeta("fast", config_to_dict(cfg), SIZE, 8, (0.0, 0.0, 2.0), 1.0, "map"))
    return path


def rewrite_model(src: Path, dst: Path, meta_fn=None, state_fn=None, header_fn=None) -> Path:
    """Copy a model file with its JSON metadata, tensors or header edited (a tampered file)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(src), framework="pt") as fh:
        header = dict(fh.metadata())
    state = load_file(str(src))
    meta = json.loads(header["kd3d"])
    if meta_fn:
        meta_fn(meta)
    if state_fn:
        state_fn(state)
    header["kd3d"] = meta if isinstance(meta, str) else json.dumps(meta)
    if header_fn:
        header_fn(header)
    save_file(state, str(dst), metadata=header)
    return dst


def tum_lines(n: int, offset: float = 0.0) -> list[str]:
    """TUM lines of the rigid trajectory (stamps 1.0, 1.1, ...), translated by `offset` metres in x."""
    from scipy.spatial.transform import Rotation

    lines = []
    for i in range(n):
        T = rigid(i)
        q = Rotation.from_matrix(T[:3, :3]).as_quat()
        t = T[:3, 3] + [offset, 0, 0]
        lines.append(f"{1.0 + 0.1 * i:.6f} " + " ".join(f"{v:.9g}" for v in (*t, *q)))
    return lines


def colmap_lines(n: int, names: list[str] | None = None) -> list[str]:
    """COLMAP-convention lines (world-to-camera) of the rigid trajectory."""
    from scipy.spatial.transform import Rotation

    lines = []
    for i in range(n):
        T = np.linalg.inv(rigid(i))
        x, y, z, w = Rotation.from_matrix(T[:3, :3]).as_quat()
        name = names[i] if names else f"frame-{i:06d}"
        lines.append(f"{name} " + " ".join(f"{v:.9g}" for v in (w, x, y, z, *T[:3, 3])))
    return lines
