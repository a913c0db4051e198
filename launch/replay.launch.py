"""Play a bag into the relocalizer on simulated time and watch it in RViz.

    ros2 launch kd3d_ros replay.launch.py bag:=/path/to/query_bag model:=/path/to/room.kd3d

`ros2 bag play --clock` publishes /clock from the bag's time, the node runs with use_sim_time, and the bag
starts a few seconds after the node so that its subscriptions exist (sensor-data QoS keeps no history).
The offline equivalent without ROS is `kd3d replay MODEL IN_BAG OUT_BAG --image-topic T`.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription, TimerAction
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

PACKAGE = "kd3d_ros"
BAG_START_DELAY_S = 3.0

ARGUMENTS = (
    ("bag", None, "rosbag2 folder to play (required)"),
    ("model", "", "scene model file (.kd3d); empty keeps model_path from params_file"),
    ("image_topic", "", "image topic in the bag; empty keeps params_file's (default /camera/color/image_raw)"),
    ("camera_info_topic", "", "CameraInfo topic in the bag; empty: next to the image topic"),
    ("compressed", "", "true when the bag has sensor_msgs/CompressedImage on <image_topic>/compressed"),
    ("publish_tf", "", "true/false: publish map -> odom (needs odom -> camera in the bag's TF)"),
    ("params_file", "", "ROS 2 parameter file; empty = the installed config/relocalizer.yaml"),
    ("rate", "1.0", "playback rate of the bag"),
    ("rviz", "true", "start RViz with the installed config/kd3d.rviz"),
)
# Passed on unchanged to relocalize.launch.py (use_sim_time is always true here).
FORWARDED = ("model", "image_topic", "camera_info_topic", "compressed", "publish_tf", "params_file", "rviz")


def generate_launch_description() -> LaunchDescription:
    """Launch arguments, the relocalizer (with RViz) on sim time, and the delayed bag player."""
    declared = [DeclareLaunchArgument(name, description=text) if default is None
                else DeclareLaunchArgument(name, default_value=default, description=text)
                for name, default, text in ARGUMENTS]
    forwarded = {name: LaunchConfiguration(name) for name in FORWARDED}
    relocalize = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([FindPackageShare(PACKAGE), "launch",
                                                            "relocalize.launch.py"])),
        launch_arguments={**forwarded, "use_sim_time": "true"}.items())
    play = ExecuteProcess(cmd=["ros2", "bag", "play", LaunchConfiguration("bag"), "--clock", "--rate",
                               LaunchConfiguration("rate")], output="screen")
    return LaunchDescription(declared + [relocalize, TimerAction(period=BAG_START_DELAY_S, actions=[play])])
