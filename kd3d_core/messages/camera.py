"""sensor_msgs/CameraInfo <-> a `CameraModel` (K, distortion, size).

Reads both ROS 2 (`k`, `d`, `r`, `p`) and ROS 1 (`K`, `D`, `R`, `P`) field names. Binning and ROI are not
applied (kd3d expects full-resolution, unbinned images, which is what camera drivers publish by default).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kd3d_core.errors import MessageError
from kd3d_core.messages.factory import as_factory, build_header
from kd3d_core.messages.images import check_image_size

PLUMB_BOB = "plumb_bob"
RATIONAL_POLYNOMIAL = "rational_polynomial"
EQUIDISTANT = "equidistant"
DISTORTION_MODELS = (PLUMB_BOB, RATIONAL_POLYNOMIAL, EQUIDISTANT)


@dataclass(frozen=True)
class CameraModel:
    """A calibrated pinhole camera with optional lens distortion.

    Attributes:
        K: 3x3 intrinsics (float64) for images of `size`.
        size: (width, height) in pixels.
        distortion_model: "plumb_bob", "rational_polynomial", "equidistant" or "" (none).
        D: distortion coefficients in the model's order (float64, possibly empty).
    """

    K: np.ndarray
    size: tuple[int, int]
    distortion_model: str = PLUMB_BOB
    D: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def has_distortion(self) -> bool:
        """True when any distortion coefficient is non-zero."""
        return bool(np.any(np.asarray(self.D) != 0))


def _field(msg: Any, lower: str) -> Any:
    for name in (lower, lower.upper()):
        if hasattr(msg, name):
            return getattr(msg, name)
    raise MessageError(f"CameraInfo-like {type(msg).__name__} has no field {lower!r} or {lower.upper()!r}")


def camera_info_to_model(msg: Any) -> CameraModel:
    """Decode a sensor_msgs/CameraInfo (ROS 1 or ROS 2 field names).

    Raises:
        MessageError: K is all zero (uncalibrated camera), not finite, or the size is empty.
    """
    K = np.asarray(_field(msg, "k"), dtype=np.float64).reshape(-1)
    if K.size != 9:
        raise MessageError(f"CameraInfo K has {K.size} values, expected 9")
    K = K.reshape(3, 3)
    if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise MessageError(f"CameraInfo K is not a calibrated pinhole matrix (fx={K[0, 0]}, fy={K[1, 1]}); "
                           "the camera is uncalibrated — pass --K fx fy cx cy")
    width, height = int(msg.width), int(msg.height)
    # Undistortion maps are allocated from this size: bound it before anything trusts it.
    check_image_size(width, height, "CameraInfo")
    D = np.asarray(_field(msg, "d"), dtype=np.float64).reshape(-1)
    if D.size > 64:
        raise MessageError(f"CameraInfo has {D.size} distortion coefficients; no supported model has more than 14")
    if not np.all(np.isfinite(D)):
        raise MessageError(f"CameraInfo distortion has non-finite values {D.tolist()}")
    model = str(msg.distortion_model)
    if D.size and np.any(D != 0) and model not in DISTORTION_MODELS:
        raise MessageError(f"unsupported distortion model {model!r} (supported: {', '.join(DISTORTION_MODELS)})")
    return CameraModel(K=K, size=(width, height), distortion_model=model, D=D)


def pinhole_model(fx: float, fy: float, cx: float, cy: float, size: tuple[int, int]) -> CameraModel:
    """A distortion-free camera from four intrinsics (e.g. `--K fx fy cx cy`)."""
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    if not np.all(np.isfinite(K)) or fx <= 0 or fy <= 0:
        raise MessageError(f"intrinsics must be finite with positive focal lengths, got {fx} {fy} {cx} {cy}")
    check_image_size(int(size[0]), int(size[1]), "camera")
    return CameraModel(K=K, size=size, distortion_model=PLUMB_BOB, D=np.zeros(5))


def build_camera_info(model: CameraModel, stamp_ns: int, frame_id: str, typestore: Any = None) -> Any:
    """sensor_msgs/msg/CameraInfo for a camera model (R = identity, P = [K | 0], no binning or ROI)."""
    factory = as_factory(typestore)
    upper = factory.has_field("sensor_msgs/msg/CameraInfo", "K")
    P = np.zeros((3, 4))
    P[:, :3] = model.K
    arrays = {"d": np.asarray(model.D, dtype=np.float64).reshape(-1), "k": np.asarray(model.K, np.float64).ravel(),
              "r": np.eye(3).ravel(), "p": P.ravel()}
    roi_fields = {"x_offset": 0, "y_offset": 0, "height": 0, "width": 0, "do_rectify": False}
    return factory.make(
        "sensor_msgs/msg/CameraInfo", header=build_header(factory, stamp_ns, frame_id),
        height=int(model.size[1]), width=int(model.size[0]), distortion_model=model.distortion_model,
        binning_x=0, binning_y=0, roi=factory.make("sensor_msgs/msg/RegionOfInterest", **roi_fields),
        **{(k.upper() if upper else k): v for k, v in arrays.items()})
