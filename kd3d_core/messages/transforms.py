"""geometry_msgs / nav_msgs / tf2_msgs poses and transforms <-> 4x4 matrices.

Decoding accepts PoseStamped, PoseWithCovarianceStamped, Odometry and TransformStamped (any object with the
standard field names). Covariances are 6x6 in REP 103 order (x, y, z, rotation about x, y, z), row-major.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from kd3d_core.errors import Kd3dError, MessageError
from kd3d_core.geometry import make_pose, matrix_to_quat_xyzw, quat_xyzw_to_matrix
from kd3d_core.messages.factory import as_factory, build_header, header_stamp_ns


class StampedPose(NamedTuple):
    """A pose read from a message: frame_T_child at stamp_ns (child is "" when the message does not say)."""

    stamp_ns: int
    frame_id: str
    child_frame_id: str
    T: np.ndarray


def _matrix(t: Any, q: Any, what: str) -> np.ndarray:
    values = np.array([t.x, t.y, t.z, q.x, q.y, q.z, q.w], dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise MessageError(f"{what} has non-finite values {values.tolist()}")
    try:
        return make_pose(quat_xyzw_to_matrix(values[3:]), values[:3])
    except Kd3dError as err:
        raise MessageError(f"{what} has an invalid rotation: {err}") from err


def pose_to_matrix(pose: Any) -> np.ndarray:
    """geometry_msgs/Pose -> 4x4 (quaternion normalised). Raises MessageError on NaN/INF or zero quaternion."""
    return _matrix(pose.position, pose.orientation, "pose")


def transform_to_matrix(transform: Any) -> np.ndarray:
    """geometry_msgs/Transform -> 4x4 parent_T_child."""
    return _matrix(transform.translation, transform.rotation, "transform")


def stamped_pose_from_msg(msg: Any) -> StampedPose:
    """PoseStamped, PoseWithCovarianceStamped, Odometry or TransformStamped -> StampedPose.

    Raises:
        MessageError: the message is none of these, or holds NaN/INF values.
    """
    stamp = header_stamp_ns(msg)
    frame = str(msg.header.frame_id)
    if hasattr(msg, "transform"):
        return StampedPose(stamp, frame, str(msg.child_frame_id), transform_to_matrix(msg.transform))
    pose = getattr(msg, "pose", None)
    if pose is None:
        raise MessageError(f"{type(msg).__name__} carries no pose (expected PoseStamped, "
                           "PoseWithCovarianceStamped, Odometry or TransformStamped)")
    if hasattr(pose, "pose"):  # PoseWithCovariance (PoseWithCovarianceStamped, Odometry)
        pose = pose.pose
    return StampedPose(stamp, frame, str(getattr(msg, "child_frame_id", "")), pose_to_matrix(pose))


def covariance_to_matrix(msg: Any) -> np.ndarray:
    """6x6 covariance of a PoseWithCovarianceStamped or Odometry."""
    return np.asarray(msg.pose.covariance, dtype=np.float64).reshape(6, 6)


# ----------------------------------------------------------------------------------------------- building
def _check_pose(T: np.ndarray) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise MessageError(f"pose must be a finite 4x4 matrix, got shape {T.shape}")
    return T


def build_pose(T: np.ndarray, typestore: Any = None) -> Any:
    """geometry_msgs/msg/Pose of a 4x4 matrix."""
    factory = as_factory(typestore)
    T = _check_pose(T)
    q = matrix_to_quat_xyzw(T[:3, :3])
    return factory.make(
        "geometry_msgs/msg/Pose",
        position=factory.make("geometry_msgs/msg/Point", x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
        orientation=factory.make("geometry_msgs/msg/Quaternion", x=float(q[0]), y=float(q[1]), z=float(q[2]),
                                 w=float(q[3])))


def build_transform_stamped(parent_T_child: np.ndarray, stamp_ns: int, parent_frame: str, child_frame: str,
                            typestore: Any = None) -> Any:
    """geometry_msgs/msg/TransformStamped (header.frame_id = parent, child_frame_id = child)."""
    factory = as_factory(typestore)
    T = _check_pose(parent_T_child)
    q = matrix_to_quat_xyzw(T[:3, :3])
    transform = factory.make(
        "geometry_msgs/msg/Transform",
        translation=factory.make("geometry_msgs/msg/Vector3", x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
        rotation=factory.make("geometry_msgs/msg/Quaternion", x=float(q[0]), y=float(q[1]), z=float(q[2]),
                              w=float(q[3])))
    return factory.make("geometry_msgs/msg/TransformStamped", header=build_header(factory, stamp_ns, parent_frame),
                        child_frame_id=str(child_frame), transform=transform)


def build_tf_message(transforms: Sequence[Any], typestore: Any = None) -> Any:
    """tf2_msgs/msg/TFMessage of TransformStamped messages (built with the same typestore)."""
    return as_factory(typestore).make("tf2_msgs/msg/TFMessage", transforms=list(transforms))


def build_pose_stamped(world_T_x: np.ndarray, stamp_ns: int, frame_id: str, typestore: Any = None) -> Any:
    """geometry_msgs/msg/PoseStamped."""
    factory = as_factory(typestore)
    return factory.make("geometry_msgs/msg/PoseStamped", header=build_header(factory, stamp_ns, frame_id),
                        pose=build_pose(world_T_x, factory))


def build_pose_with_covariance_stamped(world_T_x: np.ndarray, covariance_66: np.ndarray, stamp_ns: int,
                                       frame_id: str, typestore: Any = None) -> Any:
    """geometry_msgs/msg/PoseWithCovarianceStamped; covariance 6x6 in REP 103 order (x, y, z, rx, ry, rz)."""
    factory = as_factory(typestore)
    cov = np.asarray(covariance_66, dtype=np.float64)
    if cov.shape != (6, 6):
        raise MessageError(f"pose covariance must be 6x6, got shape {cov.shape}")
    pose = factory.make("geometry_msgs/msg/PoseWithCovariance", pose=build_pose(world_T_x, factory),
                        covariance=np.ascontiguousarray(cov).reshape(36))
    return factory.make("geometry_msgs/msg/PoseWithCovarianceStamped",
                        header=build_header(factory, stamp_ns, frame_id), pose=pose)


def build_odometry(world_T_x: np.ndarray, stamp_ns: int, frame_id: str, child_frame_id: str,
                   covariance_66: np.ndarray | None = None, typestore: Any = None) -> Any:
    """nav_msgs/msg/Odometry with a pose (and optional pose covariance) and a zero twist."""
    factory = as_factory(typestore)
    cov = np.zeros((6, 6)) if covariance_66 is None else np.asarray(covariance_66, dtype=np.float64)
    pose = factory.make("geometry_msgs/msg/PoseWithCovariance", pose=build_pose(world_T_x, factory),
                        covariance=cov.reshape(36))
    zero = factory.make("geometry_msgs/msg/Vector3", x=0.0, y=0.0, z=0.0)
    twist = factory.make("geometry_msgs/msg/TwistWithCovariance",
                         twist=factory.make("geometry_msgs/msg/Twist", linear=zero, angular=zero),
                         covariance=np.zeros(36))
    return factory.make("nav_msgs/msg/Odometry", header=build_header(factory, stamp_ns, frame_id),
                        child_frame_id=str(child_frame_id), pose=pose, twist=twist)
