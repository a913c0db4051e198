"""Start the kd3d relocalizer on a robot's camera (and optionally RViz).

    ros2 launch kd3d_ros relocalize.launch.py model:=/path/to/room.kd3d image_topic:=/camera/color/image_raw

Arguments left empty keep the value of params_file (config/relocalizer.yaml by default), so a robot's own
parameter file is not overridden by launch defaults.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "kd3d_ros"

ARGUMENTS = (
    ("model", "", "scene model file (.kd3d); empty keeps model_path from params_file"),
    ("image_topic", "", "camera image topic; empty keeps params_file's (default /camera/color/image_raw)"),
    ("camera_info_topic", "", "CameraInfo topic; empty keeps params_file's (default: next to the image topic)"),
    ("compressed", "", "true: read sensor_msgs/CompressedImage on <image_topic>/compressed; empty: params_file's"),
    ("publish_tf", "", "true/false: publish map -> odom; empty keeps params_file's"),
    ("params_file", "", "ROS 2 parameter file; empty = the installed config/relocalizer.yaml"),
    ("use_sim_time", "false", "use /clock (true when playing a bag with --clock)"),
    ("rviz", "false", "also start RViz with the installed config/kd3d.rviz"),
)
# Launch arguments that override a node parameter of the same meaning when they are not empty.
STRING_OVERRIDES = {"model": "model_path", "image_topic": "image_topic", "camera_info_topic": "camera_info_topic"}
BOOL_OVERRIDES = {"compressed": "compressed", "publish_tf": "publish_tf"}


def _as_bool(text: str, name: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(f"launch argument {name}:={text!r} must be true or false")
    return value in ("true", "1", "yes")


def _node(context, *args, **kwargs):
    """The relocalizer node, with only the launch arguments that were given overriding params_file."""
    share = FindPackageShare(PACKAGE).perform(context)
    params_file = LaunchConfiguration("params_file").perform(context) or f"{share}/config/relocalizer.yaml"
    overrides = {"use_sim_time": _as_bool(LaunchConfiguration("use_sim_time").perform(context), "use_sim_time")}
    for arg, param in STRING_OVERRIDES.items():
        value = LaunchConfiguration(arg).perform(context)
        if value:
            overrides[param] = value
    for arg, param in BOOL_OVERRIDES.items():
        value = LaunchConfiguration(arg).perform(context)
        if value:
            overrides[param] = _as_bool(value, arg)
    return [Node(package=PACKAGE, executable="relocalizer_node", name="relocalizer", output="screen",
                 parameters=[params_file, overrides])]


def generate_launch_description() -> LaunchDescription:
    """Launch arguments, the node and (optionally) RViz."""
    rviz_config = PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "kd3d.rviz"])
    rviz = Node(package="rviz2", executable="rviz2", name="rviz2", arguments=["-d", rviz_config],
                parameters=[{"use_sim_time": LaunchConfiguration("use_sim_time")}],
                condition=IfCondition(LaunchConfiguration("rviz")))
    declared = [DeclareLaunchArgument(name, default_value=default, description=text)
                for name, default, text in ARGUMENTS]
    return LaunchDescription(declared + [OpaqueFunction(function=_node), rviz])
