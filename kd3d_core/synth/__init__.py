"""Synthetic rooms: procedurally textured indoor scenes with exact depth and poses (the embedded default).

`render_scene(config, out)` writes a 12Scenes-layout scene folder with a mapping split and a separate query
split (different path, same room). Deterministic by (preset, seed).
"""
from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kd3d_core.errors import ConfigError
from kd3d_core.scene import Split
from kd3d_core.scene_writer import SceneWriter
from kd3d_core.synth.conditions import SceneChange, change_poses, change_room
from kd3d_core.synth.render import Rendering, render_view
from kd3d_core.synth.room import Room, build_room
from kd3d_core.synth.trajectory import mapping_trajectory, query_trajectory

__all__ = ["PRESETS", "Preset", "Rendering", "Room", "SynthConfig", "SynthResult", "make_room", "render_scene",
           "render_view", "synth_intrinsics", "synth_poses"]


@dataclass(frozen=True)
class Preset:
    """A room type: size (x, y, z metres), furniture against walls and in the middle, max furniture depth."""

    size: tuple[float, float, float]
    wall_items: int
    center_items: int
    max_depth: float
    description: str
    low_texture: bool = False
    paint_contrast: float = 0.04  # contrast of the low-texture rooms' paint (value noise; textures.make_texture)


PRESETS: dict[str, Preset] = {
    "office": Preset((5.0, 4.0, 2.7), 6, 1, 0.7, "office: desks and shelves, one table"),
    "kitchen": Preset((4.0, 3.2, 2.6), 8, 1, 0.65, "kitchen: counters and cupboards, small island"),
    "living": Preset((6.0, 5.0, 2.8), 7, 2, 0.9, "living room: sofas, shelves, coffee tables"),
    "bedroom": Preset((4.5, 3.6, 2.6), 4, 0, 0.8, "bedroom: sparse, large plain surfaces"),
    "lab": Preset((8.0, 6.0, 3.0), 12, 3, 0.9, "lab: large and cluttered"),
    "tiny": Preset((3.0, 2.6, 2.4), 3, 0, 0.5, "tiny room for tests"),
    "lowtex": Preset((5.0, 4.0, 2.7), 5, 1, 0.7, "low texture: near-uniform paint everywhere, a few posters",
                     low_texture=True),
    "plain": Preset((5.0, 4.0, 2.7), 5, 1, 0.7, "plain walls: smooth paint with five times lowtex's contrast (that of "
                    "the office's walls, without their decorations), a few posters", low_texture=True,
                    paint_contrast=0.2),
}


# The largest sensor noise (grey levels) a rendering accepts: beyond it the image is mostly noise.
MAX_SENSOR_NOISE = 64.0


@dataclass(frozen=True)
class SynthConfig:
    """What to render."""

    preset: str = "office"
    seed: int = 0
    mapping_frames: int = 300
    query_frames: int = 100
    size_wh: tuple[int, int] = (320, 240)
    texture_ppm: float = 200.0
    fps: float = 10.0
    color_ext: str = "png"
    include_mapping: bool = True  # False renders only the query walk (e.g. a high-resolution query set)
    query_change: SceneChange | None = None  # the room or the camera path differs on the query walk
    # Gaussian noise (standard deviation in grey levels) added to every rendered image, per pixel and channel and
    # seeded per frame: a real camera's noise floor. 0 keeps the renderer's noise-free pixels, which flatter a
    # memory of appearance. Measured 2026-12-01 (bench rooms, 200 mapping / 30 query frames at 320x240): the
    # low-texture room, mapped from noise-free images, localized 30, 26 and 2 of 30 queries within 5 cm / 5 deg
    # at query noise sigma 0, 1 and 2; mapped from sigma-2 images, none at any query noise; the office 30 of 30
    # either way, up to query sigma 8.
    sensor_noise: float = 0.0

    def __post_init__(self) -> None:
        if self.query_change is not None and not isinstance(self.query_change, SceneChange):
            try:
                object.__setattr__(self, "query_change", SceneChange(self.query_change))
            except ValueError as err:
                raise ConfigError(f"unknown query change {self.query_change!r}; choose one of "
                                  f"{', '.join(c.value for c in SceneChange)}") from err

    def validate(self) -> None:
        """Raise ConfigError on impossible values."""
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self.mapping_frames < 1 or self.query_frames < 0:
            raise ConfigError("need at least one mapping frame and a non-negative number of query frames")
        if not self.include_mapping and self.query_frames < 1:
            raise ConfigError("a query-only scene needs at least one query frame")
        if min(self.size_wh) < 16 or max(self.size_wh) > 4096:
            raise ConfigError(f"image size {self.size_wh} out of range (16..4096 pixels)")
        if not 0.0 <= self.sensor_noise <= MAX_SENSOR_NOISE:
            raise ConfigError(f"sensor noise must be 0-{MAX_SENSOR_NOISE:g} grey levels, got {self.sensor_noise}")


