"""Evaluation: pose file formats, pose accuracy (recall, medians), reports and plots, scene-coordinate error."""
from kd3d_core.evaluation.metrics import (
    RECALL_THRESHOLDS,
    EvaluationResult,
    FrameError,
    MatchMode,
    evaluate_trajectories,
)
from kd3d_core.evaluation.poses import PoseFormat, Trajectory, canonical_name, detect_format, read_poses, write_poses
from kd3d_core.evaluation.report import markdown_summary, report_dict, write_report
from kd3d_core.evaluation.scene_coords import SceneCoordinateError, label_errors, scene_coordinate_error

__all__ = [
    "RECALL_THRESHOLDS", "EvaluationResult", "FrameError", "MatchMode", "PoseFormat", "SceneCoordinateError",
    "Trajectory", "canonical_name", "detect_format", "evaluate_trajectories", "label_errors", "markdown_summary",
    "read_poses", "report_dict", "scene_coordinate_error", "write_poses", "write_report",
]
