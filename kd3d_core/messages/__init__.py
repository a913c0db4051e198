"""ROS messages <-> numpy, without ROS: the one message module used by bag ingestion, replay and the ROS node.

Decoders take any object with the standard ROS field names (rosbags dataclasses, rclpy messages, ROS 1 or 2).
Encoders are split in two steps so the rclpy node can reuse them:
    numpy-level payload helpers (rgb_to_image_fields, depth_to_image_fields, points_to_cloud_fields, ...)
    thin builders that take a `typestore` argument: a rosbags typestore (default: ROS 2 Humble), or a
    `MessageFactory` such as `ModuleFactory()` that builds rclpy message classes.
All stamps are int nanoseconds. Failures raise `kd3d_core.errors.MessageError`.
"""
from kd3d_core.messages.camera import (
                                        CameraModel,
                                        build_camera_info,
                                        camera_info_to_model,
                                        pinhole_model,
)
from kd3d_core.messages.factory import (
                                        MessageFactory,
                                        ModuleFactory,
                                        TypestoreFactory,
                                        as_factory,
                                        build_header,
                                        header_stamp_ns,
                                        ros1_typestore,
                                        ros2_typestore,
                                        split_stamp,
                                        stamp_to_ns,
)
from kd3d_core.messages.images import (
                                        ImageFields,
                                        build_compressed_image,
                                        build_image,
                                        decode_compressed_depth,
                                        decode_compressed_rgb,
                                        decode_depth,
                                        decode_image_depth,
                                        decode_image_rgb,
                                        image_input_topic,
                                        decode_rgb,
                                        depth_to_image_fields,
                                        encode_compressed_depth,
                                        encode_compressed_rgb,
                                        image_to_array,
                                        is_compressed,
                                        rgb_to_image_fields,
)
from kd3d_core.messages.pointcloud import (
                                        CloudFields,
                                        build_pointcloud2,
                                        decode_pointcloud2,
                                        pack_rgb,
                                        points_to_cloud_fields,
                                        unpack_rgb,
)
from kd3d_core.messages.transforms import (
                                        StampedPose,
                                        build_odometry,
                                        build_pose,
                                        build_pose_stamped,
                                        build_pose_with_covariance_stamped,
                                        build_tf_message,
                                        build_transform_stamped,
                                        covariance_to_matrix,
                                        pose_to_matrix,
                                        stamped_pose_from_msg,
                                        transform_to_matrix,
)

__all__ = [
    "image_input_topic",
    "CameraModel", "CloudFields", "ImageFields", "MessageFactory", "ModuleFactory", "StampedPose",
    "TypestoreFactory", "as_factory", "build_camera_info", "build_compressed_image", "build_header", "build_image",
    "build_odometry", "build_pointcloud2", "build_pose", "build_pose_stamped", "build_pose_with_covariance_stamped",
    "build_tf_message", "build_transform_stamped", "camera_info_to_model", "covariance_to_matrix",
    "decode_compressed_depth", "decode_compressed_rgb", "decode_depth", "decode_image_depth", "decode_image_rgb",
    "decode_pointcloud2", "decode_rgb", "depth_to_image_fields", "encode_compressed_depth", "encode_compressed_rgb",
    "header_stamp_ns", "image_to_array", "is_compressed", "pack_rgb", "pinhole_model", "points_to_cloud_fields",
    "pose_to_matrix", "rgb_to_image_fields", "ros1_typestore", "ros2_typestore", "split_stamp", "stamp_to_ns",
    "stamped_pose_from_msg", "transform_to_matrix", "unpack_rgb",
]
