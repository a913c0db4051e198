"""The DUSt3R teacher end to end: pairs -> cached inference (sharded) -> global alignment -> label files."""
from __future__ import annotations

import time
from dataclasses import asdict, replace
from functools import partial

import numpy as np

from kd3d_core.alignment.anchors import DepthAnchors, anchors_on_grid, find_anchors
from kd3d_core.alignment.solve import AlignmentResult, align_pairs
from kd3d_core.errors import ConfigError, SceneError
from kd3d_core.geometry import invert_pose, scale_intrinsics
from kd3d_core.labels import FrameLabel, LabelsMeta, LabelStore, ScaleSource
from kd3d_core.scene import Frame, Scene
from kd3d_core.teachers.checkpoint import load_teacher
from kd3d_core.teachers.config import TeachConfig, TeacherKind
from kd3d_core.teachers.diagnostics import relative_pose_errors, relative_pose_metrics
from kd3d_core.distributed import init_distributed, resolve_device
from kd3d_core.teachers.dust3r import FrameImages, infer_pairs
from kd3d_core.teachers.pair_cache import CachedPairs, PairCache, cache_key
from kd3d_core.teachers.pairs import make_pairs
from kd3d_core.teachers.preprocess import crop_geometry, default_label_size, depth_to_network
from kd3d_core.teachers.teach import TeachResult, label_depth_loader, start_labels


def pair_diagnostics(result: AlignmentResult, frames: list[Frame]) -> dict:
    """RRA@15 / RTA@15 / mAA@30 of the raw pairwise relative poses on pairs whose frames have known poses."""
    e = result.edges
    known = np.array([frames[i].world_T_cam is not None and frames[j].world_T_cam is not None
                      for i, j in zip(e.i, e.j)], bool)
    if not known.any():
        return {"pairs": 0}
    gt = np.array([invert_pose(frames[i].world_T_cam) @ frames[j].world_T_cam
                   for i, j in zip(e.i[known], e.j[known])])
    rot, trans = relative_pose_errors(e.M.R[known], e.M.t[known], gt)
    return relative_pose_metrics(rot, trans)


def teacher_grid(scene: Scene, frames: list[Frame], config: TeachConfig, teacher: str):
    """What a pairwise teacher (real or simulated DUSt3R) works on: the network's crop geometry, the label size
    (checked to have the network input's aspect) and the image pairs."""
    geom = crop_geometry(scene.info.color_size, config.dust3r.size)
    net_wh = geom.output_wh
    label_wh = config.label_size or default_label_size(net_wh)
    if abs(label_wh[0] / label_wh[1] - net_wh[0] / net_wh[1]) > 0.02 * net_wh[0] / net_wh[1]:
        raise ConfigError(f"label size {label_wh} must have the aspect ratio of the teacher input {net_wh}")
    pairs = make_pairs(len(frames), config.dust3r.pairs)
    if not pairs:
        raise SceneError(f"{teacher} needs at least two mapping frames")
    return geom, label_wh, pairs


def teach_dust3r(scene: Scene, frames: list[Frame], store: LabelStore, config: TeachConfig) -> TeachResult | None:
    """DUSt3R teacher; under torchrun every rank infers its share of pairs and rank 0 aligns and writes labels."""
    t0 = time.perf_counter()
    cfg = config.dust3r
    ctx = init_distributed(resolve_device(cfg.device.value))
    try:
        device = resolve_device(cfg.device.value, ctx.local_rank)
        teacher = load_teacher(cfg.checkpoint, device)
        geom, label_wh, pairs = teacher_grid(scene, frames, config, "the DUSt3R teacher")
        key = cache_key(digest=teacher.digest, size=cfg.size, label=label_wh, box=geom.box, resized=geom.resized_wh)
        cache = PairCache(store.root / "pairs", key, [f.name for f in frames])
        if ctx.rank == 0:
            start_labels(store, _meta(scene, teacher.digest, label_wh, ScaleSource.ARBITRARY, {}))
        ctx.barrier()
        imgs = FrameImages(lambda k: frames[k].load_rgb(), geom)
        stats = infer_pairs(teacher.model, imgs, pairs, cache, label_wh, device, cfg.batch, cfg.amp, ctx.rank,
                            ctx.world_size, config.progress)
        (store.root / f"shard-{ctx.rank}.txt").write_text(f"{stats.computed} {stats.cached}\n")
        ctx.barrier()
        if ctx.rank != 0:
            return None
        result = _align(scene, frames, cache, pairs, geom, label_wh, config)
        extra = {"pairs": len(pairs), "edges": int(len(result.edges.i)), "edges_inlier": int(result.edge_inlier.sum()),
                 "pair_diagnostics": pair_diagnostics(result, frames), "net_size": list(geom.output_wh),
                 "focal_estimated": bool(result.canonical.focal_estimated), "backend": teacher.backend,
                 "depth_correction": result.correction_stats, "checkpoint": teacher.source,
                 "model": {k: str(v) for k, v in teacher.kwargs.items()},
                 "pair_graph": asdict(cfg.pairs), "inference_s_rank0": round(stats.seconds, 3), "complete": True}
        return _write_labels(scene, frames, store, result, teacher.digest, label_wh, extra, t0)
    finally:
        ctx.close()


