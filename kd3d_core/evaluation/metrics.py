"""Pose accuracy: match estimates to reference frames, per-frame errors, recall at thresholds, medians.

Every reference frame with a pose counts; a frame without a (valid) estimate is a failure with infinite error,
so recall is over all reference frames and a relocalizer cannot look better by skipping hard frames.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from kd3d_core.errors import Kd3dError
from kd3d_core.evaluation.poses import Trajectory, canonical_name, check_reference
from kd3d_core.geometry import is_valid_pose, pose_error

# (translation metres, rotation degrees, JSON key)
RECALL_THRESHOLDS: tuple[tuple[float, float, str], ...] = (
    (0.02, 2.0, "recall_2cm_2deg"),
    (0.05, 5.0, "recall_5cm_5deg"),
    (0.10, 10.0, "recall_10cm_10deg"),
)


class MatchMode(str, Enum):
    """How estimates are paired with reference frames."""

    AUTO = "auto"
    NAME = "name"
    TIMESTAMP = "timestamp"


@dataclass(frozen=True)
class FrameError:
    """Error of one reference frame (inf when it has no estimate)."""

    name: str
    translation_m: float
    rotation_deg: float

    @property
    def localized(self) -> bool:
        """True when an estimate exists for the frame."""
        return bool(np.isfinite(self.translation_m))


@dataclass(frozen=True)
class EvaluationResult:
    """Per-frame errors plus the matched poses (for plots)."""

    frames: tuple[FrameError, ...]
    reference_poses: np.ndarray
    estimated_poses: np.ndarray
    matched_by: MatchMode

    @property
    def translation_m(self) -> np.ndarray:
        """Per-frame translation errors (inf = missing)."""
        return np.array([f.translation_m for f in self.frames], dtype=np.float64)

    @property
    def rotation_deg(self) -> np.ndarray:
        """Per-frame rotation errors (inf = missing)."""
        return np.array([f.rotation_deg for f in self.frames], dtype=np.float64)

    def recall(self, max_translation_m: float, max_rotation_deg: float) -> float:
        """Fraction of reference frames within both thresholds (0 for no frames)."""
        if not self.frames:
            return 0.0
        ok = (self.translation_m <= max_translation_m) & (self.rotation_deg <= max_rotation_deg)
        return float(np.mean(ok))

    def summary(self) -> dict[str, float | int | None]:
        """The report's headline numbers (medians over all frames, missing = inf -> None in JSON terms)."""
        t, r = self.translation_m, self.rotation_deg
        localized = np.isfinite(t)
        out: dict[str, float | int | None] = {"frames": len(self.frames), "localized": int(localized.sum())}
        for max_t, max_r, key in RECALL_THRESHOLDS:
            out[key] = self.recall(max_t, max_r)
        out["median_translation_m"] = _finite_or_none(np.median(t)) if len(t) else None
        out["median_rotation_deg"] = _finite_or_none(np.median(r)) if len(r) else None
        out["mean_translation_m_localized"] = float(np.mean(t[localized])) if localized.any() else None
        out["mean_rotation_deg_localized"] = float(np.mean(r[localized])) if localized.any() else None
        return out


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def match_by_name(estimates: Trajectory, reference: Trajectory) -> np.ndarray:
    """For each reference frame, the index of the estimate with the same canonical name, or -1."""
    index = {canonical_name(n): i for i, n in enumerate(estimates.names)}
    return np.array([index.get(canonical_name(n), -1) for n in reference.names], dtype=np.int64)


def match_by_stamp(estimates: Trajectory, reference: Trajectory, max_dt_s: float) -> np.ndarray:
    """For each reference frame, the estimate nearest in time within `max_dt_s`, or -1 (each used once)."""
    if estimates.stamps_s is None or reference.stamps_s is None:
        raise Kd3dError("matching by timestamp needs timestamps on both sides")
    out = np.full(len(reference), -1, dtype=np.int64)
    if len(estimates) == 0:
        return out
    order = np.argsort(estimates.stamps_s)
    est_sorted = estimates.stamps_s[order]
    pos = np.clip(np.searchsorted(est_sorted, reference.stamps_s), 1, len(est_sorted)) if len(est_sorted) > 1 \
        else np.zeros(len(reference), dtype=np.int64)
    left = np.maximum(pos - 1, 0)
    right = np.minimum(pos, len(est_sorted) - 1)
    pick = np.where(np.abs(est_sorted[left] - reference.stamps_s) <= np.abs(est_sorted[right] - reference.stamps_s),
                    left, right)
    dt = np.abs(est_sorted[pick] - reference.stamps_s)
    best: dict[int, int] = {}
    for ref_i in np.argsort(dt):  # closest pairs first, so a shared estimate goes to its nearest frame
        if dt[ref_i] <= max_dt_s and int(pick[ref_i]) not in best:
            best[int(pick[ref_i])] = int(ref_i)
    for est_sorted_i, ref_i in best.items():
        out[ref_i] = order[est_sorted_i]
    return out


