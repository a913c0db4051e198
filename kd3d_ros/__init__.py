"""kd3d's ROS 2 side: the relocalizer node (plain and managed) and its rclpy-free helpers.

`relocalizer_node` and `lifecycle_node` are the only modules that import rclpy; `params` (the parameter table),
`input_stream` (rate limit and input loss by stamps), `runtime` (frame intake and diagnostics bookkeeping) and
`pipeline` (one frame to the published messages) do not, so they are tested without ROS.
"""