@dataclass(frozen=True)
class SynthResult:
    """What render_scene wrote and how fast."""

    path: Path
    frames: int
    seconds: float

    @property
    def fps(self) -> float:
        """Frames rendered (and written) per second."""
        return self.frames / max(self.seconds, 1e-9)


def _rng(config: SynthConfig, stream: str) -> np.random.Generator:
    key = zlib.crc32(f"{config.preset}/{stream}".encode())
    return np.random.default_rng([config.seed, key])


def synth_intrinsics(size_wh: tuple[int, int]) -> np.ndarray:
    """Pinhole K of the synthetic camera (about 64 degrees horizontal field of view)."""
    w, h = size_wh
    f = 0.8 * w
    return np.array([[f, 0.0, w / 2 - 0.5], [0.0, f, h / 2 - 0.5], [0.0, 0.0, 1.0]])


def make_room(config: SynthConfig) -> Room:
    """The room of a config (layout, textures, lights), deterministic by preset and seed."""
    config.validate()
    p = PRESETS[config.preset]
    return build_room(np.array(p.size), p.wall_items, p.center_items, p.max_depth, config.texture_ppm,
                      _rng(config, "room"), low_texture=p.low_texture,
                      paint_contrast=p.paint_contrast)


def synth_poses(config: SynthConfig) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Mapping and query camera poses (world_T_cam) of a config."""
    p = PRESETS[config.preset]
    size = np.array(p.size)
    outer = 1.0 - (p.max_depth + 0.55) / (min(size[:2]) / 2)
    mapping = mapping_trajectory(size, config.mapping_frames, _rng(config, "mapping"), outer)
    query = query_trajectory(size, config.query_frames, _rng(config, "query"), outer)
    if config.query_change is not None:
        query = change_poses(query, config.query_change)
    return mapping, query


def sensor_image(rgb_HW3: np.ndarray, config: SynthConfig, split: Split, index: int) -> np.ndarray:
    """A rendered image as the camera records it: with config.sensor_noise (grey levels, Gaussian, per pixel and
    channel), seeded by the room, the split and the frame's index in the rendering (the same frame of the same
    config gets the same noise); unchanged when it is 0."""
    if config.sensor_noise <= 0:
        return rgb_HW3
    rng = np.random.default_rng([config.seed, zlib.crc32(f"{config.preset}/sensor/{split.value}".encode()), index])
    noisy = rgb_HW3.astype(np.float32) + rng.normal(0.0, config.sensor_noise, rgb_HW3.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def render_scene(config: SynthConfig, out: Path | str, *, overwrite: bool = False, progress: bool = True) -> SynthResult:
    """Render a room's query then mapping frames into a scene folder (12Scenes layout, query = sequence0)."""
    config.validate()
    room = make_room(config)
    query_room = room if config.query_change is None else change_room(room, config.query_change,
                                                                      _rng(config, "query-change"))
    mapping, query = synth_poses(config)
    K = synth_intrinsics(config.size_wh)
    period_ns = int(1e9 / config.fps)
    t_query0 = 1_700_000_000 * 10**9 + (len(mapping) + 50) * period_ns
    start = time.perf_counter()
    views = [(Split.QUERY, pose, t_query0 + i * period_ns) for i, pose in enumerate(query)]
    if config.include_mapping:
        views += [(Split.MAPPING, pose, 1_700_000_000 * 10**9 + i * period_ns) for i, pose in enumerate(mapping)]
    rooms = {Split.QUERY: query_room, Split.MAPPING: room}
    with SceneWriter.create(out, K, config.size_wh, sensor=f"kd3d-synth:{config.preset}", world_frame="map",
                            color_ext=config.color_ext, overwrite=overwrite) as writer:
        writer.extra["synth"] = {"preset": config.preset, "seed": config.seed, "room_size_m": list(room.size),
                                 "query_change": None if config.query_change is None else config.query_change.value,
                                 "sensor_noise": config.sensor_noise}
        desc = f"synth {config.preset} {config.size_wh[0]}x{config.size_wh[1]}"  # the demo renders two sizes
        for i, (split, pose, stamp) in enumerate(tqdm(views, desc=desc, unit="frame", disable=not progress)):
            view = render_view(rooms[split], K, pose, config.size_wh)
            writer.add(sensor_image(view.rgb, config, split, i), depth=view.depth, world_T_cam=pose, stamp_ns=stamp,
                       split=split)
    return SynthResult(Path(out), len(views), time.perf_counter() - start)
