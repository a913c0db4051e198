"""Bags without ROS: read any rosbag2 (sqlite3, mcap) or ROS 1 bag, compose TF, associate poses, write bags.

    with open_bag(path) as bag:                      # BagError on missing / corrupt / truncated bags
        bag.topics; bag.messages(["/camera/color/image_raw"])
        poses = tf_pose_source(bag, "map", "camera_color_optical_frame", max_dt_s=0.05)
    with BagWriter.create(out, "mcap") as w:          # rosbag2 version 8, or "ros1" for a .bag file
        w.write("/topic", build_image(..., typestore=w.factory), stamp_ns)
    write_scene_bag(scene, out, storage="sqlite3")   # a scene as Image + CameraInfo + TF (+ depth)
"""
from kd3d_core.bags.poses import (
                                  PoseSource,
                                  TfPoseSource,
                                  TopicPoseSource,
                                  read_pose_topic,
                                  tf_pose_source,
                                  topic_pose_source,
)
from kd3d_core.bags.reader import (
                                  CAMERA_INFO_TYPES,
                                  IMAGE_TYPES,
                                  POSE_TYPES,
                                  TF_TYPE,
                                  BagMessage,
                                  BagReader,
                                  BagStorage,
                                  RawStamp,
                                  TopicSummary,
                                  open_bag,
                                  raw_header_stamp,
                                  resolve_bag_path,
)
from kd3d_core.bags.scene_bag import LINK_T_OPTICAL, SceneBagResult, write_scene_bag
from kd3d_core.bags.tf import TfBuffer, TfLookupError, load_tf
from kd3d_core.bags.trajectory import (
                                  Trajectory,
                                  associate_nearest,
                                  interpolate_pose,
                                  slerp,
)
from kd3d_core.bags.writer import ROSBAG2_VERSION, BagWriter

__all__ = [
    "CAMERA_INFO_TYPES", "IMAGE_TYPES", "LINK_T_OPTICAL", "POSE_TYPES", "ROSBAG2_VERSION", "TF_TYPE", "BagMessage",
    "BagReader", "BagStorage", "BagWriter", "PoseSource", "RawStamp", "SceneBagResult", "TfBuffer", "TfLookupError",
    "TfPoseSource", "TopicPoseSource", "TopicSummary", "Trajectory", "associate_nearest", "interpolate_pose",
    "load_tf", "open_bag", "raw_header_stamp", "read_pose_topic", "resolve_bag_path", "slerp", "tf_pose_source",
    "topic_pose_source", "write_scene_bag",
]
