"""The relocalizer: one RGB image in, a camera pose with uncertainty (or a failure reason) out.

The one engine both the ROS node and bag replay call. Stages: predict (the scene model's forward pass),
select (confident 2D-3D correspondences, undistorted), pnp (PnP-RANSAC), refine (non-linear refinement on the
inliers, inlier re-selection, covariance). It never raises on a bad frame: every problem becomes a
`PoseEstimate` with a `FailureReason`, so a robot keeps running on the next image.
"""
from __future__ import annotations

import dataclasses
import time
import typing

import cv2
import numpy as np

from kd3d_core.geometry import invert_pose, is_valid_pose, make_pose
from kd3d_core.localization.checks import check_camera, check_content, check_inliers, image_stats, inlier_stats
from kd3d_core.localization.config import RelocalizerConfig
from kd3d_core.localization.correspondences import (
    Correspondences,
    TieBreaker,
    select_correspondences,
    undistort_pixels,
    validate_prediction,
)
from kd3d_core.localization.guided import CONVERGED_M, distinctive_cells, guided_correspondences, guided_ratio_bar
from kd3d_core.localization.pnp import CameraPose, pose_covariance, ransac_pnp, refine_pose, reprojection_errors
from kd3d_core.localization.result import FailureReason, ImageStats, PoseEstimate, StageTimings
from kd3d_core.localization.roll import (
    camera_roll_deg,
    roll_homography,
    unroll_prediction,
    warped_view,
    zoom_homography,
)
from kd3d_core.prediction import ScenePrediction, ScenePredictor


def check_image(rgb_HW3: object) -> str | None:
    """A one-line problem with an input image, or None when it is an RGB uint8 (h, w, 3) array."""
    if not isinstance(rgb_HW3, np.ndarray):
        return f"image is a {type(rgb_HW3).__name__}, not a numpy array"
    if rgb_HW3.dtype != np.uint8:
        return f"image dtype is {rgb_HW3.dtype}, expected uint8"
    if rgb_HW3.ndim != 3 or rgb_HW3.shape[2] != 3:
        return f"image shape is {rgb_HW3.shape}, expected (h, w, 3)"
    if rgb_HW3.shape[0] < 8 or rgb_HW3.shape[1] < 8:
        return f"image of {rgb_HW3.shape[1]}x{rgb_HW3.shape[0]} pixels is too small"
    return None


def check_intrinsics(K: object, dist_coeffs: object) -> str | None:
    """A one-line problem with K / distortion, or None when they are usable."""
    if not isinstance(K, np.ndarray) or K.shape != (3, 3) or not np.all(np.isfinite(K)):
        return f"K must be a finite 3x3 array, got {getattr(K, 'shape', type(K).__name__)}"
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        return f"K has non-positive focal lengths ({K[0, 0]}, {K[1, 1]})"
    if dist_coeffs is not None:
        d = np.asarray(dist_coeffs)
        if d.ndim > 2 or d.size not in (4, 5, 8, 12, 14) or not np.all(np.isfinite(d)):
            return f"distortion coefficients must be 4, 5, 8, 12 or 14 finite numbers, got shape {d.shape}"
    return None


# Failures a rolled camera (or a view unlike the mapping views) causes (too few or inconsistent matches), as opposed
# to refusals of the image itself.
_RETRY_LOST = frozenset({
    FailureReason.TOO_FEW_CORRESPONDENCES, FailureReason.PNP_FAILED, FailureReason.TOO_FEW_INLIERS,
    FailureReason.LOW_INLIER_RATIO, FailureReason.POOR_INLIER_COVERAGE, FailureReason.LOW_CONFIDENCE,
    FailureReason.UNCERTAIN_POSE, FailureReason.DEGENERATE_POSE, FailureReason.UNCONFIRMED_POSE})
# Failures without a pose hypothesis that still get the guided chance (its distinctive start): PnP found no pose,
# or the pose it found was not confirmed (the guided search from it already failed).
_GUIDED_WITHOUT_HYPOTHESIS = frozenset({FailureReason.PNP_FAILED, FailureReason.UNCONFIRMED_POSE})


