"""The names and types of what the relocalizer publishes: one table for the ROS node and `kd3d replay`.

"What you see in a replayed bag is what the robot gets" holds only if both use the same topic names, frame ids
and message types; the node (kd3d_ros) and replay (kd3d_core.replay) read them from here, and
test/kd3d_core/test_topics.py checks the node's declared outputs, replay's output bag and config/kd3d.rviz
against this table.
"""
from __future__ import annotations

from typing import NamedTuple

NODE_NAME = "relocalizer"

# Relative names resolve in the node's namespace ("~/points" -> /relocalizer/points for a node in "/").
CLOUD = "~/points"
POSE = "~/pose"
POSE_WITH_COVARIANCE = "~/pose_with_covariance"
INITIAL_POSE = "/initialpose"
TF = "/tf"
DIAGNOSTICS = "/diagnostics"
DIAGNOSTIC_STATUS_NAME = f"{NODE_NAME}: relocalization"


class Publication(NamedTuple):
    """One output: topic name as declared (possibly node-relative) and its ROS 2 message type."""

    topic: str
    msgtype: str


# Every output the node always may publish (INITIAL_POSE only with publish_initialpose:=true; not replayed).
PUBLICATIONS: tuple[Publication, ...] = (
    Publication(CLOUD, "sensor_msgs/msg/PointCloud2"),
    Publication(POSE, "geometry_msgs/msg/PoseStamped"),
    Publication(POSE_WITH_COVARIANCE, "geometry_msgs/msg/PoseWithCovarianceStamped"),
    Publication(TF, "tf2_msgs/msg/TFMessage"),
    Publication(DIAGNOSTICS, "diagnostic_msgs/msg/DiagnosticArray"),
)


def resolve(topic: str, node: str = NODE_NAME, namespace: str = "/") -> str:
    """The absolute name of a declared topic, as ROS 2 resolves it for a node `node` in `namespace`."""
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    if topic.startswith("~"):
        return f"{ns}/{node}{topic[1:]}"
    if topic.startswith("/"):
        return topic
    return f"{ns}/{topic}"


def resolved_publications(node: str = NODE_NAME, namespace: str = "/") -> dict[str, str]:
    """Absolute topic name -> message type of every output (what `ros2 topic list -t` shows for the node)."""
    return {resolve(p.topic, node, namespace): p.msgtype for p in PUBLICATIONS}