def evaluate_trajectories(estimates: Trajectory, reference: Trajectory, mode: MatchMode | str = MatchMode.AUTO,
                          max_dt_s: float = 0.02) -> EvaluationResult:
    """Compare estimated poses to reference poses frame by frame.

    Args:
        estimates: estimated world_T_cam (may miss frames).
        reference: ground-truth world_T_cam; every one of its frames is evaluated.
        mode: AUTO matches by time when either side is a TUM (time-keyed) file and both have stamps,
            otherwise by frame name.
        max_dt_s: timestamp tolerance when matching by time.
    """
    check_reference(reference)
    mode = MatchMode(mode)
    if mode is MatchMode.AUTO:
        by_time = ((estimates.keyed_by_stamp or reference.keyed_by_stamp)
                   and estimates.stamps_s is not None and reference.stamps_s is not None)
        mode = MatchMode.TIMESTAMP if by_time else MatchMode.NAME
    if mode is MatchMode.TIMESTAMP:
        match = match_by_stamp(estimates, reference, max_dt_s)
    else:
        match = match_by_name(estimates, reference)
    if len(estimates) and len(reference) and not np.any(match >= 0):
        raise Kd3dError(f"no estimate matches any of the {len(reference)} reference frames by {mode.value} "
                        f"(e.g. estimate {estimates.names[0]!r} vs reference {reference.names[0]!r}); "
                        "TUM files match by timestamp, the other formats by frame name")
    frames, est_poses = [], np.full((len(reference), 4, 4), np.nan)
    for ref_i, est_i in enumerate(match):
        name = reference.names[ref_i]
        # A missing, non-finite or non-rigid estimate, or an unknown (NaN) reference pose: the frame failed.
        if est_i < 0 or not is_valid_pose(estimates.poses[est_i]) or not is_valid_pose(reference.poses[ref_i]):
            frames.append(FrameError(name, float("inf"), float("inf")))
            continue
        est_poses[ref_i] = estimates.poses[est_i]
        err = pose_error(estimates.poses[est_i], reference.poses[ref_i])
        frames.append(FrameError(name, err.translation_m, err.rotation_deg))
    return EvaluationResult(tuple(frames), reference.poses, est_poses, mode)


@dataclass(frozen=True)
class SplitSelection:
    """The reference frames an evaluation scores, and a sentence saying which.

    Attributes:
        trajectory: the selected reference poses.
        split: "query", "mapping" or "all" for a scene-folder reference; None for pose files.
        description: e.g. "the query split of scene S: 100 frames (frame-000300 .. frame-000399)".
    """

    trajectory: Trajectory
    split: str | None
    description: str


def _subset(trajectory: Trajectory, keep: set[str]) -> Trajectory:
    idx = [i for i, n in enumerate(trajectory.names) if canonical_name(n) in keep]
    stamps = None if trajectory.stamps_s is None else trajectory.stamps_s[idx]
    return Trajectory(tuple(trajectory.names[i] for i in idx), trajectory.poses[idx].reshape(len(idx), 4, 4),
                      stamps, trajectory.keyed_by_stamp)


def _span(names: tuple[str, ...]) -> str:
    if not names:
        return "no frames"
    ordered = sorted(names)
    return f"{len(names)} frames" + (f" ({ordered[0]} .. {ordered[-1]})" if len(names) > 1 else f" ({ordered[0]})")


def select_scene_split(reference: Trajectory, path: Path | str, split: str | None) -> SplitSelection:
    """Restrict a scene-folder reference to one split (default query); other references are used whole.

    Scoring a scene's mapping frames measures how well a model remembers what it was built from, not
    relocalization; so a scene reference scores its query split unless `split` asks otherwise.

    Raises:
        Kd3dError: `split` given for a reference that is not a scene folder, or the chosen split is empty.
    """
    from kd3d_core.errors import SceneError
    from kd3d_core.scene import open_scene

    scene = None
    if Path(path).is_dir():
        try:
            scene = open_scene(path)
        except SceneError:
            scene = None
    if scene is None:
        if split is not None:
            raise Kd3dError(f"--split needs a scene folder as --reference; {path} is a pose file or pose folder")
        return SplitSelection(reference, None, f"every pose in {path}: {_span(reference.names)}")
    chosen = split or "query"
    keep = {canonical_name(f.name) for f in scene.split(chosen)}
    selected = _subset(reference, keep)
    if not len(selected):
        other = "mapping" if chosen == "query" else "query"
        raise Kd3dError(f"scene {path} has no posed frames in its {chosen} split; choose --split {other} or all "
                        "(mapping frames are what a model distilled from this scene was built from)")
    return SplitSelection(selected, chosen, f"the {chosen} split of scene {path}: {_span(selected.names)}")
