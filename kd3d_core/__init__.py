"""kd3d_core: the ROS-free library behind kd3d (scene I/O, bags, synthetic rooms, teachers, students, localization).

Never imports rclpy; the ROS 2 glue lives in kd3d_ros.
"""

__version__ = "0.1.0"
