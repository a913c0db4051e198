"""What the relocalizer returns for one frame: a pose with its uncertainty, or the reason there is none."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np


class FailureReason(str, Enum):
    """Why a frame could not be localized (stable strings: diagnostics and logs show them)."""

    BAD_IMAGE = "bad_image"
    BAD_INTRINSICS = "bad_intrinsics"
    BAD_EXPOSURE = "bad_exposure"
    LOW_TEXTURE = "low_texture"
    PREDICTION_FAILED = "prediction_failed"
    BAD_PREDICTION = "bad_prediction"
    TOO_FEW_CORRESPONDENCES = "too_few_correspondences"
    PNP_FAILED = "pnp_failed"
    TOO_FEW_INLIERS = "too_few_inliers"
    LOW_INLIER_RATIO = "low_inlier_ratio"
    POOR_INLIER_COVERAGE = "poor_inlier_coverage"
    LOW_CONFIDENCE = "low_confidence"
    UNCERTAIN_POSE = "uncertain_pose"
    DEGENERATE_POSE = "degenerate_pose"
    UNCONFIRMED_POSE = "unconfirmed_pose"


# What can localize a frame the upright pass lost (PoseEstimate.recovered_by): the guided second chance, the image
# turned back about the optical axis, the image zoomed out. The node's diagnostics and `kd3d replay` count each.
RECOVERED_BY: tuple[str, ...] = ("guided", "roll_retry", "zoom_retry")


@dataclass(frozen=True)
class ImageStats:
    """What the image shows, on its grey levels (0-255) at <= 320 px width.

    Attributes:
        mean: mean grey level.
        std: standard deviation of the grey levels (global contrast).
        textured: fraction of pixels whose larger neighbour difference (x or y) is >= the texture gradient.
        dark: fraction of pixels at or below grey level 10.
        bright: fraction of pixels at or above grey level 245.
    """

    mean: float
    std: float
    textured: float
    dark: float
    bright: float


@dataclass(frozen=True)
class InlierStats:
    """How well the PnP inliers support the pose.

    Attributes:
        ratio: inliers / correspondences.
        coverage: fraction of the 8x6 image grid cells holding at least one inlier.
        confidence: median predicted confidence of the inliers.
        position_std_m: square root of the largest eigenvalue of the (inflated) position covariance.
    """

    ratio: float
    coverage: float
    confidence: float
    position_std_m: float


@dataclass(frozen=True)
class StageTimings:
    """Wall time per stage of one frame, in milliseconds (0 for stages that did not run)."""

    predict_ms: float = 0.0
    select_ms: float = 0.0
    pnp_ms: float = 0.0
    refine_ms: float = 0.0

    @property
    def total_ms(self) -> float:
        """Sum of all stages."""
        return self.predict_ms + self.select_ms + self.pnp_ms + self.refine_ms


@dataclass(frozen=True)
class PoseEstimate:
    """Result of localizing one frame.

    Attributes:
        success: True when `world_T_cam` is a pose that passed every sanity check.
        world_T_cam: 4x4 camera (optical frame) pose in the model's world frame; None on failure.
        covariance_6x6: covariance of the camera pose in the world frame, REP 103 order (x, y, z, rotation
            about the world x, y, z axes), metres^2 / rad^2; None on failure.
        inliers: number of RANSAC/refinement inliers.
        correspondences: number of 2D-3D correspondences given to RANSAC.
        reprojection_rmse_px: RMS reprojection error of the inliers after refinement (pixels).
        timings: per-stage wall times.
        failure: why it failed (None on success).
        detail: one human-readable line about the failure ("" on success).
        stamp_ns: the input image's stamp, passed through.
        world_frame: frame id of the world the pose is in.
        image: grey-level statistics of the input (None when the image was not usable or not measured).
        inlier_stats: how well the inliers support the pose (None when PnP did not get that far).
        roll_retry_deg: the angle the image was turned back by when the upright image was lost and a turned one
            localized (RelocalizerConfig.roll_retry_deg); 0 for the upright image.
        zoom_retry: the factor the image was zoomed out by when the upright and turned images were lost and the
            zoomed one localized (RelocalizerConfig.zoom_retry); 1 otherwise.
        guided: the pose came from the guided second chance (RelocalizerConfig.guided_candidates).
        upright_turn_deg: the angle the image was turned by to look at it upright once a pose showed the camera
            rolled (RelocalizerConfig.roll_upright_deg), when that look gave the pose; 0 otherwise. `guided`,
            `roll_retry_deg` and `zoom_retry` still say how the first pose was found.
    """

    success: bool
    world_T_cam: np.ndarray | None
    covariance_6x6: np.ndarray | None
    inliers: int
    correspondences: int
    reprojection_rmse_px: float
    timings: StageTimings
    failure: FailureReason | None = None
    detail: str = ""
    stamp_ns: int | None = None
    world_frame: str = "map"
    image: ImageStats | None = None
    inlier_stats: InlierStats | None = None
    roll_retry_deg: float = 0.0
    zoom_retry: float = 1.0
    guided: bool = False
    upright_turn_deg: float = 0.0

    @property
    def recovered_by(self) -> str:
        """What localized a frame the upright pass lost: one of RECOVERED_BY, or "" (diagnostics key)."""
        if self.guided:
            return "guided"
        return "roll_retry" if self.roll_retry_deg else "zoom_retry" if self.zoom_retry != 1.0 else ""

    @property
    def inlier_ratio(self) -> float:
        """Inliers over correspondences (0 when there were none)."""
        return self.inliers / self.correspondences if self.correspondences else 0.0

    @classmethod
    def failed(cls, reason: FailureReason, detail: str, timings: StageTimings | None = None, *,
               correspondences: int = 0, inliers: int = 0, stamp_ns: int | None = None,
               world_frame: str = "map", image: ImageStats | None = None,
               inlier_stats: InlierStats | None = None) -> PoseEstimate:
        """A failure result."""
        return cls(success=False, world_T_cam=None, covariance_6x6=None, inliers=inliers,
                   correspondences=correspondences, reprojection_rmse_px=float("nan"),
                   timings=timings or StageTimings(), failure=reason, detail=detail, stamp_ns=stamp_ns,
                   world_frame=world_frame, image=image, inlier_stats=inlier_stats)