class _GuidedSetup(typing.NamedTuple):
    """What a guided search reads: each cell's memory candidates (world points, cosine similarities), the cells'
    undistorted pixels, K, the config with the guided bars, the number of cells (the inlier ratio's denominator) and
    the core refinement radius."""

    points_Nk3: np.ndarray
    sims_Nk: np.ndarray
    uv_N2: np.ndarray
    K: np.ndarray
    config: RelocalizerConfig
    cells: int
    core_px: float


class Relocalizer:
    """Localizes single images against one scene model.

    Args:
        predictor: the scene model (a loaded .kd3d model, or an oracle in tests).
        config: how correspondences are chosen and the pose is solved.
    """

    def __init__(self, predictor: ScenePredictor, config: RelocalizerConfig | None = None) -> None:
        self.predictor = predictor
        self.config = config or RelocalizerConfig()
        self._tie_breaker = TieBreaker()

    @property
    def world_frame(self) -> str:
        """Frame id of the poses this relocalizer returns."""
        return str(getattr(self.predictor, "world_frame", "map"))

    def predict(self, rgb_HW3: np.ndarray) -> ScenePrediction:
        """The raw dense prediction (for point clouds and diagnostics); may raise on a bad image."""
        return self.predictor.predict(rgb_HW3)

    def localize(self, rgb_HW3: np.ndarray, K: np.ndarray, dist_coeffs: np.ndarray | None = None,
                 stamp_ns: int | None = None) -> PoseEstimate:
        """Estimate world_T_cam of one RGB uint8 image with intrinsics K (and optional distortion)."""
        return self.localize_with_prediction(rgb_HW3, K, dist_coeffs, stamp_ns)[0]

    def localize_with_prediction(self, rgb_HW3: np.ndarray, K: np.ndarray, dist_coeffs: np.ndarray | None = None,
                                 stamp_ns: int | None = None,
                                 roll_hint_deg: float | None = None) -> tuple[PoseEstimate, ScenePrediction | None]:
        """Like `localize`, also returning the prediction so callers can build a point cloud without a rerun.

        roll_hint_deg: the camera's roll in the previous frame of a stream (RollTracker), if known. When it is at
        least config.roll_upright_deg, the image is first looked at turned upright by it: a camera that stays
        rolled then costs one network pass a frame instead of two (upright, then turned). If that look does not
        localize, or shows the roll has changed by roll_upright_deg or more, the frame takes the usual path and
        the timings count both.
        """
        frame = self.world_frame
        problem, stats = self._check_input(rgb_HW3, K, dist_coeffs)
        if problem:
            return PoseEstimate.failed(problem[0], problem[1], stamp_ns=stamp_ns, world_frame=frame,
                                       image=stats), None
        hint_ms = 0.0
        if roll_hint_deg is not None and self.mapping_up is not None and \
                0 < self.config.roll_upright_deg <= abs(roll_hint_deg):
            look, hint_ms = self._localize_view(rgb_HW3, K, dist_coeffs, stamp_ns, -roll_hint_deg)
            if look is not None and look[0].success:
                roll = camera_roll_deg(look[0].world_T_cam, self.mapping_up)
                if roll is not None and abs(roll - roll_hint_deg) < self.config.roll_upright_deg:
                    return dataclasses.replace(look[0], image=stats, upright_turn_deg=-roll_hint_deg), look[1]
        estimate, prediction = self._localize_upright_first(rgb_HW3, K, dist_coeffs, stamp_ns)
        if hint_ms:
            t = estimate.timings
            estimate = dataclasses.replace(estimate, timings=dataclasses.replace(t, predict_ms=t.predict_ms + hint_ms))
        return dataclasses.replace(estimate, image=stats), prediction

    @property
    def mapping_up(self) -> np.ndarray | None:
        """The mapping cameras' mean image-up direction in the world (the model's; None when unknown)."""
        return getattr(self.predictor, "mapping_up", None)

    def _localize_upright_first(self, rgb_HW3: np.ndarray, K: np.ndarray, dist_coeffs: np.ndarray | None,
                                stamp_ns: int | None) -> tuple[PoseEstimate, ScenePrediction | None]:
        """The image as it is, then the second chances: guided, turned back or zoomed out when lost, turned upright
        when localized rolled."""
        t0 = time.perf_counter()
        try:
            prediction = self.predictor.predict(rgb_HW3)
        except Exception as err:  # noqa: BLE001 - a bad frame must never take the node down
            timings = StageTimings(predict_ms=_ms(t0))
            return PoseEstimate.failed(FailureReason.PREDICTION_FAILED, f"{type(err).__name__}: {err}", timings,
                                       stamp_ns=stamp_ns, world_frame=self.world_frame), None
        predict_ms = _ms(t0)
        size_wh = (rgb_HW3.shape[1], rgb_HW3.shape[0])
        estimate, hypothesis = self._localize_prediction(prediction, K, dist_coeffs, stamp_ns, predict_ms, size_wh,
                                                         confirm=True)
        if self.config.guided_candidates and (hypothesis is not None or estimate.failure in _GUIDED_WITHOUT_HYPOTHESIS):
            try:
                estimate = self._guided_retry(prediction, K, dist_coeffs, stamp_ns, estimate, hypothesis, size_wh)
            except Exception:  # noqa: BLE001 - a second chance that cannot run leaves the first answer
                pass
        if not estimate.success and estimate.failure in _RETRY_LOST:
            estimate, prediction = self._retry_lost(rgb_HW3, K, dist_coeffs, stamp_ns, estimate, prediction)
        if estimate.success and self.config.roll_upright_deg > 0:
            estimate, prediction = self._look_upright(rgb_HW3, K, dist_coeffs, stamp_ns, estimate, prediction)
        return estimate, prediction

    def _localize_view(self, rgb_HW3: np.ndarray, K: np.ndarray, dist_coeffs: np.ndarray | None,
                       stamp_ns: int | None, angle_deg: float = 0.0, zoom: float = 1.0
                       ) -> tuple[tuple[PoseEstimate, ScenePrediction] | None, float]:
        """Localize the image turned by angle_deg about the optical axis and zoomed by `zoom` about the principal
        point (kd3d_core.localization.roll: the cells' pixels are mapped back, so the pose is the real camera's).
        Returns (the estimate, the mapped-back prediction), or None when the look could not run, and the
        milliseconds it all took."""
        t0 = time.perf_counter()
        size_wh = (rgb_HW3.shape[1], rgb_HW3.shape[0])
        try:
            K64 = np.asarray(K, np.float64)
            H = zoom_homography(K64, zoom) @ roll_homography(K64, angle_deg)
            looked = unroll_prediction(self.predictor.predict(warped_view(rgb_HW3, H)), H, size_wh)
        except Exception:  # noqa: BLE001 - a look that cannot run leaves the caller's answer
            return None, _ms(t0)
        estimate = self._localize_prediction(looked, K, dist_coeffs, stamp_ns, _ms(t0), size_wh, confirm=True)[0]
        return (estimate, looked), estimate.timings.total_ms

    def _look_upright(self, rgb_HW3: np.ndarray, K: np.ndarray, dist_coeffs: np.ndarray | None,
                      stamp_ns: int | None, found: PoseEstimate,
                      prediction: ScenePrediction) -> tuple[PoseEstimate, ScenePrediction]:
        """Once a pose shows the camera rolled by at least config.roll_upright_deg from the mapping cameras'
        up, localize the image turned upright by exactly that roll; keep whichever pose has more inliers.

        The timings of the returned estimate count both looks.
        """
        up = self.mapping_up
        roll = None if up is None else camera_roll_deg(found.world_T_cam, up)
        # the view that gave `found` was already turned by roll_retry_deg: its own roll is roll + that turn
        if roll is None or abs(roll + found.roll_retry_deg) < self.config.roll_upright_deg:
            return found, prediction
        look, spent = self._localize_view(rgb_HW3, K, dist_coeffs, stamp_ns, -roll)
        if look is not None and look[0].success and look[0].inliers > found.inliers:
            estimate, upright = look
            t = estimate.timings
            return dataclasses.replace(
                estimate, timings=dataclasses.replace(t, predict_ms=t.predict_ms + found.timings.total_ms),
                roll_retry_deg=found.roll_retry_deg, zoom_retry=found.zoom_retry, guided=found.guided,
                upright_turn_deg=-roll), upright
        t = found.timings
        return dataclasses.replace(found, timings=dataclasses.replace(t, predict_ms=t.predict_ms + spent)), prediction

    def _retry_lost(self, rgb_HW3: np.ndarray, K: np.ndarray, dist_coeffs: np.ndarray | None,
                    stamp_ns: int | None, lost: PoseEstimate,
                    prediction: ScenePrediction) -> tuple[PoseEstimate, ScenePrediction]:
        """Try the image turned back about the optical axis (config.roll_retry_deg), then zoomed out
        (config.zoom_retry), after an upright failure.

        Returns the first estimate that localizes, or the upright failure; the timings count every attempt.
        """
        spent = lost.timings.total_ms
        looks = [(angle, 1.0) for angle in self.config.roll_retry_deg] + [(0.0, z) for z in self.config.zoom_retry]
        for angle, zoom in looks:
            look, ms = self._localize_view(rgb_HW3, K, dist_coeffs, stamp_ns, angle, zoom)
            spent += ms
            if look is not None and look[0].success:
                estimate, seen = look
                t = estimate.timings
                extra = spent - t.total_ms
                return dataclasses.replace(estimate, timings=dataclasses.replace(t, predict_ms=t.predict_ms + extra),
                                           roll_retry_deg=angle, zoom_retry=zoom), seen
        t = lost.timings
        return dataclasses.replace(lost, timings=dataclasses.replace(
            t, predict_ms=t.predict_ms + spent - t.total_ms)), prediction

    def _check_input(self, rgb_HW3: object, K: object,
                     dist_coeffs: object) -> tuple[tuple[FailureReason, str] | None, ImageStats | None]:
        """The first problem with the image, the camera or what the image shows; and the image statistics."""
        problem = check_image(rgb_HW3)
        if problem:
            return (FailureReason.BAD_IMAGE, problem), None
        problem = check_intrinsics(K, dist_coeffs)
        if problem:
            return (FailureReason.BAD_INTRINSICS, problem), None
        rgb = typing.cast(np.ndarray, rgb_HW3)
        found = check_camera((rgb.shape[1], rgb.shape[0]), np.asarray(K, np.float64), self.config,
                             _model_input_size(self.predictor))
        if found:
            return found, None
        stats = image_stats(rgb, self.config.texture_gradient)
        return check_content(stats, self.config), stats

    def localize_prediction(self, prediction: ScenePrediction, K: np.ndarray, dist_coeffs: np.ndarray | None = None,
                            stamp_ns: int | None = None, predict_ms: float = 0.0,
                            size_wh: tuple[int, int] | None = None) -> PoseEstimate:
        """Solve the pose from an existing prediction (the select, pnp and refine stages).

        `size_wh` is the input image's size (for the inliers' coverage of the image); None takes the extent of
        the prediction's pixel grid. No guided chance and no confirmation of weak poses (confirm_below_ratio,
        confirm_above_rmse): both read the memory's record of the last `predict`, which need not be this
        prediction's.
        """
        return self._localize_prediction(prediction, K, dist_coeffs, stamp_ns, predict_ms, size_wh)[0]

    def _localize_prediction(self, prediction: ScenePrediction, K: np.ndarray, dist_coeffs: np.ndarray | None,
                             stamp_ns: int | None, predict_ms: float,
                             size_wh: tuple[int, int] | None,
                             confirm: bool = False) -> tuple[PoseEstimate, np.ndarray | None]:
        """localize_prediction, plus the pose hypothesis of a failure that PnP got a pose for (else None).

        confirm: the prediction is the memory's last query, so a weak pose (under config.confirm_below_ratio
        inliers, or above config.confirm_above_rmse) is checked by the guided search from it (_confirm)."""
        frame, cfg = self.world_frame, self.config
        t0 = time.perf_counter()
        problem = validate_prediction(prediction)
        if problem:
            return PoseEstimate.failed(FailureReason.BAD_PREDICTION, problem, StageTimings(predict_ms, _ms(t0)),
                                       stamp_ns=stamp_ns, world_frame=frame), None
        K = np.asarray(K, np.float64)
        corr = select_correspondences(prediction, cfg.min_confidence, cfg.max_correspondences, self._tie_breaker)
        uv = undistort_pixels(corr.uv_N2, K, dist_coeffs)
        points, uv = _same_float_dtype(corr.points_N3, uv)
        corr = Correspondences(points, uv, corr.conf_N)
        n = len(points)
        select_ms = _ms(t0)
        if n < max(cfg.min_inliers, 4):
            return PoseEstimate.failed(
                FailureReason.TOO_FEW_CORRESPONDENCES, f"{n} usable correspondences, need {cfg.min_inliers}",
                StageTimings(predict_ms, select_ms), correspondences=n, stamp_ns=stamp_ns, world_frame=frame), None
        if size_wh is None:
            size_wh = _grid_extent(prediction)
        estimate, hypothesis = self._solve(corr, K, StageTimings(predict_ms, select_ms), stamp_ns, size_wh,
                                           core_px=self._core_px(self.config, prediction, size_wh))
        weak = self._weak_because(estimate) if confirm and estimate.success else None
        if weak is not None:
            estimate = self._confirm(prediction, K, dist_coeffs, estimate, size_wh, weak)
        return estimate, hypothesis

    def _weak_because(self, estimate: PoseEstimate) -> str | None:
        """Why a pose must be confirmed by the guided search (config.confirm_below_ratio, confirm_above_rmse), or
        None when it stands as it is."""
        cfg, stats = self.config, estimate.inlier_stats
        if stats is not None and stats.ratio < cfg.confirm_below_ratio:
            return f"inlier ratio {stats.ratio:.3f} is below {cfg.confirm_below_ratio}"
        bar = cfg.confirm_above_rmse * cfg.reprojection_threshold_px
        if estimate.reprojection_rmse_px > bar:
            return f"inliers' RMS reprojection error {estimate.reprojection_rmse_px:.2f} px is above {bar:.2f} px"
        return None

    @staticmethod
    def _core_px(cfg: RelocalizerConfig, prediction: ScenePrediction, size_wh: tuple[int, int]) -> float:
        """Radius of the core refinement: refine_core_fraction of the threshold, at least refine_core_min_cells
        output cells (image pixels per cell of this prediction); 0 when off."""
        if cfg.refine_core_fraction <= 0:
            return 0.0
        cell_px = size_wh[0] / max(prediction.conf_hw.shape[1], 1)
        return max(cfg.refine_core_fraction * cfg.reprojection_threshold_px, cfg.refine_core_min_cells * cell_px)

    def _solve(self, corr: Correspondences, K: np.ndarray, timings: StageTimings, stamp_ns: int | None,
               size_wh: tuple[int, int], cfg: RelocalizerConfig | None = None,
               ratio_of: int | None = None, core_px: float = 0.0) -> tuple[PoseEstimate, np.ndarray | None]:
        """PnP-RANSAC, refinement, covariance and the inlier checks; also the pose hypothesis when only the checks
        failed. `ratio_of`: what the inlier ratio is taken of (default: the correspondences); `cfg` overrides
        the relocalizer's config (the guided second chance's bar)."""
        cfg, frame = cfg or self.config, self.world_frame
        n = len(corr.points_N3) if ratio_of is None else ratio_of
        t0 = time.perf_counter()
        found = ransac_pnp(corr.points_N3, corr.uv_N2, K, cfg)
        timings = StageTimings(timings.predict_ms, timings.select_ms, _ms(t0))
        if found is None:
            return PoseEstimate.failed(FailureReason.PNP_FAILED,
                                       f"PnP-RANSAC found no pose from {len(corr.points_N3)} points",
                                       timings, correspondences=n, stamp_ns=stamp_ns, world_frame=frame), None
        t0 = time.perf_counter()
        pose, inliers = refine_pose(corr.points_N3, corr.uv_N2, K, found[0], found[1], cfg, core_px)
        errors = reprojection_errors(corr.points_N3[inliers], corr.uv_N2[inliers], K, pose)
        world_T_cam = _world_T_cam(pose)
        covariance = pose_covariance(corr.points_N3[inliers], errors, K, world_T_cam, cfg.covariance_inflation)
        stats = inlier_stats(corr.uv_N2[inliers], corr.conf_N[inliers], n, size_wh, covariance)
        timings = StageTimings(timings.predict_ms, timings.select_ms, timings.pnp_ms, _ms(t0))
        failure = check_inliers(len(inliers), n, stats, cfg)
        hypothesis = world_T_cam if failure is not None and is_valid_pose(world_T_cam) else None
        if failure is None and (not is_valid_pose(world_T_cam) or covariance is None
                                or not np.all(np.isfinite(errors))):
            failure = FailureReason.DEGENERATE_POSE, "pose or its covariance is not finite / well conditioned"
        if failure is not None:
            return PoseEstimate.failed(failure[0], failure[1], timings, correspondences=n, inliers=len(inliers),
                                       stamp_ns=stamp_ns, world_frame=frame, inlier_stats=stats), hypothesis
        rmse = float(np.sqrt(np.mean(np.square(errors))))
        return PoseEstimate(success=True, world_T_cam=world_T_cam, covariance_6x6=covariance, inliers=len(inliers),
                            correspondences=n, reprojection_rmse_px=rmse, timings=timings, stamp_ns=stamp_ns,
                            world_frame=frame, inlier_stats=stats), None

    def _guided_setup(self, prediction: ScenePrediction, K: np.ndarray, dist_coeffs: np.ndarray | None,
                      size_wh: tuple[int, int]) -> _GuidedSetup | None:
        """What a guided search needs (_GuidedSetup); None when the model has no memory, it fails, guided_candidates
        is 0, or the image is so small that chance alone would explain any guided pose."""
        cfg = self.config
        bar = guided_ratio_bar(cfg.guided_candidates, cfg.reprojection_threshold_px, size_wh,
                               max(cfg.min_inlier_ratio, cfg.guided_min_inlier_ratio))
        if bar >= 1.0 or not cfg.guided_candidates:
            return None
        try:
            got = getattr(self.predictor, "memory_candidates", lambda k: None)(cfg.guided_candidates)
        except Exception:  # noqa: BLE001 - a second chance that cannot run leaves the first answer
            got = None
        cells = prediction.conf_hw.size
        if got is None or got[0].shape[0] != cells:
            return None
        K = np.asarray(K, np.float64)
        uv = undistort_pixels(prediction.uv_hw2.reshape(-1, 2), K, dist_coeffs)
        guided_cfg = dataclasses.replace(cfg, min_inlier_ratio=bar, min_inlier_coverage=max(
            cfg.min_inlier_coverage, cfg.guided_min_inlier_coverage))
        return _GuidedSetup(got[0], got[1], uv, K, guided_cfg, cells, self._core_px(cfg, prediction, size_wh))

    def _confirm(self, prediction: ScenePrediction, K: np.ndarray, dist_coeffs: np.ndarray | None,
                 estimate: PoseEstimate, size_wh: tuple[int, int], weak: str) -> PoseEstimate:
        """A weak pose (`weak` says why: _weak_because) stands only if the guided search from it (the guided bars)
        localizes within config.confirm_agree_m of it; else an UNCONFIRMED_POSE failure.
        Without a memory to search (a regression head, guided_candidates 0, a tiny image) the pose stands. The
        search's time counts in the refine stage."""
        t0 = time.perf_counter()
        try:
            setup = self._guided_setup(prediction, K, dist_coeffs, size_wh)
            if setup is None:
                return estimate
            found = self._guided_from(estimate.world_T_cam, setup, size_wh, estimate.stamp_ns,
                                      estimate.timings.predict_ms)
        except Exception:  # noqa: BLE001 - a check that cannot run leaves the pose as it was judged
            return estimate
        t = estimate.timings
        timings = dataclasses.replace(t, refine_ms=t.refine_ms + _ms(t0))
        moved = None if found is None else float(np.linalg.norm(found.world_T_cam[:3, 3] - estimate.world_T_cam[:3, 3]))
        if moved is not None and moved < self.config.confirm_agree_m:
            return dataclasses.replace(estimate, timings=timings)
        why = "found no pose" if moved is None else f"moved it {moved:.3f} m"
        return PoseEstimate.failed(
            FailureReason.UNCONFIRMED_POSE, f"{weak} and the guided search from the pose {why}", timings,
            correspondences=estimate.correspondences, inliers=estimate.inliers, stamp_ns=estimate.stamp_ns,
            world_frame=estimate.world_frame, inlier_stats=estimate.inlier_stats)

    def _guided_retry(self, prediction: ScenePrediction, K: np.ndarray, dist_coeffs: np.ndarray | None,
                      stamp_ns: int | None, lost: PoseEstimate, hypothesis: np.ndarray | None,
                      size_wh: tuple[int, int]) -> PoseEstimate:
        """The guided second chance (kd3d_core.localization.guided) of a failed frame.

        It starts from the failed hypothesis (None: PnP found none); when that does not localize, from PnP-RANSAC
        on the most distinctive config.guided_distinct_fraction of the cells (guided.distinctive_cells). Returns
        the first guided estimate that passes the checks with the guided inlier-ratio bar (of the cells;
        guided_ratio_bar), the guided coverage bar (guided_min_inlier_coverage) and its inliers' RMS reprojection
        error within guided_max_rmse of the inlier threshold, else the original failure. Its searches
        and earlier rounds count in the select time.
        """
        t0 = time.perf_counter()
        setup = self._guided_setup(prediction, K, dist_coeffs, size_wh)
        if setup is None:
            return lost
        cfg = self.config
        starts = [hypothesis] if hypothesis is not None else []
        if cfg.guided_distinct_fraction > 0:
            starts.append(None)  # computed only if needed: the distinctive cells' hypothesis
        for start in starts:
            if start is None:
                start = _distinctive_hypothesis(setup.points_Nk3, setup.sims_Nk, setup.uv_N2, setup.K, cfg)
                if start is None:
                    break
            estimate = self._guided_from(start, setup, size_wh, stamp_ns, lost.timings.predict_ms)
            if estimate is not None:
                spent = lost.timings.select_ms + lost.timings.pnp_ms + lost.timings.refine_ms + _ms(t0)
                t = estimate.timings
                return dataclasses.replace(estimate, guided=True, timings=dataclasses.replace(
                    t, select_ms=spent - t.pnp_ms - t.refine_ms))
        return _with_extra_time(lost, t0)

    def _guided_from(self, world_T_cam: np.ndarray, setup: _GuidedSetup, size_wh: tuple[int, int],
                     stamp_ns: int | None, predict_ms: float) -> PoseEstimate | None:
        """Guided rounds from one hypothesis and the judged last solve: the estimate when it passes, else None."""
        # The rounds refine without the core (core_px 0): guided correspondences are picked for agreeing with the
        # hypothesis, so a core around it would confirm it. The judged last solve has the core, with its floor of
        # half a cell: a core of 1.5 px around guided matches on 8-pixel cells moved a guided pose of a rolled view
        # from 7.5 to 11.5 cm off (test_guided's small room); with the floor none moved past 10 cm there.
        cfg = self.config
        points_Nk3, sims_Nk, uv, K = setup.points_Nk3, setup.sims_Nk, setup.uv_N2, setup.K
        gate_px = 2.0 * cfg.reprojection_threshold_px
        for _ in range(cfg.guided_rounds - 1):  # the last round is the judged one (_solve below)
            corr = guided_correspondences(points_Nk3, sims_Nk, uv, K, world_T_cam, gate_px)
            found = ransac_pnp(corr.points_N3, corr.uv_N2, K, cfg) if len(corr.points_N3) >= cfg.min_inliers else None
            if found is None:
                return None
            pose, _ = refine_pose(corr.points_N3, corr.uv_N2, K, found[0], found[1], cfg, core_px=0.0)
            moved = world_T_cam
            world_T_cam = _world_T_cam(pose)
            if not is_valid_pose(world_T_cam):
                return None
            if np.linalg.norm(world_T_cam[:3, 3] - moved[:3, 3]) < CONVERGED_M:
                break
        corr = guided_correspondences(points_Nk3, sims_Nk, uv, K, world_T_cam, gate_px)
        if len(corr.points_N3) < max(cfg.min_inliers, 4):
            return None
        estimate, _ = self._solve(corr, K, StageTimings(predict_ms), stamp_ns, size_wh, setup.config,
                                  ratio_of=setup.cells, core_px=setup.core_px)
        if not estimate.success or estimate.reprojection_rmse_px > cfg.guided_max_rmse * cfg.reprojection_threshold_px:
            return None
        return estimate


