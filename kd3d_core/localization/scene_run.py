"""Localize every frame of a scene split (what `kd3d localize` and the benchmarks run)."""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from tqdm import tqdm

from kd3d_core.errors import Kd3dError
from kd3d_core.evaluation.poses import Trajectory
from kd3d_core.localization.relocalizer import Relocalizer
from kd3d_core.localization.result import FailureReason, PoseEstimate
from kd3d_core.scene import Frame


@dataclass(frozen=True)
class SceneRun:
    """Estimates of a list of frames.

    Attributes:
        names: frame names, in order.
        estimates: one PoseEstimate per frame.
        stamps_ns: frame stamps (None where unknown).
    """

    names: tuple[str, ...]
    estimates: tuple[PoseEstimate, ...]
    stamps_ns: tuple[int | None, ...]

    def trajectory(self) -> Trajectory:
        """Successful estimates as a Trajectory (stamps only when every frame has one)."""
        keep = [i for i, e in enumerate(self.estimates) if e.success]
        stamps = None
        if self.stamps_ns and all(s is not None for s in self.stamps_ns):
            stamps = [self.stamps_ns[i] / 1e9 for i in keep]  # type: ignore[operator]
        return Trajectory.from_lists([self.names[i] for i in keep], [self.estimates[i].world_T_cam for i in keep],
                                     stamps)

    def failures(self) -> dict[str, int]:
        """Failure reason -> count."""
        return dict(Counter(e.failure.value for e in self.estimates if e.failure is not None))

    def median_timings_ms(self) -> dict[str, float]:
        """Median per stage over all frames (failed frames included: they cost time too)."""
        if not self.estimates:
            return {}
        t = np.array([(e.timings.predict_ms, e.timings.select_ms, e.timings.pnp_ms, e.timings.refine_ms,
                       e.timings.total_ms) for e in self.estimates])
        return dict(zip(("predict", "select", "pnp", "refine", "total"), map(float, np.median(t, axis=0))))


def localize_frames(relocalizer: Relocalizer, frames: Sequence[Frame], progress: bool = True) -> SceneRun:
    """Run the relocalizer on each frame (images are read one at a time)."""
    estimates = []
    for frame in tqdm(frames, desc="localize", unit="frame", disable=not progress):
        estimates.append(_localize_one(relocalizer, frame))
    return SceneRun(tuple(f.name for f in frames), tuple(estimates), tuple(f.stamp_ns for f in frames))


def _localize_one(relocalizer: Relocalizer, frame: Frame) -> PoseEstimate:
    """One frame; an image that cannot be read (missing, corrupt, too large, wrong size) is that frame's failure,
    never the end of the run."""
    try:
        rgb = frame.load_rgb()
    except (Kd3dError, OSError, cv2.error, MemoryError) as err:
        return PoseEstimate.failed(FailureReason.BAD_IMAGE, " ".join(str(err).split())[:300], stamp_ns=frame.stamp_ns)
    return relocalizer.localize(rgb, frame.K, stamp_ns=frame.stamp_ns)


def reference_trajectory(frames: Sequence[Frame]) -> Trajectory | None:
    """Ground-truth poses of the frames that have one (None when none has)."""
    posed = [f for f in frames if f.world_T_cam is not None]
    if not posed:
        return None
    stamps = [f.stamp_ns / 1e9 for f in posed] if all(f.stamp_ns is not None for f in posed) else None
    return Trajectory.from_lists([f.name for f in posed], [f.world_T_cam for f in posed], stamps)
