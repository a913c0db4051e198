"""The ROS messages of one localized frame, composed from kd3d_core.messages builders.

Shared by bag replay and the rclpy node (pass a rosbags typestore, a TypestoreFactory or a ModuleFactory as
`typestore`), so both publish exactly the same thing: the predicted cloud in the map frame, the camera pose,
the pose with covariance, and one TF (map -> odom when odom -> camera is known, else map -> camera).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from kd3d_core.errors import Kd3dError
from kd3d_core.geometry import invert_pose
from kd3d_core.localization.cloud import PointCloud
from kd3d_core.localization.result import PoseEstimate
from kd3d_core.messages import (
    as_factory,
    build_pointcloud2,
    build_pose_stamped,
    build_pose_with_covariance_stamped,
    build_tf_message,
    build_transform_stamped,
    points_to_cloud_fields,
)


@dataclass(frozen=True)
class OutputFrames:
    """Frame ids of the published messages.

    Attributes:
        map_frame: world frame of the model (header of cloud and poses, TF parent).
        camera_frame: TF child when no odometry is available (the camera optical frame, or a renamed copy
            when that frame already has a parent in the robot's TF tree).
        odom_frame: REP 105 odom frame; used as TF child when odom -> camera is known at the image stamp.
    """

    map_frame: str = "map"
    camera_frame: str = "camera_optical_frame"
    odom_frame: str = "odom"


class LocalizationMessages(NamedTuple):
    """Messages of one frame (cloud is None when no cloud was asked for)."""

    cloud: Any | None
    pose: Any
    pose_with_covariance: Any
    tf: Any | None
    tf_parent_T_child: np.ndarray
    tf_child_frame: str


def build_localization_messages(estimate: PoseEstimate, stamp_ns: int, frames: OutputFrames,
                                cloud: PointCloud | None = None, odom_T_cam: np.ndarray | None = None,
                                typestore: Any = None, with_tf: bool = True) -> LocalizationMessages:
    """Messages for a successful estimate, all stamped with the input image's stamp.

    Args:
        estimate: a successful PoseEstimate.
        stamp_ns: the input image's stamp.
        frames: frame ids.
        cloud: the frame's predicted world points (map frame) and colours.
        odom_T_cam: odometry's camera pose at the image stamp; gives the map -> odom TF.
        typestore: rosbags typestore / message factory (default ROS 2 Humble types).
        with_tf: build the TFMessage (False leaves `tf` None: a node that does not publish TF then needs no
            tf2_msgs); the transform itself is still returned.
    """
    if not estimate.success or estimate.world_T_cam is None or estimate.covariance_6x6 is None:
        raise Kd3dError(f"cannot publish a failed estimate ({estimate.failure})")
    factory = as_factory(typestore)
    world_T_cam = estimate.world_T_cam
    cloud_msg = None
    if cloud is not None:
        cloud_msg = build_pointcloud2(points_to_cloud_fields(cloud.points_N3, cloud.colors_N3), stamp_ns,
                                      frames.map_frame, factory)
    if odom_T_cam is not None:
        parent_T_child, child = world_T_cam @ invert_pose(odom_T_cam), frames.odom_frame
    else:
        parent_T_child, child = world_T_cam, frames.camera_frame
    tf = None
    if with_tf:
        tf = build_tf_message([build_transform_stamped(parent_T_child, stamp_ns, frames.map_frame, child, factory)],
                              factory)
    return LocalizationMessages(
        cloud=cloud_msg,
        pose=build_pose_stamped(world_T_cam, stamp_ns, frames.map_frame, factory),
        pose_with_covariance=build_pose_with_covariance_stamped(world_T_cam, estimate.covariance_6x6, stamp_ns,
                                                                frames.map_frame, factory),
        tf=tf, tf_parent_T_child=parent_T_child, tf_child_frame=child)
