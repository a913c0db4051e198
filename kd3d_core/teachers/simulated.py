"""A simulated DUSt3R: what the network's pair inference outputs, made from exact geometry plus DUSt3R-sized errors.

A benchmark and test teacher, never a default: DUSt3R weights cannot be downloaded on our machines, so the
quality of the RGB-only path (pair cache -> global alignment -> Sim(3) onto odometry -> labels -> student) is
measured with a faithful model of the network's errors. For a directed pair (i, j) it returns exactly what
`teachers.dust3r._forward` returns: view i's pointmap and view j's pointmap, both in camera i's frame, and
DUSt3R confidences (1 + exp(x), > 1) at the network's input resolution (e.g. 512x384), from the true depth and
poses of the synthetic scene. Everything downstream is the production code.

Error model at x1 (`ErrorModel`), sized from published DUSt3R 512 figures:
  * relative pose of a pair (pairwise, before global alignment) -- DUSt3R 512 on CO3Dv2: RRA@15 94.3, RTA@15
    88.4, mAA@30 77.2 from pairwise predictions, 96.2 / 86.8 / 76.7 with global alignment; RealEstate10K
    mAA@30 61.2 / 67.7 (DUSt3R, Wang et al., CVPR 2024, multi-view pose table; numbers as tabulated in
    MASt3R's Table 3, Leroy et al., ECCV 2024). We use the pairwise row: 5.7 % of pairs are
    wrong (1 - RRA@15; a random 20-60 degree rotation and a translation error of the order of the scene
    depth, consistent in both orders, with confident pointmaps); the others get a rotation error of 1.2 degrees
    per axis (rotation about camera j) and a translation-direction error of 3.2 degrees (Rayleigh), with 8 %
    of them in a 5-60 degree tail. Sampled alone these give RRA@15 0.943, RTA@15 0.886, mAA@30 0.78.
    CO3Dv2 pairs are wide-baseline object turns, so this is pessimistic for video-rate mapping pairs.
  * depth of a view -- monocular NYUD-v2 AbsRel 0.065 and delta<1.25 0.940 (DUSt3R 512, zero-shot, the paper's
    monocular depth table, read from a summary of it; its multi-view depth table gives ScanNet rel 4.93 % /
    tau(1.03) 60.2 %, as quoted in Fast3R's Table 7; the video-depth figures others report for DUSt3R-GA, Bonn
    AbsRel 0.155 / delta 83.3 %, are worse): a smooth
    multiplicative distortion (log-depth std 0.04; 70 % of its variance fixed per image, of which half is a
    function of the world surface, so every view of a surface shares it -- our assumption: the network
    misjudges a surface alike from nearby viewpoints; 30 % drawn per pair), misjudged regions (5 % of each image
    off by 30 %, which is what delta<1.25 = 0.94 implies), per-pixel noise growing with depth (1 % at 2 m,
    proportional to depth, correlated over 2x2 pixels), errors and low confidence on textureless surfaces (up
    to x3 distortion and noise where the image has no texture), bleeding at depth discontinuities (points
    within 2 x `bleed_px` network pixels of a jump are smeared between foreground and background, as a
    regression head does). Measured on a synthetic office at x1: view-1 AbsRel 0.062, delta<1.25 0.952 (the
    test suite keeps it within 0.045-0.085 and 0.90-0.98).
  * an unknown scale per prediction (log-uniform in [0.3, 3]), as the network's normalised outputs.
`error_scale` multiplies every error magnitude and the wrong-pair rate (x0.5, x1, x2 in the benchmark).
Randomness is seeded by (seed, i, j), so a prediction does not depend on which other pairs were computed.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NamedTuple

import cv2
import numpy as np
from scipy.spatial.transform import Rotation
from scipy.stats import norm

from kd3d_core.alignment.pairwise import PairPrediction
from kd3d_core.geometry import backproject_depth, invert_pose
from kd3d_core.teachers.preprocess import CropGeometry, depth_to_network, preprocess_rgb


@dataclass(frozen=True)
class ErrorModel:
    """DUSt3R-sized errors at x1 (see the module docstring for the published figures behind each number)."""

    wrong_pair_rate: float = 0.057
    rot_sigma_deg: float = 1.2
    trans_dir_sigma_deg: float = 3.2
    trans_tail_rate: float = 0.08
    trans_mag_sigma: float = 0.05
    lf_sigma: float = 0.04
    lf_frame_share: float = 0.7
    lf_world_share: float = 0.5
    lf_world_wavelength_m: float = 1.5
    noise_rel_2m: float = 0.01
    textureless_gain: float = 2.0
    gross_fraction: float = 0.05
    gross_log_error: float = 0.3
    bleed_px: float = 3.0
    edge_rel: float = 0.05
    scale_range: tuple[float, float] = (0.3, 3.0)

    def scaled(self, k: float) -> ErrorModel:
        """Every error magnitude and the wrong-pair rate times k (k = 0 gives exact pointmaps, scale aside)."""
        return replace(self, wrong_pair_rate=min(0.5, self.wrong_pair_rate * k), rot_sigma_deg=self.rot_sigma_deg * k,
                       trans_dir_sigma_deg=self.trans_dir_sigma_deg * k,
                       trans_tail_rate=min(0.5, self.trans_tail_rate * k), trans_mag_sigma=self.trans_mag_sigma * k,
                       gross_fraction=min(0.5, self.gross_fraction * k),
                       lf_sigma=self.lf_sigma * k, noise_rel_2m=self.noise_rel_2m * k, bleed_px=self.bleed_px * k)


class FrameTruth(NamedTuple):
    """Exact geometry of one frame on the network grid, plus what the network gets wrong about it."""

    points_HW3: np.ndarray     # true camera-frame points (0 where no depth)
    valid_HW: np.ndarray       # true depth known
    bled_HW3: np.ndarray       # points after bleeding at discontinuities
    band_HW: np.ndarray        # 1 near a depth discontinuity, 0 far from it
    texture_HW: np.ndarray     # 0 (textureless) .. 1 (textured)
    frame_error_HW: np.ndarray  # the persistent part of this image's log-depth error
    noise_sigma_HW: np.ndarray  # per-pixel log-depth noise std (grows with depth, larger untextured)
    conf_logit_HW: np.ndarray   # mean log(conf - 1) of this view as view 1
    world_T_cam: np.ndarray
    K_net: np.ndarray
    median_depth: float


def _field(rng: np.random.Generator, size_hw: tuple[int, int], cells: tuple[int, int] = (4, 5)) -> np.ndarray:
    """A smooth random field of unit standard deviation (bicubic upsampling of a coarse Gaussian grid)."""
    coarse = rng.standard_normal(cells).astype(np.float32)
    f = cv2.resize(coarse, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_CUBIC)
    return (f - f.mean()) / max(float(f.std()), 1e-6)


def texture_score(rgb_HW3: np.ndarray, patch: int = 16) -> np.ndarray:
    """0..1 local texture: mean gradient magnitude over a patch-sized window (1 at >= 6 grey levels / pixel)."""
    gray = cv2.cvtColor(rgb_HW3, cv2.COLOR_RGB2GRAY).astype(np.float32)
    g = np.hypot(cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)) / 8.0
    return np.clip(cv2.blur(g, (patch, patch)) / 6.0, 0.0, 1.0)


def discontinuities(depth_HW: np.ndarray, edge_rel: float) -> np.ndarray:
    """Pixels with a relative depth jump above `edge_rel` to a 4-neighbour (or a missing neighbour)."""
    pad = np.pad(depth_HW, 1, mode="edge")
    h, w = depth_HW.shape
    jump = np.zeros_like(depth_HW)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        jump = np.maximum(jump, np.abs(depth_HW - pad[dy:dy + h, dx:dx + w]))
    return (jump > edge_rel * np.maximum(depth_HW, 1e-6)) | (depth_HW <= 0)


class WorldField(NamedTuple):
    """A smooth random function of world position (random Fourier features, unit variance)."""

    omega_M3: np.ndarray
    phase_M: np.ndarray

    @staticmethod
    def make(rng: np.random.Generator, wavelength_m: float, components: int = 12) -> WorldField:
        """Frequencies with a typical wavelength of `wavelength_m`."""
        return WorldField(rng.normal(0.0, 2 * np.pi / wavelength_m / np.sqrt(3), (components, 3)),
                          rng.uniform(0, 2 * np.pi, components))

    def __call__(self, points_N3: np.ndarray) -> np.ndarray:
        """Field values at world points."""
        return np.sqrt(2.0 / len(self.phase_M)) * np.cos(points_N3 @ self.omega_M3.T + self.phase_M).sum(-1)


def frame_truth(depth_color: np.ndarray, rgb_color: np.ndarray, world_T_cam: np.ndarray, K_net: np.ndarray,
                geom: CropGeometry, model: ErrorModel, rng: np.random.Generator,
                world_field: WorldField | None = None) -> FrameTruth:
    """Network-grid truth of one frame: points, bleeding near depth jumps, texture, persistent depth error."""
    depth = depth_to_network(depth_color.astype(np.float32), geom)
    valid = np.isfinite(depth) & (depth > 0)
    depth = np.where(valid, depth, 0.0).astype(np.float32)
    pts = backproject_depth(depth, K_net).astype(np.float32)
    band, bled = _bleed(pts, valid, discontinuities(depth, model.edge_rel), model.bleed_px)
    texture = texture_score(preprocess_rgb(rgb_color, geom))
    med = float(np.median(depth[valid])) if valid.any() else 1.0
    gain = 1.0 + model.textureless_gain * (1.0 - texture)
    sigma = ((model.noise_rel_2m / 2.0) * depth * gain).astype(np.float32)
    far = np.maximum(0.0, np.log(np.maximum(depth, 1e-3) / med))
    logit = np.where(valid, 1.3 + 1.5 * texture - 2.5 * band - far, -4.0).astype(np.float32)
    world = None
    if world_field is not None:
        T = np.asarray(world_T_cam, np.float64)
        world = world_field(pts.reshape(-1, 3).astype(np.float64) @ T[:3, :3].T + T[:3, 3]).reshape(depth.shape)
    return FrameTruth(pts, valid, bled, band, texture, _frame_error(texture, model, rng, world), sigma, logit,
                      np.asarray(world_T_cam, np.float64), np.asarray(K_net, np.float64), med)


def _bleed(pts: np.ndarray, valid: np.ndarray, edges: np.ndarray, px: float) -> tuple[np.ndarray, np.ndarray]:
    """Band weight (1 at a depth jump, 0 beyond 2 px-widths) and points smeared across jumps within the band."""
    if px <= 0:
        return np.zeros(valid.shape, np.float32), pts
    dist = cv2.distanceTransform((~edges).astype(np.uint8), cv2.DIST_L2, 3)
    band = np.clip(1.0 - dist / (2.0 * px), 0.0, 1.0).astype(np.float32)
    k = int(2 * round(2 * px) + 1)
    w = cv2.GaussianBlur(valid.astype(np.float32), (k, k), px)
    blurred = cv2.GaussianBlur(pts * valid[..., None], (k, k), px) / np.maximum(w, 1e-6)[..., None]
    return band, (band[..., None] * blurred + (1 - band[..., None]) * pts).astype(np.float32)


def _frame_error(texture: np.ndarray, model: ErrorModel, rng: np.random.Generator,
                 world: np.ndarray | None) -> np.ndarray:
    """The part of an image's log-depth error every pair shares: smooth distortion (half of it a function of the
    surface, so neighbouring views of a surface share it), textureless guesses, blobs."""
    shape = texture.shape
    smooth = _field(rng, shape)
    if world is not None:
        smooth = np.sqrt(model.lf_world_share) * world + np.sqrt(1 - model.lf_world_share) * smooth
    smooth = np.sqrt(model.lf_frame_share) * smooth
    extra = model.textureless_gain * (1.0 - texture) * _field(rng, shape, (6, 8))
    err = model.lf_sigma * (smooth + extra)
    if model.gross_fraction > 0:
        blobs = _field(rng, shape, (6, 8)) > float(norm.ppf(1.0 - model.gross_fraction))
        err = err + np.where(blobs, (1.0 if rng.random() < 0.5 else -1.0) * model.gross_log_error, 0.0)
    return err.astype(np.float32)


def _view_points(truth: FrameTruth, model: ErrorModel, rng: np.random.Generator) -> np.ndarray:
    """A view's own-frame pointmap as the network regresses it: bled points scaled along their rays by the
    image's own log-depth error, a per-pair smooth distortion and depth-growing noise."""
    shape = truth.valid_HW.shape
    err = truth.frame_error_HW + (model.lf_sigma * np.sqrt(1 - model.lf_frame_share)) * _field(rng, shape)
    err += _noise(rng, shape) * truth.noise_sigma_HW
    return truth.bled_HW3 * np.exp(err)[..., None]


