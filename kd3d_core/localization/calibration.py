"""Is the reported pose covariance honest? NEES and ellipsoid coverage against ground truth, and the inflation
that makes it so.

For a localized frame with error e (world-frame translation, and rotation vector of R_est R_true^T, the
REP 103 order of `PoseEstimate.covariance_6x6`) and reported covariance P, the normalised estimation error
squared NEES = e^T P^-1 e of the 3 position and the 3 rotation components each follows chi^2(3) when P is
honest: mean 3, and 95 % of frames inside the chi^2(3) 95 % ellipsoid (NEES <= 7.81). Scaling P by c divides
every NEES by c, so the inflation that puts a target fraction of frames inside the ellipsoid is
c_now * quantile(NEES, target) / chi2_3(target). `kd3d bench` (section "covariance") runs this on its rooms.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation
from scipy.stats import chi2

from kd3d_core.localization.result import PoseEstimate

# NEES bounds of the 1-sigma and 2-sigma ellipsoids and the chi^2(3) 95 % ellipsoid, with their expected coverage
# for an honest 3-DoF covariance.
ELLIPSOIDS: tuple[tuple[str, float], ...] = (("1sigma", 1.0), ("2sigma", 4.0), ("chi2_95", float(chi2.ppf(0.95, 3))))


def expected_coverage(bound: float) -> float:
    """Fraction of an honest 3-DoF Gaussian's samples with NEES <= bound."""
    return float(chi2.cdf(bound, 3))


def pose_nees(world_T_cam: np.ndarray, covariance_6x6: np.ndarray,
              truth_world_T_cam: np.ndarray) -> tuple[float, float]:
    """(position NEES, rotation NEES) of one estimate against the true pose; inf when a block is singular."""
    e_t = np.asarray(world_T_cam[:3, 3], np.float64) - truth_world_T_cam[:3, 3]
    e_r = Rotation.from_matrix(world_T_cam[:3, :3] @ truth_world_T_cam[:3, :3].T).as_rotvec()
    out = []
    for e, block in ((e_t, covariance_6x6[:3, :3]), (e_r, covariance_6x6[3:, 3:])):
        try:
            out.append(float(e @ np.linalg.solve(block, e)))
        except np.linalg.LinAlgError:
            out.append(math.inf)
    return out[0], out[1]


@dataclass(frozen=True)
class CovarianceCalibration:
    """NEES statistics of localized frames under the inflation they were computed with.

    Attributes:
        frames: localized frames with a true pose (the only ones a covariance can be checked on).
        inflation: the `covariance_inflation` the estimates were made with.
        nees_position, nees_rotation: per-frame NEES (3-DoF each).
    """

    frames: int
    inflation: float
    nees_position: np.ndarray
    nees_rotation: np.ndarray

    def summary(self, inflation: float | None = None) -> dict[str, float]:
        """Mean / median NEES and ellipsoid coverage as if the covariance had been made with `inflation`.

        Keys: nees_{position,rotation}_{mean,median}, coverage_{position,rotation}_{1sigma,2sigma,chi2_95}
        (fractions 0-1; expected for an honest covariance: 0.199, 0.739, 0.95; mean 3, median 2.37).
        """
        scale = self.inflation / (inflation or self.inflation)
        out: dict[str, float] = {"frames": float(self.frames), "inflation": float(inflation or self.inflation)}
        for name, nees in (("position", self.nees_position * scale), ("rotation", self.nees_rotation * scale)):
            finite = np.where(np.isfinite(nees), nees, np.inf)
            out[f"nees_{name}_mean"] = float(np.mean(finite)) if len(finite) else math.nan
            out[f"nees_{name}_median"] = float(np.median(finite)) if len(finite) else math.nan
            for key, bound in ELLIPSOIDS:
                out[f"coverage_{name}_{key}"] = float(np.mean(finite <= bound)) if len(finite) else math.nan
        return out

    def inflation_for(self, coverage: float = 0.95) -> float:
        """The inflation that puts `coverage` of the frames inside the chi^2(3) `coverage` ellipsoid of both
        the position and the rotation block (the larger of the two requirements)."""
        if not self.frames:
            return math.nan
        bound = float(chi2.ppf(coverage, 3))
        need = [float(np.quantile(n, coverage, method="higher")) for n in (self.nees_position, self.nees_rotation)]
        return self.inflation * max(need) / bound


def covariance_calibration(estimates: Sequence[PoseEstimate], truths: Sequence[np.ndarray | None],
                           inflation: float) -> CovarianceCalibration:
    """NEES of every localized estimate that has a true pose (pairs in order; failures are skipped).

    Args:
        estimates: relocalizer results.
        truths: the true world_T_cam of each (None where unknown).
        inflation: the `covariance_inflation` the relocalizer ran with.
    """
    if len(estimates) != len(truths):
        raise ValueError(f"{len(estimates)} estimates but {len(truths)} true poses")
    pos, rot = [], []
    for est, truth in zip(estimates, truths):
        if not est.success or truth is None or est.covariance_6x6 is None or est.world_T_cam is None:
            continue
        p, r = pose_nees(est.world_T_cam, est.covariance_6x6, truth)
        pos.append(p)
        rot.append(r)
    return CovarianceCalibration(len(pos), float(inflation), np.asarray(pos, np.float64), np.asarray(rot, np.float64))
