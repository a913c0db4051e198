"""Classical feature-based relocalization (what users would otherwise pick, rtabmap-style).

Map: ORB or SIFT features of the mapping frames lifted to world points with their depth and pose, plus one
global descriptor per frame. Query: retrieve the top-k mapping frames by global descriptor, match local
descriptors against each (ratio test), PnP-RANSAC and refinement on the 2D-3D matches. The result is the same
`PoseEstimate` the learned relocalizer returns, so evaluation and the benchmark treat both alike.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from kd3d_core.baselines.config import ClassicalConfig, GlobalDescriptorKind
from kd3d_core.baselines.features import Features, detect, lift_to_world, make_detector, ratio_matches
from kd3d_core.baselines.retrieval import Vocabulary, bow_descriptor, learn_vocabulary, thumbnail_descriptor, top_k
from kd3d_core.errors import ConfigError, ModelError, SceneError
from kd3d_core.geometry import invert_pose, is_valid_pose, make_pose
from kd3d_core.io_utils import atomic_file
from kd3d_core.localization.config import RelocalizerConfig
from kd3d_core.localization.correspondences import undistort_pixels
from kd3d_core.localization.pnp import pose_covariance, ransac_pnp, refine_pose, reprojection_errors
from kd3d_core.localization.relocalizer import check_image, check_intrinsics
from kd3d_core.localization.result import FailureReason, PoseEstimate, StageTimings
from kd3d_core.scene import Scene, Split, open_scene

FORMAT = "kd3d-classical-map"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ClassicalMap:
    """A feature map of one scene.

    Attributes:
        config: how it was built (and how it is queried).
        points_N3: world point of every stored keypoint (float32).
        descriptors_ND: descriptor of every stored keypoint (uint8).
        frame_offsets: (F + 1,) int64; keypoints of map frame f are rows offsets[f]:offsets[f + 1].
        frame_names: scene frame name of each map frame.
        world_T_cam_F44: pose of each map frame (float64).
        global_FD: unit-norm global descriptor of each map frame (float32).
        vocabulary: visual words for GlobalDescriptorKind.BOW, else None.
        world_frame: frame id of the map's world.
    """

    config: ClassicalConfig
    points_N3: np.ndarray
    descriptors_ND: np.ndarray
    frame_offsets: np.ndarray
    frame_names: tuple[str, ...]
    world_T_cam_F44: np.ndarray
    global_FD: np.ndarray
    vocabulary: Vocabulary | None
    world_frame: str = "map"

    @property
    def num_frames(self) -> int:
        """Mapping frames in the map."""
        return len(self.frame_names)

    @property
    def nbytes(self) -> int:
        """In-memory size of the map's arrays (the .npz file is about this size)."""
        arrays = [self.points_N3, self.descriptors_ND, self.frame_offsets, self.world_T_cam_F44, self.global_FD]
        if self.vocabulary is not None:
            arrays += [self.vocabulary.words_VD, self.vocabulary.idf_V]
        return int(sum(a.nbytes for a in arrays))

    @classmethod
    def build(cls, scene: Scene | Path | str, config: ClassicalConfig | None = None, *,
              split: Split = Split.MAPPING, progress: bool = True) -> ClassicalMap:
        """Build the map from a scene's frames that have depth and a pose (the mapping split by default)."""
        config = config or ClassicalConfig()
        scene = scene if isinstance(scene, Scene) else open_scene(scene)
        frames = [f for f in scene.split(split) if f.has_pose and f.depth_path is not None][::config.map_stride]
        if not frames:
            raise SceneError(f"scene {scene.root} has no {Split(split).value} frames with depth and pose")
        detector = make_detector(config)
        kept: list[Features] = []
        points: list[np.ndarray] = []
        all_descriptors: list[np.ndarray] = []
        thumbs: list[np.ndarray] = []
        for frame in tqdm(frames, desc="classical map", unit="frame", disable=not progress):
            rgb = frame.load_rgb()
            feats = detect(detector, config.feature, rgb)
            lifted, world = lift_to_world(feats, frame.load_depth_for_color(rgb.shape[1::-1]), frame.K,
                                          frame.world_T_cam, config)
            kept.append(lifted)
            points.append(world)
            all_descriptors.append(feats.descriptors_ND)
            thumbs.append(thumbnail_descriptor(rgb, config.thumbnail_wh))
        vocabulary, global_FD = _global_descriptors(config, all_descriptors, thumbs)
        offsets = np.concatenate([[0], np.cumsum([len(p) for p in points])]).astype(np.int64)
        return cls(config, np.concatenate(points).astype(np.float32),
                   np.concatenate([k.descriptors_ND for k in kept]), offsets, tuple(f.name for f in frames),
                   np.stack([f.world_T_cam for f in frames]).astype(np.float64), global_FD, vocabulary,
                   scene.info.world_frame)

    def retrieve(self, rgb_HW3: np.ndarray, features: Features) -> np.ndarray:
        """Indices of the top-k map frames for a query image, best first."""
        if self.config.global_descriptor is GlobalDescriptorKind.BOW and self.vocabulary is not None:
            query = bow_descriptor(features.descriptors_ND, self.config.feature, self.vocabulary)
        else:
            query = thumbnail_descriptor(rgb_HW3, self.config.thumbnail_wh)
        return top_k(self.global_FD, query, self.config.top_k)

    def match(self, features: Features, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """2D-3D correspondences (uv (M, 2) float64, world points (M, 3) float64) against the given frames.

        Each retrieved frame is matched on its own: the same world point stored in several nearby frames
        would otherwise fail the ratio test against itself.
        """
        uv, xyz = [], []
        for f in frames:
            lo, hi = self.frame_offsets[f], self.frame_offsets[f + 1]
            q, t = ratio_matches(features.descriptors_ND, self.descriptors_ND[lo:hi], self.config.feature,
                                 self.config.ratio)
            uv.append(features.uv_N2[q])
            xyz.append(self.points_N3[lo:hi][t])
        return (np.concatenate(uv).astype(np.float64).reshape(-1, 2),
                np.concatenate(xyz).astype(np.float64).reshape(-1, 3))

    def localize(self, rgb_HW3: np.ndarray, K: np.ndarray, dist_coeffs: np.ndarray | None = None,
                 stamp_ns: int | None = None) -> PoseEstimate:
        """Estimate world_T_cam of one RGB uint8 image with intrinsics K (never raises on a bad frame).

        Timings map onto the learned relocalizer's stages: predict = feature detection and the global
        descriptor, select = retrieval and matching, pnp = PnP-RANSAC, refine = refinement and covariance.
        """
        wf = self.world_frame
        problem = check_image(rgb_HW3) or check_intrinsics(K, dist_coeffs)
        if problem:
            reason = FailureReason.BAD_IMAGE if check_image(rgb_HW3) else FailureReason.BAD_INTRINSICS
            return PoseEstimate.failed(reason, problem, stamp_ns=stamp_ns, world_frame=wf)
        K = np.asarray(K, np.float64)
        t0 = time.perf_counter()
        features = detect(make_detector(self.config), self.config.feature, rgb_HW3)
        t1 = time.perf_counter()
        uv, xyz = self.match(features, self.retrieve(rgb_HW3, features))
        uv = undistort_pixels(uv, K, dist_coeffs)
        timings = StageTimings(_ms(t0, t1), _ms(t1))
        if len(uv) < self.config.min_inliers:
            return PoseEstimate.failed(FailureReason.TOO_FEW_CORRESPONDENCES,
                                       f"{len(uv)} feature matches, need {self.config.min_inliers}", timings,
                                       correspondences=len(uv), stamp_ns=stamp_ns, world_frame=wf)
        return self._solve(xyz, uv, K, timings, stamp_ns)

    def _solve(self, xyz: np.ndarray, uv: np.ndarray, K: np.ndarray, timings: StageTimings,
               stamp_ns: int | None) -> PoseEstimate:
        cfg, wf, n = self.pnp_config(), self.world_frame, len(uv)
        t0 = time.perf_counter()
        found = ransac_pnp(xyz, uv, K, cfg)
        timings = dataclasses.replace(timings, pnp_ms=_ms(t0))
        if found is None:
            return PoseEstimate.failed(FailureReason.PNP_FAILED, f"PnP-RANSAC found no pose from {n} matches",
                                       timings, correspondences=n, stamp_ns=stamp_ns, world_frame=wf)
        t0 = time.perf_counter()
        pose, inliers = refine_pose(xyz, uv, K, found[0], found[1], cfg)
        errors = reprojection_errors(xyz[inliers], uv[inliers], K, pose)
        world_T_cam = invert_pose(make_pose(cv2.Rodrigues(pose.rvec)[0], pose.tvec))
        covariance = pose_covariance(xyz[inliers], errors, K, world_T_cam)
        timings = dataclasses.replace(timings, refine_ms=_ms(t0))
        if len(inliers) < cfg.min_inliers:
            return PoseEstimate.failed(FailureReason.TOO_FEW_INLIERS, f"{len(inliers)} inliers of {n}, need "
                                       f"{cfg.min_inliers}", timings, correspondences=n, inliers=len(inliers),
                                       stamp_ns=stamp_ns, world_frame=wf)
        if not is_valid_pose(world_T_cam) or covariance is None or not np.all(np.isfinite(errors)):
            return PoseEstimate.failed(FailureReason.DEGENERATE_POSE, "pose or covariance not well conditioned",
                                       timings, correspondences=n, inliers=len(inliers), stamp_ns=stamp_ns,
                                       world_frame=wf)
        return PoseEstimate(True, world_T_cam, covariance, len(inliers), n, float(np.sqrt(np.mean(errors ** 2))),
                            timings, stamp_ns=stamp_ns, world_frame=wf)

    def pnp_config(self) -> RelocalizerConfig:
        """The shared PnP settings (solver, RANSAC, refinement) with this baseline's threshold and minima."""
        return RelocalizerConfig(reprojection_threshold_px=self.config.reprojection_threshold_px,
                                 ransac_iterations=self.config.ransac_iterations,
                                 min_inliers=self.config.min_inliers, min_inlier_ratio=0.0)

    def save(self, path: Path | str) -> None:
        """Write the map as one .npz file (no pickled objects), atomically."""
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "world_frame": self.world_frame,
                "frame_names": list(self.frame_names), "config": _config_to_json(self.config)}
        arrays = {"points_N3": self.points_N3, "descriptors_ND": self.descriptors_ND,
                  "frame_offsets": self.frame_offsets, "world_T_cam_F44": self.world_T_cam_F44,
                  "global_FD": self.global_FD, "meta_json": np.array(json.dumps(meta))}
        if self.vocabulary is not None:
            arrays.update(words_VD=self.vocabulary.words_VD, idf_V=self.vocabulary.idf_V)
        with atomic_file(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    @classmethod
    def load(cls, path: Path | str) -> ClassicalMap:
        """Read a map written by `save` (ModelError when missing, malformed or of another format)."""
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            meta = json.loads(str(arrays.pop("meta_json")))
        except (OSError, ValueError, KeyError) as err:
            raise ModelError(f"cannot read classical map {path}: {err}") from err
        if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
            raise ModelError(f"{path} is not a classical map of format version {FORMAT_VERSION}")
        try:
            config = ClassicalConfig(**_config_from_json(meta["config"]))
            vocabulary = Vocabulary(arrays["words_VD"], arrays["idf_V"]) if "words_VD" in arrays else None
            return cls(config, arrays["points_N3"], arrays["descriptors_ND"], arrays["frame_offsets"],
                       tuple(meta["frame_names"]), arrays["world_T_cam_F44"], arrays["global_FD"], vocabulary,
                       meta["world_frame"])
        except (KeyError, TypeError, ConfigError) as err:
            raise ModelError(f"classical map {path} is incomplete or inconsistent: {err}") from err


def _global_descriptors(config: ClassicalConfig, descriptors: list[np.ndarray],
                        thumbs: list[np.ndarray]) -> tuple[Vocabulary | None, np.ndarray]:
    if config.global_descriptor is GlobalDescriptorKind.THUMBNAIL:
        return None, np.stack(thumbs).astype(np.float32)
    try:
        vocabulary = learn_vocabulary(descriptors, config.feature, config.vocabulary_size,
                                      config.vocabulary_iterations, np.random.default_rng(config.seed))
    except ValueError as err:
        raise SceneError(f"cannot build a bag-of-words map: {err}") from err
    return vocabulary, np.stack([bow_descriptor(d, config.feature, vocabulary) for d in descriptors])


def _config_to_json(config: ClassicalConfig) -> dict:
    out = dataclasses.asdict(config)
    out["feature"], out["global_descriptor"] = config.feature.value, config.global_descriptor.value
    out["thumbnail_wh"] = list(config.thumbnail_wh)
    return out


def _config_from_json(data: dict) -> dict:
    names = {f.name for f in dataclasses.fields(ClassicalConfig)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown classical map options {sorted(unknown)}")
    return dict(data)


def _ms(t0: float, t1: float | None = None) -> float:
    return ((time.perf_counter() if t1 is None else t1) - t0) * 1000.0