def _distinctive_hypothesis(points_Nk3: np.ndarray, sims_Nk: np.ndarray, uv_N2: np.ndarray, K: np.ndarray,
                            cfg: RelocalizerConfig) -> np.ndarray | None:
    """world_T_cam from PnP-RANSAC on the most distinctive cells' best matches (None when it finds none)."""
    count = int(round(cfg.guided_distinct_fraction * len(sims_Nk)))
    chosen = distinctive_cells(points_Nk3, sims_Nk, cfg.guided_distinct_radius_m, count)
    points, uv = _same_float_dtype(points_Nk3[chosen, 0], uv_N2[chosen])
    finite = np.isfinite(points).all(axis=1) & np.isfinite(uv).all(axis=1)
    if finite.sum() < max(cfg.min_inliers, 4):
        return None
    found = ransac_pnp(points[finite], uv[finite], K, cfg)
    if found is None:
        return None
    world_T_cam = _world_T_cam(found[0])
    return world_T_cam if is_valid_pose(world_T_cam) else None


def _world_T_cam(pose: CameraPose) -> np.ndarray:
    """The camera's pose in the world from OpenCV's cam_T_world rvec / tvec."""
    R, _ = cv2.Rodrigues(pose.rvec)
    return invert_pose(make_pose(R, pose.tvec))


