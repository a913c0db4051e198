"""kd3d's ROS 2 side: the relocalizer node and its rclpy-free helpers.

`relocalizer_node` is the only module that imports rclpy; `params` (the parameter table), `runtime` (frame
intake, rate limit, diagnostics bookkeeping) and `pipeline` (one frame to the published messages) do not, so
CI tests them without ROS.
"""
