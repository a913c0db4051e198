"""The simulated DUSt3R teacher end to end: simulated pair outputs -> the real pair cache, alignment and labels.

Only the network is replaced (kd3d_core.teachers.simulated); preprocessing geometry, the pair graph, the cache
(resumable, keyed by the simulator's settings), global alignment, the Sim(3) onto the scene's poses and the label
files are the DUSt3R teacher's own code.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from kd3d_core.alignment.solve import align_pairs
from kd3d_core.errors import ConfigError, SceneError
from kd3d_core.labels import LabelStore, ScaleSource
from kd3d_core.scene import Frame, Scene, open_scene
from kd3d_core.teachers.config import TeachConfig, TeacherKind
from kd3d_core.teachers.dust3r import _to_label
from kd3d_core.teachers.dust3r_teach import (_align, _meta, _write_labels, known_label_intrinsics,
                                             pair_diagnostics, teacher_grid)
from kd3d_core.teachers.pair_cache import CachedPairs, PairCache, cache_key
from kd3d_core.teachers.preprocess import CropGeometry
from kd3d_core.teachers.simulated import ErrorModel, FrameInput, SimulatedDust3r
from kd3d_core.teachers.teach import TeachResult, start_labels

SIMULATOR_VERSION = 1
TRUTH_HINT = ("the simulated DUSt3R teacher needs the exact depth and poses of the frames: run it on a scene "
              "with depth and poses, or pass the synthetic scene the bag was made from (--sim-truth SCENE)")


def truth_frames(scene: Scene, frames: Sequence[Frame], truth_root: Path | None) -> list[Frame]:
    """For every frame, the frame holding its exact depth and pose (itself, or the truth scene's by stamp/name)."""
    if truth_root is None:
        lookup = list(frames)
    else:
        truth = open_scene(truth_root)
        if tuple(truth.info.color_size) != tuple(scene.info.color_size):
            raise SceneError(f"truth scene {truth_root} has {truth.info.color_size} images, the scene has "
                             f"{scene.info.color_size}")
        by_stamp = {f.stamp_ns: f for f in truth.frames if f.stamp_ns is not None}
        by_name = {f.name: f for f in truth.frames}
        lookup = []
        for f in frames:
            match = by_stamp.get(f.stamp_ns) if f.stamp_ns is not None else None
            match = match or by_name.get(f.name)
            if match is None:
                raise SceneError(f"frame {f.name} (stamp {f.stamp_ns}) has no counterpart in {truth_root}")
            lookup.append(match)
    missing = [f.name for f in lookup if f.depth_path is None or f.world_T_cam is None]
    if missing:
        raise SceneError(f"{TRUTH_HINT} ({len(missing)} frames lack them, e.g. {missing[0]})")
    return lookup


def make_simulator(scene: Scene, frames: Sequence[Frame], truth: Sequence[Frame], geom: CropGeometry,
                   config: TeachConfig) -> SimulatedDust3r:
    """The simulated network for these frames (images from the scene, geometry from the truth frames)."""
    sim = config.simulated
    if not sim.error_scale >= 0:
        raise ConfigError(f"--sim-error-scale must be >= 0, not {sim.error_scale}")
    color_wh = scene.info.color_size

    def load(k: int) -> FrameInput:
        return FrameInput(truth[k].load_depth_for_color(color_wh), frames[k].load_rgb(), truth[k].world_T_cam,
                          geom.intrinsics(frames[k].K))

    return SimulatedDust3r(load, geom, ErrorModel().scaled(sim.error_scale), seed=sim.seed)


def simulate_pairs(simulator: SimulatedDust3r, pairs: Sequence[tuple[int, int]], cache: PairCache,
                   label_wh: tuple[int, int], progress: bool) -> tuple[int, float]:
    """Write both orders of every missing pair into the cache, resampled to the label grid as real inference is."""
    todo = [p for p in pairs if not cache.has(*p)]
    t0 = time.perf_counter()
    for i, j in tqdm(todo, unit="pair", desc="simulated dust3r pairs", file=sys.stderr, disable=not progress):
        out = []
        for a, b in ((i, j), (j, i)):
            p = simulator.predict(a, b)
            out.append(type(p)(a, b, _to_label(p.pts_i_HW3, label_wh), _to_label(p.conf_i_HW, label_wh),
                               _to_label(p.pts_j_HW3, label_wh), _to_label(p.conf_j_HW, label_wh)))
        cache.write(out[0], out[1])
    return len(todo), time.perf_counter() - t0


def teach_simulated(scene: Scene, frames: list[Frame], store: LabelStore, config: TeachConfig) -> TeachResult:
    """Label the mapping frames with the simulated DUSt3R through the production pair cache and alignment."""
    t0 = time.perf_counter()
    cfg, sim = config.dust3r, config.simulated
    truth = truth_frames(scene, frames, sim.truth)
    geom, label_wh, pairs = teacher_grid(scene, frames, config, "the simulated DUSt3R teacher")
    simulator = make_simulator(scene, frames, truth, geom, config)
    model_key = cache_key(**asdict(simulator.model))[:8]
    digest = f"simulated-dust3r:v{SIMULATOR_VERSION}:x{sim.error_scale:g}:seed{sim.seed}:{model_key}"
    key = cache_key(digest=digest, size=cfg.size, label=label_wh, box=geom.box, resized=geom.resized_wh)
    cache = PairCache(sim.cache_dir or store.root / "pairs", key, [f.name for f in frames])
    teacher = TeacherKind.SIMULATED_DUST3R.value
    start_labels(store, _meta(scene, digest, label_wh, ScaleSource.ARBITRARY, {}, teacher=teacher))
    computed, infer_s = simulate_pairs(simulator, pairs, cache, label_wh, config.progress)
    if sim.use_reference:
        result = _align(scene, frames, cache, pairs, geom, label_wh, config)
    else:
        result = _align_monocular(frames, cache, pairs, geom, label_wh, config)
    extra = {"pairs": len(pairs), "edges": int(len(result.edges.i)), "edges_inlier": int(result.edge_inlier.sum()),
             "pair_diagnostics": pair_diagnostics(result, truth), "net_size": list(geom.output_wh),
             "wrong_pairs": int(sum(simulator.is_wrong_pair(i, j) for i, j in pairs)),
             "simulated": {**asdict(sim), "truth": None if sim.truth is None else str(sim.truth),
                           "cache_dir": None if sim.cache_dir is None else str(sim.cache_dir)},
             "pair_graph": asdict(cfg.pairs), "depth_correction": result.correction_stats,
             "inference_s": round(infer_s, 3), "pairs_computed": computed,
             "complete": True}
    return _write_labels(scene, frames, store, result, digest, label_wh, extra, t0, teacher)


def _align_monocular(frames: list[Frame], cache: PairCache, pairs, geom: CropGeometry, label_wh, config: TeachConfig):
    """Alignment without poses or depth: the pure monocular case (gauge = first aligned frame, arbitrary scale)."""
    K = known_label_intrinsics(frames, geom, label_wh, config)
    return align_pairs(CachedPairs(cache, pairs), len(frames), (label_wh[1], label_wh[0]), config.dust3r.align,
                       K_N33=K)