def _with_extra_time(lost: PoseEstimate, t0: float) -> PoseEstimate:
    """The original failure, with the time a second chance spent added to its select stage."""
    return dataclasses.replace(lost, timings=dataclasses.replace(lost.timings,
                                                                 select_ms=lost.timings.select_ms + _ms(t0)))


def _model_input_size(predictor: object) -> tuple[int, int] | None:
    """The network input size (w, h) of a loaded scene model; None for predictors without one (oracles)."""
    size = getattr(getattr(predictor, "meta", None), "input_size", None)
    if size is None or len(size) != 2 or min(size) <= 0:
        return None
    return int(size[0]), int(size[1])


def _grid_extent(prediction: ScenePrediction) -> tuple[int, int]:
    """Image size implied by a prediction's pixel grid (cells are centred, so the extent adds half a step)."""
    uv = prediction.uv_hw2.reshape(-1, 2)
    finite = uv[np.isfinite(uv).all(axis=1)]
    if not len(finite):
        return 1, 1
    hi = finite.max(axis=0) + finite.min(axis=0) + 1  # last centre + first centre offset + one pixel
    return max(1, int(round(float(hi[0])))), max(1, int(round(float(hi[1]))))


def _same_float_dtype(points_N3: np.ndarray, uv_N2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV wants both arrays float32 or both float64; convert only what differs."""
    dtype = np.float32 if points_N3.dtype == np.float32 and uv_N2.dtype == np.float32 else np.float64
    return points_N3.astype(dtype, copy=False), uv_N2.astype(dtype, copy=False)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0