def known_label_intrinsics(frames: list[Frame], geom, label_wh, config: TeachConfig) -> np.ndarray | None:
    """The frames' calibrated K at label resolution (through the network crop), when the config trusts them."""
    if not config.dust3r.use_known_K:
        return None
    net_wh = geom.output_wh
    return np.array([scale_intrinsics(geom.intrinsics(f.K), label_wh[0] / net_wh[0], label_wh[1] / net_wh[1])
                     for f in frames])


def _align(scene: Scene, frames: list[Frame], cache: PairCache, pairs, geom, label_wh, config: TeachConfig):
    cfg = config.dust3r
    K = known_label_intrinsics(frames, geom, label_wh, config)
    ref = [f.world_T_cam for f in frames]
    has_depth = any(f.depth_path is not None for f in frames)
    depth_fn = None
    if has_depth:
        to_net = partial(depth_to_network, geom=geom)
        depth_fn = lambda k: label_depth_loader(frames[k], scene.info.color_size, to_net, label_wh)  # noqa: E731
    t0 = time.perf_counter()
    anchors = label_anchors(frames, K, ref, config)
    anchors_s = time.perf_counter() - t0
    result = align_pairs(CachedPairs(cache, pairs), len(frames), (label_wh[1], label_wh[0]), cfg.align, K_N33=K,
                         ref_world_T_cam=ref if any(T is not None for T in ref) else None, metric_depth=depth_fn,
                         anchors=anchors)
    if anchors is None:
        return result
    return replace(result, correction_stats={**result.correction_stats, "anchors_s": round(anchors_s, 2)})


def label_anchors(frames: list[Frame], K_label: np.ndarray | None, ref: list[np.ndarray | None],
                  config: TeachConfig) -> list[DepthAnchors | None] | None:
    """Triangulated depth anchors on the label grid, measured on the frames' own images at their reference
    poses; None when the depth correction is off or needs what the scene lacks (poses, calibrated K)."""
    corr = config.dust3r.align.depth_correction
    if corr is None or K_label is None or sum(T is not None for T in ref) < 2:
        return None
    found = find_anchors(lambda k: frames[k].load_rgb(), np.array([f.K for f in frames]), ref, corr.anchors)
    return [anchors_on_grid(a, f.K, K) for a, f, K in zip(found, frames, K_label)]


def _meta(scene: Scene, digest: str, label_wh, scale: ScaleSource, extra: dict, residuals=None,
          failed=(), teacher: str = TeacherKind.DUST3R.value) -> LabelsMeta:
    return LabelsMeta(teacher=teacher, world_frame=scene.info.world_frame, scale_source=scale,
                      label_size=tuple(label_wh), checkpoint_digest=digest, residuals=residuals or {},
                      failed_frames=tuple(failed), extra=extra)


def _write_labels(scene, frames, store: LabelStore, result: AlignmentResult, digest, label_wh, extra,
                  t0: float, teacher: str = TeacherKind.DUST3R.value) -> TeachResult:
    failed, residuals = [], {}
    for k, f in enumerate(frames):
        if not result.aligned_N[k]:
            failed.append(f.name)
            continue
        pts, conf = result.world_points(k)
        store.write(FrameLabel(f.name, pts, conf, result.world_T_cam_N44[k], result.canonical.K_N33[k]))
        if np.isfinite(result.residual_N[k]):
            residuals[f.name] = float(result.residual_N[k])
    meta = _meta(scene, digest, label_wh, result.scale_source, extra, residuals, failed, teacher)
    store.write_meta(meta)
    return TeachResult(store.root, len(frames), len(frames) - len(failed), tuple(failed), meta,
                       time.perf_counter() - t0)
