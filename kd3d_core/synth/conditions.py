"""What a real camera sees differently from the mapping walk: photometric changes of the image and changes of the
room (lights, furniture) and of the camera path, to render or apply to query frames with mapping unchanged.

Photometric changes act on a rendered RGB image (what the camera's exposure, white balance, sensor and codec do);
scene changes are applied when rendering the query walk (`kd3d_core.synth.render_scene(query_change=...)`):
lights moved or dimmed *between* the mapping and the query walk are spatially varying, not a global gain, so they
change shading differently on every surface.
"""
from __future__ import annotations

import dataclasses
from enum import Enum

import cv2
import numpy as np

from kd3d_core.errors import ConfigError
from kd3d_core.geometry import rotation_z
from kd3d_core.synth.room import Lighting, Room


class Photometric(str, Enum):
    """A change of image formation (the room and the pose are unchanged)."""

    GAIN_050 = "gain-0.5"          # exposure halved (auto-exposure, dimmer room)
    GAIN_160 = "gain-1.6"          # over-exposed: bright parts clip
    GAMMA_060 = "gamma-0.6"        # brighter mid-tones (another camera's tone curve)
    GAMMA_160 = "gamma-1.6"        # darker mid-tones
    WHITE_BALANCE = "white-balance"  # warm cast: red x1.25, blue x0.75
    NOISE = "noise"                # Gaussian sensor noise, sigma 8 grey levels
    MOTION_BLUR = "motion-blur"    # 9-pixel horizontal motion blur (at 640 px width)
    JPEG = "jpeg-25"               # JPEG at quality 25


def apply_photometric(rgb_HW3: np.ndarray, change: Photometric, rng: np.random.Generator) -> np.ndarray:
    """The image as a camera with `change` would have recorded it (uint8 RGB in, uint8 RGB out)."""
    f = rgb_HW3.astype(np.float32)
    if change is Photometric.GAIN_050:
        f = f * 0.5
    elif change is Photometric.GAIN_160:
        f = f * 1.6
    elif change in (Photometric.GAMMA_060, Photometric.GAMMA_160):
        gamma = 0.6 if change is Photometric.GAMMA_060 else 1.6
        f = 255.0 * (f / 255.0) ** gamma
    elif change is Photometric.WHITE_BALANCE:
        f = f * np.array([1.25, 1.0, 0.75], np.float32)
    elif change is Photometric.NOISE:
        f = f + rng.normal(0.0, 8.0, f.shape).astype(np.float32)
    elif change is Photometric.MOTION_BLUR:
        length = max(3, int(round(9 * rgb_HW3.shape[1] / 640)) | 1)
        kernel = np.full((1, length), 1.0 / length, np.float32)
        f = cv2.filter2D(f, -1, kernel, borderType=cv2.BORDER_REFLECT)
    elif change is Photometric.JPEG:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb_HW3, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 25])
        if not ok:
            raise ConfigError("JPEG encoding failed")
        return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return np.clip(np.rint(f), 0, 255).astype(np.uint8)


class SceneChange(str, Enum):
    """A change of the room or of the query camera path between mapping and query."""

    LIGHTS_MOVED = "lights-moved"    # every ceiling light moved by ~1 m; ambient light lower
    LIGHTS_DIMMED = "lights-dimmed"  # half the lights at 25 %, the others at 70 %: shading varies over the room
    OBJECT_MOVED = "object-moved"    # the largest free-standing (or else a wall) item moved 40 cm and turned 20 deg
    ROLL = "roll-20"                 # query camera rolled +-20 deg (alternating sign along the walk)
    LOWER = "lower-0.4"              # query camera carried 40 cm lower (a smaller robot)


def change_room(room: Room, change: SceneChange, rng: np.random.Generator) -> Room:
    """The room as the query walk sees it (camera-path changes return the room unchanged)."""
    if change is SceneChange.LIGHTS_MOVED:
        lights = room.lights.copy()
        size = room.size
        shift = rng.uniform(0.6, 1.2, len(lights)) * np.sign(rng.uniform(-1, 1, (2, len(lights))))
        lights[:, :2] = np.clip(lights[:, :2] + shift.T, 0.15 * size[:2], 0.85 * size[:2])
        return dataclasses.replace(room, lights=lights, lighting=Lighting(ambient=0.8))
    if change is SceneChange.LIGHTS_DIMMED:
        gains = np.where(np.arange(len(room.lights)) % 2 == 0, 0.25, 0.7)
        return dataclasses.replace(room, lighting=Lighting(gains=tuple(float(g) for g in rng.permutation(gains)),
                                                           ambient=0.7))
    if change is SceneChange.OBJECT_MOVED:
        return _move_object(room, rng)
    return room


def _move_object(room: Room, rng: np.random.Generator) -> Room:
    """Move and turn one furniture box (the largest in the middle of the room, else the largest one)."""
    boxes = list(room.boxes)
    candidates = range(1, len(boxes))
    if len(boxes) < 2:
        return room
    free = [i for i in candidates if boxes[i].yaw != 0.0]
    pool = free or list(candidates)
    i = max(pool, key=lambda j: float(np.prod(boxes[j].half)))
    box = boxes[i]
    direction = rng.uniform(-np.pi, np.pi)
    move = 0.4 * np.array([np.cos(direction), np.sin(direction), 0.0])
    center = box.center + move
    lo, hi = box.half.max() + 0.05, room.size[:2] - box.half.max() - 0.05
    center[:2] = np.clip(center[:2], lo, np.maximum(hi, lo))
    boxes[i] = dataclasses.replace(box, center=center, yaw=box.yaw + np.radians(20.0))
    return dataclasses.replace(room, boxes=tuple(boxes))


def change_poses(poses: list[np.ndarray], change: SceneChange) -> list[np.ndarray]:
    """The query walk's camera poses (world_T_cam, OpenCV optical) under a camera-path change."""
    if change is SceneChange.ROLL:
        out = []
        for i, pose in enumerate(poses):
            p = pose.copy()
            p[:3, :3] = pose[:3, :3] @ rotation_z(np.radians(20.0 if i % 2 == 0 else -20.0))  # about the optical axis
            out.append(p)
        return out
    if change is SceneChange.LOWER:
        out = [p.copy() for p in poses]
        for p in out:
            p[2, 3] -= 0.4
        return out
    return poses
