"""`teach_scene`: label every mapping frame of a scene with the depth or the DUSt3R teacher."""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from kd3d_core.errors import ConfigError, SceneError
from kd3d_core.labels import META_FILE, FrameLabel, LabelsMeta, LabelStore, ScaleSource, default_labels_dir
from kd3d_core.scene import Frame, Scene, Split, open_scene
from kd3d_core.teachers.config import TeachConfig, TeacherKind
from kd3d_core.teachers.depth import depth_label
from kd3d_core.teachers.preprocess import default_label_size


@dataclass(frozen=True)
class TeachResult:
    """Outcome of a teach run (rank 0)."""

    labels_dir: Path
    frames: int
    labelled: int
    failed: tuple[str, ...]
    meta: LabelsMeta
    seconds: float


def teach_scene(scene_root: Path | str, config: TeachConfig) -> TeachResult | None:
    """Write labels for every mapping frame of the scene at `scene_root`.

    Returns None on torchrun ranks other than 0 (they only contribute pair inference).
    """
    scene = open_scene(scene_root)
    frames = scene.split(Split.MAPPING)
    if not frames:
        raise SceneError(f"scene {scene.root} has no mapping frames to label")
    labels_dir = Path(config.labels_dir) if config.labels_dir else default_labels_dir(scene.root, config.teacher.value)
    if config.teacher is TeacherKind.DEPTH:
        return teach_depth(scene, frames, LabelStore(labels_dir), config)
    if config.teacher is TeacherKind.SIMULATED_DUST3R:
        from kd3d_core.teachers.simulated_teach import teach_simulated

        return teach_simulated(scene, frames, LabelStore(labels_dir), config)
    from kd3d_core.teachers.dust3r_teach import teach_dust3r

    return teach_dust3r(scene, frames, LabelStore(labels_dir), config)


def start_labels(store: LabelStore, meta: LabelsMeta) -> None:
    """Refuse to mix runs of another teacher or label size in one folder; mark the run as in progress."""
    if (store.root / META_FILE).is_file():
        old = store.read_meta(allow_incomplete=True)  # resuming an interrupted run is the point
        if (old.teacher, tuple(old.label_size)) != (meta.teacher, tuple(meta.label_size)):
            raise ConfigError(f"{store.root} holds {old.teacher} labels of size {old.label_size}; use another "
                              f"--labels-dir or delete it")
    store.write_meta(replace(meta, extra={**meta.extra, "complete": False}))


def teach_depth(scene: Scene, frames: list[Frame], store: LabelStore, config: TeachConfig) -> TeachResult:
    """Depth teacher: sensor depth + poses; per-frame and resumable (labels on disk are kept)."""
    t0 = time.perf_counter()
    label_wh = config.label_size or default_label_size(scene.info.color_size)
    base = LabelsMeta(teacher=TeacherKind.DEPTH.value, world_frame=scene.info.world_frame,
                      scale_source=ScaleSource.DEPTH, label_size=tuple(label_wh),
                      extra={"depth": asdict(config.depth)})
    start_labels(store, base)
    failed, fractions = [], []
    for f in tqdm(frames, desc="depth labels", unit="frame", file=sys.stderr, disable=not config.progress):
        if store.has(f.name):
            continue
        depth = f.load_depth_for_color(scene.info.color_size)
        if depth is None or f.world_T_cam is None:
            failed.append(f.name)
            continue
        pts, conf, K = depth_label(depth, f.K, f.world_T_cam, label_wh, config.depth)
        fractions.append(float((conf > 0).mean()))
        store.write(FrameLabel(f.name, pts, conf, f.world_T_cam, K))
    if len(failed) == len(frames):
        raise SceneError(f"the depth teacher needs depth and poses; no mapping frame of {scene.root} has both")
    extra = {**base.extra, "complete": True, "mean_valid_fraction": float(np.mean(fractions)) if fractions else None}
    meta = replace(base, failed_frames=tuple(failed), extra=extra)
    store.write_meta(meta)
    return TeachResult(store.root, len(frames), len(frames) - len(failed), tuple(failed), meta,
                       time.perf_counter() - t0)


def label_depth_loader(frame: Frame, color_wh: tuple[int, int], to_net, label_wh: tuple[int, int]):
    """Sensor depth of a frame on the label grid (nearest), or None when the frame has none."""
    depth = frame.load_depth_for_color(color_wh)
    if depth is None:
        return None
    return cv2.resize(to_net(depth), label_wh, interpolation=cv2.INTER_NEAREST)
