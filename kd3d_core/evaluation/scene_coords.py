"""Scene-coordinate error of a predictor against teacher labels (the paper's mean / median L2 in metres)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from kd3d_core.errors import Kd3dError
from kd3d_core.labels import FrameLabel, LabelStore
from kd3d_core.prediction import ScenePrediction, ScenePredictor
from kd3d_core.scene import Frame


@dataclass(frozen=True)
class SceneCoordinateError:
    """L2 distance between predicted and label world points over all labelled cells of the frames.

    Attributes:
        mean_m: mean over cells.
        median_m: median over cells.
        frames: frames evaluated.
        cells: labelled cells compared.
        per_frame_median_m: frame name -> median error of that frame.
    """

    mean_m: float
    median_m: float
    frames: int
    cells: int
    per_frame_median_m: dict[str, float]


def label_errors(prediction: ScenePrediction, label: FrameLabel, K_image: np.ndarray) -> np.ndarray:
    """Per-cell L2 errors (metres) of a prediction against a label at its own resolution and K.

    Each output cell's input-image pixel is mapped into the label image with K_label K_image^-1 (works for
    resized and cropped labels alike); cells outside the label or where it has no confidence are skipped.
    """
    uv = prediction.uv_hw2.reshape(-1, 2).astype(np.float64)
    H = label.K @ np.linalg.inv(K_image)
    mapped = np.c_[uv, np.ones(len(uv))] @ H.T
    col = np.rint(mapped[:, 0] / mapped[:, 2]).astype(np.int64)
    row = np.rint(mapped[:, 1] / mapped[:, 2]).astype(np.int64)
    h, w = label.conf_HW.shape
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    pred = prediction.points_hw3.reshape(-1, 3)[inside].astype(np.float64)
    col, row = col[inside], row[inside]
    labelled = label.conf_HW[row, col] > 0
    diff = pred[labelled] - label.points_HW3[row[labelled], col[labelled]]
    err = np.linalg.norm(diff, axis=1)
    return err[np.isfinite(err)]


def scene_coordinate_error(predictor: ScenePredictor, frames: Sequence[Frame], labels: LabelStore,
                           progress: bool = True) -> SceneCoordinateError:
    """Mean / median scene-coordinate error of a predictor over the labelled frames among `frames`."""
    all_errors, per_frame = [], {}
    labelled = [f for f in frames if labels.has(f.name)]
    if not labelled:
        raise Kd3dError(f"none of the {len(frames)} frames has a label in {labels.root}")
    for frame in tqdm(labelled, desc="scene-coordinate error", unit="frame", disable=not progress):
        prediction = predictor.predict(frame.load_rgb())
        errors = label_errors(prediction, labels.read(frame.name), frame.K)
        if errors.size:
            per_frame[frame.name] = float(np.median(errors))
            all_errors.append(errors)
    if not all_errors:
        raise Kd3dError("no predicted cell falls on a labelled pixel; check the labels' intrinsics")
    errors = np.concatenate(all_errors)
    return SceneCoordinateError(float(errors.mean()), float(np.median(errors)), len(labelled), int(errors.size),
                                per_frame)
