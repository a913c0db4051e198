"""Relative-pose diagnostics on pairs with known poses (as in the DUSt3R paper): RRA@15, RTA@15, mAA@30.

RRA: relative rotation error below the threshold; RTA: angle between estimated and true relative translation
directions below the threshold; mAA@30: mean over thresholds 1..30 degrees of the fraction of pairs whose
max(rotation error, translation angle) is below the threshold (area under the accuracy curve).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    cos = np.sum(a * b, axis=-1) / np.maximum(na * nb, 1e-12)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def relative_pose_errors(est_R: np.ndarray, est_t: np.ndarray, gt_i_T_j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation error and translation-direction error (degrees) of relative poses i_T_j (E, ...)."""
    Rd = np.transpose(est_R, (0, 2, 1)) @ gt_i_T_j[:, :3, :3]
    rot = np.degrees(np.arccos(np.clip((np.trace(Rd, axis1=1, axis2=2) - 1) / 2, -1.0, 1.0)))
    return rot, _angle_deg(est_t, gt_i_T_j[:, :3, 3])


def relative_pose_metrics(rot_err_deg: Sequence[float], trans_err_deg: Sequence[float]) -> dict:
    """RRA@15, RTA@15 and mAA@30 (fractions 0-1) of per-pair errors."""
    r, t = np.asarray(rot_err_deg, float), np.asarray(trans_err_deg, float)
    if r.size == 0:
        return {"pairs": 0}
    worst = np.maximum(r, t)
    return {"pairs": int(r.size), "RRA@15": float(np.mean(r < 15)), "RTA@15": float(np.mean(t < 15)),
            "mAA@30": float(np.mean([np.mean(worst < th) for th in range(1, 31)]))}