def _noise(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Unit Gaussian noise correlated over 2x2 pixels (the network regresses patches, not independent pixels)."""
    coarse = rng.standard_normal(((shape[0] + 1) // 2, (shape[1] + 1) // 2), dtype=np.float32)
    return np.repeat(np.repeat(coarse, 2, axis=0), 2, axis=1)[:shape[0], :shape[1]]


def _confidence(truth: FrameTruth, rng: np.random.Generator, offset_HW: np.ndarray | float) -> np.ndarray:
    """DUSt3R-style confidence 1 + exp(x): high on textured, near, smooth surfaces; noisy like the real head."""
    x = truth.conf_logit_HW + _noise(rng, truth.valid_HW.shape) * np.float32(0.35)
    return (1.0 + np.exp(x + offset_HW)).astype(np.float32)


def _random_axis_perpendicular(v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    a = rng.standard_normal(3)
    a -= a.dot(v) * v / max(v.dot(v), 1e-12)
    return a / max(np.linalg.norm(a), 1e-12)


def relative_pose_error(i_T_j: np.ndarray, model: ErrorModel, rng: np.random.Generator, wrong: bool,
                        scene_depth: float) -> np.ndarray:
    """The relative pose i_T_j the network implies: small errors, a heavy translation tail, or a wrong pair."""
    R, t = i_T_j[:3, :3], i_T_j[:3, 3]
    if wrong:
        axis = rng.standard_normal(3)
        dR = Rotation.from_rotvec(axis / np.linalg.norm(axis) * np.radians(rng.uniform(20, 60))).as_matrix()
        dt = rng.normal(0.0, 0.3 * scene_depth, 3)
        out = np.eye(4)
        out[:3, :3], out[:3, 3] = R @ dR, t + dt
        return out
    dR = Rotation.from_rotvec(rng.normal(0.0, np.radians(model.rot_sigma_deg), 3)).as_matrix()
    tail = rng.random() < model.trans_tail_rate
    angle = rng.uniform(5.0, 60.0) if tail else model.trans_dir_sigma_deg * np.sqrt(-2 * np.log(1 - rng.random()))
    n = np.linalg.norm(t)
    t_new = t
    if n > 1e-9:
        axis = _random_axis_perpendicular(t / n, rng)
        t_new = Rotation.from_rotvec(axis * np.radians(angle)).apply(t) * np.exp(rng.normal(0, model.trans_mag_sigma))
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = R @ dR, t_new  # rotation error about camera j's centre
    return out


class FrameInput(NamedTuple):
    """What the simulator needs of a frame: exact depth (colour grid), the image, true pose, K on the net grid."""

    depth_color: np.ndarray
    rgb: np.ndarray
    world_T_cam: np.ndarray
    K_net: np.ndarray


class SimulatedDust3r:
    """Directed pair predictions at network resolution from per-frame truth (cached, LRU)."""

    def __init__(self, load_frame: Callable[[int], FrameInput], geom: CropGeometry, model: ErrorModel,
                 seed: int = 0, capacity: int = 48) -> None:
        self.load_frame = load_frame
        self.geom = geom
        self.model = model
        self.seed = seed
        self.world_field = WorldField.make(np.random.default_rng((seed, 5)), model.lf_world_wavelength_m)
        self.capacity = capacity
        self._cache: OrderedDict[int, FrameTruth] = OrderedDict()

    def truth(self, k: int) -> FrameTruth:
        """Network-grid truth of frame k."""
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        f = self.load_frame(k)
        t = frame_truth(f.depth_color, f.rgb, f.world_T_cam, f.K_net, self.geom, self.model,
                        np.random.default_rng((self.seed, 3, k)), self.world_field)
        self._cache[k] = t
        if len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return t

    def is_wrong_pair(self, i: int, j: int) -> bool:
        """Whether the unordered pair is one the network gets wrong (same answer in both orders)."""
        a, b = min(i, j), max(i, j)
        return bool(np.random.default_rng((self.seed, 1, a, b)).random() < self.model.wrong_pair_rate)

    def predict(self, i: int, j: int) -> PairPrediction:
        """DUSt3R's output for view1 = i, view2 = j: both pointmaps in camera i, confidences > 1."""
        ti, tj = self.truth(i), self.truth(j)
        rng = np.random.default_rng((self.seed, 2, i, j))
        pts_i = _view_points(ti, self.model, rng)
        pts_j_own = _view_points(tj, self.model, rng)
        i_T_j = invert_pose(ti.world_T_cam) @ tj.world_T_cam
        a, b = min(i, j), max(i, j)
        wrong_rng = np.random.default_rng((self.seed, 4, a, b))
        if self.is_wrong_pair(i, j):
            corrupt = relative_pose_error(np.eye(4), self.model, wrong_rng, True, ti.median_depth)
            i_T_j = i_T_j @ corrupt if i < j else invert_pose(corrupt) @ i_T_j
        else:
            i_T_j = relative_pose_error(i_T_j, self.model, rng, False, ti.median_depth)
        pts_j = pts_j_own @ i_T_j[:3, :3].T.astype(np.float32) + i_T_j[:3, 3].astype(np.float32)
        lo, hi = np.log(self.model.scale_range)
        scale = np.float32(np.exp(rng.uniform(lo, hi)))
        conf_i = _confidence(ti, rng, 0.0)
        conf_j = _confidence(tj, rng, np.where(_seen_from(tj, ti, i_T_j), np.float32(-0.5), np.float32(-1.5)))
        return PairPrediction(i, j, pts_i * scale, conf_i, pts_j * scale, conf_j)


def _seen_from(tj: FrameTruth, ti: FrameTruth, i_T_j: np.ndarray, stride: int = 4) -> np.ndarray:
    """Pixels of view j whose true point projects inside view i (view 2 is less certain elsewhere).

    Evaluated on every `stride`-th pixel and spread back (the overlap border is smooth)."""
    h, w = tj.valid_HW.shape
    p = tj.points_HW3[stride // 2::stride, stride // 2::stride].astype(np.float64) @ i_T_j[:3, :3].T + i_T_j[:3, 3]
    z = p[..., 2]
    K = ti.K_net
    with np.errstate(divide="ignore", invalid="ignore"):
        u = K[0, 0] * p[..., 0] / z + K[0, 2]
        v = K[1, 1] * p[..., 1] / z + K[1, 2]
    seen = (z > 0) & (u >= -0.5) & (u < w - 0.5) & (v >= -0.5) & (v < h - 0.5)
    return cv2.resize(seen.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
