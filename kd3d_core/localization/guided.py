"""Guided second chance: re-choose each cell's match under a pose hypothesis that failed the inlier checks.

A frame whose nearest-neighbour matches are mostly wrong (JPEG blocks, clipped highlights, a rolled or lower
camera) often still gives PnP-RANSAC a rough pose from the few right ones, which then fails the inlier-ratio
check. The right match of a cell is then frequently among its k most similar memory cells, just not the first.
Under the hypothesis, the candidate that reprojects closest to the cell is kept (if within a gate), PnP-RANSAC
runs again on those, and the loop repeats with the new pose while it moves. A wrong hypothesis rarely finds
consistent candidates, so it stays weak; the relocalizer judges the result by the usual checks with a higher
inlier-ratio bar (guided_ratio_bar) and a bound on the inliers' RMS reprojection error (chance inliers fill the
tolerance disk; RelocalizerConfig.guided_max_rmse).

When RANSAC's hypothesis is wrong (right matches are a few % of the cells, fewer than 1000 iterations can find),
the guided search starts again from a second hypothesis: PnP-RANSAC on the cells whose best match stands out most
from their best match elsewhere in the room (distinctive_cells). Clipped, flat or blocky cells match everything
about equally well, and they are exactly the ones the similarity ranks first.
"""
from __future__ import annotations

import math

import numpy as np

from kd3d_core.geometry import invert_pose, project_points
from kd3d_core.localization.correspondences import Correspondences

# Rounds stop once the camera moved less than this between two rounds (metres).
CONVERGED_M = 0.005
# A guided pose needs this many times the inlier ratio that chance alone would give it (see guided_ratio_bar).
CHANCE_MARGIN = 2.5


def guided_ratio_bar(candidates: int, threshold_px: float, size_wh: tuple[int, int], floor: float) -> float:
    """The inlier ratio a guided pose needs: at least `floor`, and CHANCE_MARGIN times the fraction of cells
    that a wrong pose would count as inliers by chance: each of a cell's k candidates lands within the inlier
    radius with probability pi r^2 / (w h). Measured at 320x240 (k 8, r 12 px, chance 0.047): guided poses that
    stayed far off reached 0.13 (2.8x chance; the RMS bar catches those), right ones 0.14-0.31. On a 160x120
    image chance is 0.19 and a guided pose 3 m off passed a fixed 0.12 bar; this bar (0.47) keeps such small
    images out."""
    w, h = size_wh
    chance = min(1.0, candidates * math.pi * threshold_px ** 2 / max(1.0, float(w * h)))
    return max(floor, CHANCE_MARGIN * chance)


def guided_correspondences(points_Nk3: np.ndarray, sims_Nk: np.ndarray, uv_N2: np.ndarray, K: np.ndarray,
                           world_T_cam: np.ndarray, gate_px: float) -> Correspondences:
    """Per cell, the candidate that reprojects closest to the cell under world_T_cam, when within gate_px.

    Args:
        points_Nk3: world points of each cell's k candidates (N cells).
        sims_Nk: their cosine similarities (-2 marks an empty slot).
        uv_N2: the cells' undistorted pixels.
        K: intrinsics of those pixels.
        world_T_cam: the pose hypothesis.
        gate_px: largest reprojection distance kept.

    Returns:
        Correspondences (float32 points and pixels, confidence = (similarity + 1) / 2) of the cells kept, most
        confident first.
    """
    n, k = sims_Nk.shape
    uv, z = project_points(K, invert_pose(world_T_cam), points_Nk3.reshape(-1, 3).astype(np.float64))
    uv, z = uv.reshape(n, k, 2), z.reshape(n, k)
    with np.errstate(invalid="ignore"):
        dist = np.linalg.norm(uv - uv_N2[:, None, :].astype(np.float64), axis=-1)
    dist[~(z > 1e-3) | (sims_Nk <= -1.5) | ~np.isfinite(dist)] = np.inf
    best = dist.argmin(axis=1)
    rows = np.arange(len(best))
    keep = dist[rows, best] <= gate_px
    rows, best = rows[keep], best[keep]
    conf = np.clip((sims_Nk[rows, best] + 1.0) / 2.0, 0.0, 1.0).astype(np.float32)
    order = np.argsort(-conf, kind="stable")  # most confident first, as select_correspondences orders them
    rows, best, conf = rows[order], best[order], conf[order]
    return Correspondences(points_Nk3[rows, best].astype(np.float32), uv_N2[rows].astype(np.float32), conf)


def distinctive_cells(points_Nk3: np.ndarray, sims_Nk: np.ndarray, radius_m: float, count: int) -> np.ndarray:
    """Indices of the `count` cells whose best match stands out most, most distinctive first.

    A cell's distinctiveness is its best similarity minus the best similarity of a candidate more than radius_m
    from the best one (a second place elsewhere in the room, as in Lowe's ratio test; neighbouring memory cells
    of one surface are not rivals). A cell whose k candidates all lie within radius_m is scored against its k-th.
    Cells without a candidate (similarity -2) come last.
    """
    n, k = sims_Nk.shape
    if n == 0 or count <= 0:
        return np.zeros(0, np.int64)
    best = sims_Nk[:, 0].astype(np.float64)
    if k > 1:
        with np.errstate(invalid="ignore"):
            far = np.linalg.norm(points_Nk3[:, 1:] - points_Nk3[:, :1], axis=-1) > radius_m
        rivals = np.where(far & (sims_Nk[:, 1:] > -1.5), sims_Nk[:, 1:], -np.inf).max(axis=1)
        last = np.where(sims_Nk[:, -1] > -1.5, sims_Nk[:, -1], best)
        gap = best - np.where(np.isfinite(rivals), rivals, last)
    else:
        gap = np.zeros(n)
    gap[(best <= -1.5) | ~np.isfinite(points_Nk3[:, 0]).all(axis=1)] = -np.inf
    return np.argsort(-gap, kind="stable")[:count]
