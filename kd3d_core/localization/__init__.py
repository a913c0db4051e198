"""Relocalization: one image -> scene coordinates -> PnP-RANSAC -> camera pose with covariance.

`Relocalizer` is the one engine the ROS node and bag replay call; `predicted_cloud` gives the frame's world
point cloud; the oracle predictors give exact scene coordinates from depth for tests and upper bounds.
"""
from kd3d_core.localization.cloud import PointCloud, predicted_cloud
from kd3d_core.localization.config import PnpSolver, RansacMethod, RefineMethod, RelocalizerConfig
from kd3d_core.localization.oracle import (
    OracleDepthPredictor,
    OracleNoise,
    OracleScenePredictor,
    image_digest,
    predictor_for_frame,
)
from kd3d_core.localization.relocalizer import Relocalizer
from kd3d_core.localization.result import FailureReason, ImageStats, InlierStats, PoseEstimate, StageTimings

__all__ = [
    "FailureReason", "ImageStats", "InlierStats", "OracleDepthPredictor", "OracleNoise", "OracleScenePredictor",
    "PnpSolver", "PointCloud",
    "PoseEstimate", "RansacMethod", "RefineMethod", "Relocalizer", "RelocalizerConfig", "StageTimings",
    "image_digest", "predicted_cloud", "predictor_for_frame",
]
